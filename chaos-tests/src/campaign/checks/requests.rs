//! Invariant (f): requests fail only while a fault disturbs their account, judged from the
//! load's failure times and the admin polls.

use std::collections::BTreeMap;

use super::{Evidence, LOAD_SLACK_MS, Verdict, verdict};
use crate::campaign::layout::RECOVERY_BOUND_MS;
use crate::campaign::poll::Timeline;

/// (f) Requests failed only while a fault disturbed the account: within a fault's window
/// (from [`LOAD_SLACK_MS`] before it started to the recovery bound after it ended), or,
/// after a fault, near an instant at which the polls saw the account below its minimum
/// or changing owner (a failback once its home is back comes some seconds after the
/// fault, when the home's peers have seen it up for `failback_after`). A request that
/// fails while the polls show the account settled, or before any fault, is unexplained.
pub(super) fn requests_within_outage(evidence: &Evidence) -> Verdict {
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
    let accounts = &evidence.accounts;
    let timeline = Timeline::new(&evidence.samples, &sites);
    let mut found: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut owners_before: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for at in timeline.instants() {
        for (account, standing) in timeline.standing_at(accounts, at) {
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
