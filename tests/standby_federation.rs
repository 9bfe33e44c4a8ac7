//! A federation of three sites whose first, site-a, runs two gateways on etcd (docs/ha.md),
//! its peers dialling both. kill -9 of site-a's acting gateway, three times: its peers
//! find whichever gateway acts, and site-a keeps its account through each takeover, under
//! the same ownership term (the new active claims it under the term in the store). No
//! other site takes shop over, no workload of site-a stops, and nothing unsafe happens:
//! judged from the node agents' event logs and the peers' audit logs.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::get_json;
use leasehold_chaos_tests::harness::etcd::{EtcdCluster, etcd_available};
use leasehold_chaos_tests::harness::evidence::{mono_now_ns, node_events};
use leasehold_chaos_tests::harness::federation::Federation;
use leasehold_chaos_tests::harness::site::SiteSpec;
use leasehold_chaos_tests::harness::wait_for;
use leasehold_node::event_log::EventKind;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
const KILLS: usize = 3;
const STEP: Duration = Duration::from_secs(30);
/// site-a, the site of two gateways.
const A: usize = 0;

fn check<T>(result: Result<T, String>, step: &str) -> T {
    result.unwrap_or_else(|error| panic!("{step}: {error}"))
}

/// Account `name` as the gateway at `admin` shows it, once `accept` holds.
fn account_where(
    admin: SocketAddr,
    name: &str,
    accept: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let accounts = get_json(admin, "/v1/accounts")?;
    accounts
        .as_array()
        .and_then(|all| all.iter().find(|a| a["name"] == name && accept(a)).cloned())
        .ok_or_else(|| format!("{name} not yet: {accounts}"))
}

/// site-a as the gateway at `admin` shows its peer, once `accept` holds.
fn site_a_at(admin: SocketAddr, accept: impl Fn(&Value) -> bool) -> Result<Value, String> {
    let peers = get_json(admin, "/v1/peers")?;
    peers
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "site-a" && accept(p)))
        .cloned()
        .ok_or_else(|| format!("{peers}"))
}

/// When the node agent of `work` has had its lease extended since `since_ns`.
fn renewed_since(work: &Path, since_ns: u64) -> Result<u64, String> {
    node_events(work)?
        .into_iter()
        .find(|event| {
            event.mono_ns > since_ns && matches!(event.kind, EventKind::LeaseExtended { .. })
        })
        .map(|event| event.mono_ns)
        .ok_or_else(|| "no renewal since".to_owned())
}

#[test]
fn takeovers_at_a_site_of_standbys_are_seen_by_no_peer() {
    if let Err(why) = etcd_available() {
        panic!("this test needs etcd: {why}");
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let etcd = EtcdCluster::start(&dir.path().join("etcd"), 1).expect("etcd starts");
    // Node leases and ownership grants that outlast a takeover (docs/ha.md, "The timing"),
    // the same ownership TTL at every site.
    let timings = vec![("lease_ttl_ms", 8_000), ("ownership_ttl_ms", 6_000)];
    let specs: Vec<SiteSpec> = [
        ("site-a", "a1", "shop"),
        ("site-b", "b1", "blog"),
        ("site-c", "c1", "wiki"),
    ]
    .into_iter()
    .map(|(site, server, account)| SiteSpec {
        timings: timings.clone(),
        ..SiteSpec::one_server(site, server, account)
    })
    .collect();
    let mut federation = check(
        Federation::prepare(Path::new(BINARY), specs),
        "the federation",
    );
    check(
        federation.add_standby(A, &etcd.endpoints()),
        "site-a's gateways",
    );
    for site in 0..3 {
        check(federation.start_gateway(site), "a gateway");
    }
    check(federation.start_all_nodes(), "the node agents");
    let gateways = |federation: &Federation| -> Vec<(SocketAddr, SocketAddr)> {
        let standby = federation.standby.as_ref().expect("site-a's gateways");
        standby
            .gateways
            .iter()
            .map(|g| g.admin)
            .zip(standby.federation_addrs.iter().copied())
            .collect()
    };
    let addrs = gateways(&federation);
    let mut acting = check(federation.standby_active("one to act"), "start");
    let owned_at_home =
        |account: &Value| account["owner"] == "site-a" && account["servers"].as_u64() >= Some(1);
    let home = check(
        wait_for("shop served by site-a", STEP, || {
            account_where(addrs[acting].0, "shop", owned_at_home)
        }),
        "shop at home",
    );
    // The term site-a owns shop under: every takeover keeps it (the new active claims
    // under the term in the store, docs/ha.md).
    let term = home["ownership_term"].clone();
    assert!(term.is_u64(), "{home}");
    for site in 1..3 {
        let admin = federation.admin(site);
        check(
            wait_for("site-a's peers to see it up", STEP, || {
                site_a_at(admin, |p| p["state"] == "up")
            }),
            "peers up",
        );
    }
    let a1 = federation.work("a1");

    let mut times = Vec::new();
    for kill in 0..KILLS {
        let killed_at = mono_now_ns();
        let (killed, next) = check(federation.kill_acting_standby(), &format!("kill {kill}"));
        assert_eq!(killed, acting);
        let renewed = check(
            wait_for("a1 renewed by the new active gateway", STEP, || {
                renewed_since(&a1, killed_at)
            }),
            &format!("kill {kill}: renewal"),
        );
        times.push(Duration::from_nanos(renewed - killed_at));
        // The new active owns shop again, as site-a: its peers answered its claim.
        check(
            wait_for("shop owned by site-a under the new active", STEP, || {
                account_where(addrs[next].0, "shop", |account| {
                    owned_at_home(account) && account["ownership_term"] == term
                })
            }),
            &format!("kill {kill}: ownership"),
        );
        // Each peer has dialled the new active gateway, at its own address.
        let dialled = addrs[next].1.to_string();
        for site in 1..3 {
            let admin = federation.admin(site);
            check(
                wait_for("a peer to dial the new active gateway", STEP, || {
                    site_a_at(admin, |p| {
                        p["dialled"] == true && p["dialled_addr"] == dialled.as_str()
                    })
                }),
                &format!("kill {kill}: site {site} dials {dialled}"),
            );
        }
        check(
            federation.restart_standby(acting),
            &format!("kill {kill}: restart"),
        );
        acting = next;
    }
    eprintln!("takeovers in a federation, kill -9 to a1 renewed by the new active: {times:?}");

    // No peer took shop over, or owned it at any time.
    for site in 1..3 {
        let admin = federation.admin(site);
        let audit = check(
            get_json(admin, "/v1/audit?limit=1000"),
            "a peer's audit log",
        );
        let records = audit.as_array().cloned().unwrap_or_default();
        let shop: Vec<&Value> = records
            .iter()
            .filter(|record| record["account"] == "shop")
            .collect();
        assert!(
            shop.is_empty(),
            "site {site} recorded something of shop: {shop:#?}\n{}",
            federation.outputs()
        );
    }
    // a1's workload never stopped, and took one pointer in all.
    let events = check(node_events(&a1), "a1's event log");
    let stopped: Vec<_> = events
        .iter()
        .filter(|event| matches!(event.kind, EventKind::WorkloadStopped { .. }))
        .collect();
    assert!(stopped.is_empty(), "a1: workloads stopped: {stopped:?}");
    let pointers = events
        .iter()
        .filter(|event| matches!(event.kind, EventKind::PointerAccepted { .. }))
        .count();
    assert_eq!(pointers, 1, "a1: one pointer in all, at the start");
    let found = check(
        federation.violations(Duration::from_millis(500)),
        "the node logs",
    );
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(federation.nodes[0].0, A);
}
