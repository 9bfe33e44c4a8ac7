//! `leasehold status` and `leasehold audit` against a running gateway: the tables and the
//! JSON name every account and server as the admin API does, audit lines carry reasons,
//! and an unreachable gateway is a clear error naming the URL, with a non-zero exit.

use std::path::Path;
use std::process::{Command, Output};

use leasehold_chaos_tests::harness::admin::get_json;
use leasehold_chaos_tests::harness::onesite::{OneSite, account};
use leasehold_chaos_tests::harness::site::free_port;
use serde_json::Value;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

fn leasehold(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env("LEASEHOLD_LOG", "warn")
        .output()
        .expect("run leasehold")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The whitespace-separated cells of the table line that starts with `first`.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_default()
}

#[test]
fn status_tables_and_json_show_every_account_and_server_and_audit_shows_reasons() {
    let dir = TempDir::new().unwrap();
    let site = OneSite::start(
        Path::new(BINARY),
        dir.path(),
        "site-a",
        &["a1", "a2", "a3"],
        &["a1", "a2", "a3"],
        vec![account("shop", 1, 2, 20), account("blog", 1, 1, 10)],
    )
    .unwrap_or_else(|error| panic!("{error}"));
    site.wait_serving("shop", 1)
        .unwrap_or_else(|error| panic!("{error}"));
    site.wait_serving("blog", 1)
        .unwrap_or_else(|error| panic!("{error}"));
    let url = format!("http://{}", site.admin());

    let output = leasehold(&["status", "--gateway", &url]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}\n{}", stderr(&output));
    assert!(text.contains("Site           = site-a"), "{text}");
    assert!(text.contains(&format!("Gateway        = {url}")), "{text}");
    for section in [
        "Peers",
        "Accounts",
        "Servers",
        "Loans",
        "Latest Audit Entries",
    ] {
        assert!(
            text.lines().any(|line| line == section),
            "no {section} section:\n{text}"
        );
    }
    assert!(text.contains("no peers configured"), "{text}");
    assert!(text.contains("no loans"), "{text}");
    for name in ["shop", "blog"] {
        let cells = row(&text, name);
        assert_eq!(
            cells.get(1..5),
            Some(&["site-a", "site-a", "met", "1"][..]),
            "account {name}: {cells:?}\n{text}"
        );
    }
    // Read after the CLI: the site is steady, so each server's row is what the API says.
    let servers = get_json(site.admin(), "/v1/servers").unwrap();
    for server in servers.as_array().unwrap() {
        let id = server["id"].as_str().unwrap();
        let cells = row(&text, id);
        let account = server["account"].as_str().unwrap_or("-");
        let epoch = server["epoch"].to_string();
        assert_eq!(
            cells.get(1..4),
            Some(&[server["state"].as_str().unwrap(), account, epoch.as_str()][..]),
            "server {id}: {cells:?}\n{text}"
        );
    }
    assert!(text.contains("took free server"), "{text}");

    let output = leasehold(&["status", "--gateway", &url, "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}):\n{}", stdout(&output)));
    assert_eq!(json["status"]["site"], "site-a", "{json:#}");
    let names = |key: &str, field: &str| -> Vec<String> {
        let mut names: Vec<String> = json[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} array: {json:#}"))
            .iter()
            .map(|item| item[field].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("accounts", "name"), ["blog", "shop"]);
    assert_eq!(names("servers", "id"), ["a1", "a2", "a3"]);
    assert!(
        json["audit"]
            .as_array()
            .is_some_and(|records| records.iter().any(|r| r["kind"] == "assign")),
        "{json:#}"
    );

    let output = leasehold(&["audit", "--gateway", &url, "--limit", "5"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}\n{}", stderr(&output));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.first().is_some_and(|line| line.contains("REASON")),
        "{text}"
    );
    assert!(
        (2..=6).contains(&lines.len()),
        "a heading and at most 5 records:\n{text}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("assign") && line.contains("took free server")),
        "{text}"
    );
    // Oldest first: sequence numbers grow down the page.
    let seqs: Vec<u64> = lines[1..]
        .iter()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn status_and_audit_name_the_url_and_fail_when_no_gateway_answers() {
    // A port nothing listens on: free now, and nothing of this test binds it.
    let url = format!("http://127.0.0.1:{}", free_port().unwrap());
    for command in ["status", "audit"] {
        let output = leasehold(&[command, "--gateway", &url]);
        let text = stderr(&output);
        assert!(!output.status.success(), "{command}: {text}");
        assert!(
            text.contains(&format!("cannot reach the gateway at {url}"))
                && text.contains("is `leasehold gateway run` running"),
            "{command}: {text}"
        );
    }
}

/// `leasehold ... | head` closes the pipe early: the command ends quietly with the status
/// a shell gives SIGPIPE, not with a panic and its backtrace.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let mut child = std::process::Command::new(BINARY)
        .args(["sim", "--seed", "1", "--faults", "20"])
        .env("LEASEHOLD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run leasehold");
    // The reader is gone before the simulation (tens of milliseconds) prints anything.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait for leasehold");
    let said = stderr(&output);
    assert!(!said.contains("panicked"), "{said}");
    assert_eq!(output.status.code(), Some(141), "{said}");
}
