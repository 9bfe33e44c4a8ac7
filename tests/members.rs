//! Who votes on ownership, changed while the federation runs (docs/ownership.md,
//! "Members"), with real gateways, node agents and workloads: three sites found a
//! federation; a fourth is added by editing their configs (they wait for it) and starting
//! it (it joins, they step); then it is removed again by editing their configs. Each
//! site's members as `/v1/status` shows them, the `members` records of the audit logs,
//! and, from the node event logs, no account served at two sites at once throughout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::get_json;
use leasehold_chaos_tests::harness::evidence::{mono_now_ns, owner_overlaps};
use leasehold_chaos_tests::harness::federation::Federation;
use leasehold_chaos_tests::harness::onesite::{FAST_TIMINGS, account};
use leasehold_chaos_tests::harness::site::SiteSpec;
use nix::sys::signal::Signal;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
/// Generous: two cores start every process at once, and a step waits an ownership TTL
/// after each site took its set.
const SETTLE: Duration = Duration::from_secs(60);
const D: usize = 3;

fn specs() -> Vec<SiteSpec> {
    let mut timings = FAST_TIMINGS.to_vec();
    timings.extend([
        ("ownership_ttl_ms", 1500),
        ("ownership_renew_interval_ms", 250),
        ("failback_after_ms", 600_000),
    ]);
    let site = |name: &str, server: &str, accounts| SiteSpec {
        name: name.into(),
        servers: vec![server.into()],
        accounts,
        timings: timings.clone(),
        lending: None,
    };
    vec![
        site("site-a", "a1", vec![account("shop", 1, 1, 20)]),
        site("site-b", "b1", vec![account("wiki", 1, 1, 15)]),
        site("site-c", "c1", vec![account("mail", 1, 1, 10)]),
        // The site added and removed homes no account: a removed site's accounts must
        // have moved elsewhere first.
        site("site-d", "d1", Vec::new()),
    ]
}

/// `text` (a config of the four-site federation) without site-d: no peer block, no
/// failover entry, founding members of three.
fn without_d(text: &str) -> String {
    text.split("\n\n")
        .filter(|block| !(block.starts_with("[[peer]]") && block.contains("name = \"site-d\"")))
        .collect::<Vec<_>>()
        .join("\n\n")
        .replace(", \"site-d\"", "")
        .replace("\"site-d\", ", "")
}

fn save(path: &Path, text: &str) {
    let temporary = path.with_extension("toml.new");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
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
    let mut federation = Federation::prepare(Path::new(BINARY), specs()).unwrap();
    let full: Vec<String> = federation
        .sites
        .iter()
        .map(|site| std::fs::read_to_string(&site.config).unwrap())
        .collect();
    // Three sites found the federation without site-d; site-d, when it starts, joins.
    for (site, text) in federation.sites.iter().zip(&full).take(3) {
        save(&site.config, &without_d(text));
    }
    let joining: String = full[D]
        .lines()
        .filter(|line| !line.starts_with("initial_members"))
        .collect::<Vec<_>>()
        .join("\n");
    save(&federation.sites[D].config, &joining);
    for index in 0..3 {
        federation.start_gateway(index).unwrap();
    }
    federation.start_all_nodes().unwrap();
    for (index, account) in [(0, "shop"), (1, "wiki"), (2, "mail")] {
        wait_owned_at_home(&federation, index, account);
        wait_running(&federation, index, &["site-a", "site-b", "site-c"]);
    }

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

    // From the node event logs: no account ever ran for two sites at once, and S-1..S-3.
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
