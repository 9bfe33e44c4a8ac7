//! A deterministic simulation of whole federations (issue #12, docs/chaos.md): the
//! production decision code of every site ([`SiteCore`](leasehold_site_gateway::model::core::SiteCore)
//! and its demand models) and of every node agent ([`NodeModel`](leasehold_node::model::NodeModel)),
//! driven in one thread on a virtual clock over a simulated network, with faults injected
//! from one seed and the invariants judged from the evidence the simulated processes leave
//! (node event logs, audit records, journals) after every event. Any run replays exactly
//! from its seed; `trace_hash` shows two runs did the same thing.
//!
//! - [`world`]: the event queue, true time, the faults applied, the load.
//! - [`gateway`], [`node`]: the shells, as the actors are, around the production cores.
//! - [`net`]: delay, jitter, loss, duplication, cuts of any shape.
//! - [`faults`]: what is injected, drawn from the seed.
//! - [`checks`]: the invariants, read from the evidence as it is written.
//! - [`members`]: the operator who adds and removes sites meanwhile, if asked.

pub mod checks;
pub mod ctx;
pub mod faults;
pub mod gateway;
pub mod layout;
pub mod members;
pub mod message;
pub mod net;
pub mod node;
pub mod world;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use checks::InvariantReport;
use faults::{FaultKind, draw, tally};
pub use members::MembersOperator;
use world::{Event, World};

/// The calm after the last fault in which every account must be back at its minimum:
/// longer than a crash (5 s), an ownership TTL and a failback (2 s) together.
pub const CALM_US: u64 = 20_000_000;
/// Faults start this far apart (a new one may start while others last).
const FAULT_GAP_US: (u64, u64) = (100_000, 2_000_000);
/// No fault before the federation has settled once.
const FIRST_FAULT_US: u64 = 5_000_000;

/// A bug planted in the simulated processes to show a checker catches it (debug builds;
/// the same switches as `LEASEHOLD_TEST_PLANT` in the real processes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    RenewWithoutMajority,
    SkipEpochCheck,
    DropJournalWrite,
    /// Sites take a config that adds or removes several sites in one step.
    MembersManyAtOnce,
}

impl Plant {
    pub fn parse(text: &str) -> Result<Plant, String> {
        match text {
            "renew-without-majority" => Ok(Plant::RenewWithoutMajority),
            "skip-epoch-check" => Ok(Plant::SkipEpochCheck),
            "drop-journal-write" => Ok(Plant::DropJournalWrite),
            "members-many-at-once" => Ok(Plant::MembersManyAtOnce),
            other => Err(format!(
                "unknown plant `{other}` (renew-without-majority, skip-epoch-check, drop-journal-write, members-many-at-once)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Plant::RenewWithoutMajority => "renew-without-majority",
            Plant::SkipEpochCheck => "skip-epoch-check",
            Plant::DropJournalWrite => "drop-journal-write",
            Plant::MembersManyAtOnce => "members-many-at-once",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    /// Run until this many faults have been injected (then a calm, then the end).
    pub faults: u64,
    pub sites: usize,
    pub servers_per_site: usize,
    pub plant: Option<Plant>,
    /// An operator who adds and removes spare sites meanwhile, if any.
    pub members: Option<MembersOperator>,
    /// Where to write every trace line (events, faults, decisions), if anywhere.
    pub trace: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub seed: u64,
    pub sites: usize,
    pub servers_per_site: usize,
    /// The operator who changed the members meanwhile, and the sites its changes added
    /// and removed (whether the sites took them is in `activity`, `member-steps`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<&'static str>,
    pub members_added: u64,
    pub members_removed: u64,
    /// Of those removed, the sites lost for good first and removed without their answer.
    pub members_departed: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    pub invariants: Vec<InvariantReport>,
    /// What the federation did, counted from the evidence (audit records, node logs): so a
    /// run that passed is seen to have exercised takeovers, loans, hand-backs, refusals.
    pub activity: BTreeMap<&'static str, u64>,
    pub simulated_seconds: f64,
    pub wall_seconds: f64,
    pub events: u64,
    /// FNV-1a of every event in order: the same seed, the same hash.
    pub trace_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planted: Option<&'static str>,
    /// When a violation stopped the run: the true time and the last events before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at_us: Option<u64>,
    pub last_events: Vec<String>,
}

impl SimReport {
    pub fn passed(&self) -> bool {
        self.invariants.iter().all(|invariant| invariant.passed)
    }
}

/// What a run reports as it goes.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub faults: u64,
    pub simulated_us: u64,
    pub events: u64,
}

/// Runs one simulation: boot, faults until `options.faults` were injected (each drawn and
/// scheduled from the seed), a calm, then the liveness check. Stops at the first event
/// whose evidence breaks an invariant.
pub fn run(options: &SimOptions, mut progress: impl FnMut(Progress)) -> Result<SimReport, String> {
    let started = Instant::now();
    let mut world = World::new(
        options.seed,
        options.sites,
        options.servers_per_site,
        options.members,
    );
    let sites = world.gateways.len();
    if let Some(path) = &options.trace {
        let file = std::fs::File::create(path)
            .map_err(|error| format!("cannot create the trace {}: {error}", path.display()))?;
        world.trace_to(file);
    }
    plant(&mut world, options.plant);
    world.boot();
    let nodes = world.nodes.len();
    let mut injected: Vec<FaultKind> = Vec::new();
    let mut next_fault_us = FIRST_FAULT_US;
    let mut stopped_at = None;
    let mut calm_until = None;
    loop {
        if calm_until.is_none() && world.now_us >= next_fault_us {
            if (injected.len() as u64) < options.faults {
                let fault = draw(injected.len() as u64 + 1, sites, nodes, &mut world.rng);
                injected.push(fault.kind);
                world.schedule(0, Event::FaultStarts(fault));
                next_fault_us = world.now_us + world.rng.between(FAULT_GAP_US.0, FAULT_GAP_US.1);
                if injected.len().is_multiple_of(1000) {
                    progress(Progress {
                        faults: injected.len() as u64,
                        simulated_us: world.now_us,
                        events: world.events,
                    });
                }
            } else {
                // Every fault has had its time by then (the longest lasts 10 s), and a
                // membership change under way has been taken.
                calm_until = Some(world.now_us + 10_000_000 + CALM_US);
                world.rest_members();
            }
        }
        if calm_until.is_some_and(|until| world.now_us >= until) {
            break;
        }
        if !world.step() {
            break;
        }
        if world.checker.failed() {
            stopped_at = Some(world.now_us);
            break;
        }
    }
    if stopped_at.is_none() {
        world.checker.after_calm(&world.gateways, &world.nodes);
        world.members_after_calm();
    }
    Ok(SimReport {
        seed: options.seed,
        sites,
        servers_per_site: options.servers_per_site,
        members: options.members.map(MembersOperator::name),
        members_added: world.operator.as_ref().map_or(0, |operator| operator.added),
        members_removed: world
            .operator
            .as_ref()
            .map_or(0, |operator| operator.removed),
        members_departed: (world.operator.as_ref())
            .map_or(0, |operator| operator.departed.len() as u64),
        faults: tally(&injected),
        invariants: world.checker.report(),
        activity: activity(&world),
        simulated_seconds: world.now_us as f64 / 1e6,
        wall_seconds: started.elapsed().as_secs_f64(),
        events: world.events,
        trace_hash: world.trace.hex(),
        planted: options.plant.map(Plant::name),
        stopped_at_us: stopped_at,
        last_events: if stopped_at.is_some() {
            world.recent.iter().cloned().collect()
        } else {
            Vec::new()
        },
    })
}

fn activity(world: &World) -> BTreeMap<&'static str, u64> {
    use leasehold_site_gateway::model::effects::AuditKind;
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for gateway in world.gateways.iter().skip(world.founders()) {
        // Accounts failed over to a site added while the federation ran.
        let taken = gateway.audited.get(&AuditKind::Takeover).copied();
        *counts.entry("takeovers-by-added-sites").or_insert(0) += taken.unwrap_or(0);
    }
    for gateway in &world.gateways {
        for (kind, count) in &gateway.audited {
            let name = match kind {
                AuditKind::Takeover => "takeovers",
                AuditKind::Lend => "servers-lent",
                AuditKind::HandbackStarted => "handbacks-started",
                AuditKind::Handback => "handbacks",
                AuditKind::Handover => "handovers",
                AuditKind::OwnershipLost => "ownerships-lost",
                AuditKind::Recovered => "leases-recovered",
                AuditKind::Config => "config-edits-applied",
                AuditKind::LoanRecall => "loan-recalls",
                AuditKind::Borrow => "servers-borrowed",
                AuditKind::LoanRefused => "loans-refused",
                AuditKind::Shortfall => "shortfalls",
                AuditKind::LoanReturn => "loans-returned",
                AuditKind::Members => "member-steps",
                _ => continue,
            };
            *counts.entry(name).or_insert(0) += count;
        }
    }
    for node in &world.nodes {
        *counts.entry("workloads-started").or_insert(0) += node.started;
        *counts.entry("commands-refused").or_insert(0) += node.refused;
    }
    counts
}

/// Plants `plant` in every process it applies to (debug builds only: the models' switches
/// are compiled out of release builds, and so the plant does nothing there).
fn plant(world: &mut World, plant: Option<Plant>) {
    let Some(plant) = plant else { return };
    for gateway in &mut world.gateways {
        gateway.plant(
            plant == Plant::DropJournalWrite,
            plant == Plant::RenewWithoutMajority,
            plant == Plant::MembersManyAtOnce,
        );
    }
    if plant == Plant::SkipEpochCheck {
        for node in &mut world.nodes {
            node.plant_skip_epoch_check();
        }
    }
}
