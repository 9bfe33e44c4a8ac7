//! The gateway's durable state in an embedded store (redb): leases, each server's highest
//! epoch, and the audit log. Written before the gateway acts (invariant D-1), read back
//! on start. Blocking: the `Journal` actor runs it on its own thread.
//!
//! Stored format version 1: values are JSON with a `v` field, so that a later version can
//! read this one and migrate (see docs/decisions.md).
//!
//! `backup.rs` copies a journal to a file and restores one from it; `retention.rs` removes
//! old audit records and gives freed space back.

mod backup;
#[cfg(test)]
mod backup_tests;
mod retention;
pub use retention::Pruned;

pub use backup::{
    BackupError, BackupSummary, RestoreSummary, restore, rfc3339, verify_backup, write_backup,
};

use std::path::{Path, PathBuf};

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::model::effects::{AuditEntry, JournalOp, LoanHolder, MaintenanceRecord};
use crate::model::site::{BorrowRecord, Recovered};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
const EPOCHS: TableDefinition<&str, u64> = TableDefinition::new("epochs");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Servers peers lent us, by server id.
const BORROWED: TableDefinition<&str, &[u8]> = TableDefinition::new("borrowed");
/// Servers in maintenance: server id -> `MaintenanceRecord` (JSON).
const MAINTENANCE: TableDefinition<&str, &[u8]> = TableDefinition::new("maintenance");
/// `meta` keys of the terms this site came to own accounts under: `term/<account>`.
const TERM_PREFIX: &str = "term/";
/// Just past every `term/` key (`0` follows `/`).
const TERM_END: &str = "term0";

const FORMAT_VERSION: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "journal {path} is in use by another process (a gateway of this site still running, or still exiting): stop it, or wait for it to exit, then start again"
    )]
    InUse { path: PathBuf },
    #[error("journal {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error(
        "journal {path} belongs to site `{found}`, not `{expected}`: point --state at this site's own directory"
    )]
    OtherSite {
        path: PathBuf,
        found: String,
        expected: SiteId,
    },
    #[error(
        "there is no journal at {path}: give --state, the gateway's state directory (the one it was started with)"
    )]
    Missing { path: PathBuf },
    #[error("journal {path} has format {found}, this build reads format {FORMAT_VERSION}")]
    Format { path: PathBuf, found: String },
    #[error("journal {path}: record {key} is unreadable: {detail}")]
    Record {
        path: PathBuf,
        key: String,
        detail: String,
    },
    /// The site's journal in etcd (docs/ha.md).
    #[error(transparent)]
    Shared(#[from] crate::ha::StoreError),
    #[error(
        "this gateway no longer acts for its site (its etcd lease could have ended): it writes nothing"
    )]
    NotActing,
    #[error(
        "the site's journal is in etcd, shared by its gateways: back it up with etcd's own `etcdctl snapshot save` (docs/ha.md)"
    )]
    BackupOfEtcd,
}

/// A lease as the journal keeps it, in redb and in etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    pub(crate) v: u32,
    pub(crate) account: AccountId,
    pub(crate) epoch: Epoch,
    /// A loan to a peer site (absent in records written before loans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lent_to: Option<Box<LoanHolder>>,
}

/// A borrowed server as the journal keeps it, in redb and in etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BorrowedRecord {
    pub(crate) v: u32,
    #[serde(flatten)]
    pub(crate) record: BorrowRecord,
}

/// One audit log entry as stored and served by `/v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub wall_ms: u64,
    /// CLOCK_MONOTONIC when the record was written (before any command of its batch went
    /// out), comparable with the node event logs' `mono_ns` on one machine; 0 in records
    /// written before it was added.
    #[serde(default)]
    pub mono_ns: u64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

pub struct Journal {
    db: Database,
    path: PathBuf,
    next_seq: u64,
    /// A planted bug, in debug builds only (chaos tests, `LEASEHOLD_TEST_PLANT=
    /// drop-journal-write`): lease grants are not written, yet `persist` reports success.
    #[cfg(debug_assertions)]
    plant_drop_lease_grants: bool,
}

impl Journal {
    /// The journal's file in the state directory `dir`.
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join("journal.redb")
    }

    /// Opens (or creates) `dir/journal.redb` for `site` and reads back what it holds.
    pub fn open(dir: &Path, site: &SiteId) -> Result<(Journal, Recovered), JournalError> {
        std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = Journal::file_in(dir);
        let opened = Database::create(&path);
        let journal = Journal::over(path, opened)?;
        let new_journal = journal.claim(site)?;
        let (mut recovered, next_seq) = journal.read_back()?;
        recovered.new_journal = new_journal;
        Ok((
            Journal {
                next_seq,
                ..journal
            },
            recovered,
        ))
    }

    /// Opens the journal already in `dir` without claiming it or reading it back (backup,
    /// restore, compaction): refused if there is none, or while a gateway holds it.
    pub fn open_existing(dir: &Path) -> Result<Journal, JournalError> {
        let path = Journal::file_in(dir);
        if !path.exists() {
            return Err(JournalError::Missing { path });
        }
        let opened = Database::open(&path);
        let journal = Journal::over(path, opened)?;
        let next_seq = journal.last_seq()?.map_or(1, |last| last + 1);
        Ok(Journal {
            next_seq,
            ..journal
        })
    }

    /// The journal over the database at `path` as redb opened it (a database in use by
    /// another gateway named as such), numbering audit records from 1 until read back.
    fn over(
        path: PathBuf,
        opened: Result<Database, redb::DatabaseError>,
    ) -> Result<Journal, JournalError> {
        let db = opened.map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => JournalError::InUse { path: path.clone() },
            other => JournalError::Store {
                path: path.clone(),
                source: other.into(),
            },
        })?;
        Ok(Journal {
            db,
            path,
            next_seq: 1,
            #[cfg(debug_assertions)]
            plant_drop_lease_grants: false,
        })
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The site the journal belongs to, and how many audit records it holds.
    pub fn identity(&self) -> Result<(String, u64), JournalError> {
        let txn = self.db.begin_read().map_err(|e| self.store_error(e))?;
        let meta = txn.open_table(META).map_err(|e| self.store_error(e))?;
        let site = meta
            .get("site")
            .map_err(|e| self.store_error(e))?
            .map(|value| value.value().to_owned())
            .unwrap_or_default();
        let audit = txn.open_table(AUDIT).map_err(|e| self.store_error(e))?;
        let count = audit.len().map_err(|e| self.store_error(e))?;
        Ok((site, count))
    }

    /// A consistent view of the whole journal as it is now; writes go on beside it (a
    /// backup reads it on another thread).
    pub fn snapshot(&self) -> Result<redb::ReadTransaction, JournalError> {
        self.db.begin_read().map_err(|e| self.store_error(e))
    }

    fn last_seq(&self) -> Result<Option<u64>, JournalError> {
        let txn = self.db.begin_read().map_err(|e| self.store_error(e))?;
        let audit = txn.open_table(AUDIT).map_err(|e| self.store_error(e))?;
        let last = audit.last().map_err(|e| self.store_error(e))?;
        Ok(last.map(|(key, _)| key.value()))
    }

    /// Plants the bug that drops lease grants from every write (debug builds only).
    #[cfg(debug_assertions)]
    pub fn plant_drop_lease_grants(&mut self) {
        self.plant_drop_lease_grants = true;
    }

    fn store_error(&self, source: impl Into<redb::Error>) -> JournalError {
        JournalError::Store {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    /// Marks a new journal as this site's, and refuses another site's. True for a new
    /// journal.
    fn claim(&self, site: &SiteId) -> Result<bool, JournalError> {
        let txn = self.db.begin_write().map_err(|e| self.store_error(e))?;
        let new_journal;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.store_error(e))?;
            let existing = meta
                .get("site")
                .map_err(|e| self.store_error(e))?
                .map(|value| value.value().to_owned());
            new_journal = existing.is_none();
            match existing {
                Some(found) if found != site.as_str() => {
                    return Err(JournalError::OtherSite {
                        path: self.path.clone(),
                        found,
                        expected: site.clone(),
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("site", site.as_str())
                        .map_err(|e| self.store_error(e))?;
                    meta.insert("format", FORMAT_VERSION)
                        .map_err(|e| self.store_error(e))?;
                }
            }
            let format = meta
                .get("format")
                .map_err(|e| self.store_error(e))?
                .map(|value| value.value().to_owned())
                .unwrap_or_default();
            if format != FORMAT_VERSION {
                return Err(JournalError::Format {
                    path: self.path.clone(),
                    found: format,
                });
            }
            txn.open_table(LEASES).map_err(|e| self.store_error(e))?;
            txn.open_table(EPOCHS).map_err(|e| self.store_error(e))?;
            txn.open_table(AUDIT).map_err(|e| self.store_error(e))?;
            txn.open_table(BORROWED).map_err(|e| self.store_error(e))?;
            txn.open_table(MAINTENANCE)
                .map_err(|e| self.store_error(e))?;
        }
        txn.commit().map_err(|e| self.store_error(e))?;
        Ok(new_journal)
    }

    fn read_back(&self) -> Result<(Recovered, u64), JournalError> {
        let txn = self.db.begin_read().map_err(|e| self.store_error(e))?;
        let mut recovered = Recovered::default();
        let leases = txn.open_table(LEASES).map_err(|e| self.store_error(e))?;
        for row in leases.iter().map_err(|e| self.store_error(e))? {
            let (key, value) = row.map_err(|e| self.store_error(e))?;
            let server = self.parse_server(key.value())?;
            let record: LeaseRecord =
                serde_json::from_slice(value.value()).map_err(|error| JournalError::Record {
                    path: self.path.clone(),
                    key: format!("leases/{server}"),
                    detail: error.to_string(),
                })?;
            if let Some(holder) = record.lent_to {
                recovered.lent.push((server.clone(), *holder));
            }
            recovered
                .leases
                .push((server, record.account, record.epoch));
        }
        let borrowed = txn.open_table(BORROWED).map_err(|e| self.store_error(e))?;
        for row in borrowed.iter().map_err(|e| self.store_error(e))? {
            let (key, value) = row.map_err(|e| self.store_error(e))?;
            let record: BorrowedRecord =
                serde_json::from_slice(value.value()).map_err(|error| JournalError::Record {
                    path: self.path.clone(),
                    key: format!("borrowed/{}", key.value()),
                    detail: error.to_string(),
                })?;
            recovered.borrowed.push(record.record);
        }
        let epochs = txn.open_table(EPOCHS).map_err(|e| self.store_error(e))?;
        for row in epochs.iter().map_err(|e| self.store_error(e))? {
            let (key, value) = row.map_err(|e| self.store_error(e))?;
            let server = self.parse_server(key.value())?;
            recovered
                .epochs
                .push((server, Epoch::from_journal(value.value())));
        }
        let maintenance = txn
            .open_table(MAINTENANCE)
            .map_err(|e| self.store_error(e))?;
        for row in maintenance.iter().map_err(|e| self.store_error(e))? {
            let (key, value) = row.map_err(|e| self.store_error(e))?;
            let server = self.parse_server(key.value())?;
            let record: MaintenanceRecord =
                serde_json::from_slice(value.value()).map_err(|error| JournalError::Record {
                    path: self.path.clone(),
                    key: format!("maintenance/{server}"),
                    detail: error.to_string(),
                })?;
            recovered.maintenance.push((server, record));
        }
        let meta = txn.open_table(META).map_err(|e| self.store_error(e))?;
        if let Some(floor) = meta.get("epoch_floor").map_err(|e| self.store_error(e))? {
            let floor = floor
                .value()
                .parse::<u64>()
                .map_err(|error| JournalError::Record {
                    path: self.path.clone(),
                    key: "meta/epoch_floor".into(),
                    detail: error.to_string(),
                })?;
            recovered.epoch_floor = Epoch::from_journal(floor);
        }
        for entry in meta
            .range(TERM_PREFIX..TERM_END)
            .map_err(|e| self.store_error(e))?
        {
            let (key, value) = entry.map_err(|e| self.store_error(e))?;
            let key = key.value();
            let unreadable = |detail: String| JournalError::Record {
                path: self.path.clone(),
                key: format!("meta/{key}"),
                detail,
            };
            let account = AccountId::parse(&key[TERM_PREFIX.len()..])
                .map_err(|error| unreadable(error.to_string()))?;
            let term = value
                .value()
                .parse::<u64>()
                .map_err(|error| unreadable(error.to_string()))?;
            recovered
                .terms
                .push((account, leasehold_federation::ids::Term::from_journal(term)));
        }
        if let Some(members) = meta.get("members").map_err(|e| self.store_error(e))? {
            let mut running = Vec::new();
            for name in members.value().split(',').filter(|name| !name.is_empty()) {
                running.push(SiteId::parse(name).map_err(|error| JournalError::Record {
                    path: self.path.clone(),
                    key: "meta/members".into(),
                    detail: error.to_string(),
                })?);
            }
            recovered.members = Some(running);
        }
        let next_seq = self.last_seq()?.map_or(1, |last| last + 1);
        Ok((recovered, next_seq))
    }

    /// A record as stored; an encoding failure is an error, never an empty value.
    fn encode(&self, record: &impl Serialize, key: &str) -> Result<Vec<u8>, JournalError> {
        serde_json::to_vec(record).map_err(|error| JournalError::Record {
            path: self.path.clone(),
            key: key.to_owned(),
            detail: error.to_string(),
        })
    }

    fn parse_server(&self, key: &str) -> Result<ServerId, JournalError> {
        ServerId::parse(key).map_err(|error| JournalError::Record {
            path: self.path.clone(),
            key: key.to_owned(),
            detail: error.to_string(),
        })
    }

    /// Makes `ops` and `audits` durable in one transaction; returns the audit records as
    /// numbered.
    pub fn persist(
        &mut self,
        ops: &[JournalOp],
        audits: &[AuditEntry],
        wall_ms: u64,
    ) -> Result<Vec<AuditRecord>, JournalError> {
        let mono_ns = mono_now_ns();
        let txn = self.db.begin_write().map_err(|e| self.store_error(e))?;
        let mut records = Vec::with_capacity(audits.len());
        {
            let mut leases = txn.open_table(LEASES).map_err(|e| self.store_error(e))?;
            let mut epochs = txn.open_table(EPOCHS).map_err(|e| self.store_error(e))?;
            let mut borrowed = txn.open_table(BORROWED).map_err(|e| self.store_error(e))?;
            for op in ops {
                #[cfg(debug_assertions)]
                if self.plant_drop_lease_grants && matches!(op, JournalOp::LeaseGranted { .. }) {
                    continue;
                }
                match op {
                    JournalOp::LeaseGranted {
                        server,
                        account,
                        epoch,
                        lent_to,
                    } => {
                        let record = LeaseRecord {
                            v: 1,
                            account: account.clone(),
                            epoch: *epoch,
                            lent_to: lent_to.clone(),
                        };
                        let bytes = self.encode(&record, &format!("leases/{server}"))?;
                        leases
                            .insert(server.as_str(), bytes.as_slice())
                            .map_err(|e| self.store_error(e))?;
                        raise(&mut epochs, server, *epoch).map_err(|e| self.store_error(e))?;
                    }
                    JournalOp::LeaseEnded { server, epoch } => {
                        let current = leases
                            .get(server.as_str())
                            .map_err(|e| self.store_error(e))?
                            .and_then(|value| {
                                serde_json::from_slice::<LeaseRecord>(value.value()).ok()
                            });
                        // Only the lease it names: a late end of an older lease must not
                        // erase the newer one.
                        if current.is_some_and(|record| record.epoch == *epoch) {
                            leases
                                .remove(server.as_str())
                                .map_err(|e| self.store_error(e))?;
                        }
                    }
                    JournalOp::EpochSeen { server, epoch } => {
                        raise(&mut epochs, server, *epoch).map_err(|e| self.store_error(e))?;
                    }
                    JournalOp::Borrowed {
                        server,
                        lender,
                        account,
                        epoch,
                        service_addr,
                    } => {
                        let record = BorrowedRecord {
                            v: 1,
                            record: BorrowRecord {
                                server: server.clone(),
                                lender: lender.clone(),
                                account: account.clone(),
                                epoch: *epoch,
                                service_addr: service_addr.clone(),
                            },
                        };
                        let bytes = self.encode(&record, &format!("borrowed/{server}"))?;
                        borrowed
                            .insert(server.as_str(), bytes.as_slice())
                            .map_err(|e| self.store_error(e))?;
                    }
                    JournalOp::Maintenance { server, record } => {
                        let mut table = txn
                            .open_table(MAINTENANCE)
                            .map_err(|e| self.store_error(e))?;
                        match record {
                            Some(record) => {
                                let bytes =
                                    self.encode(record, &format!("maintenance/{server}"))?;
                                table
                                    .insert(server.as_str(), bytes.as_slice())
                                    .map_err(|e| self.store_error(e))?;
                            }
                            None => {
                                table
                                    .remove(server.as_str())
                                    .map_err(|e| self.store_error(e))?;
                            }
                        }
                    }
                    JournalOp::Members { running } => {
                        let names: Vec<&str> = running.iter().map(SiteId::as_str).collect();
                        let mut meta = txn.open_table(META).map_err(|e| self.store_error(e))?;
                        meta.insert("members", names.join(",").as_str())
                            .map_err(|e| self.store_error(e))?;
                    }
                    JournalOp::Owned { account, term } => {
                        let mut meta = txn.open_table(META).map_err(|e| self.store_error(e))?;
                        let key = format!("{TERM_PREFIX}{account}");
                        meta.insert(key.as_str(), term.value().to_string().as_str())
                            .map_err(|e| self.store_error(e))?;
                    }
                    JournalOp::BorrowEnded { server, epoch } => {
                        let current = borrowed
                            .get(server.as_str())
                            .map_err(|e| self.store_error(e))?
                            .and_then(|value| {
                                serde_json::from_slice::<BorrowedRecord>(value.value()).ok()
                            });
                        if current.is_some_and(|current| current.record.epoch == *epoch) {
                            borrowed
                                .remove(server.as_str())
                                .map_err(|e| self.store_error(e))?;
                        }
                    }
                }
            }
            let mut audit = txn.open_table(AUDIT).map_err(|e| self.store_error(e))?;
            for entry in audits {
                let record = AuditRecord {
                    seq: self.next_seq + records.len() as u64,
                    wall_ms,
                    mono_ns,
                    entry: entry.clone(),
                };
                let bytes = self.encode(&record, &format!("audit/{}", record.seq))?;
                audit
                    .insert(record.seq, bytes.as_slice())
                    .map_err(|e| self.store_error(e))?;
                records.push(record);
            }
        }
        txn.commit().map_err(|e| self.store_error(e))?;
        self.next_seq += records.len() as u64;
        Ok(records)
    }

    /// Audit records with `seq > after`, oldest first, at most `limit`.
    pub fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, JournalError> {
        let txn = self.db.begin_read().map_err(|e| self.store_error(e))?;
        let audit = txn.open_table(AUDIT).map_err(|e| self.store_error(e))?;
        let mut records = Vec::new();
        for row in audit
            .range(after.saturating_add(1)..)
            .map_err(|e| self.store_error(e))?
            .take(limit)
        {
            let (key, value) = row.map_err(|e| self.store_error(e))?;
            let record =
                serde_json::from_slice(value.value()).map_err(|error| JournalError::Record {
                    path: self.path.clone(),
                    key: format!("audit/{}", key.value()),
                    detail: error.to_string(),
                })?;
            records.push(record);
        }
        Ok(records)
    }

    /// The newest `limit` audit records, oldest first.
    pub fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>, JournalError> {
        let after = self.next_seq.saturating_sub(limit as u64 + 1);
        self.audit_after(after, limit)
    }
}

/// Epochs only grow (S-2): a write never lowers a server's highest epoch.
fn raise(
    epochs: &mut redb::Table<&str, u64>,
    server: &ServerId,
    epoch: Epoch,
) -> Result<(), redb::StorageError> {
    let current = epochs.get(server.as_str())?.map(|value| value.value());
    if current.is_none_or(|current| current < epoch.value()) {
        epochs.insert(server.as_str(), epoch.value())?;
    }
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds, system-wide (0 if it cannot be read).
pub(crate) fn mono_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .ok()
        .and_then(|now| {
            let nanos = i128::from(now.tv_sec()) * 1_000_000_000 + i128::from(now.tv_nsec());
            u64::try_from(nanos).ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::effects::AuditKind;

    fn server(id: &str) -> ServerId {
        ServerId::parse(id).unwrap()
    }

    fn account(id: &str) -> AccountId {
        AccountId::parse(id).unwrap()
    }

    /// The running members, and "none" (a site that stepped out), survive a reopen; a
    /// journal that never recorded them says so.
    #[test]
    fn maintenance_survives_a_reopen_and_is_removed_when_over() {
        let dir = tempfile::tempdir().unwrap();
        let site = SiteId::parse("site-a").unwrap();
        let server = ServerId::parse("a1").unwrap();
        let record = MaintenanceRecord {
            by: "alice".to_owned(),
            reason: "a disk".to_owned(),
            since_wall_ms: 7,
            force: false,
        };
        {
            let (mut journal, _) = Journal::open(dir.path(), &site).unwrap();
            journal
                .persist(
                    &[JournalOp::Maintenance {
                        server: server.clone(),
                        record: Some(record.clone()),
                    }],
                    &[],
                    0,
                )
                .unwrap();
        }
        {
            let (mut journal, recovered) = Journal::open(dir.path(), &site).unwrap();
            assert_eq!(recovered.maintenance, vec![(server.clone(), record)]);
            journal
                .persist(
                    &[JournalOp::Maintenance {
                        server: server.clone(),
                        record: None,
                    }],
                    &[],
                    0,
                )
                .unwrap();
        }
        let (_, recovered) = Journal::open(dir.path(), &site).unwrap();
        assert!(recovered.maintenance.is_empty());
    }

    #[test]
    fn the_members_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let site = SiteId::parse("site-a").unwrap();
        let sites = |names: &[&str]| -> Vec<SiteId> {
            names
                .iter()
                .map(|name| SiteId::parse(name).unwrap())
                .collect()
        };
        {
            let (mut journal, recovered) = Journal::open(dir.path(), &site).unwrap();
            assert_eq!((recovered.members, recovered.new_journal), (None, true));
            let running = sites(&["site-a", "site-b"]);
            journal
                .persist(&[JournalOp::Members { running }], &[], 0)
                .unwrap();
        }
        {
            let (mut journal, recovered) = Journal::open(dir.path(), &site).unwrap();
            assert!(!recovered.new_journal);
            assert_eq!(recovered.members, Some(sites(&["site-a", "site-b"])));
            journal
                .persist(
                    &[JournalOp::Members {
                        running: Vec::new(),
                    }],
                    &[],
                    0,
                )
                .unwrap();
        }
        let (_, recovered) = Journal::open(dir.path(), &site).unwrap();
        assert_eq!(recovered.members, Some(Vec::new()));
    }

    #[test]
    fn leases_and_epochs_survive_a_reopen_and_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let site = SiteId::parse("site-a").unwrap();
        let e1 = Epoch::NONE.next();
        let e2 = e1.next();
        {
            let (mut journal, recovered) = Journal::open(dir.path(), &site).unwrap();
            assert_eq!(
                recovered,
                Recovered {
                    new_journal: true,
                    ..Recovered::default()
                }
            );
            let granted = |epoch| JournalOp::LeaseGranted {
                server: server("a1"),
                account: account("shop"),
                epoch,
                lent_to: None,
            };
            journal
                .persist(&[granted(e1), granted(e2)], &[], 0)
                .unwrap();
            // A late end of the older lease leaves the newer one in place.
            journal
                .persist(
                    &[JournalOp::LeaseEnded {
                        server: server("a1"),
                        epoch: e1,
                    }],
                    &[],
                    0,
                )
                .unwrap();
            journal
                .persist(
                    &[JournalOp::EpochSeen {
                        server: server("a2"),
                        epoch: e2,
                    }],
                    &[],
                    0,
                )
                .unwrap();
        }
        let (_, recovered) = Journal::open(dir.path(), &site).unwrap();
        assert_eq!(recovered.leases, vec![(server("a1"), account("shop"), e2)]);
        assert_eq!(
            recovered.epochs,
            vec![(server("a1"), e2), (server("a2"), e2)]
        );
    }

    #[test]
    fn loans_survive_a_reopen_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let site = SiteId::parse("site-b").unwrap();
        let borrower = SiteId::parse("site-a").unwrap();
        let e1 = Epoch::NONE.next();
        let holder = LoanHolder {
            borrower: borrower.clone(),
            spec: crate::model::fixtures::spec("shop", "site-a", &[]),
        };
        let borrowed = |name: &str, epoch| JournalOp::Borrowed {
            server: server(name),
            lender: SiteId::parse("site-c").unwrap(),
            account: account("wiki"),
            epoch,
            service_addr: "127.0.0.1:8301".into(),
        };
        {
            let (mut journal, _) = Journal::open(dir.path(), &site).unwrap();
            journal
                .persist(
                    &[
                        JournalOp::LeaseGranted {
                            server: server("b1"),
                            account: account("shop"),
                            epoch: e1,
                            lent_to: Some(Box::new(holder.clone())),
                        },
                        borrowed("c1", e1),
                        borrowed("c2", e1),
                        // Only the loan it names ends: a late end of an older one does not.
                        JournalOp::BorrowEnded {
                            server: server("c1"),
                            epoch: e1,
                        },
                        JournalOp::BorrowEnded {
                            server: server("c2"),
                            epoch: Epoch::NONE,
                        },
                    ],
                    &[],
                    0,
                )
                .unwrap();
        }
        let (_, recovered) = Journal::open(dir.path(), &site).unwrap();
        assert_eq!(recovered.leases, vec![(server("b1"), account("shop"), e1)]);
        assert_eq!(recovered.lent, vec![(server("b1"), holder)]);
        let servers: Vec<&str> = recovered
            .borrowed
            .iter()
            .map(|record| record.server.as_str())
            .collect();
        assert_eq!(servers, vec!["c2"]);
    }

    #[test]
    fn a_journal_in_use_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let site = SiteId::parse("site-a").unwrap();
        let (_open, _) = Journal::open(dir.path(), &site).unwrap();
        let Err(error) = Journal::open(dir.path(), &site) else {
            panic!("a second open of the same journal succeeded");
        };
        let text = error.to_string();
        assert!(matches!(error, JournalError::InUse { .. }), "{text}");
        assert!(text.contains("wait for it to exit"), "{text}");
    }

    #[test]
    fn audit_records_are_numbered_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let site = SiteId::parse("site-a").unwrap();
        let entry = AuditEntry {
            kind: AuditKind::Assign,
            server: Some(server("a1")),
            account: Some(account("shop")),
            from: None,
            epoch: None,
            peer: None,
            term: None,
            reason: "test".into(),
        };
        {
            let (mut journal, _) = Journal::open(dir.path(), &site).unwrap();
            let records = journal
                .persist(&[], &[entry.clone(), entry.clone()], 5)
                .unwrap();
            assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        }
        let (mut journal, _) = Journal::open(dir.path(), &site).unwrap();
        let records = journal.persist(&[], &[entry], 6).unwrap();
        assert_eq!(records[0].seq, 3);
        assert_eq!(journal.audit_after(1, 10).unwrap().len(), 2);
        assert_eq!(journal.audit_tail(1).unwrap()[0].seq, 3);
    }

    #[test]
    fn another_sites_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Journal::open(dir.path(), &SiteId::parse("site-a").unwrap()).unwrap();
        let error = Journal::open(dir.path(), &SiteId::parse("site-b").unwrap())
            .err()
            .unwrap();
        assert!(matches!(error, JournalError::OtherSite { .. }), "{error}");
    }
}
