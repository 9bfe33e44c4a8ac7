//! The fleet's simulated workloads behind the node agent's own `Server` actor (D-50): a
//! start takes a seeded time and then passes its health check, a stop takes a few
//! milliseconds, the load is drawn from the fleet's load model, and no process or file is
//! touched (unless an event log is asked for, which is then the real `EventLog`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::Recipient;
use leasehold_federation::ids::{AccountId, Epoch, ServerId};
use leasehold_federation::wire::common::InitPointer;
use tokio::sync::mpsc;

use super::load::{Census, LoadModel, start_delay};
use super::stats::FleetStats;
use crate::actors::server::{Counters, Workloads};
use crate::driver::{DriverReport, StartedProcess};
use crate::event_log::{EventKind, EventLog, StopReason};
use crate::model::{NodeModel, Phase};

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

/// One simulated server's workloads.
pub struct SimWorkloads {
    server: ServerId,
    shared: SimShared,
    driver: SimDriver,
    /// The account this server is counted as serving in the census.
    counted: Option<AccountId>,
}

impl SimWorkloads {
    /// Must be called inside the actor's context: the simulated driver reports to it.
    pub fn new(
        server: ServerId,
        shared: SimShared,
        log: Option<EventLog>,
        reports: Recipient<DriverReport>,
    ) -> SimWorkloads {
        SimWorkloads {
            server,
            shared,
            driver: SimDriver::spawn(log, reports),
            counted: None,
        }
    }
}

impl Workloads for SimWorkloads {
    fn start(&mut self, pointer: InitPointer, _service_addr: &str) {
        let (account, epoch) = (pointer.account, pointer.epoch);
        let _ = self.driver.orders.send(SimOrder::Start { account, epoch });
    }

    fn stop(&mut self, epoch: Epoch, cause: StopReason) {
        let _ = self.driver.orders.send(SimOrder::Stop { epoch, cause });
    }

    /// Passes after a seeded start time.
    fn started(
        &mut self,
        epoch: Epoch,
        _process: Option<StartedProcess>,
    ) -> impl Future<Output = Result<(), String>> + use<> {
        let shared = &self.shared;
        let delay = start_delay(shared.seed, &self.server, epoch, shared.start);
        async move {
            tokio::time::sleep(delay).await;
            Ok(())
        }
    }

    fn gone(&mut self, _epoch: Epoch) {}

    /// Only a serving workload reports load, as the agent's does only once it is probed.
    fn load(&self) -> Option<f64> {
        let shared = &self.shared;
        self.counted.as_ref().map(|account| {
            shared.load.server_load(
                account,
                shared.seed,
                shared.started_at.elapsed(),
                shared.census.count(account),
            )
        })
    }

    /// Keeps the census (serving per account, the sine model's divisor) up to date.
    fn performed(&mut self, model: &NodeModel) {
        // Called after every tick: the account is compared where it is, not cloned.
        let serving = match model.phase() {
            Some(Phase::Healthy | Phase::Draining) => model.running_account(),
            _ => None,
        };
        if serving != self.counted.as_ref() {
            self.shared.census.moved(self.counted.as_ref(), serving);
            self.counted = serving.cloned();
        }
    }
}

/// The fleet counts for its status line what the agent counts for `/metrics`.
impl Counters for FleetStats {
    fn pulse_not_sent(&self) {
        self.errors.pulses.fetch_add(1, Ordering::Relaxed);
    }

    fn renewal(&self, result: &'static str) {
        match result {
            "renewed" => self.renewals.fetch_add(1, Ordering::Relaxed),
            "refused" => self.renewals_refused.fetch_add(1, Ordering::Relaxed),
            _ => self.errors.unanswered.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn report_not_delivered(&self) {
        self.errors.reports.fetch_add(1, Ordering::Relaxed);
    }
}

enum SimOrder {
    Start { account: AccountId, epoch: Epoch },
    Stop { epoch: Epoch, cause: StopReason },
}

/// The simulated driver: one task per server that takes orders one at a time, in order,
/// like the process driver, so "stop the old one, then start the new one" holds without
/// locks. It writes the workload_* lines when there is an event log.
struct SimDriver {
    orders: mpsc::UnboundedSender<SimOrder>,
}

impl SimDriver {
    fn spawn(log: Option<EventLog>, reports: Recipient<DriverReport>) -> SimDriver {
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
                        reports.do_send(DriverReport::Started {
                            epoch,
                            process: None,
                        });
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
                        reports.do_send(DriverReport::Gone {
                            epoch,
                            reason: cause,
                            exit_code: None,
                        });
                    }
                }
            }
        });
        SimDriver { orders }
    }
}
