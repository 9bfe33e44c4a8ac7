//! What a journal holds, as plain state: the lease table, the highest epoch of every
//! server and the servers borrowed, changed by [`JournalOp`]s exactly as the redb journal
//! ([`crate::journal::Journal::persist`]) changes its tables, and read back as the
//! [`Recovered`] a restarted gateway starts from. The simulation keeps each site's journal
//! in one; a unit test holds it to the redb journal's answers for the same records.

use std::collections::BTreeMap;

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId, Term};

use crate::model::effects::{JournalOp, LoanHolder, MaintenanceRecord};
use crate::model::site::{BorrowRecord, Recovered};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalState {
    leases: BTreeMap<ServerId, (AccountId, Epoch, Option<LoanHolder>)>,
    epochs: BTreeMap<ServerId, Epoch>,
    borrowed: BTreeMap<ServerId, BorrowRecord>,
    members: Option<Vec<SiteId>>,
    maintenance: BTreeMap<ServerId, MaintenanceRecord>,
    terms: BTreeMap<AccountId, Term>,
}

impl JournalState {
    pub fn apply(&mut self, op: &JournalOp) {
        match op {
            JournalOp::LeaseGranted {
                server,
                account,
                epoch,
                lent_to,
            } => {
                self.leases.insert(
                    server.clone(),
                    (account.clone(), *epoch, lent_to.as_deref().cloned()),
                );
                self.raise(server, *epoch);
            }
            JournalOp::LeaseEnded { server, epoch } => {
                // Only the lease it names: a late end of an older lease must not erase the
                // newer one.
                if self
                    .leases
                    .get(server)
                    .is_some_and(|(_, current, _)| current == epoch)
                {
                    self.leases.remove(server);
                }
            }
            JournalOp::EpochSeen { server, epoch } => self.raise(server, *epoch),
            JournalOp::Borrowed {
                server,
                lender,
                account,
                epoch,
                service_addr,
            } => {
                self.borrowed.insert(
                    server.clone(),
                    BorrowRecord {
                        server: server.clone(),
                        lender: lender.clone(),
                        account: account.clone(),
                        epoch: *epoch,
                        service_addr: service_addr.clone(),
                    },
                );
            }
            JournalOp::Members { running } => self.members = Some(running.clone()),
            JournalOp::Maintenance { server, record } => match record {
                Some(record) => {
                    self.maintenance.insert(server.clone(), record.clone());
                }
                None => {
                    self.maintenance.remove(server);
                }
            },
            JournalOp::Owned { account, term } => {
                self.terms.insert(account.clone(), *term);
            }
            JournalOp::BorrowEnded { server, epoch } => {
                if self
                    .borrowed
                    .get(server)
                    .is_some_and(|record| record.epoch == *epoch)
                {
                    self.borrowed.remove(server);
                }
            }
        }
    }

    /// Epochs only grow (S-2): a record never lowers a server's highest epoch.
    fn raise(&mut self, server: &ServerId, epoch: Epoch) {
        let highest = self.epochs.entry(server.clone()).or_insert(epoch);
        if *highest < epoch {
            *highest = epoch;
        }
    }

    /// What a gateway restarted on this journal recovers.
    pub fn recovered(&self) -> Recovered {
        let mut recovered = Recovered::default();
        for (server, (account, epoch, lent_to)) in &self.leases {
            if let Some(holder) = lent_to {
                recovered.lent.push((server.clone(), holder.clone()));
            }
            recovered
                .leases
                .push((server.clone(), account.clone(), *epoch));
        }
        recovered.epochs = self
            .epochs
            .iter()
            .map(|(server, epoch)| (server.clone(), *epoch))
            .collect();
        recovered.borrowed = self.borrowed.values().cloned().collect();
        recovered.members = self.members.clone();
        recovered.terms = self
            .terms
            .iter()
            .map(|(account, term)| (account.clone(), *term))
            .collect();
        recovered.maintenance = self
            .maintenance
            .iter()
            .map(|(server, record)| (server.clone(), record.clone()))
            .collect();
        recovered
    }

    /// The lease the journal holds for `server`: (account, epoch).
    pub fn lease(&self, server: &ServerId) -> Option<(&AccountId, Epoch)> {
        self.leases
            .get(server)
            .map(|(account, epoch, _)| (account, *epoch))
    }

    /// The lease the journal holds for `server`, with the peer it is lent to.
    pub fn lease_record(
        &self,
        server: &ServerId,
    ) -> Option<&(AccountId, Epoch, Option<LoanHolder>)> {
        self.leases.get(server)
    }

    pub fn borrowed(&self, server: &ServerId) -> Option<&BorrowRecord> {
        self.borrowed.get(server)
    }

    pub fn maintenance(&self, server: &ServerId) -> Option<&MaintenanceRecord> {
        self.maintenance.get(server)
    }

    pub fn members(&self) -> Option<&[SiteId]> {
        self.members.as_deref()
    }

    /// The term this site last came to own `account` under.
    pub fn term(&self, account: &AccountId) -> Option<Term> {
        self.terms.get(account).copied()
    }

    /// The highest epoch the journal holds for `server`.
    pub fn highest_epoch(&self, server: &ServerId) -> Option<Epoch> {
        self.epochs.get(server).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use leasehold_federation::ids::SiteId;

    fn server(name: &str) -> ServerId {
        ServerId::parse(name).expect("a valid server name")
    }

    fn account(name: &str) -> AccountId {
        AccountId::parse(name).expect("a valid account name")
    }

    fn epoch(n: u64) -> Epoch {
        (0..n).fold(Epoch::NONE, |epoch, _| epoch.next())
    }

    #[test]
    fn the_same_records_recover_the_same_as_the_redb_journal() {
        let ops = vec![
            JournalOp::LeaseGranted {
                server: server("a1"),
                account: account("shop"),
                epoch: epoch(1),
                lent_to: None,
            },
            JournalOp::LeaseGranted {
                server: server("a2"),
                account: account("blog"),
                epoch: epoch(3),
                lent_to: None,
            },
            // A late end of an older lease leaves the newer one.
            JournalOp::LeaseEnded {
                server: server("a2"),
                epoch: epoch(2),
            },
            JournalOp::LeaseEnded {
                server: server("a1"),
                epoch: epoch(1),
            },
            JournalOp::EpochSeen {
                server: server("a3"),
                epoch: epoch(7),
            },
            // A lower epoch seen later does not lower it.
            JournalOp::EpochSeen {
                server: server("a3"),
                epoch: epoch(4),
            },
            JournalOp::Borrowed {
                server: server("b1"),
                lender: SiteId::parse("site-b").expect("a valid site name"),
                account: account("shop"),
                epoch: epoch(2),
                service_addr: "127.0.0.1:9000".into(),
            },
            JournalOp::Borrowed {
                server: server("b2"),
                lender: SiteId::parse("site-b").expect("a valid site name"),
                account: account("shop"),
                epoch: epoch(5),
                service_addr: "127.0.0.1:9001".into(),
            },
            JournalOp::BorrowEnded {
                server: server("b2"),
                epoch: epoch(5),
            },
            JournalOp::Owned {
                account: account("shop"),
                term: Term::from_journal(3),
            },
            JournalOp::Owned {
                account: account("shop"),
                term: Term::from_journal(5),
            },
            JournalOp::Owned {
                account: account("blog"),
                term: Term::from_journal(2),
            },
        ];
        let mut state = JournalState::default();
        for op in &ops {
            state.apply(op);
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let site = SiteId::parse("site-a").expect("a valid site name");
        {
            let (mut journal, _) = Journal::open(dir.path(), &site).expect("a new journal");
            journal.persist(&ops, &[], 0).expect("persisted");
        }
        let (_, recovered) = Journal::open(dir.path(), &site).expect("the journal reopens");
        let mut expected = recovered;
        let mut ours = state.recovered();
        for recovered in [&mut expected, &mut ours] {
            recovered.leases.sort();
            recovered.epochs.sort();
            recovered.borrowed.sort_by(|a, b| a.server.cmp(&b.server));
        }
        assert_eq!(ours, expected);
        assert_eq!(
            ours.terms,
            vec![
                (account("blog"), Term::from_journal(2)),
                (account("shop"), Term::from_journal(5))
            ]
        );
        assert_eq!(state.highest_epoch(&server("a3")), Some(epoch(7)));
        assert_eq!(
            state.lease(&server("a2")),
            Some((&account("blog"), epoch(3)))
        );
    }
}
