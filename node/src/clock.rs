//! The node's two clocks: CLOCK_MONOTONIC for leases and ordering, wall time for people.
//!
//! Monotonic time is read system-wide (`clock_gettime(CLOCK_MONOTONIC)`), not from a
//! process-local `Instant`, so that the event logs of every process on one machine (agents,
//! gateways, the chaos checker) can be compared on one time line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

/// A reading of CLOCK_MONOTONIC in nanoseconds. The model takes it as an argument and
/// never reads a clock itself, so tests drive it with made-up values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MonoTime(u64);

impl MonoTime {
    pub const fn from_nanos(nanos: u64) -> MonoTime {
        MonoTime(nanos)
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    pub fn plus(self, duration: Duration) -> MonoTime {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        MonoTime(self.0.saturating_add(nanos))
    }

    /// `duration` before this; the clock's zero at the earliest.
    pub fn minus(self, duration: Duration) -> MonoTime {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        MonoTime(self.0.saturating_sub(nanos))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Now, on the system-wide monotonic clock.
pub fn mono_now() -> MonoTime {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(spec) => {
            let secs = u64::try_from(spec.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(spec.tv_nsec()).unwrap_or(0);
            MonoTime(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
        }
        // CLOCK_MONOTONIC cannot fail on Linux; if it ever did, a clock that stands still
        // makes leases look longer, so fail loudly rather than guess.
        Err(errno) => panic!("CLOCK_MONOTONIC unreadable: {errno}"),
    }
}

/// Milliseconds since the Unix epoch, for people reading the log.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
