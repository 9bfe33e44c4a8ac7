//! The simulated network: every message between two endpoints (a gateway, a node agent)
//! is delivered after a delay drawn from the link's faults, or lost, or delivered twice;
//! partitions of any shape are per-direction cuts. Everything random comes from the
//! simulation's one generator, so a seed replays exactly.

use std::collections::BTreeMap;

use crate::campaign::prng::SplitMix64;

/// One end of a message: a site's gateway, or the node agent of server `node` (an index
/// into the simulation's nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    Gateway(usize),
    Node(usize),
}

/// What a direction of a link does to what it carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkFaults {
    /// Everything is lost.
    pub cut: bool,
    /// Added to the base delay, microseconds.
    pub delay_us: u64,
    /// Up to this much more, drawn per message (reorders messages), microseconds.
    pub jitter_us: u64,
    /// Chance in a million that a message is lost.
    pub loss_ppm: u64,
    /// Chance in a million that a message arrives twice.
    pub duplicate_ppm: u64,
}

impl LinkFaults {
    pub const CLEAN: LinkFaults = LinkFaults {
        cut: false,
        delay_us: 0,
        jitter_us: 0,
        loss_ppm: 0,
        duplicate_ppm: 0,
    };
}

/// The network's one-way base delays: on a machine's loopback inside a site, a WAN-like
/// delay between sites.
const LOCAL_DELAY_US: u64 = 200;
const SITE_TO_SITE_DELAY_US: u64 = 2_000;
/// Small jitter on every message, so equal-time events interleave differently by seed.
const BASE_JITTER_US: u64 = 300;

/// A fault's id: faults overlap, and each is healed on its own.
pub type FaultId = u64;

#[derive(Debug, Default)]
pub struct Network {
    /// The faults on each direction (from, to), by the fault that set them; what a
    /// direction does is all of them at once.
    faults: BTreeMap<(End, End), BTreeMap<FaultId, LinkFaults>>,
}

impl Network {
    pub fn set(&mut self, from: End, to: End, fault: FaultId, faults: LinkFaults) {
        self.faults
            .entry((from, to))
            .or_default()
            .insert(fault, faults);
    }

    /// Heals what `fault` did, wherever it did it.
    pub fn heal(&mut self, fault: FaultId) {
        for layers in self.faults.values_mut() {
            layers.remove(&fault);
        }
        self.faults.retain(|_, layers| !layers.is_empty());
    }

    /// Every fault on the direction at once: cut if any cuts, the delays added, the worst
    /// loss and duplication.
    pub fn faults(&self, from: End, to: End) -> LinkFaults {
        let Some(layers) = self.faults.get(&(from, to)) else {
            return LinkFaults::CLEAN;
        };
        layers
            .values()
            .fold(LinkFaults::CLEAN, |all, one| LinkFaults {
                cut: all.cut || one.cut,
                delay_us: all.delay_us + one.delay_us,
                jitter_us: all.jitter_us + one.jitter_us,
                loss_ppm: all.loss_ppm.max(one.loss_ppm),
                duplicate_ppm: all.duplicate_ppm.max(one.duplicate_ppm),
            })
    }

    /// The delays after which a message sent now from `from` to `to` arrives: none if it
    /// is lost, two if it is duplicated.
    pub fn deliveries(&self, from: End, to: End, rng: &mut SplitMix64) -> Vec<u64> {
        let faults = self.faults(from, to);
        if faults.cut || (faults.loss_ppm > 0 && rng.below(1_000_000) < faults.loss_ppm) {
            return Vec::new();
        }
        let base = match (from, to) {
            (End::Gateway(_), End::Gateway(_)) => SITE_TO_SITE_DELAY_US,
            _ => LOCAL_DELAY_US,
        };
        let delay = |rng: &mut SplitMix64| {
            base + faults.delay_us
                + rng.below(BASE_JITTER_US + 1)
                + if faults.jitter_us > 0 {
                    rng.below(faults.jitter_us + 1)
                } else {
                    0
                }
        };
        let first = delay(rng);
        if faults.duplicate_ppm > 0 && rng.below(1_000_000) < faults.duplicate_ppm {
            let second = delay(rng);
            vec![first, second]
        } else {
            vec![first]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_loses_everything_one_way_only_heals_alone_and_the_same_seed_gives_the_same_delays() {
        let mut net = Network::default();
        let (a, b) = (End::Gateway(0), End::Gateway(1));
        let cut = LinkFaults {
            cut: true,
            ..LinkFaults::CLEAN
        };
        net.set(a, b, 1, cut);
        net.set(a, b, 2, cut);
        let mut rng = SplitMix64::new(7);
        assert!(net.deliveries(a, b, &mut rng).is_empty());
        assert_eq!(net.deliveries(b, a, &mut rng).len(), 1);
        let draws = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..20)
                .flat_map(|_| net.deliveries(b, a, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        assert_ne!(draws(3), draws(4));
        // Two overlapping cuts: healing one leaves the other.
        net.heal(1);
        assert!(net.deliveries(a, b, &mut rng).is_empty());
        net.heal(2);
        assert_eq!(net.deliveries(a, b, &mut rng).len(), 1);
    }
}
