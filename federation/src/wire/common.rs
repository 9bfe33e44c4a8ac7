//! Types that several messages carry: the initialization pointer, health, refusals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, Epoch};

/// What a server should run: an account's software and data, under a lease's epoch.
/// A server applies a pointer only if its epoch is newer than any it has applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitPointer {
    pub account: AccountId,
    pub software: Software,
    pub data: DataRef,
    pub epoch: Epoch,
}

/// The software half of a pointer, as the process driver needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Software {
    /// A version label, for status and the audit log.
    pub label: String,
    pub command: String,
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub health_path: Option<String>,
    #[serde(default)]
    pub metrics_path: Option<String>,
    #[serde(default)]
    pub load_metric: Option<String>,
    /// Graceful stop before a forced kill.
    pub stop_timeout_ms: u64,
}

/// The data half of a pointer: where the account's data lives on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRef {
    pub dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// No workload assigned.
    Idle,
    /// Workload started, health check not yet passed.
    Starting,
    Healthy,
    Unhealthy {
        reason: String,
    },
}

/// Why a command was not carried out. The receiver changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{cause:?}: {detail}")]
pub struct Refusal {
    pub cause: RefusalCause,
    /// Words for the log and the operator.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalCause {
    /// The command carries an epoch older than one already seen (fencing).
    StaleEpoch { seen: Epoch },
    /// The command names a server other than the one that received it.
    WrongServer,
    /// No lease or loan with that server and epoch.
    UnknownLease,
    /// The sender is not allowed to ask this (not the owner, not the holder).
    NotAllowed,
    /// Policy leaves nothing to give (reserve, lending limits).
    NothingToSpare,
    /// A machine registered from a boot that is not its current re-image (an old script,
    /// an old epoch, a token already used or not issued): it is powered off.
    StaleBoot,
}
