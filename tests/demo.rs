//! `leasehold demo` end to end: the real binary runs site-a of configs/ with real node
//! agents and workloads under its load schedule, and the test judges the run from the
//! report it writes (itself built from the audit log and the node event logs).
//!
//! This is the only test in the suite that uses the fixed ports of configs/ (7101, 7201,
//! 7301, 8101–8104); every other test takes free ports. It is the only test in this file,
//! so no other demo runs beside it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use leasehold_chaos_tests::harness::process::process_alive;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

#[test]
fn demo_moves_servers_both_ways_safely_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("r.json");
    let work = dir.path().join("w");
    let started = Instant::now();
    let output = Command::new(BINARY)
        .args(["demo", "--duration", "45", "--report"])
        .arg(&report_path)
        .arg("--work")
        .arg(&work)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("run leasehold demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}\n--- gateway log ---\n{}",
        output.status,
        std::fs::read_to_string(work.join("gateway.log")).unwrap_or_default()
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the demo took {:?}",
        started.elapsed()
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let context = format!("{stdout}\nreport: {report:#}");

    assert_eq!(report["safety_violations"], 0, "{context}");
    assert_eq!(report["violations"], serde_json::json!([]), "{context}");
    let directions = &report["moves_by_direction"];
    for direction in ["shop->blog", "blog->shop"] {
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
    for account in ["shop", "blog"] {
        let met = report["sla_met_seconds"][account].as_f64().unwrap_or(0.0);
        assert!(met > 0.0, "{account} never met its SLA: {context}");
        let observed = report["seconds_observed"][account].as_f64().unwrap_or(0.0);
        assert!(
            observed >= 40.0,
            "{account} observed {observed} s: {context}"
        );
        assert!(
            report["requests"][account]["ok"].as_u64().unwrap_or(0) > 0,
            "{context}"
        );
    }
    assert!(
        report["reallocation_ms"]["count"].as_u64().unwrap_or(0) >= 4,
        "{context}"
    );

    // Nothing the demo started runs on: the gateway, the agents, every workload and guard
    // in the node event logs.
    assert_eq!(report["processes_left"], serde_json::json!([]), "{context}");
    let processes = report["processes"].as_array().unwrap();
    assert!(processes.len() >= 5, "{context}");
    for process in processes {
        let pid = process["pid"].as_u64().unwrap() as u32;
        assert!(!process_alive(pid), "{process} still runs: {context}");
    }
}
