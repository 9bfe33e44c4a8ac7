//! What the runner itself records: every fault applied and healed, and what config edits
//! did as the admin API showed it.

use super::{Evidence, Verdict, verdict};

/// Every fault was applied and healed as scheduled.
pub(super) fn faults_applied(evidence: &Evidence) -> Verdict {
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
pub(super) fn config_edits_refused_or_applied(evidence: &Evidence) -> Verdict {
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
