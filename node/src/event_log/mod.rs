//! The node's append-only event log (`<work>/events.jsonl`): what the workload did, under
//! which account and epoch, on the wall and monotonic clocks. Tests and the chaos checker
//! judge safety from this file (see `evidence`), never from what the agent says.
//!
//! One JSON object per line:
//! `{"seq":N,"wall_ms":..,"mono_ns":..,"server":"a1","event":"workload_started",...fields}`.
//! Lines are written by one thread ([`EventLog`]) so that `seq` order is file order and
//! `mono_ns` never goes backwards within a file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use leasehold_federation::ids::{AccountId, Epoch, ServerId};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::clock::{mono_now, wall_ms};

mod files;
mod state;

pub use files::{Rotation, read_log, rotated_files};
pub use state::{LeaseEnd, LogState, RunningState};

/// The file name of the event log inside the work dir.
pub const EVENT_LOG_FILE: &str = "events.jsonl";

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub wall_ms: u64,
    /// CLOCK_MONOTONIC when the line was written, comparable across processes on a machine.
    pub mono_ns: u64,
    pub server: ServerId,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. The tag is the `event` field; the variant's fields sit beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    AgentStarted {
        agent_pid: u32,
    },
    /// Written and fsynced before the gateway hears `Accepted` (invariant S-2).
    PointerAccepted {
        account: AccountId,
        epoch: Epoch,
    },
    /// A command the node refused; nothing changed.
    CommandRefused {
        kind: String,
        epoch: Epoch,
        reason: String,
    },
    /// Written and fsynced before the process is spawned, so that a crash between the two
    /// still leaves a record to reap from.
    WorkloadStarting {
        account: AccountId,
        epoch: Epoch,
        /// The account's data directory on this server (absolute), which is wiped before
        /// another account's workload starts here.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_dir: Option<String>,
    },
    /// An account's data and scratch on this server were removed, written and fsynced
    /// before another account's workload starts here (tenant hygiene; docs/node.md).
    DataWiped {
        account: AccountId,
        /// What was removed.
        paths: Vec<String>,
    },
    WorkloadStarted {
        account: AccountId,
        epoch: Epoch,
        /// The workload process.
        pid: u32,
        /// Its process group (the guard's pid), killed as a whole.
        pgid: u32,
    },
    WorkloadHealthy {
        account: AccountId,
        epoch: Epoch,
    },
    WorkloadFailed {
        account: AccountId,
        epoch: Epoch,
        reason: String,
    },
    /// The node's own view of the lease end (anchored at the send time, invariant S-1).
    LeaseExtended {
        epoch: Epoch,
        until_mono_ns: u64,
    },
    /// Written only after the process is confirmed gone.
    WorkloadStopped {
        account: AccountId,
        epoch: Epoch,
        /// The workload's pid, if it ever got one.
        pid: Option<u32>,
        cause: StopReason,
        /// With `cause: exited`: the exit code (128 + signal for a signal).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// With `cause: orphan_reaped`: whether the process was still there to kill. When
        /// it was not, the log cannot say when it ended (its guard killed it with the agent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reaped_alive: Option<bool>,
    },
    /// The first line of a log file after a rotation: what the lines before it said, so
    /// that recovery and the checkers need no older file (`files.rs`).
    Checkpoint(LogState),
    /// SIGUSR2: this agent is about to re-execute `exe` in place, its workload running on
    /// (crate::handover); synced, so every line before it is on disk first.
    AgentReplaced {
        agent_pid: u32,
        exe: String,
    },
    /// The new image took over the workload its predecessor ran: the same process, the
    /// same epoch, nothing restarted.
    WorkloadAdopted {
        account: AccountId,
        epoch: Epoch,
        pid: u32,
    },
}

/// Why a workload stopped, as the event log says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `StopWorkload` from the gateway.
    Commanded,
    /// A pointer with a newer epoch arrived.
    Superseded,
    /// The node's view of the lease ran out (invariant S-1).
    LeaseExpired,
    /// The gateway refused to renew the lease.
    LeaseRefused,
    /// The workload exited by itself.
    Exited,
    /// It did not pass its health check in time.
    FailedHealth,
    /// It could not be started (the command did not run); no process remained.
    FailedStart,
    /// Found running (or recorded as running) when the agent restarted.
    OrphanReaped,
    /// The agent was told to shut down.
    AgentShutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("cannot open the event log {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the event log {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}: not an event: {source}")]
    BadLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads every event of a log; a missing file is an empty log. A line that is not an event
/// is an error naming its line number (1-based), since a checker must not skip evidence,
/// with one exception: a last line without its newline is a write torn by a crash. Every
/// event that anything waited on was fsynced whole, newline included, before it was acted
/// on, so a torn tail records nothing that happened; it is left out.
pub fn read_events(path: &Path) -> Result<Vec<Event>, EventLogError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EventLogError::Open {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut events = Vec::new();
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|source| EventLogError::Read {
                path: path.to_owned(),
                source,
            })?;
        if read == 0 {
            break;
        }
        number += 1;
        let torn = !line.ends_with('\n');
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(event) => events.push(event),
            Err(_) if torn => break,
            Err(source) => {
                return Err(EventLogError::BadLine {
                    path: path.to_owned(),
                    line: number,
                    source,
                });
            }
        }
    }
    Ok(events)
}

/// Cuts a torn last line (see [`read_events`]) off the log, so that the next event starts
/// on a line of its own. Returns how many bytes were cut.
fn cut_torn_tail(path: &Path) -> io::Result<u64> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(0);
    }
    let keep = bytes
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |at| at + 1);
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(keep as u64)?;
    file.sync_all()?;
    Ok((bytes.len() - keep) as u64)
}

enum Entry {
    Append(EventKind),
    Synced(EventKind, oneshot::Sender<()>),
}

/// The writer: a thread of its own owns the file, so neither an actor nor the driver ever
/// waits on a disk inside a handler. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    sender: mpsc::Sender<Entry>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens `path` for appending, never rotating it; `next_seq` continues the numbering of
    /// what is there.
    pub fn open(path: &Path, server: ServerId, next_seq: u64) -> Result<EventLog, EventLogError> {
        EventLog::open_rotating(path, server, next_seq, LogState::default(), Rotation::NEVER)
    }

    /// Opens `path` for appending, rotating it by `rotation`; `next_seq` and `state` are
    /// what the log read so far says ([`read_log`], [`LogState::apply`]).
    pub fn open_rotating(
        path: &Path,
        server: ServerId,
        next_seq: u64,
        state: LogState,
        rotation: Rotation,
    ) -> Result<EventLog, EventLogError> {
        let cut = cut_torn_tail(path).map_err(|source| EventLogError::Open {
            path: path.to_owned(),
            source,
        })?;
        if cut > 0 {
            tracing::warn!(path = %path.display(), bytes = cut, "cut a torn last line (a crash mid-write) off the event log");
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| EventLogError::Open {
                path: path.to_owned(),
                source,
            })?;
        let size = file
            .metadata()
            .map_err(|source| EventLogError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        let (sender, receiver) = mpsc::channel();
        let writer = Writer {
            file,
            path: path.to_owned(),
            server,
            seq: next_seq,
            size,
            state,
            rotation,
        };
        std::thread::Builder::new()
            .name("event-log".into())
            .spawn(move || writer.run(receiver))
            .map_err(|source| EventLogError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(EventLog { sender })
    }

    /// Appends without waiting and without fsync (lease extensions: frequent, and a lost
    /// one only makes the checker more suspicious, never less).
    pub fn append(&self, kind: EventKind) {
        // The writer thread lives as long as the process (it exits the process on error).
        let _ = self.sender.send(Entry::Append(kind));
    }

    /// Appends, fsyncs, and resolves once the line is on disk.
    pub async fn append_synced(&self, kind: EventKind) {
        let (done, written) = oneshot::channel();
        if self.sender.send(Entry::Synced(kind, done)).is_ok() {
            let _ = written.await;
        }
    }
}

struct Writer {
    file: File,
    path: PathBuf,
    server: ServerId,
    seq: u64,
    /// Bytes in the file written to.
    size: u64,
    /// What the log says so far: a rotated file's successor starts with it.
    state: LogState,
    rotation: Rotation,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Entry>) {
        // A file written to that starts empty after a history (a crash between a rotation's
        // rename and its checkpoint) starts with the checkpoint too, so that every file after
        // the first can be read on its own.
        if self.size == 0
            && self.state != LogState::default()
            && let Err(error) = self.write(EventKind::Checkpoint(self.state.clone()), true)
        {
            tracing::error!(path = %self.path.display(), %error, "event log write failed; exiting");
            std::process::exit(74);
        }
        for entry in receiver {
            let (kind, done) = match entry {
                Entry::Append(kind) => (kind, None),
                Entry::Synced(kind, done) => (kind, Some(done)),
            };
            if let Err(error) = self.write(kind, done.is_some()) {
                // A node that cannot keep its evidence must not act on anything more. Its
                // guard kills the workload when the agent exits.
                tracing::error!(path = %self.path.display(), %error, "event log write failed; exiting");
                std::process::exit(74);
            }
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
    }

    fn write(&mut self, kind: EventKind, sync: bool) -> io::Result<()> {
        let event = Event {
            seq: self.seq,
            wall_ms: wall_ms(),
            mono_ns: mono_now().as_nanos(),
            server: self.server.clone(),
            kind,
        };
        let mut line = serde_json::to_vec(&event).map_err(io::Error::other)?;
        line.push(b'\n');
        // One write per line, so a crash never leaves half a line behind another.
        self.file.write_all(&line)?;
        if sync {
            self.file.sync_data()?;
        }
        self.seq += 1;
        self.size += line.len() as u64;
        self.state.apply(&event.kind);
        if self.size >= self.rotation.max_bytes && !matches!(event.kind, EventKind::Checkpoint(_)) {
            self.rotate()?;
        }
        Ok(())
    }

    /// Closes the file written to under its rotated name and starts a new one with a
    /// checkpoint; then removes the rotated files beyond the retention.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_owned();
        std::fs::rename(&self.path, files::rotated_name(&dir, self.seq))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        self.write(EventKind::Checkpoint(self.state.clone()), true)?;
        File::open(&dir)?.sync_all()?;
        let rotated = files::rotated_files(&dir).map_err(io::Error::other)?;
        let excess = rotated.len().saturating_sub(self.rotation.keep);
        for old in &rotated[..excess] {
            std::fs::remove_file(old)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_bad_lines_name_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG_FILE);
        let line = r#"{"seq":0,"wall_ms":1,"mono_ns":2,"server":"a1","event":"workload_stopped","account":"shop","epoch":3,"pid":null,"cause":"exited","exit_code":1}"#;
        std::fs::write(&path, format!("{line}\n{{\"seq\":1}}\n")).unwrap();
        match read_events(&path) {
            Err(EventLogError::BadLine { line: 2, .. }) => {}
            other => panic!("expected a bad line 2, got {other:?}"),
        }
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let events = read_events(&path).unwrap();
        assert_eq!(serde_json::to_string(&events[0]).unwrap(), line);
    }

    #[test]
    fn writer_numbers_lines_and_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG_FILE);
        let log = EventLog::open(&path, ServerId::parse("a1").unwrap(), 7).unwrap();
        log.append(EventKind::AgentStarted { agent_pid: 1 });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(log.append_synced(EventKind::AgentStarted { agent_pid: 2 }));
        let events = read_events(&path).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![7, 8]);
        assert!(events[0].mono_ns <= events[1].mono_ns);
    }

    /// A crash mid-write leaves a last line without its newline: reading skips it (nothing
    /// waited on it), and reopening cuts it off so the next event gets a line of its own.
    /// A bad line that is not the torn tail is still an error.
    #[test]
    fn a_torn_last_line_is_skipped_and_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG_FILE);
        let line = r#"{"seq":0,"wall_ms":1,"mono_ns":2,"server":"a1","event":"agent_started","agent_pid":9}"#;
        std::fs::write(&path, format!("{line}\n{{\"seq\":1,\"wall_ms\"")).unwrap();
        assert_eq!(read_events(&path).unwrap().len(), 1);
        let log = EventLog::open(&path, ServerId::parse("a1").unwrap(), 1).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(log.append_synced(EventKind::AgentStarted { agent_pid: 10 }));
        let events = read_events(&path).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1]);
        std::fs::write(&path, format!("{{\"seq\":1}}\n{line}\n")).unwrap();
        assert!(matches!(
            read_events(&path),
            Err(EventLogError::BadLine { line: 1, .. })
        ));
    }
}
