//! rustls configurations for QUIC with mutual TLS against the federation CA.
//!
//! Both sides present a certificate signed by the federation CA and verify the other's. The
//! server additionally checks, inside the handshake, that the client's name is admitted by
//! the listener's [`PeerPolicy`], so an unwanted peer never gets a connection object. The
//! client dials with the expected peer's [`PeerName::dns_name`] as server name, so webpki's
//! name check makes sure it reached the peer it meant to.
//!
//! Only TLS 1.3 (QUIC requires it) and only the ring provider: the provider is passed
//! explicitly because with both ring and aws-lc-rs in the dependency graph rustls cannot
//! choose a default and `ClientConfig::builder()` panics.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::Alpn;
use super::certs::Identity;
use super::identity::{IdentityError, PeerName, PeerPolicy, PolicyRefusal};

/// Why a TLS configuration could not be built from an [`Identity`].
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the federation CA certificate of {name} is not usable as a trust anchor: {source}")]
    BadCa {
        name: PeerName,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the certificate verifier for {name}: {source}")]
    Verifier {
        name: PeerName,
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
    #[error("the certificate and key of {name} are not usable for TLS 1.3: {source}")]
    Config {
        name: PeerName,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "a {alpn:?} listener cannot be guarded by a {policy} policy; use PeerPolicy::{expected}"
    )]
    PolicyDoesNotMatchAlpn {
        alpn: Alpn,
        policy: &'static str,
        expected: &'static str,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(identity: &Identity) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in &identity.ca {
        roots.add(ca.clone()).map_err(|source| TlsError::BadCa {
            name: identity.name.clone(),
            source,
        })?;
    }
    Ok(Arc::new(roots))
}

/// The configuration of a listener that speaks `alpn` and admits the clients `policy`
/// admits. The policy is shared so that a config reload takes effect on the next handshake.
pub fn server_config(
    identity: &Identity,
    alpn: Alpn,
    policy: Arc<RwLock<PeerPolicy>>,
) -> Result<rustls::ServerConfig, TlsError> {
    check_policy_matches_alpn(alpn, &read_policy(&policy))?;
    let provider = provider();
    let inner = WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider.clone())
        .build()
        .map_err(|source| TlsError::Verifier {
            name: identity.name.clone(),
            source,
        })?;
    let verifier = Arc::new(PolicyVerifier {
        inner,
        policy,
        alpn,
    });
    let config_error = |source| TlsError::Config {
        name: identity.name.clone(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(config_error)?;
    config.alpn_protocols = alpn.ids(alpn.versions());
    // A resumed session skips the client verifier, and with it the policy and expiry checks:
    // a peer removed from the config could come back on an old ticket. Handshakes between
    // gateways are rare enough that full ones cost nothing that matters.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The configuration for dialing peers that speak `alpn`. Connect with the server name
/// `PeerName::dns_name()` of the peer you mean to reach.
pub fn client_config(identity: &Identity, alpn: Alpn) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(identity)?, provider.clone())
        .build()
        .map_err(|source| TlsError::Verifier {
            name: identity.name.clone(),
            source,
        })?;
    let config_error = |source| TlsError::Config {
        name: identity.name.clone(),
        source,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(config_error)?;
    config.alpn_protocols = alpn.ids(alpn.versions());
    // The server sends no tickets (see server_config); not keeping any makes that explicit.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The [`PeerName`] of an established connection's peer, from quinn's
/// `Connection::peer_identity()` (pass `&*boxed`; a `&Box<dyn Any>` is accepted too).
pub fn peer_name_of(conn_peer_identity: &dyn Any) -> Result<PeerName, IdentityError> {
    if let Some(boxed) = conn_peer_identity.downcast_ref::<Box<dyn Any>>() {
        return peer_name_of(boxed.as_ref());
    }
    let chain = conn_peer_identity
        .downcast_ref::<Vec<CertificateDer<'static>>>()
        .ok_or(IdentityError::NoPeerCertificate {
            reason: "the peer identity is not a rustls certificate chain",
        })?;
    let leaf = chain.first().ok_or(IdentityError::NoPeerCertificate {
        reason: "the peer presented an empty chain",
    })?;
    PeerName::from_certificate(leaf)
}

fn read_policy(policy: &RwLock<PeerPolicy>) -> std::sync::RwLockReadGuard<'_, PeerPolicy> {
    // A writer that panicked can only have left a whole policy behind (writers replace the
    // value), so the poisoned value is still a valid policy.
    policy
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn check_policy_matches_alpn(alpn: Alpn, policy: &PeerPolicy) -> Result<(), TlsError> {
    match (alpn, policy) {
        (Alpn::Site, PeerPolicy::Sites(_)) | (Alpn::Node, PeerPolicy::Nodes { .. }) => Ok(()),
        (Alpn::Site, PeerPolicy::Nodes { .. }) => Err(TlsError::PolicyDoesNotMatchAlpn {
            alpn,
            policy: "Nodes",
            expected: "Sites",
        }),
        (Alpn::Node, PeerPolicy::Sites(_)) => Err(TlsError::PolicyDoesNotMatchAlpn {
            alpn,
            policy: "Sites",
            expected: "Nodes",
        }),
    }
}

/// Why the server refused a client whose chain is valid. Debug prints the same text as
/// Display because rustls shows a `CertificateError::Other` with `{:?}` in the handshake
/// error, and the operator should read the reason there, not a struct dump.
#[derive(Clone)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refusal(reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(
        reason,
    )))))
}

/// webpki's chain check, then the listener's policy on the name in the certificate.
struct PolicyVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    policy: Arc<RwLock<PeerPolicy>>,
    alpn: Alpn,
}

impl fmt::Debug for PolicyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyVerifier")
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for PolicyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(error) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            // The name is unverified here, but it tells the operator who is knocking.
            match PeerName::from_certificate(end_entity) {
                Ok(claimed) => tracing::warn!(
                    alpn = ?self.alpn,
                    claimed_peer = %claimed,
                    %error,
                    "refused a peer: its certificate does not verify against the federation CA"
                ),
                Err(_) => tracing::warn!(
                    alpn = ?self.alpn,
                    %error,
                    "refused a peer: its certificate does not verify against the federation CA"
                ),
            }
            return Err(error);
        }
        let name = match PeerName::from_certificate(end_entity) {
            Ok(name) => name,
            Err(error) => {
                tracing::warn!(alpn = ?self.alpn, %error, "refused a peer: its certificate names no peer");
                return Err(refusal(error.to_string()));
            }
        };
        let admitted: Result<(), PolicyRefusal> = read_policy(&self.policy).admits(&name);
        match admitted {
            Ok(()) => Ok(ClientCertVerified::assertion()),
            Err(reason) => {
                tracing::warn!(alpn = ?self.alpn, peer = %name, %reason, "refused a peer");
                Err(refusal(format!("{name} refused: {reason}")))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::ids::{ServerId, SiteId};
    use crate::transport::certs;

    fn site(s: &str) -> SiteId {
        SiteId::parse(s).unwrap()
    }

    fn identity(dir: &std::path::Path, name: &str) -> Identity {
        certs::issue(dir, &PeerName::Site(site(name)), false).unwrap();
        certs::load_site_identity(dir, &site(name)).unwrap()
    }

    #[test]
    fn configs_are_accepted_by_quinn() {
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path(), false).unwrap();
        let id = identity(dir.path(), "site-a");
        let policy = Arc::new(RwLock::new(PeerPolicy::Sites(BTreeSet::new())));
        let server = server_config(&id, Alpn::Site, policy).unwrap();
        assert_eq!(server.alpn_protocols, vec![b"leasehold-site/1".to_vec()]);
        quinn::crypto::rustls::QuicServerConfig::try_from(server).unwrap();
        let client = client_config(&id, Alpn::Site).unwrap();
        quinn::crypto::rustls::QuicClientConfig::try_from(client).unwrap();
    }

    #[test]
    fn policy_must_match_alpn() {
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path(), false).unwrap();
        let id = identity(dir.path(), "site-a");
        let policy = Arc::new(RwLock::new(PeerPolicy::Nodes {
            site: site("site-a"),
            servers: [ServerId::parse("a1").unwrap()].into(),
        }));
        let err = server_config(&id, Alpn::Site, policy).unwrap_err();
        assert!(
            matches!(err, TlsError::PolicyDoesNotMatchAlpn { .. }),
            "{err}"
        );
    }

    #[test]
    fn peer_name_of_reads_quinn_peer_identity() {
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path(), false).unwrap();
        let id = identity(dir.path(), "site-a");
        let boxed: Box<dyn Any> = Box::new(id.chain.clone());
        assert_eq!(
            peer_name_of(&*boxed).unwrap(),
            PeerName::Site(site("site-a"))
        );
        assert_eq!(
            peer_name_of(&boxed).unwrap(),
            PeerName::Site(site("site-a"))
        );
        assert!(matches!(
            peer_name_of(&42u8).unwrap_err(),
            IdentityError::NoPeerCertificate { .. }
        ));
        let empty: Vec<CertificateDer<'static>> = Vec::new();
        assert!(matches!(
            peer_name_of(&empty).unwrap_err(),
            IdentityError::NoPeerCertificate { .. }
        ));
    }
}
