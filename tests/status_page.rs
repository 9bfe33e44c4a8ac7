//! The status page at `/` of a running gateway: what a person sees in a real browser
//! (headless Chromium, after its script has refreshed the page once), and that text from
//! outside (a workload command's name, in an audit reason) is shown, never run.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leasehold_chaos_tests::harness::admin::get_json;
use leasehold_chaos_tests::harness::browser::HEADLESS_FLAGS;
use leasehold_chaos_tests::harness::onesite::{OneSite, SETTLE, account};
use leasehold_chaos_tests::harness::wait_for;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

/// Chromium, killed with its whole process group (renderers, GPU process) on drop.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// The DOM of `url` after 3 s of the page's own (virtual) time, as headless Chromium
/// serializes it. Fails, rather than skips, without Chromium: CI installs it (.ci/run).
fn dump_dom(url: &str, dir: &Path) -> String {
    let profile = dir.join("chromium-profile");
    let dom = dir.join("dom.html");
    let log = dir.join("chromium.log");
    let child = Command::new("chromium")
        .args(HEADLESS_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=3000", "--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom).expect("create the DOM file"))
        .stderr(std::fs::File::create(&log).expect("create the chromium log"))
        .process_group(0)
        .spawn();
    let mut browser = match child {
        Ok(child) => Browser(child),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "chromium is not installed, and this test needs it: \
             apt-get install chromium (.ci/run installs it in CI)"
        ),
        Err(error) => panic!("cannot start chromium: {error}"),
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        match browser.0.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => panic!(
                "chromium did not finish within 90 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
            Err(error) => panic!("waiting for chromium: {error}"),
        }
    };
    let text = std::fs::read_to_string(&dom).unwrap_or_default();
    assert!(
        status.success() && text.contains("</html>"),
        "chromium failed ({status}):\n{}\n--- DOM ---\n{text}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    text
}

/// Text as a DOM serializer writes it inside an element: only `&`, `<`, `>` are escaped.
fn as_dom_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The part of `dom` from `start` to the first `end` after it.
fn between<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let Some(from) = dom.find(start) else {
        return "";
    };
    let rest = &dom[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

#[test]
fn headless_chromium_shows_the_site_accounts_with_sla_servers_with_state_and_epoch_and_reasons() {
    let dir = TempDir::new().unwrap();
    let site = OneSite::start(
        Path::new(BINARY),
        dir.path(),
        "site-a",
        &["a1", "a2"],
        &["a1", "a2"],
        vec![account("shop", 1, 1, 20), account("blog", 1, 1, 10)],
    )
    .unwrap_or_else(|error| panic!("{error}"));
    site.wait_serving("shop", 1)
        .unwrap_or_else(|error| panic!("{error}"));
    site.wait_serving("blog", 1)
        .unwrap_or_else(|error| panic!("{error}"));

    let dom = dump_dom(&format!("http://{}/", site.admin()), dir.path());
    let context = |what: &str| format!("{what}\n--- DOM ---\n{dom}");

    assert!(
        dom.contains("data-site=\"site-a\""),
        "{}",
        context("no site name")
    );
    assert!(
        dom.contains("<title>site-a · Leasehold</title>"),
        "{}",
        context("no title")
    );
    for name in ["shop", "blog"] {
        let row = between(&dom, &format!("<tr data-account=\"{name}\""), "</tr>");
        assert!(
            row.contains("data-sla=\"met\"") && row.contains("SLA met"),
            "{}",
            context(&format!(
                "account {name} does not show its SLA as met: {row:?}"
            ))
        );
        assert!(
            row.contains(">site-a<"),
            "{}",
            context(&format!("account {name} does not show its owner: {row:?}"))
        );
    }
    // Read after the page: the site is steady (two accounts, one server each), and what
    // the page showed must be what the API says now.
    let servers = get_json(site.admin(), "/v1/servers").unwrap();
    for server in servers.as_array().unwrap() {
        let (id, state, epoch) = (
            server["id"].as_str().unwrap(),
            server["state"].as_str().unwrap(),
            server["epoch"].as_u64().unwrap(),
        );
        assert_eq!(state, "serving", "{server}");
        let group = between(&dom, &format!("<tbody data-group=\"{state}\""), "</tbody>");
        let row = between(group, &format!("<tr data-server=\"{id}\""), "</tr>");
        assert!(
            row.contains(&format!("data-epoch=\"{epoch}\""))
                && row.contains(&format!(">e{epoch}<"))
                && row.contains(&format!(">{}<", server["account"].as_str().unwrap())),
            "{}",
            context(&format!(
                "server {id} is not shown {state} with epoch {epoch}: {row:?}"
            ))
        );
    }
    let audit = get_json(site.admin(), "/v1/audit?limit=15").unwrap();
    let reason = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|record| record["kind"] == "assign")
        .and_then(|record| record["reason"].as_str())
        .unwrap_or_else(|| panic!("no assign in the audit log: {audit}"));
    assert!(
        dom.contains(&as_dom_text(reason)),
        "{}",
        context(&format!("the audit reason {reason:?} is not shown"))
    );
    assert!(
        dom.contains("no peers configured"),
        "{}",
        context("no peers section")
    );
    assert!(dom.contains("no loans"), "{}", context("no loans section"));
    // The script refreshed the page at least once within the 3 s of virtual time.
    assert!(
        dom.contains("live · updated"),
        "{}",
        context("the page's script did not refresh it")
    );
}

#[test]
fn the_page_answers_html_and_shows_a_hostile_workload_command_as_text() {
    let dir = TempDir::new().unwrap();
    const HOSTILE: &str = "/nonexistent/<script>alert(\"owned\")</script>&'";
    let mut hostile = account("hostile", 1, 1, 10);
    hostile.command = Some((HOSTILE.to_owned(), Vec::new()));
    let site = OneSite::start(
        Path::new(BINARY),
        dir.path(),
        "site-a",
        &["a1"],
        &["a1"],
        vec![hostile],
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let admin = site.admin();
    // The node cannot start the command; its reason (naming the command) reaches the
    // audit log, and from there the page.
    wait_for("the hostile workload to fail", SETTLE, || {
        let audit = get_json(admin, "/v1/audit?limit=100")?;
        audit
            .as_array()
            .into_iter()
            .flatten()
            .find(|record| {
                record["kind"] == "workload_failed"
                    && record["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains(HOSTILE))
            })
            .cloned()
            .ok_or_else(|| audit.to_string())
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway_output()));

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(&format!("http://{admin}/")).call().unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("cache-control"), "no-store");
    let body = response.body_mut().read_to_string().unwrap();
    assert!(body.contains("<meta name=\"viewport\""), "{body}");
    assert!(
        body.contains(
            "/nonexistent/&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;&amp;&#39;"
        ),
        "the hostile command is not shown escaped:\n{body}"
    );
    assert!(!body.contains("<script>alert"), "{body}");
    assert_eq!(
        body.matches("<script>").count(),
        1,
        "only the page's own script may run:\n{body}"
    );
}
