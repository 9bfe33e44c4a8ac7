//! Certificates renewed on a running site (docs/certificates.md, "Renewing"): the
//! gateway reads its renewed certificate when the file changes and node agents theirs on
//! SIGHUP; the workload serving all along is never stopped, and a new connection made
//! with both renewed certificates registers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::{get_text, server_state};
use leasehold_chaos_tests::harness::evidence::{node_events, violations};
use leasehold_chaos_tests::harness::onesite::{OneSite, SETTLE, account};
use leasehold_chaos_tests::harness::wait_for;
use leasehold_node::event_log::EventKind;
use nix::sys::signal::Signal;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

/// The site certificate's expiry as the gateway's metrics give it.
fn site_expiry(admin: std::net::SocketAddr) -> Result<i64, String> {
    let text = get_text(admin, "/metrics")?;
    text.lines()
        .find(|line| {
            line.starts_with("leasehold_certificate_expiry_timestamp_seconds")
                && line.contains("certificate=\"site\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .map(|value| value as i64)
        .ok_or_else(|| "no site certificate expiry in /metrics".to_owned())
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
    let out = Command::new(BINARY)
        .args(["certs", "issue", "--dir"])
        .arg(certs)
        .args(["--site", "site-a", "--force", "--days", "30"])
        .args(who)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn renewed_certificates_are_read_live_without_stopping_anything() {
    let dir = TempDir::new().unwrap();
    let mut site = OneSite::start(
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
    let before = site_expiry(admin).unwrap();

    // The gateway's certificate, renewed for 30 days: read when the file changes.
    let certs = site.path("certs");
    renew(&certs, &[]);
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
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));

    // The agents' certificates, renewed and read on SIGHUP.
    for id in ["a1", "a2"] {
        renew(&certs, &["--node", id]);
        let (_, agent) = site.nodes.iter().find(|(name, _)| name == id).unwrap();
        agent.signal(Signal::SIGHUP).unwrap();
        wait_for("the agent to read its certificate again", SETTLE, || {
            agent
                .output()
                .contains("certificates read again")
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        })
        .unwrap_or_else(|error| panic!("{error}"));
    }

    // A new connection, with both renewed certificates: the free server's agent restarts
    // and registers again (the gateway logs each registration).
    let registered = |site: &OneSite| {
        site.gateway_output()
            .lines()
            .map(plain)
            .filter(|line| line.contains(&format!("node registered server={free} ")))
            .count()
    };
    let registrations = registered(&site);
    site.nodes.retain(|(name, _)| name != free);
    site.start_node(free).unwrap();
    wait_for("the restarted agent to register", SETTLE, || {
        (registered(&site) > registrations)
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));

    // The serving workload ran through it all: same lease, never stopped.
    let state = server_state(admin, serving).unwrap();
    assert_eq!(state["state"], "serving", "{state}");
    assert_eq!(state["epoch"], epoch, "{state}");
    let stopped = node_events(&site.work(serving))
        .unwrap()
        .into_iter()
        .filter(|event| matches!(event.kind, EventKind::WorkloadStopped { .. }))
        .count();
    assert_eq!(stopped, 0, "{serving}'s workload stopped");
    let works = [site.work("a1"), site.work("a2")];
    let works: Vec<&Path> = works.iter().map(|path| path.as_path()).collect();
    assert_eq!(
        violations(&works, Duration::from_millis(100)).unwrap(),
        Vec::new()
    );
}
