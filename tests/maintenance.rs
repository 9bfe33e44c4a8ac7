//! A server taken out of use for maintenance with `leasehold server drain`, on a real
//! gateway with real node agents: a token of role `write` is needed; the account gets a
//! replacement that serves before the server's workload stops (read from the nodes' event
//! logs); the server stays out of use across a gateway restart; `undrain` gives it back.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::{account_state, get_json, server_state};
use leasehold_chaos_tests::harness::evidence::{first_event_ns, violations};
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

#[test]
fn a_drained_server_leaves_only_after_its_replacement_serves_and_stays_out_until_undrained() {
    let dir = TempDir::new().unwrap();
    let mut site = OneSite::shop_on_two_servers(Path::new(BINARY), dir.path())
        .unwrap_or_else(|error| panic!("{error}"));
    site.start_node("a1").unwrap();
    site.start_node("a2").unwrap();
    let admin = site.admin();
    site.wait_serving("shop", 1)
        .unwrap_or_else(|error| panic!("{error}"));
    let shop = account_state(admin, "shop").unwrap();
    let endpoint = shop["endpoints"][0].as_str().unwrap().to_owned();
    let (old, new) = if site
        .site
        .servers
        .iter()
        .any(|(id, addr)| id == "a1" && addr.to_string() == endpoint)
    {
        ("a1", "a2")
    } else {
        ("a2", "a1")
    };
    let gateway = format!("http://{admin}");
    let drain = |token: &str| {
        leasehold(&[
            "server",
            "drain",
            old,
            "--reason",
            "replace a disk",
            "--gateway",
            &gateway,
            "--token-file",
            &dir.path().join(token).to_string_lossy(),
        ])
    };

    // A read token may not drain.
    let refused = drain("viewer.token");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("403") && said.contains("`write`"),
        "{said}"
    );
    assert_eq!(server_state(admin, old).unwrap()["state"], "serving");

    // A write token may; shop is at its minimum, so the server waits for a replacement.
    let drained = drain("ops.token");
    let said = String::from_utf8_lossy(&drained.stdout);
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    assert!(
        said.contains(&format!("{old}: "))
            && said.contains("in maintenance, asked by ops: replace a disk"),
        "{said}"
    );

    // The replacement serves, then the old server drains and is out of use.
    let state = wait_for("the drained server to be in maintenance", SETTLE, || {
        let state = server_state(admin, old)?;
        let shop = account_state(admin, "shop")?;
        if state["state"] == "maintenance" && shop["servers"] == 1 {
            Ok(state)
        } else {
            Err(format!("{state} / {shop}"))
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));
    assert_eq!(state["maintenance"]["by"], "ops", "{state}");
    assert_eq!(server_state(admin, new).unwrap()["account"], "shop");
    let healthy = first_event_ns(&site.work(new), |kind| {
        matches!(kind, EventKind::WorkloadHealthy { account, .. } if account.as_str() == "shop")
    })
    .expect("the replacement's workload was healthy");
    let stopped = first_event_ns(&site.work(old), |kind| {
        matches!(kind, EventKind::WorkloadStopped { .. })
    })
    .expect("the old workload stopped");
    assert!(
        healthy < stopped,
        "the replacement served ({healthy} ns) before the old stopped ({stopped} ns)"
    );
    let audit = get_json(admin, "/v1/audit?after=0&limit=1000").unwrap();
    let kinds: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"maintenance"), "{kinds:?}");

    // Journaled: a restarted gateway keeps it out of use.
    site.gateway.take();
    site.start_gateway()
        .unwrap_or_else(|error| panic!("{error}"));
    wait_for(
        "the server to reconnect, still in maintenance",
        SETTLE,
        || {
            let state = server_state(admin, old)?;
            if state["state"] == "maintenance" && state["connected"] == true {
                Ok(())
            } else {
                Err(state.to_string())
            }
        },
    )
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));

    // Undrained, it is free again.
    let back = leasehold(&[
        "server",
        "undrain",
        old,
        "--gateway",
        &gateway,
        "--token-file",
        &dir.path().join("ops.token").to_string_lossy(),
    ]);
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert!(String::from_utf8_lossy(&back.stdout).contains("in use"));
    wait_for("the server to be free", SETTLE, || {
        let state = server_state(admin, old)?;
        if state["state"] == "free" && state.get("maintenance").is_none() {
            Ok(())
        } else {
            Err(state.to_string())
        }
    })
    .unwrap_or_else(|error| panic!("{error}"));
    let works = [site.work("a1"), site.work("a2")];
    let works: Vec<&Path> = works.iter().map(|path| path.as_path()).collect();
    assert_eq!(
        violations(&works, Duration::from_millis(100)).unwrap(),
        Vec::new()
    );
}
