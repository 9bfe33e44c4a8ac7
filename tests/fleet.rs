//! `leasehold fleet` against a real gateway: twenty simulated servers register over the real
//! management protocol and serve both accounts' minimums; when the fleet is killed the
//! gateway notices and the accounts drop; ids outside the inventory are refused.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use leasehold_chaos_tests::harness::admin::get_json;
use leasehold_chaos_tests::harness::evidence::violations;
use leasehold_chaos_tests::harness::onesite::{OneSite, account};
use leasehold_chaos_tests::harness::process::ProcessGuard;
use leasehold_chaos_tests::harness::wait_for;
use nix::sys::signal::Signal;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
/// The harness's `FAST_TIMINGS` lease TTL.
const LEASE_TTL: Duration = Duration::from_millis(1000);
/// Generous: two cores run every process of every test at once.
const SETTLE: Duration = Duration::from_secs(60);

/// A gateway for site-a whose inventory is f1..f20 (certificates for those only), from the
/// harness, with no node agents: the fleet plays them.
struct Site {
    _dir: TempDir,
    inner: OneSite,
}

impl std::ops::Deref for Site {
    type Target = OneSite;
    fn deref(&self) -> &OneSite {
        &self.inner
    }
}

impl Site {
    fn start() -> Site {
        let dir = TempDir::new().unwrap();
        let servers: Vec<String> = (1..=20).map(|n| format!("f{n}")).collect();
        let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
        let inner = OneSite::start(
            Path::new(BINARY),
            dir.path(),
            "site-a",
            &servers,
            &[],
            vec![account("shop", 2, 10, 20), account("blog", 1, 5, 10)],
        )
        .unwrap_or_else(|error| panic!("{error}"));
        Site { _dir: dir, inner }
    }

    fn fleet(&self, name: &str, extra: &[&str]) -> ProcessGuard {
        let mut args = strings(&[
            "fleet",
            "--gateway",
            &self.site.management.to_string(),
            "--certs",
            self.path("certs").to_str().unwrap(),
            "--load",
            "flat:1",
        ]);
        args.extend(strings(extra));
        ProcessGuard::spawn(
            name,
            Path::new(BINARY),
            &args,
            &self.path(&format!("{name}.log")),
        )
        .unwrap()
    }

    fn servers(&self) -> Result<Vec<serde_json::Value>, String> {
        let servers = get_json(self.site.admin, "/v1/servers")?;
        servers
            .as_array()
            .cloned()
            .ok_or_else(|| format!("not an array: {servers}"))
    }

    fn accounts(&self) -> Result<Vec<serde_json::Value>, String> {
        let accounts = get_json(self.site.admin, "/v1/accounts")?;
        accounts
            .as_array()
            .cloned()
            .ok_or_else(|| format!("not an array: {accounts}"))
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

#[test]
fn a_fleet_of_twenty_serves_both_minimums_and_its_death_drops_them() {
    let site = Site::start();
    let work = site.path("fleet-work");
    let fleet = site.fleet(
        "fleet",
        &[
            "--count",
            "20",
            "--prefix",
            "f",
            "--work",
            work.to_str().unwrap(),
        ],
    );
    let diagnose = |error: String, fleet: &ProcessGuard| {
        panic!(
            "{error}\n--- fleet ---\n{}\n--- gateway ---\n{}",
            fleet.output(),
            site.gateway_output()
        )
    };

    wait_for("all 20 servers connected", SETTLE, || {
        let servers = site.servers()?;
        let connected = servers.iter().filter(|s| s["connected"] == true).count();
        if servers.len() == 20 && connected == 20 {
            Ok(())
        } else {
            Err(format!("{connected} of {} connected", servers.len()))
        }
    })
    .unwrap_or_else(|error| diagnose(error, &fleet));
    wait_for("both accounts at their minimum", SETTLE, || {
        let accounts = site.accounts()?;
        let at_minimum = accounts
            .iter()
            .filter(|a| a["servers"].as_u64() >= a["min_servers"].as_u64())
            .count();
        if accounts.len() == 2 && at_minimum == 2 {
            Ok(())
        } else {
            Err(serde_json::Value::Array(accounts).to_string())
        }
    })
    .unwrap_or_else(|error| diagnose(error, &fleet));
    // The fleet reports the load model's value for its serving servers.
    let servers = site.servers().unwrap();
    let serving: Vec<&serde_json::Value> =
        servers.iter().filter(|s| s["state"] == "serving").collect();
    assert!(
        serving
            .iter()
            .all(|s| s["load"] == 1.0 || s["load"].is_null()),
        "{serving:?}"
    );
    wait_for("the fleet to say so", SETTLE, || {
        let output = fleet.output();
        if output.contains("all 20 registered") {
            Ok(())
        } else {
            Err(output)
        }
    })
    .unwrap_or_else(|error| panic!("{error}"));

    fleet.signal(Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    // Missed heartbeats (5 × 100 ms) mark a server failed, its lease (1 s) runs out: a few
    // lease TTLs, with room for two busy cores.
    let deadline = LEASE_TTL * 8;
    wait_for("every server failed or offline", deadline, || {
        let servers = site.servers()?;
        let alive: Vec<String> = servers
            .iter()
            .filter(|s| s["state"] != "failed" && s["state"] != "offline")
            .map(|s| format!("{}={}", s["id"], s["state"]))
            .collect();
        if alive.is_empty() {
            Ok(())
        } else {
            Err(alive.join(" "))
        }
    })
    .unwrap_or_else(|error| diagnose(error, &fleet));
    wait_for("both accounts down to 0 servers", deadline, || {
        let accounts = site.accounts()?;
        if accounts.iter().all(|a| a["servers"] == 0) {
            Ok(())
        } else {
            Err(serde_json::Value::Array(accounts).to_string())
        }
    })
    .unwrap_or_else(|error| diagnose(error, &fleet));
    eprintln!(
        "accounts dropped {} ms after the fleet was killed",
        killed.elapsed().as_millis()
    );

    // The simulated servers' event logs are in the agent's format and pass its checker.
    let works: Vec<PathBuf> = (1..=20).map(|n| work.join(format!("f{n}"))).collect();
    let works: Vec<&Path> = works.iter().map(|w| w.as_path()).collect();
    let found = violations(&works, Duration::from_millis(100)).unwrap();
    assert!(
        found.is_empty(),
        "violations in the fleet's logs: {found:?}"
    );
    let healthy = works
        .iter()
        .filter(|w| {
            std::fs::read_to_string(w.join("events.jsonl"))
                .unwrap_or_default()
                .contains("workload_healthy")
        })
        .count();
    assert!(healthy >= 3, "only {healthy} logs show a healthy workload");
}

#[test]
fn a_fleet_outside_the_inventory_is_refused_with_the_reason() {
    let site = Site::start();
    // g1..g3 have no certificates yet: the fleet issues them with the CA key, and then
    // the gateway's TLS policy refuses them, since its inventory is f1..f20.
    let mut fleet = site.fleet("refused", &["--count", "3", "--prefix", "g"]);
    wait_for("the refused fleet to exit", SETTLE, || {
        if fleet.exited() {
            Ok(())
        } else {
            Err(fleet.output())
        }
    })
    .unwrap_or_else(|error| panic!("{error}"));
    let output = fleet.output();
    assert!(output.contains("issued 3 node certificates"), "{output}");
    assert!(
        output.contains("error: the gateway refused every one of the 3 servers"),
        "{output}"
    );
    assert!(
        output.contains("not in site-a's inventory"),
        "the refusal names its reason: {output}"
    );
    // And the gateway logged each refusal too.
    assert!(
        site.gateway_output().contains("not in site-a's inventory"),
        "{}",
        site.gateway_output()
    );
    let servers = site.servers().unwrap();
    assert!(
        servers.iter().all(|s| s["connected"] == false),
        "{servers:?}"
    );
}
