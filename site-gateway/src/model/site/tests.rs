//! The site core on a virtual clock: leases, epochs, failures, moves and recovery, checked
//! from the effects it asks for (what the journal and the nodes would see).

use std::collections::HashMap;
use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch, ServerId};
use leasehold_federation::wire::common::{Health, Refusal, RefusalCause};
use leasehold_federation::wire::node::{
    LeaseRenewal, PointerApplication, RunningWorkload, StopCause, StopOutcome,
};
use proptest::prelude::*;

use super::{Phase, Recovered, SiteModel};
use crate::config::{Lending, SiteConfig, Timings};
use crate::model::Millis;
use crate::model::effects::{AuditKind, Command, Effect, JournalOp};

fn server_id(n: usize) -> ServerId {
    ServerId::parse(&format!("a{n}")).unwrap()
}

fn account_id(name: &str) -> AccountId {
    AccountId::parse(name).unwrap()
}

/// A site with `servers` servers and accounts (name, min, max, priority).
fn config(servers: usize, accounts: &[(&str, u32, u32, u32)]) -> SiteConfig {
    site_config("site-a", 'a', servers, accounts, Lending::default())
}

pub(super) use crate::model::fixtures::site_config;

/// A site with every server registered and heartbeating at `now`.
pub(super) fn running_site(servers: usize, accounts: &[(&str, u32, u32, u32)]) -> SiteModel {
    let (mut model, effects) =
        SiteModel::new(&config(servers, accounts), &Recovered::default(), Millis(0));
    assert!(effects.is_empty());
    for n in 1..=servers {
        model
            .register(&server_id(n), None, Epoch::NONE, Millis(0))
            .unwrap();
    }
    model
}

pub(super) fn heartbeat_all(model: &mut SiteModel, now: Millis) {
    let ids: Vec<ServerId> = model.servers().iter().map(|s| s.id.clone()).collect();
    for id in ids {
        model.heartbeat(&id, Health::Healthy, Some(1.0), now);
    }
}

pub(super) fn applies(effects: &[Effect]) -> Vec<(ServerId, AccountId, Epoch)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send(Command::Apply { server, pointer }) => {
                Some((server.clone(), pointer.account.clone(), pointer.epoch))
            }
            _ => None,
        })
        .collect()
}

pub(super) fn stops(effects: &[Effect]) -> Vec<(ServerId, Epoch)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send(Command::Stop { server, epoch, .. }) => Some((server.clone(), *epoch)),
            _ => None,
        })
        .collect()
}

/// D-1: every command's lease is journaled earlier in the same batch.
fn assert_journal_before_send(effects: &[Effect]) {
    for (position, effect) in effects.iter().enumerate() {
        if let Effect::Send(Command::Apply { server, pointer }) = effect {
            let journaled = effects[..position].iter().any(|earlier| {
                matches!(earlier, Effect::Journal(JournalOp::LeaseGranted { server: s, epoch, .. })
                    if s == server && *epoch == pointer.epoch)
            });
            assert!(
                journaled,
                "Apply {server} {} before its journal entry",
                pointer.epoch
            );
        }
    }
}

#[test]
fn free_servers_fill_minimums_and_each_lease_is_journaled_before_its_pointer() {
    let mut model = running_site(3, &[("shop", 2, 3, 10), ("blog", 1, 1, 5)]);
    let effects = model.tick(Millis(100));
    assert_journal_before_send(&effects);
    let mut assigned: Vec<(String, String)> = applies(&effects)
        .into_iter()
        .map(|(server, account, epoch)| {
            assert_eq!(epoch, Epoch::NONE.next());
            (server.to_string(), account.to_string())
        })
        .collect();
    assigned.sort();
    let shop = assigned.iter().filter(|(_, a)| a == "shop").count();
    let blog = assigned.iter().filter(|(_, a)| a == "blog").count();
    assert_eq!((shop, blog), (2, 1), "{assigned:?}");
}

#[test]
fn only_the_current_lease_renews() {
    let mut model = running_site(1, &[("shop", 1, 1, 10)]);
    let effects = model.tick(Millis(100));
    let (server, _, epoch) = applies(&effects)[0].clone();
    assert_eq!(
        model.renew(&server, epoch, Millis(200)),
        LeaseRenewal::Renewed {
            epoch,
            ttl_ms: 2000
        }
    );
    match model.renew(&server, Epoch::NONE, Millis(200)) {
        LeaseRenewal::Refused(Refusal {
            cause: RefusalCause::StaleEpoch { seen },
            ..
        }) => assert_eq!(seen, epoch),
        other => panic!("expected a stale-epoch refusal, got {other:?}"),
    }
    assert!(matches!(
        model.renew(&server, epoch.next(), Millis(200)),
        LeaseRenewal::Refused(Refusal {
            cause: RefusalCause::UnknownLease,
            ..
        })
    ));
}

#[test]
fn an_unrenewed_lease_expires_and_its_server_gets_a_newer_epoch() {
    let mut model = running_site(1, &[("shop", 1, 1, 10)]);
    let first = applies(&model.tick(Millis(100)))[0].clone();
    // Heartbeats keep coming but nobody renews: the lease runs out after its TTL.
    let mut now = Millis(100);
    let mut regranted = None;
    while now < Millis(5000) && regranted.is_none() {
        now = Millis(now.0 + 100);
        heartbeat_all(&mut model, now);
        let effects = model.tick(now);
        if effects
            .iter()
            .any(|e| matches!(e, Effect::Journal(JournalOp::LeaseEnded { .. })))
        {
            assert!(
                now >= Millis(100) + Duration::from_millis(2000),
                "ended early at {now:?}"
            );
        }
        regranted = applies(&effects).into_iter().next();
    }
    let second = regranted.expect("the server is leased again after expiry");
    assert_eq!(second.0, first.0);
    assert!(
        second.2 > first.2,
        "epoch reused: {:?} after {:?}",
        second.2,
        first.2
    );
}

#[test]
fn a_silent_server_fails_its_lease_is_revoked_and_another_server_replaces_it() {
    let mut model = running_site(2, &[("shop", 1, 1, 10)]);
    let (failing, _, epoch) = applies(&model.tick(Millis(100)))[0].clone();
    let other = if failing == server_id(1) {
        server_id(2)
    } else {
        server_id(1)
    };
    model.renew(&failing, epoch, Millis(150));
    // Only the other server keeps heartbeating.
    let mut replacement = None;
    for step in 2..=20u64 {
        let now = Millis(step * 100);
        model.heartbeat(&other, Health::Idle, None, now);
        model.renew(&failing, epoch, now);
        let effects = model.tick(now);
        if let Some(apply) = applies(&effects).into_iter().next() {
            replacement = Some((now, apply));
            break;
        }
    }
    let (when, (server, account, _)) = replacement.expect("a replacement");
    assert_eq!((server, account), (other, account_id("shop")));
    // 4 missed heartbeats of 250 ms: failed after 1 s of silence, replaced in that round.
    assert!(when <= Millis(1200), "replaced only at {when:?}");
    assert!(matches!(
        model.server(&failing).unwrap().phase,
        Phase::Failed { .. }
    ));
    assert!(matches!(
        model.renew(&failing, epoch, when),
        LeaseRenewal::Refused(Refusal {
            cause: RefusalCause::UnknownLease,
            ..
        })
    ));
}

#[test]
fn a_higher_priority_demand_never_takes_an_account_below_its_minimum() {
    let mut model = running_site(2, &[("shop", 1, 2, 10), ("blog", 1, 2, 5)]);
    let effects = model.tick(Millis(100));
    assert_eq!(applies(&effects).len(), 2);
    for (server, _, epoch) in applies(&effects) {
        model.workload_joined(&server, epoch, Millis(150));
    }
    // shop (priority 10) wants two; blog (priority 5) is at its minimum of one: shop's
    // demand becomes a reported shortfall, not a preemption.
    model.set_demand(0, 2);
    let now = Millis(100) + Timings::default().move_cooldown + Duration::from_millis(100);
    heartbeat_all(&mut model, now);
    for server in [server_id(1), server_id(2)] {
        let epoch = Epoch::NONE.next();
        model.renew(&server, epoch, now);
    }
    let effects = model.tick(now);
    assert!(
        stops(&effects).is_empty(),
        "blog is at its minimum: {effects:?}"
    );
    assert_eq!(model.accounts()[0].shortfall, Some((2, 1)));
}

#[test]
fn a_move_drains_stops_ends_the_lease_then_grants_a_newer_epoch() {
    let mut model = running_site(2, &[("shop", 1, 2, 10), ("blog", 0, 2, 5)]);
    model.set_demand(1, 2);
    let effects = model.tick(Millis(100));
    let granted = applies(&effects);
    assert_eq!(
        granted.len(),
        2,
        "shop gets its minimum, blog its demand: {granted:?}"
    );
    for (server, _, epoch) in &granted {
        model.workload_joined(server, *epoch, Millis(150));
    }
    let blog_server = granted
        .iter()
        .find(|(_, account, _)| account == &account_id("blog"))
        .cloned()
        .unwrap();
    model.set_demand(1, 0);
    model.set_demand(0, 2);
    let now = Millis(100) + Timings::default().move_cooldown + Duration::from_millis(100);
    heartbeat_all(&mut model, now);
    for (server, _, epoch) in &granted {
        model.renew(server, *epoch, now);
    }
    let effects = model.tick(now);
    assert_eq!(
        stops(&effects),
        vec![(blog_server.0.clone(), blog_server.2)]
    );
    assert!(
        applies(&effects).is_empty(),
        "no new lease before the old one ends"
    );
    assert!(matches!(
        model.server(&blog_server.0).unwrap().phase,
        Phase::Draining { .. }
    ));

    let effects = model.stop_answered(
        &blog_server.0,
        blog_server.2,
        Ok(StopOutcome::Stopped {
            epoch: blog_server.2,
        }),
        now,
    );
    assert_journal_before_send(&effects);
    let ended = effects.iter().position(|e| {
        matches!(e, Effect::Journal(JournalOp::LeaseEnded { server, epoch }) if *server == blog_server.0 && *epoch == blog_server.2)
    });
    let granted_again = effects.iter().position(|e| {
        matches!(e, Effect::Journal(JournalOp::LeaseGranted { server, account, .. }) if *server == blog_server.0 && *account == account_id("shop"))
    });
    assert!(
        ended.is_some() && granted_again.is_some() && ended < granted_again,
        "{effects:?}"
    );
    let (_, account, epoch) = applies(&effects)[0].clone();
    assert_eq!(account, account_id("shop"));
    assert_eq!(epoch, blog_server.2.next());
    let joined = effects.iter().any(|e| {
        matches!(e, Effect::Audit(entry) if entry.kind == crate::model::effects::AuditKind::Join
            && entry.from == Some(account_id("blog"))
            && entry.account == Some(account_id("shop")))
    });
    assert!(
        joined,
        "the join is audited with the account it left: {effects:?}"
    );
}

#[test]
fn an_unanswered_stop_revokes_the_lease_and_waits_for_it_to_expire() {
    let mut model = running_site(1, &[("shop", 0, 1, 10)]);
    model.set_demand(0, 1);
    let (server, _, epoch) = applies(&model.tick(Millis(100)))[0].clone();
    model.workload_joined(&server, epoch, Millis(150));
    model.set_demand(0, 0);
    let now = Millis(100) + Timings::default().move_cooldown + Duration::from_millis(100);
    heartbeat_all(&mut model, now);
    model.renew(&server, epoch, now);
    assert_eq!(stops(&model.tick(now)), vec![(server.clone(), epoch)]);
    let effects = model.stop_answered(&server, epoch, Err("timed out".into()), now);
    assert!(effects.is_empty(), "maybe stopped: nothing ends yet");
    assert!(matches!(
        model.renew(&server, epoch, now),
        LeaseRenewal::Refused(Refusal {
            cause: RefusalCause::UnknownLease,
            ..
        })
    ));
    let later = now + Timings::default().lease_ttl + Duration::from_millis(100);
    heartbeat_all(&mut model, later);
    let effects = model.tick(later);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Journal(JournalOp::LeaseEnded { .. })))
    );
}

/// A journal restored from a backup: the leases it recorded still renew under their old
/// epochs, and every new lease starts above the restore's floor (S-2 across a restore).
#[test]
fn after_a_restore_old_leases_renew_and_new_ones_start_above_the_floor() {
    let config = config(2, &[("shop", 1, 2, 10)]);
    let epoch = Epoch::from_journal(7);
    let floor = Epoch::from_journal(1_796_000_000_000_000);
    let recovered = Recovered {
        leases: vec![(server_id(1), account_id("shop"), epoch)],
        epochs: vec![
            (server_id(1), epoch),
            (server_id(2), Epoch::from_journal(3)),
        ],
        epoch_floor: floor,
        ..Recovered::default()
    };
    let (mut model, _) = SiteModel::new(&config, &recovered, Millis(0));
    let running = RunningWorkload {
        account: account_id("shop"),
        epoch,
    };
    model
        .register(&server_id(1), Some(&running), epoch, Millis(10))
        .unwrap();
    assert_eq!(
        model.renew(&server_id(1), epoch, Millis(20)),
        LeaseRenewal::Renewed {
            epoch,
            ttl_ms: 2000
        }
    );
    model
        .register(&server_id(2), None, Epoch::NONE, Millis(10))
        .unwrap();
    model.set_demand(0, 2);
    let granted = applies(&model.tick(Millis(100)));
    assert_eq!(
        granted,
        vec![(server_id(2), account_id("shop"), floor.next())]
    );
}

#[test]
fn recovered_leases_are_kept_when_their_nodes_still_run_them() {
    let config = config(2, &[("shop", 1, 2, 10)]);
    let epoch = Epoch::from_journal(7);
    let recovered = Recovered {
        lent: Vec::new(),
        borrowed: Vec::new(),
        leases: vec![(server_id(1), account_id("shop"), epoch)],
        epochs: vec![
            (server_id(1), epoch),
            (server_id(2), Epoch::from_journal(3)),
        ],
        ..Recovered::default()
    };
    let (mut model, effects) = SiteModel::new(&config, &recovered, Millis(0));
    assert!(effects.iter().all(|e| matches!(e, Effect::Audit(_))));
    let running = RunningWorkload {
        account: account_id("shop"),
        epoch,
    };
    let (_, effects) = model
        .register(&server_id(1), Some(&running), epoch, Millis(10))
        .unwrap();
    assert!(
        applies(&effects).is_empty(),
        "the assignment is kept as it was"
    );
    assert_eq!(
        model.renew(&server_id(1), epoch, Millis(20)),
        LeaseRenewal::Renewed {
            epoch,
            ttl_ms: 2000
        }
    );
    // Server 2's next lease continues after the journaled epoch 3.
    model
        .register(&server_id(2), None, Epoch::NONE, Millis(10))
        .unwrap();
    model.set_demand(0, 2);
    let granted = applies(&model.tick(Millis(100)));
    assert_eq!(
        granted,
        vec![(server_id(2), account_id("shop"), Epoch::from_journal(4))]
    );
}

#[test]
fn a_recovered_lease_waits_one_ttl_for_its_node_however_many_heartbeats_that_misses() {
    // Heartbeats every 250 ms, failed after 4 misses (1 s); the lease is 2 s.
    let config = config(1, &[("shop", 1, 1, 10)]);
    let epoch = Epoch::from_journal(7);
    let recovered = Recovered {
        leases: vec![(server_id(1), account_id("shop"), epoch)],
        epochs: vec![(server_id(1), epoch)],
        ..Recovered::default()
    };
    let (mut model, _) = SiteModel::new(&config, &recovered, Millis(0));
    let failed = |effects: &[Effect]| {
        effects.iter().any(|effect| {
            matches!(effect, Effect::Audit(entry) if entry.kind == AuditKind::ServerFailed)
        })
    };
    // 1.5 s without a word: more than the misses allow, less than the lease. The node of a
    // gateway that restarted, or whose standby took over elsewhere, is still on its way.
    assert!(!failed(&model.tick(Millis(1_500))), "failed before its TTL");
    let running = RunningWorkload {
        account: account_id("shop"),
        epoch,
    };
    model
        .register(&server_id(1), Some(&running), epoch, Millis(1_600))
        .unwrap();
    // Registered, it is judged by its heartbeats again.
    assert!(!failed(&model.tick(Millis(2_500))));
    assert!(
        failed(&model.tick(Millis(2_700))),
        "silent for 1.1 s once back"
    );
}

#[test]
fn a_recovered_lease_whose_node_stopped_is_restored_under_a_new_epoch() {
    let config = config(1, &[("shop", 1, 1, 10)]);
    let epoch = Epoch::from_journal(5);
    let recovered = Recovered {
        lent: Vec::new(),
        borrowed: Vec::new(),
        leases: vec![(server_id(1), account_id("shop"), epoch)],
        epochs: vec![(server_id(1), epoch)],
        ..Recovered::default()
    };
    let (mut model, _) = SiteModel::new(&config, &recovered, Millis(0));
    let (_, effects) = model
        .register(&server_id(1), None, epoch, Millis(10))
        .unwrap();
    assert_journal_before_send(&effects);
    assert_eq!(
        applies(&effects),
        vec![(server_id(1), account_id("shop"), epoch.next())]
    );
}

#[test]
fn a_node_that_saw_a_newer_epoch_raises_ours() {
    let mut model = running_site(1, &[("shop", 1, 1, 10)]);
    let (server, _, epoch) = applies(&model.tick(Millis(100)))[0].clone();
    let seen = Epoch::from_journal(40);
    let refusal = Refusal {
        cause: RefusalCause::StaleEpoch { seen },
        detail: "node has applied e40".into(),
    };
    let effects = model.pointer_answered(
        &server,
        epoch,
        Ok(PointerApplication::Refused(refusal)),
        Millis(150),
    );
    assert!(effects.contains(&Effect::Journal(JournalOp::EpochSeen {
        server: server.clone(),
        epoch: seen
    })));
    heartbeat_all(&mut model, Millis(200));
    let granted = applies(&model.tick(Millis(200)));
    assert_eq!(granted, vec![(server, account_id("shop"), seen.next())]);
}

#[test]
fn a_failed_workload_is_tried_on_another_server() {
    let mut model = running_site(2, &[("shop", 1, 1, 10)]);
    let (first, _, epoch) = applies(&model.tick(Millis(100)))[0].clone();
    model.workload_failed(&first, epoch, "exited with 1", Millis(150));
    heartbeat_all(&mut model, Millis(200));
    let (second, _, _) = applies(&model.tick(Millis(200)))[0].clone();
    assert_ne!(first, second);
}

#[test]
fn a_stopped_workload_of_an_old_epoch_changes_nothing() {
    let mut model = running_site(1, &[("shop", 1, 1, 10)]);
    let (server, _, epoch) = applies(&model.tick(Millis(100)))[0].clone();
    let effects =
        model.workload_stopped(&server, Epoch::NONE, &StopCause::LeaseExpired, Millis(150));
    assert!(effects.is_empty());
    assert!(
        model
            .server(&server)
            .unwrap()
            .lease
            .as_ref()
            .is_some_and(|l| l.epoch == epoch)
    );
}

#[derive(Debug, Clone)]
enum Step {
    Tick,
    Heartbeat(usize),
    Renew(usize),
    Join(usize),
    Stopped(usize),
    StopLost(usize),
    Failed(usize),
    Reconnect(usize, bool),
    Demand(u32, u32),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Tick),
        4 => (0..4usize).prop_map(Step::Heartbeat),
        3 => (0..4usize).prop_map(Step::Renew),
        2 => (0..4usize).prop_map(Step::Join),
        1 => (0..4usize).prop_map(Step::Stopped),
        1 => (0..4usize).prop_map(Step::StopLost),
        1 => (0..4usize).prop_map(Step::Failed),
        1 => (0..4usize, any::<bool>()).prop_map(|(s, keep)| Step::Reconnect(s, keep)),
        2 => (0..2u32, 0..5u32).prop_map(|(a, d)| Step::Demand(a, d)),
        3 => (50..3000u64).prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever nodes do and however time passes: a server never gets a second lease while
    /// it holds one (S-3), every server's epochs only grow (S-2), and every pointer is
    /// journaled before it is sent (D-1).
    #[test]
    fn leases_never_overlap_and_epochs_only_grow(steps in proptest::collection::vec(step(), 1..120)) {
        let mut model = running_site(4, &[("shop", 1, 3, 10), ("blog", 1, 2, 5)]);
        let mut now = Millis(0);
        let mut held: HashMap<ServerId, Epoch> = HashMap::new();
        let mut highest: HashMap<ServerId, Epoch> = HashMap::new();
        for step in steps {
            let id = |n: usize| server_id(n + 1);
            let current = |model: &SiteModel, n: usize| model.server(&id(n)).and_then(|s| s.lease.as_ref().map(|l| l.epoch));
            let effects = match step {
                Step::Tick => model.tick(now),
                Step::Heartbeat(n) => { model.heartbeat(&id(n), Health::Healthy, Some(5.0), now); Vec::new() }
                Step::Renew(n) => { if let Some(e) = current(&model, n) { model.renew(&id(n), e, now); } Vec::new() }
                Step::Join(n) => match current(&model, n) { Some(e) => model.workload_joined(&id(n), e, now), None => Vec::new() },
                Step::Stopped(n) => match current(&model, n) { Some(e) => model.stop_answered(&id(n), e, Ok(StopOutcome::Stopped { epoch: e }), now), None => Vec::new() },
                Step::StopLost(n) => match current(&model, n) { Some(e) => model.stop_answered(&id(n), e, Err("lost".into()), now), None => Vec::new() },
                Step::Failed(n) => match current(&model, n) { Some(e) => model.workload_failed(&id(n), e, "crash", now), None => Vec::new() },
                Step::Reconnect(n, keep) => {
                    model.disconnected(&id(n));
                    let running = model.server(&id(n)).and_then(|s| s.lease.as_ref().map(|l| (l.account, l.epoch)));
                    let running = running.filter(|_| keep).map(|(a, e)| RunningWorkload { account: model.accounts()[a as usize].config.name.clone(), epoch: e });
                    let seen = highest.get(&id(n)).copied().unwrap_or(Epoch::NONE);
                    model.register(&id(n), running.as_ref(), seen, now).map(|(_, e)| e).unwrap_or_default()
                }
                Step::Demand(a, d) => { model.set_demand(a, d); Vec::new() }
                Step::Wait(ms) => { now = Millis(now.0 + ms); Vec::new() }
            };
            assert_journal_before_send(&effects);
            for effect in &effects {
                match effect {
                    Effect::Journal(JournalOp::LeaseGranted { server, epoch, .. }) => {
                        prop_assert!(!held.contains_key(server), "{server} leased twice");
                        if let Some(previous) = highest.get(server) {
                            prop_assert!(epoch > previous, "{server}: {epoch} after {previous}");
                        }
                        highest.insert(server.clone(), *epoch);
                        held.insert(server.clone(), *epoch);
                    }
                    Effect::Journal(JournalOp::LeaseEnded { server, epoch }) => {
                        prop_assert_eq!(held.remove(server), Some(*epoch));
                    }
                    Effect::Journal(JournalOp::EpochSeen { server, epoch }) => {
                        let entry = highest.entry(server.clone()).or_insert(*epoch);
                        *entry = (*entry).max(*epoch);
                    }
                    _ => {}
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// A round whose start already passed over the servers (`begin_tick`, as the site core
    /// runs it) counts the same loads and asks for the same effects, in the same order, as
    /// one that counts the loads and then ticks.
    #[test]
    fn a_round_begun_by_one_pass_decides_as_a_round_counted_apart(steps in proptest::collection::vec(step(), 1..120)) {
        let accounts = [("shop", 1, 3, 10), ("blog", 1, 2, 5)];
        let (mut apart, mut begun) = (running_site(4, &accounts), running_site(4, &accounts));
        let mut now = Millis(0);
        for step in steps {
            let id = |n: usize| server_id(n + 1);
            let current = |model: &SiteModel, n: usize| model.server(&id(n)).and_then(|s| s.lease.as_ref().map(|l| l.epoch));
            if let Step::Tick = step {
                let loads = apart.account_loads();
                let effects = apart.tick(now);
                let mut begun_effects = Vec::new();
                let begun_loads = begun.begin_tick(now, &mut begun_effects);
                begun.tick_into(now, &mut begun_effects);
                prop_assert_eq!(loads, begun_loads);
                prop_assert_eq!(effects, begun_effects);
                continue;
            }
            for model in [&mut apart, &mut begun] {
                match step {
                    Step::Heartbeat(n) => model.heartbeat(&id(n), Health::Healthy, Some(n as f64 + 0.5), now),
                    Step::Renew(n) => { if let Some(e) = current(model, n) { model.renew(&id(n), e, now); } }
                    Step::Join(n) => { if let Some(e) = current(model, n) { model.workload_joined(&id(n), e, now); } }
                    Step::Stopped(n) => { if let Some(e) = current(model, n) { model.stop_answered(&id(n), e, Ok(StopOutcome::Stopped { epoch: e }), now); } }
                    Step::Failed(n) => { if let Some(e) = current(model, n) { model.workload_failed(&id(n), e, "crash", now); } }
                    Step::Demand(a, d) => model.set_demand(a, d),
                    Step::Tick | Step::Wait(_) | Step::StopLost(_) | Step::Reconnect(..) => {}
                }
            }
            if let Step::Wait(ms) = step {
                now = Millis(now.0 + ms);
            }
        }
    }
}

/// Servers joined and renewed at `now`, so the next round sees them serving.
fn settle(model: &mut SiteModel, granted: &[(ServerId, AccountId, Epoch)], now: Millis) {
    heartbeat_all(model, now);
    for (server, _, epoch) in granted {
        model.workload_joined(server, *epoch, now);
        model.renew(server, *epoch, now);
    }
}

fn config_audits(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Audit(entry) if entry.kind == crate::model::effects::AuditKind::Config => {
                Some(entry.reason.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn an_added_account_gets_a_new_index_and_servers_in_the_next_round() {
    let mut model = running_site(3, &[("shop", 1, 1, 10)]);
    let granted = applies(&model.tick(Millis(100)));
    assert_eq!(granted.len(), 1);
    let (done, effects) = model.reconfigure(
        &config(3, &[("shop", 1, 1, 10), ("wiki", 2, 2, 5)]),
        "abcdef0123456789",
        Millis(200),
    );
    assert_eq!(done.started, vec![1]);
    let audits = config_audits(&effects);
    assert!(
        audits.iter().any(|a| a.contains("wiki added")),
        "{audits:?}"
    );
    assert!(
        audits.iter().any(|a| a.contains("abcdef0123456789")),
        "the hash is audited: {audits:?}"
    );
    assert_eq!(model.account_ix(&account_id("wiki")), Some(1));
    heartbeat_all(&mut model, Millis(300));
    let effects = model.tick(Millis(300));
    let wiki: Vec<_> = applies(&effects)
        .into_iter()
        .filter(|(_, account, _)| account == &account_id("wiki"))
        .collect();
    assert_eq!(wiki.len(), 2, "{effects:?}");
}

#[test]
fn a_removed_account_is_drained_and_freed_and_gets_no_new_lease() {
    let mut model = running_site(2, &[("shop", 1, 1, 10), ("blog", 1, 1, 5)]);
    let granted = applies(&model.tick(Millis(100)));
    assert_eq!(granted.len(), 2);
    settle(&mut model, &granted, Millis(150));
    let (blog_server, _, blog_epoch) = granted
        .iter()
        .find(|(_, account, _)| account == &account_id("blog"))
        .cloned()
        .unwrap();
    let (done, _) = model.reconfigure(&config(2, &[("shop", 1, 1, 10)]), "h", Millis(200));
    assert_eq!(done.stopped, vec![1]);
    // Past the move cooldown, the arbiter releases blog's server on the drain path.
    let now = Millis(200) + Timings::default().move_cooldown;
    settle(&mut model, &granted, now);
    let effects = model.tick(now);
    assert_eq!(stops(&effects), vec![(blog_server.clone(), blog_epoch)]);
    assert!(effects.iter().any(|e| matches!(e, Effect::Audit(entry)
        if entry.kind == crate::model::effects::AuditKind::Release)));
    let effects = model.stop_answered(
        &blog_server,
        blog_epoch,
        Ok(StopOutcome::Stopped { epoch: blog_epoch }),
        now,
    );
    assert!(applies(&effects).is_empty());
    assert_eq!(model.server(&blog_server).unwrap().phase, Phase::Free);
    for step in 1..5u64 {
        let later = now + Duration::from_millis(100 * step);
        heartbeat_all(&mut model, later);
        model.renew(&granted[0].0, granted[0].2, later);
        model.renew(&granted[1].0, granted[1].2, later);
        let effects = model.tick(later);
        assert!(
            applies(&effects)
                .iter()
                .all(|(_, account, _)| account != &account_id("blog")),
            "{effects:?}"
        );
    }
    assert!(
        model
            .snapshot(now)
            .accounts
            .iter()
            .all(|a| a.name != account_id("blog")),
        "a drained tombstone leaves the snapshot"
    );
    // A re-added name gets its old index back.
    let (done, _) = model.reconfigure(
        &config(2, &[("shop", 1, 1, 10), ("blog", 1, 1, 5)]),
        "h2",
        now,
    );
    assert_eq!(done.started, vec![1]);
    assert_eq!(model.account_ix(&account_id("blog")), Some(1));
}

#[test]
fn a_changed_sla_is_used_by_the_next_round() {
    let mut model = running_site(3, &[("shop", 1, 3, 10)]);
    let granted = applies(&model.tick(Millis(100)));
    assert_eq!(granted.len(), 1);
    settle(&mut model, &granted, Millis(150));
    let (done, effects) = model.reconfigure(&config(3, &[("shop", 3, 3, 10)]), "h", Millis(200));
    assert_eq!(done.sla_changed, vec![0]);
    assert!(
        config_audits(&effects)
            .iter()
            .any(|a| a.contains("min_servers"))
    );
    let effects = model.tick(Millis(200));
    assert_eq!(applies(&effects).len(), 2, "{effects:?}");
}

#[test]
fn changed_timings_apply_from_the_next_renewal() {
    let mut model = running_site(1, &[("shop", 1, 1, 10)]);
    let granted = applies(&model.tick(Millis(100)));
    let (server, _, epoch) = granted[0].clone();
    let mut new = config(1, &[("shop", 1, 1, 10)]);
    new.timings.lease_ttl = Duration::from_secs(7);
    let (_, effects) = model.reconfigure(&new, "h", Millis(150));
    assert!(
        config_audits(&effects)
            .iter()
            .any(|a| a.contains("timings"))
    );
    match model.renew(&server, epoch, Millis(200)) {
        LeaseRenewal::Renewed { ttl_ms, .. } => assert_eq!(ttl_ms, 7000),
        other => panic!("renewal refused: {other:?}"),
    }
}

#[test]
fn an_unchanged_config_changes_nothing_but_is_audited() {
    let mut model = running_site(1, &[("shop", 1, 1, 10)]);
    let (done, effects) = model.reconfigure(&config(1, &[("shop", 1, 1, 10)]), "h", Millis(0));
    assert_eq!(done, Default::default());
    assert_eq!(config_audits(&effects).len(), 1);
}

#[test]
fn an_ownership_about_to_run_out_gets_no_new_lease_and_releases_nothing() {
    use crate::model::ownership::Owner;
    use leasehold_federation::ids::Term;
    let mut model = running_site(3, &[("shop", 1, 3, 10)]);
    let shop = account_id("shop");
    let ttl = model.timings().lease_ttl;
    let own_until = |model: &mut SiteModel, until: Millis| {
        let term = Term::NONE.next();
        model.set_owner(&shop, Owner::Here { term, until });
    };
    let now = Millis(100);
    heartbeat_all(&mut model, now);
    // Less than half a lease TTL of ownership left: nothing granted.
    own_until(&mut model, now + ttl / 4);
    let effects = model.tick(now);
    assert!(applies(&effects).is_empty(), "{effects:#?}");
    // Renewed: the account gets its minimum at once, with the lease it asks for.
    own_until(&mut model, now + ttl * 2);
    let effects = model.tick(now);
    assert_eq!(applies(&effects).len(), 1, "{effects:#?}");
    // Running out again, with a server held and demand for more: it keeps what it has and
    // asks for no more.
    let ix = model.account_ix(&shop).unwrap();
    model.set_demand(ix, 3);
    let later = now + ttl;
    heartbeat_all(&mut model, later);
    own_until(&mut model, later + ttl / 4);
    let effects = model.tick(later);
    assert!(applies(&effects).is_empty(), "{effects:#?}");
    assert!(stops(&effects).is_empty(), "{effects:#?}");
}
