//! What the SiteMaster sends a peer: sent on the connection this site dialled, with each
//! request's answer handed back to the master.

use super::*;

/// A message of the master's for this peer; answers to requests go back to the master.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Outgoing(pub PeerMessage);

impl Handler<Outgoing> for Peer {
    type Result = ();

    fn handle(&mut self, Outgoing(message): Outgoing, ctx: &mut Context<Self>) {
        let Some(master) = self.local.master.get().cloned() else {
            return;
        };
        let lender = self.name.clone();
        let connection = self
            .outgoing
            .as_ref()
            .map(|(_, connection)| connection.clone());
        let name = self.name.clone();
        let work = async move {
            let Some(connection) = connection else {
                let why = "not connected".to_owned();
                match message {
                    PeerMessage::RequestLoan(request) => master.do_send(LoanAnswered::Offer {
                        lender,
                        account: request.account,
                        answer: Err(why),
                    }),
                    PeerMessage::RenewLoan(renew) => master.do_send(LoanAnswered::Renewal {
                        lender,
                        server: renew.server,
                        epoch: renew.epoch,
                        answer: Err(why),
                    }),
                    _ => tracing::debug!(peer = %name, "not connected; message to peer dropped"),
                }
                return;
            };
            match message {
                PeerMessage::RequestLoan(request) => {
                    let answer = connection
                        .request_within(&request, LOAN_REQUEST_TIMEOUT)
                        .await
                        .map_err(|error| error.to_string());
                    master.do_send(LoanAnswered::Offer {
                        lender,
                        account: request.account,
                        answer,
                    });
                }
                PeerMessage::RenewLoan(renew) => {
                    let answer = connection
                        .request_within(&renew, LOAN_REQUEST_TIMEOUT)
                        .await
                        .map_err(|error| error.to_string());
                    master.do_send(LoanAnswered::Renewal {
                        lender,
                        server: renew.server,
                        epoch: renew.epoch,
                        answer,
                    });
                }
                PeerMessage::ReturnLoan(returned) => {
                    if let Err(error) = connection
                        .request_within(&returned, LOAN_REQUEST_TIMEOUT)
                        .await
                    {
                        tracing::info!(peer = %name, server = %returned.server, %error, "return not acknowledged; the loan runs out at the lender instead");
                    }
                }
                PeerMessage::RecallLoan(recall) => {
                    if let Err(error) = connection.send(&recall).await {
                        tracing::info!(peer = %name, server = %recall.server, %error, "recall not delivered; the server is stopped when its grace ends");
                    }
                }
                PeerMessage::Status(status) => {
                    if let Err(error) = connection.send(&status).await {
                        tracing::debug!(peer = %name, %error, "lent-server status not delivered");
                    }
                }
                PeerMessage::ClaimOwnership(claims) => {
                    match connection.request_within(&claims, OWNERSHIP_TIMEOUT).await {
                        Ok(votes) => master.do_send(OwnershipAnswered {
                            from: lender,
                            votes,
                        }),
                        Err(error) => {
                            tracing::debug!(peer = %name, %error, "ownership claim unanswered")
                        }
                    }
                }
                PeerMessage::ReleaseOwnership(releases) => {
                    if let Err(error) = connection.send(&releases).await {
                        tracing::info!(peer = %name, %error, "ownership release not delivered; the grant runs out instead");
                    }
                }
            }
        };
        ctx.spawn(work.into_actor(self));
    }
}
