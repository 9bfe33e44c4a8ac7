//! The run proper: start the federation, drive the load schedule while showing it live,
//! gather each site's evidence, stop every process, and judge.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leasehold_chaos_tests::harness::admin::get_json;
use leasehold_chaos_tests::harness::evidence::{node_events, violations};
use leasehold_chaos_tests::harness::interrupt;
use leasehold_chaos_tests::harness::load::LoadCounts;
use leasehold_site_gateway::config::SiteConfig;
use serde_json::{Value, json};

use super::failover::{self, Killed, ServingWatch};
use super::federation::{RunningFederation, SiteHandle};
use super::follow::Loads;
use super::summary::{self, SiteEvidence, SlaSeconds, Summary};
use super::table::{self, Header, SiteSample, SiteState};
use super::{DemoArgs, loans, report, schedule, site};

/// Scheduling delay the S-1 checker tolerates past a lease's end, as in the tests.
const STOP_SLACK: Duration = Duration::from_millis(100);
/// The audit API's page size limit.
const AUDIT_PAGE: usize = 1000;
/// After a kill, how often the surviving sites' `/v1/accounts` are read between the
/// once-a-second samples, until every account of the killed site is served again.
const FAST_POLL: Duration = Duration::from_millis(100);

/// A gateway's audit log, `/v1/status` and `/v1/loans`.
type GatewayEvidence = (Vec<Value>, Value, loans::LoanView);

pub fn run_federation(
    binary: &Path,
    configs: &[&SiteConfig],
    work: &Path,
    args: &DemoArgs,
) -> anyhow::Result<ExitCode> {
    println!("starting the federation:");
    let mut running = RunningFederation::start(binary, configs, work)?;
    let sites = running.sites.clone();
    let phases = schedule::phases();
    let duration = Duration::from_secs(args.duration());

    // The load goes where its customers would: to the servers its owner's gateway lists,
    // borrowed ones included.
    let mut loads = Loads::start(&sites, &schedule::ACCOUNTS, |account| {
        phases[0]
            .rates
            .iter()
            .find(|(name, _)| *name == account)
            .map_or(0.0, |(_, rate)| *rate)
    })?;
    let plan = args.kill();
    let mut killed: Option<(Killed, Duration, GatewayEvidence)> = None;
    let mut watch = ServingWatch::default();
    let load_start = Instant::now();
    let load_start_wall_ms = wall_ms();
    let terminal = std::io::stdout().is_terminal();
    let mut sla: BTreeMap<String, SlaSeconds> = BTreeMap::new();
    let mut last_seq_shown: BTreeMap<String, u64> = BTreeMap::new();
    let mut tick = 0u32;
    loop {
        let elapsed = load_start.elapsed();
        if elapsed >= duration || interrupt::requested().is_some() {
            break;
        }
        if let Some(plan) = &plan
            && killed.is_none()
            && elapsed >= plan.at
            && let Some(site) = sites.iter().find(|s| s.name == plan.site)
        {
            let (done, evidence) = kill(&mut running, site, load_start_wall_ms)?;
            killed = Some((done, elapsed, evidence));
        }
        let phase = schedule::phase_at(elapsed, duration, phases.len());
        let rates: Vec<(String, f64)> = phases[phase]
            .rates
            .iter()
            .map(|(account, rate)| ((*account).to_owned(), *rate))
            .collect();
        loads.set_rates(&rates);
        let down = killed
            .as_ref()
            .map(|(k, since, _)| (k.site.as_str(), *since));
        let sample = sample(&sites, down);
        let at_ms = wall_ms().saturating_sub(load_start_wall_ms);
        if let Some((k, _, _)) = &killed {
            for site in &sample {
                if let Ok(state) = &site.state {
                    watch.observe(k, &site.site, &state.accounts, at_ms);
                }
            }
        }
        for moved in loads.follow(&sample, &sites, at_ms)? {
            println!(
                "  load  {} follows its owner: {} → {} at t+{:.1}s",
                moved.account,
                moved.from,
                moved.to,
                at_ms as f64 / 1000.0
            );
        }
        record_sla(&mut sla, &sample);
        let header = Header {
            elapsed,
            duration,
            phase,
            phases: phases.len(),
            phase_name: phases[phase].name,
            rates: &rates,
        };
        show(
            &header,
            &sample,
            &loads.counts(),
            terminal,
            &mut last_seq_shown,
        );
        tick += 1;
        // Ticks at whole seconds from the start, however long a sample took.
        let next = load_start + Duration::from_secs(u64::from(tick));
        let mut polled = Instant::now();
        while Instant::now() < next && interrupt::requested().is_none() {
            if let Some((k, _, _)) = &killed
                && watch.pending(k)
                && polled.elapsed() >= FAST_POLL
            {
                poll_survivors(&sites, k, &mut watch, load_start_wall_ms);
                polled = Instant::now();
            }
            let left = next.saturating_duration_since(Instant::now());
            std::thread::sleep(Duration::from_millis(50).min(left));
        }
    }
    let load_time = load_start.elapsed().min(duration);
    let interrupted = interrupt::requested().is_some();

    let followed = loads.followed.clone();
    let requests: Vec<(String, LoadCounts)> = loads.stop();
    println!();
    println!(
        "stopping: the load, then every node agent (they stop their workloads), then the gateways"
    );
    // Read the gateways' evidence while they still run; the killed one's was read just
    // before the kill.
    let (killed, mut killed_evidence) = match killed {
        Some((k, _, evidence)) => (Some(k), Some(evidence)),
        None => (None, None),
    };
    let mut gateway_evidence: Vec<GatewayEvidence> = Vec::new();
    for site in &sites {
        let is_killed = killed.as_ref().is_some_and(|k| k.site == site.name);
        let before_kill = if is_killed {
            killed_evidence.take()
        } else {
            None
        };
        gateway_evidence.push(before_kill.unwrap_or_else(|| read_gateway(site)));
    }
    let stop_timeout = configs
        .iter()
        .map(|c| c.timings.workload_stop_timeout)
        .max()
        .unwrap_or_default();
    running.stop(stop_timeout + Duration::from_secs(3));

    let works = running.node_works();
    let mut latencies = Vec::new();
    for (_, work) in &works {
        let events = node_events(work).map_err(anyhow::Error::msg)?;
        latencies.extend(summary::node_latencies_ms(&events));
    }
    let mut evidence = Vec::new();
    for (site, (audit, status, loans)) in sites.iter().zip(gateway_evidence) {
        let site_works: Vec<&Path> = works
            .iter()
            .filter(|(name, _)| *name == site.name)
            .map(|(_, work)| work.as_path())
            .collect();
        // A node stops its workload before its lease ends (D-12); the slack is for
        // scheduling delay on a busy machine only (S-1).
        let found = violations(&site_works, STOP_SLACK).map_err(anyhow::Error::msg)?;
        evidence.push(SiteEvidence {
            site: site.name.clone(),
            moves: summary::moves(&site.name, &audit, load_start_wall_ms),
            status,
            loans,
            nodes: site_works.len(),
            violations: found,
        });
    }
    let started = running.all_started();
    let left = site::left_running(&started);
    let failovers = match &killed {
        Some(k) => {
            let events: Vec<&summary::Move> = evidence.iter().flat_map(|s| &s.moves).collect();
            failover::failovers(k, &events, &watch, load_start_wall_ms)
        }
        None => Vec::new(),
    };

    let summary = Summary {
        sites: evidence,
        duration: load_time,
        planned: duration,
        interrupted,
        schedule: schedule_json(duration),
        sla,
        node_latencies_ms: latencies,
        requests,
        started,
        left_running: left,
        work_dir: work.display().to_string(),
        kill: killed,
        failovers,
        followed,
    };
    report::show(
        &summary.render(),
        || summary.to_json(),
        args.report.as_deref(),
    )?;
    if summary.violation_count() > 0 || !summary.left_running.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    if let Some(signal) = interrupt::requested() {
        return Ok(ExitCode::from(interrupt::exit_code(signal)));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads `site`'s evidence and the accounts it owns, then kills its gateway with SIGKILL
/// (the process only: its node agents run on).
fn kill(
    running: &mut RunningFederation,
    site: &SiteHandle,
    load_start_wall_ms: u64,
) -> anyhow::Result<(Killed, GatewayEvidence)> {
    let evidence = read_gateway(site);
    let owned = match get_json(site.admin, "/v1/accounts") {
        Ok(accounts) => Killed::owned_in(&site.name, &accounts),
        Err(error) => {
            eprintln!(
                "cannot read /v1/accounts of {} before the kill: {error}; following the accounts it homes",
                site.name
            );
            schedule::ACCOUNTS
                .iter()
                .filter(|(home, _)| *home == site.name)
                .map(|(_, account)| (*account).to_owned())
                .collect()
        }
    };
    let at_ms = wall_ms().saturating_sub(load_start_wall_ms);
    let pid = running.kill_gateway(&site.name)?;
    println!(
        "  kill  t+{:.1}s: the {} gateway (pid {pid}) killed with SIGKILL; it owned {}; its node agents run on, and stop their workloads when their leases run out",
        at_ms as f64 / 1000.0,
        site.name,
        if owned.is_empty() {
            "nothing".to_owned()
        } else {
            owned.join(", ")
        }
    );
    let killed = Killed {
        site: site.name.clone(),
        pid,
        at_ms,
        owned,
    };
    Ok((killed, evidence))
}

/// Between samples: each surviving site's `/v1/accounts`, for when it first serves an
/// account of the killed site.
fn poll_survivors(
    sites: &[SiteHandle],
    killed: &Killed,
    watch: &mut ServingWatch,
    load_start_wall_ms: u64,
) {
    for site in sites.iter().filter(|s| s.name != killed.site) {
        if let Ok(accounts) = get_json(site.admin, "/v1/accounts") {
            let at_ms = wall_ms().saturating_sub(load_start_wall_ms);
            let list = accounts.as_array().map(Vec::as_slice).unwrap_or_default();
            watch.observe(killed, &site.name, list, at_ms);
        }
    }
}

/// A gateway's audit log, `/v1/status` and `/v1/loans`, each empty with the error printed
/// if it cannot be read (the rest of the evidence still counts).
fn read_gateway(site: &SiteHandle) -> GatewayEvidence {
    let audit = read_audit(site.admin).unwrap_or_else(|error| {
        eprintln!("cannot read the audit log of {}: {error}", site.name);
        Vec::new()
    });
    let status = get_json(site.admin, "/v1/status").unwrap_or_else(|error| {
        eprintln!("cannot read /v1/status of {}: {error}", site.name);
        Value::Null
    });
    let loans = loans::read(site.admin);
    if let loans::LoanView::Unreadable(error) = &loans {
        eprintln!("cannot read /v1/loans of {}: {error}", site.name);
    }
    (audit, status, loans)
}

fn schedule_json(duration: Duration) -> Value {
    let phases = schedule::phases();
    let list: Vec<Value> = phases
        .iter()
        .enumerate()
        .map(|(index, phase)| {
            let rates: BTreeMap<&str, f64> = phase.rates.iter().copied().collect();
            json!({
                "phase": phase.name,
                "from_s": schedule::phase_start(index, duration, phases.len()),
                "to_s": schedule::phase_start(index + 1, duration, phases.len()),
                "rates": rates,
            })
        })
        .collect();
    Value::Array(list)
}

/// Every gateway's view this second; a site that does not answer says why. The killed
/// site (`down`: its name, and since when) is not asked.
fn sample(sites: &[SiteHandle], down: Option<(&str, Duration)>) -> Vec<SiteSample> {
    sites
        .iter()
        .map(|site| match down {
            Some((name, since)) if name == site.name => SiteSample {
                site: site.name.clone(),
                state: Err("gateway killed".to_owned()),
                down_since: Some(since),
            },
            _ => SiteSample {
                site: site.name.clone(),
                state: site_state(site.admin),
                down_since: None,
            },
        })
        .collect()
}

fn site_state(admin: SocketAddr) -> Result<SiteState, String> {
    let array = |value: Value| value.as_array().cloned().unwrap_or_default();
    Ok(SiteState {
        servers: array(get_json(admin, "/v1/servers")?),
        accounts: array(get_json(admin, "/v1/accounts")?),
        // Enough that a pipe sees every record of a busy second once.
        audit: array(get_json(admin, "/v1/audit?limit=20")?),
        loans: loans::read(admin),
    })
}

/// One second of each account's SLA, as its owner's gateway judges it now (its home, or
/// the site that took it over). A second when its home is killed and nobody owns it yet
/// counts as not met; one when its home did not answer is not counted.
fn record_sla(sla: &mut BTreeMap<String, SlaSeconds>, sample: &[SiteSample]) {
    for (home, name) in schedule::ACCOUNTS {
        let home_down = sample
            .iter()
            .any(|s| s.site == home && s.down_since.is_some());
        let met = match table::account_row(sample, home, name) {
            Some((_, account)) => account["sla_met"].as_bool() == Some(true),
            None if home_down => false,
            None => continue,
        };
        let seconds = sla.entry(name.to_owned()).or_default();
        seconds.observed += 1.0;
        if met {
            seconds.met += 1.0;
        }
    }
}

/// Redraws the table on a terminal; elsewhere prints a line, and each new audit record of
/// each site once, so that the output is a readable history.
fn show(
    header: &Header,
    sample: &[SiteSample],
    requests: &[(String, LoadCounts)],
    terminal: bool,
    last_seq_shown: &mut BTreeMap<String, u64>,
) {
    let mut out = std::io::stdout().lock();
    if terminal {
        let _ = write!(
            out,
            "{}{}",
            table::CLEAR,
            table::render(header, sample, requests)
        );
    } else {
        let _ = writeln!(out, "{}", table::compact(header, sample));
        for site in sample {
            let Ok(state) = &site.state else { continue };
            for record in &state.audit {
                let Some(seq) = record["seq"].as_u64() else {
                    continue;
                };
                let shown = last_seq_shown.get(&site.site).copied();
                if shown.is_none_or(|shown| seq > shown) {
                    let _ = writeln!(
                        out,
                        "  audit {}",
                        table::audit_line(&site.site, record, 160)
                    );
                    last_seq_shown.insert(site.site.clone(), seq);
                }
            }
        }
    }
    let _ = out.flush();
}

/// Every audit record, oldest first, a page at a time.
fn read_audit(admin: SocketAddr) -> Result<Vec<Value>, String> {
    let mut records = Vec::new();
    let mut after = 0u64;
    loop {
        let page = get_json(
            admin,
            &format!("/v1/audit?after={after}&limit={AUDIT_PAGE}"),
        )?;
        let page = page.as_array().cloned().unwrap_or_default();
        let full = page.len() == AUDIT_PAGE;
        match page.last().and_then(|r| r["seq"].as_u64()) {
            Some(seq) => after = seq,
            None => break,
        }
        records.extend(page);
        if !full {
            break;
        }
    }
    Ok(records)
}

pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
