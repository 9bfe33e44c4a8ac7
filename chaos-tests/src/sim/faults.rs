//! The faults a simulation injects: drawn one after another at random intervals from the
//! one generator, each on a random target for a random time, overlapping freely (a
//! partition during a restart, a pause during a hand-back, a crash longer than an
//! ownership TTL).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::campaign::prng::SplitMix64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9 of a gateway; it restarts on its journal after the fault's time.
    GatewayCrash,
    /// SIGSTOP of a gateway for the fault's time (its clock runs on).
    GatewayPause,
    /// kill -9 of a node agent (its workload dies with it); restarted after.
    NodeCrash,
    /// The workload exits by itself.
    WorkloadCrash,
    /// A site cut off from every other, both ways.
    PartitionIsolate,
    /// What one site sends another is lost; the other way is clean.
    PartitionOneWay,
    /// Two sites cut off from each other, both ways.
    PartitionPair,
    /// Every link between sites: delay, jitter, loss, duplication.
    SlowNetwork,
    /// A valid edit of a site's config (its account's SLA up by one), undone at the end.
    ConfigEdit,
    /// An edit that validation refuses: nothing may change.
    ConfigRefused,
    /// An account's load jumps past what its home serves alone (loans follow).
    LoadBurst,
    /// A stand-in with the site's certificate replays a node's newest epoch for another
    /// account (an old gateway incarnation, a delayed duplicate): the node must refuse it.
    StaleGrant,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::GatewayCrash,
        FaultKind::GatewayPause,
        FaultKind::NodeCrash,
        FaultKind::WorkloadCrash,
        FaultKind::PartitionIsolate,
        FaultKind::PartitionOneWay,
        FaultKind::PartitionPair,
        FaultKind::SlowNetwork,
        FaultKind::ConfigEdit,
        FaultKind::ConfigRefused,
        FaultKind::LoadBurst,
        FaultKind::StaleGrant,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::GatewayCrash => "gateway-crash",
            FaultKind::GatewayPause => "gateway-pause",
            FaultKind::NodeCrash => "node-crash",
            FaultKind::WorkloadCrash => "workload-crash",
            FaultKind::PartitionIsolate => "partition-isolate",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::PartitionPair => "partition-pair",
            FaultKind::SlowNetwork => "slow-network",
            FaultKind::ConfigEdit => "config-edit",
            FaultKind::ConfigRefused => "config-refused",
            FaultKind::LoadBurst => "load-burst",
            FaultKind::StaleGrant => "stale-grant",
        }
    }

    /// How long the fault lasts, microseconds (0: it is over at once). A crash's time is
    /// how long the process stays down: up to 5 s, past the ownership TTL (1.5 s).
    fn duration_us(self, rng: &mut SplitMix64) -> u64 {
        let ms = match self {
            FaultKind::GatewayCrash => rng.between(200, 5_000),
            FaultKind::GatewayPause => rng.between(50, 4_000),
            FaultKind::NodeCrash => rng.between(200, 4_000),
            FaultKind::WorkloadCrash | FaultKind::ConfigRefused | FaultKind::StaleGrant => 0,
            FaultKind::PartitionIsolate | FaultKind::PartitionOneWay | FaultKind::PartitionPair => {
                rng.between(300, 8_000)
            }
            FaultKind::SlowNetwork => rng.between(500, 8_000),
            FaultKind::ConfigEdit => rng.between(1_000, 5_000),
            FaultKind::LoadBurst => rng.between(2_000, 10_000),
        };
        ms * 1000
    }
}

/// One fault as drawn: its kind, its targets (site or node indices, by kind) and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub id: u64,
    pub kind: FaultKind,
    /// A site, or (for a pair or a one-way cut) two; a node for node faults.
    pub targets: Vec<usize>,
    pub duration_us: u64,
}

/// Draws the next fault: its kind uniformly, its targets among `sites` sites and `nodes`
/// nodes (at least two sites for partitions; with one site, another kind is drawn).
pub fn draw(id: u64, sites: usize, nodes: usize, rng: &mut SplitMix64) -> Fault {
    loop {
        let kind = *rng.pick(&FaultKind::ALL);
        let site = rng.below(sites as u64) as usize;
        let targets = match kind {
            FaultKind::NodeCrash | FaultKind::WorkloadCrash | FaultKind::StaleGrant => {
                vec![rng.below(nodes as u64) as usize]
            }
            FaultKind::PartitionOneWay | FaultKind::PartitionPair => {
                if sites < 2 {
                    continue;
                }
                let other = (site + 1 + rng.below(sites as u64 - 1) as usize) % sites;
                vec![site, other]
            }
            FaultKind::PartitionIsolate | FaultKind::SlowNetwork if sites < 2 => continue,
            _ => vec![site],
        };
        let duration_us = kind.duration_us(rng);
        return Fault {
            id,
            kind,
            targets,
            duration_us,
        };
    }
}

/// How many faults of each kind were injected.
pub fn tally(faults: &[FaultKind]) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for kind in faults {
        *counts.entry(kind.name()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_drawn_with_targets_of_its_shape_and_a_seed_draws_the_same() {
        let mut rng = SplitMix64::new(5);
        let drawn: Vec<Fault> = (0..2_000).map(|id| draw(id, 3, 9, &mut rng)).collect();
        for kind in FaultKind::ALL {
            assert!(drawn.iter().any(|f| f.kind == kind), "{kind:?} never drawn");
        }
        for fault in &drawn {
            match fault.kind {
                FaultKind::PartitionOneWay | FaultKind::PartitionPair => {
                    assert_eq!(fault.targets.len(), 2);
                    assert_ne!(fault.targets[0], fault.targets[1]);
                }
                FaultKind::NodeCrash | FaultKind::WorkloadCrash | FaultKind::StaleGrant => {
                    assert!(fault.targets[0] < 9)
                }
                _ => assert!(fault.targets[0] < 3),
            }
        }
        let again: Vec<Fault> = {
            let mut rng = SplitMix64::new(5);
            (0..2_000).map(|id| draw(id, 3, 9, &mut rng)).collect()
        };
        assert_eq!(drawn, again);
        // One site: nothing to cut between sites.
        let mut rng = SplitMix64::new(6);
        for id in 0..500 {
            let fault = draw(id, 1, 3, &mut rng);
            assert!(!matches!(
                fault.kind,
                FaultKind::PartitionIsolate
                    | FaultKind::PartitionOneWay
                    | FaultKind::PartitionPair
                    | FaultKind::SlowNetwork
            ));
        }
    }
}
