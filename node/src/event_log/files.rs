//! The log's files: `events.jsonl`, the one written to, and the rotated ones before it,
//! `events.<seq>.jsonl`, named for the first seq of the file that followed (so that they
//! sort by age). A file is rotated once it passes [`Rotation::max_bytes`]: it is fsynced
//! and renamed, the new file starts with a `checkpoint` line (fsynced), and only then are
//! rotated files beyond [`Rotation::keep`] removed, oldest first. A crash at any step leaves
//! every line that was on disk readable by [`read_log`].

use std::path::{Path, PathBuf};

use super::{EVENT_LOG_FILE, Event, EventLogError, read_events};

/// When the log rotates and how many rotated files it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once the file is at least this long.
    pub max_bytes: u64,
    /// Rotated files kept; older ones are removed.
    pub keep: usize,
}

impl Rotation {
    /// 64 MiB a file: about two and a half days of a node's lease renewals at the default
    /// timings (two lines of about 140 bytes a second).
    pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
    /// With the file written to, about 576 MiB and three weeks of evidence.
    pub const DEFAULT_KEEP: usize = 8;

    /// Never rotates (tests that read one file).
    pub const NEVER: Rotation = Rotation {
        max_bytes: u64::MAX,
        keep: usize::MAX,
    };
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: Rotation::DEFAULT_MAX_BYTES,
            keep: Rotation::DEFAULT_KEEP,
        }
    }
}

/// The name a file gets when it is rotated, with `next_seq` the first seq after it.
pub(super) fn rotated_name(dir: &Path, next_seq: u64) -> PathBuf {
    dir.join(format!("events.{next_seq:020}.jsonl"))
}

/// The rotated files in `dir`, oldest first.
pub fn rotated_files(dir: &Path) -> Result<Vec<PathBuf>, EventLogError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EventLogError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| EventLogError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|name| name.strip_prefix("events."))
            .and_then(|rest| rest.strip_suffix(".jsonl"))
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((seq, entry.path()));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// Every event of the log in the work dir `dir`, across its rotated files, oldest first.
pub fn read_log(dir: &Path) -> Result<Vec<Event>, EventLogError> {
    let mut events = Vec::new();
    for file in rotated_files(dir)? {
        events.extend(read_events(&file)?);
    }
    events.extend(read_events(&dir.join(EVENT_LOG_FILE))?);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use leasehold_federation::ids::{AccountId, Epoch, ServerId};

    use super::super::{EventKind, EventLog, LogState};
    use super::*;
    use crate::agent::recover::recover;
    use crate::evidence::{Violation, check_server_log};

    fn shop() -> AccountId {
        AccountId::parse("shop").unwrap()
    }

    /// The lines of a workload that started under epoch 5 and renews its lease for ever.
    fn story(renewals: u64) -> Vec<EventKind> {
        let epoch = Epoch::from_journal(5);
        let mut kinds = vec![
            EventKind::PointerAccepted {
                account: shop(),
                epoch,
            },
            EventKind::LeaseExtended {
                epoch,
                until_mono_ns: u64::MAX / 2,
            },
            EventKind::WorkloadStarting {
                account: shop(),
                epoch,
                data_dir: Some("/w/data/shop".into()),
            },
            EventKind::WorkloadStarted {
                account: shop(),
                epoch,
                pid: 77,
                pgid: 76,
            },
        ];
        kinds.extend((0..renewals).map(|n| EventKind::LeaseExtended {
            epoch,
            until_mono_ns: u64::MAX / 2 + n,
        }));
        kinds
    }

    fn write(dir: &Path, kinds: Vec<EventKind>, rotation: Rotation) {
        let events = read_log(dir).unwrap();
        let recovered = recover(&events);
        let log = EventLog::open_rotating(
            &dir.join(EVENT_LOG_FILE),
            ServerId::parse("a1").unwrap(),
            recovered.next_seq,
            recovered.state,
            rotation,
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for kind in kinds {
            runtime.block_on(log.append_synced(kind));
        }
    }

    #[test]
    fn rotation_keeps_what_recovery_and_the_checker_need_after_old_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: 1024,
            keep: 2,
        };
        let kinds = story(60);
        let whole = LogState::of(&kinds);
        write(dir.path(), kinds, rotation);

        assert_eq!(rotated_files(dir.path()).unwrap().len(), 2, "the retention");
        let events = read_log(dir.path()).unwrap();
        assert!(
            matches!(&events[0].kind, EventKind::Checkpoint(_)),
            "the oldest file left starts with a checkpoint: {:?}",
            events[0]
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e.kind, EventKind::PointerAccepted { .. })),
            "the pointer's line was removed with its file"
        );
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert!(
            seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "{seqs:?}"
        );
        // Recovery learns from what is left what it would have from every line.
        let recovered = recover(&events);
        assert_eq!(recovered.state, whole);
        assert_eq!(recovered.highest_epoch, Epoch::from_journal(5));
        assert_eq!(recovered.orphan.map(|o| o.pid), Some(Some(77)));
        assert_eq!(
            recovered.last_data_dir,
            Some(std::path::PathBuf::from("/w/data/shop"))
        );
        assert_eq!(check_server_log(&events, Duration::ZERO), Vec::new());

        // A reopened log goes on numbering and rotating; the checker still knows epoch 5:
        // a pointer under epoch 4 accepted now is a violation, as it was before rotation.
        write(
            dir.path(),
            vec![EventKind::PointerAccepted {
                account: shop(),
                epoch: Epoch::from_journal(4),
            }],
            rotation,
        );
        let events = read_log(dir.path()).unwrap();
        let violations = check_server_log(&events, Duration::ZERO);
        assert!(
            matches!(
                violations.as_slice(),
                [Violation::EpochNotGreater { previous, .. }] if *previous == Epoch::from_journal(5)
            ),
            "{violations:?}"
        );
    }

    /// A crash between a rotation's rename and its new file: the next agent's file starts
    /// with a checkpoint all the same.
    #[test]
    fn a_file_begun_after_a_crash_mid_rotation_starts_with_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: 1024,
            keep: 8,
        };
        write(dir.path(), story(20), rotation);
        let current = dir.path().join(EVENT_LOG_FILE);
        let next_seq = read_log(dir.path()).unwrap().last().unwrap().seq + 1;
        std::fs::rename(&current, super::rotated_name(dir.path(), next_seq)).unwrap();
        write(
            dir.path(),
            vec![EventKind::AgentStarted { agent_pid: 1 }],
            rotation,
        );
        let events = read_events(&current).unwrap();
        assert!(
            matches!(&events[0].kind, EventKind::Checkpoint(state) if state.highest_epoch == Epoch::from_journal(5)),
            "{:?}",
            events[0]
        );
        assert_eq!(events[0].seq, next_seq);
    }

    #[test]
    fn a_log_that_never_rotates_is_one_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), story(60), Rotation::NEVER);
        assert!(rotated_files(dir.path()).unwrap().is_empty());
        assert_eq!(read_log(dir.path()).unwrap().len(), 64);
    }
}
