//! When a node pulses, and what a pulse carries: the management channel's timing that the
//! agent's `Server` actor and the fleet's simulated servers share. Plain state with `now`
//! passed in; the caller sends the [`Pulse`] and hands back what the gateway answers.
//!
//! A pulse goes every heartbeat interval, and at once when the model wants a renewal (the
//! renewal rides on it, so a node that holds a lease sends one message where it sent two).
//! One renewal is in flight at a time, as the model asks for one at a time; it is
//! unanswered when no answer came within its timeout, or when the connection went.

use std::time::Duration;

use leasehold_federation::ids::Epoch;
use leasehold_federation::wire::common::Health;
use leasehold_federation::wire::node::{LeaseRenewal, Pulse, PulseAnswer};

use crate::clock::MonoTime;

/// How long a renewal waits for its answer: its renew interval, within these bounds.
const ANSWER_TIMEOUT_MIN: Duration = Duration::from_millis(100);
const ANSWER_TIMEOUT_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Pulser {
    interval: Duration,
    answer_timeout: Duration,
    seq: u64,
    last_sent: Option<MonoTime>,
    renew_due: Option<Epoch>,
    in_flight: Option<InFlight>,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    epoch: Epoch,
    sent_at: MonoTime,
}

/// The gateway's answer to a renewal, with when the pulse that asked was sent: the lease
/// counts from then (S-1).
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    pub epoch: Epoch,
    pub sent_at: MonoTime,
    pub renewal: LeaseRenewal,
}

impl Default for Pulser {
    fn default() -> Self {
        Pulser::new()
    }
}

impl Pulser {
    pub fn new() -> Pulser {
        Pulser {
            interval: Duration::from_millis(250),
            answer_timeout: ANSWER_TIMEOUT_MAX,
            seq: 0,
            last_sent: None,
            renew_due: None,
            in_flight: None,
        }
    }

    /// A registration gave these intervals; the next check pulses at once.
    pub fn connected(&mut self, heartbeat_interval: Duration, renew_interval: Duration) {
        self.interval = heartbeat_interval;
        self.answer_timeout = renew_interval.clamp(ANSWER_TIMEOUT_MIN, ANSWER_TIMEOUT_MAX);
        self.last_sent = None;
    }

    /// The model asks to renew `epoch` (its `SendRenew`): the next pulse carries it.
    pub fn renew(&mut self, epoch: Epoch) {
        self.renew_due = Some(epoch);
    }

    /// The pulse to send now, if one is due: a renewal is waiting, or an interval has
    /// passed since the last pulse. `reading` gives its health and load, and is called only
    /// then (callers check every 20 ms). The caller sends it at once: a renewal counts from
    /// `now`.
    pub fn due(
        &mut self,
        now: MonoTime,
        reading: impl FnOnce() -> (Health, Option<f64>),
    ) -> Option<Pulse> {
        let interval_passed = self
            .last_sent
            .is_none_or(|last| now.since(last) >= self.interval);
        if self.renew_due.is_none() && !interval_passed {
            return None;
        }
        self.seq += 1;
        self.last_sent = Some(now);
        let renew = self.renew_due.take();
        if let Some(epoch) = renew {
            self.in_flight = Some(InFlight {
                seq: self.seq,
                epoch,
                sent_at: now,
            });
        }
        let (health, load) = reading();
        Some(Pulse {
            seq: self.seq,
            health,
            load,
            renew,
        })
    }

    /// The gateway answered a pulse. `None` when it answers no renewal in flight (a late
    /// answer, after its timeout: the model asked again meanwhile).
    pub fn answered(&mut self, answer: PulseAnswer) -> Option<Answered> {
        let in_flight = self.in_flight.filter(|f| f.seq == answer.seq)?;
        self.in_flight = None;
        Some(Answered {
            epoch: in_flight.epoch,
            sent_at: in_flight.sent_at,
            renewal: answer.renewal,
        })
    }

    /// The renewal whose answer is overdue at `now`, given up on (maybe done).
    pub fn overdue(&mut self, now: MonoTime) -> Option<Epoch> {
        let in_flight = self
            .in_flight
            .filter(|f| now.since(f.sent_at) >= self.answer_timeout)?;
        self.in_flight = None;
        Some(in_flight.epoch)
    }

    /// The connection went: what was asked on it and what waited to be asked are
    /// unanswered.
    pub fn disconnected(&mut self) -> Vec<Epoch> {
        let mut unanswered: Vec<Epoch> =
            self.in_flight.take().map(|f| f.epoch).into_iter().collect();
        unanswered.extend(self.renew_due.take());
        unanswered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_nanos(ms * 1_000_000)
    }

    fn pulser() -> Pulser {
        let mut pulser = Pulser::new();
        pulser.connected(Duration::from_millis(250), Duration::from_millis(500));
        pulser
    }

    #[test]
    fn pulses_every_interval_and_at_once_for_a_renewal() {
        let mut p = pulser();
        assert_eq!(
            p.due(at(0), || (Health::Idle, None)).map(|p| p.seq),
            Some(1)
        );
        // Not due: the reading is not even taken.
        assert!(
            p.due(at(100), || unreachable!("read while not due"))
                .is_none()
        );
        p.renew(Epoch::from_journal(7));
        let pulse = p.due(at(120), || (Health::Healthy, Some(3.0))).unwrap();
        assert_eq!((pulse.seq, pulse.renew), (2, Some(Epoch::from_journal(7))));
        // The renewal reset the interval: the next plain pulse is 250 ms after it.
        assert!(p.due(at(300), || (Health::Healthy, None)).is_none());
        assert_eq!(
            p.due(at(370), || (Health::Healthy, None)).map(|p| p.renew),
            Some(None)
        );
    }

    #[test]
    fn an_answer_counts_from_when_its_pulse_was_sent() {
        let mut p = pulser();
        p.renew(Epoch::from_journal(3));
        let pulse = p.due(at(40), || (Health::Healthy, None)).unwrap();
        let renewal = LeaseRenewal::Renewed {
            epoch: Epoch::from_journal(3),
            ttl_ms: 2_000,
        };
        // An answer to another pulse is not this renewal's.
        assert!(
            p.answered(PulseAnswer {
                seq: pulse.seq + 1,
                renewal: renewal.clone(),
                generation: None,
            })
            .is_none()
        );
        let answered = p
            .answered(PulseAnswer {
                seq: pulse.seq,
                renewal: renewal.clone(),
                generation: None,
            })
            .unwrap();
        assert_eq!(
            answered,
            Answered {
                epoch: Epoch::from_journal(3),
                sent_at: at(40),
                renewal
            }
        );
        assert!(p.overdue(at(5_000)).is_none(), "answered, so never overdue");
    }

    #[test]
    fn an_unanswered_renewal_is_given_up_after_its_timeout_or_with_the_connection() {
        let mut p = pulser();
        p.renew(Epoch::from_journal(3));
        p.due(at(0), || (Health::Healthy, None)).unwrap();
        assert!(p.overdue(at(499)).is_none());
        assert_eq!(p.overdue(at(500)), Some(Epoch::from_journal(3)));
        assert!(p.overdue(at(501)).is_none(), "given up once");

        p.renew(Epoch::from_journal(4));
        p.due(at(600), || (Health::Healthy, None)).unwrap();
        assert_eq!(p.disconnected(), vec![Epoch::from_journal(4)]);
        p.renew(Epoch::from_journal(5));
        assert_eq!(
            p.disconnected(),
            vec![Epoch::from_journal(5)],
            "asked for, never sent"
        );
        assert!(p.disconnected().is_empty());
    }
}
