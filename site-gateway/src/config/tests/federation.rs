//! Checks across the files of one federation.

use std::path::PathBuf;

use super::super::{federation, load_federation};
use super::{BASE, edit, file};

/// site-b, the mirror of `BASE`: peers with site-a and homes `wiki`.
fn site_b() -> String {
    let text = edit(BASE, r#"name = "site-a""#, r#"name = "site-b""#);
    let text = edit(&text, "127.0.0.1:7101", "127.0.0.1:7102");
    let text = edit(
        &text,
        "federation_addr = \"127.0.0.1:7201\"",
        "federation_addr = \"127.0.0.1:7202\"",
    );
    let text = edit(&text, "127.0.0.1:7301", "127.0.0.1:7302");
    let text = edit(
        &text,
        "name = \"site-b\"\naddr = \"127.0.0.1:7202\"",
        "name = \"site-a\"\naddr = \"127.0.0.1:7201\"",
    );
    let text = edit(&text, r#"id = "a1""#, r#"id = "b1""#);
    let text = edit(&text, r#"id = "a2""#, r#"id = "b2""#);
    let text = edit(&text, "127.0.0.1:8101", "127.0.0.1:8201");
    let text = edit(&text, "127.0.0.1:8102", "127.0.0.1:8202");
    let text = edit(&text, r#"name = "shop""#, r#"name = "wiki""#);
    edit(
        &text,
        r#"failover = ["site-b"]"#,
        r#"failover = ["site-a"]"#,
    )
}

fn cross(a: &str, b: &str) -> Vec<String> {
    let files = [file("site-a.toml", a), file("site-b.toml", b)];
    federation::check(&files)
        .into_iter()
        .map(|e| format!("{}: {}", e.location(), e.message))
        .collect()
}

fn assert_one(found: &[String], expected: &str) {
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains(expected),
        "`{}` lacks `{expected}`",
        found[0]
    );
}

#[test]
fn mirrored_pair_is_consistent() {
    assert_eq!(cross(BASE, &site_b()), Vec::<String>::new());
}

#[test]
fn example_federation_loads() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let paths: Vec<PathBuf> = ["site-a.toml", "site-b.toml", "site-c.toml"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    match load_federation(&paths) {
        Ok(sites) => {
            let names: Vec<&str> = sites.iter().map(|s| s.site.name.as_str()).collect();
            assert_eq!(names, ["site-a", "site-b", "site-c"]);
        }
        Err(errors) => panic!("{errors}"),
    }
}

#[test]
fn peer_not_defined_by_any_file() {
    let a = format!("{BASE}\n[[peer]]\nname = \"site-d\"\naddr = \"127.0.0.1:7204\"\n");
    assert_one(
        &cross(&a, &site_b()),
        "site-a.toml:42:8: peer `site-d` of site `site-a` is not defined by any of the files checked",
    );
}

#[test]
fn failover_and_lending_sites_must_be_defined() {
    let a = edit(BASE, "max_lent = 1", "max_lent = 1\nlend_to = [\"site-q\"]");
    let a = edit(
        &a,
        r#"failover = ["site-b"]"#,
        r#"failover = ["site-b", "site-z"]"#,
    );
    let found = cross(&a, &site_b());
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].contains("lending.lend_to site `site-q` of site `site-a` is not defined"));
    assert!(
        found[1]
            .contains("failover site `site-z` of account `shop` at site `site-a` is not defined")
    );
}

/// Catalogues carry no secrets, so a site that may take an account over needs its own copy.
#[test]
fn a_failover_site_of_an_account_with_secrets_must_have_them() {
    let data_dir = "data_dir = \"data/shop\"";
    let a = edit(
        BASE,
        data_dir,
        &format!("{data_dir}\nsecrets = \"secrets/shop.env\""),
    );
    assert_one(
        &cross(&a, &site_b()),
        "account `shop` of site `site-a` has secrets, and `site-b` may take it over, but site-b.toml gives no [failover_secrets] shop = FILE",
    );
    let with = |b: &str, account: &str| {
        edit(
            b,
            "[lending]",
            &format!("[failover_secrets]\n{account} = \"secrets/{account}.env\"\n\n[lending]"),
        )
    };
    assert_eq!(cross(&a, &with(&site_b(), "shop")), Vec::<String>::new());
    assert_one(
        &cross(BASE, &with(&site_b(), "blog")),
        "site `site-b`: failover_secrets names `blog`, which no site of the federation homes",
    );
}

#[test]
fn same_site_name_in_two_files() {
    let b = edit(&site_b(), r#"name = "site-b""#, r#"name = "site-a""#);
    let found = cross(BASE, &b);
    assert!(
        found[0].contains("site `site-a` is defined by two files: site-a.toml:2 and site-b.toml"),
        "{found:#?}"
    );
}

/// A peer dialled elsewhere than its site listens may be NAT or port forwarding: a
/// warning; once the site advertises the address its peers dial, a mismatch is an error.
#[test]
fn peer_addr_is_held_to_the_advertised_address_and_otherwise_warned_about() {
    let a = edit(
        BASE,
        "addr = \"127.0.0.1:7202\"",
        "addr = \"203.0.113.9:7202\"",
    );
    let files = [file("site-a.toml", &a), file("site-b.toml", &site_b())];
    let (errors, warnings) = federation::check_with_warnings(&files);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].message.contains(
            "peer `site-b` of site `site-a` has addr 203.0.113.9:7202, but that site's federation_addr is 127.0.0.1:7202"
        ) && warnings[0].message.contains("advertise_federation_addr = \"203.0.113.9:7202\""),
        "{}",
        warnings[0].message
    );

    let advertise = |b: &str, addr: &str| {
        edit(
            b,
            "federation_addr = \"127.0.0.1:7202\"",
            &format!(
                "federation_addr = \"127.0.0.1:7202\"\nadvertise_federation_addr = \"{addr}\""
            ),
        )
    };
    let files = [
        file("site-a.toml", &a),
        file("site-b.toml", &advertise(&site_b(), "203.0.113.9:7202")),
    ];
    assert_eq!(
        federation::check_with_warnings(&files),
        (Vec::new(), Vec::new())
    );
    assert_one(
        &cross(&a, &advertise(&site_b(), "site-b.dc2.example.net:7202")),
        "peer `site-b` of site `site-a` has addr 203.0.113.9:7202, but that site advertises site-b.dc2.example.net:7202",
    );
}

#[test]
fn peer_addr_matches_any_ip_by_port() {
    let b = edit(
        &site_b(),
        "federation_addr = \"127.0.0.1:7202\"",
        "federation_addr = \"0.0.0.0:7202\"",
    );
    assert_eq!(cross(BASE, &b), Vec::<String>::new());
}

#[test]
fn peerings_must_be_symmetric() {
    let b = edit(
        &site_b(),
        "[[peer]]\nname = \"site-a\"\naddr = \"127.0.0.1:7201\"\n",
        "",
    );
    let b = edit(&b, r#"failover = ["site-a"]"#, "failover = []");
    let b = edit(&b, "max_lent = 1", "max_lent = 0");
    assert_one(
        &cross(BASE, &b),
        "site `site-a` lists `site-b` as a peer, but site `site-b` (site-b.toml) does not list `site-a`",
    );
}

#[test]
fn account_homed_at_two_sites_names_both() {
    let b = edit(&site_b(), r#"name = "wiki""#, r#"name = "shop""#);
    assert_one(
        &cross(BASE, &b),
        "site-b.toml:24:8: account `shop` is homed at two sites, `site-a` and `site-b`",
    );
}

#[test]
fn server_at_two_sites() {
    let b = edit(&site_b(), r#"id = "b2""#, r#"id = "a2""#);
    assert_one(
        &cross(BASE, &b),
        "server `a2` is in the inventory of two sites, `site-a` and `site-b`",
    );
}

#[test]
fn listeners_clash_across_files_but_not_on_any_ip() {
    let b = edit(&site_b(), "127.0.0.1:8202", "127.0.0.1:8101");
    assert_one(
        &cross(BASE, &b),
        "site `site-b`: service_addr of server `b2` 127.0.0.1:8101 is the same address as service_addr of server `a1` of site `site-a`",
    );
    let a = edit(BASE, "127.0.0.1:7101", "0.0.0.0:7101");
    let b = edit(&site_b(), "127.0.0.1:7102", "0.0.0.0:7101");
    assert_eq!(cross(&a, &b), Vec::<String>::new());
}

#[test]
fn a_file_with_its_own_errors_is_still_cross_checked() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let a_path = dir.path().join("site-a.toml");
    let b_path = dir.path().join("site-b.toml");
    let a = edit(BASE, "min_servers = 1", "min_servers = 5");
    let b = edit(&site_b(), r#"name = "wiki""#, r#"name = "shop""#);
    for (path, text) in [(&a_path, &a), (&b_path, &b)] {
        if let Err(e) = std::fs::write(path, text) {
            panic!("{e}");
        }
    }
    let errors = match load_federation(&[a_path.clone(), b_path.clone()]) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors,
    };
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(messages[0].contains("min_servers 5 is greater than max_servers 2"));
    assert!(messages[1].contains("account `shop` is homed at two sites"));
    assert_eq!(errors.file_count(), 2);
    assert!(errors.to_string().ends_with("2 errors in 2 files"));
}

#[test]
fn one_file_alone_is_not_cross_checked() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.path().join("site-a.toml");
    if let Err(e) = std::fs::write(&path, BASE) {
        panic!("{e}");
    }
    assert!(load_federation(&[path]).is_ok());
}

#[test]
fn ownership_timings_must_be_the_same_at_every_site() {
    let b = site_b();
    let a = edit(
        BASE,
        "[lending]",
        "[timings]\nownership_ttl_ms = 4000\n\n[lending]",
    );
    let found = cross(&a, &b);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("timings.ownership_ttl_ms of site `site-b` is 3000, but site `site-a` has 4000 at site-a.toml:"),
        "{}",
        found[0]
    );
    // Written out at the default, it agrees with a file that leaves it out.
    let a = edit(
        BASE,
        "[lending]",
        "[timings]\nownership_ttl_ms = 3000\nownership_renew_interval_ms = 500\n\n[lending]",
    );
    assert!(cross(&a, &b).is_empty());
    let b = edit(
        &b,
        "[lending]",
        "[timings]\nownership_renew_interval_ms = 400\n\n[lending]",
    );
    let found = cross(&a, &b);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("timings.ownership_renew_interval_ms of site `site-b` is 400"),
        "{}",
        found[0]
    );
}

/// site-a runs two gateways (docs/ha.md): site-b must dial both.
#[test]
fn a_peer_of_standby_gateways_must_list_every_gateway() {
    let standbys = edit(
        BASE,
        "management_addr = \"127.0.0.1:7301\"\n",
        "management_addr = \"127.0.0.1:7301\"\nstore = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]\ngateway_name = \"gw-1\"\n",
    );
    let standbys = format!(
        "{standbys}\n[[site.gateway]]\nname = \"gw-2\"\nadmin_addr = \"127.0.0.1:7111\"\nfederation_addr = \"127.0.0.1:7211\"\nmanagement_addr = \"127.0.0.1:7311\"\n"
    );
    let found = cross(&standbys, &site_b());
    assert_one(
        &found,
        "peer `site-a` of site `site-b` does not list the federation_addr 127.0.0.1:7211 of its gateway `gw-2`",
    );
    let listing = edit(
        &site_b(),
        "name = \"site-a\"\naddr = \"127.0.0.1:7201\"",
        "name = \"site-a\"\naddr = \"127.0.0.1:7201\"\nother_addrs = [\"127.0.0.1:7211\"]",
    );
    assert_eq!(cross(&standbys, &listing), Vec::<String>::new());
}
