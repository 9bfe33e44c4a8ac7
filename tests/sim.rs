//! `leasehold sim` through the binary: the report's fields, the same `trace_hash` for the
//! same seed, a planted bug's failure with its seed, time, last events and the command that
//! replays it, and bad arguments refused by name.

use std::process::{Command, Output};

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

fn sim(args: &[&str]) -> (Output, Option<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = Command::new(BINARY)
        .arg("sim")
        .args(args)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let value = std::fs::read_to_string(&report)
        .ok()
        .map(|text| serde_json::from_str(&text).unwrap());
    (output, value)
}

fn said(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_run_reports_every_field_and_the_same_seed_gives_the_same_trace_hash() {
    let (first, report) = sim(&["--seed", "7", "--faults", "100"]);
    assert!(first.status.success(), "{}", said(&first));
    let report = report.unwrap();
    assert_eq!(report["seed"], 7);
    let faults: u64 = report["faults"]
        .as_object()
        .unwrap()
        .values()
        .map(|count| count.as_u64().unwrap())
        .sum();
    assert_eq!(faults, 100);
    for invariant in report["invariants"].as_array().unwrap() {
        assert_eq!(invariant["passed"], true, "{invariant}");
        assert_eq!(invariant["violations"], 0);
        assert!(invariant["name"].is_string());
    }
    assert!(report["simulated_seconds"].as_f64().unwrap() > 100.0);
    assert!(report["wall_seconds"].as_f64().is_some());
    let hash = report["trace_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 16);
    assert!(said(&first).contains("every invariant held"));
    let (_, again) = sim(&["--seed", "7", "--faults", "100"]);
    assert_eq!(again.unwrap()["trace_hash"], hash.as_str());
}

#[test]
fn a_planted_bug_stops_the_run_with_its_seed_time_last_events_and_replay_command() {
    if !cfg!(debug_assertions) {
        return; // The switches exist in debug builds only.
    }
    let (output, report) = sim(&[
        "--seed",
        "2",
        "--faults",
        "300",
        "--plant",
        "renew-without-majority",
    ]);
    let text = said(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let report = report.unwrap();
    assert_eq!(report["planted"], "renew-without-majority");
    assert!(report["stopped_at_us"].as_u64().is_some(), "{report:#}");
    assert!(text.contains("FAIL  one-owner-per-account"), "{text}");
    assert!(text.contains("FAILED at seed 2"), "{text}");
    assert!(text.contains("the last events before it"), "{text}");
    assert!(
        text.contains("sim --seed 2 --faults 300 --sites 3 --servers-per-site 3 --plant renew-without-majority"),
        "{text}"
    );
}

#[test]
fn a_sweep_of_seeds_reports_each_and_bad_arguments_are_refused_by_name() {
    let (output, report) = sim(&["--seeds", "1..3", "--faults", "20"]);
    assert!(output.status.success(), "{}", said(&output));
    let report = report.unwrap();
    assert_eq!(report["seeds"].as_array().unwrap().len(), 3);
    assert!(report["worst"]["trace_hash"].is_string());

    let (output, report) = sim(&["--seeds", "5..2", "--faults", "20"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(said(&output).contains("--seeds 5..2: the first seed is after the last"));
    assert!(report.is_none());
    let (output, _) = sim(&["--seed", "1", "--plant", "meteor"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        said(&output).contains("unknown plant `meteor`"),
        "{}",
        said(&output)
    );
}
