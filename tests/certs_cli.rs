//! `leasehold certs` end to end: the files it writes, their modes, what it refuses, and that
//! the federation crate loads what it issued.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use leasehold_federation::ids::SiteId;
use leasehold_federation::transport::certs::load_site_identity;
use leasehold_federation::transport::identity::PeerName;

fn leasehold(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(args)
        .output()
        .expect("run the leasehold binary")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let out = leasehold(args);
    let all = text(&out);
    assert!(out.status.success(), "leasehold {args:?} failed:\n{all}");
    assert!(!all.contains("PRIVATE KEY"), "key material printed:\n{all}");
    all
}

fn fails(args: &[&str]) -> String {
    let out = leasehold(args);
    let all = text(&out);
    assert!(
        !out.status.success(),
        "leasehold {args:?} succeeded:\n{all}"
    );
    assert!(!all.contains("PRIVATE KEY"), "key material printed:\n{all}");
    all
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_and_issue_write_the_layout_with_private_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let d = dir.to_str().unwrap();

    let out = ok(&["certs", "init", "--dir", d]);
    assert!(out.contains("ca.crt"), "{out}");
    assert!(out.contains("ca.key (mode 0600)"), "{out}");
    let out = ok(&["certs", "issue", "--dir", d, "--site", "site-a"]);
    assert!(out.contains("site-a.key (mode 0600)"), "{out}");

    for file in ["ca.crt", "ca.key", "sites/site-a.crt", "sites/site-a.key"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("sites/site-a.key")), 0o600);

    let site_a = SiteId::parse("site-a").unwrap();
    let identity = load_site_identity(&dir, &site_a).unwrap();
    assert_eq!(identity.name, PeerName::Site(site_a));
}

#[test]
fn init_refuses_to_replace_a_ca_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    ok(&["certs", "init", "--dir", d]);
    let crt = fs::read(tmp.path().join("ca.crt")).unwrap();
    let key = fs::read(tmp.path().join("ca.key")).unwrap();

    let err = fails(&["certs", "init", "--dir", d]);
    assert!(err.contains("ca.crt already exists"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(fs::read(tmp.path().join("ca.crt")).unwrap(), crt);
    assert_eq!(fs::read(tmp.path().join("ca.key")).unwrap(), key);

    ok(&["certs", "init", "--dir", d, "--force"]);
    assert_ne!(fs::read(tmp.path().join("ca.crt")).unwrap(), crt);
    assert_ne!(fs::read(tmp.path().join("ca.key")).unwrap(), key);
    assert_eq!(mode(&tmp.path().join("ca.key")), 0o600);
}

#[test]
fn issue_node_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    ok(&["certs", "init", "--dir", d]);
    let out = ok(&[
        "certs", "issue", "--dir", d, "--node", "a1", "--site", "site-a",
    ]);
    assert!(out.contains("nodes/a1.crt"), "{out}");
    assert!(tmp.path().join("nodes/a1.crt").is_file());
    assert_eq!(mode(&tmp.path().join("nodes/a1.key")), 0o600);

    let err = fails(&[
        "certs", "issue", "--dir", d, "--node", "a1", "--site", "site-a",
    ]);
    assert!(err.contains("a1.crt already exists"), "{err}");
    ok(&[
        "certs", "issue", "--dir", d, "--node", "a1", "--site", "site-a", "--force",
    ]);
}

#[test]
fn issue_before_init_says_to_run_init() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let err = fails(&["certs", "issue", "--dir", d, "--site", "site-a"]);
    assert!(err.contains("ca.crt"), "{err}");
    assert!(err.contains("leasehold certs init --dir"), "{err}");
    assert!(!tmp.path().join("sites").exists());
}

#[test]
fn invalid_names_are_refused_with_the_id_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    ok(&["certs", "init", "--dir", d]);
    let err = fails(&["certs", "issue", "--dir", d, "--site", "Site_A"]);
    assert!(err.contains("invalid site name `Site_A`"), "{err}");
    assert!(err.contains("lowercase letters"), "{err}");
    let err = fails(&[
        "certs", "issue", "--dir", d, "--site", "site-a", "--node", "A1",
    ]);
    assert!(err.contains("invalid server id `A1`"), "{err}");
}
