//! Messages of the management channel, between a node agent and its site gateway
//! (ALPN `leasehold-node/1`).
//!
//! Lease timing is anchored at the node: the node starts its lease clock when it *sends*
//! `RenewLease`, so its view of the lease always ends before the gateway's (invariant S-1
//! in docs/invariants.md). That is why renewals are node-initiated requests rather than
//! gateway pushes.

use serde::{Deserialize, Serialize};

use super::common::{Health, InitPointer, Refusal};
use crate::ids::{AccountId, Epoch, ServerId, SiteId};

/// Node → gateway, first message on a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterServer {
    pub server: ServerId,
    pub agent_version: String,
    /// The workload running now, if the node kept one across a reconnect.
    pub running: Option<RunningWorkload>,
    /// The highest epoch this node has ever applied (from its event log).
    pub highest_epoch: Epoch,
    /// Set by a node agent that a machine booted through the site's boot service: the
    /// epoch and one-time token from its kernel command line (docs/machines.md). Optional
    /// on the wire: a process agent's registration is the same bytes as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootClaim>,
}

/// The boot a machine's node agent came up from: the re-image of `epoch`, with the token
/// that the boot service gave that boot only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootClaim {
    pub epoch: Epoch,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningWorkload {
    pub account: AccountId,
    pub epoch: Epoch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Registration {
    Accepted {
        site: SiteId,
        heartbeat_interval_ms: u64,
        lease_ttl_ms: u64,
        /// How often the node renews a lease it holds.
        renew_interval_ms: u64,
        /// Where this server's workload serves customer traffic (`{service_addr}`).
        service_addr: String,
    },
    Refused(Refusal),
}

/// Node → gateway, every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub server: ServerId,
    pub seq: u64,
    pub running: Option<RunningWorkload>,
    pub health: Health,
    /// In the unit of the account's load metric; `None` when there is nothing to measure.
    pub load: Option<f64>,
}

/// Node → gateway: keep my lease for this epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewLease {
    pub server: ServerId,
    pub epoch: Epoch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LeaseRenewal {
    /// Valid for `ttl_ms` from when the node sent the request.
    Renewed {
        epoch: Epoch,
        ttl_ms: u64,
    },
    Refused(Refusal),
}

/// Gateway → node: stop what you run and run this instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyPointer {
    pub server: ServerId,
    pub pointer: InitPointer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PointerApplication {
    /// Accepted; `WorkloadJoined` or `WorkloadFailed` follows.
    Accepted {
        epoch: Epoch,
    },
    Refused(Refusal),
}

/// Gateway → node: drain for `drain_ms`, then stop the workload of this epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopWorkload {
    pub server: ServerId,
    pub epoch: Epoch,
    pub drain_ms: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StopOutcome {
    Stopped { epoch: Epoch },
    Refused(Refusal),
}

/// Node → gateway: the workload of this epoch is up and healthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadJoined {
    pub server: ServerId,
    pub account: AccountId,
    pub epoch: Epoch,
    /// From accepting the pointer to passing the health check.
    pub start_ms: u64,
}

/// Node → gateway: the workload of this epoch could not start or failed its health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadFailed {
    pub server: ServerId,
    pub account: AccountId,
    pub epoch: Epoch,
    pub reason: String,
}

/// Node → gateway: the workload of this epoch stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadStopped {
    pub server: ServerId,
    pub account: AccountId,
    pub epoch: Epoch,
    pub cause: StopCause,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopCause {
    /// The gateway said so (`StopWorkload` or a newer pointer).
    Commanded,
    /// The lease ran out at the node without renewal (invariant S-1).
    LeaseExpired,
    /// The workload process exited by itself.
    Exited { code: Option<i32> },
}
