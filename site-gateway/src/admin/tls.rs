//! The admin address's TLS: the certificate chain and key the config names, read at start
//! into a rustls server config with the ring provider (no OpenSSL, as everywhere).

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Reads the chain and key (blocking) into a server config, with the leaf's expiry (a Unix
/// time) for the metrics.
pub fn server_config(tls: &AdminTls) -> Result<(rustls::ServerConfig, Option<i64>), AdminTlsError> {
    let chain = read_chain(&tls.cert)?;
    let expiry = leasehold_federation::transport::certs::not_after(&chain[0]);
    check_key_mode(&tls.key)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|error| AdminTlsError::File {
        key: "tls_key",
        path: tls.key.clone(),
        detail: format!("no PEM private key ({error})"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|error| AdminTlsError::Config {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            detail: error.to_string(),
        })?;
    Ok((config, expiry))
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
