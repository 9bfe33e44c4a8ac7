//! The alert rules that ship in prometheus/: Prometheus' own tools accept them and their
//! unit tests pass (each alert fires on the series that should fire it, and only those),
//! and every metric they name is one a real gateway serves, so a renamed metric cannot
//! leave an alert silently watching nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Duration;

use leasehold_chaos_tests::harness::admin::{get_text, metric_value};
use leasehold_chaos_tests::harness::federation::Federation;
use leasehold_chaos_tests::harness::onesite::{FAST_TIMINGS, account};
use leasehold_chaos_tests::harness::site::SiteSpec;
use leasehold_chaos_tests::harness::wait_for;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .expect("promtool runs (Debian's prometheus package; .ci/run installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{said}");
    said
}

#[test]
fn the_rules_are_valid_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 12 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The `leasehold_*` names in the rules' expressions.
fn metrics_named_by_the_rules() -> Vec<String> {
    let rules = std::fs::read_to_string(prometheus_dir().join("alerts.yml")).expect("alerts.yml");
    let mut names: Vec<String> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("leasehold_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_metric_the_rules_name_is_served_by_a_gateway() {
    let names = metrics_named_by_the_rules();
    assert!(names.len() >= 10, "{names:?}");
    // Two sites, so that the peer and member series exist.
    let spec = |name: &str, server: &str, account_name: &str| SiteSpec {
        name: name.into(),
        servers: vec![server.into()],
        accounts: vec![account(account_name, 1, 1, 10)],
        timings: FAST_TIMINGS.to_vec(),
        lending: None,
    };
    let federation = Federation::start(
        Path::new(BINARY),
        vec![spec("site-a", "a1", "shop"), spec("site-b", "b1", "blog")],
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let served = |text: &str, name: &str| {
        text.lines().any(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
    };
    let text = wait_for(
        "every named metric to be served",
        Duration::from_secs(40),
        || {
            let text = get_text(federation.admin(0), "/metrics")?;
            let missing: Vec<&String> = names.iter().filter(|name| !served(&text, name)).collect();
            if missing.is_empty() {
                Ok(text)
            } else {
                Err(format!("named by alerts.yml but not served: {missing:?}"))
            }
        },
    )
    .unwrap_or_else(|error| panic!("{error}"));
    // The site's standing, as the gateway sees it: two members, both reachable.
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        metric_value(&text, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    assert!(value("leasehold_journal_bytes", &[]) > 0.0);
    assert_eq!(value("leasehold_build_info", &[]), 1.0);
    assert_eq!(value("leasehold_members", &[]), 2.0);
    assert_eq!(value("leasehold_members_needed", &[]), 2.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    for certificate in ["site", "ca"] {
        let expiry = value(
            "leasehold_certificate_expiry_timestamp_seconds",
            &[("site", "site-a"), ("certificate", certificate)],
        );
        assert!(
            expiry > now + 300.0 * 86400.0,
            "{certificate} expires at {expiry}"
        );
    }
}
