//! The admin address's security, in front of the API (`crate::api`) and the page: TLS
//! ([`tls`]), tokens and roles ([`tokens`], plain data), the gate every request passes
//! with the HTTP limits ([`guard`]), the page's login ([`login`]) and the access log
//! ([`access`]). docs/operations.md, "Securing the admin address", is the operator's view.

pub mod access;
pub mod guard;
pub mod login;
pub mod tls;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokens::{Role, TokenFileError, Tokens};

/// The token file as last read, swapped whole on a reload so that a request sees the old
/// file or the new one, never half of each.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    current: RwLock<Arc<Tokens>>,
}

impl TokenStore {
    /// Reads `path` (blocking); a bad file is an error that stops the start.
    pub fn open(path: &Path) -> Result<TokenStore, TokenFileError> {
        let tokens = Tokens::load(path)?;
        Ok(TokenStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(tokens)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn current(&self) -> Arc<Tokens> {
        // A poisoned lock held a whole `Arc`: the value is still one file's tokens.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the file again (blocking). A refused file changes nothing: the gateway keeps
    /// the tokens it had, and the error says why.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let tokens = Tokens::load(&self.path)?;
        let count = tokens.entries().len();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tokens);
        Ok(count)
    }
}

/// When each certificate the gateway presents or trusts expires (Unix time): `site`, `ca`,
/// and `admin` when the address has TLS. Read at start and again on every certificate
/// reload; the page's banner and the metrics both read it, so that neither warns once a
/// renewed certificate is in use.
#[derive(Debug, Default)]
pub struct CertificateExpiries(RwLock<Vec<(&'static str, i64)>>);

impl CertificateExpiries {
    pub fn new(at_start: Vec<(&'static str, i64)>) -> CertificateExpiries {
        CertificateExpiries(RwLock::new(at_start))
    }

    pub fn set(&self, which: &'static str, not_after_unix: i64) {
        let mut list = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match list.iter_mut().find(|(name, _)| *name == which) {
            Some(entry) => entry.1 = not_after_unix,
            None => list.push((which, not_after_unix)),
        }
    }

    pub fn current(&self) -> Vec<(&'static str, i64)> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Everything the gate and the login need, shared by the admin server's workers.
#[derive(Debug)]
pub struct AdminAuth {
    /// For `WWW-Authenticate: Bearer realm=...` and the login page.
    pub site: String,
    pub tokens: Option<Arc<TokenStore>>,
    pub anonymous: Option<Role>,
    /// HTTPS: the login cookie is `Secure`.
    pub tls: bool,
    /// What the page shows in a banner (plain HTTP or anonymous reads off loopback).
    pub warnings: Vec<String>,
    /// When each certificate the gateway presents or trusts expires, for the page's banner.
    pub certificates: Arc<CertificateExpiries>,
    pub access: access::AccessLog,
}
