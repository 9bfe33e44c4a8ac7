//! Keeping the journal's size bounded: audit records older than the retention are removed
//! (oldest first, in batches, each removal itself audited), and `compact` gives the space
//! they held back to the file system. Leases, epochs, loans and maintenance are state, not
//! history: they are never pruned.

use redb::{ReadableDatabase, ReadableTable};

use super::{AUDIT, AuditRecord, Journal, JournalError};
use crate::model::effects::{AuditEntry, AuditKind};

/// What one pruning removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
}

impl Pruned {
    /// What removing the records numbered `seqs` (oldest first) removes; `None` for none.
    pub(crate) fn of(seqs: &[u64]) -> Option<Pruned> {
        let (Some(&first_seq), Some(&last_seq)) = (seqs.first(), seqs.last()) else {
            return None;
        };
        Some(Pruned {
            first_seq,
            last_seq,
            count: seqs.len() as u64,
        })
    }

    /// The audit record of the removal.
    pub(crate) fn audit(&self, why: &str) -> AuditEntry {
        AuditEntry::site_wide(
            AuditKind::AuditPruned,
            format!(
                "{} audit records removed, {} to {}: {why}",
                self.count, self.first_seq, self.last_seq
            ),
        )
    }
}

impl Journal {
    /// Removes up to `batch` of the oldest audit records written before `cutoff_wall_ms`,
    /// and records that it did (`audit_pruned`, `why` in its reason), in one transaction.
    /// `None` when nothing was that old.
    pub fn prune_audit(
        &mut self,
        cutoff_wall_ms: u64,
        batch: usize,
        wall_ms: u64,
        why: &str,
    ) -> Result<Option<Pruned>, JournalError> {
        let old = {
            let txn = self.db.begin_read().map_err(|e| self.store_error(e))?;
            let audit = txn.open_table(AUDIT).map_err(|e| self.store_error(e))?;
            let mut old = Vec::new();
            for row in audit.iter().map_err(|e| self.store_error(e))?.take(batch) {
                let (key, value) = row.map_err(|e| self.store_error(e))?;
                let record: AuditRecord =
                    serde_json::from_slice(value.value()).map_err(|error| {
                        JournalError::Record {
                            path: self.path.clone(),
                            key: format!("audit/{}", key.value()),
                            detail: error.to_string(),
                        }
                    })?;
                // Records are numbered in the order they were written: the first one young
                // enough ends the run (a clock step back may leave an older one after it,
                // removed on a later day).
                if record.wall_ms >= cutoff_wall_ms {
                    break;
                }
                old.push(key.value());
            }
            old
        };
        let Some(pruned) = Pruned::of(&old) else {
            return Ok(None);
        };
        let entry = pruned.audit(why);
        let record = AuditRecord {
            seq: self.next_seq,
            wall_ms,
            mono_ns: super::mono_now_ns(),
            entry,
        };
        let bytes = self.encode(&record, &format!("audit/{}", record.seq))?;
        let txn = self.db.begin_write().map_err(|e| self.store_error(e))?;
        {
            let mut audit = txn.open_table(AUDIT).map_err(|e| self.store_error(e))?;
            for seq in &old {
                audit.remove(*seq).map_err(|e| self.store_error(e))?;
            }
            audit
                .insert(record.seq, bytes.as_slice())
                .map_err(|e| self.store_error(e))?;
        }
        txn.commit().map_err(|e| self.store_error(e))?;
        self.next_seq += 1;
        Ok(Some(pruned))
    }

    /// Gives the space of removed records back to the file system. Blocks writes while it
    /// runs; refused while a snapshot (a backup) is open.
    pub fn compact(&mut self) -> Result<bool, JournalError> {
        self.db.compact().map_err(|e| self.store_error(e))
    }
}
