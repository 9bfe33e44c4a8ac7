//! The site core: the inventory, the lease table and the lifecycle of every server, driven
//! by what nodes report and by the arbiter's decisions. Plain state: every input is a
//! method call with `now`, every output an [`Effect`] for the shell to perform.
//!
//! Safety rules this file holds (docs/invariants.md):
//! - S-2: every lease gets `highest_epoch.next()` of its server, and `highest_epoch` only
//!   grows (journaled with the lease, raised by what nodes report).
//! - S-3: a server gets a new lease only when it holds none; a lease ends only when the node
//!   confirmed the workload stopped, or when the lease expired (the node's own view of the
//!   lease ends earlier, S-1, and the node stops its workload then).
//! - D-1: effects put `Journal` before `Send` for the same change.

mod events;
mod reconfigure;
mod server;
mod snapshot;
mod tick;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use leasehold_federation::wire::common::{DataRef, InitPointer, Software};

pub use reconfigure::Reconfigured;
pub use server::{Lease, Next, Phase, ServerEntry};
pub use snapshot::{AccountSnapshot, ServerSnapshot, SiteSnapshot};

use super::Millis;
use super::arbiter::{AccountIx, Arbiter};
use super::effects::{AuditEntry, AuditKind, Effect, JournalOp, LeaseEndCause, Observation};
use crate::config::{Account, SiteConfig, Timings};

/// How long a server is not offered again to an account whose workload failed on it.
pub const AVOID_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// What the journal held when the gateway started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    pub leases: Vec<(ServerId, AccountId, Epoch)>,
    pub epochs: Vec<(ServerId, Epoch)>,
}

#[derive(Debug, Clone)]
pub struct AccountEntry {
    pub config: Account,
    pub demand: u32,
    /// (wanted, have) when the last round could not serve the account's SLA.
    pub shortfall: Option<(u32, u32)>,
    /// Removed by a config edit: kept at its index (leases name accounts by index) and
    /// asking for no servers, so its servers drain and go free (docs/decisions.md).
    pub removed: bool,
}

impl AccountEntry {
    fn new(config: Account) -> AccountEntry {
        AccountEntry {
            demand: config.min_servers,
            config,
            shortfall: None,
            removed: false,
        }
    }
}

#[derive(Debug)]
pub struct SiteModel {
    site: SiteId,
    timings: Timings,
    accounts: Vec<AccountEntry>,
    account_index: HashMap<AccountId, AccountIx>,
    servers: Vec<ServerEntry>,
    server_index: HashMap<ServerId, usize>,
    /// Scratch buffers only; no state carries from one round to the next.
    arbiter: Arbiter,
}

impl SiteModel {
    /// Builds the site from its config and what the journal recovered. Recovered leases get
    /// one full TTL from `now` for their nodes to reconnect and renew; leases that name a
    /// server or account the config no longer has are ended.
    pub fn new(
        config: &SiteConfig,
        recovered: &Recovered,
        now: Millis,
    ) -> (SiteModel, Vec<Effect>) {
        let accounts: Vec<AccountEntry> = config
            .accounts
            .iter()
            .map(|account| AccountEntry::new(account.clone()))
            .collect();
        let account_index = accounts
            .iter()
            .enumerate()
            .map(|(ix, account)| (account.config.name.clone(), ix as AccountIx))
            .collect();
        let servers: Vec<ServerEntry> = config
            .servers
            .iter()
            .map(|server| ServerEntry::new(server.id.clone(), server.service_addr.to_string()))
            .collect();
        let server_index = servers
            .iter()
            .enumerate()
            .map(|(ix, server)| (server.id.clone(), ix))
            .collect();
        let mut model = SiteModel {
            site: config.site.name.clone(),
            timings: config.timings,
            accounts,
            account_index,
            servers,
            server_index,
            arbiter: Arbiter::default(),
        };
        let effects = model.recover(recovered, now);
        (model, effects)
    }

    fn recover(&mut self, recovered: &Recovered, now: Millis) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (server, epoch) in &recovered.epochs {
            if let Some(entry) = self.server_mut(server) {
                entry.highest_epoch = entry.highest_epoch.max(*epoch);
            }
        }
        let ttl = self.timings.lease_ttl;
        for (server, account, epoch) in &recovered.leases {
            let account_ix = self.account_index.get(account).copied();
            let Some(ix) = self.server_index.get(server).copied() else {
                effects.push(Effect::Journal(JournalOp::LeaseEnded {
                    server: server.clone(),
                    epoch: *epoch,
                }));
                continue;
            };
            let entry = &mut self.servers[ix];
            entry.highest_epoch = entry.highest_epoch.max(*epoch);
            match account_ix {
                Some(account_ix) => {
                    entry.lease = Some(Lease {
                        account: account_ix,
                        epoch: *epoch,
                        expires_at: now + ttl,
                        granted_at: now,
                        revoked: false,
                    });
                    entry.phase = Phase::Serving;
                    // Counts as heard from: the node gets one TTL to come back.
                    entry.last_heartbeat = Some(now);
                    effects.push(audit(
                        AuditKind::Recovered,
                        Some(server),
                        Some(account),
                        None,
                        Some(*epoch),
                        format!(
                            "lease of {server} to {account} under {epoch} recovered from the journal; its node has {} ms to renew it",
                            ttl.as_millis()
                        ),
                    ));
                }
                None => {
                    effects.push(Effect::Journal(JournalOp::LeaseEnded {
                        server: server.clone(),
                        epoch: *epoch,
                    }));
                    effects.push(Effect::Observe(Observation::LeaseEnded {
                        cause: LeaseEndCause::AccountRemoved,
                    }));
                    effects.push(audit(
                        AuditKind::LeaseEnded,
                        Some(server),
                        Some(account),
                        None,
                        Some(*epoch),
                        format!("account {account} is no longer in the config; lease ended"),
                    ));
                }
            }
        }
        effects
    }

    pub fn site(&self) -> &SiteId {
        &self.site
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    pub fn accounts(&self) -> &[AccountEntry] {
        &self.accounts
    }

    pub fn servers(&self) -> &[ServerEntry] {
        &self.servers
    }

    pub fn server(&self, id: &ServerId) -> Option<&ServerEntry> {
        self.server_index.get(id).map(|ix| &self.servers[*ix])
    }

    fn server_mut(&mut self, id: &ServerId) -> Option<&mut ServerEntry> {
        self.server_index
            .get(id)
            .copied()
            .map(move |ix| &mut self.servers[ix])
    }

    pub fn account_ix(&self, name: &AccountId) -> Option<AccountIx> {
        self.account_index.get(name).copied()
    }

    fn account_name(&self, ix: AccountIx) -> &AccountId {
        &self.accounts[ix as usize].config.name
    }

    /// The Group actor's demand for an account.
    pub fn set_demand(&mut self, account: AccountIx, demand: u32) {
        if let Some(entry) = self.accounts.get_mut(account as usize)
            && !entry.removed
        {
            entry.demand = demand.clamp(entry.config.min_servers, entry.config.max_servers);
        }
    }

    /// Per account: (total load of its serving servers, how many serve it).
    pub fn account_loads(&self) -> Vec<(f64, u32)> {
        let mut loads = vec![(0.0, 0u32); self.accounts.len()];
        for server in &self.servers {
            if let Some(account) = server.serving() {
                let slot = &mut loads[account as usize];
                slot.0 += server.load.unwrap_or(0.0).max(0.0);
                slot.1 += 1;
            }
        }
        loads
    }

    /// The pointer that makes a server run `account` under `epoch`.
    fn pointer(&self, account: AccountIx, epoch: Epoch) -> InitPointer {
        let config = &self.accounts[account as usize].config;
        InitPointer {
            account: config.name.clone(),
            software: software_of(config, self.timings.workload_stop_timeout),
            data: data_of(config),
            epoch,
        }
    }
}

/// The software half of an account's pointer, as nodes (ours, or a peer's for a loan) run
/// it.
pub fn software_of(config: &Account, stop_timeout: Duration) -> Software {
    Software {
        label: config.workload.software.clone(),
        command: config.workload.command.clone(),
        args: config.workload.args.clone(),
        env: config.workload.env.clone(),
        health_path: config.workload.health_path.clone(),
        metrics_path: config.workload.metrics_path.clone(),
        load_metric: config.workload.load_metric.clone(),
        stop_timeout_ms: millis(stop_timeout),
    }
}

/// The data half of an account's pointer.
pub fn data_of(config: &Account) -> DataRef {
    DataRef {
        dir: config.workload.data_dir.display().to_string(),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn audit(
    kind: AuditKind,
    server: Option<&ServerId>,
    account: Option<&AccountId>,
    from: Option<&AccountId>,
    epoch: Option<Epoch>,
    reason: String,
) -> Effect {
    Effect::Audit(AuditEntry {
        kind,
        server: server.cloned(),
        account: account.cloned(),
        from: from.cloned(),
        epoch,
        reason,
    })
}
