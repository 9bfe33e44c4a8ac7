//! Prometheus metrics of a site gateway (`GET /metrics`, docs/api.md "Metrics").
//!
//! Two kinds of series, kept apart on purpose:
//!
//! - **Facts as they happen** (counters, histograms): the `SiteMaster` records them at the
//!   points where it learns them (`perform` for journal ops, audits and observations, the
//!   renewal handler, the end of a round, the journal's answer). They are monotonic and
//!   cannot be rebuilt later, so they are recorded once, here, and never derived.
//! - **State** (gauges): servers by state and the accounts' SLA picture. These are set from
//!   the master's `SiteSnapshot` at scrape time, not every round: a scrape then shows the
//!   site as it is at that moment (never up to a round stale), and the 10 Hz round does not
//!   pay for building a snapshot nobody reads. The families are cleared before they are
//!   set, so an account that leaves the config (reloads, later) leaves the output too.
//!
//! Every series carries `site` (a registry-wide constant label). Only what exists is
//! registered: loans (#4) and peer RTT and liveness each add their registration in
//! [`Metrics::new`] and a method the shell calls where it learns the fact when they are
//! built, as config reloads (#7) did, so the output never holds a series whose value is
//! made up.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use actix_web::{HttpResponse, web};
use leasehold_federation::ids::SiteId;
use leasehold_federation::wire::node::LeaseRenewal;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::actors::master::{GetStatus, SiteMaster};
use crate::actors::peer::{GetPeerStatus, PeerStatus};
use crate::federation::Federation;
use crate::model::effects::{AuditEntry, AuditKind, JournalOp, LeaseEndCause, Observation};
use crate::model::peers::Liveness;
use crate::model::site::SiteSnapshot;

mod standing;
use standing::{Standing, StandingInputs};

/// Every server state of `/v1/servers`; each gets a `servers` series, 0 included, so a
/// dashboard can tell "none" from "not reported". A state missing here still appears
/// (counted) when a server is in it; it only lacks its zero.
pub const SERVER_STATES: [&str; 7] = [
    "offline",
    "free",
    "starting",
    "serving",
    "draining",
    "failed",
    "maintenance",
];

/// The audit kinds counted as decisions (`lease_ended` has its own counter, with a cause).
const DECISION_KINDS: [AuditKind; 31] = [
    AuditKind::Assign,
    AuditKind::Reclaim,
    AuditKind::Join,
    AuditKind::Release,
    AuditKind::Shortfall,
    AuditKind::ServerFailed,
    AuditKind::WorkloadFailed,
    AuditKind::Recovered,
    AuditKind::Borrow,
    AuditKind::Lend,
    AuditKind::LoanReturn,
    AuditKind::LoanRecall,
    AuditKind::LoanExpired,
    AuditKind::LoanRefused,
    AuditKind::OwnershipAcquired,
    AuditKind::Takeover,
    AuditKind::HandbackStarted,
    AuditKind::Handback,
    AuditKind::Handover,
    AuditKind::OwnershipLost,
    AuditKind::Members,
    AuditKind::Reimage,
    AuditKind::Booted,
    AuditKind::Fence,
    AuditKind::StaleBoot,
    AuditKind::MachineFailed,
    AuditKind::BmcUnreachable,
    AuditKind::Maintenance,
    AuditKind::MaintenanceOver,
    AuditKind::JournalRestored,
    AuditKind::AuditPruned,
];

/// The label value of an audit kind: the same word as `kind` in `/v1/audit`.
fn kind_label(kind: AuditKind) -> &'static str {
    match kind {
        AuditKind::Assign => "assign",
        AuditKind::Reclaim => "reclaim",
        AuditKind::Join => "join",
        AuditKind::Release => "release",
        AuditKind::Shortfall => "shortfall",
        AuditKind::ServerFailed => "server_failed",
        AuditKind::LeaseEnded => "lease_ended",
        AuditKind::WorkloadFailed => "workload_failed",
        AuditKind::Recovered => "recovered",
        AuditKind::Config => "config",
        AuditKind::Borrow => "borrow",
        AuditKind::Lend => "lend",
        AuditKind::LoanReturn => "loan_return",
        AuditKind::LoanRecall => "loan_recall",
        AuditKind::LoanExpired => "loan_expired",
        AuditKind::LoanRefused => "loan_refused",
        AuditKind::OwnershipAcquired => "ownership_acquired",
        AuditKind::Takeover => "takeover",
        AuditKind::HandbackStarted => "handback_started",
        AuditKind::Handback => "handback",
        AuditKind::Handover => "handover",
        AuditKind::OwnershipLost => "ownership_lost",
        AuditKind::Members => "members",
        AuditKind::Reimage => "reimage",
        AuditKind::Booted => "booted",
        AuditKind::Fence => "fence",
        AuditKind::StaleBoot => "stale_boot",
        AuditKind::MachineFailed => "machine_failed",
        AuditKind::BmcUnreachable => "bmc_unreachable",
        AuditKind::Maintenance => "maintenance",
        AuditKind::MaintenanceOver => "maintenance_over",
        AuditKind::JournalRestored => "journal_restored",
        AuditKind::AuditPruned => "audit_pruned",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AccountLabels {
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhyLabels {
    why: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The site's metrics. Shared as `Arc<Metrics>` by the master (which records) and the
/// admin API (which sets the snapshot gauges and encodes).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Held while the snapshot gauges are set and the registry encoded, so two scrapes
    /// never interleave a clear of one with the encoding of the other.
    scrape: Mutex<()>,
    servers: Family<StateLabels, Gauge>,
    account_demand: Family<AccountLabels, Gauge>,
    account_serving: Family<AccountLabels, Gauge>,
    account_min: Family<AccountLabels, Gauge>,
    account_sla_met: Family<AccountLabels, Gauge>,
    account_load: Family<AccountLabels, FloatGauge>,
    leases_granted: Counter,
    leases_renewed: Counter,
    renewals_refused: Counter,
    leases_ended: Family<WhyLabels, Counter>,
    decisions: Family<KindLabels, Counter>,
    decision_round: Histogram,
    reallocation: Histogram,
    loan_latency: Histogram,
    journal_write: Histogram,
    config_reloads: Family<ResultLabels, Counter>,
    peer_up: Family<PeerLabels, Gauge>,
    peer_rtt: Family<PeerLabels, FloatGauge>,
    site: SiteId,
    standing: Standing,
}

/// Seconds, from well under a millisecond (a round on an idle site) to past the round
/// interval (100 ms): a round in the top buckets is late.
const ROUND_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];
/// Seconds, from a fast assign (tens of ms) to a move that waits out a long drain.
const REALLOCATION_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Seconds, around an fsync'd redb commit: sub-millisecond on tmpfs, tens of ms on disks.
const JOURNAL_BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

impl Metrics {
    pub fn new(site: &SiteId) -> Metrics {
        let labels = [(Cow::Borrowed("site"), Cow::Owned(site.to_string()))];
        let mut registry = Registry::with_prefix_and_labels("leasehold", labels.into_iter());
        let metrics = Metrics {
            registry: Registry::default(),
            scrape: Mutex::new(()),
            servers: Family::default(),
            account_demand: Family::default(),
            account_serving: Family::default(),
            account_min: Family::default(),
            account_sla_met: Family::default(),
            account_load: Family::default(),
            peer_up: Family::default(),
            peer_rtt: Family::default(),
            leases_granted: Counter::default(),
            leases_renewed: Counter::default(),
            renewals_refused: Counter::default(),
            leases_ended: Family::default(),
            decisions: Family::default(),
            decision_round: Histogram::new(ROUND_BUCKETS),
            reallocation: Histogram::new(REALLOCATION_BUCKETS),
            loan_latency: Histogram::new(REALLOCATION_BUCKETS),
            journal_write: Histogram::new(JOURNAL_BUCKETS),
            config_reloads: Family::default(),
            site: site.clone(),
            standing: Standing::default(),
        };
        metrics.standing.register(&mut registry);
        // State, set from the snapshot at scrape time.
        registry.register(
            "servers",
            "Servers of the site's inventory by state (offline, free, starting, serving, draining, failed)",
            metrics.servers.clone(),
        );
        registry.register(
            "account_demand_servers",
            "Servers the account's group wants now (load / target_load within min and max, with hysteresis)",
            metrics.account_demand.clone(),
        );
        registry.register(
            "account_serving_servers",
            "Servers serving the account now (healthy workload, unrevoked lease)",
            metrics.account_serving.clone(),
        );
        registry.register(
            "account_min_servers",
            "The account's SLA minimum of servers, from the config",
            metrics.account_min.clone(),
        );
        registry.register(
            "account_sla_met",
            "1 if the account has at least min_servers and at least its demand serving, else 0",
            metrics.account_sla_met.clone(),
        );
        registry.register(
            "account_load",
            "Total load of the account's serving servers, in the unit of its target_load",
            metrics.account_load.clone(),
        );
        // Facts, recorded by the master as they happen.
        registry.register(
            "leases_granted",
            "Leases granted (journaled), each under a fresh epoch",
            metrics.leases_granted.clone(),
        );
        registry.register(
            "leases_renewed",
            "Lease renewals the gateway granted",
            metrics.leases_renewed.clone(),
        );
        registry.register(
            "lease_renewals_refused",
            "Lease renewals the gateway refused (unknown, revoked or stale lease)",
            metrics.renewals_refused.clone(),
        );
        registry.register(
            "leases_ended",
            "Leases ended, by cause (the lease_ended audit records)",
            metrics.leases_ended.clone(),
        );
        registry.register(
            "decisions",
            "Audited decisions and events by kind (as kind in /v1/audit)",
            metrics.decisions.clone(),
        );
        registry.register_with_unit(
            "decision_round",
            "Duration of the master's round (heartbeats in, failure detection, expiry, arbitration, effects dispatched)",
            Unit::Seconds,
            metrics.decision_round.clone(),
        );
        registry.register_with_unit(
            "reallocation",
            "Time from the decision to give a server to an account to its workload healthy there (includes the drain of a move)",
            Unit::Seconds,
            metrics.reallocation.clone(),
        );
        registry.register_with_unit(
            "loan",
            "Time from this site's loan request to the lent server healthy at the lender",
            Unit::Seconds,
            metrics.loan_latency.clone(),
        );
        registry.register_with_unit(
            "journal_write",
            "Journal round trip of an effect batch as the master waits for it (queue and fsync'd commit) before its commands go out",
            Unit::Seconds,
            metrics.journal_write.clone(),
        );
        registry.register(
            "config_reloads",
            "Live config edits (SIGHUP or a change of the file), applied or refused by the same checks as `leasehold config check`",
            metrics.config_reloads.clone(),
        );
        registry.register(
            "peer_up",
            "1 while a peer site answers pings (liveness `up`), 0 when it is suspect or down",
            metrics.peer_up.clone(),
        );
        registry.register_with_unit(
            "peer_rtt",
            "Smoothed round-trip time of this site's pings to a peer site; absent until it answers",
            Unit::Seconds,
            metrics.peer_rtt.clone(),
        );
        for result in ["applied", "refused"] {
            metrics
                .config_reloads
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        // Known label values start at 0, so rates and "none yet" are visible from the start.
        for why in LeaseEndCause::ALL {
            metrics
                .leases_ended
                .get_or_create(&WhyLabels { why: why.label() })
                .inc_by(0);
        }
        for kind in DECISION_KINDS {
            metrics
                .decisions
                .get_or_create(&KindLabels {
                    kind: kind_label(kind),
                })
                .inc_by(0);
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// A journal op of an effect batch: grants are counted here, where the core states
    /// them exactly (recovered leases are not grants and emit none).
    pub fn journal_op(&self, op: &JournalOp) {
        if let JournalOp::LeaseGranted { .. } = op {
            self.leases_granted.inc();
        }
    }

    /// An audit entry of an effect batch.
    pub fn audit(&self, entry: &AuditEntry) {
        // Ended leases are counted by cause, from `Observation::LeaseEnded`.
        if entry.kind != AuditKind::LeaseEnded {
            self.decisions
                .get_or_create(&KindLabels {
                    kind: kind_label(entry.kind),
                })
                .inc();
        }
    }

    pub fn observe(&self, observation: &Observation) {
        match observation {
            Observation::Reallocated { latency_ms, .. } => {
                self.reallocation.observe(*latency_ms as f64 / 1000.0);
            }
            Observation::LeaseEnded { cause } => {
                self.leases_ended
                    .get_or_create(&WhyLabels { why: cause.label() })
                    .inc();
            }
            Observation::LoanServing { latency_ms } => {
                self.loan_latency.observe(*latency_ms as f64 / 1000.0);
            }
        }
    }

    /// The gateway's answer to a node's `RenewLease`.
    pub fn renewal(&self, answer: &LeaseRenewal) {
        match answer {
            LeaseRenewal::Renewed { .. } => self.leases_renewed.inc(),
            LeaseRenewal::Refused(_) => self.renewals_refused.inc(),
        };
    }

    /// A live config edit: applied (true) or refused (false).
    pub fn config_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn round_finished(&self, took: Duration) {
        self.decision_round.observe(took.as_secs_f64());
    }

    pub fn journal_written(&self, took: Duration) {
        self.journal_write.observe(took.as_secs_f64());
    }

    /// The expiry of a certificate the gateway presents or trusts (`site`, `ca`, `admin`,
    /// from `CertificateExpiries` at each scrape; `node` from the snapshot).
    pub fn certificate(&self, which: &'static str, not_after_unix: i64) {
        self.standing.certificate(which, not_after_unix);
    }

    /// [`Metrics::encode_all`] without members or a journal size (unit tests).
    pub fn encode(
        &self,
        snapshot: &SiteSnapshot,
        peers: &[PeerStatus],
    ) -> Result<String, std::fmt::Error> {
        self.encode_all(snapshot, peers, None, None)
    }

    /// Sets the state gauges from `snapshot`, the peers, the members and the journal's
    /// size, and encodes every series in the Prometheus text format (0.0.4).
    pub fn encode_all(
        &self,
        snapshot: &SiteSnapshot,
        peers: &[PeerStatus],
        members: Option<&crate::model::ownership::MembersStatus>,
        journal_bytes: Option<u64>,
    ) -> Result<String, std::fmt::Error> {
        // A poisoned lock only means another scrape panicked; the gauges are reset below.
        let _scrape = self
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.set_snapshot(snapshot);
        self.set_peers(peers);
        self.standing.set(&StandingInputs {
            site: &self.site,
            snapshot,
            members,
            peers,
            journal_bytes,
        });
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Peers as their Peer actors see them now; a peer removed by an edit drops out.
    fn set_peers(&self, peers: &[PeerStatus]) {
        self.peer_up.clear();
        self.peer_rtt.clear();
        for peer in peers {
            let labels = PeerLabels {
                peer: peer.name.to_string(),
            };
            self.peer_up
                .get_or_create(&labels)
                .set(i64::from(peer.state == Liveness::Up));
            if let Some(rtt_ms) = peer.rtt_ms {
                self.peer_rtt.get_or_create(&labels).set(rtt_ms / 1000.0);
            }
        }
    }

    fn set_snapshot(&self, snapshot: &SiteSnapshot) {
        // The node agents' certificates as one series, the earliest: the one to renew
        // first (each server's is in /v1/servers).
        if let Some((_, earliest)) = snapshot.earliest_node_certificate() {
            self.standing.certificate("node", earliest);
        }
        self.servers.clear();
        for state in SERVER_STATES {
            self.servers
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(0);
        }
        for server in &snapshot.servers {
            self.servers
                .get_or_create(&StateLabels {
                    state: server.state.to_owned(),
                })
                .inc();
        }
        for family in [
            &self.account_demand,
            &self.account_serving,
            &self.account_min,
            &self.account_sla_met,
        ] {
            family.clear();
        }
        self.account_load.clear();
        for account in &snapshot.accounts {
            let labels = AccountLabels {
                account: account.name.to_string(),
            };
            self.account_demand
                .get_or_create(&labels)
                .set(i64::from(account.demand));
            self.account_serving
                .get_or_create(&labels)
                .set(i64::from(account.servers));
            self.account_min
                .get_or_create(&labels)
                .set(i64::from(account.min_servers));
            self.account_sla_met
                .get_or_create(&labels)
                .set(i64::from(account.sla_met));
            self.account_load.get_or_create(&labels).set(account.load);
        }
    }
}

/// What the `/metrics` handler needs: the metrics and the master to snapshot.
#[derive(Clone)]
pub struct Scrape {
    metrics: Arc<Metrics>,
    master: Addr<SiteMaster>,
    federation: Arc<Federation>,
    /// The journal's file, whose size is a gauge.
    journal_file: std::path::PathBuf,
    /// The certificates' expiries as the last reload read them (also the page's).
    certificates: Arc<crate::admin::CertificateExpiries>,
}

impl Scrape {
    pub fn new(
        metrics: Arc<Metrics>,
        master: Addr<SiteMaster>,
        federation: Arc<Federation>,
        journal_file: std::path::PathBuf,
        certificates: Arc<crate::admin::CertificateExpiries>,
    ) -> Scrape {
        Scrape {
            metrics,
            master,
            federation,
            journal_file,
            certificates,
        }
    }
}

/// `GET /metrics`: the Prometheus text format (0.0.4), which Prometheus and promtool parse.
pub async fn serve_metrics(scrape: web::Data<Scrape>) -> HttpResponse {
    let Ok(status) = scrape.master.send(GetStatus).await else {
        // No made-up gauges: without the master's snapshot there is no answer.
        return HttpResponse::ServiceUnavailable()
            .body("the site master is not answering; the gateway may be shutting down\n");
    };
    let mut peers = Vec::new();
    for peer in scrape.federation.peers() {
        // A peer removed by an edit while we ask simply drops out of this scrape.
        if let Ok(status) = peer.send(GetPeerStatus).await {
            peers.push(status);
        }
    }
    let file = scrape.journal_file.clone();
    // A stat is quick, but it is file I/O: off the server's thread.
    let journal_bytes = web::block(move || std::fs::metadata(file).map(|m| m.len()))
        .await
        .ok()
        .and_then(Result::ok);
    for (which, not_after) in scrape.certificates.current() {
        scrape.metrics.certificate(which, not_after);
    }
    match scrape.metrics.encode_all(
        &status.snapshot,
        &peers,
        status.members.as_ref(),
        journal_bytes,
    ) {
        Ok(text) => HttpResponse::Ok()
            .content_type(prometheus_text::CONTENT_TYPE)
            .body(text),
        Err(error) => {
            let mut body = String::new();
            // Writing to a String cannot fail.
            let _ = writeln!(body, "cannot encode the metrics: {error}");
            HttpResponse::InternalServerError().body(body)
        }
    }
}

#[cfg(test)]
mod tests {
    use leasehold_federation::ids::{AccountId, Epoch, ServerId};
    use leasehold_federation::wire::common::{Refusal, RefusalCause};

    use super::*;
    use crate::model::site::{AccountSnapshot, ServerSnapshot};

    fn site() -> SiteId {
        "site-a".parse().expect("a valid site id")
    }

    fn server(id: &str, state: &'static str) -> ServerSnapshot {
        ServerSnapshot {
            id: id.parse().expect("a valid server id"),
            state,
            account: None,
            epoch: 0,
            health: "idle".to_owned(),
            load: None,
            service_addr: "127.0.0.1:1".to_owned(),
            connected: true,
            lease_expires_in_ms: None,
            lease_revoked: false,
            lent_to: None,
            machine: None,
            maintenance: None,
            agent_version: None,
            agent_protocol: None,
            certificate_expires: None,
        }
    }

    fn account(name: &str, demand: u32, servers: u32, load: f64) -> AccountSnapshot {
        AccountSnapshot {
            name: name.parse().expect("a valid account id"),
            home: site(),
            owner: Some(site()),
            ownership_term: None,
            ownership_expires_in_ms: None,
            min_servers: 1,
            max_servers: 4,
            priority: 1,
            target_load: 5.0,
            demand,
            servers,
            starting: 0,
            borrowed: 0,
            load,
            sla_met: servers >= 1 && servers >= demand,
            shortfall: None,
            endpoints: Vec::new(),
        }
    }

    fn snapshot() -> SiteSnapshot {
        SiteSnapshot {
            site: site(),
            servers: vec![
                server("a1", "serving"),
                server("a2", "serving"),
                server("a3", "free"),
            ],
            accounts: vec![account("shop", 2, 2, 7.5), account("blog", 2, 1, 1.0)],
        }
    }

    fn entry(kind: AuditKind, reason: &str) -> AuditEntry {
        AuditEntry {
            kind,
            server: Some("a1".parse::<ServerId>().expect("a valid server id")),
            account: Some("shop".parse::<AccountId>().expect("a valid account id")),
            from: None,
            epoch: Some(Epoch::NONE.next()),
            peer: None,
            term: None,
            reason: reason.to_owned(),
        }
    }

    fn lines_with<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
        text.lines().filter(|line| line.starts_with(name)).collect()
    }

    #[test]
    fn metrics_state_gauges_follow_the_snapshot_with_zeros() {
        let metrics = Metrics::new(&site());
        let text = metrics.encode(&snapshot(), &[]).expect("encodes");
        assert!(text.contains(r#"leasehold_servers{site="site-a",state="serving"} 2"#));
        assert!(text.contains(r#"leasehold_servers{site="site-a",state="free"} 1"#));
        assert!(text.contains(r#"leasehold_servers{site="site-a",state="failed"} 0"#));
        assert_eq!(
            lines_with(&text, "leasehold_servers{").len(),
            SERVER_STATES.len(),
            "{text}"
        );
        assert!(text.contains(r#"leasehold_servers{site="site-a",state="maintenance"} 0"#));
        assert!(
            text.contains(r#"leasehold_account_sla_met{site="site-a",account="blog"} 0"#),
            "{text}"
        );
        assert!(text.contains(r#"leasehold_account_sla_met{site="site-a",account="shop"} 1"#));
        assert!(text.contains(r#"leasehold_account_load{site="site-a",account="shop"} 7.5"#));
        assert!(
            text.contains(r#"leasehold_account_demand_servers{site="site-a",account="shop"} 2"#)
        );
        // A later snapshot without an account drops its series; counts are not summed.
        let mut later = snapshot();
        later.accounts.truncate(1);
        let text = metrics.encode(&later, &[]).expect("encodes");
        assert!(!text.contains(r#"account="blog""#), "{text}");
        assert!(text.contains(r#"leasehold_servers{site="site-a",state="serving"} 2"#));
    }

    #[test]
    fn metrics_facts_are_counted_once_each() {
        let metrics = Metrics::new(&site());
        metrics.journal_op(&JournalOp::LeaseGranted {
            lent_to: None,
            server: "a1".parse().expect("a valid server id"),
            account: "shop".parse().expect("a valid account id"),
            epoch: Epoch::NONE.next(),
        });
        metrics.audit(&entry(AuditKind::Assign, "took free server a1"));
        metrics.audit(&entry(
            AuditKind::LeaseEnded,
            "lease of a1 to shop under e1 ended: it expired without renewal",
        ));
        metrics.observe(&Observation::LeaseEnded {
            cause: LeaseEndCause::Expired,
        });
        metrics.renewal(&LeaseRenewal::Renewed {
            epoch: Epoch::NONE.next(),
            ttl_ms: 1000,
        });
        metrics.renewal(&LeaseRenewal::Refused(Refusal {
            cause: RefusalCause::UnknownLease,
            detail: "no lease".to_owned(),
        }));
        metrics.observe(&Observation::Reallocated {
            server: "a1".parse().expect("a valid server id"),
            account: "shop".parse().expect("a valid account id"),
            latency_ms: 40,
        });
        metrics.round_finished(Duration::from_micros(300));
        let text = metrics.encode(&snapshot(), &[]).expect("encodes");
        for expected in [
            r#"leasehold_leases_granted_total{site="site-a"} 1"#,
            r#"leasehold_leases_renewed_total{site="site-a"} 1"#,
            r#"leasehold_lease_renewals_refused_total{site="site-a"} 1"#,
            r#"leasehold_leases_ended_total{site="site-a",why="expired"} 1"#,
            r#"leasehold_leases_ended_total{site="site-a",why="stopped"} 0"#,
            r#"leasehold_decisions_total{site="site-a",kind="assign"} 1"#,
            r#"leasehold_decisions_total{site="site-a",kind="recovered"} 0"#,
            r#"leasehold_reallocation_seconds_count{site="site-a"} 1"#,
            r#"leasehold_reallocation_seconds_bucket{site="site-a",le="0.05"} 1"#,
            r#"leasehold_decision_round_seconds_count{site="site-a"} 1"#,
            r#"leasehold_journal_write_seconds_count{site="site-a"} 0"#,
            "# TYPE leasehold_leases_granted_total counter",
            "# TYPE leasehold_reallocation_seconds histogram",
        ] {
            assert!(text.contains(expected), "missing {expected}:\n{text}");
        }
        assert!(!text.contains(r#"kind="lease_ended""#), "{text}");
    }

    #[test]
    fn metrics_peers_are_up_or_not_with_their_rtt() {
        let metrics = Metrics::new(&site());
        let peer = |name: &str, state: Liveness, rtt_ms: Option<f64>| PeerStatus {
            name: name.parse().expect("a valid site id"),
            addr: "127.0.0.1:7202".parse().expect("an address"),
            dialled_addr: None,
            last_error: None,
            state,
            rtt_ms,
            silent_ms: None,
            dialled: true,
            dialled_in: true,
            certificate_expires: None,
            catalogue_version: None,
            accounts: Vec::new(),
        };
        let peers = [
            peer("site-b", Liveness::Up, Some(40.0)),
            peer("site-c", Liveness::Down, None),
        ];
        let text = metrics.encode(&snapshot(), &peers).expect("encodes");
        assert!(
            text.contains(r#"leasehold_peer_up{site="site-a",peer="site-b"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leasehold_peer_up{site="site-a",peer="site-c"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leasehold_peer_rtt_seconds{site="site-a",peer="site-b"} 0.04"#),
            "{text}"
        );
        assert!(!text.contains(r#"leasehold_peer_rtt_seconds{site="site-a",peer="site-c"}"#));
        // A peer removed by an edit drops out at the next scrape.
        let text = metrics.encode(&snapshot(), &peers[..1]).expect("encodes");
        assert!(!text.contains(r#"peer="site-c""#), "{text}");
    }

    #[test]
    fn metrics_standing_shows_build_ownership_quorum_journal_and_certificates() {
        let metrics = Metrics::new(&site());
        metrics.certificate("site", 1_830_000_000);
        let mut snapshot = snapshot();
        snapshot.accounts[0].owner = Some(site());
        snapshot.accounts[0].ownership_term = Some(3);
        snapshot.accounts[0].ownership_expires_in_ms = Some(2500);
        snapshot.accounts[1].owner = Some("site-b".parse().expect("a valid site id"));
        let peer = |name: &str, state: Liveness| PeerStatus {
            name: name.parse().expect("a valid site id"),
            addr: "127.0.0.1:7202".parse().expect("an address"),
            dialled_addr: None,
            last_error: None,
            state,
            rtt_ms: None,
            silent_ms: None,
            dialled: true,
            dialled_in: true,
            certificate_expires: None,
            catalogue_version: None,
            accounts: Vec::new(),
        };
        let members = crate::model::ownership::MembersStatus {
            running: vec!["site-a".into(), "site-b".into(), "site-c".into()],
            wanted: vec!["site-a".into(), "site-b".into(), "site-c".into()],
            waiting: Vec::new(),
        };
        let peers = [
            peer("site-b", Liveness::Up),
            peer("site-c", Liveness::Suspect),
        ];
        let text = metrics
            .encode_all(&snapshot, &peers, Some(&members), Some(4096))
            .expect("encodes");
        for expected in [
            r#"leasehold_account_owned{site="site-a",account="shop"} 1"#,
            r#"leasehold_account_owned{site="site-a",account="blog"} 0"#,
            r#"leasehold_account_ownership_term{site="site-a",account="shop"} 3"#,
            r#"leasehold_account_ownership_remaining_seconds{site="site-a",account="shop"} 2.5"#,
            r#"leasehold_members{site="site-a"} 3"#,
            r#"leasehold_members_reachable{site="site-a"} 2"#,
            r#"leasehold_members_needed{site="site-a"} 2"#,
            r#"leasehold_journal_bytes{site="site-a"} 4096"#,
            r#"leasehold_certificate_expiry_timestamp_seconds{site="site-a",certificate="site"} 1830000000"#,
            r#"node_protocol="leasehold-node/2""#,
        ] {
            assert!(text.contains(expected), "missing {expected}:\n{text}");
        }
        assert!(
            !text.contains(r#"ownership_term{site="site-a",account="blog"}"#),
            "{text}"
        );
        // The majority is lost with both peers gone; the owner is no longer this site.
        snapshot.accounts[0].owner = None;
        let peers = [
            peer("site-b", Liveness::Down),
            peer("site-c", Liveness::Down),
        ];
        let text = metrics
            .encode_all(&snapshot, &peers, Some(&members), Some(4096))
            .expect("encodes");
        assert!(
            text.contains(r#"leasehold_members_reachable{site="site-a"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leasehold_account_owned{site="site-a",account="shop"} 0"#),
            "{text}"
        );
        assert!(
            !text.contains("leasehold_account_ownership_remaining_seconds{"),
            "{text}"
        );
    }
}
