//! The report of a campaign: JSON for tools (`--report FILE`) and a summary for people,
//! with the command that replays the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::checks::{Evidence, Judgement};
use super::faults::Applied;
use super::runner::CampaignOptions;

/// How a campaign ended, for a person and a script alike: passed, or which kind of
/// failure (a broken invariant is a finding; a fault that could not be applied or a
/// federation that never settled says the campaign itself did not do its job).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Passed,
    /// A safety invariant (S-1..S-5, journaled leases) broke: a bug until shown otherwise.
    SafetyViolated,
    /// Every safety invariant held, but recovery or requests were outside their bounds.
    LivenessViolated,
    /// A fault could not be applied or healed (a restart never ready, a relay refused).
    FaultNotApplied,
    /// The federation never reached its starting point (every account owned at home and at
    /// its minimum) in the time allowed.
    NeverSettled,
    /// The federation could not be set up or started (certificates, ports, processes).
    CouldNotStart,
    /// A signal (Ctrl-C, SIGTERM) stopped the campaign before it was judged.
    Interrupted,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::SafetyViolated => "safety-violated",
            Outcome::LivenessViolated => "liveness-violated",
            Outcome::FaultNotApplied => "fault-not-applied",
            Outcome::NeverSettled => "never-settled",
            Outcome::CouldNotStart => "could-not-start",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// The invariants whose failure is a safety finding (docs/invariants.md S-1..S-5, D-1).
const SAFETY: [&str; 4] = [
    "one-account-per-server",
    "one-owner-per-account",
    "epochs-never-reused",
    "journaled-leases-survive-restart",
];

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How it ended; `cause` says why in one line (empty when it passed).
    pub outcome: Outcome,
    pub cause: String,
    /// Where the campaign's files were kept (configs, certificates, journals, gateway and
    /// node logs, node event logs): always when it did not pass, never when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
    pub seed: u64,
    pub scenario: String,
    pub duration_s: u64,
    pub sites: usize,
    pub faults: Vec<FaultReport>,
    pub invariants: Vec<InvariantReport>,
    /// Per fault kind: the outage each fault of the kind caused (from the first instant an
    /// account was below its minimum to the next instant all were at it; 0 if none).
    pub recovery_ms: BTreeMap<String, Percentiles>,
    /// Requests sent to each account, and how many failed.
    pub load: BTreeMap<String, LoadReport>,
    /// The test-only build switch the processes ran with (`LEASEHOLD_TEST_PLANT`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planted: Option<String>,
    pub replay: String,
    /// Where the SVG timeline was written (beside the report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<String>,
    /// The SVG itself, for the caller to write.
    #[serde(skip)]
    pub timeline_svg: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub kind: String,
    pub target: String,
    /// As scheduled, ms from the campaign's start.
    pub start_ms: u64,
    pub end_ms: u64,
    /// As it happened (applying a fault, e.g. a restart, takes time).
    pub applied_start_ms: u64,
    pub applied_end_ms: u64,
    /// Faults with one number overlapped (a compound episode); numbered from 0.
    pub episode: usize,
    pub outage_ms: Option<u64>,
    /// From the fault's end until every account was at its minimum.
    pub back_after_end_ms: Option<u64>,
    pub notes: Vec<String>,
}

impl FaultReport {
    /// A fault of a campaign that was not judged: as applied, with no outage measured.
    pub fn unjudged(record: &Applied) -> FaultReport {
        FaultReport {
            kind: record.fault.kind.name().to_owned(),
            target: record.fault.target.to_string(),
            start_ms: record.fault.start_ms,
            end_ms: record.fault.end_ms,
            applied_start_ms: record.started_ms,
            applied_end_ms: record.ended_ms,
            episode: record.fault.episode,
            outage_ms: None,
            back_after_end_ms: None,
            notes: record.notes.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InvariantReport {
    pub name: String,
    pub passed: bool,
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    pub count: usize,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LoadReport {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
}

/// Nearest-rank percentiles of `values` (`None` when empty).
pub fn percentiles(values: &[u64]) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = |p: f64| {
        let ix = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[ix]
    };
    Some(Percentiles {
        p50: rank(0.50),
        p99: rank(0.99),
        max: *sorted.last()?,
        count: sorted.len(),
    })
}

/// The command that runs this campaign again (the same faults, at the same times).
pub fn replay_command(options: &CampaignOptions, planted: Option<&str>) -> String {
    format!(
        "{}{} chaos --scenario {} --seed {} --duration {} --sites {} --report {}",
        planted.map_or(String::new(), |plant| format!(
            "LEASEHOLD_TEST_PLANT={plant} "
        )),
        options.binary.display(),
        options.scenario.name,
        options.seed,
        options.duration.as_secs(),
        options.sites,
        options.report.display()
    )
}

impl Report {
    pub fn new(options: &CampaignOptions, evidence: &Evidence, judgement: Judgement) -> Report {
        let faults: Vec<FaultReport> = evidence
            .faults
            .iter()
            .zip(
                judgement
                    .recoveries
                    .iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .map(|(record, recovery)| FaultReport {
                outage_ms: recovery.and_then(|r| r.outage_ms),
                back_after_end_ms: recovery.and_then(|r| r.after_end_ms),
                ..FaultReport::unjudged(record)
            })
            .collect();
        // An episode's outage counts once, under its kinds joined (`gateway-kill +
        // slow-network` for a compound pair).
        let mut by_kind: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for episode in faults.chunk_by(|a, b| a.episode == b.episode) {
            if let Some(outage) = episode[0].outage_ms {
                let kinds: Vec<&str> = episode.iter().map(|fault| fault.kind.as_str()).collect();
                by_kind.entry(kinds.join(" + ")).or_default().push(outage);
            }
        }
        let invariants: Vec<InvariantReport> = judgement
            .verdicts
            .into_iter()
            .map(|verdict| InvariantReport {
                name: verdict.name.to_owned(),
                passed: verdict.passed,
                evidence: verdict.evidence,
            })
            .collect();
        let (outcome, cause) = judge(&invariants);
        Report {
            invariants,
            recovery_ms: by_kind
                .into_iter()
                .filter_map(|(kind, values)| Some((kind, percentiles(&values)?)))
                .collect(),
            load: evidence
                .load_counts
                .iter()
                .map(|(account, counts)| {
                    (
                        account.clone(),
                        LoadReport {
                            sent: counts.sent,
                            ok: counts.ok,
                            failed: counts.failed,
                        },
                    )
                })
                .collect(),
            ..Report::unjudged(options, outcome, cause, faults)
        }
    }

    /// A campaign that ended before it could be judged: it never settled, could not
    /// start, or was interrupted. `faults` are those applied by then.
    pub fn unjudged(
        options: &CampaignOptions,
        outcome: Outcome,
        cause: String,
        faults: Vec<FaultReport>,
    ) -> Report {
        let planted = std::env::var("LEASEHOLD_TEST_PLANT").ok();
        Report {
            outcome,
            cause,
            kept: None,
            seed: options.seed,
            scenario: options.scenario.name.clone(),
            duration_s: options.duration.as_secs(),
            sites: options.sites,
            faults,
            invariants: Vec::new(),
            recovery_ms: BTreeMap::new(),
            load: BTreeMap::new(),
            replay: replay_command(options, planted.as_deref()),
            planted,
            timeline: None,
            timeline_svg: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Passed
    }

    /// Why it failed, for stderr: the outcome and its cause, every failed invariant with
    /// its evidence lines, where the files were kept, and the command that replays it.
    /// Empty when it passed.
    pub fn failure(&self) -> String {
        if self.passed() {
            return String::new();
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "chaos: FAILED ({}): {}",
            self.outcome.name(),
            self.cause
        );
        for invariant in self.invariants.iter().filter(|i| !i.passed) {
            let _ = writeln!(out, "chaos: invariant {} failed; evidence:", invariant.name);
            for line in &invariant.evidence {
                let _ = writeln!(out, "chaos:   {line}");
            }
        }
        match &self.kept {
            Some(kept) => {
                let _ = writeln!(
                    out,
                    "chaos: files kept in {kept} (gateway-*.log, nodes/*/events.jsonl, node-*.log, state-*/ journals, configs, certs)"
                );
            }
            None => {
                let _ = writeln!(out, "chaos: no files to keep (nothing was written)");
            }
        }
        let _ = writeln!(out, "chaos: replay with: {}", self.replay);
        out
    }

    pub fn to_json(&self) -> String {
        // Only plain data: serializing it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A readable summary: the faults as a table, each invariant PASS or FAIL (with its
    /// evidence when it failed), the outages by kind, and the replay command on failure.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "chaos: scenario {}, seed {}, {} s, {} sites{}",
            self.scenario,
            self.seed,
            self.duration_s,
            self.sites,
            self.planted
                .as_deref()
                .map_or(String::new(), |plant| format!(", PLANTED BUG {plant}"))
        );
        let _ = writeln!(
            out,
            "\n {:>2}  {:<18} {:<18} {:>8} {:>8} {:>10} {:>14}",
            "#", "fault", "target", "start s", "end s", "outage ms", "back after ms"
        );
        for (ix, fault) in self.faults.iter().enumerate() {
            let ms = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
            // A fault that overlaps the one before (a compound episode) is marked `+`.
            let overlaps = ix > 0 && self.faults[ix - 1].episode == fault.episode;
            let _ = writeln!(
                out,
                " {:>2}  {:<20} {:<18} {:>8.1} {:>8.1} {:>10} {:>14}",
                ix + 1,
                if overlaps {
                    format!("+ {}", fault.kind)
                } else {
                    fault.kind.clone()
                },
                fault.target,
                fault.applied_start_ms as f64 / 1000.0,
                fault.applied_end_ms as f64 / 1000.0,
                ms(fault.outage_ms),
                ms(fault.back_after_end_ms)
            );
        }
        let _ = writeln!(out);
        for invariant in &self.invariants {
            let _ = writeln!(
                out,
                " {}  {}",
                if invariant.passed { "PASS" } else { "FAIL" },
                invariant.name
            );
            if !invariant.passed {
                for line in &invariant.evidence {
                    let _ = writeln!(out, "        {line}");
                }
            }
        }
        if !self.recovery_ms.is_empty() {
            let _ = writeln!(out, "\n outage by fault kind (ms): p50 / p99 / max (count)");
            for (kind, p) in &self.recovery_ms {
                let _ = writeln!(
                    out,
                    "   {kind:<18} {} / {} / {} ({})",
                    p.p50, p.p99, p.max, p.count
                );
            }
        }
        for (account, load) in &self.load {
            let _ = writeln!(
                out,
                " load {account}: {} sent, {} ok, {} failed",
                load.sent, load.ok, load.failed
            );
        }
        if self.passed() {
            let _ = writeln!(out, "\nevery invariant held");
        } else {
            let _ = writeln!(out, "\nFAILED ({}): {}", self.outcome.name(), self.cause);
            if let Some(kept) = &self.kept {
                let _ = writeln!(out, "files kept in {kept}");
            }
            let _ = writeln!(out, "replay with:\n  {}", self.replay);
        }
        out
    }
}

/// The outcome the verdicts give, and its one-line cause: a broken safety invariant
/// first (whatever else failed may follow from it), then a fault not applied (the
/// campaign did not test what it meant to), then the liveness checks.
fn judge(invariants: &[InvariantReport]) -> (Outcome, String) {
    let failed: Vec<&str> = invariants
        .iter()
        .filter(|i| !i.passed)
        .map(|i| i.name.as_str())
        .collect();
    let named = |names: &[&str]| format!("invariants failed: {}", names.join(", "));
    if failed.is_empty() {
        (Outcome::Passed, String::new())
    } else if failed.iter().any(|name| SAFETY.contains(name)) {
        (Outcome::SafetyViolated, named(&failed))
    } else if failed.contains(&"faults-applied") {
        (Outcome::FaultNotApplied, named(&failed))
    } else {
        (Outcome::LivenessViolated, named(&failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invariant(name: &str, passed: bool) -> InvariantReport {
        InvariantReport {
            name: name.into(),
            passed,
            evidence: Vec::new(),
        }
    }

    #[test]
    fn a_safety_failure_outranks_the_rest_and_a_fault_not_applied_outranks_liveness() {
        let all_pass = [invariant("one-owner-per-account", true)];
        assert_eq!(judge(&all_pass).0, Outcome::Passed);
        let safety = [
            invariant("sla-restored-after-each-fault", false),
            invariant("faults-applied", false),
            invariant("one-owner-per-account", false),
        ];
        let (outcome, cause) = judge(&safety);
        assert_eq!(outcome, Outcome::SafetyViolated);
        assert!(cause.contains("one-owner-per-account"), "{cause}");
        let applied = [
            invariant("sla-restored-after-each-fault", false),
            invariant("faults-applied", false),
        ];
        assert_eq!(judge(&applied).0, Outcome::FaultNotApplied);
        let liveness = [invariant("requests-within-outage", false)];
        assert_eq!(judge(&liveness).0, Outcome::LivenessViolated);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentiles(&[]), None);
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(
            percentiles(&values),
            Some(Percentiles {
                p50: 50,
                p99: 99,
                max: 100,
                count: 100
            })
        );
        assert_eq!(percentiles(&[7]).map(|p| (p.p50, p.p99)), Some((7, 7)));
    }
}
