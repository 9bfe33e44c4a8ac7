//! What the ownership tests share: timings, and a small seeded generator.

use std::time::Duration;

use super::Timing;

/// Ownership timings with a TTL of `ttl_ms` and a renewal every `renew_ms`, 1 % drift and
/// 100 ms of pause margin.
pub(super) fn timing(ttl_ms: u64, renew_ms: u64) -> Timing {
    Timing {
        ttl: Duration::from_millis(ttl_ms),
        renew_every: Duration::from_millis(renew_ms),
        drift: 0.01,
        max_pause: Duration::from_millis(100),
    }
}

/// xorshift64*: a small seeded generator, so a failing seed replays exactly.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
