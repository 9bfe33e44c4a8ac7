//! Drain-first failback between two site cores on a virtual clock: site-a took site-b's
//! `wiki` over and hands it back. site-b's servers must serve wiki before site-a's stop,
//! and the one site-b lent keeps running, under the same lease, once site-b owns wiki.

use std::time::Duration;

use leasehold_federation::ids::Term;
use leasehold_federation::wire::node::StopOutcome;
use leasehold_federation::wire::site::LoanOffer;

use super::loan_tests::{Pair, account, applies, audits, pair, site, stops, to_peer};
use crate::federation::catalogue;
use crate::model::Millis;
use crate::model::effects::{AuditKind, Effect, JournalOp, PeerMessage};
use crate::model::ownership::Owner;

fn owned() -> Owner {
    Owner::Here {
        term: Term::NONE.next(),
        until: Millis(u64::MAX),
    }
}

/// Servers of `account` serving at `model`, borrowed ones included.
fn serving(model: &super::SiteModel, now: Millis, name: &str) -> u32 {
    model
        .snapshot(now)
        .accounts
        .into_iter()
        .filter(|a| a.name.as_str() == name)
        .map(|a| a.servers)
        .sum()
}

/// One round in which site-a's own stopped workloads report stopped, as nodes do.
fn round(pair: &mut Pair) -> (Vec<Effect>, Vec<Effect>) {
    let (mut a, b) = pair.round(Duration::from_millis(100), true);
    let now = pair.now;
    for (id, epoch, _) in stops(&a) {
        let stopped = pair
            .a
            .stop_answered(&id, epoch, Ok(StopOutcome::Stopped { epoch }), now);
        a.extend(stopped);
    }
    for (id, epoch) in applies(&a) {
        pair.a.workload_joined(&id, epoch, now);
    }
    (a, b)
}

/// site-a owns wiki (taken over from site-b) and serves it on a server of its own.
fn taken_over() -> Pair {
    let mut pair = pair();
    let wiki = catalogue(&crate::model::site::tests::site_config(
        "site-b",
        'b',
        4,
        &[("wiki", 1, 3, 15)],
        pair.b.lending().clone(),
    ))
    .accounts
    .remove(0);
    pair.a.adopt(&wiki, owned());
    pair.b.set_owner(
        &account("wiki"),
        Owner::There {
            holder: site("site-a"),
            term: Term::NONE.next(),
        },
    );
    // Past the move cooldown, so that site-b has let wiki's server go and site-a's own
    // may drain when the time comes.
    let cooldown = pair.a.timings().move_cooldown.as_millis() as usize / 100;
    for _ in 0..cooldown + 30 {
        round(&mut pair);
    }
    assert_eq!(serving(&pair.a, pair.now, "wiki"), 1, "served at site-a");
    assert_eq!(
        serving(&pair.b, pair.now, "wiki"),
        0,
        "not at site-b: {:#?}",
        pair.b.servers()
    );
    pair
}

#[test]
fn a_hand_back_borrows_the_homes_servers_drains_ours_then_the_home_keeps_them() {
    let mut pair = taken_over();
    pair.a
        .set_handing_back(&account("wiki"), Some(&site("site-b")));
    let mut ready = Vec::new();
    let mut asked_for_handback = false;
    let mut released = 0;
    for _ in 0..60 {
        let home_serving =
            pair.a.borrowing().loans.iter().any(|loan| {
                loan.lender == site("site-b") && loan.state == super::BorrowState::Serving
            });
        let (a, _) = round(&mut pair);
        // Drain-first: site-a lets its own server of wiki go only once site-b's serves.
        let releases = audits(&a, AuditKind::Release);
        assert!(
            releases == 0 || home_serving,
            "site-a released its own server before site-b's served: {a:#?}"
        );
        released += releases;
        asked_for_handback |= to_peer(&a).iter().any(
            |(_, message)| matches!(message, PeerMessage::RequestLoan(request) if request.handback),
        );
        // Drain-first: wiki is served at every instant of the hand-back.
        assert!(
            serving(&pair.a, pair.now, "wiki") >= 1,
            "wiki unserved at {:?}: {:?}",
            pair.now,
            pair.a.borrowing().loans
        );
        ready = pair.a.ready_to_hand_over(pair.now);
        if !ready.is_empty() {
            break;
        }
    }
    assert!(asked_for_handback);
    assert_eq!(released, 1);
    assert_eq!(ready, vec![account("wiki")]);
    // Ready means: no server of site-a holds a lease of wiki; site-b's lent one serves it.
    let wiki_at_a = pair.a.account_ix(&account("wiki")).unwrap();
    assert!(
        pair.a
            .servers()
            .iter()
            .all(|s| s.lease.as_ref().is_none_or(|l| l.account != wiki_at_a))
    );
    let (lent_ix, _) = pair.b.lent().next().expect("site-b lent a server for wiki");
    let lent = pair.b.servers()[lent_ix].id.clone();
    let epoch = pair.b.servers()[lent_ix].lease.as_ref().unwrap().epoch;

    // site-a releases wiki: it forgets the loan without returning it.
    let effects = pair.a.handed_over(&account("wiki"));
    assert!(
        to_peer(&effects).is_empty(),
        "nothing is returned: {effects:?}"
    );
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Journal(JournalOp::BorrowEnded { server, .. }) if *server == lent
    )));
    assert!(pair.a.borrowing().loans.is_empty());
    pair.a.set_owner(
        &account("wiki"),
        Owner::There {
            holder: site("site-b"),
            term: Term::NONE.next().next(),
        },
    );
    pair.a.set_handing_back(&account("wiki"), None);

    // site-b owns wiki again: the lent server is its own, same lease, not restarted.
    pair.b.set_owner(&account("wiki"), owned());
    let (_, b) = round(&mut pair);
    assert_eq!(audits(&b, AuditKind::Handover), 1, "{b:#?}");
    assert!(b.iter().any(|e| matches!(
        e,
        Effect::Journal(JournalOp::LeaseGranted { server, epoch: e, lent_to: None, .. })
            if *server == lent && *e == epoch
    )));
    assert!(stops(&b).iter().all(|(id, _, _)| *id != lent), "{b:#?}");
    assert_eq!(pair.b.lent().count(), 0);
    let entry = pair.b.server(&lent).unwrap();
    assert_eq!(entry.lease.as_ref().map(|l| l.epoch), Some(epoch));
    for _ in 0..10 {
        let (_, b) = round(&mut pair);
        assert!(stops(&b).iter().all(|(id, _, _)| *id != lent));
    }
    assert_eq!(serving(&pair.b, pair.now, "wiki"), 1);
    assert_eq!(serving(&pair.a, pair.now, "wiki"), 0);
}

#[test]
fn the_home_lends_for_a_hand_back_only_an_account_it_homes_and_does_not_own() {
    let mut pair = taken_over();
    let now = pair.now;
    let (offer, _) = pair.b.lend_home(&site("site-a"), &account("shop"), 1, now);
    assert!(
        matches!(offer, LoanOffer::Refused(_)),
        "site-b does not home shop"
    );
    pair.b.set_owner(&account("wiki"), owned());
    let (offer, effects) = pair.b.lend_home(&site("site-a"), &account("wiki"), 1, now);
    assert!(
        matches!(offer, LoanOffer::Refused(_)),
        "site-b owns wiki itself"
    );
    assert!(effects.is_empty());
}
