//! The site core: the inventory, the lease table and the lifecycle of every server, driven
//! by what nodes report and by the arbiter's decisions. Plain state: every input is a
//! method call with `now`, every output an [`Effect`] for the shell to perform.
//!
//! Safety rules this file holds (docs/invariants.md):
//! - S-2: every lease gets `highest_epoch.next()` of its server (or of a restored journal's
//!   epoch floor, when that is higher), and `highest_epoch` only grows (journaled with the
//!   lease, raised by what nodes report).
//! - S-3: a server gets a new lease only when it holds none; a lease ends only when the node
//!   confirmed the workload stopped, or when the lease expired (the node's own view of the
//!   lease ends earlier, S-1, and the node stops its workload then).
//! - D-1: effects put `Journal` before `Send` for the same change.

mod borrow;
mod borrowing;
mod events;
mod handback;
mod lend;
mod machine;
mod maintenance;
pub use maintenance::MaintenanceRefusal;
mod reconfigure;
mod server;
mod snapshot;
pub(crate) mod tick;

#[cfg(test)]
mod handback_tests;
#[cfg(test)]
mod loan_tests;
#[cfg(test)]
mod machine_tests;
#[cfg(test)]
mod maintenance_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

// Keyed by names from the config, not chosen by a client: the hash need not resist
// collisions made on purpose, and is taken for every renewal and node report.
use rustc_hash::FxHashMap;

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use leasehold_federation::wire::common::{DataRef, InitPointer, Software};
use leasehold_federation::wire::site::AccountSpec;

pub use borrowing::{BorrowRecord, BorrowState, Borrowed, Borrowing, LoanCounts};
pub use handback::account_spec;
pub use machine::{BMC_RETRY, BmcHealth, Boot, BootStep, CheckedClaim, MachineState, Power};
pub use reconfigure::Reconfigured;
pub use server::{Lease, LoanTerms, Next, Phase, ServerEntry};
pub use snapshot::{
    AccountSnapshot, AskSnapshot, BorrowedSnapshot, LentSnapshot, LoansSnapshot, MachineSnapshot,
    ReimageSnapshot, ServerSnapshot, SiteSnapshot, StepSnapshot,
};

use super::Millis;
use super::arbiter::{AccountIx, Arbiter};
use super::effects::{
    AuditEntry, AuditKind, Effect, JournalOp, LeaseEndCause, LoanHolder, Observation,
};
use super::ownership::Owner;
use crate::config::{Account, Lending, SiteConfig, Timings, Workload};

/// How long a server is not offered again to an account whose workload failed on it.
pub const AVOID_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// A server's place in its [`SiteModel`], from [`SiteModel::server_ix`]. Good for that
/// model's whole life: servers keep their place, removed ones too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerIx(u32);

impl ServerIx {
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// A place made up, for the shell's own unit tests (a real one comes from the model).
    #[cfg(test)]
    pub(crate) fn at(index: u32) -> ServerIx {
        ServerIx(index)
    }
}

/// What the journal held when the gateway started.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    pub leases: Vec<(ServerId, AccountId, Epoch)>,
    pub epochs: Vec<(ServerId, Epoch)>,
    /// Of `leases`, those that are loans to a peer site, with their holder.
    pub lent: Vec<(ServerId, LoanHolder)>,
    /// Servers peers lent us.
    pub borrowed: Vec<BorrowRecord>,
    /// The running member set last journaled (empty: none); `None` if the journal has no
    /// record of it.
    pub members: Option<Vec<SiteId>>,
    /// Servers in maintenance, and why.
    pub maintenance: Vec<(ServerId, crate::model::effects::MaintenanceRecord)>,
    /// The term this site last came to own each account under.
    pub terms: Vec<(AccountId, leasehold_federation::ids::Term)>,
    /// The journal was created by this start (no site had used it).
    pub new_journal: bool,
    /// Every lease from now on gets an epoch above this: set when the journal was restored
    /// from a backup, so that no epoch handed out after the backup is used again (S-2,
    /// docs/operations.md "Backups").
    pub epoch_floor: Epoch,
}

impl Default for Recovered {
    /// A new journal's: nothing recovered, no epoch floor.
    fn default() -> Self {
        Recovered {
            leases: Vec::new(),
            epochs: Vec::new(),
            lent: Vec::new(),
            borrowed: Vec::new(),
            members: None,
            maintenance: Vec::new(),
            terms: Vec::new(),
            new_journal: false,
            epoch_floor: Epoch::NONE,
        }
    }
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
    /// A peer's account that servers of ours are lent to (a "guest"): it asks the arbiter
    /// for nothing, and its servers are out of the arbiter's reach until they come home.
    pub guest: Option<Box<LoanHolder>>,
    /// Whether this site owns the account now (docs/ownership.md). The master sets it
    /// from its ownership core before every round; a site core on its own (tests, bench)
    /// owns its accounts for ever.
    pub owner: Owner,
    /// A peer's account this site took over (its home site), served like its own while
    /// owned here.
    pub adopted_from: Option<SiteId>,
    /// Being handed back to its home drain-first (set by the master from its ownership
    /// core; see `handback.rs`).
    pub handing_back: Option<HandingBack>,
}

/// An account this site owns being handed back to `home`: the home's servers are borrowed
/// for it first, then ours drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandingBack {
    pub home: SiteId,
    /// Servers lent by a third site were returned: their nodes may run the account until
    /// this, so the ownership is not released before.
    pub others_clear_at: Millis,
}

impl AccountEntry {
    fn new(config: Account) -> AccountEntry {
        AccountEntry {
            demand: config.min_servers,
            config,
            shortfall: None,
            removed: false,
            guest: None,
            owner: Owner::Here {
                term: leasehold_federation::ids::Term::NONE.next(),
                until: Millis(u64::MAX),
            },
            adopted_from: None,
            handing_back: None,
        }
    }

    fn guest(holder: LoanHolder) -> AccountEntry {
        AccountEntry {
            demand: 0,
            config: guest_config(&holder),
            shortfall: None,
            removed: false,
            guest: Some(Box::new(holder)),
            owner: Owner::Unknown,
            adopted_from: None,
            handing_back: None,
        }
    }

    /// An account this site serves as its own: homed here or taken over, not a tombstone,
    /// not a peer's guest.
    pub fn is_home(&self) -> bool {
        !self.removed && self.guest.is_none()
    }
}

/// A peer's account as its catalogue describes it, with its SLA (`sla`) or asking for
/// nothing (a guest, served only by loans).
fn account_from_spec(spec: &AccountSpec, sla: bool) -> Account {
    Account {
        name: spec.name.clone(),
        min_servers: if sla { spec.min_servers } else { 0 },
        max_servers: if sla { spec.max_servers } else { 0 },
        priority: if sla { spec.priority } else { 0 },
        target_load: spec.target_load,
        failover: spec.failover.clone(),
        pinned: spec.pinned,
        workload: Workload {
            software: spec.software.label.clone(),
            command: spec.software.command.clone(),
            args: spec.software.args.clone(),
            env: spec.software.env.clone(),
            data_dir: spec.data.dir.clone().into(),
            health_path: spec.software.health_path.clone(),
            metrics_path: spec.software.metrics_path.clone(),
            load_metric: spec.software.load_metric.clone(),
            // A catalogue carries no secrets: a site taking the account over has its own
            // ([failover_secrets]), and a loan's come in the borrower's request.
            secrets: None,
        },
        // A catalogue carries no image: a peer's account is never served by our machines.
        image: None,
    }
}

/// A peer's account as our grant code needs it for a loan: the software and data from its
/// catalogue, and an SLA of nothing (the arbiter never serves it; loans do).
fn guest_config(holder: &LoanHolder) -> Account {
    account_from_spec(&holder.spec, false)
}

#[derive(Debug)]
pub struct SiteModel {
    site: SiteId,
    timings: Timings,
    accounts: Vec<AccountEntry>,
    account_index: FxHashMap<AccountId, AccountIx>,
    servers: Vec<ServerEntry>,
    /// A server's place in `servers`, which it keeps for the model's life (a server removed
    /// from the config stays at its index), so a [`ServerIx`] handed out stays good.
    server_index: FxHashMap<ServerId, usize>,
    /// Guest accounts by (borrowing site, account): an index into `accounts`.
    guests: HashMap<(SiteId, AccountId), AccountIx>,
    lending: Lending,
    /// Servers we borrowed, our requests in flight, and what we know of the peers.
    borrowing: Borrowing,
    /// No loan is asked for before this: our own nodes get the time to (re)connect first.
    borrow_after: Millis,
    /// Scratch buffers only; no state carries from one round to the next.
    arbiter: Arbiter,
    /// The arbiter's input, rebuilt in every round into the same buffers.
    views: tick::Views,
    /// Which rare kinds of server a round must look for.
    rare: tick::Rare,
    /// The round whose failures, expiries and views its start already found
    /// ([`SiteModel::begin_tick`]), so that its `tick` does not pass over the servers again.
    scanned: Option<Millis>,
    /// No lease gets an epoch at or below this ([`Recovered::epoch_floor`]).
    epoch_floor: Epoch,
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
            .map(|server| {
                let mut entry =
                    ServerEntry::new(server.id.clone(), server.service_addr.to_string());
                if let Some(machine) = &server.machine {
                    entry.machine = Some(Box::new(MachineState::new(&machine.mac)));
                }
                entry
            })
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
            guests: HashMap::new(),
            lending: config.lending.clone(),
            borrowing: Borrowing::default(),
            borrow_after: now + startup_grace(&config.timings),
            arbiter: Arbiter::default(),
            views: tick::Views::default(),
            // Counted by the first round.
            rare: tick::Rare::ALL,
            scanned: None,
            epoch_floor: recovered.epoch_floor,
        };
        let effects = model.recover(recovered, now);
        (model, effects)
    }

    fn recover(&mut self, recovered: &Recovered, now: Millis) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (server, record) in &recovered.maintenance {
            if let Some(entry) = self.server_mut(server) {
                entry.maintenance = Some(Box::new(record.clone()));
            }
        }
        for (server, epoch) in &recovered.epochs {
            if let Some(entry) = self.server_mut(server) {
                entry.highest_epoch = entry.highest_epoch.max(*epoch);
            }
        }
        let ttl = self.timings.lease_ttl;
        let lent: HashMap<&ServerId, &LoanHolder> = recovered
            .lent
            .iter()
            .map(|(server, holder)| (server, holder))
            .collect();
        for (server, account, epoch) in &recovered.leases {
            let holder = lent.get(server).copied();
            let account_ix = match holder {
                Some(holder) => Some(self.guest_ix(holder)),
                None => self.account_index.get(account).copied(),
            };
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
                    // A loan gets one TTL for its borrower to renew it, as a lease does
                    // for its node.
                    let loan = holder.map(|holder| LoanTerms {
                        borrower: holder.borrower.clone(),
                        expires_at: now + ttl,
                        recall_by: None,
                        relayed_at: None,
                    });
                    entry.lease = Some(Lease {
                        account: account_ix,
                        epoch: *epoch,
                        expires_at: now + ttl,
                        granted_at: now,
                        revoked: false,
                        loan: loan.map(Box::new),
                    });
                    entry.phase = Phase::Serving;
                    // Counts as heard from: the node gets one TTL to come back, however
                    // few heartbeats that is (a restart, or a standby gateway taking over
                    // on another address: docs/ha.md).
                    entry.last_heartbeat = Some(now);
                    entry.back_by = Some(now + ttl);
                    // A machine's lease is granted before its re-image, so the image that
                    // may be running is the one of this lease's epoch: its agent, coming
                    // back with that boot's claim, reconnects as the same image (M-1 still
                    // refuses any other epoch or token).
                    if let Some(machine) = entry.machine.as_mut() {
                        machine.image = Some((account_ix, *epoch));
                    }
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
        effects.extend(self.recover_borrowed(&recovered.borrowed, now));
        effects
    }

    pub fn site(&self) -> &SiteId {
        &self.site
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Every account entry by index: home accounts, tombstones and guests (see
    /// [`AccountEntry::is_home`]).
    pub fn accounts(&self) -> &[AccountEntry] {
        &self.accounts
    }

    pub fn borrowing(&self) -> &Borrowing {
        &self.borrowing
    }

    pub fn lending(&self) -> &Lending {
        &self.lending
    }

    pub fn servers(&self) -> &[ServerEntry] {
        &self.servers
    }

    pub fn server(&self, id: &ServerId) -> Option<&ServerEntry> {
        self.server_index.get(id).map(|ix| &self.servers[*ix])
    }

    /// Where `id` stands in this model, for inputs that come often (heartbeats): the shell
    /// looks a server up once, when it registers, and hands the index in after.
    pub fn server_ix(&self, id: &ServerId) -> Option<ServerIx> {
        self.server_index.get(id).map(|ix| ServerIx(*ix as u32))
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

    /// Where this site stands with `account` (from the master's ownership core). Loses
    /// nothing by itself: a site that no longer owns an account stops serving it at the
    /// next round (docs/ownership.md).
    pub fn set_owner(&mut self, account: &AccountId, owner: Owner) {
        if let Some(ix) = self.account_index.get(account).copied() {
            self.set_owner_at(ix, owner);
        }
    }

    /// [`Self::set_owner`] of the account at `ix`.
    pub fn set_owner_at(&mut self, ix: AccountIx, owner: Owner) {
        if let Some(entry) = self.accounts.get_mut(ix as usize) {
            entry.owner = owner;
        }
    }

    /// A peer's account this site now owns: served like its own from the next round.
    /// Returns its index when it is new here (the master starts its Group).
    pub fn adopt(&mut self, spec: &AccountSpec, owner: Owner) -> Option<AccountIx> {
        match self.account_index.get(&spec.name).copied() {
            Some(ix) => {
                let entry = &mut self.accounts[ix as usize];
                entry.owner = owner;
                if entry.adopted_from.is_some() && entry.removed {
                    entry.removed = false;
                    entry.config = account_from_spec(spec, true);
                    return Some(ix);
                }
                None
            }
            None => {
                let ix = self.accounts.len() as AccountIx;
                let mut entry = AccountEntry::new(account_from_spec(spec, true));
                entry.owner = owner;
                entry.adopted_from = Some(spec.home.clone());
                self.accounts.push(entry);
                self.account_index.insert(spec.name.clone(), ix);
                Some(ix)
            }
        }
    }

    /// The Group actor's demand for an account.
    /// Some account was short of its demand in the last round (the arbiter found no server
    /// for it, free or preemptible).
    pub fn pressed(&self) -> bool {
        self.accounts
            .iter()
            .any(|account| !account.removed && account.shortfall.is_some())
    }

    pub fn set_demand(&mut self, account: AccountIx, demand: u32) {
        if let Some(entry) = self.accounts.get_mut(account as usize)
            && !entry.removed
        {
            entry.demand = demand.clamp(entry.config.min_servers, entry.config.max_servers);
        }
    }

    /// Per account: (total load of its serving servers, how many serve it), borrowed
    /// servers included (their load is relayed by the lender).
    pub fn account_loads(&self) -> Vec<(f64, u32)> {
        let mut loads = vec![(0.0, 0u32); self.accounts.len()];
        for server in &self.servers {
            add_load(&mut loads, server);
        }
        self.add_borrowed_loads(&mut loads);
        loads
    }

    fn add_borrowed_loads(&self, loads: &mut [(f64, u32)]) {
        for loan in self.borrowing.serving() {
            if let Some(slot) = loads.get_mut(loan.account as usize) {
                slot.0 += loan.load.unwrap_or(0.0).max(0.0);
                slot.1 += 1;
            }
        }
    }

    /// The pointer that makes a server run `account` under `epoch`.
    fn pointer(&self, account: AccountIx, epoch: Epoch) -> InitPointer {
        let config = &self.accounts[account as usize].config;
        InitPointer {
            account: config.name.clone(),
            software: software_of(config, self.timings.workload_stop_timeout),
            data: data_of(config),
            epoch,
            // The shell adds them as the pointer leaves for its node: the core holds none.
            secrets: Default::default(),
        }
    }
}

/// Counts a server's load to the account it serves, if it serves one.
#[inline]
fn add_load(loads: &mut [(f64, u32)], server: &ServerEntry) {
    if let Some(account) = server.serving() {
        let slot = &mut loads[account as usize];
        slot.0 += server.load.unwrap_or(0.0).max(0.0);
        slot.1 += 1;
    }
}

/// How long after start a site waits before it borrows: one lease TTL (a restarted
/// gateway's nodes renew within it) plus the failure-detection window (a node that has not
/// come back by then is as good as failed).
pub fn startup_grace(timings: &Timings) -> Duration {
    timings.lease_ttl + timings.node_heartbeat_interval * timings.heartbeat_misses_before_failed
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
        peer: None,
        term: None,
        reason,
    })
}

/// An audit entry about a loan, naming the other site.
fn loan_audit(
    kind: AuditKind,
    server: &ServerId,
    account: &AccountId,
    peer: &SiteId,
    epoch: Epoch,
    reason: String,
) -> Effect {
    Effect::Audit(AuditEntry {
        kind,
        server: Some(server.clone()),
        account: Some(account.clone()),
        from: None,
        epoch: Some(epoch),
        peer: Some(peer.clone()),
        term: None,
        reason,
    })
}
