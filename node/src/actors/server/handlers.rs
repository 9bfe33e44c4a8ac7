//! The `Server` actor's handlers: decode, call the model, perform the effects.

use actix::{ActorFutureExt, AsyncContext, Context, Handler, MessageResult, WrapFuture};
use leasehold_federation::ids::Epoch;
use leasehold_federation::wire::common::Refusal;
use leasehold_federation::wire::node::{LeaseRenewal, PointerApplication, StopOutcome};

use super::{Link, Server, Workloads, answer, spawn_reporter};
use crate::actors::messages::*;
use crate::clock::mono_now;
use crate::driver::DriverReport;
use crate::event_log::EventKind;

impl<W: Workloads> Server<W> {
    /// A refused command changes nothing; it is logged with its reason and recorded.
    fn record_refusal(&self, kind: &str, epoch: Epoch, refusal: &Refusal) {
        tracing::warn!(server = %self.model.server(), kind, %epoch, %refusal, "command refused");
        self.record(EventKind::CommandRefused {
            kind: kind.to_owned(),
            epoch,
            reason: refusal.to_string(),
        });
    }
}

impl<W: Workloads> Handler<Connected> for Server<W> {
    type Result = ();

    fn handle(&mut self, msg: Connected, ctx: &mut Context<Self>) {
        self.counters.connected();
        self.fence.registered(msg.gateway_generation);
        self.model.set_renew_interval(msg.renew_interval);
        self.pulser
            .connected(msg.heartbeat_interval, msg.renew_interval);
        self.service_addr = msg.service_addr;
        let reports = spawn_reporter(msg.connection.clone(), self.counters.clone());
        self.link = Some(Link {
            generation: msg.generation,
            connection: msg.connection,
            reports,
        });
        self.pulse(ctx);
    }
}

impl<W: Workloads> Handler<Disconnected> for Server<W> {
    type Result = ();

    fn handle(&mut self, msg: Disconnected, ctx: &mut Context<Self>) {
        if self
            .link
            .as_ref()
            .is_some_and(|l| l.generation == msg.generation)
        {
            self.link = None;
            for epoch in self.pulser.disconnected() {
                let why = "the connection was lost".to_owned();
                self.renewal_answered(epoch, mono_now(), Err(why), ctx);
            }
        }
    }
}

impl<W: Workloads> Handler<GetNodeStatus> for Server<W> {
    type Result = MessageResult<GetNodeStatus>;

    fn handle(&mut self, _: GetNodeStatus, _: &mut Context<Self>) -> Self::Result {
        let now = mono_now();
        MessageResult(crate::metrics::NodeStatus {
            connected: self.link.is_some(),
            epoch: self.model.current_epoch(),
            highest_epoch: self.model.highest_epoch(),
            lease_remaining: self.model.lease_until().map(|until| until.since(now)),
            healthy: matches!(self.model.phase(), Some(crate::model::Phase::Healthy)),
        })
    }
}

impl<W: Workloads> Handler<DescribeForRegistration> for Server<W> {
    type Result = MessageResult<DescribeForRegistration>;

    fn handle(&mut self, _: DescribeForRegistration, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Described {
            running: self.model.running(),
            highest_epoch: self.model.highest_epoch(),
            fence: self.fence.clone(),
        })
    }
}

impl<W: Workloads> Handler<ApplyPointerReceived> for Server<W> {
    type Result = ();

    fn handle(&mut self, msg: ApplyPointerReceived, ctx: &mut Context<Self>) {
        let ApplyPointerReceived(request, reply) = msg;
        if self.replacing {
            // Unanswered, so "maybe applied" to the gateway; the new image's registration
            // says what holds (its highest epoch and what runs).
            tracing::warn!(epoch = %request.pointer.epoch, "ApplyPointer left unanswered: this agent is being replaced in place");
            drop(reply);
            return;
        }
        let (account, epoch) = (request.pointer.account.clone(), request.pointer.epoch);
        let fenced = self.fence.check("ApplyPointer", request.generation);
        match fenced.and_then(|()| {
            self.model
                .apply(&request.server, request.pointer, mono_now())
        }) {
            Err(refusal) => {
                self.record_refusal("ApplyPointer", epoch, &refusal);
                answer(reply, PointerApplication::Refused(refusal));
            }
            Ok(effects) => {
                tracing::info!(%account, %epoch, "pointer accepted");
                // S-2, D-1: the epoch is on disk before the gateway hears `Accepted` and
                // before anything is acted on.
                let log = self.log.clone();
                let journal = async move {
                    if let Some(log) = log {
                        log.append_synced(EventKind::PointerAccepted { account, epoch })
                            .await;
                    }
                };
                ctx.spawn(journal.into_actor(self).map(move |(), actor, ctx| {
                    answer(reply, PointerApplication::Accepted { epoch });
                    actor.perform(effects, ctx);
                }));
            }
        }
    }
}

impl<W: Workloads> Handler<StopWorkloadReceived> for Server<W> {
    type Result = ();

    fn handle(&mut self, msg: StopWorkloadReceived, ctx: &mut Context<Self>) {
        let StopWorkloadReceived(request, reply) = msg;
        if self.replacing {
            // Unanswered: the gateway revokes the lease, and the new image's renewal is
            // refused, which stops the workload.
            tracing::warn!(epoch = %request.epoch, "StopWorkload left unanswered: this agent is being replaced in place");
            drop(reply);
            return;
        }
        let drain = std::time::Duration::from_millis(request.drain_ms);
        let fenced = self.fence.check("StopWorkload", request.generation);
        match fenced.and_then(|()| {
            self.model
                .stop_requested(&request.server, request.epoch, drain)
        }) {
            Err(refusal) => {
                self.record_refusal("StopWorkload", request.epoch, &refusal);
                answer(reply, StopOutcome::Refused(refusal));
            }
            Ok(effects) => {
                tracing::info!(epoch = %request.epoch, drain_ms = request.drain_ms, reason = %request.reason, "stop requested");
                self.stop_replies
                    .entry(request.epoch)
                    .or_default()
                    .push(reply);
                self.perform(effects, ctx);
            }
        }
    }
}

impl<W: Workloads> Handler<PulseAnswered> for Server<W> {
    type Result = ();

    fn handle(&mut self, PulseAnswered(answer): PulseAnswered, ctx: &mut Context<Self>) {
        if let Err(refusal) = self.fence.check("a renewal", answer.generation) {
            // Not taken: the lease runs on as it was, and the pulser asks again.
            if let LeaseRenewal::Renewed { epoch, .. } = &answer.renewal {
                self.record_refusal("PulseAnswer", *epoch, &refusal);
            }
            return;
        }
        if let Some(answered) = self.pulser.answered(answer) {
            self.renewal_answered(answered.epoch, answered.sent_at, Ok(answered.renewal), ctx);
        }
    }
}

impl<W: Workloads> Handler<DriverReport> for Server<W> {
    type Result = ();

    fn handle(&mut self, msg: DriverReport, ctx: &mut Context<Self>) {
        let now = mono_now();
        let effects = match msg {
            DriverReport::Started { epoch, process } => {
                if let Some(process) = &process {
                    self.model.workload_started(epoch, process.pid);
                }
                let check = self.workloads.started(epoch, process);
                let checked = check.into_actor(self).map(move |outcome, actor, ctx| {
                    if actor.health.as_ref().is_some_and(|(e, _)| *e == epoch) {
                        actor.health = None;
                    }
                    let effects = match outcome {
                        Ok(()) => actor.model.health_passed(epoch, mono_now()),
                        Err(reason) => actor.model.health_failed(epoch, reason),
                    };
                    actor.perform(effects, ctx);
                });
                self.cancel_health(None, ctx);
                self.health = Some((epoch, ctx.spawn(checked)));
                Vec::new()
            }
            DriverReport::StartFailed { epoch, reason } => {
                self.model.start_failed(epoch, reason, now)
            }
            DriverReport::Gone {
                epoch,
                reason,
                exit_code,
            } => {
                self.cancel_health(Some(epoch), ctx);
                self.workloads.gone(epoch);
                self.model.workload_gone(epoch, reason, exit_code, now)
            }
        };
        self.perform(effects, ctx);
    }
}

impl<W: Workloads> Server<W> {
    /// Drops the pending health check: of `epoch`, or whichever there is.
    pub(super) fn cancel_health(&mut self, epoch: Option<Epoch>, ctx: &mut Context<Self>) {
        if let Some((pending, handle)) = self.health.take() {
            if epoch.is_none_or(|epoch| epoch == pending) {
                ctx.cancel_future(handle);
            } else {
                self.health = Some((pending, handle));
            }
        }
    }
}

impl<W: Workloads> Handler<Shutdown> for Server<W> {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        tracing::info!("shutting down: stopping the workload");
        self.shutdown_waiters.push(msg.done);
        let effects = self.model.shutdown();
        self.perform(effects, ctx);
    }
}
