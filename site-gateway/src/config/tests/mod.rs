//! Unit tests of the config checks: one per semantic check, asserting the message.

mod admin;
mod federation;
mod ha;
mod machine;
mod site;
mod syntax;

use super::error::{ConfigError, Source};
use super::federation::File;
use super::types::SiteConfig;
use super::{parse, validate};

/// A small valid site: two servers, one account, one peer. Tests edit one line of it.
const BASE: &str = r#"[site]
name = "site-a"
admin_addr = "127.0.0.1:7101"
federation_addr = "127.0.0.1:7201"
management_addr = "127.0.0.1:7301"

[lending]
reserve = 1
max_lent = 1

[[peer]]
name = "site-b"
addr = "127.0.0.1:7202"

[[server]]
id = "a1"
service_addr = "127.0.0.1:8101"

[[server]]
id = "a2"
service_addr = "127.0.0.1:8102"

[[account]]
name = "shop"
min_servers = 1
max_servers = 2
priority = 10
target_load = 20.0
failover = ["site-b"]

[account.workload]
software = "shop 1.0"
command = "{leasehold}"
args = ["workload", "--listen", "{service_addr}"]
data_dir = "data/shop"

[admin]
plain_http = true
anonymous_role = "read"
"#;

/// `BASE` with `from` replaced by `to`; fails loudly if `from` is not there, so a test
/// never passes by editing nothing.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` not in the test config");
    text.replacen(from, to, 1)
}

fn source(name: &str, text: &str) -> Source {
    Source {
        path: name.into(),
        text: text.to_owned(),
    }
}

/// Parses and validates one file's text.
fn check(text: &str) -> Result<SiteConfig, Vec<ConfigError>> {
    let source = source("site-a.toml", text);
    let raw = parse::parse(&source).map_err(|e| vec![e])?;
    validate::validate(&source, &raw)
}

/// The messages of a text that must fail.
fn errors(text: &str) -> Vec<String> {
    match check(text) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(errors) => errors.into_iter().map(|e| e.message).collect(),
    }
}

/// Asserts exactly one error, containing `expected`, and returns it.
fn one_error(text: &str, expected: &str) -> String {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains(expected),
        "`{}` does not contain `{expected}`",
        errors[0]
    );
    errors[0].clone()
}

fn file(name: &str, text: &str) -> File {
    let source = source(name, text);
    match parse::parse(&source) {
        Ok(raw) => File { source, raw },
        Err(e) => panic!("{e}"),
    }
}
