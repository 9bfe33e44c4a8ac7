//! The summary as JSON (`--report FILE`): every field docs/demo.md lists, federation-wide,
//! and a section per site.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use super::failover::{failover_json, recovery_json};
use super::loans::{LoanCounts, LoanView};
use super::site::Started;
use super::summary::{Move, SiteEvidence, Summary, by_direction, percentile, round1};

/// Prints a demo's summary, and writes its report to `path` (`--report`) if given.
pub fn show(
    rendered: &str,
    report: impl FnOnce() -> Value,
    path: Option<&Path>,
) -> anyhow::Result<()> {
    println!();
    print!("{rendered}");
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(&report()).context("cannot encode the report")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        println!("  report: {}", path.display());
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

impl Summary {
    /// The report, as `--report` writes it.
    pub fn to_json(&self) -> Value {
        let sorted = self.sorted_latencies();
        let moves = self.moves();
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
        let gateway_sites: BTreeMap<&str, Value> = self
            .sites
            .iter()
            .map(|s| (s.site.as_str(), gateway_reallocation(&s.status)))
            .collect();
        let gateway_count: u64 = self
            .sites
            .iter()
            .filter_map(|s| s.status["reallocations"].as_u64())
            .sum();
        let by_site: BTreeMap<&str, Value> = self
            .sites
            .iter()
            .map(|s| (s.site.as_str(), site_section(s)))
            .collect();
        let mut report = json!({
            "duration_s": round1(self.duration.as_secs_f64()),
            "duration_planned_s": self.planned.as_secs(),
            "interrupted": self.interrupted,
            "sites": self.site_names(),
            "schedule": self.schedule,
            "reallocations": moves.len(),
            "moves": moves.iter().map(|m| move_json(m)).collect::<Vec<_>>(),
            "moves_by_direction": by_direction(moves.iter().copied()),
            "sla_met_seconds": sla_met,
            "seconds_observed": observed,
            "reallocation_ms": {
                "source": "node event logs of every site: pointer_accepted -> workload_healthy, per epoch",
                "count": sorted.len(),
                "p50": percentile(&sorted, 0.50).map(round1),
                "p99": percentile(&sorted, 0.99).map(round1),
                "max": sorted.last().copied().map(round1),
            },
            "gateway_reallocation_ms": {
                "source": "each gateway's /v1/status: decision -> workload healthy, since the gateway started; percentiles per site",
                "count": gateway_count,
                "sites": gateway_sites,
            },
            "requests": requests,
            "safety_violations": self.violation_count(),
            "violations": self.violations()
                .map(|(site, work, v)| json!({"site": site, "node_work": work, "violation": v.to_string()}))
                .collect::<Vec<_>>(),
            "processes": self.started.iter().map(process).collect::<Vec<_>>(),
            "processes_left": self.left_running.iter().map(process).collect::<Vec<_>>(),
            "work_dir": self.work_dir,
            "by_site": by_site,
            "ownership_events": self.timeline().into_iter()
                .filter(|m| m.is_ownership())
                .map(move_json)
                .collect::<Vec<_>>(),
            "kill": self.kill.as_ref().map(|k| json!({"site": k.site, "pid": k.pid,
                "killed_at_ms": k.at_ms, "owned": k.owned})),
            "failovers": self.failovers.iter().map(failover_json).collect::<Vec<_>>(),
            "recovery_ms": recovery_json(&self.failovers),
            "load_followed": self.followed.iter().map(|f| json!({"account": f.account,
                "from": f.from, "to": f.to, "t_s": round1(f.at_ms as f64 / 1000.0)}))
                .collect::<Vec<_>>(),
        });
        if let Some(object) = report.as_object_mut() {
            object.extend(self.loans_json());
        }
        report
    }

    /// `loans`, `returns`, `recalls`, `loans_expired`, `loans_ended`, `lent`, `loan_latency_ms` and
    /// `loan_events`, federation-wide; the counts are `null` when no gateway served
    /// `/v1/loans`, since there is nothing to count from.
    fn loans_json(&self) -> serde_json::Map<String, Value> {
        let totals = self.loan_totals();
        let served = totals.sites > 0;
        let count = |value: u64| if served { json!(value) } else { Value::Null };
        let c = &totals.counts;
        let sorted = &totals.latencies_ms;
        let events: Vec<Value> = self
            .timeline()
            .into_iter()
            .filter(|m| m.is_loan())
            .map(move_json)
            .collect();
        let mut map = serde_json::Map::new();
        map.insert(
            "loans_source".into(),
            json!(format!(
                "GET /v1/loans of each gateway just before it stopped: counts since it started, summed over the {} of {} sites that serve it",
                totals.sites,
                self.sites.len()
            )),
        );
        map.insert("loans".into(), count(c.borrowed));
        map.insert("returns".into(), count(c.returned));
        map.insert("recalls".into(), count(c.recalled));
        map.insert("loans_expired".into(), count(c.expired));
        map.insert("loans_ended".into(), count(c.ended));
        map.insert("lent".into(), count(c.lent));
        map.insert(
            "loan_latency_ms".into(),
            json!({
                "source": "latencies_ms of every site's /v1/loans: our request -> lent server serving",
                "count": sorted.len(),
                "p50": percentile(sorted, 0.50).map(round1),
                "p99": percentile(sorted, 0.99).map(round1),
                "max": sorted.last().copied().map(round1),
            }),
        );
        map.insert("loan_events".into(), Value::Array(events));
        map
    }
}

fn move_json(m: &Move) -> Value {
    let mut value = json!({"site": m.site, "seq": m.seq, "wall_ms": m.wall_ms,
        "t_s": round1(m.t_s), "kind": m.kind, "server": m.server, "epoch": m.epoch,
        "reason": m.reason});
    if let Some(object) = value.as_object_mut() {
        if m.is_loan() || m.is_ownership() {
            object.insert("account".into(), json!(m.to));
            object.insert("peer".into(), json!(m.peer));
        }
        if m.is_ownership() {
            object.insert("term".into(), json!(m.term));
        } else if m.is_move() {
            object.insert("from".into(), json!(m.from));
            object.insert("to".into(), json!(m.to));
            object.insert("joined_t_s".into(), json!(m.joined_t_s.map(round1)));
        }
    }
    value
}

fn gateway_reallocation(status: &Value) -> Value {
    json!({
        "count": status["reallocations"],
        "p50": status["reallocation_ms_p50"],
        "p99": status["reallocation_ms_p99"],
    })
}

fn loan_counts(counts: &LoanCounts) -> Value {
    json!({"borrowed": counts.borrowed, "returned": counts.returned,
        "recalled": counts.recalled, "expired": counts.expired, "ended": counts.ended,
        "lent": counts.lent})
}

/// One site's part: its moves by direction, its loans and its nodes' safety.
fn site_section(s: &SiteEvidence) -> Value {
    let moves: Vec<&Move> = s.moves.iter().filter(|m| m.is_move()).collect();
    let loans = match &s.loans {
        LoanView::Served(loans) => loan_counts(&loans.counts),
        LoanView::NotServed => json!("not served by this gateway"),
        LoanView::Unreadable(why) => json!(format!("unreadable: {why}")),
    };
    json!({
        "reallocations": moves.len(),
        "moves_by_direction": by_direction(moves.iter().copied()),
        "loan_events": s.moves.iter().filter(|m| m.is_loan()).count(),
        "ownership_events": s.moves.iter().filter(|m| m.is_ownership()).count(),
        "loans": loans,
        "gateway_reallocation_ms": gateway_reallocation(&s.status),
        "nodes": s.nodes,
        "safety_violations": s.violations.len(),
    })
}
