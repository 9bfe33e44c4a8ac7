//! The borrower's half of a loan (docs/loans.md): after each round, an account the site
//! cannot serve from its own servers asks a peer for the rest; borrowed servers count for
//! the account while their loan's lease runs (renewed here, anchored at our send time);
//! they are drained and returned when the need falls, drained and handed back when the
//! lender recalls them, and no longer counted once their lease ends unrenewed.

use std::collections::VecDeque;
use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use leasehold_federation::wire::common::Health;
use leasehold_federation::wire::site::{
    LentServerStatus, LoanOffer, LoanRenewal, RecallLoan, RenewLoan, RequestLoan, ReturnLoan,
};

use super::{SiteModel, loan_audit, millis};
use crate::model::Millis;
use crate::model::arbiter::AccountIx;
use crate::model::effects::{AuditKind, Effect, JournalOp, Observation, PeerMessage};

use super::borrowing::{
    ASK_AGAIN_AFTER, ASK_TIMEOUT, Ask, BorrowRecord, BorrowState, Borrowed, LATENCIES_KEPT,
    PeerView, RENEWS_IN_FLIGHT,
};

impl SiteModel {
    /// What a Peer actor measured of its site: up or not, and the RTT.
    pub fn peer_seen(&mut self, site: &SiteId, up: bool, rtt: Option<Duration>) {
        self.borrowing
            .peers
            .insert(site.clone(), PeerView { up, rtt });
    }

    pub(super) fn recover_borrowed(
        &mut self,
        records: &[BorrowRecord],
        now: Millis,
    ) -> Vec<Effect> {
        let ttl = self.timings.lease_ttl;
        let mut effects = Vec::new();
        for record in records {
            match self.account_index.get(&record.account).copied() {
                Some(account) if self.accounts[account as usize].is_home() => {
                    self.borrowing.loans.push(Borrowed {
                        lender: record.lender.clone(),
                        server: record.server.clone(),
                        epoch: record.epoch,
                        account,
                        service_addr: record.service_addr.clone(),
                        requested_at: now,
                        // One TTL to renew it, as for a recovered lease of our own.
                        expires_at: now + ttl,
                        state: BorrowState::Starting,
                        load: None,
                        latency_ms: None,
                        renews_sent: VecDeque::new(),
                        renewed_at: Millis(0),
                    });
                }
                _ => {
                    effects.push(Effect::Journal(JournalOp::BorrowEnded {
                        server: record.server.clone(),
                        epoch: record.epoch,
                    }));
                    effects.push(give_back(&record.lender, &record.server, record.epoch));
                }
            }
        }
        effects
    }

    /// After the round: expire, renew, finish returns, then ask for what our accounts are
    /// still short of and return what they no longer need.
    pub(super) fn tick_borrowed(&mut self, now: Millis) -> Vec<Effect> {
        let mut effects = Vec::new();
        let timeout = ASK_TIMEOUT;
        self.borrowing
            .asks
            .retain(|ask| now.since(ask.sent_at) < timeout);
        let mut ix = 0;
        while ix < self.borrowing.loans.len() {
            let loan = &self.borrowing.loans[ix];
            if loan.expires_at < now {
                let loan = self.borrowing.loans.remove(ix);
                self.borrowing.counts.expired += 1;
                let reason = format!(
                    "the loan of {} from {} ran out without renewal; {} no longer counts it",
                    loan.server,
                    loan.lender,
                    self.account_name(loan.account)
                );
                effects.extend(self.end_borrow(&loan, AuditKind::LoanExpired, reason, true));
                continue;
            }
            if let BorrowState::Returning { since, drain, .. } = loan.state
                && now.since(since) >= drain
            {
                let loan = self.borrowing.loans.remove(ix);
                let recalled = matches!(loan.state, BorrowState::Returning { recalled: true, .. });
                if recalled {
                    self.borrowing.counts.recalled += 1;
                } else {
                    self.borrowing.counts.returned += 1;
                }
                effects.extend(self.end_borrow(&loan, AuditKind::LoanReturn, String::new(), true));
                continue;
            }
            ix += 1;
        }
        effects.extend(self.renew_borrowed(now));
        // Counted once for all accounts: one pass over the servers, not one per account
        // (at 100,000 servers and 10,000 accounts that was most of a round).
        // Only borrowed servers are returned on it: with none, no pass over the servers.
        let incoming = if self.borrowing.loans.is_empty() {
            Vec::new()
        } else {
            self.incoming()
        };
        for account in 0..self.accounts.len() {
            // A loan never outlives our ownership of its account: one we do not own now
            // gives its loans back and asks for none.
            if !self.accounts[account].is_home()
                || self.owned_until(account as AccountIx, now).is_none()
            {
                effects.extend(self.return_excess(account as AccountIx, 0, now));
                continue;
            }
            if self.accounts[account].handing_back.is_some() {
                effects.extend(self.tick_handing_back(account as AccountIx, now));
                continue;
            }
            let need = self.accounts[account]
                .shortfall
                .map_or(0, |(wanted, have)| wanted.saturating_sub(have));
            // The round counts a server still draining towards the account as its own; a
            // borrowed server goes back only once such a server has joined, so the account
            // does not dip below its demand in between.
            let incoming = incoming.get(account).copied().unwrap_or(0);
            effects.extend(self.return_excess(account as AccountIx, need + incoming, now));
            effects.extend(self.ask(account as AccountIx, need, now));
        }
        effects
    }

    /// Per account, the servers of ours draining from another account to join it.
    fn incoming(&self) -> Vec<u32> {
        let mut counts = vec![0; self.accounts.len()];
        for entry in &self.servers {
            if let super::server::Phase::Draining {
                next: super::server::Next::Join(to),
                ..
            } = entry.phase
                && let Some(count) = counts.get_mut(to as usize)
            {
                *count += 1;
            }
        }
        counts
    }

    fn renew_borrowed(&mut self, now: Millis) -> Vec<Effect> {
        let every = self.timings.renew_interval;
        let give_up = self.timings.lease_ttl;
        let mut effects = Vec::new();
        // A loan must not outlive our ownership of its account: the lender's node serves
        // it until the loan's lease runs out (a TTL from the renewal's arrival), so a
        // renewal goes out only while the ownership has that TTL to run
        // (docs/ownership.md, "Loans and ownership").
        let need = self.timings.lease_ttl;
        let owned: Vec<bool> = (0..self.accounts.len())
            .map(|ix| {
                self.owned_until(ix as AccountIx, now)
                    .is_some_and(|until| until.since(now) >= need)
            })
            .collect();
        for loan in &mut self.borrowing.loans {
            if !owned.get(loan.account as usize).copied().unwrap_or(false) {
                continue;
            }
            while loan
                .renews_sent
                .front()
                .is_some_and(|sent| now.since(*sent) > give_up)
                || loan.renews_sent.len() >= RENEWS_IN_FLIGHT
            {
                loan.renews_sent.pop_front();
            }
            let last = loan.renews_sent.back().copied().unwrap_or(loan.renewed_at);
            if now.since(last) < every {
                continue;
            }
            loan.renews_sent.push_back(now);
            effects.push(Effect::ToPeer {
                to: loan.lender.clone(),
                message: PeerMessage::RenewLoan(RenewLoan {
                    server: loan.server.clone(),
                    epoch: loan.epoch,
                }),
            });
        }
        effects
    }

    /// Starts returning the newest borrowed servers of `account` beyond `need`.
    fn return_excess(&mut self, account: AccountIx, need: u32, now: Millis) -> Vec<Effect> {
        let active = self.borrowing.active(account).count() as u32;
        if active <= need {
            return Vec::new();
        }
        let mut excess = active - need;
        let drain = self.timings.drain_timeout;
        let name = self.account_name(account).clone();
        let mut effects = Vec::new();
        for loan in self.borrowing.loans.iter_mut().rev() {
            if excess == 0 {
                break;
            }
            if loan.account != account || matches!(loan.state, BorrowState::Returning { .. }) {
                continue;
            }
            excess -= 1;
            effects.push(start_return(
                loan,
                &name,
                &format!(
                    "no longer needed ({need} wanted beyond our own servers, {active} borrowed)"
                ),
                drain,
                now,
            ));
        }
        effects
    }

    /// Asks the next lender for what `account` still needs, one request at a time.
    fn ask(&mut self, account: AccountIx, need: u32, now: Millis) -> Vec<Effect> {
        let active = self.borrowing.active(account).count() as u32;
        if need <= active
            || now < self.borrow_after
            || self.borrowing.asks.iter().any(|ask| ask.account == account)
        {
            return Vec::new();
        }
        let Some(lender) = self.next_lender(now) else {
            return Vec::new();
        };
        self.send_ask(account, lender, need - active, false, now)
    }

    /// Asks `lender` for `count` servers for `account` (`handback`: we are handing the
    /// account back to `lender`, its home). Not while our ownership of the account has
    /// less than a lease TTL to run: the lender starts a loan's lease when it grants it,
    /// and a loan must not outlive our ownership (S-5; the simulation's seed 138 saw a
    /// hand-back loan asked for 200 ms before the ownership ran out serve on after it,
    /// while the home, owner again, started the account on another server).
    pub(super) fn send_ask(
        &mut self,
        account: AccountIx,
        lender: SiteId,
        count: u32,
        handback: bool,
        now: Millis,
    ) -> Vec<Effect> {
        let lasts = self
            .owned_until(account, now)
            .is_some_and(|until| until.since(now) >= self.timings.lease_ttl);
        if !lasts {
            return Vec::new();
        }
        self.borrowing.asks.push(Ask {
            lender: lender.clone(),
            account,
            count,
            sent_at: now,
        });
        vec![Effect::ToPeer {
            to: lender,
            message: PeerMessage::RequestLoan(RequestLoan {
                account: self.account_name(account).clone(),
                count,
                handback,
                // The shell adds them as the request leaves: the core holds no secret.
                secrets: Default::default(),
            }),
        }]
    }

    /// The first peer of `lending.borrow_from` that is up and has not refused us lately;
    /// nearest first when `borrow_from` was left to its default (every peer).
    fn next_lender(&self, now: Millis) -> Option<SiteId> {
        let mut candidates: Vec<(usize, Duration, &SiteId)> = self
            .lending
            .borrow_from
            .iter()
            .enumerate()
            .filter(|(_, site)| {
                self.borrowing.peers.get(*site).is_some_and(|peer| peer.up)
                    && self
                        .borrowing
                        .not_before
                        .get(*site)
                        .is_none_or(|at| *at <= now)
            })
            .map(|(position, site)| {
                let rtt = self.borrowing.peers.get(site).and_then(|peer| peer.rtt);
                (position, rtt.unwrap_or(Duration::MAX), site)
            })
            .collect();
        if self.lending.borrow_by_rtt {
            candidates.sort_by_key(|(position, rtt, _)| (*rtt, *position));
        }
        candidates.first().map(|(_, _, site)| (*site).clone())
    }

    /// A lender's answer to our `RequestLoan` (or why there was none).
    pub fn loan_offered(
        &mut self,
        lender: &SiteId,
        account: &AccountId,
        answer: Result<LoanOffer, String>,
        now: Millis,
    ) -> Vec<Effect> {
        let Some(position) =
            self.borrowing.asks.iter().position(|ask| {
                ask.lender == *lender && *self.account_name(ask.account) == *account
            })
        else {
            // An answer to an ask we gave up on: we cannot tell when its lease started,
            // so a grant is handed straight back; a refusal changes nothing.
            return match answer {
                Ok(LoanOffer::Granted { servers }) => servers
                    .iter()
                    .map(|lent| give_back(lender, &lent.server, lent.epoch))
                    .collect(),
                _ => Vec::new(),
            };
        };
        let ask = self.borrowing.asks.remove(position);
        match answer {
            Ok(LoanOffer::Granted { servers }) => {
                self.borrowing.refusal_audited.remove(lender);
                if (servers.len() as u32) < ask.count {
                    self.borrowing
                        .not_before
                        .insert(lender.clone(), now + ASK_AGAIN_AFTER);
                }
                self.take_loans(lender, ask.account, ask.sent_at, servers)
            }
            Ok(LoanOffer::Refused(refusal)) => {
                self.refused_by(lender, ask.account, refusal.detail, now)
            }
            Err(error) => self.refused_by(lender, ask.account, format!("no answer: {error}"), now),
        }
    }

    fn refused_by(
        &mut self,
        lender: &SiteId,
        account: AccountIx,
        why: String,
        now: Millis,
    ) -> Vec<Effect> {
        self.borrowing
            .not_before
            .insert(lender.clone(), now + ASK_AGAIN_AFTER);
        let name = self.account_name(account).clone();
        if self.borrowing.refusal_audited.get(lender) == Some(&why) {
            return Vec::new();
        }
        self.borrowing
            .refusal_audited
            .insert(lender.clone(), why.clone());
        vec![Effect::Audit(crate::model::effects::AuditEntry {
            kind: AuditKind::LoanRefused,
            server: None,
            account: Some(name.clone()),
            from: None,
            epoch: None,
            peer: Some(lender.clone()),
            term: None,
            reason: format!(
                "{lender} lent nothing for {name}: {why}; asking the next lender, and {lender} again in {} s",
                ASK_AGAIN_AFTER.as_secs()
            ),
        })]
    }

    fn take_loans(
        &mut self,
        lender: &SiteId,
        account: AccountIx,
        requested_at: Millis,
        servers: Vec<leasehold_federation::wire::site::LentServer>,
    ) -> Vec<Effect> {
        let name = self.account_name(account).clone();
        let mut effects = Vec::new();
        for lent in servers {
            // A server id is unique in the federation: one of ours, or one we hold
            // already, cannot be lent to us (a replay, or a confused peer).
            if self.server_index.contains_key(&lent.server)
                || self
                    .borrowing
                    .loans
                    .iter()
                    .any(|loan| loan.server == lent.server)
            {
                continue;
            }
            let expires_at = requested_at + Duration::from_millis(lent.ttl_ms);
            effects.push(Effect::Journal(JournalOp::Borrowed {
                server: lent.server.clone(),
                lender: lender.clone(),
                account: name.clone(),
                epoch: lent.epoch,
                service_addr: lent.service_addr.clone(),
            }));
            effects.push(loan_audit(
                AuditKind::Borrow,
                &lent.server,
                &name,
                lender,
                lent.epoch,
                format!(
                    "{lender} lent us {} for {name} ({} ms lease, renewed by us); it serves at {} once healthy",
                    lent.server, lent.ttl_ms, lent.service_addr
                ),
            ));
            self.borrowing.counts.borrowed += 1;
            self.borrowing.loans.push(Borrowed {
                lender: lender.clone(),
                server: lent.server,
                epoch: lent.epoch,
                account,
                service_addr: lent.service_addr,
                requested_at,
                expires_at,
                state: BorrowState::Starting,
                load: None,
                latency_ms: None,
                renews_sent: VecDeque::new(),
                // Renewed from the request on: the first renewal goes out as soon as the
                // request is a renew interval old, so a slow grant still gets renewed.
                renewed_at: requested_at,
            });
        }
        effects
    }

    /// The lender's answer to our `RenewLoan`.
    pub fn loan_renewed(
        &mut self,
        lender: &SiteId,
        server: &ServerId,
        epoch: Epoch,
        answer: Result<LoanRenewal, String>,
        _now: Millis,
    ) -> Vec<Effect> {
        let Ok(ix) = self.borrowing.find(lender, server, epoch) else {
            return Vec::new();
        };
        let loan = &mut self.borrowing.loans[ix];
        let Some(sent) = loan.renews_sent.pop_front() else {
            return Vec::new();
        };
        match answer {
            Ok(LoanRenewal::Renewed { ttl_ms, .. }) => {
                loan.renewed_at = loan.renewed_at.max(sent);
                loan.expires_at = loan.expires_at.max(sent + Duration::from_millis(ttl_ms));
                Vec::new()
            }
            Ok(LoanRenewal::Refused(refusal)) => {
                let loan = self.borrowing.loans.remove(ix);
                self.borrowing.counts.ended += 1;
                let reason = format!(
                    "{lender} refused to renew the loan of {server}: {}; it no longer counts",
                    refusal.detail
                );
                self.end_borrow(&loan, AuditKind::LoanExpired, reason, false)
            }
            // Lost: renewed again next interval; the lease runs out if none gets through.
            Err(_) => Vec::new(),
        }
    }

    /// The lender relays a lent server's health; `Idle` means its lease there ended.
    /// An unknown server or another epoch is refused with the reason (nothing changes).
    pub fn loan_status(
        &mut self,
        lender: &SiteId,
        status: &LentServerStatus,
        now: Millis,
    ) -> Result<Vec<Effect>, String> {
        let ix = match self.borrowing.find(lender, &status.server, status.epoch) {
            Ok(ix) => ix,
            // The lender's word that a loan we already let go of is over: nothing to do.
            // A late word on a loan we already let go of (a relay crossed our return):
            // nothing to do.
            Err(_)
                if !self
                    .borrowing
                    .loans
                    .iter()
                    .any(|loan| loan.server == status.server) =>
            {
                return Ok(Vec::new());
            }
            Err(why) => return Err(why),
        };
        let account = self.account_name(self.borrowing.loans[ix].account).clone();
        if status.account != account {
            return Err(format!(
                "{lender} says {} runs {}, but we borrowed it for {account}",
                status.server, status.account
            ));
        }
        let loan = &mut self.borrowing.loans[ix];
        loan.load = status.load;
        let mut effects = Vec::new();
        match (&status.health, loan.state) {
            (Health::Idle, state) => {
                let loan = self.borrowing.loans.remove(ix);
                match state {
                    BorrowState::Returning { recalled: true, .. } => {
                        self.borrowing.counts.recalled += 1
                    }
                    BorrowState::Returning { .. } => self.borrowing.counts.returned += 1,
                    _ => self.borrowing.counts.ended += 1,
                }
                let reason = format!(
                    "{lender} ended the loan of {} (its lease there is over); {account} no longer counts it",
                    loan.server
                );
                effects.extend(self.end_borrow(&loan, AuditKind::LoanReturn, reason, false));
            }
            (Health::Healthy, BorrowState::Starting) => {
                loan.state = BorrowState::Serving;
                if loan.latency_ms.is_none() {
                    let latency = millis(now.since(loan.requested_at));
                    loan.latency_ms = Some(latency);
                    if self.borrowing.latencies_ms.len() == LATENCIES_KEPT {
                        self.borrowing.latencies_ms.pop_front();
                    }
                    self.borrowing.latencies_ms.push_back(latency);
                    effects.push(Effect::Observe(Observation::LoanServing {
                        latency_ms: latency,
                    }));
                }
            }
            (Health::Unhealthy { .. } | Health::Starting, BorrowState::Serving) => {
                loan.state = BorrowState::Starting;
            }
            _ => {}
        }
        Ok(effects)
    }

    /// The lender wants a lent server back: out of the endpoints now, drained within the
    /// grace, then returned.
    pub fn loan_recalled(
        &mut self,
        lender: &SiteId,
        recall: &RecallLoan,
        now: Millis,
    ) -> Result<Vec<Effect>, String> {
        let ix = self.borrowing.find(lender, &recall.server, recall.epoch)?;
        let drain = self
            .timings
            .drain_timeout
            .min(Duration::from_millis(recall.grace_ms));
        let account = self.account_name(self.borrowing.loans[ix].account).clone();
        let loan = &mut self.borrowing.loans[ix];
        let since = match loan.state {
            BorrowState::Returning { since, .. } => since,
            _ => now,
        };
        loan.state = BorrowState::Returning {
            since,
            drain,
            recalled: true,
        };
        Ok(vec![loan_audit(
            AuditKind::LoanRecall,
            &recall.server,
            &account,
            lender,
            recall.epoch,
            format!(
                "{lender} recalled {} (grace {} ms): {account} stops sending it traffic, drains it for {} ms and returns it",
                recall.server,
                recall.grace_ms,
                drain.as_millis()
            ),
        )])
    }

    /// Journals the end of a borrowed server; `tell` sends the lender a `ReturnLoan`.
    pub(super) fn end_borrow(
        &self,
        loan: &Borrowed,
        kind: AuditKind,
        reason: String,
        tell: bool,
    ) -> Vec<Effect> {
        let mut effects = vec![Effect::Journal(JournalOp::BorrowEnded {
            server: loan.server.clone(),
            epoch: loan.epoch,
        })];
        if !reason.is_empty() {
            effects.push(loan_audit(
                kind,
                &loan.server,
                self.account_name(loan.account),
                &loan.lender,
                loan.epoch,
                reason,
            ));
        }
        if tell {
            effects.push(give_back(&loan.lender, &loan.server, loan.epoch));
        }
        effects
    }
}

/// Puts a borrowed server of `account` on its way back: out of the endpoints now, returned
/// once `drain` has passed. Returns the audit entry, which says `why`.
pub(super) fn start_return(
    loan: &mut Borrowed,
    account: &AccountId,
    why: &str,
    drain: Duration,
    now: Millis,
) -> Effect {
    loan.state = BorrowState::Returning {
        since: now,
        drain,
        recalled: false,
    };
    loan_audit(
        AuditKind::LoanReturn,
        &loan.server,
        account,
        &loan.lender,
        loan.epoch,
        format!(
            "{account}: {why}; {} from {} drains for {} ms, then goes back",
            loan.server,
            loan.lender,
            drain.as_millis()
        ),
    )
}

/// `ReturnLoan` of `server` under `epoch` to its `lender`.
fn give_back(lender: &SiteId, server: &ServerId, epoch: Epoch) -> Effect {
    Effect::ToPeer {
        to: lender.clone(),
        message: PeerMessage::ReturnLoan(ReturnLoan {
            server: server.clone(),
            epoch,
        }),
    }
}
