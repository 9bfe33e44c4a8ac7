//! Invariants (a), (b), (c), judged from every node's event log.

use std::collections::BTreeMap;
use std::path::PathBuf;

use leasehold_node::event_log::EventKind;
use leasehold_node::evidence::Violation;

use super::{Evidence, STOP_SLACK_MS, Verdict, verdict, works};
use crate::harness::evidence::{epoch_lines, lent_runs, node_events, owner_overlaps, violations};

/// Every node log's violations of S-1..S-3, or the error reading them.
pub(super) fn node_violations(evidence: &Evidence) -> Result<Vec<(String, Violation)>, String> {
    let works: Vec<PathBuf> = works(evidence.federation)
        .into_iter()
        .map(|(_, work)| work)
        .collect();
    let works: Vec<&std::path::Path> = works.iter().map(PathBuf::as_path).collect();
    violations(&works, std::time::Duration::from_millis(STOP_SLACK_MS))
}

/// A violation's line, then the event log lines that show it (indented).
fn with_lines(work: &str, violation: &Violation) -> Vec<String> {
    let (seq, epoch) = match violation {
        Violation::TwoWorkloads { seq, starting, .. } => (*seq, starting.1),
        Violation::EpochNotGreater { seq, epoch, .. }
        | Violation::StaleWorkload { seq, epoch, .. }
        | Violation::StartedWithoutLease { seq, epoch }
        | Violation::RanPastLease { seq, epoch, .. } => (*seq, *epoch),
        // Not about one epoch: the line itself is the evidence.
        Violation::DataNotWiped { seq, .. } => (*seq, leasehold_federation::ids::Epoch::NONE),
    };
    let mut lines = vec![format!("{work}: {violation}")];
    lines.extend(
        epoch_lines(std::path::Path::new(work), epoch.value(), Some(seq))
            .into_iter()
            .map(|line| format!("  {line}")),
    );
    lines
}

fn is_epoch_violation(violation: &Violation) -> bool {
    matches!(violation, Violation::EpochNotGreater { .. })
}

/// (a) No server ever ran two accounts' workloads, nor one without its lease or past it
/// (S-1, S-3), by `check_server_log` over every node's event log.
pub(super) fn one_account_per_server(found: &Result<Vec<(String, Violation)>, String>) -> Verdict {
    let failures = match found {
        Ok(found) => found
            .iter()
            .filter(|(_, violation)| !is_epoch_violation(violation))
            .flat_map(|(work, violation)| with_lines(work, violation))
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
pub(super) fn one_owner_per_account(evidence: &Evidence) -> Verdict {
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
    // A lent server runs its borrower's account for the borrower: the lenders' `lend` and
    // `handover` records say when (a drain-first failback hands servers over that way).
    let mut lent = Vec::new();
    for (site, audit) in &evidence.audits {
        match audit {
            Ok(audit) => lent.extend(lent_runs(audit)),
            Err(error) => failures.push(format!(
                "{}: cannot read the audit log for its loans: {error}",
                federation.sites[*site].name
            )),
        }
    }
    for account in &evidence.accounts {
        match owner_overlaps(&sites, &lent, account, evidence.until_mono_ns) {
            Ok(overlaps) => failures.extend(overlaps),
            Err(error) => failures.push(format!("cannot read the node logs: {error}")),
        }
    }
    verdict(
        "one-owner-per-account",
        failures,
        vec![
            "no two sites' runs of one account overlap in any node's event log (a lent server's run counts for its borrower until its home's `handover`)".into(),
        ],
    )
}

/// (c) Per server, every accepted epoch is above the ones before it (S-2), and no
/// (server, epoch) was accepted for two accounts, from every node's `pointer_accepted`.
pub(super) fn epochs_never_reused(
    evidence: &Evidence,
    found: &Result<Vec<(String, Violation)>, String>,
) -> Verdict {
    let mut failures: Vec<String> = match found {
        Ok(found) => found
            .iter()
            .filter(|(_, violation)| is_epoch_violation(violation))
            .flat_map(|(work, violation)| with_lines(work, violation))
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
