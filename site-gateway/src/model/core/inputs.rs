//! The inputs of a [`SiteCore`] other than a round and a config edit: what nodes report,
//! what peers ask and answer, and the shell's word that a command could not be delivered.
//! Each takes `now` and returns the effects to perform (and the answer, where one is due).

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use leasehold_federation::wire::common::{Refusal, RefusalCause};
use leasehold_federation::wire::node::{
    LeaseRenewal, PointerApplication, Registration, RunningWorkload, StopCause, StopOutcome,
};
use leasehold_federation::wire::site::{
    AccountSpec, ClaimOwnership, LentServerStatus, LoanOffer, LoanRenewal, OwnershipVotes,
    RecallLoan, ReleaseOwnership,
};

use super::{GroupChanges, SiteCore};
use crate::model::Millis;
use crate::model::effects::{Command, Effect, PeerMessage};

/// What a node reported about its workload.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadEvent {
    Joined,
    Failed(String),
    Stopped(StopCause),
}

impl SiteCore {
    /// A node agent connected and introduced itself.
    pub fn register(
        &mut self,
        server: &ServerId,
        running: Option<&RunningWorkload>,
        highest_epoch: Epoch,
        now: Millis,
    ) -> Result<(Registration, Vec<Effect>), Refusal> {
        self.model.register(server, running, highest_epoch, now)
    }

    /// A node asks to keep its lease. `None`: this site does not own the lease's account
    /// now, and the node gets no answer (docs/ownership.md).
    pub fn renew(&mut self, server: &ServerId, epoch: Epoch, now: Millis) -> Option<LeaseRenewal> {
        self.model.renew_as_owner(server, epoch, now)
    }

    /// A node's answer to an `Apply`, or why there was none.
    pub fn pointer_answered(
        &mut self,
        server: &ServerId,
        epoch: Epoch,
        answer: Result<PointerApplication, String>,
        now: Millis,
    ) -> Vec<Effect> {
        self.model.pointer_answered(server, epoch, answer, now)
    }

    /// A node's answer to a `Stop`, or why there was none.
    pub fn stop_answered(
        &mut self,
        server: &ServerId,
        epoch: Epoch,
        answer: Result<StopOutcome, String>,
        now: Millis,
    ) -> Vec<Effect> {
        self.model.stop_answered(server, epoch, answer, now)
    }

    pub fn workload_reported(
        &mut self,
        server: &ServerId,
        epoch: Epoch,
        event: &WorkloadEvent,
        now: Millis,
    ) -> Vec<Effect> {
        match event {
            WorkloadEvent::Joined => self.model.workload_joined(server, epoch, now),
            WorkloadEvent::Failed(reason) => self.model.workload_failed(server, epoch, reason, now),
            WorkloadEvent::Stopped(cause) => self.model.workload_stopped(server, epoch, cause, now),
        }
    }

    /// The node's connection is gone (its heartbeats will tell whether it failed).
    /// An operator puts `server` into maintenance (`Some`) or gives it back (`None`).
    pub fn set_maintenance(
        &mut self,
        server: &ServerId,
        record: Option<crate::model::effects::MaintenanceRecord>,
        now: Millis,
    ) -> Result<Vec<Effect>, crate::model::site::MaintenanceRefusal> {
        self.model.set_maintenance(server, record, now)
    }

    pub fn disconnected(&mut self, server: &ServerId) {
        self.model.disconnected(server);
    }

    /// A command the shell could not deliver: its server is not connected.
    pub fn undeliverable(&mut self, command: Command, now: Millis) -> Vec<Effect> {
        let why = "not connected".to_owned();
        match command {
            Command::Apply { server, pointer } => {
                self.model
                    .pointer_answered(&server, pointer.epoch, Err(why), now)
            }
            Command::Stop { server, epoch, .. } => {
                self.model.stop_answered(&server, epoch, Err(why), now)
            }
        }
    }

    /// A message for a site that is not a peer (removed by a config edit): a request is
    /// answered at once as undeliverable; anything else is dropped.
    pub fn peer_unreachable(
        &mut self,
        to: &SiteId,
        message: PeerMessage,
        now: Millis,
    ) -> Vec<Effect> {
        let why = format!("{to} is not a peer of this site");
        match message {
            PeerMessage::RequestLoan(request) => {
                self.model.loan_offered(to, &request.account, Err(why), now)
            }
            PeerMessage::RenewLoan(renew) => {
                self.model
                    .loan_renewed(to, &renew.server, renew.epoch, Err(why), now)
            }
            _ => Vec::new(),
        }
    }

    /// What a Peer actor last measured of a site: up or down, and its round trip.
    pub fn peer_seen(
        &mut self,
        site: &SiteId,
        up: bool,
        rtt: Option<std::time::Duration>,
        now: Millis,
    ) {
        self.model.peer_seen(site, up, rtt);
        if let Some(ownership) = &mut self.ownership {
            ownership.peer_seen(site, up, now);
        }
    }

    /// A peer announced the accounts it homes: the ones this site may have to take over.
    pub fn catalogue_seen(&mut self, site: &SiteId, accounts: Vec<AccountSpec>) {
        if let Some(ownership) = &mut self.ownership {
            ownership.catalogue(site, accounts);
        }
    }

    /// A peer claims accounts; the answer is this site's votes (its acceptor keeps nothing
    /// on disk, so there is nothing to journal first).
    pub fn claims_from(
        &mut self,
        from: &SiteId,
        claims: &ClaimOwnership,
        now: Millis,
    ) -> OwnershipVotes {
        match &mut self.ownership {
            Some(ownership) => ownership.claims(from, claims, now),
            None => OwnershipVotes { votes: Vec::new() },
        }
    }

    /// A peer gives ownership grants up.
    pub fn released_by(&mut self, from: &SiteId, releases: &ReleaseOwnership) {
        if let Some(ownership) = &mut self.ownership {
            ownership.released(from, releases);
        }
    }

    /// A peer's votes on our claims: an ownership won may take an account over (its group
    /// starts), one lost stops it being served.
    pub fn ownership_answered(
        &mut self,
        from: &SiteId,
        votes: &OwnershipVotes,
        now: Millis,
    ) -> (Vec<Effect>, GroupChanges) {
        let Some(ownership) = &mut self.ownership else {
            return (Vec::new(), GroupChanges::default());
        };
        let effects = ownership.votes(from, votes, now);
        let groups = self.sync_ownership(now);
        (effects, groups)
    }

    /// A peer asks us for `count` servers for its `account`: `spec` from its own catalogue
    /// (`None` for an account it took over: its home's catalogue describes it), `handback`
    /// when the account is ours and it is handing it back. The offer may be sent only once
    /// the effects are journaled (D-1).
    pub fn lend_to(
        &mut self,
        borrower: &SiteId,
        account: &AccountId,
        spec: Option<AccountSpec>,
        count: u32,
        handback: bool,
        now: Millis,
    ) -> (LoanOffer, Vec<Effect>) {
        if handback {
            return self.model.lend_home(borrower, account, count, now);
        }
        let spec = spec.or_else(|| {
            self.ownership
                .as_ref()
                .and_then(|ownership| ownership.spec_of(account))
        });
        let Some(spec) = spec else {
            let detail = format!(
                "{} has no catalogue entry for account {account} (its home's catalogue has not arrived, or does not list it)",
                self.model.site(),
            );
            let refusal = Refusal {
                cause: RefusalCause::NotAllowed,
                detail,
            };
            return (LoanOffer::Refused(refusal), Vec::new());
        };
        self.model.lend(borrower, &spec, count, now)
    }

    /// A borrower renews a loan.
    pub fn renew_loan_from(
        &mut self,
        borrower: &SiteId,
        server: &ServerId,
        epoch: Epoch,
        now: Millis,
    ) -> LoanRenewal {
        self.model.renew_loan(borrower, server, epoch, now)
    }

    /// A borrower gives a lent server back; refused (nothing changes) if it is not lent to
    /// it under `epoch`.
    pub fn return_from(
        &mut self,
        borrower: &SiteId,
        server: &ServerId,
        epoch: Epoch,
        now: Millis,
    ) -> Result<Vec<Effect>, Refusal> {
        self.model.loan_returned(borrower, server, epoch, now)
    }

    /// A lender recalls a server it lent us; refused (nothing changes) if unknown.
    pub fn recall_from(
        &mut self,
        lender: &SiteId,
        recall: &RecallLoan,
        now: Millis,
    ) -> Result<Vec<Effect>, String> {
        self.model.loan_recalled(lender, recall, now)
    }

    /// A lender relays the health of a server it lent us.
    pub fn status_from(
        &mut self,
        lender: &SiteId,
        status: &LentServerStatus,
        now: Millis,
    ) -> Result<Vec<Effect>, String> {
        self.model.loan_status(lender, status, now)
    }

    /// A lender's answer to our loan request (or why there was none).
    pub fn loan_offered(
        &mut self,
        lender: &SiteId,
        account: &AccountId,
        answer: Result<LoanOffer, String>,
        now: Millis,
    ) -> Vec<Effect> {
        self.model.loan_offered(lender, account, answer, now)
    }

    /// A lender's answer to our loan renewal (or why there was none).
    pub fn loan_renewed(
        &mut self,
        lender: &SiteId,
        server: &ServerId,
        epoch: Epoch,
        answer: Result<LoanRenewal, String>,
        now: Millis,
    ) -> Vec<Effect> {
        self.model.loan_renewed(lender, server, epoch, answer, now)
    }
}
