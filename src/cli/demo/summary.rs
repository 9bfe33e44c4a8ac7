//! The end of a run: what moved inside each site, what was lent between sites, how the
//! SLAs fared, how long moves and loans took and whether any node broke a safety rule, from
//! evidence (the gateways' audit logs and `/v1/loans`, the node event logs, the SLA samples
//! the demo took), printed for a person; `report.rs` writes the same as JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use leasehold_chaos_tests::harness::load::LoadCounts;
use leasehold_node::event_log::{Event, EventKind};
use leasehold_node::evidence::Violation;
use serde_json::Value;

use super::failover::{self, Failover, Killed};
use super::follow::Followed;
use super::loans::{LoanCounts, LoanView};
use super::site::Started;

/// Audit kinds of a move inside a site (a reclaim's `join` is folded into its decision).
pub const MOVE_KINDS: [&str; 3] = ["assign", "reclaim", "release"];
/// Audit kinds of a loan between sites.
pub const LOAN_KINDS: [&str; 6] = [
    "borrow",
    "lend",
    "loan_return",
    "loan_recall",
    "loan_expired",
    "loan_refused",
];
/// Audit kinds of account ownership between sites (docs/ownership.md).
pub const OWNERSHIP_KINDS: [&str; 6] = [
    "ownership_acquired",
    "takeover",
    "handback_started",
    "handback",
    "handover",
    "ownership_lost",
];

/// One `assign`, `reclaim` or `release` of a site's audit log, or one loan event
/// (`LOAN_KINDS`) or ownership event (`OWNERSHIP_KINDS`), which has `peer` (a takeover's or
/// handback's: the account's home) and no `from`/`to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub site: String,
    pub seq: u64,
    pub wall_ms: u64,
    /// Seconds after the load began; negative for the setup's moves.
    pub t_s: f64,
    pub kind: String,
    pub server: String,
    /// An account, or "free".
    pub from: String,
    /// An account, or "free"; for a loan or ownership event, its account.
    pub to: String,
    /// For a loan event: the other site.
    pub peer: Option<String>,
    pub epoch: Option<u64>,
    /// For an ownership event: its term.
    pub term: Option<u64>,
    pub reason: String,
    /// For a reclaim: when the drained server joined its new account.
    pub joined_t_s: Option<f64>,
}

impl Move {
    pub fn is_loan(&self) -> bool {
        LOAN_KINDS.contains(&self.kind.as_str())
    }

    pub fn is_ownership(&self) -> bool {
        OWNERSHIP_KINDS.contains(&self.kind.as_str())
    }

    pub fn is_move(&self) -> bool {
        MOVE_KINDS.contains(&self.kind.as_str())
    }
}

/// The moves, loan and ownership events among one site's audit `records` (as the API returns them),
/// in their order. A reclaim is audited twice: the decision (`reclaim`), and the `join`
/// once the server has drained; the join is folded into its decision as `joined_t_s`, so
/// that each move counts once.
pub fn moves(site: &str, records: &[Value], load_start_wall_ms: u64) -> Vec<Move> {
    let mut moves: Vec<Move> = Vec::new();
    for r in records {
        let kind = r["kind"].as_str().unwrap_or("");
        let is_event = LOAN_KINDS.contains(&kind) || OWNERSHIP_KINDS.contains(&kind);
        if !(is_event || kind == "join" || MOVE_KINDS.contains(&kind)) {
            continue;
        }
        let wall_ms = r["wall_ms"].as_u64().unwrap_or(0);
        let t_s = (wall_ms as f64 - load_start_wall_ms as f64) / 1000.0;
        let server = r["server"].as_str().unwrap_or("-").to_owned();
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
        let account = r["account"].as_str();
        moves.push(Move {
            site: site.to_owned(),
            seq: r["seq"].as_u64().unwrap_or(0),
            wall_ms,
            t_s,
            kind: kind.to_owned(),
            server,
            from: r["from"].as_str().unwrap_or("free").to_owned(),
            to: account
                .unwrap_or(if is_event { "-" } else { "free" })
                .to_owned(),
            peer: r["peer"].as_str().map(str::to_owned),
            epoch: r["epoch"].as_u64(),
            term: r["term"].as_u64(),
            reason: r["reason"].as_str().unwrap_or("").to_owned(),
            joined_t_s: None,
        });
    }
    moves
}

/// How many moves (not loan or ownership events) went each way, keyed `from->to`.
pub fn by_direction<'a>(moves: impl IntoIterator<Item = &'a Move>) -> BTreeMap<String, u64> {
    let mut directions = BTreeMap::new();
    for m in moves.into_iter().filter(|m| m.is_move()) {
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

/// What one site left behind.
#[derive(Debug)]
pub struct SiteEvidence {
    pub site: String,
    /// Moves, loan and ownership events from its audit log, in order (a killed site's: up
    /// to its kill).
    pub moves: Vec<Move>,
    /// `/v1/status` just before its gateway was stopped (or killed).
    pub status: Value,
    /// `/v1/loans` just before its gateway was stopped (or killed).
    pub loans: LoanView,
    /// How many node agents it ran.
    pub nodes: usize,
    /// What `check_server_log` found in its nodes' event logs: (node work dir, violation).
    pub violations: Vec<(String, Violation)>,
}

/// The loans of the federation: counts summed over the sites that serve `/v1/loans`, and
/// every loan's latency.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoanTotals {
    /// Sites whose gateway served `/v1/loans`.
    pub sites: usize,
    pub counts: LoanCounts,
    /// Sorted.
    pub latencies_ms: Vec<f64>,
}

/// Everything the summary says.
#[derive(Debug)]
pub struct Summary {
    pub sites: Vec<SiteEvidence>,
    pub duration: Duration,
    pub planned: Duration,
    pub interrupted: bool,
    pub schedule: Value,
    pub sla: BTreeMap<String, SlaSeconds>,
    pub node_latencies_ms: Vec<f64>,
    pub requests: Vec<(String, LoadCounts)>,
    pub started: Vec<Started>,
    pub left_running: Vec<Started>,
    pub work_dir: String,
    /// `--kill-site`: the kill, if it was done, and each of the killed site's accounts.
    pub kill: Option<Killed>,
    pub failovers: Vec<Failover>,
    /// Each time an account's load moved to a new owner's endpoints.
    pub followed: Vec<Followed>,
}

pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

impl Summary {
    pub fn site_names(&self) -> Vec<&str> {
        self.sites.iter().map(|s| s.site.as_str()).collect()
    }

    /// Every site's moves, loan and ownership events, in time order.
    pub fn timeline(&self) -> Vec<&Move> {
        let mut all: Vec<&Move> = self.sites.iter().flat_map(|s| &s.moves).collect();
        all.sort_by_key(|m| m.wall_ms);
        all
    }

    /// Moves inside the sites (no loan or ownership events), in time order.
    pub fn moves(&self) -> Vec<&Move> {
        self.timeline()
            .into_iter()
            .filter(|m| m.is_move())
            .collect()
    }

    pub fn violations(&self) -> impl Iterator<Item = (&str, &String, &Violation)> {
        self.sites.iter().flat_map(|s| {
            s.violations
                .iter()
                .map(move |(work, violation)| (s.site.as_str(), work, violation))
        })
    }

    pub fn violation_count(&self) -> usize {
        self.sites.iter().map(|s| s.violations.len()).sum()
    }

    pub fn sorted_latencies(&self) -> Vec<f64> {
        let mut sorted = self.node_latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    pub fn loan_totals(&self) -> LoanTotals {
        let mut totals = LoanTotals::default();
        for site in &self.sites {
            if let Some(loans) = site.loans.loans() {
                totals.sites += 1;
                totals.counts.add(&loans.counts);
                totals
                    .latencies_ms
                    .extend(loans.latencies_ms.iter().copied());
            }
        }
        totals.latencies_ms.sort_by(f64::total_cmp);
        totals
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
            "leasehold demo: summary ({}; {ended} of load)",
            self.site_names().join(", ")
        );
        let moves = self.moves();
        let directions: Vec<String> = by_direction(moves.iter().copied())
            .iter()
            .map(|(direction, count)| format!("{direction} {count}"))
            .collect();
        let _ = writeln!(
            out,
            "  moves inside the sites: {} ({})",
            moves.len(),
            directions.join(", ")
        );
        let per_site: Vec<String> = self
            .sites
            .iter()
            .map(|s| {
                let count = s.moves.iter().filter(|m| m.is_move()).count();
                format!("{} {count}", s.site)
            })
            .collect();
        let _ = writeln!(out, "  moves per site: {}", per_site.join(", "));
        let _ = writeln!(
            out,
            "  timeline of moves, loans and ownership (t = seconds after the load began):"
        );
        for m in self.timeline() {
            let _ = writeln!(out, "    {}", timeline_line(m));
        }
        self.render_loans(&mut out);
        self.render_failovers(&mut out);
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
        self.render_latencies(&mut out);
        for (name, c) in &self.requests {
            let _ = writeln!(
                out,
                "  requests: {name} sent {} ok {} failed {}",
                c.sent, c.ok, c.failed
            );
        }
        let nodes: usize = self.sites.iter().map(|s| s.nodes).sum();
        let _ = writeln!(
            out,
            "  safety violations in the node event logs ({nodes} nodes of {} sites): {}",
            self.sites.len(),
            self.violation_count()
        );
        for (site, work, violation) in self.violations() {
            let _ = writeln!(out, "    {site} {work}: {violation}");
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

    fn render_loans(&self, out: &mut String) {
        let totals = self.loan_totals();
        if totals.sites == 0 {
            let _ = writeln!(
                out,
                "  loans: no gateway served GET /v1/loans (a build without loans)"
            );
            return;
        }
        let c = &totals.counts;
        let _ = writeln!(
            out,
            "  loans (GET /v1/loans of {} sites): {} borrowed, {} returned, {} recalled, {} expired, {} ended by the lender, {} lent",
            totals.sites, c.borrowed, c.returned, c.recalled, c.expired, c.ended, c.lent
        );
        let sorted = &totals.latencies_ms;
        let _ = writeln!(
            out,
            "  loan latency, request → lent server serving ({} loans): p50 {}, p99 {}, max {}",
            sorted.len(),
            ms(percentile(sorted, 0.50)),
            ms(percentile(sorted, 0.99)),
            ms(sorted.last().copied()),
        );
    }

    fn render_failovers(&self, out: &mut String) {
        let Some(kill) = &self.kill else {
            return;
        };
        let _ = writeln!(
            out,
            "  killed: the {} gateway (pid {}) at t+{:.1}s with SIGKILL; its audit log, /v1/status and /v1/loans above are as read just before",
            kill.site,
            kill.pid,
            kill.at_ms as f64 / 1000.0
        );
        for f in &self.failovers {
            let _ = writeln!(out, "  failover: {}", failover::failover_line(f));
        }
        for f in &self.followed {
            let _ = writeln!(
                out,
                "  load: {} followed its owner from {} to {} at t+{:.1}s",
                f.account,
                f.from,
                f.to,
                f.at_ms as f64 / 1000.0
            );
        }
        let sorted = failover::recoveries(&self.failovers);
        let _ = writeln!(
            out,
            "  recovery, kill → new owner serving its minimum ({} of {} accounts): p50 {}, p99 {}, max {}",
            sorted.len(),
            self.failovers.len(),
            ms(percentile(&sorted, 0.50)),
            ms(percentile(&sorted, 0.99)),
            ms(sorted.last().copied()),
        );
    }

    fn render_latencies(&self, out: &mut String) {
        let sorted = self.sorted_latencies();
        let _ = writeln!(
            out,
            "  reallocation latency, pointer accepted → workload healthy (node event logs, {} moves): p50 {}, p99 {}, max {}",
            sorted.len(),
            ms(percentile(&sorted, 0.50)),
            ms(percentile(&sorted, 0.99)),
            ms(sorted.last().copied()),
        );
        let gateway_ms = |status: &Value, key: &str| {
            status[key]
                .as_u64()
                .map_or("-".to_owned(), |v| format!("{v} ms"))
        };
        let per_site: Vec<String> = self
            .sites
            .iter()
            .map(|s| {
                format!(
                    "{} {} joins p50 {} p99 {}",
                    s.site,
                    s.status["reallocations"],
                    gateway_ms(&s.status, "reallocation_ms_p50"),
                    gateway_ms(&s.status, "reallocation_ms_p99"),
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  reallocation latency, decision → workload healthy (gateway /v1/status): {}",
            per_site.join("; ")
        );
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.0} ms"))
}

/// `t+24.5s  site-a a1   reclaim     shop → blog   reason (drained; joined at t+25.5s)`.
fn timeline_line(m: &Move) -> String {
    let when = if m.t_s < 0.0 {
        "setup".to_owned()
    } else {
        format!("t+{:.1}s", m.t_s)
    };
    let what = match (&m.peer, m.kind.as_str()) {
        (Some(peer), "takeover") => format!("{} ← {peer}", m.to),
        (Some(peer), "handback" | "handback_started") => format!("{} → {peer}", m.to),
        (Some(peer), "handover") => format!("{} ← {peer}", m.to),
        (Some(peer), _) if m.is_loan() => format!("{} ↔ {peer}", m.to),
        _ if m.is_ownership() => match m.term {
            Some(term) => format!("{} t{term}", m.to),
            None => m.to.clone(),
        },
        _ if m.is_loan() => m.to.clone(),
        _ => format!("{} → {}", m.from, m.to),
    };
    let joined = m
        .joined_t_s
        .map(|t| format!(" (drained; joined at t+{t:.1}s)"))
        .unwrap_or_default();
    format!(
        "{when:<8} {} {:<4} {:<12} {what:<15} {}{joined}",
        m.site, m.server, m.kind, m.reason
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn moves_name_free_servers_and_directions_and_loans_stay_apart() {
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
            json!({"seq": 6, "wall_ms": 7000, "kind": "borrow", "server": "b3",
                "account": "shop", "from": null, "peer": "site-b", "epoch": 4,
                "reason": "lent"}),
        ];
        let moves = moves("site-a", &records, 2000);
        assert_eq!(moves.len(), 4);
        assert_eq!(moves[1].joined_t_s, Some(4.0));
        assert_eq!(moves[0].t_s, -1.0);
        assert!(moves[3].is_loan());
        assert_eq!(moves[3].peer.as_deref(), Some("site-b"));
        assert!(timeline_line(&moves[3]).contains("shop ↔ site-b"));
        let directions = by_direction(&moves);
        assert_eq!(directions.len(), 3, "{directions:?}");
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
