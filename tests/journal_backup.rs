//! A journal backed up from a running gateway and restored after the site moved on, with
//! real node agents, following docs/operations.md "Backups": the backup needs a `write`
//! token; the restored gateway serves the account again; and no epoch handed out after the
//! backup is handed out again, read from the node agents' own event logs, also for a
//! server whose agent lost its state (a re-installed server knows no epoch, so only the
//! gateway's floor keeps it from reusing one).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::{get_json, server_state};
use leasehold_chaos_tests::harness::evidence::{node_events, violations};
use leasehold_chaos_tests::harness::onesite::{OneSite, SETTLE};
use leasehold_chaos_tests::harness::wait_for;
use leasehold_node::event_log::EventKind;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

fn leasehold(args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .args(args)
        .output()
        .expect("the leasehold binary runs")
}

fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every epoch a node agent accepted, in the order of its logs (`logs` oldest first).
fn accepted_epochs(logs: &[PathBuf]) -> Vec<u64> {
    let mut epochs = Vec::new();
    for work in logs {
        for event in node_events(work).unwrap_or_else(|error| panic!("{error}")) {
            if let EventKind::PointerAccepted { epoch, .. } = event.kind {
                epochs.push(epoch.value());
            }
        }
    }
    epochs
}

#[test]
fn a_restored_backup_serves_again_and_never_hands_out_an_epoch_twice() {
    let dir = TempDir::new().unwrap();
    let mut site = OneSite::shop_on_two_servers(Path::new(BINARY), dir.path())
        .unwrap_or_else(|error| panic!("{error}"));
    site.start_node("a1").unwrap();
    site.start_node("a2").unwrap();
    let admin = site.admin();
    site.wait_serving("shop", 1)
        .unwrap_or_else(|error| panic!("{error}"));
    let serving = |admin| -> Result<String, String> {
        for server in ["a1", "a2"] {
            let state = server_state(admin, server)?;
            if state["state"] == "serving" {
                return Ok(server.to_owned());
            }
        }
        Err("no server serves".into())
    };
    let first = serving(admin).unwrap();
    let other = if first == "a1" { "a2" } else { "a1" };
    let gateway = format!("http://{admin}");
    let token = |name: &str| {
        dir.path()
            .join(format!("{name}.token"))
            .to_string_lossy()
            .into_owned()
    };

    // The backup, from the running gateway: a read token will not do.
    let backup = dir.path().join("site-a.backup.jsonl");
    let backup_arg = backup.to_string_lossy().into_owned();
    let take_backup = |holder: &str| {
        leasehold(&[
            "journal",
            "backup",
            "--out",
            &backup_arg,
            "--gateway",
            &gateway,
            "--token-file",
            &token(holder),
        ])
    };
    let refused = take_backup("viewer");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("403"), "{said}");
    assert!(!backup.exists(), "a refused backup leaves no file");
    let said = ok(&take_backup("ops"));
    assert!(
        said.contains("site site-a") && said.contains("1 leases"),
        "{said}"
    );
    let verified = ok(&leasehold(&["journal", "verify", &backup_arg]));
    assert!(verified.contains("sha256"), "{verified}");

    // After the backup the site moves on: shop moves to the other server, under an epoch
    // the backup does not know.
    ok(&leasehold(&[
        "server",
        "drain",
        &first,
        "--gateway",
        &gateway,
        "--token-file",
        &token("ops"),
    ]));
    wait_for("shop to move to the other server", SETTLE, || {
        let state = server_state(admin, other)?;
        if state["state"] == "serving" {
            Ok(())
        } else {
            Err(state.to_string())
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));
    let moved_to = accepted_epochs(&[site.work(other)]);
    assert!(!moved_to.is_empty(), "{other} accepted shop's pointer");

    // The gateway's disk is lost, and a restore brings back the backup, in which shop runs
    // on the first server. That server is down for good; the other is re-installed at the
    // same time, so its agent starts with no state and knows no epoch: it reports none,
    // and only the restored gateway's floor keeps it from getting one it had before.
    site.gateway.take();
    site.nodes.clear();
    let wiped = dir.path().join(format!("{other}-before-reinstall"));
    std::fs::rename(site.work(other), &wiped).unwrap();
    let state = site.path("state");
    let restored = ok(&leasehold(&[
        "journal",
        "restore",
        "--from",
        &backup_arg,
        "--state",
        &state.to_string_lossy(),
        "--replace",
    ]));
    assert!(
        restored.contains("leases from now on get epochs above")
            && restored.contains("journal.redb.before-restore-"),
        "{restored}"
    );
    site.start_gateway()
        .unwrap_or_else(|error| panic!("{error}"));
    site.start_node(other).unwrap();
    // The restored lease on the first server runs out unheard; shop moves to the other.
    wait_for(
        "shop to be served by the re-installed server",
        SETTLE,
        || {
            let state = server_state(admin, other)?;
            if state["state"] == "serving" && state["account"] == "shop" {
                Ok(())
            } else {
                Err(state.to_string())
            }
        },
    )
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));

    // The audit log: the backup's records, then the restore.
    let audit = get_json(admin, "/v1/audit?after=0&limit=1000").unwrap();
    let records = audit.as_array().unwrap();
    assert_eq!(records[0]["seq"], 1, "the backup's oldest record is back");
    assert!(
        records.iter().any(|r| r["kind"] == "journal_restored"),
        "{audit}"
    );

    // The evidence: every epoch each server's agent ever accepted, across the re-install,
    // is higher than the one before; and the node logs break no invariant.
    for server in ["a1", "a2"] {
        let mut logs = Vec::new();
        if server == other {
            logs.push(wiped.clone());
        }
        logs.push(site.work(server));
        let epochs = accepted_epochs(&logs);
        assert!(
            epochs.windows(2).all(|pair| pair[0] < pair[1]),
            "{server} accepted epochs {epochs:?}"
        );
    }
    let after = accepted_epochs(&[site.work(other)]);
    assert!(
        after.iter().all(|epoch| *epoch > 1_000_000_000_000_000),
        "leases after the restore are above the restore's floor: {after:?}"
    );
    let works = [site.work("a1"), site.work("a2"), wiped];
    let works: Vec<&Path> = works.iter().map(PathBuf::as_path).collect();
    assert_eq!(
        violations(&works, Duration::from_millis(100)).unwrap(),
        Vec::new()
    );

    // With the gateway stopped: compaction, and a backup read from the state directory,
    // which holds the restored records and the restore's own.
    site.gateway.take();
    let state_arg = state.to_string_lossy().into_owned();
    let compacted = ok(&leasehold(&[
        "journal",
        "compact",
        "--state",
        &state_arg,
        "--retention-days",
        "1",
    ]));
    assert!(
        compacted.contains("0 audit records older than 1 day removed")
            && compacted.contains("before,")
            && compacted.contains("after compaction"),
        "{compacted}"
    );
    let offline = dir.path().join("offline.jsonl");
    let said = ok(&leasehold(&[
        "journal",
        "backup",
        "--state",
        &state_arg,
        "--out",
        &offline.to_string_lossy(),
    ]));
    assert!(said.contains("site site-a"), "{said}");
    let backup = std::fs::read_to_string(&offline).unwrap();
    assert!(
        backup.contains("\"journal_restored\""),
        "the restore's record is kept"
    );
    assert!(backup.contains("\"epoch_floor\""), "and its epoch floor");
}
