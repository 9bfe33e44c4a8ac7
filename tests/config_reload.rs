//! Live config edits on a running gateway with node agents (issue #7): an added account
//! gets a group and servers, a broken file is refused while the site keeps serving (the
//! error in `/v1/status` and in metrics), a fix is applied, a removed account is drained
//! and its servers freed, and a SIGHUP without a change is harmless.

use std::path::Path;
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::{get_json, get_text, metric_value, server_state};
use leasehold_chaos_tests::harness::evidence::first_event_ns;
use leasehold_chaos_tests::harness::onesite::{OneSite, SETTLE, account};
use leasehold_chaos_tests::harness::wait_for;
use leasehold_node::event_log::EventKind;
use nix::sys::signal::Signal;
use serde_json::Value;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

/// Writes `text` to a temporary file beside `path` and renames it over `path`, as editors
/// save.
fn save_like_an_editor(path: &Path, text: &str) {
    let temp = path.with_extension("toml.swp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// The `[[table]]` block whose first key is `first` (up to the next `[[` block or the end).
fn block(text: &str, table: &str, first: &str) -> String {
    let start = text
        .find(&format!("[[{table}]]\n{first}"))
        .unwrap_or_else(|| panic!("no [[{table}]] {first} in:\n{text}"));
    let rest = &text[start + 2..];
    let end = rest
        .find("\n[[")
        .map(|at| start + 2 + at + 1)
        .unwrap_or(text.len());
    text[start..end].to_owned()
}

/// The `[[account]]` block of `name`.
fn account_block(text: &str, name: &str) -> String {
    block(text, "account", &format!("name = \"{name}\""))
}

fn config_status(site: &OneSite) -> Result<Value, String> {
    Ok(get_json(site.admin(), "/v1/status")?["config"].clone())
}

/// The value of the `config_reloads_total` series with `result`.
fn reloads_metric(site: &OneSite, result: &str) -> Result<f64, String> {
    let text = get_text(site.admin(), "/metrics")?;
    metric_value(
        &text,
        "leasehold_config_reloads_total",
        &[("result", result)],
    )
    .ok_or_else(|| format!("no config_reloads_total{{result={result}}} in:\n{text}"))
}

fn accounts(site: &OneSite) -> Result<Value, String> {
    get_json(site.admin(), "/v1/accounts")
}

fn serving(site: &OneSite, name: &str) -> Result<u64, String> {
    let accounts = accounts(site)?;
    accounts
        .as_array()
        .and_then(|all| all.iter().find(|a| a["name"] == name))
        .and_then(|a| a["servers"].as_u64())
        .ok_or_else(|| format!("no account {name} in {accounts}"))
}

#[test]
fn a_running_gateway_applies_good_edits_and_refuses_bad_ones() {
    let dir = TempDir::new().unwrap();
    let site = OneSite::start(
        Path::new(BINARY),
        dir.path(),
        "site-a",
        &["a1", "a2", "a3"],
        &["a1", "a2", "a3"],
        vec![account("shop", 1, 1, 20), account("blog", 1, 1, 10)],
    )
    .unwrap();
    let blog = site.wait_serving("blog", 1).unwrap();
    site.wait_serving("shop", 1).unwrap();
    let blog_server = blog["endpoints"][0].as_str().unwrap().to_owned();
    let path = site.site.config.clone();
    let original = std::fs::read_to_string(&path).unwrap();
    let first = config_status(&site).unwrap();
    assert_eq!(first["hash"].as_str().map(str::len), Some(64), "{first}");

    // 1. Add an account: a group appears and gets its minimum.
    let wiki = account_block(&original, "blog").replace("blog", "wiki");
    let with_wiki = format!("{original}\n{wiki}");
    save_like_an_editor(&path, &with_wiki);
    site.wait_serving("wiki", 1).unwrap();
    let applied = config_status(&site).unwrap();
    assert_eq!(applied["reloads_applied"], 1, "{applied}");
    assert_ne!(applied["hash"], first["hash"]);

    // 2. Break the syntax: refused with file:line, the site keeps serving.
    save_like_an_editor(&path, &format!("{with_wiki}\n[[account\nname = \n"));
    let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
    let refused = wait_for("the broken edit to be refused", SETTLE, || {
        let status = config_status(&site)?;
        match status["last_refused"].as_str() {
            Some(text) if text.contains(&file_name) => Ok(status),
            _ => Err(status.to_string()),
        }
    })
    .unwrap();
    let error = refused["last_refused"].as_str().unwrap();
    let located = error.lines().any(|line| {
        line.split(':')
            .nth(1)
            .is_some_and(|n| n.trim().parse::<u32>().is_ok())
    });
    assert!(located, "no file:line in the refusal: {error}");
    assert_eq!(
        refused["hash"], applied["hash"],
        "still the last good config"
    );
    assert!(reloads_metric(&site, "refused").unwrap() >= 1.0);
    // The status page shows the refusal too, naming the file (HTML-escaped text).
    let page = get_text(site.admin(), "/").unwrap();
    let first_line = error.lines().next().unwrap_or_default();
    let shown = first_line.split(": ").next().unwrap_or_default();
    assert!(
        page.contains(shown),
        "the page does not show the refusal `{shown}`:\n{page}"
    );
    for name in ["shop", "blog", "wiki"] {
        assert_eq!(serving(&site, name).unwrap(), 1, "{name} still served");
    }

    // 3. Fix it (with a comment, so the hash differs from the running config): applied.
    save_like_an_editor(&path, &format!("{with_wiki}\n# fixed\n"));
    wait_for("the fix to be applied", SETTLE, || {
        let status = config_status(&site)?;
        if status["reloads_applied"] == 2 && status["last_refused"].is_null() {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .unwrap();
    assert!(reloads_metric(&site, "applied").unwrap() >= 2.0);

    // 4. Remove blog: its server is drained and freed.
    let without_blog = with_wiki.replace(&account_block(&original, "blog"), "");
    save_like_an_editor(&path, &without_blog);
    let blog_id = wait_for("blog's server to be freed", SETTLE, || {
        let accounts = accounts(&site)?;
        let blog = accounts
            .as_array()
            .and_then(|all| all.iter().find(|a| a["name"] == "blog"));
        if blog.is_some_and(|b| b["servers"] != 0) {
            return Err(format!("blog still served: {accounts}"));
        }
        let servers = get_json(site.admin(), "/v1/servers")?;
        let server = servers
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|s| s["service_addr"] == blog_server.as_str())
            })
            .cloned()
            .ok_or_else(|| format!("no server at {blog_server}: {servers}"))?;
        if server["state"] == "free" && server["account"].is_null() {
            Ok(server["id"].as_str().unwrap_or_default().to_owned())
        } else {
            Err(server.to_string())
        }
    })
    .unwrap();
    let audit = get_json(site.admin(), "/v1/audit?limit=1000").unwrap();
    let records = audit.as_array().unwrap();
    assert!(
        records.iter().any(|r| r["kind"] == "release"
            && r["from"] == "blog"
            && r["server"] == blog_id.as_str()),
        "no release of {blog_id} from blog: {audit:#}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "config" && r["account"] == "blog"),
        "no config entry for blog's removal: {audit:#}"
    );
    let hash = config_status(&site).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "config"
                && r["reason"].as_str().is_some_and(|t| t.contains(&hash))),
        "the applied config's hash is audited: {audit:#}"
    );
    // The freed server stays free: blog gets no new lease.
    std::thread::sleep(Duration::from_millis(1500));
    let server = server_state(site.admin(), &blog_id).unwrap();
    assert_ne!(server["account"], "blog", "{server}");

    // 5. A SIGHUP without a change is harmless.
    let before = config_status(&site).unwrap();
    site.gateway
        .as_ref()
        .unwrap()
        .signal(Signal::SIGHUP)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    get_text(site.admin(), "/ready").unwrap();
    let after = config_status(&site).unwrap();
    assert_eq!(
        after["reloads_applied"], before["reloads_applied"],
        "{after}"
    );
    assert_eq!(
        after["reloads_refused"], before["reloads_refused"],
        "{after}"
    );
    assert_eq!(serving(&site, "shop").unwrap(), 1);
    assert_eq!(serving(&site, "wiki").unwrap(), 1);
}

/// `leasehold config diff OLD NEW`: the edit in words, "no changes" for equal files, and
/// exit 78 with file:line when either file is refused.
#[test]
fn config_diff_prints_what_an_edit_would_change() {
    use leasehold_chaos_tests::harness::site::{SiteSpec, prepare_site};
    use std::process::Command;

    let dir = TempDir::new().unwrap();
    let spec = SiteSpec {
        name: "site-a".into(),
        servers: vec!["a1".into()],
        accounts: vec![account("shop", 1, 1, 20), account("blog", 1, 1, 10)],
        timings: Vec::new(),
        lending: None,
    };
    let old = prepare_site(dir.path(), &spec).unwrap().config;
    let text = std::fs::read_to_string(&old).unwrap();
    let new = dir.path().join("new.toml");
    let edited = text.replace(&account_block(&text, "blog"), "")
        + &account_block(&text, "blog").replace("blog", "wiki")
        + "\n[timings]\nlease_ttl_ms = 3000\n";
    std::fs::write(&new, edited).unwrap();
    let run = |a: &Path, b: &Path| {
        Command::new(BINARY)
            .args(["config", "diff"])
            .arg(a)
            .arg(b)
            .output()
            .unwrap()
    };
    let out = run(&old, &new);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("+ account wiki"), "{stdout}");
    assert!(stdout.contains("- account blog"), "{stdout}");
    assert!(stdout.contains("lease_ttl_ms"), "{stdout}");

    let same = run(&old, &old);
    assert_eq!(same.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&same.stdout), "no changes\n");

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[site\n").unwrap();
    let refused = run(&old, &broken);
    assert_eq!(refused.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("broken.toml:1:"), "{stderr}");
}

/// The `[[server]]` block of `id`, as the harness writes it.
fn server_block(text: &str, id: &str) -> String {
    block(text, "server", &format!("id = \"{id}\""))
}

#[test]
fn servers_are_added_and_removed_by_editing_the_file() {
    let dir = TempDir::new().unwrap();
    let servers = ["a1".to_owned(), "a2".to_owned()];
    let mut site = OneSite::prepare(
        Path::new(BINARY),
        dir.path(),
        "site-a",
        &servers,
        vec![account("shop", 1, 1, 20)],
    )
    .unwrap();
    // The site starts with a1 only; a2's certificate exists, as it would once issued.
    let full = std::fs::read_to_string(&site.site.config).unwrap();
    let a1 = server_block(&full, "a1");
    let a2 = server_block(&full, "a2");
    std::fs::write(&site.site.config, full.replacen(&a2, "", 1)).unwrap();
    site.start_gateway()
        .unwrap_or_else(|error| panic!("{error}"));
    site.start_node("a1").unwrap();
    site.wait_serving("shop", 1)
        .unwrap_or_else(|error| panic!("{error}"));
    let admin = site.admin();
    assert!(
        server_state(admin, "a2").is_err(),
        "a2 is not in the inventory yet"
    );

    // Added: a2's agent is admitted, registers, and is free.
    save_like_an_editor(&site.site.config, &full);
    wait_for("a2 in the inventory", SETTLE, || server_state(admin, "a2"))
        .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));
    site.start_node("a2").unwrap();
    wait_for("a2 to register, free", SETTLE, || {
        let state = server_state(admin, "a2")?;
        if state["state"] == "free" {
            Ok(())
        } else {
            Err(state.to_string())
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));

    // Removed while it serves shop at its minimum: a2 takes over, then a1 leaves.
    save_like_an_editor(&site.site.config, &full.replacen(&a1, "", 1));
    wait_for("a1 to leave the inventory, a2 serving shop", SETTLE, || {
        let gone = server_state(admin, "a1").is_err();
        let a2 = server_state(admin, "a2")?;
        if gone && a2["state"] == "serving" && a2["account"] == "shop" {
            Ok(())
        } else {
            Err(format!("a1 gone: {gone}; a2: {a2}"))
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));
    let healthy = first_event_ns(&site.work("a2"), |kind| {
        matches!(kind, EventKind::WorkloadHealthy { .. })
    })
    .expect("a2's workload was healthy");
    let stopped = first_event_ns(&site.work("a1"), |kind| {
        matches!(kind, EventKind::WorkloadStopped { .. })
    })
    .expect("a1's workload stopped");
    assert!(
        healthy < stopped,
        "a2 served ({healthy}) before a1 stopped ({stopped})"
    );
    let status = config_status(&site).unwrap();
    assert!(
        status["needs_restart"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{status}"
    );
}
