//! Messages of the management channel, between a node agent and its site gateway
//! (ALPN `leasehold-node/2`, docs/wire.md).
//!
//! Lease timing is anchored at the node: the node starts its lease clock when it *sends*
//! the [`Pulse`] that asks for a renewal, so its view of the lease always ends before the
//! gateway's (invariant S-1 in docs/invariants.md). That is why renewals are asked by the
//! node rather than pushed by the gateway.
//!
//! What a node says every pulse interval (that it lives, its health and load, and which
//! lease it keeps) is one small [`Pulse`] in a QUIC datagram, and the gateway's answer to
//! its renewal one [`PulseAnswer`] datagram: no stream is opened for them, and a lost one
//! costs one interval (the next pulse asks again), which the lease TTL allows for.

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
        /// The generation of the site's active gateway (docs/ha.md, "Generations"); absent
        /// from a site of one gateway.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<u64>,
    },
    Refused(Refusal),
}

/// Node → gateway, in a datagram, every heartbeat interval and whenever a renewal is due.
/// It speaks for the server its connection's certificate names, and for no other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pulse {
    /// Increases with every pulse of one agent; a [`PulseAnswer`] repeats it, so the node
    /// knows when the renewal it answers was sent.
    pub seq: u64,
    pub health: Health,
    /// In the unit of the account's load metric; `None` when there is nothing to measure.
    pub load: Option<f64>,
    /// Keep my lease of this epoch, counted from when this pulse was sent.
    pub renew: Option<Epoch>,
}

/// Gateway → node, in a datagram: the answer to the renewal a [`Pulse`] asked for. A pulse
/// whose lease's account this site does not own now gets no answer (docs/ownership.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PulseAnswer {
    /// The `seq` of the pulse that asked.
    pub seq: u64,
    pub renewal: LeaseRenewal,
    /// The generation of the site's active gateway that sends this (docs/ha.md): absent
    /// from a site of one gateway. An agent refuses a command, a renewal or an acceptance
    /// of a generation older than one it has registered with: a deposed gateway's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
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
    /// The generation of the site's active gateway that sends this (docs/ha.md): absent
    /// from a site of one gateway. An agent refuses a command, a renewal or an acceptance
    /// of a generation older than one it has registered with: a deposed gateway's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
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
    /// The generation of the site's active gateway that sends this (docs/ha.md): absent
    /// from a site of one gateway. An agent refuses a command, a renewal or an acceptance
    /// of a generation older than one it has registered with: a deposed gateway's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
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
