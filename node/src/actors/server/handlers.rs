//! The `Server` actor's handlers: decode, call the model, perform the effects.

use actix::{ActorFutureExt, AsyncContext, Context, Handler, MessageResult, WrapFuture};
use leasehold_federation::ids::Epoch;
use leasehold_federation::wire::common::Refusal;
use leasehold_federation::wire::node::{LeaseRenewal, PointerApplication, StopOutcome};

use super::{Link, Probes, Server, answer, spawn_reporter};
use crate::actors::messages::*;
use crate::clock::mono_now;
use crate::driver::{DriverReport, probe};
use crate::event_log::EventKind;

impl Server {
    /// A refused command changes nothing; it is logged with its reason and recorded.
    fn record_refusal(&self, kind: &str, epoch: Epoch, refusal: &Refusal) {
        tracing::warn!(kind, %epoch, %refusal, "command refused");
        self.log.append(EventKind::CommandRefused {
            kind: kind.to_owned(),
            epoch,
            reason: refusal.to_string(),
        });
    }
}

impl Handler<Connected> for Server {
    type Result = ();

    fn handle(&mut self, msg: Connected, ctx: &mut Context<Self>) {
        self.metrics.connected();
        self.fence.registered(msg.gateway_generation);
        self.model.set_renew_interval(msg.renew_interval);
        self.pulser
            .connected(msg.heartbeat_interval, msg.renew_interval);
        self.service_addr = msg.service_addr;
        let reports = spawn_reporter(msg.connection.clone());
        self.link = Some(Link {
            generation: msg.generation,
            connection: msg.connection,
            reports,
        });
        self.pulse(ctx);
    }
}

impl Handler<Disconnected> for Server {
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

impl Handler<GetNodeStatus> for Server {
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

impl Handler<DescribeForRegistration> for Server {
    type Result = MessageResult<DescribeForRegistration>;

    fn handle(&mut self, _: DescribeForRegistration, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Described {
            running: self.model.running(),
            highest_epoch: self.model.highest_epoch(),
            fence: self.fence.clone(),
        })
    }
}

impl Handler<ApplyPointerReceived> for Server {
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
                    log.append_synced(EventKind::PointerAccepted { account, epoch })
                        .await;
                };
                ctx.spawn(journal.into_actor(self).map(move |(), actor, ctx| {
                    answer(reply, PointerApplication::Accepted { epoch });
                    actor.perform(effects, ctx);
                }));
            }
        }
    }
}

impl Handler<StopWorkloadReceived> for Server {
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

impl Handler<PulseAnswered> for Server {
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

impl Handler<DriverReport> for Server {
    type Result = ();

    fn handle(&mut self, msg: DriverReport, ctx: &mut Context<Self>) {
        let now = mono_now();
        let effects = match msg {
            DriverReport::Started {
                epoch,
                pid,
                guard_pid,
                health_url,
                metrics,
            } => {
                self.model.workload_started(epoch, pid);
                let addr = ctx.address();
                let timeout = self.start_timeout;
                let url = health_url.clone();
                let health = tokio::spawn(async move {
                    let outcome = probe::wait_healthy(url, timeout).await;
                    addr.do_send(HealthChecked { epoch, outcome });
                });
                self.replace_probes(Some(Probes {
                    epoch,
                    pid,
                    guard_pid,
                    health_url,
                    metrics,
                    health: Some(health),
                }));
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
                if self.probes.as_ref().is_some_and(|p| p.epoch == epoch) {
                    self.replace_probes(None);
                }
                self.model.workload_gone(epoch, reason, exit_code, now)
            }
        };
        self.perform(effects, ctx);
    }
}

impl Server {
    fn replace_probes(&mut self, probes: Option<Probes>) {
        if let Some(old) = self.probes.take()
            && let Some(health) = old.health
        {
            health.abort();
        }
        self.probes = probes;
        self.load = None;
        self.cpu = None;
    }
}

impl Handler<HealthChecked> for Server {
    type Result = ();

    fn handle(&mut self, msg: HealthChecked, ctx: &mut Context<Self>) {
        let effects = match msg.outcome {
            Ok(()) => self.model.health_passed(msg.epoch, mono_now()),
            Err(reason) => self.model.health_failed(msg.epoch, reason),
        };
        self.perform(effects, ctx);
    }
}

impl Handler<LoadSampled> for Server {
    type Result = ();

    fn handle(&mut self, msg: LoadSampled, _: &mut Context<Self>) {
        self.load_in_flight = false;
        if self.probes.as_ref().is_some_and(|p| p.epoch == msg.epoch) {
            self.load = msg.load;
            self.cpu = msg.cpu;
        }
    }
}

impl Handler<Shutdown> for Server {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        tracing::info!("shutting down: stopping the workload");
        self.shutdown_waiters.push(msg.done);
        let effects = self.model.shutdown();
        self.perform(effects, ctx);
    }
}

impl Handler<PrepareHandover> for Server {
    type Result = MessageResult<PrepareHandover>;

    fn handle(&mut self, _: PrepareHandover, _: &mut Context<Self>) -> Self::Result {
        let prepared = match self.model.handover() {
            Ok(None) => Ok(None),
            Ok(Some((pointer, pid, lease_until))) => match self
                .probes
                .as_ref()
                .filter(|probes| probes.epoch == pointer.epoch && probes.pid == pid)
            {
                Some(probes) => Ok(Some(crate::handover::Handover::new(
                    &pointer,
                    lease_until,
                    pid,
                    probes.guard_pid,
                    probes.health_url.clone(),
                    probes.metrics.clone(),
                ))),
                None => Err(format!(
                    "the driver has not reported the workload (pid {pid}) yet"
                )),
            },
            Err(why) => Err(why),
        };
        // From here to the `exec` no command is acted on: what the handover says must be
        // what the new image finds.
        self.replacing = prepared.is_ok();
        MessageResult(prepared)
    }
}

impl Handler<ReplacementFailed> for Server {
    type Result = ();

    fn handle(&mut self, _: ReplacementFailed, _: &mut Context<Self>) {
        self.replacing = false;
    }
}

impl Handler<Adopt> for Server {
    type Result = ();

    fn handle(&mut self, Adopt(handover): Adopt, ctx: &mut Context<Self>) {
        let pointer = handover.pointer;
        let epoch = pointer.epoch;
        // The driver first: the model's first effect may be to stop it (a lease that ended
        // during the replacement), and orders reach the driver in turn.
        self.driver.adopt(crate::driver::Adopted {
            account: pointer.account.clone(),
            epoch,
            pid: handover.workload_pid,
            guard_pid: handover.guard_pid,
            stop_timeout: std::time::Duration::from_millis(pointer.software.stop_timeout_ms),
        });
        self.replace_probes(Some(Probes {
            epoch,
            pid: handover.workload_pid,
            guard_pid: handover.guard_pid,
            health_url: handover.health_url,
            metrics: handover.metrics,
            health: None,
        }));
        let effects = self.model.adopt(
            pointer,
            handover.workload_pid,
            handover.lease_until,
            mono_now(),
        );
        self.perform(effects, ctx);
    }
}
