//! Three sites named as an operator names them across datacenters (docs/operations.md,
//! "Names" and "Addresses behind NAT"): site-a and site-b by names in a hosts file the test
//! writes, site-c as `localhost`. Each site listens on one address and advertises another,
//! a UDP relay in front of its listener (a NAT or load balancer: what peers dial is not
//! what the site binds), and each peer's `addr` is the advertised name and port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::account_state;
use leasehold_chaos_tests::harness::federation::Federation;
use leasehold_chaos_tests::harness::hosts::HostsFile;
use leasehold_chaos_tests::harness::site::SiteSpec;
use leasehold_chaos_tests::harness::wait_for;
use leasehold_chaos_tests::relay::{Relay, RelayStats};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
const SETTLE: Duration = Duration::from_secs(40);
const NAMES: [&str; 3] = [
    "gw.site-a.dc1.example.test",
    "gw.site-b.dc2.example.test",
    "localhost",
];

/// `config check --resolve` of every site's file, run by `command`.
fn check(mut command: Command, federation: &Federation) -> (bool, String) {
    command.args(["config", "check", "--resolve"]);
    for site in &federation.sites {
        command.arg(&site.config);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn peers_named_in_a_hosts_file_are_dialled_at_their_advertised_addresses() {
    HostsFile::available().unwrap();
    let specs = vec![
        SiteSpec::one_server("site-a", "a1", "shop"),
        SiteSpec::one_server("site-b", "b1", "wiki"),
        SiteSpec::one_server("site-c", "c1", "mail"),
    ];
    let mut federation = Federation::prepare(Path::new(BINARY), specs).unwrap();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let hosts = HostsFile::write(
        &federation.path("hosts"),
        &[(NAMES[0], loopback), (NAMES[1], loopback)],
    )
    .unwrap();
    // In front of each site's listener, the address its peers reach it at.
    let relays: Vec<Relay> = federation
        .sites
        .iter()
        .zip(0u64..)
        .map(|(site, seed)| Relay::start(SocketAddr::new(loopback, 0), site.federation, seed))
        .collect::<Result<_, _>>()
        .unwrap();
    let advertised = |index: usize| format!("{}:{}", NAMES[index], relays[index].addr().port());
    for index in 0..3 {
        let path = &federation.sites[index].config;
        let mut text = std::fs::read_to_string(path).unwrap();
        let bind = format!(
            "\nfederation_addr = \"{}\"\n",
            federation.sites[index].federation
        );
        assert!(text.contains(&bind), "{text}");
        text = text.replacen(
            &bind,
            &format!(
                "{bind}advertise_federation_addr = \"{}\"\n",
                advertised(index)
            ),
            1,
        );
        for peer in (0..3).filter(|peer| *peer != index) {
            let written = format!("\naddr = \"{}\"\n", federation.sites[peer].federation);
            assert!(text.contains(&written), "{text}");
            text = text.replace(&written, &format!("\naddr = \"{}\"\n", advertised(peer)));
        }
        std::fs::write(path, text).unwrap();
    }

    // The names exist only in the test's hosts file: outside it they do not resolve, and
    // the check says which; inside it every file passes, advertised addresses and all.
    let (passed, said) = check(Command::new(BINARY), &federation);
    assert!(!passed, "{said}");
    assert!(
        said.contains(&format!("cannot resolve `{}`", NAMES[0])),
        "{said}"
    );
    let (passed, said) = check(hosts.command(Path::new(BINARY)), &federation);
    assert!(passed, "{said}");
    assert!(!said.contains("warning"), "{said}");

    federation.gateway_prefix = hosts.prefix();
    for index in 0..3 {
        federation.start_gateway(index).unwrap();
    }
    federation.start_all_nodes().unwrap();
    let accounts = ["shop", "wiki", "mail"];
    for observer in 0..3 {
        for peer in (0..3).filter(|peer| *peer != observer) {
            let name = federation.sites[peer].name.clone();
            let seen = federation.wait_json(
                observer,
                "/v1/peers",
                &format!("{name} up, dialled at its relay, with its account"),
                SETTLE,
                |peers: &Value| {
                    peers.as_array().is_some_and(|peers| {
                        peers.iter().any(|p| {
                            p["name"] == name.as_str()
                                && p["state"] == "up"
                                && p["accounts"] == serde_json::json!([accounts[peer]])
                                && p["dialled_addr"] == relays[peer].addr().to_string()
                        })
                    })
                },
            );
            let peers = seen.unwrap_or_else(|error| panic!("{error}\n{}", federation.outputs()));
            let view = peers
                .as_array()
                .and_then(|peers| peers.iter().find(|p| p["name"] == name.as_str()))
                .cloned()
                .unwrap_or_default();
            assert_eq!(view["addr"], advertised(peer).as_str(), "{view}");
            assert_eq!(view["last_error"], Value::Null, "{view}");
        }
    }
    // Every site was reached through its relay, by both of its peers, both ways: nothing
    // dialled a listener directly.
    for (index, relay) in relays.iter().enumerate() {
        let stats: RelayStats = relay.stats();
        assert!(
            stats.clients >= 2 && stats.to_target.forwarded > 0 && stats.from_target.forwarded > 0,
            "site {index}'s relay: {stats:?}"
        );
    }
    // And each account runs at home, owned by its site, on its one server.
    for (index, account) in accounts.iter().enumerate() {
        wait_for(&format!("{account} to be served"), SETTLE, || {
            let state = account_state(federation.admin(index), account)?;
            (state["servers"].as_u64() == Some(1)
                && state["owner"] == federation.sites[index].name.as_str())
            .then_some(())
            .ok_or_else(|| state.to_string())
        })
        .unwrap_or_else(|error| panic!("{error}\n{}", federation.outputs()));
    }
}
