//! The live view: once a second, what each server runs and what each account gets, from
//! the gateway's admin API. A terminal gets a table redrawn in place; a pipe or a log gets
//! one compact line a second plus each new audit record once, so it reads as a history.

use std::fmt::Write as _;
use std::time::Duration;

use leasehold_chaos_tests::harness::load::LoadCounts;
use serde_json::Value;

use crate::cli::status::{number, text};

/// ANSI: clear the screen and move the cursor home.
pub const CLEAR: &str = "\x1b[2J\x1b[H";

/// What the gateway said this second.
#[derive(Debug, Clone)]
pub struct Sample {
    pub servers: Vec<Value>,
    pub accounts: Vec<Value>,
    /// The newest audit records, oldest first.
    pub audit: Vec<Value>,
}

/// Where the run is.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    pub site: &'a str,
    pub elapsed: Duration,
    pub duration: Duration,
    pub phase: usize,
    pub phases: usize,
    pub phase_name: &'a str,
    pub rates: &'a [(String, f64)],
}

impl Header<'_> {
    fn line(&self) -> String {
        let rates: Vec<String> = self
            .rates
            .iter()
            .map(|(account, rate)| format!("{account} {rate:.0}/s"))
            .collect();
        format!(
            "{} / {}  phase {}/{}: {}  load: {}",
            clock(self.elapsed),
            clock(self.duration),
            self.phase + 1,
            self.phases,
            self.phase_name,
            rates.join(", ")
        )
    }
}

/// The full table, for a terminal.
pub fn render(header: &Header, sample: &Sample, requests: &[(String, LoadCounts)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "leasehold demo: site {} (Ctrl-C ends early with the summary)",
        header.site
    );
    let _ = writeln!(out, "{}", header.line());
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<8} {:<9} {:<8} {:>5} {:>6}  HEALTH",
        "SERVER", "STATE", "ACCOUNT", "EPOCH", "LOAD"
    );
    for server in &sample.servers {
        let _ = writeln!(
            out,
            "{:<8} {:<9} {:<8} {:>5} {:>6}  {}",
            text(&server["id"]),
            text(&server["state"]),
            text(&server["account"]),
            text(&server["epoch"]),
            number(&server["load"]),
            text(&server["health"]),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<8} {:>6} {:>7} {:>8} {:>6}  {:<4} {:>9}  {:>14}",
        "ACCOUNT", "DEMAND", "SERVERS", "STARTING", "LOAD", "SLA", "SHORTFALL", "REQUESTS OK/ALL"
    );
    for account in &sample.accounts {
        let name = text(&account["name"]);
        let counts = requests
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, counts)| format!("{}/{}", counts.ok, counts.sent))
            .unwrap_or_else(|| "-".to_owned());
        let _ = writeln!(
            out,
            "{:<8} {:>6} {:>7} {:>8} {:>6}  {:<4} {:>9}  {:>14}",
            name,
            text(&account["demand"]),
            text(&account["servers"]),
            text(&account["starting"]),
            number(&account["load"]),
            sla(&account["sla_met"]),
            text(&account["shortfall"]),
            counts,
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "LATEST DECISIONS (GET /v1/audit?limit=5)");
    for record in &sample.audit {
        let _ = writeln!(out, "  {}", audit_line(record, 110));
    }
    out
}

/// One line for a pipe: time, phase, every server, every account.
pub fn compact(header: &Header, sample: &Sample) -> String {
    let servers: Vec<String> = sample
        .servers
        .iter()
        .map(|s| {
            format!(
                "{} {} {} e{} {}",
                text(&s["id"]),
                text(&s["state"]),
                text(&s["account"]),
                text(&s["epoch"]),
                number(&s["load"])
            )
        })
        .collect();
    let accounts: Vec<String> = sample
        .accounts
        .iter()
        .map(|a| {
            format!(
                "{} demand {} servers {} load {} {}",
                text(&a["name"]),
                text(&a["demand"]),
                text(&a["servers"]),
                number(&a["load"]),
                sla(&a["sla_met"])
            )
        })
        .collect();
    format!(
        "{} | {} | {}",
        header.line(),
        servers.join(", "),
        accounts.join(", ")
    )
}

/// `#12 reclaim a3 shop → blog (e5): reason`, cut to `width` characters.
pub fn audit_line(record: &Value, width: usize) -> String {
    let from = record["from"].as_str().unwrap_or("free");
    let to = record["account"].as_str().unwrap_or("free");
    let what = match record["kind"].as_str() {
        Some("assign" | "reclaim" | "release" | "join") => format!("{from} → {to}"),
        _ => record["account"].as_str().unwrap_or("").to_owned(),
    };
    let line = format!(
        "#{} {:<9} {:<4} {:<13} {}",
        text(&record["seq"]),
        text(&record["kind"]),
        record["server"].as_str().unwrap_or(""),
        what,
        text(&record["reason"])
    );
    cut(&line, width)
}

fn cut(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut short: String = line.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    short
}

fn sla(value: &Value) -> &'static str {
    match value.as_bool() {
        Some(true) => "✓",
        Some(false) => "✗",
        None => "?",
    }
}

/// `m:ss`.
pub fn clock(duration: Duration) -> String {
    let seconds = duration.as_secs();
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn audit_lines_name_the_move() {
        let record = json!({"seq": 7, "kind": "reclaim", "server": "a3", "account": "blog",
            "from": "shop", "epoch": 4, "reason": "blog below its demand"});
        assert_eq!(
            audit_line(&record, 200),
            "#7 reclaim   a3   shop → blog   blog below its demand"
        );
        assert_eq!(audit_line(&record, 10).chars().count(), 10);
    }

    #[test]
    fn clock_is_minutes_and_seconds() {
        assert_eq!(clock(Duration::from_secs(75)), "1:15");
    }
}
