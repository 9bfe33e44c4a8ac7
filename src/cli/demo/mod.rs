//! `leasehold demo`: a site of the example federation on this machine, as real processes
//! (the gateway, a node agent per server, a real HTTP workload on every server that is
//! serving), under a changing request load, shown live, and judged at the end from the
//! evidence the processes leave. docs/demo.md says what it runs and how to read it.
//!
//! For now (issue #3) it runs site-a only; the three configs are checked together, as
//! every gateway of the federation will check them, so a bad edit of any is refused here.

mod schedule;
mod site;
mod summary;
mod table;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Scheduling delay the S-1 checker tolerates past a lease's end, as in the tests.
const STOP_SLACK: Duration = Duration::from_millis(100);

use anyhow::{Context, bail};
use leasehold_chaos_tests::harness::admin::get_json;
use leasehold_chaos_tests::harness::evidence::{node_events, violations};
use leasehold_chaos_tests::harness::load::{LoadCounts, LoadDriver};
use leasehold_site_gateway::config::{self, SiteConfig};
use serde_json::{Value, json};

use site::RunningSite;
use summary::{SlaSeconds, Summary};
use table::{Header, Sample};

/// The site the demo runs until the federation can run (issue #4 on).
const SITE: &str = "site-a";
/// The example federation's files, checked together.
const FILES: [&str; 3] = ["site-a.toml", "site-b.toml", "site-c.toml"];
/// Exit code for refused configs (EX_CONFIG), as `leasehold config check` uses.
const EXIT_CONFIG: u8 = 78;
/// Exit code after Ctrl-C (128 + SIGINT), when nothing unsafe was found.
const EXIT_INTERRUPTED: u8 = 130;
/// The audit API's page size limit.
const AUDIT_PAGE: usize = 1000;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How long to drive the load, in seconds (start-up and shutdown come on top).
    #[arg(long, value_name = "SECONDS", default_value_t = 90)]
    duration: u64,
    /// Write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The folder with site-a.toml, site-b.toml and site-c.toml.
    #[arg(long, value_name = "DIR", default_value = "configs")]
    configs: PathBuf,
    /// Where certificates, the gateway's journal, node work dirs and logs go; must be new
    /// or empty [default: a fresh temporary dir, removed at the end unless --keep].
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
    /// Keep the temporary work dir (logs, journal, event logs) after the run.
    #[arg(long)]
    keep: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.duration == 0 {
        bail!("--duration must be at least 1 second");
    }
    let files: Vec<PathBuf> = FILES.iter().map(|name| args.configs.join(name)).collect();
    let sites = match config::load_federation(&files) {
        Ok(sites) => sites,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "the demo's configs in {} are refused; fix them, nothing was started",
                args.configs.display()
            );
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let Some(config) = sites.iter().find(|s| s.site.name.as_str() == SITE) else {
        bail!("no {SITE} among {}", args.configs.display());
    };
    for account in schedule::ACCOUNTS {
        if !config.accounts.iter().any(|a| a.name.as_str() == account) {
            bail!(
                "the demo's load schedule drives the accounts {:?}; {} has no account {account}",
                schedule::ACCOUNTS,
                config.path.display()
            );
        }
    }
    for site in &sites {
        println!("config ok  {}", site.summary());
    }
    println!(
        "running {SITE} only for now: one gateway and {} node agents; site-b and site-c are checked, not started, until the federation runs sites together",
        config.servers.len()
    );
    site::check_ports(config)?;

    let work = Work::prepare(args.work.as_deref(), args.keep)?;
    println!("work dir: {}", work.path.display());
    let interrupt = Arc::new(AtomicBool::new(false));
    watch_signals(interrupt.clone())?;
    let binary = std::env::current_exe().context("cannot find the leasehold binary itself")?;

    let outcome = run_site(&binary, config, &work.path, &args, &interrupt);
    let code = match outcome {
        Ok(code) => code,
        Err(error) => {
            // The guards have already stopped every process; the logs say why it failed.
            eprintln!("error: {error:#}");
            eprintln!("the logs of every process are in {}", work.path.display());
            work.keep_after_failure();
            return Ok(ExitCode::FAILURE);
        }
    };
    work.finish();
    Ok(code)
}

/// The demo's work dir: the one given (kept), or a fresh temporary one (removed unless
/// --keep).
struct Work {
    path: PathBuf,
    temporary: Option<tempfile::TempDir>,
}

impl Work {
    fn prepare(given: Option<&Path>, keep: bool) -> anyhow::Result<Work> {
        match given {
            Some(path) => {
                // An old journal or event log in the way would be recovered or checked as
                // if this run had written it.
                if let Ok(mut entries) = std::fs::read_dir(path)
                    && entries.next().is_some()
                {
                    bail!(
                        "the work dir {} is not empty; give a new or empty one (an old journal or event log would mix with this run's)",
                        path.display()
                    );
                }
                std::fs::create_dir_all(path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                let path = std::path::absolute(path)
                    .with_context(|| format!("cannot resolve {}", path.display()))?;
                Ok(Work {
                    path,
                    temporary: None,
                })
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("leasehold-demo-")
                    .tempdir()
                    .context("cannot create a temporary work dir")?;
                let path = dir.path().to_path_buf();
                let temporary = if keep {
                    // Keeping it is the point of --keep.
                    let _ = dir.keep();
                    None
                } else {
                    Some(dir)
                };
                Ok(Work { path, temporary })
            }
        }
    }

    /// After a failure the logs are what a person needs, so nothing is removed.
    fn keep_after_failure(mut self) {
        if let Some(dir) = self.temporary.take() {
            let _ = dir.keep();
        }
    }

    fn finish(self) {
        match self.temporary {
            Some(dir) => {
                let path = dir.path().display().to_string();
                match dir.close() {
                    Ok(()) => println!("removed the work dir {path} (--keep keeps it)"),
                    Err(error) => eprintln!("cannot remove the work dir {path}: {error}"),
                }
            }
            None => println!("work dir kept: {}", self.path.display()),
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM end the run early, with the summary and with every child
/// stopped. The handlers are installed before this returns, so no early signal kills the
/// demo with its children still running; the children are in their own process groups,
/// so the terminal's Ctrl-C reaches only the demo.
fn watch_signals(interrupt: Arc<AtomicBool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal watcher")?;
    let (mut int, mut term) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
        )
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    if interrupt.swap(true, Ordering::Relaxed) {
                        eprintln!("\nleasehold demo: already stopping; every process it started is being stopped");
                    } else {
                        eprintln!("\nleasehold demo: stopping early; the summary follows");
                    }
                }
            });
        })
        .context("cannot start the signal watcher")?;
    Ok(())
}

/// The run proper: start, drive, observe, stop, judge.
fn run_site(
    binary: &Path,
    config: &SiteConfig,
    work: &Path,
    args: &DemoArgs,
    interrupt: &Arc<AtomicBool>,
) -> anyhow::Result<ExitCode> {
    println!("starting {SITE}:");
    let mut running = RunningSite::start(binary, config, work, interrupt)?;
    let admin = running.admin;
    let phases = schedule::phases();
    let duration = Duration::from_secs(args.duration);
    let site_name = config.site.name.to_string();

    let mut drivers = Vec::new();
    for (account, rate) in &phases[0].rates {
        drivers.push(LoadDriver::start(admin, account, *rate).map_err(anyhow::Error::msg)?);
    }
    let load_start = Instant::now();
    let load_start_wall_ms = wall_ms();
    let terminal = std::io::stdout().is_terminal();
    let mut sla: BTreeMap<String, SlaSeconds> = BTreeMap::new();
    let mut last_seq_shown = None;
    let mut tick = 0u32;
    loop {
        let elapsed = load_start.elapsed();
        if elapsed >= duration || interrupt.load(Ordering::Relaxed) {
            break;
        }
        let phase = schedule::phase_at(elapsed, duration, phases.len());
        let rates: Vec<(String, f64)> = phases[phase]
            .rates
            .iter()
            .map(|(account, rate)| ((*account).to_owned(), *rate))
            .collect();
        for driver in &drivers {
            if let Some((_, rate)) = rates.iter().find(|(name, _)| name == driver.account()) {
                driver.set_rate(*rate);
            }
        }
        match sample(admin) {
            Ok(sample) => {
                record_sla(&mut sla, &sample);
                let header = Header {
                    site: &site_name,
                    elapsed,
                    duration,
                    phase,
                    phases: phases.len(),
                    phase_name: phases[phase].name,
                    rates: &rates,
                };
                let counts = counts(&drivers);
                show(&header, &sample, &counts, terminal, &mut last_seq_shown);
            }
            Err(error) => eprintln!("cannot read the gateway's state: {error}"),
        }
        tick += 1;
        // Ticks at whole seconds from the start, however long a sample took.
        let next = load_start + Duration::from_secs(u64::from(tick));
        while Instant::now() < next && !interrupt.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
        }
    }
    let load_time = load_start.elapsed().min(duration);
    let interrupted = interrupt.load(Ordering::Relaxed);

    let requests: Vec<(String, LoadCounts)> = drivers
        .into_iter()
        .map(|driver| (driver.account().to_owned(), driver.stop()))
        .collect();
    println!();
    println!(
        "stopping: the load, then the node agents (they stop their workloads), then the gateway"
    );
    // Read the gateway's evidence while it still runs.
    let audit = read_audit(admin).unwrap_or_else(|error| {
        eprintln!("cannot read the audit log: {error}");
        Vec::new()
    });
    let gateway_status = get_json(admin, "/v1/status").unwrap_or_else(|error| {
        eprintln!("cannot read /v1/status: {error}");
        Value::Null
    });
    let stop_timeout = config.timings.workload_stop_timeout;
    running.stop(stop_timeout + Duration::from_secs(3));

    let works = running.node_works();
    let mut latencies = Vec::new();
    for work in &works {
        let events = node_events(work).map_err(anyhow::Error::msg)?;
        latencies.extend(summary::node_latencies_ms(&events));
    }
    let work_refs: Vec<&Path> = works.iter().map(PathBuf::as_path).collect();
    // A node stops its workload before its lease ends (D-12); the slack is for scheduling
    // delay on a busy machine only (S-1).
    let found = violations(&work_refs, STOP_SLACK).map_err(anyhow::Error::msg)?;
    let started = running.all_started();
    let left = site::left_running(&started);

    let schedule: Vec<Value> = phases
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
    let summary = Summary {
        site: site_name,
        duration: load_time,
        planned: duration,
        interrupted,
        schedule: Value::Array(schedule),
        moves: summary::moves(&audit, load_start_wall_ms),
        sla,
        node_latencies_ms: latencies,
        gateway_status,
        requests,
        violations: found,
        started,
        left_running: left,
        work_dir: work.display().to_string(),
    };
    println!();
    print!("{}", summary.render());
    if let Some(path) = &args.report {
        let text =
            serde_json::to_string_pretty(&summary.to_json()).context("cannot encode the report")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        println!("  report: {}", path.display());
    }
    let _ = std::io::stdout().flush();
    if !summary.violations.is_empty() || !summary.left_running.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    if interrupted {
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    Ok(ExitCode::SUCCESS)
}

/// The gateway's view this second.
fn sample(admin: SocketAddr) -> Result<Sample, String> {
    let array = |value: Value| value.as_array().cloned().unwrap_or_default();
    Ok(Sample {
        servers: array(get_json(admin, "/v1/servers")?),
        accounts: array(get_json(admin, "/v1/accounts")?),
        audit: array(get_json(admin, "/v1/audit?limit=5")?),
    })
}

/// One second of each account's SLA: met or not, as the gateway judges it now.
fn record_sla(sla: &mut BTreeMap<String, SlaSeconds>, sample: &Sample) {
    for account in &sample.accounts {
        let Some(name) = account["name"].as_str() else {
            continue;
        };
        let seconds = sla.entry(name.to_owned()).or_default();
        seconds.observed += 1.0;
        if account["sla_met"].as_bool() == Some(true) {
            seconds.met += 1.0;
        }
    }
}

fn counts(drivers: &[LoadDriver]) -> Vec<(String, LoadCounts)> {
    drivers
        .iter()
        .map(|driver| (driver.account().to_owned(), driver.counts()))
        .collect()
}

/// Redraws the table on a terminal; elsewhere prints a line, and each new audit record
/// once, so that the output is a readable history.
fn show(
    header: &Header,
    sample: &Sample,
    requests: &[(String, LoadCounts)],
    terminal: bool,
    last_seq_shown: &mut Option<u64>,
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
        for record in &sample.audit {
            let seq = record["seq"].as_u64();
            if seq > *last_seq_shown {
                let _ = writeln!(out, "  audit {}", table::audit_line(record, 160));
                *last_seq_shown = seq;
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

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
