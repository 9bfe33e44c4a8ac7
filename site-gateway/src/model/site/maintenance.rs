//! Servers out of use for maintenance (`leasehold server drain ID`, docs/operations.md
//! "Maintenance"). A server in maintenance is never given to an account or lent. If it
//! serves an account, the arbiter no longer counts it there, so the account gets a
//! replacement as for a lost server; the server itself drains once the account's other
//! serving servers meet its minimum (or at once, if the operator forced it), and then stays
//! free and out of use until undrained. Both changes are journaled before anything acts on
//! them, and survive a restart.

use leasehold_federation::ids::ServerId;

use super::server::{Next, Phase};
use super::{SiteModel, audit};
use crate::model::Millis;
use crate::model::effects::{AuditKind, Effect, JournalOp, MaintenanceRecord};

/// Why a maintenance request was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaintenanceRefusal {
    #[error("no server `{server}` in this site's inventory; GET /v1/servers lists them")]
    UnknownServer { server: ServerId },
    #[error(
        "{server} is lent to {borrower}; it can go into maintenance once it is back (the loan ends when {borrower} returns it, or when this site recalls it)"
    )]
    Lent { server: ServerId, borrower: String },
}

impl SiteModel {
    /// Puts `server` into maintenance (`Some`) or gives it back (`None`). Asking again for
    /// what already holds changes nothing and is no error.
    pub fn set_maintenance(
        &mut self,
        server: &ServerId,
        record: Option<MaintenanceRecord>,
        now: Millis,
    ) -> Result<Vec<Effect>, MaintenanceRefusal> {
        let Some(ix) = self.servers.iter().position(|entry| &entry.id == server) else {
            return Err(MaintenanceRefusal::UnknownServer {
                server: server.clone(),
            });
        };
        let entry = &self.servers[ix];
        let mut effects = Vec::new();
        match record {
            Some(record) => {
                if entry.maintenance.as_deref() == Some(&record) {
                    return Ok(effects);
                }
                if let Some(loan) = entry.lease.as_ref().and_then(|lease| lease.loan.as_ref()) {
                    return Err(MaintenanceRefusal::Lent {
                        server: server.clone(),
                        borrower: loan.borrower.to_string(),
                    });
                }
                let account = entry
                    .lease
                    .as_ref()
                    .map(|lease| self.account_name(lease.account).clone());
                let epoch = entry.lease.as_ref().map(|lease| lease.epoch);
                let then = match &account {
                    Some(account) if record.force => {
                        format!("it drains from {account} now (forced)")
                    }
                    Some(account) => format!(
                        "it drains from {account} once {account} has its minimum without it"
                    ),
                    None => "it is free and stays out of use".to_owned(),
                };
                let reason = format!(
                    "{server} goes into maintenance, asked by {}: {}; {then}",
                    record.by, record.reason
                );
                effects.push(Effect::Journal(JournalOp::Maintenance {
                    server: server.clone(),
                    record: Some(record.clone()),
                }));
                effects.push(audit(
                    AuditKind::Maintenance,
                    Some(server),
                    account.as_ref(),
                    None,
                    epoch,
                    reason,
                ));
                self.servers[ix].maintenance = Some(Box::new(record));
                self.rare.out_of_use = true;
                effects.extend(self.drain_for_maintenance(now));
            }
            None => {
                let Some(was) = &entry.maintenance else {
                    return Ok(effects);
                };
                let reason = format!(
                    "{server} is back in use (in maintenance since it was asked by {}: {})",
                    was.by, was.reason
                );
                effects.push(Effect::Journal(JournalOp::Maintenance {
                    server: server.clone(),
                    record: None,
                }));
                effects.push(audit(
                    AuditKind::MaintenanceOver,
                    Some(server),
                    None,
                    None,
                    None,
                    reason,
                ));
                self.servers[ix].maintenance = None;
            }
        }
        Ok(effects)
    }

    /// Each round, after the arbiter: a server in maintenance that still serves drains
    /// once its account's other serving servers meet the account's minimum, or at once
    /// when forced.
    pub(super) fn drain_for_maintenance(&mut self, now: Millis) -> Vec<Effect> {
        let mut effects = Vec::new();
        for ix in 0..self.servers.len() {
            let entry = &self.servers[ix];
            if entry.out_of_use().is_none() {
                continue;
            }
            let force = entry
                .maintenance
                .as_ref()
                .is_some_and(|record| record.force);
            let Some(lease) = &entry.lease else {
                continue;
            };
            if lease.revoked
                || lease.loan.is_some()
                || !matches!(entry.phase, Phase::Serving | Phase::Starting { .. })
            {
                continue;
            }
            let account = lease.account;
            if !force && self.maintenance_waits(ix).is_some() {
                continue;
            }
            let server = entry.id.clone();
            let reason = format!(
                "{server} drains from {}: {}",
                self.account_name(account),
                entry.out_of_use().unwrap_or("it is out of use")
            );
            effects.extend(self.drain(ix, Next::Free, reason, now));
        }
        effects
    }

    /// What the drain of server `ix` (in maintenance, serving) waits for, in words; `None`
    /// once it may drain.
    pub(super) fn maintenance_waits(&self, ix: usize) -> Option<String> {
        let entry = &self.servers[ix];
        let lease = entry.lease.as_ref()?;
        if entry.out_of_use().is_none()
            || !matches!(entry.phase, Phase::Serving | Phase::Starting { .. })
        {
            return None;
        }
        let min = self.accounts[lease.account as usize].config.min_servers;
        let others = self
            .servers
            .iter()
            .enumerate()
            .filter(|(other, candidate)| {
                *other != ix
                    && candidate.out_of_use().is_none()
                    && candidate.serving() == Some(lease.account)
            })
            .count();
        // A replacement may be borrowed: the account's minimum counts its loans too.
        let borrowed = (self.borrowing.serving())
            .filter(|loan| loan.account == lease.account)
            .count();
        let have = u32::try_from(others + borrowed).unwrap_or(u32::MAX);
        (have < min).then(|| {
            format!(
                "waits for a replacement: {} has {have} other serving servers, its minimum is {min}",
                self.account_name(lease.account)
            )
        })
    }
}
