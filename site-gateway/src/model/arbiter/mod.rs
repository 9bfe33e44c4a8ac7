//! The site's arbitration between accounts: from every account's demand and SLA and every
//! server's state, which servers move where, with a reason for each move and a report of
//! what could not be served. A pure function of a [`SiteView`]; the `SiteMaster` actor
//! builds the view, performs the decisions (drain, re-initialize, lease) and audits them.
//!
//! The rules, in order (ties go to the lower index, so a round is deterministic):
//!
//! 1. `supply[a]` counts the servers `Held` by or `Incoming` to `a`; its target is its
//!    demand clamped to [min, max].
//! 2. Needs are served in two passes, each highest priority first: first every account
//!    below its minimum (up to its minimum), then every account below its target.
//! 3. A need takes, in order: free servers (not one that `avoid`s the account); then
//!    servers of accounts above their target, lowest priority first, down to their target;
//!    then preemption: servers of accounts above their minimum, lowest priority first, down
//!    to their minimum. For a *demand* only accounts of strictly lower priority are
//!    preempted; for a *minimum* any account above its own minimum is (a minimum is a
//!    promise; demand above a minimum is not, so it yields whatever its priority; this is
//!    what makes "never below a minimum where the site has the servers" hold).
//!    Only a `Held` server past its cooldown moves; `Incoming` and `Unavailable` never do.
//! 4. What cannot be served is a [`Shortfall`].
//! 5. Then every account still above its target releases its movable surplus, lowest load
//!    first. (Any such server was already offered to every account short of servers in
//!    step 3; only one they `avoid` is left.)
//! 6. A server appears in at most one decision per round.
//!
//! At 100,000 servers the round is a few linear passes: [`Arbiter`] keeps its buffers
//! between rounds, groups the servers per account once (movable first), and walks the
//! accounts in priority order with cursors that only move forward, since an account that
//! can no longer give a server never can again within the round.

mod reason;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use reason::{MAX_PASSED_OVER, PassOverWhy, PassedOver, Reason, SlaTerm, Source};

use super::Millis;

/// An index into [`SiteView::accounts`].
pub type AccountIx = u32;

/// What the arbiter needs to know of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountView {
    /// Higher wins when servers are short.
    pub priority: u32,
    pub min_servers: u32,
    pub max_servers: u32,
    /// From the account's `DemandModel`; clamped to [min, max] here.
    pub demand: u32,
    /// It has an image, so machines may serve it.
    pub takes_machines: bool,
}

impl AccountView {
    /// The most servers the account may hold: `max_servers`, but never below the minimum
    /// (validated config has min ≤ max; should an unvalidated view reach here, the minimum
    /// wins and nothing panics).
    pub fn ceiling(&self) -> u32 {
        self.max_servers.max(self.min_servers)
    }

    /// The servers the account should have: its demand within [min, max].
    pub fn target(&self) -> u32 {
        self.demand.min(self.ceiling()).max(self.min_servers)
    }
}

/// Where a server stands, as far as arbitration cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Connected, healthy, no lease.
    Free,
    /// Leased (starting or serving) to `account`, assigned at `since`.
    Held { account: AccountIx, since: Millis },
    /// Draining from its old group, already promised to `account`.
    Incoming { account: AccountIx },
    /// Offline, failed, stopping, or draining with no destination.
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerView {
    pub slot: Slot,
    /// The server's last load report, in the unit of `target_load`; used to move and
    /// release the least loaded servers first (the least work to drain).
    pub load: f32,
    /// A workload of this account just failed here: don't assign it here again.
    pub avoid: Option<AccountIx>,
    /// A machine: it serves only accounts that have an image to boot.
    pub machine: bool,
}

/// The site at one instant. A server index is its position in `servers`; an account index
/// its position in `accounts`. A slot naming an account index out of range is treated as
/// unavailable.
#[derive(Debug, Clone, Copy)]
pub struct SiteView<'a> {
    pub accounts: &'a [AccountView],
    pub servers: &'a [ServerView],
    pub now: Millis,
    /// A server that moved less than this long ago does not move again: the move has not
    /// paid for its drain and restart yet.
    pub cooldown: Duration,
}

impl SiteView<'_> {
    /// Why `server` may not serve `account`, if it may not.
    fn unfit(&self, server: u32, account: AccountIx) -> Option<PassOverWhy> {
        let view = &self.servers[server as usize];
        if view.avoid == Some(account) {
            Some(PassOverWhy::AvoidsAccount)
        } else if view.machine
            && !self
                .accounts
                .get(account as usize)
                .is_some_and(|account| account.takes_machines)
        {
            Some(PassOverWhy::NoImage)
        } else {
            None
        }
    }
}

/// One move. The shell drains before a server leaves a group (`Reclaim`, `Release`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A free server joins `account`.
    Assign {
        server: u32,
        account: AccountIx,
        reason: Reason,
    },
    /// Drain from `from`, then join `to`.
    Reclaim {
        server: u32,
        from: AccountIx,
        to: AccountIx,
        reason: Reason,
    },
    /// Drain, then free: `from` is above its demand and nobody needs the server.
    Release {
        server: u32,
        from: AccountIx,
        reason: Reason,
    },
}

impl Decision {
    pub fn server(&self) -> u32 {
        match self {
            Decision::Assign { server, .. }
            | Decision::Reclaim { server, .. }
            | Decision::Release { server, .. } => *server,
        }
    }

    pub fn reason(&self) -> &Reason {
        match self {
            Decision::Assign { reason, .. }
            | Decision::Reclaim { reason, .. }
            | Decision::Release { reason, .. } => reason,
        }
    }
}

/// An account the round could not bring to its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub account: AccountIx,
    /// Its target (demand within [min, max]).
    pub wanted: u32,
    /// The servers it has after this round's decisions.
    pub have: u32,
    /// `BelowMinimum` if it is still below its minimum, else `BelowDemand`.
    pub term: SlaTerm,
    /// Servers it could not take and why (at most [`MAX_PASSED_OVER`]).
    pub passed_over: Vec<PassedOver>,
}

impl Shortfall {
    /// One audit line, e.g. "shop below its minimum (1 < 2 servers); 1 short; passed over
    /// #9 (blog at its minimum 1)".
    pub fn describe(
        &self,
        account_name: impl Fn(AccountIx) -> String,
        server_name: impl Fn(u32) -> String,
    ) -> String {
        format!(
            "{}; {} short{}",
            reason::describe_term(&account_name(self.account), self.term),
            self.wanted.saturating_sub(self.have),
            reason::describe_passed_over(&self.passed_over, &account_name, &server_name)
        )
    }
}

/// The outcome of one round: decisions in the order made (minimums, then demands, then
/// releases), and shortfalls, minimums first, each highest priority first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub decisions: Vec<Decision>,
    pub shortfalls: Vec<Shortfall>,
}

/// One round of arbitration with fresh buffers. The `SiteMaster` keeps an [`Arbiter`]
/// instead, to reuse them.
pub fn arbitrate(view: &SiteView) -> Round {
    Arbiter::default().round(view)
}

/// Which pass of step 2 a need belongs to: it decides the SLA term and who may be
/// preempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Minimum,
    Demand,
}

/// How far past the last donor of lower priority a demand shortfall looks for accounts
/// to name as "not lower priority": a bounded look, since it only feeds the audit line.
const HIGHER_PRIORITY_LOOKAHEAD: usize = 32;

/// The arbiter's scratch buffers, kept between rounds so that a round at 100,000 servers
/// allocates only its output. Holds no state that carries meaning from one round to the
/// next: every round starts from its view.
#[derive(Debug, Default)]
pub struct Arbiter {
    /// Per account: servers `Held` + `Incoming`, updated as servers are taken.
    supply: Vec<u32>,
    /// Per account: its target and its minimum, copied out of the view for tight loops.
    target: Vec<u32>,
    min: Vec<u32>,
    /// The account's `Held` servers are `held[held_start[a]..held_start[a + 1]]`: the
    /// movable ones first (`..movable_end[a]`), then those in cooldown.
    held_start: Vec<u32>,
    movable_end: Vec<u32>,
    held: Vec<u32>,
    /// Per account: position of its first movable server not yet taken.
    next_movable: Vec<u32>,
    /// Per account: movable servers not yet taken.
    movable_left: Vec<u32>,
    /// Per account: whether its movable servers are sorted by load yet (done on first use,
    /// since most accounts give nothing in a round).
    sorted: Vec<bool>,
    /// Per account, while grouping: where its next cooldown server goes.
    cooldown_fill: Vec<u32>,
    /// Per server: taken by a decision this round.
    taken: Vec<bool>,
    /// Free servers in index order; `free_cursor` is the first one not yet taken.
    free: Vec<u32>,
    free_cursor: usize,
    /// Accounts holding servers, lowest priority first: (priority << 32 | index).
    donors: Vec<u64>,
    surplus_cursor: usize,
    preempt_cursor: usize,
    /// All accounts, highest priority first: (!priority << 32 | index).
    needy: Vec<u64>,
    /// Per account: left below its minimum by the first pass (the second cannot help it).
    short_of_minimum: Vec<bool>,
}

impl Arbiter {
    /// One round over `view`.
    pub fn round(&mut self, view: &SiteView) -> Round {
        self.prepare(view);
        let mut round = Round::default();
        for pass in [Pass::Minimum, Pass::Demand] {
            // Rule 3's preemption differs per pass; its cursor restarts so that the second
            // pass can name the accounts at their minimum again.
            self.preempt_cursor = 0;
            for i in 0..self.needy.len() {
                let account = self.needy[i] as u32;
                let ix = account as usize;
                let goal = match pass {
                    Pass::Minimum => self.min[ix],
                    Pass::Demand if self.short_of_minimum[ix] => continue,
                    Pass::Demand => self.target[ix],
                };
                if self.supply[ix] < goal {
                    self.serve(view, account, goal, pass, &mut round);
                }
            }
        }
        self.release(view, &mut round);
        round
    }

    /// Heap bytes held by the scratch buffers (for `leasehold bench decide`).
    pub fn heap_bytes(&self) -> usize {
        fn bytes<T>(buffer: &Vec<T>) -> usize {
            buffer.capacity() * size_of::<T>()
        }
        bytes(&self.supply)
            + bytes(&self.target)
            + bytes(&self.min)
            + bytes(&self.held_start)
            + bytes(&self.movable_end)
            + bytes(&self.held)
            + bytes(&self.next_movable)
            + bytes(&self.movable_left)
            + bytes(&self.sorted)
            + bytes(&self.cooldown_fill)
            + bytes(&self.taken)
            + bytes(&self.free)
            + bytes(&self.donors)
            + bytes(&self.needy)
            + bytes(&self.short_of_minimum)
    }

    /// Rule 1, and the per-account grouping of servers that the rest walks.
    fn prepare(&mut self, view: &SiteView) {
        let accounts = view.accounts.len();
        let reset = |buffer: &mut Vec<u32>, len: usize| {
            buffer.clear();
            buffer.resize(len, 0);
        };
        reset(&mut self.supply, accounts);
        reset(&mut self.movable_left, accounts);
        reset(&mut self.cooldown_fill, accounts);
        self.target.clear();
        self.target
            .extend(view.accounts.iter().map(AccountView::target));
        self.min.clear();
        self.min
            .extend(view.accounts.iter().map(|account| account.min_servers));
        self.sorted.clear();
        self.sorted.resize(accounts, false);
        self.short_of_minimum.clear();
        self.short_of_minimum.resize(accounts, false);
        self.taken.clear();
        self.taken.resize(view.servers.len(), false);
        self.free.clear();
        self.free_cursor = 0;
        self.surplus_cursor = 0;
        self.preempt_cursor = 0;

        // Count: movable servers in `movable_left`, cooldown ones in `cooldown_fill`.
        for (ix, server) in view.servers.iter().enumerate() {
            match server.slot {
                Slot::Free => self.free.push(ix as u32),
                Slot::Held { account, since } if (account as usize) < accounts => {
                    self.supply[account as usize] += 1;
                    if is_movable(view, since) {
                        self.movable_left[account as usize] += 1;
                    } else {
                        self.cooldown_fill[account as usize] += 1;
                    }
                }
                Slot::Incoming { account } if (account as usize) < accounts => {
                    self.supply[account as usize] += 1;
                }
                _ => {}
            }
        }
        // Lay out each account's range: movable first, then cooldown.
        self.held_start.clear();
        self.movable_end.clear();
        self.next_movable.clear();
        let mut position = 0u32;
        for account in 0..accounts {
            self.held_start.push(position);
            self.next_movable.push(position);
            let movable_end = position + self.movable_left[account];
            self.movable_end.push(movable_end);
            position = movable_end + self.cooldown_fill[account];
            self.cooldown_fill[account] = movable_end;
        }
        self.held_start.push(position);
        self.held.clear();
        self.held.resize(position as usize, 0);
        // Fill, in server index order within each part (so ties go to the lower index).
        for (ix, server) in view.servers.iter().enumerate() {
            if let Slot::Held { account, since } = server.slot {
                let account = account as usize;
                if account >= accounts {
                    continue;
                }
                let fill = if is_movable(view, since) {
                    &mut self.next_movable[account]
                } else {
                    &mut self.cooldown_fill[account]
                };
                self.held[*fill as usize] = ix as u32;
                *fill += 1;
            }
        }
        self.next_movable
            .copy_from_slice(&self.held_start[..accounts]);

        self.donors.clear();
        self.needy.clear();
        for (ix, account) in view.accounts.iter().enumerate() {
            let ix = ix as u64;
            if self.held_start[ix as usize + 1] > self.held_start[ix as usize] {
                self.donors.push((u64::from(account.priority) << 32) | ix);
            }
            self.needy.push((u64::from(!account.priority) << 32) | ix);
        }
        self.donors.sort_unstable();
        self.needy.sort_unstable();
    }

    /// Rule 3 for one account: take servers until it reaches `goal` or nothing is left
    /// that it may take.
    fn serve(
        &mut self,
        view: &SiteView,
        account: AccountIx,
        goal: u32,
        pass: Pass,
        round: &mut Round,
    ) {
        let ix = account as usize;
        // This need's own cursors: what it skipped (taken, or avoided by it) stays
        // skipped for it, so a long need does not rescan.
        let mut free_position = self.free_cursor;
        let mut surplus_position = self.surplus_cursor;
        let mut preempt_position = self.preempt_cursor;
        let mut passed_over = Vec::new();
        while self.supply[ix] < goal {
            let have = self.supply[ix];
            let term = match pass {
                Pass::Minimum => SlaTerm::BelowMinimum { min: goal, have },
                Pass::Demand => SlaTerm::BelowDemand { demand: goal, have },
            };
            let reason = |server, source, passed_over| Reason {
                account,
                server,
                term,
                source,
                passed_over,
            };
            if let Some(server) =
                self.take_free(view, account, &mut free_position, &mut passed_over)
            {
                let reason = reason(server, Source::Free, std::mem::take(&mut passed_over));
                round.decisions.push(Decision::Assign {
                    server,
                    account,
                    reason,
                });
                continue;
            }
            let taken = self
                .take_surplus(view, account, &mut surplus_position, &mut passed_over)
                .map(|(server, from)| {
                    (
                        server,
                        from,
                        Source::Surplus {
                            from,
                            from_demand: self.target[from as usize],
                        },
                    )
                })
                .or_else(|| {
                    self.take_preempted(
                        view,
                        account,
                        pass,
                        &mut preempt_position,
                        &mut passed_over,
                    )
                    .map(|(server, from)| {
                        let from_priority = view.accounts[from as usize].priority;
                        (
                            server,
                            from,
                            Source::Preempted {
                                from,
                                from_priority,
                            },
                        )
                    })
                });
            if let Some((server, from, source)) = taken {
                let reason = reason(server, source, std::mem::take(&mut passed_over));
                round.decisions.push(Decision::Reclaim {
                    server,
                    from,
                    to: account,
                    reason,
                });
                continue;
            }
            if pass == Pass::Demand {
                self.note_higher_priority(view, account, preempt_position, &mut passed_over);
            }
            let have = self.supply[ix];
            let term = if have < self.min[ix] {
                self.short_of_minimum[ix] = true;
                SlaTerm::BelowMinimum {
                    min: self.min[ix],
                    have,
                }
            } else {
                SlaTerm::BelowDemand {
                    demand: self.target[ix],
                    have,
                }
            };
            round.shortfalls.push(Shortfall {
                account,
                wanted: self.target[ix],
                have,
                term,
                passed_over,
            });
            return;
        }
    }

    /// 3 (i): the first free server that `account` does not avoid.
    fn take_free(
        &mut self,
        view: &SiteView,
        account: AccountIx,
        position: &mut usize,
        passed_over: &mut Vec<PassedOver>,
    ) -> Option<u32> {
        let mut i = (*position).max(self.free_cursor);
        while i < self.free.len() {
            let server = self.free[i];
            if !self.taken[server as usize] {
                if let Some(why) = view.unfit(server, account) {
                    note(passed_over, server, why);
                } else {
                    self.taken[server as usize] = true;
                    self.supply[account as usize] += 1;
                    *position = i + 1;
                    while self
                        .free
                        .get(self.free_cursor)
                        .is_some_and(|&free| self.taken[free as usize])
                    {
                        self.free_cursor += 1;
                    }
                    return Some(server);
                }
            }
            i += 1;
        }
        *position = i;
        None
    }

    /// 3 (ii): a movable server of an account above its target, lowest priority first.
    fn take_surplus(
        &mut self,
        view: &SiteView,
        account: AccountIx,
        position: &mut usize,
        passed_over: &mut Vec<PassedOver>,
    ) -> Option<(u32, AccountIx)> {
        let mut i = (*position).max(self.surplus_cursor);
        while i < self.donors.len() {
            let donor = self.donors[i] as u32;
            let d = donor as usize;
            let above_target = self.supply[d] > self.target[d];
            if donor != account && above_target {
                if self.movable_left[d] > 0 {
                    if let Some(server) = self.take_from(view, donor, Some(account), passed_over) {
                        self.supply[account as usize] += 1;
                        *position = i;
                        return Some((server, donor));
                    }
                } else {
                    self.note_cooldown(view, donor, passed_over);
                }
            }
            // Above-target only shrinks within a round (takers are below their target), and
            // movable servers only get taken: a donor that cannot give now never will.
            if i == self.surplus_cursor && !(above_target && self.movable_left[d] > 0) {
                self.surplus_cursor += 1;
            }
            i += 1;
        }
        *position = i;
        None
    }

    /// 3 (iii): a movable server of an account above its minimum, lowest priority first;
    /// for a demand, only of an account of strictly lower priority.
    fn take_preempted(
        &mut self,
        view: &SiteView,
        account: AccountIx,
        pass: Pass,
        position: &mut usize,
        passed_over: &mut Vec<PassedOver>,
    ) -> Option<(u32, AccountIx)> {
        let priority = view.accounts[account as usize].priority;
        let mut i = (*position).max(self.preempt_cursor);
        while i < self.donors.len() {
            let key = self.donors[i];
            let donor = key as u32;
            let d = donor as usize;
            if pass == Pass::Demand && (key >> 32) as u32 >= priority {
                break;
            }
            let above_minimum = self.supply[d] > self.min[d];
            if donor != account {
                if above_minimum && self.movable_left[d] > 0 {
                    if let Some(server) = self.take_from(view, donor, Some(account), passed_over) {
                        self.supply[account as usize] += 1;
                        *position = i;
                        return Some((server, donor));
                    }
                } else if above_minimum {
                    self.note_cooldown(view, donor, passed_over);
                } else if let Some(server) = self.first_movable(donor) {
                    note(
                        passed_over,
                        server,
                        PassOverWhy::AtMinimum {
                            account: donor,
                            min: self.min[d],
                        },
                    );
                }
            }
            // An account at its minimum gains servers in this pass only by being served,
            // and by then every account that could preempt it has been served: the needs
            // run highest priority first, and a minimum fills only up to the minimum.
            if i == self.preempt_cursor && !(above_minimum && self.movable_left[d] > 0) {
                self.preempt_cursor += 1;
            }
            i += 1;
        }
        *position = i;
        None
    }

    /// Rule 5: every account still above its target releases its movable surplus, least
    /// loaded first.
    fn release(&mut self, view: &SiteView, round: &mut Round) {
        for (ix, account) in view.accounts.iter().enumerate() {
            let from = ix as AccountIx;
            while self.supply[ix] > self.target[ix] && self.movable_left[ix] > 0 {
                let have = self.supply[ix];
                let term = if have > account.ceiling() {
                    SlaTerm::AboveMaximum {
                        max: account.ceiling(),
                        have,
                    }
                } else {
                    SlaTerm::AboveDemand {
                        demand: self.target[ix],
                        have,
                    }
                };
                let mut passed_over = Vec::new();
                let Some(server) = self.take_from(view, from, None, &mut passed_over) else {
                    break;
                };
                let reason = Reason {
                    account: from,
                    server,
                    term,
                    source: Source::OwnSurplus,
                    passed_over,
                };
                round.decisions.push(Decision::Release {
                    server,
                    from,
                    reason,
                });
            }
        }
    }

    /// Takes `donor`'s least loaded movable server that `taker` does not avoid, and counts
    /// it out of the donor's supply (the caller counts it in where it goes).
    fn take_from(
        &mut self,
        view: &SiteView,
        donor: AccountIx,
        taker: Option<AccountIx>,
        passed_over: &mut Vec<PassedOver>,
    ) -> Option<u32> {
        let d = donor as usize;
        let end = self.movable_end[d] as usize;
        if !self.sorted[d] {
            let start = self.held_start[d] as usize;
            // Least loaded first: the least work to drain. `total_cmp` orders a NaN load
            // (a bad report) last instead of panicking; the index breaks ties.
            self.held[start..end].sort_unstable_by(|&x, &y| {
                let (lx, ly) = (view.servers[x as usize].load, view.servers[y as usize].load);
                lx.total_cmp(&ly).then(x.cmp(&y))
            });
            self.sorted[d] = true;
        }
        let mut k = self.next_movable[d] as usize;
        while k < end && self.taken[self.held[k] as usize] {
            k += 1;
        }
        self.next_movable[d] = k as u32;
        while k < end {
            let server = self.held[k];
            if !self.taken[server as usize] {
                if let Some(why) = taker.and_then(|taker| view.unfit(server, taker)) {
                    note(passed_over, server, why);
                } else {
                    self.taken[server as usize] = true;
                    self.movable_left[d] -= 1;
                    self.supply[d] -= 1;
                    return Some(server);
                }
            }
            k += 1;
        }
        None
    }

    /// The donor's first movable server not yet taken, to name it in a reason.
    fn first_movable(&self, donor: AccountIx) -> Option<u32> {
        let d = donor as usize;
        let range = self.next_movable[d] as usize..self.movable_end[d] as usize;
        self.held[range]
            .iter()
            .copied()
            .find(|&server| !self.taken[server as usize])
    }

    /// Names the donor's server that leaves cooldown soonest.
    fn note_cooldown(&self, view: &SiteView, donor: AccountIx, passed_over: &mut Vec<PassedOver>) {
        if passed_over.len() >= MAX_PASSED_OVER {
            return;
        }
        let d = donor as usize;
        let range = self.movable_end[d] as usize..self.held_start[d + 1] as usize;
        let soonest = self.held[range]
            .iter()
            .filter_map(|&server| match view.servers[server as usize].slot {
                Slot::Held { since, .. } => {
                    Some((view.cooldown.saturating_sub(view.now.since(since)), server))
                }
                _ => None,
            })
            .min();
        if let Some((left, server)) = soonest {
            note(passed_over, server, PassOverWhy::Cooldown { left });
        }
    }

    /// For a demand left short: the next accounts that could have given a server but do
    /// not rank lower, so the audit line says why they kept theirs.
    fn note_higher_priority(
        &self,
        view: &SiteView,
        account: AccountIx,
        from_position: usize,
        passed_over: &mut Vec<PassedOver>,
    ) {
        let donors = self
            .donors
            .iter()
            .skip(from_position)
            .take(HIGHER_PRIORITY_LOOKAHEAD);
        for &key in donors {
            if passed_over.len() >= MAX_PASSED_OVER {
                return;
            }
            let donor = key as u32;
            let d = donor as usize;
            if donor == account || self.supply[d] <= self.min[d] {
                continue;
            }
            if let Some(server) = self.first_movable(donor) {
                let priority = view.accounts[d].priority;
                note(
                    passed_over,
                    server,
                    PassOverWhy::HigherPriority {
                        account: donor,
                        priority,
                    },
                );
            }
        }
    }
}

fn is_movable(view: &SiteView, since: Millis) -> bool {
    view.now.since(since) >= view.cooldown
}

/// Keeps a passed-over server for the reason, once (a donor can be met by two steps of
/// rule 3), up to the cap.
fn note(passed_over: &mut Vec<PassedOver>, server: u32, why: PassOverWhy) {
    let known = passed_over.iter().any(|passed| passed.server == server);
    if !known && passed_over.len() < MAX_PASSED_OVER {
        passed_over.push(PassedOver { server, why });
    }
}
