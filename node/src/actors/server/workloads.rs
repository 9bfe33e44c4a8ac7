//! The seams of the `Server` actor: what differs between the node agent, whose workloads
//! are processes on this machine, and `leasehold fleet`, whose thousands of servers run
//! simulated ones (D-50). Everything else (the model's effects, pulses and renewals, the
//! gateway's commands, the fence, the event log's order) is the actor's own, once.

use std::future::Future;

use actix::Context;
use leasehold_federation::ids::Epoch;
use leasehold_federation::wire::common::InitPointer;

use super::Server;
use crate::driver::StartedProcess;
use crate::event_log::StopReason;
use crate::model::NodeModel;

/// Where the workloads run. The driver behind it takes orders in turn and answers with
/// `DriverReport`s to the actor.
pub trait Workloads: Unpin + Sized + 'static {
    fn start(&mut self, pointer: InitPointer, service_addr: &str);

    fn stop(&mut self, epoch: Epoch, cause: StopReason);

    /// The driver reported the workload started: the check that it serves. The actor drops
    /// it if the workload goes first.
    fn started(
        &mut self,
        epoch: Epoch,
        process: Option<StartedProcess>,
    ) -> impl Future<Output = Result<(), String>> + use<Self>;

    /// The driver reported the workload gone.
    fn gone(&mut self, epoch: Epoch);

    /// The load a pulse reports now, if any. Read while the pulse is built, so it must not
    /// wait: a fleet builds thousands of pulses a second.
    fn load(&self) -> Option<f64>;

    /// A pulse has gone: where the next load sample is started if it takes time.
    fn pulsed(&mut self, _ctx: &mut Context<Server<Self>>) {}

    /// The model's effects have been performed: where what it serves can be followed.
    fn performed(&mut self, _model: &NodeModel) {}
}

/// What the actor counts, for whoever watches it: the agent's `/metrics`, or the fleet's
/// status line summed over its servers. Shared with the task that sends reports.
pub trait Counters: Send + Sync + 'static {
    fn connected(&self) {}
    fn pulse_sent(&self) {}
    fn pulse_not_sent(&self) {}
    /// One of `crate::metrics::RENEWAL_RESULTS`.
    fn renewal(&self, _result: &'static str) {}
    fn workload_started(&self) {}
    fn report_not_delivered(&self) {}
}

impl Counters for crate::metrics::NodeMetrics {
    fn connected(&self) {
        crate::metrics::NodeMetrics::connected(self);
    }

    fn pulse_sent(&self) {
        crate::metrics::NodeMetrics::pulse_sent(self);
    }

    fn renewal(&self, result: &'static str) {
        crate::metrics::NodeMetrics::renewal(self, result);
    }

    fn workload_started(&self) {
        crate::metrics::NodeMetrics::workload_started(self);
    }
}
