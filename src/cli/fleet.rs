//! `leasehold fleet`: many simulated servers in one process, each speaking the real
//! management protocol with its own node certificate (see docs/fleet.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use leasehold_federation::ids::SiteId;
use leasehold_node::fleet::load::LoadModel;
use leasehold_node::fleet::{FleetOptions, run_fleet};

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// The site gateway's management address.
    #[arg(long, value_name = "ADDR")]
    pub gateway: SocketAddr,
    /// How many simulated servers to run.
    #[arg(long, value_name = "N")]
    pub count: usize,
    /// Directory made by `leasehold certs`; each server uses DIR/nodes/<id>.crt, and
    /// missing ones are issued when DIR/ca.key is there.
    #[arg(long, value_name = "DIR")]
    pub certs: PathBuf,
    /// Server ids are <PREFIX><FROM> .. <PREFIX><FROM+N-1>; they must be in the gateway's
    /// inventory.
    #[arg(long, value_name = "PREFIX", default_value = "f")]
    pub prefix: String,
    #[arg(long, value_name = "FROM", default_value_t = 1)]
    pub from: u64,
    /// Seed of the simulated start times and the load curves' phases.
    #[arg(long, value_name = "SEED", default_value_t = 1)]
    pub seed: u64,
    /// Simulated workload start time; each start is drawn in [MS/2, 3·MS/2).
    #[arg(long, value_name = "MS", default_value_t = 30)]
    pub start_ms: u64,
    /// Load each serving server reports: `flat:VALUE`, or `sine:MEAN:PERIOD_S` (an
    /// account's total, split across its servers in this fleet).
    #[arg(long, value_name = "MODEL", default_value = "sine:10:60")]
    pub load: LoadModel,
    /// The site to issue missing node certificates for [default: from the existing
    /// certificates].
    #[arg(long, value_name = "SITE")]
    pub site: Option<SiteId>,
    /// Write each server's event log to DIR/<id>/events.jsonl (the agent's format).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
}

pub fn run(args: FleetArgs) -> anyhow::Result<ExitCode> {
    run_fleet(FleetOptions {
        gateway: args.gateway,
        count: args.count,
        certs: args.certs,
        prefix: args.prefix,
        from: args.from,
        seed: args.seed,
        start: Duration::from_millis(args.start_ms),
        load: args.load,
        site: args.site,
        work: args.work,
    })?;
    Ok(ExitCode::SUCCESS)
}
