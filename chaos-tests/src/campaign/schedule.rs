//! The fault schedule of a campaign, a pure function of (scenario, seed, duration, number of
//! sites): the same inputs give the same faults, so a failing run replays from its command.
//!
//! Faults come in episodes. An episode is one fault, or in the `compound` scenario two
//! that overlap ([`COMPOUNDS`]: a partition during a gateway restart, a node kill while
//! another site's gateway is down, ...). Each episode starts only after the previous one
//! has ended and a recovery gap ([`RECOVERY_GAP_MS`]) has passed, so the majority the
//! ownership leases need is always there once an episode is over, and "back at the SLA
//! minimum after each episode" judges that episode alone (docs/decisions.md, D-23, D-30).

use std::fmt;

use super::layout::{RECOVERY_GAP_MS, SERVERS_PER_SITE, server_name, site_name};
use super::prng::SplitMix64;

/// One kind of fault; its name is what reports print and `--scenario` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9 of a gateway; restarted on its journal at the fault's end.
    GatewayKill,
    /// SIGSTOP of a gateway for longer than the ownership TTL; SIGCONT at the end.
    GatewayPause,
    /// kill -9 of a node agent (its workload dies with it); restarted at the end.
    NodeKill,
    /// kill -9 of a workload process, found in its node's event log.
    WorkloadKill,
    /// One site cut off from every other, both ways.
    PartitionIsolate,
    /// A minority of the sites cut off from the majority (with three sites: one site).
    PartitionSplit,
    /// What one site sends to another is lost; the other way works.
    PartitionOneWay,
    /// Two sites cut off from each other, both ways; each still reaches the rest.
    PartitionPair,
    /// High RTT, jitter and loss on every link between sites.
    SlowNetwork,
    /// SIGTERM of a gateway and a restart on its journal.
    Restart,
    /// An invalid edit of a site's config (must be refused, the site runs on), then a
    /// valid one (raising an account's minimum and maximum, must take effect), undone at
    /// the end.
    ConfigEdit,
    /// A node is handed an old grant again: its gateway stops, a stand-in on the
    /// gateway's address replays the node's newest epoch for another account, and the
    /// real gateway restarts on its journal. A correct node refuses it (S-2).
    StaleGrant,
    /// A site that homes no account (the `members` scenario's spare, after the founders)
    /// is added to the members: every founder's config names it, and it starts. At the
    /// end it is removed: their configs leave it out, and once every founder runs the set
    /// without it, it stops (docs/ownership.md, "Members"). Only in `members`.
    MemberChange,
    /// kill -9 of the acting gateway of the site of standby gateways (the first, in the
    /// `gateway-takeover` scenario: docs/ha.md); the other takes over, and the killed one
    /// is started again as a standby at the fault's end. Only in `gateway-takeover`.
    GatewayTakeover,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::GatewayKill,
        FaultKind::GatewayPause,
        FaultKind::NodeKill,
        FaultKind::WorkloadKill,
        FaultKind::PartitionIsolate,
        FaultKind::PartitionSplit,
        FaultKind::PartitionOneWay,
        FaultKind::PartitionPair,
        FaultKind::SlowNetwork,
        FaultKind::Restart,
        FaultKind::ConfigEdit,
        FaultKind::StaleGrant,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::GatewayKill => "gateway-kill",
            FaultKind::GatewayPause => "gateway-pause",
            FaultKind::NodeKill => "node-kill",
            FaultKind::WorkloadKill => "workload-kill",
            FaultKind::PartitionIsolate => "partition-isolate",
            FaultKind::PartitionSplit => "partition-split",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::PartitionPair => "partition-pair",
            FaultKind::SlowNetwork => "slow-network",
            FaultKind::Restart => "restart",
            FaultKind::ConfigEdit => "config-edit",
            FaultKind::StaleGrant => "stale-grant",
            FaultKind::MemberChange => "member-change",
            FaultKind::GatewayTakeover => "gateway-takeover",
        }
    }

    /// How long the fault lasts, in ms (low, high). A pause outlasts the ownership TTL
    /// (1500 ms) so that another site takes over; a partition outlasts it too.
    fn duration_ms(self) -> (u64, u64) {
        match self {
            FaultKind::GatewayKill => (3000, 6000),
            FaultKind::GatewayPause => (2500, 4500),
            FaultKind::NodeKill => (1000, 4000),
            // The kill is instantaneous; the window is the time to notice and restart it.
            FaultKind::WorkloadKill => (500, 500),
            FaultKind::PartitionIsolate
            | FaultKind::PartitionSplit
            | FaultKind::PartitionOneWay
            | FaultKind::PartitionPair => (3000, 8000),
            FaultKind::SlowNetwork => (3000, 8000),
            FaultKind::Restart => (0, 1000),
            FaultKind::ConfigEdit => (3000, 5000),
            FaultKind::StaleGrant => (2000, 3000),
            // Time for a founder killed meanwhile to come back and every site to step.
            FaultKind::MemberChange => (14000, 18000),
            // The killed gateway stays down a while after its successor acts.
            FaultKind::GatewayTakeover => (3000, 6000),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a fault hits, by site and server index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Site(usize),
    Server {
        site: usize,
        server: usize,
    },
    /// From `from` to `to`: a one-way cut loses what `from` sends.
    Link {
        from: usize,
        to: usize,
    },
    /// Between `a` and `b`, both ways.
    Pair {
        a: usize,
        b: usize,
    },
    /// These sites cut off from the rest.
    Minority(Vec<usize>),
    Everything,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Site(site) => write!(f, "{}", site_name(*site)),
            Target::Server { site, server } => {
                write!(f, "{}/{}", site_name(*site), server_name(*site, *server))
            }
            Target::Link { from, to } => write!(f, "{}->{}", site_name(*from), site_name(*to)),
            Target::Pair { a, b } => write!(f, "{}<->{}", site_name(*a), site_name(*b)),
            Target::Minority(sites) => {
                let names: Vec<String> = sites.iter().map(|site| site_name(*site)).collect();
                write!(f, "{}|rest", names.join(","))
            }
            Target::Everything => f.write_str("all-links"),
        }
    }
}

/// One scheduled fault: it starts at `start_ms` and is healed at `end_ms`, both from the
/// campaign's start (when the load starts). Faults of one `episode` (numbered from 0)
/// overlap; faults of different episodes never do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub target: Target,
    pub start_ms: u64,
    pub end_ms: u64,
    pub episode: usize,
}

/// A `--scenario`: a name and the kinds of fault it draws from; a compound scenario draws
/// pairs from [`COMPOUNDS`] instead, and `members` draws [`member_episode`]s on a
/// federation with one spare site more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub name: String,
    pub kinds: Vec<FaultKind>,
    pub compound: bool,
    /// The federation has a spare site after the founders, which faults add to the
    /// members and remove again.
    pub members: bool,
    /// The first site runs two gateways on etcd (docs/ha.md), with the timings that
    /// allows ([`super::layout::STANDBY_TIMINGS`]).
    pub standbys: bool,
}

/// Where the second fault of a pair hits, relative to the first one's site (a link's
/// sending site).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    SameSite,
    OtherSite,
    /// The second fault's target is not a site (a slow network hits every link).
    Anywhere,
}

/// The pairs of the `compound` scenario: a first fault, a second that starts while the
/// first holds, and where the second hits. Every pair keeps a majority of sites able to
/// reach each other (never two gateways down, never two network faults at once, whose
/// healing would undo each other), so that each episode must end with every account back
/// at its minimum.
pub const COMPOUNDS: [(FaultKind, FaultKind, Relation); 6] = [
    // A partition during a gateway restart: the site restarts from its journal while cut
    // off, and must not own what the majority took over.
    (
        FaultKind::PartitionIsolate,
        FaultKind::Restart,
        Relation::SameSite,
    ),
    // A restart that outlasts the ownership TTL while what the site sends is lost.
    (
        FaultKind::PartitionOneWay,
        FaultKind::GatewayKill,
        Relation::SameSite,
    ),
    // A takeover while a node of the taking site dies.
    (
        FaultKind::GatewayKill,
        FaultKind::NodeKill,
        Relation::OtherSite,
    ),
    // A takeover over a slow, lossy network.
    (
        FaultKind::GatewayKill,
        FaultKind::SlowNetwork,
        Relation::Anywhere,
    ),
    // A workload crash on the majority side of a partition.
    (
        FaultKind::PartitionIsolate,
        FaultKind::WorkloadKill,
        Relation::OtherSite,
    ),
    // A live config edit while another site is paused past its TTL.
    (
        FaultKind::GatewayPause,
        FaultKind::ConfigEdit,
        Relation::OtherSite,
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("unknown scenario `{0}`; known: {known}", known = Scenario::names().join(", "))]
    UnknownScenario(String),
    #[error("a campaign needs at least 3 sites (a majority that survives one fault), and at most {max}; got {0}", max = super::layout::MAX_SITES)]
    Sites(usize),
    #[error(
        "{duration_s} s is too short for one episode of `{scenario}` (a fault, or a compound pair) and its recovery; give at least {needed_s} s"
    )]
    TooShort {
        scenario: String,
        duration_s: u64,
        needed_s: u64,
    },
}

impl Scenario {
    /// The names `--scenario` accepts: the groups of the issue, `all`, `compound`, and
    /// every kind.
    pub fn names() -> Vec<&'static str> {
        let mut names = vec![
            "all",
            "compound",
            "gateway-kill",
            "gateway-pause",
            "node-kill",
            "workload-kill",
            "partition",
            "slow-network",
            "restart",
            "config-edit",
            "members",
            "gateway-takeover",
        ];
        for kind in FaultKind::ALL {
            if !names.contains(&kind.name()) {
                names.push(kind.name());
            }
        }
        names
    }

    pub fn parse(name: &str) -> Result<Scenario, ScheduleError> {
        let kinds = match name {
            "all" => FaultKind::ALL.to_vec(),
            "compound" => {
                let mut kinds: Vec<FaultKind> = COMPOUNDS
                    .iter()
                    .flat_map(|(first, second, _)| [*first, *second])
                    .collect();
                kinds.sort();
                kinds.dedup();
                return Ok(Scenario {
                    name: name.to_owned(),
                    kinds,
                    compound: true,
                    members: false,
                    standbys: false,
                });
            }
            "members" => {
                return Ok(Scenario {
                    name: name.to_owned(),
                    kinds: vec![FaultKind::MemberChange, FaultKind::GatewayKill],
                    compound: false,
                    members: true,
                    standbys: false,
                });
            }
            "gateway-takeover" => {
                return Ok(Scenario {
                    name: name.to_owned(),
                    kinds: vec![FaultKind::GatewayTakeover],
                    compound: false,
                    members: false,
                    standbys: true,
                });
            }
            "partition" => vec![
                FaultKind::PartitionIsolate,
                FaultKind::PartitionSplit,
                FaultKind::PartitionOneWay,
                FaultKind::PartitionPair,
            ],
            other => match FaultKind::ALL.iter().find(|kind| kind.name() == other) {
                Some(kind) => vec![*kind],
                None => return Err(ScheduleError::UnknownScenario(other.to_owned())),
            },
        };
        Ok(Scenario {
            name: name.to_owned(),
            kinds,
            compound: false,
            members: false,
            standbys: false,
        })
    }
}

/// When the first fault may start: the load has run a while on a settled federation.
pub const FIRST_FAULT_MS: u64 = 3000;

/// The faults of `scenario` for a campaign of `duration_ms` on `sites` sites, drawn from
/// `seed`. Every fault ends, and its recovery gap with it, before `duration_ms`.
pub fn schedule(
    scenario: &Scenario,
    seed: u64,
    duration_ms: u64,
    sites: usize,
) -> Result<Vec<Fault>, ScheduleError> {
    if !(3..=super::layout::MAX_SITES).contains(&sites) {
        return Err(ScheduleError::Sites(sites));
    }
    let mut rng = SplitMix64::new(seed);
    let mut faults = Vec::new();
    let mut at = FIRST_FAULT_MS;
    loop {
        let episode = if scenario.members {
            member_episode(at, sites, &mut rng)
        } else if scenario.compound {
            draw_pair(at, sites, &mut rng)
        } else {
            vec![draw_one(scenario, at, sites, &mut rng)]
        };
        let end = episode.iter().map(|fault| fault.end_ms).max().unwrap_or(at);
        if end + RECOVERY_GAP_MS > duration_ms {
            break;
        }
        let number = faults.last().map_or(0, |last: &Fault| last.episode + 1);
        faults.extend(episode.into_iter().map(|fault| Fault {
            episode: number,
            ..fault
        }));
        // A little jitter between episodes, so that faults do not fall in step with the
        // gateways' periodic work.
        at = end + RECOVERY_GAP_MS + rng.below(1000);
    }
    if faults.is_empty() {
        let longest = if scenario.members {
            FaultKind::MemberChange.duration_ms().1
        } else if scenario.compound {
            COMPOUNDS
                .iter()
                .map(|(first, second, _)| first.duration_ms().1 + second.duration_ms().1)
                .max()
                .unwrap_or(0)
        } else {
            scenario
                .kinds
                .iter()
                .map(|kind| kind.duration_ms().1)
                .max()
                .unwrap_or(0)
        };
        return Err(ScheduleError::TooShort {
            scenario: scenario.name.clone(),
            duration_s: duration_ms / 1000,
            needed_s: (FIRST_FAULT_MS + longest + RECOVERY_GAP_MS).div_ceil(1000),
        });
    }
    Ok(faults)
}

/// One fault of `scenario`'s kinds, starting at `at`.
fn draw_one(scenario: &Scenario, at: u64, sites: usize, rng: &mut SplitMix64) -> Fault {
    let kind = *rng.pick(&scenario.kinds);
    let (low, high) = kind.duration_ms();
    let length = rng.between(low, high);
    let site = rng.below(sites as u64) as usize;
    let target = target_at(kind, site, sites, rng);
    Fault {
        kind,
        target,
        start_ms: at,
        end_ms: at + length,
        episode: 0,
    }
}

/// An episode of the `members` scenario, starting at `at`: the spare (site `sites`, after
/// the founders) added and removed again, and in two episodes of three a founder's
/// gateway killed while it is being added: the founders wait for the killed one, which
/// comes back on its journal, and its account fails over meanwhile, perhaps to the spare.
/// The kill ends at least 5 s before the removal, which needs every founder's answer.
pub fn member_episode(at: u64, sites: usize, rng: &mut SplitMix64) -> Vec<Fault> {
    let (low, high) = FaultKind::MemberChange.duration_ms();
    let length = rng.between(low, high);
    let mut episode = vec![Fault {
        kind: FaultKind::MemberChange,
        target: Target::Site(sites),
        start_ms: at,
        end_ms: at + length,
        episode: 0,
    }];
    if rng.below(3) > 0 {
        let offset = rng.between(500, 3000);
        let (low, high) = FaultKind::GatewayKill.duration_ms();
        let kill = rng.between(low, high).min(length - offset - 5000);
        episode.push(Fault {
            kind: FaultKind::GatewayKill,
            target: Target::Site(rng.below(sites as u64) as usize),
            start_ms: at + offset,
            end_ms: at + offset + kill,
            episode: 0,
        });
    }
    episode
}

/// A pair of [`COMPOUNDS`] starting at `at`: the second fault starts within the first
/// half of the first one's span (at least 500 ms in, so that the first is in force).
fn draw_pair(at: u64, sites: usize, rng: &mut SplitMix64) -> Vec<Fault> {
    let (first_kind, second_kind, relation) = *rng.pick(&COMPOUNDS);
    let (low, high) = first_kind.duration_ms();
    let length = rng.between(low, high);
    let site = rng.below(sites as u64) as usize;
    let first_target = target_at(first_kind, site, sites, rng);
    let second_site = match relation {
        Relation::SameSite | Relation::Anywhere => site,
        Relation::OtherSite => (site + 1 + rng.below(sites as u64 - 1) as usize) % sites,
    };
    let second_target = target_at(second_kind, second_site, sites, rng);
    let offset = rng.between(500, (length / 2).max(500));
    let (low, high) = second_kind.duration_ms();
    let second_length = rng.between(low, high);
    vec![
        Fault {
            kind: first_kind,
            target: first_target,
            start_ms: at,
            end_ms: at + length,
            episode: 0,
        },
        Fault {
            kind: second_kind,
            target: second_target,
            start_ms: at + offset,
            end_ms: at + offset + second_length,
            episode: 0,
        },
    ]
}

/// The target of a fault of `kind` at `site` (a link's or a pair's first site, a
/// minority's first).
fn target_at(kind: FaultKind, site: usize, sites: usize, rng: &mut SplitMix64) -> Target {
    let other = (site + 1 + rng.below(sites as u64 - 1) as usize) % sites;
    let server = rng.below(SERVERS_PER_SITE as u64) as usize;
    match kind {
        FaultKind::GatewayKill
        | FaultKind::GatewayPause
        | FaultKind::PartitionIsolate
        | FaultKind::Restart
        | FaultKind::ConfigEdit => Target::Site(site),
        FaultKind::NodeKill | FaultKind::WorkloadKill | FaultKind::StaleGrant => {
            Target::Server { site, server }
        }
        FaultKind::PartitionOneWay => Target::Link {
            from: site,
            to: other,
        },
        FaultKind::PartitionPair => Target::Pair { a: site, b: other },
        FaultKind::PartitionSplit => {
            // A minority: at most (sites - 1) / 2 sites, in a row from `site`.
            let size = ((sites - 1) / 2).max(1);
            Target::Minority((0..size).map(|step| (site + step) % sites).collect())
        }
        FaultKind::SlowNetwork => Target::Everything,
        // The spare, after the founders.
        FaultKind::MemberChange => Target::Site(sites),
        // The site of standbys is the first.
        FaultKind::GatewayTakeover => Target::Site(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Scenario {
        Scenario::parse("all").unwrap()
    }

    #[test]
    fn a_members_episode_adds_the_spare_and_any_kill_hits_a_founder_and_ends_before_the_removal() {
        let members = Scenario::parse("members").unwrap();
        let mut kills = 0;
        for seed in 0..200 {
            let faults = schedule(&members, seed, 300_000, 3).unwrap();
            let changes: Vec<&Fault> = faults
                .iter()
                .filter(|fault| fault.kind == FaultKind::MemberChange)
                .collect();
            assert!(changes.len() >= 3, "{faults:?}");
            for fault in &faults {
                let change = changes
                    .iter()
                    .find(|change| change.episode == fault.episode)
                    .expect("every episode changes the members");
                match fault.kind {
                    FaultKind::MemberChange => assert_eq!(fault.target, Target::Site(3)),
                    FaultKind::GatewayKill => {
                        kills += 1;
                        assert!(matches!(fault.target, Target::Site(site) if site < 3));
                        assert!(fault.start_ms > change.start_ms);
                        assert!(fault.end_ms + 5000 <= change.end_ms, "{fault:?} {change:?}");
                    }
                    other => panic!("{other} in a members campaign"),
                }
            }
        }
        assert!(kills > 100, "{kills}");
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let first = schedule(&all(), 1, 300_000, 3).unwrap();
        assert_eq!(first, schedule(&all(), 1, 300_000, 3).unwrap());
        assert_ne!(first, schedule(&all(), 2, 300_000, 3).unwrap());
        assert!(first.len() >= 10, "{first:?}");
    }

    #[test]
    fn faults_never_overlap_and_each_leaves_its_recovery_gap_before_the_end() {
        for seed in 0..200 {
            for sites in [3, 4, 5] {
                let faults = schedule(&all(), seed, 600_000, sites).unwrap();
                for pair in faults.windows(2) {
                    assert!(pair[1].start_ms >= pair[0].end_ms + RECOVERY_GAP_MS);
                }
                for fault in &faults {
                    assert!(fault.start_ms <= fault.end_ms);
                    assert!(fault.end_ms + RECOVERY_GAP_MS <= 600_000);
                    if let Target::Minority(cut) = &fault.target {
                        assert!(cut.len() * 2 < sites, "a minority: {fault:?}");
                    }
                    if let Target::Link { from: a, to: b } | Target::Pair { a, b } = fault.target {
                        assert_ne!(a, b);
                    }
                }
            }
        }
    }

    #[test]
    fn a_group_scenario_draws_only_its_kinds_and_all_draws_every_kind() {
        let partition = Scenario::parse("partition").unwrap();
        let faults = schedule(&partition, 5, 600_000, 3).unwrap();
        assert!(
            faults
                .iter()
                .all(|fault| partition.kinds.contains(&fault.kind))
        );
        let mut seen: Vec<FaultKind> = (0..20)
            .flat_map(|seed| schedule(&all(), seed, 600_000, 3).unwrap())
            .map(|fault| fault.kind)
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), FaultKind::ALL.len());
    }

    /// Each kind gets the kind of target the runner applies it to (a symmetric cut once
    /// drew a one-way link's target, which the runner refused).
    #[test]
    fn each_kind_draws_the_target_it_acts_on() {
        for seed in 0..50 {
            for fault in schedule(&all(), seed, 600_000, 4).unwrap() {
                let fits = match fault.kind {
                    FaultKind::GatewayKill
                    | FaultKind::GatewayPause
                    | FaultKind::PartitionIsolate
                    | FaultKind::Restart
                    | FaultKind::ConfigEdit => matches!(fault.target, Target::Site(_)),
                    FaultKind::NodeKill | FaultKind::WorkloadKill | FaultKind::StaleGrant => {
                        matches!(fault.target, Target::Server { .. })
                    }
                    FaultKind::PartitionOneWay => matches!(fault.target, Target::Link { .. }),
                    FaultKind::PartitionPair => matches!(fault.target, Target::Pair { .. }),
                    FaultKind::PartitionSplit => matches!(fault.target, Target::Minority(_)),
                    FaultKind::SlowNetwork => fault.target == Target::Everything,
                    // Not drawn by `all`: their scenarios' own tests cover them.
                    FaultKind::MemberChange | FaultKind::GatewayTakeover => false,
                };
                assert!(fits, "{fault:?}");
            }
        }
    }

    fn compound() -> Scenario {
        Scenario::parse("compound").unwrap()
    }

    /// Every fault of `gateway-takeover` kills the acting gateway of the first site, one
    /// at a time, with the recovery gap between.
    #[test]
    fn gateway_takeover_hits_the_site_of_standbys_only() {
        let scenario = Scenario::parse("gateway-takeover").unwrap();
        assert!(scenario.standbys && !scenario.members && !scenario.compound);
        let faults = schedule(&scenario, 7, 120_000, 3).unwrap();
        assert!(faults.len() >= 3, "{faults:?}");
        for pair in faults.windows(2) {
            assert!(
                pair[1].start_ms >= pair[0].end_ms + RECOVERY_GAP_MS,
                "{pair:?}"
            );
        }
        assert!(faults.iter().all(
            |fault| fault.kind == FaultKind::GatewayTakeover && fault.target == Target::Site(0)
        ));
    }

    fn is_network(kind: FaultKind) -> bool {
        matches!(
            kind,
            FaultKind::PartitionIsolate
                | FaultKind::PartitionSplit
                | FaultKind::PartitionOneWay
                | FaultKind::PartitionPair
                | FaultKind::SlowNetwork
        )
    }

    fn gateway_site(fault: &Fault) -> Option<usize> {
        match (fault.kind, &fault.target) {
            (
                FaultKind::GatewayKill | FaultKind::GatewayPause | FaultKind::Restart,
                Target::Site(site),
            ) => Some(*site),
            _ => None,
        }
    }

    /// Each compound episode is a pair of [`COMPOUNDS`] whose second fault starts while the
    /// first holds; episodes never overlap and leave their gap; no episode holds two
    /// network faults (healing one would heal the other) or two gateways of different
    /// sites down (no majority).
    #[test]
    fn a_compound_episode_is_an_overlapping_pair_that_keeps_a_majority() {
        let mut pairs_seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            for sites in [3, 4, 5] {
                let faults = schedule(&compound(), seed, 600_000, sites).unwrap();
                assert_eq!(faults.len() % 2, 0, "{faults:?}");
                for (number, pair) in faults.chunks(2).enumerate() {
                    let (first, second) = (&pair[0], &pair[1]);
                    assert_eq!((first.episode, second.episode), (number, number));
                    assert!(
                        second.start_ms > first.start_ms && second.start_ms < first.end_ms,
                        "the second starts while the first holds: {pair:?}"
                    );
                    let index = COMPOUNDS
                        .iter()
                        .position(|(a, b, _)| (*a, *b) == (first.kind, second.kind))
                        .expect("a listed pair");
                    pairs_seen.insert(index);
                    assert!(!(is_network(first.kind) && is_network(second.kind)));
                    if let (Some(a), Some(b)) = (gateway_site(first), gateway_site(second)) {
                        assert_eq!(a, b, "two gateways down: {pair:?}");
                    }
                    let first_site = match first.target {
                        Target::Site(site) | Target::Link { from: site, .. } => site,
                        Target::Server { site, .. } => site,
                        _ => unreachable!("{first:?}"),
                    };
                    match (COMPOUNDS[index].2, &second.target) {
                        (Relation::SameSite, Target::Site(site)) => assert_eq!(*site, first_site),
                        (Relation::OtherSite, Target::Site(site) | Target::Server { site, .. }) => {
                            assert_ne!(*site, first_site)
                        }
                        (Relation::Anywhere, Target::Everything) => {}
                        other => panic!("{other:?} in {pair:?}"),
                    }
                }
                for pair in faults.chunks(2).collect::<Vec<_>>().windows(2) {
                    let end = pair[0].iter().map(|fault| fault.end_ms).max().unwrap();
                    assert!(pair[1][0].start_ms >= end + RECOVERY_GAP_MS);
                }
                let last_end = faults.iter().map(|fault| fault.end_ms).max().unwrap();
                assert!(last_end + RECOVERY_GAP_MS <= 600_000);
            }
        }
        assert_eq!(pairs_seen.len(), COMPOUNDS.len(), "every pair is drawn");
    }

    #[test]
    fn single_fault_scenarios_number_one_episode_per_fault() {
        let faults = schedule(&all(), 3, 600_000, 3).unwrap();
        for (number, fault) in faults.iter().enumerate() {
            assert_eq!(fault.episode, number);
        }
    }

    #[test]
    fn bad_scenarios_sites_and_durations_are_refused_by_name() {
        assert_eq!(
            Scenario::parse("meteor"),
            Err(ScheduleError::UnknownScenario("meteor".into()))
        );
        assert_eq!(
            schedule(&all(), 1, 300_000, 2),
            Err(ScheduleError::Sites(2))
        );
        assert!(matches!(
            schedule(&all(), 1, 5_000, 3),
            Err(ScheduleError::TooShort { .. })
        ));
    }
}
