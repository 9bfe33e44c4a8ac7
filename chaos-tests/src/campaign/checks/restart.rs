//! Invariant (e): leases journaled before a gateway stopped are known after it restarts,
//! judged from its audit log (read back from its journal) and its nodes' event logs.

use serde_json::Value;

use super::{Evidence, Verdict, verdict};
use crate::campaign::faults::Restarted;
use crate::harness::evidence::node_events;
use crate::harness::federation::Federation;
use leasehold_node::event_log::EventKind;

/// Audit kinds that end a lease (and remove it from the journal).
const LEASE_ENDINGS: [&str; 3] = ["lease_ended", "server_failed", "release"];

/// (e) For each gateway stopped and restarted: every lease it listed in `/v1/servers`
/// just before it stopped, whose pointer the node had accepted by then (so it was
/// journaled, D-1), is in its audit log after the restart as `recovered` (read back from
/// the journal), or was ended by an audited reason before the stop.
pub(super) fn journaled_leases_survive_restart(evidence: &Evidence) -> Verdict {
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
