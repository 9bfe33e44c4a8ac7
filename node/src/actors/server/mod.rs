//! The `Server` actor: owns the node model and the management connection, and performs
//! the model's effects. It never waits on a disk, a process or the network itself: those
//! go to the event-log thread, the driver task, or tasks and futures of its own that
//! answer by message or when they end.
//!
//! The node agent and `leasehold fleet` run this same actor; where their workloads run is
//! behind [`Workloads`] ([`ProcessWorkloads`] here, `fleet::sim_driver` for the fleet), and
//! what they count behind [`Counters`].

mod handlers;
mod process;
mod workloads;

pub use process::ProcessWorkloads;
pub use workloads::{Counters, Workloads};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, SpawnHandle};
use leasehold_federation::ids::Epoch;
use leasehold_federation::transport::connection::{Connection, ReplyPort};
use leasehold_federation::wire::Reply;
use leasehold_federation::wire::node::{
    LeaseRenewal, Pulse, PulseAnswer, StopOutcome, StopWorkload,
};
use leasehold_federation::wire::node_v1::{Heartbeat, RenewLease};
use tokio::sync::{mpsc, oneshot};

use super::messages::PulseAnswered;
use crate::clock::mono_now;
use crate::event_log::{EventKind, EventLog};
use crate::model::{Effect, NodeModel, Report};
use crate::pulse::Pulser;
use leasehold_federation::generation::GenerationFence;

/// How often the model is ticked: lease expiry is acted on at most this late.
const TICK: Duration = Duration::from_millis(20);

/// The registered connection and what came with it.
struct Link {
    generation: u64,
    connection: Connection,
    /// Reports go through one task per connection, so they arrive in order.
    reports: mpsc::UnboundedSender<Report>,
}

pub struct Server<W: Workloads = ProcessWorkloads> {
    model: NodeModel,
    /// Always one in the agent; in the fleet only with `--work`.
    log: Option<EventLog>,
    workloads: W,
    counters: Arc<dyn Counters>,
    link: Option<Link>,
    /// From the last registration; kept across reconnects.
    service_addr: String,
    pulser: Pulser,
    /// The pending health check of the workload that is starting.
    health: Option<(Epoch, SpawnHandle)>,
    stop_replies: HashMap<Epoch, Vec<Reply<StopWorkload, ReplyPort>>>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    /// Between a handover's preparation and the `exec` (or its failure): commands wait
    /// for the new image.
    replacing: bool,
    /// The generation of the site's gateways registered under (a site of standbys).
    fence: GenerationFence,
}

impl<W: Workloads> Server<W> {
    pub fn new(
        model: NodeModel,
        log: Option<EventLog>,
        workloads: W,
        counters: Arc<dyn Counters>,
    ) -> Server<W> {
        Server {
            model,
            log,
            workloads,
            counters,
            link: None,
            service_addr: String::new(),
            pulser: Pulser::new(),
            health: None,
            stop_replies: HashMap::new(),
            shutdown_waiters: Vec::new(),
            replacing: false,
            fence: GenerationFence::default(),
        }
    }

    fn record(&self, kind: EventKind) {
        if let Some(log) = &self.log {
            log.append(kind);
        }
    }

    /// Performs the model's effects in order.
    fn perform(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::StartWorkload { pointer } => {
                    self.counters.workload_started();
                    self.workloads.start(pointer, &self.service_addr);
                }
                Effect::StopWorkload { epoch, cause } => {
                    tracing::info!(%epoch, ?cause, "stopping the workload");
                    self.workloads.stop(epoch, cause);
                }
                Effect::SendRenew { epoch } => self.send_renew(epoch, ctx),
                Effect::StartDrain { epoch, drain } => {
                    ctx.run_later(drain, move |actor, ctx| {
                        let effects = actor.model.drain_ended(epoch);
                        actor.perform(effects, ctx);
                    });
                }
                Effect::ReplyStopped { epoch } => {
                    for reply in self.stop_replies.remove(&epoch).unwrap_or_default() {
                        answer(reply, StopOutcome::Stopped { epoch });
                    }
                }
                Effect::RecordLease { epoch, until } => self.record(EventKind::LeaseExtended {
                    epoch,
                    until_mono_ns: until.as_nanos(),
                }),
                Effect::RecordHealthy { account, epoch } => {
                    tracing::info!(%account, %epoch, "workload healthy");
                    self.record(EventKind::WorkloadHealthy { account, epoch });
                }
                Effect::RecordFailed {
                    account,
                    epoch,
                    reason,
                } => {
                    tracing::warn!(server = %self.model.server(), %account, %epoch, %reason, "workload failed");
                    self.record(EventKind::WorkloadFailed {
                        account,
                        epoch,
                        reason,
                    });
                }
                Effect::Report(report) => match &self.link {
                    Some(link) => {
                        let _ = link.reports.send(report);
                    }
                    // The gateway learns the state from the next registration instead.
                    None => tracing::debug!(?report, "not connected; report dropped"),
                },
                Effect::ShutdownComplete => {
                    for done in self.shutdown_waiters.drain(..) {
                        let _ = done.send(());
                    }
                }
            }
        }
        self.workloads.performed(&self.model);
    }

    /// The model wants its lease renewed: a pulse carries the renewal at once.
    fn send_renew(&mut self, epoch: Epoch, ctx: &mut Context<Self>) {
        if self.link.is_none() {
            self.model.renew_unanswered(epoch, mono_now());
            return;
        }
        self.pulser.renew(epoch);
        self.pulse(ctx);
    }

    /// Sends a pulse if one is due. The send time is read before the datagram goes, so a
    /// renewal it carries counts from no later than the gateway could have seen it (S-1).
    fn pulse(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else {
            return;
        };
        let (model, workloads) = (&self.model, &self.workloads);
        let reading = || (model.health(), workloads.load());
        let Some(pulse) = self.pulser.due(mono_now(), reading) else {
            return;
        };
        if link.connection.version() == 1 {
            self.pulse_v1(pulse, ctx);
        } else {
            match link.connection.send_datagram(&pulse) {
                Ok(()) => self.counters.pulse_sent(),
                // A renewal it carried is unanswered at its timeout, and asked again.
                Err(error) => {
                    self.counters.pulse_not_sent();
                    tracing::debug!(%error, "pulse not sent");
                }
            }
        }
        self.workloads.pulsed(ctx);
    }

    /// A pulse, said as a gateway of `leasehold-node/1` hears it (docs/wire.md,
    /// "Versioning"): a `Heartbeat` on a one-way stream and, when it carries a renewal, a
    /// `RenewLease` request whose answer comes back as the pulse's answer would. The send
    /// time the pulser read before stands for both, so S-1 holds as with datagrams.
    fn pulse_v1(&mut self, pulse: Pulse, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else {
            return;
        };
        let server = self.model.server().clone();
        let heartbeat = Heartbeat {
            server: server.clone(),
            seq: pulse.seq,
            running: self.model.running(),
            health: pulse.health,
            load: pulse.load,
        };
        let (connection, me) = (link.connection.clone(), ctx.address());
        self.counters.pulse_sent();
        tokio::spawn(async move {
            if let Some(epoch) = pulse.renew {
                let asking = connection.clone();
                let seq = pulse.seq;
                tokio::spawn(async move {
                    // No answer (refused ownership, a lost stream) leaves the renewal to
                    // the pulser's timeout, as a lost datagram would.
                    if let Ok(renewal) = asking.request(&RenewLease { server, epoch }).await {
                        me.do_send(PulseAnswered(PulseAnswer {
                            seq,
                            renewal,
                            generation: None,
                        }));
                    }
                });
            }
            if let Err(error) = connection.send(&heartbeat).await {
                tracing::debug!(%error, "heartbeat not sent");
            }
        });
    }

    /// The gateway's answer to a renewal sent at `sent_at`, or `Err` for none (maybe
    /// done): the model's input.
    fn renewal_answered(
        &mut self,
        epoch: Epoch,
        sent_at: crate::clock::MonoTime,
        outcome: Result<LeaseRenewal, String>,
        ctx: &mut Context<Self>,
    ) {
        let now = mono_now();
        self.counters.renewal(match &outcome {
            Ok(LeaseRenewal::Renewed { epoch: got, .. }) if *got == epoch => "renewed",
            Ok(LeaseRenewal::Refused(_)) => "refused",
            _ => "unanswered",
        });
        let effects = match outcome {
            Ok(LeaseRenewal::Renewed { epoch: got, ttl_ms }) if got == epoch => self
                .model
                .lease_renewed(epoch, sent_at, Duration::from_millis(ttl_ms), now),
            Ok(LeaseRenewal::Renewed { epoch: got, .. }) => {
                tracing::warn!(server = %self.model.server(), asked = %epoch, %got, "renewal answered for another epoch");
                self.model.renew_unanswered(epoch, now);
                Vec::new()
            }
            Ok(LeaseRenewal::Refused(refusal)) => {
                tracing::warn!(server = %self.model.server(), %epoch, %refusal, "lease refused");
                self.model.lease_refused(epoch, &refusal)
            }
            Err(why) => {
                tracing::debug!(%epoch, %why, "renewal unanswered");
                self.model.renew_unanswered(epoch, now);
                Vec::new()
            }
        };
        self.perform(effects, ctx);
    }
}

impl<W: Workloads> Actor for Server<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |actor, ctx| {
            let effects = actor.model.tick(mono_now());
            actor.perform(effects, ctx);
            actor.pulse(ctx);
            if let Some(epoch) = actor.pulser.overdue(mono_now()) {
                let why = "no answer within its timeout".to_owned();
                actor.renewal_answered(epoch, mono_now(), Err(why), ctx);
            }
        });
    }
}

/// Answers a request from a task, so a slow stream never holds the actor.
fn answer<R>(reply: Reply<R, ReplyPort>, response: R::Response)
where
    R: leasehold_federation::wire::Request + 'static,
    R::Response: Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = reply.send(&response).await {
            tracing::debug!(%error, "answer not delivered");
        }
    });
}

/// Sends a connection's reports in order, until the connection is replaced. Unbounded on
/// purpose: reports come one per workload event (a handful per pointer), the actor must not
/// wait on the network to record one, and a report dropped for lack of room would leave
/// the gateway wrong about a workload.
fn spawn_reporter(
    connection: Connection,
    counters: Arc<dyn Counters>,
) -> mpsc::UnboundedSender<Report> {
    let (sender, mut receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(report) = receiver.recv().await {
            let sent = match &report {
                Report::Joined(message) => connection.send(message).await,
                Report::Failed(message) => connection.send(message).await,
                Report::Stopped(message) => connection.send(message).await,
            };
            if let Err(error) = sent {
                counters.report_not_delivered();
                tracing::warn!(%error, ?report, "report not delivered");
            }
        }
    });
    sender
}
