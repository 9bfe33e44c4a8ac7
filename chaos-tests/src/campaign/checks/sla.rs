//! Invariant (d): back at the SLA minimum after each episode (one fault, or a compound
//! pair), judged from the admin polls.

use super::{Evidence, Recovery, Verdict, verdict};
use crate::campaign::faults::Applied;
use crate::campaign::layout::RECOVERY_BOUND_MS;
use crate::campaign::poll::{Timeline, all_at_minimum};

/// (d) After each episode's end (its last fault's) every account is back at its SLA
/// minimum, as the polls saw it, within [`RECOVERY_BOUND_MS`]; and it still is when the
/// next episode starts. Each fault of an episode gets the episode's [`Recovery`].
pub(super) fn sla_restored_after_each_fault(evidence: &Evidence) -> (Verdict, Vec<Recovery>) {
    let federation = evidence.federation;
    let sites: Vec<String> = federation.sites.iter().map(|s| s.name.clone()).collect();
    let accounts = &evidence.accounts;
    let timeline = Timeline::new(&evidence.samples, &sites);
    let instants = timeline.instants();
    let at_minimum = |at: u64| all_at_minimum(&timeline.standing_at(accounts, at));
    let mut failures = Vec::new();
    let mut passes = Vec::new();
    let mut recoveries = Vec::new();
    let episodes: Vec<&[Applied]> = evidence
        .faults
        .chunk_by(|a, b| a.fault.episode == b.fault.episode)
        .collect();
    for (ix, episode) in episodes.iter().enumerate() {
        let started_ms = episode.iter().map(|r| r.started_ms).min().unwrap_or(0);
        let ended_ms = episode.iter().map(|r| r.ended_ms).max().unwrap_or(0);
        let next = episodes.get(ix + 1).map_or(evidence.duration_ms, |next| {
            next.iter().map(|r| r.started_ms).min().unwrap_or(0)
        });
        let label = episode
            .iter()
            .map(|record| format!("{} {}", record.fault.kind, record.fault.target))
            .collect::<Vec<_>>()
            .join(" + ");
        let within: Vec<u64> = instants
            .iter()
            .copied()
            .filter(|at| (started_ms..next).contains(at))
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
            .find(|at| *at >= ended_ms && at_minimum(*at))
            .map(|back| back - ended_ms);
        // Still at the minimum in the last second before the next fault (or the end):
        // what a failback after this fault did is judged too.
        let settled = within
            .iter()
            .copied()
            .filter(|at| *at + 1000 >= next)
            .any(at_minimum);
        recoveries.extend(episode.iter().map(|_| Recovery {
            outage_ms,
            after_end_ms,
        }));
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
                timeline.standing_at(accounts, next.saturating_sub(1))
            )),
            _ => failures.push(format!(
                "{measured}; bound {RECOVERY_BOUND_MS} ms; at the bound: {:?}",
                timeline.standing_at(accounts, ended_ms + RECOVERY_BOUND_MS)
            )),
        }
    }
    (
        verdict("sla-restored-after-each-fault", failures, passes),
        recoveries,
    )
}
