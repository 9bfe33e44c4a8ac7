//! Who votes on ownership, changed while the federation runs (docs/ownership.md,
//! "Members"), with real gateways, node agents and workloads: three sites found a
//! federation; a fourth is added by editing their configs (they wait for it) and starting
//! it (it joins, they step); then it is removed again by editing their configs. And the
//! same while accounts fail over: a site is added while one of the founders is down, and
//! removed while it serves an account it took over from a site killed meanwhile. Each
//! site's members as `/v1/status` shows them, the `members` records of the audit logs,
//! and, from the node event logs, no account served at two sites at once throughout.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::get_json;
use leasehold_chaos_tests::harness::evidence::{mono_now_ns, owner_overlaps};
use leasehold_chaos_tests::harness::federation::Federation;
use leasehold_chaos_tests::harness::onesite::{FAST_TIMINGS, account};
use leasehold_chaos_tests::harness::site::{SiteSpec, joining, save_config, without_site};
use leasehold_chaos_tests::harness::wait_for;
use nix::sys::signal::Signal;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
/// Generous: two cores start every process at once, and a step waits an ownership TTL
/// after each site took its set.
const SETTLE: Duration = Duration::from_secs(60);
const D: usize = 3;

/// One federation at a time: four gateways with their agents and workloads each, and two
/// at once on two cores would starve them past the ownership TTL.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn specs() -> Vec<SiteSpec> {
    with_servers(&[&["a1"], &["b1"], &["c1"], &["d1"]])
}

/// The federation of [`specs`] with these servers at each site.
fn with_servers(servers: &[&[&str]; 4]) -> Vec<SiteSpec> {
    let mut timings = FAST_TIMINGS.to_vec();
    timings.extend([
        ("ownership_ttl_ms", 1500),
        ("ownership_renew_interval_ms", 250),
        ("failback_after_ms", 600_000),
    ]);
    let site = |name: &str, servers: &[&str], accounts| SiteSpec {
        name: name.into(),
        servers: servers.iter().map(|server| server.to_string()).collect(),
        accounts,
        timings: timings.clone(),
        lending: None,
    };
    vec![
        site("site-a", servers[0], vec![account("shop", 1, 1, 20)]),
        site("site-b", servers[1], vec![account("wiki", 1, 1, 15)]),
        site("site-c", servers[2], vec![account("mail", 1, 1, 10)]),
        // The site added and removed homes no account: a removed site's accounts must
        // have moved elsewhere first.
        site("site-d", servers[3], Vec::new()),
    ]
}

/// `text` (a config of the four-site federation) without site-d.
fn without_d(text: &str) -> String {
    without_site(text, "site-d")
}

fn save(path: &Path, text: &str) {
    save_config(path, text).unwrap();
}

fn members(federation: &Federation, index: usize) -> Value {
    get_json(federation.admin(index), "/v1/status")
        .map(|status| status["members"].clone())
        .unwrap_or(Value::Null)
}

fn wait_running(federation: &Federation, index: usize, sites: &[&str]) {
    let expected = Value::from(sites.to_vec());
    federation
        .wait_json(
            index,
            "/v1/status",
            &format!("its members to run {sites:?}"),
            SETTLE,
            |status| status["members"]["running"] == expected,
        )
        .unwrap();
}

fn wait_owned_at_home(federation: &Federation, index: usize, account: &str) {
    let home = federation.sites[index].name.clone();
    federation
        .wait_account(
            index,
            account,
            "owned at home and served",
            SETTLE,
            |entry| entry["owner"] == home.as_str() && entry["servers"].as_u64() >= Some(1),
        )
        .unwrap();
}

fn audit_reasons(federation: &Federation, index: usize, kind: &str) -> Vec<String> {
    get_json(federation.admin(index), "/v1/audit?limit=1000")
        .ok()
        .and_then(|audit| audit.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|record| record["kind"] == kind)
        .filter_map(|record| record["reason"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_site_is_added_and_removed_live_and_no_account_is_served_at_two_sites() {
    let _turn = turn();
    let (mut federation, full) = prepared(specs());
    found_without_d(&mut federation, &full);

    // The three configs name site-d: they want it, and wait for it to answer.
    for (index, text) in full.iter().enumerate().take(3) {
        save(&federation.sites[index].config, text);
    }
    federation
        .wait_json(0, "/v1/status", "to wait for site-d", SETTLE, |status| {
            status["members"]["wanted"]
                .as_array()
                .is_some_and(|w| w.len() == 4)
                && status["members"]["waiting"]
                    .to_string()
                    .contains("site-d has not yet answered")
        })
        .unwrap();
    assert_eq!(
        members(&federation, 0)["running"].as_array().map(Vec::len),
        Some(3)
    );

    // site-d starts: it joins the members the others run, and they step to the four.
    federation.start_gateway(D).unwrap();
    for index in 0..4 {
        wait_running(
            &federation,
            index,
            &["site-a", "site-b", "site-c", "site-d"],
        );
    }
    for index in 0..3 {
        let steps = audit_reasons(&federation, index, "members");
        assert!(
            steps
                .iter()
                .any(|reason| reason.contains("[site-a, site-b, site-c, site-d]")),
            "{steps:#?}"
        );
    }
    let joined = audit_reasons(&federation, D, "members");
    assert!(
        joined
            .iter()
            .any(|reason| reason.contains("(were: [none])")),
        "{joined:#?}"
    );

    // site-d is removed from the three configs: they step back to three; site-d, whose
    // own config still names it, is left behind and claims nothing.
    for (site, text) in federation.sites.iter().zip(&full).take(3) {
        save(&site.config, &without_d(text));
    }
    for index in 0..3 {
        wait_running(&federation, index, &["site-a", "site-b", "site-c"]);
    }
    federation.stop_gateway(D, Signal::SIGTERM).unwrap();
    for (index, account) in [(0, "shop"), (1, "wiki"), (2, "mail")] {
        wait_owned_at_home(&federation, index, account);
    }

    assert_safe(&federation);
}

/// From the node event logs: no account ever ran for two sites at once, and S-1..S-3.
fn assert_safe(federation: &Federation) {
    let sites: Vec<(String, Vec<PathBuf>)> = federation
        .sites
        .iter()
        .map(|site| {
            (
                site.name.clone(),
                site.servers
                    .iter()
                    .map(|(id, _)| federation.work(id))
                    .collect(),
            )
        })
        .collect();
    for account in ["shop", "wiki", "mail"] {
        let overlaps = owner_overlaps(&sites, &[], account, mono_now_ns()).unwrap();
        assert!(overlaps.is_empty(), "{account}: {overlaps:#?}");
    }
    let violations = federation.violations(Duration::from_millis(100)).unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
}

/// The federation of `specs`, prepared and not started, with each site's config as
/// written for all four.
fn prepared(specs: Vec<SiteSpec>) -> (Federation, Vec<String>) {
    let federation = Federation::prepare(Path::new(BINARY), specs).unwrap();
    let full = federation
        .sites
        .iter()
        .map(|site| std::fs::read_to_string(&site.config).unwrap())
        .collect();
    (federation, full)
}

/// The three founders start on their configs (`full`) without site-d, and own their
/// accounts; site-d's config is written to join when it starts.
fn found_without_d(federation: &mut Federation, full: &[String]) {
    for (site, text) in federation.sites.iter().zip(full).take(3) {
        save(&site.config, &without_d(text));
    }
    save(&federation.sites[D].config, &joining(&full[D]));
    for index in 0..3 {
        federation.start_gateway(index).unwrap();
    }
    federation.start_all_nodes().unwrap();
    for (index, account) in [(0, "shop"), (1, "wiki"), (2, "mail")] {
        wait_owned_at_home(federation, index, account);
        wait_running(federation, index, &["site-a", "site-b", "site-c"]);
    }
}

/// The owner of `account` as site `index` sees it, once it is `owner` and served there.
fn wait_owner(federation: &Federation, index: usize, account: &str, owner: &str) {
    federation
        .wait_account(
            index,
            account,
            &format!("owned by {owner} and served"),
            SETTLE,
            |entry| entry["owner"] == owner && entry["servers"].as_u64() >= Some(1),
        )
        .unwrap();
}

/// Membership changes while accounts fail over. The three founders start; site-a's
/// gateway is killed (shop fails over to site-b, and stays there: no failback in this
/// test); site-d is added meanwhile: the others wait for site-a, which restarts on its
/// journal and the edited config, and all four step. Then site-c is killed and mail fails
/// over to site-d (first in its failover list now), and site-d is removed while it serves
/// mail: the others wait for site-c, which restarts, all three step to the set without
/// site-d and refuse its renewals, and mail comes home to site-c once site-d's ownership
/// has run out. No account is ever served at two sites at once.
#[test]
fn a_site_is_added_and_removed_while_accounts_fail_over() {
    let _turn = turn();
    // site-b has a server free to take shop over on, site-d one for mail.
    let specs = with_servers(&[&["a1"], &["b1", "b2"], &["c1"], &["d1"]]);
    let (mut federation, full) = prepared(specs);
    // With site-d a member, mail fails over to it first.
    let full_c = full[2].replace(
        "failover = [\"site-a\", \"site-b\", \"site-d\"]",
        "failover = [\"site-d\", \"site-a\", \"site-b\"]",
    );
    assert_ne!(
        full_c, full[2],
        "site-c's config names mail's failover as expected"
    );
    let with_d = [full[0].clone(), full[1].clone(), full_c];
    found_without_d(&mut federation, &full);

    // site-a is killed: shop fails over to site-b. site-d is added meanwhile (site-a's
    // file too: it reads it when it restarts).
    federation.kill_gateway(0).unwrap();
    wait_owner(&federation, 1, "shop", "site-b");
    for (index, text) in with_d.iter().enumerate() {
        save(&federation.sites[index].config, text);
    }
    federation.start_gateway(D).unwrap();
    wait_waiting_for(&federation, 1, "site-a");
    assert_eq!(
        members(&federation, 1)["running"].as_array().map(Vec::len),
        Some(3),
        "no step while a site of the change is down"
    );
    federation.start_gateway(0).unwrap();
    for index in 0..4 {
        wait_running(
            &federation,
            index,
            &["site-a", "site-b", "site-c", "site-d"],
        );
    }

    // site-c is killed: mail fails over to site-d, first in its list now. site-d is
    // removed while it serves mail; the others wait for site-c.
    federation.kill_gateway(2).unwrap();
    wait_owner(&federation, D, "mail", "site-d");
    for (index, text) in with_d.iter().enumerate() {
        save(&federation.sites[index].config, &without_d(text));
    }
    wait_waiting_for(&federation, 1, "site-c");
    federation.start_gateway(2).unwrap();
    for index in 0..3 {
        wait_running(&federation, index, &["site-a", "site-b", "site-c"]);
    }
    // site-d's ownership runs out unrenewed, and mail comes home.
    wait_owned_at_home(&federation, 2, "mail");
    let lost = audit_reasons(&federation, D, "ownership_lost");
    assert!(
        lost.iter().any(|reason| reason.contains("mail")),
        "site-d lost mail: {lost:#?}"
    );
    federation.stop_gateway(D, Signal::SIGTERM).unwrap();
    // shop stays served: by site-b, where it failed over, or by its home again. With four
    // members and site-c down every renewal needs all three others in time, and on a
    // loaded machine site-b's may lapse; then site-a, up and its home, takes it back.
    wait_for("shop served by site-b or its home site-a", SETTLE, || {
        let served = |index: usize, owner: &str| {
            get_json(federation.admin(index), "/v1/accounts")
                .ok()
                .and_then(|accounts| accounts.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .any(|a| {
                    a["name"] == "shop" && a["owner"] == owner && a["servers"].as_u64() >= Some(1)
                })
        };
        (served(1, "site-b") || served(0, "site-a"))
            .then_some(())
            .ok_or_else(|| "shop not served at site-b nor at site-a".to_owned())
    })
    .unwrap();
    wait_owned_at_home(&federation, 1, "wiki");
    assert_safe(&federation);
}

/// Until site `index` says it waits for `site` to answer: a step needs every site of both
/// sets, and `site` is down.
fn wait_waiting_for(federation: &Federation, index: usize, site: &str) {
    let waiting = format!("{site} has not yet answered");
    federation
        .wait_json(
            index,
            "/v1/status",
            &format!("to wait for {site}"),
            SETTLE,
            |status| status["members"]["waiting"].to_string().contains(&waiting),
        )
        .unwrap();
}

/// A site lost for good is removed without its answer (docs/ownership.md, "Removing a
/// site that is down for good"): site-d joins the three, then its gateway is killed and
/// never started again; the three configs leave it out and the others wait for it ("site-d
/// has not yet answered"); once the configs also name it `departed`, they step to the
/// three, and every account is still owned at home, never served at two sites at once.
#[test]
fn a_site_down_for_good_is_removed_once_the_configs_name_it_departed() {
    let _turn = turn();
    let (mut federation, full) = prepared(specs());
    found_without_d(&mut federation, &full);
    for (index, text) in full.iter().enumerate().take(3) {
        save(&federation.sites[index].config, text);
    }
    federation.start_gateway(D).unwrap();
    for index in 0..4 {
        wait_running(
            &federation,
            index,
            &["site-a", "site-b", "site-c", "site-d"],
        );
    }

    federation.kill_gateway(D).unwrap();
    for (index, text) in full.iter().enumerate().take(3) {
        save(&federation.sites[index].config, &without_d(text));
    }
    wait_waiting_for(&federation, 0, "site-d");
    let waiting = members(&federation, 0)["waiting"].to_string();
    assert!(
        waiting.contains("if it is down for good, name it in [site] departed"),
        "the wait says what to do: {waiting}"
    );
    for (index, text) in full.iter().enumerate().take(3) {
        let departed = without_d(text).replacen("[site]\n", "[site]\ndeparted = [\"site-d\"]\n", 1);
        assert!(departed.contains("departed = "), "{departed}");
        save(&federation.sites[index].config, &departed);
    }
    for index in 0..3 {
        wait_running(&federation, index, &["site-a", "site-b", "site-c"]);
    }
    for (index, account) in [(0, "shop"), (1, "wiki"), (2, "mail")] {
        wait_owned_at_home(&federation, index, account);
    }
    let steps = audit_reasons(&federation, 0, "members");
    assert!(
        steps.iter().any(|reason| reason.contains(
            "need a majority of [site-a, site-b, site-c] (were: [site-a, site-b, site-c, site-d])"
        )),
        "{steps:#?}"
    );
    assert_safe(&federation);
}
