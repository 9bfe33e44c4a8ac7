//! The site's standing, set at scrape time beside the snapshot's gauges: what build runs,
//! which accounts this site owns and for how long, whether it keeps a majority of its
//! members, how large its journal has grown, and when its certificates expire. These are
//! what an on-call's alerts watch (prometheus/alerts.yml).

use std::sync::atomic::AtomicU64;

use leasehold_federation::ids::SiteId;
use leasehold_federation::transport::Alpn;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::AccountLabels;
use crate::actors::peer::PeerStatus;
use crate::model::ownership::MembersStatus;
use crate::model::peers::Liveness;
use crate::model::site::SiteSnapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    node_protocol: &'static str,
    site_protocol: &'static str,
    wire: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: &'static str,
}

/// What the scrape read besides the snapshot.
pub struct StandingInputs<'a> {
    pub site: &'a SiteId,
    pub snapshot: &'a SiteSnapshot,
    pub members: Option<&'a MembersStatus>,
    pub peers: &'a [PeerStatus],
    /// The journal file's size; `None` if it could not be read (then no series).
    pub journal_bytes: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct Standing {
    /// 1: this gateway acts (a standby's own `/metrics` says 0, `ha/warm.rs`).
    active: Gauge,
    build: Family<BuildLabels, Gauge>,
    owned: Family<AccountLabels, Gauge>,
    term: Family<AccountLabels, Gauge>,
    ownership_left: Family<AccountLabels, Gauge<f64, AtomicU64>>,
    members: Gauge,
    reachable: Gauge,
    needed: Gauge,
    journal_bytes: Gauge,
    certificate_expiry: Family<CertificateLabels, Gauge>,
}

impl Standing {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "gateway_active",
            "1 while this gateway acts for its site; 0: a standby",
            self.active.clone(),
        );
        self.active.set(1);
        registry.register(
            "build_info",
            "1, labelled with the build's version and the protocols it speaks",
            self.build.clone(),
        );
        registry.register(
            "account_owned",
            "1 while this site owns the account (its ownership lease is held), else 0",
            self.owned.clone(),
        );
        registry.register(
            "account_ownership_term",
            "The term of this site's ownership of the account; absent while it does not own it",
            self.term.clone(),
        );
        registry.register_with_unit(
            "account_ownership_remaining",
            "Time left on this site's ownership of the account until renewed; absent while it does not own it",
            Unit::Seconds,
            self.ownership_left.clone(),
        );
        registry.register(
            "members",
            "Sites whose majority this site's ownership claims need (its running members); absent for a site alone",
            self.members.clone(),
        );
        registry.register(
            "members_reachable",
            "Running members that answer now: this site and its peers that are up",
            self.reachable.clone(),
        );
        registry.register(
            "members_needed",
            "A majority of the running members: fewer reachable and this site can neither keep nor take ownership",
            self.needed.clone(),
        );
        registry.register_with_unit(
            "journal",
            "Size of the journal file (redb) on disk",
            Unit::Bytes,
            self.journal_bytes.clone(),
        );
        registry.register_with_unit(
            "certificate_expiry_timestamp",
            "When a certificate the gateway presents or trusts expires, as a Unix time (site, ca, admin; node: the earliest its node agents presented)",
            Unit::Seconds,
            self.certificate_expiry.clone(),
        );
        self.build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                node_protocol: Alpn::Node.protocol_name(),
                site_protocol: Alpn::Site.protocol_name(),
                wire: leasehold_federation::wire::WIRE_VERSION.to_string(),
            })
            .set(1);
    }

    /// Certificates are read at start (a rotation restarts the gateway, for now).
    pub(super) fn certificate(&self, which: &'static str, not_after_unix: i64) {
        self.certificate_expiry
            .get_or_create(&CertificateLabels { certificate: which })
            .set(not_after_unix);
    }

    pub(super) fn set(&self, inputs: &StandingInputs<'_>) {
        self.owned.clear();
        self.term.clear();
        self.ownership_left.clear();
        for account in &inputs.snapshot.accounts {
            let labels = AccountLabels {
                account: account.name.to_string(),
            };
            let ours = account.owner.as_ref() == Some(inputs.site);
            self.owned.get_or_create(&labels).set(i64::from(ours));
            if !ours {
                continue;
            }
            if let Some(term) = account.ownership_term {
                self.term
                    .get_or_create(&labels)
                    .set(i64::try_from(term).unwrap_or(i64::MAX));
            }
            if let Some(left_ms) = account.ownership_expires_in_ms {
                self.ownership_left
                    .get_or_create(&labels)
                    .set(left_ms as f64 / 1000.0);
            }
        }
        let quorum = inputs
            .members
            .map(|members| quorum(inputs.site, &members.running, inputs.peers))
            .filter(|quorum| quorum.members > 0);
        // A gauge cannot be unregistered: a site alone (or not yet joined) shows zeros,
        // which the alerts' rules exclude by `members > 0`.
        let quorum = quorum.unwrap_or_default();
        self.members.set(quorum.members);
        self.reachable.set(quorum.reachable);
        self.needed.set(quorum.needed);
        if let Some(bytes) = inputs.journal_bytes {
            self.journal_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

/// The majority arithmetic of the members, as the ownership core counts it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Quorum {
    members: i64,
    reachable: i64,
    needed: i64,
}

fn quorum(site: &SiteId, running: &[String], peers: &[PeerStatus]) -> Quorum {
    let members = running.len() as i64;
    let reachable = running
        .iter()
        .filter(|member| {
            member.as_str() == site.as_str()
                || peers
                    .iter()
                    .any(|peer| peer.name.as_str() == member.as_str() && peer.state == Liveness::Up)
        })
        .count() as i64;
    Quorum {
        members,
        reachable,
        needed: members / 2 + 1,
    }
}
