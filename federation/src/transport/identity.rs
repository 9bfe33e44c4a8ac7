//! Who a certificate names ([`PeerName`]) and who may connect to a listener ([`PeerPolicy`]).
//!
//! A certificate proves that the federation's CA vouched for a name; it does not say that
//! this site wants to talk to that name. The TLS layer (see `transport::tls`) checks both:
//! first the chain against the CA, then the name against the listener's [`PeerPolicy`].
//!
//! Names live in the certificate's subjectAltName as DNS names under `leasehold.`, so that
//! webpki's own name check on the client side verifies exactly the peer we meant to dial:
//!
//! - a site gateway: `<site>.site.leasehold`
//! - a node agent: `<server>.<site>.node.leasehold`

use std::collections::BTreeSet;
use std::fmt;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use crate::ids::{InvalidId, ServerId, SiteId};

/// The suffix of every site name; see the module documentation.
const SITE_SUFFIX: &str = "site.leasehold";
/// The suffix of every node name; see the module documentation.
const NODE_SUFFIX: &str = "node.leasehold";

/// The party a certificate was issued to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerName {
    /// A site gateway: the federation's unit of trust between datacenters.
    Site(SiteId),
    /// A node agent on one server, which talks only to its own site's gateway.
    Node { site: SiteId, server: ServerId },
}

/// Why a name or a certificate does not identify a Leasehold peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "`{name}` is not a Leasehold peer name: expected `<site>.{SITE_SUFFIX}` or `<server>.<site>.{NODE_SUFFIX}`"
    )]
    NotAPeerName { name: String },
    #[error("`{name}` is not a Leasehold peer name: {source}")]
    InvalidId {
        name: String,
        #[source]
        source: InvalidId,
    },
    #[error("the peer's certificate cannot be parsed: {reason}")]
    UnparsableCertificate { reason: String },
    #[error(
        "the certificate names no Leasehold peer in its subjectAltName (DNS names: {}); issue it with `leasehold certs issue`",
        list_or_none(.dns_names)
    )]
    NoPeerName { dns_names: Vec<String> },
    #[error(
        "the certificate names more than one Leasehold peer ({}); a certificate must name exactly one",
        .names.join(", ")
    )]
    SeveralPeerNames { names: Vec<String> },
    #[error("the connection carries no peer certificate chain ({reason})")]
    NoPeerCertificate { reason: &'static str },
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

impl PeerName {
    /// The DNS name carried in the certificate's subjectAltName, and the server name a
    /// client dials so that webpki checks it.
    pub fn dns_name(&self) -> String {
        match self {
            PeerName::Site(site) => format!("{site}.{SITE_SUFFIX}"),
            PeerName::Node { site, server } => format!("{server}.{site}.{NODE_SUFFIX}"),
        }
    }

    /// The site this peer belongs to (a site is its own site).
    pub fn site(&self) -> &SiteId {
        match self {
            PeerName::Site(site) | PeerName::Node { site, .. } => site,
        }
    }

    /// Parses a name made by [`PeerName::dns_name`]. Case matters: ids are lowercase, and
    /// accepting other spellings would give one peer several names.
    pub fn from_dns_name(name: &str) -> Result<PeerName, IdentityError> {
        let invalid = |source| IdentityError::InvalidId {
            name: name.to_owned(),
            source,
        };
        // The literal labels spell SITE_SUFFIX and NODE_SUFFIX; the round-trip test ties them.
        match name.split('.').collect::<Vec<_>>().as_slice() {
            [site, "site", "leasehold"] => {
                Ok(PeerName::Site(SiteId::parse(site).map_err(invalid)?))
            }
            [server, site, "node", "leasehold"] => Ok(PeerName::Node {
                site: SiteId::parse(site).map_err(invalid)?,
                server: ServerId::parse(server).map_err(invalid)?,
            }),
            _ => Err(IdentityError::NotAPeerName {
                name: name.to_owned(),
            }),
        }
    }

    /// The peer an end-entity certificate names: exactly one of its subjectAltName DNS names
    /// must parse as a [`PeerName`]. Other DNS names are ignored, so an operator may add
    /// names of their own; two peer names would make the identity ambiguous and are refused.
    ///
    /// This does not check the chain: call it on a certificate rustls has verified.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<PeerName, IdentityError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
            IdentityError::UnparsableCertificate {
                reason: e.to_string(),
            }
        })?;
        let san = parsed.subject_alternative_name().map_err(|e| {
            IdentityError::UnparsableCertificate {
                reason: format!("subjectAltName: {e}"),
            }
        })?;
        let dns_names: Vec<String> = san
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut found: Vec<PeerName> = dns_names
            .iter()
            .filter_map(|dns| PeerName::from_dns_name(dns).ok())
            .collect();
        match found.len() {
            0 => Err(IdentityError::NoPeerName { dns_names }),
            1 => Ok(found.remove(0)),
            _ => Err(IdentityError::SeveralPeerNames {
                names: found.iter().map(PeerName::dns_name).collect(),
            }),
        }
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerName::Site(site) => write!(f, "site {site}"),
            PeerName::Node { site, server } => write!(f, "node {server} of {site}"),
        }
    }
}

/// Who may connect to one listener. Authentication (the CA) says who a peer is; this says
/// whether that peer is welcome here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPolicy {
    /// The site-to-site listener: only site gateways, and only the sites in this site's
    /// config.
    Sites(BTreeSet<SiteId>),
    /// The management channel of `site`: only node agents of that site that are in its
    /// inventory.
    Nodes {
        site: SiteId,
        servers: BTreeSet<ServerId>,
    },
}

/// Why a [`PeerPolicy`] refuses a peer whose certificate is otherwise valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    #[error("certificate names site `{site}`, which this site's config does not list as a peer")]
    UnlistedSite { site: SiteId },
    #[error("certificate names a node, but this is the site-to-site listener")]
    NodeOnSiteListener { site: SiteId, server: ServerId },
    #[error(
        "certificate names site `{site}`, but this is {local}'s management channel, which only its nodes join"
    )]
    SiteOnNodeListener { site: SiteId, local: SiteId },
    #[error("node of site `{site}` cannot join {local}'s management channel")]
    ForeignNode {
        site: SiteId,
        server: ServerId,
        local: SiteId,
    },
    #[error("node `{server}` is not in {site}'s inventory")]
    NotInInventory { site: SiteId, server: ServerId },
}

impl PeerPolicy {
    /// Whether `name` may connect to the listener this policy guards.
    pub fn admits(&self, name: &PeerName) -> Result<(), PolicyRefusal> {
        match (self, name) {
            (PeerPolicy::Sites(sites), PeerName::Site(site)) => {
                if sites.contains(site) {
                    Ok(())
                } else {
                    Err(PolicyRefusal::UnlistedSite { site: site.clone() })
                }
            }
            (PeerPolicy::Sites(_), PeerName::Node { site, server }) => {
                Err(PolicyRefusal::NodeOnSiteListener {
                    site: site.clone(),
                    server: server.clone(),
                })
            }
            (PeerPolicy::Nodes { site: local, .. }, PeerName::Site(site)) => {
                Err(PolicyRefusal::SiteOnNodeListener {
                    site: site.clone(),
                    local: local.clone(),
                })
            }
            (
                PeerPolicy::Nodes {
                    site: local,
                    servers,
                },
                PeerName::Node { site, server },
            ) => {
                if site != local {
                    Err(PolicyRefusal::ForeignNode {
                        site: site.clone(),
                        server: server.clone(),
                        local: local.clone(),
                    })
                } else if !servers.contains(server) {
                    Err(PolicyRefusal::NotInInventory {
                        site: local.clone(),
                        server: server.clone(),
                    })
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::parse(s).unwrap()
    }

    fn server(s: &str) -> ServerId {
        ServerId::parse(s).unwrap()
    }

    fn node(srv: &str, st: &str) -> PeerName {
        PeerName::Node {
            site: site(st),
            server: server(srv),
        }
    }

    #[test]
    fn display_and_dns_names() {
        let a = PeerName::Site(site("site-a"));
        assert_eq!(a.to_string(), "site site-a");
        assert_eq!(a.dns_name(), "site-a.site.leasehold");
        let n = node("a1", "site-a");
        assert_eq!(n.to_string(), "node a1 of site-a");
        assert_eq!(n.dns_name(), "a1.site-a.node.leasehold");
    }

    #[test]
    fn dns_names_round_trip() {
        for name in [PeerName::Site(site("site-a")), node("a1", "site-a")] {
            assert_eq!(PeerName::from_dns_name(&name.dns_name()).unwrap(), name);
        }
    }

    #[test]
    fn refuses_foreign_and_malformed_dns_names() {
        for bad in [
            "",
            "leasehold",
            "site.leasehold",
            ".site.leasehold",
            "a.b.site.leasehold",
            "site-a.site.leasehold.",
            "a1.node.leasehold",
            "x.a1.site-a.node.leasehold",
            "example.com",
            "site-asite.leasehold",
        ] {
            let err = PeerName::from_dns_name(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    IdentityError::NotAPeerName { .. } | IdentityError::InvalidId { .. }
                ),
                "{bad}: {err}"
            );
        }
        let err = PeerName::from_dns_name("Site_A.site.leasehold").unwrap_err();
        assert!(
            err.to_string().contains("invalid site name `Site_A`"),
            "{err}"
        );
        let err = PeerName::from_dns_name("A1.site-a.node.leasehold").unwrap_err();
        assert!(err.to_string().contains("invalid server id `A1`"), "{err}");
    }

    fn cert_with_sans(sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn reads_the_one_peer_name_of_a_certificate() {
        let cert = cert_with_sans(&["a1.site-a.node.leasehold", "a1.example.net"]);
        assert_eq!(
            PeerName::from_certificate(&cert).unwrap(),
            node("a1", "site-a")
        );
    }

    #[test]
    fn refuses_certificates_without_exactly_one_peer_name() {
        let none = cert_with_sans(&["example.net"]);
        let err = PeerName::from_certificate(&none).unwrap_err();
        assert_eq!(
            err,
            IdentityError::NoPeerName {
                dns_names: vec!["example.net".into()]
            }
        );
        assert!(err.to_string().contains("example.net"), "{err}");

        let two = cert_with_sans(&["site-a.site.leasehold", "site-b.site.leasehold"]);
        let err = PeerName::from_certificate(&two).unwrap_err();
        assert!(
            matches!(err, IdentityError::SeveralPeerNames { .. }),
            "{err}"
        );

        let garbage = CertificateDer::from(vec![1u8, 2, 3]);
        assert!(matches!(
            PeerName::from_certificate(&garbage).unwrap_err(),
            IdentityError::UnparsableCertificate { .. }
        ));
    }

    fn sites_policy() -> PeerPolicy {
        PeerPolicy::Sites([site("site-b"), site("site-c")].into())
    }

    fn nodes_policy() -> PeerPolicy {
        PeerPolicy::Nodes {
            site: site("site-a"),
            servers: [server("a1"), server("a2")].into(),
        }
    }

    #[test]
    fn sites_policy_admits_listed_sites_only() {
        let policy = sites_policy();
        assert_eq!(policy.admits(&PeerName::Site(site("site-b"))), Ok(()));
        assert_eq!(
            policy
                .admits(&PeerName::Site(site("site-z")))
                .unwrap_err()
                .to_string(),
            "certificate names site `site-z`, which this site's config does not list as a peer"
        );
        assert_eq!(
            policy
                .admits(&node("b1", "site-b"))
                .unwrap_err()
                .to_string(),
            "certificate names a node, but this is the site-to-site listener"
        );
    }

    #[test]
    fn nodes_policy_admits_own_inventory_only() {
        let policy = nodes_policy();
        assert_eq!(policy.admits(&node("a1", "site-a")), Ok(()));
        assert_eq!(
            policy
                .admits(&node("a9", "site-a"))
                .unwrap_err()
                .to_string(),
            "node `a9` is not in site-a's inventory"
        );
        assert_eq!(
            policy
                .admits(&node("a1", "site-b"))
                .unwrap_err()
                .to_string(),
            "node of site `site-b` cannot join site-a's management channel"
        );
        assert_eq!(
            policy
                .admits(&PeerName::Site(site("site-a")))
                .unwrap_err()
                .to_string(),
            "certificate names site `site-a`, but this is site-a's management channel, which only its nodes join"
        );
    }
}
