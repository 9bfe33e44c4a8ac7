//! `leasehold demo`: the example federation of configs/ on this machine, as real
//! processes (a gateway per site, a node agent per server, a real HTTP workload on every
//! server that is serving), under a changing request load that makes servers move inside a
//! site and be lent between sites, shown live, and judged at the end from the evidence the
//! processes leave. docs/demo.md says what it runs and how to read it.

mod federation;
mod loans;
mod report;
mod run;
mod schedule;
mod site;
mod summary;
mod table;
mod work;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use leasehold_site_gateway::config::{self, SiteConfig};

use work::{Work, watch_signals};

/// The example federation's files, checked together.
const FILES: [&str; 3] = ["site-a.toml", "site-b.toml", "site-c.toml"];
/// Exit code for refused configs (EX_CONFIG), as `leasehold config check` uses.
const EXIT_CONFIG: u8 = 78;
/// Exit code after Ctrl-C (128 + SIGINT), when nothing unsafe was found.
const EXIT_INTERRUPTED: u8 = 130;

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
    /// Where certificates, the gateways' journals, node work dirs and logs go; must be new
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
    let configs = schedule_sites(&sites, &args)?;
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
    let interrupt = Arc::new(AtomicBool::new(false));
    watch_signals(interrupt.clone())?;
    let binary = std::env::current_exe().context("cannot find the leasehold binary itself")?;

    let outcome = run::run_federation(&binary, &configs, &work.path, &args, &interrupt);
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
