//! A site of two gateways on a real etcd of three members (docs/ha.md): one acts, the
//! other stands by. One etcd member lost and back; kill -9 of the gateway that acts, ten
//! times; SIGSTOP of it for longer than its etcd lease; a SIGTERM handover. The other
//! takes over each time with no workload stopped and no server changing account: checked
//! from the node agents' event logs, not from what the gateways say of themselves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::get_text;
use leasehold_chaos_tests::harness::etcd::{EtcdCluster, etcd_available};
use leasehold_chaos_tests::harness::evidence::{mono_now_ns, node_events, violations};
use leasehold_chaos_tests::harness::onesite::account;
use leasehold_chaos_tests::harness::standby_site::StandbySite;
use leasehold_chaos_tests::harness::wait_for;
use leasehold_node::event_log::EventKind;
use nix::sys::signal::Signal;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
/// Takeovers in a run.
const KILLS: usize = 10;

fn check<T>(result: Result<T, String>, step: &str) -> T {
    result.unwrap_or_else(|error| panic!("{step}: {error}"))
}

#[test]
fn a_site_of_two_gateways_survives_kills_a_pause_a_lost_etcd_member_and_a_handover() {
    if let Err(why) = etcd_available() {
        panic!("this test needs etcd: {why}");
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut etcd = EtcdCluster::start(&dir.path().join("etcd"), 3).expect("etcd starts");
    let servers = ["a1".to_owned(), "a2".to_owned()];
    let mut site = check(
        StandbySite::prepare(
            Path::new(BINARY),
            dir.path(),
            &etcd.endpoints(),
            &servers,
            vec![account("shop", 1, 1, 10), account("blog", 1, 1, 5)],
            8_000,
        ),
        "the site",
    );
    let mut acting = check(site.start_gateways(), "start");
    // The standby says so, and who acts.
    let standby = check(site.gateways[1 - acting].standing_by(), "the standby");
    assert!(standby.contains(&site.gateways[acting].name), "{standby}");
    check(site.start_nodes(), "the node agents");
    let placed = check(
        site.wait_placement(acting, "both accounts served"),
        "placement",
    );
    // The standby reads the store as it would to take over, and says what it read; its
    // metrics say it does not act, the active's that it does.
    check(
        wait_for(
            "the standby's view of the store",
            Duration::from_secs(30),
            || {
                let text = site.gateways[1 - acting].standing_by()?;
                if text.contains("its view of the site's store: 2 leases, read") {
                    Ok(text)
                } else {
                    Err(text)
                }
            },
        ),
        "the standby's view",
    );
    let metrics = check(
        get_text(site.gateways[1 - acting].admin, "/metrics"),
        "the standby's metrics",
    );
    assert!(
        metrics.contains("leasehold_gateway_active{site=\"site-a\"} 0")
            && metrics.contains("leasehold_standby_store_leases{site=\"site-a\"} 2"),
        "{metrics}"
    );
    let metrics = check(
        get_text(site.gateways[acting].admin, "/metrics"),
        "the active gateway's metrics",
    );
    assert!(
        metrics.contains("leasehold_gateway_active{site=\"site-a\"} 1"),
        "{metrics}"
    );

    // One etcd member of three lost, then back: the site goes on. A gateway may be
    // deposed while etcd elects a leader (its keep-alives time out) and exit; it comes
    // back as a standby, as its supervisor would start it. No workload stops either way.
    let lost_at = mono_now_ns();
    etcd.kill_member(0).expect("an etcd member killed");
    check(
        site.wait_renewed_since(lost_at, 2, "two renewals of every node since"),
        "etcd member lost",
    );
    etcd.start_member(0).expect("the member back");
    etcd.wait_healthy(Duration::from_secs(60))
        .expect("etcd healthy again");
    acting = check(
        wait_for(
            "one gateway acting with the same placement, the other standing by",
            Duration::from_secs(60),
            || {
                site.restart_exited()?;
                let now = site.active()?;
                let held = site.placement(now)?;
                if held != placed {
                    return Err(format!("{held:?}, not {placed:?}"));
                }
                site.gateways[1 - now].standing_by()?;
                Ok(now)
            },
        ),
        "etcd member lost and back",
    );

    let mut takeovers = Vec::new();
    for kill in 0..KILLS {
        let killed = acting;
        let (next, took) = check(site.kill_active(killed), &format!("kill {kill}"));
        takeovers.push(took);
        // The same servers, accounts and epochs, served under the new active.
        let now = check(
            site.wait_placement(next, "the placement under the new active"),
            &format!("kill {kill}"),
        );
        assert_eq!(now, placed, "kill {kill}");
        check(site.restart_standby(killed), &format!("kill {kill}"));
        acting = next;
    }
    takeovers.sort();
    eprintln!("takeovers, kill -9 to every node renewed by the new active (sorted): {takeovers:?}");

    // SIGSTOP of the active gateway for longer than its etcd lease: the standby takes
    // over, and the stopped one, woken, finds it may no longer act and exits without
    // acting (a renewal or a journal write of its generation would be the first thing it
    // did, and both ask the election first).
    let stopped = acting;
    let stopped_at = mono_now_ns();
    check(site.gateways[stopped].signal(Signal::SIGSTOP), "SIGSTOP");
    let next = check(
        wait_for("the standby to act", Duration::from_secs(30), || {
            site.gateways[1 - stopped]
                .ready()
                .then_some(1 - stopped)
                .ok_or_else(|| "not yet".to_owned())
        }),
        "SIGSTOP",
    );
    check(
        site.wait_renewed_since(stopped_at, 1, "every node renewed by the new active"),
        "SIGSTOP",
    );
    check(site.gateways[stopped].signal(Signal::SIGCONT), "SIGCONT");
    let woken = &mut site.gateways[stopped];
    check(
        wait_for("the woken gateway to exit", Duration::from_secs(30), || {
            if woken.exited() {
                Ok(())
            } else {
                Err("running".to_owned())
            }
        }),
        "SIGCONT",
    );
    let woke = site.gateways[stopped].output();
    assert!(
        woke.contains("no longer acts for its site"),
        "the woken gateway did not say why it exits:\n{woke}"
    );
    assert_eq!(site.active(), Ok(next), "the new active acts on");
    check(site.restart_standby(stopped), "after SIGCONT");
    acting = next;

    // An upgrade's handover: SIGTERM to the active gateway gives the key up as it exits,
    // and the standby takes over, the nodes' workloads running on.
    let termed_at = mono_now_ns();
    check(site.gateways[acting].signal(Signal::SIGTERM), "SIGTERM");
    let leaving = &mut site.gateways[acting];
    check(
        wait_for(
            "the active gateway to exit",
            Duration::from_secs(30),
            || {
                if leaving.exited() {
                    Ok(())
                } else {
                    Err("running".to_owned())
                }
            },
        ),
        "SIGTERM",
    );
    assert!(
        site.gateways[acting]
            .output()
            .contains("handed over: the site's election key given up"),
        "{}",
        site.logs()
    );
    check(
        site.wait_renewed_since(termed_at, 1, "every node renewed by the other gateway"),
        "handover",
    );
    assert_eq!(site.active(), Ok(1 - acting), "the other gateway acts");

    // The evidence: no workload stopped, no second pointer, no safety violation.
    for server in &servers {
        let events = node_events(&site.site.work(server)).expect("the node's event log");
        let stopped: Vec<_> = events
            .iter()
            .filter(|event| matches!(event.kind, EventKind::WorkloadStopped { .. }))
            .collect();
        assert!(
            stopped.is_empty(),
            "{server}: workloads stopped: {stopped:?}"
        );
        let pointers = events
            .iter()
            .filter(|event| matches!(event.kind, EventKind::PointerAccepted { .. }))
            .count();
        assert_eq!(pointers, 1, "{server}: one pointer in all, at the start");
    }
    let works: Vec<PathBuf> = servers.iter().map(|s| site.site.work(s)).collect();
    let works: Vec<&Path> = works.iter().map(PathBuf::as_path).collect();
    let found = violations(&works, Duration::from_millis(500)).expect("the node logs");
    assert!(found.is_empty(), "{found:?}");
    // The standbys refused the agents' registrations, naming the gateway that acted.
    let agent_log = std::fs::read_to_string(site.site.path("node-a1.log")).expect("a1's log");
    assert!(
        agent_log.contains("is a standby; the active gateway is gw-"),
        "no standby refusal in a1's log:\n{agent_log}"
    );
}
