//! Maintenance on the site core: a server leaves its account only once the account has its
//! minimum without it, stays out of use, comes back when undrained, and all of it is
//! journaled and survives a restart.

use leasehold_federation::ids::ServerId;
use leasehold_federation::wire::node::StopOutcome;

use super::tests::{applies, heartbeat_all, running_site, stops};
use super::{MaintenanceRefusal, Recovered, SiteModel};
use crate::journal_state::JournalState;
use crate::model::Millis;
use crate::model::effects::{AuditKind, Effect, JournalOp, MaintenanceRecord};

fn record(force: bool) -> MaintenanceRecord {
    MaintenanceRecord {
        by: "alice".to_owned(),
        reason: "replace a disk".to_owned(),
        since_wall_ms: 1_795_000_000_000,
        force,
    }
}

fn state(model: &SiteModel, server: &ServerId) -> &'static str {
    model
        .snapshot(Millis(0))
        .servers
        .iter()
        .find(|entry| &entry.id == server)
        .map(|entry| entry.state)
        .unwrap_or("absent")
}

fn audited(effects: &[Effect], kind: AuditKind) -> usize {
    effects
        .iter()
        .filter(|effect| matches!(effect, Effect::Audit(entry) if entry.kind == kind))
        .count()
}

#[test]
fn a_server_at_its_accounts_minimum_drains_only_once_a_replacement_serves() {
    let mut model = running_site(2, &[("shop", 1, 2, 10)]);
    model.set_demand(0, 1);
    let granted = applies(&model.tick(Millis(100)));
    let (serving, _, epoch) = granted[0].clone();
    model.workload_joined(&serving, epoch, Millis(150));
    let spare = model
        .servers()
        .iter()
        .map(|entry| entry.id.clone())
        .find(|id| id != &serving)
        .unwrap();

    let effects = model
        .set_maintenance(&serving, Some(record(false)), Millis(200))
        .unwrap();
    // Journaled before anything else, audited, and no stop yet: shop is at its minimum.
    assert!(
        matches!(&effects[0], Effect::Journal(JournalOp::Maintenance { server, record: Some(_) }) if server == &serving)
    );
    assert_eq!(audited(&effects, AuditKind::Maintenance), 1);
    assert!(stops(&effects).is_empty(), "{effects:?}");
    let waiting = model
        .snapshot(Millis(200))
        .servers
        .iter()
        .find(|s| s.id == serving)
        .unwrap()
        .maintenance
        .clone()
        .unwrap();
    assert!(
        waiting
            .waiting
            .unwrap()
            .contains("shop has 0 other serving servers, its minimum is 1")
    );

    // The round gives shop the spare server; the one in maintenance still serves.
    heartbeat_all(&mut model, Millis(300));
    model.renew(&serving, epoch, Millis(300));
    let effects = model.tick(Millis(300));
    let replacement = applies(&effects);
    assert_eq!(replacement.len(), 1, "{effects:?}");
    assert_eq!(replacement[0].0, spare);
    assert!(
        stops(&effects).is_empty(),
        "no drain before the replacement serves"
    );
    assert_eq!(state(&model, &serving), "serving");

    // Once the replacement serves, the server in maintenance drains, to no account.
    model.workload_joined(&spare, replacement[0].2, Millis(350));
    heartbeat_all(&mut model, Millis(400));
    model.renew(&serving, epoch, Millis(400));
    let effects = model.tick(Millis(400));
    assert_eq!(stops(&effects), vec![(serving.clone(), epoch)]);
    let effects = model.stop_answered(
        &serving,
        epoch,
        Ok(StopOutcome::Stopped { epoch }),
        Millis(450),
    );
    assert!(applies(&effects).is_empty(), "{effects:?}");
    assert_eq!(state(&model, &serving), "maintenance");

    // It stays out of use, even when an account wants it.
    model.set_demand(0, 2);
    heartbeat_all(&mut model, Millis(20_000));
    let effects = model.tick(Millis(20_000));
    assert!(
        applies(&effects)
            .iter()
            .all(|(server, _, _)| server != &serving),
        "{effects:?}"
    );

    // Undrained, it is free and taken again.
    let effects = model
        .set_maintenance(&serving, None, Millis(20_100))
        .unwrap();
    assert!(matches!(
        &effects[0],
        Effect::Journal(JournalOp::Maintenance { record: None, .. })
    ));
    assert_eq!(audited(&effects, AuditKind::MaintenanceOver), 1);
    heartbeat_all(&mut model, Millis(20_200));
    let effects = model.tick(Millis(20_200));
    assert_eq!(
        applies(&effects)
            .first()
            .map(|(server, _, _)| server.clone()),
        Some(serving)
    );
}

#[test]
fn forced_or_above_the_minimum_a_server_drains_at_once() {
    for (min, force) in [(0, false), (1, true)] {
        let mut model = running_site(1, &[("shop", min, 1, 10)]);
        model.set_demand(0, 1);
        let (server, _, epoch) = applies(&model.tick(Millis(100)))[0].clone();
        model.workload_joined(&server, epoch, Millis(150));
        let effects = model
            .set_maintenance(&server, Some(record(force)), Millis(200))
            .unwrap();
        assert_eq!(
            stops(&effects),
            vec![(server.clone(), epoch)],
            "min {min}, force {force}"
        );
    }
}

#[test]
fn maintenance_is_journaled_and_survives_a_restart_and_unknown_servers_are_refused() {
    let mut model = running_site(2, &[("shop", 0, 1, 10)]);
    let server = model.servers()[0].id.clone();
    let mut journal = JournalState::default();
    let effects = model
        .set_maintenance(&server, Some(record(false)), Millis(100))
        .unwrap();
    for effect in &effects {
        if let Effect::Journal(op) = effect {
            journal.apply(op);
        }
    }
    // Asking again changes nothing.
    assert!(
        model
            .set_maintenance(&server, Some(record(false)), Millis(110))
            .unwrap()
            .is_empty()
    );
    let recovered: Recovered = journal.recovered();
    assert_eq!(recovered.maintenance, vec![(server.clone(), record(false))]);
    let (restarted, _) = SiteModel::new(
        &super::tests::site_config("site-a", 'a', 2, &[("shop", 0, 1, 10)], Default::default()),
        &recovered,
        Millis(0),
    );
    assert_eq!(
        restarted.server(&server).unwrap().maintenance,
        Some(Box::new(record(false)))
    );
    let unknown = ServerId::parse("z9").unwrap();
    assert!(matches!(
        model.set_maintenance(&unknown, Some(record(false)), Millis(0)),
        Err(MaintenanceRefusal::UnknownServer { .. })
    ));
}

#[test]
fn servers_added_and_removed_by_a_live_edit() {
    use crate::model::fixtures::site_config;
    let accounts = [("shop", 1, 1, 10)];
    let mut model = running_site(1, &accounts);
    let (first, _, epoch) = applies(&model.tick(Millis(100)))[0].clone();
    model.workload_joined(&first, epoch, Millis(150));

    // Added: a second server, free once its agent registers.
    let two = site_config("site-a", 'a', 2, &accounts, Default::default());
    let added = two.servers[1].id.clone();
    let (_, effects) = model.reconfigure(&two, "0123456789abcdef", Millis(200));
    assert!(effects.iter().any(|e| matches!(e, Effect::Audit(entry) if entry.reason.contains(&format!("server {added} added")))), "{effects:?}");
    model
        .register(
            &added,
            None,
            leasehold_federation::ids::Epoch::NONE,
            Millis(210),
        )
        .unwrap();
    assert_eq!(state(&model, &added), "free");

    // Removed while it serves shop at its minimum: the new server serves first.
    let mut without_first = two.clone();
    without_first.servers.retain(|server| server.id != first);
    model.reconfigure(&without_first, "fedcba9876543210", Millis(300));
    heartbeat_all(&mut model, Millis(400));
    model.renew(&first, epoch, Millis(400));
    let effects = model.tick(Millis(400));
    let replacement = applies(&effects);
    assert_eq!(
        replacement.first().map(|(server, _, _)| server.clone()),
        Some(added.clone())
    );
    assert!(stops(&effects).is_empty(), "{effects:?}");
    model.workload_joined(&added, replacement[0].2, Millis(450));
    heartbeat_all(&mut model, Millis(500));
    model.renew(&first, epoch, Millis(500));
    assert_eq!(
        stops(&model.tick(Millis(500))),
        vec![(first.clone(), epoch)]
    );
    model.stop_answered(
        &first,
        epoch,
        Ok(StopOutcome::Stopped { epoch }),
        Millis(550),
    );
    // Gone from the inventory; its agent is told so if it comes back.
    assert_eq!(state(&model, &first), "absent");
    let refused = model
        .register(&first, None, epoch, Millis(600))
        .expect_err("a removed server");
    assert!(
        refused.detail.contains("removed from site-a's config"),
        "{refused:?}"
    );

    // Added back, it is in the inventory again.
    model.reconfigure(&two, "0123456789abcdef", Millis(700));
    model.register(&first, None, epoch, Millis(710)).unwrap();
    assert_eq!(state(&model, &first), "free");
}

/// A replacement may be borrowed: a server in maintenance drains once its account has its
/// minimum without it, servers borrowed from a peer counted.
#[test]
fn a_borrowed_replacement_lets_a_server_in_maintenance_drain() {
    let (mut pair, _, _) = super::loan_tests::borrowed_pair();
    let own: Vec<ServerId> = pair.a.servers().iter().map(|s| s.id.clone()).collect();
    assert_eq!(own.len(), 2);
    assert_eq!(pair.a.borrowing().serving().count(), 2);
    // The second own server leaves at once; the first is then shop's last own server,
    // and shop (minimum 1) still has the two borrowed ones.
    pair.a
        .set_maintenance(&own[1], Some(record(true)), pair.now)
        .unwrap();
    let effects = pair
        .a
        .set_maintenance(&own[0], Some(record(false)), pair.now)
        .unwrap();
    assert_eq!(
        stops(&effects)
            .iter()
            .map(|(server, _)| server)
            .collect::<Vec<_>>(),
        vec![&own[0]],
        "{effects:?}"
    );
}
