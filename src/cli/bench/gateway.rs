//! `leasehold bench gateway`: what a gateway costs per server. It starts a gateway of this
//! build for a site of N servers and a `leasehold fleet` of N simulated servers (each its
//! own certificate, connection and node model) against it, waits until every one is
//! registered and the site has settled, then measures the gateway process from /proc
//! over a window: CPU, resident memory, and renewals answered (its /metrics). One JSON line
//! on stdout; progress on stderr. Both processes run on this machine, so the fleet's own
//! CPU is not the gateway's but competes with it for the cores.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use leasehold_chaos_tests::harness::admin::get_text;
use leasehold_chaos_tests::harness::interrupt;
use leasehold_chaos_tests::harness::onesite::gateway_args;
use leasehold_chaos_tests::harness::process::ProcessGuard;
use leasehold_chaos_tests::harness::site::{AccountSpec, PortPicker, account_text};
use leasehold_chaos_tests::harness::wait_for;
use leasehold_federation::ids::SiteId;
use leasehold_federation::transport::certs;
use leasehold_federation::transport::identity::PeerName;
use leasehold_node::fleet::stats::Usage;
use serde_json::json;

const SITE: &str = "site-a";

#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// Servers in the site, all driven by one fleet.
    #[arg(long, default_value_t = 1_000)]
    servers: u32,
    /// Seconds to measure once every server is registered and the site has settled.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds to wait after the last registration before measuring.
    #[arg(long, default_value_t = 10)]
    settle: u64,
    /// Accounts [default: one per 100 servers]; their minimums hold 80 % of the servers
    /// under leases.
    #[arg(long)]
    accounts: Option<u32>,
    /// Where the site's files go (must be new or empty) [default: a temporary dir, removed
    /// at the end].
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
}

pub fn run(args: &GatewayArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.servers > 0, "--servers must be at least 1");
    anyhow::ensure!(args.seconds > 0, "--seconds must be at least 1");
    interrupt::watch("leasehold bench gateway").map_err(anyhow::Error::msg)?;
    let binary = std::env::current_exe().context("cannot find the leasehold binary itself")?;
    let (dir, _temporary) = super::work_dir(args.work.as_deref())?;
    let servers = args.servers as usize;
    let accounts = args.accounts.unwrap_or((args.servers / 100).max(1));
    anyhow::ensure!(
        (1..=args.servers).contains(&accounts),
        "--accounts must be between 1 and --servers ({}), not {accounts}",
        args.servers
    );
    let site = Site::write(&dir, servers, accounts)?;
    eprintln!(
        "bench gateway: {servers} servers, {accounts} accounts, in {}",
        dir.display()
    );

    let quiet = [("LEASEHOLD_LOG".to_owned(), "warn".to_owned())];
    let mut gateway = ProcessGuard::spawn_with_env(
        "gateway",
        &binary,
        &gateway_args(&site.config, &dir.join("certs"), &dir.join("state")),
        &dir.join("gateway.log"),
        &quiet,
    )
    .map_err(anyhow::Error::msg)?;
    wait_for("the gateway to be ready", Duration::from_secs(60), || {
        get_text(site.admin, "/ready").map(|_| ())
    })
    .map_err(|error| anyhow::anyhow!("{error}\n{}", gateway.output()))?;
    let gateway_pid = gateway.pid().context("the gateway has no pid")?;

    let fleet_log = dir.join("fleet.log");
    let fleet_args: Vec<String> = [
        "fleet",
        "--gateway",
        &site.management.to_string(),
        "--count",
        &servers.to_string(),
        "--certs",
        &dir.join("certs").to_string_lossy(),
        "--site",
        SITE,
        // Each serving server reports its account's target load: demand stays where the
        // minimums put it, so the window measures a steady site.
        "--load",
        "flat:10",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let mut fleet = ProcessGuard::spawn_with_env("fleet", &binary, &fleet_args, &fleet_log, &quiet)
        .map_err(anyhow::Error::msg)?;

    let registered_s = wait_registered(&mut fleet, &mut gateway, servers)?;
    eprintln!(
        "  all {servers} registered in {registered_s:.1} s; settling {} s",
        args.settle
    );
    sleep_watching(Duration::from_secs(args.settle), &mut fleet, &mut gateway)?;

    let before = Usage::of(gateway_pid);
    let renewed_before = counter(site.admin, "leasehold_leases_renewed_total")?;
    let errors_before = fleet_errors(&fleet.output());
    let window = Duration::from_secs(args.seconds);
    eprintln!("  measuring the gateway for {} s", args.seconds);
    sleep_watching(window, &mut fleet, &mut gateway)?;
    let after = Usage::of(gateway_pid);
    let renewed_after = counter(site.admin, "leasehold_leases_renewed_total")?;
    let errors_after = fleet_errors(&fleet.output());
    // In the window: only with a status line before it and one after.
    let errors = errors_after.as_ref().zip(errors_before.as_ref());
    let errors_by_kind = errors.map(|((_, after), (_, before))| {
        after
            .iter()
            .map(|(kind, after)| {
                let before = before.get(kind).copied().unwrap_or(0);
                (kind.clone(), json!(after.saturating_sub(before)))
            })
            .filter(|(_, count)| count.as_u64() != Some(0))
            .collect::<serde_json::Map<String, serde_json::Value>>()
    });

    let (Some(cpu_before), Some(cpu_after), Some(rss)) = (before.cpu, after.cpu, after.rss_bytes)
    else {
        bail!("cannot read the gateway's CPU or memory from /proc/{gateway_pid}");
    };
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let cpu_core_fraction = cpu_after.saturating_sub(cpu_before).as_secs_f64() / wall;
    let n = servers as f64;
    let line = json!({
        "bench": "gateway",
        "servers": servers,
        "accounts": accounts,
        "registered_s": round(registered_s, 1),
        "window_s": round(wall, 1),
        "cpu_core_fraction": round(cpu_core_fraction, 3),
        "rss_mib": round(rss as f64 / (1024.0 * 1024.0), 1),
        "cpu_us_per_server_s": round(cpu_core_fraction * 1e6 / n, 1),
        "kib_per_server": round(rss as f64 / 1024.0 / n, 1),
        "renewals_per_s": round((renewed_after - renewed_before) / wall, 0),
        "errors": errors.map(|((after, _), (before, _))| after.saturating_sub(*before)),
        "errors_by_kind": errors_by_kind,
        "errors_total": errors_after.map(|(total, _)| total),
        "machine": machine(),
    });
    println!("{line}");
    fleet.stop(Duration::from_secs(10));
    gateway.stop(Duration::from_secs(10));
    Ok(ExitCode::SUCCESS)
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// The site's config and certificates, written to `dir`.
struct Site {
    config: PathBuf,
    admin: SocketAddr,
    management: SocketAddr,
}

impl Site {
    fn write(dir: &Path, servers: usize, accounts: u32) -> anyhow::Result<Site> {
        let mut ports = PortPicker::default();
        let mut pick = || -> anyhow::Result<SocketAddr> {
            let port = ports.pick().map_err(anyhow::Error::msg)?;
            Ok(SocketAddr::from(([127, 0, 0, 1], port)))
        };
        let (admin, federation, management) = (pick()?, pick()?, pick()?);
        let certs_dir = dir.join("certs");
        certs::init_ca(&certs_dir, false).context("cannot create the CA")?;
        let site_id = SiteId::parse(SITE).context("site name")?;
        certs::issue(&certs_dir, &PeerName::Site(site_id), false)
            .context("cannot issue the site certificate")?;

        let mut text = format!(
            "[site]\nname = \"{SITE}\"\nadmin_addr = \"{admin}\"\n\
             federation_addr = \"{federation}\"\nmanagement_addr = \"{management}\"\n\
             initial_members = [\"{SITE}\"]\n\n\
             [admin]\nplain_http = true\nanonymous_role = \"read\"\n\n"
        );
        for index in 1..=servers {
            // Simulated workloads bind nothing: any distinct address will do.
            let _ = writeln!(
                text,
                "[[server]]\nid = \"f{index}\"\nservice_addr = \"127.{}.{}.{}:8000\"\n",
                1 + (index >> 16),
                (index >> 8) & 0xff,
                index & 0xff
            );
        }
        let per_account = (servers as u32 * 4 / 5 / accounts).max(1);
        for index in 0..accounts {
            let account = AccountSpec {
                name: format!("acct{index}"),
                min_servers: per_account,
                max_servers: per_account * 2,
                priority: 10,
                target_load: 10.0,
                command: None,
                secrets: None,
            };
            text.push_str(&account_text(&account, &[]));
        }
        let config = dir.join(format!("{SITE}.toml"));
        std::fs::write(&config, text)
            .with_context(|| format!("cannot write {}", config.display()))?;
        Ok(Site {
            config,
            admin,
            management,
        })
    }
}

/// Waits for the fleet's "all N registered in X s", showing its progress; returns X.
fn wait_registered(
    fleet: &mut ProcessGuard,
    gateway: &mut ProcessGuard,
    servers: usize,
) -> anyhow::Result<f64> {
    let deadline = Duration::from_secs(120 + servers as u64 / 50);
    let started = Instant::now();
    let mut shown = Instant::now();
    let wanted = format!("all {servers} registered in ");
    wait_for("every server to register", deadline, || {
        let output = fleet.output();
        if let Some(rest) = output.lines().find_map(|line| line.strip_prefix(&wanted)) {
            return rest
                .split_whitespace()
                .next()
                .and_then(|seconds| seconds.parse().ok())
                .ok_or_else(|| format!("cannot read the time in `{wanted}{rest}`"));
        }
        if shown.elapsed() >= Duration::from_secs(5) {
            let last = output
                .lines()
                .rev()
                .find(|line| line.starts_with("starting:"));
            eprintln!(
                "  {:.0} s: {}",
                started.elapsed().as_secs_f64(),
                last.unwrap_or("issuing certificates")
            );
            shown = Instant::now();
        }
        Err(output.lines().last().unwrap_or("no output yet").to_owned())
    })
    .map_err(|error| {
        let gone = process_gone(fleet, gateway);
        anyhow::anyhow!("{error}{gone}")
    })
}

/// Sleeps `span`, failing as soon as the fleet or the gateway exits.
fn sleep_watching(
    span: Duration,
    fleet: &mut ProcessGuard,
    gateway: &mut ProcessGuard,
) -> anyhow::Result<()> {
    let until = Instant::now() + span;
    while Instant::now() < until {
        if fleet.exited() || gateway.exited() {
            bail!("a process exited{}", process_gone(fleet, gateway));
        }
        if let Some(signal) = interrupt::requested() {
            bail!("stopped by {signal}");
        }
        std::thread::sleep(Duration::from_millis(200).min(until - Instant::now()));
    }
    Ok(())
}

fn process_gone(fleet: &mut ProcessGuard, gateway: &mut ProcessGuard) -> String {
    let mut said = String::new();
    for guard in [fleet, gateway] {
        if guard.exited() {
            let output = guard.output();
            let tail: Vec<&str> = output.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let _ = write!(
                said,
                "\n{} exited; the end of {}:\n{}",
                guard.name(),
                guard.log().display(),
                tail.join("\n")
            );
        }
    }
    said
}

/// A counter of the gateway's /metrics, summed over its labels.
fn counter(admin: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let text = get_text(admin, "/metrics").map_err(anyhow::Error::msg)?;
    let values: Vec<f64> = text
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    if values.is_empty() {
        bail!("the gateway's /metrics has no {name}");
    }
    Ok(values.iter().sum())
}

/// The fleet's cumulative errors, from its last status line: the total, and each kind that
/// happened (`errors 17 (dials 3, unanswered 14)`; no kinds for `errors 0`).
fn fleet_errors(output: &str) -> Option<(u64, BTreeMap<String, u64>)> {
    output.lines().rev().find_map(|line| {
        let rest = line.split(", errors ").nth(1)?;
        let total = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        let kinds = rest
            .split(';')
            .next()
            .and_then(|errors| errors.split_once(" ("))
            .and_then(|(_, kinds)| kinds.split_once(')'))
            .map_or("", |(kinds, _)| kinds);
        let kinds = kinds
            .split(", ")
            .filter_map(|kind| {
                let (name, count) = kind.rsplit_once(' ')?;
                Some((name.to_owned(), count.parse().ok()?))
            })
            .collect();
        Some((total, kinds))
    })
}

/// What the figures were measured on.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    format!("{cores} cores, {model}, {build} build")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleets_errors_come_from_its_last_status_line() {
        let output = "all 3 registered in 1.0 s; rss 1 MiB, cpu 1% of a core\n\
            registered 3/3, serving acct0=3, renewals 6/s, errors 2; rss 1 MiB, cpu 1% of a core\n\
            registered 3/3, serving acct0=3, renewals 6/s, errors 17, refused 1; rss 1 MiB\n";
        assert_eq!(fleet_errors(output).map(|(total, _)| total), Some(17));
        assert_eq!(fleet_errors("all 3 registered in 1.0 s"), None);
    }

    #[test]
    fn the_fleets_errors_by_kind_come_from_its_last_status_line_that_has_them() {
        let output = "registered 3/3, serving acct0=3, renewals 6/s, errors 2 (dials 2); rss 1 MiB
            registered 3/3, serving acct0=3, renewals 6/s, errors 17 (dials 3, unanswered 14), refused 1; rss 1 MiB
";
        let (_, kinds) = fleet_errors(output).expect("a status line");
        assert_eq!(kinds.get("dials"), Some(&3));
        assert_eq!(kinds.get("unanswered"), Some(&14));
        assert_eq!(kinds.len(), 2);
        let later =
            format!("{output}registered 3/3, serving none, renewals 0/s, errors 0; rss 1 MiB\n");
        assert!(fleet_errors(&later).expect("a status line").1.is_empty());
    }
}
