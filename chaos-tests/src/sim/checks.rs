//! The invariants, checked as the evidence is written: after every event the new lines of
//! every node's event log and the new records of every gateway's audit log are read, and
//! each is judged at once, so a violation stops the run at the event that showed it.
//! Evidence only: node logs (the same line checker the real-process tier uses), audit
//! records, the journals; never what a core believes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch};
use leasehold_node::event_log::EventKind;
use leasehold_node::evidence::{LogChecker, Violation};
use leasehold_site_gateway::model::effects::AuditKind;
use serde::Serialize;

use super::gateway::SimGateway;
use super::node::SimNode;

/// How long after its lease a node may still be stopping its workload: the simulated
/// stop takes at most 100 ms and starts 250 ms before the lease ends, so any stop after
/// the lease's end is a violation.
const STOP_SLACK: Duration = Duration::ZERO;

pub const ONE_ACCOUNT_PER_SERVER: &str = "one-account-per-server";
pub const EPOCHS_NEVER_REUSED: &str = "epochs-never-reused";
pub const ONE_OWNER_PER_ACCOUNT: &str = "one-owner-per-account";
pub const JOURNAL_BEFORE_ACT: &str = "journaled-before-acted";
pub const SLA_AFTER_CALM: &str = "sla-restored-after-calm";
pub const MEMBERS_AFTER_CALM: &str = "members-settled-after-calm";

pub const ALL: [&str; 6] = [
    ONE_ACCOUNT_PER_SERVER,
    EPOCHS_NEVER_REUSED,
    ONE_OWNER_PER_ACCOUNT,
    JOURNAL_BEFORE_ACT,
    SLA_AFTER_CALM,
    MEMBERS_AFTER_CALM,
];

#[derive(Debug, Clone, Serialize)]
pub struct InvariantReport {
    pub name: &'static str,
    pub passed: bool,
    pub violations: usize,
    /// The first violations, in words.
    pub evidence: Vec<String>,
}

/// A workload running now, and the site it runs for.
#[derive(Debug, Clone)]
struct Run {
    node: usize,
    epoch: Epoch,
    for_site: usize,
}

pub struct Checker {
    lines: Vec<LogChecker>,
    checked: Vec<usize>,
    audits_read: Vec<usize>,
    accepted: Vec<BTreeMap<Epoch, AccountId>>,
    runs: BTreeMap<AccountId, Vec<Run>>,
    /// (node, epoch) lent to the borrower site.
    lent: BTreeMap<(usize, Epoch), usize>,
    handed_over: BTreeSet<(usize, Epoch)>,
    violations: BTreeMap<&'static str, Vec<String>>,
}

impl Checker {
    pub fn new(nodes: usize, sites: usize) -> Checker {
        Checker {
            lines: (0..nodes).map(|_| LogChecker::new(STOP_SLACK)).collect(),
            checked: vec![0; nodes],
            audits_read: vec![0; sites],
            accepted: vec![BTreeMap::new(); nodes],
            runs: BTreeMap::new(),
            lent: BTreeMap::new(),
            handed_over: BTreeSet::new(),
            violations: BTreeMap::new(),
        }
    }

    pub fn failed(&self) -> bool {
        self.violations.values().any(|found| !found.is_empty())
    }

    fn violation(&mut self, invariant: &'static str, what: String) {
        self.violations.entry(invariant).or_default().push(what);
    }

    /// Reads what was written since the last call: audit records first (a lease is
    /// audited before its pointer goes out), then node log lines. The records of one
    /// commit are one instant: the hand-overs of a batch are judged together.
    pub fn read(&mut self, now_us: u64, gateways: &[SimGateway], nodes: &[SimNode]) {
        let mut handed: BTreeSet<AccountId> = BTreeSet::new();
        for (site, gateway) in gateways.iter().enumerate() {
            for seen in &gateway.audit[self.audits_read[site]..] {
                let entry = &seen.entry;
                let (Some(server), Some(epoch)) = (&entry.server, entry.epoch) else {
                    continue;
                };
                let Some(node) = nodes.iter().position(|n| n.server == *server) else {
                    continue;
                };
                match entry.kind {
                    AuditKind::Lend => {
                        let borrower = entry.peer.as_ref().and_then(|peer| {
                            gateways.iter().position(|g| g.config.site.name == *peer)
                        });
                        if let Some(borrower) = borrower {
                            self.lent.insert((node, epoch), borrower);
                        }
                    }
                    AuditKind::Handover => {
                        self.handed_over.insert((node, epoch));
                        if let Some(account) = &entry.account {
                            self.switch_run(account, node, epoch, nodes[node].site);
                            handed.insert(account.clone());
                        }
                    }
                    _ => {}
                }
            }
            self.audits_read[site] = gateway.audit.len();
        }
        for account in handed {
            self.check_handed(&account, nodes, now_us);
        }
        for (index, node) in nodes.iter().enumerate() {
            let from = self.checked[index];
            for line in &node.log[from..] {
                let event = &line.event;
                for found in self.lines[index].step(event) {
                    let invariant = match found {
                        Violation::EpochNotGreater { .. } => EPOCHS_NEVER_REUSED,
                        _ => ONE_ACCOUNT_PER_SERVER,
                    };
                    self.violations
                        .entry(invariant)
                        .or_default()
                        .push(format!("{}: {found} at {} us", node.server, line.true_us));
                }
                match &event.kind {
                    EventKind::PointerAccepted { account, epoch } => {
                        if let Some(before) = self.accepted[index].insert(*epoch, account.clone())
                            && before != *account
                        {
                            self.violations.entry(EPOCHS_NEVER_REUSED).or_default().push(format!(
                                "{}: {epoch} accepted for {before} and again for {account} (seq {})",
                                node.server, event.seq
                            ));
                        }
                        // D-1: the site's gateway journaled the lease before it sent the
                        // pointer, so its journal holds this epoch or a later one.
                        let journaled = gateways[node.site].journal.highest_epoch(&node.server);
                        if journaled.is_none_or(|highest| highest < *epoch) {
                            self.violations.entry(JOURNAL_BEFORE_ACT).or_default().push(format!(
                                "{}: accepted {epoch} for {account} (seq {}) but {}'s journal holds {journaled:?}",
                                node.server, event.seq, gateways[node.site].config.site.name
                            ));
                        }
                    }
                    EventKind::WorkloadStarting { account, epoch, .. } => {
                        let for_site = if self.handed_over.contains(&(index, *epoch)) {
                            node.site
                        } else {
                            self.lent
                                .get(&(index, *epoch))
                                .copied()
                                .unwrap_or(node.site)
                        };
                        self.start_run(account, index, *epoch, for_site, nodes, line.true_us);
                    }
                    EventKind::WorkloadStopped { account, epoch, .. } => {
                        self.end_run(account, index, *epoch);
                    }
                    _ => {}
                }
            }
            self.checked[index] = node.log.len();
        }
    }

    /// `removed` lines were dropped from the front of node `node`'s log (read already).
    pub fn lines_trimmed(&mut self, node: usize, removed: usize) {
        self.checked[node] -= removed;
    }

    /// Every audit record of `site` was read and dropped.
    pub fn audits_trimmed(&mut self, site: usize) {
        self.audits_read[site] = 0;
    }

    /// A workload died with its crashed agent (no line says so until the next agent
    /// reaps it): it no longer runs for anyone.
    pub fn died(&mut self, node: usize, account: &AccountId, epoch: Epoch) {
        self.end_run(account, node, epoch);
    }

    fn start_run(
        &mut self,
        account: &AccountId,
        node: usize,
        epoch: Epoch,
        for_site: usize,
        nodes: &[SimNode],
        now_us: u64,
    ) {
        let runs = self.runs.entry(account.clone()).or_default();
        let clash: Vec<String> = runs
            .iter()
            .filter(|run| run.for_site != for_site)
            .map(|run| {
                format!(
                    "{account} ran for site {} on {} ({}) and starts for site {for_site} on {} ({epoch}) at {now_us} us",
                    run.for_site, nodes[run.node].server, run.epoch, nodes[node].server
                )
            })
            .collect();
        runs.push(Run {
            node,
            epoch,
            for_site,
        });
        for what in clash {
            self.violation(ONE_OWNER_PER_ACCOUNT, what);
        }
    }

    fn switch_run(&mut self, account: &AccountId, node: usize, epoch: Epoch, home: usize) {
        if let Some(run) = self
            .runs
            .get_mut(account)
            .and_then(|runs| runs.iter_mut().find(|r| r.node == node && r.epoch == epoch))
        {
            run.for_site = home;
        }
    }

    /// After a hand-over: every run of the account is for one site.
    fn check_handed(&mut self, account: &AccountId, nodes: &[SimNode], now_us: u64) {
        let Some(runs) = self.runs.get(account) else {
            return;
        };
        let sites: BTreeSet<usize> = runs.iter().map(|run| run.for_site).collect();
        if sites.len() > 1 {
            let runs: Vec<String> = runs
                .iter()
                .map(|run| {
                    format!(
                        "{} ({}) for site {}",
                        nodes[run.node].server, run.epoch, run.for_site
                    )
                })
                .collect();
            self.violation(
                ONE_OWNER_PER_ACCOUNT,
                format!(
                    "{account}: after a hand-over at {now_us} us it runs on {}",
                    runs.join(", ")
                ),
            );
        }
    }

    fn end_run(&mut self, account: &AccountId, node: usize, epoch: Epoch) {
        if let Some(runs) = self.runs.get_mut(account) {
            runs.retain(|run| !(run.node == node && run.epoch == epoch));
        }
    }

    /// Liveness after the calm: every account runs on at least its SLA minimum of
    /// servers (every simulated site has the capacity for it).
    pub fn after_calm(&mut self, gateways: &[SimGateway], nodes: &[SimNode]) {
        for gateway in gateways {
            for account in &gateway.config.accounts {
                let serving = nodes
                    .iter()
                    .filter(|node| node.running().is_some_and(|(a, _)| *a == account.name))
                    .count();
                if serving < account.min_servers as usize {
                    self.violation(
                        SLA_AFTER_CALM,
                        format!(
                            "{} runs on {serving} servers after the calm, below its minimum {}",
                            account.name, account.min_servers
                        ),
                    );
                }
            }
        }
    }

    /// Liveness of a membership change: after the calm, every site of the last change
    /// runs the set the operator edited into the configs, from the `members` records its
    /// journal holds (`runs`: each site's last journaled set, `None` if it never took one).
    pub fn members_after_calm(&mut self, target: &[usize], runs: &[Option<Vec<usize>>]) {
        for site in target {
            if runs[*site].as_deref() != Some(target) {
                self.violation(
                    MEMBERS_AFTER_CALM,
                    format!(
                        "site {site} runs {:?} after the calm; the configs name {target:?}",
                        runs[*site]
                    ),
                );
            }
        }
    }

    pub fn report(&self) -> Vec<InvariantReport> {
        ALL.iter()
            .map(|name| {
                let found = self.violations.get(name).map(Vec::as_slice).unwrap_or(&[]);
                InvariantReport {
                    name,
                    passed: found.is_empty(),
                    violations: found.len(),
                    evidence: found.iter().take(20).cloned().collect(),
                }
            })
            .collect()
    }
}
