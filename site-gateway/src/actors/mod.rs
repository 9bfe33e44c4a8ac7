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
use rustc_hash::FxHashMap;

use crate::model::site::ServerIx;

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
///
/// Heartbeats are kept by the server's place in the site core ([`ServerIx`]), which the
/// master hands the board when the server registers: a round takes them as they are, with
/// no lookup by name (issue #14: the master's round at 100,000 servers).
#[derive(Debug, Default)]
pub struct PulseBoard {
    /// Each registered server's place in the site core. Written at registration, read by
    /// every pulse: sharded, so that connection tasks on several threads read at once.
    places: DashMap<ServerId, ServerIx>,
    /// Swapped out whole by each round, so a round costs what it holds, not the site's size.
    heartbeats: Mutex<FxHashMap<ServerIx, HeartbeatSample>>,
    /// Swapped out whole by each batch, likewise.
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
            self.record(server, pulse, Instant::now());
        }
    }
}

impl PulseBoard {
    /// `server` registered, at `place` in the site core: its pulses count from now on.
    pub fn admit(&self, server: ServerId, place: ServerIx) {
        self.places.insert(server, place);
    }

    /// A pulse from `server`, arrived at `at`. A server that never registered has no
    /// place: its heartbeat is dropped (its renewal is kept, and the master renews
    /// nothing for a server it holds no link of).
    pub fn record(&self, server: &ServerId, pulse: Pulse, at: Instant) {
        if let Some(epoch) = pulse.renew {
            let ask = RenewAsk {
                epoch,
                seq: pulse.seq,
            };
            lock(&self.renewals).insert(server.clone(), ask);
        }
        let Some(place) = self.places.get(server).map(|place| *place) else {
            return;
        };
        let sample = HeartbeatSample {
            at,
            health: pulse.health,
            load: pulse.load,
        };
        lock(&self.heartbeats).insert(place, sample);
    }

    /// A renewal asked for on its own (by a node of `leasehold-node/1`, whose heartbeats
    /// come apart from its renewals).
    pub fn ask_renewal(&self, server: ServerId, epoch: Epoch, seq: u64) {
        lock(&self.renewals).insert(server, RenewAsk { epoch, seq });
    }

    /// Takes the renewals asked since the last call.
    pub fn take_renewals(&self) -> Vec<(ServerId, RenewAsk)> {
        let taken = std::mem::take(&mut *lock(&self.renewals));
        taken.into_iter().collect()
    }

    /// Takes the heartbeats recorded since the last call, by place.
    pub fn take_heartbeats(&self) -> FxHashMap<ServerIx, HeartbeatSample> {
        std::mem::take(&mut *lock(&self.heartbeats))
    }
}

/// One of the board's maps, locked. Each write is one insert, so a panic elsewhere cannot
/// leave a map half-written: a poisoned lock is taken as it is.
fn lock<T>(map: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        board.admit(ServerId::parse("a1").unwrap(), ServerIx::at(0));
        board.admit(ServerId::parse("a2").unwrap(), ServerIx::at(1));
        board.take(&node("a1"), pulse(1, Some(7)));
        board.take(&node("a1"), pulse(2, None));
        board.take(&node("a2"), pulse(5, Some(3)));
        board.take(&node("a2"), pulse(6, Some(3)));
        // A site's own name never sends pulses; nothing is recorded for it.
        board.take(
            &PeerName::Site(SiteId::parse("site-b").unwrap()),
            pulse(9, Some(1)),
        );
        // A server that never registered has no place: its heartbeat is not kept.
        board.take(&node("a3"), pulse(4, None));

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

        let mut heartbeats: Vec<_> = board.take_heartbeats().into_iter().collect();
        heartbeats.sort_by_key(|(place, _)| *place);
        let loads: Vec<(usize, Option<f64>)> = heartbeats
            .iter()
            .map(|(place, sample)| (place.index(), sample.load))
            .collect();
        assert_eq!(loads, [(0, Some(2.0)), (1, Some(6.0))]);
        assert!(board.take_heartbeats().is_empty());
    }
}
