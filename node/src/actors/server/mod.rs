//! The `Server` actor: owns the node model and the management connection, and performs
//! the model's effects. It never waits on a disk, a process or the network itself: those
//! go to the event-log thread, the driver task, or tokio tasks that answer by message.

mod handlers;

use std::collections::HashMap;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, SpawnHandle};
use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::transport::connection::{Connection, ReplyPort};
use leasehold_federation::wire::Reply;
use leasehold_federation::wire::node::{Heartbeat, RenewLease, StopOutcome, StopWorkload};
use tokio::sync::{mpsc, oneshot};

use super::messages::{LoadSampled, RenewAnswered};
use crate::clock::mono_now;
use crate::driver::Driver;
use crate::driver::probe::{self, CpuReading};
use crate::event_log::{EventKind, EventLog};
use crate::model::{Effect, NodeModel, Report};

/// How often the model is ticked: lease expiry is acted on at most this late.
const TICK: Duration = Duration::from_millis(20);

/// The registered connection and what came with it.
struct Link {
    generation: u64,
    connection: Connection,
    /// Reports go through one task per connection, so they arrive in order.
    reports: mpsc::UnboundedSender<Report>,
}

/// What is probed of the running workload.
struct Probes {
    epoch: Epoch,
    pid: u32,
    metrics: Option<(String, String)>,
    health: Option<tokio::task::JoinHandle<()>>,
}

pub struct Server {
    server: ServerId,
    model: NodeModel,
    log: EventLog,
    driver: Driver,
    start_timeout: Duration,
    link: Option<Link>,
    /// From the last registration; kept across reconnects.
    service_addr: String,
    heartbeat: Option<SpawnHandle>,
    heartbeat_seq: u64,
    probes: Option<Probes>,
    load: Option<f64>,
    load_in_flight: bool,
    cpu: Option<CpuReading>,
    stop_replies: HashMap<Epoch, Vec<Reply<StopWorkload, ReplyPort>>>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
}

impl Server {
    pub fn new(
        server: ServerId,
        model: NodeModel,
        log: EventLog,
        driver: Driver,
        start_timeout: Duration,
    ) -> Server {
        Server {
            server,
            model,
            log,
            driver,
            start_timeout,
            link: None,
            service_addr: String::new(),
            heartbeat: None,
            heartbeat_seq: 0,
            probes: None,
            load: None,
            load_in_flight: false,
            cpu: None,
            stop_replies: HashMap::new(),
            shutdown_waiters: Vec::new(),
        }
    }

    /// Performs the model's effects in order.
    fn perform(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::StartWorkload { pointer } => {
                    self.driver.start(pointer, self.service_addr.clone());
                }
                Effect::StopWorkload { epoch, cause } => {
                    tracing::info!(%epoch, ?cause, "stopping the workload");
                    self.driver.stop(epoch, cause);
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
                Effect::RecordLease { epoch, until } => self.log.append(EventKind::LeaseExtended {
                    epoch,
                    until_mono_ns: until.as_nanos(),
                }),
                Effect::RecordHealthy { account, epoch } => {
                    tracing::info!(%account, %epoch, "workload healthy");
                    self.log
                        .append(EventKind::WorkloadHealthy { account, epoch });
                }
                Effect::RecordFailed {
                    account,
                    epoch,
                    reason,
                } => {
                    tracing::warn!(%account, %epoch, %reason, "workload failed");
                    self.log.append(EventKind::WorkloadFailed {
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
    }

    /// Sends `RenewLease` from a task; the lease will count from `sent_at` (S-1).
    fn send_renew(&mut self, epoch: Epoch, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else {
            self.model.renew_unanswered(epoch, mono_now());
            return;
        };
        let connection = link.connection.clone();
        let request = RenewLease {
            server: self.server.clone(),
            epoch,
        };
        let addr = ctx.address();
        let timeout = self
            .model
            .renew_interval()
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        tokio::spawn(async move {
            let sent_at = mono_now();
            let outcome = connection
                .request_within(&request, timeout)
                .await
                .map_err(|error| error.to_string());
            addr.do_send(RenewAnswered {
                epoch,
                sent_at,
                outcome,
            });
        });
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else {
            return;
        };
        self.heartbeat_seq += 1;
        let beat = Heartbeat {
            server: self.server.clone(),
            seq: self.heartbeat_seq,
            running: self.model.running(),
            health: self.model.health(),
            load: self.probes.as_ref().and(self.load),
        };
        let connection = link.connection.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.send(&beat).await {
                tracing::debug!(%error, "heartbeat not sent");
            }
        });
        self.sample_load(ctx);
    }

    /// Starts the next load sample for the next heartbeat, unless one is under way.
    fn sample_load(&mut self, ctx: &mut Context<Self>) {
        let Some(probes) = &self.probes else {
            return;
        };
        if self.load_in_flight {
            return;
        }
        self.load_in_flight = true;
        let (epoch, pid, metrics, previous) =
            (probes.epoch, probes.pid, probes.metrics.clone(), self.cpu);
        let addr = ctx.address();
        tokio::spawn(async move {
            let (load, cpu) = match metrics {
                Some((url, metric)) => (probe::metric_load(url, metric).await, None),
                None => probe::cpu_load(pid, previous).await,
            };
            addr.do_send(LoadSampled { epoch, load, cpu });
        });
    }

    fn start_heartbeats(&mut self, interval: Duration, ctx: &mut Context<Self>) {
        if let Some(handle) = self.heartbeat.take() {
            ctx.cancel_future(handle);
        }
        self.heartbeat = Some(ctx.run_interval(interval, |actor, ctx| actor.heartbeat(ctx)));
    }
}

impl Actor for Server {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |actor, ctx| {
            let effects = actor.model.tick(mono_now());
            actor.perform(effects, ctx);
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
fn spawn_reporter(connection: Connection) -> mpsc::UnboundedSender<Report> {
    let (sender, mut receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(report) = receiver.recv().await {
            let sent = match &report {
                Report::Joined(message) => connection.send(message).await,
                Report::Failed(message) => connection.send(message).await,
                Report::Stopped(message) => connection.send(message).await,
            };
            if let Err(error) = sent {
                tracing::warn!(%error, ?report, "report not delivered");
            }
        }
    });
    sender
}
