//! One direction of one client's path through the relay: rolls the dice for each datagram
//! that enters, counts the outcome, and hands what survives to the scheduler. It also keeps
//! the datagram that the reorder fault holds back until its successor has gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::faults::{Decision, Direction, DropCause, LinkDice, LinkFaults, decide};
use super::scheduler::{Destination, Scheduler};
use super::stats::{Counters, bump};

/// How long a datagram picked for reordering waits for a successor to overtake it. If
/// none comes within this time it is sent anyway (late, but not reordered): a held
/// datagram must not wait for ever on a link that has fallen quiet.
pub const REORDER_WINDOW: Duration = Duration::from_millis(50);

pub(super) struct Link {
    direction: Direction,
    destination: Destination,
    dice: LinkDice,
    held: Option<Held>,
    scheduler: Scheduler,
    counters: Arc<Counters>,
}

/// A datagram held back for reordering, with the due time of each copy.
struct Held {
    datagram: Vec<u8>,
    due: Vec<Instant>,
    deadline: Instant,
}

impl Link {
    pub fn new(
        direction: Direction,
        destination: Destination,
        dice: LinkDice,
        scheduler: Scheduler,
        counters: Arc<Counters>,
    ) -> Link {
        Link {
            direction,
            destination,
            dice,
            held: None,
            scheduler,
            counters,
        }
    }

    /// Decides the fate of `datagram`, which entered the relay at `now`, under `faults`.
    pub fn admit(&mut self, datagram: &[u8], faults: &LinkFaults, now: Instant) {
        let counters = self.counters.link(self.direction);
        bump(&counters.received);
        let (delays, reorder) = match decide(faults, &self.dice.roll()) {
            Decision::Drop(DropCause::Cut) => return bump(&counters.dropped_cut),
            Decision::Drop(DropCause::Loss) => return bump(&counters.dropped_loss),
            Decision::Deliver { delays, reorder } => (delays, reorder),
        };
        if delays.len() > 1 {
            bump(&counters.duplicated);
        }
        let due: Vec<Instant> = delays.iter().map(|delay| now + *delay).collect();
        // One datagram is held at a time; a second pick while one is held goes out as
        // usual (and overtakes the held one).
        if reorder && self.held.is_none() {
            self.held = Some(Held {
                datagram: datagram.to_vec(),
                due,
                deadline: now + REORDER_WINDOW,
            });
            return;
        }
        let last = due.iter().copied().max().unwrap_or(now);
        for at in due {
            self.schedule(at, datagram.to_vec());
        }
        if let Some(held) = self.held.take() {
            bump(&counters.reordered);
            // Pushed after its successor and never due earlier, so the scheduler's
            // admission-order tie-break sends it second.
            self.release(held, Some(last));
        }
    }

    /// Sends a held datagram whose successor did not come within [`REORDER_WINDOW`].
    pub fn tick(&mut self, now: Instant) {
        if self.held.as_ref().is_some_and(|held| held.deadline <= now)
            && let Some(held) = self.held.take()
        {
            self.release(held, None);
        }
    }

    fn release(&self, held: Held, not_before: Option<Instant>) {
        for at in &held.due {
            let at = not_before.map_or(*at, |floor| floor.max(*at));
            self.schedule(at, held.datagram.clone());
        }
    }

    fn schedule(&self, due: Instant, datagram: Vec<u8>) {
        self.scheduler
            .push(due, self.direction, self.destination.clone(), datagram);
    }
}
