//! `[admin]`: the file says how the admin address is secured, or is refused.

use std::path::PathBuf;

use super::*;
use crate::admin::tokens::Role;

const PLAIN: &str = "[admin]\nplain_http = true\nanonymous_role = \"read\"\n";

fn with_admin(block: &str) -> String {
    edit(BASE, PLAIN, block)
}

#[test]
fn a_file_without_admin_is_refused_and_told_what_to_write() {
    let message = one_error(&with_admin(""), "has no [admin] table");
    for hint in [
        "tls_cert and tls_key",
        "plain_http = true",
        "tokens = FILE",
        "anonymous_role",
    ] {
        assert!(message.contains(hint), "{message} lacks {hint}");
    }
}

#[test]
fn tls_or_plain_http_must_be_said() {
    one_error(
        &with_admin("[admin]\ntokens = \"t\"\n"),
        "does not say plain_http = true",
    );
    one_error(
        &with_admin("[admin]\nplain_http = false\ntokens = \"t\"\n"),
        "does not say plain_http = true",
    );
    one_error(
        &with_admin("[admin]\ntls_cert = \"a.crt\"\ntokens = \"t\"\n"),
        "tls_key is missing",
    );
    one_error(
        &with_admin("[admin]\ntls_key = \"a.key\"\ntokens = \"t\"\n"),
        "tls_cert is missing",
    );
    one_error(
        &with_admin(
            "[admin]\ntls_cert = \"a.crt\"\ntls_key = \"a.key\"\nplain_http = true\ntokens = \"t\"\n",
        ),
        "choose one",
    );
}

#[test]
fn who_may_read_must_be_said() {
    one_error(
        &with_admin("[admin]\nplain_http = true\n"),
        "names no token file and no anonymous_role",
    );
    one_error(
        &with_admin("[admin]\nplain_http = true\nanonymous_role = \"admin\"\n"),
        "anonymous_role `admin` is not a role; the roles are metrics, read and write",
    );
    one_error(
        &with_admin("[admin]\nplain_http = true\ntoken = \"t\"\n"),
        "unknown key `admin.token`; did you mean `tokens`?",
    );
}

#[test]
fn paths_are_relative_to_the_config_file() {
    let text = with_admin(
        "[admin]\ntls_cert = \"certs/admin/site-a.crt\"\ntls_key = \"/etc/leasehold/a.key\"\ntokens = \"admin-tokens\"\nanonymous_role = \"metrics\"\n",
    );
    let source = Source {
        path: "/etc/leasehold/sites/site-a.toml".into(),
        text: text.clone(),
    };
    let raw = parse::parse(&source).expect("parses");
    let config = validate::validate(&source, &raw).expect("valid");
    let tls = config.admin.tls.as_ref().expect("tls");
    assert_eq!(
        tls.cert,
        PathBuf::from("/etc/leasehold/sites/certs/admin/site-a.crt")
    );
    assert_eq!(tls.key, PathBuf::from("/etc/leasehold/a.key"));
    assert_eq!(
        config.admin.tokens,
        Some(PathBuf::from("/etc/leasehold/sites/admin-tokens"))
    );
    assert_eq!(config.admin.anonymous_role, Some(Role::Metrics));
}

#[test]
fn plain_http_and_anonymous_reads_are_warned_off_loopback_only() {
    let config = check(BASE).expect("valid");
    assert!(config.admin.warnings(config.site.admin_addr).is_empty());
    let open = config
        .admin
        .warnings("10.1.2.3:7101".parse().expect("addr"));
    assert_eq!(open.len(), 2, "{open:#?}");
    assert!(
        open[0].contains("10.1.2.3:7101 serves plain HTTP"),
        "{}",
        open[0]
    );
    assert!(
        open[1].contains("without a token (anonymous_role)"),
        "{}",
        open[1]
    );
    let secured = check(&with_admin(
        "[admin]\ntls_cert = \"a.crt\"\ntls_key = \"a.key\"\ntokens = \"t\"\n",
    ))
    .expect("valid");
    assert!(
        secured
            .admin
            .warnings("0.0.0.0:7101".parse().expect("addr"))
            .is_empty()
    );
}
