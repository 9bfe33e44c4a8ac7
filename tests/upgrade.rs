//! What an upgrade does to a running federation (docs/operations.md, "Three datacenters,
//! end to end", step 8): a gateway stopped and started again, as `systemctl restart` does
//! with a new binary, keeps every workload of its site running under the same lease epoch
//! when it is back within its leases, and reclaims its accounts' ownership; nothing moves.
//! A node agent replaced in place (SIGUSR2, as after a package upgrade) keeps its workload
//! the same way.
//! The evidence is the node agents' event logs, not what the gateways say.

use std::path::Path;
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::server_state;
use leasehold_chaos_tests::harness::evidence::{mono_now_ns, node_events};
use leasehold_chaos_tests::harness::federation::Federation;
use leasehold_chaos_tests::harness::site::SiteSpec;
use leasehold_chaos_tests::harness::wait_for;
use leasehold_node::event_log::EventKind;
use nix::sys::signal::Signal;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
const SETTLE: Duration = Duration::from_secs(40);

/// Leases and ownership grants of 8 s: room for a debug build's restart on a busy machine,
/// which is what this test may take; a release build restarts in well under the default 2 s.
/// And a node silent for 5 s before it counts as failed, for an agent replaced in place.
const TIMINGS: [(&str, u64); 5] = [
    ("lease_ttl_ms", 8000),
    ("renew_interval_ms", 500),
    ("ownership_ttl_ms", 8000),
    ("ownership_renew_interval_ms", 500),
    ("heartbeat_misses_before_failed", 20),
];

fn spec(name: &str, server: &str, account: &str) -> SiteSpec {
    SiteSpec {
        timings: TIMINGS.to_vec(),
        ..SiteSpec::one_server(name, server, account)
    }
}

/// The account's entry in site `index`'s `/v1/accounts` once `accept` holds for it.
fn account(
    federation: &Federation,
    index: usize,
    name: &str,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let accounts = federation
        .wait_account(index, name, what, SETTLE, accept)
        .unwrap_or_else(|error| panic!("{error}"));
    accounts
        .as_array()
        .and_then(|accounts| accounts.iter().find(|entry| entry["name"] == name))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_gateway_restart_and_an_agent_replaced_in_place_keep_every_workload_and_its_accounts() {
    let specs = vec![
        spec("site-a", "a1", "shop"),
        spec("site-b", "b1", "wiki"),
        spec("site-c", "c1", "mail"),
    ];
    let mut federation = Federation::start(Path::new(BINARY), specs).unwrap();
    federation.start_all_nodes().unwrap();
    let homes = [("site-a", "shop"), ("site-b", "wiki"), ("site-c", "mail")];
    let mut terms = Vec::new();
    for (index, (site, name)) in homes.iter().enumerate() {
        let seen = account(&federation, index, name, "owned at home and served", |a| {
            a["owner"] == *site && a["servers"] == 1
        });
        terms.push(seen["ownership_term"].as_u64().unwrap());
    }
    // The workload a1 runs, and its epoch, from a1's own log.
    let a1 = federation.work("a1");
    let started = || {
        node_events(&a1)
            .unwrap()
            .into_iter()
            .filter_map(|event| match event.kind {
                EventKind::WorkloadStarted {
                    account,
                    epoch,
                    pid,
                    ..
                } => Some((account.to_string(), epoch, pid)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let before = started();
    assert_eq!(before.len(), 1, "{before:?}");

    for round in 1..=2 {
        let restarted_at = mono_now_ns();
        federation.stop_gateway(0, Signal::SIGTERM).unwrap();
        federation.start_gateway(0).unwrap();
        // Reclaimed under its journaled term while its peers hold its grants, else higher.
        let seen = account(&federation, 0, "shop", "reclaimed and served", |a| {
            a["owner"] == "site-a"
                && a["ownership_term"].as_u64() >= Some(terms[0])
                && a["servers"] == 1
        });
        terms[0] = seen["ownership_term"].as_u64().unwrap();
        // Its peers saw no change of owner of their own accounts.
        for (index, (site, name)) in homes.iter().enumerate().skip(1) {
            let seen = account(&federation, index, name, "still owned at home", |a| {
                a["owner"] == *site && a["servers"] == 1
            });
            assert_eq!(
                seen["ownership_term"].as_u64(),
                Some(terms[index]),
                "{seen}"
            );
        }
        // a1 reconnects and the restarted gateway renews its lease, under the same epoch.
        let epoch = before[0].1;
        wait_for("a1's lease renewed by the restarted gateway", SETTLE, || {
            let events = node_events(&a1)?;
            events
                .iter()
                .any(|event| {
                    event.mono_ns > restarted_at
                        && matches!(event.kind, EventKind::LeaseExtended { epoch: e, .. } if e == epoch)
                })
                .then_some(())
                .ok_or_else(|| format!("round {round}: {} events, no renewal since", events.len()))
        })
        .unwrap_or_else(|error| panic!("{error}\n{}", federation.outputs()));
        // And never stopped its workload nor started another: the same process throughout.
        let stopped: Vec<_> = node_events(&a1)
            .unwrap()
            .into_iter()
            .filter(|event| event.mono_ns > restarted_at)
            .filter(|event| matches!(event.kind, EventKind::WorkloadStopped { .. }))
            .collect();
        assert!(stopped.is_empty(), "round {round}: {stopped:?}");
        assert_eq!(started(), before, "round {round}");
    }

    // The agent, replaced in place (SIGUSR2) as an agent upgrade replaces it: the new image
    // adopts the workload, the gateway sees a reconnect and renews the same lease.
    let replaced_at = mono_now_ns();
    let (_, _, agent) = federation
        .nodes
        .iter()
        .find(|(_, server, _)| server == "a1")
        .unwrap();
    agent.signal(Signal::SIGUSR2).unwrap();
    let epoch = before[0].1;
    let adopted = wait_for("a1's new image to adopt and renew", SETTLE, || {
        let events = node_events(&a1)?;
        let after = |wanted: &dyn Fn(&EventKind) -> bool| {
            events
                .iter()
                .find(|event| event.mono_ns > replaced_at && wanted(&event.kind))
                .map(|event| event.mono_ns)
        };
        let adopted = after(
            &|kind| matches!(kind, EventKind::WorkloadAdopted { epoch: e, .. } if *e == epoch),
        );
        let renewed =
            after(&|kind| matches!(kind, EventKind::LeaseExtended { epoch: e, .. } if *e == epoch));
        match (adopted, renewed) {
            (Some(adopted), Some(renewed)) if renewed > adopted => Ok(adopted),
            _ => Err(format!(
                "{} events, not adopted and renewed yet",
                events.len()
            )),
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", federation.outputs()));
    eprintln!(
        "a1's workload adopted {} ms after SIGUSR2",
        (adopted - replaced_at) / 1_000_000
    );
    let stopped: Vec<_> = node_events(&a1)
        .unwrap()
        .into_iter()
        .filter(|event| event.mono_ns > replaced_at)
        .filter(|event| matches!(event.kind, EventKind::WorkloadStopped { .. }))
        .collect();
    assert!(stopped.is_empty(), "{stopped:?}");
    assert_eq!(started(), before);
    let seen = account(&federation, 0, "shop", "served by a1 still", |a| {
        a["owner"] == "site-a" && a["servers"] == 1
    });
    assert_eq!(seen["ownership_term"].as_u64(), Some(terms[0]), "{seen}");
    let server = server_state(federation.admin(0), "a1").unwrap();
    assert_eq!(server["state"], "serving", "{server}");
    assert_eq!(server["epoch"].as_u64(), Some(epoch.value()), "{server}");
    let violations = federation.violations(Duration::from_millis(100)).unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
}
