//! `leasehold sim`: the deterministic simulation of a whole federation (chaos-tests' `sim`):
//! the production site and node cores on a virtual clock, faults from one seed, the
//! invariants judged from the evidence after every event. Exits 1 when an invariant
//! failed, with the seed, the simulated time, the last events and the command that
//! replays it. docs/chaos.md says what it simulates and checks.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use leasehold_chaos_tests::sim::{MembersOperator, Plant, SimOptions, SimReport, run};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// The seed: the same seed, the same run, event for event.
    #[arg(long, value_name = "N", conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Many seeds, `A..B` inclusive, one run each; the report is the worst.
    #[arg(long, value_name = "A..B")]
    seeds: Option<String>,
    /// Run until this many faults were injected (then a calm, then the liveness check).
    #[arg(long, value_name = "K", default_value_t = 1000)]
    faults: u64,
    #[arg(long, value_name = "S", default_value_t = 3)]
    sites: usize,
    #[arg(long, value_name = "M", default_value_t = 3)]
    servers_per_site: usize,
    /// Where to write the JSON report.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Two spare sites are added and removed meanwhile, by an operator who changes the
    /// members one-at-a-time (docs/ownership.md's procedure) or two-at-once (refused by
    /// the members' rules; with --plant members-many-at-once, taken).
    #[arg(long, value_name = "OPERATOR")]
    members: Option<String>,
    /// A bug to plant (debug builds only): renew-without-majority, skip-epoch-check,
    /// drop-journal-write, members-many-at-once.
    #[arg(long, value_name = "NAME")]
    plant: Option<String>,
    /// Write every event, fault and decision to this file (one seed only): what to read
    /// when a seed fails.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
}

fn seeds(args: &SimArgs) -> anyhow::Result<RangeInclusive<u64>> {
    match (&args.seed, &args.seeds) {
        (Some(seed), None) => Ok(*seed..=*seed),
        (None, Some(range)) => {
            let Some((from, to)) = range.split_once("..") else {
                bail!("--seeds {range}: expected A..B, e.g. --seeds 1..1000");
            };
            let parse = |text: &str| {
                text.trim()
                    .parse::<u64>()
                    .with_context(|| format!("--seeds {range}: `{text}` is not a number"))
            };
            let (from, to) = (parse(from)?, parse(to)?);
            if from > to {
                bail!("--seeds {range}: the first seed is after the last");
            }
            Ok(from..=to)
        }
        _ => bail!("give --seed N or --seeds A..B"),
    }
}

fn replay(args: &SimArgs, seed: u64) -> String {
    let binary = std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "leasehold".into());
    format!(
        "{binary} sim --seed {seed} --faults {} --sites {} --servers-per-site {}{}",
        args.faults,
        args.sites,
        args.servers_per_site,
        args.members
            .as_deref()
            .map_or(String::new(), |members| format!(" --members {members}"))
            + &args
                .plant
                .as_deref()
                .map_or(String::new(), |plant| format!(" --plant {plant}"))
    )
}

fn summary(report: &SimReport) -> String {
    let mut out = format!(
        "sim: seed {}: {} faults over {:.0} simulated s in {:.1} wall s ({:.0} faults/s, {} events), trace {}\n",
        report.seed,
        report.faults.values().sum::<u64>(),
        report.simulated_seconds,
        report.wall_seconds,
        report.faults.values().sum::<u64>() as f64 / report.wall_seconds.max(1e-9),
        report.events,
        report.trace_hash
    );
    for invariant in &report.invariants {
        out.push_str(&format!(
            "  {}  {}{}\n",
            if invariant.passed { "PASS" } else { "FAIL" },
            invariant.name,
            if invariant.passed {
                String::new()
            } else {
                format!(" ({} violations)", invariant.violations)
            }
        ));
        for line in invariant.evidence.iter().filter(|_| !invariant.passed) {
            out.push_str(&format!("        {line}\n"));
        }
    }
    out
}

pub fn run_sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    let range = seeds(&args)?;
    let plant = args
        .plant
        .as_deref()
        .map(Plant::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let members = args
        .members
        .as_deref()
        .map(MembersOperator::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if plant.is_some() && !cfg!(debug_assertions) {
        bail!(
            "--plant works in debug builds only (release builds do not contain the switches); run it with `cargo run -- sim ...`"
        );
    }
    if args.sites == 0 || args.servers_per_site == 0 || args.sites > 26 {
        bail!("--sites must be 1 to 26 and --servers-per-site at least 1");
    }
    if args.trace.is_some() && range.start() != range.end() {
        bail!(
            "--trace takes one seed (--seed N): a sweep would write every seed's events over each other"
        );
    }
    let mut reports: Vec<SimReport> = Vec::new();
    for seed in range {
        let options = SimOptions {
            seed,
            faults: args.faults,
            sites: args.sites,
            servers_per_site: args.servers_per_site,
            plant,
            members,
            trace: args.trace.clone(),
        };
        let report = run(&options, |progress| {
            eprintln!(
                "sim: seed {seed}: {} faults injected, {:.0} s simulated, {} events",
                progress.faults,
                progress.simulated_us as f64 / 1e6,
                progress.events
            );
        })
        .map_err(anyhow::Error::msg)?;
        print!("{}", summary(&report));
        let failed = !report.passed();
        reports.push(report);
        if failed {
            break;
        }
    }
    let worst = reports
        .iter()
        .find(|report| !report.passed())
        .or(reports.last())
        .context("no seed ran")?;
    if let Some(path) = &args.report {
        let text = if reports.len() == 1 {
            serde_json::to_string_pretty(worst)?
        } else {
            let seeds: Vec<_> = reports
                .iter()
                .map(|r| json!({"seed": r.seed, "passed": r.passed(), "trace_hash": r.trace_hash, "simulated_seconds": r.simulated_seconds, "wall_seconds": r.wall_seconds}))
                .collect();
            serde_json::to_string_pretty(&json!({"seeds": seeds, "worst": worst}))?
        };
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    if worst.passed() {
        println!("every invariant held ({} seeds)", reports.len());
        return Ok(ExitCode::SUCCESS);
    }
    match worst.stopped_at_us {
        Some(at) => {
            println!(
                "\nFAILED at seed {}, {:.6} s simulated; the last events before it:",
                worst.seed,
                at as f64 / 1e6
            );
            for line in &worst.last_events {
                println!("  {line}");
            }
        }
        // A liveness check failed: it is judged once, at the end.
        None => println!(
            "\nFAILED at seed {}, after the calm at the end of its {:.0} simulated s",
            worst.seed, worst.simulated_seconds
        ),
    }
    println!(
        "replay with:\n  {} --trace trace.txt",
        replay(&args, worst.seed)
    );
    Ok(ExitCode::FAILURE)
}
