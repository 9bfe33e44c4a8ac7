//! `leasehold demo` end to end: the real binary runs the three sites of configs/ with real
//! node agents and workloads under its load schedule, and the test judges the run from the
//! report it writes (itself built from the audit logs, `/v1/loans` and the node event logs).
//!
//! This is the only test in the suite that uses the fixed ports of configs/ (7101–7103,
//! 7201–7203, 7301–7303, 8101–8104, 8201–8204, 8301–8304); every other test takes free
//! ports. It is the only test in this file, so no other demo runs beside it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use leasehold_chaos_tests::harness::process::process_alive;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

#[test]
fn demo_moves_servers_both_ways_lends_between_sites_safely_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("r.json");
    let work = dir.path().join("w");
    let started = Instant::now();
    let output = Command::new(BINARY)
        .args(["demo", "--duration", "60", "--report"])
        .arg(&report_path)
        .arg("--work")
        .arg(&work)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("run leasehold demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let gateway_logs: String = SITES
        .iter()
        .map(|site| {
            let log = std::fs::read_to_string(work.join(site).join("gateway.log"));
            format!("--- {site} gateway log ---\n{}\n", log.unwrap_or_default())
        })
        .collect();
    assert!(
        output.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}\n{gateway_logs}",
        output.status,
    );
    assert!(
        started.elapsed() < Duration::from_secs(150),
        "the demo took {:?}",
        started.elapsed()
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let context = format!("{stdout}\nreport: {report:#}");

    assert_eq!(report["sites"], serde_json::json!(SITES), "{context}");
    assert_eq!(report["safety_violations"], 0, "{context}");
    assert_eq!(report["violations"], serde_json::json!([]), "{context}");
    for site in SITES {
        let section = &report["by_site"][site];
        assert_eq!(section["nodes"], 4, "{site}: {context}");
        assert_eq!(section["safety_violations"], 0, "{site}: {context}");
    }
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

    // Nothing the demo started runs on: the gateways, the agents, every workload and guard
    // in the node event logs.
    assert_eq!(report["processes_left"], serde_json::json!([]), "{context}");
    let processes = report["processes"].as_array().unwrap();
    assert!(processes.len() >= 15, "{context}");
    for process in processes {
        let pid = process["pid"].as_u64().unwrap() as u32;
        assert!(!process_alive(pid), "{process} still runs: {context}");
    }
}
