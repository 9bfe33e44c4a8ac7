//! What the relay counts, per direction: the live atomic counters its threads bump, and
//! the plain snapshot ([`RelayStats`]) that tests read and wait on.

use std::sync::atomic::{AtomicU64, Ordering};

use super::faults::Direction;

/// One direction's counts since the relay started. Every datagram that was `received`
/// ends up forwarded (once, or twice if duplicated), dropped for one reason, or is still
/// in flight (delayed or held back for reordering).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams that entered the relay this way.
    pub received: u64,
    /// Datagrams sent on, duplicates included.
    pub forwarded: u64,
    /// Dropped because this direction was cut.
    pub dropped_cut: u64,
    /// Dropped by the `loss` dice.
    pub dropped_loss: u64,
    /// Dropped because the relay's delay queue was full (see `scheduler::MAX_QUEUED_*`).
    pub dropped_queue_full: u64,
    /// Datagrams that were sent twice.
    pub duplicated: u64,
    /// Datagrams that were held back and sent after their successor.
    pub reordered: u64,
    /// Sends that the OS refused (for example: the target's port is closed).
    pub send_errors: u64,
}

impl LinkStats {
    /// Every drop, whatever its reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_cut + self.dropped_loss + self.dropped_queue_full
    }
}

/// A snapshot of everything the relay counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub to_target: LinkStats,
    pub from_target: LinkStats,
    /// Distinct client addresses, each with its own upstream socket.
    pub clients: u64,
    /// Datagrams from a new client that could not be given an upstream socket (all
    /// `MAX_CLIENTS` slots taken, or the socket could not be opened).
    pub refused: u64,
}

impl RelayStats {
    pub fn link(&self, direction: Direction) -> &LinkStats {
        match direction {
            Direction::ToTarget => &self.to_target,
            Direction::FromTarget => &self.from_target,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct LinkCounters {
    pub received: AtomicU64,
    pub forwarded: AtomicU64,
    pub dropped_cut: AtomicU64,
    pub dropped_loss: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub send_errors: AtomicU64,
}

impl LinkCounters {
    fn snapshot(&self) -> LinkStats {
        LinkStats {
            received: read(&self.received),
            forwarded: read(&self.forwarded),
            dropped_cut: read(&self.dropped_cut),
            dropped_loss: read(&self.dropped_loss),
            dropped_queue_full: read(&self.dropped_queue_full),
            duplicated: read(&self.duplicated),
            reordered: read(&self.reordered),
            send_errors: read(&self.send_errors),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    links: [LinkCounters; 2],
    pub clients: AtomicU64,
    pub refused: AtomicU64,
}

impl Counters {
    pub fn link(&self, direction: Direction) -> &LinkCounters {
        &self.links[direction.index()]
    }

    pub fn snapshot(&self) -> RelayStats {
        RelayStats {
            to_target: self.link(Direction::ToTarget).snapshot(),
            from_target: self.link(Direction::FromTarget).snapshot(),
            clients: read(&self.clients),
            refused: read(&self.refused),
        }
    }
}

/// Counts one event. Relaxed is enough: counters order nothing, and a snapshot taken
/// while datagrams move may be a few counts behind, which is why tests wait on them.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
