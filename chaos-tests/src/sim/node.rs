//! A simulated node agent: the production [`NodeModel`], driven as the `Server` actor
//! drives it (a tick every 20 ms, heartbeats, renewals with timeouts, a stop's drain), with
//! a simulated workload process (it takes a drawn time to start, to pass its health check
//! and to stop) and the node's event log kept in memory, line for line as the real agent
//! writes it (`pointer_accepted` before the answer, `workload_starting` before the spawn,
//! `workload_stopped` once the process is gone). The log is the simulation's evidence.

use std::time::Duration;

use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::wire::common::{Health, Refusal};
use leasehold_federation::wire::node::{
    LeaseRenewal, PointerApplication, Registration, StopOutcome,
};
use leasehold_node::clock::MonoTime;
use leasehold_node::event_log::{Event, EventKind, StopReason};
use leasehold_node::model::{Effect, NodeModel};

use super::ctx::{Ctx, Timer};
use super::message::{Msg, RequestId};
use super::net::End;

/// The agent's tick (the `Server` actor's).
const TICK_US: u64 = 20_000;
/// How long an agent waits before dialling again.
const DIAL_RETRY_US: u64 = 250_000;
/// The simulated workload's times, microseconds (start, health check, stop).
const SPAWN_US: (u64, u64) = (2_000, 30_000);
const HEALTHY_US: (u64, u64) = (10_000, 200_000);
const STOP_US: (u64, u64) = (1_000, 100_000);

/// One line of a node's event log, with the true time it was written (the simulation's
/// stand-in for CLOCK_MONOTONIC shared by every process of a machine).
#[derive(Debug, Clone)]
pub struct Line {
    pub event: Event,
    pub true_us: u64,
}

/// The workload process, as the simulation knows it (not as the model believes it).
#[derive(Debug, Clone, PartialEq)]
struct Process {
    account: leasehold_federation::ids::AccountId,
    epoch: Epoch,
    pid: Option<u32>,
    /// Being stopped, and why.
    stopping: Option<StopReason>,
}

pub struct SimNode {
    pub index: usize,
    pub server: ServerId,
    pub site: usize,
    /// Node clock: nanoseconds at true time zero, and the rate it runs at.
    offset_ns: u64,
    rate: f64,
    /// The lines written, from the oldest a restarting agent still needs (see
    /// [`SimNode::trim`]): they survive the agent's crash.
    pub log: Vec<Line>,
    /// Workloads started and commands refused, counted as their lines are written.
    pub started: u64,
    pub refused: u64,
    /// Bumped at every start of the agent: timers of an older one are ignored.
    pub generation: u64,
    up: Option<Agent>,
    /// The workload's process, which outlives a crashed agent only until its guard sees.
    process: Option<Process>,
    /// The account whose files are on the (simulated) disk: wiped, as the real driver
    /// does, before another account's workload starts.
    files_of: Option<leasehold_federation::ids::AccountId>,
    next_pid: u32,
    skip_epoch_check: bool,
    renew_interval: Duration,
    heartbeat_interval: Duration,
}

struct Agent {
    model: NodeModel,
    /// The gateway generation this agent is registered with.
    connected: Option<u64>,
    dialling: Option<RequestId>,
    renewals: std::collections::BTreeMap<RequestId, (Epoch, MonoTime)>,
    stop_replies: Vec<(Epoch, RequestId)>,
    load: Option<f64>,
}

impl SimNode {
    pub fn new(
        index: usize,
        server: ServerId,
        site: usize,
        offset_ns: u64,
        rate: f64,
        renew_interval: Duration,
        heartbeat_interval: Duration,
    ) -> SimNode {
        SimNode {
            index,
            server,
            site,
            offset_ns,
            rate,
            log: Vec::new(),
            started: 0,
            refused: 0,
            generation: 0,
            up: None,
            process: None,
            files_of: None,
            next_pid: 1000,
            skip_epoch_check: false,
            renew_interval,
            heartbeat_interval,
        }
    }

    pub fn plant_skip_epoch_check(&mut self) {
        self.skip_epoch_check = true;
    }

    pub fn is_up(&self) -> bool {
        self.up.is_some()
    }

    /// The gateway generation the agent is registered with, if any.
    pub fn connected_generation(&self) -> Option<u64> {
        self.up.as_ref().and_then(|agent| agent.connected)
    }

    /// The node's monotonic clock.
    pub fn mono(&self, now_us: u64) -> MonoTime {
        MonoTime::from_nanos(self.offset_ns + (now_us as f64 * 1000.0 * self.rate) as u64)
    }

    fn us(&self, duration: Duration) -> u64 {
        (duration.as_micros() as f64 / self.rate) as u64
    }

    /// The workload process runs now (for a load that follows the account).
    pub fn running(&self) -> Option<(&leasehold_federation::ids::AccountId, Epoch)> {
        self.process
            .as_ref()
            .filter(|p| p.pid.is_some())
            .map(|p| (&p.account, p.epoch))
    }

    /// The workload process, spawned or being spawned.
    pub fn process(&self) -> Option<(&leasehold_federation::ids::AccountId, Epoch)> {
        self.process.as_ref().map(|p| (&p.account, p.epoch))
    }

    pub fn set_load(&mut self, load: Option<f64>) {
        if let Some(agent) = &mut self.up {
            agent.load = load;
        }
    }

    /// Drops the lines before the newest `pointer_accepted` and the newest
    /// `workload_starting` (the checker has read them): what a restarting agent recovers
    /// from the log (its highest epoch, a workload left running) is all after them, since
    /// a node's accepted epochs only grow. Returns how many lines went.
    pub fn trim(&mut self) -> usize {
        let last = |wanted: fn(&EventKind) -> bool| {
            self.log.iter().rposition(|line| wanted(&line.event.kind))
        };
        let accepted = last(|kind| matches!(kind, EventKind::PointerAccepted { .. }));
        let starting = last(|kind| matches!(kind, EventKind::WorkloadStarting { .. }));
        let keep_from = match (accepted, starting) {
            (Some(a), Some(s)) => a.min(s),
            (Some(a), None) => a,
            (None, _) => 0,
        };
        self.log.drain(..keep_from);
        keep_from
    }

    fn write(&mut self, kind: EventKind, now_us: u64) {
        match kind {
            EventKind::WorkloadStarted { .. } => self.started += 1,
            EventKind::CommandRefused { .. } => self.refused += 1,
            _ => {}
        }
        let seq = self.log.last().map_or(0, |line| line.event.seq + 1);
        let event = Event {
            seq,
            wall_ms: now_us / 1000,
            mono_ns: self.mono(now_us).as_nanos(),
            server: self.server.clone(),
            kind,
        };
        self.log.push(Line {
            event,
            true_us: now_us,
        });
    }

    /// Starts the agent on its event log (after a crash: the workload it left is reaped).
    pub fn start(&mut self, ctx: &mut Ctx) {
        self.generation += 1;
        let events: Vec<Event> = self.log.iter().map(|line| line.event.clone()).collect();
        let recovered = leasehold_node::agent::recover::recover(&events);
        self.write(
            EventKind::AgentStarted {
                agent_pid: self.generation as u32,
            },
            ctx.now_us,
        );
        if let Some(orphan) = recovered.orphan {
            // The guard killed the workload with its agent: it is already gone.
            let alive = self.process.take().is_some();
            self.write(
                EventKind::WorkloadStopped {
                    account: orphan.account,
                    epoch: orphan.epoch,
                    pid: orphan.pid,
                    cause: StopReason::OrphanReaped,
                    exit_code: None,
                    reaped_alive: Some(alive),
                },
                ctx.now_us,
            );
        }
        #[allow(unused_mut)] // planted only in debug builds
        let mut model = NodeModel::new(
            self.server.clone(),
            recovered.highest_epoch,
            self.renew_interval,
        );
        #[cfg(debug_assertions)]
        if self.skip_epoch_check {
            model.plant_skip_epoch_check();
        }
        self.up = Some(Agent {
            model,
            connected: None,
            dialling: None,
            renewals: Default::default(),
            stop_replies: Vec::new(),
            load: None,
        });
        ctx.timer(0, Timer::Dial);
        ctx.timer(self.us(Duration::from_micros(TICK_US)), Timer::NodeTick);
        ctx.timer(self.us(self.heartbeat_interval), Timer::Heartbeat);
    }

    /// kill -9 of the agent: its workload's guard kills the workload a moment later
    /// (the world calls [`SimNode::workload_died_with_agent`]).
    pub fn crash(&mut self) {
        self.up = None;
        self.generation += 1;
    }

    /// The guard saw its agent gone and killed the workload: no line is written (the
    /// agent is dead); the next agent reaps it as an orphan.
    pub fn workload_died_with_agent(&mut self) {
        if self.up.is_none() {
            self.process = None;
        }
    }

    /// The workload crashes by itself.
    pub fn workload_crash(&mut self, ctx: &mut Ctx) {
        let Some(process) = &self.process else { return };
        if process.pid.is_some() && process.stopping.is_none() {
            let epoch = process.epoch;
            self.gone(epoch, StopReason::Exited, Some(1), ctx);
        }
    }

    /// The gateway's connection closed (it crashed or stopped): dial again.
    pub fn connection_lost(&mut self, generation: u64, ctx: &mut Ctx) {
        let Some(agent) = &mut self.up else { return };
        if agent.connected == Some(generation) {
            agent.connected = None;
            agent.dialling = None;
            ctx.timer(DIAL_RETRY_US, Timer::Dial);
        }
    }

    pub fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        match timer {
            Timer::NodeTick => {
                let now = self.mono(ctx.now_us);
                if let Some(agent) = &mut self.up {
                    let effects = agent.model.tick(now);
                    self.perform(effects, ctx);
                }
                ctx.timer(self.us(Duration::from_micros(TICK_US)), Timer::NodeTick);
            }
            Timer::Heartbeat => {
                if let Some(agent) = &self.up
                    && agent.connected.is_some()
                {
                    let msg = Msg::Heartbeat {
                        generation: agent.connected.unwrap_or_default(),
                        server: self.server.clone(),
                        health: agent.model.health(),
                        load: if self.running().is_some() {
                            agent.load
                        } else {
                            None
                        },
                    };
                    ctx.send(End::Gateway(self.site), msg);
                }
                ctx.timer(self.us(self.heartbeat_interval), Timer::Heartbeat);
            }
            Timer::Dial => self.dial(ctx),
            Timer::RequestTimeout(request) => self.renewal_lost(request, ctx),
            Timer::WorkloadSpawned(epoch) => self.spawned(epoch, ctx),
            Timer::WorkloadHealthy(epoch) => {
                let now = self.mono(ctx.now_us);
                if self.running().is_some_and(|(_, e)| e == epoch)
                    && let Some(agent) = &mut self.up
                {
                    let effects = agent.model.health_passed(epoch, now);
                    self.perform(effects, ctx);
                }
            }
            Timer::WorkloadGone(epoch) => {
                let reason = self
                    .process
                    .as_ref()
                    .filter(|p| p.epoch == epoch)
                    .and_then(|p| p.stopping);
                if let Some(reason) = reason {
                    self.gone(epoch, reason, None, ctx);
                }
            }
            Timer::DrainEnded(epoch) => {
                if let Some(agent) = &mut self.up {
                    let effects = agent.model.drain_ended(epoch);
                    self.perform(effects, ctx);
                }
            }
            _ => {}
        }
    }

    fn dial(&mut self, ctx: &mut Ctx) {
        let Some(agent) = &mut self.up else { return };
        if agent.connected.is_some() {
            return;
        }
        let request = ctx.request_id();
        agent.dialling = Some(request);
        let msg = Msg::Register {
            server: self.server.clone(),
            running: agent.model.running(),
            highest_epoch: agent.model.highest_epoch(),
            request,
        };
        ctx.send(End::Gateway(self.site), msg);
        ctx.timer(DIAL_RETRY_US, Timer::Dial);
    }

    fn renewal_lost(&mut self, request: RequestId, ctx: &mut Ctx) {
        let now = self.mono(ctx.now_us);
        let Some(agent) = &mut self.up else { return };
        if let Some((epoch, _)) = agent.renewals.remove(&request) {
            agent.model.renew_unanswered(epoch, now);
        }
    }

    pub fn on_msg(&mut self, msg: Msg, ctx: &mut Ctx) {
        let now = self.mono(ctx.now_us);
        let server = self.server.clone();
        let Some(agent) = &mut self.up else { return };
        let connection = agent.connected.unwrap_or_default();
        match msg {
            Msg::Registered {
                generation,
                request,
                answer,
            } => {
                if agent.dialling == Some(request)
                    && let Ok(Registration::Accepted {
                        renew_interval_ms, ..
                    }) = answer
                {
                    agent.dialling = None;
                    agent.connected = Some(generation);
                    agent
                        .model
                        .set_renew_interval(Duration::from_millis(renew_interval_ms));
                }
            }
            Msg::RenewAnswer { request, answer } => {
                let Some((epoch, sent_at)) = agent.renewals.remove(&request) else {
                    return;
                };
                let effects = match answer {
                    LeaseRenewal::Renewed { epoch: got, ttl_ms } if got == epoch => agent
                        .model
                        .lease_renewed(epoch, sent_at, Duration::from_millis(ttl_ms), now),
                    LeaseRenewal::Renewed { .. } => {
                        agent.model.renew_unanswered(epoch, now);
                        Vec::new()
                    }
                    LeaseRenewal::Refused(refusal) => agent.model.lease_refused(epoch, &refusal),
                };
                self.perform(effects, ctx);
            }
            Msg::Apply {
                generation,
                request,
                pointer,
            } => {
                if agent.connected != Some(generation) {
                    return;
                }
                let (account, epoch) = (pointer.account.clone(), pointer.epoch);
                match agent.model.apply(&server, pointer, now) {
                    Err(refusal) => {
                        self.refused("ApplyPointer", epoch, &refusal, ctx.now_us);
                        let answer = PointerApplication::Refused(refusal);
                        let msg = Msg::PointerAnswer {
                            generation: connection,
                            request,
                            answer,
                        };
                        ctx.send(End::Gateway(self.site), msg);
                    }
                    Ok(effects) => {
                        // S-2, D-1: on disk before the gateway hears `Accepted`.
                        self.write(EventKind::PointerAccepted { account, epoch }, ctx.now_us);
                        let answer = PointerApplication::Accepted { epoch };
                        let msg = Msg::PointerAnswer {
                            generation: connection,
                            request,
                            answer,
                        };
                        ctx.send(End::Gateway(self.site), msg);
                        self.perform(effects, ctx);
                    }
                }
            }
            Msg::Stop {
                generation,
                request,
                epoch,
                drain_ms,
            } => {
                if agent.connected != Some(generation) {
                    return;
                }
                match agent
                    .model
                    .stop_requested(&server, epoch, Duration::from_millis(drain_ms))
                {
                    Err(refusal) => {
                        self.refused("StopWorkload", epoch, &refusal, ctx.now_us);
                        let answer = StopOutcome::Refused(refusal);
                        let msg = Msg::StopAnswer {
                            generation: connection,
                            request,
                            answer,
                        };
                        ctx.send(End::Gateway(self.site), msg);
                    }
                    Ok(effects) => {
                        agent.stop_replies.push((epoch, request));
                        self.perform(effects, ctx);
                    }
                }
            }
            _ => {}
        }
    }

    /// A command refused is written down, as the real agent does (nothing else changes).
    fn refused(&mut self, kind: &str, epoch: Epoch, refusal: &Refusal, now_us: u64) {
        let kind = EventKind::CommandRefused {
            kind: kind.to_owned(),
            epoch,
            reason: refusal.to_string(),
        };
        self.write(kind, now_us);
    }

    fn perform(&mut self, effects: Vec<Effect>, ctx: &mut Ctx) {
        for effect in effects {
            match effect {
                Effect::StartWorkload { pointer } => {
                    let (account, epoch) = (pointer.account.clone(), pointer.epoch);
                    if let Some(previous) = self.files_of.take().filter(|p| p != &account) {
                        self.write(
                            EventKind::DataWiped {
                                account: previous,
                                paths: Vec::new(),
                            },
                            ctx.now_us,
                        );
                    }
                    self.files_of = Some(account.clone());
                    self.write(
                        EventKind::WorkloadStarting {
                            account: account.clone(),
                            epoch,
                            data_dir: None,
                        },
                        ctx.now_us,
                    );
                    self.process = Some(Process {
                        account,
                        epoch,
                        pid: None,
                        stopping: None,
                    });
                    let after = ctx.rng.between(SPAWN_US.0, SPAWN_US.1);
                    ctx.timer(after, Timer::WorkloadSpawned(epoch));
                }
                Effect::StopWorkload { epoch, cause } => {
                    if let Some(process) = &mut self.process
                        && process.epoch == epoch
                    {
                        process.stopping.get_or_insert(cause);
                        // A process not yet spawned is gone as soon as its spawn comes.
                        if process.pid.is_some() {
                            let after = ctx.rng.between(STOP_US.0, STOP_US.1);
                            ctx.timer(after, Timer::WorkloadGone(epoch));
                        }
                    }
                }
                Effect::SendRenew { epoch } => self.send_renew(epoch, ctx),
                Effect::StartDrain { epoch, drain } => {
                    ctx.timer(self.us(drain), Timer::DrainEnded(epoch));
                }
                Effect::ReplyStopped { epoch } => {
                    let Some(agent) = &mut self.up else { continue };
                    let connection = agent.connected.unwrap_or_default();
                    let (due, rest): (Vec<_>, Vec<_>) =
                        agent.stop_replies.drain(..).partition(|(e, _)| *e == epoch);
                    agent.stop_replies = rest;
                    for (_, request) in due {
                        let answer = StopOutcome::Stopped { epoch };
                        let msg = Msg::StopAnswer {
                            generation: connection,
                            request,
                            answer,
                        };
                        ctx.send(End::Gateway(self.site), msg);
                    }
                }
                Effect::RecordLease { epoch, until } => self.write(
                    EventKind::LeaseExtended {
                        epoch,
                        until_mono_ns: until.as_nanos(),
                    },
                    ctx.now_us,
                ),
                Effect::RecordHealthy { account, epoch } => {
                    self.write(EventKind::WorkloadHealthy { account, epoch }, ctx.now_us)
                }
                Effect::RecordFailed {
                    account,
                    epoch,
                    reason,
                } => self.write(
                    EventKind::WorkloadFailed {
                        account,
                        epoch,
                        reason,
                    },
                    ctx.now_us,
                ),
                Effect::Report(report) => {
                    if let Some(connection) = self.connected_generation() {
                        let msg = Msg::Report {
                            generation: connection,
                            server: self.server.clone(),
                            report,
                        };
                        ctx.send(End::Gateway(self.site), msg);
                    }
                }
                Effect::ShutdownComplete => {}
            }
        }
    }

    fn send_renew(&mut self, epoch: Epoch, ctx: &mut Ctx) {
        let now = self.mono(ctx.now_us);
        let timeout = self.us(self
            .renew_interval
            .clamp(Duration::from_millis(100), Duration::from_secs(1)));
        let Some(agent) = &mut self.up else { return };
        if agent.connected.is_none() {
            agent.model.renew_unanswered(epoch, now);
            return;
        }
        let request = ctx.request_id();
        agent.renewals.insert(request, (epoch, now));
        let msg = Msg::Renew {
            generation: agent.connected.unwrap_or_default(),
            server: self.server.clone(),
            epoch,
            request,
        };
        ctx.send(End::Gateway(self.site), msg);
        ctx.timer(timeout, Timer::RequestTimeout(request));
    }

    fn spawned(&mut self, epoch: Epoch, ctx: &mut Ctx) {
        self.next_pid += 1;
        let pid = self.next_pid;
        let Some(process) = self.process.as_mut().filter(|p| p.epoch == epoch) else {
            return;
        };
        process.pid = Some(pid);
        let (account, stopping) = (process.account.clone(), process.stopping);
        self.write(
            EventKind::WorkloadStarted {
                account,
                epoch,
                pid,
                pgid: pid - 1,
            },
            ctx.now_us,
        );
        if let Some(agent) = &mut self.up {
            agent.model.workload_started(epoch, pid);
        }
        if stopping.is_some() {
            let after = ctx.rng.between(STOP_US.0, STOP_US.1);
            ctx.timer(after, Timer::WorkloadGone(epoch));
        } else {
            let after = ctx.rng.between(HEALTHY_US.0, HEALTHY_US.1);
            ctx.timer(after, Timer::WorkloadHealthy(epoch));
        }
    }

    /// The workload of `epoch` is gone: the line, then the model.
    fn gone(&mut self, epoch: Epoch, reason: StopReason, exit_code: Option<i32>, ctx: &mut Ctx) {
        let Some(process) = self.process.take_if(|p| p.epoch == epoch) else {
            return;
        };
        self.write(
            EventKind::WorkloadStopped {
                account: process.account,
                epoch,
                pid: process.pid,
                cause: reason,
                exit_code,
                reaped_alive: None,
            },
            ctx.now_us,
        );
        let now = self.mono(ctx.now_us);
        if let Some(agent) = &mut self.up {
            let effects = agent.model.workload_gone(epoch, reason, exit_code, now);
            self.perform(effects, ctx);
        }
    }

    /// Whether the node says it is healthy (for the trace).
    pub fn health(&self) -> Option<Health> {
        self.up.as_ref().map(|agent| agent.model.health())
    }
}
