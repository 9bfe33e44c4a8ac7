//! The access log: who (token name, address) read what, one JSON object per line, in the
//! shape of the gateway's `--log-format json` lines, apart from the audit log of decisions.
//! Lines go to a writer thread through a bounded queue: a slow disk must not hold the API,
//! so when the queue is full a line is dropped and counted, and the next line says how
//! many were lost.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use serde::Serialize;

/// Lines that may wait for the disk; about a second of a busy scraper and page.
const QUEUE: usize = 1024;

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
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Ok(record) = queue.recv() {
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
