//! `leasehold demo --machines`: one site, site-m, whose servers are two machines behind an
//! emulated Redfish BMC (m1, m2; the harness plays their firmware: on power-on they fetch
//! their iPXE script from the gateway's boot service and boot the image's node agent) and
//! two process servers (a1, a2). api, with no image, runs on the process servers; shop
//! and blog, each with an image, boot on the machines. Once every account serves, a live
//! edit of the site's config hands shop's machine to blog: it is drained, powered off,
//! re-imaged and booted under a higher epoch. The live table shows it step by step; the
//! summary judges it from the evidence (machines_summary.rs). docs/demo.md, "Machines".

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leasehold_chaos_tests::harness::bmc::emulator_available;
use leasehold_chaos_tests::harness::evidence::node_events;
use leasehold_chaos_tests::harness::interrupt;
use leasehold_chaos_tests::harness::machine_site::{MachineSite, MachineSpec, SiteOptions};
use leasehold_chaos_tests::harness::onesite::{FAST_TIMINGS, account};
use leasehold_chaos_tests::harness::site::AccountSpec;
use leasehold_chaos_tests::harness::sweep::{command_line, marked_processes};
use leasehold_node::event_log::EventKind;
use nix::sys::signal::Signal;

use super::machines_summary::{Edit, Gathered, MachineSummary};
use super::machines_table::{self, Sample};
use super::run::wall_ms;
use super::site::{Started, left_running};
use super::table::clock;
use super::work::Work;
use super::{DemoArgs, conclude, report};

const MACHINES: [&str; 2] = ["m1", "m2"];
const PROCESSES: [&str; 2] = ["a1", "a2"];
/// The accounts with an image: only these may boot on a machine.
const IMAGES: [&str; 2] = ["shop", "blog"];
/// The live edit: shop may give up its machine, and blog needs two.
const EDIT: &str = "shop min 0 max 1, blog min 2 max 2";
/// Start-up and the re-image each get this long: the emulator applies a power change 1
/// to 11 s after it is asked, and a re-image waits for two.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the settled site is shown before the edit, and the moved one after it.
const SHOW: Duration = Duration::from_secs(3);
/// Added to the test timings: the emulator's power changes, and a boot that never
/// registers failing within the demo's wait.
const MACHINE_TIMINGS: [(&str, u64); 2] = [
    ("machine_power_timeout_ms", 40_000),
    ("machine_boot_timeout_ms", 30_000),
];

fn accounts_before() -> Vec<AccountSpec> {
    vec![
        account("api", 2, 2, 30),
        account("shop", 1, 1, 10),
        account("blog", 1, 2, 20),
    ]
}

fn accounts_after() -> Vec<AccountSpec> {
    vec![
        account("api", 2, 2, 30),
        account("shop", 0, 1, 10),
        account("blog", 2, 2, 20),
    ]
}

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if let Err(why) = emulator_available() {
        eprintln!(
            "error: leasehold demo --machines drives its machines through the sushy-tools Redfish emulator, which cannot run here: {why}"
        );
        eprintln!("install it with: python3 -m pip install sushy-tools==2.2.0");
        return Ok(ExitCode::FAILURE);
    }
    let work = Work::prepare(args.work.as_deref(), args.keep)?;
    println!("work dir: {}", work.path.display());
    // Ctrl-C and SIGTERM end the run early, with the summary and every child stopped.
    interrupt::watch("leasehold demo").map_err(anyhow::Error::msg)?;
    let binary = std::env::current_exe().context("cannot find the leasehold binary itself")?;
    let outcome = run_site(&binary, &work.path, args);
    Ok(conclude(work, outcome))
}

/// Where the script is.
#[derive(Debug, Clone)]
enum Stage {
    /// Waiting for every account to serve.
    Starting,
    /// Every account serves; the edit comes `SHOW` after `since`.
    Settled { since: Instant },
    /// The edit is written; waiting for the machine to serve the new account.
    Moving { edit: Edit, since: Instant },
    /// It does; shown until `SHOW` has passed and the view has run `--duration`.
    Moved { edit: Edit, since: Instant },
}

fn run_site(binary: &Path, work: &Path, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    println!(
        "starting {}: the Redfish BMC emulator with machines {}, the machine player, the gateway, node agents on {}",
        machines_table::SITE,
        MACHINES.join(", "),
        PROCESSES.join(", ")
    );
    let machines: Vec<MachineSpec> = MACHINES.iter().map(|id| MachineSpec::new(id)).collect();
    let options = SiteOptions {
        processes: PROCESSES.iter().map(|id| (*id).to_owned()).collect(),
        timings: FAST_TIMINGS
            .iter()
            .chain(&MACHINE_TIMINGS)
            .map(|(key, value)| ((*key).to_owned(), *value))
            .collect(),
        ..SiteOptions::default()
    };
    let mut site = MachineSite::start_with_images(
        binary,
        work,
        &machines,
        &accounts_before(),
        &IMAGES,
        &options,
    )
    .map_err(anyhow::Error::msg)?;
    println!(
        "  gateway ready: admin API http://{}, boot service http://{}, BMC {}; config {}",
        site.admin,
        site.boot,
        site.bmc.url,
        site.config.display()
    );

    let started = Instant::now();
    let start_wall_ms = wall_ms();
    let duration = Duration::from_secs(args.duration());
    let terminal = std::io::stdout().is_terminal();
    let mut last_seq: Option<u64> = None;
    let mut stage = Stage::Starting;
    let mut failure: Option<String> = None;
    let mut tick = 0u32;
    loop {
        if interrupt::requested().is_some() {
            break;
        }
        let sample = Sample::read(site.admin);
        let now = Instant::now();
        let mut end = false;
        stage = match stage {
            Stage::Starting => match settled(&sample) {
                Ok(()) => Stage::Settled { since: now },
                Err(missing) if started.elapsed() > STEP_TIMEOUT => {
                    failure = Some(format!(
                        "the site did not serve every account within {} s: {missing}",
                        STEP_TIMEOUT.as_secs()
                    ));
                    end = true;
                    Stage::Starting
                }
                Err(_) => Stage::Starting,
            },
            Stage::Settled { since } if since.elapsed() >= SHOW => {
                match edit(&site, &sample, start_wall_ms, terminal) {
                    Ok(edit) => Stage::Moving { edit, since: now },
                    Err(error) => {
                        failure = Some(error);
                        end = true;
                        Stage::Settled { since }
                    }
                }
            }
            Stage::Moving { edit, since } => {
                if moved(&sample, &edit) {
                    Stage::Moved { edit, since: now }
                } else if since.elapsed() > STEP_TIMEOUT {
                    let seen = sample
                        .server(&edit.machine)
                        .map_or("nothing".to_owned(), |s| s.to_string());
                    failure = Some(format!(
                        "{} did not serve {} within {} s of the edit; last seen in /v1/servers: {seen}",
                        edit.machine,
                        edit.to,
                        STEP_TIMEOUT.as_secs()
                    ));
                    end = true;
                    Stage::Moving { edit, since }
                } else {
                    Stage::Moving { edit, since }
                }
            }
            Stage::Moved { edit, since } => {
                end = since.elapsed() >= SHOW && started.elapsed() >= duration;
                Stage::Moved { edit, since }
            }
            other => other,
        };
        show(
            &sample,
            started.elapsed(),
            &status(&stage, start_wall_ms),
            terminal,
            &mut last_seq,
        );
        if end {
            break;
        }
        tick += 1;
        // Ticks at whole seconds from the start, however long a sample took.
        let next = started + Duration::from_secs(u64::from(tick));
        interrupt::sleep(next.saturating_duration_since(Instant::now()));
    }
    let run_time = started.elapsed();
    let interrupted = interrupt::requested().is_some();

    println!();
    println!("stopping: the process servers' node agents, the gateway, the machines, the BMC");
    // The evidence the gateway and the player hold, while they still run.
    let audit = site.audit().unwrap_or_else(|error| {
        eprintln!("cannot read the audit log: {error}");
        Vec::new()
    });
    let servers = match Sample::read(site.admin).servers {
        Ok(servers) => servers,
        Err(error) => {
            eprintln!("cannot read /v1/servers: {error}");
            Vec::new()
        }
    };
    let boots: Vec<(String, _)> = MACHINES
        .iter()
        .map(|id| ((*id).to_owned(), site.player.boots(id)))
        .collect();
    let mut started_processes = ours();
    let process_works: Vec<_> = PROCESSES
        .iter()
        .map(|id| work.join("nodes").join(id))
        .collect();
    stop(&mut site);
    drop(site);
    let mut works = process_works.clone();
    works.extend(
        boots
            .iter()
            .flat_map(|(_, b)| b.iter().map(|boot| boot.work.clone())),
    );
    for work in &works {
        logged_processes(work, &mut started_processes);
    }
    let mut left = left_running(&started_processes);
    for process in ours() {
        if !left.iter().any(|p| p.pid == process.pid) {
            left.push(process);
        }
    }
    let edit = match &stage {
        Stage::Moving { edit, .. } | Stage::Moved { edit, .. } => Some(edit.clone()),
        _ => None,
    };
    let summary = MachineSummary::judge(Gathered {
        start_wall_ms,
        duration: run_time,
        interrupted,
        failure,
        edit,
        audit,
        servers,
        boots,
        process_works,
        started: started_processes,
        left,
        work_dir: work.display().to_string(),
    });
    report::show(
        &summary.render(),
        || summary.to_json(),
        args.report.as_deref(),
    )?;
    let (left, violations) = (summary.gathered.left.len(), summary.violations.len());
    if let Some(signal) = interrupt::requested() {
        // Interrupted: the files are kept either way; 1 if something was unsafe.
        if left > 0 || violations > 0 {
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::from(interrupt::exit_code(signal)));
    }
    // A failed run keeps its files (`conclude`), and says where they are.
    if left > 0 {
        bail!("{left} processes the demo started were left running");
    }
    if violations > 0 {
        bail!("the node event logs show {violations} safety violations");
    }
    if let Some(failure) = &summary.gathered.failure {
        bail!("{failure}");
    }
    if !summary.holds {
        let failed: Vec<&str> = summary
            .checks
            .iter()
            .filter(|check| !check.ok)
            .map(|check| check.name)
            .collect();
        bail!(
            "the verdict does not hold (failed: {}); see the summary above",
            failed.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Ok once a1 and a2 serve api and the two machines serve shop and blog, one each; else
/// what is missing.
fn settled(sample: &Sample) -> Result<(), String> {
    let serving = |id: &str| {
        sample
            .server(id)
            .filter(|s| s["state"] == "serving")
            .and_then(|s| s["account"].as_str())
    };
    let mut missing = Vec::new();
    for id in PROCESSES {
        if serving(id) != Some("api") {
            missing.push(format!("{id} does not serve api yet"));
        }
    }
    let mut booted: Vec<&str> = MACHINES.into_iter().filter_map(serving).collect();
    booted.sort_unstable();
    if booted != ["blog", "shop"] {
        missing.push(format!(
            "the machines serve {booted:?}, not blog and shop yet"
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// Writes the edited config (the gateway watches the file) and says so on a pipe.
fn edit(
    site: &MachineSite,
    sample: &Sample,
    start_wall_ms: u64,
    terminal: bool,
) -> Result<Edit, String> {
    let machine = MACHINES
        .iter()
        .find(|id| sample.server(id).is_some_and(|s| s["account"] == "shop"))
        .ok_or("no machine serves shop at the edit")?;
    let epoch_before = sample
        .server(machine)
        .and_then(|s| s["epoch"].as_u64())
        .ok_or_else(|| format!("{machine} has no epoch in /v1/servers"))?;
    site.write_config_with_images(&accounts_after(), &IMAGES)?;
    let wall = wall_ms();
    if !terminal {
        println!(
            "  edit  t+{:.1}s: {EDIT}, written to {} (the gateway watches it): {machine} leaves shop (e{epoch_before}) for blog",
            wall.saturating_sub(start_wall_ms) as f64 / 1000.0,
            site.config.display()
        );
    }
    Ok(Edit {
        wall_ms: wall,
        change: EDIT.to_owned(),
        machine: (*machine).to_owned(),
        from: "shop".to_owned(),
        to: "blog".to_owned(),
        epoch_before,
    })
}

/// The machine of `edit` serves the new account under a higher epoch.
fn moved(sample: &Sample, edit: &Edit) -> bool {
    sample.server(&edit.machine).is_some_and(|s| {
        s["state"] == "serving"
            && s["account"] == edit.to.as_str()
            && s["epoch"].as_u64().is_some_and(|e| e > edit.epoch_before)
    })
}

/// The status line of the table.
fn status(stage: &Stage, start_wall_ms: u64) -> String {
    match stage {
        Stage::Starting => format!(
            "starting: {} boot shop's and blog's images, {} start api",
            MACHINES.join(" and "),
            PROCESSES.join(" and ")
        ),
        Stage::Settled { .. } => {
            format!("every account serves; the live edit comes next: {EDIT}")
        }
        Stage::Moving { edit, .. } => format!(
            "edit at {} ({EDIT}): {} moves {} e{} → {}",
            clock(Duration::from_millis(
                edit.wall_ms.saturating_sub(start_wall_ms)
            )),
            edit.machine,
            edit.from,
            edit.epoch_before,
            edit.to
        ),
        Stage::Moved { edit, .. } => format!(
            "{} moved {} e{} → {}: drained, powered off, re-imaged, booted",
            edit.machine, edit.from, edit.epoch_before, edit.to
        ),
    }
}

/// Redraws the table on a terminal; elsewhere prints a line, and each new audit record
/// once.
fn show(sample: &Sample, elapsed: Duration, status: &str, terminal: bool, last: &mut Option<u64>) {
    let mut out = std::io::stdout().lock();
    if terminal {
        let _ = write!(
            out,
            "{}{}",
            super::table::CLEAR,
            machines_table::render(elapsed, status, sample)
        );
    } else {
        let _ = writeln!(out, "{}", machines_table::compact(elapsed, status, sample));
        for line in machines_table::new_audit_lines(sample, last) {
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = out.flush();
}

/// SIGTERM to the process servers' node agents (they stop their workloads and log it),
/// then the gateway; the machines' agents go with their power when the site is dropped.
fn stop(site: &mut MachineSite) {
    for (_, node) in &site.nodes {
        let _ = node.signal(Signal::SIGTERM);
    }
    for (_, node) in &mut site.nodes {
        node.stop(Duration::from_secs(4));
    }
    if let Some(gateway) = site.gateway.as_mut() {
        gateway.stop(Duration::from_secs(5));
    }
}

/// Every live process this demo's guards started, by the marker in its environment.
fn ours() -> Vec<Started> {
    let me = std::process::id().to_string();
    marked_processes()
        .into_iter()
        .filter(|(_, marker)| marker.split_once('.').is_some_and(|(owner, _)| owner == me))
        .map(|(pid, _)| Started {
            name: command_line(pid).map_or("?".to_owned(), |line| describe(&line)),
            pid,
        })
        .collect()
}

/// `leasehold node run`, `python3 quirky_bmc.py`: a command line's first words, without
/// their folders, up to its first option.
fn describe(line: &str) -> String {
    let words: Vec<&str> = line
        .split_whitespace()
        .take_while(|word| !word.starts_with('-'))
        .take(3)
        .map(|word| word.rsplit('/').next().unwrap_or(word))
        .collect();
    words.join(" ")
}

/// The agent, workloads and workload guards a node event log records, added to `all`.
fn logged_processes(work: &Path, all: &mut Vec<Started>) {
    let Ok(events) = node_events(work) else {
        return;
    };
    let name = work
        .file_name()
        .map_or(String::new(), |name| name.to_string_lossy().into_owned());
    let mut add = |what: String, pid: u32| {
        if !all.iter().any(|p| p.pid == pid) {
            all.push(Started { name: what, pid });
        }
    };
    for event in events {
        match event.kind {
            EventKind::AgentStarted { agent_pid } => add(format!("node agent {name}"), agent_pid),
            EventKind::WorkloadStarted {
                account, pid, pgid, ..
            } => {
                add(format!("workload {name} {account}"), pid);
                add(format!("workload guard {name} {account}"), pgid);
            }
            _ => {}
        }
    }
}
