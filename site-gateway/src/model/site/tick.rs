//! The periodic round of the site core: find failed servers, expire leases, then let the
//! arbiter decide and turn its decisions into leases, drains and commands.

use super::events::Grant;
use super::server::{Next, Phase, ServerEntry};
use super::{AVOID_AFTER_FAILURE, SiteModel, audit};
use crate::model::Millis;
use crate::model::arbiter::{AccountIx, AccountView, Decision, Round, ServerView, SiteView, Slot};
use crate::model::effects::{AuditKind, Effect, LeaseEndCause};
use crate::model::ownership::Owner;

impl SiteModel {
    pub fn tick(&mut self, now: Millis) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.tick_into(now, &mut effects);
        effects
    }

    /// [`Self::tick`], its effects pushed onto `effects`: the round's effects are moved
    /// once, not from one `Vec` to the next at every step (with the page faults of each
    /// new one at 100,000 servers).
    pub fn tick_into(&mut self, now: Millis, effects: &mut Vec<Effect>) {
        // A pass over every server costs a millisecond or more at 100,000 of them: the
        // passes for what most sites have none of (loans, machines, servers out of use)
        // are skipped while the census knows there are none.
        let census = self.census();
        // Servers lent for an account we own again are ours before the round counts them.
        if census.loans {
            effects.extend(self.take_home_loans(now));
        }
        // The views' buffers are kept from round to round: at 100,000 servers, allocating
        // them afresh cost page faults in every round.
        let mut views = std::mem::take(&mut self.views);
        if census.machines || census.loans {
            effects.extend(self.detect_failures(now));
            // Booting machines hold their leases before expiry is looked at; fences wait
            // for it (a machine is fenced only once its lease has ended).
            if census.machines {
                effects.extend(self.tick_machines(now));
            }
            // Loans first: a lent server's lease runs out with its loan, and the loan's
            // end is what the audit log should say.
            if census.loans {
                effects.extend(self.tick_lent(now));
            }
            effects.extend(self.expire_leases(now));
            self.server_views(now, &mut views.servers);
        } else if self.scanned.take() != Some(now) {
            // Nothing comes between them: one pass does all three, its effects in the same
            // order as three passes would make them. (Unless the round's start did it.)
            self.detect_expire_and_view(now, &mut views.servers, effects, None);
        }
        self.account_views(now, &mut views);
        let round = self
            .arbiter
            .round(&views.as_view(now, self.timings.move_cooldown));
        self.views = views;
        self.apply(round, now, effects);
        if census.out_of_use {
            effects.extend(self.drain_for_maintenance(now));
        }
        // Loans follow what the round left short: our own lent servers first, then peers.
        if census.loans {
            effects.extend(self.recall_if_short(now));
        }
        effects.extend(self.tick_borrowed(now));
    }

    /// The round's first pass over the servers, at its start (`SiteCore::begin_round`):
    /// each account's load ([`Self::account_loads`]) and, where `tick` would do them in
    /// one pass (no machines, no loans), failure detection, expiry and the servers'
    /// views too, their effects pushed onto `effects`. `tick` at the same `now` then
    /// skips them: at 100,000 servers a pass costs a millisecond or two, bound by memory.
    /// The loads are those of before the failures and expiries, as when they were
    /// counted apart; and nothing the round does between its start and `tick` (the
    /// demands) touches what the pass reads.
    pub fn begin_tick(&mut self, now: Millis, effects: &mut Vec<Effect>) -> Vec<(f64, u32)> {
        let census = self.census();
        if census.machines || census.loans {
            self.scanned = None;
            return self.account_loads();
        }
        let mut views = std::mem::take(&mut self.views);
        let mut loads = vec![(0.0, 0u32); self.accounts.len()];
        self.detect_expire_and_view(now, &mut views.servers, effects, Some(&mut loads));
        self.views = views;
        self.add_borrowed_loads(&mut loads);
        self.scanned = Some(now);
        loads
    }

    /// Which rare kinds of server the site has now ([`Rare`]). A release build looks only
    /// when one may have appeared since the last census found none; a debug build (tests,
    /// the simulation) always looks, and fails if a kind appeared that nothing flagged.
    fn census(&mut self) -> Rare {
        if !cfg!(debug_assertions) && !self.rare.any() {
            return self.rare;
        }
        let mut found = Rare::default();
        for entry in &self.servers {
            found.loans |= entry
                .lease
                .as_ref()
                .is_some_and(|lease| lease.loan.is_some());
            found.machines |= entry.machine.is_some();
            found.out_of_use |= entry.out_of_use().is_some();
        }
        debug_assert!(
            (!found.loans || self.rare.loans)
                && (!found.machines || self.rare.machines)
                && (!found.out_of_use || self.rare.out_of_use),
            "a rare kind of server appeared unflagged: found {found:?}, flagged {:?}",
            self.rare
        );
        self.rare = found;
        found
    }

    /// A server silent for `heartbeat_misses_before_failed` intervals is failed: its lease
    /// is revoked (no more renewals), so its node stops by itself, and the arbiter finds
    /// its account a replacement now.
    fn detect_failures(&mut self, now: Millis) -> Vec<Effect> {
        (0..self.servers.len())
            .filter_map(|ix| self.fail_if_silent(ix, now))
            .collect()
    }

    /// [`Self::detect_failures`], [`Self::expire_leases`] and [`Self::server_views`] in
    /// one pass over the servers, the effects pushed onto `effects`, with each account's
    /// load (of before the failures and expiries) added up in `loads` if given. A
    /// server's failure, expiry and view depend on its own entry alone, so doing all
    /// three per server changes none of them. The cheap tests come first: almost no
    /// server fails or expires in a round, and asking the full steps of every one built
    /// (and copied) an empty effect (280 bytes) per server, 28 MB a round at 100,000.
    fn detect_expire_and_view(
        &mut self,
        now: Millis,
        views: &mut Vec<ServerView>,
        effects: &mut Vec<Effect>,
        mut loads: Option<&mut [(f64, u32)]>,
    ) {
        views.clear();
        views.reserve(self.servers.len());
        let silence_limit = self.silence_limit();
        let mut expired = Vec::new();
        for ix in 0..self.servers.len() {
            let entry = &self.servers[ix];
            if let Some(loads) = loads.as_deref_mut() {
                super::add_load(loads, entry);
            }
            if Self::silent(entry, now, silence_limit) {
                effects.extend(self.fail_if_silent(ix, now));
            }
            if Self::due_to_expire(&self.servers[ix], now) {
                expired.extend(self.expire_if_due(ix, now));
            }
            views.push(Self::server_view(&self.servers[ix], now));
        }
        effects.append(&mut expired);
    }

    /// How long a server may be silent before it is failed.
    fn silence_limit(&self) -> std::time::Duration {
        self.timings.node_heartbeat_interval * self.timings.heartbeat_misses_before_failed
    }

    /// Whether [`Self::fail_if_silent`] fails this server now.
    #[inline]
    fn silent(entry: &ServerEntry, now: Millis, limit: std::time::Duration) -> bool {
        entry
            .last_heartbeat
            .is_some_and(|last| now.since(last) > limit)
            && entry.back_by.is_none_or(|back_by| now >= back_by)
            && !matches!(entry.phase, Phase::Failed { .. } | Phase::Offline)
    }

    /// Whether [`Self::expire_if_due`] ends this server's lease now.
    #[inline]
    fn due_to_expire(entry: &ServerEntry, now: Millis) -> bool {
        entry
            .lease
            .as_ref()
            .is_some_and(|lease| lease.expires_at < now)
    }

    fn fail_if_silent(&mut self, ix: usize, now: Millis) -> Option<Effect> {
        let silence_limit = self.silence_limit();
        if !Self::silent(&self.servers[ix], now, silence_limit) {
            return None;
        }
        let entry = &mut self.servers[ix];
        entry.phase = Phase::Failed { since: now };
        entry.connected = false;
        let revoked = entry.lease.as_mut().map(|lease| {
            lease.revoked = true;
            (lease.account, lease.epoch)
        });
        let server = entry.id.clone();
        let reason = match revoked {
            Some((account, epoch)) => format!(
                "{server} sent no heartbeat for over {} ms; its lease {epoch} of {} is revoked and the account gets a replacement if that leaves it short",
                silence_limit.as_millis(),
                self.account_name(account)
            ),
            None => format!(
                "{server} sent no heartbeat for over {} ms",
                silence_limit.as_millis()
            ),
        };
        let account = revoked.map(|(account, _)| self.account_name(account).clone());
        Some(audit(
            AuditKind::ServerFailed,
            Some(&server),
            account.as_ref(),
            None,
            revoked.map(|(_, epoch)| epoch),
            reason,
        ))
    }

    fn expire_leases(&mut self, now: Millis) -> Vec<Effect> {
        (0..self.servers.len())
            .flat_map(|ix| self.expire_if_due(ix, now))
            .collect()
    }

    fn expire_if_due(&mut self, ix: usize, now: Millis) -> Vec<Effect> {
        if !Self::due_to_expire(&self.servers[ix], now) {
            return Vec::new();
        }
        self.end_lease(
            ix,
            LeaseEndCause::Expired,
            "it expired without renewal",
            now,
        )
    }

    /// What the arbiter sees of the accounts, from the servers' views already in `views`
    /// (its buffers reused).
    fn account_views(&self, now: Millis, views: &mut Views) {
        // What the arbiter counts as an account's: held and incoming servers.
        let mut held = vec![0u32; self.accounts.len()];
        for server in &views.servers {
            if let Slot::Held { account, .. } | Slot::Incoming { account } = server.slot {
                held[account as usize] += 1;
            }
        }
        views.accounts.clear();
        let accounts = self
            .accounts
            .iter()
            .zip(held)
            .enumerate()
            .map(|(ix, (account, held))| {
                // Asks for exactly what it holds: no new grant, no release.
                let hold_still = AccountView {
                    priority: account.config.priority,
                    min_servers: held,
                    max_servers: held,
                    demand: held,
                    takes_machines: account.config.image.is_some(),
                };
                let nothing = AccountView {
                    min_servers: 0,
                    max_servers: 0,
                    demand: 0,
                    ..hold_still
                };
                // A tombstone asks for nothing: the arbiter releases what it still holds.
                // A guest asks for nothing either, and its servers are out of reach below.
                if account.removed || account.guest.is_some() {
                    return nothing;
                }
                match (&account.owner, &account.adopted_from) {
                    // Handed back, and its home's lent servers carry it: ours drain.
                    (Owner::Here { .. }, _) if self.home_carries(ix as AccountIx) => nothing,
                    // An ownership about to run out unrenewed: a new lease would be cut to
                    // the little time left, and burn an epoch for a workload the node
                    // would not start.
                    (Owner::Here { until, .. }, _)
                        if *until > now && until.since(now) < self.timings.lease_ttl / 2 =>
                    {
                        hold_still
                    }
                    (Owner::Here { until, .. }, _) if *until > now => AccountView {
                        priority: account.config.priority,
                        min_servers: account.config.min_servers,
                        max_servers: account.config.max_servers,
                        demand: account.demand,
                        takes_machines: account.config.image.is_some(),
                    },
                    // Our own account, owner not known yet (at start): unrenewed leases run
                    // out by themselves.
                    (Owner::Unknown, None) => hold_still,
                    // Owned elsewhere, or a taken-over account no longer ours: let go.
                    _ => nothing,
                }
            });
        views.accounts.extend(accounts);
    }

    fn server_views(&self, now: Millis, views: &mut Vec<ServerView>) {
        views.clear();
        views.extend(
            self.servers
                .iter()
                .map(|entry| Self::server_view(entry, now)),
        );
    }

    fn server_view(entry: &ServerEntry, now: Millis) -> ServerView {
        let slot = match (&entry.phase, &entry.lease) {
            // In maintenance: given to no one, and no longer counted where it
            // serves, so that its account gets a replacement before it drains.
            _ if entry.out_of_use().is_some() => Slot::Unavailable,
            (Phase::Free | Phase::Offline, None) if entry.assignable() => Slot::Free,
            (Phase::Starting { .. } | Phase::Serving, Some(lease))
                if !lease.revoked && lease.loan.is_none() =>
            {
                Slot::Held {
                    account: lease.account,
                    since: lease.granted_at,
                }
            }
            (
                Phase::Draining {
                    next: Next::Join(to),
                    ..
                },
                _,
            ) => Slot::Incoming { account: *to },
            _ => Slot::Unavailable,
        };
        let avoid = entry
            .avoid
            .filter(|(_, at)| now.since(*at) < AVOID_AFTER_FAILURE)
            .map(|(account, _)| account);
        ServerView {
            slot,
            load: entry.load.unwrap_or(0.0) as f32,
            avoid,
            machine: entry.machine.is_some(),
        }
    }

    fn apply(&mut self, round: Round, now: Millis, effects: &mut Vec<Effect>) {
        let account_name = |ix: AccountIx| self.accounts[ix as usize].config.name.to_string();
        let server_name = |ix: u32| self.servers[ix as usize].id.to_string();
        let mut described = Vec::with_capacity(round.decisions.len());
        for decision in &round.decisions {
            let reason = match decision {
                Decision::Assign { reason, .. }
                | Decision::Reclaim { reason, .. }
                | Decision::Release { reason, .. } => reason.describe(account_name, server_name),
            };
            described.push(reason);
        }
        for (decision, reason) in round.decisions.into_iter().zip(described) {
            match decision {
                Decision::Assign {
                    server, account, ..
                } => {
                    effects.extend(self.grant(
                        server as usize,
                        account,
                        Grant::now(now, reason, AuditKind::Assign),
                    ));
                }
                Decision::Reclaim {
                    server, from, to, ..
                } => {
                    let ix = server as usize;
                    let id = self.servers[ix].id.clone();
                    effects.push(audit(
                        AuditKind::Reclaim,
                        Some(&id),
                        Some(self.account_name(to)),
                        Some(self.account_name(from)),
                        self.servers[ix].lease.as_ref().map(|lease| lease.epoch),
                        reason.clone(),
                    ));
                    effects.extend(self.drain(ix, Next::Join(to), reason, now));
                }
                Decision::Release { server, from, .. } => {
                    let ix = server as usize;
                    let id = self.servers[ix].id.clone();
                    effects.push(audit(
                        AuditKind::Release,
                        Some(&id),
                        None,
                        Some(self.account_name(from)),
                        self.servers[ix].lease.as_ref().map(|lease| lease.epoch),
                        reason.clone(),
                    ));
                    effects.extend(self.drain(ix, Next::Free, reason, now));
                }
            }
        }
        effects.extend(self.record_shortfalls(&round.shortfalls));
    }

    /// Records each account's shortfall, auditing only changes so that a lasting shortage
    /// is one entry, not one per round.
    fn record_shortfalls(
        &mut self,
        shortfalls: &[crate::model::arbiter::Shortfall],
    ) -> Vec<Effect> {
        let mut current = vec![None; self.accounts.len()];
        for shortfall in shortfalls {
            let reason = shortfall.describe(
                |ix| self.accounts[ix as usize].config.name.to_string(),
                |ix| self.servers[ix as usize].id.to_string(),
            );
            current[shortfall.account as usize] =
                Some(((shortfall.wanted, shortfall.have), reason));
        }
        let mut effects = Vec::new();
        for (ix, now_short) in current.into_iter().enumerate() {
            let account = &mut self.accounts[ix];
            let counts = now_short.as_ref().map(|(counts, _)| *counts);
            if account.shortfall == counts {
                continue;
            }
            account.shortfall = counts;
            if let Some((_, mut reason)) = now_short {
                // Why demands elsewhere fall from the next round on (D-44), in the audit
                // log where an operator reads the moves that follow.
                reason.push_str(PRESSED);
                let name = account.config.name.clone();
                effects.push(audit(
                    AuditKind::Shortfall,
                    None,
                    Some(&name),
                    None,
                    None,
                    reason,
                ));
            }
        }
        effects
    }
}

/// Said with every shortfall: while any account is short, demands are pressed.
pub const PRESSED: &str = "; demands keep no headroom while an account is short";

/// Kinds of server most sites have none of, that some passes of a round look for: lent
/// to a peer, a machine behind a BMC, out of use (in maintenance or removed from the
/// config). Set where one may appear (a loan granted, the site built or recovered, a
/// server drained or removed), cleared by a census that finds none (`tick`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Rare {
    pub(super) loans: bool,
    pub(super) machines: bool,
    pub(super) out_of_use: bool,
}

impl Rare {
    /// Look for everything: what a site has not been counted yet.
    pub(super) const ALL: Rare = Rare {
        loans: true,
        machines: true,
        out_of_use: true,
    };

    fn any(self) -> bool {
        self.loans || self.machines || self.out_of_use
    }
}

/// Owned views, so that the borrowed [`SiteView`] can be built from them.
#[derive(Debug, Default)]
pub struct Views {
    pub accounts: Vec<AccountView>,
    pub servers: Vec<ServerView>,
}

impl Views {
    pub fn as_view(&self, now: Millis, cooldown: std::time::Duration) -> SiteView<'_> {
        SiteView {
            accounts: &self.accounts,
            servers: &self.servers,
            now,
            cooldown,
        }
    }
}
