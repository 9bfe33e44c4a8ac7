//! The admin address's TLS: the certificate chain and key the config names, read at start
//! and again when they change, presented by a rustls server config with the ring provider
//! (no OpenSSL, as everywhere).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::AdminTls;

#[derive(Debug, thiserror::Error)]
pub enum AdminTlsError {
    #[error("[admin] {key} {path}: {detail}")]
    File {
        key: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "[admin] tls_cert {cert} and tls_key {key} do not make a TLS config: {detail}; are they a pair?"
    )]
    Config {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
}

/// The admin address's certificate and key, swapped whole when they are read again (their
/// file changes, or SIGHUP): each handshake presents the pair last read, and connections
/// already open keep theirs. A pair that does not load is refused and the old one kept.
#[derive(Debug)]
pub struct AdminCertificate {
    tls: AdminTls,
    current: RwLock<Arc<CertifiedKey>>,
}

impl AdminCertificate {
    /// Reads the chain and key (blocking), with the leaf's expiry (a Unix time).
    pub fn load(tls: &AdminTls) -> Result<(Arc<AdminCertificate>, Option<i64>), AdminTlsError> {
        let (key, expiry) = certified(tls)?;
        let certificate = AdminCertificate {
            tls: tls.clone(),
            current: RwLock::new(key),
        };
        Ok((Arc::new(certificate), expiry))
    }

    /// Reads the files again (blocking); the new expiry, or why the old pair stays.
    pub fn reload(&self) -> Result<Option<i64>, AdminTlsError> {
        let (key, expiry) = certified(&self.tls)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
        Ok(expiry)
    }

    /// The certificate file, watched for changes.
    pub fn cert_path(&self) -> &Path {
        &self.tls.cert
    }
}

impl ResolvesServerCert for AdminCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock held a whole pair: it is still one certificate and its key.
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// A server config (ring provider) that presents what `certificate` holds at each handshake.
pub fn server_config(
    certificate: Arc<AdminCertificate>,
) -> Result<rustls::ServerConfig, AdminTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .with_no_client_auth()
                .with_cert_resolver(certificate.clone())
        })
        .map_err(|error| AdminTlsError::Config {
            cert: certificate.tls.cert.clone(),
            key: certificate.tls.key.clone(),
            detail: error.to_string(),
        })
}

/// The chain and key of `tls`, checked to be a pair, and the leaf's expiry.
fn certified(tls: &AdminTls) -> Result<(Arc<CertifiedKey>, Option<i64>), AdminTlsError> {
    let chain = read_chain(&tls.cert)?;
    let expiry = leasehold_federation::transport::certs::not_after(&chain[0]);
    check_key_mode(&tls.key)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|error| AdminTlsError::File {
        key: "tls_key",
        path: tls.key.clone(),
        detail: format!("no PEM private key ({error})"),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let key =
        CertifiedKey::from_der(chain, key, &provider).map_err(|error| AdminTlsError::Config {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            detail: error.to_string(),
        })?;
    Ok((Arc::new(key), expiry))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, AdminTlsError> {
    let failed = |detail: String| AdminTlsError::File {
        key: "tls_cert",
        path: path.to_path_buf(),
        detail,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|error| failed(format!("cannot read it ({error})")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failed(format!("not PEM certificates ({error})")))?;
    if chain.is_empty() {
        return Err(failed(
            "holds no certificate (expected PEM, -----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(chain)
}

/// As for the federation's keys: a key others may read is anyone's certificate.
fn check_key_mode(path: &Path) -> Result<(), AdminTlsError> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = std::fs::metadata(path).map_err(|error| AdminTlsError::File {
        key: "tls_key",
        path: path.to_path_buf(),
        detail: format!("cannot read it ({error})"),
    })?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(AdminTlsError::File {
            key: "tls_key",
            path: path.to_path_buf(),
            detail: format!(
                "group or others may read it (mode {mode:04o}); run `chmod 600 {}`",
                path.display()
            ),
        });
    }
    Ok(())
}
