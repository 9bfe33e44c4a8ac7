//! One test per check of a single site file.

use std::time::Duration;

use super::{BASE, check, edit, errors, one_error};

#[test]
fn base_config_is_valid_and_gets_defaults() {
    let config = match check(BASE) {
        Ok(config) => config,
        Err(errors) => panic!("{errors:#?}"),
    };
    assert_eq!(config.site.name.as_str(), "site-a");
    assert_eq!(config.timings.lease_ttl, Duration::from_millis(2000));
    assert_eq!(config.timings.renew_interval, Duration::from_millis(500));
    assert_eq!(config.timings.heartbeat_misses_before_failed, 4);
    // Absent lend_to / borrow_from mean every peer.
    assert_eq!(config.lending.lend_to.len(), 1);
    assert_eq!(config.lending.borrow_from[0].as_str(), "site-b");
    assert!(config.accounts[0].workload.env.is_empty());
    assert_eq!(config.path.to_str(), Some("site-a.toml"));
    assert_eq!(
        config.summary(),
        "site-a: 2 servers, 1 account (shop), 1 peer (site-b), lease TTL 2000 ms"
    );
}

#[test]
fn the_default_node_intervals_grow_with_the_site_up_to_a_second() {
    // (node heartbeat, node renew) in ms, for a site of `count` servers.
    let with_servers = |count: usize, timings: &str| {
        let mut text = format!("{BASE}\n{timings}\n");
        for index in 3..=count {
            text.push_str(&format!(
                "[[server]]\nid = \"a{index}\"\nservice_addr = \"127.0.1.{}:{}\"\n",
                index % 250,
                9000 + index
            ));
        }
        match check(&text) {
            Ok(config) => {
                let t = config.timings;
                // Peers are pinged at the configured interval, whatever the site's size.
                assert_eq!(
                    t.heartbeat_interval,
                    if timings.contains("heartbeat_interval_ms") {
                        Duration::from_millis(100)
                    } else {
                        Duration::from_millis(250)
                    }
                );
                // The site's own renewals (of loans) keep the configured interval.
                if !timings.contains("renew_interval_ms") {
                    assert_eq!(t.renew_interval, Duration::from_millis(500));
                }
                (
                    t.node_heartbeat_interval.as_millis(),
                    t.node_renew_interval.as_millis(),
                )
            }
            Err(errors) => panic!("{errors:#?}"),
        }
    };
    assert_eq!(with_servers(2, ""), (250, 500));
    assert_eq!(with_servers(2_000, ""), (250, 500));
    assert_eq!(with_servers(3_000, ""), (375, 500));
    assert_eq!(with_servers(4_000, ""), (500, 500), "one pulse per renewal");
    assert_eq!(with_servers(6_000, ""), (750, 750), "paced, both");
    assert_eq!(with_servers(10_000, ""), (1000, 1000), "at most a second");
    // At most half the lease TTL, so a lost renewal is asked again before the lease ends.
    let short_ttl = "[timings]\nlease_ttl_ms = 1500";
    assert_eq!(with_servers(10_000, short_ttl), (750, 750));
    // The operator's own intervals are kept, whatever the site's size.
    let slower = "[timings]\nrenew_interval_ms = 1000\nlease_ttl_ms = 4000";
    assert_eq!(with_servers(6_000, slower), (750, 1000));
    let set = "[timings]\nheartbeat_interval_ms = 100";
    assert_eq!(with_servers(6_000, set), (100, 750));
    let renew_set = "[timings]\nrenew_interval_ms = 500";
    assert_eq!(with_servers(10_000, renew_set), (500, 500));
}

#[test]
fn min_greater_than_max_names_the_account() {
    let text = edit(BASE, "min_servers = 1", "min_servers = 3");
    one_error(
        &text,
        "account `shop` at site `site-a`: min_servers 3 is greater than max_servers 2",
    );
}

#[test]
fn max_servers_zero() {
    let text = edit(BASE, "max_servers = 2", "max_servers = 0");
    one_error(&text, "account `shop` at site `site-a`: max_servers is 0");
}

#[test]
fn target_load_must_be_positive_and_finite() {
    for bad in ["0.0", "-1.5", "nan", "inf"] {
        let text = edit(BASE, "target_load = 20.0", &format!("target_load = {bad}"));
        one_error(&text, "account `shop` at site `site-a`: target_load");
    }
}

#[test]
fn duplicate_server_id() {
    let text = edit(BASE, r#"id = "a2""#, r#"id = "a1""#);
    one_error(
        &text,
        "server `a1` at site `site-a` is listed twice (first at site-a.toml:16)",
    );
}

#[test]
fn duplicate_account() {
    let second = BASE
        .split("[[account]]")
        .nth(1)
        .and_then(|account| account.split("[admin]").next())
        .unwrap_or_default();
    let text = format!("{BASE}\n[[account]]{second}");
    one_error(&text, "account `shop` at site `site-a` is defined twice");
}

#[test]
fn duplicate_peer() {
    let text = format!("{BASE}\n[[peer]]\nname = \"site-b\"\naddr = \"127.0.0.1:7202\"\n");
    one_error(&text, "peer `site-b` of site `site-a` is listed twice");
}

#[test]
fn peer_named_like_the_site() {
    let text = format!("{BASE}\n[[peer]]\nname = \"site-a\"\naddr = \"127.0.0.1:7209\"\n");
    one_error(&text, "site `site-a` lists itself as a peer");
}

#[test]
fn failover_to_itself() {
    let text = edit(BASE, r#"failover = ["site-b"]"#, r#"failover = ["site-a"]"#);
    one_error(&text, "failover site `site-a` is this site itself");
}

#[test]
fn failover_listed_twice() {
    let text = edit(
        BASE,
        r#"failover = ["site-b"]"#,
        r#"failover = ["site-b", "site-b"]"#,
    );
    one_error(&text, "failover site `site-b` is listed twice");
}

#[test]
fn failover_not_a_peer() {
    let text = edit(BASE, r#"failover = ["site-b"]"#, r#"failover = ["site-d"]"#);
    one_error(
        &text,
        "account `shop` at site `site-a`: failover site `site-d` is not a configured peer (peers: site-b)",
    );
}

#[test]
fn lend_to_and_borrow_from_must_be_peers() {
    let text = edit(
        BASE,
        "max_lent = 1",
        "max_lent = 1\nlend_to = [\"site-x\"]\nborrow_from = [\"site-y\"]",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains("lending.lend_to names `site-x`, which is not a configured peer"));
    assert!(errors[1].contains("lending.borrow_from names `site-y`"));
}

#[test]
fn reserve_more_than_servers() {
    let text = edit(BASE, "reserve = 1", "reserve = 3");
    one_error(
        &text,
        "site `site-a`: lending.reserve 3 is more than the site's 2 servers",
    );
}

#[test]
fn audit_retention_is_a_number_of_days_and_400_by_default() {
    let retention = |days: &str| {
        edit(
            BASE,
            "[lending]",
            &format!("[journal]\naudit_retention_days = {days}\n\n[lending]"),
        )
    };
    let text = retention("0");
    one_error(
        &text,
        "site `site-a`: journal.audit_retention_days is 0; give a number of days from 1 to 36500",
    );
    let config = check(&retention("30")).unwrap();
    assert_eq!(config.journal.audit_retention_days, 30);
    assert_eq!(check(BASE).unwrap().journal.audit_retention_days, 400);
}

#[test]
fn two_listeners_on_one_address() {
    let text = edit(BASE, "127.0.0.1:8102", "127.0.0.1:7301");
    one_error(
        &text,
        "site `site-a`: service_addr of server `a2` 127.0.0.1:7301 is the same address as management_addr",
    );
}

#[test]
fn gateway_listener_on_any_ip_clashes_with_same_port() {
    let text = edit(
        BASE,
        "admin_addr = \"127.0.0.1:7101\"",
        "admin_addr = \"0.0.0.0:7201\"",
    );
    one_error(
        &text,
        "federation_addr 127.0.0.1:7201 is the same address as admin_addr",
    );
}

#[test]
fn ttl_not_longer_than_renew_interval() {
    let text = format!("{BASE}\n[timings]\nlease_ttl_ms = 400\n");
    let message = one_error(
        &text,
        "lease TTL 400 ms is not longer than its renew interval 500 ms",
    );
    assert!(message.starts_with("site `site-a`"));
}

#[test]
fn zero_timings() {
    let text = format!("{BASE}\n[timings]\nheartbeat_interval_ms = 0\ndrain_timeout_ms = 0\n");
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains("timings.heartbeat_interval_ms must be greater than 0"));
    assert!(errors[1].contains("timings.drain_timeout_ms must be greater than 0"));
}

#[test]
fn zero_heartbeat_misses() {
    let text = format!("{BASE}\n[timings]\nheartbeat_misses_before_failed = 0\n");
    one_error(
        &text,
        "timings.heartbeat_misses_before_failed must be at least 1",
    );
}

#[test]
fn unknown_placeholder_names_account_and_placeholder() {
    let text = edit(
        BASE,
        "{service_addr}\"]",
        "{service_adr}\"]\nenv = { X = \"{nope}\" }",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains(
        "account `shop` at site `site-a`: unknown placeholder `{service_adr}` in workload.args"
    ));
    assert!(errors[1].contains("unknown placeholder `{nope}` in workload.env.X"));
}

#[test]
fn metrics_path_and_load_metric_go_together() {
    let text = edit(
        BASE,
        "data_dir = ",
        "metrics_path = \"/metrics\"\ndata_dir = ",
    );
    one_error(&text, "workload.metrics_path is set but load_metric is not");
    let text = edit(BASE, "data_dir = ", "load_metric = \"load\"\ndata_dir = ");
    one_error(&text, "workload.load_metric is set but metrics_path is not");
}

#[test]
fn http_paths_start_with_slash() {
    let text = edit(BASE, "data_dir = ", "health_path = \"health\"\ndata_dir = ");
    one_error(&text, "workload.health_path `health` must start with '/'");
}

#[test]
fn empty_command() {
    let text = edit(BASE, "command = \"{leasehold}\"", "command = \"\"");
    one_error(&text, "workload.command is empty");
}

#[test]
fn invalid_ids_and_addresses() {
    let text = edit(BASE, r#"id = "a2""#, r#"id = "A_2""#);
    one_error(&text, "invalid server id `A_2`");
    let text = edit(BASE, "127.0.0.1:7202", "site-b.dc2.example.net:7202");
    let config = check(&text).unwrap();
    assert_eq!(
        config.peers[0].addr.to_string(),
        "site-b.dc2.example.net:7202"
    );
    let text = edit(BASE, "127.0.0.1:7202", "site_b:7202");
    one_error(
        &text,
        "addr of peer `site-b`: `site_b:7202` is not a HOST:PORT address (`site_b` is not a DNS label",
    );
}

#[test]
fn every_error_is_reported_with_its_line() {
    let text = edit(BASE, "min_servers = 1", "min_servers = 3");
    let text = edit(&text, r#"id = "a2""#, r#"id = "a1""#);
    let text = edit(&text, "reserve = 1", "reserve = 5");
    let found = match check(&text) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors,
    };
    let places: Vec<_> = found.iter().map(|e| e.line_col).collect();
    assert_eq!(places.len(), 3, "{found:#?}");
    assert!(places.contains(&Some((8, 11))), "reserve: {places:?}");
    assert!(
        places.contains(&Some((20, 6))),
        "duplicate server: {places:?}"
    );
    assert!(places.contains(&Some((25, 15))), "min_servers: {places:?}");
}

/// The founding members must be exactly the site and its peers; a site name that is not a
/// valid one is named.
#[test]
fn initial_members_are_exactly_the_site_and_its_peers() {
    let founding = |list: &str| {
        edit(
            BASE,
            "management_addr = \"127.0.0.1:7301\"",
            &format!("management_addr = \"127.0.0.1:7301\"\ninitial_members = {list}"),
        )
    };
    let config = match check(&founding(r#"["site-b", "site-a"]"#)) {
        Ok(config) => config,
        Err(errors) => panic!("{errors:#?}"),
    };
    let members: Vec<&str> = config
        .site
        .initial_members
        .iter()
        .flatten()
        .map(|site| site.as_str())
        .collect();
    assert_eq!(members, ["site-a", "site-b"]);
    one_error(
        &founding(r#"["site-a", "site-b", "site-c"]"#),
        "site `site-a`: [site] initial_members is [site-a, site-b, site-c], but the site and its [[peer]]s are [site-a, site-b]",
    );
    one_error(
        &founding(r#"["site-a", "Site B"]"#),
        "[site] initial_members:",
    );
}

/// Sites removed while down for good: never this site or a peer, each named.
#[test]
fn departed_sites_are_neither_the_site_nor_a_peer() {
    let departed = |list: &str| {
        edit(
            BASE,
            "management_addr = \"127.0.0.1:7301\"",
            &format!("management_addr = \"127.0.0.1:7301\"\ndeparted = {list}"),
        )
    };
    let config = match check(&departed(r#"["site-d", "site-c", "site-d"]"#)) {
        Ok(config) => config,
        Err(errors) => panic!("{errors:#?}"),
    };
    let names: Vec<&str> = config.site.departed.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["site-c", "site-d"]);
    one_error(
        &departed(r#"["site-b"]"#),
        "[site] departed names `site-b`, which is this site or one of its [[peer]]s",
    );
    one_error(&departed(r#"["site-a"]"#), "which is this site");
    one_error(&departed(r#"["Site D"]"#), "[site] departed:");
}

#[test]
fn a_data_dir_is_an_accounts_own_and_safe_to_remove() {
    let second = BASE
        .split("[[account]]")
        .nth(1)
        .and_then(|account| account.split("[admin]").next())
        .unwrap_or_default()
        .replacen("name = \"shop\"", "name = \"blog\"", 1);
    let shared = format!("{BASE}\n[[account]]{second}");
    one_error(&shared, "shares its data_dir with account `shop`");
    let nested = format!(
        "{BASE}\n[[account]]{}",
        second.replace("data/shop", "data/shop/blog")
    );
    one_error(&nested, "shares its data_dir with account `shop`");
    for bad in ["/", "/srv", "../shop", "data/../../x", "."] {
        one_error(
            &edit(
                BASE,
                "data_dir = \"data/shop\"",
                &format!("data_dir = \"{bad}\""),
            ),
            "must be a dir of its own",
        );
    }
    for good in ["/srv/shop", "data/shop-2"] {
        check(&edit(
            BASE,
            "data_dir = \"data/shop\"",
            &format!("data_dir = \"{good}\""),
        ))
        .unwrap_or_else(|errors| panic!("{good}: {errors:?}"));
    }
}
