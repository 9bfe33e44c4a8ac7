//! `GET /metrics` of a real gateway with node agents, and of a node agent itself: the
//! series follow what the JSON API says, counters count what happened, and Prometheus' own
//! parser (`promtool check metrics`, from Debian's prometheus package) accepts the output.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::{account_state, get_json, get_text};
use leasehold_chaos_tests::harness::onesite::{OneSite, SETTLE, account};
use leasehold_chaos_tests::harness::wait_for;
use nix::sys::signal::Signal;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

/// Site `site-a` with servers a1..a3, node agents on all, and accounts shop and blog (one
/// server each), from the harness, in a temporary directory it owns.
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
    fn start() -> Site {
        let dir = TempDir::new().unwrap();
        let servers = ["a1", "a2", "a3"];
        let inner = OneSite::start(
            Path::new(BINARY),
            dir.path(),
            "site-a",
            &servers,
            &servers,
            vec![account("shop", 1, 1, 20), account("blog", 1, 1, 10)],
        )
        .unwrap_or_else(|error| panic!("{error}"));
        Site { _dir: dir, inner }
    }

    fn gateway_log(&self) -> String {
        self.inner.gateway_output()
    }

    fn wait_served(&self) {
        let admin = self.admin();
        for name in ["shop", "blog"] {
            wait_for(&format!("{name} to be served"), SETTLE, || {
                let state = account_state(admin, name)?;
                if state["servers"] == 1 && state["sla_met"] == true {
                    Ok(())
                } else {
                    Err(state.to_string())
                }
            })
            .unwrap_or_else(|error| panic!("{error}\n{}", self.gateway_log()));
        }
    }

    fn scrape(&self) -> String {
        get_text(self.admin(), "/metrics").unwrap_or_else(|error| panic!("{error}"))
    }
}

/// The value of the sample `series` (name and labels exactly as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Runs `promtool check metrics` on `text` and fails the test with its output unless it
/// exits 0. promtool is Prometheus' own parser and linter; a missing promtool fails too,
/// so the check is never skipped without anyone noticing.
fn promtool_accepts(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => panic!(
            "cannot run promtool ({error}): install Debian's prometheus package \
             (`apt-get install prometheus`; .ci/run installs it) to check /metrics"
        ),
    };
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics refused /metrics ({}):\n{}{}\n--- /metrics ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[test]
fn metrics_describe_a_served_site_and_promtool_accepts_them() {
    let site = Site::start();
    site.wait_served();
    let admin = site.admin();

    // The state gauges and /v1/servers agree; retried, since a round may fall between the
    // two reads.
    let first = wait_for("/metrics to agree with /v1/servers", SETTLE, || {
        let text = site.scrape();
        let servers = get_json(admin, "/v1/servers")?;
        let servers = servers.as_array().ok_or("/v1/servers is not an array")?;
        for state in [
            "offline", "free", "starting", "serving", "draining", "failed",
        ] {
            let listed = servers.iter().filter(|s| s["state"] == state).count() as f64;
            let series = format!(r#"leasehold_servers{{site="site-a",state="{state}"}}"#);
            match sample(&text, &series) {
                Some(exported) if exported == listed => {}
                other => return Err(format!("{series} is {other:?}, /v1/servers has {listed}")),
            }
        }
        Ok(text)
    })
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        value(
            &first,
            r#"leasehold_servers{site="site-a",state="serving"}"#
        ),
        2.0
    );
    for name in ["shop", "blog"] {
        let labels = format!(r#"{{site="site-a",account="{name}"}}"#);
        assert_eq!(
            value(
                &first,
                &format!("leasehold_account_serving_servers{labels}")
            ),
            1.0
        );
        assert_eq!(
            value(&first, &format!("leasehold_account_min_servers{labels}")),
            1.0
        );
        assert_eq!(
            value(&first, &format!("leasehold_account_sla_met{labels}")),
            1.0
        );
        assert!(value(&first, &format!("leasehold_account_demand_servers{labels}")) >= 1.0);
        assert!(value(&first, &format!("leasehold_account_load{labels}")) >= 0.0);
    }
    assert!(value(&first, r#"leasehold_leases_granted_total{site="site-a"}"#) >= 2.0);
    assert!(
        value(
            &first,
            r#"leasehold_decisions_total{site="site-a",kind="assign"}"#
        ) >= 2.0
    );
    assert!(
        value(
            &first,
            r#"leasehold_reallocation_seconds_count{site="site-a"}"#
        ) >= 2.0
    );
    assert!(
        value(
            &first,
            r#"leasehold_decision_round_seconds_count{site="site-a"}"#
        ) >= 1.0
    );
    assert!(
        value(
            &first,
            r#"leasehold_journal_write_seconds_count{site="site-a"}"#
        ) >= 1.0
    );
    assert_eq!(
        value(
            &first,
            r#"leasehold_lease_renewals_refused_total{site="site-a"}"#
        ),
        0.0
    );
    assert!(first.contains("# TYPE leasehold_leases_renewed_total counter"));
    assert!(first.contains("# TYPE leasehold_decision_round_seconds histogram"));

    // Nodes renew every 250 ms: a second later the counter has grown.
    let renewed = |text: &str| value(text, r#"leasehold_leases_renewed_total{site="site-a"}"#);
    std::thread::sleep(Duration::from_millis(1200));
    let second = site.scrape();
    assert!(
        renewed(&second) > renewed(&first),
        "renewals did not grow: {} then {}",
        renewed(&first),
        renewed(&second)
    );
    assert!(
        value(
            &second,
            r#"leasehold_decision_round_seconds_count{site="site-a"}"#
        ) > value(
            &first,
            r#"leasehold_decision_round_seconds_count{site="site-a"}"#
        )
    );

    promtool_accepts(&second);
}

#[test]
fn metrics_count_a_failed_server_and_its_expired_lease() {
    let mut site = Site::start();
    site.wait_served();
    let admin = site.admin();
    let servers = get_json(admin, "/v1/servers").unwrap();
    let victim = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["account"] == "shop" && s["state"] == "serving")
        .and_then(|s| s["id"].as_str())
        .unwrap()
        .to_owned();
    let position = site.nodes.iter().position(|(id, _)| *id == victim).unwrap();
    let (_, node) = site.nodes.remove(position);
    node.signal(Signal::SIGKILL).unwrap();

    // Silent for 500 ms: failed, lease revoked; 1 s after its last renewal: expired.
    let text = wait_for("the expired lease to be counted", SETTLE, || {
        let text = site.scrape();
        let expired = sample(
            &text,
            r#"leasehold_leases_ended_total{site="site-a",why="expired"}"#,
        );
        let failed = sample(
            &text,
            r#"leasehold_decisions_total{site="site-a",kind="server_failed"}"#,
        );
        match (expired, failed) {
            (Some(expired), Some(failed)) if expired >= 1.0 && failed >= 1.0 => Ok(text),
            _ => Err(format!("expired {expired:?}, server_failed {failed:?}")),
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_log()));
    // Every cause is a label of its own, present from the start.
    assert!(
        text.contains(r#"leasehold_leases_ended_total{site="site-a",why="account_removed"} 0"#),
        "{text}"
    );
    // The free third server replaces the victim for shop.
    site.wait_served();
    drop(node);
    promtool_accepts(&site.scrape());
}

#[test]
fn a_node_agent_serves_its_lease_and_workload_as_metrics() {
    let dir = TempDir::new().unwrap();
    let mut site = OneSite::start(
        Path::new(BINARY),
        dir.path(),
        "site-a",
        &["a1"],
        &[],
        vec![account("shop", 1, 1, 20)],
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let port = leasehold_chaos_tests::harness::site::free_port().unwrap();
    let metrics_addr = format!("127.0.0.1:{port}");
    site.start_node_with("a1", &["--metrics-addr".to_owned(), metrics_addr.clone()])
        .unwrap_or_else(|error| panic!("{error}"));
    let addr: std::net::SocketAddr = metrics_addr.parse().unwrap();
    // Serving, by the node's own account: registered, leased, healthy, renewing.
    let text = wait_for("the node's metrics to show it serving", SETTLE, || {
        let text = get_text(addr, "/metrics")?;
        let serving = [
            r#"leasehold_node_connected{site="site-a",server="a1"}"#,
            r#"leasehold_node_workload_healthy{site="site-a",server="a1"}"#,
        ]
        .iter()
        .all(|series| sample(&text, series) == Some(1.0));
        let renewed = sample(
            &text,
            r#"leasehold_node_renewals_total{site="site-a",server="a1",result="renewed"}"#,
        )
        .unwrap_or(0.0);
        if serving && renewed >= 1.0 {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));
    promtool_accepts(&text);
    let epoch = value(
        &text,
        r#"leasehold_node_lease_epoch{site="site-a",server="a1"}"#,
    );
    assert!(epoch >= 1.0, "{text}");
    assert_eq!(
        value(
            &text,
            r#"leasehold_node_highest_epoch{site="site-a",server="a1"}"#
        ),
        epoch
    );
    let left = value(
        &text,
        r#"leasehold_node_lease_remaining_seconds{site="site-a",server="a1"}"#,
    );
    assert!(
        left > 0.0 && left <= 1.0,
        "the test site's lease TTL is 1 s: {left}"
    );
    assert!(
        value(
            &text,
            r#"leasehold_node_pulses_total{site="site-a",server="a1"}"#
        ) >= 1.0
    );
    assert_eq!(
        value(
            &text,
            r#"leasehold_node_workloads_started_total{site="site-a",server="a1"}"#
        ),
        1.0
    );
    // The gateway agrees on the epoch.
    let server = leasehold_chaos_tests::harness::admin::server_state(site.admin(), "a1").unwrap();
    assert_eq!(server["epoch"].as_f64(), Some(epoch), "{server}");
}
