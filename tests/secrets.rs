//! Workload secrets on a real site (docs/operations.md, "Secrets"): a secrets file others
//! may read is refused by `config check` and by the gateway's start, naming it and what to
//! do; one readable by its owner only reaches the workload's environment (read from the
//! kernel's copy) and is written down nowhere else. tests/loans.rs checks the same for a
//! borrower's secret on a lent server.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use leasehold_chaos_tests::harness::evidence::{files_containing, node_events};
use leasehold_chaos_tests::harness::onesite::{OneSite, account, gateway_args};
use leasehold_chaos_tests::harness::site::AccountSpec;
use leasehold_node::event_log::EventKind;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
const VALUE: &str = "correct horse battery staple";

#[test]
fn a_secret_reaches_its_workload_only_and_a_readable_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let shop = AccountSpec {
        secrets: Some("shop.secrets".into()),
        ..account("shop", 1, 1, 10)
    };
    let mut site = OneSite::prepare(
        Path::new(BINARY),
        dir.path(),
        "site-a",
        &["a1".to_owned()],
        vec![shop],
    )
    .unwrap();
    let secrets = dir.path().join("shop.secrets");
    std::fs::write(&secrets, format!("# shop's\nDB_PASSWORD={VALUE}\n")).unwrap();
    let mode =
        |mode| std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(mode)).unwrap();

    // Readable by others: refused before anything starts, by both, with the fix.
    mode(0o644);
    let config = site.site.config.to_string_lossy().into_owned();
    let checked = Command::new(BINARY)
        .args(["config", "check", &config])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stderr);
    assert!(!checked.status.success(), "{said}");
    assert!(
        said.contains("secrets of `shop` in")
            && said.contains("shop.secrets: has mode 644")
            && said.contains("chmod 600"),
        "{said}"
    );
    let started = Command::new(BINARY)
        .args(gateway_args(
            &site.site.config,
            &site.path("certs"),
            &site.path("state"),
        ))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&started.stderr);
    assert!(!started.status.success(), "{said}");
    assert!(said.contains("has mode 644"), "{said}");

    // Readable by its owner only: the workload gets it.
    mode(0o600);
    site.start_gateway()
        .unwrap_or_else(|error| panic!("{error}"));
    site.start_node("a1").unwrap();
    site.wait_serving("shop", 1)
        .unwrap_or_else(|error| panic!("{error}"));
    let pid = node_events(&site.work("a1"))
        .unwrap()
        .iter()
        .find_map(|event| match event.kind {
            EventKind::WorkloadStarted { pid, .. } => Some(pid),
            _ => None,
        })
        .expect("a1 started shop's workload");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let wanted = format!("DB_PASSWORD={VALUE}");
    assert!(
        environ
            .split(|byte| *byte == 0)
            .any(|pair| pair == wanted.as_bytes()),
        "shop's workload lacks its secret"
    );
    // Not in a log, the journal, the node's event log, the access log or the status page.
    let page = leasehold_chaos_tests::harness::admin::get_text(site.admin(), "/").unwrap();
    assert!(!page.contains(VALUE));
    assert_eq!(files_containing(dir.path(), VALUE), ["shop.secrets"]);
}
