//! The fleet's node certificates: each simulated server presents its own
//! (`DIR/nodes/<id>.crt`), since the gateway admits a node by the name in its certificate.
//! Missing ones are issued here when the CA key is at hand, so a scale test does not have to
//! run `leasehold certs issue` a thousand times first.

use std::path::Path;

use leasehold_federation::ids::{ServerId, SiteId};
use leasehold_federation::transport::certs::{self, CertError, Identity};
use leasehold_federation::transport::identity::PeerName;

use super::FleetError;

/// Every server's identity, in order, and how many certificates were issued to get them.
pub fn load_or_issue(
    dir: &Path,
    servers: &[ServerId],
    site: Option<&SiteId>,
) -> Result<(Vec<Identity>, usize), FleetError> {
    let mut loaded: Vec<Option<Identity>> = Vec::with_capacity(servers.len());
    let mut missing = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        match certs::load_node_identity(dir, server) {
            Ok(identity) => loaded.push(Some(identity)),
            Err(CertError::NoCertificate { .. }) => {
                missing.push(index);
                loaded.push(None);
            }
            Err(error) => return Err(FleetError::Certificate(error)),
        }
    }
    let Some(&first_missing) = missing.first() else {
        return Ok((loaded.into_iter().flatten().collect(), 0));
    };
    if !dir.join("ca.key").exists() {
        // Name the first missing file and the command that makes it.
        let error = certs::load_node_identity(dir, &servers[first_missing])
            .err()
            .map_or_else(
                || "a certificate went missing".to_owned(),
                |e| e.to_string(),
            );
        return Err(FleetError::MissingCertificates {
            first: error,
            more: missing.len() - 1,
            ca_key: dir.join("ca.key"),
        });
    }
    let site = match site {
        Some(site) => site.clone(),
        None => infer_site(dir, &loaded)?,
    };
    // One key pair and signature each, and two fsynced files: spread over the cores, so
    // 20,000 take seconds.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = missing.len().div_ceil(threads).max(1);
    let issued: Vec<Result<Vec<(usize, Identity)>, CertError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = missing
            .chunks(chunk)
            .map(|indices| {
                let site = &site;
                scope.spawn(move || {
                    indices
                        .iter()
                        .map(|&index| {
                            let name = PeerName::Node {
                                site: site.clone(),
                                server: servers[index].clone(),
                            };
                            certs::issue(dir, &name, false)?;
                            Ok((index, certs::load_node_identity(dir, &servers[index])?))
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    for batch in issued {
        for (index, identity) in batch? {
            loaded[index] = Some(identity);
        }
    }
    Ok((loaded.into_iter().flatten().collect(), missing.len()))
}

/// The site to issue for: that of the fleet's existing node certificates, or the only site
/// certificate in `DIR/sites/`.
fn infer_site(dir: &Path, loaded: &[Option<Identity>]) -> Result<SiteId, FleetError> {
    if let Some(site) = loaded
        .iter()
        .flatten()
        .find_map(|identity| match &identity.name {
            PeerName::Node { site, .. } => Some(site.clone()),
            PeerName::Site(_) => None,
        })
    {
        return Ok(site);
    }
    let sites: Vec<SiteId> = std::fs::read_dir(dir.join("sites"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| {
                    let name = entry.file_name();
                    let stem = name.to_str()?.strip_suffix(".crt")?;
                    SiteId::parse(stem).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    match sites.as_slice() {
        [site] => Ok(site.clone()),
        _ => Err(FleetError::WhichSite {
            dir: dir.to_owned(),
            found: sites.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<ServerId> {
        names.iter().map(|n| ServerId::parse(n).unwrap()).collect()
    }

    #[test]
    fn missing_certificates_are_issued_for_the_only_site_when_the_ca_key_is_here() {
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path(), false).unwrap();
        let site = SiteId::parse("site-a").unwrap();
        certs::issue(dir.path(), &PeerName::Site(site.clone()), false).unwrap();
        let (identities, issued) = load_or_issue(dir.path(), &ids(&["f1", "f2"]), None).unwrap();
        assert_eq!(issued, 2);
        assert!(matches!(&identities[1].name, PeerName::Node { site: s, .. } if s == &site));
        // Second time round, nothing is issued.
        let (_, issued) = load_or_issue(dir.path(), &ids(&["f1", "f2"]), None).unwrap();
        assert_eq!(issued, 0);
    }

    #[test]
    fn without_the_ca_key_a_missing_certificate_names_the_file_and_the_command() {
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path(), false).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        match load_or_issue(dir.path(), &ids(&["f1", "f2", "f3"]), None) {
            Err(error @ FleetError::MissingCertificates { more: 2, .. }) => {
                let text = error.to_string();
                assert!(text.contains("nodes/f1.crt"), "{text}");
                assert!(text.contains("leasehold certs issue"), "{text}");
                assert!(text.contains("and 2 more missing"), "{text}");
            }
            other => panic!("expected MissingCertificates, got {other:?}"),
        }
    }

    #[test]
    fn with_several_sites_and_no_node_certificate_the_site_must_be_given() {
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path(), false).unwrap();
        for site in ["site-a", "site-b"] {
            let site = PeerName::Site(SiteId::parse(site).unwrap());
            certs::issue(dir.path(), &site, false).unwrap();
        }
        assert!(matches!(
            load_or_issue(dir.path(), &ids(&["f1"]), None),
            Err(FleetError::WhichSite { found: 2, .. })
        ));
        let site_b = SiteId::parse("site-b").unwrap();
        let (identities, _) = load_or_issue(dir.path(), &ids(&["f1"]), Some(&site_b)).unwrap();
        assert!(matches!(&identities[0].name, PeerName::Node { site, .. } if site == &site_b));
    }
}
