//! What nodes tell the site core, and what it answers: registration, heartbeats, lease
//! renewals, the outcome of commands, and workload events.

use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::wire::common::{Health, Refusal, RefusalCause};
use leasehold_federation::wire::node::{
    LeaseRenewal, PointerApplication, Registration, RunningWorkload, StopCause, StopOutcome,
};

use std::time::Duration;

use leasehold_federation::wire::site::LentServerStatus;

use super::server::{Lease, LoanTerms, Next, Phase};
use super::{ServerIx, SiteModel, audit, millis};
use crate::model::Millis;
use crate::model::arbiter::AccountIx;
use crate::model::effects::{
    AuditKind, Command, Effect, JournalOp, LeaseEndCause, Observation, PeerMessage,
};
use crate::model::ownership::Owner;

impl SiteModel {
    /// A node agent connected and introduced itself.
    pub fn register(
        &mut self,
        server: &ServerId,
        running: Option<&RunningWorkload>,
        highest_epoch: Epoch,
        now: Millis,
    ) -> Result<(Registration, Vec<Effect>), Refusal> {
        let ix = self.index_of(server)?;
        if self.servers[ix].gone() {
            return Err(refusal(
                RefusalCause::WrongServer,
                &format!(
                    "{server} was removed from {}'s config; stop its node agent",
                    self.site
                ),
            ));
        }
        if self.servers[ix].machine.is_some() {
            return Err(refusal(
                RefusalCause::StaleBoot,
                &format!(
                    "{server} is a machine: its node agent registers with the boot claim on its kernel command line (leasehold node run --boot-args)"
                ),
            ));
        }
        self.register_agent(ix, running, highest_epoch, now)
    }

    /// A node agent's registration, once it is known to be one this site takes.
    pub(super) fn register_agent(
        &mut self,
        ix: usize,
        running: Option<&RunningWorkload>,
        highest_epoch: Epoch,
        now: Millis,
    ) -> Result<(Registration, Vec<Effect>), Refusal> {
        let server = &self.servers[ix].id.clone();
        let mut effects = Vec::new();
        let entry = &mut self.servers[ix];
        entry.connected = true;
        entry.last_heartbeat = Some(now);
        entry.back_by = None;
        // The node may have seen an epoch we never journaled (e.g. a journal restored from
        // an old copy).
        effects.extend(self.epoch_seen(ix, highest_epoch));
        let lease = self.servers[ix].lease.clone();
        match (&lease, running) {
            (Some(lease), Some(running))
                if lease.epoch == running.epoch
                    && *self.account_name(lease.account) == running.account =>
            {
                // The node kept its workload through our restart or a reconnect.
                let entry = &mut self.servers[ix];
                if !lease.revoked && matches!(entry.phase, Phase::Failed { .. } | Phase::Offline) {
                    entry.phase = Phase::Serving;
                }
            }
            (Some(lease), _) if !lease.revoked => {
                // We hold a lease the node no longer runs: it stopped when its lease ran out
                // while we were away. Restore the same assignment under a new epoch.
                let account = lease.account;
                effects.extend(self.end_lease(
                    ix,
                    LeaseEndCause::NodeLostWorkload,
                    "its node no longer runs it",
                    now,
                ));
                // A removed account's lease is not restored, nor a loan (its borrower has
                // seen it end): the server goes free.
                if self.servers[ix].lease.is_none()
                    && self.accounts[account as usize].is_home()
                    && self.owned_until(account, now).is_some()
                {
                    let reason = format!(
                        "restoring {} on {server} after its node re-registered without it",
                        self.account_name(account)
                    );
                    effects.extend(self.grant(
                        ix,
                        account,
                        Grant::now(now, reason, AuditKind::Recovered),
                    ));
                }
            }
            (None, _) => {
                let entry = &mut self.servers[ix];
                if matches!(entry.phase, Phase::Offline | Phase::Failed { .. }) {
                    entry.phase = Phase::Free;
                }
            }
            (Some(_), _) => {}
        }
        let entry = &self.servers[ix];
        let registration = Registration::Accepted {
            site: self.site.clone(),
            heartbeat_interval_ms: millis(self.timings.node_heartbeat_interval),
            lease_ttl_ms: millis(self.timings.lease_ttl),
            renew_interval_ms: millis(self.timings.node_renew_interval),
            service_addr: entry.service_addr.clone(),
            generation: None,
        };
        Ok((registration, effects))
    }

    pub fn heartbeat(&mut self, server: &ServerId, health: Health, load: Option<f64>, now: Millis) {
        if let Some(ix) = self.server_ix(server) {
            self.heartbeat_at(ix, health, load, now);
        }
    }

    /// [`Self::heartbeat`] of the server at `ix`, with no lookup by name.
    pub fn heartbeat_at(&mut self, ix: ServerIx, health: Health, load: Option<f64>, now: Millis) {
        let Some(entry) = self.servers.get_mut(ix.index()) else {
            return;
        };
        // A machine being re-imaged: the old image's agent may still talk until the
        // power goes; only the new image's registration counts.
        if entry.machine.as_ref().is_some_and(|m| m.boot.is_some()) {
            return;
        }
        entry.connected = true;
        entry.last_heartbeat = Some(now);
        entry.health = health;
        entry.load = load;
        if matches!(entry.phase, Phase::Failed { .. }) && entry.lease.is_none() {
            entry.phase = Phase::Free;
        }
    }

    pub fn disconnected(&mut self, server: &ServerId) {
        if let Some(entry) = self.server_mut(server) {
            entry.connected = false;
            if entry.phase == Phase::Free {
                entry.phase = entry.idle_phase();
            }
        }
    }

    /// A node asks to keep its lease. Only the current, unrevoked lease is renewed.
    /// [`SiteModel::renew`] for a site that owns accounts by majority lease: `None` when
    /// the lease's account is not owned here now, and the node must get no answer. Not a
    /// refusal: a refused node stops at once, an unanswered one keeps the lease it has,
    /// which its last renewal bounded by the ownership then (docs/ownership.md), and asks
    /// again; after a restart, this site owns its accounts again within a round or two.
    pub fn renew_as_owner(
        &mut self,
        server: &ServerId,
        epoch: Epoch,
        now: Millis,
    ) -> Option<LeaseRenewal> {
        let account = self
            .server(server)
            .and_then(|entry| entry.lease.as_ref())
            .filter(|lease| lease.epoch == epoch && lease.loan.is_none())
            .map(|lease| lease.account);
        if let Some(account) = account
            && self.owned_until(account, now).is_none()
        {
            return None;
        }
        Some(self.renew(server, epoch, now))
    }

    /// Until when this site may serve `account` (its ownership's end), or `None`. Loans
    /// are the lender's to bound (docs/loans.md): a guest account is always served.
    pub(super) fn owned_until(&self, account: AccountIx, now: Millis) -> Option<Millis> {
        let entry = &self.accounts[account as usize];
        if entry.guest.is_some() {
            return Some(Millis(u64::MAX));
        }
        match &entry.owner {
            Owner::Here { until, .. } if *until > now => Some(*until),
            _ => None,
        }
    }

    pub fn renew(&mut self, server: &ServerId, epoch: Epoch, now: Millis) -> LeaseRenewal {
        let lease_ttl = self.timings.lease_ttl;
        // A node's lease never outlives this site's ownership of its account, nor, for a
        // lent server, its loan (which the borrower renews only while it owns the account).
        let lease = self.server(server).and_then(|entry| entry.lease.as_ref());
        let until = lease.and_then(|lease| {
            let owned = self.owned_until(lease.account, now)?;
            Some(
                lease
                    .loan
                    .as_ref()
                    .map_or(owned, |loan| owned.min(loan.expires_at)),
            )
        });
        let ttl = until.map_or(lease_ttl, |until| lease_ttl.min(until.since(now)));
        let Some(entry) = self.server_mut(server) else {
            return LeaseRenewal::Refused(refusal(RefusalCause::WrongServer, "unknown server"));
        };
        match &mut entry.lease {
            // A lent server's node lease runs only as long as its loan does.
            Some(lease)
                if lease.epoch == epoch
                    && !lease.revoked
                    && lease
                        .loan
                        .as_ref()
                        .is_none_or(|loan| loan.expires_at >= now) =>
            {
                lease.expires_at = lease.expires_at.max(now + ttl);
                LeaseRenewal::Renewed {
                    epoch,
                    ttl_ms: millis(ttl),
                }
            }
            Some(lease) if lease.epoch == epoch => LeaseRenewal::Refused(refusal(
                RefusalCause::UnknownLease,
                &format!("lease {epoch} of {server} is revoked"),
            )),
            Some(lease) if epoch < lease.epoch => LeaseRenewal::Refused(refusal(
                RefusalCause::StaleEpoch { seen: lease.epoch },
                &format!("{epoch} is older than the current lease {}", lease.epoch),
            )),
            _ => LeaseRenewal::Refused(refusal(
                RefusalCause::UnknownLease,
                &format!("{server} holds no lease under {epoch}"),
            )),
        }
    }

    /// The node's answer to `ApplyPointer`, or why there was none. A lost answer is "maybe
    /// applied": the lease stays and simply expires if the node never renews it.
    pub fn pointer_answered(
        &mut self,
        server: &ServerId,
        epoch: Epoch,
        answer: Result<PointerApplication, String>,
        now: Millis,
    ) -> Vec<Effect> {
        let Ok(ix) = self.index_of(server) else {
            return Vec::new();
        };
        match answer {
            Ok(PointerApplication::Accepted { .. }) | Err(_) => Vec::new(),
            Ok(PointerApplication::Refused(refusal)) => {
                let mut effects = Vec::new();
                if let RefusalCause::StaleEpoch { seen } = refusal.cause {
                    effects.extend(self.epoch_seen(ix, seen));
                }
                if self.current_epoch(ix) == Some(epoch) {
                    let why = format!("the node refused the pointer: {}", refusal.detail);
                    effects.extend(self.end_lease(ix, LeaseEndCause::PointerRefused, &why, now));
                }
                effects
            }
        }
    }

    /// The node's answer to `StopWorkload`. Without a `Stopped`, the lease is revoked and
    /// the server waits for it to expire: only then is it sure the node has stopped.
    pub fn stop_answered(
        &mut self,
        server: &ServerId,
        epoch: Epoch,
        answer: Result<StopOutcome, String>,
        now: Millis,
    ) -> Vec<Effect> {
        let Ok(ix) = self.index_of(server) else {
            return Vec::new();
        };
        if self.current_epoch(ix) != Some(epoch) {
            return Vec::new();
        }
        match answer {
            Ok(StopOutcome::Stopped { .. }) => {
                self.end_lease(ix, LeaseEndCause::Stopped, "its workload stopped", now)
            }
            Ok(StopOutcome::Refused(_)) | Err(_) => {
                if let Some(lease) = &mut self.servers[ix].lease {
                    lease.revoked = true;
                }
                Vec::new()
            }
        }
    }

    pub fn workload_joined(&mut self, server: &ServerId, epoch: Epoch, now: Millis) -> Vec<Effect> {
        let Ok(ix) = self.index_of(server) else {
            return Vec::new();
        };
        if self.current_epoch(ix) != Some(epoch) {
            return Vec::new();
        }
        let entry = &mut self.servers[ix];
        let Phase::Starting { decided_at } = entry.phase else {
            return Vec::new();
        };
        entry.phase = Phase::Serving;
        let account = entry.lease.as_ref().map(|lease| lease.account).unwrap_or(0);
        let mut effects = vec![Effect::Observe(Observation::Reallocated {
            server: server.clone(),
            account: self.account_name(account).clone(),
            latency_ms: millis(now.since(decided_at)),
        })];
        // A lent server's borrower learns at once that it serves (its loan latency).
        effects.extend(self.relay(ix, now));
        effects
    }

    pub fn workload_failed(
        &mut self,
        server: &ServerId,
        epoch: Epoch,
        reason: &str,
        now: Millis,
    ) -> Vec<Effect> {
        let Ok(ix) = self.index_of(server) else {
            return Vec::new();
        };
        let Some(account) = self.current_lease(ix).map(|lease| lease.account) else {
            return Vec::new();
        };
        if self.current_epoch(ix) != Some(epoch) {
            return Vec::new();
        }
        self.servers[ix].avoid = Some((account, now));
        let mut effects = vec![audit(
            AuditKind::WorkloadFailed,
            Some(server),
            Some(self.account_name(account)),
            None,
            Some(epoch),
            format!(
                "{} failed on {server}: {reason}; {server} is avoided for it for {} s and another server will be tried",
                self.account_name(account),
                super::AVOID_AFTER_FAILURE.as_secs()
            ),
        )];
        effects.extend(self.end_lease(
            ix,
            LeaseEndCause::WorkloadFailed,
            "its workload failed",
            now,
        ));
        effects
    }

    pub fn workload_stopped(
        &mut self,
        server: &ServerId,
        epoch: Epoch,
        cause: &StopCause,
        now: Millis,
    ) -> Vec<Effect> {
        let Ok(ix) = self.index_of(server) else {
            return Vec::new();
        };
        if self.current_epoch(ix) != Some(epoch) {
            return Vec::new();
        }
        let end = match cause {
            StopCause::LeaseExpired => LeaseEndCause::Expired,
            StopCause::Exited { .. } => LeaseEndCause::WorkloadExited,
            StopCause::Commanded => LeaseEndCause::Stopped,
        };
        self.end_lease(ix, end, &format!("its workload stopped ({cause:?})"), now)
    }

    /// A node reports having seen `epoch`: if that is above what we know of server `ix`,
    /// remember it (journaled), so that no lease ever reuses it (S-2).
    pub(super) fn epoch_seen(&mut self, ix: usize, epoch: Epoch) -> Option<Effect> {
        let entry = &mut self.servers[ix];
        if epoch <= entry.highest_epoch {
            return None;
        }
        entry.highest_epoch = epoch;
        Some(Effect::Journal(JournalOp::EpochSeen {
            server: entry.id.clone(),
            epoch,
        }))
    }

    pub(super) fn index_of(&self, server: &ServerId) -> Result<usize, Refusal> {
        self.server_index.get(server).copied().ok_or_else(|| {
            refusal(
                RefusalCause::WrongServer,
                &format!("{server} is not in {}'s inventory", self.site),
            )
        })
    }

    fn current_lease(&self, ix: usize) -> Option<&Lease> {
        self.servers[ix].lease.as_ref()
    }

    fn current_epoch(&self, ix: usize) -> Option<Epoch> {
        self.current_lease(ix).map(|lease| lease.epoch)
    }

    /// Leases server `ix` to `account` under a fresh epoch: journal it, then send the
    /// pointer (D-1, S-2). The caller has checked the server holds no lease.
    pub(super) fn grant(&mut self, ix: usize, account: AccountIx, why: Grant) -> Vec<Effect> {
        let Grant {
            now,
            decided_at,
            reason,
            kind,
            from,
            loan,
        } = why;
        let ttl = self.timings.lease_ttl;
        let floor = self.epoch_floor;
        self.rare.loans |= loan.is_some();
        let entry = &mut self.servers[ix];
        debug_assert!(
            entry.lease.is_none(),
            "S-3: a leased server got a second lease"
        );
        let epoch = entry.highest_epoch.max(floor).next();
        entry.highest_epoch = epoch;
        entry.lease = Some(Lease {
            account,
            epoch,
            expires_at: now + ttl,
            granted_at: now,
            revoked: false,
            loan: loan.map(Box::new),
        });
        entry.phase = Phase::Starting { decided_at };
        let server = entry.id.clone();
        let account_name = self.account_name(account).clone();
        let from = from.map(|from| self.account_name(from).clone());
        let lent_to = self.accounts[account as usize].guest.clone();
        let mut audited = audit(
            kind,
            Some(&server),
            Some(&account_name),
            from.as_ref(),
            Some(epoch),
            reason,
        );
        if let (Effect::Audit(entry), Some(holder)) = (&mut audited, &lent_to) {
            entry.peer = Some(holder.borrower.clone());
        }
        vec![
            Effect::Journal(JournalOp::LeaseGranted {
                server: server.clone(),
                account: account_name.clone(),
                epoch,
                lent_to,
            }),
            audited,
        ]
        .into_iter()
        .chain(if self.needs_reimage(ix, account) {
            self.start_reimage(ix, account, epoch, now)
        } else {
            vec![Effect::Send(Command::Apply {
                server,
                pointer: self.pointer(account, epoch),
            })]
        })
        .collect()
    }

    /// Ends the lease of server `ix` (journaled), then sends a draining server on to where
    /// it was going.
    pub(super) fn end_lease(
        &mut self,
        ix: usize,
        cause: LeaseEndCause,
        why: &str,
        now: Millis,
    ) -> Vec<Effect> {
        let entry = &mut self.servers[ix];
        let Some(lease) = entry.lease.take() else {
            return Vec::new();
        };
        let (next, decided_at) = match entry.phase {
            Phase::Draining { next, decided_at } => (next, decided_at),
            _ => (Next::Free, now),
        };
        entry.phase = match entry.phase {
            Phase::Failed { since } => Phase::Failed { since },
            _ => entry.idle_phase(),
        };
        let server = entry.id.clone();
        let account = self.account_name(lease.account).clone();
        let mut effects = vec![
            Effect::Journal(JournalOp::LeaseEnded {
                server: server.clone(),
                epoch: lease.epoch,
            }),
            audit(
                AuditKind::LeaseEnded,
                Some(&server),
                Some(&account),
                None,
                Some(lease.epoch),
                format!(
                    "lease of {server} to {account} under {} ended: {why}",
                    lease.epoch
                ),
            ),
            Effect::Observe(Observation::LeaseEnded { cause }),
        ];
        // The borrower stops counting a lent server as soon as its lease here is over.
        if let Some(loan) = &lease.loan {
            // The node may learn first that the loan ran out (its lease, bounded by the
            // loan, ran out by its own clock, or its renewal is refused) and stop before the
            // round notices: the audit log still says why.
            if !lease.revoked && (loan.expires_at < now || cause == LeaseEndCause::Expired) {
                effects.push(super::loan_audit(
                    AuditKind::LoanExpired,
                    &server,
                    &account,
                    &loan.borrower,
                    lease.epoch,
                    format!(
                        "{} stopped renewing the loan of {server} for {account}; it stopped and came home",
                        loan.borrower
                    ),
                ));
            }
            effects.push(Effect::ToPeer {
                to: loan.borrower.clone(),
                message: PeerMessage::Status(LentServerStatus {
                    server: server.clone(),
                    epoch: lease.epoch,
                    account: account.clone(),
                    health: Health::Idle,
                    load: None,
                }),
            });
        }
        // A move finishes only into an account this site still owns.
        if let Next::Join(to) = next
            && self.servers[ix].phase == Phase::Free
            && self.servers[ix].out_of_use().is_none()
            && self.owned_until(to, now).is_some()
        {
            let reason = format!(
                "{server} drained from {account} and joins {}",
                self.account_name(to)
            );
            effects.extend(self.grant(
                ix,
                to,
                Grant {
                    now,
                    decided_at,
                    reason,
                    kind: AuditKind::Join,
                    from: Some(lease.account),
                    loan: None,
                },
            ));
        }
        effects
    }

    /// Tells a server to drain and stop, then go to `next`.
    pub(super) fn drain(
        &mut self,
        ix: usize,
        next: Next,
        reason: String,
        now: Millis,
    ) -> Vec<Effect> {
        self.drain_for(ix, next, self.timings.drain_timeout, reason, now)
    }

    /// [`SiteModel::drain`] with a drain time of its own (a returned loan was drained by
    /// its borrower already).
    pub(super) fn drain_for(
        &mut self,
        ix: usize,
        next: Next,
        drain: Duration,
        reason: String,
        now: Millis,
    ) -> Vec<Effect> {
        let drain_ms = millis(drain);
        let entry = &mut self.servers[ix];
        let Some(lease) = &entry.lease else {
            return Vec::new();
        };
        let epoch = lease.epoch;
        entry.phase = Phase::Draining {
            next,
            decided_at: now,
        };
        vec![Effect::Send(Command::Stop {
            server: entry.id.clone(),
            epoch,
            drain_ms,
            reason,
        })]
    }
}

/// Why and when a lease is granted, for its audit entry and its latency.
pub(super) struct Grant {
    pub now: Millis,
    /// When the decision was made (earlier than `now` after a drain).
    pub decided_at: Millis,
    pub reason: String,
    pub kind: AuditKind,
    /// The account the server left, for a move.
    pub from: Option<AccountIx>,
    /// Set when the lease is a loan to a peer site.
    pub loan: Option<LoanTerms>,
}

impl Grant {
    pub fn now(now: Millis, reason: String, kind: AuditKind) -> Grant {
        Grant {
            now,
            decided_at: now,
            reason,
            kind,
            from: None,
            loan: None,
        }
    }
}

fn refusal(cause: RefusalCause, detail: &str) -> Refusal {
    Refusal {
        cause,
        detail: detail.to_owned(),
    }
}
