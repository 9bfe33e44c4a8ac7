//! The safety checker for one server's event log: judges invariants S-2 and S-3 (and the
//! node's half of S-1) from the record alone, as the tests and the chaos checker do.

use std::fmt;
use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch};

use crate::event_log::{Event, EventKind, StopReason};

/// One broken rule, with the `seq` of the line that broke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// S-3: a workload was starting while another had not stopped.
    TwoWorkloads {
        seq: u64,
        starting: (AccountId, Epoch),
        running: (AccountId, Epoch),
    },
    /// S-2: an accepted epoch not greater than one accepted before.
    EpochNotGreater {
        seq: u64,
        epoch: Epoch,
        previous: Epoch,
    },
    /// S-3: a workload started under an epoch older than the newest accepted one.
    StaleWorkload {
        seq: u64,
        epoch: Epoch,
        newest: Epoch,
    },
    /// S-1: a workload started with no unexpired lease for its epoch.
    StartedWithoutLease { seq: u64, epoch: Epoch },
    /// S-1: a workload stopped later than its last lease's end plus the stop slack.
    RanPastLease {
        seq: u64,
        epoch: Epoch,
        until_mono_ns: u64,
        stopped_mono_ns: u64,
    },
    /// Tenant hygiene: another account's workload started where an account's files had not
    /// been wiped since it ran.
    DataNotWiped {
        seq: u64,
        left: AccountId,
        starting: AccountId,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::TwoWorkloads {
                seq,
                starting,
                running,
            } => write!(
                f,
                "seq {seq}: {} {} starting while {} {} still runs",
                starting.0, starting.1, running.0, running.1
            ),
            Violation::EpochNotGreater {
                seq,
                epoch,
                previous,
            } => write!(f, "seq {seq}: accepted {epoch} after {previous}"),
            Violation::StaleWorkload { seq, epoch, newest } => {
                write!(f, "seq {seq}: started {epoch} after accepting {newest}")
            }
            Violation::StartedWithoutLease { seq, epoch } => {
                write!(f, "seq {seq}: started {epoch} without a valid lease")
            }
            Violation::RanPastLease {
                seq,
                epoch,
                until_mono_ns,
                stopped_mono_ns,
            } => write!(
                f,
                "seq {seq}: {epoch} stopped {} ms after its lease ended",
                stopped_mono_ns.saturating_sub(*until_mono_ns) / 1_000_000
            ),
            Violation::DataNotWiped {
                seq,
                left,
                starting,
            } => write!(
                f,
                "seq {seq}: {starting} starting where {left}'s files were not wiped"
            ),
        }
    }
}

/// What the checker carries from line to line. [`LogChecker`] is the same checker fed
/// one line at a time (the simulation checks every line as it is written).
#[derive(Debug, Default, Clone)]
struct Scan {
    newest_accepted: Option<Epoch>,
    /// The workload started and not yet stopped.
    running: Option<(AccountId, Epoch)>,
    /// The latest lease end seen, per epoch of the workload in question.
    lease_until: Option<(Epoch, u64)>,
    /// The account whose files may be on the server: it started here and was not wiped.
    files_of: Option<AccountId>,
    violations: Vec<Violation>,
}

/// Checks one server's events in file order. `stop_slack` is how long a stop may take
/// after the lease ends (the stop timeout plus scheduling): the node begins to stop at its
/// lease end, and writes `workload_stopped` only once the process is gone.
pub fn check_server_log(events: &[Event], stop_slack: Duration) -> Vec<Violation> {
    let mut checker = LogChecker::new(stop_slack);
    events
        .iter()
        .flat_map(|event| checker.step(event))
        .collect()
}

/// [`check_server_log`] one line at a time: each line's violations as it comes.
#[derive(Debug, Clone)]
pub struct LogChecker {
    scan: Scan,
    slack_ns: u64,
}

impl LogChecker {
    pub fn new(stop_slack: Duration) -> LogChecker {
        LogChecker {
            scan: Scan::default(),
            slack_ns: u64::try_from(stop_slack.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The violations the next line of the log shows.
    pub fn step(&mut self, event: &Event) -> Vec<Violation> {
        self.scan.step(event, self.slack_ns);
        std::mem::take(&mut self.scan.violations)
    }
}

impl Scan {
    fn step(&mut self, event: &Event, slack_ns: u64) {
        let seq = event.seq;
        match &event.kind {
            EventKind::PointerAccepted { epoch, .. } => {
                if let Some(previous) = self.newest_accepted
                    && *epoch <= previous
                {
                    self.violations.push(Violation::EpochNotGreater {
                        seq,
                        epoch: *epoch,
                        previous,
                    });
                }
                self.newest_accepted = self.newest_accepted.max(Some(*epoch));
            }
            EventKind::LeaseExtended {
                epoch,
                until_mono_ns,
            } => {
                let until = match self.lease_until {
                    Some((e, until)) if e == *epoch => until.max(*until_mono_ns),
                    _ => *until_mono_ns,
                };
                self.lease_until = Some((*epoch, until));
            }
            EventKind::WorkloadStarting { account, epoch, .. } => {
                if let Some(left) = self.files_of.as_ref().filter(|left| *left != account) {
                    self.violations.push(Violation::DataNotWiped {
                        seq,
                        left: left.clone(),
                        starting: account.clone(),
                    });
                }
                self.files_of = Some(account.clone());
                if let Some(running) = &self.running {
                    self.violations.push(Violation::TwoWorkloads {
                        seq,
                        starting: (account.clone(), *epoch),
                        running: running.clone(),
                    });
                }
                if let Some(newest) = self.newest_accepted
                    && *epoch < newest
                {
                    self.violations.push(Violation::StaleWorkload {
                        seq,
                        epoch: *epoch,
                        newest,
                    });
                }
                match self.lease_until {
                    Some((e, until)) if e == *epoch && until > event.mono_ns => {}
                    _ => self
                        .violations
                        .push(Violation::StartedWithoutLease { seq, epoch: *epoch }),
                }
                self.running = Some((account.clone(), *epoch));
            }
            EventKind::DataWiped { account, .. } => {
                if self.files_of.as_ref() == Some(account) {
                    self.files_of = None;
                }
            }
            EventKind::WorkloadStopped {
                epoch,
                cause,
                reaped_alive,
                ..
            } => {
                // An orphan found already gone died with its agent (its guard saw to it);
                // the log cannot say when, so only a live orphan is judged.
                let judged = !(*cause == StopReason::OrphanReaped && *reaped_alive != Some(true));
                if judged
                    && let Some((e, until)) = self.lease_until
                    && e == *epoch
                    && event.mono_ns > until.saturating_add(slack_ns)
                {
                    self.violations.push(Violation::RanPastLease {
                        seq,
                        epoch: *epoch,
                        until_mono_ns: until,
                        stopped_mono_ns: event.mono_ns,
                    });
                }
                if self.running.as_ref().is_some_and(|(_, e)| e == epoch) {
                    self.running = None;
                }
            }
            // The first line of a rotated log: what the lines before it (perhaps removed
            // by retention) said. Judged from here as if those lines had been read.
            EventKind::Checkpoint(state) => {
                if state.highest_epoch > Epoch::NONE {
                    self.newest_accepted = self.newest_accepted.max(Some(state.highest_epoch));
                }
                self.running = state
                    .running
                    .as_ref()
                    .map(|running| (running.account.clone(), running.epoch));
                self.lease_until = state.lease.map(|lease| (lease.epoch, lease.until_mono_ns));
                self.files_of = state.files_of.clone();
            }
            EventKind::AgentStarted { .. }
            | EventKind::AgentReplaced { .. }
            | EventKind::WorkloadAdopted { .. }
            | EventKind::CommandRefused { .. }
            | EventKind::WorkloadStarted { .. }
            | EventKind::WorkloadHealthy { .. }
            | EventKind::WorkloadFailed { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests;
