//! The node agent's metrics (`leasehold node run --metrics-addr ADDR`, `GET /metrics` in the
//! Prometheus text format): what this server's agent sees, beside what its gateway says of
//! it. Counters are recorded by the `Server` actor where it learns the fact; the lease and
//! workload gauges are read from the actor when a scrape asks (`GetNodeStatus`), so they
//! are never a tick stale.
//!
//! The address serves only `/metrics`, in plain HTTP and without tokens: bind it to
//! loopback or the management network (docs/node.md, "Metrics"). It names no account.

use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use leasehold_federation::ids::{Epoch, ServerId, SiteId};
use leasehold_federation::transport::Alpn;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// What the `Server` actor says at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    /// Registered with the gateway now.
    pub connected: bool,
    /// The epoch of the current assignment, if any.
    pub epoch: Option<Epoch>,
    /// The highest epoch this node ever accepted (S-2).
    pub highest_epoch: Epoch,
    /// Time left on the lease by the node's own count; `None` without one.
    pub lease_remaining: Option<Duration>,
    /// The workload passed its health check and serves.
    pub healthy: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    node_protocol: &'static str,
}

/// The results a renewal can have, as the `result` label spells them.
pub const RENEWAL_RESULTS: [&str; 3] = ["renewed", "refused", "unanswered"];

#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
    scrape: Mutex<()>,
    connections: Counter,
    pulses: Counter,
    renewals: Family<ResultLabels, Counter>,
    workloads_started: Counter,
    connected: Gauge,
    epoch: Gauge,
    highest_epoch: Gauge,
    lease_remaining: Gauge<f64, AtomicU64>,
    healthy: Gauge,
}

impl NodeMetrics {
    pub fn new(site: &SiteId, server: &ServerId) -> NodeMetrics {
        let labels = [
            (Cow::Borrowed("site"), Cow::Owned(site.to_string())),
            (Cow::Borrowed("server"), Cow::Owned(server.to_string())),
        ];
        let mut registry = Registry::with_prefix_and_labels("leasehold_node", labels.into_iter());
        let metrics = NodeMetrics {
            registry: Registry::default(),
            scrape: Mutex::new(()),
            connections: Counter::default(),
            pulses: Counter::default(),
            renewals: Family::default(),
            workloads_started: Counter::default(),
            connected: Gauge::default(),
            epoch: Gauge::default(),
            highest_epoch: Gauge::default(),
            lease_remaining: Gauge::default(),
            healthy: Gauge::default(),
        };
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                node_protocol: Alpn::Node.protocol_name(),
            })
            .set(1);
        registry.register(
            "build_info",
            "1, labelled with the agent's version and protocol",
            build,
        );
        registry.register(
            "connections",
            "Registrations with the gateway since the agent started (the first, then each reconnect)",
            metrics.connections.clone(),
        );
        registry.register(
            "pulses",
            "Pulses sent to the gateway (heartbeats, each carrying a renewal when one is due)",
            metrics.pulses.clone(),
        );
        registry.register(
            "renewals",
            "Lease renewals asked, by result: renewed, refused (the lease is over), unanswered (no answer in time, or no connection)",
            metrics.renewals.clone(),
        );
        registry.register(
            "workloads_started",
            "Workload processes started (one per accepted pointer that gets its first lease)",
            metrics.workloads_started.clone(),
        );
        registry.register(
            "connected",
            "1 while the agent is registered with its gateway",
            metrics.connected.clone(),
        );
        registry.register(
            "lease_epoch",
            "The epoch of the current assignment; 0 without one",
            metrics.epoch.clone(),
        );
        registry.register(
            "highest_epoch",
            "The highest epoch this node has accepted; never goes back (S-2)",
            metrics.highest_epoch.clone(),
        );
        registry.register_with_unit(
            "lease_remaining",
            "Time left on the lease by the node's own count; 0 without one (the workload stops 250 ms before it ends)",
            Unit::Seconds,
            metrics.lease_remaining.clone(),
        );
        registry.register(
            "workload_healthy",
            "1 while the workload has passed its health check and serves",
            metrics.healthy.clone(),
        );
        for result in RENEWAL_RESULTS {
            metrics
                .renewals
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        NodeMetrics {
            registry,
            ..metrics
        }
    }

    pub fn connected(&self) {
        self.connections.inc();
    }

    pub fn pulse_sent(&self) {
        self.pulses.inc();
    }

    /// `result` is one of [`RENEWAL_RESULTS`].
    pub fn renewal(&self, result: &'static str) {
        self.renewals.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn workload_started(&self) {
        self.workloads_started.inc();
    }

    /// Sets the gauges from `status` and encodes every series.
    pub fn encode(&self, status: &NodeStatus) -> Result<String, std::fmt::Error> {
        // A poisoned lock only means another scrape panicked; the gauges are set again.
        let _scrape = self
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.connected.set(i64::from(status.connected));
        let epoch = |epoch: Epoch| i64::try_from(epoch.value()).unwrap_or(i64::MAX);
        self.epoch.set(status.epoch.map_or(0, epoch));
        self.highest_epoch.set(epoch(status.highest_epoch));
        self.lease_remaining.set(
            status
                .lease_remaining
                .map_or(0.0, |left| left.as_secs_f64()),
        );
        self.healthy.set(i64::from(status.healthy));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_metrics_follow_its_status_and_count_what_happened() {
        let metrics = NodeMetrics::new(
            &"site-a".parse().expect("site"),
            &"a1".parse().expect("server"),
        );
        metrics.connected();
        metrics.pulse_sent();
        metrics.pulse_sent();
        metrics.renewal("renewed");
        metrics.workload_started();
        let text = metrics
            .encode(&NodeStatus {
                connected: true,
                epoch: Some(Epoch::from_journal(7)),
                highest_epoch: Epoch::from_journal(7),
                lease_remaining: Some(Duration::from_millis(1500)),
                healthy: true,
            })
            .expect("encodes");
        for expected in [
            r#"leasehold_node_connected{site="site-a",server="a1"} 1"#,
            r#"leasehold_node_lease_epoch{site="site-a",server="a1"} 7"#,
            r#"leasehold_node_lease_remaining_seconds{site="site-a",server="a1"} 1.5"#,
            r#"leasehold_node_pulses_total{site="site-a",server="a1"} 2"#,
            r#"leasehold_node_renewals_total{site="site-a",server="a1",result="renewed"} 1"#,
            r#"leasehold_node_renewals_total{site="site-a",server="a1",result="refused"} 0"#,
            r#"leasehold_node_workloads_started_total{site="site-a",server="a1"} 1"#,
            r#"leasehold_node_build_info{site="site-a",server="a1",version="#,
        ] {
            assert!(text.contains(expected), "missing {expected}:\n{text}");
        }
        let text = metrics
            .encode(&NodeStatus {
                connected: false,
                epoch: None,
                highest_epoch: Epoch::from_journal(7),
                lease_remaining: None,
                healthy: false,
            })
            .expect("encodes");
        assert!(
            text.contains(r#"leasehold_node_lease_epoch{site="site-a",server="a1"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leasehold_node_highest_epoch{site="site-a",server="a1"} 7"#),
            "{text}"
        );
    }
}
