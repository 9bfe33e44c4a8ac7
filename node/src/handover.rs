//! An agent replaced in place, its workload running on (docs/node.md, "Upgrading an
//! agent"). On SIGUSR2 a node agent whose workload is healthy writes what the next agent
//! needs to go on ([`Handover`]) and re-executes its binary from the path it was started
//! from, so that a package upgrade takes effect. `exec` keeps the process id, so the
//! workload's guard, whose parent the agent is, sees no change and keeps the workload
//! running; the new image finds the handover, checks it against its event log and the
//! processes that exist, and adopts the workload under the same epoch and lease.
//!
//! Two files in the work dir, both the agent's own:
//! - [`HANDOVER_FILE`]: the pointer (its secrets left out: the running workload has them
//!   already, and they are never written to disk), the lease's end on the machine's
//!   monotonic clock, the workload's and the guard's pids. Read once and removed.
//! - [`DEADLINE_FILE`]: the lease's end, less the stop margin, on the same clock. While it
//!   exists the guard kills the workload at that time, so that S-1 holds even if the new
//!   image never comes up: no one else would stop the workload at its lease's end.

use std::io::Write as _;
use std::path::Path;

use leasehold_federation::wire::common::{InitPointer, Secrets};
use serde::{Deserialize, Serialize};

use crate::clock::MonoTime;

pub const HANDOVER_FILE: &str = "handover.json";
pub const DEADLINE_FILE: &str = "guard.deadline";

/// What an agent leaves its successor in the same process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    /// The process that wrote it: only the same process (after `exec`) may adopt.
    pub agent_pid: u32,
    /// The running workload's pointer, without its secrets.
    pub pointer: InitPointer,
    /// When its lease ends, on CLOCK_MONOTONIC.
    pub lease_until: MonoTime,
    pub workload_pid: u32,
    /// The guard's pid, which is also the workload's process group.
    pub guard_pid: u32,
    /// What the driver probes: the health URL and the load metric.
    pub health_url: Option<String>,
    pub metrics: Option<(String, String)>,
}

impl Handover {
    pub fn new(
        pointer: &InitPointer,
        lease_until: MonoTime,
        workload_pid: u32,
        guard_pid: u32,
        health_url: Option<String>,
        metrics: Option<(String, String)>,
    ) -> Handover {
        let mut pointer = pointer.clone();
        pointer.secrets = Secrets::default();
        Handover {
            agent_pid: std::process::id(),
            pointer,
            lease_until,
            workload_pid,
            guard_pid,
            health_url,
            metrics,
        }
    }
}

/// Writes `handover` into `work` (blocking; synced, then renamed into place, mode 0600).
pub fn write(work: &Path, handover: &Handover) -> std::io::Result<()> {
    let text = serde_json::to_vec(handover).map_err(std::io::Error::other)?;
    write_synced(&work.join(HANDOVER_FILE), &text)
}

/// The handover left in `work`, if any, removed as it is read: a handover is good for one
/// start only. A file that does not parse is reported and removed.
pub fn take(work: &Path) -> Result<Option<Handover>, String> {
    let path = work.join(HANDOVER_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let _ = std::fs::remove_file(&path);
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|error| format!("{} is not a handover: {error}", path.display()))
}

/// Tells the guard to kill the workload at `at` unless the deadline is cleared first.
pub fn set_deadline(work: &Path, at: MonoTime) -> std::io::Result<()> {
    write_synced(
        &work.join(DEADLINE_FILE),
        at.as_nanos().to_string().as_bytes(),
    )
}

/// The new agent enforces the lease itself from now on (or nothing runs).
pub fn clear_deadline(work: &Path) {
    match std::fs::remove_file(work.join(DEADLINE_FILE)) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(%error, "cannot remove the guard's deadline"),
    }
}

/// The deadline at `path`, as the guard reads it every poll; `None` when there is none.
pub fn read_deadline(path: &Path) -> Option<MonoTime> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().map(MonoTime::from_nanos)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn pointer() -> InitPointer {
        let mut pointer = crate::model::tests::pointer("shop", 7);
        pointer.secrets = Secrets::new(BTreeMap::from([("TOKEN".to_owned(), "s3cret".to_owned())]));
        pointer
    }

    #[test]
    fn a_handover_is_read_once_without_secrets_and_the_deadline_comes_and_goes() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let handover = Handover::new(
            &pointer(),
            MonoTime::from_nanos(5_000),
            41,
            40,
            Some("http://127.0.0.1:1/health".into()),
            None,
        );
        write(dir.path(), &handover).expect("written");
        let on_disk = std::fs::read_to_string(dir.path().join(HANDOVER_FILE)).expect("a file");
        assert!(!on_disk.contains("s3cret"), "{on_disk}");
        assert!(!on_disk.contains("TOKEN"), "{on_disk}");
        let read = take(dir.path()).expect("readable").expect("there");
        assert_eq!(read, handover);
        assert!(read.pointer.secrets.is_empty());
        assert_eq!(take(dir.path()), Ok(None), "read twice");

        let deadline = dir.path().join(DEADLINE_FILE);
        assert_eq!(read_deadline(&deadline), None);
        set_deadline(dir.path(), MonoTime::from_nanos(123)).expect("written");
        assert_eq!(read_deadline(&deadline), Some(MonoTime::from_nanos(123)));
        clear_deadline(dir.path());
        assert_eq!(read_deadline(&deadline), None);

        std::fs::write(dir.path().join(HANDOVER_FILE), "not json").expect("written");
        assert!(take(dir.path()).is_err());
        assert_eq!(take(dir.path()), Ok(None), "a bad file is removed");
    }
}
