//! Chaos campaigns (issue #6) through `leasehold chaos`, on three real gateways with node
//! agents and workloads, every path between sites through a fault relay: a short campaign
//! of mixed faults keeps every invariant, and so does one of overlapping pairs of faults;
//! and each planted bug (a debug-only build switch,
//! `LEASEHOLD_TEST_PLANT`) makes the invariant that guards against it fail, so each
//! checker is shown able to fail, and its output names the invariant, the evidence lines
//! and the folder its files were kept in; and Ctrl-C or SIGTERM stops a campaign with
//! nothing of it left running.
//!
//! A failing assertion here prints the campaign's stdout and stderr whole: the stderr of a
//! failed campaign says why it failed, with evidence, and where its files were kept.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use leasehold_chaos_tests::campaign::schedule::{Scenario, schedule};
use leasehold_chaos_tests::harness::tagged::{
    TAG, TaggedChild, count, signal_and_wait, tagged, wait_for_tagged, workloads,
};
use nix::sys::signal::Signal;
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
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|error| panic!("no report ({error}){}", context(&output)));
    let mut value: Value = serde_json::from_str(&text).unwrap();
    // The picture is beside the report, in the folder that goes with this call.
    if let Some(timeline) = value["timeline"].as_str() {
        value["timeline_svg"] = Value::from(std::fs::read_to_string(timeline).unwrap_or_default());
    }
    (output, value)
}

/// A campaign's whole output, for a failure message: a CI log alone says why.
fn context(output: &Output) -> String {
    format!(
        "\n--- leasehold chaos exited with {} ---\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The folder a failed campaign kept, checked to hold its evidence, then removed (a test's
/// own failure keeps it: the panic comes first).
fn kept_folder(report: &Value, output: &Output) -> PathBuf {
    let kept = PathBuf::from(
        report["kept"]
            .as_str()
            .unwrap_or_else(|| panic!("no kept folder in the report{}", context(output))),
    );
    for evidence in ["nodes", "certs"] {
        assert!(
            kept.join(evidence).is_dir(),
            "{evidence}{}",
            context(output)
        );
    }
    let gateway_logs = std::fs::read_dir(&kept)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("gateway-"))
        .count();
    assert_eq!(gateway_logs, 3, "{}", context(output));
    kept
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
    let stderr = String::from_utf8_lossy(&output.stderr);
    let all = context(output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert_eq!(report["planted"], plant);
    assert_eq!(report["outcome"], "safety-violated", "{all}");
    let caught = invariant(report, expected);
    assert_eq!(caught["passed"], false, "{all}");
    let evidence: Vec<&str> = caught["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line.as_str().unwrap())
        .collect();
    assert!(!evidence.is_empty(), "{caught:#}");
    // What a CI log shows: why, each evidence line, and the kept folder.
    assert!(stderr.contains("chaos: FAILED (safety-violated)"), "{all}");
    assert!(
        stderr.contains(&format!("chaos: invariant {expected} failed; evidence:")),
        "{all}"
    );
    for line in &evidence {
        assert!(
            stderr.contains(line),
            "evidence line {line} not on stderr{all}"
        );
    }
    let kept = kept_folder(report, output);
    assert!(
        stderr.contains(&format!("chaos: files kept in {}", kept.display())),
        "{all}"
    );
    assert!(
        summary.contains(&format!("files kept in {}", kept.display())),
        "{all}"
    );
    let replay = report["replay"].as_str().unwrap();
    assert!(
        replay.starts_with(&format!("LEASEHOLD_TEST_PLANT={plant} ")),
        "{replay}"
    );
    assert!(summary.contains(replay), "{summary}");
    assert!(summary.contains(&format!("FAIL  {expected}")), "{summary}");
    std::fs::remove_dir_all(&kept).unwrap();
}

/// The report's faults, checked to be the schedule the seed gives as the library draws it
/// (kind, target, times, episode).
fn faults_as_scheduled<'a>(
    report: &'a Value,
    scenario: &str,
    seed: u64,
    duration_s: u64,
    summary: &str,
) -> &'a Vec<Value> {
    let scenario = Scenario::parse(scenario).unwrap();
    let expected = schedule(&scenario, seed, duration_s * 1000, 3).unwrap();
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), expected.len(), "{summary}");
    for (fault, scheduled) in faults.iter().zip(&expected) {
        assert_eq!(fault["kind"], scheduled.kind.name());
        assert_eq!(fault["target"], scheduled.target.to_string());
        assert_eq!(fault["start_ms"], scheduled.start_ms);
        assert_eq!(fault["end_ms"], scheduled.end_ms);
        assert_eq!(fault["episode"], scheduled.episode);
    }
    faults
}

/// Seed 19 for 75 s draws a gateway kill, a gateway pause, a stale grant replayed to a
/// node and a node agent kill, each followed by its recovery gap.
#[test]
fn a_mixed_campaign_keeps_every_invariant_and_replays_the_same_schedule() {
    let _turn = turn();
    let (output, report) = chaos("all", 19, 75, None);
    let summary = context(&output);
    assert!(output.status.success(), "{summary}");
    assert_eq!(failed(&report), Vec::<String>::new(), "{summary}");
    assert_eq!(report["outcome"], "passed", "{summary}");
    assert!(
        report.get("kept").is_none(),
        "a passed campaign keeps nothing"
    );
    let faults = faults_as_scheduled(&report, "all", 19, 75, &summary);
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
    // A picture of it beside the report: every fault, every account's owners.
    let picture = report["timeline_svg"].as_str().unwrap_or_default();
    assert!(picture.starts_with("<svg"), "{report:#}");
    for fault in faults {
        assert!(
            picture.contains(fault["kind"].as_str().unwrap()),
            "{picture}"
        );
    }
    for account in ["shop", "wiki", "mail"] {
        assert!(picture.contains(&format!(">{account}</text>")), "{picture}");
    }
}

/// Seed 3 of `compound` for 50 s draws two overlapping pairs: site-a's gateway killed and,
/// while it is down, a slow and lossy network (the takeover runs over it); then site-b cut
/// off and its gateway restarted while cut off (it comes back from its journal without a
/// majority, and must not serve what the majority took over).
#[test]
fn a_compound_campaign_overlaps_its_faults_and_keeps_every_invariant() {
    let _turn = turn();
    let (output, report) = chaos("compound", 3, 50, None);
    let summary = context(&output);
    assert!(output.status.success(), "{summary}");
    assert_eq!(failed(&report), Vec::<String>::new(), "{summary}");
    let faults = faults_as_scheduled(&report, "compound", 3, 50, &summary);
    let kinds: Vec<&str> = faults.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "gateway-kill",
            "slow-network",
            "partition-isolate",
            "restart"
        ]
    );
    // As applied, each pair's second fault began while its first was in force.
    for pair in faults.chunks(2) {
        let (first, second) = (&pair[0], &pair[1]);
        let started = second["applied_start_ms"].as_u64().unwrap();
        assert!(
            started > first["applied_start_ms"].as_u64().unwrap()
                && started < first["applied_end_ms"].as_u64().unwrap(),
            "{pair:?}"
        );
    }
    // The gateway restarted while cut off came back with its journaled leases.
    let restart = invariant(&report, "journaled-leases-survive-restart")["evidence"].to_string();
    assert!(restart.contains("restart site-b"), "{restart}");
    // Each episode judged as one: the pair's faults share its outage and its return.
    let sla = invariant(&report, "sla-restored-after-each-fault")["evidence"].to_string();
    assert!(
        sla.contains("partition-isolate site-b + restart site-b"),
        "{sla}"
    );
    for pair in faults.chunks(2) {
        assert_eq!(pair[0]["outage_ms"], pair[1]["outage_ms"], "{pair:?}");
    }
    assert!(summary.contains("+ restart"), "{summary}");
    let picture = report["timeline_svg"].as_str().unwrap_or_default();
    assert!(picture.contains("restart site-b"), "{picture}");
}

/// Seed 1 of `members` for 60 s: site-d, a fourth site that homes no account, is added
/// to the three founders' members by editing their configs and starting it, and while it
/// is being added site-a's gateway is killed (the others wait for it to answer; shop fails
/// over meanwhile); at the end site-d is left out of the configs and stopped once every
/// founder runs the three again. Judged from the node logs (the spare's too) and the
/// founders' audit logs.
#[test]
fn a_members_campaign_adds_and_removes_a_site_while_a_gateway_is_killed() {
    let _turn = turn();
    let (output, report) = chaos("members", 1, 60, None);
    let summary = context(&output);
    assert!(output.status.success(), "{summary}");
    assert_eq!(failed(&report), Vec::<String>::new(), "{summary}");
    let faults = faults_as_scheduled(&report, "members", 1, 60, &summary);
    let kinds: Vec<(&str, &str)> = faults
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("member-change", "site-d"), ("gateway-kill", "site-a")]
    );
    let steps = invariant(&report, "member-changes-took-effect");
    assert_eq!(steps["passed"], true, "{steps}");
    for site in ["site-a", "site-b", "site-c"] {
        assert!(
            steps["evidence"].to_string().contains(&format!(
                "{site} stepped to [site-a, site-b, site-c, site-d] and back to [site-a, site-b, site-c]"
            )),
            "{steps}"
        );
    }
    // The spare's node logs are evidence too: one owner per account across four sites.
    assert_eq!(invariant(&report, "one-owner-per-account")["passed"], true);
    let notes = faults[0]["notes"].to_string();
    assert!(
        notes.contains("every founder ran [site-a, site-b, site-c]"),
        "{notes}"
    );
}

/// The first site runs two gateways on etcd (docs/ha.md); its acting gateway is killed
/// again and again. Nobody sees it: no peer comes to own its account (their audit logs),
/// none of its workloads stops (its node logs), and every other invariant holds.
#[test]
fn a_gateway_takeover_campaign_is_seen_by_nobody() {
    let _turn = turn();
    let (output, report) = chaos("gateway-takeover", 1, 40, None);
    let summary = context(&output);
    assert!(output.status.success(), "{summary}");
    assert_eq!(failed(&report), Vec::<String>::new(), "{summary}");
    let faults = faults_as_scheduled(&report, "gateway-takeover", 1, 40, &summary);
    assert!(!faults.is_empty(), "{summary}");
    for fault in faults {
        assert_eq!(fault["kind"], "gateway-takeover", "{fault}");
        assert_eq!(fault["target"], "site-a", "{fault}");
        let notes = fault["notes"].to_string();
        assert!(
            notes.contains("killed;") && notes.contains("back as a standby"),
            "{notes}"
        );
    }
    let seen = invariant(&report, "takeovers-seen-by-nobody");
    assert_eq!(seen["passed"], true, "{seen}");
    let evidence = seen["evidence"].to_string();
    for line in [
        "site-b never owned shop",
        "site-c never owned shop",
        "no workload stopped",
    ] {
        assert!(evidence.contains(line), "{evidence}");
    }
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
    // The evidence quotes the node's own log: the pointer it accepted twice.
    let evidence = invariant(&report, "epochs-never-reused")["evidence"].to_string();
    assert!(
        evidence.contains("events.jsonl: {") && evidence.contains("pointer_accepted"),
        "{evidence}"
    );
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

/// `--plan` prints the schedule a seed gives, each fault as the library draws it, and
/// starts nothing (it needs no report).
#[test]
fn the_plan_prints_the_seeds_schedule_and_starts_nothing() {
    let output = Command::new(BINARY)
        .args(["chaos", "--scenario", "compound", "--seed", "3"])
        .args(["--duration", "50", "--plan"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", context(&output));
    let expected = schedule(&Scenario::parse("compound").unwrap(), 3, 50_000, 3).unwrap();
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), expected.len(), "{stdout}");
    for (ix, (row, fault)) in rows.iter().zip(&expected).enumerate() {
        assert!(row.contains(fault.kind.name()), "{row}");
        assert!(row.contains(&fault.target.to_string()), "{row}");
        assert!(
            row.contains(&format!("{:.1}", fault.start_ms as f64 / 1000.0)),
            "{row}"
        );
        // The second fault of a pair is marked as overlapping the first.
        let overlaps = expected[..ix]
            .iter()
            .any(|other| other.episode == fault.episode);
        assert_eq!(row.contains("+ "), overlaps, "{row}");
    }
    assert!(!stdout.contains("settled"), "nothing started: {stdout}");
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

/// Starts a campaign tagged `tag` (seed 19 for 75 s: a gateway kill, a pause, a stale
/// grant, a node kill), its stderr to a file; returns the child and the stderr's path.
fn start_tagged_campaign(dir: &Path, tag: &str) -> (TaggedChild, PathBuf) {
    let stderr = dir.join("stderr.txt");
    let child = Command::new(BINARY)
        .args([
            "chaos",
            "--scenario",
            "all",
            "--seed",
            "19",
            "--duration",
            "75",
        ])
        .arg("--report")
        .arg(dir.join("report.json"))
        .env_remove("LEASEHOLD_TEST_PLANT")
        .env(TAG, tag)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let child = TaggedChild {
        child,
        tag: tag.to_owned(),
    };
    (child, stderr)
}

/// Sends `signal` to the campaign, waits for it to exit (60 s at most), and checks what a
/// person would: the exit code, what it said, the kept files, and no process of it left.
fn assert_stopped_by(mut child: TaggedChild, stderr: &Path, tag: &str, signal: Signal) {
    let status = signal_and_wait(&mut child, signal, Duration::from_secs(60)).unwrap();
    let said = std::fs::read_to_string(stderr).unwrap();
    assert_eq!(status.code(), Some(128 + signal as i32), "{said}");
    assert_eq!(tagged(tag), Vec::new(), "{said}");
    assert!(
        said.contains(&format!(
            "{} received: stopping every process it started",
            signal.as_str()
        )),
        "{said}"
    );
    assert!(said.contains("chaos: FAILED (interrupted)"), "{said}");
    let kept = said
        .lines()
        .find_map(|line| line.strip_prefix("chaos: files kept in "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no kept folder said: {said}"));
    assert!(Path::new(kept).join("certs").is_dir(), "{said}");
    std::fs::remove_dir_all(kept).unwrap();
}

/// Ctrl-C while the load runs, with every gateway, node agent and workload up.
#[test]
fn ctrl_c_stops_a_running_campaign_and_every_process_it_started() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("chaos-sigint-{}", std::process::id());
    let (child, stderr) = start_tagged_campaign(dir.path(), &tag);
    wait_for_tagged(
        &tag,
        "3 gateways, 9 node agents, 3 workloads",
        Duration::from_secs(60),
        |seen| {
            count(seen, " gateway run") == 3
                && count(seen, " node run") == 9
                && workloads(seen) >= 3
        },
    )
    .unwrap();
    assert_stopped_by(child, &stderr, &tag, Signal::SIGINT);
}

/// SIGTERM while the federation is still starting.
#[test]
fn sigterm_stops_a_starting_campaign_and_every_process_it_started() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("chaos-sigterm-{}", std::process::id());
    let (child, stderr) = start_tagged_campaign(dir.path(), &tag);
    wait_for_tagged(&tag, "a node agent", Duration::from_secs(60), |seen| {
        count(seen, " node run") >= 1
    })
    .unwrap();
    assert_stopped_by(child, &stderr, &tag, Signal::SIGTERM);
}
