//! Certificates renewed, and the CA rotated, on a running site (docs/certificates.md,
//! "Renewing" and "Rotating the CA"): the gateway and the node agents read their
//! certificates when the files change, or on SIGHUP; the workload serving all along is never
//! stopped, and new connections made with the new certificates register.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::{get_json, get_text, metric_value, server_state};
use leasehold_chaos_tests::harness::evidence::{node_events, violations};
use leasehold_chaos_tests::harness::federation::Federation;
use leasehold_chaos_tests::harness::onesite::{OneSite, SETTLE, account};
use leasehold_chaos_tests::harness::site::SiteSpec;
use leasehold_chaos_tests::harness::wait_for;
use leasehold_node::event_log::EventKind;
use nix::sys::signal::Signal;
use serde_json::Value;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

/// The site certificate's expiry as the gateway's metrics give it.
fn site_expiry(admin: std::net::SocketAddr) -> Result<i64, String> {
    expiry_metric(admin, "site")
}

/// `leasehold_certificate_expiry_timestamp_seconds{certificate=...}` of the gateway.
fn expiry_metric(admin: std::net::SocketAddr, certificate: &str) -> Result<i64, String> {
    let text = get_text(admin, "/metrics")?;
    metric_value(
        &text,
        "leasehold_certificate_expiry_timestamp_seconds",
        &[("certificate", certificate)],
    )
    .map(|value| value as i64)
    .ok_or_else(|| format!("no {certificate} certificate expiry in /metrics"))
}

/// A log line without its terminal colours.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape sequence runs to its final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn renew(certs: &Path, who: &[&str]) {
    renew_for(certs, who, 30);
}

fn renew_for(certs: &Path, who: &[&str], days: u32) {
    let out = Command::new(BINARY)
        .args(["certs", "issue", "--dir"])
        .arg(certs)
        .args(["--site", "site-a", "--force", "--days", &days.to_string()])
        .args(who)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How many times the process's log says it read its certificates again, and how many of
/// those had `cas` CAs in its bundle (any, when `cas` is `None`).
fn reloads(output: &str, cas: Option<usize>) -> usize {
    output
        .lines()
        .map(plain)
        .filter(|line| line.contains("certificates read again"))
        .filter(|line| cas.is_none_or(|n| line.contains(&format!("cas={n}"))))
        .count()
}

/// A site of two servers and one account, one serving it and one free, to renew under.
struct Running {
    _dir: TempDir,
    site: OneSite,
    serving: &'static str,
    free: &'static str,
    epoch: serde_json::Value,
}

impl Running {
    fn start() -> Running {
        let dir = TempDir::new().unwrap();
        let site = OneSite::start(
            Path::new(BINARY),
            dir.path(),
            "site-a",
            &["a1", "a2"],
            &["a1", "a2"],
            vec![account("shop", 1, 1, 10)],
        )
        .unwrap();
        let admin = site.admin();
        site.wait_serving("shop", 1)
            .unwrap_or_else(|error| panic!("{error}"));
        let serving = ["a1", "a2"]
            .into_iter()
            .find(|id| server_state(admin, id).is_ok_and(|s| s["state"] == "serving"))
            .unwrap();
        let free = if serving == "a1" { "a2" } else { "a1" };
        let epoch = server_state(admin, serving).unwrap()["epoch"].clone();
        Running {
            _dir: dir,
            site,
            serving,
            free,
            epoch,
        }
    }

    fn certs(&self) -> std::path::PathBuf {
        self.site.path("certs")
    }

    /// How many times each agent has said it read its certificates again.
    fn agent_reads(&self) -> Vec<usize> {
        self.site
            .nodes
            .iter()
            .map(|(_, agent)| reloads(&agent.output(), None))
            .collect()
    }

    /// Waits until each agent has read its certificates again since `before`.
    fn agents_read_since(&self, before: &[usize]) {
        for ((_, agent), before) in self.site.nodes.iter().zip(before) {
            wait_for("the agent to read its certificates again", SETTLE, || {
                (reloads(&agent.output(), None) > *before)
                    .then_some(())
                    .ok_or_else(|| "not yet".to_owned())
            })
            .unwrap_or_else(|error| panic!("{error}\n{}", agent.output()));
        }
    }

    /// Signals every agent and waits until each says it read its certificates again.
    fn reload_agents(&self) {
        let before = self.agent_reads();
        for (_, agent) in &self.site.nodes {
            agent.signal(Signal::SIGHUP).unwrap();
        }
        self.agents_read_since(&before);
    }

    /// Waits until the gateway has read its certificates `at_least` times with `cas` CAs.
    fn gateway_reads(&self, cas: usize, at_least: usize) {
        wait_for("the gateway to read its certificates again", SETTLE, || {
            (reloads(&self.site.gateway_output(), Some(cas)) >= at_least)
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        })
        .unwrap_or_else(|error| panic!("{error}\n{}", self.site.gateway_output()));
    }

    /// A new connection: the free server's agent restarts and registers again (the
    /// gateway logs each registration), with whatever certificates are on disk now.
    fn restart_free(&mut self) {
        let free = self.free;
        let registered = |site: &OneSite| {
            site.gateway_output()
                .lines()
                .map(plain)
                .filter(|line| line.contains(&format!("node registered server={free} ")))
                .count()
        };
        let registrations = registered(&self.site);
        self.site.nodes.retain(|(name, _)| name != free);
        self.site.start_node(free).unwrap();
        wait_for("the restarted agent to register", SETTLE, || {
            (registered(&self.site) > registrations)
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        })
        .unwrap_or_else(|error| panic!("{error}\n{}", self.site.gateway_output()));
    }

    /// The serving workload ran through it all: same lease, never stopped, and no node
    /// log breaks an invariant.
    fn assert_kept(&self) {
        let state = server_state(self.site.admin(), self.serving).unwrap();
        assert_eq!(state["state"], "serving", "{state}");
        assert_eq!(state["epoch"], self.epoch, "{state}");
        let stopped = node_events(&self.site.work(self.serving))
            .unwrap()
            .into_iter()
            .filter(|event| matches!(event.kind, EventKind::WorkloadStopped { .. }))
            .count();
        assert_eq!(stopped, 0, "{}'s workload stopped", self.serving);
        let works = [self.site.work("a1"), self.site.work("a2")];
        let works: Vec<&Path> = works.iter().map(|path| path.as_path()).collect();
        assert_eq!(
            violations(&works, Duration::from_millis(100)).unwrap(),
            Vec::new()
        );
    }
}

#[test]
fn renewed_certificates_are_read_live_without_stopping_anything() {
    let mut running = Running::start();
    let admin = running.site.admin();
    let before = site_expiry(admin).unwrap();

    // The gateway's certificate, renewed for 30 days: read when the file changes.
    renew(&running.certs(), &[]);
    wait_for(
        "the gateway to present its renewed certificate",
        SETTLE,
        || {
            let now = site_expiry(admin)?;
            (now < before - 300 * 86_400)
                .then_some(())
                .ok_or_else(|| format!("expiry still {now}"))
        },
    )
    .unwrap_or_else(|error| panic!("{error}\n{}", running.site.gateway_output()));
    // 30 days left: the status page warns, from the certificate it now presents.
    let banner = |shown: bool| {
        move || {
            let page = get_text(admin, "/")?;
            let warns = page.contains("id=\"certificates-expiring\"")
                && page.contains("the site certificate expires in 29d");
            (warns == shown)
                .then_some(())
                .ok_or_else(|| format!("banner shown: {warns}"))
        }
    };
    wait_for(
        "the page to warn of the site certificate",
        SETTLE,
        banner(true),
    )
    .unwrap();

    // The agents' certificates, renewed: each agent reads its own when the file changes.
    let reads = running.agent_reads();
    for id in ["a1", "a2"] {
        renew(&running.certs(), &["--node", id]);
    }
    running.agents_read_since(&reads);

    // A new connection, with both renewed certificates.
    running.restart_free();
    running.assert_kept();
    // The gateway saw each agent's certificate in its handshake: the re-registered agent's
    // renewed one, and the serving agent's old one on the connection it kept.
    let free = running.free;
    let presented =
        |server: &str| server_state(admin, server).unwrap()["certificate_expires"].as_i64();
    let renewed = presented(free).unwrap();
    assert!(renewed < before - 300 * 86_400, "{free}: {renewed}");
    assert!(presented(running.serving) > Some(before - 86_400));
    assert_eq!(expiry_metric(admin, "node"), Ok(renewed));
    wait_for("the page to warn of the node certificate", SETTLE, || {
        let page = get_text(admin, "/")?;
        page.contains(&format!("the node {free} certificate expires in 29d"))
            .then_some(())
            .ok_or_else(|| "no warning of the node certificate".to_owned())
    })
    .unwrap();

    // Renewed for a year, the warning goes with no restart.
    renew_for(&running.certs(), &[], 365);
    wait_for("the page to stop warning", SETTLE, banner(false)).unwrap();
}

/// A CA rotation on a running site, in the steps of docs/certificates.md: the new CA is
/// trusted beside the old, every certificate is re-issued, the old CA is retired (refused
/// while a certificate still needs it); the serving workload never stops, an agent on the
/// old CA's certificate registers with a gateway on the new one during the overlap, and a
/// new connection after the rotation registers on the new CA alone.
#[test]
fn a_ca_rotation_in_three_steps_stops_nothing() {
    let mut running = Running::start();
    let certs = running.certs().to_string_lossy().into_owned();
    let leasehold = |args: &[&str]| Command::new(BINARY).args(args).output().unwrap();

    // 1. A new CA, trusted beside the old: the gateway reads the bundle when it changes,
    //    the agents on SIGHUP.
    let rotated = leasehold(&["certs", "rotate-ca", "--dir", &certs]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    running.gateway_reads(2, 1);
    running.reload_agents();

    // The old CA cannot be retired while certificates it signed are in use.
    let early = leasehold(&["certs", "retire-ca", "--dir", &certs]);
    let said = String::from_utf8_lossy(&early.stderr);
    assert!(!early.status.success(), "{said}");
    assert!(
        said.contains("still signed by the CA being retired") && said.contains("sites/site-a.crt"),
        "{said}"
    );

    // 2. Every certificate re-issued by the new CA, the gateway's first: then an agent
    //    still on the old CA's certificate dials the gateway on the new CA's.
    renew(&running.certs(), &[]);
    running.gateway_reads(2, 2);
    running.restart_free();
    for id in ["a1", "a2"] {
        renew(&running.certs(), &["--node", id]);
    }
    running.reload_agents();

    // 3. The old CA retired; a new connection on the new CA alone.
    let retired = leasehold(&["certs", "retire-ca", "--dir", &certs]);
    assert!(
        retired.status.success(),
        "{}",
        String::from_utf8_lossy(&retired.stderr)
    );
    running.gateway_reads(1, 1);
    running.reload_agents();
    running.restart_free();
    running.assert_kept();
}

/// site-a's certificate, renewed while three sites run: no peer of it is ever seen other
/// than up, on both of its connections, and no workload stops; the peers keep the
/// connections they had (they still see the old certificate on them), and a connection made
/// afterwards (site-b restarted) presents the renewed one.
#[test]
fn a_site_certificate_renewed_in_a_running_federation_keeps_every_peer_up() {
    let specs = vec![
        SiteSpec::one_server("site-a", "a1", "shop"),
        SiteSpec::one_server("site-b", "b1", "wiki"),
        SiteSpec::one_server("site-c", "c1", "mail"),
    ];
    let mut federation = Federation::start(Path::new(BINARY), specs).unwrap();
    federation.start_all_nodes().unwrap();
    for (index, (site, account)) in [("site-a", "shop"), ("site-b", "wiki"), ("site-c", "mail")]
        .into_iter()
        .enumerate()
    {
        federation
            .wait_account(index, account, "owned at home and served", SETTLE, |a| {
                a["owner"] == site && a["servers"] == 1
            })
            .unwrap();
    }
    // How site `index` sees site-a, once it sees it up both ways.
    let admins: Vec<_> = (0..3).map(|index| federation.admin(index)).collect();
    let view_of_a = |index: usize| -> Result<Value, String> {
        let peers = get_json(admins[index], "/v1/peers")?;
        peers
            .as_array()
            .and_then(|peers| peers.iter().find(|peer| peer["name"] == "site-a"))
            .cloned()
            .ok_or_else(|| format!("no site-a in {peers}"))
    };
    let up = |view: &Value| {
        view["state"] == "up" && view["dialled"] == true && view["dialled_in"] == true
    };
    let mut year = Vec::new();
    for index in [1, 2] {
        let view = wait_for("site-a up both ways, its certificate read", SETTLE, || {
            let view = view_of_a(index)?;
            (up(&view) && view["certificate_expires"].is_i64())
                .then_some(view.clone())
                .ok_or_else(|| view.to_string())
        })
        .unwrap();
        year.push(view["certificate_expires"].as_i64().unwrap());
    }

    // Every 50 ms until the renewal is read, each peer's view of site-a, and site-a's of
    // each peer: anything but up both ways is a peer seen down.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let admins = admins.clone();
        std::thread::spawn(move || {
            let mut seen_down = Vec::new();
            let mut samples = 0;
            while !stop.load(Ordering::Relaxed) {
                for admin in &admins {
                    let Ok(peers) = get_json(*admin, "/v1/peers") else {
                        continue;
                    };
                    for peer in peers.as_array().into_iter().flatten() {
                        let down = peer["state"] != "up"
                            || peer["dialled"] != true
                            || peer["dialled_in"] != true;
                        if down && (*admin == admins[0] || peer["name"] == "site-a") {
                            seen_down.push(format!("{admin}: {peer}"));
                        }
                    }
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (samples, seen_down)
        })
    };
    let certs = federation.path("certs");
    let before = site_expiry(federation.admin(0)).unwrap();
    renew(&certs, &[]);
    wait_for("site-a to present its renewed certificate", SETTLE, || {
        let now = site_expiry(federation.admin(0))?;
        (now < before - 300 * 86_400)
            .then_some(())
            .ok_or_else(|| format!("expiry still {now}"))
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", federation.outputs()));
    // A few more pings' worth of watching, on the new identity.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (samples, seen_down) = watcher.join().unwrap();
    assert!(samples > 20, "only {samples} samples");
    assert!(seen_down.is_empty(), "{seen_down:#?}");
    // The connections made before keep the certificate they were made with.
    for (slot, index) in [1, 2].into_iter().enumerate() {
        assert_eq!(
            view_of_a(index).unwrap()["certificate_expires"].as_i64(),
            Some(year[slot])
        );
    }

    // A new connection: site-b restarts and dials site-a, which presents the renewed one.
    federation.kill_gateway(1).unwrap();
    federation.start_gateway(1).unwrap();
    let renewed = wait_for("site-b's new connection to site-a", SETTLE, || {
        let view = view_of_a(1)?;
        let expires = view["certificate_expires"].as_i64();
        (up(&view) && expires.is_some_and(|at| at < year[0] - 300 * 86_400))
            .then_some(())
            .ok_or_else(|| view.to_string())
    });
    renewed.unwrap_or_else(|error| panic!("{error}\n{}", federation.outputs()));

    // site-a's workload ran through it all.
    let stopped: Vec<_> = node_events(&federation.work("a1"))
        .unwrap()
        .into_iter()
        .filter(|event| matches!(event.kind, EventKind::WorkloadStopped { .. }))
        .collect();
    assert!(stopped.is_empty(), "{stopped:?}");
    let violations = federation.violations(Duration::from_millis(100)).unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
}
