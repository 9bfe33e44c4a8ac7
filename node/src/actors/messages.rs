//! The messages the `Server` actor takes. Commands from the gateway carry their typed
//! reply; everything else is an event (past tense) from the link, a probe or a timer task.

use std::time::Duration;

use leasehold_federation::ids::Epoch;
use leasehold_federation::transport::connection::{Connection, ReplyPort};
use leasehold_federation::wire::Reply;
use leasehold_federation::wire::node::{ApplyPointer, PulseAnswer, RunningWorkload, StopWorkload};
use tokio::sync::oneshot;

use crate::driver::probe::CpuReading;

/// The link registered with the gateway (`Registration::Accepted`).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Connected {
    /// Counts connections, so that a late `Disconnected` of an old one is ignored.
    pub generation: u64,
    pub connection: Connection,
    pub heartbeat_interval: Duration,
    pub renew_interval: Duration,
    pub service_addr: String,
    /// The generation of the gateway registered with (a site of standby gateways).
    pub gateway_generation: Option<u64>,
}

#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Disconnected {
    pub generation: u64,
}

/// What a `RegisterServer` should say: what runs, and the highest epoch applied; and the
/// highest gateway generation registered under, which an acceptance must not be below.
#[derive(Debug, actix::Message)]
#[rtype(result = "Described")]
pub struct DescribeForRegistration;

#[derive(Debug, Clone)]
pub struct Described {
    pub running: Option<RunningWorkload>,
    pub highest_epoch: Epoch,
    pub fence: leasehold_federation::generation::GenerationFence,
}

#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct ApplyPointerReceived(pub ApplyPointer, pub Reply<ApplyPointer, ReplyPort>);

#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct StopWorkloadReceived(pub StopWorkload, pub Reply<StopWorkload, ReplyPort>);

/// The gateway answered the renewal a pulse carried.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct PulseAnswered(pub PulseAnswer);

#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct LoadSampled {
    pub epoch: Epoch,
    pub load: Option<f64>,
    pub cpu: Option<CpuReading>,
}

/// SIGUSR2: may the agent be replaced in place now, and what must its successor adopt?
/// `Ok(None)`: nothing runs. A handover's guard pid is read from the workload's group.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<Option<crate::handover::Handover>, String>")]
pub struct PrepareHandover;

/// The `exec` of a prepared replacement did not happen: commands are acted on again.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct ReplacementFailed;

/// The new image of a replaced agent takes over its predecessor's workload (checked
/// against the event log and the processes that exist before this is sent).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Adopt(pub crate::handover::Handover);

/// SIGTERM or SIGINT: stop the workload, then answer on `done`.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub done: oneshot::Sender<()>,
}

/// A scrape of the agent's `/metrics` asks what the lease and workload are now.
#[derive(Debug, actix::Message)]
#[rtype(result = "crate::metrics::NodeStatus")]
pub struct GetNodeStatus;
