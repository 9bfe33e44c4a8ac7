//! How alive a peer site looks, from its answers to our pings: up, suspect, down. Plain
//! state: the Peer actor feeds it pongs and failures with `now`, and asks for a verdict.

use std::time::Duration;

use serde::Serialize;

use super::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Answered a ping within the last two intervals.
    Up,
    /// Silent for longer, but not yet for `misses` intervals.
    Suspect,
    /// Silent for `misses` intervals, or never heard from.
    Down,
}

#[derive(Debug, Clone)]
pub struct PeerHealth {
    interval: Duration,
    misses: u32,
    last_answer: Option<Millis>,
    /// Smoothed round-trip time (EWMA, 1/8 weight for a new sample, as TCP does).
    rtt: Option<Duration>,
    last_rtt: Option<Duration>,
}

impl PeerHealth {
    /// `interval`: how often we ping; `misses`: silent intervals before the peer is down.
    pub fn new(interval: Duration, misses: u32) -> Self {
        PeerHealth {
            interval,
            misses: misses.max(2),
            last_answer: None,
            rtt: None,
            last_rtt: None,
        }
    }

    pub fn answered(&mut self, now: Millis, rtt: Duration) {
        self.last_answer = Some(now);
        self.last_rtt = Some(rtt);
        self.rtt = Some(match self.rtt {
            None => rtt,
            Some(smoothed) => (smoothed * 7 + rtt) / 8,
        });
    }

    /// The connection is gone: whatever the clock says, the peer is not up.
    pub fn lost(&mut self) {
        self.last_answer = None;
    }

    pub fn judge(&self, now: Millis) -> Liveness {
        match self.last_answer {
            None => Liveness::Down,
            Some(last) => {
                let silent = now.since(last);
                if silent <= self.interval * 2 {
                    Liveness::Up
                } else if silent < self.interval * self.misses {
                    Liveness::Suspect
                } else {
                    Liveness::Down
                }
            }
        }
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    pub fn silent_for(&self, now: Millis) -> Option<Duration> {
        self.last_answer.map(|last| now.since(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> PeerHealth {
        PeerHealth::new(Duration::from_millis(250), 4)
    }

    #[test]
    fn never_heard_from_is_down() {
        assert_eq!(health().judge(Millis(10_000)), Liveness::Down);
    }

    #[test]
    fn silence_turns_up_into_suspect_then_down() {
        let mut peer = health();
        peer.answered(Millis(1000), Duration::from_millis(40));
        assert_eq!(peer.judge(Millis(1000)), Liveness::Up);
        assert_eq!(peer.judge(Millis(1500)), Liveness::Up);
        assert_eq!(peer.judge(Millis(1501)), Liveness::Suspect);
        assert_eq!(peer.judge(Millis(1999)), Liveness::Suspect);
        assert_eq!(peer.judge(Millis(2000)), Liveness::Down);
        peer.answered(Millis(2100), Duration::from_millis(40));
        assert_eq!(peer.judge(Millis(2100)), Liveness::Up);
    }

    #[test]
    fn a_lost_connection_is_down_at_once() {
        let mut peer = health();
        peer.answered(Millis(1000), Duration::from_millis(40));
        peer.lost();
        assert_eq!(peer.judge(Millis(1001)), Liveness::Down);
    }

    #[test]
    fn rtt_is_smoothed() {
        let mut peer = health();
        peer.answered(Millis(0), Duration::from_millis(80));
        peer.answered(Millis(250), Duration::from_millis(0));
        assert_eq!(peer.rtt(), Some(Duration::from_millis(70)));
        assert_eq!(peer.last_rtt(), Some(Duration::from_millis(0)));
    }
}
