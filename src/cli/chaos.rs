//! `leasehold chaos`: a seeded fault campaign on a federation of real processes on this
//! machine (chaos-tests' `campaign`), judged from the evidence the processes leave, with a
//! JSON report and a summary. Exits 1 when it fails (the report's `outcome` says how, and
//! stderr why, with the evidence and the kept files), 130 or 143 when Ctrl-C or SIGTERM
//! stopped it (every process it started stopped, its files kept). docs/chaos.md says what
//! it runs and how to read the report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use leasehold_chaos_tests::campaign::report::Outcome;
use leasehold_chaos_tests::campaign::runner::{CampaignOptions, run_campaign};
use leasehold_chaos_tests::campaign::schedule::{Fault, Scenario, schedule};
use leasehold_chaos_tests::harness::interrupt;
use nix::sys::signal::Signal;

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// The faults to draw from: all, compound (pairs of overlapping faults), gateway-kill,
    /// gateway-pause, node-kill, workload-kill, partition, slow-network, restart,
    /// config-edit, members (a spare site added to the members and removed, a founder's
    /// gateway killed meanwhile), or one kind (e.g. partition-one-way, stale-grant).
    #[arg(long, value_name = "NAME")]
    scenario: String,
    /// The seed of the fault schedule: the same seed, the same faults at the same times.
    #[arg(long, value_name = "N")]
    seed: u64,
    /// How long the load runs and faults are drawn for (start-up comes on top); a soak is
    /// a larger duration.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    duration: u64,
    /// Where to write the JSON report.
    #[arg(long, value_name = "FILE", required_unless_present = "plan")]
    report: Option<PathBuf>,
    /// Print the fault schedule the seed gives and exit, starting nothing.
    #[arg(long)]
    plan: bool,
    /// How many sites (3 or more); with `members`, the founders, and a spare on top.
    #[arg(long, value_name = "N", default_value_t = 3)]
    sites: usize,
}

pub fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let scenario = Scenario::parse(&args.scenario)?;
    if args.plan {
        let faults = schedule(&scenario, args.seed, args.duration * 1000, args.sites)?;
        print!("{}", plan(&faults));
        return Ok(ExitCode::SUCCESS);
    }
    let report_path = args
        .report
        .clone()
        .context("--report FILE is needed to run a campaign")?;
    // From here on Ctrl-C and SIGTERM stop the campaign cleanly instead of killing this
    // process with its federation still running.
    interrupt::watch("leasehold chaos").map_err(anyhow::Error::msg)?;
    let binary = std::env::current_exe().context("cannot find the leasehold binary itself")?;
    let options = CampaignOptions {
        binary,
        scenario,
        seed: args.seed,
        duration: Duration::from_secs(args.duration),
        sites: args.sites,
        report: report_path.clone(),
    };
    let mut report =
        run_campaign(&options).map_err(|error| anyhow!("the campaign could not run: {error}"))?;
    if let Some(picture) = report.timeline_svg.take() {
        let path = report_path.with_extension("svg");
        std::fs::write(&path, picture)
            .with_context(|| format!("cannot write the timeline to {}", path.display()))?;
        report.timeline = Some(path.display().to_string());
    }
    std::fs::write(&report_path, report.to_json())
        .with_context(|| format!("cannot write the report to {}", report_path.display()))?;
    print!("{}", report.summary());
    println!("report: {}", report_path.display());
    if let Some(timeline) = &report.timeline {
        println!("timeline: {timeline}");
    }
    eprint!("{}", report.failure());
    if report.outcome == Outcome::Interrupted {
        eprintln!("chaos: every process the campaign started has been stopped");
        let signal = interrupt::requested().unwrap_or(Signal::SIGINT);
        return Ok(ExitCode::from(interrupt::exit_code(signal)));
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The schedule as a table: one line per fault, a compound episode's second fault marked
/// `+`.
fn plan(faults: &[Fault]) -> String {
    let mut out = format!(
        " {:>2}  {:<20} {:<18} {:>8} {:>8}\n",
        "#", "fault", "target", "start s", "end s"
    );
    for (ix, fault) in faults.iter().enumerate() {
        let overlaps = ix > 0 && faults[ix - 1].episode == fault.episode;
        let kind = if overlaps {
            format!("+ {}", fault.kind)
        } else {
            fault.kind.to_string()
        };
        out.push_str(&format!(
            " {:>2}  {:<20} {:<18} {:>8.1} {:>8.1}\n",
            ix + 1,
            kind,
            fault.target.to_string(),
            fault.start_ms as f64 / 1000.0,
            fault.end_ms as f64 / 1000.0
        ));
    }
    out
}
