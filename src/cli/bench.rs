//! `leasehold bench decide`: times rounds of the site's arbitration (the decision core,
//! exactly as the gateway runs it) on a seeded synthetic site, and prints one JSON line.
//! Only `Arbiter::round` is timed: building the view and the shell's work are not.
//! `leasehold bench round` (bench/round.rs) times the whole round around it;
//! `leasehold bench reimage` (bench/reimage.rs) the control plane's part of moving
//! machines; `leasehold bench gateway` (bench/gateway.rs) what a gateway costs per server
//! of a fleet; `leasehold bench takeover` (bench/takeover.rs) how long a site of standby
//! gateways goes without renewals when the one that acts dies.

mod gateway;
mod reimage;
mod round;
mod takeover;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use leasehold_site_gateway::model::Millis;
use leasehold_site_gateway::model::arbiter::{
    AccountIx, AccountView, Arbiter, Decision, ServerView, SiteView, Slot,
};

/// The cooldown of the synthetic site: long enough that some servers are always in it.
const COOLDOWN: Duration = Duration::from_secs(10);
/// Virtual time between rounds, as a gateway that arbitrates once a second.
const ROUND_INTERVAL: Duration = Duration::from_secs(1);
/// Share of accounts whose demand changes in a round, as load would move it.
const DEMAND_CHURN: f64 = 0.02;
/// Percent of servers unavailable (offline, failed) in the synthetic site.
const UNAVAILABLE_PERCENT: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Time arbitration rounds on a synthetic site; prints one JSON line with the round
    /// time percentiles and the core's bytes per server (progress goes to stderr).
    Decide(DecideArgs),
    /// Time the control plane's part of moving machines (emulated BMC, played firmware):
    /// prints each re-image's spans on stderr and one JSON line of percentiles.
    Reimage(reimage::ReimageArgs),
    /// Time the whole round of one site as the gateway runs it (heartbeats, demand,
    /// arbitration, effects; the journal batch and renewals apart) on a synthetic site at
    /// steady state; prints one JSON line.
    Round(round::RoundArgs),
    /// Run a gateway and a fleet of N simulated servers against it; once all are
    /// registered and settled, measure the gateway's CPU, memory and renewals; prints one
    /// JSON line.
    Gateway(gateway::GatewayArgs),
    /// kill -9 of the active gateway of a site of standby gateways on etcd, again and
    /// again; the time from each kill to every node renewed by the new active; prints one
    /// JSON line.
    Takeover(takeover::TakeoverArgs),
}

#[derive(Debug, clap::Args)]
struct DecideArgs {
    /// Servers in the synthetic site.
    #[arg(long, default_value_t = 100_000)]
    servers: u32,
    /// Accounts in the synthetic site.
    #[arg(long, default_value_t = 10_000)]
    accounts: u32,
    /// Rounds to time.
    #[arg(long, default_value_t = 50)]
    rounds: u32,
    /// Seed of the synthetic site and of its demand changes: same seed, same rounds.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Percent of servers free at the start. With 0 and few servers per account (say
    /// --accounts 40000), the site is short: rounds preempt and report shortfalls.
    #[arg(long, default_value_t = 7)]
    free_percent: u8,
}

/// The dir a bench writes its site into: `work` (created, and refused unless new or
/// empty), or a temporary dir, removed when the returned guard is dropped.
fn work_dir(
    work: Option<&std::path::Path>,
) -> anyhow::Result<(std::path::PathBuf, Option<tempfile::TempDir>)> {
    match work {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            if std::fs::read_dir(dir)?.next().is_some() {
                anyhow::bail!(
                    "--work {} is not empty; give a new or empty dir",
                    dir.display()
                );
            }
            Ok((dir.to_path_buf(), None))
        }
        None => {
            let temporary = tempfile::tempdir().context("cannot create a temporary dir")?;
            Ok((temporary.path().to_path_buf(), Some(temporary)))
        }
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BenchCommand::Decide(args) => decide(&args),
        BenchCommand::Reimage(args) => reimage::run(&args),
        BenchCommand::Round(args) => round::run(&args),
        BenchCommand::Gateway(args) => gateway::run(&args),
        BenchCommand::Takeover(args) => takeover::run(&args),
    }
}

fn decide(args: &DecideArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.servers > 0, "--servers must be at least 1");
    anyhow::ensure!(args.accounts > 0, "--accounts must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        args.free_percent <= 100 - UNAVAILABLE_PERCENT,
        "--free-percent must be at most {}",
        100 - UNAVAILABLE_PERCENT
    );
    let mut random = SplitMix64(args.seed);
    let mut site = SyntheticSite::new(args, &mut random);
    eprintln!(
        "bench decide: {} servers, {} accounts, {} rounds, seed {}, {} % free",
        args.servers, args.accounts, args.rounds, args.seed, args.free_percent
    );
    // Microseconds, up to a minute, three significant digits.
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .context("creating the round-time histogram")?;
    let mut arbiter = Arbiter::default();
    let (mut decisions, mut shortfalls) = (0u64, 0u64);
    for round_number in 1..=args.rounds {
        site.perturb_demands(&mut random);
        let view = SiteView {
            accounts: &site.accounts,
            servers: &site.servers,
            now: site.now,
            cooldown: COOLDOWN,
        };
        let started = Instant::now();
        let round = arbiter.round(&view);
        let elapsed = started.elapsed();
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        histogram.saturating_record(micros);
        decisions += round.decisions.len() as u64;
        shortfalls += round.shortfalls.len() as u64;
        if round_number == 1 || round_number % 10 == 0 || round_number == args.rounds {
            eprintln!(
                "round {round_number}/{}: {:.3} ms, {} decisions, {} shortfalls",
                args.rounds,
                elapsed.as_secs_f64() * 1000.0,
                round.decisions.len(),
                round.shortfalls.len()
            );
        }
        site.apply(&round.decisions);
    }
    let core_bytes = site.accounts.capacity() * size_of::<AccountView>()
        + site.servers.capacity() * size_of::<ServerView>()
        + size_of::<Arbiter>()
        + arbiter.heap_bytes();
    let millis = |micros: u64| micros as f64 / 1000.0;
    let rounds = f64::from(args.rounds);
    // Written by hand, not with serde_json, to keep the keys in this order for people
    // reading the line; every value is a number, so there is nothing to escape.
    let line = format!(
        concat!(
            r#"{{"bench":"decide","servers":{},"accounts":{},"rounds":{},"seed":{},"#,
            r#""round_ms_p50":{:.3},"round_ms_p99":{:.3},"round_ms_max":{:.3},"#,
            r#""decisions_per_round_mean":{:.1},"shortfalls_per_round_mean":{:.1},"#,
            r#""bytes_per_server":{:.1}}}"#
        ),
        args.servers,
        args.accounts,
        args.rounds,
        args.seed,
        millis(histogram.value_at_quantile(0.5)),
        millis(histogram.value_at_quantile(0.99)),
        millis(histogram.max()),
        decisions as f64 / rounds,
        shortfalls as f64 / rounds,
        core_bytes as f64 / f64::from(args.servers),
    );
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// A site in a plausible steady state: most servers held within their accounts' maximums,
/// some free, a few unavailable, assignment times spread so some servers are in cooldown,
/// and demands near each account's current supply.
struct SyntheticSite {
    accounts: Vec<AccountView>,
    servers: Vec<ServerView>,
    now: Millis,
}

impl SyntheticSite {
    fn new(args: &DecideArgs, random: &mut SplitMix64) -> Self {
        let unavailable = f64::from(UNAVAILABLE_PERCENT) / 100.0;
        let free = unavailable + f64::from(args.free_percent) / 100.0;
        // An hour into the gateway's life, so `since` values can lie two minutes back.
        let now = Millis(3_600_000);
        let accounts: Vec<AccountView> = (0..args.accounts)
            .map(|_| {
                let min_servers = 1 + random.below(3) as u32;
                AccountView {
                    takes_machines: true,
                    priority: random.below(100) as u32,
                    min_servers,
                    max_servers: min_servers + random.below(21) as u32,
                    demand: 0,
                }
            })
            .collect();
        let mut supply = vec![0u32; accounts.len()];
        let servers: Vec<ServerView> = (0..args.servers)
            .map(|_| {
                let load = random.unit() as f32 * 1.2;
                let avoid = random
                    .chance(0.001)
                    .then(|| random.below(accounts.len() as u64) as AccountIx);
                let roll = random.unit();
                let slot = if roll < unavailable {
                    Slot::Unavailable
                } else if roll < free {
                    Slot::Free
                } else {
                    let account = random.below(accounts.len() as u64) as usize;
                    if supply[account] < accounts[account].max_servers {
                        supply[account] += 1;
                        let ago = Duration::from_millis(random.below(120_000));
                        Slot::Held {
                            account: account as AccountIx,
                            since: now - ago,
                        }
                    } else {
                        Slot::Free
                    }
                };
                ServerView {
                    slot,
                    load,
                    avoid,
                    machine: false,
                }
            })
            .collect();
        let mut site = SyntheticSite {
            accounts,
            servers,
            now,
        };
        for (account, &have) in site.accounts.iter_mut().zip(&supply) {
            account.demand = have.saturating_add_signed(random.between(-2, 2));
        }
        site
    }

    /// Load moves some accounts' demands by up to two servers either way.
    fn perturb_demands(&mut self, random: &mut SplitMix64) {
        for account in &mut self.accounts {
            if random.chance(DEMAND_CHURN) {
                let moved = account.demand.saturating_add_signed(random.between(-2, 2));
                account.demand = moved.min(account.max_servers + 2);
            }
        }
    }

    /// What the shell would have done by the next round: assigned servers serve, reclaimed
    /// ones have drained and joined their new account, released ones are free.
    fn apply(&mut self, decisions: &[Decision]) {
        let now = self.now;
        for decision in decisions {
            let Some(server) = self.servers.get_mut(decision.server() as usize) else {
                continue;
            };
            server.slot = match *decision {
                Decision::Assign { account, .. } => Slot::Held {
                    account,
                    since: now,
                },
                Decision::Reclaim { to, .. } => Slot::Held {
                    account: to,
                    since: now,
                },
                Decision::Release { .. } => Slot::Free,
            };
        }
        self.now = self.now + ROUND_INTERVAL;
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator, plenty for a synthetic
/// site, and no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, bound); the modulo bias is negligible for the small bounds used here.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// Uniform in [low, high].
    fn between(&mut self, low: i32, high: i32) -> i32 {
        low + self.below(u64::from((high - low) as u32) + 1) as i32
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }
}
