//! The invariants a campaign is judged by, each from the evidence the system left: node
//! event logs (`events.jsonl` in each node's work dir), gateway audit logs (`/v1/audit`,
//! read back from each gateway's journal), the admin API polls and the load's failures.
//! Never from what a process says about itself at the end. docs/chaos.md lists each
//! check with the evidence it reads.

use std::collections::BTreeMap;
use std::path::PathBuf;

use leasehold_node::event_log::EventKind;
use leasehold_node::evidence::Violation;
use serde_json::Value;

use super::faults::{Applied, Restarted};
use super::layout::{RECOVERY_BOUND_MS, account_name};
use super::poll::{Sample, Timeline, all_at_minimum};
use crate::harness::evidence::{node_events, owner_overlaps, violations};
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
    let node_violations = node_violations(evidence);
    let (sla, recoveries) = sla_restored_after_each_fault(evidence);
    let mut verdicts = vec![
        one_account_per_server(&node_violations),
        one_owner_per_account(evidence),
        epochs_never_reused(evidence, &node_violations),
        sla,
        journaled_leases_survive_restart(evidence),
        requests_within_outage(evidence),
        faults_applied(evidence),
    ];
    if evidence.faults.iter().any(|record| record.config.is_some()) {
        verdicts.push(config_edits_refused_or_applied(evidence));
    }
    Judgement {
        verdicts,
        recoveries,
    }
}

fn verdict(name: &'static str, failures: Vec<String>, passes: Vec<String>) -> Verdict {
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
fn works(federation: &Federation) -> Vec<(String, PathBuf)> {
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

/// Every node log's violations of S-1..S-3, or the error reading them.
fn node_violations(evidence: &Evidence) -> Result<Vec<(String, Violation)>, String> {
    let works: Vec<PathBuf> = works(evidence.federation)
        .into_iter()
        .map(|(_, work)| work)
        .collect();
    let works: Vec<&std::path::Path> = works.iter().map(PathBuf::as_path).collect();
    violations(&works, std::time::Duration::from_millis(STOP_SLACK_MS))
}

fn is_epoch_violation(violation: &Violation) -> bool {
    matches!(violation, Violation::EpochNotGreater { .. })
}

/// (a) No server ever ran two accounts' workloads, nor one without its lease or past it
/// (S-1, S-3), by `check_server_log` over every node's event log.
fn one_account_per_server(found: &Result<Vec<(String, Violation)>, String>) -> Verdict {
    let failures = match found {
        Ok(found) => found
            .iter()
            .filter(|(_, violation)| !is_epoch_violation(violation))
            .map(|(work, violation)| format!("{work}: {violation}"))
            .collect(),
        Err(error) => vec![format!("cannot read the node logs: {error}")],
    };
    verdict(
        "one-account-per-server",
        failures,
        vec!["every node's event log: one workload at a time, each under a live lease".into()],
    )
}

/// (b) No account ran at two sites at once, by `owner_overlaps` over every node's log.
fn one_owner_per_account(evidence: &Evidence) -> Verdict {
    let federation = evidence.federation;
    let sites: Vec<(String, Vec<PathBuf>)> = federation
        .sites
        .iter()
        .map(|site| {
            let works = site
                .servers
                .iter()
                .map(|(server, _)| federation.work(server))
                .collect();
            (site.name.clone(), works)
        })
        .collect();
    let mut failures = Vec::new();
    for site in 0..federation.sites.len() {
        let account = account_name(site);
        match owner_overlaps(&sites, &account, evidence.until_mono_ns) {
            Ok(overlaps) => failures.extend(overlaps),
            Err(error) => failures.push(format!("cannot read the node logs: {error}")),
        }
    }
    verdict(
        "one-owner-per-account",
        failures,
        vec!["no two sites' runs of one account overlap in any node's event log".into()],
    )
}

/// (c) Per server, every accepted epoch is above the ones before it (S-2), and no
/// (server, epoch) was accepted for two accounts, from every node's `pointer_accepted`.
fn epochs_never_reused(
    evidence: &Evidence,
    found: &Result<Vec<(String, Violation)>, String>,
) -> Verdict {
    let mut failures: Vec<String> = match found {
        Ok(found) => found
            .iter()
            .filter(|(_, violation)| is_epoch_violation(violation))
            .map(|(work, violation)| format!("{work}: {violation}"))
            .collect(),
        Err(error) => vec![format!("cannot read the node logs: {error}")],
    };
    let mut accepted = 0usize;
    for (_, work) in works(evidence.federation) {
        let events = match node_events(&work) {
            Ok(events) => events,
            Err(error) => {
                failures.push(error);
                continue;
            }
        };
        let mut granted: BTreeMap<u64, String> = BTreeMap::new();
        for event in events {
            if let EventKind::PointerAccepted { account, epoch } = event.kind {
                accepted += 1;
                let account = account.to_string();
                if let Some(before) = granted.insert(epoch.value(), account.clone())
                    && before != account
                {
                    failures.push(format!(
                        "{}: {epoch} accepted for {before} and again for {account} (seq {})",
                        event.server, event.seq
                    ));
                }
            }
        }
    }
    verdict(
        "epochs-never-reused",
        failures,
        vec![format!(
            "{accepted} accepted pointers: epochs grew on every server, none for two accounts"
        )],
    )
}

/// (d) After each fault's end every account is back at its SLA minimum, as the polls saw
/// it, within [`RECOVERY_BOUND_MS`]; and it still is when the next fault starts.
fn sla_restored_after_each_fault(evidence: &Evidence) -> (Verdict, Vec<Recovery>) {
    let federation = evidence.federation;
    let sites: Vec<String> = federation.sites.iter().map(|s| s.name.clone()).collect();
    let accounts: Vec<String> = (0..sites.len()).map(account_name).collect();
    let timeline = Timeline::new(&evidence.samples, &sites);
    let instants = timeline.instants();
    let at_minimum = |at: u64| all_at_minimum(&timeline.standing_at(&accounts, at));
    let mut failures = Vec::new();
    let mut passes = Vec::new();
    let mut recoveries = Vec::new();
    for (ix, record) in evidence.faults.iter().enumerate() {
        let next = evidence
            .faults
            .get(ix + 1)
            .map_or(evidence.duration_ms, |next| next.started_ms);
        let label = format!("{} {}", record.fault.kind, record.fault.target);
        let within: Vec<u64> = instants
            .iter()
            .copied()
            .filter(|at| (record.started_ms..next).contains(at))
            .collect();
        let first_below = within.iter().copied().find(|at| !at_minimum(*at));
        let outage_ms = match first_below {
            None => Some(0),
            Some(below) => within
                .iter()
                .copied()
                .find(|at| *at > below && at_minimum(*at))
                .map(|back| back - below),
        };
        let after_end_ms = within
            .iter()
            .copied()
            .find(|at| *at >= record.ended_ms && at_minimum(*at))
            .map(|back| back - record.ended_ms);
        // Still at the minimum in the last second before the next fault (or the end):
        // what a failback after this fault did is judged too.
        let settled = within
            .iter()
            .copied()
            .filter(|at| *at + 1000 >= next)
            .any(at_minimum);
        recoveries.push(Recovery {
            outage_ms,
            after_end_ms,
        });
        let measured = format!(
            "{label}: below the minimum for {} ms from the first dip; at it {} ms after the fault ended",
            outage_ms.map_or("?".into(), |ms| ms.to_string()),
            after_end_ms.map_or("never".into(), |ms| ms.to_string())
        );
        match after_end_ms {
            Some(ms) if ms <= RECOVERY_BOUND_MS && settled => passes.push(measured),
            Some(ms) if ms <= RECOVERY_BOUND_MS => failures.push(format!(
                "{measured}; but not at the minimum in the second before the next fault ({}: {:?})",
                next,
                timeline.standing_at(&accounts, next.saturating_sub(1))
            )),
            _ => failures.push(format!(
                "{measured}; bound {RECOVERY_BOUND_MS} ms; at the bound: {:?}",
                timeline.standing_at(&accounts, record.ended_ms + RECOVERY_BOUND_MS)
            )),
        }
    }
    (
        verdict("sla-restored-after-each-fault", failures, passes),
        recoveries,
    )
}

/// Audit kinds that end a lease (and remove it from the journal).
const LEASE_ENDINGS: [&str; 3] = ["lease_ended", "server_failed", "release"];

/// (e) For each gateway stopped and restarted: every lease it listed in `/v1/servers`
/// just before it stopped, whose pointer the node had accepted by then (so it was
/// journaled, D-1), is in its audit log after the restart as `recovered` (read back from
/// the journal), or was ended by an audited reason before the stop.
fn journaled_leases_survive_restart(evidence: &Evidence) -> Verdict {
    let mut failures = Vec::new();
    let mut passes = Vec::new();
    for record in &evidence.faults {
        let Some(restarted) = &record.restarted else {
            continue;
        };
        let label = format!("{} {}", record.fault.kind, record.fault.target);
        if restarted.restarted_wall_ms.is_none() {
            failures.push(format!("{label}: the gateway did not come back"));
            continue;
        }
        let audit = match evidence
            .audits
            .iter()
            .find(|(site, _)| *site == restarted.site)
        {
            Some((_, Ok(audit))) => audit,
            Some((_, Err(error))) => {
                failures.push(format!("{label}: cannot read the audit log: {error}"));
                continue;
            }
            None => continue,
        };
        match leases_kept(evidence.federation, restarted, audit) {
            Ok((judged, lost)) if lost.is_empty() => passes.push(format!(
                "{label}: {judged} journaled leases, each recovered after the restart or ended before it"
            )),
            Ok((_, lost)) => failures.extend(lost.into_iter().map(|lost| format!("{label}: {lost}"))),
            Err(error) => failures.push(format!("{label}: {error}")),
        }
    }
    if failures.is_empty() && passes.is_empty() {
        passes.push("no gateway was restarted".into());
    }
    verdict("journaled-leases-survive-restart", failures, passes)
}

/// How many listed leases were judged, and one line per lease lost.
fn leases_kept(
    federation: &Federation,
    restarted: &Restarted,
    audit: &[Value],
) -> Result<(usize, Vec<String>), String> {
    let matches = |record: &Value, server: &str, epoch: u64| {
        record["server"] == server && record["epoch"].as_u64() == Some(epoch)
    };
    let mut judged = 0;
    let mut lost = Vec::new();
    for lease in &restarted.leases_before {
        let accepted = node_events(&federation.work(&lease.server))?
            .iter()
            .any(|event| {
                event.wall_ms <= restarted.listed_wall_ms
                    && matches!(&event.kind, EventKind::PointerAccepted { epoch, .. } if epoch.value() == lease.epoch)
            });
        if !accepted {
            // Not yet acted on, so perhaps not yet journaled: nothing to judge.
            continue;
        }
        judged += 1;
        let recovered = audit.iter().any(|record| {
            record["kind"] == "recovered"
                && matches(record, &lease.server, lease.epoch)
                && record["wall_ms"].as_u64() >= Some(restarted.stopped_wall_ms)
        });
        let ended = audit.iter().any(|record| {
            LEASE_ENDINGS.iter().any(|kind| record["kind"] == *kind)
                && matches(record, &lease.server, lease.epoch)
                && record["wall_ms"].as_u64() <= Some(restarted.stopped_wall_ms)
        });
        if !recovered && !ended {
            lost.push(format!(
                "the lease of {} to {} under e{} was listed and its pointer accepted before the stop, but after the restart the audit log has it neither recovered nor ended",
                lease.server, lease.account, lease.epoch
            ));
        }
    }
    Ok((judged, lost))
}

/// (f) Requests failed only while a fault disturbed the account: within a fault's window
/// (from [`LOAD_SLACK_MS`] before it started to the recovery bound after it ended), or,
/// after a fault, near an instant at which the polls saw the account below its minimum
/// or changing owner (a failback once its home is back comes some seconds after the
/// fault, when the home's peers have seen it up for `failback_after`). A request that
/// fails while the polls show the account settled, or before any fault, is unexplained.
fn requests_within_outage(evidence: &Evidence) -> Verdict {
    let windows: Vec<(u64, u64)> = evidence
        .faults
        .iter()
        .map(|record| {
            (
                record.started_ms.saturating_sub(LOAD_SLACK_MS),
                record.ended_ms + RECOVERY_BOUND_MS,
            )
        })
        .collect();
    let first_fault = evidence.faults.first().map_or(u64::MAX, |r| r.started_ms);
    let disturbed = disturbances(evidence, first_fault);
    let (mut in_faults, mut in_disturbances) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (account, at) in &evidence.load_failures {
        if windows.iter().any(|(from, to)| (*from..=*to).contains(at)) {
            in_faults += 1;
        } else if disturbed.get(account).is_some_and(|instants| {
            // The load refreshes its endpoints every second and gives a request a second.
            let from = at.saturating_sub(DISTURBANCE_REACH_MS);
            instants
                .iter()
                .any(|instant| (from..=at + POLL_REACH_MS).contains(instant))
        }) {
            in_disturbances += 1;
        } else {
            failures.push(format!(
                "a request to {account} failed at +{at} ms, outside every fault's window, with the account settled in the polls"
            ));
        }
    }
    let mut passes: Vec<String> = evidence
        .load_counts
        .iter()
        .map(|(account, counts)| {
            format!(
                "{account}: {} sent, {} ok, {} failed",
                counts.sent, counts.ok, counts.failed
            )
        })
        .collect();
    passes.push(format!(
        "{in_faults} failures within fault windows, {in_disturbances} near a failback or dip the polls saw after a fault"
    ));
    verdict("requests-within-outage", failures, passes)
}

/// How far before a failed request a disturbance may be and still explain it: the load's
/// endpoint refresh (1 s), its request timeout (1 s), and a poll period.
const DISTURBANCE_REACH_MS: u64 = 2250;
/// How far after: a poll period, and the freshness allowed to an answer.
const POLL_REACH_MS: u64 = 1000;

/// Per account, the poll instants from `since` on at which it was below its minimum or its
/// owner changed from the instant before.
fn disturbances(evidence: &Evidence, since: u64) -> BTreeMap<String, Vec<u64>> {
    let sites: Vec<String> = evidence
        .federation
        .sites
        .iter()
        .map(|site| site.name.clone())
        .collect();
    let accounts: Vec<String> = (0..sites.len()).map(account_name).collect();
    let timeline = Timeline::new(&evidence.samples, &sites);
    let mut found: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut owners_before: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for at in timeline.instants() {
        for (account, standing) in timeline.standing_at(&accounts, at) {
            let below = standing.owners.is_empty() || standing.servers < standing.min_servers;
            let moved = owners_before
                .insert(account.clone(), standing.owners.clone())
                .is_some_and(|before| before != standing.owners);
            if at >= since && (below || moved) {
                found.entry(account).or_default().push(at);
            }
        }
    }
    found
}

/// Every fault was applied and healed as scheduled.
fn faults_applied(evidence: &Evidence) -> Verdict {
    let failures = evidence
        .faults
        .iter()
        .flat_map(|record| {
            record
                .errors
                .iter()
                .map(move |error| format!("{} {}: {error}", record.fault.kind, record.fault.target))
        })
        .collect();
    verdict(
        "faults-applied",
        failures,
        vec![format!(
            "{} faults applied and healed",
            evidence.faults.len()
        )],
    )
}

/// An invalid config edit was refused with the site running on; a valid one took effect
/// and was undone, as `/v1/status` and `/v1/accounts` showed.
fn config_edits_refused_or_applied(evidence: &Evidence) -> Verdict {
    let mut failures = Vec::new();
    let mut passes = Vec::new();
    for record in &evidence.faults {
        let Some(config) = &record.config else {
            continue;
        };
        let site = &evidence.federation.sites[config.site].name;
        for (what, outcome) in [
            ("invalid edit", &config.invalid_refused),
            ("valid edit", &config.valid_applied),
            ("undo", &config.undone),
        ] {
            match outcome {
                Ok(seen) => passes.push(format!("{site} {what}: {seen}")),
                Err(error) => failures.push(format!("{site} {what}: {error}")),
            }
        }
    }
    verdict("config-edits-refused-or-applied", failures, passes)
}
