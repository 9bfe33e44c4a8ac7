//! `leasehold config check`, run as the operator runs it: exit codes and messages for the
//! example federation, for every file in configs/invalid/, and for edited copies.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EX_CONFIG: i32 = 78;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn check(files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["config", "check"])
        .args(files)
        .output()
        .expect("the leasehold binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn example(site: &str) -> PathBuf {
    repo(&format!("configs/{site}.toml"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("example config is readable")
}

/// Writes `text` under `dir` and returns its path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("temp file is writable");
    path
}

/// `text` with its first `from` replaced; fails if `from` is absent, so that a test cannot
/// pass by checking an unedited file.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` not found");
    text.replacen(from, to, 1)
}

fn assert_refused(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "stderr:\n{err}");
    assert!(
        err.trim_end()
            .ends_with("config refused; fix the errors above, nothing was changed"),
        "{err}"
    );
    err
}

#[test]
fn example_federation_passes_together() {
    let (a, b, c) = (example("site-a"), example("site-b"), example("site-c"));
    let out = check(&[&a, &b, &c]);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            "site-a: 4 servers, 2 accounts (shop, blog), 2 peers (site-b, site-c), lease TTL 2000 ms",
            "site-b: 4 servers, 1 account (wiki), 2 peers (site-a, site-c), lease TTL 2000 ms",
            "site-c: 4 servers, 1 account (mail), 2 peers (site-a, site-b), lease TTL 2000 ms",
        ]
    );
}

#[test]
fn each_example_passes_alone_and_says_what_was_not_checked() {
    for site in ["site-a", "site-b", "site-c"] {
        let out = check(&[&example(site)]);
        assert_eq!(out.status.code(), Some(0), "{site}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.starts_with(&format!("{site}: 4 servers")), "{text}");
        assert!(text.contains("cross-site references not checked"), "{text}");
    }
}

/// Every file in configs/invalid/ is refused with the message its first line expects, so
/// adding a file there adds a test case.
#[test]
fn every_invalid_example_is_refused_with_its_message() {
    let dir = repo("configs/invalid");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("configs/invalid exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 9, "only {} invalid examples", paths.len());
    for path in paths {
        let text = read(&path);
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks a `# expect: ` first line", path.display()));
        let out = check(&[&path]);
        let err = assert_refused(&out);
        assert!(
            err.contains(expected),
            "{}: expected `{expected}` in:\n{err}",
            path.display()
        );
    }
}

#[test]
fn syntax_error_names_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let original = read(&example("site-a"));
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let n = lines
        .iter()
        .position(|l| l.starts_with("max_servers"))
        .expect("site-a has max_servers")
        + 1;
    lines[n - 1] = "max_servers = = 4".to_owned();
    let path = write(dir.path(), "site-a.toml", &(lines.join("\n") + "\n"));
    let err = assert_refused(&check(&[&path]));
    let place = format!("{}:{n}:", path.display());
    assert!(err.contains(&place), "expected `{place}` in:\n{err}");
    assert!(err.contains("syntax error"), "{err}");
}

#[test]
fn min_above_max_names_the_account() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = edit(
        &read(&example("site-a")),
        "name = \"blog\"\nmin_servers = 1",
        "name = \"blog\"\nmin_servers = 3",
    );
    let path = write(dir.path(), "site-a.toml", &text);
    let err = assert_refused(&check(&[&path]));
    assert!(
        err.contains(
            "account `blog` at site `site-a`: min_servers 3 is greater than max_servers 2"
        ),
        "{err}"
    );
}

#[test]
fn all_errors_are_reported_in_one_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = read(&example("site-a"));
    let text = edit(&text, "max_servers = 6", "max_servers = 0");
    let text = edit(&text, "id = \"a3\"", "id = \"a2\"");
    let text = edit(&text, "lease_ttl_ms = 2000", "lease_ttl_ms = 300");
    let text = edit(&text, "\"{account}\"", "\"{acount}\"");
    let path = write(dir.path(), "site-a.toml", &text);
    let err = assert_refused(&check(&[&path]));
    for expected in [
        "max_servers is 0",
        "server `a2` at site `site-a` is listed twice",
        "lease TTL 300 ms is not longer than its renew interval 500 ms",
        "unknown placeholder `{acount}`",
        "4 errors in 1 file",
    ] {
        assert!(err.contains(expected), "expected `{expected}` in:\n{err}");
    }
}

#[test]
fn federation_cross_checks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = edit(
        &read(&example("site-a")),
        "[[peer]]\nname = \"site-c\"",
        "[[peer]]\nname = \"site-d\"",
    );
    let b = edit(
        &read(&example("site-b")),
        "name = \"wiki\"",
        "name = \"shop\"",
    );
    let a = write(dir.path(), "site-a.toml", &a);
    let b = write(dir.path(), "site-b.toml", &b);
    let c = example("site-c");
    let err = assert_refused(&check(&[&a, &b, &c]));
    for expected in [
        "peer `site-d` of site `site-a` is not defined by any of the files checked",
        "account `shop` is homed at two sites, `site-a` and `site-b`",
        "site `site-c` lists `site-a` as a peer, but site `site-a`",
    ] {
        assert!(err.contains(expected), "expected `{expected}` in:\n{err}");
    }
}

#[test]
fn unreadable_file_is_refused() {
    let missing = repo("configs/no-such-site.toml");
    let err = assert_refused(&check(&[&missing]));
    assert!(
        err.contains("no-such-site.toml: cannot read config file"),
        "{err}"
    );
}

#[test]
fn check_needs_at_least_one_file() {
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(2), "clap usage error expected");
}

/// Peers named by DNS: syntax only by default (and said so); `--resolve` resolves them,
/// refuses one that does not resolve, and warns of one that leads elsewhere than the peer's
/// federation_addr (it may be NAT).
#[test]
fn peer_names_are_resolved_only_when_asked_and_must_lead_to_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let a = edit(
        &read(&example("site-a")),
        "addr = \"127.0.0.1:7202\"",
        "addr = \"localhost:7202\"",
    );
    let a_path = write(dir.path(), "site-a.toml", &a);
    let (b, c) = (example("site-b"), example("site-c"));
    let out = check(&[&a_path, &b, &c]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "peer names not resolved (give --resolve to resolve them here): localhost:7202 (peer site-b of site-a)"
        ),
        "{}",
        stdout(&out)
    );
    let resolved = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["config", "check", "--resolve"])
        .args([&a_path, &b, &c])
        .output()
        .unwrap();
    assert!(resolved.status.success(), "{}", stderr(&resolved));
    assert!(!stdout(&resolved).contains("not resolved"));

    let elsewhere = write(
        dir.path(),
        "site-a.toml",
        &edit(&a, "addr = \"localhost:7202\"", "addr = \"localhost:7299\""),
    );
    let warned = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["config", "check", "--resolve"])
        .args([&elsewhere, &b, &c])
        .output()
        .unwrap();
    let said = stdout(&warned);
    assert!(warned.status.success(), "{}", stderr(&warned));
    assert!(
        said.contains("warning: ")
            && said.contains(
                "peer `site-b` of site `site-a` has addr localhost:7299, which resolves to"
            )
            && said.contains("but that site's federation_addr is 127.0.0.1:7202: fine behind NAT"),
        "{said}"
    );
    let nowhere = write(
        dir.path(),
        "site-a.toml",
        &edit(
            &a,
            "addr = \"localhost:7202\"",
            "addr = \"site-b.invalid:7202\"",
        ),
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["config", "check", "--resolve"])
        .args([&nowhere, &b, &c])
        .output()
        .unwrap();
    let said = assert_refused(&refused);
    assert!(said.contains("cannot resolve `site-b.invalid`"), "{said}");
}
