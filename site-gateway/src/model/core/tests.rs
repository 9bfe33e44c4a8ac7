//! The site core's glue on a virtual clock: a round arbitrates on the demand its groups
//! decided from this round's load, and live config edits go through the core.

use std::time::Duration;

use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::wire::common::Health;

use super::{ConfigOutcome, Groups, Heartbeat, SiteCore};
use crate::config::{Lending, Timings};
use crate::model::Millis;
use crate::model::fixtures::{applies, site_config};
use crate::model::site::Recovered;

fn server(n: usize) -> ServerId {
    ServerId::parse(&format!("a{n}")).expect("a valid server name")
}

/// A core of site-a with `servers` registered servers and `accounts` (name, min, max,
/// priority; target load 10), and its groups.
fn site(servers: usize, accounts: &[(&str, u32, u32, u32)]) -> (SiteCore, Groups) {
    let config = site_config("site-a", 'a', servers, accounts, Lending::default());
    let (mut core, effects, started) = SiteCore::new(
        config,
        "h1".into(),
        &Recovered::default(),
        None,
        0,
        Millis(0),
    );
    assert!(effects.is_empty());
    let mut groups = Groups::default();
    groups.apply(&started);
    for n in 1..=servers {
        core.register(&server(n), None, Epoch::NONE, Millis(0))
            .expect("a server of the config registers");
    }
    (core, groups)
}

fn beats(
    core: &SiteCore,
    servers: usize,
    load: impl Fn(usize) -> f64,
    at: Millis,
) -> Vec<Heartbeat> {
    (1..=servers)
        .map(|n| Heartbeat {
            server: core.server_ix(&server(n)).expect("a server of the site"),
            health: Health::Healthy,
            load: Some(load(n)),
            at,
        })
        .collect()
}

#[test]
fn a_round_arbitrates_on_the_demand_its_groups_decided_from_this_rounds_load() {
    let (mut core, mut groups) = site(3, &[("shop", 1, 3, 10)]);
    let heartbeats = beats(&core, 3, |_| 0.0, Millis(100));
    let first = applies(&groups.round(&mut core, heartbeats, Millis(100)));
    assert_eq!(first.len(), 1, "the minimum first");
    let (serving, epoch) = first[0].clone();
    core.workload_reported(&serving, epoch, &super::WorkloadEvent::Joined, Millis(150));
    // Quiet rounds past the move cooldown, the lease renewed as its node would.
    let quiet_until = Millis(200) + Timings::default().move_cooldown;
    let mut now = Millis(200);
    while now < quiet_until {
        core.renew(&serving, epoch, now).expect("the owner renews");
        let heartbeats = beats(&core, 3, |_| 0.0, now);
        let effects = groups.round(&mut core, heartbeats, now);
        assert!(applies(&effects).is_empty(), "{effects:#?}");
        now = now + Duration::from_millis(100);
    }
    core.renew(&serving, epoch, now).expect("the owner renews");
    // The serving server reports 2.5 times the target load: three servers wanted, and the
    // same round assigns the two more (the demand is not a round late).
    let load = |n: usize| if server(n) == serving { 25.0 } else { 0.0 };
    let start = core.begin_round(beats(&core, 3, load, now), now);
    assert_eq!(start.loads, vec![(0, 25.0)]);
    let demands = groups.decide(&start, now);
    assert_eq!(demands, vec![(0, 3)]);
    let (effects, _) = core.finish_round(&demands, now);
    assert_eq!(applies(&effects).len(), 2, "{effects:#?}");
}

/// An account no server serves yet takes no load measurement (its demand holds while its
/// servers start); a round that leaves an account short with no server free presses the
/// site, and the next round says so to the demand models.
#[test]
fn an_unserved_account_is_not_measured_and_a_shortfall_presses_the_next_round() {
    let (mut core, mut groups) = site(2, &[("shop", 1, 2, 20), ("blog", 1, 2, 10)]);
    let now = Millis(100);
    let start = core.begin_round(beats(&core, 2, |_| 0.0, now), now);
    assert!(start.loads.is_empty(), "{:?}", start.loads);
    assert!(!start.pressed);
    let demands = groups.decide(&start, now);
    let (effects, _) = core.finish_round(&demands, now);
    let placed = applies(&effects);
    assert_eq!(placed.len(), 2, "each account its minimum: {effects:#?}");
    for (server, epoch) in &placed {
        core.workload_reported(server, *epoch, &super::WorkloadEvent::Joined, Millis(150));
    }
    // shop's server reports 2.5 times the target: it wants its maximum, 2, and the only
    // other server serves blog at its minimum: shop is short, and nothing is free.
    let shop = placed
        .iter()
        .map(|(server, _)| server.clone())
        .find(|server| {
            core.model()
                .server(server)
                .and_then(|entry| entry.lease.as_ref())
                .is_some_and(|lease| lease.account == 0)
        })
        .expect("a server serves shop");
    let load = |n: usize| if server(n) == shop { 25.0 } else { 5.0 };
    let now = Millis(200);
    for (server, epoch) in &placed {
        core.renew(server, *epoch, now).expect("the owner renews");
    }
    let start = core.begin_round(beats(&core, 2, load, now), now);
    assert_eq!(start.loads.len(), 2);
    assert!(!start.pressed, "no round has been short yet");
    let demands = groups.decide(&start, now);
    assert_eq!(demands, vec![(0, 2), (1, 1)]);
    let (effects, _) = core.finish_round(&demands, now);
    let shortfall = effects
        .iter()
        .find_map(|effect| match effect {
            crate::model::effects::Effect::Audit(entry)
                if entry.kind == crate::model::effects::AuditKind::Shortfall =>
            {
                Some(entry.reason.clone())
            }
            _ => None,
        })
        .expect("shop's shortfall audited");
    assert!(
        shortfall.contains("shop") && shortfall.ends_with(crate::model::site::tick::PRESSED),
        "the audit says why demands fall from now on: {shortfall}"
    );
    let now = Millis(300);
    let start = core.begin_round(beats(&core, 2, load, now), now);
    assert!(start.pressed, "shop was short with no server free");
}

#[test]
fn config_edits_go_through_the_core_and_a_refusal_changes_nothing_but_the_status() {
    let (mut core, mut groups) = site(2, &[("shop", 1, 1, 10)]);
    let mut edited = site_config(
        "site-a",
        'a',
        2,
        &[("shop", 1, 2, 10), ("blog", 1, 1, 5)],
        Lending::default(),
    );
    core.config_refused("site-a.toml:3:1: unknown field".into());
    assert_eq!(core.config_status().reloads_refused, 1);
    assert!(core.config_status().last_refused.is_some());
    // The file back to the running bytes: nothing applied, the refusal is over.
    let same = core.apply_config(&edited, "h1".into(), 5, Millis(10));
    assert_eq!(same.outcome, ConfigOutcome::RefusalCleared);
    assert_eq!(core.config_status().last_refused, None);
    let again = core.apply_config(&edited, "h1".into(), 6, Millis(10));
    assert_eq!(again.outcome, ConfigOutcome::Unchanged);

    let applied = core.apply_config(&edited, "h2".into(), 7, Millis(20));
    let ConfigOutcome::Applied { diff: Some(diff) } = &applied.outcome else {
        panic!("{:?}", applied.outcome);
    };
    assert_eq!(diff.accounts_added, vec!["blog".to_owned()]);
    // blog gets a group; shop's group learns its new maximum.
    assert_eq!(applied.groups.started.len(), 1);
    assert_eq!(applied.groups.sla_changed.len(), 1);
    assert_eq!(applied.groups.sla_changed[0].1.max_servers, 2);
    groups.apply(&applied.groups);
    assert_eq!(core.config_status().hash, "h2");
    assert_eq!(core.config_status().reloads_applied, 2);
    // A server's new address needs a restart: reported, and kept out of the running
    // config (servers added or removed apply live: model/site/maintenance_tests.rs).
    edited.servers[1].service_addr = "127.0.0.1:1".parse().expect("an address");
    let restart = core.apply_config(&edited, "h3".into(), 8, Millis(30));
    assert!(matches!(restart.outcome, ConfigOutcome::Applied { .. }));
    assert!(
        !core.config_status().needs_restart.is_empty(),
        "{:?}",
        core.config_status()
    );
    // Both accounts are served by the next round.
    let now = Millis(40) + Duration::from_millis(100);
    let heartbeats = beats(&core, 2, |_| 0.0, now);
    let effects = groups.round(&mut core, heartbeats, now);
    assert_eq!(applies(&effects).len(), 2, "{effects:#?}");
}

/// A live edit of the ownership side: `failback_after` applies at once; the ownership
/// timings are reported as needing a restart and stay as they run, also in the report of a
/// later, unrelated edit (before, a TTL edit was dropped unreported); a new peer becomes
/// the members the ownership core steps towards (before, it was never reported).
#[test]
fn ownership_edits_apply_failback_and_members_live_and_report_what_needs_a_restart() {
    use crate::config::Peer;
    use crate::model::ownership::SiteOwnership;
    use leasehold_federation::ids::{AccountId, SiteId};

    let peer = |name: &str, port: u16| Peer {
        name: SiteId::parse(name).expect("a valid site name"),
        addr: format!("127.0.0.1:{port}").parse().expect("an address"),
        other_addrs: Vec::new(),
    };
    let mut config = site_config("site-a", 'a', 1, &[("shop", 1, 1, 10)], Lending::default());
    config.peers = vec![peer("site-b", 9002)];
    let ownership = SiteOwnership::new(
        config.site.name.clone(),
        vec![SiteId::parse("site-b").expect("a valid site name")],
        vec![AccountId::parse("shop").expect("a valid account name")],
        config.timings.ownership(),
        config.timings.failback_after,
        Millis(0),
    );
    let ttl = config.timings.ownership_ttl;
    let (mut core, _, _) = SiteCore::new(
        config.clone(),
        "h1".into(),
        &Recovered::default(),
        Some(ownership),
        0,
        Millis(0),
    );
    let mut edited = config.clone();
    edited.peers.push(peer("site-c", 9003));
    edited.timings.failback_after = Duration::from_secs(90);
    edited.timings.ownership_ttl = ttl * 3;
    core.apply_config(&edited, "h2".into(), 1, Millis(10));
    let owning = core.ownership().expect("an ownership core");
    assert_eq!(owning.failback_after(), Duration::from_secs(90));
    assert_eq!(owning.timing().ttl, ttl, "the TTL runs on as it started");
    let members = owning.members_status(Millis(10));
    assert_eq!(members.running, ["site-a", "site-b"]);
    assert_eq!(members.wanted, ["site-a", "site-b", "site-c"]);
    assert!(
        members
            .waiting
            .iter()
            .any(|why| why.contains("site-b has not yet answered")),
        "{members:?}"
    );
    let reported = |core: &SiteCore| core.config_status().needs_restart.join("\n");
    let first = reported(&core);
    assert!(first.contains("ownership_ttl_ms: 3000 -> 9000"), "{first}");
    assert!(!first.contains("members"), "{first}");
    // A later edit of an account only: the TTL is still reported.
    edited.accounts[0].max_servers = 2;
    core.apply_config(&edited, "h3".into(), 2, Millis(20));
    assert_eq!(reported(&core), first);
}
