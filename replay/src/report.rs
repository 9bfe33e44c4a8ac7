//! The figures of a replay side by side: what the site's decisions lost, what any policy
//! must lose (the lower bound), and what a split with no moves loses; per account and in
//! total, as JSON (`--report`) and as a table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bounds::{Sla, lower_bound, static_split, static_violation};
use crate::optimum::optimum;
use crate::trace::Trace;
use crate::world::{Pace, Run};

#[derive(Debug, Clone, Serialize)]
pub struct AccountReport {
    pub name: String,
    pub min_servers: u32,
    pub max_servers: u32,
    pub priority: u32,
    /// Leasehold's SLA violation, server-seconds.
    pub violation_server_s: f64,
    pub moves: u64,
    /// Server-seconds it held beyond its need: servers idle for it.
    pub idle_server_s: f64,
    /// The servers the static split gives it, and what that split loses.
    pub static_servers: u32,
    pub static_violation_server_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub trace: String,
    pub config: String,
    pub servers: u32,
    pub duration_s: u64,
    pub step_s: u64,
    pub round_ms: u64,
    pub reinit_ms: u64,
    pub rounds: u64,
    pub accounts: Vec<AccountReport>,
    pub violation_server_s: f64,
    pub moves: u64,
    pub idle_server_s: f64,
    /// Σ max(0, total need − servers): no policy loses less, however fast its moves.
    pub lower_bound_server_s: f64,
    /// The offline optimum with the same re-initialization (docs/replay.md), and the
    /// slot it was computed at; `null` when its graph was too large, `optimum_refused`
    /// says why.
    pub optimum_server_s: Option<f64>,
    pub optimum_slot_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimum_refused: Option<String>,
    pub static_split_server_s: f64,
    /// The headline: Leasehold's violation over the optimum's (1 when both are 0; `null`
    /// when only the optimum's is).
    pub ratio_to_optimum: Option<f64>,
}

/// Puts a run beside its bounds.
pub fn report(
    (trace_name, config_name): (&str, &str),
    trace: &Trace,
    slas: &[Sla],
    servers: u32,
    pace: Pace,
    run: &Run,
) -> Report {
    let split = static_split(slas, servers);
    let reinit_ms = pace.reinit.as_millis() as u64;
    let statics = static_violation(trace, slas, &split, reinit_ms);
    let best = optimum(trace, slas, servers, reinit_ms);
    let accounts: Vec<AccountReport> = slas
        .iter()
        .zip(&run.accounts)
        .zip(split.iter().zip(&statics))
        .map(|((sla, (_, ran)), (given, lost))| AccountReport {
            name: sla.name.clone(),
            min_servers: sla.min_servers,
            max_servers: sla.max_servers,
            priority: sla.priority,
            violation_server_s: ran.violation_server_s,
            moves: ran.moves,
            idle_server_s: ran.idle_server_s,
            static_servers: *given,
            static_violation_server_s: *lost,
        })
        .collect();
    let violation: f64 = accounts.iter().map(|a| a.violation_server_s).sum();
    let lower = lower_bound(trace, slas, servers);
    Report {
        trace: trace_name.to_owned(),
        config: config_name.to_owned(),
        servers,
        duration_s: trace.duration_s(),
        step_s: trace.header.step_s,
        round_ms: pace.round.as_millis() as u64,
        reinit_ms: pace.reinit.as_millis() as u64,
        rounds: run.rounds,
        moves: accounts.iter().map(|a| a.moves).sum(),
        static_split_server_s: statics.iter().sum(),
        violation_server_s: violation,
        idle_server_s: run.idle_server_s,
        lower_bound_server_s: lower,
        optimum_server_s: best.as_ref().ok().map(|best| best.violation_server_s),
        optimum_slot_ms: best.as_ref().ok().map(|best| best.slot_ms),
        optimum_refused: best.as_ref().err().map(ToString::to_string),
        ratio_to_optimum: best
            .as_ref()
            .ok()
            .and_then(|best| ratio(violation, best.violation_server_s)),
        accounts,
    }
}

/// `ours / best`; 1 when both are 0 (nothing to lose, nothing lost); none when only the
/// best is 0.
fn ratio(ours: f64, best: f64) -> Option<f64> {
    if best > 0.0 {
        Some(ours / best)
    } else if ours == 0.0 {
        Some(1.0)
    } else {
        None
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The table people read.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replay of {} ({} s in steps of {} s) on {} ({} servers), a round every {} ms, re-initialization {} ms",
            self.trace,
            self.duration_s,
            self.step_s,
            self.config,
            self.servers,
            self.round_ms,
            self.reinit_ms
        );
        let _ = writeln!(
            out,
            "\n  {:<10} {:>9} {:>8} {:>14} {:>7} {:>12} {:>14} {:>14}",
            "account",
            "min..max",
            "priority",
            "violation s",
            "moves",
            "idle s",
            "static servers",
            "static viol. s"
        );
        for account in &self.accounts {
            let _ = writeln!(
                out,
                "  {:<10} {:>9} {:>8} {:>14.1} {:>7} {:>12.1} {:>14} {:>14.1}",
                account.name,
                format!("{}..{}", account.min_servers, account.max_servers),
                account.priority,
                account.violation_server_s,
                account.moves,
                account.idle_server_s,
                account.static_servers,
                account.static_violation_server_s
            );
        }
        let _ = writeln!(
            out,
            "\n  SLA violation, server-seconds:\n    leasehold     {:>12.1}  ({} moves, {:.1} idle server-seconds)",
            self.violation_server_s, self.moves, self.idle_server_s
        );
        match (self.optimum_server_s, self.optimum_slot_ms) {
            (Some(best), Some(slot_ms)) => {
                let _ = writeln!(
                    out,
                    "    optimum       {best:>12.1}  (offline, same re-initialization; slots of {slot_ms} ms)"
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "    optimum       {:>12}  ({})",
                    "-",
                    self.optimum_refused.as_deref().unwrap_or("not computed")
                );
            }
        }
        let _ = writeln!(
            out,
            "    lower bound   {:>12.1}  (total need beyond the servers)\n    static split  {:>12.1}  (no moves)",
            self.lower_bound_server_s, self.static_split_server_s
        );
        match self.ratio_to_optimum {
            Some(ratio) => {
                let _ = writeln!(out, "    leasehold / optimum: {ratio:.3}");
            }
            None if self.optimum_server_s.is_none() => {
                let _ = writeln!(out, "    leasehold / optimum: none (no optimum)");
            }
            None => {
                let _ = writeln!(
                    out,
                    "    leasehold / optimum: none (the optimum loses nothing, leasehold {:.1})",
                    self.violation_server_s
                );
            }
        }
        out
    }
}
