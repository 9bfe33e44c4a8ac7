//! The invariants a campaign is judged by, each from the evidence the system left: node
//! event logs (`events.jsonl` in each node's work dir), gateway audit logs (`/v1/audit`,
//! read back from each gateway's journal), the admin API polls and the load's failures.
//! Never from what a process says about itself at the end. docs/chaos.md lists each
//! check with the evidence it reads.
//!
//! - [`nodes`]: (a) one account per server, (b) one owner per account, (c) epochs never
//!   reused, from node event logs.
//! - [`sla`]: (d) the SLA minimum restored after each fault, from the admin polls.
//! - [`restart`]: (e) journaled leases survive a gateway restart, from audit logs.
//! - [`requests`]: (f) failed requests only within outages, from the load and the polls.
//! - [`applied`]: every fault applied; config edits refused or applied.
//! - [`members`]: (g) member changes took effect and settled, from audit logs.
//! - [`takeover`]: (h) takeovers at a site of standbys seen by nobody, from audit logs
//!   and node logs.

mod applied;
mod members;
mod nodes;
mod requests;
mod restart;
mod sla;
mod takeover;

use std::path::PathBuf;

use serde_json::Value;

use super::faults::Applied;
use super::poll::Sample;
use crate::harness::federation::Federation;
use crate::harness::load::LoadCounts;

/// How long after its lease a node may still be stopping its workload (S-1): the stop
/// itself plus scheduling on two loaded cores (`tests/failover.rs` allows 100 ms on a
/// quieter machine).
pub const STOP_SLACK_MS: u64 = 250;
/// Load failures this long before a fault starts count as its own (the load thread's
/// request in flight, a poll's timing).
pub const LOAD_SLACK_MS: u64 = 1000;
/// The most evidence lines an invariant keeps (the count of the rest is said).
const MAX_LINES: usize = 40;

/// Everything a campaign gathered.
pub struct Evidence<'a> {
    pub federation: &'a Federation,
    /// The accounts of the sites that home one (a `members` spare homes none).
    pub accounts: Vec<String>,
    pub samples: Vec<Sample>,
    pub faults: Vec<Applied>,
    /// Each site's whole audit log, or why it could not be read.
    pub audits: Vec<(usize, Result<Vec<Value>, String>)>,
    /// (account, ms from the campaign's start) of each failed request.
    pub load_failures: Vec<(String, u64)>,
    pub load_counts: Vec<(String, LoadCounts)>,
    pub duration_ms: u64,
    pub start_mono_ns: u64,
    pub until_mono_ns: u64,
}

/// One invariant's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: &'static str,
    pub passed: bool,
    pub evidence: Vec<String>,
}

/// How the federation stood around one fault, from the polls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// From the first instant some account was below its minimum (at or after the fault's
    /// start) to the next instant every account was at it; 0 if none dipped.
    pub outage_ms: Option<u64>,
    /// From the fault's end to the first instant every account was at its minimum.
    pub after_end_ms: Option<u64>,
}

/// Every verdict, and each fault's recovery.
pub struct Judgement {
    pub verdicts: Vec<Verdict>,
    pub recoveries: Vec<Recovery>,
}

pub fn check_all(evidence: &Evidence) -> Judgement {
    let node_violations = nodes::node_violations(evidence);
    let (sla, recoveries) = sla::sla_restored_after_each_fault(evidence);
    let mut verdicts = vec![
        nodes::one_account_per_server(&node_violations),
        nodes::one_owner_per_account(evidence),
        nodes::epochs_never_reused(evidence, &node_violations),
        sla,
        restart::journaled_leases_survive_restart(evidence),
        requests::requests_within_outage(evidence),
        applied::faults_applied(evidence),
    ];
    if evidence.faults.iter().any(|record| record.config.is_some()) {
        verdicts.push(applied::config_edits_refused_or_applied(evidence));
    }
    if evidence.faults.iter().any(|record| record.member.is_some()) {
        verdicts.push(members::member_changes_took_effect(evidence));
    }
    if evidence
        .faults
        .iter()
        .any(|record| record.fault.kind == super::schedule::FaultKind::GatewayTakeover)
    {
        verdicts.push(takeover::takeovers_seen_by_nobody(evidence));
    }
    Judgement {
        verdicts,
        recoveries,
    }
}

pub(crate) fn verdict(name: &'static str, failures: Vec<String>, passes: Vec<String>) -> Verdict {
    let passed = failures.is_empty();
    let mut lines = if passed { passes } else { failures };
    if lines.len() > MAX_LINES {
        let more = lines.len() - MAX_LINES;
        lines.truncate(MAX_LINES);
        lines.push(format!("... and {more} more"));
    }
    Verdict {
        name,
        passed,
        evidence: lines,
    }
}

/// Every node's work dir, with its site's name.
pub(crate) fn works(federation: &Federation) -> Vec<(String, PathBuf)> {
    federation
        .sites
        .iter()
        .flat_map(|site| {
            site.servers
                .iter()
                .map(|(server, _)| (site.name.clone(), federation.work(server)))
        })
        .collect()
}
