//! The journal actor: runs on an arbiter (thread) of its own, because every write waits
//! for fsync. Requests are served in order, which is what lets the master rely on "the
//! commands of a batch go out after that batch, and every earlier batch, is durable".
//! It also removes audit records past their retention, a batch at a time so that writes
//! wait behind no more than one batch, and opens snapshots for backups.

use std::time::Duration;

use actix::prelude::*;

use std::sync::Arc;

use crate::ha::{Elector, EtcdJournal};
use crate::journal::{AuditRecord, Journal, JournalError, Pruned};
use crate::model::effects::{AuditEntry, JournalOp};

/// How often old audit records are looked for; retention is counted in days.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Records removed per transaction.
const PRUNE_BATCH: usize = 5_000;

pub struct JournalWriter {
    journal: SiteJournal,
    /// `journal.audit_retention_days`, in days.
    retention_days: u32,
}

/// Where the site's journal is: a redb file of this gateway's, or etcd shared by the
/// site's gateways, written only while this one acts (docs/ha.md).
pub enum SiteJournal {
    Redb(Journal),
    Etcd {
        journal: EtcdJournal,
        election: Arc<Elector>,
    },
}

impl SiteJournal {
    fn persist(
        &mut self,
        ops: &[JournalOp],
        audits: &[AuditEntry],
        wall_ms: u64,
    ) -> Result<Vec<AuditRecord>, JournalError> {
        match self {
            SiteJournal::Redb(journal) => {
                if ops.is_empty() && audits.is_empty() {
                    return Ok(Vec::new());
                }
                journal.persist(ops, audits, wall_ms)
            }
            // Asked even with nothing to write: a batch of commands or peer messages alone
            // goes out only if this gateway still acts.
            SiteJournal::Etcd { journal, election } => {
                let generation = election.acting().ok_or(JournalError::NotActing)?;
                if ops.is_empty() && audits.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(journal.persist(generation, ops, audits, wall_ms)?)
            }
        }
    }

    fn prune_audit(
        &mut self,
        cutoff: u64,
        now: u64,
        why: &str,
    ) -> Result<Option<Pruned>, JournalError> {
        match self {
            SiteJournal::Redb(journal) => journal.prune_audit(cutoff, PRUNE_BATCH, now, why),
            SiteJournal::Etcd { journal, election } => {
                let generation = election.acting().ok_or(JournalError::NotActing)?;
                Ok(journal.prune_audit(generation, cutoff, PRUNE_BATCH, now, why)?)
            }
        }
    }
}

impl JournalWriter {
    pub fn new(journal: SiteJournal, retention_days: u32) -> Self {
        JournalWriter {
            journal,
            retention_days,
        }
    }
}

impl Actor for JournalWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(PruneAudit);
        ctx.run_interval(PRUNE_EVERY, |_, ctx| ctx.notify(PruneAudit));
    }
}

/// Remove one batch of audit records past their retention; another follows at once while
/// there are more.
#[derive(Message)]
#[rtype(result = "()")]
struct PruneAudit;

impl Handler<PruneAudit> for JournalWriter {
    type Result = ();

    fn handle(&mut self, _: PruneAudit, ctx: &mut Context<Self>) {
        let now = super::wall_ms();
        let cutoff = now.saturating_sub(u64::from(self.retention_days) * 86_400_000);
        let why = format!(
            "older than {} days (journal.audit_retention_days)",
            self.retention_days
        );
        match self.journal.prune_audit(cutoff, now, &why) {
            Ok(Some(pruned)) => {
                tracing::info!(
                    first = pruned.first_seq,
                    last = pruned.last_seq,
                    count = pruned.count,
                    "audit records past their retention removed"
                );
                if pruned.count == PRUNE_BATCH as u64 {
                    ctx.notify(PruneAudit);
                }
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "removing old audit records failed"),
        }
    }
}

/// A consistent view of the journal for a backup, read on another thread while writes go
/// on.
#[derive(Message)]
#[rtype(result = "Result<redb::ReadTransaction, JournalError>")]
pub struct Snapshot;

impl Handler<Snapshot> for JournalWriter {
    type Result = Result<redb::ReadTransaction, JournalError>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        match &self.journal {
            SiteJournal::Redb(journal) => journal.snapshot(),
            SiteJournal::Etcd { .. } => Err(JournalError::BackupOfEtcd),
        }
    }
}

/// Make these durable, in one transaction.
#[derive(Message)]
#[rtype(result = "Result<Vec<AuditRecord>, JournalError>")]
pub struct Persist {
    pub ops: Vec<JournalOp>,
    pub audits: Vec<AuditEntry>,
    pub wall_ms: u64,
}

impl Handler<Persist> for JournalWriter {
    type Result = Result<Vec<AuditRecord>, JournalError>;

    fn handle(&mut self, message: Persist, _: &mut Context<Self>) -> Self::Result {
        self.journal
            .persist(&message.ops, &message.audits, message.wall_ms)
    }
}

/// Read audit records: those after `after` (oldest first), or the newest `limit`.
#[derive(Message)]
#[rtype(result = "Result<Vec<AuditRecord>, JournalError>")]
pub struct ReadAudit {
    pub after: Option<u64>,
    pub limit: usize,
}

impl Handler<ReadAudit> for JournalWriter {
    type Result = Result<Vec<AuditRecord>, JournalError>;

    fn handle(&mut self, message: ReadAudit, _: &mut Context<Self>) -> Self::Result {
        match (&self.journal, message.after) {
            (SiteJournal::Redb(journal), Some(after)) => journal.audit_after(after, message.limit),
            (SiteJournal::Redb(journal), None) => journal.audit_tail(message.limit),
            (SiteJournal::Etcd { journal, .. }, Some(after)) => {
                Ok(journal.audit_after(after, message.limit)?)
            }
            (SiteJournal::Etcd { journal, .. }, None) => Ok(journal.audit_tail(message.limit)?),
        }
    }
}
