//! Loans between two site cores on virtual clocks: a borrower (site-a, 2 servers) and a
//! lender (site-b, 4 servers, reserve 1, at most 2 lent). Messages between them are
//! carried by hand, so each test decides what gets through.

use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use leasehold_federation::wire::common::{Health, RefusalCause};
use leasehold_federation::wire::node::{LeaseRenewal, StopOutcome};
use leasehold_federation::wire::site::{LentServer, LoanOffer, LoanRenewal};

use super::tests::site_config;
use super::{Recovered, SiteModel};
use crate::config::{Lending, SiteConfig};
use crate::federation::catalogue;
use crate::model::Millis;
use crate::model::effects::{AuditKind, Command, Effect, JournalOp, PeerMessage};
use crate::model::ownership::Owner;

pub(super) fn site(name: &str) -> SiteId {
    SiteId::parse(name).unwrap()
}

pub(super) fn server(name: &str) -> ServerId {
    ServerId::parse(name).unwrap()
}

pub(super) fn account(name: &str) -> AccountId {
    AccountId::parse(name).unwrap()
}

pub(super) struct Pair {
    pub(super) a: SiteModel,
    pub(super) b: SiteModel,
    a_config: SiteConfig,
    pub(super) now: Millis,
}

/// site-a borrows from site-b; both have every server registered and at their minimum.
pub(super) fn pair() -> Pair {
    let a_config = site_config(
        "site-a",
        'a',
        2,
        &[("shop", 1, 4, 20)],
        Lending {
            reserve: 0,
            max_lent: 0,
            lend_to: vec![],
            borrow_from: vec![site("site-b")],
            borrow_by_rtt: false,
        },
    );
    let b_config = site_config(
        "site-b",
        'b',
        4,
        &[("wiki", 1, 3, 15)],
        Lending {
            reserve: 1,
            max_lent: 2,
            lend_to: vec![site("site-a")],
            borrow_from: vec![],
            borrow_by_rtt: false,
        },
    );
    let (mut a, _) = SiteModel::new(&a_config, &Recovered::default(), Millis(0));
    let (mut b, _) = SiteModel::new(&b_config, &Recovered::default(), Millis(0));
    let mut pair = Pair {
        a: {
            for n in 1..=2 {
                a.register(&server(&format!("a{n}")), None, Epoch::NONE, Millis(0))
                    .unwrap();
            }
            a
        },
        b: {
            for n in 1..=4 {
                b.register(&server(&format!("b{n}")), None, Epoch::NONE, Millis(0))
                    .unwrap();
            }
            b
        },
        a_config,
        now: Millis(0),
    };
    pair.a
        .peer_seen(&site("site-b"), true, Some(Duration::from_millis(1)));
    let a_effects = pair.a.tick(Millis(0));
    let b_effects = pair.b.tick(Millis(0));
    pair.join_all(&a_effects, &b_effects);
    pair
}

pub(super) fn to_peer(effects: &[Effect]) -> Vec<(SiteId, PeerMessage)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::ToPeer { to, message } => Some((to.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn audits(effects: &[Effect], kind: AuditKind) -> usize {
    effects
        .iter()
        .filter(|effect| matches!(effect, Effect::Audit(entry) if entry.kind == kind))
        .count()
}

pub(super) use crate::model::fixtures::applies;

pub(super) fn stops(effects: &[Effect]) -> Vec<(ServerId, Epoch, u64)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send(Command::Stop {
                server,
                epoch,
                drain_ms,
                ..
            }) => Some((server.clone(), *epoch, *drain_ms)),
            _ => None,
        })
        .collect()
}

/// Servers that come home: stopped when told, or whose lease ended (their node stops by
/// itself then, S-1).
fn comes_home(effects: &[Effect]) -> Vec<ServerId> {
    let mut home: Vec<ServerId> = stops(effects).into_iter().map(|(id, _, _)| id).collect();
    home.extend(effects.iter().filter_map(|effect| match effect {
        Effect::Journal(JournalOp::LeaseEnded { server, .. }) => Some(server.clone()),
        _ => None,
    }));
    home.sort();
    home.dedup();
    home
}

impl Pair {
    /// Every server both sites just applied a pointer to turns healthy.
    fn join_all(&mut self, a_effects: &[Effect], b_effects: &[Effect]) -> Vec<Effect> {
        for (id, epoch) in applies(a_effects) {
            self.a.workload_joined(&id, epoch, self.now);
        }
        let mut out = Vec::new();
        for (id, epoch) in applies(b_effects) {
            out.extend(self.b.workload_joined(&id, epoch, self.now));
        }
        out
    }

    fn heartbeat(&mut self) {
        let now = self.now;
        for model in [&mut self.a, &mut self.b] {
            let ids: Vec<ServerId> = model.servers().iter().map(|s| s.id.clone()).collect();
            for id in ids {
                model.heartbeat(&id, Health::Healthy, Some(1.0), now);
            }
        }
    }

    /// Nodes renew their leases with their own site, as agents do every renew interval.
    fn renew_nodes(&mut self) {
        let now = self.now;
        for model in [&mut self.a, &mut self.b] {
            let leases: Vec<(ServerId, Epoch)> = model
                .servers()
                .iter()
                .filter_map(|s| s.lease.as_ref().map(|l| (s.id.clone(), l.epoch)))
                .collect();
            for (id, epoch) in leases {
                let _ = model.renew(&id, epoch, now);
            }
        }
    }

    /// site-a's messages to site-b, answered by site-b (its answers and what it sends
    /// back delivered to site-a), when `through`.
    fn carry(&mut self, a_effects: &[Effect], through: bool) -> (Vec<Effect>, Vec<Effect>) {
        let mut b_effects = Vec::new();
        let mut a_back = Vec::new();
        if !through {
            return (a_back, b_effects);
        }
        let now = self.now;
        for (to, message) in to_peer(a_effects) {
            assert_eq!(to, site("site-b"));
            match message {
                PeerMessage::RequestLoan(request) if request.handback => {
                    let (offer, effects) =
                        self.b
                            .lend_home(&site("site-a"), &request.account, request.count, now);
                    b_effects.extend(effects);
                    a_back.extend(self.a.loan_offered(
                        &site("site-b"),
                        &request.account,
                        Ok(offer),
                        now,
                    ));
                }
                PeerMessage::RequestLoan(request) => {
                    let spec = catalogue(&self.a_config)
                        .accounts
                        .into_iter()
                        .find(|spec| spec.name == request.account)
                        .unwrap();
                    let (offer, effects) = self.b.lend(&site("site-a"), &spec, request.count, now);
                    b_effects.extend(effects);
                    let back =
                        self.a
                            .loan_offered(&site("site-b"), &request.account, Ok(offer), now);
                    assert!(to_peer(&back).is_empty());
                    a_back.extend(back);
                }
                PeerMessage::RenewLoan(renew) => {
                    let answer =
                        self.b
                            .renew_loan(&site("site-a"), &renew.server, renew.epoch, now);
                    a_back.extend(self.a.loan_renewed(
                        &site("site-b"),
                        &renew.server,
                        renew.epoch,
                        Ok(answer),
                        now,
                    ));
                }
                PeerMessage::ReturnLoan(returned) => {
                    b_effects.extend(
                        self.b
                            .loan_returned(&site("site-a"), &returned.server, returned.epoch, now)
                            .unwrap_or_default(),
                    );
                }
                other => panic!("a borrower does not send {other:?}"),
            }
        }
        (a_back, b_effects)
    }

    /// site-b's messages to site-a, delivered.
    fn deliver(&mut self, b_effects: &[Effect]) -> Vec<Effect> {
        let now = self.now;
        let mut out = Vec::new();
        for (to, message) in to_peer(b_effects) {
            assert_eq!(to, site("site-a"));
            match message {
                PeerMessage::Status(status) => {
                    match self.a.loan_status(&site("site-b"), &status, now) {
                        Ok(effects) => out.extend(effects),
                        Err(why) => panic!(
                            "{status:?} refused at {now:?}: {why}; loans {:?}",
                            self.a.borrowing().loans
                        ),
                    }
                }
                PeerMessage::RecallLoan(recall) => {
                    out.extend(self.a.loan_recalled(&site("site-b"), &recall, now).unwrap())
                }
                other => panic!("a lender does not send {other:?}"),
            }
        }
        out
    }

    /// One round of both sites, `step` later, with messages carried when `through`; lent
    /// servers that get a pointer turn healthy, stopped ones report stopped.
    pub(super) fn round(&mut self, step: Duration, through: bool) -> (Vec<Effect>, Vec<Effect>) {
        self.now = self.now + step;
        let now = self.now;
        self.heartbeat();
        self.renew_nodes();
        let mut a_effects = self.a.tick(now);
        let mut b_effects = self.b.tick(now);
        let (a_back, b_answers) = self.carry(&a_effects, through);
        a_effects.extend(a_back);
        b_effects.extend(b_answers);
        let joined = self.join_all(&a_effects, &b_effects);
        b_effects.extend(joined);
        for (id, epoch, _) in stops(&b_effects) {
            let stopped = self
                .b
                .stop_answered(&id, epoch, Ok(StopOutcome::Stopped { epoch }), now);
            b_effects.extend(stopped);
        }
        let mut a_all = a_effects;
        if through {
            a_all.extend(self.deliver(&b_effects));
        }
        (a_all, b_effects)
    }

    fn shop(&self) -> crate::model::site::AccountSnapshot {
        self.a
            .snapshot(self.now)
            .accounts
            .into_iter()
            .find(|a| a.name.as_str() == "shop")
            .unwrap()
    }

    /// Runs rounds of 100 ms for `total`, messages carried when `through`.
    pub(super) fn run(&mut self, total: Duration, through: bool) -> (Vec<Effect>, Vec<Effect>) {
        let mut all = (Vec::new(), Vec::new());
        let rounds = total.as_millis() / 100;
        for _ in 0..rounds {
            let (a, b) = self.round(Duration::from_millis(100), through);
            all.0.extend(a);
            all.1.extend(b);
        }
        all
    }
}

/// site-a wants 4 shop servers and has 2: it borrows 2 from site-b (which keeps its
/// reserve), and they serve shop and appear in its endpoints.
pub(super) fn borrowed_pair() -> (Pair, Vec<Effect>, Vec<Effect>) {
    let mut pair = pair();
    pair.run(super::startup_grace(pair.a.timings()), true);
    let shop = pair.a.account_ix(&account("shop")).unwrap();
    pair.a.set_demand(shop, 4);
    let (a, b) = pair.run(Duration::from_millis(500), true);
    (pair, a, b)
}

#[test]
fn a_short_site_borrows_what_the_lender_spares_and_counts_it() {
    let (pair, a, b) = borrowed_pair();
    assert_eq!(
        audits(&b, AuditKind::Lend),
        2,
        "site-b lends 2 (4 servers, wiki 1, reserve 1)"
    );
    assert_eq!(audits(&a, AuditKind::Borrow), 2);
    // Journal before the pointer (D-1), and the lease names its holder site.
    let journaled: Vec<&JournalOp> = b
        .iter()
        .filter_map(|effect| match effect {
            Effect::Journal(
                op @ JournalOp::LeaseGranted {
                    lent_to: Some(holder),
                    ..
                },
            ) if holder.borrower == site("site-a") => Some(op),
            _ => None,
        })
        .collect();
    assert_eq!(journaled.len(), 2);
    let shop = pair.shop();
    assert_eq!(shop.servers, 4, "{shop:?}");
    assert_eq!(shop.borrowed, 2);
    assert!(shop.endpoints.iter().any(|e| e.starts_with("127.0.0.1:81")));
    // The lender lists them with the borrower's account and keeps them from its arbiter.
    let lent: Vec<_> = pair
        .b
        .snapshot(pair.now)
        .servers
        .into_iter()
        .filter(|s| s.lent_to.is_some())
        .collect();
    assert_eq!(lent.len(), 2);
    assert!(
        lent.iter()
            .all(|s| s.account.as_ref().map(|a| a.as_str()) == Some("shop"))
    );
    assert!(
        pair.b
            .snapshot(pair.now)
            .accounts
            .iter()
            .all(|a| a.name.as_str() == "wiki")
    );
    let loans = pair.a.loans(pair.now);
    assert_eq!(loans.counts.borrowed, 2);
    assert_eq!(loans.latencies_ms.len(), 2);
}

/// A loan's lease starts when the lender grants it, so a borrower whose ownership of the
/// account runs out within a lease TTL asks for none (S-5; the simulation's seed 138).
#[test]
fn an_ownership_ending_within_a_lease_ttl_asks_for_no_loan() {
    let mut pair = pair();
    pair.run(super::startup_grace(pair.a.timings()), true);
    let shop = pair.a.account_ix(&account("shop")).unwrap();
    let ttl = pair.a.timings().lease_ttl;
    let ending = |now: Millis, left: Duration| Owner::Here {
        term: leasehold_federation::ids::Term::NONE.next(),
        until: now + left,
    };
    pair.a.set_owner(
        &account("shop"),
        ending(pair.now, ttl - Duration::from_millis(200)),
    );
    pair.a.set_demand(shop, 4);
    let (a, _) = pair.run(Duration::from_millis(300), true);
    assert!(
        !to_peer(&a)
            .iter()
            .any(|(_, m)| matches!(m, PeerMessage::RequestLoan(_))),
        "{a:#?}"
    );
    // With a TTL and more to run, it asks.
    pair.a
        .set_owner(&account("shop"), ending(pair.now, ttl * 3));
    let (a, _) = pair.run(Duration::from_millis(300), true);
    assert!(
        to_peer(&a)
            .iter()
            .any(|(_, m)| matches!(m, PeerMessage::RequestLoan(_))),
        "{a:#?}"
    );
}

#[test]
fn a_site_just_started_does_not_borrow_before_its_own_nodes_had_time_to_connect() {
    let mut pair = pair();
    let shop = pair.a.account_ix(&account("shop")).unwrap();
    pair.a.set_demand(shop, 4);
    let grace = super::startup_grace(pair.a.timings());
    let (a, _) = pair.run(grace - Duration::from_millis(100), true);
    assert_eq!(audits(&a, AuditKind::Borrow), 0);
    let (a, _) = pair.run(Duration::from_millis(300), true);
    assert_eq!(audits(&a, AuditKind::Borrow), 2);
}

#[test]
fn a_lent_server_that_joins_is_relayed_healthy_even_if_its_last_heartbeat_said_idle() {
    let mut pair = pair();
    pair.run(super::startup_grace(pair.a.timings()), true);
    let shop = pair.a.account_ix(&account("shop")).unwrap();
    pair.a.set_demand(shop, 3);
    pair.now = pair.now + Duration::from_millis(100);
    let a = pair.a.tick(pair.now);
    // Carried by hand: the pointer is applied, but the workload has not joined yet.
    let (_, b) = pair.carry(&a, true);
    let (server, epoch) = applies(&b)[0].clone();
    pair.b.heartbeat(&server, Health::Idle, None, pair.now);
    let joined = pair.b.workload_joined(&server, epoch, pair.now);
    let relayed: Vec<Health> = to_peer(&joined)
        .into_iter()
        .filter_map(|(_, message)| match message {
            PeerMessage::Status(status) => Some(status.health),
            _ => None,
        })
        .collect();
    assert_eq!(relayed, vec![Health::Healthy]);
    pair.deliver(&joined);
    assert_eq!(pair.shop().borrowed, 1);
}

#[test]
fn loans_are_renewed_and_outlive_their_first_ttl() {
    let (mut pair, _, _) = borrowed_pair();
    let (a, b) = pair.run(Duration::from_secs(6), true);
    assert_eq!(audits(&a, AuditKind::LoanExpired), 0);
    assert_eq!(audits(&b, AuditKind::LoanExpired), 0);
    assert_eq!(pair.shop().borrowed, 2);
}

#[test]
fn when_the_need_falls_the_borrower_drains_then_returns_and_the_server_comes_home() {
    let (mut pair, _, _) = borrowed_pair();
    let shop = pair.a.account_ix(&account("shop")).unwrap();
    pair.a.set_demand(shop, 2);
    let (a, _) = pair.round(Duration::from_millis(100), true);
    assert_eq!(audits(&a, AuditKind::LoanReturn), 2);
    // Out of the endpoints at once; returned only after the drain.
    assert_eq!(pair.shop().borrowed, 0);
    assert_eq!(pair.b.lent().count(), 2);
    let (_, b) = pair.run(Duration::from_millis(1100), true);
    let home: Vec<_> = stops(&b).into_iter().map(|(_, _, drain)| drain).collect();
    assert_eq!(home, vec![0, 0], "drained by the borrower already");
    assert_eq!(pair.b.lent().count(), 0);
    assert_eq!(pair.a.loans(pair.now).counts.returned, 2);
    assert_eq!(pair.a.loans(pair.now).borrowed.len(), 0);
}

#[test]
fn a_lender_short_of_servers_recalls_with_a_grace_and_gets_them_back() {
    let (mut pair, _, _) = borrowed_pair();
    let wiki = pair.b.account_ix(&account("wiki")).unwrap();
    pair.b.set_demand(wiki, 3);
    let (a, b) = pair.round(Duration::from_millis(100), true);
    // wiki takes the reserve server and is still 1 short: one lent server is recalled.
    assert_eq!(audits(&b, AuditKind::LoanRecall), 1);
    assert_eq!(audits(&a, AuditKind::LoanRecall), 1);
    assert_eq!(
        pair.shop().borrowed,
        1,
        "the recalled server left the endpoints"
    );
    let (_, _) = pair.run(Duration::from_millis(1500), true);
    assert_eq!(pair.a.loans(pair.now).counts.recalled, 1);
    let wiki_now = pair
        .b
        .snapshot(pair.now)
        .accounts
        .into_iter()
        .find(|a| a.name.as_str() == "wiki")
        .unwrap();
    assert_eq!(wiki_now.servers, 3, "{wiki_now:?}");
}

#[test]
fn a_recalled_server_not_returned_is_stopped_when_its_grace_ends() {
    let (mut pair, _, _) = borrowed_pair();
    let wiki = pair.b.account_ix(&account("wiki")).unwrap();
    pair.b.set_demand(wiki, 3);
    let (_, b) = pair.round(Duration::from_millis(100), true);
    assert_eq!(audits(&b, AuditKind::LoanRecall), 1);
    let (recalled, loan) = pair
        .b
        .lent()
        .find(|(_, loan)| loan.recall_by.is_some())
        .unwrap();
    let recalled = pair.b.servers()[recalled].id.clone();
    let recall_by = loan.recall_by.unwrap();
    // The borrower hears nothing more (cut off): the lender waits out the grace.
    let mut stopped_at = None;
    for _ in 0..40 {
        let (_, b) = pair.round(Duration::from_millis(100), false);
        if comes_home(&b).contains(&recalled) {
            stopped_at = Some(pair.now);
            break;
        }
    }
    let stopped_at = stopped_at.expect("the recalled server was never stopped");
    assert!(
        stopped_at > recall_by,
        "stopped at {stopped_at:?}, grace until {recall_by:?}"
    );
    assert!(stopped_at.since(recall_by) <= Duration::from_millis(100));
}

#[test]
fn a_vanished_borrower_gets_its_servers_taken_home_when_the_loan_expires_never_before() {
    let (mut pair, _, _) = borrowed_pair();
    let expires: Vec<(ServerId, Millis)> = pair
        .b
        .lent()
        .map(|(ix, loan)| (pair.b.servers()[ix].id.clone(), loan.expires_at))
        .collect();
    assert_eq!(expires.len(), 2);
    let mut home = 0;
    for _ in 0..40 {
        let (_, b) = pair.round(Duration::from_millis(100), false);
        for id in comes_home(&b) {
            let (_, until) = expires.iter().find(|(lent, _)| *lent == id).unwrap();
            assert!(
                pair.now > *until,
                "{id} stopped at {:?}, its loan ran until {until:?}",
                pair.now
            );
            assert!(pair.now.since(*until) <= Duration::from_millis(100));
            home += 1;
        }
    }
    assert_eq!(home, 2, "both lent servers come home");
    assert_eq!(pair.b.lent().count(), 0);
}

#[test]
fn a_vanished_lender_stops_counting_its_servers_when_their_leases_end() {
    let (mut pair, _, _) = borrowed_pair();
    pair.a.peer_seen(&site("site-b"), false, None);
    let first_end = pair
        .a
        .borrowing()
        .loans
        .iter()
        .map(|l| l.expires_at)
        .min()
        .unwrap();
    let mut ended_at = None;
    for _ in 0..40 {
        let (a, _) = pair.round(Duration::from_millis(100), false);
        if audits(&a, AuditKind::LoanExpired) > 0 {
            ended_at = Some(pair.now);
            break;
        }
        assert!(
            pair.shop().borrowed > 0,
            "stopped counting before any lease ended"
        );
    }
    let ended_at = ended_at.expect("the borrowed servers were counted for ever");
    assert!(ended_at > first_end);
    let (_, _) = pair.run(Duration::from_millis(600), false);
    assert_eq!(pair.shop().borrowed, 0);
    assert!(
        !pair
            .shop()
            .endpoints
            .iter()
            .any(|e| e.starts_with("127.0.0.1:81"))
    );
    // With the lender down, nobody is asked (site-b is the only lender listed).
    assert!(pair.a.loans(pair.now).asking.is_empty());
}

#[test]
fn stale_or_foreign_loan_messages_are_refused_and_change_nothing() {
    let (mut pair, _, _) = borrowed_pair();
    let now = pair.now;
    let lent: Vec<(ServerId, Epoch)> = pair
        .b
        .servers()
        .iter()
        .filter(|s| s.lease.as_ref().is_some_and(|l| l.loan.is_some()))
        .map(|s| (s.id.clone(), s.lease.as_ref().unwrap().epoch))
        .collect();
    let (id, epoch) = lent[0].clone();
    let stale = Epoch::NONE;
    match pair.b.renew_loan(&site("site-a"), &id, stale, now) {
        LoanRenewal::Refused(refusal) => {
            assert!(
                matches!(refusal.cause, RefusalCause::StaleEpoch { .. }),
                "{refusal:?}"
            )
        }
        other => panic!("stale renewal accepted: {other:?}"),
    }
    // Another site cannot renew, return or borrow in site-a's name.
    assert!(matches!(
        pair.b.renew_loan(&site("site-c"), &id, epoch, now),
        LoanRenewal::Refused(_)
    ));
    assert!(
        pair.b
            .loan_returned(&site("site-c"), &id, epoch, now)
            .is_err()
    );
    let spec = catalogue(&pair.a_config).accounts.remove(0);
    let (offer, effects) = pair.b.lend(&site("site-c"), &spec, 1, now);
    assert!(matches!(offer, LoanOffer::Refused(_)) && effects.is_empty());
    // A stale status or recall is refused by the borrower.
    let status = leasehold_federation::wire::site::LentServerStatus {
        server: id.clone(),
        epoch: stale,
        account: account("shop"),
        health: Health::Idle,
        load: None,
    };
    assert!(pair.a.loan_status(&site("site-b"), &status, now).is_err());
    assert_eq!(pair.shop().borrowed, 2);
    // A grant naming one of the borrower's own servers is not taken.
    let bogus = LoanOffer::Granted {
        servers: vec![LentServer {
            server: server("a1"),
            epoch: Epoch::NONE.next(),
            service_addr: "127.0.0.1:1".into(),
            ttl_ms: 2000,
        }],
    };
    let effects = pair
        .a
        .loan_offered(&site("site-b"), &account("shop"), Ok(bogus), now);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Journal(JournalOp::Borrowed { .. }))),
        "{effects:?}"
    );
    assert_eq!(pair.shop().borrowed, 2);
    // The lent server's node keeps renewing through all of it.
    assert!(matches!(
        pair.b.renew(&id, epoch, now),
        LeaseRenewal::Renewed { .. }
    ));
}

#[test]
fn a_restarted_lender_keeps_its_loans_for_a_ttl_and_a_restarted_borrower_keeps_counting() {
    let (pair, a, b) = borrowed_pair();
    let mut recovered_b = Recovered::default();
    for effect in &b {
        if let Effect::Journal(JournalOp::LeaseGranted {
            server,
            account,
            epoch,
            lent_to,
        }) = effect
        {
            recovered_b
                .leases
                .push((server.clone(), account.clone(), *epoch));
            if let Some(holder) = lent_to {
                recovered_b.lent.push((server.clone(), (**holder).clone()));
            }
        }
    }
    let b_config = site_config(
        "site-b",
        'b',
        4,
        &[("wiki", 1, 3, 15)],
        pair.b.lending().clone(),
    );
    let (b2, _) = SiteModel::new(&b_config, &recovered_b, Millis(0));
    assert_eq!(b2.lent().count(), 2, "loans survive the lender's restart");
    let mut recovered_a = Recovered::default();
    for effect in &a {
        if let Effect::Journal(JournalOp::Borrowed {
            server,
            lender,
            account,
            epoch,
            service_addr,
        }) = effect
        {
            recovered_a.borrowed.push(super::BorrowRecord {
                server: server.clone(),
                lender: lender.clone(),
                account: account.clone(),
                epoch: *epoch,
                service_addr: service_addr.clone(),
            });
        }
    }
    let (a2, _) = SiteModel::new(&pair.a_config, &recovered_a, Millis(0));
    assert_eq!(
        a2.borrowing().loans.len(),
        2,
        "loans survive the borrower's restart"
    );
}

#[test]
fn a_loan_is_kept_until_a_server_moving_into_the_account_has_joined() {
    let (mut pair, _, _) = borrowed_pair();
    let shop = pair.a.account_ix(&account("shop")).unwrap();
    // a2 is on its way into shop (as after a reclaim from another account): the round
    // counts it as shop's, but it does not serve yet.
    let a2 = pair.a.server_index[&server("a2")];
    pair.a.servers[a2].phase = super::Phase::Draining {
        next: super::Next::Join(shop),
        decided_at: pair.now,
    };
    pair.a.set_demand(shop, 3);
    let (a, _) = pair.round(Duration::from_millis(100), true);
    assert_eq!(
        audits(&a, AuditKind::LoanReturn),
        0,
        "kept while a2 is still coming"
    );
    assert_eq!(pair.shop().borrowed, 2);
    // a2 joined: one borrowed server is now more than shop needs.
    pair.a.servers[a2].phase = super::Phase::Serving;
    let (a, _) = pair.round(Duration::from_millis(100), true);
    assert_eq!(audits(&a, AuditKind::LoanReturn), 1);
}
