//! `leasehold bench takeover`: how long a site of standby gateways (docs/ha.md) goes
//! without renewals when the gateway that acts dies. A real etcd of three members on
//! loopback (Debian's `etcd-server`), a site of two gateways of this build and a node
//! agent per server, given both; kill -9 of the active gateway, `--kills` times, each
//! timed from the kill to the moment every node's event log shows a lease extended since
//! (only the new active can have extended it), on one clock (CLOCK_MONOTONIC). The killed
//! gateway is started again as a standby before the next kill.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use leasehold_chaos_tests::harness::etcd::{EtcdCluster, etcd_available};
use leasehold_chaos_tests::harness::evidence::node_events;
use leasehold_chaos_tests::harness::interrupt;
use leasehold_chaos_tests::harness::onesite::account;
use leasehold_chaos_tests::harness::standby_site::StandbySite;
use leasehold_node::event_log::EventKind;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct TakeoverArgs {
    /// kill -9 of the active gateway, this many times.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    kills: u32,
    /// Servers in the site, each with a node agent (one account per server).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    servers: u32,
    /// The nodes' lease TTL; the config check asks for more than the etcd lease (2 s)
    /// plus 3 s.
    #[arg(long, default_value_t = 8_000)]
    lease_ttl_ms: u64,
    /// Where the site's files go (must be new or empty) [default: a temporary dir, removed
    /// at the end].
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
}

pub fn run(args: &TakeoverArgs) -> anyhow::Result<ExitCode> {
    etcd_available().map_err(|error| anyhow::anyhow!("{error}"))?;
    interrupt::watch("leasehold bench takeover").map_err(anyhow::Error::msg)?;
    let binary = std::env::current_exe().context("cannot find the leasehold binary itself")?;
    let (dir, _temporary) = super::work_dir(args.work.as_deref())?;
    eprintln!(
        "bench takeover: {} kill -9 of the active gateway of a site of two, {} servers, node lease {} ms, etcd of 3 members, on {} cores; files in {}",
        args.kills,
        args.servers,
        args.lease_ttl_ms,
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
        dir.display()
    );
    let etcd = EtcdCluster::start(&dir.join("etcd"), 3).map_err(anyhow::Error::msg)?;
    let servers: Vec<String> = (1..=args.servers).map(|n| format!("a{n}")).collect();
    let accounts = (1..=args.servers)
        .map(|n| account(&format!("acct{n}"), 1, 1, 10))
        .collect();
    let mut site = StandbySite::prepare(
        &binary,
        &dir,
        &etcd.endpoints(),
        &servers,
        accounts,
        args.lease_ttl_ms,
    )
    .map_err(anyhow::Error::msg)?;
    let mut acting = site.start_gateways().map_err(anyhow::Error::msg)?;
    site.start_nodes().map_err(anyhow::Error::msg)?;
    let placed = site
        .wait_placement(acting, "every server serving")
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "  {} serving under {}",
        placed.len(),
        site.gateways[acting].name
    );
    let mut takeovers = Vec::new();
    for kill in 1..=args.kills {
        let killed = acting;
        let (next, took) = site.kill_active(killed).map_err(anyhow::Error::msg)?;
        let now = site
            .wait_placement(next, "the placement under the new active")
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            now == placed,
            "kill {kill}: the placement changed: {placed:?} before, {now:?} after"
        );
        eprintln!(
            "  kill {kill} of {}: {} took over, every node renewed {} ms after the kill",
            args.kills,
            site.gateways[next].name,
            took.as_millis()
        );
        takeovers.push(took);
        site.restart_standby(killed).map_err(anyhow::Error::msg)?;
        acting = next;
    }
    let stopped = workloads_stopped(&site, &servers)?;
    println!("{}", summary(args, &takeovers, stopped));
    Ok(ExitCode::SUCCESS)
}

/// Workloads the node agents stopped, from their event logs: a takeover should stop none.
fn workloads_stopped(site: &StandbySite, servers: &[String]) -> anyhow::Result<usize> {
    let mut stopped = 0;
    for server in servers {
        let work: &Path = &site.site.work(server);
        stopped += node_events(work)
            .map_err(anyhow::Error::msg)?
            .iter()
            .filter(|event| matches!(event.kind, EventKind::WorkloadStopped { .. }))
            .count();
    }
    Ok(stopped)
}

/// One JSON line: the takeovers' percentiles in ms.
fn summary(args: &TakeoverArgs, takeovers: &[Duration], workloads_stopped: usize) -> Value {
    let mut ms: Vec<f64> = takeovers
        .iter()
        .map(|took| took.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
        (ms[rank - 1]).round()
    };
    json!({
        "kills": args.kills,
        "servers": args.servers,
        "node_lease_ttl_ms": args.lease_ttl_ms,
        "etcd_lease_ttl_s": leasehold_site_gateway::config::EtcdStore::DEFAULT_LEASE_TTL_S,
        "takeover_ms": {"min": pick(0.0), "p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)},
        "workloads_stopped": workloads_stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks_of_the_sorted_takeovers() {
        let args = TakeoverArgs {
            kills: 4,
            servers: 2,
            lease_ttl_ms: 8_000,
            work: None,
        };
        let takeovers = [2_400, 2_100, 3_900, 2_200].map(Duration::from_millis);
        let line = summary(&args, &takeovers, 0);
        assert_eq!(line["takeover_ms"]["min"], 2100.0);
        assert_eq!(line["takeover_ms"]["p50"], 2200.0);
        assert_eq!(line["takeover_ms"]["p99"], 3900.0);
        assert_eq!(line["takeover_ms"]["max"], 3900.0);
        assert_eq!(line["workloads_stopped"], 0);
    }
}
