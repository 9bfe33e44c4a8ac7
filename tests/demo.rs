//! `leasehold demo` end to end: the real binary runs the three sites of configs/ with real
//! node agents and workloads under its load schedule, and the test judges the run from the
//! report it writes (itself built from the audit logs, `/v1/loans` and the node event logs).
//!
//! These are the only tests in the suite that use the fixed ports of configs/ (7101–7103,
//! 7201–7203, 7301–7303, 8101–8104, 8201–8204, 8301–8304); every other test takes free
//! ports. The tests of this file take `DEMO_PORTS` in turn, so no two demos run at once
//! (`--machines` takes free ports, and takes it too: two demos would share two cores).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use leasehold_chaos_tests::harness::bmc::emulator_available;
use leasehold_chaos_tests::harness::process::process_alive;
use leasehold_chaos_tests::harness::tagged::{
    TAG, TaggedChild, count, signal_and_wait, tagged, wait_for_tagged, workloads,
};
use nix::sys::signal::Signal;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];
/// Held by a test while its demo runs: the demo's ports are fixed.
static DEMO_PORTS: Mutex<()> = Mutex::new(());

/// Runs `leasehold demo ARGS --report R --work W` to its end and returns its report and a
/// context for failure messages (its output, and the report); panics, with the gateway
/// logs, if it fails or takes longer than `limit`.
fn run_demo(args: &[&str], limit: Duration) -> (Value, String) {
    // A test that failed while holding the lock has still ended its demo.
    let _ports = DEMO_PORTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("r.json");
    let work = dir.path().join("w");
    let started = Instant::now();
    let output: Output = Command::new(BINARY)
        .arg("demo")
        .args(args)
        .arg("--report")
        .arg(&report_path)
        .arg("--work")
        .arg(&work)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("run leasehold demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The federation demo's gateways log in their sites' dirs, the machine demo's on top.
    let gateway_logs: String = SITES
        .iter()
        .map(|site| (*site, work.join(site).join("gateway.log")))
        .chain([("site-m", work.join("gateway.log"))])
        .filter_map(|(site, path)| {
            let log = std::fs::read_to_string(path).ok()?;
            Some(format!("--- {site} gateway log ---\n{log}\n"))
        })
        .collect();
    assert!(
        output.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}\n{gateway_logs}",
        output.status,
    );
    assert!(
        started.elapsed() < limit,
        "the demo took {:?}",
        started.elapsed()
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let context = format!("{stdout}\nreport: {report:#}");
    (report, context)
}

/// No safety violation in any node's event log, and nothing the demo started runs on: the
/// gateways, the agents, every workload and guard in the node event logs.
fn assert_safe_and_nothing_left(report: &Value, context: &str) {
    assert_eq!(report["sites"], serde_json::json!(SITES), "{context}");
    assert_eq!(report["safety_violations"], 0, "{context}");
    assert_eq!(report["violations"], serde_json::json!([]), "{context}");
    for site in SITES {
        let section = &report["by_site"][site];
        assert_eq!(section["nodes"], 4, "{site}: {context}");
        assert_eq!(section["safety_violations"], 0, "{site}: {context}");
    }
    assert_eq!(report["processes_left"], serde_json::json!([]), "{context}");
    let processes = report["processes"].as_array().unwrap();
    assert!(processes.len() >= 15, "{context}");
    for process in processes {
        let pid = process["pid"].as_u64().unwrap() as u32;
        assert!(!process_alive(pid), "{process} still runs: {context}");
    }
}

#[test]
fn demo_moves_servers_both_ways_lends_between_sites_safely_and_leaves_nothing_running() {
    let (report, context) = run_demo(&["--duration", "60"], Duration::from_secs(150));
    assert_safe_and_nothing_left(&report, &context);
    assert_eq!(report["failovers"], serde_json::json!([]), "{context}");
    let directions = &report["moves_by_direction"];
    for direction in ["shop->blog", "blog->shop", "free->wiki", "free->mail"] {
        assert!(
            directions[direction].as_u64().unwrap_or(0) >= 1,
            "no move {direction}: {context}"
        );
    }
    assert_eq!(
        report["reallocations"].as_u64(),
        report["moves"].as_array().map(|m| m.len() as u64),
        "{context}"
    );
    for account in ["shop", "blog", "wiki", "mail"] {
        let met = report["sla_met_seconds"][account].as_f64().unwrap_or(0.0);
        assert!(met > 0.0, "{account} never met its SLA: {context}");
        let observed = report["seconds_observed"][account].as_f64().unwrap_or(0.0);
        assert!(
            observed >= 50.0,
            "{account} observed {observed} s: {context}"
        );
        assert!(
            report["requests"][account]["ok"].as_u64().unwrap_or(0) > 0,
            "{context}"
        );
    }
    assert!(
        report["reallocation_ms"]["count"].as_u64().unwrap_or(0) >= 8,
        "{context}"
    );

    // shop's burst is more than site-a has: it borrows from site-b or site-c, and gives the
    // servers back once the burst is over (from every gateway's /v1/loans and audit log).
    let count = |key: &str| report[key].as_u64().unwrap_or(0);
    assert!(count("loans") >= 1, "no loan: {context}");
    assert!(count("returns") >= 1, "no return: {context}");
    assert!(count("lent") >= 1, "no site lent: {context}");
    assert!(
        report["loan_latency_ms"]["count"].as_u64().unwrap_or(0) >= 1,
        "{context}"
    );
    assert!(
        report["by_site"]["site-a"]["loans"]["borrowed"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{context}"
    );
    let events = report["loan_events"].as_array().unwrap();
    for kind in ["borrow", "lend", "loan_return"] {
        assert!(
            events.iter().any(|e| e["kind"] == kind),
            "no {kind} in the audit logs: {context}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "borrow" && e["site"] == "site-a" && e["account"] == "shop"),
        "shop borrowed nothing: {context}"
    );
}

/// site-a's gateway killed 15 s into the load: site-b takes shop over and site-c blog (their
/// failover lists), each serving within 10 s of the kill; site-a's node agents, left
/// running, stop their workloads on their own, and are stopped at the end like the others.
#[test]
fn demo_kill_site_fails_site_a_over_and_leaves_nothing_running() {
    let args = ["--duration", "40", "--kill-site", "site-a", "--at", "15"];
    let (report, context) = run_demo(&args, Duration::from_secs(120));
    assert_safe_and_nothing_left(&report, &context);
    assert_eq!(report["kill"]["site"], "site-a", "{context}");
    let failovers = report["failovers"].as_array().unwrap();
    let to = |account: &str| {
        let found = failovers.iter().find(|f| f["account"] == account);
        let failover = found.unwrap_or_else(|| panic!("no failover of {account}: {context}"));
        assert_eq!(failover["from"], "site-a", "{context}");
        let recovery = failover["recovery_ms"].as_u64();
        assert!(
            recovery.is_some_and(|ms| ms < 10_000),
            "{account} recovered in {recovery:?} ms: {context}"
        );
        failover["to"].as_str().unwrap().to_owned()
    };
    assert_eq!(to("shop"), "site-b", "{context}");
    assert_eq!(to("blog"), "site-c", "{context}");
    assert_eq!(failovers.len(), 2, "{context}");
    assert_eq!(report["recovery_ms"]["count"], 2, "{context}");
    let events = report["ownership_events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "takeover" && e["site"] == "site-b" && e["account"] == "shop"),
        "{context}"
    );
}

/// Runs the demo tagged `tag` until its workloads serve, sends it `signal`, and checks
/// what a person stopping it would want: the exit code, every process of it gone (by the
/// machine's process table), its files kept, and said.
fn interrupt_demo(signal: Signal) {
    let _ports = DEMO_PORTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("w");
    let out = dir.path().join("out.txt");
    let tag = format!("demo-{}-{}", signal.as_str(), std::process::id());
    let child = Command::new(BINARY)
        .args(["demo", "--duration", "120", "--work"])
        .arg(&work)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .env(TAG, &tag)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err.txt")).unwrap())
        .spawn()
        .unwrap();
    let mut child = TaggedChild {
        child,
        tag: tag.clone(),
    };
    let said = || {
        format!(
            "{}\n--- stderr ---\n{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("err.txt")).unwrap_or_default()
        )
    };
    wait_for_tagged(
        &tag,
        "3 gateways, 12 node agents and workloads serving",
        Duration::from_secs(90),
        |seen| {
            count(seen, " gateway run") == 3
                && count(seen, " node run") == 12
                && workloads(seen) >= 4
        },
    )
    .unwrap_or_else(|error| panic!("{error}\n{}", said()));
    let status = signal_and_wait(&mut child, signal, Duration::from_secs(60))
        .unwrap_or_else(|error| panic!("{error}\n{}", said()));
    assert_eq!(status.code(), Some(128 + signal as i32), "{}", said());
    assert_eq!(tagged(&tag), Vec::new(), "{}", said());
    assert!(
        said().contains(&format!(
            "{}: every process the demo started was stopped; files kept in {}",
            signal.as_str(),
            work.display()
        )),
        "{}",
        said()
    );
    assert!(work.join("certs").is_dir(), "{}", said());
}

#[test]
fn ctrl_c_stops_the_demo_and_every_process_it_started_keeping_its_files() {
    interrupt_demo(Signal::SIGINT);
}

#[test]
fn sigterm_stops_the_demo_and_every_process_it_started_keeping_its_files() {
    interrupt_demo(Signal::SIGTERM);
}

/// `--machines`: one site whose machines are behind the emulated Redfish BMC. The live edit
/// hands shop's machine to blog: from the report, it was drained, re-imaged through the
/// four steps and booted blog's image under a higher epoch, shop's workload had stopped
/// before blog's started (the two boots' node logs), and nothing is left running. A missing
/// emulator fails the test, as in tests/machines.rs: `.ci/run` installs it.
#[test]
fn demo_machines_reimages_shops_machine_for_blog_under_a_higher_epoch() {
    if let Err(why) = emulator_available() {
        panic!("{why}; install it with python3 -m pip install sushy-tools==2.2.0");
    }
    // The demo waits up to 90 s for the site and 90 s for the move by itself.
    let (report, context) = run_demo(&["--machines", "--duration", "5"], Duration::from_secs(240));
    assert_eq!(report["mode"], "machines", "{context}");

    let reimage = &report["reimage"];
    assert!(
        ["m1", "m2"].contains(&reimage["server"].as_str().unwrap_or("")),
        "{context}"
    );
    assert_eq!(reimage["from"], "shop", "{context}");
    assert_eq!(reimage["to"], "blog", "{context}");
    let before = reimage["epoch_before"].as_u64().unwrap();
    let after = reimage["epoch_after"].as_u64().unwrap();
    assert!(after > before, "e{before} then e{after}: {context}");
    let steps: Vec<&str> = reimage["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|step| step["step"].as_str())
        .collect();
    assert!(
        leasehold_chaos_tests::harness::machines::whole_boot(&steps),
        "{steps:?}: {context}"
    );
    let story: Vec<&str> = reimage["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|record| record["kind"].as_str())
        .filter(|kind| ["reclaim", "lease_ended", "reimage", "booted"].contains(kind))
        .collect();
    assert_eq!(
        story,
        ["reclaim", "lease_ended", "reimage", "booted"],
        "{context}"
    );
    assert!(
        reimage["edit_to_serving_ms"].as_u64().is_some(),
        "{context}"
    );
    // The last boot of the machine ran blog's workload under the new epoch.
    let boots = reimage["boots"].as_array().unwrap();
    assert!(boots.len() >= 2, "{context}");
    let last = boots.last().unwrap();
    assert_eq!(last["epoch"].as_u64(), Some(after), "{context}");
    assert_eq!(last["runs"][0]["account"], "blog", "{context}");

    let verdict = &report["verdict"];
    assert_eq!(verdict["holds"], true, "{context}");
    let checks: Vec<(&str, bool)> = verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap(), c["ok"] == true))
        .collect();
    assert_eq!(
        checks,
        [
            ("moved", true),
            ("epoch", true),
            ("order", true),
            ("safety", true)
        ],
        "{context}"
    );
    // The context is the demo's output, then its report.
    let (stdout, _) = context.split_once("\nreport: ").unwrap_or((&context, ""));
    assert!(stdout.contains("verdict: holds"), "{context}");
    assert_eq!(report["safety_violations"], 0, "{context}");
    assert_eq!(report["processes_left"], serde_json::json!([]), "{context}");
    let processes = report["processes"].as_array().unwrap();
    assert!(processes.len() >= 6, "{context}");
    for process in processes {
        let pid = process["pid"].as_u64().unwrap() as u32;
        assert!(!process_alive(pid), "{process} still runs: {context}");
    }
}
