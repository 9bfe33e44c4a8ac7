//! `[site] store`, `etcd_*`, `gateway_name` and `[[site.gateway]]` (docs/ha.md).

use super::{BASE, check, edit, one_error};
use crate::config::types::SiteStore;

/// BASE without its peer, with `extra` added to `[site]` and `tail` at the end.
fn site(extra: &str, tail: &str) -> String {
    let text = edit(
        BASE,
        "[[peer]]\nname = \"site-b\"\naddr = \"127.0.0.1:7202\"\n",
        "",
    );
    let text = edit(&text, "failover = [\"site-b\"]\n", "");
    let text = edit(&text, "[lending]\nreserve = 1\nmax_lent = 1\n", "");
    let text = edit(
        &text,
        "management_addr = \"127.0.0.1:7301\"\n",
        &format!("management_addr = \"127.0.0.1:7301\"\n{extra}"),
    );
    format!("{text}\n{tail}")
}

const ETCD: &str = "store = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]\n";
const GW2: &str = "[[site.gateway]]\nname = \"gw-2\"\nadmin_addr = \"127.0.0.1:7111\"\nfederation_addr = \"127.0.0.1:7211\"\nmanagement_addr = \"127.0.0.1:7311\"\n";
const LONG_LEASE: &str = "[timings]\nlease_ttl_ms = 8000\nrenew_interval_ms = 1000\n";

#[test]
fn a_site_of_two_gateways_on_etcd_runs_as_either() {
    let text = site(
        &format!("{ETCD}gateway_name = \"gw-1\"\n"),
        &format!("{LONG_LEASE}\n{GW2}"),
    );
    let config = check(&text).unwrap_or_else(|errors| panic!("{errors:#?}"));
    let SiteStore::Etcd(store) = &config.site.store else {
        panic!("not etcd: {:?}", config.site.store);
    };
    assert_eq!(store.lease_ttl_s, 2);
    let names: Vec<&str> = config
        .site
        .gateways
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(names, ["gw-1", "gw-2"]);
    let second = config.clone().as_gateway(Some("gw-2")).expect("gw-2");
    assert_eq!(second.site.admin_addr.to_string(), "127.0.0.1:7111");
    assert_eq!(second.site.management_addr.to_string(), "127.0.0.1:7311");
    let first = config.clone().as_gateway(Some("gw-1")).expect("gw-1");
    assert_eq!(first.site.admin_addr.to_string(), "127.0.0.1:7101");
    let unnamed = config.clone().as_gateway(None).expect_err("no name");
    assert!(
        unnamed.contains("gw-1, gw-2") && unnamed.contains("--name"),
        "{unnamed}"
    );
    let unknown = config
        .as_gateway(Some("gw-9"))
        .expect_err("no such gateway");
    assert!(unknown.contains("no gateway `gw-9`"), "{unknown}");
}

#[test]
fn a_short_node_lease_with_standbys_is_refused_with_the_smallest_that_passes() {
    let text = site(&format!("{ETCD}gateway_name = \"gw-1\"\n"), GW2);
    let error = one_error(&text, "lease_ttl_ms (2000 ms) must be more than");
    assert!(error.contains("lease_ttl_ms = 5001"), "{error}");
}

#[test]
fn standbys_need_etcd_a_name_for_site_s_own_and_distinct_addresses() {
    one_error(
        &site("gateway_name = \"gw-1\"\n", &format!("{LONG_LEASE}\n{GW2}")),
        "keeps its journal in etcd",
    );
    one_error(
        &site(ETCD, &format!("{LONG_LEASE}\n{GW2}")),
        "[site] needs gateway_name",
    );
    one_error(
        &site(
            &format!("{ETCD}gateway_name = \"gw-1\"\n"),
            &format!(
                "{LONG_LEASE}\n{}",
                edit(GW2, "127.0.0.1:7111", "127.0.0.1:7101")
            ),
        ),
        "127.0.0.1:7101 of gateway `gw-2` is also an address of gateway `gw-1`",
    );
    one_error(
        &site(
            &format!("{ETCD}gateway_name = \"gw-1\"\n"),
            &format!("{LONG_LEASE}\n{}", edit(GW2, "gw-2", "gw-1")),
        ),
        "gateway `gw-1` is named twice",
    );
    one_error(
        &site("gateway_name = \"gw-1\"\n", ""),
        "there is no [[site.gateway]]",
    );
}

#[test]
fn standbys_with_peers_need_an_ownership_lease_that_outlasts_a_takeover() {
    let text = edit(
        BASE,
        "management_addr = \"127.0.0.1:7301\"\n",
        &format!("management_addr = \"127.0.0.1:7301\"\n{ETCD}gateway_name = \"gw-1\"\n"),
    );
    let error = one_error(
        &format!("{text}\n{LONG_LEASE}\n{GW2}"),
        "ownership_ttl_ms (3000 ms) must be more than etcd_lease_ttl_s (2 s) plus 3000 ms",
    );
    assert!(error.contains("ownership_ttl_ms = 5001"), "{error}");
    let longer = edit(
        LONG_LEASE,
        "renew_interval_ms = 1000\n",
        "renew_interval_ms = 1000\nownership_ttl_ms = 6000\n",
    );
    check(&format!("{text}\n{longer}\n{GW2}")).unwrap_or_else(|errors| panic!("{errors:#?}"));
}

#[test]
fn etcd_keys_are_checked_and_refused_without_an_etcd_store() {
    one_error(
        &site("etcd_endpoints = [\"http://127.0.0.1:2379\"]\n", ""),
        "add store = \"etcd\"",
    );
    one_error(&site("store = \"etcd\"\n", ""), "needs etcd_endpoints");
    one_error(&site("store = \"zookeeper\"\n", ""), "store `zookeeper`");
    one_error(
        &site(
            "store = \"etcd\"\netcd_endpoints = [\"https://127.0.0.1:2379\"]\n",
            "",
        ),
        "needs etcd_ca",
    );
    one_error(
        &site(
            "store = \"etcd\"\netcd_endpoints = [\"127.0.0.1:2379\"]\n",
            "",
        ),
        "must be a client URL",
    );
    one_error(
        &site(&format!("{ETCD}etcd_cert = \"c.pem\"\n"), ""),
        "etcd_cert and etcd_key go together",
    );
    one_error(
        &site(&format!("{ETCD}etcd_lease_ttl_s = 1\n"), ""),
        "etcd_lease_ttl_s = 1 is out of range",
    );
    // One gateway on etcd is a valid site too.
    if let Err(errors) = check(&site(ETCD, "")) {
        panic!("{errors:#?}");
    }
}
