//! Runs a campaign: a federation of real gateways, node agents and workloads with every
//! path between sites through a relay, a request load on every account, the scheduled
//! faults applied and healed at their times, the admin API polled throughout; then the
//! evidence is gathered and judged ([`super::checks`]) into a [`Report`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::checks::{Evidence, check_all};
use super::faults::{Applied, InForce, apply, heal};
use super::layout::{STANDBY_TIMINGS, account_name, specs};
use super::members;
use super::poll::Pollers;
use super::report::{FaultReport, Outcome, Report};
use super::schedule::{Fault, Scenario, schedule};
use super::timeline;
use crate::harness::admin::get_json;
use crate::harness::etcd::{EtcdCluster, etcd_available};
use crate::harness::evidence::mono_now_ns;
use crate::harness::federation::Federation;
use crate::harness::load::LoadDriver;
use crate::harness::{interrupt, sweep};

/// Requests per second on each account: enough to see an outage within a second, little
/// enough that demand stays at the SLA minimum (target load 5).
const LOAD_RATE: f64 = 4.0;
/// Generous: two cores start every process of three sites at once.
const SETTLE: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct CampaignOptions {
    /// The `leasehold` executable every process runs.
    pub binary: PathBuf,
    pub scenario: Scenario,
    pub seed: u64,
    pub duration: Duration,
    pub sites: usize,
    /// Where the report goes (named in the replay command).
    pub report: PathBuf,
}

/// Runs the campaign and judges it. Err only for a campaign refused before anything
/// started (its schedule cannot be drawn); from then on every ending is a [`Report`] with
/// its [`Outcome`]: judged, never settled, could not start, or interrupted by a signal
/// ([`interrupt`]). Every process it started is stopped before this returns (and checked
/// gone); unless it passed, its files are kept and the report says where.
pub fn run_campaign(options: &CampaignOptions) -> Result<Report, String> {
    let duration_ms = options.duration.as_millis() as u64;
    let faults = schedule(&options.scenario, options.seed, duration_ms, options.sites)
        .map_err(|error| error.to_string())?;
    eprintln!(
        "chaos: scenario {}, seed {}, {} s, {} sites: {} faults scheduled",
        options.scenario.name,
        options.seed,
        duration_ms / 1000,
        options.sites,
        faults.len()
    );
    // etcd, for a site of standby gateways, outlives the federation's processes.
    let (mut federation, etcd) = match prepare(options) {
        Ok(prepared) => prepared,
        Err(error) => {
            let outcome = interrupted_or(Outcome::CouldNotStart);
            return Ok(Report::unjudged(options, outcome, error, Vec::new()));
        }
    };
    let mut report = match run_started(&mut federation, options, &faults) {
        Ok(report) => report,
        Err((outcome, cause, applied)) => Report::unjudged(options, outcome, cause, applied),
    };
    if !report.passed() {
        report.kept = Some(federation.keep_files().display().to_string());
    }
    drop(federation);
    drop(etcd);
    // The guards have stopped their processes; anything of ours still running now would
    // outlive the campaign, so it is killed and said.
    let left = sweep::kill_all_of_this_harness();
    if !left.is_empty() {
        eprintln!(
            "chaos: {} processes outlived their guards and were killed: {left:?}",
            left.len()
        );
    }
    Ok(report)
}

/// The federation of `options`, written and not started: its sites, and for the
/// `members` scenario a spare after them that homes no account and that the founders
/// start without.
fn prepare(options: &CampaignOptions) -> Result<(Federation, Option<EtcdCluster>), String> {
    let mut sites = specs(options.sites + usize::from(options.scenario.members));
    if options.scenario.members
        && let Some(spare) = sites.last_mut()
    {
        // A removed site's accounts must have moved elsewhere first: it homes none.
        spare.accounts.clear();
    }
    if options.scenario.standbys {
        for site in &mut sites {
            site.timings
                .retain(|(key, _)| !STANDBY_TIMINGS.iter().any(|(k, _)| k == key));
            site.timings.extend(STANDBY_TIMINGS);
        }
    }
    let mut federation = Federation::prepare_with_relays(&options.binary, sites, options.seed)?;
    if options.scenario.members {
        members::prepare(&federation)?;
    }
    let etcd = if options.scenario.standbys {
        etcd_available().map_err(|why| {
            format!(
                "the {} scenario runs the first site's gateways on etcd: {why}",
                options.scenario.name
            )
        })?;
        let etcd = EtcdCluster::start(&federation.path("etcd"), 1)?;
        federation.add_standby(0, &etcd.endpoints())?;
        Some(etcd)
    } else {
        None
    };
    Ok((federation, etcd))
}

/// Why a campaign ended before it was judged, with the faults applied by then.
type Unjudged = (Outcome, String, Vec<FaultReport>);

/// `outcome`, unless a signal asked the campaign to stop (which is then why it ended).
fn interrupted_or(outcome: Outcome) -> Outcome {
    if interrupt::requested().is_some() {
        Outcome::Interrupted
    } else {
        outcome
    }
}

fn interrupted_cause(start: Option<Instant>) -> String {
    let signal = interrupt::requested().map_or("a signal", |signal| signal.as_str());
    match start {
        Some(start) => format!(
            "{signal} at +{:.1} s of the load; nothing was judged",
            start.elapsed().as_secs_f64()
        ),
        None => format!("{signal} before the load started; nothing was judged"),
    }
}

fn run_started(
    federation: &mut Federation,
    options: &CampaignOptions,
    faults: &[Fault],
) -> Result<Report, Unjudged> {
    let duration_ms = options.duration.as_millis() as u64;
    let not_started = |error: String| (interrupted_or(Outcome::CouldNotStart), error, Vec::new());
    // The founders; a spare starts only when a fault adds it.
    for site in 0..options.sites {
        federation.start_gateway(site).map_err(not_started)?;
    }
    for site in 0..options.sites {
        federation.start_nodes_of(site).map_err(not_started)?;
    }
    if let Err(error) = settle(federation, options.sites) {
        let outcome = interrupted_or(Outcome::NeverSettled);
        let cause = if outcome == Outcome::Interrupted {
            interrupted_cause(None)
        } else {
            format!("the federation never settled: {}", first_lines(&error, 6))
        };
        return Err((outcome, cause, Vec::new()));
    }
    eprintln!(
        "chaos: federation settled in {}",
        federation.dir().display()
    );

    let start = Instant::now();
    let start_mono_ns = mono_now_ns();
    let admins: Vec<Vec<_>> = (0..options.sites)
        .map(|site| federation.admins(site))
        .collect();
    let pollers = Pollers::start(&admins, start).map_err(not_started)?;
    let mut loads = Vec::new();
    for site in 0..options.sites {
        // The home first: it serves the account unless a fault moved it.
        let mut order = admins.clone();
        order.rotate_left(site);
        let order: Vec<_> = order.into_iter().flatten().collect();
        loads.push(
            LoadDriver::start_any(order, &account_name(site), LOAD_RATE).map_err(not_started)?,
        );
    }

    let mut applied = Vec::with_capacity(faults.len());
    for episode in faults.chunk_by(|a, b| a.episode == b.episode) {
        // A signal before an episode's time applies no more faults.
        if !sleep_until(start, episode[0].start_ms) {
            break;
        }
        applied.extend(run_episode(
            federation,
            episode,
            applied.len(),
            faults.len(),
            start,
        ));
    }
    if interrupt::requested().is_some() || !sleep_until(start, duration_ms) {
        let cause = interrupted_cause(Some(start));
        let reports = applied.iter().map(FaultReport::unjudged).collect();
        return Err((Outcome::Interrupted, cause, reports));
    }
    let mut load_failures = Vec::new();
    let mut load_counts = Vec::new();
    for load in loads {
        let account = load.account().to_owned();
        for at in load.failure_times() {
            let at_ms = at.saturating_duration_since(start).as_millis() as u64;
            load_failures.push((account.clone(), at_ms));
        }
        load_counts.push((account, load.stop()));
    }
    let samples = pollers.stop();
    let until_mono_ns = mono_now_ns();
    let audits = (0..options.sites)
        .map(|site| (site, audit_log(federation, site)))
        .collect();
    let evidence = Evidence {
        federation: &*federation,
        accounts: (0..options.sites).map(account_name).collect(),
        samples,
        faults: applied,
        audits,
        load_failures,
        load_counts,
        duration_ms,
        start_mono_ns,
        until_mono_ns,
    };
    let judgement = check_all(&evidence);
    let mut report = Report::new(options, &evidence, judgement);
    let sites: Vec<String> = federation.sites.iter().map(|s| s.name.clone()).collect();
    let accounts: Vec<String> = (0..options.sites).map(account_name).collect();
    report.timeline_svg = Some(timeline::svg(
        &evidence.samples,
        &sites,
        &accounts,
        &report.faults,
        duration_ms,
    ));
    Ok(report)
}

/// Every founder's own account owned at home and at its minimum.
fn settle(federation: &Federation, founders: usize) -> Result<(), String> {
    for site in 0..founders {
        let name = account_name(site);
        let home = federation.sites[site].name.clone();
        federation.wait_account(site, &name, "owned and at its minimum", SETTLE, |account| {
            account["owner"] == home.as_str()
                && account["servers"].as_u64() >= account["min_servers"].as_u64()
        })?;
    }
    Ok(())
}

/// The first `count` lines of `text` (a wait's error carries every gateway's log).
fn first_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= count {
        return text.to_owned();
    }
    format!(
        "{} [... {} more lines in the kept gateway logs]",
        lines[..count].join(" / "),
        lines.len() - count
    )
}

/// Applies the faults of one episode at their times and heals each at its end, in the
/// order those times fall (a compound episode's second fault starts while the first
/// holds, and may end before or after it). `first` is the number of faults before it. A
/// signal that arrives meanwhile cuts the episode short (what it did is undone by stopping
/// every process).
fn run_episode(
    federation: &mut Federation,
    episode: &[Fault],
    first: usize,
    count: usize,
    start: Instant,
) -> Vec<Applied> {
    // (time, fault, heal?): a start before an end at the same instant.
    let mut steps: Vec<(u64, usize, bool)> = episode
        .iter()
        .enumerate()
        .flat_map(|(ix, fault)| [(fault.start_ms, ix, false), (fault.end_ms, ix, true)])
        .collect();
    steps.sort();
    let mut records: Vec<Option<Applied>> = episode.iter().map(|_| None).collect();
    let mut held: Vec<Option<InForce>> = episode.iter().map(|_| None).collect();
    for (at, ix, healing) in steps {
        if !sleep_until(start, at) {
            // What is in force stays so until every process is stopped.
            for (record, _) in records.iter_mut().zip(&held).filter(|(_, h)| h.is_some()) {
                if let Some(record) = record {
                    record.ended_ms = elapsed_ms(start);
                    record.notes.push("cut short by a signal".into());
                }
            }
            break;
        }
        let fault = &episode[ix];
        let number = first + ix + 1;
        if !healing {
            let started_ms = elapsed_ms(start);
            eprintln!(
                "chaos: +{:7.1}s fault {number}/{count} {} {}: start",
                started_ms as f64 / 1000.0,
                fault.kind,
                fault.target
            );
            let record = records[ix].insert(Applied {
                fault: fault.clone(),
                started_ms,
                ended_ms: started_ms,
                notes: Vec::new(),
                errors: Vec::new(),
                restarted: None,
                config: None,
                member: None,
            });
            held[ix] = Some(apply(federation, record));
            continue;
        }
        let (Some(record), Some(in_force)) = (records[ix].as_mut(), held[ix].take()) else {
            continue;
        };
        heal(federation, record, in_force);
        record.ended_ms = elapsed_ms(start);
        eprintln!(
            "chaos: +{:7.1}s fault {number}/{count} {} {}: end{}",
            record.ended_ms as f64 / 1000.0,
            fault.kind,
            fault.target,
            if record.errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", record.errors.join("; "))
            }
        );
    }
    records.into_iter().flatten().collect()
}

fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Sleeps until `at_ms` after `start`; false if a signal asked the campaign to stop.
fn sleep_until(start: Instant, at_ms: u64) -> bool {
    let due = start + Duration::from_millis(at_ms);
    interrupt::sleep(due.saturating_duration_since(Instant::now()))
}

/// The whole audit log of site `site`'s gateway, oldest first, paged through `after`.
fn audit_log(federation: &Federation, site: usize) -> Result<Vec<Value>, String> {
    let mut records = Vec::new();
    let mut after = 0u64;
    loop {
        let page = get_json(
            federation.admin(site),
            &format!("/v1/audit?after={after}&limit=1000"),
        )?;
        let page = page.as_array().cloned().unwrap_or_default();
        let Some(last) = page.last().and_then(|record| record["seq"].as_u64()) else {
            return Ok(records);
        };
        after = last;
        records.extend(page);
    }
}
