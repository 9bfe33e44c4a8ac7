//! The periodic round of the site core: find failed servers, expire leases, then let the
//! arbiter decide and turn its decisions into leases, drains and commands.

use super::events::Grant;
use super::server::{Next, Phase};
use super::{AVOID_AFTER_FAILURE, SiteModel, audit};
use crate::model::Millis;
use crate::model::arbiter::{AccountIx, AccountView, Decision, Round, ServerView, SiteView, Slot};
use crate::model::effects::{AuditKind, Effect, LeaseEndCause};
use crate::model::ownership::Owner;

impl SiteModel {
    pub fn tick(&mut self, now: Millis) -> Vec<Effect> {
        // Servers lent for an account we own again are ours before the round counts them.
        let mut effects = self.take_home_loans(now);
        effects.extend(self.detect_failures(now));
        // Booting machines hold their leases before expiry is looked at; fences wait for
        // it (a machine is fenced only once its lease has ended).
        effects.extend(self.tick_machines(now));
        // Loans first: a lent server's lease runs out with its loan, and the loan's end is
        // what the audit log should say.
        effects.extend(self.tick_lent(now));
        effects.extend(self.expire_leases(now));
        let views = self.view(now);
        let round = self
            .arbiter
            .round(&views.as_view(now, self.timings.move_cooldown));
        effects.extend(self.apply(round, now));
        effects.extend(self.drain_for_maintenance(now));
        // Loans follow what the round left short: our own lent servers first, then peers.
        effects.extend(self.recall_if_short(now));
        effects.extend(self.tick_borrowed(now));
        effects
    }

    /// A server silent for `heartbeat_misses_before_failed` intervals is failed: its lease
    /// is revoked (no more renewals), so its node stops by itself, and the arbiter finds
    /// its account a replacement now.
    fn detect_failures(&mut self, now: Millis) -> Vec<Effect> {
        let silence_limit =
            self.timings.node_heartbeat_interval * self.timings.heartbeat_misses_before_failed;
        let mut effects = Vec::new();
        for ix in 0..self.servers.len() {
            let entry = &mut self.servers[ix];
            let silent = match entry.last_heartbeat {
                Some(last) => now.since(last) > silence_limit,
                None => false,
            };
            if entry.back_by.is_some_and(|back_by| now < back_by) {
                continue;
            }
            if !silent || matches!(entry.phase, Phase::Failed { .. } | Phase::Offline) {
                continue;
            }
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
            effects.push(audit(
                AuditKind::ServerFailed,
                Some(&server),
                account.as_ref(),
                None,
                revoked.map(|(_, epoch)| epoch),
                reason,
            ));
        }
        effects
    }

    fn expire_leases(&mut self, now: Millis) -> Vec<Effect> {
        let mut effects = Vec::new();
        for ix in 0..self.servers.len() {
            let expired = self.servers[ix]
                .lease
                .as_ref()
                .is_some_and(|lease| lease.expires_at < now);
            if expired {
                effects.extend(self.end_lease(
                    ix,
                    LeaseEndCause::Expired,
                    "it expired without renewal",
                    now,
                ));
            }
        }
        effects
    }

    /// What the arbiter sees: index-based views of accounts and servers.
    pub fn view(&self, now: Millis) -> Views {
        let servers = self.server_views(now);
        // What the arbiter counts as an account's: held and incoming servers.
        let mut held = vec![0u32; self.accounts.len()];
        for server in &servers {
            if let Slot::Held { account, .. } | Slot::Incoming { account } = server.slot {
                held[account as usize] += 1;
            }
        }
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
            })
            .collect();
        Views { accounts, servers }
    }

    fn server_views(&self, now: Millis) -> Vec<ServerView> {
        self.servers
            .iter()
            .map(|entry| {
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
            })
            .collect()
    }

    fn apply(&mut self, round: Round, now: Millis) -> Vec<Effect> {
        let mut effects = Vec::new();
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
        effects
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

/// Owned views, so that the borrowed [`SiteView`] can be built from them.
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
