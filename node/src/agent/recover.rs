//! What a restarting agent learns from its event log, and the reaping of a workload that
//! an earlier agent left behind.

use leasehold_federation::ids::{AccountId, Epoch};
use nix::sys::signal::Signal;

use crate::driver::os;
use crate::event_log::{Event, LogState};

/// The state an agent rebuilds from its log before it does anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The highest epoch ever accepted (S-2 holds across restarts).
    pub highest_epoch: Epoch,
    pub next_seq: u64,
    /// The account whose scratch may be on disk.
    pub last_account: Option<AccountId>,
    /// Its data directory, as its last start wrote it.
    pub last_data_dir: Option<std::path::PathBuf>,
    /// A workload recorded as starting or started, and never as stopped.
    pub orphan: Option<Orphan>,
    /// All of it as the log's fold, which the writer goes on from (and checkpoints).
    pub state: LogState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub account: AccountId,
    pub epoch: Epoch,
    pub pid: Option<u32>,
    pub pgid: Option<u32>,
}

pub fn recover(events: &[Event]) -> Recovered {
    let state = LogState::of(events.iter().map(|event| &event.kind));
    Recovered {
        highest_epoch: state.highest_epoch,
        next_seq: events.iter().map(|event| event.seq + 1).max().unwrap_or(0),
        last_account: state.files_of.clone(),
        last_data_dir: state.data_dir.as_ref().map(std::path::PathBuf::from),
        orphan: state.running.as_ref().map(|running| Orphan {
            account: running.account.clone(),
            epoch: running.epoch,
            pid: running.pid,
            pgid: running.pgid,
        }),
        state,
    }
}

/// Kills what is left of an orphan's process group and waits for its pid to go; returns
/// whether anything was still there. `pid_file_pid` is what the guard wrote, for an
/// orphan whose `workload_started` never made it to the log.
pub async fn reap(orphan: &Orphan, pid_file_pid: Option<u32>) -> bool {
    let pid = orphan.pid.or(pid_file_pid);
    // The group is the guard's; if the log lacks it, the workload's own stat names it.
    let pgid = orphan.pgid.or_else(|| pid.and_then(os::process_group_of));
    // Zombies run nothing, and a killed group can leave some behind for a slow reaper,
    // so "alive" asks about the workload and its guard, not about the group's mere members.
    let alive = pid.is_some_and(os::process_running) || pgid.is_some_and(os::process_running);
    if let Some(pgid) = pgid {
        os::signal_group(pgid, Signal::SIGKILL);
    }
    if let Some(pid) = pid {
        os::signal_process(pid, Signal::SIGKILL);
        os::wait_gone(pid).await;
    }
    alive
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(lines: &[&str]) -> Vec<Event> {
        lines
            .iter()
            .enumerate()
            .map(|(seq, fields)| {
                serde_json::from_str(&format!(
                    r#"{{"seq":{seq},"wall_ms":0,"mono_ns":0,"server":"a1",{fields}}}"#
                ))
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn finds_the_highest_epoch_and_an_unstopped_workload() {
        let log = events(&[
            r#""event":"pointer_accepted","account":"shop","epoch":4"#,
            r#""event":"workload_starting","account":"shop","epoch":4"#,
            r#""event":"workload_started","account":"shop","epoch":4,"pid":77,"pgid":76"#,
            r#""event":"pointer_accepted","account":"blog","epoch":5"#,
        ]);
        let recovered = recover(&log);
        assert_eq!(recovered.highest_epoch, Epoch::from_journal(5));
        assert_eq!(recovered.next_seq, 4);
        assert_eq!(
            recovered.orphan,
            Some(Orphan {
                account: AccountId::parse("shop").unwrap(),
                epoch: Epoch::from_journal(4),
                pid: Some(77),
                pgid: Some(76),
            })
        );
    }

    #[test]
    fn a_stopped_workload_is_no_orphan() {
        let log = events(&[
            r#""event":"workload_starting","account":"shop","epoch":4"#,
            r#""event":"workload_stopped","account":"shop","epoch":4,"pid":null,"cause":"failed_start""#,
        ]);
        let recovered = recover(&log);
        assert_eq!(recovered.orphan, None);
        assert_eq!(recovered.last_account, AccountId::parse("shop").ok());
    }
}
