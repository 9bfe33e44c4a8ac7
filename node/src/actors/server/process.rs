//! The node agent's workloads: processes started by the process driver, probed over HTTP
//! or by their CPU time; and what only a real process has, its handover to the next image
//! of this agent (crate::handover).

use std::time::Duration;

use actix::{AsyncContext, Context, Handler, MessageResult};
use leasehold_federation::ids::Epoch;
use leasehold_federation::wire::common::InitPointer;

use super::{Server, Workloads};
use crate::actors::messages::{Adopt, LoadSampled, PrepareHandover, ReplacementFailed};
use crate::clock::mono_now;
use crate::driver::probe::{self, CpuReading};
use crate::driver::{Driver, StartedProcess};
use crate::event_log::StopReason;

/// What is probed of the running workload.
struct Probes {
    epoch: Epoch,
    pid: u32,
    /// Kept for a handover: the guard the successor waits for, and what it probes.
    guard_pid: u32,
    health_url: Option<String>,
    metrics: Option<(String, String)>,
}

pub struct ProcessWorkloads {
    driver: Driver,
    start_timeout: Duration,
    probes: Option<Probes>,
    load: Option<f64>,
    load_in_flight: bool,
    cpu: Option<CpuReading>,
}

impl ProcessWorkloads {
    pub fn new(driver: Driver, start_timeout: Duration) -> ProcessWorkloads {
        ProcessWorkloads {
            driver,
            start_timeout,
            probes: None,
            load: None,
            load_in_flight: false,
            cpu: None,
        }
    }

    fn replace_probes(&mut self, probes: Option<Probes>) {
        self.probes = probes;
        self.load = None;
        self.cpu = None;
    }
}

impl Workloads for ProcessWorkloads {
    fn start(&mut self, pointer: InitPointer, service_addr: &str) {
        self.driver.start(pointer, service_addr.to_owned());
    }

    fn stop(&mut self, epoch: Epoch, cause: StopReason) {
        self.driver.stop(epoch, cause);
    }

    fn started(
        &mut self,
        epoch: Epoch,
        process: Option<StartedProcess>,
    ) -> impl Future<Output = Result<(), String>> + use<> {
        let url = process.as_ref().and_then(|p| p.health_url.clone());
        self.replace_probes(process.map(|p| Probes {
            epoch,
            pid: p.pid,
            guard_pid: p.guard_pid,
            health_url: p.health_url,
            metrics: p.metrics,
        }));
        probe::wait_healthy(url, self.start_timeout)
    }

    fn gone(&mut self, epoch: Epoch) {
        if self.probes.as_ref().is_some_and(|p| p.epoch == epoch) {
            self.replace_probes(None);
        }
    }

    fn load(&self) -> Option<f64> {
        self.probes.as_ref().and(self.load)
    }

    /// Starts the next load sample for the next pulse, unless one is under way. A task per
    /// pulse is fine for one workload; the fleet's simulated load is read in place instead.
    fn pulsed(&mut self, ctx: &mut Context<Server<Self>>) {
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
}

impl Handler<LoadSampled> for Server<ProcessWorkloads> {
    type Result = ();

    fn handle(&mut self, msg: LoadSampled, _: &mut Context<Self>) {
        let workloads = &mut self.workloads;
        workloads.load_in_flight = false;
        if workloads
            .probes
            .as_ref()
            .is_some_and(|p| p.epoch == msg.epoch)
        {
            workloads.load = msg.load;
            workloads.cpu = msg.cpu;
        }
    }
}

impl Handler<PrepareHandover> for Server<ProcessWorkloads> {
    type Result = MessageResult<PrepareHandover>;

    fn handle(&mut self, _: PrepareHandover, _: &mut Context<Self>) -> Self::Result {
        let prepared = match self.model.handover() {
            Ok(None) => Ok(None),
            Ok(Some((pointer, pid, lease_until))) => match self
                .workloads
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

impl Handler<ReplacementFailed> for Server<ProcessWorkloads> {
    type Result = ();

    fn handle(&mut self, _: ReplacementFailed, _: &mut Context<Self>) {
        self.replacing = false;
    }
}

impl Handler<Adopt> for Server<ProcessWorkloads> {
    type Result = ();

    fn handle(&mut self, Adopt(handover): Adopt, ctx: &mut Context<Self>) {
        let pointer = handover.pointer;
        let epoch = pointer.epoch;
        // The driver first: the model's first effect may be to stop it (a lease that ended
        // during the replacement), and orders reach the driver in turn.
        self.workloads.driver.adopt(crate::driver::Adopted {
            account: pointer.account.clone(),
            epoch,
            pid: handover.workload_pid,
            guard_pid: handover.guard_pid,
            stop_timeout: Duration::from_millis(pointer.software.stop_timeout_ms),
        });
        self.cancel_health(None, ctx);
        self.workloads.replace_probes(Some(Probes {
            epoch,
            pid: handover.workload_pid,
            guard_pid: handover.guard_pid,
            health_url: handover.health_url,
            metrics: handover.metrics,
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
