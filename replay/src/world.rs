//! One site in virtual time: its production [`SiteCore`] and demand models ([`Groups`]),
//! run as the gateway's master runs them (a round every `round_ms`), over a demand trace.
//! Its servers are played here: each registers at the start, heartbeats every round with
//! its share of its account's load, renews its lease every renew interval, accepts a
//! pointer at once and joins `reinit_ms` later (the re-initialization: a process start, a
//! machine's re-image), and stops a drain later. No network, no faults, no journal: what
//! is measured is the decisions.
//!
//! The site owns its accounts for ever (no peers: a replay is of one site), and its
//! machines, if any, are played as servers that take `reinit_ms` to join.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch, ServerId};
use leasehold_federation::wire::common::Health;
use leasehold_federation::wire::node::{PointerApplication, StopCause, StopOutcome};
use leasehold_site_gateway::config::SiteConfig;
use leasehold_site_gateway::model::Millis;
use leasehold_site_gateway::model::core::{Groups, Heartbeat, SiteCore, WorkloadEvent};
use leasehold_site_gateway::model::effects::{Command, Effect};
use leasehold_site_gateway::model::site::Recovered;

use crate::bounds::{Sla, need};
use crate::trace::Trace;

/// How a replay runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// The master's round (100 ms in the gateway).
    pub round: Duration,
    /// From a pointer accepted to the workload joined.
    pub reinit: Duration,
}

/// What the site did for one account over the trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountRun {
    /// Σ max(0, need − servers serving it) × time: a server counts once it has joined.
    pub violation_server_s: f64,
    /// Servers re-initialized into it (pointers applied).
    pub moves: u64,
    /// Σ max(0, servers serving it − need) × time: servers it held that its load did not
    /// need, idle for it.
    pub idle_server_s: f64,
}

/// What the site did over the trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// By account name, in the config's order.
    pub accounts: Vec<(String, AccountRun)>,
    /// Σ servers serving nothing (neither joined, starting nor draining) × time.
    pub idle_server_s: f64,
    pub rounds: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Idle,
    Starting {
        account: AccountId,
        epoch: Epoch,
        joins_at: Millis,
    },
    Serving {
        account: AccountId,
        epoch: Epoch,
    },
    /// Told to stop; serving its account until it stops only if it had joined (a server
    /// stopped while starting never served).
    Draining {
        account: AccountId,
        joined: bool,
        epoch: Epoch,
        stops_at: Millis,
    },
}

struct Played {
    id: ServerId,
    phase: Phase,
    renewed_at: Millis,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "the trace's account `{0}` is not in the config: add it, or replay a trace of this site"
    )]
    UnknownAccount(String),
    #[error("the config's server {server} was refused at registration: {detail}")]
    Refused { server: String, detail: String },
    #[error("the config has no server to replay")]
    NoServers,
}

/// The SLAs of the config's accounts that the trace has, in the config's order; an
/// account of the trace the config lacks is an error, one of the config the trace lacks
/// is replayed with no load.
pub fn slas(config: &SiteConfig, trace: &Trace) -> Result<Vec<Sla>, ReplayError> {
    for account in &trace.header.accounts {
        if !config
            .accounts
            .iter()
            .any(|a| a.name.as_str() == account.name)
        {
            return Err(ReplayError::UnknownAccount(account.name.clone()));
        }
    }
    Ok(config
        .accounts
        .iter()
        .map(|account| Sla {
            name: account.name.to_string(),
            min_servers: account.min_servers,
            max_servers: account.max_servers,
            target_load: account.target_load,
            priority: account.priority,
        })
        .collect())
}

/// Replays `trace` through the site of `config`, calling `progress` with the virtual
/// seconds done about every simulated hour.
pub fn replay(
    config: &SiteConfig,
    trace: &Trace,
    pace: Pace,
    mut progress: impl FnMut(u64),
) -> Result<Run, ReplayError> {
    let slas = slas(config, trace)?;
    let mut config = config.clone();
    for server in &mut config.servers {
        server.machine = None;
    }
    if config.servers.is_empty() {
        return Err(ReplayError::NoServers);
    }
    let renew_every = Millis(config.timings.renew_interval.as_millis() as u64);
    let (core, _, started) = SiteCore::new(
        config.clone(),
        "replay".to_owned(),
        &Recovered::default(),
        None,
        0,
        Millis(0),
    );
    let mut site = Site {
        core,
        groups: Groups::default(),
        servers: config
            .servers
            .iter()
            .map(|server| Played {
                id: server.id.clone(),
                phase: Phase::Idle,
                renewed_at: Millis(0),
            })
            .collect(),
        index: config
            .servers
            .iter()
            .enumerate()
            .map(|(ix, server)| (server.id.clone(), ix))
            .collect(),
        moves: BTreeMap::new(),
        pace,
        now: Millis(0),
    };
    site.groups.apply(&started);
    for ix in 0..site.servers.len() {
        let id = site.servers[ix].id.clone();
        let (_, effects) = site
            .core
            .register(&id, None, Epoch::NONE, site.now)
            .map_err(|refusal| ReplayError::Refused {
                server: id.to_string(),
                detail: refusal.detail,
            })?;
        site.perform(effects);
    }
    let round_ms = pace.round.as_millis().max(1) as u64;
    let end_ms = trace.duration_s() * 1000;
    // In server-milliseconds, whole: a day's sum stays exact.
    let mut violation = vec![0u64; slas.len()];
    let mut surplus = vec![0u64; slas.len()];
    let mut idle_ms = 0u64;
    let mut rounds = 0u64;
    let mut next_progress = 3_600_000;
    while site.now.0 < end_ms {
        site.now = Millis(site.now.0 + round_ms);
        site.advance(renew_every);
        let serving = site.serving();
        let heartbeats = site.heartbeats(trace, &serving);
        let effects = site.groups.round(&mut site.core, heartbeats, site.now);
        site.perform(effects);
        // Judged over the round that ends now, on what served during it.
        let t = site.now.0 - round_ms;
        for (ix, sla) in slas.iter().enumerate() {
            let need = need(sla, trace.load_at(&sla.name, t));
            let have = serving.get(sla.name.as_str()).copied().unwrap_or(0);
            violation[ix] += u64::from(need.saturating_sub(have)) * round_ms;
            surplus[ix] += u64::from(have.saturating_sub(need)) * round_ms;
        }
        idle_ms += site.idle() as u64 * round_ms;
        rounds += 1;
        if site.now.0 >= next_progress {
            progress(site.now.0 / 1000);
            next_progress += 3_600_000;
        }
    }
    Ok(Run {
        accounts: slas
            .iter()
            .zip(violation.into_iter().zip(surplus))
            .map(|(sla, (violation_ms, surplus_ms))| {
                let moves = site.moves.get(sla.name.as_str()).copied().unwrap_or(0);
                (
                    sla.name.clone(),
                    AccountRun {
                        violation_server_s: violation_ms as f64 / 1000.0,
                        moves,
                        idle_server_s: surplus_ms as f64 / 1000.0,
                    },
                )
            })
            .collect(),
        idle_server_s: idle_ms as f64 / 1000.0,
        rounds,
    })
}

struct Site {
    core: SiteCore,
    groups: Groups,
    servers: Vec<Played>,
    index: HashMap<ServerId, usize>,
    moves: BTreeMap<String, u64>,
    pace: Pace,
    now: Millis,
}

impl Site {
    /// What is due by now: joins, stops, renewals.
    fn advance(&mut self, renew_every: Millis) {
        for ix in 0..self.servers.len() {
            let due = match &self.servers[ix].phase {
                Phase::Starting {
                    epoch, joins_at, ..
                } if *joins_at <= self.now => Some((*epoch, WorkloadEvent::Joined)),
                Phase::Draining {
                    epoch, stops_at, ..
                } if *stops_at <= self.now => {
                    Some((*epoch, WorkloadEvent::Stopped(StopCause::Commanded)))
                }
                _ => None,
            };
            if let Some((epoch, event)) = due {
                let id = self.servers[ix].id.clone();
                self.servers[ix].phase = match (&self.servers[ix].phase, &event) {
                    (Phase::Starting { account, epoch, .. }, WorkloadEvent::Joined) => {
                        Phase::Serving {
                            account: account.clone(),
                            epoch: *epoch,
                        }
                    }
                    _ => Phase::Idle,
                };
                let mut effects = Vec::new();
                if let WorkloadEvent::Stopped(_) = event {
                    effects.extend(self.core.stop_answered(
                        &id,
                        epoch,
                        Ok(StopOutcome::Stopped { epoch }),
                        self.now,
                    ));
                }
                effects.extend(self.core.workload_reported(&id, epoch, &event, self.now));
                self.perform(effects);
            }
            let leased = match &self.servers[ix].phase {
                Phase::Idle => None,
                Phase::Starting { epoch, .. }
                | Phase::Serving { epoch, .. }
                | Phase::Draining { epoch, .. } => Some(*epoch),
            };
            if let Some(epoch) = leased
                && self.now.0 >= self.servers[ix].renewed_at.0 + renew_every.0
            {
                let id = self.servers[ix].id.clone();
                let _ = self.core.renew(&id, epoch, self.now);
                self.servers[ix].renewed_at = self.now;
            }
        }
    }

    /// Servers whose workload serves each account now (joined, or draining).
    fn serving(&self) -> HashMap<String, u32> {
        let mut count = HashMap::new();
        for played in &self.servers {
            if let Phase::Serving { account, .. }
            | Phase::Draining {
                account,
                joined: true,
                ..
            } = &played.phase
            {
                *count.entry(account.to_string()).or_default() += 1;
            }
        }
        count
    }

    fn idle(&self) -> usize {
        self.servers
            .iter()
            .filter(|played| played.phase == Phase::Idle)
            .count()
    }

    /// Every server's heartbeat: a serving one carries its share of its account's load.
    fn heartbeats(&self, trace: &Trace, serving: &HashMap<String, u32>) -> Vec<Heartbeat> {
        let t = self.now.0.saturating_sub(1);
        self.servers
            .iter()
            .filter_map(|played| {
                let (health, load) = match &played.phase {
                    Phase::Idle => (Health::Idle, None),
                    Phase::Starting { .. } | Phase::Draining { joined: false, .. } => {
                        (Health::Starting, None)
                    }
                    Phase::Serving { account, .. } | Phase::Draining { account, .. } => {
                        let name = account.to_string();
                        let share = f64::from(serving.get(&name).copied().unwrap_or(1).max(1));
                        (Health::Healthy, Some(trace.load_at(&name, t) / share))
                    }
                };
                let server = self.core.server_ix(&played.id)?;
                Some(Heartbeat {
                    server,
                    health,
                    load,
                    at: self.now,
                })
            })
            .collect()
    }

    /// The core's commands, carried out by the played servers; the rest is the shell's
    /// (journal, audit, metrics), which a replay does not keep.
    fn perform(&mut self, effects: Vec<Effect>) {
        let mut queue = effects;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for effect in queue {
                let Effect::Send(command) = effect else {
                    continue;
                };
                match command {
                    Command::Apply { server, pointer } => {
                        let Some(&ix) = self.index.get(&server) else {
                            continue;
                        };
                        *self.moves.entry(pointer.account.to_string()).or_default() += 1;
                        self.servers[ix].phase = Phase::Starting {
                            account: pointer.account.clone(),
                            epoch: pointer.epoch,
                            joins_at: Millis(self.now.0 + self.pace.reinit.as_millis() as u64),
                        };
                        self.servers[ix].renewed_at = self.now;
                        next.extend(self.core.pointer_answered(
                            &server,
                            pointer.epoch,
                            Ok(PointerApplication::Accepted {
                                epoch: pointer.epoch,
                            }),
                            self.now,
                        ));
                    }
                    Command::Stop {
                        server,
                        epoch,
                        drain_ms,
                        ..
                    } => {
                        let Some(&ix) = self.index.get(&server) else {
                            continue;
                        };
                        let (account, joined) = match &self.servers[ix].phase {
                            Phase::Serving { account, epoch: e } if *e == epoch => {
                                (account.clone(), true)
                            }
                            Phase::Starting {
                                account, epoch: e, ..
                            } if *e == epoch => (account.clone(), false),
                            _ => continue,
                        };
                        self.servers[ix].phase = Phase::Draining {
                            account,
                            joined,
                            epoch,
                            stops_at: Millis(self.now.0 + drain_ms),
                        };
                    }
                }
            }
            queue = next;
        }
    }
}
