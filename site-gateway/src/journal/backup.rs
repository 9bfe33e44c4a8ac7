//! A journal's backup: one file of JSON lines that any version of Leasehold that reads this
//! backup format can restore, and that `jq` can read. The first line says what it is, one
//! line per stored record follows, and the last line counts them and carries the SHA-256 of
//! every byte before it, so that a copy cut short or altered is refused as a whole:
//!
//! ```text
//! {"leasehold_journal_backup":1,"site":"site-a","journal_format":"1","taken_wall_ms":…,"written_by":"…"}
//! {"table":"leases","key":"a1","value":{"v":1,"account":"shop","epoch":7}}
//! …
//! {"end":{"records":1234,"sha256":"…"}}
//! ```
//!
//! A restore never brings back an epoch handed out after the backup was taken: it sets the
//! journal's epoch floor to the restore's wall-clock time in microseconds, above every
//! epoch any journal of the site has issued (docs/operations.md, "Backups", has the
//! argument), and it drops the running member set, so the site joins the members its peers
//! run instead of counting majorities over a set the federation may have left.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use leasehold_federation::ids::{ServerId, SiteId};
use redb::{Database, ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    AUDIT, AuditRecord, BORROWED, BorrowedRecord, EPOCHS, FORMAT_VERSION, Journal, JournalError,
    LEASES, LeaseRecord, MAINTENANCE, META,
};
use crate::model::effects::{AuditEntry, AuditKind, MaintenanceRecord};

/// The version of this file format (the first line's `leasehold_journal_backup`).
pub const BACKUP_FORMAT: u32 = 1;

/// Rows written per transaction by a restore: bounded memory for any size of backup.
const RESTORE_BATCH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("backup {path} line {line}: {detail}; nothing was restored")]
    Line {
        path: PathBuf,
        line: u64,
        detail: String,
    },
    #[error(
        "backup {path} ends after line {lines} without its closing line: the copy is incomplete (cut short while it was written or copied); take the backup again"
    )]
    Truncated { path: PathBuf, lines: u64 },
    #[error(
        "backup {path}: its closing line says {expected}, but the lines before it give {found}: the file was changed after it was written; use another copy"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "backup {path} changed while it was being restored (it no longer matches what was checked); nothing was restored"
    )]
    Changed { path: PathBuf },
    #[error(
        "this machine's clock ({now_ms} ms since 1970) is before the backup was taken ({taken_ms} ms): a restore takes its epochs from the clock, so set the clock right (NTP) and restore again"
    )]
    ClockBehind { now_ms: u64, taken_ms: u64 },
    #[error(
        "{path} already holds the journal of site `{site}` ({audit} audit records): pass --replace to set it aside (it is renamed, not deleted) and restore over it"
    )]
    Exists {
        path: PathBuf,
        site: String,
        audit: u64,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What a backup holds, from its first and last lines and a count of its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    pub site: SiteId,
    pub taken_wall_ms: u64,
    /// Rows, the boot key's included.
    pub records: u64,
    pub leases: u64,
    pub audit: u64,
    /// The oldest and newest audit sequence numbers it holds.
    pub audit_seqs: Option<(u64, u64)>,
    pub boot_key: bool,
    /// The highest epoch it records, of any server.
    pub highest_epoch: u64,
    /// The epoch floor of the journal it was taken from (0: never restored).
    pub epoch_floor: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl BackupSummary {
    /// A backup's first line, before any row is counted.
    fn nothing_yet(site: SiteId, taken_wall_ms: u64) -> BackupSummary {
        BackupSummary {
            site,
            taken_wall_ms,
            records: 0,
            leases: 0,
            audit: 0,
            audit_seqs: None,
            boot_key: false,
            highest_epoch: 0,
            epoch_floor: 0,
            bytes: 0,
            sha256: String::new(),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreSummary {
    pub backup: BackupSummary,
    /// Every lease from now on gets an epoch above this.
    pub epoch_floor: u64,
    /// Where the journal that was there before now is, if there was one.
    pub set_aside: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    leasehold_journal_backup: u32,
    site: SiteId,
    journal_format: String,
    taken_wall_ms: u64,
    written_by: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    table: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    key: Value,
    value: Value,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    end: EndInfo,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndInfo {
    records: u64,
    sha256: String,
}

/// Counts and hashes what passes through to `inner`.
struct Hashing<'a> {
    inner: &'a mut dyn Write,
    hasher: Sha256,
    bytes: u64,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the backup of the journal that `txn` reads (a snapshot: writes go on beside it)
/// to `out`. `journal` names the journal in errors; `boot_key` is the site's boot key.
pub fn write_backup(
    txn: &ReadTransaction,
    journal: &Path,
    boot_key: Option<&[u8]>,
    wall_ms: u64,
    out: &mut dyn Write,
) -> Result<BackupSummary, BackupError> {
    let store = |source: redb::Error| {
        BackupError::Journal(JournalError::Store {
            path: journal.to_path_buf(),
            source,
        })
    };
    let record = |key: String, detail: String| {
        BackupError::Journal(JournalError::Record {
            path: journal.to_path_buf(),
            key,
            detail,
        })
    };
    let io = |source| BackupError::Io {
        action: "writing the backup of",
        path: journal.to_path_buf(),
        source,
    };
    let meta = txn.open_table(META).map_err(|e| store(e.into()))?;
    let site = meta
        .get("site")
        .map_err(|e| store(e.into()))?
        .map(|value| value.value().to_owned())
        .ok_or_else(|| record("meta/site".into(), "missing".into()))?;
    let site = SiteId::parse(&site).map_err(|e| record("meta/site".into(), e.to_string()))?;
    let mut hashing = Hashing {
        inner: out,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut summary = BackupSummary::nothing_yet(site.clone(), wall_ms);
    let header = Header {
        leasehold_journal_backup: BACKUP_FORMAT,
        site,
        journal_format: FORMAT_VERSION.to_owned(),
        taken_wall_ms: wall_ms,
        written_by: format!("leasehold {}", env!("CARGO_PKG_VERSION")),
    };
    line(&mut hashing, &header).map_err(io)?;
    // Each row goes through the reader's check: a journal that holds a record no restore
    // would take fails the backup now, not on the day it is needed; and the summary counts
    // what a reader will count.
    let mut row = |hashing: &mut Hashing<'_>, table: &str, key: Value, value: Value| {
        let row = Row {
            table: table.to_owned(),
            key,
            value,
        };
        let bytes =
            serde_json::to_vec(&row).map_err(|e| record(table.to_owned(), e.to_string()))?;
        summary.records += 1;
        check(row, &mut summary).map_err(|detail| record(table.to_owned(), detail))?;
        hashing
            .write_all(&bytes)
            .and_then(|()| hashing.write_all(b"\n"))
            .map_err(io)
    };
    for entry in meta.iter().map_err(|e| store(e.into()))? {
        let (key, value) = entry.map_err(|e| store(e.into()))?;
        row(
            &mut hashing,
            "meta",
            Value::from(key.value()),
            Value::from(value.value()),
        )?;
    }
    let json = |table: &str, key: &str, bytes: &[u8]| {
        serde_json::from_slice::<Value>(bytes)
            .map_err(|error| record(format!("{table}/{key}"), error.to_string()))
    };
    for (name, table) in [
        ("leases", LEASES),
        ("borrowed", BORROWED),
        ("maintenance", MAINTENANCE),
    ] {
        let table = txn.open_table(table).map_err(|e| store(e.into()))?;
        for entry in table.iter().map_err(|e| store(e.into()))? {
            let (key, value) = entry.map_err(|e| store(e.into()))?;
            let value = json(name, key.value(), value.value())?;
            row(&mut hashing, name, Value::from(key.value()), value)?;
        }
    }
    let epochs = txn.open_table(EPOCHS).map_err(|e| store(e.into()))?;
    for entry in epochs.iter().map_err(|e| store(e.into()))? {
        let (key, value) = entry.map_err(|e| store(e.into()))?;
        row(
            &mut hashing,
            "epochs",
            Value::from(key.value()),
            Value::from(value.value()),
        )?;
    }
    let audit = txn.open_table(AUDIT).map_err(|e| store(e.into()))?;
    for entry in audit.iter().map_err(|e| store(e.into()))? {
        let (key, value) = entry.map_err(|e| store(e.into()))?;
        let value = json("audit", &key.value().to_string(), value.value())?;
        row(&mut hashing, "audit", Value::from(key.value()), value)?;
    }
    if let Some(key) = boot_key {
        row(
            &mut hashing,
            "boot_key",
            Value::Null,
            Value::from(STANDARD.encode(key)),
        )?;
    }
    let Hashing {
        inner,
        hasher,
        bytes,
    } = hashing;
    let sha256 = hex(&hasher.finalize());
    let end = End {
        end: EndInfo {
            records: summary.records,
            sha256: sha256.clone(),
        },
    };
    let mut closing = serde_json::to_vec(&end).map_err(|e| record("end".into(), e.to_string()))?;
    closing.push(b'\n');
    inner.write_all(&closing).map_err(io)?;
    inner.flush().map_err(io)?;
    let bytes = bytes + closing.len() as u64;
    // The counts a reader of the file sees, from the same check a restore makes.
    Ok(BackupSummary {
        bytes,
        sha256,
        ..summary
    })
}

fn line(out: &mut dyn Write, value: &impl Serialize) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    out.write_all(&bytes)
}

/// A wall-clock time in milliseconds, as RFC 3339 (UTC), or the number if out of range.
pub fn rfc3339(wall_ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall_ms) * 1_000_000)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{wall_ms} ms"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// One checked row, ready to be stored.
enum Checked {
    Meta,
    Json(&'static str, String, Vec<u8>),
    Epoch(String, u64),
    Audit(u64, Vec<u8>),
    BootKey(Vec<u8>),
}

/// Reads a backup line by line, checking each; `each` gets every row as it would be stored.
/// Returns what the backup holds once its closing line checked out.
fn read_backup(
    path: &Path,
    mut each: impl FnMut(Checked) -> Result<(), BackupError>,
) -> Result<BackupSummary, BackupError> {
    let io = |action, source| BackupError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|source| io("opening the backup", source))?;
    let mut reader = BufReader::new(file);
    let mut hasher = Sha256::new();
    let mut number = 0u64;
    let mut total = 0u64;
    let mut summary: Option<BackupSummary> = None;
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        let read = reader
            .read_until(b'\n', &mut bytes)
            .map_err(|source| io("reading the backup", source))?;
        if read == 0 || bytes.last() != Some(&b'\n') {
            return Err(BackupError::Truncated {
                path: path.to_path_buf(),
                lines: number,
            });
        }
        number += 1;
        total += bytes.len() as u64;
        let bad = |detail: String| BackupError::Line {
            path: path.to_path_buf(),
            line: number,
            detail,
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| bad(e.to_string()))?;
        let Some(summary) = summary.as_mut() else {
            summary = Some(header(text).map_err(bad)?);
            hasher.update(&bytes);
            continue;
        };
        if let Ok(end) = serde_json::from_str::<End>(text) {
            let found = hex(&hasher.finalize());
            if end.end.sha256 != found {
                return Err(BackupError::Checksum {
                    path: path.to_path_buf(),
                    expected: format!("sha256 {}", end.end.sha256),
                    found: format!("sha256 {found}"),
                });
            }
            if end.end.records != summary.records {
                return Err(bad(format!(
                    "the closing line counts {} records, the file holds {}",
                    end.end.records, summary.records
                )));
            }
            let mut rest = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut rest)
                .map_err(|source| io("reading the backup", source))?;
            if !rest.is_empty() {
                return Err(bad("lines follow the closing line".into()));
            }
            summary.sha256 = found;
            summary.bytes = total;
            return Ok(summary.clone());
        }
        hasher.update(&bytes);
        let row: Row = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        summary.records += 1;
        each(check(row, summary).map_err(bad)?)?;
    }
}

/// The summary a backup's first line starts, if it is one this build reads.
fn header(text: &str) -> Result<BackupSummary, String> {
    let first: Header = serde_json::from_str(text)
        .map_err(|error| format!("not the first line of a Leasehold journal backup: {error}"))?;
    if first.leasehold_journal_backup != BACKUP_FORMAT {
        return Err(format!(
            "backup format {}, this build reads format {BACKUP_FORMAT}",
            first.leasehold_journal_backup
        ));
    }
    if first.journal_format != FORMAT_VERSION {
        return Err(format!(
            "a backup of journal format {}, this build reads format {FORMAT_VERSION}",
            first.journal_format
        ));
    }
    Ok(BackupSummary::nothing_yet(first.site, first.taken_wall_ms))
}

/// A row as it will be stored, if it is one a journal could hold.
fn check(row: Row, summary: &mut BackupSummary) -> Result<Checked, String> {
    let key_str = || {
        row.key
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{} row without a text key", row.table))
    };
    let server = |key: &str| {
        ServerId::parse(key)
            .map(|_| key.to_owned())
            .map_err(|e| format!("{} row: {e}", row.table))
    };
    let typed = |table: &'static str, ok: Result<(), serde_json::Error>| {
        ok.map_err(|error| format!("{table} row {}: {error}", row.key))
    };
    let bytes = || serde_json::to_vec(&row.value).map_err(|e| e.to_string());
    Ok(match row.table.as_str() {
        "meta" => {
            let key = key_str()?;
            let value = row
                .value
                .as_str()
                .ok_or_else(|| format!("meta row {key}: not text"))?
                .to_owned();
            if key == "epoch_floor" {
                summary.epoch_floor = value
                    .parse()
                    .map_err(|_| format!("meta row epoch_floor: `{value}` is not a number"))?;
            }
            Checked::Meta
        }
        "leases" => {
            let key = server(&key_str()?)?;
            let lease: LeaseRecord = serde_json::from_value(row.value.clone())
                .map_err(|error| format!("leases row {key}: {error}"))?;
            summary.highest_epoch = summary.highest_epoch.max(lease.epoch.value());
            summary.leases += 1;
            Checked::Json("leases", key, bytes()?)
        }
        "borrowed" => {
            let key = server(&key_str()?)?;
            typed(
                "borrowed",
                serde_json::from_value::<BorrowedRecord>(row.value.clone()).map(|_| ()),
            )?;
            Checked::Json("borrowed", key, bytes()?)
        }
        "maintenance" => {
            let key = server(&key_str()?)?;
            typed(
                "maintenance",
                serde_json::from_value::<MaintenanceRecord>(row.value.clone()).map(|_| ()),
            )?;
            Checked::Json("maintenance", key, bytes()?)
        }
        "epochs" => {
            let key = server(&key_str()?)?;
            let epoch = row
                .value
                .as_u64()
                .ok_or_else(|| format!("epochs row {key}: not a number"))?;
            summary.highest_epoch = summary.highest_epoch.max(epoch);
            Checked::Epoch(key, epoch)
        }
        "audit" => {
            let seq = row
                .key
                .as_u64()
                .ok_or_else(|| "audit row without a numeric key".to_owned())?;
            let record: AuditRecord = serde_json::from_value(row.value.clone())
                .map_err(|error| format!("audit row {seq}: {error}"))?;
            if record.seq != seq {
                return Err(format!("audit row {seq} holds record {}", record.seq));
            }
            if summary.audit_seqs.is_some_and(|(_, last)| seq <= last) {
                return Err(format!("audit row {seq} is out of order"));
            }
            summary.audit += 1;
            summary.audit_seqs = Some(
                summary
                    .audit_seqs
                    .map_or((seq, seq), |(first, _)| (first, seq)),
            );
            Checked::Audit(seq, bytes()?)
        }
        "boot_key" => {
            let key = row
                .value
                .as_str()
                .and_then(|text| STANDARD.decode(text).ok())
                .filter(|key| key.len() == 32)
                .ok_or_else(|| "boot_key row: not 32 bytes in base64".to_owned())?;
            summary.boot_key = true;
            Checked::BootKey(key)
        }
        other => return Err(format!("unknown table `{other}`")),
    })
}

/// Reads the whole backup at `path` and checks every line of it, changing nothing.
pub fn verify_backup(path: &Path) -> Result<BackupSummary, BackupError> {
    read_backup(path, |_| Ok(()))
}

/// Restores the backup at `backup` into the state directory `dir`, at wall-clock time
/// `now_us` (microseconds since 1970). Checks the whole backup first; writes the journal
/// beside the old one and renames it into place, so that a failure at any step leaves the
/// directory as it was. An existing journal is refused unless `replace`, which renames it
/// (and the boot key) aside.
pub fn restore(
    dir: &Path,
    backup: &Path,
    now_us: u64,
    replace: bool,
) -> Result<RestoreSummary, BackupError> {
    let checked = verify_backup(backup)?;
    let now_ms = now_us / 1000;
    if now_ms < checked.taken_wall_ms {
        return Err(BackupError::ClockBehind {
            now_ms,
            taken_ms: checked.taken_wall_ms,
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let target = Journal::file_in(dir);
    let existing = if target.exists() {
        let journal = Journal::open_existing(dir)?;
        let (site, audit) = journal.identity()?;
        drop(journal);
        if !replace {
            return Err(BackupError::Exists {
                path: target,
                site,
                audit,
            });
        }
        true
    } else {
        false
    };

    let staging = dir.join("journal.redb.restoring");
    let key_staging = dir.join("boot.key.restoring");
    let result = write_restored(&staging, &key_staging, backup, &checked, now_us);
    let floor = match result {
        Ok(floor) => floor,
        Err(error) => {
            let _ = std::fs::remove_file(&staging);
            let _ = std::fs::remove_file(&key_staging);
            return Err(error);
        }
    };
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|source| BackupError::Io {
            action: "renaming into place",
            path: to.to_path_buf(),
            source,
        })
    };
    let mut set_aside = None;
    let key = dir.join("boot.key");
    if existing {
        let aside = dir.join(format!("journal.redb.before-restore-{}", now_ms));
        rename(&target, &aside)?;
        if checked.boot_key && key.exists() {
            rename(
                &key,
                &dir.join(format!("boot.key.before-restore-{}", now_ms)),
            )?;
        }
        set_aside = Some(aside);
    }
    rename(&staging, &target)?;
    if checked.boot_key {
        rename(&key_staging, &key)?;
    }
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| BackupError::Io {
            action: "syncing",
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(RestoreSummary {
        backup: checked,
        epoch_floor: floor,
        set_aside,
    })
}

/// Writes the restored journal at `staging` (and the boot key at `key_staging`); returns
/// the epoch floor it set.
fn write_restored(
    staging: &Path,
    key_staging: &Path,
    backup: &Path,
    checked: &BackupSummary,
    now_us: u64,
) -> Result<u64, BackupError> {
    let _ = std::fs::remove_file(staging);
    let store = |source: redb::Error| {
        BackupError::Journal(JournalError::Store {
            path: staging.to_path_buf(),
            source,
        })
    };
    let db = Database::create(staging).map_err(|e| store(e.into()))?;
    let mut pending: Vec<Checked> = Vec::with_capacity(RESTORE_BATCH);
    let mut boot_key = None;
    let mut last_seq = 0;
    let flush = |db: &Database, rows: &mut Vec<Checked>| -> Result<(), BackupError> {
        let txn = db.begin_write().map_err(|e| store(e.into()))?;
        {
            let mut leases = txn.open_table(LEASES).map_err(|e| store(e.into()))?;
            let mut borrowed = txn.open_table(BORROWED).map_err(|e| store(e.into()))?;
            let mut maintenance = txn.open_table(MAINTENANCE).map_err(|e| store(e.into()))?;
            let mut epochs = txn.open_table(EPOCHS).map_err(|e| store(e.into()))?;
            let mut audit = txn.open_table(AUDIT).map_err(|e| store(e.into()))?;
            for row in rows.drain(..) {
                let done = match &row {
                    Checked::Json(table, key, bytes) => {
                        let table = match *table {
                            "leases" => &mut leases,
                            "borrowed" => &mut borrowed,
                            _ => &mut maintenance,
                        };
                        table.insert(key.as_str(), bytes.as_slice()).map(|_| ())
                    }
                    Checked::Epoch(key, epoch) => epochs.insert(key.as_str(), *epoch).map(|_| ()),
                    Checked::Audit(seq, bytes) => audit.insert(*seq, bytes.as_slice()).map(|_| ()),
                    // The meta table is written once, at the end, as the restore decides.
                    Checked::Meta | Checked::BootKey(_) => Ok(()),
                };
                done.map_err(|e| store(e.into()))?;
            }
        }
        txn.commit().map_err(|e| store(e.into()))
    };
    let again = read_backup(backup, |row| {
        match row {
            Checked::BootKey(key) => boot_key = Some(key),
            Checked::Audit(seq, bytes) => {
                last_seq = seq;
                pending.push(Checked::Audit(seq, bytes));
            }
            other => pending.push(other),
        }
        if pending.len() >= RESTORE_BATCH {
            flush(&db, &mut pending)?;
        }
        Ok(())
    })?;
    if again.sha256 != checked.sha256 {
        return Err(BackupError::Changed {
            path: backup.to_path_buf(),
        });
    }
    flush(&db, &mut pending)?;

    // Above the clock (the argument in docs/operations.md), and above anything the backup
    // itself records, should a clock have run fast before.
    let floor = now_us
        .max(checked.highest_epoch.saturating_add(1))
        .max(checked.epoch_floor.saturating_add(1));
    let txn = db.begin_write().map_err(|e| store(e.into()))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| store(e.into()))?;
        let restored = serde_json::json!({
            "backup_taken_wall_ms": checked.taken_wall_ms,
            "backup_sha256": checked.sha256,
            "restored_wall_ms": now_us / 1000,
        });
        for (key, value) in [
            ("site", checked.site.to_string()),
            ("format", FORMAT_VERSION.to_owned()),
            // No running set: the site joins the members its peers run.
            ("members", String::new()),
            ("epoch_floor", floor.to_string()),
            ("restored", restored.to_string()),
        ] {
            meta.insert(key, value.as_str())
                .map_err(|e| store(e.into()))?;
        }
        let mut audit = txn.open_table(AUDIT).map_err(|e| store(e.into()))?;
        let record = AuditRecord {
            seq: last_seq + 1,
            wall_ms: now_us / 1000,
            mono_ns: 0,
            entry: AuditEntry::site_wide(
                AuditKind::JournalRestored,
                format!(
                    "journal restored from a backup taken at {} (sha256 {}, {} audit records); leases from now on get epochs above {floor}; the site rejoins the members its peers run",
                    rfc3339(checked.taken_wall_ms),
                    checked.sha256,
                    checked.audit
                ),
            ),
        };
        let bytes = serde_json::to_vec(&record).map_err(|error| JournalError::Record {
            path: staging.to_path_buf(),
            key: format!("audit/{}", record.seq),
            detail: error.to_string(),
        })?;
        audit
            .insert(record.seq, bytes.as_slice())
            .map_err(|e| store(e.into()))?;
        // The tables a journal opens, present even when the backup had no row of them.
        txn.open_table(LEASES).map_err(|e| store(e.into()))?;
        txn.open_table(BORROWED).map_err(|e| store(e.into()))?;
        txn.open_table(MAINTENANCE).map_err(|e| store(e.into()))?;
        txn.open_table(EPOCHS).map_err(|e| store(e.into()))?;
    }
    txn.commit().map_err(|e| store(e.into()))?;
    drop(db);

    if let Some(key) = boot_key {
        let _ = std::fs::remove_file(key_staging);
        let io = |source| BackupError::Io {
            action: "writing",
            path: key_staging.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key_staging)
            .map_err(io)?;
        file.write_all(&key).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    Ok(floor)
}
