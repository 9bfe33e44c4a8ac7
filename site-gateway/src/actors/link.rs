//! The ServerLink actor: one per connected node agent. It owns the QUIC connection to the
//! node: it reads what the node sends on streams (registration and reports, to the
//! master) and carries the master's commands to the node. Pulses are datagrams, which the
//! connection hands to the [`super::PulseBoard`] itself; the master answers renewals on the
//! connection it was handed at registration.
//!
//! A node of the previous management protocol (`leasehold-node/1`, docs/wire.md) sends
//! its heartbeat on a stream and asks for each renewal as a request: the reader records
//! both on the same board, as pulses would be, and keeps the renewal's reply for the
//! master's next batch ([`PendingRenewal`]).
//!
//! The server id is the one in the node's certificate; a message that names another
//! server is refused and logged, and changes nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::transport::connection::{Connection, Inbox, ReplyPort, close_code};
use leasehold_federation::wire::Reply;
use leasehold_federation::wire::common::{Refusal, RefusalCause};
use leasehold_federation::wire::node::{
    ApplyPointer, LeaseRenewal, Pulse, Registration, StopWorkload,
};
use leasehold_federation::wire::node_v1::RenewLease;
use leasehold_federation::wire::{Inbound, InboundOneWay, InboundRequest};

use super::PulseBoard;
use super::master::{
    LinkClosed, PointerAnswered, RegisterServer, SiteMaster, StopAnswered, WorkloadReported,
};
use crate::model::effects::Command;

/// The renewal a node of `leasehold-node/1` asked for, waiting on its request stream for
/// the master's next batch. One at a time: a node asks again only once it has given the
/// last one up, and a newer ask drops the older (its stream ends unanswered, which the
/// node takes as "maybe renewed", as it takes a lost answer).
#[derive(Debug, Clone, Default)]
pub struct PendingRenewal(Arc<Mutex<Option<Asked>>>);

/// A renewal's seq and the reply it waits on.
type Asked = (u64, Reply<RenewLease, ReplyPort>);

impl PendingRenewal {
    fn ask(&self, seq: u64, reply: Reply<RenewLease, ReplyPort>) {
        *self.lock() = Some((seq, reply));
    }

    /// Sends the answer to the renewal asked as `seq`, if that one still waits.
    pub fn answer(&self, seq: u64, renewal: LeaseRenewal) {
        let waiting = {
            let mut slot = self.lock();
            match slot.take() {
                Some((asked, reply)) if asked == seq => Some(reply),
                other => {
                    *slot = other;
                    None
                }
            }
        };
        if let Some(reply) = waiting {
            tokio::spawn(async move {
                if let Err(error) = reply.send(&renewal).await {
                    tracing::debug!(%error, "renewal answer not sent");
                }
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Asked>> {
        // Each write replaces the whole slot, so a panic elsewhere leaves nothing half-set.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct ServerLink {
    pub server: ServerId,
    /// Tells this link apart from an older one of the same server.
    pub link_id: u64,
    connection: Connection,
    inbox: Option<Inbox>,
    master: Addr<SiteMaster>,
    /// Where a node of `leasehold-node/1` records its heartbeats and renewals.
    board: Arc<PulseBoard>,
    renewal_v1: PendingRenewal,
    reader: Option<tokio::task::JoinHandle<()>>,
    /// How long a command may take before its answer counts as lost.
    command_timeout: Duration,
    /// The generation every command is stamped with (a site of standby gateways).
    generation: Option<u64>,
}

impl ServerLink {
    pub fn new(
        server: ServerId,
        link_id: u64,
        (connection, inbox): (Connection, Inbox),
        (master, board): (Addr<SiteMaster>, Arc<PulseBoard>),
        command_timeout: Duration,
        generation: Option<u64>,
    ) -> Self {
        ServerLink {
            server,
            link_id,
            connection,
            inbox: Some(inbox),
            master,
            board,
            renewal_v1: PendingRenewal::default(),
            reader: None,
            command_timeout,
            generation,
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
            board: self.board.clone(),
            renewal_v1: self.renewal_v1.clone(),
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
                    generation: self.generation,
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
                    generation: self.generation,
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
    board: Arc<PulseBoard>,
    renewal_v1: PendingRenewal,
}

impl Reader {
    async fn run(self, mut inbox: Inbox) {
        // Each message's handling is boxed: the task, which every connection keeps for its
        // lifetime, is then as small as its wait for the next message, not as large as its
        // largest request's future (the registration's), and messages are rare (pulses
        // go to the board, not here).
        while let Some(message) = inbox.next().await {
            match message {
                Ok(Inbound::Request(request)) => Box::pin(self.answer(request)).await,
                Ok(Inbound::OneWay(message)) => Box::pin(self.take(message)).await,
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

    async fn answer(&self, request: InboundRequest<ReplyPort>) {
        match request {
            InboundRequest::RenewLease(message, reply) => {
                if self.speaks_for_itself(&message.server, "RenewLease") {
                    // The request's id stands for a pulse's seq: unique on this connection.
                    let seq = reply.request_id();
                    self.renewal_v1.ask(seq, reply);
                    self.board
                        .ask_renewal(self.server.clone(), message.epoch, seq);
                } else {
                    let refused = LeaseRenewal::Refused(self.wrong_server(&message.server));
                    let _ = reply.send(&refused).await;
                }
            }
            InboundRequest::RegisterServer(message, reply) => {
                let answer = if self.speaks_for_itself(&message.server, "RegisterServer") {
                    let registered = self
                        .master
                        .send(RegisterServer {
                            server: self.server.clone(),
                            link_id: self.link_id,
                            link: self.link.clone(),
                            connection: self.connection.clone(),
                            renewal_v1: self.renewal_v1.clone(),
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
            InboundOneWay::Heartbeat(heartbeat) => {
                if self.speaks_for_itself(&heartbeat.server, "Heartbeat") {
                    let pulse = Pulse {
                        seq: heartbeat.seq,
                        health: heartbeat.health,
                        load: heartbeat.load,
                        renew: None,
                    };
                    self.board.record(&self.server, pulse, Instant::now());
                }
            }
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
