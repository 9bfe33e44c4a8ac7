//! Machines in the site core, on a virtual clock: re-imaging on a grant, the boot's
//! registration, stale boots, boot timeouts, fencing and BMCs that do not answer, checked
//! from the effects the core asks for.

use std::time::Duration;

use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::wire::common::{Health, RefusalCause};
use leasehold_federation::wire::node::Registration;

use super::server::Phase;
use super::{BootStep, CheckedClaim, Power, Recovered, SiteModel};
use crate::config::{Image, Lending, Machine, SiteConfig};
use crate::model::Millis;
use crate::model::effects::{AuditKind, Command, Effect, JournalOp, MachineCommand};
use crate::model::fixtures::site_config;

fn m1() -> ServerId {
    ServerId::parse("m1").unwrap()
}

/// One machine `m1` and one account `shop` (min 1) with an image, and `blog` (min 1)
/// without one.
fn config() -> SiteConfig {
    let mut config = site_config(
        "site-a",
        'a',
        0,
        &[("shop", 1, 1, 10), ("blog", 1, 1, 20)],
        Lending::default(),
    );
    let mut server = site_config("site-a", 'm', 1, &[], Lending::default())
        .servers
        .remove(0);
    server.machine = Some(Machine {
        bmc_url: "http://127.0.0.1:1".to_owned(),
        bmc_credentials: "bmc.toml".into(),
        bmc_ca: None,
        bmc_tls_verify: true,
        mac: "52:54:00:00:00:01".to_owned(),
    });
    config.servers.push(server);
    config.accounts[0].image = Some(Image {
        kernel: "http://boot/vmlinuz".to_owned(),
        initrd: "http://boot/initrd".to_owned(),
        cmdline: "console=ttyS0".to_owned(),
    });
    config
}

fn machine_commands(effects: &[Effect]) -> Vec<MachineCommand> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Machine(command) => Some(command.clone()),
            _ => None,
        })
        .collect()
}

fn audited(effects: &[Effect], kind: AuditKind) -> Vec<String> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Audit(entry) if entry.kind == kind => Some(entry.reason.clone()),
            _ => None,
        })
        .collect()
}

/// The site at start: its BMC probed, and the machine found powered off.
fn probed_off() -> SiteModel {
    let (mut model, effects) = SiteModel::new(&config(), &Recovered::default(), Millis(0));
    assert!(effects.is_empty());
    let effects = model.tick(Millis(100));
    assert_eq!(
        machine_commands(&effects),
        vec![MachineCommand::Probe { server: m1() }]
    );
    let effects = model.machine_power(&m1(), Power::Off, Millis(150));
    assert_eq!(
        audited(&effects, AuditKind::Fence).len(),
        1,
        "found off at start: nothing can run on it"
    );
    model
}

/// The machine re-imaged for shop under the epoch returned, powered on and booting.
fn booting() -> (SiteModel, Epoch) {
    let mut model = probed_off();
    let effects = model.tick(Millis(200));
    let commands = machine_commands(&effects);
    let [MachineCommand::Reimage { server, epoch }] = commands.as_slice() else {
        panic!("expected one re-image: {effects:?}");
    };
    assert_eq!(server, &m1());
    // D-1: the lease is journaled before the machine is touched.
    let journaled = effects.iter().position(
        |e| matches!(e, Effect::Journal(JournalOp::LeaseGranted { epoch: e, .. }) if e == epoch),
    );
    let reimaged = effects.iter().position(|e| matches!(e, Effect::Machine(_)));
    assert!(journaled < reimaged, "{effects:?}");
    let epoch = *epoch;
    for (at, step) in [
        (1_200, BootStep::PoweringOff),
        (1_300, BootStep::SettingBoot),
        (2_300, BootStep::PoweringOn),
    ] {
        model.machine_progress(&m1(), epoch, step, Millis(at));
    }
    (model, epoch)
}

/// The machine's new image registered for shop, with its boot's epoch and token, at 10 s.
fn booted() -> (SiteModel, Epoch) {
    let (mut model, epoch) = booting();
    let claim = CheckedClaim {
        epoch,
        token_valid: true,
    };
    let (registration, _) = model.register_booted(&m1(), claim, None, Epoch::NONE, Millis(10_000));
    assert!(registration.is_ok(), "{registration:?}");
    (model, epoch)
}

#[test]
fn a_machine_serves_only_an_account_with_an_image_and_boots_it_for_its_lease() {
    let mut model = probed_off();
    let effects = model.tick(Millis(200));
    let leased: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Journal(JournalOp::LeaseGranted { account, .. }) => Some(account.to_string()),
            _ => None,
        })
        .collect();
    // blog has the higher priority, but no image: the machine goes to shop (the
    // arbiter's own test checks the reason blog is left short).
    assert_eq!(leased, vec!["shop"]);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Send(_))),
        "a machine gets no pointer before its image's agent registers"
    );
}

#[test]
fn the_boot_script_is_pending_only_from_power_on_until_registration() {
    let mut model = probed_off();
    let effects = model.tick(Millis(200));
    let Some(MachineCommand::Reimage { epoch, .. }) = machine_commands(&effects).pop() else {
        panic!("{effects:?}");
    };
    let mac = "52:54:00:00:00:01";
    assert_eq!(
        model.pending_boot(mac).unwrap().1,
        None,
        "still powering off"
    );
    model.machine_progress(&m1(), epoch, BootStep::PoweringOff, Millis(300));
    assert_eq!(model.pending_boot(mac).unwrap().1, None, "boot not set yet");
    model.machine_progress(&m1(), epoch, BootStep::SettingBoot, Millis(400));
    assert_eq!(model.pending_boot(mac).unwrap().1.map(|p| p.1), Some(epoch));
    assert!(model.pending_boot("52:54:00:00:00:99").is_none());
}

#[test]
fn the_new_images_agent_registers_with_the_epoch_and_token_and_gets_the_pointer() {
    let (mut model, epoch) = booting();
    // Booting longer than a lease TTL: the lease is held, not expired.
    let effects = model.tick(Millis(9_000));
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Journal(JournalOp::LeaseEnded { .. }))),
        "{effects:?}"
    );
    let claim = CheckedClaim {
        epoch,
        token_valid: true,
    };
    let (registration, effects) =
        model.register_booted(&m1(), claim, None, Epoch::NONE, Millis(10_000));
    assert!(matches!(registration, Ok(Registration::Accepted { .. })));
    let pointers: Vec<Epoch> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(Command::Apply { pointer, .. }) => Some(pointer.epoch),
            _ => None,
        })
        .collect();
    assert_eq!(pointers, vec![epoch]);
    let booted = audited(&effects, AuditKind::Booted).join("");
    assert!(booted.contains("powering-off 1000 ms"), "{booted}");
    assert!(booted.contains("booting 7700 ms"), "{booted}");
    assert_eq!(model.pending_boot("52:54:00:00:00:01").unwrap().1, None);

    // The same boot's token again, from somewhere else while the lease is new: it is the
    // same image reconnecting (the lease and the image agree), served as any reconnect.
    let (again, _) = model.register_booted(&m1(), claim, None, epoch, Millis(10_100));
    assert!(again.is_ok());
}

#[test]
fn a_stale_or_forged_boot_is_refused_and_powered_off() {
    let (mut model, epoch) = booting();
    let mut power_offs = 0;
    for claim in [
        CheckedClaim {
            epoch: epoch.next(),
            token_valid: true,
        },
        CheckedClaim {
            epoch,
            token_valid: false,
        },
    ] {
        let (registration, effects) =
            model.register_booted(&m1(), claim, None, Epoch::NONE, Millis(5_000));
        let refusal = registration.unwrap_err();
        assert_eq!(refusal.cause, RefusalCause::StaleBoot);
        assert_eq!(audited(&effects, AuditKind::StaleBoot).len(), 1);
        assert!(
            !effects.iter().any(|e| matches!(e, Effect::Send(_))),
            "no pointer to a stale boot"
        );
        power_offs += machine_commands(&effects)
            .iter()
            .filter(|c| matches!(c, MachineCommand::PowerOff { server, .. } if *server == m1()))
            .count();
    }
    // The first refusal powers it off; the second finds that power-off under way.
    assert_eq!(power_offs, 1);
    // A registration without a claim from a machine is refused too.
    let refused = model.register(&m1(), None, Epoch::NONE, Millis(5_000));
    assert!(refused.is_err());
}

#[test]
fn a_machine_that_never_registers_is_powered_off_and_left_out_of_use() {
    let (mut model, epoch) = booting();
    let timeout = model.timings().machine_boot_timeout;
    let late = Millis(2_300) + timeout + Duration::from_millis(200);
    let effects = model.tick(late);
    assert_eq!(audited(&effects, AuditKind::MachineFailed).len(), 1);
    assert!(effects.iter().any(
        |e| matches!(e, Effect::Journal(JournalOp::LeaseEnded { epoch: e, .. }) if *e == epoch)
    ));
    assert!(matches!(
        machine_commands(&effects).as_slice(),
        [MachineCommand::PowerOff { .. }]
    ));
    model.machine_power(&m1(), Power::Off, late + Duration::from_millis(100));
    let server = model.server(&m1()).unwrap();
    assert!(
        !server.assignable(),
        "a failed machine is not offered again"
    );
    let effects = model.tick(late + Duration::from_millis(200));
    assert!(machine_commands(&effects).is_empty(), "{effects:?}");
}

#[test]
fn a_machine_whose_lease_ends_unheard_is_fenced_before_reuse() {
    let (mut model, epoch) = booted();
    model.heartbeat(&m1(), Health::Healthy, Some(1.0), Millis(10_000));
    model.workload_joined(&m1(), epoch, Millis(10_100));
    // Silent from here on: failed, then the lease runs out, then the fence.
    let mut fenced_at = None;
    let mut lease_ended_at = None;
    for at in (10_200..20_000).step_by(100) {
        let effects = model.tick(Millis(at));
        if effects
            .iter()
            .any(|e| matches!(e, Effect::Journal(JournalOp::LeaseEnded { .. })))
        {
            lease_ended_at.get_or_insert(at);
        }
        if let [MachineCommand::PowerOff { reason, .. }] = machine_commands(&effects).as_slice() {
            assert!(reason.contains("node agent is gone"), "{reason}");
            fenced_at = Some(at);
            break;
        }
    }
    let (Some(fenced), Some(ended)) = (fenced_at, lease_ended_at) else {
        panic!("no fence: lease ended at {lease_ended_at:?}");
    };
    assert!(
        fenced >= ended,
        "fenced at {fenced} before the lease ended at {ended}"
    );
    assert!(
        !model.server(&m1()).unwrap().assignable(),
        "not before the power is off"
    );
    let effects = model.machine_power(&m1(), Power::Off, Millis(fenced + 500));
    assert_eq!(audited(&effects, AuditKind::Fence).len(), 1);
    assert!(model.server(&m1()).unwrap().assignable());
    // And of use again: shop, short of it, has it re-imaged.
    let reimaged = (1..100).any(|step| {
        let effects = model.tick(Millis(fenced + 500 + step * 100));
        machine_commands(&effects)
            .iter()
            .any(|c| matches!(c, MachineCommand::Reimage { .. }))
    });
    assert!(reimaged, "{:?}", model.server(&m1()));
}

#[test]
fn a_bmc_that_does_not_answer_keeps_its_machine_out_of_use_and_is_asked_again() {
    let (mut model, _) = SiteModel::new(&config(), &Recovered::default(), Millis(0));
    model.tick(Millis(100));
    let effects = model.machine_failed(&m1(), None, "connection refused", true, Millis(200));
    assert_eq!(audited(&effects, AuditKind::BmcUnreachable).len(), 1);
    let effects = model.tick(Millis(300));
    assert!(
        machine_commands(&effects).is_empty() && !model.server(&m1()).unwrap().assignable(),
        "never assigned on a guess"
    );
    let retry = Millis(200) + super::BMC_RETRY;
    let effects = model.tick(retry);
    assert_eq!(
        machine_commands(&effects),
        vec![MachineCommand::Probe { server: m1() }]
    );
    model.machine_power(&m1(), Power::Off, retry + Duration::from_millis(50));
    assert!(model.server(&m1()).unwrap().assignable());
}

#[test]
fn a_reimage_that_fails_ends_its_lease_and_the_machine_is_out_of_use() {
    let mut model = probed_off();
    let effects = model.tick(Millis(200));
    let Some(MachineCommand::Reimage { epoch, .. }) = machine_commands(&effects).pop() else {
        panic!("{effects:?}");
    };
    let effects = model.machine_failed(
        &m1(),
        Some(epoch),
        "BMC refused PATCH with 400",
        false,
        Millis(900),
    );
    assert_eq!(audited(&effects, AuditKind::MachineFailed).len(), 1);
    assert!(effects.iter().any(
        |e| matches!(e, Effect::Journal(JournalOp::LeaseEnded { epoch: e, .. }) if *e == epoch)
    ));
    assert!(!model.server(&m1()).unwrap().assignable());
    let snapshot = model.snapshot(Millis(1_000));
    let machine = snapshot.servers[0].machine.as_ref().unwrap();
    assert!(
        machine.failed.as_deref().unwrap().contains("400"),
        "{machine:?}"
    );
}

#[test]
fn a_free_machine_is_never_lent() {
    let (mut model, _) = booted();
    // Its account let it go: free, its agent still connected, as a process server would be.
    let ix = model.index_of(&m1()).unwrap();
    model.servers[ix].lease = None;
    model.servers[ix].phase = Phase::Free;
    assert!(model.servers[ix].connected);
    assert_eq!(model.free_count(), 0, "a machine is not counted as spare");
    assert_eq!(model.spare(), 0);
}

#[test]
fn a_restarted_gateway_takes_back_the_running_image_of_a_recovered_lease_only() {
    let shop = leasehold_federation::ids::AccountId::parse("shop").unwrap();
    let epoch = Epoch::NONE.next().next();
    let recovered = Recovered {
        leases: vec![(m1(), shop, epoch)],
        epochs: vec![(m1(), epoch)],
        ..Recovered::default()
    };
    let claim = |epoch, token_valid| CheckedClaim { epoch, token_valid };

    // The image of the journaled lease, with its token: it reconnects, not re-imaged.
    let (mut model, _) = SiteModel::new(&config(), &recovered, Millis(0));
    let (registration, effects) =
        model.register_booted(&m1(), claim(epoch, true), None, epoch, Millis(100));
    assert!(registration.is_ok(), "{registration:?}");
    assert!(
        audited(&effects, AuditKind::StaleBoot).is_empty(),
        "{effects:?}"
    );
    assert!(machine_commands(&effects).is_empty(), "{effects:?}");

    // An older boot's agent, or a token the boot service did not issue: refused and
    // powered off, as before the restart.
    for stale in [claim(Epoch::NONE.next(), true), claim(epoch, false)] {
        let (mut model, _) = SiteModel::new(&config(), &recovered, Millis(0));
        let (refused, effects) = model.register_booted(&m1(), stale, None, Epoch::NONE, Millis(50));
        assert!(refused.is_err(), "{stale:?}");
        assert_eq!(
            audited(&effects, AuditKind::StaleBoot).len(),
            1,
            "{stale:?}"
        );
    }
}

#[test]
fn a_stale_boot_during_a_reimage_fails_it_at_once() {
    let (mut model, epoch) = booting();
    let stale = CheckedClaim {
        epoch: epoch.next(),
        token_valid: true,
    };
    let (refused, effects) = model.register_booted(&m1(), stale, None, Epoch::NONE, Millis(5_000));
    assert_eq!(refused.unwrap_err().cause, RefusalCause::StaleBoot);
    assert_eq!(audited(&effects, AuditKind::StaleBoot).len(), 1);
    let failed = audited(&effects, AuditKind::MachineFailed);
    assert_eq!(failed.len(), 1, "{effects:?}");
    assert!(
        failed[0].contains("came up with another boot"),
        "{failed:?}"
    );
    // The lease ends now, not after the boot timeout, and the machine goes off.
    assert!(
        effects.iter().any(
            |e| matches!(e, Effect::Journal(JournalOp::LeaseEnded { epoch: ended, .. }) if *ended == epoch)
        ),
        "{effects:?}"
    );
    assert!(
        machine_commands(&effects)
            .iter()
            .any(|c| matches!(c, MachineCommand::PowerOff { .. })),
        "{effects:?}"
    );
    assert_eq!(model.pending_boot("52:54:00:00:00:01").unwrap().1, None);
    // Out of use: the next rounds do not re-image it.
    model.machine_power(&m1(), Power::Off, Millis(6_000));
    for at in [6_100, 7_000, 20_000] {
        let effects = model.tick(Millis(at));
        assert!(
            !machine_commands(&effects)
                .iter()
                .any(|c| matches!(c, MachineCommand::Reimage { .. })),
            "{effects:?}"
        );
    }
}

#[test]
fn a_stale_boot_while_the_power_on_still_runs_is_powered_off_once_the_bmc_is_free() {
    let mut model = probed_off();
    let commands = machine_commands(&model.tick(Millis(200)));
    let [MachineCommand::Reimage { epoch, .. }] = commands.as_slice() else {
        panic!("expected one re-image: {commands:?}");
    };
    let epoch = *epoch;
    model.machine_progress(&m1(), epoch, BootStep::PoweringOff, Millis(1_200));
    model.machine_progress(&m1(), epoch, BootStep::SettingBoot, Millis(1_300));
    // Powering on: the firmware came up before the BMC said On, with another boot.
    let stale = CheckedClaim {
        epoch: epoch.next(),
        token_valid: true,
    };
    let (refused, effects) = model.register_booted(&m1(), stale, None, Epoch::NONE, Millis(1_400));
    assert!(refused.is_err());
    assert_eq!(audited(&effects, AuditKind::MachineFailed).len(), 1);
    assert!(
        machine_commands(&effects).is_empty(),
        "the BMC is still busy powering it on: {effects:?}"
    );
    // The power-on ends; the next round powers it off, once.
    model.machine_progress(&m1(), epoch, BootStep::PoweringOn, Millis(2_000));
    let commands = machine_commands(&model.tick(Millis(2_100)));
    let [MachineCommand::PowerOff { reason, .. }] = commands.as_slice() else {
        panic!("expected one power-off: {commands:?}");
    };
    assert!(reason.contains("stale image"), "{reason}");
    assert!(machine_commands(&model.tick(Millis(2_200))).is_empty());
    let effects = model.machine_power(&m1(), Power::Off, Millis(3_000));
    assert_eq!(audited(&effects, AuditKind::Fence).len(), 1);
    // Out of use: off, and never re-imaged or powered again.
    for at in [3_100, 10_000, 30_000] {
        assert!(machine_commands(&model.tick(Millis(at))).is_empty());
    }
}
