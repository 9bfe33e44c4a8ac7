//! The site's journal in etcd (`[site] store = "etcd"`, docs/ha.md): the same records as
//! the redb journal (leases with their holders, highest epochs, borrowed servers,
//! maintenance, the running members, the audit log), in JSON under
//! `/leasehold/<site>/journal/` and `/leasehold/<site>/audit/`.
//!
//! Every write is fenced: a transaction commits only if the site's election key was
//! created at the writer's generation, that is, only while the writer is the active
//! gateway. A deposed gateway's write fails as [`StoreError::Fenced`] and changes nothing,
//! and since a command goes out only after its record is committed ("journal before act"),
//! a deposed gateway's commands never go out either.
//!
//! Blocking, like the redb journal: the gateway calls it from a thread of its own.

use std::sync::Arc;

use leasehold_etcd::{Compare, Etcd, KeyValue, Op};
use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId, Term};

use crate::journal::{AuditRecord, BorrowedRecord, LeaseRecord, Pruned, mono_now_ns};
use crate::journal_state::JournalState;
use crate::model::effects::{AuditEntry, JournalOp, MaintenanceRecord};
use crate::model::election::Generation;
use crate::model::site::Recovered;

/// Requests per transaction: etcd refuses more than 128 by default (`--max-txn-ops`). A
/// batch of more is written in several fenced transactions, in order; each record is a
/// whole value, so a batch cut short by a crash leaves records that each hold, and its
/// commands had not gone out.
const TXN_OPS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Etcd(#[from] leasehold_etcd::Error),
    #[error(
        "the site's store refused a write of generation {generation}: another gateway of the site is active now (this one was deposed)"
    )]
    Fenced { generation: Generation },
    #[error("the site's store: record {key} is unreadable: {detail}")]
    Record { key: String, detail: String },
}

/// The keys of one site in etcd.
#[derive(Clone, Debug)]
pub struct SiteKeys {
    prefix: String,
}

impl SiteKeys {
    pub fn new(site: &SiteId) -> SiteKeys {
        SiteKeys {
            prefix: format!("/leasehold/{site}/"),
        }
    }

    /// The election key; its create revision is the active gateway's generation.
    pub fn active(&self) -> Vec<u8> {
        format!("{}active", self.prefix).into_bytes()
    }

    fn journal(&self) -> String {
        format!("{}journal/", self.prefix)
    }

    fn audit(&self) -> String {
        format!("{}audit/", self.prefix)
    }

    fn audit_key(&self, seq: u64) -> Vec<u8> {
        format!("{}{seq:020}", self.audit()).into_bytes()
    }
}

/// A record's place under `journal/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Lease(ServerId),
    Epoch(ServerId),
    Borrowed(ServerId),
    Maintenance(ServerId),
    Members,
    Term(AccountId),
}

impl Slot {
    fn key(&self, keys: &SiteKeys) -> Vec<u8> {
        let journal = keys.journal();
        match self {
            Slot::Lease(server) => format!("{journal}lease/{server}"),
            Slot::Epoch(server) => format!("{journal}epoch/{server}"),
            Slot::Borrowed(server) => format!("{journal}borrowed/{server}"),
            Slot::Maintenance(server) => format!("{journal}maintenance/{server}"),
            Slot::Members => format!("{journal}members"),
            Slot::Term(account) => format!("{journal}term/{account}"),
        }
        .into_bytes()
    }

    fn touched(op: &JournalOp) -> Vec<Slot> {
        match op {
            JournalOp::LeaseGranted { server, .. } => {
                vec![Slot::Lease(server.clone()), Slot::Epoch(server.clone())]
            }
            JournalOp::LeaseEnded { server, .. } => vec![Slot::Lease(server.clone())],
            JournalOp::EpochSeen { server, .. } => vec![Slot::Epoch(server.clone())],
            JournalOp::Borrowed { server, .. } | JournalOp::BorrowEnded { server, .. } => {
                vec![Slot::Borrowed(server.clone())]
            }
            JournalOp::Maintenance { server, .. } => vec![Slot::Maintenance(server.clone())],
            JournalOp::Members { .. } => vec![Slot::Members],
            JournalOp::Owned { account, .. } => vec![Slot::Term(account.clone())],
        }
    }

    /// The slot's value in `state`, as stored; `None`: the key is deleted.
    fn value(&self, state: &JournalState) -> Option<Vec<u8>> {
        let json = match self {
            Slot::Lease(server) => {
                let (account, epoch, lent_to) = state.lease_record(server)?;
                serde_json::to_vec(&LeaseRecord {
                    v: 1,
                    account: account.clone(),
                    epoch: *epoch,
                    lent_to: lent_to.clone().map(Box::new),
                })
            }
            Slot::Epoch(server) => Ok(state
                .highest_epoch(server)?
                .value()
                .to_string()
                .into_bytes()),
            Slot::Borrowed(server) => serde_json::to_vec(&BorrowedRecord {
                v: 1,
                record: state.borrowed(server)?.clone(),
            }),
            Slot::Maintenance(server) => serde_json::to_vec(state.maintenance(server)?),
            Slot::Members => serde_json::to_vec(state.members()?),
            Slot::Term(account) => Ok(state.term(account)?.value().to_string().into_bytes()),
        };
        // Our own types always serialize.
        json.ok()
    }
}

/// One site's journal in etcd, and the state it holds, kept in step with every write.
pub struct EtcdJournal {
    etcd: Arc<Etcd>,
    keys: SiteKeys,
    state: JournalState,
    next_seq: u64,
}

impl EtcdJournal {
    /// Reads the site's journal as of one revision: the journal, and what a gateway
    /// starting on it recovers.
    pub fn load(etcd: Arc<Etcd>, site: &SiteId) -> Result<(EtcdJournal, Recovered), StoreError> {
        let keys = SiteKeys::new(site);
        let mut journal = EtcdJournal {
            etcd,
            keys,
            state: JournalState::default(),
            next_seq: 1,
        };
        let recovered = journal.reload()?;
        Ok((journal, recovered))
    }

    /// Reads the journal again (a standby keeps its view warm; a new active reads what the
    /// last one wrote): what a gateway starting on it recovers.
    pub fn reload(&mut self) -> Result<Recovered, StoreError> {
        let journal = self.keys.journal();
        let (records, _) = self.etcd.get_prefix(journal.as_bytes())?;
        let mut state = JournalState::default();
        for record in &records {
            if let Some(op) = self.op_of(&journal, record)? {
                state.apply(&op);
            }
        }
        let audit = self.keys.audit();
        let last = self.etcd.range(
            audit.as_bytes(),
            &leasehold_etcd::prefix_end(audit.as_bytes()),
            1,
            true,
        )?;
        self.next_seq = match last.first() {
            Some(record) => audit_record(record)?.seq + 1,
            None => 1,
        };
        self.state = state;
        Ok(self.state.recovered())
    }

    /// The record at `record.key` as the op that would have written it.
    fn op_of(&self, journal: &str, record: &KeyValue) -> Result<Option<JournalOp>, StoreError> {
        let key = String::from_utf8_lossy(&record.key).into_owned();
        let unreadable = |detail: String| StoreError::Record {
            key: key.clone(),
            detail,
        };
        let Some(rest) = key.strip_prefix(journal) else {
            return Ok(None);
        };
        let server =
            |name: &str| ServerId::parse(name).map_err(|error| unreadable(error.to_string()));
        let json = |detail: serde_json::Error| unreadable(detail.to_string());
        let op = match rest.split_once('/') {
            Some(("lease", name)) => {
                let lease: LeaseRecord = serde_json::from_slice(&record.value).map_err(json)?;
                JournalOp::LeaseGranted {
                    server: server(name)?,
                    account: lease.account,
                    epoch: lease.epoch,
                    lent_to: lease.lent_to,
                }
            }
            Some(("epoch", name)) => {
                let value: u64 = String::from_utf8_lossy(&record.value)
                    .parse()
                    .map_err(|_| unreadable("not an epoch".to_owned()))?;
                JournalOp::EpochSeen {
                    server: server(name)?,
                    epoch: Epoch::from_journal(value),
                }
            }
            Some(("borrowed", _)) => {
                let borrowed: BorrowedRecord =
                    serde_json::from_slice(&record.value).map_err(json)?;
                let record = borrowed.record;
                JournalOp::Borrowed {
                    server: record.server,
                    lender: record.lender,
                    account: record.account,
                    epoch: record.epoch,
                    service_addr: record.service_addr,
                }
            }
            Some(("maintenance", name)) => {
                let record: MaintenanceRecord =
                    serde_json::from_slice(&record.value).map_err(json)?;
                JournalOp::Maintenance {
                    server: server(name)?,
                    record: Some(record),
                }
            }
            Some(("term", name)) => {
                let value: u64 = String::from_utf8_lossy(&record.value)
                    .parse()
                    .map_err(|_| unreadable("not a term".to_owned()))?;
                JournalOp::Owned {
                    account: AccountId::parse(name)
                        .map_err(|error| unreadable(error.to_string()))?,
                    term: Term::from_journal(value),
                }
            }
            None if rest == "members" => JournalOp::Members {
                running: serde_json::from_slice(&record.value).map_err(json)?,
            },
            _ => return Err(unreadable("not a journal record of this build".to_owned())),
        };
        Ok(Some(op))
    }

    /// Makes `ops` and `audits` durable under `generation`, or refuses: only the active
    /// gateway of that generation writes.
    pub fn persist(
        &mut self,
        generation: Generation,
        ops: &[JournalOp],
        audits: &[AuditEntry],
        wall_ms: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut state = self.state.clone();
        let mut slots = Vec::new();
        for op in ops {
            state.apply(op);
            slots.extend(Slot::touched(op));
        }
        slots.sort();
        slots.dedup();
        let mut requests: Vec<Op> = slots
            .iter()
            .map(|slot| {
                let key = slot.key(&self.keys);
                match slot.value(&state) {
                    Some(value) => Op::Put {
                        key,
                        value,
                        lease: 0,
                    },
                    None => Op::Delete { key },
                }
            })
            .collect();
        let mono_ns = mono_now_ns();
        let records: Vec<AuditRecord> = audits
            .iter()
            .enumerate()
            .map(|(ix, entry)| AuditRecord {
                seq: self.next_seq + ix as u64,
                wall_ms,
                mono_ns,
                entry: entry.clone(),
            })
            .collect();
        for record in &records {
            requests.push(Op::Put {
                key: self.keys.audit_key(record.seq),
                value: serde_json::to_vec(record).map_err(|error| StoreError::Record {
                    key: format!("audit/{}", record.seq),
                    detail: error.to_string(),
                })?,
                lease: 0,
            });
        }
        let fence = [Compare::CreatedAt {
            key: self.keys.active(),
            revision: generation.0,
        }];
        for chunk in requests.chunks(TXN_OPS) {
            let outcome = self.etcd.txn(&fence, chunk, &[])?;
            if !outcome.succeeded {
                return Err(StoreError::Fenced { generation });
            }
        }
        self.state = state;
        self.next_seq += records.len() as u64;
        Ok(records)
    }

    /// Removes up to `batch` of the oldest audit records written before `cutoff_wall_ms`
    /// and records that it did (`audit_pruned`), as the redb journal does; fenced like
    /// every write.
    pub fn prune_audit(
        &mut self,
        generation: Generation,
        cutoff_wall_ms: u64,
        batch: usize,
        wall_ms: u64,
        why: &str,
    ) -> Result<Option<Pruned>, StoreError> {
        let audit = self.keys.audit();
        let oldest = self.etcd.range(
            audit.as_bytes(),
            &leasehold_etcd::prefix_end(audit.as_bytes()),
            batch,
            false,
        )?;
        let mut old = Vec::new();
        for record in &oldest {
            let record = audit_record(record)?;
            // Numbered in the order written: the first young enough ends the run.
            if record.wall_ms >= cutoff_wall_ms {
                break;
            }
            old.push(record.seq);
        }
        let Some(pruned) = Pruned::of(&old) else {
            return Ok(None);
        };
        let entry = pruned.audit(why);
        let fence = [Compare::CreatedAt {
            key: self.keys.active(),
            revision: generation.0,
        }];
        let removals: Vec<Op> = old
            .iter()
            .map(|seq| Op::Delete {
                key: self.keys.audit_key(*seq),
            })
            .collect();
        for chunk in removals.chunks(TXN_OPS) {
            if !self.etcd.txn(&fence, chunk, &[])?.succeeded {
                return Err(StoreError::Fenced { generation });
            }
        }
        self.persist(generation, &[], &[entry], wall_ms)?;
        Ok(Some(pruned))
    }

    /// Audit records with `seq > after`, oldest first, at most `limit`.
    pub fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let audit = self.keys.audit();
        let records = self.etcd.range(
            &self.keys.audit_key(after.saturating_add(1)),
            &leasehold_etcd::prefix_end(audit.as_bytes()),
            limit,
            false,
        )?;
        records.iter().map(audit_record).collect()
    }

    /// The newest `limit` audit records, oldest first.
    pub fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let audit = self.keys.audit();
        let mut records = self
            .etcd
            .range(
                audit.as_bytes(),
                &leasehold_etcd::prefix_end(audit.as_bytes()),
                limit,
                true,
            )?
            .iter()
            .map(audit_record)
            .collect::<Result<Vec<_>, _>>()?;
        records.reverse();
        Ok(records)
    }

    /// The journal's state as of the last write or read.
    pub fn state(&self) -> &JournalState {
        &self.state
    }
}

fn audit_record(record: &KeyValue) -> Result<AuditRecord, StoreError> {
    serde_json::from_slice(&record.value).map_err(|error| StoreError::Record {
        key: String::from_utf8_lossy(&record.key).into_owned(),
        detail: error.to_string(),
    })
}
