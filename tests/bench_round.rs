//! `leasehold bench round` on a small site: the synthetic site reaches a state where its
//! accounts are served (the nodes' answers reach the core, the site owns its accounts),
//! and the JSON line carries every figure docs/benchmarks.md reads. Nothing here is timed.

use std::process::Command;

#[test]
fn the_round_bench_serves_its_accounts_and_reports_every_figure() {
    let output = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["bench", "round", "--servers", "300", "--accounts", "30"])
        .args(["--rounds", "10", "--warmup", "40"])
        .output()
        .expect("leasehold runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let line: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(line["bench"], "round");
    assert_eq!(line["servers"], 300);
    // Every account's minimum (5 of a share of 10) is served, and not more servers than
    // the site has.
    let serving = line["serving"].as_u64().unwrap();
    assert!((150..=300).contains(&serving), "{line}");
    // Each server beats once per default heartbeat interval, spread over the rounds.
    assert!(line["heartbeats_per_round"].as_u64().unwrap() > 0, "{line}");
    assert!(line["renewals_per_round"].as_u64().unwrap() > 0, "{line}");
    for key in [
        "round_ms_p50",
        "round_ms_p99",
        "round_ms_max",
        "begin_ms_p50",
        "demand_ms_p50",
        "finish_ms_p50",
        "journal_ms_p50",
        "journal_ms_p99",
        "effects_per_round_mean",
        "renew_us_mean",
        "rss_mib",
    ] {
        assert!(line[key].is_number(), "{key} missing: {line}");
    }
}

#[test]
fn the_round_bench_refuses_more_accounts_than_servers() {
    let output = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["bench", "round", "--servers", "10", "--accounts", "20"])
        .output()
        .expect("leasehold runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--accounts must be between 1 and --servers"),
        "{stderr}"
    );
}
