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
pub mod maintenance;
pub mod master;
pub mod ownership;
pub mod peer;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use dashmap::DashMap;
use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::transport::connection::DatagramSink;
use leasehold_federation::transport::identity::PeerName;
use leasehold_federation::wire::InboundOneWay;
use leasehold_federation::wire::common::Health;
use leasehold_federation::wire::node::Pulse;

/// Wall-clock milliseconds since the Unix epoch, for audit records, config status and
/// catalogue versions: what people and peers read, never what decisions are timed by.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What nodes' pulses said since the master last looked: each server's latest heartbeat
/// and the renewal it asks for. The connection tasks write it as pulses arrive, so a pulse
/// never queues behind other work in a mailbox; the master takes the renewals every
/// [`master::RENEWAL_BATCH`] and the heartbeats every round. Bounded: one heartbeat and
/// one renewal per server, a newer pulse overwriting an older one.
#[derive(Debug, Default)]
pub struct PulseBoard {
    /// Sharded: many connection tasks write, the master reads ten times a second.
    heartbeats: DashMap<ServerId, HeartbeatSample>,
    /// Swapped out whole by each batch, so a batch costs what it holds, not the site's size.
    renewals: Mutex<HashMap<ServerId, RenewAsk>>,
}

#[derive(Debug, Clone)]
pub struct HeartbeatSample {
    /// When the pulse arrived, on the gateway's clock.
    pub at: Instant,
    pub health: Health,
    pub load: Option<f64>,
}

/// A node asks to keep the lease of `epoch`; the answer repeats `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewAsk {
    pub epoch: Epoch,
    pub seq: u64,
}

/// Pulses are recorded in the connection's read task, as they are decoded.
impl DatagramSink for PulseBoard {
    fn take(&self, peer: &PeerName, message: InboundOneWay) {
        // The listener admits only nodes, and a node may send no other datagram kind.
        if let (PeerName::Node { server, .. }, InboundOneWay::Pulse(pulse)) = (peer, message) {
            self.record(server.clone(), pulse, Instant::now());
        }
    }
}

impl PulseBoard {
    /// A pulse from `server`, arrived at `at`.
    pub fn record(&self, server: ServerId, pulse: Pulse, at: Instant) {
        if let Some(epoch) = pulse.renew {
            let ask = RenewAsk {
                epoch,
                seq: pulse.seq,
            };
            self.lock_renewals().insert(server.clone(), ask);
        }
        let sample = HeartbeatSample {
            at,
            health: pulse.health,
            load: pulse.load,
        };
        self.heartbeats.insert(server, sample);
    }

    /// A renewal asked for on its own (by a node of `leasehold-node/1`, whose heartbeats
    /// come apart from its renewals).
    pub fn ask_renewal(&self, server: ServerId, epoch: Epoch, seq: u64) {
        self.lock_renewals().insert(server, RenewAsk { epoch, seq });
    }

    /// Takes the renewals asked since the last call.
    pub fn take_renewals(&self) -> Vec<(ServerId, RenewAsk)> {
        let taken = std::mem::take(&mut *self.lock_renewals());
        taken.into_iter().collect()
    }

    /// Takes the heartbeats recorded since the last call.
    pub fn take_heartbeats(&self) -> Vec<(ServerId, HeartbeatSample)> {
        let servers: Vec<ServerId> = self
            .heartbeats
            .iter()
            .map(|entry| entry.key().clone())
            .collect();
        servers
            .into_iter()
            .filter_map(|server| self.heartbeats.remove(&server))
            .collect()
    }

    fn lock_renewals(&self) -> std::sync::MutexGuard<'_, HashMap<ServerId, RenewAsk>> {
        // Each write is one insert, so a panic elsewhere cannot leave the map half-written.
        self.renewals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use leasehold_federation::ids::SiteId;

    use super::*;

    fn node(server: &str) -> PeerName {
        PeerName::Node {
            site: SiteId::parse("site-a").unwrap(),
            server: ServerId::parse(server).unwrap(),
        }
    }

    fn pulse(seq: u64, renew: Option<u64>) -> InboundOneWay {
        InboundOneWay::Pulse(Pulse {
            seq,
            health: Health::Healthy,
            load: Some(seq as f64),
            renew: renew.map(Epoch::from_journal),
        })
    }

    #[test]
    fn the_board_keeps_each_servers_latest_pulse_and_renewal_until_taken() {
        let board = PulseBoard::default();
        board.take(&node("a1"), pulse(1, Some(7)));
        board.take(&node("a1"), pulse(2, None));
        board.take(&node("a2"), pulse(5, Some(3)));
        board.take(&node("a2"), pulse(6, Some(3)));
        // A site's own name never sends pulses; nothing is recorded for it.
        board.take(
            &PeerName::Site(SiteId::parse("site-b").unwrap()),
            pulse(9, Some(1)),
        );

        let mut renewals = board.take_renewals();
        renewals.sort_by(|a, b| a.0.cmp(&b.0));
        let asked: Vec<(&str, u64, u64)> = renewals
            .iter()
            .map(|(server, ask)| (server.as_str(), ask.epoch.value(), ask.seq))
            .collect();
        // a1's renewal stays asked though a later pulse asked none; a2's is its latest.
        assert_eq!(asked, [("a1", 7, 1), ("a2", 3, 6)]);
        assert!(
            board.take_renewals().is_empty(),
            "each renewal is taken once"
        );

        let mut heartbeats = board.take_heartbeats();
        heartbeats.sort_by(|a, b| a.0.cmp(&b.0));
        let loads: Vec<(&str, Option<f64>)> = heartbeats
            .iter()
            .map(|(server, sample)| (server.as_str(), sample.load))
            .collect();
        assert_eq!(loads, [("a1", Some(2.0)), ("a2", Some(6.0))]);
        assert!(board.take_heartbeats().is_empty());
    }
}
