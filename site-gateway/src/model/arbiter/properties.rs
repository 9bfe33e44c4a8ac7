//! Property tests of arbitration over random sites: the safety and SLA properties of
//! issue #3 ("never below a minimum where the site has the servers, never above a maximum,
//! priority respected when short, cooldown respected, no server in two groups").

use std::collections::HashSet;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

const NOW: Millis = Millis(1_000_000);
const COOLDOWN: Duration = Duration::from_secs(10);

/// A random site: up to 30 accounts with few distinct priorities (so ties happen), up to
/// 300 servers, about a third of the held ones inside their cooldown, a quarter avoiding an
/// account.
fn site() -> impl Strategy<Value = (Vec<AccountView>, Vec<ServerView>)> {
    (1u32..30).prop_flat_map(|accounts| {
        let account = (0u32..6, 0u32..4, 0u32..6, 0u32..12).prop_map(
            |(priority, min_servers, extra, demand)| AccountView {
                takes_machines: true,
                priority,
                min_servers,
                max_servers: min_servers + extra,
                demand,
            },
        );
        let server = (
            0u8..10,
            0..accounts,
            0u64..30_000,
            0.0f32..2.0,
            0u8..4,
            0..accounts,
        )
            .prop_map(
                |(kind, account, ago, load, avoid_roll, avoided)| ServerView {
                    machine: false,
                    slot: match kind {
                        0 | 1 => Slot::Free,
                        2..=7 => Slot::Held {
                            account,
                            since: Millis(NOW.0 - ago),
                        },
                        8 => Slot::Incoming { account },
                        _ => Slot::Unavailable,
                    },
                    load,
                    avoid: (avoid_roll == 0).then_some(avoided),
                },
            );
        (vec(account, accounts as usize), vec(server, 0..300))
    })
}

fn view<'a>(accounts: &'a [AccountView], servers: &'a [ServerView]) -> SiteView<'a> {
    SiteView {
        accounts,
        servers,
        now: NOW,
        cooldown: COOLDOWN,
    }
}

fn movable(view: &SiteView, server: &ServerView) -> bool {
    matches!(server.slot, Slot::Held { since, .. } if view.now.since(since) >= view.cooldown)
}

/// The site after the shell performed the round: a reclaimed server is promised to its new
/// account, a released one is out of every group while it drains.
fn apply(view: &SiteView, round: &Round) -> Vec<Slot> {
    let mut slots: Vec<Slot> = view.servers.iter().map(|server| server.slot).collect();
    for decision in &round.decisions {
        let slot = &mut slots[decision.server() as usize];
        *slot = match *decision {
            Decision::Assign { account, .. } => Slot::Held {
                account,
                since: view.now,
            },
            Decision::Reclaim { to, .. } => Slot::Incoming { account: to },
            Decision::Release { .. } => Slot::Unavailable,
        };
    }
    slots
}

fn supply(accounts: usize, slots: impl Iterator<Item = Slot>) -> Vec<u32> {
    let mut supply = vec![0; accounts];
    for slot in slots {
        if let Slot::Held { account, .. } | Slot::Incoming { account } = slot {
            supply[account as usize] += 1;
        }
    }
    supply
}

/// Everything the properties look at, computed once per case.
struct Outcome<'a> {
    view: SiteView<'a>,
    round: Round,
    before: Vec<u32>,
    after: Vec<u32>,
    /// Servers each account received this round.
    received: Vec<u32>,
    /// Servers named by a decision.
    touched: HashSet<u32>,
}

fn outcome<'a>(accounts: &'a [AccountView], servers: &'a [ServerView]) -> Outcome<'a> {
    let view = view(accounts, servers);
    let round = arbitrate(&view);
    let before = supply(accounts.len(), servers.iter().map(|server| server.slot));
    let after = supply(accounts.len(), apply(&view, &round).into_iter());
    let mut received = vec![0; accounts.len()];
    for decision in &round.decisions {
        if let Decision::Assign { account: to, .. } | Decision::Reclaim { to, .. } = *decision {
            received[to as usize] += 1;
        }
    }
    let touched = round.decisions.iter().map(Decision::server).collect();
    Outcome {
        view,
        round,
        before,
        after,
        received,
        touched,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_server_is_in_two_decisions_and_each_move_starts_from_its_slot(
        (accounts, servers) in site()
    ) {
        let out = outcome(&accounts, &servers);
        prop_assert_eq!(out.touched.len(), out.round.decisions.len(), "a server in two decisions");
        for decision in &out.round.decisions {
            let server = &servers[decision.server() as usize];
            match *decision {
                Decision::Assign { account, .. } => {
                    prop_assert_eq!(server.slot, Slot::Free);
                    prop_assert_ne!(server.avoid, Some(account));
                }
                Decision::Reclaim { from, to, .. } => {
                    let held_by_from = matches!(server.slot, Slot::Held { account, .. } if account == from);
                    prop_assert!(held_by_from, "server not held by {}", from);
                    prop_assert_ne!(from, to);
                    prop_assert_ne!(server.avoid, Some(to));
                }
                Decision::Release { from, .. } => {
                    let held_by_from = matches!(server.slot, Slot::Held { account, .. } if account == from);
                    prop_assert!(held_by_from, "server not held by {}", from);
                }
            }
            prop_assert!(decision.reason().passed_over.len() <= MAX_PASSED_OVER);
        }
    }

    #[test]
    fn no_decision_moves_a_server_inside_its_cooldown((accounts, servers) in site()) {
        let out = outcome(&accounts, &servers);
        for decision in &out.round.decisions {
            if let Decision::Reclaim { server, .. } | Decision::Release { server, .. } = *decision {
                prop_assert!(movable(&out.view, &servers[server as usize]), "server {} moved", server);
            }
        }
    }

    /// Each held or incoming server counts for exactly one account: supply is conserved
    /// by reclaims, and changes by one per assignment and release.
    #[test]
    fn a_server_counts_for_exactly_one_account((accounts, servers) in site()) {
        let out = outcome(&accounts, &servers);
        let (mut assigned, mut released) = (0u32, 0u32);
        for decision in &out.round.decisions {
            match decision {
                Decision::Assign { .. } => assigned += 1,
                Decision::Release { .. } => released += 1,
                Decision::Reclaim { .. } => {}
            }
        }
        let before: u32 = out.before.iter().sum();
        let after: u32 = out.after.iter().sum();
        prop_assert_eq!(after + released, before + assigned);
    }

    /// No account is pushed past its target (so never past its maximum), and one that
    /// was above its maximum keeps only servers that cannot move yet.
    #[test]
    fn no_account_ends_above_its_maximum_unless_the_excess_cannot_move(
        (accounts, servers) in site()
    ) {
        let out = outcome(&accounts, &servers);
        for (ix, account) in accounts.iter().enumerate() {
            let (before, after) = (out.before[ix], out.after[ix]);
            prop_assert!(after <= account.target().max(before), "account {} grew past its target", ix);
            if after > account.ceiling() {
                let kept_movable = servers.iter().enumerate().any(|(server, view)| {
                    matches!(view.slot, Slot::Held { account, .. } if account as usize == ix)
                        && movable(&out.view, view)
                        && !out.touched.contains(&(server as u32))
                });
                prop_assert!(!kept_movable, "account {} above its maximum kept a movable server", ix);
            }
        }
    }

    /// If the free servers and the movable servers above their accounts' minimums cover
    /// every missing minimum, no account ends below its minimum. (Counted without the
    /// servers that avoid some account, which can only add to what is possible.)
    #[test]
    fn no_account_ends_below_its_minimum_where_the_site_has_the_servers(
        (accounts, servers) in site()
    ) {
        let out = outcome(&accounts, &servers);
        let missing: u32 = accounts
            .iter()
            .zip(&out.before)
            .map(|(account, &have)| account.min_servers.saturating_sub(have))
            .sum();
        let mut movable_unavoided = vec![0u32; accounts.len()];
        let mut pool = 0u32;
        for server in &servers {
            match server.slot {
                Slot::Free if server.avoid.is_none() => pool += 1,
                Slot::Held { account, .. } if server.avoid.is_none() && movable(&out.view, server) => {
                    movable_unavoided[account as usize] += 1;
                }
                _ => {}
            }
        }
        for (ix, account) in accounts.iter().enumerate() {
            pool += movable_unavoided[ix].min(out.before[ix].saturating_sub(account.min_servers));
        }
        if pool >= missing {
            for (ix, account) in accounts.iter().enumerate() {
                prop_assert!(out.after[ix] >= account.min_servers, "account {} below its minimum", ix);
            }
        }
    }

    /// A shortfall is reported exactly for the accounts left below their target, and
    /// only when nothing was left that the account could use: no free server, no surplus,
    /// and (priority respected) no movable server of an account it may preempt that was
    /// above its minimum (any account, for a minimum; a lower priority, for a demand).
    /// Nor was a server it could use released.
    #[test]
    fn a_shortfall_leaves_nothing_it_could_use_in_free_or_lower_priority_hands(
        (accounts, servers) in site()
    ) {
        let out = outcome(&accounts, &servers);
        let short: Vec<&Shortfall> = out.round.shortfalls.iter().collect();
        let expected: Vec<u32> = (0..accounts.len() as u32)
            .filter(|&ix| out.after[ix as usize] < accounts[ix as usize].target())
            .collect();
        let mut reported: Vec<u32> = short.iter().map(|shortfall| shortfall.account).collect();
        reported.sort_unstable();
        prop_assert_eq!(reported, expected);
        for shortfall in short {
            let a = shortfall.account;
            let needy = &accounts[a as usize];
            prop_assert_eq!(shortfall.have, out.after[a as usize]);
            prop_assert_eq!(shortfall.wanted, needy.target());
            let below_minimum = shortfall.have < needy.min_servers;
            prop_assert_eq!(matches!(shortfall.term, SlaTerm::BelowMinimum { .. }), below_minimum);
            for (ix, server) in servers.iter().enumerate() {
                let usable = server.avoid != Some(a);
                let touched = out.touched.contains(&(ix as u32));
                if server.slot == Slot::Free {
                    prop_assert!(touched || !usable, "free server {} left while {} short", ix, a);
                }
                let Slot::Held { account: d, .. } = server.slot else { continue };
                if d == a || !movable(&out.view, server) || !usable || touched {
                    continue;
                }
                // What the donor had without this round's gains: a lower bound of what it
                // had when the needy account was served.
                let donor = &accounts[d as usize];
                let had = out.after[d as usize] - out.received[d as usize];
                let may_preempt = below_minimum || donor.priority < needy.priority;
                prop_assert!(had <= donor.target(), "account {} kept a surplus server {}", d, ix);
                prop_assert!(
                    !(may_preempt && had > donor.min_servers),
                    "account {} (priority {}) kept server {} above its minimum while {} (priority {}) short",
                    d, donor.priority, ix, a, needy.priority
                );
            }
            for decision in &out.round.decisions {
                if let Decision::Release { server, .. } = *decision {
                    prop_assert_eq!(servers[server as usize].avoid, Some(a));
                }
            }
        }
    }

    /// A round depends on its view only: a reused arbiter decides as a fresh one.
    #[test]
    fn a_reused_arbiter_decides_as_a_fresh_one(
        (first_accounts, first_servers) in site(),
        (accounts, servers) in site(),
    ) {
        let mut arbiter = Arbiter::default();
        arbiter.round(&view(&first_accounts, &first_servers));
        prop_assert_eq!(arbiter.round(&view(&accounts, &servers)), arbitrate(&view(&accounts, &servers)));
    }
}
