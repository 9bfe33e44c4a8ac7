//! The checker on hand-written logs: a clean history passes, and each broken rule is found.

use std::time::Duration;

use super::*;

/// Builds a log from `(mono_ms, event fields)` lines; `seq` is the line's index.
fn log(lines: &[(u64, &str)]) -> Vec<Event> {
    lines
        .iter()
        .enumerate()
        .map(|(seq, (mono_ms, fields))| {
            let json = format!(
                r#"{{"seq":{seq},"wall_ms":0,"mono_ns":{},"server":"a1",{fields}}}"#,
                mono_ms * 1_000_000
            );
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"))
        })
        .collect()
}

fn check(lines: &[(u64, &str)]) -> Vec<Violation> {
    check_server_log(&log(lines), Duration::from_millis(500))
}

const ACCEPT_1: &str = r#""event":"pointer_accepted","account":"shop","epoch":1"#;
const LEASE_1: &str = r#""event":"lease_extended","epoch":1,"until_mono_ns":2000000000"#;
const START_1: &str = r#""event":"workload_starting","account":"shop","epoch":1"#;
const STOP_1: &str =
    r#""event":"workload_stopped","account":"shop","epoch":1,"pid":10,"cause":"superseded""#;
const ACCEPT_2: &str = r#""event":"pointer_accepted","account":"blog","epoch":2"#;
const LEASE_2: &str = r#""event":"lease_extended","epoch":2,"until_mono_ns":4000000000"#;
const START_2: &str = r#""event":"workload_starting","account":"blog","epoch":2"#;
const WIPED_1: &str = r#""event":"data_wiped","account":"shop","paths":["/w/data/shop"]"#;

fn epoch(value: u64) -> Epoch {
    Epoch::from_journal(value)
}

#[test]
fn a_clean_move_has_no_violation() {
    let violations = check(&[
        (0, r#""event":"agent_started","agent_pid":1"#),
        (10, ACCEPT_1),
        (20, LEASE_1),
        (30, START_1),
        (
            40,
            r#""event":"workload_started","account":"shop","epoch":1,"pid":10,"pgid":9"#,
        ),
        (900, ACCEPT_2),
        (1000, STOP_1),
        (1010, LEASE_2),
        (1015, WIPED_1),
        (1020, START_2),
    ]);
    assert_eq!(violations, vec![]);
}

#[test]
fn another_account_started_on_unwiped_files_is_found() {
    let violations = check(&[
        (10, ACCEPT_1),
        (20, LEASE_1),
        (30, START_1),
        (900, ACCEPT_2),
        (1000, STOP_1),
        (1010, LEASE_2),
        (1020, START_2),
    ]);
    assert_eq!(
        violations,
        vec![Violation::DataNotWiped {
            seq: 6,
            left: AccountId::parse("shop").unwrap(),
            starting: AccountId::parse("blog").unwrap(),
        }]
    );
    // The same account again needs no wipe.
    let again = check(&[
        (10, ACCEPT_1),
        (20, LEASE_1),
        (30, START_1),
        (40, STOP_1),
        (50, START_1),
    ]);
    assert!(
        !again
            .iter()
            .any(|v| matches!(v, Violation::DataNotWiped { .. })),
        "{again:?}"
    );
}

#[test]
fn a_start_before_the_old_workload_stopped_is_two_workloads() {
    let violations = check(&[
        (10, ACCEPT_1),
        (20, LEASE_1),
        (30, START_1),
        (900, ACCEPT_2),
        (1010, LEASE_2),
        (1015, WIPED_1),
        (1020, START_2),
        (1030, STOP_1),
    ]);
    assert_eq!(
        violations,
        vec![Violation::TwoWorkloads {
            seq: 6,
            starting: (AccountId::parse("blog").unwrap(), epoch(2)),
            running: (AccountId::parse("shop").unwrap(), epoch(1)),
        }]
    );
}

#[test]
fn an_epoch_accepted_twice_is_not_greater() {
    let violations = check(&[(10, ACCEPT_2), (20, ACCEPT_1)]);
    assert_eq!(
        violations,
        vec![Violation::EpochNotGreater {
            seq: 1,
            epoch: epoch(1),
            previous: epoch(2),
        }]
    );
    let violations = check(&[(10, ACCEPT_1), (20, ACCEPT_1)]);
    assert!(matches!(
        violations[..],
        [Violation::EpochNotGreater { seq: 1, .. }]
    ));
}

#[test]
fn a_workload_stopped_after_its_lease_and_slack_ran_past_it() {
    // Lease until 2000 ms, slack 500 ms: stopping at 2400 ms is fine, at 2600 ms is not.
    assert_eq!(
        check(&[(10, ACCEPT_1), (20, LEASE_1), (30, START_1), (2400, STOP_1)]),
        vec![]
    );
    let violations = check(&[(10, ACCEPT_1), (20, LEASE_1), (30, START_1), (2600, STOP_1)]);
    assert_eq!(
        violations,
        vec![Violation::RanPastLease {
            seq: 3,
            epoch: epoch(1),
            until_mono_ns: 2_000_000_000,
            stopped_mono_ns: 2_600_000_000,
        }]
    );
}

#[test]
fn a_later_extension_moves_the_lease_end() {
    let extended = r#""event":"lease_extended","epoch":1,"until_mono_ns":5000000000"#;
    assert_eq!(
        check(&[
            (10, ACCEPT_1),
            (20, LEASE_1),
            (30, START_1),
            (1500, extended),
            (4000, STOP_1)
        ]),
        vec![]
    );
}

#[test]
fn a_start_without_a_lease_or_under_an_old_epoch_is_found() {
    let violations = check(&[(10, ACCEPT_1), (30, START_1)]);
    assert_eq!(
        violations,
        vec![Violation::StartedWithoutLease {
            seq: 1,
            epoch: epoch(1)
        }]
    );
    let violations = check(&[(10, ACCEPT_1), (20, LEASE_1), (25, ACCEPT_2), (30, START_1)]);
    assert_eq!(
        violations,
        vec![Violation::StaleWorkload {
            seq: 3,
            epoch: epoch(1),
            newest: epoch(2)
        }]
    );
}

#[test]
fn an_orphan_found_dead_is_not_judged_but_one_found_alive_is() {
    let dead = r#""event":"workload_stopped","account":"shop","epoch":1,"pid":10,"cause":"orphan_reaped","reaped_alive":false"#;
    let alive = r#""event":"workload_stopped","account":"shop","epoch":1,"pid":10,"cause":"orphan_reaped","reaped_alive":true"#;
    assert_eq!(
        check(&[(10, ACCEPT_1), (20, LEASE_1), (30, START_1), (9000, dead)]),
        vec![]
    );
    assert!(matches!(
        check(&[(10, ACCEPT_1), (20, LEASE_1), (30, START_1), (9000, alive)])[..],
        [Violation::RanPastLease { seq: 3, .. }]
    ));
}
