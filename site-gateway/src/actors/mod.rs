//! The actor shell of the gateway. Each actor owns one piece of state and calls the plain
//! core in `crate::model`; handlers decode, call the model, and perform the returned
//! effects. Architecture invariant: nothing in `crate::model` imports from here.
//!
//! - [`master::SiteMaster`]: the site core (inventory, leases, arbitration); one per gateway.
//! - [`group::Group`]: one per account; turns load into demand.
//! - [`link::ServerLink`]: one per connected node agent; owns its QUIC connection.
//! - [`journal::JournalWriter`]: the journal, on a thread of its own (it blocks on fsync).
//! - [`peer::Peer`]: one per peer site; its connections, liveness, RTT and catalogue.

pub mod group;
pub mod journal;
pub mod link;
pub mod loans;
pub mod master;
pub mod ownership;
pub mod peer;

use std::time::Instant;

use dashmap::DashMap;
use leasehold_federation::ids::ServerId;
use leasehold_federation::wire::common::Health;

/// Wall-clock milliseconds since the Unix epoch, for audit records, config status and
/// catalogue versions: what people and peers read, never what decisions are timed by.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The latest heartbeat of each server. Connection tasks write it directly, so heartbeats
/// never queue behind other work in a mailbox; the master reads it once per round.
#[derive(Debug, Default)]
pub struct HeartbeatBoard {
    samples: DashMap<ServerId, HeartbeatSample>,
}

#[derive(Debug, Clone)]
pub struct HeartbeatSample {
    pub at: Instant,
    pub health: Health,
    pub load: Option<f64>,
}

impl HeartbeatBoard {
    pub fn record(&self, server: ServerId, sample: HeartbeatSample) {
        self.samples.insert(server, sample);
    }

    /// Takes every sample recorded since the last call.
    pub fn drain(&self) -> Vec<(ServerId, HeartbeatSample)> {
        let servers: Vec<ServerId> = self
            .samples
            .iter()
            .map(|entry| entry.key().clone())
            .collect();
        servers
            .into_iter()
            .filter_map(|server| self.samples.remove(&server))
            .collect()
    }
}
