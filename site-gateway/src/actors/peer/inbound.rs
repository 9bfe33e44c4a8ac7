//! What a peer sends us, on either connection: answered here when stateless, else handed to
//! the Peer actor (a loan request needs the peer's catalogue) or to the SiteMaster.

use super::*;

/// Answers what a peer sends on one connection. Hello and ping need no state and are
/// answered here; a loan request goes to the Peer actor (it holds the peer's catalogue),
/// the rest of the loan protocol to the master.
///
/// On a peer of standby gateways, what a connection carries is its sender's generation,
/// the hello's (or the welcome's, on a connection we dialled): a connection of a deposed
/// gateway, older than one taken since, is closed, and nothing more on it is taken.
pub(super) async fn serve_inbound(
    name: SiteId,
    local: Local,
    (connection, mut inbox): (Connection, Inbox),
    peer: Addr<Peer>,
    (fence, mut sender): (Arc<std::sync::Mutex<GenerationFence>>, Option<u64>),
) {
    while let Some(message) = inbox.next().await {
        let taken = match &message {
            Ok(Inbound::Request(InboundRequest::PeerHello(hello, _))) => {
                sender = hello.generation;
                take_generation(&fence, "a hello", sender)
            }
            Ok(Inbound::Request(request)) => take_generation(&fence, request.kind(), sender),
            Ok(Inbound::OneWay(message)) => take_generation(&fence, message.kind(), sender),
            Err(_) => Ok(()),
        };
        if let Err(refusal) = taken {
            tracing::warn!(peer = %name, %refusal, "refused: a connection of a deposed gateway");
            connection.close(close_code::REFUSED, &refusal.detail);
            break;
        }
        match message {
            Ok(Inbound::Request(request)) => answer(&name, &local, request, &peer).await,
            Ok(Inbound::OneWay(InboundOneWay::AccountCatalogue(catalogue))) => {
                if catalogue.site == name {
                    peer.do_send(CatalogueReceived(catalogue));
                } else {
                    tracing::warn!(peer = %name, claimed = %catalogue.site, "refused: a peer announced another site's catalogue");
                }
            }
            Ok(Inbound::OneWay(InboundOneWay::RecallLoan(recall))) => {
                if let Some(master) = local.master.get() {
                    master.do_send(RecallFrom {
                        lender: name.clone(),
                        recall,
                    });
                }
            }
            Ok(Inbound::OneWay(InboundOneWay::ReleaseOwnership(releases))) => {
                if let Some(master) = local.master.get() {
                    master.do_send(ReleasedBy {
                        from: name.clone(),
                        releases,
                    });
                }
            }
            Ok(Inbound::OneWay(InboundOneWay::LentServerStatus(status))) => {
                if let Some(master) = local.master.get() {
                    master.do_send(StatusFrom {
                        lender: name.clone(),
                        status,
                    });
                }
            }
            Ok(Inbound::OneWay(other)) => {
                tracing::warn!(peer = %name, kind = other.kind(), "ignored: a site does not send this to a site");
            }
            Err(error) => {
                tracing::info!(peer = %name, %error, "peer connection ended");
                break;
            }
        }
    }
}

async fn answer(
    name: &SiteId,
    local: &Local,
    request: InboundRequest<ReplyPort>,
    peer: &Addr<Peer>,
) {
    let not_started = || Refusal {
        cause: RefusalCause::NotAllowed,
        detail: format!("{} is starting; ask again", local.site),
    };
    let sent = match request {
        InboundRequest::PeerHello(hello, reply) => {
            if hello.site != *name {
                tracing::warn!(peer = %name, claimed = %hello.site, "a peer's hello names another site");
            }
            reply
                .send(&PeerWelcome {
                    site: local.site.clone(),
                    config_version: local.catalogue.version,
                    generation: local.generation,
                })
                .await
        }
        InboundRequest::Ping(ping, reply) => {
            reply
                .send(&Pong {
                    seq: ping.seq,
                    sent_at_us: ping.sent_at_us,
                })
                .await
        }
        InboundRequest::RequestLoan(request, reply) => {
            let offer = match peer.send(LoanAsked(request)).await {
                Ok(offer) => offer,
                Err(_) => LoanOffer::Refused(not_started()),
            };
            reply.send(&offer).await
        }
        InboundRequest::RenewLoan(renew, reply) => {
            let answer = match local.master.get() {
                Some(master) => master
                    .send(RenewLoanFrom {
                        borrower: name.clone(),
                        server: renew.server,
                        epoch: renew.epoch,
                    })
                    .await
                    .unwrap_or_else(|_| LoanRenewal::Refused(not_started())),
                None => LoanRenewal::Refused(not_started()),
            };
            reply.send(&answer).await
        }
        InboundRequest::ClaimOwnership(claims, reply) => {
            let votes = match local.master.get() {
                Some(master) => master
                    .send(ClaimsFrom {
                        from: name.clone(),
                        claims,
                    })
                    .await
                    .ok(),
                None => None,
            };
            // No master yet (starting): no answer; the claimant counts it as no vote.
            let Some(votes) = votes else { return };
            reply.send(&votes).await
        }
        InboundRequest::ReturnLoan(returned, reply) => {
            if let Some(master) = local.master.get() {
                master.do_send(ReturnFrom {
                    borrower: name.clone(),
                    server: returned.server.clone(),
                    epoch: returned.epoch,
                });
            }
            reply
                .send(&LoanReturned {
                    server: returned.server,
                    epoch: returned.epoch,
                })
                .await
        }
        other => {
            tracing::warn!(peer = %name, kind = other.kind(), "unanswered: a site does not ask a site this");
            return;
        }
    };
    if let Err(error) = sent {
        tracing::debug!(peer = %name, %error, "answer to peer not delivered");
    }
}

/// The peer asks us for servers: answered with its account from its catalogue.
#[derive(Message)]
#[rtype(result = "LoanOffer")]
struct LoanAsked(RequestLoan);

impl Handler<LoanAsked> for Peer {
    type Result = ResponseFuture<LoanOffer>;

    fn handle(&mut self, LoanAsked(request): LoanAsked, _: &mut Context<Self>) -> Self::Result {
        let refuse = |detail: String| {
            LoanOffer::Refused(Refusal {
                cause: RefusalCause::NotAllowed,
                detail,
            })
        };
        let spec = self
            .catalogue
            .as_ref()
            .and_then(|catalogue| {
                catalogue
                    .accounts
                    .iter()
                    .find(|a| a.name == request.account)
            })
            .cloned();
        let Some(master) = self.local.master.get().cloned() else {
            return Box::pin(async move { refuse("the lender is starting; ask again".to_owned()) });
        };
        let borrower = self.name.clone();
        Box::pin(async move {
            master
                .send(LendTo {
                    borrower,
                    account: request.account,
                    spec,
                    count: request.count,
                    handback: request.handback,
                    secrets: request.secrets,
                })
                .await
                .unwrap_or_else(|_| refuse("the lender's master is gone".to_owned()))
        })
    }
}
