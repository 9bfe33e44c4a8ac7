//! `leasehold replay`: a site's production decision code over a demand trace, in virtual
//! time, beside what any policy must lose and what a split with no moves loses; with
//! `--against`, two configs side by side. `leasehold trace generate`: the seeded trace.
//! docs/replay.md.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use leasehold_replay::generate::{Shape, generate, site_config};
use leasehold_replay::report::{Report, report};
use leasehold_replay::trace::Trace;
use leasehold_replay::world::{Pace, replay, slas};
use leasehold_site_gateway::config::load_site;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The site's config: its servers, accounts and timings.
    #[arg(long, value_name = "SITE.toml")]
    config: PathBuf,
    /// The demand trace (`leasehold-trace/1`, docs/replay.md).
    #[arg(long, value_name = "FILE")]
    trace: PathBuf,
    /// Also replay this config on the same trace, and show the two side by side (what an
    /// edit from it to --config would have done).
    #[arg(long, value_name = "OLD.toml")]
    against: Option<PathBuf>,
    /// Where to write the JSON report (with --against: the --config run's).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// From a pointer accepted to the workload joined: a process start, a re-image.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    reinit_ms: u64,
    /// The master's round, as the gateway runs it.
    #[arg(long, value_name = "MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    round_ms: u64,
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    command: TraceCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TraceCommand {
    /// Write a seeded trace: a daily cycle, bursts and flash crowds, per account.
    Generate {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 6,
              value_parser = clap::value_parser!(u64).range(1..=1000))]
        accounts: u64,
        #[arg(long, default_value_t = 24,
              value_parser = clap::value_parser!(u64).range(1..=24 * 366))]
        hours: u64,
        #[arg(long, default_value_t = 60,
              value_parser = clap::value_parser!(u64).range(1..=86_400))]
        step_s: u64,
        /// Where to write it [default: standard output].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Fetch the demand a running gateway measured since it started, as a trace
    /// (`GET /v1/demand-trace`), to replay with the site's own config.
    Export {
        #[command(flatten)]
        admin: super::admin_client::AdminArgs,
        /// Where to write it [default: standard output].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Write a site config to replay a trace on: its accounts with their SLA fields, and
    /// --servers servers.
    Site {
        #[arg(long, value_name = "FILE")]
        trace: PathBuf,
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        servers: u32,
        /// Where to write it [default: standard output].
        #[arg(long, value_name = "SITE.toml")]
        out: Option<PathBuf>,
    },
}

pub fn run_trace(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let (text, out) = match args.command {
        TraceCommand::Generate {
            seed,
            accounts,
            hours,
            step_s,
            out,
        } => {
            let shape = Shape {
                seed,
                accounts: accounts as usize,
                hours,
                step_s,
            };
            (generate(shape).to_text(), out)
        }
        TraceCommand::Export { admin, out } => {
            let gateway = super::admin_client::Gateway::new(&admin)?;
            let mut bytes = Vec::new();
            gateway.download("/v1/demand-trace", &mut bytes)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("the gateway's demand trace is not UTF-8"))?;
            let trace = Trace::parse(&text).map_err(|(line, detail)| {
                anyhow::anyhow!(
                    "the demand trace of {} is not a trace: line {line}: {detail}{}",
                    gateway.url(),
                    if text.lines().count() <= 1 {
                        " (a gateway writes its first step a minute after it starts)"
                    } else {
                        ""
                    }
                )
            })?;
            eprintln!(
                "{} steps of {} s ({} accounts) from {}",
                trace.steps.len(),
                trace.header.step_s,
                trace.header.accounts.len(),
                gateway.url()
            );
            (text, out)
        }
        TraceCommand::Site {
            trace,
            servers,
            out,
        } => {
            let trace = Trace::read(&trace)?;
            (site_config(&trace, "replay", servers), out)
        }
    };
    match out {
        Some(path) => std::fs::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let trace = Trace::read(&args.trace)?;
    let pace = Pace {
        round: Duration::from_millis(args.round_ms),
        reinit: Duration::from_millis(args.reinit_ms),
    };
    let new = one(&args.config, &args.trace, &trace, pace)?;
    if let Some(path) = &args.report {
        std::fs::write(path, new.to_json())
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    match &args.against {
        None => print!("{}", new.table()),
        Some(old) => {
            let old = one(old, &args.trace, &trace, pace)?;
            print!("{}", side_by_side(&old, &new));
        }
    }
    if let Some(path) = &args.report {
        println!("report: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One config's replay, with its bounds.
fn one(config_path: &Path, trace_path: &Path, trace: &Trace, pace: Pace) -> anyhow::Result<Report> {
    let config = load_site(config_path).map_err(|errors| {
        anyhow::anyhow!("{errors}\nthe config was refused; fix it and replay again")
    })?;
    let slas = slas(&config, trace)?;
    let servers = config.servers.len() as u32;
    eprintln!(
        "replay: {} on {} ({} servers, {} accounts), {} s of trace",
        trace_path.display(),
        config_path.display(),
        servers,
        slas.len(),
        trace.duration_s()
    );
    let started = std::time::Instant::now();
    let run = replay(&config, trace, pace, |done_s| {
        eprintln!(
            "  {:.0} of {:.0} h replayed ({:.1} s)",
            done_s as f64 / 3600.0,
            trace.duration_s() as f64 / 3600.0,
            started.elapsed().as_secs_f64()
        );
    })?;
    eprintln!(
        "  done: {} rounds in {:.1} s",
        run.rounds,
        started.elapsed().as_secs_f64()
    );
    Ok(report(
        (
            &trace_path.display().to_string(),
            &config_path.display().to_string(),
        ),
        trace,
        &slas,
        servers,
        pace,
        &run,
    ))
}

/// What the edit from `old` to `new` would have done, per account.
fn side_by_side(old: &Report, new: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replay of {} ({} s): {} (old) against {} (new)\n",
        new.trace, new.duration_s, old.config, new.config
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>10} {:>10} {:>14} {:>14} {:>9} {:>9}",
        "account", "old sla", "new sla", "old viol. s", "new viol. s", "old moves", "new moves"
    );
    let mut names: Vec<&str> = old.accounts.iter().map(|a| a.name.as_str()).collect();
    for account in &new.accounts {
        if !names.contains(&account.name.as_str()) {
            names.push(&account.name);
        }
    }
    for name in names {
        let find = |report: &Report| report.accounts.iter().find(|a| a.name == name).cloned();
        let (was, is) = (find(old), find(new));
        let sla = |account: &Option<leasehold_replay::report::AccountReport>| {
            account.as_ref().map_or("-".to_owned(), |a| {
                format!("{}..{} p{}", a.min_servers, a.max_servers, a.priority)
            })
        };
        let figure = |account: &Option<leasehold_replay::report::AccountReport>| {
            account
                .as_ref()
                .map_or("-".to_owned(), |a| format!("{:.1}", a.violation_server_s))
        };
        let moves = |account: &Option<leasehold_replay::report::AccountReport>| {
            account
                .as_ref()
                .map_or("-".to_owned(), |a| a.moves.to_string())
        };
        let _ = writeln!(
            out,
            "  {:<10} {:>10} {:>10} {:>14} {:>14} {:>9} {:>9}",
            name,
            sla(&was),
            sla(&is),
            figure(&was),
            figure(&is),
            moves(&was),
            moves(&is)
        );
    }
    let _ = writeln!(
        out,
        "\n  total violation, server-seconds: {:.1} (old) -> {:.1} (new); moves {} -> {}; lower bound {:.1} -> {:.1}",
        old.violation_server_s,
        new.violation_server_s,
        old.moves,
        new.moves,
        old.lower_bound_server_s,
        new.lower_bound_server_s
    );
    out
}
