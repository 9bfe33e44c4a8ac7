//! The lender's half of a loan (docs/loans.md): a peer asks for servers for one of its
//! accounts; we lend what our policy spares as leases whose holder is that site, renew
//! them while the borrower renews the loan, relay their health, take them back when it
//! returns them, recall them when our own accounts need them, and bring them home when
//! the borrower stops renewing.
//!
//! A lent server is an ordinary lease in the lease table, held by a guest account (the
//! peer's account, from its catalogue): grants, epochs, the journal, node renewals and the
//! end of a lease work as for our own accounts, and the arbiter never sees it.

use std::time::Duration;

use leasehold_federation::ids::{Epoch, ServerId, SiteId};
use leasehold_federation::wire::common::{Health, Refusal, RefusalCause};
use leasehold_federation::wire::site::{
    AccountSpec, LentServer, LentServerStatus, LoanOffer, LoanRenewal, RecallLoan,
};

use super::events::Grant;
use super::server::{LoanTerms, Next, Phase};
use super::{AccountEntry, SiteModel, loan_audit, millis};
use crate::model::Millis;
use crate::model::arbiter::AccountIx;
use crate::model::effects::{AuditKind, Effect, LoanHolder, PeerMessage};

impl SiteModel {
    /// The guest account of `holder`, created at a fresh index the first time; its
    /// software and data follow the newest spec the borrower sent.
    pub(super) fn guest_ix(&mut self, holder: &LoanHolder) -> AccountIx {
        let key = (holder.borrower.clone(), holder.spec.name.clone());
        match self.guests.get(&key) {
            Some(ix) => {
                self.accounts[*ix as usize] = AccountEntry::guest(holder.clone());
                *ix
            }
            None => {
                let ix = self.accounts.len() as AccountIx;
                self.accounts.push(AccountEntry::guest(holder.clone()));
                self.guests.insert(key, ix);
                ix
            }
        }
    }

    /// Servers lent out now (whatever their phase), and to whom.
    pub fn lent(&self) -> impl Iterator<Item = (usize, &LoanTerms)> {
        self.servers.iter().enumerate().filter_map(|(ix, entry)| {
            entry
                .lease
                .as_ref()
                .and_then(|lease| lease.loan.as_deref())
                .map(|loan| (ix, loan))
        })
    }

    /// How many servers our own accounts were short of in the last round.
    fn own_shortfall(&self) -> u32 {
        self.accounts
            .iter()
            .filter(|account| account.is_home())
            .filter_map(|account| account.shortfall)
            .map(|(wanted, have)| wanted.saturating_sub(have))
            .sum()
    }

    /// How many servers a peer could borrow now: free process servers beyond the reserve and
    /// beyond what our own accounts are short of, within `max_lent`.
    pub fn spare(&self) -> u32 {
        let free = self.free_count() as u32;
        let short = self.own_shortfall();
        let lent = self.lent().count() as u32;
        free.saturating_sub(self.lending.reserve)
            .saturating_sub(short)
            .min(self.lending.max_lent.saturating_sub(lent))
    }

    /// `borrower` asks for up to `count` servers for its account `spec`. Lends what
    /// [`SiteModel::spare`] allows, each under a fresh epoch of its server, journaled before
    /// the offer or the pointer goes out.
    pub fn lend(
        &mut self,
        borrower: &SiteId,
        spec: &AccountSpec,
        count: u32,
        now: Millis,
    ) -> (LoanOffer, Vec<Effect>) {
        if !self.lending.lend_to.contains(borrower) {
            return refused(
                RefusalCause::NotAllowed,
                format!(
                    "{} does not lend to {borrower} (its lending.lend_to does not list it)",
                    self.site
                ),
            );
        }
        let spare = self.spare();
        let granted = count.min(spare);
        if granted == 0 {
            return refused(
                RefusalCause::NothingToSpare,
                format!(
                    "{} has no server to spare for {borrower}/{}: {} free, reserve {}, {} lent of at most {}",
                    self.site,
                    spec.name,
                    self.free_count(),
                    self.lending.reserve,
                    self.lent().count(),
                    self.lending.max_lent
                ),
            );
        }
        self.lend_servers(
            borrower,
            spec,
            granted,
            format!("asked for {count}, {spare} to spare"),
            now,
        )
    }

    /// Lends `granted` of our free connected servers to `borrower` for its account `spec`,
    /// each under a fresh epoch of its server, journaled before the offer or the pointer
    /// goes out; `why` ends each `lend` audit entry.
    pub(super) fn lend_servers(
        &mut self,
        borrower: &SiteId,
        spec: &AccountSpec,
        granted: u32,
        why: String,
        now: Millis,
    ) -> (LoanOffer, Vec<Effect>) {
        let holder = LoanHolder {
            borrower: borrower.clone(),
            spec: spec.clone(),
        };
        let guest = self.guest_ix(&holder);
        let chosen: Vec<usize> = (0..self.servers.len())
            .filter(|ix| self.servers[*ix].lendable())
            .take(granted as usize)
            .collect();
        let ttl = self.timings.lease_ttl;
        let mut effects = Vec::new();
        let mut servers = Vec::new();
        for ix in chosen {
            let reason = format!(
                "{} lent to {borrower} for its account {} ({why})",
                self.servers[ix].id, spec.name
            );
            let mut grant = Grant::now(now, reason, AuditKind::Lend);
            grant.loan = Some(LoanTerms {
                borrower: borrower.clone(),
                expires_at: now + ttl,
                recall_by: None,
                relayed_at: None,
            });
            effects.extend(self.grant(ix, guest, grant));
            let entry = &self.servers[ix];
            if let Some(lease) = &entry.lease {
                servers.push(LentServer {
                    server: entry.id.clone(),
                    epoch: lease.epoch,
                    service_addr: entry.service_addr.clone(),
                    ttl_ms: millis(ttl),
                });
            }
        }
        self.borrowing.counts.lent += servers.len() as u64;
        (LoanOffer::Granted { servers }, effects)
    }

    pub(super) fn free_count(&self) -> usize {
        self.servers.iter().filter(|entry| entry.lendable()).count()
    }

    /// The index of `server` if it is lent to `borrower` under `epoch`, or why not.
    fn lent_to(
        &self,
        borrower: &SiteId,
        server: &ServerId,
        epoch: Epoch,
    ) -> Result<usize, Refusal> {
        let ix = self.index_of(server)?;
        let lease = self.servers[ix].lease.as_ref();
        match lease {
            Some(lease)
                if lease.epoch == epoch
                    && lease
                        .loan
                        .as_ref()
                        .is_some_and(|loan| loan.borrower == *borrower) =>
            {
                Ok(ix)
            }
            Some(lease) if epoch < lease.epoch => Err(Refusal {
                cause: RefusalCause::StaleEpoch { seen: lease.epoch },
                detail: format!(
                    "{epoch} of {server} is older than its current lease {}",
                    lease.epoch
                ),
            }),
            _ if epoch < self.servers[ix].highest_epoch => Err(Refusal {
                cause: RefusalCause::StaleEpoch {
                    seen: self.servers[ix].highest_epoch,
                },
                detail: format!(
                    "{epoch} of {server} is older than the newest it has had ({})",
                    self.servers[ix].highest_epoch
                ),
            }),
            _ => Err(Refusal {
                cause: RefusalCause::UnknownLease,
                detail: format!("{server} is not lent to {borrower} under {epoch}"),
            }),
        }
    }

    /// The borrower keeps a lent server for one more TTL from now (it anchored its own view
    /// at its send time, so its view ends first). Refused once the loan is recalled past its
    /// grace, revoked or expired.
    pub fn renew_loan(
        &mut self,
        borrower: &SiteId,
        server: &ServerId,
        epoch: Epoch,
        now: Millis,
    ) -> LoanRenewal {
        let ttl = self.timings.lease_ttl;
        let ix = match self.lent_to(borrower, server, epoch) {
            Ok(ix) => ix,
            Err(refusal) => return LoanRenewal::Refused(refusal),
        };
        let entry = &mut self.servers[ix];
        let Some(lease) = entry.lease.as_mut() else {
            return LoanRenewal::Refused(Refusal {
                cause: RefusalCause::UnknownLease,
                detail: format!("{server} holds no lease"),
            });
        };
        let draining = matches!(entry.phase, Phase::Draining { .. });
        match lease.loan.as_mut() {
            Some(loan) if !lease.revoked && !draining && loan.expires_at >= now => {
                loan.expires_at = loan.expires_at.max(now + ttl);
                LoanRenewal::Renewed {
                    epoch,
                    ttl_ms: millis(ttl),
                }
            }
            _ => LoanRenewal::Refused(Refusal {
                cause: RefusalCause::UnknownLease,
                detail: format!("the loan of {server} under {epoch} is ending; it is not renewed"),
            }),
        }
    }

    /// The borrower is done with a lent server (it drained it): stop it and bring it home.
    pub fn loan_returned(
        &mut self,
        borrower: &SiteId,
        server: &ServerId,
        epoch: Epoch,
        now: Millis,
    ) -> Result<Vec<Effect>, Refusal> {
        let ix = self.lent_to(borrower, server, epoch)?;
        if matches!(self.servers[ix].phase, Phase::Draining { .. }) {
            return Ok(Vec::new());
        }
        let account = self
            .account_name(self.servers[ix].lease.as_ref().map_or(0, |l| l.account))
            .clone();
        let mut effects = vec![loan_audit(
            AuditKind::LoanReturn,
            server,
            &account,
            borrower,
            epoch,
            format!("{borrower} returned {server} (drained); it stops and comes home"),
        )];
        effects.extend(self.drain_for(
            ix,
            Next::Free,
            Duration::ZERO,
            "returned by its borrower".to_owned(),
            now,
        ));
        Ok(effects)
    }

    /// Lent servers whose loan ran out or whose recall grace passed are stopped; the others
    /// have their health relayed every renew interval.
    pub(super) fn tick_lent(&mut self, now: Millis) -> Vec<Effect> {
        let relay_every = self.timings.renew_interval;
        let mut effects = Vec::new();
        for ix in 0..self.servers.len() {
            let entry = &self.servers[ix];
            let Some(lease) = &entry.lease else { continue };
            let Some(loan) = &lease.loan else { continue };
            if matches!(entry.phase, Phase::Draining { .. }) {
                continue;
            }
            let (epoch, borrower, account) = (lease.epoch, loan.borrower.clone(), lease.account);
            let name = self.account_name(account).clone();
            let server = entry.id.clone();
            if loan.expires_at < now || loan.recall_by.is_some_and(|by| by < now) {
                let expired = loan.expires_at < now;
                if let Some(lease) = self.servers[ix].lease.as_mut() {
                    lease.revoked = true;
                }
                let reason = if expired {
                    format!(
                        "{borrower} stopped renewing the loan of {server} for {name}; it stops and comes home"
                    )
                } else {
                    format!(
                        "{borrower} did not return recalled {server} within its grace; it is stopped and comes home"
                    )
                };
                let kind = if expired {
                    AuditKind::LoanExpired
                } else {
                    AuditKind::LoanRecall
                };
                effects.push(loan_audit(
                    kind,
                    &server,
                    &name,
                    &borrower,
                    epoch,
                    reason.clone(),
                ));
                effects.extend(self.drain_for(ix, Next::Free, Duration::ZERO, reason, now));
                continue;
            }
            let due = loan
                .relayed_at
                .is_none_or(|at| now.since(at) >= relay_every);
            if due {
                effects.extend(self.relay(ix, now));
            }
        }
        effects
    }

    /// Our own accounts are short after the round and servers are lent out: recall as many
    /// as they are short of (the latest lent first), giving each borrower `grace` to drain.
    pub(super) fn recall_if_short(&mut self, now: Millis) -> Vec<Effect> {
        let short = self.own_shortfall();
        let recalling = self
            .lent()
            .filter(|(_, loan)| loan.recall_by.is_some())
            .count() as u32;
        let mut wanted = short.saturating_sub(recalling);
        if wanted == 0 {
            return Vec::new();
        }
        let mut candidates: Vec<(Millis, usize)> = self
            .servers
            .iter()
            .enumerate()
            .filter_map(|(ix, entry)| {
                let lease = entry.lease.as_ref()?;
                let loan = lease.loan.as_ref()?;
                (loan.recall_by.is_none() && !lease.revoked).then_some((lease.granted_at, ix))
            })
            .collect();
        candidates.sort_by(|a, b| b.cmp(a));
        let grace = self.recall_grace();
        let mut effects = Vec::new();
        for (_, ix) in candidates {
            if wanted == 0 {
                break;
            }
            wanted -= 1;
            let entry = &mut self.servers[ix];
            let Some(lease) = entry.lease.as_mut() else {
                continue;
            };
            let Some(loan) = lease.loan.as_mut() else {
                continue;
            };
            loan.recall_by = Some(now + grace);
            let (server, epoch, borrower, account) = (
                entry.id.clone(),
                lease.epoch,
                loan.borrower.clone(),
                lease.account,
            );
            let name = self.account_name(account).clone();
            effects.push(loan_audit(
                AuditKind::LoanRecall,
                &server,
                &name,
                &borrower,
                epoch,
                format!(
                    "our accounts are {short} short: {server} is recalled from {borrower}, which has {} ms to drain it",
                    grace.as_millis()
                ),
            ));
            effects.push(Effect::ToPeer {
                to: borrower,
                message: PeerMessage::RecallLoan(RecallLoan {
                    server,
                    epoch,
                    grace_ms: millis(grace),
                }),
            });
        }
        effects
    }

    /// How long a borrower has to drain a recalled server: its drain, twice over, so that
    /// a drain started just before the recall still fits.
    pub fn recall_grace(&self) -> Duration {
        self.timings.drain_timeout * 2
    }

    /// The status of lent server `ix` for its borrower, now.
    pub(super) fn relay(&mut self, ix: usize, now: Millis) -> Option<Effect> {
        let entry = &mut self.servers[ix];
        // `Idle` is kept for the end of the lease: a heartbeat sent before the workload
        // joined still says idle, and must not read as "the loan is over".
        let (health, load) = match (&entry.phase, &entry.health) {
            (Phase::Serving, Health::Unhealthy { .. }) => (entry.health.clone(), entry.load),
            (Phase::Serving, _) => (Health::Healthy, entry.load),
            (Phase::Starting { .. }, _) => (Health::Starting, None),
            _ => (
                Health::Unhealthy {
                    reason: format!("{} is {}", entry.id, entry.phase.name()),
                },
                None,
            ),
        };
        let lease = entry.lease.as_mut()?;
        let loan = lease.loan.as_mut()?;
        loan.relayed_at = Some(now);
        let (to, epoch, account) = (loan.borrower.clone(), lease.epoch, lease.account);
        let server = entry.id.clone();
        let account = self.account_name(account).clone();
        Some(Effect::ToPeer {
            to,
            message: PeerMessage::Status(LentServerStatus {
                server,
                epoch,
                account,
                health,
                load,
            }),
        })
    }
}

pub(super) fn refused(cause: RefusalCause, detail: String) -> (LoanOffer, Vec<Effect>) {
    (LoanOffer::Refused(Refusal { cause, detail }), Vec::new())
}
