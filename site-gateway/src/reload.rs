//! Live config edits (and the admin token file, read again the same way): SIGHUP, or a
//! change of the config file seen by a watcher on its directory (editors save by writing a new file and renaming it over the old, which a
//! watch on the file itself would lose). Triggers are debounced; the whole file is then
//! validated off the actors, by `config::load_site` as `leasehold config check` does, and
//! the master gets either the new config (applied as a diff) or the errors (the site keeps
//! its last good config).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::Addr;
use sha2::{Digest, Sha256};

use crate::actors::master::{ApplyConfig, ConfigRefused, SiteMaster};
use crate::admin::TokenStore;
use crate::config;

pub use leasehold_watch::DEBOUNCE;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Watch(#[from] leasehold_watch::WatchError),
}

/// `leasehold_watch::watch` of one file.
fn watch(
    path: PathBuf,
    reread: impl Fn(&'static str) + Send + Sync + 'static,
) -> Result<(), ReloadError> {
    Ok(leasehold_watch::watch(&[path], reread)?)
}

/// The hex sha256 of `bytes`: how audit entries and `/v1/status` name a config.
pub fn hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Starts the watcher and the SIGHUP listener for `path` on the current tokio runtime.
/// Edits go to `master` until the process ends.
/// `gateway`: which of the site's gateways this is (`--name`), whose addresses an edit is
/// read with.
pub fn start(
    path: PathBuf,
    gateway: Option<String>,
    master: Addr<SiteMaster>,
) -> Result<(), ReloadError> {
    let file = path.clone();
    watch(path, move |why| match check(&file, gateway.as_deref()) {
        Ok((config, hash, secrets)) => {
            tracing::info!(trigger = why, file = %file.display(), hash = &hash[..12], "config edit accepted by the checks; applying");
            master.do_send(ApplyConfig {
                config,
                hash,
                secrets,
            });
        }
        Err(errors) => {
            tracing::warn!(
                trigger = why,
                "config edit refused; the site keeps its last good config:\n{errors}"
            );
            master.do_send(ConfigRefused { errors });
        }
    })
}

/// Reads the admin token file again on SIGHUP and when it changes; a refused file leaves
/// the tokens as they were (`crate::admin::TokenStore::reload`).
pub fn watch_tokens(store: Arc<TokenStore>) -> Result<(), ReloadError> {
    let path = store.path().to_path_buf();
    watch(path, move |why| match store.reload() {
        Ok(count) => tracing::info!(
            trigger = why,
            file = %store.path().display(),
            tokens = count,
            "admin token file read again"
        ),
        Err(error) => tracing::warn!(
            trigger = why,
            "admin token file refused; the gateway keeps the tokens it had: {error}"
        ),
    })
}

/// Reads the site's certificate, key and CA again on SIGHUP and when the certificate file
/// changes (`leasehold certs issue --force` writes a renewed one), and has `endpoints`
/// present them from the next handshake on; open connections are kept. A pair that does
/// not load (a key that does not match, a certificate another CA signed) is refused and
/// the old one kept. The metrics and the page's banner follow what is presented
/// (`CertificateExpiries`, which both read).
pub fn watch_certificates(
    certs: PathBuf,
    site: leasehold_federation::ids::SiteId,
    endpoints: Vec<Arc<leasehold_federation::transport::endpoint::Endpoint>>,
    expiries: Arc<crate::admin::CertificateExpiries>,
) -> Result<(), ReloadError> {
    use leasehold_federation::transport::certs::{load_site_identity, not_after};
    let watched = certs.join("sites").join(format!("{site}.crt"));
    let bundle = certs.join("ca.crt");
    let reread = move |why: &'static str| {
        let identity = match load_site_identity(&certs, &site) {
            Ok(identity) => identity,
            Err(error) => {
                tracing::warn!(
                    trigger = why,
                    "certificates refused; the gateway keeps presenting the ones it had: {error}"
                );
                return;
            }
        };
        for endpoint in &endpoints {
            if let Err(error) = endpoint.set_identity(&identity) {
                tracing::warn!(trigger = why, %error, "certificates refused by a listener; it keeps the ones it had");
                return;
            }
        }
        let site_expiry = identity.chain.first().and_then(not_after);
        for (which, at) in [("site", site_expiry), ("ca", identity.ca_not_after())] {
            if let Some(at) = at {
                expiries.set(which, at);
            }
        }
        tracing::info!(
            trigger = why,
            not_after = site_expiry.unwrap_or_default(),
            cas = identity.ca.len(),
            "certificates read again; new connections present them"
        );
    };
    // The site's certificate, and the CA bundle (a rotation changes it alone).
    Ok(leasehold_watch::watch(&[watched, bundle], reread)?)
}

/// Reads the admin address's certificate and key again on SIGHUP and when the certificate
/// file changes (`leasehold certs issue --admin --force`): HTTPS handshakes present the new
/// pair from then on. A pair that does not load is refused, and the old one kept.
pub fn watch_admin_certificate(
    certificate: Arc<crate::admin::tls::AdminCertificate>,
    expiries: Arc<crate::admin::CertificateExpiries>,
) -> Result<(), ReloadError> {
    let path = certificate.cert_path().to_path_buf();
    watch(path, move |why| match certificate.reload() {
        Ok(expiry) => {
            if let Some(at) = expiry {
                expiries.set("admin", at);
            }
            tracing::info!(
                trigger = why,
                not_after = expiry.unwrap_or_default(),
                "admin certificate read again; new HTTPS connections present it"
            );
        }
        Err(error) => tracing::warn!(
            trigger = why,
            "admin certificate refused; the admin address keeps presenting the one it had: {error}"
        ),
    })
}

/// What an accepted edit brings: the config, its file's hash, and its secrets read again.
type Checked = (
    config::SiteConfig,
    String,
    std::collections::HashMap<
        leasehold_federation::ids::AccountId,
        leasehold_federation::wire::common::Secrets,
    >,
);

/// Reads, hashes and validates the file, and reads the secrets it names (blocking: file
/// I/O and parsing). A secrets file that fails its checks refuses the edit.
fn check(path: &Path, gateway: Option<&str>) -> Result<Checked, String> {
    // The hash is of the bytes read here; should the file change again between this read
    // and the loader's, that change is itself a trigger and is checked next.
    let bytes = std::fs::read(path)
        .map_err(|error| format!("{}: cannot read config file: {error}", path.display()))?;
    let config = config::load_site(path)
        .map_err(|errors| errors.to_string())?
        .as_gateway(gateway)?;
    let secrets = crate::secrets::load_own(&config).map_err(|errors| errors.to_string())?;
    Ok((config, hash(&bytes), secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
