//! `[admin]`: how the admin address is secured. The file must say it: a certificate, or
//! `plain_http = true`; a token file, or `anonymous_role`. Nothing is open by default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::raw::RawSite;
use super::types::{AdminSection, AdminTls};
use super::validate::Checker;
use crate::admin::tokens::Role;

const SEE: &str = "docs/configuration.md, [admin]";

pub(crate) fn admin(c: &mut Checker<'_>, raw: &RawSite) -> Option<AdminSection> {
    let site = c.site.to_owned();
    let Some(a) = &raw.admin else {
        c.error(
            raw.site.name.span(),
            format!(
                "site `{site}` has no [admin] table: say how its admin address is secured, tls_cert and tls_key (`leasehold certs issue --admin`) or plain_http = true, and who may read it, tokens = FILE (`leasehold token add`) or anonymous_role = \"read\" ({SEE})"
            ),
        );
        return None;
    };
    let dir = c
        .source
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = |raw: &Spanned<String>| resolve(&dir, raw.get_ref());
    let plain = a.plain_http.as_ref().is_some_and(|p| *p.get_ref());
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => {
            if plain {
                c.error(
                    span(a.plain_http.as_ref()),
                    format!(
                        "site `{site}`: [admin] gives tls_cert and tls_key and also plain_http = true; choose one (drop plain_http to serve HTTPS)"
                    ),
                );
                return None;
            }
            Some(AdminTls {
                cert: path(cert),
                key: path(key),
            })
        }
        (Some(given), None) | (None, Some(given)) => {
            let missing = if a.tls_cert.is_some() {
                "tls_key"
            } else {
                "tls_cert"
            };
            c.error(
                given.span(),
                format!(
                    "site `{site}`: [admin] {missing} is missing; TLS needs both the certificate chain (tls_cert) and its key (tls_key), as PEM files"
                ),
            );
            return None;
        }
        (None, None) if plain => None,
        (None, None) => {
            c.error(
                raw.site.name.span(),
                format!(
                    "site `{site}`: [admin] gives no tls_cert and tls_key, and does not say plain_http = true; the admin address serves HTTPS with a certificate (`leasehold certs issue --admin`), or plain HTTP only where the file says so ({SEE})"
                ),
            );
            return None;
        }
    };
    let anonymous_role = match &a.anonymous_role {
        None => None,
        Some(role) => match Role::parse(role.get_ref()) {
            Some(parsed) => Some(parsed),
            None => {
                c.error(
                    role.span(),
                    format!(
                        "site `{site}`: [admin] anonymous_role `{}` is not a role; the roles are metrics, read and write",
                        role.get_ref()
                    ),
                );
                return None;
            }
        },
    };
    if a.tokens.is_none() && anonymous_role.is_none() {
        c.error(
            raw.site.name.span(),
            format!(
                "site `{site}`: [admin] names no token file and no anonymous_role, so every request but /live and /ready would be refused; give tokens = FILE (`leasehold token add --file FILE ...`) or anonymous_role = \"read\" ({SEE})"
            ),
        );
        return None;
    }
    Some(AdminSection {
        tls,
        tokens: a.tokens.as_ref().map(path),
        anonymous_role,
        access_log: a.access_log.as_ref().map(path),
    })
}

fn span(value: Option<&Spanned<bool>>) -> std::ops::Range<usize> {
    value.map(Spanned::span).unwrap_or_default()
}

/// A path in the file: relative ones are relative to the file's directory, so a config
/// and its certificates move together.
fn resolve(dir: &Path, given: &str) -> PathBuf {
    let given = Path::new(given);
    if given.is_absolute() {
        given.to_path_buf()
    } else {
        dir.join(given)
    }
}

impl AdminSection {
    /// What an operator must hear about this setting on `addr`, at start and on the page:
    /// plain HTTP or anonymous reads on an address others can reach.
    pub fn warnings(&self, addr: SocketAddr) -> Vec<String> {
        if addr.ip().is_loopback() {
            return Vec::new();
        }
        let mut warnings = Vec::new();
        if self.tls.is_none() {
            warnings.push(format!(
                "the admin address {addr} serves plain HTTP (plain_http = true): tokens and the site's data cross the network in the clear; give [admin] tls_cert and tls_key"
            ));
        }
        if let Some(role) = self.anonymous_role {
            warnings.push(format!(
                "anyone who reaches {addr} gets the role `{role}` without a token (anonymous_role); give [admin] tokens and drop anonymous_role"
            ));
        }
        warnings
    }
}

impl std::fmt::Display for AdminSection {
    /// One line, for `config diff` and the restart notice.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tls {
            Some(tls) => write!(f, "https ({}, {})", tls.cert.display(), tls.key.display())?,
            None => f.write_str("plain http")?,
        }
        match &self.tokens {
            Some(tokens) => write!(f, ", tokens {}", tokens.display())?,
            None => f.write_str(", no tokens")?,
        }
        if let Some(role) = self.anonymous_role {
            write!(f, ", anonymous {role}")?;
        }
        if let Some(log) = &self.access_log {
            write!(f, ", access log {}", log.display())?;
        }
        Ok(())
    }
}
