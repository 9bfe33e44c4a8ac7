//! The ServerLink actor: one per connected node agent. It owns the QUIC connection to the
//! node: it reads what the node sends on streams (registration and reports, to the
//! master) and carries the master's commands to the node. Pulses are datagrams, which the
//! connection hands to the [`super::PulseBoard`] itself; the master answers renewals on the
//! connection it was handed at registration.
//!
//! The server id is the one in the node's certificate; a message that names another
//! server is refused and logged, and changes nothing.

use std::time::Duration;

use actix::prelude::*;
use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::transport::connection::{Connection, Inbox, close_code};
use leasehold_federation::wire::common::{Refusal, RefusalCause};
use leasehold_federation::wire::node::{ApplyPointer, Registration, StopWorkload};
use leasehold_federation::wire::{Inbound, InboundOneWay, InboundRequest};

use super::master::{
    LinkClosed, PointerAnswered, RegisterServer, SiteMaster, StopAnswered, WorkloadReported,
};
use crate::model::effects::Command;

pub struct ServerLink {
    pub server: ServerId,
    /// Tells this link apart from an older one of the same server.
    pub link_id: u64,
    connection: Connection,
    inbox: Option<Inbox>,
    master: Addr<SiteMaster>,
    reader: Option<tokio::task::JoinHandle<()>>,
    /// How long a command may take before its answer counts as lost.
    command_timeout: Duration,
}

impl ServerLink {
    pub fn new(
        server: ServerId,
        link_id: u64,
        (connection, inbox): (Connection, Inbox),
        master: Addr<SiteMaster>,
        command_timeout: Duration,
    ) -> Self {
        ServerLink {
            server,
            link_id,
            connection,
            inbox: Some(inbox),
            master,
            reader: None,
            command_timeout,
        }
    }
}

impl Actor for ServerLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(inbox) = self.inbox.take() else {
            return;
        };
        let reader = Reader {
            server: self.server.clone(),
            link_id: self.link_id,
            connection: self.connection.clone(),
            link: ctx.address(),
            master: self.master.clone(),
        };
        // The read loop runs on the tokio pool, not the actor's thread: it only forwards.
        self.reader = Some(tokio::spawn(reader.run(inbox)));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        self.connection.close(close_code::DONE, "link closed");
        self.master.do_send(LinkClosed {
            server: self.server.clone(),
            link_id: self.link_id,
        });
    }
}

/// Carry a command to the node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Command);

impl Handler<Deliver> for ServerLink {
    type Result = ();

    fn handle(&mut self, Deliver(command): Deliver, ctx: &mut Context<Self>) {
        let timeout = self.command_timeout;
        match command {
            Command::Apply { server, pointer } => {
                let epoch = pointer.epoch;
                let request = ApplyPointer {
                    server: server.clone(),
                    pointer,
                };
                self.ask(ctx, request, timeout, move |answer| PointerAnswered {
                    server,
                    epoch,
                    answer,
                });
            }
            Command::Stop {
                server,
                epoch,
                drain_ms,
                reason,
            } => {
                let request = StopWorkload {
                    server: server.clone(),
                    epoch,
                    drain_ms,
                    reason,
                };
                // The node drains, then stops (up to its stop timeout), then answers.
                let timeout = timeout + Duration::from_millis(drain_ms);
                self.ask(ctx, request, timeout, move |answer| StopAnswered {
                    server,
                    epoch,
                    answer,
                });
            }
        }
    }
}

impl ServerLink {
    /// Sends `request` to the node and hands the master `answered(answer)`, the answer
    /// or why there was none (a lost answer is "maybe done").
    fn ask<R, M>(
        &self,
        ctx: &mut Context<Self>,
        request: R,
        timeout: Duration,
        answered: impl FnOnce(Result<R::Response, String>) -> M + 'static,
    ) where
        R: leasehold_federation::wire::Request,
        M: Message<Result = ()> + Send + 'static,
        SiteMaster: Handler<M>,
    {
        let connection = self.connection.clone();
        let master = self.master.clone();
        ctx.spawn(
            async move {
                let answer = connection
                    .request_within(&request, timeout)
                    .await
                    .map_err(|error| error.to_string());
                master.do_send(answered(answer));
            }
            .into_actor(self),
        );
    }
}

/// Close the link (a newer connection of the same server replaced it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseLink;

impl Handler<CloseLink> for ServerLink {
    type Result = ();

    fn handle(&mut self, _: CloseLink, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The inbox ended (the connection closed or the node sent something invalid).
#[derive(Message)]
#[rtype(result = "()")]
struct InboxEnded;

impl Handler<InboxEnded> for ServerLink {
    type Result = ();

    fn handle(&mut self, _: InboxEnded, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

struct Reader {
    server: ServerId,
    link_id: u64,
    connection: Connection,
    link: Addr<ServerLink>,
    master: Addr<SiteMaster>,
}

impl Reader {
    async fn run(self, mut inbox: Inbox) {
        while let Some(message) = inbox.next().await {
            match message {
                Ok(Inbound::Request(request)) => self.answer(request).await,
                Ok(Inbound::OneWay(message)) => self.take(message).await,
                Err(error) => {
                    tracing::warn!(server = %self.server, %error, "management connection ended");
                    break;
                }
            }
        }
        self.link.do_send(InboxEnded);
    }

    /// A message naming another server than the certificate's is refused (logged), so a
    /// node cannot act for another server.
    fn speaks_for_itself(&self, named: &ServerId, kind: &str) -> bool {
        if named == &self.server {
            return true;
        }
        tracing::warn!(
            server = %self.server,
            named = %named,
            kind,
            "refused: a node sent a message for another server"
        );
        false
    }

    fn wrong_server(&self, named: &ServerId) -> Refusal {
        Refusal {
            cause: RefusalCause::WrongServer,
            detail: format!("this connection belongs to {}, not {named}", self.server),
        }
    }

    async fn answer(
        &self,
        request: InboundRequest<leasehold_federation::transport::connection::ReplyPort>,
    ) {
        match request {
            InboundRequest::RegisterServer(message, reply) => {
                let answer = if self.speaks_for_itself(&message.server, "RegisterServer") {
                    let registered = self
                        .master
                        .send(RegisterServer {
                            server: self.server.clone(),
                            link_id: self.link_id,
                            link: self.link.clone(),
                            connection: self.connection.clone(),
                            running: message.running,
                            highest_epoch: message.highest_epoch,
                            boot: message.boot,
                            agent_version: message.agent_version,
                        })
                        .await;
                    match registered {
                        Ok(Ok(registration)) => registration,
                        Ok(Err(refusal)) => Registration::Refused(refusal),
                        Err(_) => return,
                    }
                } else {
                    Registration::Refused(self.wrong_server(&message.server))
                };
                let _ = reply.send(&answer).await;
            }
            other => {
                // The catalogue only lets a node send the request above; anything else
                // here is a bug on our side, not the node's.
                tracing::error!(server = %self.server, kind = other.kind(), "unexpected request from a node");
            }
        }
    }

    async fn take(&self, message: InboundOneWay) {
        match message {
            InboundOneWay::WorkloadJoined(joined) => {
                if self.speaks_for_itself(&joined.server, "WorkloadJoined") {
                    self.report(WorkloadEvent::Joined, joined.epoch).await;
                }
            }
            InboundOneWay::WorkloadFailed(failed) => {
                if self.speaks_for_itself(&failed.server, "WorkloadFailed") {
                    self.report(WorkloadEvent::Failed(failed.reason), failed.epoch)
                        .await;
                }
            }
            InboundOneWay::WorkloadStopped(stopped) => {
                if self.speaks_for_itself(&stopped.server, "WorkloadStopped") {
                    self.report(WorkloadEvent::Stopped(stopped.cause), stopped.epoch)
                        .await;
                }
            }
            other => {
                tracing::error!(server = %self.server, kind = other.kind(), "unexpected message from a node");
            }
        }
    }

    async fn report(&self, event: WorkloadEvent, epoch: Epoch) {
        let _ = self
            .master
            .send(WorkloadReported {
                server: self.server.clone(),
                epoch,
                event,
            })
            .await;
    }
}

pub use crate::model::core::WorkloadEvent;
