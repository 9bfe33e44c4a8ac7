//! What a log says at its end, folded line by line: the facts that recovery (the highest
//! epoch, a workload left running, whose files are on the server) and the evidence checker
//! (the lease's end) carry from one line to the next. A rotated log starts with them, as a
//! `checkpoint` line, so that a file deleted by retention takes nothing they need.

use leasehold_federation::ids::{AccountId, Epoch};
use serde::{Deserialize, Serialize};

use super::EventKind;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogState {
    /// The highest epoch ever accepted (S-2).
    pub highest_epoch: Epoch,
    /// A workload recorded as starting or started, and not as stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningState>,
    /// The node's latest view of a lease's end, for its epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseEnd>,
    /// The account whose files may be on the server: it started here and was not wiped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_of: Option<AccountId>,
    /// Its data directory, as its start wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningState {
    pub account: AccountId,
    pub epoch: Epoch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEnd {
    pub epoch: Epoch,
    pub until_mono_ns: u64,
}

impl Default for LogState {
    /// An empty log's: no epoch, nothing running, no files.
    fn default() -> Self {
        LogState {
            highest_epoch: Epoch::NONE,
            running: None,
            lease: None,
            files_of: None,
            data_dir: None,
        }
    }
}

impl LogState {
    /// The state a whole log ends in.
    pub fn of<'a>(kinds: impl IntoIterator<Item = &'a EventKind>) -> LogState {
        let mut state = LogState::default();
        for kind in kinds {
            state.apply(kind);
        }
        state
    }

    /// The state after one more line.
    pub fn apply(&mut self, kind: &EventKind) {
        match kind {
            EventKind::PointerAccepted { epoch, .. } => {
                self.highest_epoch = self.highest_epoch.max(*epoch);
            }
            EventKind::WorkloadStarting {
                account,
                epoch,
                data_dir,
            } => {
                self.files_of = Some(account.clone());
                self.data_dir = data_dir.clone();
                self.running = Some(RunningState {
                    account: account.clone(),
                    epoch: *epoch,
                    pid: None,
                    pgid: None,
                });
            }
            EventKind::WorkloadStarted {
                epoch, pid, pgid, ..
            } => {
                if let Some(running) = self.running.as_mut().filter(|r| r.epoch == *epoch) {
                    running.pid = Some(*pid);
                    running.pgid = Some(*pgid);
                }
            }
            EventKind::WorkloadStopped { epoch, .. } => {
                if self.running.as_ref().is_some_and(|r| r.epoch == *epoch) {
                    self.running = None;
                }
            }
            EventKind::DataWiped { account, .. } => {
                if self.files_of.as_ref() == Some(account) {
                    self.files_of = None;
                    self.data_dir = None;
                }
            }
            EventKind::LeaseExtended {
                epoch,
                until_mono_ns,
            } => {
                let until = match self.lease {
                    Some(lease) if lease.epoch == *epoch => lease.until_mono_ns.max(*until_mono_ns),
                    _ => *until_mono_ns,
                };
                self.lease = Some(LeaseEnd {
                    epoch: *epoch,
                    until_mono_ns: until,
                });
            }
            EventKind::Checkpoint(state) => {
                let highest = self.highest_epoch.max(state.highest_epoch);
                *self = state.clone();
                self.highest_epoch = highest;
            }
            EventKind::AgentStarted { .. }
            | EventKind::AgentReplaced { .. }
            | EventKind::WorkloadAdopted { .. }
            | EventKind::CommandRefused { .. }
            | EventKind::WorkloadHealthy { .. }
            | EventKind::WorkloadFailed { .. } => {}
        }
    }
}
