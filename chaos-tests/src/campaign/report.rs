//! The report of a campaign: JSON for tools (`--report FILE`) and a summary for people,
//! with the command that replays the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::checks::{Evidence, Judgement};
use super::runner::CampaignOptions;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
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
    pub outage_ms: Option<u64>,
    /// From the fault's end until every account was at its minimum.
    pub back_after_end_ms: Option<u64>,
    pub notes: Vec<String>,
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
        let planted = std::env::var("LEASEHOLD_TEST_PLANT").ok();
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
                kind: record.fault.kind.name().to_owned(),
                target: record.fault.target.to_string(),
                start_ms: record.fault.start_ms,
                end_ms: record.fault.end_ms,
                applied_start_ms: record.started_ms,
                applied_end_ms: record.ended_ms,
                outage_ms: recovery.and_then(|r| r.outage_ms),
                back_after_end_ms: recovery.and_then(|r| r.after_end_ms),
                notes: record.notes.clone(),
            })
            .collect();
        let mut by_kind: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for fault in &faults {
            if let Some(outage) = fault.outage_ms {
                by_kind.entry(fault.kind.clone()).or_default().push(outage);
            }
        }
        Report {
            seed: options.seed,
            scenario: options.scenario.name.clone(),
            duration_s: options.duration.as_secs(),
            sites: options.sites,
            faults,
            invariants: judgement
                .verdicts
                .into_iter()
                .map(|verdict| InvariantReport {
                    name: verdict.name.to_owned(),
                    passed: verdict.passed,
                    evidence: verdict.evidence,
                })
                .collect(),
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
            replay: replay_command(options, planted.as_deref()),
            planted,
        }
    }

    pub fn passed(&self) -> bool {
        self.invariants.iter().all(|invariant| invariant.passed)
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
            let _ = writeln!(
                out,
                " {:>2}  {:<18} {:<18} {:>8.1} {:>8.1} {:>10} {:>14}",
                ix + 1,
                fault.kind,
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
            let _ = writeln!(out, "\nFAILED; replay with:\n  {}", self.replay);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
