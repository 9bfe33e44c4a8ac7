//! The access log: who (token name, address) read what, one JSON object per line, in the
//! shape of the gateway's `--log-format json` lines, apart from the audit log of decisions.
//! Lines go to a writer thread through a bounded queue: a slow disk must not hold the API,
//! so when the queue is full a line is dropped and counted, and the next line says how
//! many were lost. The file rotates by size (`ROTATE_AT`), keeping `KEEP` old ones.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use serde::Serialize;

/// Lines that may wait for the disk; about a second of a busy scraper and page.
const QUEUE: usize = 1024;

/// The file is rotated once it reaches this size: renamed `.1` (the older ones shifted to
/// `.2`, ...), and a new one started.
const ROTATE_AT: u64 = 64 * 1024 * 1024;
/// Rotated files kept: with the file written to, at most 320 MiB.
const KEEP: usize = 4;

/// One request, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRecord {
    pub timestamp: String,
    pub level: &'static str,
    pub target: &'static str,
    pub message: String,
    /// The token's name, `anonymous`, or `-` (no token on an open path, or refused).
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    pub remote: String,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub query: String,
    pub protocol: String,
    pub status: u16,
    pub ms: f64,
    /// Lines dropped before this one because the queue was full.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_before: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
#[error("access log {path}: {source}")]
pub struct AccessLogError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The sending side; cheap to share.
#[derive(Debug, Clone)]
pub struct AccessLog {
    lines: SyncSender<AccessRecord>,
    dropped: Arc<AtomicU64>,
    path: PathBuf,
}

impl AccessLog {
    /// Opens `path` for appending (mode 0600: it says who looked at what) and starts the
    /// writer thread.
    pub fn open(path: &Path) -> Result<AccessLog, AccessLogError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let failed = |source| AccessLogError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(failed)?;
        let (lines, queue) = std::sync::mpsc::sync_channel::<AccessRecord>(QUEUE);
        let shown = path.display().to_string();
        let mut size = file.metadata().map_err(failed)?.len();
        let file_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Ok(record) = queue.recv() {
                    if size >= ROTATE_AT {
                        match rotate(&file_path, KEEP) {
                            Ok(file) => {
                                out = std::io::BufWriter::new(file);
                                size = 0;
                            }
                            Err(error) => {
                                tracing::error!(file = %shown, %error, "cannot rotate the access log; writing on")
                            }
                        }
                    }
                    let mut ok = serde_json::to_writer(&mut out, &record).is_ok()
                        && out.write_all(b"\n").is_ok();
                    // Flush when the queue is empty: a burst is one write, a lone request
                    // is on disk at once.
                    let mut batch = queue.try_iter();
                    for record in &mut batch {
                        ok &= serde_json::to_writer(&mut out, &record).is_ok()
                            && out.write_all(b"\n").is_ok();
                    }
                    if !(ok && out.flush().is_ok()) {
                        tracing::error!(file = %shown, "cannot write the access log");
                    }
                    size = out.get_ref().metadata().map_or(size, |meta| meta.len());
                }
            })
            .map_err(failed)?;
        Ok(AccessLog {
            lines,
            dropped: Arc::new(AtomicU64::new(0)),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one line; never waits.
    pub fn record(&self, mut record: AccessRecord) {
        record.dropped_before = self.dropped.swap(0, Ordering::Relaxed);
        match self.lines.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(record)) | Err(TrySendError::Disconnected(record)) => {
                self.dropped
                    .fetch_add(1 + record.dropped_before, Ordering::Relaxed);
            }
        }
    }
}

/// Shifts `path.1` .. `path.{keep-1}` up by one (dropping `path.{keep}`), renames `path` to
/// `path.1`, and opens a new `path`.
fn rotate(path: &Path, keep: usize) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let numbered = |n: usize| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    match std::fs::remove_file(numbered(keep)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    for n in (1..keep).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    std::fs::rename(path, numbered(1))?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_shifts_the_old_files_and_keeps_a_bounded_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "first\n").unwrap();
        for round in 2..=6 {
            let mut file = rotate(&path, 3).unwrap();
            writeln!(file, "round {round}").unwrap();
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("access.log"), "round 6\n");
        assert_eq!(read("access.log.1"), "round 5\n");
        assert_eq!(read("access.log.3"), "round 3\n");
        assert!(!dir.path().join("access.log.4").exists());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
