//! One site end to end with real processes: a gateway, node agents, and the HTTP workloads
//! they start. Safety is judged from the node event logs and the gateway's audit log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::{account_state, get_json, get_text, server_state};
use leasehold_chaos_tests::harness::evidence::{node_events, violations};
use leasehold_chaos_tests::harness::onesite::{OneSite, SETTLE, account};
use leasehold_chaos_tests::harness::process::{ProcessGuard, process_alive};
use leasehold_chaos_tests::harness::site::{AccountSpec, SiteSpec, create_certs, prepare_site};
use leasehold_chaos_tests::harness::wait_for;
use leasehold_node::event_log::{EventKind, StopReason};
use nix::sys::signal::Signal;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
/// The harness's `FAST_TIMINGS` lease TTL.
const LEASE_TTL: Duration = Duration::from_millis(1000);

/// A running site (the harness's `OneSite`) in a temporary directory it owns; the test
/// helpers below panic with what they saw, since a test cannot go on without them.
struct Site {
    _dir: TempDir,
    inner: OneSite,
}

impl std::ops::Deref for Site {
    type Target = OneSite;
    fn deref(&self) -> &OneSite {
        &self.inner
    }
}

impl std::ops::DerefMut for Site {
    fn deref_mut(&mut self) -> &mut OneSite {
        &mut self.inner
    }
}

impl Site {
    fn start(servers: &[&str], accounts: Vec<AccountSpec>) -> Site {
        Site::start_with_agents(servers, servers, accounts)
    }

    /// A site whose inventory is `servers`, with node agents on `agents` only.
    fn start_with_agents(servers: &[&str], agents: &[&str], accounts: Vec<AccountSpec>) -> Site {
        let dir = TempDir::new().unwrap();
        let inner = OneSite::start(
            Path::new(BINARY),
            dir.path(),
            "site-a",
            servers,
            agents,
            accounts,
        )
        .unwrap_or_else(|error| panic!("{error}"));
        Site { _dir: dir, inner }
    }

    fn start_gateway(&mut self) {
        self.inner
            .start_gateway()
            .unwrap_or_else(|error| panic!("{error}"));
    }

    /// Waits until `account` has exactly `count` serving servers.
    fn wait_serving(&self, account: &str, count: u64) -> serde_json::Value {
        self.inner
            .wait_serving(account, count)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Every node's log is free of violations (S-1 with 100 ms of scheduling slack, S-2, S-3).
    fn assert_no_violations(&self) {
        let works: Vec<PathBuf> = self
            .site
            .servers
            .iter()
            .map(|(id, _)| self.work(id))
            .collect();
        let works: Vec<&Path> = works.iter().map(|w| w.as_path()).collect();
        let found = violations(&works, Duration::from_millis(100)).unwrap();
        assert!(
            found.is_empty(),
            "safety violations in node logs: {found:?}"
        );
    }

    fn servers_of(&self, account: &str) -> Vec<String> {
        let servers = get_json(self.admin(), "/v1/servers").unwrap();
        servers
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["account"] == account && s["state"] == "serving")
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Sends GET / to the account's endpoints at `rate` per second until stopped.
fn drive_load(
    admin: SocketAddr,
    account: &'static str,
    rate: u32,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let pause = Duration::from_secs(1) / rate;
        let mut turn = 0usize;
        while !flag.load(Ordering::Relaxed) {
            if let Ok(endpoints) = get_json(admin, &format!("/v1/accounts/{account}/endpoints"))
                && let Some(endpoints) = endpoints.as_array()
                && !endpoints.is_empty()
            {
                let endpoint = endpoints[turn % endpoints.len()]
                    .as_str()
                    .unwrap_or_default();
                let _ = get_text(endpoint.parse().unwrap(), "/");
                turn += 1;
            }
            std::thread::sleep(pause);
        }
    });
    (stop, handle)
}

fn monotonic_now_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

#[test]
fn servers_move_between_accounts_when_load_changes_and_never_overlap() {
    let site = Site::start(
        &["a1", "a2", "a3"],
        vec![account("shop", 1, 2, 20), account("blog", 1, 2, 10)],
    );
    site.wait_serving("shop", 1);
    site.wait_serving("blog", 1);

    // blog gets busy: it takes the free server.
    let (stop_blog, blog_load) = drive_load(site.admin(), "blog", 20);
    site.wait_serving("blog", 2);
    let blog_servers = site.servers_of("blog");
    stop_blog.store(true, Ordering::Relaxed);
    blog_load.join().unwrap();

    // shop gets busy and blog quiet: a server moves from blog to shop.
    let (stop_shop, shop_load) = drive_load(site.admin(), "shop", 20);
    site.wait_serving("shop", 2);
    site.wait_serving("blog", 1);
    stop_shop.store(true, Ordering::Relaxed);
    shop_load.join().unwrap();
    let moved: Vec<String> = site
        .servers_of("shop")
        .into_iter()
        .filter(|server| blog_servers.contains(server))
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "one of blog's servers {blog_servers:?} now serves shop"
    );

    // The moved server's own log: blog stopped before shop started, under a newer epoch.
    let events = node_events(&site.work(&moved[0])).unwrap();
    let blog_stopped = events.iter().rposition(|e| {
        matches!(&e.kind, EventKind::WorkloadStopped { account, .. } if account.as_str() == "blog")
    });
    let shop_starting = events.iter().rposition(|e| {
        matches!(&e.kind, EventKind::WorkloadStarting { account, .. } if account.as_str() == "shop")
    });
    assert!(
        blog_stopped.is_some() && blog_stopped < shop_starting,
        "{events:#?}"
    );
    // Between the two, blog's files were removed, and they are gone from the disk.
    let wiped = events.iter().rposition(
        |e| matches!(&e.kind, EventKind::DataWiped { account, .. } if account.as_str() == "blog"),
    );
    assert!(blog_stopped < wiped && wiped < shop_starting, "{events:#?}");
    let work = site.work(&moved[0]);
    assert!(
        !work.join("data/blog").exists(),
        "blog's data is still on {}",
        moved[0]
    );
    assert!(!work.join("scratch/blog").exists());
    assert!(work.join("data/shop").is_dir());
    // The audit log explains the move.
    let audit = get_json(site.admin(), "/v1/audit?limit=1000").unwrap();
    let explained = audit.as_array().unwrap().iter().any(|record| {
        record["server"] == moved[0].as_str()
            && ((record["kind"] == "reclaim"
                && record["from"] == "blog"
                && record["account"] == "shop")
                || record["kind"] == "release")
    });
    assert!(
        explained,
        "no audit entry for the move of {}: {audit:#}",
        moved[0]
    );
    site.assert_no_violations();
}

#[test]
fn killing_the_gateway_stops_every_workload_within_one_lease_ttl() {
    let mut site = Site::start(
        &["a1", "a2"],
        vec![account("shop", 1, 1, 20), account("blog", 1, 1, 10)],
    );
    site.wait_serving("shop", 1);
    site.wait_serving("blog", 1);
    let killed_at = monotonic_now_ns();
    site.gateway
        .as_ref()
        .unwrap()
        .signal(Signal::SIGKILL)
        .unwrap();

    for server in ["a1", "a2"] {
        let work = site.work(server);
        let stopped = wait_for(&format!("{server}'s workload to stop"), SETTLE, || {
            let events = node_events(&work)?;
            events
                .iter()
                .rev()
                .find_map(|e| match &e.kind {
                    EventKind::WorkloadStopped { cause, pid, .. } if e.mono_ns > killed_at => {
                        Some((e.mono_ns, *cause, *pid))
                    }
                    _ => None,
                })
                .ok_or_else(|| format!("{} events, no stop yet", events.len()))
        })
        .unwrap();
        let (stopped_ns, cause, pid) = stopped;
        assert_eq!(cause, StopReason::LeaseExpired, "{server}");
        if let Some(pid) = pid {
            assert!(!process_alive(pid), "{server}'s workload {pid} still runs");
        }
        // The last renewal was sent before the kill, so the node's lease ended within one
        // TTL of it, and the node stops its workload before its lease ends (S-1). The
        // slack is for scheduling on a loaded machine only.
        let after = Duration::from_nanos(stopped_ns - killed_at);
        assert!(
            after <= LEASE_TTL + Duration::from_millis(200),
            "{server} stopped {after:?} after the gateway died"
        );
    }
    site.gateway = None;
    site.assert_no_violations();
}

#[test]
fn a_restarted_gateway_restores_the_same_assignments_without_reusing_an_epoch() {
    let mut site = Site::start(
        &["a1", "a2", "a3"],
        vec![account("shop", 1, 1, 20), account("blog", 1, 1, 10)],
    );
    site.wait_serving("shop", 1);
    site.wait_serving("blog", 1);
    let before: Vec<(String, serde_json::Value, u64)> = ["a1", "a2", "a3"]
        .iter()
        .map(|s| {
            let state = server_state(site.admin(), s).unwrap();
            // Each agent said what it is when it registered.
            assert_eq!(state["agent_version"], env!("CARGO_PKG_VERSION"), "{state}");
            (
                s.to_string(),
                state["account"].clone(),
                state["epoch"].as_u64().unwrap(),
            )
        })
        .collect();
    site.gateway
        .as_ref()
        .unwrap()
        .signal(Signal::SIGKILL)
        .unwrap();
    let mut old = site.gateway.take().unwrap();
    wait_for("the old gateway to exit", SETTLE, || {
        if old.exited() {
            Ok(())
        } else {
            Err("running".into())
        }
    })
    .unwrap();
    site.start_gateway();
    site.wait_serving("shop", 1);
    site.wait_serving("blog", 1);
    for (server, account, epoch) in before {
        let state = server_state(site.admin(), &server).unwrap();
        assert_eq!(
            state["account"], account,
            "{server} changed account across the restart"
        );
        assert!(
            state["epoch"].as_u64().unwrap() >= epoch,
            "{server}: epoch went back"
        );
    }
    let audit = get_json(site.admin(), "/v1/audit?limit=1000").unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "recovered"),
        "the restart recovered nothing from the journal: {audit:#}"
    );
    // Epochs only grew on every node, whatever the restart did (checked from node logs).
    site.assert_no_violations();
}

#[test]
fn killing_a_node_gets_its_account_a_replacement() {
    let mut site = Site::start(
        &["a1", "a2", "a3"],
        vec![account("shop", 1, 1, 20), account("blog", 1, 1, 10)],
    );
    site.wait_serving("shop", 1);
    site.wait_serving("blog", 1);
    let victim = site.servers_of("shop").pop().unwrap();
    let position = site.nodes.iter().position(|(id, _)| *id == victim).unwrap();
    let (_, node) = site.nodes.remove(position);
    node.signal(Signal::SIGKILL).unwrap();
    let admin = site.admin();
    let replacement = wait_for("shop to be served by another server", SETTLE, || {
        let state = account_state(admin, "shop")?;
        let servers = get_json(admin, "/v1/servers")?;
        let serving: Vec<String> = servers
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["account"] == "shop" && s["state"] == "serving" && s["id"] != victim.as_str()
            })
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        match serving.first() {
            Some(server) if state["servers"] == 1 => Ok(server.clone()),
            _ => Err(format!("{state} {servers}")),
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));
    assert_ne!(replacement, victim);
    let failed = server_state(admin, &victim).unwrap();
    assert!(
        failed["state"] == "failed" || failed["state"] == "offline",
        "{failed}"
    );
    drop(node);
    site.assert_no_violations();
}

#[test]
fn a_workload_that_fails_to_start_is_tried_on_another_server_and_audited() {
    let mut broken = account("broken", 1, 1, 30);
    // Exits at once: never healthy.
    broken.command = Some(("/bin/false".into(), Vec::new()));
    let site = Site::start(&["a1", "a2", "a3"], vec![broken, account("shop", 1, 1, 20)]);
    site.wait_serving("shop", 1);
    let admin = site.admin();
    let failed_on = wait_for("broken to fail on two servers", SETTLE, || {
        let audit = get_json(admin, "/v1/audit?limit=1000")?;
        let mut servers: Vec<String> = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "workload_failed" && r["account"] == "broken")
            .map(|r| r["server"].as_str().unwrap_or_default().to_owned())
            .collect();
        servers.sort();
        servers.dedup();
        if servers.len() >= 2 {
            Ok(servers)
        } else {
            Err(format!("{servers:?}"))
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));
    assert!(failed_on.len() >= 2, "{failed_on:?}");
    // shop keeps its server throughout.
    assert_eq!(account_state(admin, "shop").unwrap()["servers"], 1);
    site.assert_no_violations();
}

/// A node whose certificate says a1 but whose messages say a2 is refused, and nothing
/// about a2 changes: a node cannot act for another server.
#[test]
fn a_node_speaking_for_another_server_is_refused_and_changes_nothing() {
    use leasehold_federation::ids::{Epoch, ServerId, SiteId};
    use leasehold_federation::transport::Alpn;
    use leasehold_federation::transport::certs::load_node_identity;
    use leasehold_federation::transport::endpoint::{Endpoint, Limits};
    use leasehold_federation::transport::identity::PeerName;
    use leasehold_federation::wire::common::Health;
    use leasehold_federation::wire::common::RefusalCause;
    use leasehold_federation::wire::node::{LeaseRenewal, Pulse, RegisterServer, Registration};
    use leasehold_federation::wire::{Inbound, InboundOneWay};

    // a1 is in the inventory but runs no agent: the impostor below holds its certificate.
    let site = Site::start_with_agents(&["a1", "a2"], &["a2"], vec![account("shop", 1, 1, 20)]);
    site.wait_serving("shop", 1);
    let before = server_state(site.admin(), "a2").unwrap();
    let certs = site.path("certs");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let identity = load_node_identity(&certs, &ServerId::parse("a1").unwrap()).unwrap();
        let endpoint = Endpoint::dial_only("127.0.0.1:0".parse().unwrap(), &identity, Alpn::Node, Limits::default()).unwrap();
        let (connection, mut inbox) = endpoint
            .connect(site.site.management, &PeerName::Site(SiteId::parse("site-a").unwrap()))
            .await
            .unwrap();
        let a2 = ServerId::parse("a2").unwrap();
        let registration = connection
            .request(&RegisterServer { server: a2.clone(), agent_version: "impostor".into(), running: None, highest_epoch: Epoch::NONE, boot: None })
            .await
            .unwrap();
        assert!(matches!(&registration, Registration::Refused(r) if r.cause == RefusalCause::WrongServer), "{registration:?}");
        // A pulse speaks for its certificate's server only: renewing a2's epoch on a1's
        // connection renews nothing of a2's, and a1, unregistered, is not answered.
        let epoch = Epoch::from_journal(before["epoch"].as_u64().unwrap());
        for seq in 1..=10 {
            connection.send_datagram(&Pulse { seq, health: Health::Healthy, load: None, renew: Some(epoch) }).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let heard = tokio::time::timeout(std::time::Duration::from_millis(500), inbox.next()).await;
        if let Ok(Some(Ok(Inbound::OneWay(InboundOneWay::PulseAnswer(answer))))) = &heard {
            assert!(!matches!(answer.renewal, LeaseRenewal::Renewed { .. }), "{answer:?}");
        }
    });
    let after = server_state(site.admin(), "a2").unwrap();
    assert_eq!(
        (&before["account"], &before["epoch"]),
        (&after["account"], &after["epoch"])
    );
    assert!(
        site.gateway_output()
            .contains("refused: a node sent a message for another server"),
        "the refusal is not logged:\n{}",
        site.gateway_output()
    );
}

#[test]
fn the_admin_api_names_what_is_wrong_with_a_request() {
    let site = Site::start_with_agents(&["a1"], &[], vec![account("shop", 1, 1, 20)]);
    let admin = site.admin();
    let missing = get_text(admin, "/v1/accounts/nope/endpoints").unwrap_err();
    assert!(
        missing.contains("404") && missing.contains("no account `nope` at site-a"),
        "{missing}"
    );
    let too_many = get_text(admin, "/v1/audit?limit=5000").unwrap_err();
    assert!(
        too_many.contains("400") && too_many.contains("limit must be between 1 and 1000"),
        "{too_many}"
    );
    let unknown = get_text(admin, "/v2/whatever").unwrap_err();
    assert!(
        unknown.contains("404") && unknown.contains("/v2/whatever"),
        "{unknown}"
    );
    // The inventory is there before any node connects, and says so.
    let a1 = server_state(admin, "a1").unwrap();
    assert_eq!(
        (a1["state"].as_str(), a1["connected"].as_bool()),
        (Some("offline"), Some(false))
    );
    assert_eq!(get_text(admin, "/live").unwrap().trim(), "live");
}

#[test]
fn a_config_that_check_refuses_is_refused_by_the_gateway_with_the_same_message() {
    let dir = TempDir::new().unwrap();
    let bad = dir.path().join("site-a.toml");
    let text = std::fs::read_to_string("configs/site-a.toml")
        .unwrap()
        .replacen("min_servers = 1", "min_servers = 9", 1);
    std::fs::write(&bad, text).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(BINARY)
            .args(args)
            .output()
            .unwrap()
    };
    let check = run(&["config", "check", bad.to_str().unwrap()]);
    let gateway = run(&[
        "gateway",
        "run",
        "--config",
        bad.to_str().unwrap(),
        "--certs",
        dir.path().join("certs").to_str().unwrap(),
        "--state",
        dir.path().join("state").to_str().unwrap(),
    ]);
    assert_eq!(check.status.code(), Some(78));
    assert_eq!(gateway.status.code(), Some(78));
    let first_line = |output: &std::process::Output| {
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        first_line(&check).contains("min_servers 9 is greater than max_servers"),
        "{}",
        first_line(&check)
    );
    assert_eq!(first_line(&check), first_line(&gateway));
    assert!(
        !dir.path().join("state").exists(),
        "a refused config must change nothing"
    );
}

/// A gateway whose admin address another process holds stops before it opens its journal:
/// one line names the address, the cause is said once, nothing panics, nothing is written.
#[test]
fn a_gateway_whose_admin_address_is_taken_says_so_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let site = prepare_site(dir.path(), &SiteSpec::one_server("site-a", "a1", "shop")).unwrap();
    create_certs(&dir.path().join("certs"), &[("site-a", vec!["a1".into()])]).unwrap();
    // A port the picker holds bound is taken on both TCP and UDP; this holds TCP alone.
    let _taken = std::net::TcpListener::bind(site.admin).expect("the admin port is free");
    let state = dir.path().join("state");
    let gateway = std::process::Command::new(BINARY)
        .args(["gateway", "run", "--config"])
        .arg(&site.config)
        .arg("--certs")
        .arg(dir.path().join("certs"))
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&gateway.stderr);
    assert!(!gateway.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: cannot listen for the admin API on {} (is another process using it?): ",
            site.admin
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !state.exists(),
        "a gateway that cannot start must change nothing"
    );
}

#[test]
fn with_log_format_json_every_log_line_is_one_json_object() {
    let dir = TempDir::new().unwrap();
    let spec = SiteSpec {
        name: "site-a".into(),
        servers: vec!["a1".into()],
        accounts: vec![account("shop", 1, 1, 20)],
        timings: Vec::new(),
        lending: None,
    };
    let site = prepare_site(dir.path(), &spec).unwrap();
    create_certs(&dir.path().join("certs"), &[("site-a", vec!["a1".into()])]).unwrap();
    let args: Vec<String> = vec![
        "--log-format".into(),
        "json".into(),
        "gateway".into(),
        "run".into(),
        "--config".into(),
        site.config.to_str().unwrap().into(),
        "--certs".into(),
        dir.path().join("certs").to_str().unwrap().into(),
        "--state".into(),
        dir.path().join("state").to_str().unwrap().into(),
    ];
    let log = dir.path().join("gateway.log");
    let gateway = ProcessGuard::spawn("gateway", Path::new(BINARY), &args, &log).unwrap();
    wait_for("the gateway to be ready", SETTLE, || {
        get_text(site.admin, "/ready")
    })
    .unwrap();
    let output = gateway.output();
    let lines: Vec<&str> = output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert!(lines.len() >= 2, "{output}");
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not one JSON object ({error}): {line}"));
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
    }
    assert!(
        output.contains(r#""message":"gateway running""#),
        "{output}"
    );
}
