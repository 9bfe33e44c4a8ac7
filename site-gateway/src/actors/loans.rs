//! The SiteMaster's messages about loans: what Peer actors hand it (a peer's request,
//! renewal, return, recall, relayed status; answers to our own requests; peer liveness),
//! each passed to the site core, and the core's messages to peers handed to the right Peer.
//! A loan offer is answered only once its leases are journaled (D-1).

use std::time::Duration;

use actix::prelude::*;
use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use leasehold_federation::wire::common::Secrets;
use leasehold_federation::wire::site::{
    AccountSpec, LentServerStatus, LoanOffer, LoanRenewal, RecallLoan,
};

use super::master::SiteMaster;
use super::peer::Outgoing;
use crate::model::effects::PeerMessage;
use crate::model::site::LoansSnapshot;

impl SiteMaster {
    /// Hands a message of the core to the Peer actor of `to`. With no such peer (removed
    /// by a config edit), a request is answered at once as undeliverable.
    pub(super) fn send_to_peer(
        &mut self,
        to: SiteId,
        message: PeerMessage,
        ctx: &mut Context<Self>,
    ) {
        // The account's secrets go with a loan request, over the federation's mutual TLS,
        // for the workload the lent servers will run (the core holds none).
        let message = match message {
            PeerMessage::RequestLoan(mut request) => {
                request.secrets = self.secrets.own(&request.account);
                PeerMessage::RequestLoan(request)
            }
            other => other,
        };
        let peer = self
            .federation
            .as_ref()
            .and_then(|federation| federation.peer(&to));
        if let Some(peer) = peer {
            // do_send: at most a few messages per lent server per renew interval, bounded
            // by max_lent and the accounts' maxima; the Peer answers via LoanAnswered.
            peer.do_send(Outgoing(message));
            return;
        }
        let now = self.now();
        let effects = self.core.peer_unreachable(&to, message, now);
        self.perform(effects, ctx);
    }
}

/// A peer asks us for servers; `spec` is its account from its catalogue.
#[derive(Message)]
#[rtype(result = "LoanOffer")]
pub struct LendTo {
    pub borrower: SiteId,
    pub account: AccountId,
    /// From the borrower's own catalogue, which lists the accounts it homes; `None` for an
    /// account it took over, whose spec is in its home site's catalogue.
    pub spec: Option<AccountSpec>,
    pub count: u32,
    /// The borrower hands `account`, homed here, back to us (docs/ownership.md).
    pub handback: bool,
    /// The account's secrets, for the servers lent to it.
    pub secrets: Secrets,
}

impl Handler<LendTo> for SiteMaster {
    type Result = ResponseFuture<LoanOffer>;

    fn handle(&mut self, message: LendTo, ctx: &mut Context<Self>) -> Self::Result {
        self.secrets
            .lend(&message.borrower, &message.account, message.secrets);
        let now = self.now();
        let (offer, effects) = self.core.lend_to(
            &message.borrower,
            &message.account,
            message.spec,
            message.count,
            message.handback,
            now,
        );
        match &offer {
            LoanOffer::Granted { servers } => tracing::info!(
                borrower = %message.borrower,
                account = %message.account,
                asked = message.count,
                lent = servers.len(),
                handback = message.handback,
                "loan granted"
            ),
            LoanOffer::Refused(refusal) => tracing::info!(
                borrower = %message.borrower,
                account = %message.account,
                asked = message.count,
                handback = message.handback,
                reason = %refusal.detail,
                "loan refused"
            ),
        }
        self.offer_once_journaled(offer, effects, ctx)
    }
}

impl SiteMaster {
    /// Performs a loan's effects and answers the borrower once they are journaled.
    fn offer_once_journaled(
        &mut self,
        offer: LoanOffer,
        effects: Vec<crate::model::effects::Effect>,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<LoanOffer> {
        let (durable, journaled) = tokio::sync::oneshot::channel();
        self.perform_then(effects, ctx, Some(durable));
        Box::pin(async move {
            match journaled.await {
                Ok(()) => offer,
                // The journal failed and the gateway is exiting: lend nothing.
                Err(_) => LoanOffer::Refused(leasehold_federation::wire::common::Refusal {
                    cause: leasehold_federation::wire::common::RefusalCause::NothingToSpare,
                    detail: "the lender could not journal the loan".to_owned(),
                }),
            }
        })
    }
}

/// A borrower renews a loan.
#[derive(Message)]
#[rtype(result = "LoanRenewal")]
pub struct RenewLoanFrom {
    pub borrower: SiteId,
    pub server: ServerId,
    pub epoch: Epoch,
}

impl Handler<RenewLoanFrom> for SiteMaster {
    type Result = MessageResult<RenewLoanFrom>;

    fn handle(&mut self, message: RenewLoanFrom, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let answer =
            self.core
                .renew_loan_from(&message.borrower, &message.server, message.epoch, now);
        if let LoanRenewal::Refused(refusal) = &answer {
            tracing::warn!(borrower = %message.borrower, server = %message.server, epoch = %message.epoch, reason = %refusal.detail, "loan renewal refused");
        }
        MessageResult(answer)
    }
}

/// A borrower gives a lent server back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReturnFrom {
    pub borrower: SiteId,
    pub server: ServerId,
    pub epoch: Epoch,
}

impl Handler<ReturnFrom> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: ReturnFrom, ctx: &mut Context<Self>) {
        let now = self.now();
        match self
            .core
            .return_from(&message.borrower, &message.server, message.epoch, now)
        {
            Ok(effects) => self.perform(effects, ctx),
            Err(refusal) => {
                tracing::warn!(borrower = %message.borrower, server = %message.server, epoch = %message.epoch, reason = %refusal.detail, "loan return refused; nothing changed")
            }
        }
    }
}

/// A lender recalls a server it lent us.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecallFrom {
    pub lender: SiteId,
    pub recall: RecallLoan,
}

impl Handler<RecallFrom> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: RecallFrom, ctx: &mut Context<Self>) {
        let now = self.now();
        match self.core.recall_from(&message.lender, &message.recall, now) {
            Ok(effects) => self.perform(effects, ctx),
            Err(reason) => {
                tracing::warn!(lender = %message.lender, server = %message.recall.server, epoch = %message.recall.epoch, %reason, "recall refused; nothing changed")
            }
        }
    }
}

/// A lender relays the health of a server it lent us.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StatusFrom {
    pub lender: SiteId,
    pub status: LentServerStatus,
}

impl Handler<StatusFrom> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: StatusFrom, ctx: &mut Context<Self>) {
        let now = self.now();
        match self.core.status_from(&message.lender, &message.status, now) {
            Ok(effects) => self.perform(effects, ctx),
            Err(reason) => {
                tracing::warn!(lender = %message.lender, server = %message.status.server, epoch = %message.status.epoch, %reason, "lent-server status refused; nothing changed")
            }
        }
    }
}

/// The answer to one of our requests to a peer, or why there was none.
#[derive(Message)]
#[rtype(result = "()")]
pub enum LoanAnswered {
    Offer {
        lender: SiteId,
        account: AccountId,
        answer: Result<LoanOffer, String>,
    },
    Renewal {
        lender: SiteId,
        server: ServerId,
        epoch: Epoch,
        answer: Result<LoanRenewal, String>,
    },
}

impl Handler<LoanAnswered> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: LoanAnswered, ctx: &mut Context<Self>) {
        let now = self.now();
        let effects = match message {
            LoanAnswered::Offer {
                lender,
                account,
                answer,
            } => self.core.loan_offered(&lender, &account, answer, now),
            LoanAnswered::Renewal {
                lender,
                server,
                epoch,
                answer,
            } => self.core.loan_renewed(&lender, &server, epoch, answer, now),
        };
        self.perform(effects, ctx);
    }
}

/// What a Peer actor last measured of its site, for the choice of a lender.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerSeen {
    pub site: SiteId,
    pub up: bool,
    pub rtt: Option<Duration>,
}

impl Handler<PeerSeen> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: PeerSeen, _: &mut Context<Self>) {
        let now = self.now();
        self.core
            .peer_seen(&message.site, message.up, message.rtt, now);
    }
}

/// `GET /v1/loans`.
#[derive(Message)]
#[rtype(result = "LoansSnapshot")]
pub struct GetLoans;

impl Handler<GetLoans> for SiteMaster {
    type Result = MessageResult<GetLoans>;

    fn handle(&mut self, _: GetLoans, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        MessageResult(self.core.model().loans(now))
    }
}
