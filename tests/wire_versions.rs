//! Builds one management protocol apart, on real processes (docs/wire.md, "Versioning"):
//! a gateway of this build serves a node agent of the previous protocol beside a current
//! one, and a gateway of the previous protocol serves an agent of this build until it is
//! upgraded in place. "The previous protocol" is `leasehold-node/1`, spoken by this build
//! when held to it (`--node-protocol 1`): its bytes are those of the release before
//! protocol 2, pinned by `federation/tests/wire_messages.rs`.
//!
//! The evidence is the node agents' event logs (leases extended, workloads never stopped
//! but when commanded) and what `/v1/servers` says each agent speaks.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::server_state;
use leasehold_chaos_tests::harness::evidence::{mono_now_ns, node_events, violations};
use leasehold_chaos_tests::harness::onesite::{OneSite, SETTLE, account};
use leasehold_chaos_tests::harness::wait_for;
use leasehold_federation::ids::Epoch;
use leasehold_node::event_log::{EventKind, StopReason};
use nix::sys::signal::Signal;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

fn held_to(version: &str) -> Vec<String> {
    vec!["--node-protocol".into(), version.into()]
}

/// The epoch of the workload `server` started last, from its event log.
fn started_epoch(site: &OneSite, server: &str) -> Option<Epoch> {
    node_events(&site.work(server))
        .ok()?
        .into_iter()
        .rev()
        .find_map(|event| match event.kind {
            EventKind::WorkloadStarted { epoch, .. } => Some(epoch),
            _ => None,
        })
}

/// Waits until `server`'s log shows `count` renewals of `epoch` after `since` (mono ns):
/// its heartbeats kept it alive and its renewals were answered, over `count` renew
/// intervals at least.
fn renewed(site: &OneSite, server: &str, epoch: Epoch, since: u64, count: usize) {
    wait_for(
        &format!("{server} to renew its lease of {epoch} {count} times"),
        SETTLE,
        || {
            let events = node_events(&site.work(server))?;
            let seen = events
                .iter()
                .filter(|event| event.mono_ns > since)
                .filter(|event| matches!(event.kind, EventKind::LeaseExtended { epoch: e, .. } if e == epoch))
                .count();
            (seen >= count)
                .then_some(())
                .ok_or_else(|| format!("{seen} renewals so far"))
        },
    )
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));
}

/// The stops in `server`'s log after `since`, with why.
fn stops(site: &OneSite, server: &str, since: u64) -> Vec<(Epoch, StopReason)> {
    node_events(&site.work(server))
        .unwrap()
        .into_iter()
        .filter(|event| event.mono_ns > since)
        .filter_map(|event| match event.kind {
            EventKind::WorkloadStopped { epoch, cause, .. } => Some((epoch, cause)),
            _ => None,
        })
        .collect()
}

fn protocol_of(site: &OneSite, server: &str) -> String {
    let state = server_state(site.admin(), server).unwrap();
    assert_eq!(
        state["agent_version"],
        env!("CARGO_PKG_VERSION"),
        "{server}: {state}"
    );
    state["agent_protocol"].as_str().unwrap_or("").to_owned()
}

fn no_violations(site: &OneSite, servers: &[&str]) {
    let works: Vec<_> = servers.iter().map(|server| site.work(server)).collect();
    let works: Vec<&Path> = works.iter().map(|work| work.as_path()).collect();
    let found = violations(&works, Duration::from_millis(100)).unwrap();
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn an_agent_of_the_previous_protocol_is_served_beside_a_current_one_and_obeys_both_commands() {
    let dir = TempDir::new().unwrap();
    let mut site = OneSite::shop_on_two_servers(Path::new(BINARY), dir.path())
        .unwrap_or_else(|error| panic!("{error}"));
    // a1 speaks the previous protocol; its pointer (ApplyPointer) comes over it.
    site.start_node_with("a1", &held_to("1")).unwrap();
    site.wait_serving("shop", 1)
        .unwrap_or_else(|error| panic!("{error}"));
    let epoch = started_epoch(&site, "a1").expect("a1 started shop");
    let since = mono_now_ns();
    // Its heartbeats keep it from counting as failed (5 misses of 100 ms) and its
    // renewals are answered (a lease of 1 s, renewed every 250 ms): 12 renewals are 3 s.
    renewed(&site, "a1", epoch, since, 12);
    assert_eq!(protocol_of(&site, "a1"), "leasehold-node/1");
    let a1 = server_state(site.admin(), "a1").unwrap();
    assert_eq!(a1["state"], "serving", "{a1}");
    assert_eq!(a1["health"], "healthy", "{a1}");
    assert!(stops(&site, "a1", 0).is_empty());

    // A current agent beside it.
    site.start_node("a2").unwrap();
    wait_for("a2 to register", SETTLE, || {
        let state = server_state(site.admin(), "a2")?;
        state["connected"]
            .as_bool()
            .filter(|connected| *connected)
            .map(|_| ())
            .ok_or_else(|| state.to_string())
    })
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(protocol_of(&site, "a2"), "leasehold-node/2");

    // Drained, a1 hands shop to a2 and is stopped over the previous protocol
    // (StopWorkload), once a2 serves.
    let drained = Command::new(BINARY)
        .args([
            "server",
            "drain",
            "a1",
            "--reason",
            "upgrade its agent",
            "--gateway",
            &format!("http://{}", site.admin()),
            "--token-file",
            &dir.path().join("ops.token").to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    wait_for("a1 stopped by its gateway", SETTLE, || {
        let stopped = stops(&site, "a1", since);
        match stopped.as_slice() {
            [] => Err("not yet".to_owned()),
            [(e, StopReason::Commanded)] if *e == epoch => Ok(()),
            other => Err(format!("stopped otherwise: {other:?}")),
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));
    site.wait_serving("shop", 1)
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(started_epoch(&site, "a2").is_some(), "a2 started shop");
    let a2 = server_state(site.admin(), "a2").unwrap();
    assert_eq!(
        (&a2["state"], &a2["account"]),
        (&"serving".into(), &"shop".into()),
        "{a2}"
    );
    no_violations(&site, &["a1", "a2"]);
}

#[test]
fn a_gateway_of_the_previous_protocol_serves_a_current_agent_and_is_upgraded_under_it() {
    let dir = TempDir::new().unwrap();
    let mut site = OneSite::prepare(
        Path::new(BINARY),
        dir.path(),
        "site-a",
        &["a1".to_owned()],
        vec![account("shop", 1, 1, 10)],
    )
    .unwrap();
    // Leases of 8 s: room for a debug build's gateway restart on a busy machine.
    let config = std::fs::read_to_string(&site.site.config).unwrap();
    let longer = config.replace("lease_ttl_ms = 1000", "lease_ttl_ms = 8000");
    assert_ne!(config, longer, "the test's config sets lease_ttl_ms = 1000");
    std::fs::write(&site.site.config, longer).unwrap();
    site.start_gateway_with(&held_to("1"))
        .unwrap_or_else(|error| panic!("{error}"));
    site.start_node("a1").unwrap();
    site.wait_serving("shop", 1)
        .unwrap_or_else(|error| panic!("{error}"));
    let epoch = started_epoch(&site, "a1").expect("a1 started shop");
    let since = mono_now_ns();
    renewed(&site, "a1", epoch, since, 8);
    assert_eq!(protocol_of(&site, "a1"), "leasehold-node/1");

    // The gateway upgraded in place: stopped, started again speaking both. The agent
    // reconnects and lands on the newer protocol, under the same lease.
    let upgraded_at = mono_now_ns();
    if let Some(mut gateway) = site.gateway.take() {
        gateway.signal(Signal::SIGTERM).unwrap();
        gateway.stop(Duration::from_secs(5));
    }
    site.start_gateway()
        .unwrap_or_else(|error| panic!("{error}"));
    renewed(&site, "a1", epoch, upgraded_at, 8);
    wait_for("a1 to speak leasehold-node/2", SETTLE, || {
        let protocol = protocol_of(&site, "a1");
        (protocol == "leasehold-node/2")
            .then_some(())
            .ok_or(protocol)
    })
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(stops(&site, "a1", 0).is_empty());
    assert_eq!(started_epoch(&site, "a1"), Some(epoch));
    no_violations(&site, &["a1"]);
}

#[test]
fn a_protocol_version_this_build_does_not_speak_is_refused_by_name_before_anything_starts() {
    let dir = TempDir::new().unwrap();
    for command in [
        vec![
            "gateway",
            "run",
            "--config",
            "site.toml",
            "--certs",
            "certs",
        ],
        vec![
            "node",
            "run",
            "--gateway",
            "127.0.0.1:1",
            "--id",
            "a1",
            "--certs",
            "certs",
        ],
    ] {
        let output = Command::new(BINARY)
            .current_dir(dir.path())
            .args(&command)
            .args(["--node-protocol", "3"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{said}");
        assert!(
            said.contains(
                "this build speaks management protocol 2 or 1 (leasehold-node/N), not `3`"
            ),
            "{said}"
        );
        // Nothing was written where it would have run.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
