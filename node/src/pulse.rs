//! When a node pulses, and what a pulse carries: the management channel's timing that the
//! agent's `Server` actor and the fleet's simulated servers share. Plain state with `now`
//! passed in; the caller sends the [`Pulse`] and hands back what the gateway answers.
//!
//! A pulse goes every heartbeat interval, and at once when the model wants a renewal (the
//! renewal rides on it, so a node that holds a lease sends one message where it sent two).
//! One renewal is in flight at a time, as the model asks for one at a time; it is
//! unanswered when no answer came within its timeout, or when the connection went. An
//! answer that comes after its timeout still counts, from its own pulse's send time: a
//! busy gateway's late answer is as good as a prompt one, and asking again meanwhile only
//! adds a chance.

use std::time::Duration;

use leasehold_federation::ids::Epoch;
use leasehold_federation::wire::common::Health;
use leasehold_federation::wire::node::{LeaseRenewal, Pulse, PulseAnswer};

use crate::clock::MonoTime;

/// How long a renewal waits for its answer before it is asked again: half its renew
/// interval, within these bounds. A renewal lost at half the lease TTL (the longest renew
/// interval the defaults give, docs/node.md) is then asked again before the lease ends,
/// and its answer, if it only came late, still counts.
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
    /// Renewals given up on at their timeout on this connection, newest last, at most
    /// [`LATE_KEPT`]: their answers still count if they come.
    late: Vec<InFlight>,
}

/// How many given-up renewals an answer may still come for: more than fit in a lease at
/// the shortest answer timeout would be of no use.
const LATE_KEPT: usize = 4;

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
            late: Vec::new(),
        }
    }

    /// A registration gave these intervals; the next check pulses at once.
    pub fn connected(&mut self, heartbeat_interval: Duration, renew_interval: Duration) {
        self.interval = heartbeat_interval;
        self.answer_timeout = (renew_interval / 2).clamp(ANSWER_TIMEOUT_MIN, ANSWER_TIMEOUT_MAX);
        self.last_sent = None;
        self.late.clear();
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

    /// The gateway answered a pulse. `None` when it answers no renewal asked on this
    /// connection (or one answered already). An answer to a renewal given up on counts as
    /// well, from when its own pulse was sent (S-1); the model takes it as it takes any.
    pub fn answered(&mut self, answer: PulseAnswer) -> Option<Answered> {
        let in_flight = match self.in_flight.filter(|f| f.seq == answer.seq) {
            Some(in_flight) => {
                self.in_flight = None;
                in_flight
            }
            None => {
                let at = self.late.iter().position(|f| f.seq == answer.seq)?;
                self.late.remove(at)
            }
        };
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
        if self.late.len() == LATE_KEPT {
            self.late.remove(0);
        }
        self.late.push(in_flight);
        Some(in_flight.epoch)
    }

    /// The connection went: what was asked on it and what waited to be asked are
    /// unanswered.
    pub fn disconnected(&mut self) -> Vec<Epoch> {
        self.late.clear();
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
        // Half the 500 ms renew interval.
        assert!(p.overdue(at(249)).is_none());
        assert_eq!(p.overdue(at(250)), Some(Epoch::from_journal(3)));
        assert!(p.overdue(at(251)).is_none(), "given up once");

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

    #[test]
    fn a_late_answer_still_counts_from_its_own_pulse() {
        let mut p = pulser();
        let renewed = |seq| PulseAnswer {
            seq,
            renewal: LeaseRenewal::Renewed {
                epoch: Epoch::from_journal(3),
                ttl_ms: 2_000,
            },
            generation: None,
        };
        p.renew(Epoch::from_journal(3));
        let first = p.due(at(0), || (Health::Healthy, None)).unwrap();
        assert_eq!(p.overdue(at(250)), Some(Epoch::from_journal(3)));
        p.renew(Epoch::from_journal(3));
        let second = p.due(at(350), || (Health::Healthy, None)).unwrap();
        // The first pulse's answer comes after its timeout, while the second waits.
        let late = p.answered(renewed(first.seq)).unwrap();
        assert_eq!(late.sent_at, at(0), "counted from the first pulse");
        assert!(p.answered(renewed(first.seq)).is_none(), "taken once");
        assert_eq!(p.answered(renewed(second.seq)).unwrap().sent_at, at(350));

        // Only the last few given up are kept, and none across connections.
        let mut seqs = Vec::new();
        for i in 0..=LATE_KEPT as u64 {
            p.renew(Epoch::from_journal(3));
            let at_ms = 1_000 + i * 300;
            seqs.push(p.due(at(at_ms), || (Health::Healthy, None)).unwrap().seq);
            assert!(p.overdue(at(at_ms + 250)).is_some());
        }
        assert!(
            p.answered(renewed(seqs[0])).is_none(),
            "the oldest was let go"
        );
        assert!(p.answered(renewed(seqs[1])).is_some());
        p.disconnected();
        assert!(
            p.answered(renewed(seqs[2])).is_none(),
            "asked on a connection gone"
        );
    }
}
