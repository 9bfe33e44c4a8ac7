//! Drain-first failback (docs/ownership.md). The interim owner of an account borrows the
//! account's home servers for it, drains its own (and returns any a third site lent it),
//! and only then lets its ownership go; the home, once it owns the account again, keeps
//! the servers it lent as its own. So the account is served throughout, and never by two
//! owners' servers at once: the home's servers serve as the interim owner's loans until
//! the home owns the account, and as the home's own after.

use std::time::Duration;

use leasehold_federation::ids::{AccountId, SiteId};
use leasehold_federation::wire::common::RefusalCause;
use leasehold_federation::wire::site::{AccountSpec, LoanOffer};

use super::borrowing::BorrowState;
use super::server::{Next, Phase};
use super::{HandingBack, SiteModel, data_of, software_of};
use crate::config::Account;
use crate::model::Millis;
use crate::model::arbiter::AccountIx;
use crate::model::effects::{AuditEntry, AuditKind, Effect, JournalOp};
use crate::model::ownership::Owner;

impl SiteModel {
    /// From the master: the home `account` is being handed back to, or none.
    pub fn set_handing_back(&mut self, account: &AccountId, home: Option<&SiteId>) {
        if let Some(ix) = self.account_index.get(account).copied() {
            self.set_handing_back_at(ix, home);
        }
    }

    /// [`Self::set_handing_back`] of the account at `ix`.
    pub fn set_handing_back_at(&mut self, ix: AccountIx, home: Option<&SiteId>) {
        let Some(entry) = self.accounts.get_mut(ix as usize) else {
            return;
        };
        match (home, &entry.handing_back) {
            (Some(home), Some(handing)) if handing.home == *home => {}
            (Some(home), _) => {
                entry.handing_back = Some(HandingBack {
                    home: home.clone(),
                    others_clear_at: Millis(0),
                });
            }
            (None, _) => entry.handing_back = None,
        }
    }

    /// How many of the home's servers carry an account through its hand-back: as many as
    /// it wants now, at least its minimum, and at least one.
    fn handback_target(&self, account: AccountIx) -> u32 {
        let entry = &self.accounts[account as usize];
        entry.demand.max(entry.config.min_servers).max(1)
    }

    /// Whether the home's lent servers serve `account` in full, so ours may drain.
    pub(super) fn home_carries(&self, account: AccountIx) -> bool {
        let Some(handing) = &self.accounts[account as usize].handing_back else {
            return false;
        };
        let serving = self
            .borrowing
            .loans
            .iter()
            .filter(|loan| {
                loan.account == account
                    && loan.lender == handing.home
                    && loan.state == BorrowState::Serving
            })
            .count() as u32;
        serving >= self.handback_target(account)
    }

    /// After the round, for an account being handed back: ask its home for the servers it
    /// has not lent yet; once they serve, send back what third sites lent (ours drain by
    /// the round, which gives the account nothing of ours from then on).
    pub(super) fn tick_handing_back(&mut self, account: AccountIx, now: Millis) -> Vec<Effect> {
        let Some(handing) = self.accounts[account as usize].handing_back.clone() else {
            return Vec::new();
        };
        let home = handing.home;
        let mut effects = Vec::new();
        let from_home = self
            .borrowing
            .active(account)
            .filter(|loan| loan.lender == home)
            .count() as u32;
        let target = self.handback_target(account);
        let home_up = self.borrowing.peers.get(&home).is_some_and(|peer| peer.up);
        let may_ask = home_up
            && self
                .borrowing
                .not_before
                .get(&home)
                .is_none_or(|at| *at <= now)
            && !self.borrowing.asks.iter().any(|ask| ask.account == account);
        if from_home < target && may_ask {
            effects.extend(self.send_ask(account, home.clone(), target - from_home, true, now));
        }
        if !self.home_carries(account) {
            return effects;
        }
        let drain = self.timings.drain_timeout;
        // A returned server's node stops at the latest when its loan's lease, and then its
        // own lease, run out unrenewed, and its workload has had its stop timeout.
        let clear = now
            + drain
            + self.timings.lease_ttl * 2
            + self.timings.workload_stop_timeout
            + Duration::from_millis(100);
        let name = self.account_name(account).clone();
        let mut returned = false;
        for loan in &mut self.borrowing.loans {
            if loan.account != account
                || loan.lender == home
                || matches!(loan.state, BorrowState::Returning { .. })
            {
                continue;
            }
            returned = true;
            effects.push(super::borrow::start_return(
                loan,
                &name,
                &format!("being handed back to {home}, whose servers serve it"),
                drain,
                now,
            ));
        }
        if returned && let Some(handing) = self.accounts[account as usize].handing_back.as_mut() {
            handing.others_clear_at = handing.others_clear_at.max(clear);
        }
        effects
    }

    /// Whether a server of ours holds a lease of `account`, or drains to join it.
    fn runs_here(&self, account: AccountIx) -> bool {
        self.servers.iter().any(|entry| {
            entry
                .lease
                .as_ref()
                .is_some_and(|lease| lease.account == account)
                || matches!(entry.phase, Phase::Draining { next: Next::Join(to), .. } if to == account)
        })
    }

    /// Accounts whose ownership may go back to their home now: the home's servers serve
    /// them in full, no server of ours holds a lease of them (each ended on its node's
    /// word or ran out), and servers third sites lent for them are surely stopped.
    pub fn ready_to_hand_over(&self, now: Millis) -> Vec<AccountId> {
        (0..self.accounts.len() as AccountIx)
            .filter(|ix| {
                let entry = &self.accounts[*ix as usize];
                let Some(handing) = &entry.handing_back else {
                    return false;
                };
                now >= handing.others_clear_at
                    && self.owned_until(*ix, now).is_some()
                    && self.home_carries(*ix)
                    && !self.runs_here(*ix)
                    && self
                        .borrowing
                        .loans
                        .iter()
                        .all(|loan| loan.account != *ix || loan.lender == handing.home)
            })
            .map(|ix| self.account_name(ix).clone())
            .collect()
    }

    /// This site released `account` to its home: the servers the home lent for it stay
    /// there, serving it as the home's own, and are no longer ours to count or renew.
    pub fn handed_over(&mut self, account: &AccountId) -> Vec<Effect> {
        let Some(ix) = self.account_index.get(account).copied() else {
            return Vec::new();
        };
        let Some(handing) = self.accounts[ix as usize].handing_back.take() else {
            return Vec::new();
        };
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.borrowing.loans)
            .into_iter()
            .partition(|loan| loan.account == ix);
        self.borrowing.loans = kept;
        let mut effects = Vec::new();
        for loan in gone {
            self.borrowing.counts.returned += 1;
            let reason = format!(
                "{} stays at {} and serves {account} there: {} owns {account} again",
                loan.server, handing.home, handing.home
            );
            effects.extend(self.end_borrow(&loan, AuditKind::LoanReturn, reason, false));
        }
        effects
    }

    /// `borrower` owns `account`, which this site homes, and is handing it back: it may have
    /// as many of our free servers as it asks for, whatever `[lending]` says, since they
    /// serve our own account and become ours again when we own it.
    pub fn lend_home(
        &mut self,
        borrower: &SiteId,
        account: &AccountId,
        count: u32,
        now: Millis,
    ) -> (LoanOffer, Vec<Effect>) {
        let entry = self
            .account_index
            .get(account)
            .map(|ix| &self.accounts[*ix as usize])
            .filter(|entry| entry.is_home() && entry.adopted_from.is_none());
        let Some(entry) = entry else {
            return super::lend::refused(
                RefusalCause::NotAllowed,
                format!(
                    "{} does not home {account}, so {borrower} cannot hand it back here",
                    self.site
                ),
            );
        };
        if matches!(entry.owner, Owner::Here { until, .. } if until > now) {
            return super::lend::refused(
                RefusalCause::NotAllowed,
                format!(
                    "{} owns {account} itself; {borrower} has nothing to hand back",
                    self.site
                ),
            );
        }
        let spec = account_spec(
            &self.site,
            &entry.config,
            self.timings.workload_stop_timeout,
        );
        let free = self.free_count() as u32;
        let granted = count.min(free);
        if granted == 0 {
            return super::lend::refused(
                RefusalCause::NothingToSpare,
                format!(
                    "{} has no free connected server for {account} yet; {borrower} keeps serving it and asks again",
                    self.site
                ),
            );
        }
        self.lend_servers(
            borrower,
            &spec,
            granted,
            format!("to carry {account} while {borrower} hands it back"),
            now,
        )
    }

    /// Home site: a server lent for one of our accounts to the site that held it becomes
    /// ours once we own the account again. Its workload runs on under the same lease and
    /// epoch; only the holder changes (journaled, audited as `handover`).
    pub(super) fn take_home_loans(&mut self, now: Millis) -> Vec<Effect> {
        let mut effects = Vec::new();
        for ix in 0..self.servers.len() {
            let entry = &self.servers[ix];
            let Some(lease) = &entry.lease else { continue };
            let Some(loan) = &lease.loan else { continue };
            if lease.revoked || matches!(entry.phase, Phase::Draining { .. }) {
                continue;
            }
            let name = self.account_name(lease.account).clone();
            let Some(home_ix) = self.account_index.get(&name).copied() else {
                continue;
            };
            let home = &self.accounts[home_ix as usize];
            if !home.is_home() || home.adopted_from.is_some() {
                continue;
            }
            let Owner::Here { term, until } = home.owner else {
                continue;
            };
            if until <= now {
                continue;
            }
            let (borrower, epoch, server) = (loan.borrower.clone(), lease.epoch, entry.id.clone());
            if let Some(lease) = self.servers[ix].lease.as_mut() {
                lease.account = home_ix;
                lease.loan = None;
            }
            effects.push(Effect::Journal(JournalOp::LeaseGranted {
                server: server.clone(),
                account: name.clone(),
                epoch,
                lent_to: None,
            }));
            effects.push(Effect::Audit(AuditEntry {
                kind: AuditKind::Handover,
                server: Some(server.clone()),
                account: Some(name.clone()),
                from: None,
                epoch: Some(epoch),
                peer: Some(borrower.clone()),
                term: Some(term),
                reason: format!(
                    "{server}, lent to {borrower} for {name}, serves {name} as {}'s own from now: {} owns {name} again ({term})",
                    self.site, self.site
                ),
            }));
        }
        effects
    }
}

/// An account of ours as a peer's catalogue would describe it.
pub fn account_spec(site: &SiteId, account: &Account, stop_timeout: Duration) -> AccountSpec {
    AccountSpec {
        name: account.name.clone(),
        home: site.clone(),
        min_servers: account.min_servers,
        max_servers: account.max_servers,
        priority: account.priority,
        target_load: account.target_load,
        failover: account.failover.clone(),
        pinned: account.pinned,
        software: software_of(account, stop_timeout),
        data: data_of(account),
    }
}
