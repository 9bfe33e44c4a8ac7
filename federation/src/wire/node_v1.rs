//! The two messages of management protocol 1 (`leasehold-node/1`) that protocol 2 replaced
//! with [`super::node::Pulse`]: a heartbeat on a one-way stream, and a lease renewal as a
//! request answered with [`super::node::LeaseRenewal`]. Kept, exactly as protocol 1 encoded
//! them, so that a gateway and a node agent one protocol apart still work together
//! (docs/wire.md, "Versioning"); every other management message is the same in both.

use serde::{Deserialize, Serialize};

use super::common::Health;
use super::node::RunningWorkload;
use crate::ids::{Epoch, ServerId};

/// Node → gateway, every heartbeat interval, on a one-way stream (protocol 1 only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub server: ServerId,
    pub seq: u64,
    pub running: Option<RunningWorkload>,
    pub health: Health,
    /// In the unit of the account's load metric; `None` when there is nothing to measure.
    pub load: Option<f64>,
}

/// Node → gateway: keep my lease for this epoch, counted from when this request was sent
/// (protocol 1 only; answered with a `LeaseRenewal`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewLease {
    pub server: ServerId,
    pub epoch: Epoch,
}
