//! A read-only picture of the site for the admin API, the demo and tests. Field names are
//! part of the API (docs/api.md); `id`, `state`, `account`, `epoch` of servers and `name`,
//! `home`, `owner`, `min_servers`, `max_servers`, `demand`, `servers`, `sla_met` of accounts
//! are relied on by scripts.

use leasehold_federation::ids::{AccountId, ServerId, SiteId};
use leasehold_federation::wire::common::Health;
use serde::Serialize;

use super::machine::{BmcHealth, BootStep, MachineState, Power};
use super::server::{Phase, ServerEntry};
use super::{LoanCounts, SiteModel};
use crate::model::Millis;
use crate::model::ownership::Owner;

#[derive(Debug, Clone, Serialize)]
pub struct SiteSnapshot {
    pub site: SiteId,
    pub servers: Vec<ServerSnapshot>,
    pub accounts: Vec<AccountSnapshot>,
}

impl SiteSnapshot {
    /// The server whose node agent's certificate expires first, and when (Unix time), of
    /// those the shell filled in: the one to renew first.
    pub fn earliest_node_certificate(&self) -> Option<(&ServerId, i64)> {
        self.servers
            .iter()
            .filter_map(|server| Some((&server.id, server.certificate_expires?)))
            .min_by_key(|(_, at)| *at)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerSnapshot {
    pub id: ServerId,
    /// offline, free, starting, serving, draining, failed
    pub state: &'static str,
    pub account: Option<AccountId>,
    /// The current lease's epoch, or the highest this server has had.
    pub epoch: u64,
    pub health: String,
    pub load: Option<f64>,
    pub service_addr: String,
    pub connected: bool,
    pub lease_expires_in_ms: Option<u64>,
    pub lease_revoked: bool,
    /// The borrowing site, when the server is lent (its `account` is that site's).
    pub lent_to: Option<SiteId>,
    /// Set for a machine (docs/machines.md): its power, its BMC, a re-image in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineSnapshot>,
    /// Set while the server is in maintenance (`leasehold server drain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceSnapshot>,
    /// The version its node agent said at its last registration (`null` before one);
    /// filled in by the gateway's shell, which hears it.
    pub agent_version: Option<String>,
    /// The management protocol its node agent's connection speaks (`leasehold-node/1`),
    /// or `null` before it registered; filled in by the shell.
    pub agent_protocol: Option<String>,
    /// When the certificate its node agent presented at that registration expires (Unix
    /// time); filled in by the shell, which holds the connection.
    pub certificate_expires: Option<i64>,
}

/// A server in maintenance, as `/v1/servers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MaintenanceSnapshot {
    pub by: String,
    pub reason: String,
    pub since_wall_ms: u64,
    pub force: bool,
    /// What its drain waits for (a replacement for an account at its minimum); absent once
    /// it drains or is free.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MachineSnapshot {
    pub mac: String,
    /// on, off, unknown: as its BMC last said.
    pub power: &'static str,
    /// answering, unknown, or `unreachable: <error>`.
    pub bmc: String,
    /// The re-image in progress, if any.
    pub reimage: Option<ReimageSnapshot>,
    /// The steps of its last boot that registered.
    pub last_boot: Vec<StepSnapshot>,
    /// The account whose image its node agent registered from.
    pub image: Option<AccountId>,
    /// Why it is out of use, if it is.
    pub failed: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReimageSnapshot {
    pub account: AccountId,
    pub epoch: u64,
    /// powering-off, setting-boot, powering-on, booting
    pub step: &'static str,
    pub step_ms: u64,
    /// The steps done, with how long each took.
    pub done: Vec<StepSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepSnapshot {
    pub step: &'static str,
    pub ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountSnapshot {
    pub name: AccountId,
    pub home: SiteId,
    /// The site that owns the account now, as far as this site knows (itself, or the
    /// holder its last claim learned of); `null` while nobody is known to.
    pub owner: Option<SiteId>,
    /// The ownership term, and the time left on this site's ownership, when it owns it.
    pub ownership_term: Option<u64>,
    pub ownership_expires_in_ms: Option<u64>,
    pub min_servers: u32,
    pub max_servers: u32,
    pub priority: u32,
    pub target_load: f64,
    pub demand: u32,
    /// Servers serving the account now (healthy workload, unrevoked lease), borrowed
    /// ones included.
    pub servers: u32,
    /// Of `servers`, those borrowed from peers.
    pub borrowed: u32,
    /// Servers assigned whose workload is not healthy yet.
    pub starting: u32,
    /// Total load of the serving servers.
    pub load: f64,
    /// At least `min_servers` serve, and at least `demand`.
    pub sla_met: bool,
    /// Servers the account wants but the site could not give in the last round.
    pub shortfall: Option<u32>,
    pub endpoints: Vec<String>,
}

impl SiteModel {
    pub fn snapshot(&self, now: Millis) -> SiteSnapshot {
        let servers = self
            .servers
            .iter()
            .enumerate()
            // Removed by an edit and drained: no longer in the inventory.
            .filter(|(_, entry)| !entry.gone())
            .map(|(ix, entry)| self.server_snapshot(ix, entry, now))
            .collect();
        let loads = self.account_loads();
        let accounts = self
            .accounts
            .iter()
            .enumerate()
            // A removed account is shown only while a server still holds a lease of it.
            .filter(|(ix, account)| {
                let gone = account.removed
                    || (account.adopted_from.is_some()
                        && !matches!(account.owner, Owner::Here { until, .. } if until > now));
                account.guest.is_none()
                    && (!gone
                        || self.servers.iter().any(|entry| {
                            entry.lease.as_ref().map(|lease| lease.account) == Some(*ix as u32)
                        }))
            })
            .map(|(ix, account)| {
                let (load, serving) = loads[ix];
                let borrowed: Vec<&str> = self
                    .borrowing
                    .serving()
                    .filter(|loan| loan.account == ix as u32)
                    .map(|loan| loan.service_addr.as_str())
                    .collect();
                let endpoints: Vec<String> = self
                    .servers
                    .iter()
                    .filter(|entry| entry.serving() == Some(ix as u32))
                    .map(|entry| entry.service_addr.clone())
                    .chain(borrowed.iter().map(|addr| (*addr).to_owned()))
                    .collect();
                let starting = self
                    .servers
                    .iter()
                    .filter(|entry| {
                        matches!(entry.phase, Phase::Starting { .. })
                            && entry.lease.as_ref().map(|lease| lease.account) == Some(ix as u32)
                    })
                    .count() as u32;
                let (owner, term, expires) = match &account.owner {
                    // A site with no peers owns its accounts for ever: no expiry to show.
                    Owner::Here { term, until } if *until > now => (
                        Some(self.site.clone()),
                        Some(term.value()),
                        (until.0 != u64::MAX).then(|| until.0.saturating_sub(now.0)),
                    ),
                    Owner::Here { .. } | Owner::Unknown => (None, None, None),
                    Owner::There { holder, term } => {
                        (Some(holder.clone()), Some(term.value()), None)
                    }
                };
                AccountSnapshot {
                    name: account.config.name.clone(),
                    home: account
                        .adopted_from
                        .clone()
                        .unwrap_or_else(|| self.site.clone()),
                    owner,
                    ownership_term: term,
                    ownership_expires_in_ms: expires,
                    min_servers: account.config.min_servers,
                    max_servers: account.config.max_servers,
                    priority: account.config.priority,
                    target_load: account.config.target_load,
                    demand: account.demand,
                    servers: serving,
                    borrowed: borrowed.len() as u32,
                    starting,
                    load,
                    sla_met: serving >= account.config.min_servers && serving >= account.demand,
                    shortfall: account
                        .shortfall
                        .map(|(wanted, have)| wanted.saturating_sub(have)),
                    endpoints,
                }
            })
            .collect();
        SiteSnapshot {
            site: self.site.clone(),
            servers,
            accounts,
        }
    }

    /// What `/v1/servers` shows of the server at `ix`.
    fn server_snapshot(&self, ix: usize, entry: &ServerEntry, now: Millis) -> ServerSnapshot {
        ServerSnapshot {
            id: entry.id.clone(),
            // Out of use and holding nothing: what an operator asked for, not "free".
            state: match (&entry.maintenance, &entry.lease, &entry.phase) {
                (Some(_), None, Phase::Free | Phase::Offline) => "maintenance",
                _ => entry.phase.name(),
            },
            account: entry
                .lease
                .as_ref()
                .map(|lease| self.account_name(lease.account).clone()),
            epoch: entry
                .lease
                .as_ref()
                .map(|lease| lease.epoch)
                .unwrap_or(entry.highest_epoch)
                .value(),
            health: match &entry.health {
                Health::Idle => "idle".to_owned(),
                Health::Starting => "starting".to_owned(),
                Health::Healthy => "healthy".to_owned(),
                Health::Unhealthy { reason } => format!("unhealthy: {reason}"),
            },
            load: entry.load,
            service_addr: entry.service_addr.clone(),
            connected: entry.connected,
            lease_expires_in_ms: entry
                .lease
                .as_ref()
                .map(|lease| lease.expires_at.0.saturating_sub(now.0)),
            lease_revoked: entry.lease.as_ref().is_some_and(|lease| lease.revoked),
            lent_to: entry
                .lease
                .as_ref()
                .and_then(|lease| lease.loan.as_ref())
                .map(|loan| loan.borrower.clone()),
            machine: entry
                .machine
                .as_ref()
                .map(|machine| self.machine_snapshot(machine, now)),
            maintenance: entry
                .maintenance
                .as_ref()
                .map(|record| MaintenanceSnapshot {
                    by: record.by.clone(),
                    reason: record.reason.clone(),
                    since_wall_ms: record.since_wall_ms,
                    force: record.force,
                    waiting: if record.force {
                        None
                    } else {
                        self.maintenance_waits(ix)
                    },
                }),
            agent_version: None,
            agent_protocol: None,
            certificate_expires: None,
        }
    }

    /// The server `id` as `/v1/servers` shows it now, or `None` if it is not in the
    /// inventory: an admin change answers with what it left, before any round moves on.
    pub fn server_snapshot_of(&self, id: &ServerId, now: Millis) -> Option<ServerSnapshot> {
        self.servers
            .iter()
            .enumerate()
            .find(|(_, entry)| &entry.id == id && !entry.gone())
            .map(|(ix, entry)| self.server_snapshot(ix, entry, now))
    }
}

/// `GET /v1/loans`: what this site borrowed and lent, with totals since start.
#[derive(Debug, Clone, Serialize)]
pub struct LoansSnapshot {
    pub site: SiteId,
    pub borrowed: Vec<BorrowedSnapshot>,
    pub lent: Vec<LentSnapshot>,
    /// Requests in flight: (lender, account, count).
    pub asking: Vec<AskSnapshot>,
    pub counts: LoanCounts,
    /// Every loan's latency from our request to the lent server healthy, oldest first (the
    /// last 1000).
    pub latencies_ms: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BorrowedSnapshot {
    pub server: ServerId,
    pub lender: SiteId,
    pub account: AccountId,
    pub epoch: u64,
    /// starting, serving, returning
    pub state: &'static str,
    pub service_addr: String,
    pub expires_in_ms: u64,
    pub latency_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LentSnapshot {
    pub server: ServerId,
    pub borrower: SiteId,
    pub account: AccountId,
    pub epoch: u64,
    /// The server's state here (starting, serving, draining, failed).
    pub state: &'static str,
    pub expires_in_ms: u64,
    pub recalled: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AskSnapshot {
    pub lender: SiteId,
    pub account: AccountId,
    pub count: u32,
}

impl SiteModel {
    pub fn loans(&self, now: Millis) -> LoansSnapshot {
        let borrowing = self.borrowing();
        LoansSnapshot {
            site: self.site.clone(),
            borrowed: borrowing
                .loans
                .iter()
                .map(|loan| BorrowedSnapshot {
                    server: loan.server.clone(),
                    lender: loan.lender.clone(),
                    account: self.account_name(loan.account).clone(),
                    epoch: loan.epoch.value(),
                    state: loan.state.name(),
                    service_addr: loan.service_addr.clone(),
                    expires_in_ms: loan.expires_at.0.saturating_sub(now.0),
                    latency_ms: loan.latency_ms,
                })
                .collect(),
            lent: self
                .lent()
                .filter_map(|(ix, loan)| {
                    let entry = &self.servers[ix];
                    let lease = entry.lease.as_ref()?;
                    Some(LentSnapshot {
                        server: entry.id.clone(),
                        borrower: loan.borrower.clone(),
                        account: self.account_name(lease.account).clone(),
                        epoch: lease.epoch.value(),
                        state: entry.phase.name(),
                        expires_in_ms: loan.expires_at.0.saturating_sub(now.0),
                        recalled: loan.recall_by.is_some(),
                    })
                })
                .collect(),
            asking: borrowing
                .asks
                .iter()
                .map(|ask| AskSnapshot {
                    lender: ask.lender.clone(),
                    account: self.account_name(ask.account).clone(),
                    count: ask.count,
                })
                .collect(),
            counts: borrowing.counts,
            latencies_ms: borrowing.latencies_ms.iter().copied().collect(),
        }
    }
}

impl SiteModel {
    fn machine_snapshot(&self, machine: &MachineState, now: Millis) -> MachineSnapshot {
        let steps = |steps: &[(BootStep, u64)]| {
            steps
                .iter()
                .map(|(step, ms)| StepSnapshot {
                    step: step.name(),
                    ms: *ms,
                })
                .collect()
        };
        MachineSnapshot {
            mac: machine.mac.clone(),
            power: match machine.power {
                Power::On => "on",
                Power::Off => "off",
                Power::Unknown => "unknown",
            },
            bmc: match &machine.bmc {
                BmcHealth::Unknown => "unknown".to_owned(),
                BmcHealth::Answering => "answering".to_owned(),
                BmcHealth::Unreachable { error, .. } => format!("unreachable: {error}"),
            },
            reimage: machine.boot.as_ref().map(|boot| ReimageSnapshot {
                account: self.account_name(boot.account).clone(),
                epoch: boot.epoch.value(),
                step: boot.step.name(),
                step_ms: super::millis(now.since(boot.step_since)),
                done: steps(&boot.steps),
            }),
            last_boot: steps(&machine.last_boot),
            image: machine
                .image
                .map(|(account, _)| self.account_name(account).clone()),
            failed: machine.failed.clone(),
        }
    }
}
