//! Chaos campaigns (issue #6) through `leasehold chaos`, on three real gateways with node
//! agents and workloads, every path between sites through a fault relay: a short campaign
//! of mixed faults keeps every invariant; and each planted bug (a debug-only build switch,
//! `LEASEHOLD_TEST_PLANT`) makes the invariant that guards against it fail, so each
//! checker is shown able to fail.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use leasehold_chaos_tests::campaign::schedule::{Scenario, schedule};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

/// One campaign at a time: each runs 3 gateways, 9 node agents and their workloads, and
/// two at once on two cores would starve them past the checks' slack.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `leasehold chaos` with `plant` as `LEASEHOLD_TEST_PLANT` (inherited by every
/// gateway and node agent it starts); returns its output and its JSON report.
fn chaos(scenario: &str, seed: u64, duration_s: u64, plant: Option<&str>) -> (Output, Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut command = Command::new(BINARY);
    command.args([
        "chaos",
        "--scenario",
        scenario,
        "--seed",
        &seed.to_string(),
        "--duration",
        &duration_s.to_string(),
        "--report",
        report.to_str().unwrap(),
    ]);
    command.env_remove("LEASEHOLD_TEST_PLANT");
    if let Some(plant) = plant {
        command.env("LEASEHOLD_TEST_PLANT", plant);
    }
    let output = command.output().unwrap();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|error| {
        panic!(
            "no report ({error}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, serde_json::from_str(&text).unwrap())
}

fn invariant<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|invariant| invariant["name"] == name)
        .unwrap_or_else(|| panic!("no invariant {name} in {report:#}"))
}

fn failed(report: &Value) -> Vec<String> {
    report["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|invariant| invariant["passed"] == false)
        .map(|invariant| invariant["name"].as_str().unwrap().to_owned())
        .collect()
}

/// A planted run: exits 1, names the switch, fails `expected`, and prints the command
/// that replays it (with the switch).
fn assert_caught(output: &Output, report: &Value, plant: &str, expected: &str) {
    let summary = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{summary}");
    assert_eq!(report["planted"], plant);
    let caught = invariant(report, expected);
    assert_eq!(caught["passed"], false, "{summary}");
    assert!(
        !caught["evidence"].as_array().unwrap().is_empty(),
        "{caught:#}"
    );
    let replay = report["replay"].as_str().unwrap();
    assert!(
        replay.starts_with(&format!("LEASEHOLD_TEST_PLANT={plant} ")),
        "{replay}"
    );
    assert!(summary.contains(replay), "{summary}");
    assert!(summary.contains(&format!("FAIL  {expected}")), "{summary}");
}

/// Seed 19 for 75 s draws a gateway kill, a gateway pause, a stale grant replayed to a
/// node and a node agent kill, each followed by its recovery gap.
#[test]
fn a_mixed_campaign_keeps_every_invariant_and_replays_the_same_schedule() {
    let _turn = turn();
    let (output, report) = chaos("all", 19, 75, None);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{summary}");
    assert_eq!(failed(&report), Vec::<String>::new(), "{summary}");
    // The report's faults are the schedule the seed gives, as the library draws it.
    let expected = schedule(&Scenario::parse("all").unwrap(), 19, 75_000, 3).unwrap();
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), expected.len(), "{summary}");
    for (fault, scheduled) in faults.iter().zip(&expected) {
        assert_eq!(fault["kind"], scheduled.kind.name());
        assert_eq!(fault["target"], scheduled.target.to_string());
        assert_eq!(fault["start_ms"], scheduled.start_ms);
        assert_eq!(fault["end_ms"], scheduled.end_ms);
    }
    let kinds: Vec<&str> = faults.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["gateway-kill", "gateway-pause", "stale-grant", "node-kill"]
    );
    // The stale grant met a correct node: refused.
    let stale = &faults[2]["notes"];
    assert!(
        stale
            .as_array()
            .unwrap()
            .iter()
            .any(|note| note.as_str().unwrap().contains("refused")),
        "{stale}"
    );
    // Each fault's outage was measured, and the kill's within the failover bound.
    for fault in faults {
        assert!(fault["outage_ms"].as_u64().is_some(), "{fault}");
    }
    assert!(
        report["recovery_ms"]["gateway-kill"]["max"]
            .as_u64()
            .unwrap()
            <= 6000
    );
    // Requests were sent to every account all along.
    for account in ["shop", "wiki", "mail"] {
        assert!(
            report["load"][account]["sent"].as_u64().unwrap() > 200,
            "{report:#}"
        );
    }
    assert!(summary.contains("every invariant held"), "{summary}");
}

/// site-a (or whichever site the seed isolates) counts renewals on its own grant alone:
/// cut off, it keeps serving its account while the majority takes it over.
#[test]
fn renewing_ownership_without_a_majority_fails_one_owner_per_account() {
    let _turn = turn();
    let plant = "renew-without-majority";
    let (output, report) = chaos("partition-isolate", 1, 25, Some(plant));
    assert_caught(&output, &report, plant, "one-owner-per-account");
}

/// A node that skips its epoch check accepts the stand-in gateway's replay of its newest
/// epoch for another account: one (server, epoch) granted to two accounts.
#[test]
fn a_node_that_skips_its_epoch_check_fails_epochs_never_reused() {
    let _turn = turn();
    let plant = "skip-epoch-check";
    let (output, report) = chaos("stale-grant", 1, 25, Some(plant));
    assert_caught(&output, &report, plant, "epochs-never-reused");
    let notes = &report["faults"][0]["notes"];
    assert!(notes.to_string().contains("ACCEPTED"), "{notes}");
}

/// A gateway that drops its lease grants from the journal, killed and restarted, has
/// forgotten leases its nodes were serving under.
#[test]
fn a_gateway_that_drops_journal_writes_fails_journaled_leases_survive_restart() {
    let _turn = turn();
    let plant = "drop-journal-write";
    let (output, report) = chaos("gateway-kill", 1, 25, Some(plant));
    assert_caught(&output, &report, plant, "journaled-leases-survive-restart");
}

#[test]
fn an_unknown_scenario_is_refused_by_name_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = Command::new(BINARY)
        .args(["chaos", "--scenario", "meteor", "--seed", "1", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown scenario `meteor`"), "{stderr}");
    assert!(
        stderr.contains("partition"),
        "names the known ones: {stderr}"
    );
    assert!(!Path::new(&report).exists());
}
