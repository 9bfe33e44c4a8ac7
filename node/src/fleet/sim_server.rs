//! `SimServer`: one simulated server. It owns a real [`NodeModel`] and performs its effects
//! the way the node agent's `Server` actor does (same messages, same lease rule, same
//! replies), except that its driver is simulated: a start takes a seeded time and then
//! passes its health check, a stop takes a few milliseconds, and no process or file is
//! touched (unless an event log is asked for, which is then the real `EventLog`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, MessageResult, Recipient, SpawnHandle,
    WrapFuture,
};
use leasehold_federation::ids::{AccountId, Epoch, ServerId};
use leasehold_federation::transport::connection::{Connection, ReplyPort};
use leasehold_federation::wire::common::Refusal;
use leasehold_federation::wire::node::{
    LeaseRenewal, PointerApplication, StopOutcome, StopWorkload,
};
use leasehold_federation::wire::{Reply, Request};
use tokio::sync::{mpsc, oneshot};

use super::load::{Census, LoadModel, start_delay};
use super::stats::FleetStats;
use crate::actors::messages::{
    ApplyPointerReceived, Connected, DescribeForRegistration, Described, Disconnected,
    PulseAnswered, Shutdown, StopWorkloadReceived,
};
use crate::clock::{MonoTime, mono_now};
use crate::event_log::{EventKind, EventLog, StopReason};
use crate::model::{Effect, NodeModel, Phase, Report};
use crate::pulse::Pulser;

/// How often the model is ticked, as in the agent: lease expiry is acted on at most this
/// late.
const TICK: Duration = Duration::from_millis(20);
/// How long a simulated workload takes to go once told to stop.
const SIM_STOP: Duration = Duration::from_millis(5);

/// What every simulated server of one fleet shares.
#[derive(Debug, Clone)]
pub struct SimShared {
    pub load: LoadModel,
    pub seed: u64,
    /// Around which simulated starts are drawn (`--start-ms`).
    pub start: Duration,
    /// The load curve's time zero.
    pub started_at: Instant,
    pub census: Census,
    pub stats: Arc<FleetStats>,
}

/// The registered connection, as in the agent's `Server`.
struct Link {
    generation: u64,
    connection: Connection,
    /// Reports go through one task per connection, so they arrive in order.
    reports: mpsc::UnboundedSender<Report>,
}

pub struct SimServer {
    server: ServerId,
    model: NodeModel,
    log: Option<EventLog>,
    driver: SimDriver,
    shared: SimShared,
    link: Option<Link>,
    pulser: Pulser,
    /// The pending simulated health check of the workload that is starting.
    health: Option<(Epoch, SpawnHandle)>,
    /// The account this server is counted as serving in the census.
    counted: Option<AccountId>,
    stop_replies: HashMap<Epoch, Vec<Reply<StopWorkload, ReplyPort>>>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
}

impl SimServer {
    /// Must be called inside the actor's context: the simulated driver reports to it.
    pub fn new(
        server: ServerId,
        model: NodeModel,
        log: Option<EventLog>,
        shared: SimShared,
        reports: Recipient<SimDriverReport>,
    ) -> SimServer {
        SimServer {
            driver: SimDriver::spawn(log.clone(), reports),
            server,
            model,
            log,
            shared,
            link: None,
            pulser: Pulser::new(),
            health: None,
            counted: None,
            stop_replies: HashMap::new(),
            shutdown_waiters: Vec::new(),
        }
    }

    fn record(&self, kind: EventKind) {
        if let Some(log) = &self.log {
            log.append(kind);
        }
    }

    /// Performs the model's effects in order; the same match as the agent's `Server`.
    fn perform(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::StartWorkload { pointer } => {
                    self.driver.start(pointer.account, pointer.epoch);
                }
                Effect::StopWorkload { epoch, cause } => self.driver.stop(epoch, cause),
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
                    self.record(EventKind::WorkloadHealthy { account, epoch });
                }
                Effect::RecordFailed {
                    account,
                    epoch,
                    reason,
                } => {
                    tracing::warn!(server = %self.server, %account, %epoch, %reason, "workload failed");
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
        self.count_serving();
    }

    /// Keeps the census (serving per account, the sine model's divisor) up to date.
    fn count_serving(&mut self) {
        let serving = match (self.model.phase(), self.model.running()) {
            (Some(Phase::Healthy | Phase::Draining), Some(running)) => Some(running.account),
            _ => None,
        };
        if serving != self.counted {
            self.shared
                .census
                .moved(self.counted.as_ref(), serving.as_ref());
            self.counted = serving;
        }
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

    /// Sends a pulse if one is due, as the agent does; the send time is read first (S-1).
    fn pulse(&mut self, _: &mut Context<Self>) {
        let Some(link) = &self.link else {
            return;
        };
        let (model, shared, counted) = (&self.model, &self.shared, &self.counted);
        let reading = || {
            // Load is reported only by a serving workload, as the agent reports it only
            // once its probes run.
            let load = counted.as_ref().map(|account| {
                shared.load.server_load(
                    account,
                    shared.seed,
                    shared.started_at.elapsed(),
                    shared.census.count(account),
                )
            });
            (model.health(), load)
        };
        let Some(pulse) = self.pulser.due(mono_now(), reading) else {
            return;
        };
        if let Err(error) = link.connection.send_datagram(&pulse) {
            self.shared.stats.error();
            tracing::debug!(%error, "pulse not sent");
        }
    }

    /// The gateway's answer to a renewal sent at `sent_at`, or `Err` for none.
    fn renewal_answered(
        &mut self,
        epoch: Epoch,
        sent_at: MonoTime,
        outcome: Result<LeaseRenewal, String>,
        ctx: &mut Context<Self>,
    ) {
        let now = mono_now();
        let stats = &self.shared.stats;
        let effects = match outcome {
            Ok(LeaseRenewal::Renewed { epoch: got, ttl_ms }) if got == epoch => {
                stats.renewals.fetch_add(1, Ordering::Relaxed);
                self.model
                    .lease_renewed(epoch, sent_at, Duration::from_millis(ttl_ms), now)
            }
            Ok(LeaseRenewal::Renewed { epoch: got, .. }) => {
                tracing::warn!(server = %self.server, asked = %epoch, %got, "renewal answered for another epoch");
                stats.error();
                self.model.renew_unanswered(epoch, now);
                Vec::new()
            }
            Ok(LeaseRenewal::Refused(refusal)) => {
                tracing::debug!(server = %self.server, %epoch, %refusal, "lease refused");
                stats.renewals_refused.fetch_add(1, Ordering::Relaxed);
                self.model.lease_refused(epoch, &refusal)
            }
            Err(why) => {
                tracing::debug!(server = %self.server, %epoch, %why, "renewal unanswered");
                stats.error();
                self.model.renew_unanswered(epoch, now);
                Vec::new()
            }
        };
        self.perform(effects, ctx);
    }

    fn record_refusal(&self, kind: &str, epoch: Epoch, refusal: &Refusal) {
        tracing::warn!(server = %self.server, kind, %epoch, %refusal, "command refused");
        self.record(EventKind::CommandRefused {
            kind: kind.to_owned(),
            epoch,
            reason: refusal.to_string(),
        });
    }
}

impl Actor for SimServer {
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

impl Handler<Connected> for SimServer {
    type Result = ();

    fn handle(&mut self, msg: Connected, ctx: &mut Context<Self>) {
        self.model.set_renew_interval(msg.renew_interval);
        self.pulser
            .connected(msg.heartbeat_interval, msg.renew_interval);
        let reports = spawn_reporter(msg.connection.clone(), self.shared.stats.clone());
        self.link = Some(Link {
            generation: msg.generation,
            connection: msg.connection,
            reports,
        });
        self.pulse(ctx);
    }
}

impl Handler<Disconnected> for SimServer {
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

impl Handler<DescribeForRegistration> for SimServer {
    type Result = MessageResult<DescribeForRegistration>;

    fn handle(&mut self, _: DescribeForRegistration, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Described {
            running: self.model.running(),
            highest_epoch: self.model.highest_epoch(),
            fence: Default::default(),
        })
    }
}

impl Handler<ApplyPointerReceived> for SimServer {
    type Result = ();

    fn handle(&mut self, msg: ApplyPointerReceived, ctx: &mut Context<Self>) {
        let ApplyPointerReceived(request, reply) = msg;
        let (account, epoch) = (request.pointer.account.clone(), request.pointer.epoch);
        match self
            .model
            .apply(&request.server, request.pointer, mono_now())
        {
            Err(refusal) => {
                self.record_refusal("ApplyPointer", epoch, &refusal);
                answer(reply, PointerApplication::Refused(refusal));
            }
            Ok(effects) => {
                tracing::debug!(server = %self.server, %account, %epoch, "pointer accepted");
                match self.log.clone() {
                    // S-2, D-1: with an event log, the epoch is on disk before the gateway
                    // hears `Accepted`, exactly as in the agent.
                    Some(log) => {
                        let journal = async move {
                            log.append_synced(EventKind::PointerAccepted { account, epoch })
                                .await;
                        };
                        ctx.spawn(journal.into_actor(self).map(move |(), actor, ctx| {
                            answer(reply, PointerApplication::Accepted { epoch });
                            actor.perform(effects, ctx);
                        }));
                    }
                    None => {
                        answer(reply, PointerApplication::Accepted { epoch });
                        self.perform(effects, ctx);
                    }
                }
            }
        }
    }
}

impl Handler<StopWorkloadReceived> for SimServer {
    type Result = ();

    fn handle(&mut self, msg: StopWorkloadReceived, ctx: &mut Context<Self>) {
        let StopWorkloadReceived(request, reply) = msg;
        let drain = Duration::from_millis(request.drain_ms);
        match self
            .model
            .stop_requested(&request.server, request.epoch, drain)
        {
            Err(refusal) => {
                self.record_refusal("StopWorkload", request.epoch, &refusal);
                answer(reply, StopOutcome::Refused(refusal));
            }
            Ok(effects) => {
                self.stop_replies
                    .entry(request.epoch)
                    .or_default()
                    .push(reply);
                self.perform(effects, ctx);
            }
        }
    }
}

impl Handler<PulseAnswered> for SimServer {
    type Result = ();

    fn handle(&mut self, PulseAnswered(answer): PulseAnswered, ctx: &mut Context<Self>) {
        if let Some(answered) = self.pulser.answered(answer) {
            self.renewal_answered(answered.epoch, answered.sent_at, Ok(answered.renewal), ctx);
        }
    }
}

/// What the simulated driver tells its `SimServer`; the counterpart of `DriverReport`.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub enum SimDriverReport {
    /// The simulated workload "process" exists (and `workload_starting` is on disk).
    Started { epoch: Epoch },
    /// It is gone (and `workload_stopped` is on disk).
    Gone { epoch: Epoch, reason: StopReason },
}

impl Handler<SimDriverReport> for SimServer {
    type Result = ();

    fn handle(&mut self, msg: SimDriverReport, ctx: &mut Context<Self>) {
        let effects = match msg {
            SimDriverReport::Started { epoch } => {
                // The simulated health check passes after a seeded start time.
                let delay = start_delay(self.shared.seed, &self.server, epoch, self.shared.start);
                let handle = ctx.run_later(delay, move |actor, ctx| {
                    actor.health = None;
                    let effects = actor.model.health_passed(epoch, mono_now());
                    actor.perform(effects, ctx);
                });
                if let Some((_, old)) = self.health.replace((epoch, handle)) {
                    ctx.cancel_future(old);
                }
                Vec::new()
            }
            SimDriverReport::Gone { epoch, reason } => {
                if let Some((pending, handle)) = self.health.take() {
                    if pending == epoch {
                        ctx.cancel_future(handle);
                    } else {
                        self.health = Some((pending, handle));
                    }
                }
                self.model.workload_gone(epoch, reason, None, mono_now())
            }
        };
        self.perform(effects, ctx);
    }
}

impl Handler<Shutdown> for SimServer {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        self.shutdown_waiters.push(msg.done);
        let effects = self.model.shutdown();
        self.perform(effects, ctx);
    }
}

enum SimOrder {
    Start { account: AccountId, epoch: Epoch },
    Stop { epoch: Epoch, cause: StopReason },
}

/// The simulated driver: one task per server that takes orders one at a time, in order,
/// like the process driver, so "stop the old one, then start the new one" holds without
/// locks. It writes the workload_* lines when there is an event log.
#[derive(Clone)]
struct SimDriver {
    orders: mpsc::UnboundedSender<SimOrder>,
}

impl SimDriver {
    fn spawn(log: Option<EventLog>, reports: Recipient<SimDriverReport>) -> SimDriver {
        let (orders, mut receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut running: Option<(AccountId, Epoch)> = None;
            // The account that ran last: a simulated workload keeps no files, so moving to
            // another account wipes nothing, and says so as the real driver does.
            let mut last: Option<AccountId> = None;
            while let Some(order) = receiver.recv().await {
                match order {
                    SimOrder::Start { account, epoch } => {
                        if running.is_some() {
                            // The model never asks this (S-3); never "start" a second one.
                            tracing::error!(%account, %epoch, "asked to start while another runs");
                            continue;
                        }
                        if let Some(log) = &log {
                            if let Some(previous) = last.take().filter(|p| p != &account) {
                                log.append_synced(EventKind::DataWiped {
                                    account: previous,
                                    paths: Vec::new(),
                                })
                                .await;
                            }
                            log.append_synced(EventKind::WorkloadStarting {
                                account: account.clone(),
                                epoch,
                                data_dir: None,
                            })
                            .await;
                        }
                        last = Some(account.clone());
                        running = Some((account, epoch));
                        reports.do_send(SimDriverReport::Started { epoch });
                    }
                    SimOrder::Stop { epoch, cause } => {
                        let Some((account, _)) = running.take_if(|(_, e)| *e == epoch) else {
                            continue;
                        };
                        tokio::time::sleep(SIM_STOP).await;
                        if let Some(log) = &log {
                            log.append_synced(EventKind::WorkloadStopped {
                                account,
                                epoch,
                                pid: None,
                                cause,
                                exit_code: None,
                                reaped_alive: None,
                            })
                            .await;
                        }
                        reports.do_send(SimDriverReport::Gone {
                            epoch,
                            reason: cause,
                        });
                    }
                }
            }
        });
        SimDriver { orders }
    }

    fn start(&self, account: AccountId, epoch: Epoch) {
        let _ = self.orders.send(SimOrder::Start { account, epoch });
    }

    fn stop(&self, epoch: Epoch, cause: StopReason) {
        let _ = self.orders.send(SimOrder::Stop { epoch, cause });
    }
}

/// Answers a request from a task, so a slow stream never holds the actor.
fn answer<R>(reply: Reply<R, ReplyPort>, response: R::Response)
where
    R: Request + 'static,
    R::Response: Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = reply.send(&response).await {
            tracing::debug!(%error, "answer not delivered");
        }
    });
}

/// Sends a connection's reports in order, until the connection is replaced.
fn spawn_reporter(connection: Connection, stats: Arc<FleetStats>) -> mpsc::UnboundedSender<Report> {
    let (sender, mut receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(report) = receiver.recv().await {
            let sent = match &report {
                Report::Joined(message) => connection.send(message).await,
                Report::Failed(message) => connection.send(message).await,
                Report::Stopped(message) => connection.send(message).await,
            };
            if let Err(error) = sent {
                stats.error();
                tracing::debug!(%error, ?report, "report not delivered");
            }
        }
    });
    sender
}
