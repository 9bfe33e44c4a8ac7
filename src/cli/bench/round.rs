//! `leasehold bench round`: the whole round of one site as the gateway's master runs it,
//! where `bench decide` times the arbiter alone. A round here is what `SiteMaster` does
//! every 100 ms: the heartbeats since the last round into the site core, each account's
//! load to its demand model (the `Group` actors' pure part), and the core's second half
//! (failure detection, lease expiry, the arbiter on this round's demands, the effects).
//! The round's journal batch is then made durable in the gateway's own redb journal, timed
//! apart (the gateway does it on its journal thread). Lease renewals, which the master
//! answers one message at a time between rounds, are timed apart too.
//!
//! The site is synthetic and brought to a steady state first: every server registered and
//! heartbeating at the default interval, its accounts served, their loads drifting so that
//! demands change and servers move. The nodes' answers (pointer accepted, workload joined,
//! stopped) come back between rounds, untimed. Progress goes to stderr, one JSON line to
//! stdout.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use leasehold_federation::wire::common::Health;
use leasehold_federation::wire::node::{PointerApplication, StopOutcome};
use leasehold_site_gateway::config::{
    Account, Lending, Server, SiteConfig, SiteSection, Timings, Workload,
};
use leasehold_site_gateway::journal::Journal;
use leasehold_site_gateway::model::Millis;
use leasehold_site_gateway::model::core::{Groups, Heartbeat, SiteCore, WorkloadEvent};
use leasehold_site_gateway::model::effects::{Command, Effect, JournalOp};
use leasehold_site_gateway::model::ownership::SiteOwnership;
use leasehold_site_gateway::model::site::{Recovered, ServerIx};

use super::SplitMix64;

/// The master's round interval.
const ROUND: Duration = Duration::from_millis(100);
/// Per-server load the synthetic accounts aim for.
const TARGET_LOAD: f64 = 5.0;
/// Share of accounts whose load moves in a round.
const LOAD_CHURN: f64 = 0.02;

#[derive(Debug, clap::Args)]
pub struct RoundArgs {
    /// Servers in the synthetic site.
    #[arg(long, default_value_t = 100_000)]
    servers: u32,
    /// Accounts in the synthetic site.
    #[arg(long, default_value_t = 10_000)]
    accounts: u32,
    /// Rounds to time, after the warm-up.
    #[arg(long, default_value_t = 100)]
    rounds: u32,
    /// Rounds to run first, untimed, until the site is steady.
    #[arg(long, default_value_t = 100)]
    warmup: u32,
    /// Seed of the accounts' loads and their drift: same seed, same rounds.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How often each node pulses, in ms. By default what a site of this size gets when
    /// its config sets no `heartbeat_interval_ms` (docs/node.md): 500 ms from 4,000
    /// servers on.
    #[arg(long)]
    heartbeat_ms: Option<u64>,
}

/// What the synthetic nodes owe the core: the answers to its commands.
enum Answer {
    Pointer { server: ServerId, epoch: Epoch },
    Joined { server: ServerId, epoch: Epoch },
    Stopped { server: ServerId, epoch: Epoch },
}

struct Bench {
    core: SiteCore,
    groups: Groups,
    journal: Journal,
    servers: Vec<ServerId>,
    /// Each server's place in the core, as the gateway's pulse board keeps it.
    places: Vec<Option<ServerIx>>,
    /// Each server's account and epoch while it serves one.
    serving: HashMap<ServerId, (AccountId, Epoch)>,
    /// Each account's total load; its servers report an equal share. In name order, so
    /// that the drift draws its random numbers in the same order for the same seed.
    load: BTreeMap<AccountId, f64>,
    answers: VecDeque<Answer>,
    now: Millis,
    /// Journal ops and audit entries of the batch not yet made durable.
    ops: Vec<JournalOp>,
    audits: Vec<leasehold_site_gateway::model::effects::AuditEntry>,
}

pub fn run(args: &RoundArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.servers > 0, "--servers must be at least 1");
    anyhow::ensure!(
        args.accounts > 0 && args.accounts <= args.servers,
        "--accounts must be between 1 and --servers"
    );
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let dir = tempfile::tempdir().context("cannot create a temporary dir for the journal")?;
    eprintln!(
        "bench round: {} servers, {} accounts, {} rounds after {} to warm up, seed {}",
        args.servers, args.accounts, args.rounds, args.warmup, args.seed
    );
    let started = Instant::now();
    let mut random = SplitMix64(args.seed);
    let mut bench = Bench::new(args, &mut random, dir.path().to_path_buf())?;
    eprintln!(
        "  built and registered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for round in 0..args.warmup {
        bench.drift(&mut random);
        bench.round()?;
        bench.settle()?;
        if round % 20 == 19 {
            let demand: u32 = bench.core.model().accounts().iter().map(|a| a.demand).sum();
            eprintln!(
                "  warm-up round {}/{}: {} servers serving, the accounts' demands sum to {demand}",
                round + 1,
                args.warmup,
                bench.serving.len()
            );
        }
    }
    let rss_mib = rss_mib();
    // Microseconds, up to a minute, three significant digits.
    let histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    let (mut rounds, mut journal) = (histogram()?, histogram()?);
    let mut parts = [histogram()?, histogram()?, histogram()?];
    let (mut effects, mut heartbeats, mut renewals, mut renew_time) = (0u64, 0u64, 0u64, 0.0);
    for round in 0..args.rounds {
        bench.drift(&mut random);
        let (took, part_times, made, beats) = bench.round()?;
        rounds.record(took.as_micros().max(1) as u64)?;
        for (histogram, time) in parts.iter_mut().zip(part_times) {
            histogram.record(time.as_micros().max(1) as u64)?;
        }
        effects += made as u64;
        heartbeats += beats as u64;
        let durable = bench.persist()?;
        journal.record(durable.as_micros().max(1) as u64)?;
        let (renewed, took) = bench.renewals();
        renewals += renewed as u64;
        renew_time += took.as_secs_f64();
        bench.settle()?;
        if round % 20 == 19 {
            eprintln!(
                "  round {}/{}: p50 {:.2} ms so far",
                round + 1,
                args.rounds,
                rounds.value_at_quantile(0.5) as f64 / 1000.0
            );
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| (h.value_at_quantile(q) as f64 / 10.0).round() / 100.0;
    let line = serde_json::json!({
        "bench": "round",
        "servers": args.servers,
        "accounts": args.accounts,
        "rounds": args.rounds,
        "seed": args.seed,
        "round_ms_p50": ms(&rounds, 0.5),
        "round_ms_p99": ms(&rounds, 0.99),
        "round_ms_max": ms(&rounds, 1.0),
        "begin_ms_p50": ms(&parts[0], 0.5),
        "demand_ms_p50": ms(&parts[1], 0.5),
        "finish_ms_p50": ms(&parts[2], 0.5),
        "heartbeat_ms": bench.core.model().timings().node_heartbeat_interval.as_millis() as u64,
        "renew_ms": bench.core.model().timings().node_renew_interval.as_millis() as u64,
        "heartbeats_per_round": heartbeats / u64::from(args.rounds),
        "effects_per_round_mean": (effects as f64 / f64::from(args.rounds) * 10.0).round() / 10.0,
        "journal_ms_p50": ms(&journal, 0.5),
        "journal_ms_p99": ms(&journal, 0.99),
        "renewals_per_round": renewals / u64::from(args.rounds),
        "renew_us_mean": if renewals == 0 { 0.0 } else { (renew_time / renewals as f64 * 1e7).round() / 10.0 },
        "serving": bench.serving.len(),
        "rss_mib": rss_mib,
    });
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

impl Bench {
    fn new(args: &RoundArgs, random: &mut SplitMix64, dir: PathBuf) -> anyhow::Result<Bench> {
        let config = synthetic_site(args.servers, args.accounts, args.heartbeat_ms)?;
        let site = config.site.name.clone();
        let ownership = SiteOwnership::new(
            site.clone(),
            Vec::new(),
            config.accounts.iter().map(|a| a.name.clone()).collect(),
            config.timings.ownership(),
            config.timings.failback_after,
            Millis(0),
        );
        let servers: Vec<ServerId> = config.servers.iter().map(|s| s.id.clone()).collect();
        // Each account's load asks for about 60 % of its share of the servers: some stay
        // free, and demand moves both ways.
        let per_account = f64::from(args.servers) * 0.6 / f64::from(args.accounts);
        let load = config
            .accounts
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    per_account * TARGET_LOAD * uniform(random, 0.5, 1.2),
                )
            })
            .collect();
        let (journal, _) = Journal::open(&dir, &site).context("cannot open the bench journal")?;
        let (core, effects, started) = SiteCore::new(
            config,
            "bench".to_owned(),
            &Recovered::default(),
            Some(ownership),
            0,
            Millis(0),
        );
        let mut bench = Bench {
            core,
            groups: Groups::default(),
            journal,
            places: Vec::new(),
            servers,
            serving: HashMap::new(),
            load,
            answers: VecDeque::new(),
            now: Millis(0),
            ops: Vec::new(),
            audits: Vec::new(),
        };
        bench.groups.apply(&started);
        bench.take(effects);
        for server in bench.servers.clone() {
            let (_, effects) = bench
                .core
                .register(&server, None, Epoch::NONE, bench.now)
                .map_err(|refusal| anyhow::anyhow!("{server} refused: {}", refusal.detail))?;
            bench.take(effects);
        }
        bench.places = bench
            .servers
            .iter()
            .map(|server| bench.core.server_ix(server))
            .collect();
        bench.persist()?;
        Ok(bench)
    }

    /// Some accounts' load moves, as customers come and go.
    fn drift(&mut self, random: &mut SplitMix64) {
        for load in self.load.values_mut() {
            if random.unit() < LOAD_CHURN {
                // Log-uniform: as likely to halve as to double, so loads do not creep.
                *load = (*load * uniform(random, -0.3, 0.3).exp()).max(TARGET_LOAD);
            }
        }
    }

    /// One round, as the master runs it: its time (in all; in begin_round, the demand
    /// models and finish_round), effects and heartbeats.
    fn round(&mut self) -> anyhow::Result<(Duration, [Duration; 3], usize, usize)> {
        self.now = self.now + ROUND;
        let interval = self.core.model().timings().node_heartbeat_interval;
        let due = self.due(interval);
        let shares: HashMap<&AccountId, f64> = {
            let mut count: HashMap<&AccountId, u32> = HashMap::new();
            for (account, _) in self.serving.values() {
                *count.entry(account).or_default() += 1;
            }
            count
                .into_iter()
                .map(|(account, n)| (account, self.load[account] / f64::from(n)))
                .collect()
        };
        let beats: Vec<Heartbeat> = due
            .into_iter()
            .filter_map(|ix| {
                let server = &self.servers[ix];
                Some(Heartbeat {
                    // As the gateway's board does: looked up once, at registration.
                    server: self.places[ix]?,
                    health: Health::Healthy,
                    load: self
                        .serving
                        .get(server)
                        .and_then(|(account, _)| shares.get(account).copied()),
                    at: self.now,
                })
            })
            .collect();
        let count = beats.len();
        // Groups::round, in its three parts, each timed.
        let start = Instant::now();
        let begun = self.core.begin_round(beats, self.now);
        let first = start.elapsed();
        self.groups.apply(&begun.groups);
        let demands = self.groups.decide(&begun, self.now);
        let second = start.elapsed();
        let (effects, groups) = self.core.finish_round(&demands, self.now);
        let took = start.elapsed();
        self.groups.apply(&groups);
        let made = effects.len();
        self.take(effects);
        let parts = [first, second - first, took - second];
        Ok((took, parts, made, count))
    }

    /// Sorts effects: the journal batch, and what the nodes will answer.
    fn take(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Journal(op) => self.ops.push(op),
                Effect::Audit(entry) => self.audits.push(entry),
                Effect::Send(Command::Apply { server, pointer }) => {
                    self.serving.remove(&server);
                    self.answers.push_back(Answer::Pointer {
                        server,
                        epoch: pointer.epoch,
                    });
                }
                Effect::Send(Command::Stop { server, epoch, .. }) => {
                    self.serving.remove(&server);
                    self.answers.push_back(Answer::Stopped { server, epoch });
                }
                Effect::ToPeer { .. } | Effect::Observe(_) | Effect::Machine(_) => {}
            }
        }
    }

    /// Makes the batch durable, as the journal thread does before commands go out.
    fn persist(&mut self) -> anyhow::Result<Duration> {
        let start = Instant::now();
        self.journal
            .persist(&self.ops, &self.audits, self.now.0)
            .context("the bench journal refused a batch")?;
        self.ops.clear();
        self.audits.clear();
        Ok(start.elapsed())
    }

    /// The nodes answer everything asked of them (and what the answers lead to).
    fn settle(&mut self) -> anyhow::Result<()> {
        self.persist()?;
        while let Some(answer) = self.answers.pop_front() {
            let effects = match answer {
                Answer::Pointer { server, epoch } => {
                    let effects = self.core.pointer_answered(
                        &server,
                        epoch,
                        Ok(PointerApplication::Accepted { epoch }),
                        self.now,
                    );
                    self.answers.push_back(Answer::Joined { server, epoch });
                    effects
                }
                Answer::Joined { server, epoch } => {
                    let effects = self.core.workload_reported(
                        &server,
                        epoch,
                        &WorkloadEvent::Joined,
                        self.now,
                    );
                    if let Some(account) = self.core.model().server(&server).and_then(|entry| {
                        let lease = entry.lease.as_ref()?;
                        (lease.epoch == epoch).then(|| {
                            self.core.model().accounts()[lease.account as usize]
                                .config
                                .name
                                .clone()
                        })
                    }) {
                        self.serving.insert(server, (account, epoch));
                    }
                    effects
                }
                Answer::Stopped { server, epoch } => self.core.stop_answered(
                    &server,
                    epoch,
                    Ok(StopOutcome::Stopped { epoch }),
                    self.now,
                ),
            };
            self.take(effects);
        }
        self.persist()?;
        Ok(())
    }

    /// The servers that send something every `interval` and sent it in the round that
    /// ends now: each at its own phase, spread evenly over the interval.
    fn due(&self, interval: Duration) -> Vec<usize> {
        let every = interval.as_millis().max(1) as i64;
        let (end, start) = (
            self.now.0 as i64,
            self.now.0 as i64 - ROUND.as_millis() as i64,
        );
        let n = self.servers.len() as i64;
        (0..self.servers.len())
            .filter(|ix| {
                let phase = *ix as i64 * every / n;
                (end - phase).div_euclid(every) != (start - phase).div_euclid(every)
            })
            .collect()
    }

    /// Every serving server renews its lease once per renew interval its node was given,
    /// spread over the rounds: how many, and how long the core took for them.
    fn renewals(&mut self) -> (usize, Duration) {
        let interval = self.core.model().timings().node_renew_interval;
        let due: Vec<(ServerId, Epoch)> = self
            .due(interval)
            .into_iter()
            .filter_map(|ix| {
                let server = &self.servers[ix];
                Some((server.clone(), self.serving.get(server)?.1))
            })
            .collect();
        let start = Instant::now();
        for (server, epoch) in &due {
            let _ = self.core.renew(server, *epoch, self.now);
        }
        (due.len(), start.elapsed())
    }
}

/// A site of `servers` servers and `accounts` accounts, each account allowed a band of
/// servers around its share, with the default timings: the node heartbeat interval is
/// `heartbeat_ms`, or what a config of that many servers that sets none gets.
fn synthetic_site(
    servers: u32,
    accounts: u32,
    heartbeat_ms: Option<u64>,
) -> anyhow::Result<SiteConfig> {
    let defaults = Timings::default();
    let node_renew_interval = Timings::default_node_renew_interval(
        servers as usize,
        defaults.renew_interval,
        defaults.lease_ttl,
    );
    let timings = Timings {
        node_renew_interval,
        node_heartbeat_interval: match heartbeat_ms {
            Some(ms) => Duration::from_millis(ms.max(1)),
            None => Timings::default_heartbeat_interval(servers as usize, node_renew_interval),
        },
        ..defaults
    };
    let share = (servers / accounts).max(1);
    let site = SiteId::parse("bench").context("the bench site's name")?;
    let addr = |i: u32| SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 8080));
    let servers = (0..servers)
        .map(|i| {
            Ok(Server {
                id: ServerId::parse(&format!("s{i:06}")).context("a bench server's name")?,
                service_addr: addr(i),
                machine: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let accounts = (0..accounts)
        .map(|i| {
            let name = AccountId::parse(&format!("a{i:05}")).context("a bench account's name")?;
            Ok(Account {
                name,
                min_servers: (share / 2).max(1),
                max_servers: share * 2,
                priority: i % 100,
                target_load: TARGET_LOAD,
                failover: Vec::new(),
                pinned: false,
                workload: Workload {
                    software: "bench 1".into(),
                    command: "{leasehold}".into(),
                    args: vec!["workload".into()],
                    env: Default::default(),
                    data_dir: PathBuf::from("data"),
                    health_path: None,
                    metrics_path: None,
                    load_metric: None,
                    secrets: None,
                },
                image: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(SiteConfig {
        path: PathBuf::from("bench.toml"),
        admin: leasehold_site_gateway::config::AdminSection::unsecured(),
        site: SiteSection {
            name: site,
            admin_addr: addr(0),
            federation_addr: addr(1),
            management_addr: addr(2),
            boot_addr: None,
            advertise_management_addr: None,
            advertise_federation_addr: None,
            initial_members: None,
            departed: Vec::new(),
            store: Default::default(),
            gateways: Vec::new(),
        },
        timings,
        lending: Lending::default(),
        journal: Default::default(),
        failover_secrets: Default::default(),
        peers: Vec::new(),
        servers,
        accounts,
    })
}

fn uniform(random: &mut SplitMix64, low: f64, high: f64) -> f64 {
    low + (high - low) * random.unit()
}

/// This process's resident memory, from /proc (0 where there is none).
fn rss_mib() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    (pages as f64 * 4096.0 / (1 << 20) as f64 * 10.0).round() / 10.0
}
