//! (h) Takeovers at a site of standby gateways are seen by nobody (docs/ha.md): no other
//! site took the site's account over or came to own it (their audit logs), and no
//! workload of the site stopped (its node agents' event logs).

use leasehold_node::event_log::EventKind;

use super::{Evidence, Verdict, verdict};
use crate::campaign::layout::account_name;
use crate::campaign::schedule::FaultKind;
use crate::harness::evidence::node_events;

/// The audit kinds by which a site comes to own an account.
const OWNING: [&str; 2] = ["takeover", "ownership_acquired"];

pub(super) fn takeovers_seen_by_nobody(evidence: &Evidence) -> Verdict {
    let mut failures = Vec::new();
    let mut passes = Vec::new();
    let Some(site) = evidence.federation.standby_site() else {
        return verdict(
            "takeovers-seen-by-nobody",
            vec!["the campaign has takeovers but no site of standby gateways".into()],
            Vec::new(),
        );
    };
    let takeovers = evidence
        .faults
        .iter()
        .filter(|record| record.fault.kind == FaultKind::GatewayTakeover)
        .count();
    let account = account_name(site);
    let name = &evidence.federation.sites[site].name;
    for (other, audit) in &evidence.audits {
        if *other == site {
            continue;
        }
        let other_name = &evidence.federation.sites[*other].name;
        match audit {
            Ok(records) => {
                let owned: Vec<String> = records
                    .iter()
                    .filter(|record| {
                        record["account"] == account.as_str()
                            && OWNING.iter().any(|kind| record["kind"] == *kind)
                    })
                    .map(|record| format!("{other_name} #{}: {}", record["seq"], record["reason"]))
                    .collect();
                if owned.is_empty() {
                    passes.push(format!("{other_name} never owned {account}"));
                } else {
                    failures.extend(owned);
                }
            }
            Err(error) => failures.push(format!(
                "{other_name}: its audit log could not be read: {error}"
            )),
        }
    }
    for (server, _) in &evidence.federation.sites[site].servers {
        match node_events(&evidence.federation.work(server)) {
            Ok(events) => {
                let stopped: Vec<String> = events
                    .iter()
                    .filter(|event| {
                        (evidence.start_mono_ns..=evidence.until_mono_ns).contains(&event.mono_ns)
                            && matches!(event.kind, EventKind::WorkloadStopped { .. })
                    })
                    .map(|event| format!("{server}: {:?}", event.kind))
                    .collect();
                if stopped.is_empty() {
                    passes.push(format!("{server} ({name}): no workload stopped"));
                } else {
                    failures.extend(stopped);
                }
            }
            Err(error) => failures.push(format!("{server}: {error}")),
        }
    }
    if failures.is_empty() {
        passes.insert(0, format!("{takeovers} takeovers at {name}"));
    }
    verdict("takeovers-seen-by-nobody", failures, passes)
}
