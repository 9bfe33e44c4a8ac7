//! What a simulated process may do when it handles an event: read the true time and the
//! simulation's generator, send messages, set timers. The world performs the actions in
//! order after the handler returns, so every process sees the same world the actors do:
//! messages and timers, nothing shared.

use crate::campaign::prng::SplitMix64;

use super::message::{Msg, RequestId};
use super::net::End;

/// A timer a process sets for itself; it fires only in the incarnation that set it.
#[derive(Debug, Clone, PartialEq)]
pub enum Timer {
    // Gateway.
    Round,
    /// The journal writer committed the oldest batch.
    Commit,
    /// Ping every peer and announce the catalogue when due.
    PeerTick,
    /// A request to a peer or a node got no answer in time.
    RequestTimeout(RequestId),
    // Node agent.
    NodeTick,
    Heartbeat,
    Dial,
    WorkloadSpawned(leasehold_federation::ids::Epoch),
    WorkloadHealthy(leasehold_federation::ids::Epoch),
    WorkloadGone(leasehold_federation::ids::Epoch),
    DrainEnded(leasehold_federation::ids::Epoch),
}

#[derive(Debug)]
pub enum Action {
    /// Boxed: a message is large, a timer small, and both queue by the thousand.
    Send {
        to: End,
        msg: Box<Msg>,
    },
    Timer {
        after_us: u64,
        timer: Timer,
    },
}

pub struct Ctx<'a> {
    /// True time, microseconds since the simulation began.
    pub now_us: u64,
    pub rng: &'a mut SplitMix64,
    pub actions: Vec<Action>,
    next_request: &'a mut RequestId,
}

impl<'a> Ctx<'a> {
    pub fn new(now_us: u64, rng: &'a mut SplitMix64, next_request: &'a mut RequestId) -> Self {
        Ctx {
            now_us,
            rng,
            actions: Vec::new(),
            next_request,
        }
    }

    pub fn send(&mut self, to: End, msg: Msg) {
        self.actions.push(Action::Send {
            to,
            msg: Box::new(msg),
        });
    }

    pub fn timer(&mut self, after_us: u64, timer: Timer) {
        self.actions.push(Action::Timer { after_us, timer });
    }

    pub fn request_id(&mut self) -> RequestId {
        *self.next_request += 1;
        *self.next_request
    }
}
