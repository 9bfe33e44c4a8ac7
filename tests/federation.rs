//! Three real gateways on loopback: each keeps a QUIC connection to each peer, judges its
//! liveness from pings, measures RTT, and holds the account catalogue the peer announced.
//! A site the config does not list is refused, with the reason in the log.

use std::path::Path;
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::{get_json, get_text};
use leasehold_chaos_tests::harness::federation::Federation;
use leasehold_chaos_tests::harness::process::ProcessGuard;
use leasehold_chaos_tests::harness::site::{SiteSpec, prepare_federation};
use leasehold_chaos_tests::harness::wait_for;
use nix::sys::signal::Signal;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
const SETTLE: Duration = Duration::from_secs(40);

fn spec(name: &str, server: &str, account: &str) -> SiteSpec {
    SiteSpec {
        timings: vec![
            ("heartbeat_interval_ms", 100),
            ("heartbeat_misses_before_failed", 5),
            ("lease_ttl_ms", 1000),
            ("renew_interval_ms", 250),
        ],
        ..SiteSpec::one_server(name, server, account)
    }
}

fn start(specs: &[SiteSpec]) -> Federation {
    Federation::start(Path::new(BINARY), specs.to_vec()).unwrap()
}

/// `observer`'s view of `peer` once `accept` holds for it.
fn wait_peer(
    federation: &Federation,
    observer: usize,
    peer: &str,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let found = federation.wait_json(
        observer,
        "/v1/peers",
        &format!("its view of {peer} to be {what}"),
        SETTLE,
        |peers| {
            peers
                .as_array()
                .and_then(|peers| peers.iter().find(|p| p["name"] == peer))
                .is_some_and(&accept)
        },
    );
    let peers = found.unwrap_or_else(|error| panic!("{error}"));
    peers
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["name"] == peer))
        .cloned()
        .unwrap_or_default()
}

fn three_sites() -> Vec<SiteSpec> {
    vec![
        spec("site-a", "a1", "shop"),
        spec("site-b", "b1", "wiki"),
        spec("site-c", "c1", "mail"),
    ]
}

/// Peers named by DNS (docs/operations.md, "Names"): site-a and site-b dial each other
/// at `localhost:PORT`, resolved at every dial (localhost may resolve to ::1 first, where
/// nothing listens: the next address is tried); site-a's third peer is named in `.invalid`,
/// which never resolves (RFC 6761), and `/v1/peers` says so.
#[test]
fn peers_named_by_dns_are_resolved_at_dial_and_a_name_that_does_not_resolve_is_shown() {
    let mut federation =
        Federation::prepare(Path::new(BINARY), three_sites()[..2].to_vec()).unwrap();
    let config = |index: usize| federation.sites[index].config.clone();
    for index in 0..2 {
        let text = std::fs::read_to_string(config(index)).unwrap();
        assert!(text.contains("\naddr = \"127.0.0.1:"), "{text}");
        let mut text = text.replace("\naddr = \"127.0.0.1:", "\naddr = \"localhost:");
        if index == 0 {
            // A founding member's list names exactly its peers.
            text = text.replacen("\"site-b\"]\n", "\"site-b\", \"site-c\"]\n", 1);
            text.push_str("[[peer]]\nname = \"site-c\"\naddr = \"site-c.invalid:7203\"\n");
        }
        std::fs::write(config(index), text).unwrap();
    }
    let checked = std::process::Command::new(BINARY)
        .args(["config", "check"])
        .arg(config(1))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{said}");
    assert!(said.contains("peer names not resolved"), "{said}");
    for index in 0..2 {
        federation.start_gateway(index).unwrap();
    }
    for (observer, peer) in [(0, "site-b"), (1, "site-a")] {
        let view = wait_peer(&federation, observer, peer, "up", |p| {
            p["state"] == "up" && p["dialled"] == true
        });
        assert!(
            view["addr"].as_str().unwrap().starts_with("localhost:"),
            "{view}"
        );
        let at = view["dialled_addr"].as_str().unwrap();
        assert!(
            at.starts_with("127.0.0.1:") || at.starts_with("[::1]:"),
            "{view}"
        );
        assert_eq!(view["last_error"], Value::Null, "{view}");
    }
    let nowhere = wait_peer(&federation, 0, "site-c", "unresolved", |p| {
        p["last_error"].is_string()
    });
    assert_eq!(nowhere["state"], "down", "{nowhere}");
    assert!(
        nowhere["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot resolve `site-c.invalid`"),
        "{nowhere}"
    );
}

#[test]
fn three_sites_see_each_other_up_with_an_rtt_and_each_others_accounts() {
    let federation = start(&three_sites());
    let homes = [("site-a", "shop"), ("site-b", "wiki"), ("site-c", "mail")];
    for (observer, (name, _)) in homes.iter().enumerate() {
        for (peer, account) in homes.iter().filter(|(peer, _)| peer != name) {
            let view = wait_peer(&federation, observer, peer, "up with its catalogue", |p| {
                p["state"] == "up"
                    && p["dialled"] == true
                    && p["dialled_in"] == true
                    && p["accounts"] == serde_json::json!([account])
            });
            let rtt = view["rtt_ms"].as_f64().expect("an RTT once up");
            assert!(rtt > 0.0 && rtt < 1000.0, "{name} sees {peer} at {rtt} ms");
            assert!(view["catalogue_version"].as_u64().is_some());
        }
        let peers = get_json(federation.sites[observer].admin, "/v1/peers").unwrap();
        assert_eq!(peers.as_array().unwrap().len(), 2, "{peers}");
        let metrics = get_text(federation.sites[observer].admin, "/metrics").unwrap();
        for (peer, _) in homes.iter().filter(|(peer, _)| peer != name) {
            let up = format!("leasehold_peer_up{{site=\"{name}\",peer=\"{peer}\"}} 1");
            assert!(metrics.contains(&up), "no `{up}` in:\n{metrics}");
            let rtt = format!("leasehold_peer_rtt_seconds{{site=\"{name}\",peer=\"{peer}\"}}");
            assert!(metrics.contains(&rtt), "no `{rtt}` in:\n{metrics}");
        }
    }
}

#[test]
fn a_killed_peer_goes_down_and_comes_back_up_when_it_restarts() {
    let mut federation = start(&three_sites());
    wait_peer(&federation, 0, "site-c", "up", |p| p["state"] == "up");
    federation.gateways[2]
        .as_ref()
        .unwrap()
        .signal(Signal::SIGKILL)
        .unwrap();
    // 5 missed pings of 100 ms: down after half a second of silence (or at once, when
    // the connection's loss is noticed first).
    wait_peer(&federation, 0, "site-c", "down", |p| p["state"] == "down");
    federation.gateways[2] = None;
    federation.start_gateway(2).unwrap();
    wait_peer(&federation, 0, "site-c", "up again", |p| {
        p["state"] == "up" && p["dialled"] == true && p["dialled_in"] == true
    });
    wait_peer(&federation, 2, "site-a", "up", |p| p["state"] == "up");
}

#[test]
fn a_site_the_config_does_not_list_is_refused_with_the_reason() {
    // site-z knows site-a as a peer, but site-a's config does not list site-z.
    let federation = start(&[spec("site-a", "a1", "shop")]);
    let dir = federation.dir();
    std::fs::create_dir_all(dir.join("intruder")).unwrap();
    // Write site-z's config by hand: peer site-a at its real federation address.
    let z = spec("site-z", "z1", "evil");
    let plan = prepare_federation(&dir.join("intruder"), std::slice::from_ref(&z)).unwrap();
    let mut text = std::fs::read_to_string(&plan[0].config).unwrap();
    text = text.replacen(
        "[[server]]",
        &format!(
            "[[peer]]\nname = \"site-a\"\naddr = \"{}\"\n\n[[server]]",
            federation.sites[0].federation
        ),
        1,
    );
    // Its founding members name the peer it adds (the config check holds them equal).
    text = text.replace(
        "initial_members = [\"site-z\"]",
        "initial_members = [\"site-a\", \"site-z\"]",
    );
    std::fs::write(&plan[0].config, text).unwrap();
    leasehold_federation::transport::certs::issue(
        &dir.join("certs"),
        &leasehold_federation::transport::identity::PeerName::Site(
            leasehold_federation::ids::SiteId::parse("site-z").unwrap(),
        ),
        true,
    )
    .unwrap();
    let args: Vec<String> = vec![
        "gateway".into(),
        "run".into(),
        "--config".into(),
        plan[0].config.to_str().unwrap().into(),
        "--certs".into(),
        dir.join("certs").to_str().unwrap().into(),
        "--state".into(),
        dir.join("state-z").to_str().unwrap().into(),
    ];
    let z_log = dir.join("gateway-site-z.log");
    let _z = ProcessGuard::spawn("site-z", Path::new(BINARY), &args, &z_log).unwrap();
    wait_for("site-a to log the refusal of site-z", SETTLE, || {
        let log = federation.output(0);
        if log.contains(
            "certificate names site `site-z`, which this site's config does not list as a peer",
        ) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .unwrap();
    let peers = get_json(federation.sites[0].admin, "/v1/peers").unwrap();
    assert_eq!(peers, serde_json::json!([]), "site-a lists no peer");
    let z_view = get_json(plan[0].admin, "/v1/peers").unwrap();
    assert_eq!(z_view[0]["state"], "down", "{z_view}");
}

#[test]
fn a_peer_added_by_a_config_edit_is_connected_and_one_removed_is_left() {
    let specs = vec![spec("site-a", "a1", "shop"), spec("site-b", "b1", "wiki")];
    let mut federation = Federation::prepare(Path::new(BINARY), specs).unwrap();
    let sites = federation.sites.clone();
    // site-a starts without site-b in its config; site-b already lists site-a.
    let full = std::fs::read_to_string(&sites[0].config).unwrap();
    let peer_block = format!(
        "[[peer]]\nname = \"site-b\"\naddr = \"{}\"\n",
        sites[1].federation
    );
    assert!(full.contains(&peer_block), "{full}");
    let alone = full
        .replace(&peer_block, "")
        .replace("failover = [\"site-b\"]", "failover = []")
        .replace(
            "initial_members = [\"site-a\", \"site-b\"]",
            "initial_members = [\"site-a\"]",
        );
    std::fs::write(&sites[0].config, &alone).unwrap();
    federation.start_gateway(0).unwrap();
    federation.start_gateway(1).unwrap();
    let a_admin = federation.sites[0].admin;
    assert_eq!(
        get_json(a_admin, "/v1/peers").unwrap(),
        serde_json::json!([])
    );
    wait_peer(&federation, 1, "site-a", "down (site-a refuses it)", |p| {
        p["state"] == "down"
    });

    // Save site-a's config with site-b in it, as an editor does (write, then rename).
    let save = |text: &str| {
        let path = &federation.sites[0].config;
        let temporary = path.with_extension("toml.new");
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, path).unwrap();
    };
    save(&full);
    wait_peer(&federation, 0, "site-b", "up after the edit", |p| {
        p["state"] == "up" && p["accounts"] == serde_json::json!(["wiki"])
    });
    wait_peer(&federation, 1, "site-a", "up once site-a admits it", |p| {
        p["state"] == "up" && p["accounts"] == serde_json::json!(["shop"])
    });

    // And out again: site-a leaves site-b, and site-b sees site-a go down.
    save(&alone);
    wait_for("site-a to list no peer", SETTLE, || {
        let peers = get_json(a_admin, "/v1/peers")?;
        if peers == serde_json::json!([]) {
            Ok(())
        } else {
            Err(peers.to_string())
        }
    })
    .unwrap();
    wait_peer(&federation, 1, "site-a", "down after site-a left it", |p| {
        p["state"] == "down"
    });
}
