//! Unit tests of the arbitration rules, one small site per rule.

use std::time::Duration;

use super::*;

const NOW: Millis = Millis(100_000);
const COOLDOWN: Duration = Duration::from_secs(10);

fn account(priority: u32, min_servers: u32, max_servers: u32, demand: u32) -> AccountView {
    AccountView {
        takes_machines: true,
        priority,
        min_servers,
        max_servers,
        demand,
    }
}

fn free() -> ServerView {
    ServerView {
        machine: false,
        slot: Slot::Free,
        load: 0.0,
        avoid: None,
    }
}

/// Held long enough ago to be movable.
fn held(account: AccountIx) -> ServerView {
    ServerView {
        machine: false,
        slot: Slot::Held {
            account,
            since: Millis(0),
        },
        load: 1.0,
        avoid: None,
    }
}

fn held_with_load(account: AccountIx, load: f32) -> ServerView {
    ServerView {
        load,
        ..held(account)
    }
}

/// Held since `ago` before now.
fn held_since(account: AccountIx, ago: Duration) -> ServerView {
    ServerView {
        slot: Slot::Held {
            account,
            since: NOW - ago,
        },
        ..held(account)
    }
}

fn incoming(account: AccountIx) -> ServerView {
    ServerView {
        machine: false,
        slot: Slot::Incoming { account },
        load: 0.0,
        avoid: None,
    }
}

fn unavailable() -> ServerView {
    ServerView {
        machine: false,
        slot: Slot::Unavailable,
        load: 0.0,
        avoid: None,
    }
}

fn avoiding(server: ServerView, account: AccountIx) -> ServerView {
    ServerView {
        avoid: Some(account),
        ..server
    }
}

fn run(accounts: &[AccountView], servers: &[ServerView]) -> Round {
    arbitrate(&SiteView {
        accounts,
        servers,
        now: NOW,
        cooldown: COOLDOWN,
    })
}

/// The decisions as (server, from, to) with `None` for the free pool: the shape most tests
/// assert on.
fn moves(round: &Round) -> Vec<(u32, Option<AccountIx>, Option<AccountIx>)> {
    round
        .decisions
        .iter()
        .map(|decision| match *decision {
            Decision::Assign {
                server, account, ..
            } => (server, None, Some(account)),
            Decision::Reclaim {
                server, from, to, ..
            } => (server, Some(from), Some(to)),
            Decision::Release { server, from, .. } => (server, Some(from), None),
        })
        .collect()
}

#[test]
fn a_free_server_goes_first() {
    // 0 wants 2 and has 1; 1 has a surplus; server 2 is free.
    let accounts = [account(10, 1, 5, 2), account(0, 1, 5, 1)];
    let servers = [held(0), held(1), free(), held(1)];
    let round = run(&accounts, &servers);
    assert_eq!(moves(&round)[0], (2, None, Some(0)));
    assert_eq!(round.decisions[0].reason().source, Source::Free);
    assert_eq!(
        round.decisions[0].reason().term,
        SlaTerm::BelowDemand { demand: 2, have: 1 }
    );
}

#[test]
fn surplus_is_taken_before_preemption() {
    // 1 (priority 0) is at its demand above its minimum: preemptable for 0's demand.
    // 2 (priority 20, higher than 0's) is above its demand: its surplus goes first.
    let accounts = [
        account(10, 0, 5, 1),
        account(0, 1, 5, 2),
        account(20, 1, 5, 1),
    ];
    let servers = [held(1), held(1), held(2), held(2)];
    let round = run(&accounts, &servers);
    assert_eq!(moves(&round), vec![(2, Some(2), Some(0))]);
    assert_eq!(
        round.decisions[0].reason().source,
        Source::Surplus {
            from: 2,
            from_demand: 1
        }
    );
}

#[test]
fn the_lowest_priority_surplus_gives_first() {
    let accounts = [
        account(50, 1, 5, 2),
        account(7, 1, 5, 1),
        account(3, 1, 5, 1),
    ];
    let servers = [held(0), held(1), held(1), held(2), held(2)];
    let round = run(&accounts, &servers);
    assert_eq!(
        moves(&round),
        vec![(3, Some(2), Some(0)), (1, Some(1), None)]
    );
}

#[test]
fn the_lowest_priority_account_is_preempted_first() {
    // 0 wants 3 and has 1; 1 and 2 sit at their demand above their minimum.
    let accounts = [
        account(50, 1, 5, 3),
        account(7, 1, 5, 2),
        account(3, 1, 5, 2),
    ];
    let servers = [held(0), held(1), held(1), held(2), held(2)];
    let round = run(&accounts, &servers);
    assert_eq!(
        moves(&round),
        vec![(3, Some(2), Some(0)), (1, Some(1), Some(0))]
    );
    assert_eq!(
        round.decisions[0].reason().source,
        Source::Preempted {
            from: 2,
            from_priority: 3
        }
    );
    // Both donors are now below their demand, with nobody lower to take from.
    let short: Vec<AccountIx> = round
        .shortfalls
        .iter()
        .map(|shortfall| shortfall.account)
        .collect();
    assert_eq!(short, vec![1, 2]);
}

#[test]
fn a_donor_never_goes_below_its_minimum() {
    // 0 wants 3 (has 0); 1 (lower priority, minimum 1) can give one of its two.
    let accounts = [account(50, 1, 5, 3), account(0, 1, 5, 2)];
    let servers = [held(1), held(1)];
    let round = run(&accounts, &servers);
    assert_eq!(moves(&round), vec![(0, Some(1), Some(0))]);
    assert_eq!(
        round.decisions[0].reason().term,
        SlaTerm::BelowMinimum { min: 1, have: 0 }
    );
    assert_eq!(
        round.shortfalls[..1],
        [Shortfall {
            account: 0,
            wanted: 3,
            have: 1,
            term: SlaTerm::BelowDemand { demand: 3, have: 1 },
            passed_over: vec![PassedOver {
                server: 1,
                why: PassOverWhy::AtMinimum { account: 1, min: 1 }
            }],
        }]
    );
}

#[test]
fn a_server_in_cooldown_stays_and_is_named() {
    // 1's first server moved 4 s ago (6 s of cooldown left); its second is movable.
    let accounts = [account(50, 0, 5, 1), account(0, 0, 5, 0)];
    let servers = [held_since(1, Duration::from_secs(4)), held(1)];
    let round = run(&accounts, &servers);
    assert_eq!(moves(&round)[0], (1, Some(1), Some(0)));
    // 1 keeps server 0 above its demand: it cannot move yet, so it is not released either.
    assert_eq!(round.decisions.len(), 1);

    let servers = [held_since(1, Duration::from_secs(4))];
    let round = run(&accounts, &servers);
    assert!(round.decisions.is_empty());
    assert_eq!(
        round.shortfalls[0].passed_over,
        vec![PassedOver {
            server: 0,
            why: PassOverWhy::Cooldown {
                left: Duration::from_secs(6)
            }
        }]
    );
}

#[test]
fn a_server_that_avoids_an_account_goes_to_another() {
    // Server 0 just failed a workload of account 0.
    let accounts = [account(50, 1, 5, 1), account(0, 1, 5, 1)];
    let servers = [avoiding(free(), 0), free()];
    let round = run(&accounts, &servers);
    assert_eq!(moves(&round), vec![(1, None, Some(0)), (0, None, Some(1))]);
    assert_eq!(
        round.decisions[0].reason().passed_over,
        vec![PassedOver {
            server: 0,
            why: PassOverWhy::AvoidsAccount
        }]
    );
}

#[test]
fn a_machine_goes_only_to_an_account_with_an_image() {
    // Account 0 (higher priority) has no image; server 0 is a machine.
    let mut no_image = account(50, 1, 5, 1);
    no_image.takes_machines = false;
    let accounts = [no_image, account(0, 1, 5, 1)];
    let machine = ServerView {
        machine: true,
        ..free()
    };
    let round = run(&accounts, &[machine]);
    assert_eq!(moves(&round), vec![(0, None, Some(1))]);
    assert_eq!(round.shortfalls.len(), 1);
    assert_eq!(round.shortfalls[0].account, 0);
    assert_eq!(
        round.shortfalls[0].passed_over,
        vec![PassedOver {
            server: 0,
            why: PassOverWhy::NoImage
        }]
    );
    // A machine serving the account with an image is not reclaimed for the other.
    let held = ServerView {
        machine: true,
        ..held(1)
    };
    let round = run(&[accounts[0], account(0, 0, 5, 0)], &[held]);
    assert!(
        moves(&round).iter().all(|(_, _, to)| *to != Some(0)),
        "{round:?}"
    );
}

#[test]
fn an_account_above_its_demand_releases_its_least_loaded_servers() {
    let accounts = [account(0, 1, 5, 1)];
    let servers = [
        held_with_load(0, 0.9),
        held_with_load(0, 0.1),
        held_with_load(0, 0.5),
    ];
    let round = run(&accounts, &servers);
    assert_eq!(moves(&round), vec![(1, Some(0), None), (2, Some(0), None)]);
    let reason = round.decisions[0].reason();
    assert_eq!(reason.term, SlaTerm::AboveDemand { demand: 1, have: 3 });
    assert_eq!(reason.source, Source::OwnSurplus);
}

#[test]
fn an_account_above_its_maximum_releases_to_its_maximum_first() {
    // Demand 9 is clamped to the maximum 2.
    let accounts = [account(0, 1, 2, 9)];
    let servers = [held(0), held(0), held(0)];
    let round = run(&accounts, &servers);
    assert_eq!(moves(&round), vec![(0, Some(0), None)]);
    assert_eq!(
        round.decisions[0].reason().term,
        SlaTerm::AboveMaximum { max: 2, have: 3 }
    );
}

#[test]
fn when_short_the_higher_priority_is_served_and_the_other_reported() {
    let accounts = [account(1, 0, 5, 1), account(9, 0, 5, 1)];
    let servers = [free()];
    let round = run(&accounts, &servers);
    assert_eq!(moves(&round), vec![(0, None, Some(1))]);
    assert_eq!(
        round.shortfalls,
        vec![Shortfall {
            account: 0,
            wanted: 1,
            have: 0,
            term: SlaTerm::BelowDemand { demand: 1, have: 0 },
            passed_over: vec![],
        }]
    );
}

#[test]
fn minimums_are_served_before_demands() {
    // 0 (high priority) is above its minimum but below its demand; 1 is below its minimum.
    let accounts = [account(50, 1, 5, 3), account(0, 1, 5, 1)];
    let servers = [held(0), held(0), free()];
    let round = run(&accounts, &servers);
    assert_eq!(moves(&round), vec![(2, None, Some(1))]);
    assert_eq!(
        round.decisions[0].reason().term,
        SlaTerm::BelowMinimum { min: 1, have: 0 }
    );
}

#[test]
fn a_minimum_preempts_the_demand_of_a_higher_priority() {
    // 1 is below its minimum; 0 ranks higher but holds more than its own minimum.
    let accounts = [account(50, 1, 5, 3), account(0, 1, 5, 1)];
    let servers = [held(0), held(0)];
    let round = run(&accounts, &servers);
    assert_eq!(moves(&round), vec![(0, Some(0), Some(1))]);
    assert_eq!(
        round.decisions[0].reason().source,
        Source::Preempted {
            from: 0,
            from_priority: 50
        }
    );
    assert_eq!(round.shortfalls[0].account, 0);
}

#[test]
fn a_demand_never_preempts_an_equal_or_higher_priority() {
    let accounts = [
        account(5, 1, 5, 3),
        account(5, 1, 5, 2),
        account(9, 1, 5, 2),
    ];
    let servers = [held(0), held(1), held(1), held(2), held(2)];
    let round = run(&accounts, &servers);
    assert!(round.decisions.is_empty());
    assert_eq!(round.shortfalls.len(), 1);
    let shortfall = &round.shortfalls[0];
    assert_eq!((shortfall.account, shortfall.have), (0, 1));
    assert_eq!(
        shortfall.passed_over,
        vec![
            PassedOver {
                server: 1,
                why: PassOverWhy::HigherPriority {
                    account: 1,
                    priority: 5
                }
            },
            PassedOver {
                server: 3,
                why: PassOverWhy::HigherPriority {
                    account: 2,
                    priority: 9
                }
            },
        ]
    );
}

#[test]
fn incoming_servers_count_and_never_move() {
    // 0 has one server incoming: at its demand 1, it takes nothing; 1 cannot take it.
    let accounts = [account(0, 1, 5, 1), account(50, 1, 5, 1)];
    let servers = [incoming(0), unavailable()];
    let round = run(&accounts, &servers);
    assert!(round.decisions.is_empty());
    assert_eq!(round.shortfalls[0].account, 1);
    assert_eq!(
        round.shortfalls[0].term,
        SlaTerm::BelowMinimum { min: 1, have: 0 }
    );
}

#[test]
fn a_slot_naming_an_unknown_account_is_left_alone() {
    let accounts = [account(0, 1, 5, 1)];
    let servers = [held(7), incoming(7), free()];
    let round = run(&accounts, &servers);
    assert_eq!(moves(&round), vec![(2, None, Some(0))]);
}

#[test]
fn an_inverted_sla_keeps_its_minimum() {
    let accounts = [account(0, 3, 1, 0)];
    assert_eq!(accounts[0].target(), 3);
    let servers = [free(), free(), free(), free()];
    assert_eq!(run(&accounts, &servers).decisions.len(), 3);
}

#[test]
fn reasons_read_as_audit_lines() {
    let names = ["shop", "blog"];
    let account_name = |ix: AccountIx| names[ix as usize].to_string();
    let server_name = |ix: u32| format!("#{ix}");
    let reason = Reason {
        account: 0,
        server: 12,
        term: SlaTerm::BelowDemand { demand: 3, have: 2 },
        source: Source::Free,
        passed_over: vec![
            PassedOver {
                server: 4,
                why: PassOverWhy::Cooldown {
                    left: Duration::from_millis(6100),
                },
            },
            PassedOver {
                server: 9,
                why: PassOverWhy::AtMinimum { account: 1, min: 1 },
            },
        ],
    };
    assert_eq!(
        reason.describe(account_name, server_name),
        "shop below its demand (3 > 2 servers); took free server #12; \
         passed over #4 (cooldown 6.1 s left), #9 (blog at its minimum 1)"
    );
    let reclaim = Reason {
        source: Source::Preempted {
            from: 1,
            from_priority: 3,
        },
        passed_over: vec![],
        ..reason
    };
    assert_eq!(
        reclaim.describe(account_name, server_name),
        "shop below its demand (3 > 2 servers); took server #12 from blog (priority 3, above its minimum)"
    );
    let shortfall = Shortfall {
        account: 1,
        wanted: 2,
        have: 1,
        term: SlaTerm::BelowMinimum { min: 2, have: 1 },
        passed_over: vec![PassedOver {
            server: 3,
            why: PassOverWhy::HigherPriority {
                account: 0,
                priority: 9,
            },
        }],
    };
    assert_eq!(
        shortfall.describe(account_name, server_name),
        "blog below its minimum (1 < 2 servers); 1 short; passed over #3 (shop has priority 9, not lower)"
    );
}

#[test]
fn passed_over_lists_are_capped() {
    let accounts = [account(0, 1, 5, 1)];
    let servers: Vec<ServerView> = (0..10).map(|_| avoiding(free(), 0)).collect();
    let round = run(&accounts, &servers);
    assert_eq!(round.shortfalls[0].passed_over.len(), MAX_PASSED_OVER);
}

#[test]
fn a_reused_arbiter_decides_as_a_fresh_one() {
    let mut arbiter = Arbiter::default();
    let big_accounts = [
        account(50, 1, 5, 3),
        account(7, 1, 5, 2),
        account(3, 1, 5, 2),
    ];
    let big_servers = [
        held(0),
        held(1),
        held(1),
        held(2),
        held(2),
        free(),
        unavailable(),
    ];
    let small_accounts = [account(0, 1, 2, 9)];
    let small_servers = [held(0), held(0), held(0)];
    for (accounts, servers) in [
        (&big_accounts[..], &big_servers[..]),
        (&small_accounts[..], &small_servers[..]),
        (&big_accounts[..], &big_servers[..]),
    ] {
        let view = SiteView {
            accounts,
            servers,
            now: NOW,
            cooldown: COOLDOWN,
        };
        assert_eq!(arbiter.round(&view), arbitrate(&view));
    }
}
