//! The per-site config file: loading, validation and error reporting.
//!
//! Two layers, as in Vector and Quickwit: `raw` is the file as written (serde, unknown keys
//! refused, spans kept); `validate`, `account` and `federation` turn it into [`SiteConfig`]
//! or into every error found, each pointing at its line. `leasehold config check` and
//! everything that starts from a config file go through [`load_site`] or
//! [`load_federation`], so they accept and refuse the same files with the same messages.

mod account;
mod admin;
pub mod diff;
mod error;
mod federation;
mod ha;
mod machine;
mod parse;
pub use leasehold_federation::placeholders;
mod raw;
mod types;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors};
pub use ha::TAKEOVER_ALLOWANCE;
pub use machine::normal_mac;
pub use types::{
    Account, AdminSection, AdminTls, EtcdStore, GatewayAddrs, Image, JournalSection, Lending,
    Machine, Peer, Server, SiteConfig, SiteSection, SiteStore, Timings, Workload,
};

use error::Source;
use federation::File;

/// Loads and checks one site file on its own. Names of other sites (peers, failover,
/// lending) are checked against this file's peers only.
pub fn load_site(path: &Path) -> Result<SiteConfig, ConfigErrors> {
    let mut errors = Vec::new();
    let config = load_one(path, &mut errors).and_then(|(_, config)| config);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors::new(errors)),
    }
}

/// Loads the files of one federation: each file's own checks, then the checks across
/// files (when there are at least two). Errors from every file are collected.
pub fn load_federation(paths: &[PathBuf]) -> Result<Vec<SiteConfig>, ConfigErrors> {
    load_federation_warning(paths).map(|(sites, _)| sites)
}

/// [`load_federation`], with the warnings of the cross-site checks (each `file:line:col:
/// message`): what holds in some networks and not in others.
pub fn load_federation_warning(
    paths: &[PathBuf],
) -> Result<(Vec<SiteConfig>, Vec<String>), ConfigErrors> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let mut configs = Vec::new();
    for path in paths {
        if let Some((file, config)) = load_one(path, &mut errors) {
            files.push(file);
            configs.extend(config);
        }
    }
    if paths.len() > 1 {
        let (found, warned) = federation::check_with_warnings(&files);
        errors.extend(found);
        warnings = warned
            .iter()
            .map(|warning| format!("{}: {}", warning.location(), warning.message))
            .collect();
    }
    if errors.is_empty() && configs.len() == paths.len() {
        Ok((configs, warnings))
    } else {
        sort_by_place(&mut errors, paths);
        Err(ConfigErrors::new(errors))
    }
}

/// Reads, parses and validates one file. `None` when it could not be parsed at all; the
/// inner `None` when it parsed but failed its checks.
fn load_one(path: &Path, errors: &mut Vec<ConfigError>) -> Option<(File, Option<SiteConfig>)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            errors.push(ConfigError::whole_file(
                path,
                format!("cannot read config file: {e}"),
            ));
            return None;
        }
    };
    let source = Source {
        path: path.to_path_buf(),
        text,
    };
    let raw = match parse::parse(&source) {
        Ok(raw) => raw,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let config = match validate::validate(&source, &raw) {
        Ok(config) => Some(config),
        Err(found) => {
            errors.extend(found);
            None
        }
    };
    Some((File { source, raw }, config))
}

/// Groups errors by file, in the order the files were given, then by line, so the output
/// reads top to bottom like the files do.
fn sort_by_place(errors: &mut [ConfigError], paths: &[PathBuf]) {
    let rank = |e: &ConfigError| paths.iter().position(|p| *p == e.file);
    errors.sort_by_key(|e| (rank(e), e.line_col));
}
