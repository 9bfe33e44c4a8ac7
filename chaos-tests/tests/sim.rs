//! The simulation of whole federations (issue #12): a run replays exactly from its seed,
//! a sweep of seeds keeps every invariant, and each planted bug is found by the invariant
//! that guards against it within a stated number of faults, so each checker is shown able
//! to fail on the production cores.

use leasehold_chaos_tests::sim::{MembersOperator, Plant, SimOptions, SimReport, run};

fn simulate(seed: u64, faults: u64, plant: Option<Plant>) -> SimReport {
    simulate_members(seed, faults, plant, None)
}

fn simulate_members(
    seed: u64,
    faults: u64,
    plant: Option<Plant>,
    members: Option<MembersOperator>,
) -> SimReport {
    let options = SimOptions {
        seed,
        faults,
        sites: 3,
        servers_per_site: 3,
        plant,
        members,
        trace: None,
    };
    run(&options, |_| {}).expect("no trace to write")
}

fn failed(report: &SimReport) -> Vec<&'static str> {
    report
        .invariants
        .iter()
        .filter(|invariant| !invariant.passed)
        .map(|invariant| invariant.name)
        .collect()
}

#[test]
fn a_seed_replays_event_for_event_and_another_seed_does_not() {
    let first = simulate(11, 60, None);
    let again = simulate(11, 60, None);
    let other = simulate(12, 60, None);
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.events, again.events);
    assert_ne!(first.trace_hash, other.trace_hash);
    assert_eq!(failed(&first), Vec::<&str>::new(), "{first:#?}");
}

#[test]
fn a_sweep_of_seeds_keeps_every_invariant_under_every_kind_of_fault() {
    let mut kinds = std::collections::BTreeSet::new();
    let mut activity = std::collections::BTreeMap::new();
    let mut total = 0;
    for seed in 1..=10 {
        let report = simulate(seed, 100, None);
        assert_eq!(
            failed(&report),
            Vec::<&str>::new(),
            "seed {seed}: {report:#?}"
        );
        kinds.extend(report.faults.keys().copied());
        total += report.faults.values().sum::<u64>();
        for (what, count) in &report.activity {
            *activity.entry(*what).or_insert(0) += count;
        }
    }
    assert_eq!(total, 1000);
    // The faults made the federation do what the invariants are about.
    for what in [
        "workloads-started",
        "takeovers",
        "servers-lent",
        "handovers",
        "ownerships-lost",
        "leases-recovered",
        "config-edits-applied",
        "commands-refused",
    ] {
        assert!(
            activity.get(what).copied().unwrap_or(0) > 0,
            "no {what}: {activity:?}"
        );
    }
    assert_eq!(
        kinds.len(),
        leasehold_chaos_tests::sim::faults::FaultKind::ALL.len(),
        "{kinds:?}"
    );
}

/// A planted bug must be found within this many faults.
const FOUND_WITHIN: u64 = 300;

fn assert_found(plant: Plant, invariant: &str) {
    if !cfg!(debug_assertions) {
        // The switches are compiled out of release builds.
        return;
    }
    for seed in 1..=3 {
        let report = simulate(seed, FOUND_WITHIN, Some(plant));
        assert_eq!(
            failed(&report),
            vec![invariant],
            "seed {seed}, {}: {report:#?}",
            plant.name()
        );
        assert!(report.stopped_at_us.is_some());
        assert!(!report.last_events.is_empty());
    }
}

#[test]
fn a_gateway_that_drops_journal_writes_is_caught_by_journaled_before_acted() {
    assert_found(Plant::DropJournalWrite, "journaled-before-acted");
}

#[test]
fn a_node_that_skips_its_epoch_check_is_caught_by_epochs_never_reused() {
    assert_found(Plant::SkipEpochCheck, "epochs-never-reused");
}

#[test]
fn renewing_ownership_without_a_majority_is_caught_by_one_owner_per_account() {
    assert_found(Plant::RenewWithoutMajority, "one-owner-per-account");
}

/// Seed 21 crashed a node agent while its workload was being spawned; the simulation left
/// that workload running (its guard was only modelled for a spawned one) and the next agent
/// reaped it alive, 917 ms after its lease (a bug of the simulation, found by its sweep).
#[test]
fn seed_21_a_workload_being_spawned_dies_with_its_agent() {
    let report = simulate(21, 200, None);
    assert_eq!(failed(&report), Vec::<&str>::new(), "{report:#?}");
}

/// Seed 96 found a gap in the drain-first hand-back: site-c gave shop back to its home
/// site-a and released its grants while site-a's servers lent for the hand-back still ran
/// shop for it; site-b, cut off from site-a, was granted shop 47 ms later and started it
/// too. A hand-back's release now names the home, and the acceptors let anyone else in
/// only once the released grant would have run out (`Acceptor::release`).
#[test]
fn seed_96_a_third_site_waits_out_a_hand_back_release() {
    let report = simulate(96, 200, None);
    assert_eq!(failed(&report), Vec::<&str>::new(), "{report:#?}");
}

/// Seed 138 found a loan outliving its borrower's ownership: site-c began a hand-back
/// with 200 ms of ownership left, borrowed its home's b1 (a loan's lease starts when the
/// lender grants it), lost the ownership, and site-b, owner again, started wiki on b2
/// while b1 still ran it for site-c. A borrower now asks for a loan only while its
/// ownership has a lease TTL to run, as it renews one.
#[test]
fn seed_138_no_loan_is_asked_for_on_an_ownership_about_to_end() {
    let report = simulate(138, 200, None);
    assert_eq!(failed(&report), Vec::<&str>::new(), "{report:#?}");
}

/// Issue #19: sites added and removed one at a time (docs/ownership.md's procedure) while
/// every kind of fault goes on, so accounts fail over during the changes, to the added
/// sites too, and a removed site is left running or shut down, or lost for good first and
/// removed without its answer (`departed`): every invariant holds, judged from the node
/// logs and audit records as always, and after the calm every site took the last change.
#[test]
fn sites_added_and_removed_while_accounts_fail_over_keep_every_invariant() {
    let mut activity = std::collections::BTreeMap::new();
    let (mut added, mut removed, mut departed) = (0, 0, 0);
    for seed in 1..=8 {
        let report = simulate_members(seed, 150, None, Some(MembersOperator::OneAtATime));
        assert_eq!(
            failed(&report),
            Vec::<&str>::new(),
            "seed {seed}: {report:#?}"
        );
        assert_eq!(report.sites, 5, "three founders and two spares");
        added += report.members_added;
        removed += report.members_removed;
        departed += report.members_departed;
        for (what, count) in &report.activity {
            *activity.entry(*what).or_insert(0) += count;
        }
    }
    assert!(
        added >= 16 && removed >= 8,
        "added {added}, removed {removed}"
    );
    assert!(departed >= 1, "no site was lost for good and removed");
    // The sites took the changes (each change is a step at every site of it), and
    // accounts failed over meanwhile, onto added sites too.
    for what in [
        "member-steps",
        "takeovers",
        "takeovers-by-added-sites",
        "handovers",
    ] {
        assert!(
            activity.get(what).copied().unwrap_or(0) > 0,
            "no {what}: {activity:?}"
        );
    }
}

/// An operator who adds or removes two sites in one change: the members' rules refuse it
/// (no site steps to a set two apart), and nothing unsafe happens meanwhile.
#[test]
fn changes_of_two_sites_at_once_are_refused_and_every_invariant_holds() {
    for seed in 1..=3 {
        let report = simulate_members(seed, 100, None, Some(MembersOperator::TwoAtOnce));
        assert_eq!(
            failed(&report),
            Vec::<&str>::new(),
            "seed {seed}: {report:#?}"
        );
        assert!(report.members_added >= 2, "{report:#?}");
        assert_eq!(
            report.activity.get("takeovers-by-added-sites"),
            Some(&0),
            "a spare never joins a set two apart: {report:#?}"
        );
    }
}

/// The failing variant: the same operator, with sites that take a change of two sites in
/// one step (`MembersPlant::many_at_once`): two majorities that need not meet, and the
/// checker finds an account served for two sites from the node logs.
#[test]
fn a_change_of_two_sites_at_once_is_caught_by_one_owner_per_account() {
    if !cfg!(debug_assertions) {
        return; // The switches are compiled out of release builds.
    }
    for seed in 1..=3 {
        let report = simulate_members(
            seed,
            FOUND_WITHIN,
            Some(Plant::MembersManyAtOnce),
            Some(MembersOperator::TwoAtOnce),
        );
        assert_eq!(
            failed(&report),
            vec!["one-owner-per-account"],
            "seed {seed}: {report:#?}"
        );
        assert!(report.stopped_at_us.is_some());
    }
}
