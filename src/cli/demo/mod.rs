//! `leasehold demo`: the example federation of configs/ on this machine, as real
//! processes (a gateway per site, a node agent per server, a real HTTP workload on every
//! server that is serving), under a changing request load that makes servers move inside a
//! site and be lent between sites, shown live, and judged at the end from the evidence the
//! processes leave. With `--machines` it runs one site whose servers include machines
//! behind an emulated Redfish BMC instead, and shows one of them re-imaged for another
//! account (machines.rs). docs/demo.md says what each runs and how to read it.

mod failover;
mod federation;
mod follow;
mod loans;
mod machines;
mod machines_summary;
mod machines_table;
mod report;
mod run;
mod schedule;
mod site;
mod summary;
mod table;
mod work;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use leasehold_site_gateway::config::{self, SiteConfig};

use leasehold_chaos_tests::harness::interrupt;
use work::Work;

/// The example federation's files, checked together.
const FILES: [&str; 3] = ["site-a.toml", "site-b.toml", "site-c.toml"];
/// Exit code for refused configs (EX_CONFIG), as `leasehold config check` uses.
const EXIT_CONFIG: u8 = 78;
/// Exit code for refused arguments, as clap uses for the ones it refuses itself.
const EXIT_USAGE: u8 = 2;
/// How long the load runs by default (the federation demo).
const DEFAULT_DURATION: u64 = 90;
/// How long the live view of `--machines` runs at least, by default.
const DEFAULT_MACHINES_DURATION: u64 = 20;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How long to drive the load, in seconds (start-up and shutdown come on top)
    /// [default: 90]. With --machines: how long the live view runs at least; the re-image
    /// is always waited for [default: 20].
    #[arg(long, value_name = "SECONDS")]
    duration: Option<u64>,
    /// Write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The folder with site-a.toml, site-b.toml and site-c.toml (not with --machines,
    /// which writes its own site).
    #[arg(long, value_name = "DIR", default_value = "configs")]
    configs: PathBuf,
    /// Where certificates, the gateways' journals, node work dirs and logs go; must be new
    /// or empty [default: a fresh temporary dir, removed at the end unless --keep].
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
    /// Keep the temporary work dir (logs, journal, event logs) after the run.
    #[arg(long)]
    keep: bool,
    /// Kill this site's gateway with SIGKILL during the run (its node agents run on), to
    /// show its accounts taken over by the next sites of their failover lists.
    #[arg(long, value_name = "NAME", requires = "at")]
    kill_site: Option<String>,
    /// When to kill --kill-site's gateway, in seconds after the load starts (less than
    /// --duration).
    #[arg(long, value_name = "SECONDS", requires = "kill_site")]
    at: Option<u64>,
    /// Run one site whose servers include machines (an emulated Redfish BMC, network
    /// boot) instead of the federation, and show one re-imaged for another account.
    /// Needs the sushy-tools Redfish emulator (python3 -m pip install sushy-tools==2.2.0).
    #[arg(long, conflicts_with_all = ["kill_site", "at", "configs"])]
    machines: bool,
}

impl DemoArgs {
    /// `--duration`, or the default of the demo asked for.
    fn duration(&self) -> u64 {
        let default = if self.machines {
            DEFAULT_MACHINES_DURATION
        } else {
            DEFAULT_DURATION
        };
        self.duration.unwrap_or(default)
    }

    /// The site to kill and when, once `check_args` has accepted them.
    fn kill(&self) -> Option<failover::KillPlan> {
        let (site, at) = (self.kill_site.clone()?, self.at?);
        Some(failover::KillPlan {
            site,
            at: std::time::Duration::from_secs(at),
        })
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if let Err(error) = check_args(&args, None) {
        eprintln!("error: {error}");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    if args.machines {
        return machines::run(&args);
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
    let configs = schedule_sites(&sites, &args)?;
    let names: Vec<&str> = configs.iter().map(|c| c.site.name.as_str()).collect();
    if let Err(error) = check_args(&args, Some(&names)) {
        eprintln!("error: {error}");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    for site in &sites {
        println!("config ok  {}", site.summary());
    }
    let servers: usize = configs.iter().map(|c| c.servers.len()).sum();
    println!(
        "running the federation: {} gateways and {servers} node agents",
        configs.len()
    );
    site::check_ports(&configs)?;

    let work = Work::prepare(args.work.as_deref(), args.keep)?;
    println!("work dir: {}", work.path.display());
    // Ctrl-C and SIGTERM end the run early, with the summary and every child stopped (the
    // children are in process groups of their own, so the terminal's Ctrl-C reaches only
    // the demo).
    interrupt::watch("leasehold demo").map_err(anyhow::Error::msg)?;
    let binary = std::env::current_exe().context("cannot find the leasehold binary itself")?;

    let outcome = run::run_federation(&binary, &configs, &work.path, &args);
    Ok(conclude(work, outcome))
}

/// The exit code of a run that has ended (every process stopped by then), and what to keep
/// of its work dir: all of it after a failure or an interrupt.
fn conclude(work: Work, outcome: anyhow::Result<ExitCode>) -> ExitCode {
    if let Some(signal) = interrupt::requested() {
        // Whatever the run got to, its files are what a person stopping it may want.
        println!(
            "{}: every process the demo started was stopped; files kept in {}",
            signal.as_str(),
            work.path.display()
        );
        work.keep_after_failure();
        return match outcome {
            // The run's own code: 1 if it found something unsafe, else 128 + the signal.
            Ok(code) => code,
            Err(error) => {
                eprintln!("stopped while starting: {error:#}");
                ExitCode::from(interrupt::exit_code(signal))
            }
        };
    }
    let code = match outcome {
        Ok(code) => code,
        Err(error) => {
            // The guards have already stopped every process; the logs say why it failed.
            eprintln!("error: {error:#}");
            eprintln!("the logs of every process are in {}", work.path.display());
            work.keep_after_failure();
            return ExitCode::FAILURE;
        }
    };
    work.finish();
    code
}

/// What clap cannot check: a duration of at least 1 s, `--at` within it, and (once the
/// configs are read, `sites`) a `--kill-site` that names one of the sites.
fn check_args(args: &DemoArgs, sites: Option<&[&str]>) -> Result<(), String> {
    let duration = args.duration();
    if duration == 0 {
        return Err("--duration must be at least 1 second".to_owned());
    }
    if let Some(at) = args.at
        && at >= duration
    {
        return Err(format!(
            "--at {at} is not within the load's --duration {duration}: the kill must come while the load runs (0 to {} s)",
            duration - 1
        ));
    }
    if let (Some(site), Some(sites)) = (&args.kill_site, sites)
        && !sites.contains(&site.as_str())
    {
        return Err(format!(
            "--kill-site {site}: no such site in the demo; it runs {}",
            sites.join(", ")
        ));
    }
    Ok(())
}

/// The sites to run, in the order of `FILES`, each checked to home the accounts the load
/// schedule drives there.
fn schedule_sites<'a>(
    sites: &'a [SiteConfig],
    args: &DemoArgs,
) -> anyhow::Result<Vec<&'a SiteConfig>> {
    let mut configs = Vec::new();
    for file in FILES {
        let name = file.trim_end_matches(".toml");
        let Some(config) = sites.iter().find(|s| s.site.name.as_str() == name) else {
            bail!(
                "{} does not define the site {name}; the demo runs site-a, site-b and site-c, one per file",
                args.configs.join(file).display()
            );
        };
        configs.push(config);
    }
    for (site, account) in schedule::ACCOUNTS {
        let config = configs.iter().find(|c| c.site.name.as_str() == site);
        if !config.is_some_and(|c| c.accounts.iter().any(|a| a.name.as_str() == account)) {
            bail!(
                "the demo's load schedule drives {account} at {site}; {} homes no account {account}: restore it, or run the demo with configs that have it (--configs)",
                args.configs.join(format!("{site}.toml")).display()
            );
        }
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    fn parse(args: &[&str]) -> Result<DemoArgs, clap::Error> {
        let all = std::iter::once("demo").chain(args.iter().copied());
        Cli::try_parse_from(all).map(|cli| cli.demo)
    }

    const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

    #[test]
    fn machines_refuse_a_kill_and_have_a_shorter_default_duration() {
        for args in [
            &["--machines", "--kill-site", "site-a", "--at", "5"][..],
            &["--machines", "--at", "5", "--kill-site", "site-a"][..],
            &["--machines", "--configs", "configs"][..],
        ] {
            let error = parse(args).unwrap_err();
            assert_eq!(error.exit_code(), i32::from(EXIT_USAGE), "{error}");
            assert!(error.to_string().contains("cannot be used with"), "{error}");
        }
        let args = parse(&["--machines"]).unwrap();
        assert_eq!(args.duration(), DEFAULT_MACHINES_DURATION);
        assert_eq!(parse(&[]).unwrap().duration(), DEFAULT_DURATION);
        let args = parse(&["--machines", "--duration", "0"]).unwrap();
        assert!(check_args(&args, None).is_err());
    }

    #[test]
    fn a_kill_needs_a_site_and_a_time_within_the_duration() {
        let error = parse(&["--at", "20"]).unwrap_err();
        assert_eq!(error.exit_code(), i32::from(EXIT_USAGE));
        assert!(error.to_string().contains("--kill-site <NAME>"), "{error}");
        let error = parse(&["--kill-site", "site-a"]).unwrap_err();
        assert!(error.to_string().contains("--at <SECONDS>"), "{error}");

        let args = parse(&["--duration", "60", "--kill-site", "site-a", "--at", "60"]).unwrap();
        let error = check_args(&args, None).unwrap_err();
        assert!(
            error.contains("--at 60 is not within the load's --duration 60"),
            "{error}"
        );

        let args = parse(&["--kill-site", "site-x", "--at", "20"]).unwrap();
        assert_eq!(check_args(&args, None), Ok(()));
        let error = check_args(&args, Some(&SITES)).unwrap_err();
        assert!(
            error.contains("--kill-site site-x: no such site"),
            "{error}"
        );
        assert!(error.contains("site-a, site-b, site-c"), "{error}");

        let args = parse(&["--duration", "60", "--kill-site", "site-a", "--at", "20"]).unwrap();
        assert_eq!(check_args(&args, Some(&SITES)), Ok(()));
        let plan = args.kill().unwrap();
        assert_eq!((plan.site.as_str(), plan.at.as_secs()), ("site-a", 20));
        assert_eq!(parse(&[]).unwrap().kill(), None);
    }
}
