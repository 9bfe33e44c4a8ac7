//! The journal actor: runs on an arbiter (thread) of its own, because every write waits
//! for fsync. Requests are served in order, which is what lets the master rely on "the
//! commands of a batch go out after that batch, and every earlier batch, is durable".

use actix::prelude::*;

use crate::journal::{AuditRecord, Journal, JournalError};
use crate::model::effects::{AuditEntry, JournalOp};

pub struct JournalWriter {
    journal: Journal,
}

impl JournalWriter {
    pub fn new(journal: Journal) -> Self {
        JournalWriter { journal }
    }
}

impl Actor for JournalWriter {
    type Context = Context<Self>;
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
        if message.ops.is_empty() && message.audits.is_empty() {
            return Ok(Vec::new());
        }
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
        match message.after {
            Some(after) => self.journal.audit_after(after, message.limit),
            None => self.journal.audit_tail(message.limit),
        }
    }
}
