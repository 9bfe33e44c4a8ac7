//! Site failover without split brain (issue #5), with three real gateways, node agents and
//! workloads on loopback. site-a homes `shop` (failover: site-b, then site-c); when site-a's
//! gateway dies or freezes, site-b takes shop over once site-a's ownership has run out, and
//! the node event logs show that shop never ran at two sites at once.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use leasehold_chaos_tests::harness::admin::get_json;
use leasehold_chaos_tests::harness::evidence::{
    LentRun, lent_runs, mono_now_ns, owner_overlaps, running as runs_in,
};
use leasehold_chaos_tests::harness::federation::Federation;
use leasehold_chaos_tests::harness::onesite::{FAST_TIMINGS, account};
use leasehold_chaos_tests::harness::site::SiteSpec;
use nix::sys::signal::Signal;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
const SETTLE: Duration = Duration::from_secs(40);
const A: usize = 0;
const B: usize = 1;

/// One federation at a time (see tests/loans.rs).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The failover bound these timings give (docs/ownership.md): site-a's grants run out at
/// most `ownership_ttl × 1.01` after its last renewal; site-b claims every renew interval
/// plus up to 200 ms of back-off; then a round (100 ms) and the workload's start. About
/// 2.3 s; the assertion leaves room for two loaded cores.
const BOUND: Duration = Duration::from_secs(6);

fn specs() -> Vec<SiteSpec> {
    // No hand-back during these tests, unless a test sets it.
    specs_with_failback(600_000)
}

fn specs_with_failback(failback_after_ms: u64) -> Vec<SiteSpec> {
    let mut timings = FAST_TIMINGS.to_vec();
    timings.extend([
        ("ownership_ttl_ms", 1500),
        ("ownership_renew_interval_ms", 250),
        ("failback_after_ms", failback_after_ms),
    ]);
    let site = |name: &str, servers: &[&str], account_spec| SiteSpec {
        name: name.into(),
        servers: servers.iter().map(|s| s.to_string()).collect(),
        accounts: vec![account_spec],
        timings: timings.clone(),
        lending: None,
    };
    vec![
        site("site-a", &["a1", "a2"], account("shop", 1, 1, 20)),
        site("site-b", &["b1", "b2", "b3"], account("wiki", 1, 1, 15)),
        site("site-c", &["c1", "c2"], account("mail", 1, 1, 10)),
    ]
}

fn account_at(federation: &Federation, index: usize, name: &str) -> Option<Value> {
    get_json(federation.admin(index), "/v1/accounts")
        .ok()?
        .as_array()?
        .iter()
        .find(|account| account["name"] == name)
        .cloned()
}

/// Every site serving its own account as its owner.
fn running() -> (MutexGuard<'static, ()>, Federation) {
    let turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut federation = Federation::start(Path::new(BINARY), specs()).unwrap();
    settle(&mut federation);
    (turn, federation)
}

/// As [`running`], with every path between sites through a relay; `plant` starts site-a's
/// gateway with the test-only switch that renews ownership without a majority.
fn running_through_relays(plant: bool) -> (MutexGuard<'static, ()>, Federation) {
    let turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut federation =
        Federation::prepare_with_relays(Path::new(BINARY), specs_with_failback(2000), 7).unwrap();
    if plant {
        federation.gateway_env[A] = vec![(
            "LEASEHOLD_TEST_PLANT".to_owned(),
            "renew-without-majority".to_owned(),
        )];
    }
    for index in 0..federation.sites.len() {
        federation.start_gateway(index).unwrap();
    }
    settle(&mut federation);
    (turn, federation)
}

fn settle(federation: &mut Federation) {
    federation.start_all_nodes().unwrap();
    for (index, name) in [(0, "shop"), (1, "wiki"), (2, "mail")] {
        let site = federation.sites[index].name.clone();
        federation
            .wait_account(index, name, "owned and served", SETTLE, |a| {
                a["owner"] == site.as_str() && a["servers"] == 1
            })
            .unwrap();
    }
}

/// Waits until site-b owns shop and serves it; returns how long that took from `since`.
fn taken_over_by_b(federation: &Federation, since: Instant) -> Duration {
    federation
        .wait_json(
            B,
            "/v1/accounts",
            "shop owned and served by site-b",
            SETTLE,
            |v| {
                v.as_array().is_some_and(|accounts| {
                    accounts.iter().any(|a| {
                        a["name"] == "shop"
                            && a["owner"] == "site-b"
                            && a["servers"].as_u64() >= Some(1)
                    })
                })
            },
        )
        .unwrap();
    since.elapsed()
}

fn works(federation: &Federation, index: usize) -> Vec<PathBuf> {
    federation.sites[index]
        .servers
        .iter()
        .map(|(id, _)| federation.work(id))
        .collect()
}

/// When shop ran for two sites at once, from every node's event log and the loans in
/// every live gateway's audit log.
fn shop_overlaps(federation: &Federation) -> Vec<String> {
    let sites: Vec<(String, Vec<PathBuf>)> = (0..federation.sites.len())
        .map(|index| {
            (
                federation.sites[index].name.clone(),
                works(federation, index),
            )
        })
        .collect();
    let lent: Vec<LentRun> = (0..federation.sites.len())
        .filter_map(|index| get_json(federation.admin(index), "/v1/audit?limit=1000").ok())
        .flat_map(|audit| audit.as_array().map(|records| lent_runs(records)))
        .flatten()
        .collect();
    owner_overlaps(&sites, &lent, "shop", mono_now_ns()).unwrap()
}

/// No instant at which shop ran at two sites, and S-1..S-3 on every node.
fn assert_no_split_brain(federation: &Federation) {
    let overlaps = shop_overlaps(federation);
    assert!(overlaps.is_empty(), "{overlaps:#?}");
    let violations = federation.violations(Duration::from_millis(100)).unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
}

fn takeover_audited(federation: &Federation) {
    let audit = get_json(federation.admin(B), "/v1/audit?limit=1000").unwrap();
    let takeovers: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "takeover" && r["account"] == "shop")
        .collect();
    assert_eq!(takeovers.len(), 1, "{audit}");
    assert_eq!(
        takeovers[0]["peer"], "site-a",
        "the record names shop's home"
    );
    assert!(takeovers[0]["term"].as_u64().is_some());
}

#[test]
fn a_killed_gateways_account_is_owned_and_served_elsewhere_within_the_bound() {
    let (_turn, mut federation) = running();
    let killed = Instant::now();
    federation.kill_gateway(A).unwrap();
    let took = taken_over_by_b(&federation, killed);
    eprintln!(
        "shop owned and served at site-b {} ms after site-a's gateway was killed",
        took.as_millis()
    );
    assert!(took <= BOUND, "took {took:?}, bound {BOUND:?}");
    takeover_audited(&federation);
    // site-c, second in the list, stays out of it.
    let at_c = account_at(&federation, 2, "shop");
    assert!(
        at_c.as_ref().is_none_or(|a| a["owner"] != "site-c"),
        "{at_c:?}"
    );
    assert_no_split_brain(&federation);
}

#[test]
fn a_gateway_frozen_past_its_lease_does_not_serve_as_owner_when_it_wakes() {
    let (_turn, mut federation) = running();
    let gateway = federation.gateways[A].as_ref().unwrap();
    gateway.signal(Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    let took = taken_over_by_b(&federation, frozen);
    eprintln!(
        "shop owned and served at site-b {} ms after site-a's gateway froze",
        took.as_millis()
    );
    federation.gateways[A]
        .as_ref()
        .unwrap()
        .signal(Signal::SIGCONT)
        .unwrap();
    // Awake, site-a learns that site-b holds shop, and serves nothing of it.
    let shop = federation
        .wait_json(
            A,
            "/v1/accounts",
            "site-a to see site-b as shop's owner",
            SETTLE,
            |v| {
                v.as_array().is_some_and(|accounts| {
                    accounts
                        .iter()
                        .any(|a| a["name"] == "shop" && a["owner"] == "site-b")
                })
            },
        )
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let shop_at_a = account_at(&federation, A, "shop").unwrap();
    assert_eq!(shop_at_a["servers"], 0, "{shop_at_a}\n{shop}");
    assert_ne!(shop_at_a["owner"], "site-a");
    takeover_audited(&federation);
    assert_no_split_brain(&federation);
    let _ = &mut federation;
}

/// Waits until site-a serves shop (`count` servers) as its owner, or serves none of it.
fn shop_at_a(federation: &Federation, what: &str, accept: impl Fn(&Value) -> bool) {
    federation
        .wait_json(A, "/v1/accounts", what, SETTLE, |v| {
            v.as_array()
                .is_some_and(|accounts| accounts.iter().any(|a| a["name"] == "shop" && accept(a)))
        })
        .unwrap();
}

#[test]
fn an_isolated_site_stops_serving_the_majority_takes_over_and_it_fails_back_after_healing() {
    let (_turn, federation) = running_through_relays(false);
    let cut = Instant::now();
    federation.isolate(A, true).unwrap();
    let took = taken_over_by_b(&federation, cut);
    eprintln!(
        "shop owned and served at site-b {} ms after site-a was cut off",
        took.as_millis()
    );
    // The isolated site is alive, and serves nothing of shop: its ownership ran out.
    shop_at_a(&federation, "site-a no longer serving shop", |a| {
        a["servers"] == 0 && a["owner"] != "site-a"
    });
    takeover_audited(&federation);
    // Heal: site-b hands shop back once site-a has been up for failback_after (2 s),
    // drain-first: it borrows a server of site-a for shop, drains its own, then releases.
    federation.isolate(A, false).unwrap();
    shop_at_a(&federation, "shop back home at site-a", |a| {
        a["owner"] == "site-a" && a["servers"] == 1
    });
    let kinds = |index: usize| -> Vec<Value> {
        get_json(federation.admin(index), "/v1/audit?limit=1000")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["account"] == "shop")
            .cloned()
            .collect()
    };
    let at_b = kinds(B);
    for kind in ["handback_started", "handback"] {
        assert!(at_b.iter().any(|r| r["kind"] == kind), "{kind}: {at_b:#?}");
    }
    let handovers: Vec<Value> = kinds(A)
        .into_iter()
        .filter(|r| r["kind"] == "handover")
        .collect();
    assert_eq!(handovers.len(), 1, "{handovers:#?}");
    // From the node logs: the site-a server serving shop now started it before site-b's
    // last server of shop stopped, and runs under the epoch it was lent under (the
    // hand-over did not restart it).
    let now = mono_now_ns();
    let last_run = |index: usize| {
        works(&federation, index)
            .iter()
            .flat_map(|work| runs_in(work, now).unwrap())
            .filter(|run| run.account == "shop")
            .max_by_key(|run| run.from_mono_ns)
            .unwrap()
    };
    let (home, interim) = (last_run(A), last_run(B));
    assert_eq!(
        home.to_mono_ns, now,
        "site-a's server still runs shop: {home:?}"
    );
    assert!(
        home.from_mono_ns < interim.to_mono_ns,
        "drain-first: site-a's {home:?} started before site-b's {interim:?} stopped"
    );
    assert_eq!(handovers[0]["epoch"].as_u64(), Some(home.epoch));
    eprintln!(
        "hand-back: site-a's server served shop {} ms before site-b's stopped",
        (interim.to_mono_ns - home.from_mono_ns) / 1_000_000
    );
    assert_no_split_brain(&federation);
}

#[test]
fn the_overlap_checker_catches_a_site_that_renews_ownership_without_a_majority() {
    let (_turn, federation) = running_through_relays(true);
    federation.isolate(A, true).unwrap();
    taken_over_by_b(&federation, Instant::now());
    // The planted site-a keeps counting itself owner alone, and keeps its node running.
    std::thread::sleep(Duration::from_secs(2));
    let overlaps = shop_overlaps(&federation);
    assert!(
        !overlaps.is_empty(),
        "shop ran at site-a and site-b at once, and the checker must say so"
    );
    assert!(
        federation
            .output(A)
            .contains("TEST SWITCH LEASEHOLD_TEST_PLANT"),
        "the switch was on"
    );
}

#[test]
fn a_gateway_restarted_on_its_journal_loses_nothing_and_doubles_nothing() {
    let (_turn, mut federation) = running();
    let before = account_at(&federation, A, "shop").unwrap();
    let term_before = before["ownership_term"].as_u64().unwrap();
    federation.kill_gateway(A).unwrap();
    federation.start_gateway(A).unwrap();
    // Its journal gave its leases back (audited `recovered`), and shop is served again,
    // by site-a (it claims again under its journaled term, granted while its peers still
    // hold its grants, else one higher) or, if the restart was slow, by site-b (higher).
    let audit = get_json(federation.admin(A), "/v1/audit?limit=1000").unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "recovered" && r["account"] == "shop"),
        "{audit}"
    );
    let served = federation
        .wait_json(
            A,
            "/v1/accounts",
            "shop owned and served again",
            SETTLE,
            |v| {
                v.as_array().is_some_and(|accounts| {
                    accounts.iter().any(|a| {
                        a["name"] == "shop"
                            && a["owner"].is_string()
                            && a["ownership_term"].as_u64() >= Some(term_before)
                    })
                })
            },
        )
        .unwrap();
    let owner = served
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "shop")
        .map(|a| a["owner"].as_str().unwrap_or_default().to_owned())
        .unwrap();
    eprintln!("after the restart, shop is owned by {owner}");
    let owner_index = federation.index(&owner);
    federation
        .wait_json(
            owner_index,
            "/v1/accounts",
            "shop served by its owner",
            SETTLE,
            |v| {
                v.as_array().is_some_and(|accounts| {
                    accounts
                        .iter()
                        .any(|a| a["name"] == "shop" && a["servers"].as_u64() >= Some(1))
                })
            },
        )
        .unwrap();
    // Nothing doubled: no epoch reused, no server running two accounts, shop never at two
    // sites (every node's log).
    assert_no_split_brain(&federation);
}
