//! The federation CA, site and node certificates on disk, and loading them as an [`Identity`].
//!
//! Layout of a certificate directory `DIR` (all PEM):
//!
//! ```text
//! DIR/ca.crt   DIR/ca.key                      the federation CA
//! DIR/sites/<site>.crt   DIR/sites/<site>.key  a site gateway
//! DIR/nodes/<server>.crt DIR/nodes/<server>.key a node agent
//! DIR/admin/<site>.crt   DIR/admin/<site>.key  a site's admin address (HTTPS)
//! ```
//!
//! Private keys are created with mode 0600 and never printed; loading refuses a key that
//! group or others can read, since anyone who can read it can impersonate the peer.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use super::identity::{IdentityError, PeerName};
use crate::ids::{ServerId, SiteId};

/// The CA's common name, so that an operator recognises it in `openssl x509 -text`.
pub const CA_COMMON_NAME: &str = "Leasehold federation CA";
/// How long the CA is valid: long, because replacing it means reissuing every certificate.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a site or node certificate is valid by default.
const LEAF_VALIDITY: Duration = Duration::days(365);
/// Certificates start this long before they are made, so that a peer whose clock is a little
/// behind (another datacenter) does not see them as "not valid yet".
const CLOCK_SKEW: Duration = Duration::hours(1);
/// Mode of private key files: owner read/write only.
const KEY_MODE: u32 = 0o600;
/// Mode of certificate files: certificates are public.
const CERT_MODE: u32 = 0o644;

/// Why creating, issuing or loading certificates failed. Each message names the file and
/// says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path} already exists; pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("no CA at {path}: run `leasehold certs init --dir {dir}` first")]
    NoCa { path: PathBuf, dir: PathBuf },
    #[error("no certificate for {name} at {path}: run `leasehold certs issue --dir {dir} {args}`")]
    NoCertificate {
        name: String,
        path: PathBuf,
        dir: PathBuf,
        args: String,
    },
    #[error(
        "no private key at {path}: reissue the certificate with `leasehold certs issue ... --force`"
    )]
    NoKey { path: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a readable PEM {what}: {reason}")]
    BadPem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error(
        "{path} is not a CA certificate (no basicConstraints CA:TRUE); point --dir at a directory made by `leasehold certs init`"
    )]
    NotACa { path: PathBuf },
    #[error(
        "{key} does not belong to {cert}; restore the matching pair or run `leasehold certs init --force` (and reissue every certificate)"
    )]
    CaKeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{path}: {source}")]
    Identity {
        path: PathBuf,
        #[source]
        source: IdentityError,
    },
    #[error(
        "{path} names {found}, not {expected}; reissue it with `leasehold certs issue ... --force`"
    )]
    WrongName {
        path: PathBuf,
        expected: String,
        found: PeerName,
    },
    #[error(
        "{path} was not issued by the CA in {ca}; reissue it with `leasehold certs issue ... --force`"
    )]
    NotIssuedByCa { path: PathBuf, ca: PathBuf },
    #[error(
        "{path} already holds two CAs: a rotation is under way; re-issue every certificate, then finish it with `leasehold certs retire-ca` (docs/certificates.md)"
    )]
    RotationUnderway { path: PathBuf },
    #[error("{path} holds one CA: there is no rotation to finish")]
    NoRotation { path: PathBuf },
    #[error(
        "still signed by the CA being retired: {}; re-issue each with `leasehold certs issue ... --force` and reload it first",
        .paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    StillSignedByOld { paths: Vec<PathBuf> },
    #[error(
        "{key} does not belong to {cert} ({reason}); reissue it with `leasehold certs issue ... --force`"
    )]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        reason: String,
    },
    #[error("{path} can be read by group or others (mode {mode:04o}): run `chmod 600 {path}`")]
    KeyReadable { path: PathBuf, mode: u32 },
    #[error("cannot create {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error(
        "an admin certificate for {site} names the hosts clients reach it by: give --host NAME (a DNS name or an IP address), once per name"
    )]
    NoAdminHosts { site: SiteId },
    #[error("the validity period ends ({not_after}) before it starts ({not_before})")]
    EmptyValidity {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
}

/// A peer's credentials: who it is, the CA it trusts, and what it presents.
pub struct Identity {
    pub name: PeerName,
    /// The federation's CAs (`ca.crt`): the trust anchors for peers. One, except during a
    /// CA rotation, when the new CA and the old are both trusted (docs/certificates.md).
    pub ca: Vec<CertificateDer<'static>>,
    /// This peer's certificate first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            name: self.name.clone(),
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            // PrivateKeyDer is deliberately not Clone, so that copies of a key are visible.
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    // By hand, so that a `{:?}` in a log line can never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.crt")
}

fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// Where the certificate and key of `name` live in `dir`.
fn leaf_paths(dir: &Path, name: &PeerName) -> (PathBuf, PathBuf) {
    match name {
        PeerName::Site(site) => pair(dir, "sites", site.as_str()),
        PeerName::Node { server, .. } => pair(dir, "nodes", server.as_str()),
    }
}

fn pair(dir: &Path, sub: &str, stem: &str) -> (PathBuf, PathBuf) {
    let base = dir.join(sub);
    (
        base.join(format!("{stem}.crt")),
        base.join(format!("{stem}.key")),
    )
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CertError {
    let path = path.to_owned();
    move |source| CertError::Io {
        action,
        path,
        source,
    }
}

fn generate(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertError {
    let what = what.into();
    move |source| CertError::Generate { what, source }
}

/// Creates the federation CA in `dir` (created if needed). Refuses to replace an existing CA
/// unless `force`: a new CA invalidates every certificate issued so far.
pub fn init_ca(dir: &Path, force: bool) -> Result<Vec<PathBuf>, CertError> {
    let cert_path = ca_cert_path(dir);
    let key_path = ca_key_path(dir);
    refuse_existing(&[&cert_path, &key_path], force)?;

    let (key, cert) = new_ca()?;
    create_dir(dir)?;
    // Key first: a certificate without its key would be useless, a key alone is harmless.
    write_file(&key_path, key.serialize_pem().as_bytes(), KEY_MODE, force)?;
    write_file(&cert_path, cert.pem().as_bytes(), CERT_MODE, force)?;
    Ok(vec![cert_path, key_path])
}

/// A new CA key and its self-signed certificate.
fn new_ca() -> Result<(KeyPair, rcgen::Certificate), CertError> {
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate("the CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    let now = OffsetDateTime::now_utc();
    // Every federation's CA has the same common name; a second attribute that differs per CA
    // keeps webpki from mistaking another federation's CA for ours by name, which would show
    // up as a confusing `BadSignature` instead of `UnknownIssuer`.
    params.distinguished_name.push(
        DnType::OrganizationalUnitName,
        format!("created {}", now.unix_timestamp_nanos()),
    );
    // Path length 0: the CA signs site and node certificates directly, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_VALIDITY;
    let cert = params
        .self_signed(&key)
        .map_err(generate("the CA certificate"))?;

    Ok((key, cert))
}

/// Starts a CA rotation in `dir`: a new CA, whose key replaces `ca.key` (the old one is
/// renamed `ca.key.retired-<unix time>`), and a `ca.crt` that holds the new CA and the old,
/// so that every site and node that reads it trusts both while certificates are re-issued.
pub fn rotate_ca(dir: &Path) -> Result<Vec<PathBuf>, CertError> {
    let cert_path = ca_cert_path(dir);
    let key_path = ca_key_path(dir);
    if read_ca_bundle(dir)?.len() > 1 {
        return Err(CertError::RotationUnderway { path: cert_path });
    }
    // The current pair must be whole before it is set aside.
    load_issuer(dir)?;
    let old_pem = fs::read_to_string(&cert_path).map_err(io_error("read", &cert_path))?;
    let (key, cert) = new_ca()?;
    let retired = dir.join(format!(
        "ca.key.retired-{}",
        OffsetDateTime::now_utc().unix_timestamp()
    ));
    fs::rename(&key_path, &retired).map_err(io_error("rename", &key_path))?;
    write_file(&key_path, key.serialize_pem().as_bytes(), KEY_MODE, false)?;
    let bundle = format!("{}{}", cert.pem(), old_pem);
    write_file(&cert_path, bundle.as_bytes(), CERT_MODE, true)?;
    Ok(vec![cert_path, key_path, retired])
}

/// Finishes a CA rotation in `dir`: `ca.crt` keeps only the CA of `ca.key`. Refused while a
/// site, node or admin certificate in `dir` is still signed by the other.
pub fn retire_ca(dir: &Path) -> Result<Vec<PathBuf>, CertError> {
    let cert_path = ca_cert_path(dir);
    let bundle = read_ca_bundle(dir)?;
    if bundle.len() < 2 {
        return Err(CertError::NoRotation { path: cert_path });
    }
    let issuer = load_issuer(dir)?;
    let keep = bundle
        .iter()
        .find(|one| {
            issuer.key().subject_public_key_info() == public_key_of(one).unwrap_or_default()
        })
        .cloned()
        .ok_or(CertError::CaKeyMismatch {
            key: ca_key_path(dir),
            cert: cert_path.clone(),
        })?;
    let mut stale = Vec::new();
    for sub in ["sites", "nodes", "admin"] {
        let Ok(entries) = fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "crt") {
                continue;
            }
            let pem = fs::read(&path).map_err(io_error("read", &path))?;
            let leaf = CertificateDer::from_pem_slice(&pem)
                .map_err(|e| bad_pem(&path, "certificate", e))?;
            if check_signed_by(&leaf, &keep, &path, &cert_path).is_err() {
                stale.push(path);
            }
        }
    }
    if !stale.is_empty() {
        stale.sort();
        return Err(CertError::StillSignedByOld { paths: stale });
    }
    // Keep the PEM block of that CA as it was written.
    let text = fs::read_to_string(&cert_path).map_err(io_error("read", &cert_path))?;
    let block = text
        .split_inclusive("-----END CERTIFICATE-----")
        .find(|block| CertificateDer::from_pem_slice(block.as_bytes()).is_ok_and(|one| one == keep))
        .map(|block| format!("{}\n", block.trim_start()))
        .ok_or_else(|| {
            bad_pem(
                &cert_path,
                "certificate",
                rustls_pki_types::pem::Error::NoItemsFound,
            )
        })?;
    write_file(&cert_path, block.as_bytes(), CERT_MODE, true)?;
    Ok(vec![cert_path])
}

/// The subjectPublicKeyInfo of a certificate, as DER.
fn public_key_of(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.public_key().raw.to_vec())
}

/// Issues a certificate for `name`, valid for a year from now, signed by the CA in `dir`.
pub fn issue(dir: &Path, name: &PeerName, force: bool) -> Result<Vec<PathBuf>, CertError> {
    let now = OffsetDateTime::now_utc();
    issue_with_validity(dir, name, now - CLOCK_SKEW, now + LEAF_VALIDITY, force)
}

/// Like [`issue`], valid for `days` from now.
pub fn issue_for_days(
    dir: &Path,
    name: &PeerName,
    days: u32,
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    let now = OffsetDateTime::now_utc();
    let valid = Duration::days(i64::from(days));
    issue_with_validity(dir, name, now - CLOCK_SKEW, now + valid, force)
}

/// Like [`issue`], with an explicit validity period (tests use it for expired certificates).
pub fn issue_with_validity(
    dir: &Path,
    name: &PeerName,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    if not_after <= not_before {
        return Err(CertError::EmptyValidity {
            not_before,
            not_after,
        });
    }
    let (cert_path, key_path) = leaf_paths(dir, name);
    let issuer = load_issuer(dir)?;
    refuse_existing(&[&cert_path, &key_path], force)?;

    let what = name.to_string();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(generate(format!("a key for {what}")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let common_name = match name {
        PeerName::Site(site) => site.as_str(),
        PeerName::Node { server, .. } => server.as_str(),
    };
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let dns = name
        .dns_name()
        .try_into()
        .map_err(generate(format!("the subjectAltName of {what}")))?;
    params.subject_alt_names = vec![SanType::DnsName(dns)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every endpoint both dials and accepts, so every certificate is client and server.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(generate(format!("the certificate of {what}")))?;
    write_pair(cert_path, key_path, &key, &cert, force)
}

fn write_pair(
    cert_path: PathBuf,
    key_path: PathBuf,
    key: &KeyPair,
    cert: &rcgen::Certificate,
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    if let Some(parent) = cert_path.parent() {
        create_dir(parent)?;
    }
    write_file(&key_path, key.serialize_pem().as_bytes(), KEY_MODE, force)?;
    write_file(&cert_path, cert.pem().as_bytes(), CERT_MODE, force)?;
    Ok(vec![cert_path, key_path])
}

/// Issues the HTTPS certificate of `site`'s admin address (DIR/admin/<site>.crt and .key),
/// valid for a year, for the names and addresses browsers and scrapers use to reach it:
/// `hosts` are DNS names or IP addresses, each a subjectAltName. A server certificate
/// only: it authenticates no one to the federation.
pub fn issue_admin(
    dir: &Path,
    site: &SiteId,
    hosts: &[String],
    days: u32,
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    let what = format!("the admin address of {site}");
    let mut names = Vec::with_capacity(hosts.len());
    for host in hosts {
        names.push(match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.as_str()
                    .try_into()
                    .map_err(generate(format!("the name `{host}` for {what}")))?,
            ),
        });
    }
    if names.is_empty() {
        return Err(CertError::NoAdminHosts { site: site.clone() });
    }
    let (cert_path, key_path) = pair(dir, "admin", site.as_str());
    let issuer = load_issuer(dir)?;
    refuse_existing(&[&cert_path, &key_path], force)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(generate(format!("a key for {what}")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{site} admin"));
    params.subject_alt_names = names;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + Duration::days(i64::from(days));
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(generate(format!("the certificate of {what}")))?;
    write_pair(cert_path, key_path, &key, &cert, force)
}

impl Identity {
    /// When the trusted CA that lasts longest expires (during a rotation, the new one's):
    /// what the federation's trust depends on once the rotation is done.
    pub fn ca_not_after(&self) -> Option<i64> {
        self.ca.iter().filter_map(not_after).max()
    }
}

/// When `cert` expires, as a Unix time; `None` if it does not parse.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// Loads the identity of site `site` from `dir`.
pub fn load_site_identity(dir: &Path, site: &SiteId) -> Result<Identity, CertError> {
    let expected = PeerName::Site(site.clone());
    let (cert_path, key_path) = pair(dir, "sites", site.as_str());
    load_identity(
        dir,
        &cert_path,
        &key_path,
        &expected.to_string(),
        &format!("--site {site}"),
        |found| found == &expected,
    )
}

/// Loads the identity of the node agent on `server` from `dir`. The node's site comes from
/// its certificate, since the CA vouched for it.
pub fn load_node_identity(dir: &Path, server: &ServerId) -> Result<Identity, CertError> {
    let (cert_path, key_path) = pair(dir, "nodes", server.as_str());
    load_identity(
        dir,
        &cert_path,
        &key_path,
        &format!("node {server}"),
        &format!("--site SITE --node {server}"),
        |found| matches!(found, PeerName::Node { server: s, .. } if s == server),
    )
}

fn load_identity(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    expected: &str,
    issue_args: &str,
    names_expected: impl Fn(&PeerName) -> bool,
) -> Result<Identity, CertError> {
    let ca_path = ca_cert_path(dir);
    let ca = read_ca_bundle(dir)?;

    let cert_pem = match fs::read(cert_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CertError::NoCertificate {
                name: expected.to_owned(),
                path: cert_path.to_owned(),
                dir: dir.to_owned(),
                args: issue_args.to_owned(),
            });
        }
        Err(e) => return Err(io_error("read", cert_path)(e)),
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(cert_path, "certificate", e))?;
    let Some(leaf) = chain.first() else {
        return Err(bad_pem(
            cert_path,
            "certificate",
            rustls_pki_types::pem::Error::NoItemsFound,
        ));
    };
    let name = PeerName::from_certificate(leaf).map_err(|source| CertError::Identity {
        path: cert_path.to_owned(),
        source,
    })?;
    if !names_expected(&name) {
        return Err(CertError::WrongName {
            path: cert_path.to_owned(),
            expected: expected.to_owned(),
            found: name,
        });
    }
    // Signed by one of the trusted CAs (during a rotation, either).
    let mut signed = Err(CertError::NotIssuedByCa {
        path: cert_path.to_owned(),
        ca: ca_path.clone(),
    });
    for one in &ca {
        signed = check_signed_by(leaf, one, cert_path, &ca_path);
        if signed.is_ok() {
            break;
        }
    }
    signed?;

    check_key_mode(key_path)?;
    let key_pem = match fs::read(key_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CertError::NoKey {
                path: key_path.to_owned(),
            });
        }
        Err(e) => return Err(io_error("read", key_path)(e)),
    };
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad_pem(key_path, "private key", e))?;
    // rustls compares the key with the certificate's public key; doing it here turns a
    // confusing handshake failure into an error naming both files.
    rustls::sign::CertifiedKey::from_der(
        chain.clone(),
        key.clone_key(),
        &rustls::crypto::ring::default_provider(),
    )
    .map_err(|e| CertError::KeyMismatch {
        key: key_path.to_owned(),
        cert: cert_path.to_owned(),
        reason: e.to_string(),
    })?;

    Ok(Identity {
        name,
        ca,
        chain,
        key,
    })
}

/// The CA's certificate and key, ready to sign.
fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let bundle = read_ca_bundle(dir)?;
    let key_path = ca_key_path(dir);
    check_key_mode(&key_path)?;
    let key_pem = match fs::read_to_string(&key_path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CertError::NoCa {
                path: key_path,
                dir: dir.to_owned(),
            });
        }
        Err(e) => return Err(io_error("read", &key_path)(e)),
    };
    let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::BadPem {
        path: key_path.clone(),
        what: "private key",
        reason: e.to_string(),
    })?;
    let cert_path = ca_cert_path(dir);
    // During a rotation ca.crt holds two CAs; ca.key is the new one's.
    let mut ca = None;
    for one in &bundle {
        let (_, parsed) =
            x509_parser::parse_x509_certificate(one.as_ref()).map_err(|e| CertError::BadPem {
                path: cert_path.clone(),
                what: "certificate",
                reason: e.to_string(),
            })?;
        if !parsed.is_ca() {
            return Err(CertError::NotACa { path: cert_path });
        }
        if parsed.public_key().raw == key.subject_public_key_info().as_slice() {
            ca = Some(one.clone());
        }
    }
    let Some(ca) = ca else {
        return Err(CertError::CaKeyMismatch {
            key: key_path,
            cert: cert_path,
        });
    };
    // Reading the issuer's name from the certificate (rather than rebuilding it) keeps the
    // issuer field of new certificates byte-identical to the CA's subject.
    Issuer::from_ca_cert_der(&ca, key).map_err(|e| CertError::BadPem {
        path: cert_path,
        what: "CA certificate",
        reason: e.to_string(),
    })
}

/// Every CA certificate in `ca.crt` (one, or two during a rotation).
fn read_ca_bundle(dir: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let path = ca_cert_path(dir);
    let pem = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CertError::NoCa {
                path,
                dir: dir.to_owned(),
            });
        }
        Err(e) => return Err(io_error("read", &path)(e)),
    };
    let bundle = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(&path, "certificate", e))?;
    if bundle.is_empty() {
        return Err(bad_pem(
            &path,
            "certificate",
            rustls_pki_types::pem::Error::NoItemsFound,
        ));
    }
    Ok(bundle)
}

fn bad_pem(path: &Path, what: &'static str, e: rustls_pki_types::pem::Error) -> CertError {
    CertError::BadPem {
        path: path.to_owned(),
        what,
        reason: e.to_string(),
    }
}

/// Checks the signature of `leaf` against the CA's key, so that a certificate from another
/// CA directory is reported at startup rather than as `UnknownIssuer` on every handshake.
fn check_signed_by(
    leaf: &CertificateDer<'_>,
    ca: &CertificateDer<'_>,
    leaf_path: &Path,
    ca_path: &Path,
) -> Result<(), CertError> {
    let (_, ca_parsed) =
        x509_parser::parse_x509_certificate(ca.as_ref()).map_err(|e| CertError::BadPem {
            path: ca_path.to_owned(),
            what: "certificate",
            reason: e.to_string(),
        })?;
    let (_, leaf_parsed) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| CertError::BadPem {
            path: leaf_path.to_owned(),
            what: "certificate",
            reason: e.to_string(),
        })?;
    leaf_parsed
        .verify_signature(Some(ca_parsed.public_key()))
        .map_err(|_| CertError::NotIssuedByCa {
            path: leaf_path.to_owned(),
            ca: ca_path.to_owned(),
        })
}

/// Refuses a key file that group or others may read.
fn check_key_mode(path: &Path) -> Result<(), CertError> {
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(CertError::KeyReadable {
                    path: path.to_owned(),
                    mode,
                });
            }
            Ok(())
        }
        // A missing key is reported by the read that follows, with its own advice.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("inspect", path)(e)),
    }
}

/// Checks every target before writing any, so that a refusal leaves the directory as it was.
fn refuse_existing(paths: &[&Path], force: bool) -> Result<(), CertError> {
    if force {
        return Ok(());
    }
    for path in paths {
        match fs::symlink_metadata(path) {
            Ok(_) => {
                return Err(CertError::Exists {
                    path: path.to_path_buf(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("inspect", path)(e)),
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(io_error("create directory", dir))
}

/// Writes `bytes` to `path` through a temporary file created with `mode`, so that a key is
/// never readable by others, not even for a moment, and a crash never leaves half a file.
/// Without `force` the final step is a hard link, which fails if `path` appeared meanwhile.
fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), CertError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    // A leftover from a crashed run would make create_new fail; it holds nothing we need.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_error("create", &tmp))?;
        file.write_all(bytes).map_err(io_error("write", &tmp))?;
        file.sync_all().map_err(io_error("write", &tmp))?;
        if force {
            fs::rename(&tmp, path).map_err(io_error("replace", path))
        } else {
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CertError::Exists {
                    path: path.to_owned(),
                }),
                Err(e) => Err(io_error("create", path)(e)),
            }
        }
    })();
    // After a rename the temporary name is gone already; otherwise it must not linger.
    let _ = fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::parse(s).unwrap()
    }

    #[test]
    fn init_then_issue_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let written = init_ca(dir.path(), false).unwrap();
        assert_eq!(
            written,
            vec![dir.path().join("ca.crt"), dir.path().join("ca.key")]
        );
        let mode = fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let name = PeerName::Site(site("site-a"));
        issue(dir.path(), &name, false).unwrap();
        let identity = load_site_identity(dir.path(), &site("site-a")).unwrap();
        assert_eq!(identity.name, name);
        assert_eq!(identity.chain.len(), 1);
        assert!(!format!("{identity:?}").contains("PRIVATE"));

        let node = PeerName::Node {
            site: site("site-a"),
            server: ServerId::parse("a1").unwrap(),
        };
        issue(dir.path(), &node, false).unwrap();
        let identity = load_node_identity(dir.path(), &ServerId::parse("a1").unwrap()).unwrap();
        assert_eq!(identity.name, node);
    }

    #[test]
    fn an_admin_certificate_names_its_hosts_and_serves_only() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), false).unwrap();
        let error = issue_admin(dir.path(), &site("site-a"), &[], 365, false).unwrap_err();
        assert!(error.to_string().contains("give --host NAME"), "{error}");
        let hosts = ["127.0.0.1".to_owned(), "site-a.dc1.example.net".to_owned()];
        let written = issue_admin(dir.path(), &site("site-a"), &hosts, 365, false).unwrap();
        assert_eq!(written[0], dir.path().join("admin/site-a.crt"));
        let pem = std::fs::read(&written[0]).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let names = format!(
            "{:?}",
            leaf.subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
        );
        assert!(names.contains("IPAddress([127, 0, 0, 1])"), "{names}");
        assert!(
            names.contains("DNSName(\"site-a.dc1.example.net\")"),
            "{names}"
        );
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(
            eku.server_auth && !eku.client_auth,
            "no federation identity"
        );
        check_key_mode(&written[1]).unwrap();
    }

    #[test]
    fn ca_is_a_constrained_ca_and_leaf_has_both_ekus() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), false).unwrap();
        let ca = read_ca_bundle(dir.path()).unwrap().remove(0);
        let (_, ca) = x509_parser::parse_x509_certificate(ca.as_ref()).unwrap();
        let bc = ca.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = ca.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(ca.subject().to_string().contains(CA_COMMON_NAME));

        issue(dir.path(), &PeerName::Site(site("site-b")), false).unwrap();
        let identity = load_site_identity(dir.path(), &site("site-b")).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(identity.chain[0].as_ref()).unwrap();
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(leaf.subject().to_string().contains("CN=site-b"));
        assert_eq!(leaf.issuer(), ca.subject());
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), false).unwrap();
        let before = fs::read(dir.path().join("ca.key")).unwrap();
        let err = init_ca(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("ca.crt already exists"), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(fs::read(dir.path().join("ca.key")).unwrap(), before);
        init_ca(dir.path(), true).unwrap();
        assert_ne!(fs::read(dir.path().join("ca.key")).unwrap(), before);
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn issue_without_ca_says_to_init() {
        let dir = tempfile::tempdir().unwrap();
        let err = issue(dir.path(), &PeerName::Site(site("site-a")), false).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("ca.crt"), "{text}");
        assert!(text.contains("leasehold certs init --dir"), "{text}");
    }

    #[test]
    fn loading_checks_name_and_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), false).unwrap();
        issue(dir.path(), &PeerName::Site(site("site-a")), false).unwrap();

        // A node certificate placed under sites/ names the wrong kind of peer.
        let node = PeerName::Node {
            site: site("site-a"),
            server: ServerId::parse("a1").unwrap(),
        };
        issue(dir.path(), &node, false).unwrap();
        fs::copy(
            dir.path().join("nodes/a1.crt"),
            dir.path().join("sites/site-x.crt"),
        )
        .unwrap();
        let err = load_site_identity(dir.path(), &site("site-x")).unwrap_err();
        assert!(matches!(err, CertError::WrongName { .. }), "{err}");
        assert!(err.to_string().contains("names node a1 of site-a"), "{err}");

        let missing = load_site_identity(dir.path(), &site("site-q")).unwrap_err();
        assert!(
            missing.to_string().contains("leasehold certs issue --dir"),
            "{missing}"
        );

        let key = dir.path().join("sites/site-a.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_site_identity(dir.path(), &site("site-a")).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("chmod 600 {}", key.display())),
            "{err}"
        );
    }

    #[test]
    fn certificate_of_another_ca_is_refused_at_load() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        init_ca(ours.path(), false).unwrap();
        init_ca(theirs.path(), false).unwrap();
        issue(theirs.path(), &PeerName::Site(site("site-a")), false).unwrap();
        fs::create_dir_all(ours.path().join("sites")).unwrap();
        for ext in ["crt", "key"] {
            let from = theirs.path().join(format!("sites/site-a.{ext}"));
            let to = ours.path().join(format!("sites/site-a.{ext}"));
            fs::copy(from, &to).unwrap();
        }
        let err = load_site_identity(ours.path(), &site("site-a")).unwrap_err();
        assert!(matches!(err, CertError::NotIssuedByCa { .. }), "{err}");
    }

    #[test]
    fn empty_validity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), false).unwrap();
        let now = OffsetDateTime::now_utc();
        let err = issue_with_validity(
            dir.path(),
            &PeerName::Site(site("site-a")),
            now,
            now - Duration::days(1),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, CertError::EmptyValidity { .. }));
    }
}
