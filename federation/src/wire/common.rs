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
    /// The account's secrets, set by the gateway's shell as the pointer leaves for the node
    /// that runs it (never in a catalogue, journal, log or API answer). Absent when empty,
    /// so a pointer without secrets is encoded as before.
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secrets: Secrets,
}

/// A workload's secret environment variables (`[account.workload] secrets`). They travel
/// only to the node that runs the workload, over its mutual-TLS channel, and, for a loan,
/// from the borrower to the lender in the loan request. `Debug` shows the names only, so
/// that no log line carries a value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secrets(BTreeMap<String, String>);

impl Secrets {
    pub fn new(values: BTreeMap<String, String>) -> Secrets {
        Secrets(values)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The values, for the one place that needs them: the workload's environment.
    pub fn reveal(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
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
