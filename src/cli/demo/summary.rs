//! The end of a run: what moved, how the SLAs fared, how long moves took and whether any
//! node broke a safety rule, from evidence (the gateway's audit log, the node event logs,
//! the SLA samples the demo took), printed for a person and written as JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use leasehold_chaos_tests::harness::load::LoadCounts;
use leasehold_node::event_log::{Event, EventKind};
use leasehold_node::evidence::Violation;
use serde_json::{Value, json};

use super::site::Started;

/// One `assign`, `reclaim` or `release` of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub seq: u64,
    pub wall_ms: u64,
    /// Seconds after the load began; negative for the setup's moves.
    pub t_s: f64,
    pub kind: String,
    pub server: String,
    /// An account, or "free".
    pub from: String,
    pub to: String,
    pub epoch: Option<u64>,
    pub reason: String,
    /// For a reclaim: when the drained server joined its new account.
    pub joined_t_s: Option<f64>,
}

/// The moves among `records` (audit records as the API returns them). A reclaim is
/// audited twice: the decision (`reclaim`), and the `join` once the server has drained;
/// the join is folded into its decision as `joined_t_s`, so that each move counts once.
pub fn moves(records: &[Value], load_start_wall_ms: u64) -> Vec<Move> {
    let mut moves: Vec<Move> = Vec::new();
    for r in records {
        let kind = r["kind"].as_str().unwrap_or("");
        if !matches!(kind, "assign" | "reclaim" | "release" | "join") {
            continue;
        }
        let wall_ms = r["wall_ms"].as_u64().unwrap_or(0);
        let t_s = (wall_ms as f64 - load_start_wall_ms as f64) / 1000.0;
        let server = r["server"].as_str().unwrap_or("?").to_owned();
        let from = r["from"].as_str();
        if kind == "join" {
            if let Some(decision) = moves
                .iter_mut()
                .rev()
                .find(|m| m.server == server && m.kind == "reclaim" && m.joined_t_s.is_none())
            {
                decision.joined_t_s = Some(t_s);
            }
            continue;
        }
        moves.push(Move {
            seq: r["seq"].as_u64().unwrap_or(0),
            wall_ms,
            t_s,
            kind: kind.to_owned(),
            server,
            from: from.unwrap_or("free").to_owned(),
            to: r["account"].as_str().unwrap_or("free").to_owned(),
            epoch: r["epoch"].as_u64(),
            reason: r["reason"].as_str().unwrap_or("").to_owned(),
            joined_t_s: None,
        });
    }
    moves
}

/// How many moves went each way, keyed `from->to`.
pub fn by_direction(moves: &[Move]) -> BTreeMap<String, u64> {
    let mut directions = BTreeMap::new();
    for m in moves {
        *directions
            .entry(format!("{}->{}", m.from, m.to))
            .or_insert(0) += 1;
    }
    directions
}

/// Pointer accepted → workload healthy, per epoch, in ms, from one node's events (the
/// node's own monotonic clock, so no clock skew enters).
pub fn node_latencies_ms(events: &[Event]) -> Vec<f64> {
    let mut accepted: HashMap<u64, u64> = HashMap::new();
    let mut latencies = Vec::new();
    for event in events {
        match &event.kind {
            EventKind::PointerAccepted { epoch, .. } => {
                accepted.insert(epoch.value(), event.mono_ns);
            }
            EventKind::WorkloadHealthy { epoch, .. } => {
                // Only the first healthy of an epoch counts; a later one would be a restart.
                if let Some(at) = accepted.remove(&epoch.value()) {
                    latencies.push(event.mono_ns.saturating_sub(at) as f64 / 1e6);
                }
            }
            _ => {}
        }
    }
    latencies
}

/// Nearest-rank percentile of sorted `values`; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// SLA met and observed, in seconds, for one account.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SlaSeconds {
    pub met: f64,
    pub observed: f64,
}

/// Everything the summary says.
#[derive(Debug)]
pub struct Summary {
    pub site: String,
    pub duration: Duration,
    pub planned: Duration,
    pub interrupted: bool,
    pub schedule: Value,
    pub moves: Vec<Move>,
    pub sla: BTreeMap<String, SlaSeconds>,
    pub node_latencies_ms: Vec<f64>,
    /// `/v1/status` just before the gateway was stopped.
    pub gateway_status: Value,
    pub requests: Vec<(String, LoadCounts)>,
    pub violations: Vec<(String, Violation)>,
    pub started: Vec<Started>,
    pub left_running: Vec<Started>,
    pub work_dir: String,
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

impl Summary {
    fn sorted_latencies(&self) -> Vec<f64> {
        let mut sorted = self.node_latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    /// The report, as `--report` writes it.
    pub fn to_json(&self) -> Value {
        let sorted = self.sorted_latencies();
        let moves: Vec<Value> = self
            .moves
            .iter()
            .map(|m| {
                json!({"seq": m.seq, "wall_ms": m.wall_ms, "t_s": round1(m.t_s), "kind": m.kind,
                    "server": m.server, "from": m.from, "to": m.to, "epoch": m.epoch,
                    "reason": m.reason, "joined_t_s": m.joined_t_s.map(round1)})
            })
            .collect();
        let sla_met: BTreeMap<&str, f64> = self
            .sla
            .iter()
            .map(|(name, s)| (name.as_str(), round1(s.met)))
            .collect();
        let observed: BTreeMap<&str, f64> = self
            .sla
            .iter()
            .map(|(name, s)| (name.as_str(), round1(s.observed)))
            .collect();
        let requests: BTreeMap<&str, Value> = self
            .requests
            .iter()
            .map(|(name, c)| {
                (
                    name.as_str(),
                    json!({"sent": c.sent, "ok": c.ok, "failed": c.failed}),
                )
            })
            .collect();
        let process = |p: &Started| json!({"name": p.name, "pid": p.pid});
        json!({
            "duration_s": round1(self.duration.as_secs_f64()),
            "duration_planned_s": self.planned.as_secs(),
            "interrupted": self.interrupted,
            "sites": [self.site],
            "schedule": self.schedule,
            "reallocations": self.moves.len(),
            "moves": moves,
            "moves_by_direction": by_direction(&self.moves),
            "sla_met_seconds": sla_met,
            "seconds_observed": observed,
            "reallocation_ms": {
                "source": "node event logs: pointer_accepted -> workload_healthy, per epoch",
                "count": sorted.len(),
                "p50": percentile(&sorted, 0.50).map(round1),
                "p99": percentile(&sorted, 0.99).map(round1),
                "max": sorted.last().copied().map(round1),
            },
            "gateway_reallocation_ms": {
                "source": "gateway /v1/status: decision -> workload healthy, since the gateway started",
                "count": self.gateway_status["reallocations"],
                "p50": self.gateway_status["reallocation_ms_p50"],
                "p99": self.gateway_status["reallocation_ms_p99"],
            },
            "requests": requests,
            "safety_violations": self.violations.len(),
            "violations": self.violations.iter()
                .map(|(work, v)| json!({"node_work": work, "violation": v.to_string()}))
                .collect::<Vec<_>>(),
            "processes": self.started.iter().map(process).collect::<Vec<_>>(),
            "processes_left": self.left_running.iter().map(process).collect::<Vec<_>>(),
            "work_dir": self.work_dir,
        })
    }

    /// The summary for a person.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let ended = if self.interrupted {
            format!("interrupted after {:.1} s", self.duration.as_secs_f64())
        } else {
            format!("{:.1} s", self.duration.as_secs_f64())
        };
        let _ = writeln!(
            out,
            "leasehold demo: summary ({}, {ended} of load)",
            self.site
        );
        let directions: Vec<String> = by_direction(&self.moves)
            .iter()
            .map(|(direction, count)| format!("{direction} {count}"))
            .collect();
        let _ = writeln!(
            out,
            "  moves: {} ({})",
            self.moves.len(),
            directions.join(", ")
        );
        let _ = writeln!(out, "  timeline (t = seconds after the load began):");
        for m in &self.moves {
            let when = if m.t_s < 0.0 {
                "setup".to_owned()
            } else {
                format!("t+{:.1}s", m.t_s)
            };
            let joined = m
                .joined_t_s
                .map(|t| format!(" (drained; joined at t+{t:.1}s)"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    {when:<8} {:<4} {:<7} {:<5} → {:<5} {}{joined}",
                m.server, m.kind, m.from, m.to, m.reason
            );
        }
        for (name, s) in &self.sla {
            let share = if s.observed > 0.0 {
                100.0 * s.met / s.observed
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "  SLA met: {name} {:.0} of {:.0} s ({share:.0}%)",
                s.met, s.observed
            );
        }
        let sorted = self.sorted_latencies();
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
        let _ = writeln!(
            out,
            "  reallocation latency, pointer accepted → workload healthy (node event logs, {} moves): p50 {}, p99 {}, max {}",
            sorted.len(),
            ms(percentile(&sorted, 0.50)),
            ms(percentile(&sorted, 0.99)),
            ms(sorted.last().copied()),
        );
        let gateway_ms = |key: &str| {
            self.gateway_status[key]
                .as_u64()
                .map_or("-".to_owned(), |v| format!("{v} ms"))
        };
        let _ = writeln!(
            out,
            "  reallocation latency, decision → workload healthy (gateway /v1/status, {} joins): p50 {}, p99 {}",
            self.gateway_status["reallocations"],
            gateway_ms("reallocation_ms_p50"),
            gateway_ms("reallocation_ms_p99"),
        );
        for (name, c) in &self.requests {
            let _ = writeln!(
                out,
                "  requests: {name} sent {} ok {} failed {}",
                c.sent, c.ok, c.failed
            );
        }
        let _ = writeln!(
            out,
            "  safety violations in the node event logs: {}",
            self.violations.len()
        );
        for (work, violation) in &self.violations {
            let _ = writeln!(out, "    {work}: {violation}");
        }
        let _ = writeln!(
            out,
            "  processes: {} started, {} left running",
            self.started.len(),
            self.left_running.len()
        );
        for process in &self.left_running {
            let _ = writeln!(
                out,
                "    still running: {} (pid {})",
                process.name, process.pid
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_name_free_servers_and_directions() {
        let records = vec![
            json!({"seq": 1, "wall_ms": 1000, "kind": "assign", "server": "a1",
                "account": "shop", "from": null, "epoch": 1, "reason": "r"}),
            json!({"seq": 2, "wall_ms": 3500, "kind": "reclaim", "server": "a1",
                "account": "blog", "from": "shop", "epoch": 1, "reason": "r"}),
            json!({"seq": 3, "wall_ms": 4000, "kind": "shortfall", "server": null,
                "account": "blog", "from": null, "epoch": null, "reason": "r"}),
            json!({"seq": 4, "wall_ms": 5000, "kind": "release", "server": "a2",
                "account": null, "from": "blog", "epoch": 2, "reason": "r"}),
            json!({"seq": 5, "wall_ms": 6000, "kind": "join", "server": "a1",
                "account": "blog", "from": "shop", "epoch": 2, "reason": "joins"}),
        ];
        let moves = moves(&records, 2000);
        assert_eq!(moves.len(), 3);
        assert_eq!(moves[1].joined_t_s, Some(4.0));
        assert_eq!(moves[0].t_s, -1.0);
        let directions = by_direction(&moves);
        assert_eq!(directions["free->shop"], 1);
        assert_eq!(directions["shop->blog"], 1);
        assert_eq!(directions["blog->free"], 1);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted = [10.0, 20.0, 30.0, 40.0];
        assert_eq!(percentile(&sorted, 0.5), Some(20.0));
        assert_eq!(percentile(&sorted, 0.99), Some(40.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
