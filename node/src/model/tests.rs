//! The node model on a made-up clock: fencing, one workload at a time, leases anchored at
//! the send time, expiry, commanded stops, failures and shutdown.

use std::collections::BTreeMap;

use leasehold_federation::wire::common::{DataRef, Software};

use super::*;

const TTL: Duration = Duration::from_millis(1000);
const RENEW: Duration = Duration::from_millis(250);

fn ms(value: u64) -> MonoTime {
    MonoTime::from_nanos(value * 1_000_000)
}

fn server() -> ServerId {
    ServerId::parse("a1").unwrap()
}

fn epoch(value: u64) -> Epoch {
    Epoch::from_journal(value)
}

/// A pointer to `account` under epoch `value` (also the handover tests').
pub(crate) fn pointer(account: &str, value: u64) -> InitPointer {
    InitPointer {
        account: AccountId::parse(account).unwrap(),
        software: Software {
            label: "v1".into(),
            command: "true".into(),
            args: vec![],
            env: BTreeMap::new(),
            health_path: None,
            metrics_path: None,
            load_metric: None,
            stop_timeout_ms: 500,
        },
        data: DataRef { dir: "data".into() },
        epoch: epoch(value),
        secrets: Default::default(),
    }
}

fn model() -> NodeModel {
    NodeModel::new(server(), Epoch::NONE, RENEW)
}

fn refused_lease() -> Refusal {
    Refusal {
        cause: RefusalCause::UnknownLease,
        detail: "gone".into(),
    }
}

/// A model serving `account` at `value`, healthy, lease granted at `at` ms.
fn healthy(account: &str, value: u64, at: u64) -> NodeModel {
    let mut node = model();
    node.apply(&server(), pointer(account, value), ms(at))
        .unwrap();
    node.lease_renewed(epoch(value), ms(at), TTL, ms(at + 5));
    node.workload_started(epoch(value), 42);
    node.health_passed(epoch(value), ms(at + 50));
    assert_eq!(node.phase(), Some(&Phase::Healthy));
    node
}

fn count_starts(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::StartWorkload { .. }))
        .count()
}

#[test]
fn apply_asks_for_a_lease_and_starts_only_once_it_is_granted() {
    let mut node = model();
    let effects = node.apply(&server(), pointer("shop", 1), ms(0)).unwrap();
    assert_eq!(effects, vec![Effect::SendRenew { epoch: epoch(1) }]);
    assert_eq!(node.phase(), Some(&Phase::AwaitingLease));
    // No answer yet: ticking neither starts nor re-sends while the renewal is in flight.
    assert_eq!(node.tick(ms(50)), vec![]);
    let effects = node.lease_renewed(epoch(1), ms(0), TTL, ms(20));
    assert_eq!(
        effects,
        vec![
            Effect::RecordLease {
                epoch: epoch(1),
                until: ms(1000)
            },
            Effect::StartWorkload {
                pointer: pointer("shop", 1)
            },
        ]
    );
    assert_eq!(node.health(), Health::Starting);
    let effects = node.health_passed(epoch(1), ms(120));
    assert!(matches!(
        &effects[1],
        Effect::Report(Report::Joined(WorkloadJoined { start_ms: 120, .. }))
    ));
    assert_eq!(node.health(), Health::Healthy);
    assert_eq!(
        node.running(),
        Some(RunningWorkload {
            account: AccountId::parse("shop").unwrap(),
            epoch: epoch(1)
        })
    );
}

#[test]
fn stale_and_equal_epochs_are_refused_and_change_nothing() {
    let mut node = healthy("shop", 5, 0);
    let before = format!("{node:?}");
    for stale in [1, 5] {
        let refusal = node
            .apply(&server(), pointer("blog", stale), ms(100))
            .unwrap_err();
        assert_eq!(refusal.cause, RefusalCause::StaleEpoch { seen: epoch(5) });
        let refusal = node
            .stop_requested(&server(), epoch(stale.min(4)), Duration::ZERO)
            .unwrap_err();
        assert_eq!(refusal.cause, RefusalCause::StaleEpoch { seen: epoch(5) });
    }
    assert_eq!(format!("{node:?}"), before);
    assert_eq!(node.highest_epoch(), epoch(5));
}

#[test]
fn a_wrong_server_is_refused() {
    let mut node = model();
    let other = ServerId::parse("a2").unwrap();
    let refusal = node.apply(&other, pointer("shop", 1), ms(0)).unwrap_err();
    assert_eq!(refusal.cause, RefusalCause::WrongServer);
    let refusal = node
        .stop_requested(&other, epoch(1), Duration::ZERO)
        .unwrap_err();
    assert_eq!(refusal.cause, RefusalCause::WrongServer);
    assert_eq!(node.highest_epoch(), Epoch::NONE);
    assert_eq!(node.phase(), None);
}

#[test]
fn a_stop_for_an_epoch_never_applied_is_an_unknown_lease() {
    let mut node = healthy("shop", 1, 0);
    let refusal = node
        .stop_requested(&server(), epoch(2), Duration::ZERO)
        .unwrap_err();
    assert_eq!(refusal.cause, RefusalCause::UnknownLease);
}

#[test]
fn a_newer_pointer_stops_the_old_workload_before_anything_new_starts() {
    let mut node = healthy("shop", 1, 0);
    let effects = node.apply(&server(), pointer("blog", 2), ms(100)).unwrap();
    assert_eq!(
        effects,
        vec![Effect::StopWorkload {
            epoch: epoch(1),
            cause: StopReason::Superseded
        }]
    );
    assert_eq!(node.phase(), Some(&Phase::AwaitingPrevious));
    // Nothing starts, and no lease is asked for, while the old process exists.
    assert_eq!(node.tick(ms(150)), vec![]);
    assert_eq!(node.lease_renewed(epoch(2), ms(150), TTL, ms(160)), vec![]);
    let effects = node.workload_gone(epoch(1), StopReason::Superseded, None, ms(200));
    assert!(matches!(
        &effects[0],
        Effect::Report(Report::Stopped(WorkloadStopped {
            cause: StopCause::Commanded,
            ..
        }))
    ));
    assert_eq!(effects[1], Effect::SendRenew { epoch: epoch(2) });
    let effects = node.lease_renewed(epoch(2), ms(200), TTL, ms(210));
    assert_eq!(count_starts(&effects), 1);
}

#[test]
fn never_two_workloads_whatever_the_order_of_answers() {
    // Three pointers in quick succession, with answers for old epochs arriving late.
    let mut node = healthy("shop", 1, 0);
    let mut starts = 0;
    let mut live = 1; // processes that exist
    for effects in [
        node.apply(&server(), pointer("blog", 2), ms(100)).unwrap(),
        node.apply(&server(), pointer("wiki", 3), ms(110)).unwrap(),
        node.lease_renewed(epoch(2), ms(100), TTL, ms(120)),
        node.lease_renewed(epoch(3), ms(110), TTL, ms(120)),
        node.health_passed(epoch(2), ms(130)),
    ] {
        starts += count_starts(&effects);
    }
    assert_eq!(starts, 0, "nothing starts while epoch 1 still runs");
    let effects = node.workload_gone(epoch(1), StopReason::Superseded, None, ms(200));
    live -= 1;
    assert!(effects.contains(&Effect::SendRenew { epoch: epoch(3) }));
    let effects = node.lease_renewed(epoch(3), ms(200), TTL, ms(210));
    live += count_starts(&effects);
    assert_eq!(live, 1);
    assert_eq!(node.process().map(|p| p.1), Some(epoch(3)));
}

#[test]
fn a_lease_runs_from_the_send_time_and_expiry_stops_the_workload() {
    let mut node = healthy("shop", 1, 0);
    assert_eq!(node.lease_until(), Some(ms(1000)));
    // The renewal is due at 250 ms; its answer is slow but the lease counts from 250.
    assert_eq!(
        node.tick(ms(260)),
        vec![Effect::SendRenew { epoch: epoch(1) }]
    );
    let effects = node.lease_renewed(epoch(1), ms(260), TTL, ms(700));
    assert_eq!(
        effects,
        vec![Effect::RecordLease {
            epoch: epoch(1),
            until: ms(1260)
        }]
    );
    // Now the gateway goes silent: renewals go unanswered.
    assert_eq!(
        node.tick(ms(520)),
        vec![Effect::SendRenew { epoch: epoch(1) }]
    );
    node.renew_unanswered(epoch(1), ms(900));
    assert_eq!(node.tick(ms(950)), vec![]);
    assert_eq!(
        node.tick(ms(1000)),
        vec![Effect::SendRenew { epoch: epoch(1) }]
    );
    // The workload starts stopping LEASE_END_MARGIN (250 ms) before the lease ends, so
    // that it is gone by the end.
    node.renew_unanswered(epoch(1), ms(1000));
    assert_eq!(node.tick(ms(1009)), vec![]);
    let effects = node.tick(ms(1010));
    assert_eq!(
        effects,
        vec![Effect::StopWorkload {
            epoch: epoch(1),
            cause: StopReason::LeaseExpired
        }]
    );
    // A late grant after expiry revives nothing.
    assert_eq!(
        node.lease_renewed(epoch(1), ms(1259), TTL, ms(1300)),
        vec![]
    );
    assert_eq!(node.tick(ms(1400)), vec![]);
    let effects = node.workload_gone(epoch(1), StopReason::LeaseExpired, None, ms(1500));
    assert!(matches!(
        &effects[..],
        [Effect::Report(Report::Stopped(WorkloadStopped {
            cause: StopCause::LeaseExpired,
            ..
        }))]
    ));
    assert_eq!(node.health(), Health::Idle);
    assert_eq!(node.running(), None);
}

#[test]
fn a_first_lease_already_over_when_it_arrives_starts_nothing() {
    let mut node = model();
    node.apply(&server(), pointer("shop", 1), ms(0)).unwrap();
    assert_eq!(node.lease_renewed(epoch(1), ms(0), TTL, ms(1000)), vec![]);
    assert_eq!(
        node.tick(ms(1001)),
        vec![Effect::SendRenew { epoch: epoch(1) }]
    );
}

/// A first lease shorter than the stop margin would be stopped by the next tick; the
/// node does not start on it, and starts on the next lease that is long enough.
#[test]
fn a_first_lease_ending_within_the_stop_margin_starts_nothing() {
    let mut node = model();
    node.apply(&server(), pointer("shop", 1), ms(0)).unwrap();
    let short = Duration::from_millis(200);
    let effects = node.lease_renewed(epoch(1), ms(0), short, ms(10));
    assert_eq!(count_starts(&effects), 0, "{effects:?}");
    assert_eq!(node.phase(), Some(&Phase::AwaitingLease));
    assert!(
        node.tick(ms(260))
            .contains(&Effect::SendRenew { epoch: epoch(1) })
    );
    let effects = node.lease_renewed(epoch(1), ms(260), TTL, ms(270));
    assert_eq!(count_starts(&effects), 1, "{effects:?}");
}

#[test]
fn a_refused_renewal_stops_at_once_and_a_refused_first_lease_fails() {
    let mut node = healthy("shop", 1, 0);
    let effects = node.lease_refused(epoch(1), &refused_lease());
    assert_eq!(
        effects,
        vec![Effect::StopWorkload {
            epoch: epoch(1),
            cause: StopReason::LeaseRefused
        }]
    );
    let mut node = model();
    node.apply(&server(), pointer("shop", 1), ms(0)).unwrap();
    let effects = node.lease_refused(epoch(1), &refused_lease());
    assert!(matches!(&effects[1], Effect::Report(Report::Failed(_))));
    assert_eq!(count_starts(&node.tick(ms(500))), 0);
}

#[test]
fn a_commanded_stop_drains_then_stops_then_answers() {
    let mut node = healthy("shop", 1, 0);
    let effects = node
        .stop_requested(&server(), epoch(1), Duration::from_millis(30))
        .unwrap();
    assert_eq!(
        effects,
        vec![Effect::StartDrain {
            epoch: epoch(1),
            drain: Duration::from_millis(30)
        }]
    );
    // The lease is still renewed while draining: the workload still runs.
    assert_eq!(
        node.tick(ms(300)),
        vec![Effect::SendRenew { epoch: epoch(1) }]
    );
    assert_eq!(
        node.drain_ended(epoch(1)),
        vec![Effect::StopWorkload {
            epoch: epoch(1),
            cause: StopReason::Commanded
        }]
    );
    let effects = node.workload_gone(epoch(1), StopReason::Commanded, None, ms(400));
    assert_eq!(effects[1], Effect::ReplyStopped { epoch: epoch(1) });
    // Asking again answers at once: nothing of epoch 1 runs.
    assert_eq!(
        node.stop_requested(&server(), epoch(1), Duration::ZERO)
            .unwrap(),
        vec![Effect::ReplyStopped { epoch: epoch(1) }]
    );
}

#[test]
fn failing_health_or_exiting_early_reports_failed_after_the_process_is_gone() {
    let mut node = model();
    node.apply(&server(), pointer("shop", 1), ms(0)).unwrap();
    node.lease_renewed(epoch(1), ms(0), TTL, ms(5));
    let effects = node.health_failed(epoch(1), "no 2xx within 10 s".into());
    assert!(matches!(&effects[0], Effect::RecordFailed { .. }));
    assert_eq!(
        effects[1],
        Effect::StopWorkload {
            epoch: epoch(1),
            cause: StopReason::FailedHealth
        }
    );
    let effects = node.workload_gone(epoch(1), StopReason::FailedHealth, None, ms(50));
    assert!(
        matches!(&effects[..], [Effect::Report(Report::Failed(f))] if f.reason.contains("no 2xx"))
    );

    let mut node = model();
    node.apply(&server(), pointer("shop", 1), ms(0)).unwrap();
    node.lease_renewed(epoch(1), ms(0), TTL, ms(5));
    let effects = node.workload_gone(epoch(1), StopReason::Exited, Some(3), ms(50));
    assert!(matches!(&effects[0], Effect::RecordFailed { .. }));
    assert!(matches!(&effects[1], Effect::Report(Report::Failed(_))));
    assert!(matches!(node.phase(), Some(Phase::Failed(_))));
    // A health pass arriving after the exit changes nothing.
    assert_eq!(node.health_passed(epoch(1), ms(60)), vec![]);
}

#[test]
fn a_healthy_workload_that_exits_is_reported_stopped_with_its_code() {
    let mut node = healthy("shop", 1, 0);
    let effects = node.workload_gone(epoch(1), StopReason::Exited, Some(0), ms(500));
    assert!(matches!(
        &effects[..],
        [Effect::Report(Report::Stopped(WorkloadStopped {
            cause: StopCause::Exited { code: Some(0) },
            ..
        }))]
    ));
    // Nothing restarts it, and no lease is asked for.
    assert_eq!(node.tick(ms(600)), vec![]);
}

#[test]
fn a_spawn_failure_fails_the_epoch_and_frees_the_slot() {
    let mut node = model();
    node.apply(&server(), pointer("shop", 1), ms(0)).unwrap();
    node.lease_renewed(epoch(1), ms(0), TTL, ms(5));
    let effects = node.start_failed(epoch(1), "no such file".into(), ms(10));
    assert!(matches!(&effects[1], Effect::Report(Report::Failed(_))));
    assert_eq!(node.process(), None);
    let effects = node.apply(&server(), pointer("shop", 2), ms(20)).unwrap();
    assert_eq!(effects, vec![Effect::SendRenew { epoch: epoch(2) }]);
}

#[test]
fn shutdown_stops_the_workload_then_completes() {
    let mut node = healthy("shop", 1, 0);
    assert_eq!(
        node.shutdown(),
        vec![Effect::StopWorkload {
            epoch: epoch(1),
            cause: StopReason::AgentShutdown
        }]
    );
    let effects = node.workload_gone(epoch(1), StopReason::AgentShutdown, None, ms(100));
    assert_eq!(effects.last(), Some(&Effect::ShutdownComplete));
    assert_eq!(model().shutdown(), vec![Effect::ShutdownComplete]);
}

#[test]
fn epochs_only_grow_across_any_sequence_of_pointers() {
    let mut node = model();
    let mut highest = 0;
    for (step, value) in [3u64, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5].into_iter().enumerate() {
        let outcome = node.apply(&server(), pointer("shop", value), ms(step as u64));
        assert_eq!(
            outcome.is_ok(),
            value > highest,
            "epoch {value} after {highest}"
        );
        highest = highest.max(value);
        assert_eq!(node.highest_epoch(), epoch(highest));
    }
}

#[test]
fn only_a_healthy_workload_under_a_lease_is_handed_over_and_an_idle_node_has_nothing_to_hand() {
    let mut node = model();
    assert_eq!(node.handover(), Ok(None));
    node.apply(&server(), pointer("shop", 1), ms(0)).unwrap();
    assert!(node.handover().is_err(), "awaiting its lease");
    node.lease_renewed(epoch(1), ms(0), TTL, ms(5));
    node.workload_started(epoch(1), 42);
    let starting = node.handover().unwrap_err();
    assert!(starting.contains("Starting"), "{starting}");
    node.health_passed(epoch(1), ms(50));
    assert_eq!(
        node.handover(),
        Ok(Some((pointer("shop", 1), 42, ms(1000))))
    );
    node.stop_requested(&server(), epoch(1), Duration::from_millis(100))
        .unwrap();
    assert!(node.handover().is_err(), "draining");
}

#[test]
fn an_adopted_workload_runs_under_its_lease_renews_at_once_and_stops_at_its_end() {
    let mut node = model();
    let effects = node.adopt(pointer("shop", 3), 42, ms(1000), ms(100));
    assert_eq!(effects, vec![Effect::SendRenew { epoch: epoch(3) }]);
    assert_eq!(node.phase(), Some(&Phase::Healthy));
    assert_eq!(node.highest_epoch(), epoch(3));
    assert_eq!(
        node.process(),
        Some((AccountId::parse("shop").unwrap(), epoch(3), Some(42)))
    );
    assert_eq!(node.lease_until(), Some(ms(1000)));
    // Adopted once: a second adoption, or one beside a workload, changes nothing.
    assert_eq!(
        node.adopt(pointer("blog", 4), 43, ms(5000), ms(110)),
        vec![]
    );
    assert_eq!(node.current_epoch(), Some(epoch(3)));
    // Unrenewed, it is stopped within the margin of the lease it came with (S-1).
    assert!(
        !node
            .tick(ms(700))
            .iter()
            .any(|e| matches!(e, Effect::StopWorkload { .. })),
        "stopped early"
    );
    let effects = node.tick(ms(800));
    assert!(
        effects.contains(&Effect::StopWorkload {
            epoch: epoch(3),
            cause: StopReason::LeaseExpired
        }),
        "{effects:?}"
    );

    // A lease that ended during the replacement: stopped at once.
    let mut late = model();
    let effects = late.adopt(pointer("shop", 3), 42, ms(1000), ms(900));
    assert!(
        effects.contains(&Effect::StopWorkload {
            epoch: epoch(3),
            cause: StopReason::LeaseExpired
        }),
        "{effects:?}"
    );
}
