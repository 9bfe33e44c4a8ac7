//! The live view of `leasehold demo --machines`: once a second, one row per server of the
//! site (a machine's power, and its re-image step with how long it has taken), the
//! accounts, and the latest audit records, from the gateway's admin API. A terminal gets
//! a table redrawn in place, at most 100 columns wide; a pipe or a log gets one compact
//! line a second plus each new audit record once, as the federation demo does.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::get_json;
use serde_json::Value;

use super::table::{WIDTH, audit_line, clock, cut, epoch, sla};
use crate::cli::status::text;

/// The only site of the demo, as the harness names it.
pub const SITE: &str = "site-m";
/// Audit lines shown under the table, newest last.
const AUDIT_LINES: usize = 8;

/// What the gateway said this second.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `/v1/servers`, or why it could not be read.
    pub servers: Result<Vec<Value>, String>,
    pub accounts: Vec<Value>,
    /// The newest audit records, oldest first.
    pub audit: Vec<Value>,
}

impl Sample {
    pub fn read(admin: SocketAddr) -> Sample {
        let array = |value: Value| value.as_array().cloned().unwrap_or_default();
        Sample {
            servers: get_json(admin, "/v1/servers").map(array),
            accounts: get_json(admin, "/v1/accounts")
                .map(array)
                .unwrap_or_default(),
            // Enough that a pipe sees every record of a busy second once.
            audit: get_json(admin, "/v1/audit?limit=20")
                .map(array)
                .unwrap_or_default(),
        }
    }

    /// The `/v1/servers` entry of `id`.
    pub fn server(&self, id: &str) -> Option<&Value> {
        self.servers.as_ref().ok()?.iter().find(|s| s["id"] == id)
    }
}

/// The full table, for a terminal. `status` says where the demo's script is.
pub fn render(elapsed: Duration, status: &str, sample: &Sample) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "leasehold demo --machines: {SITE}, machines behind a Redfish BMC and process servers"
    );
    let _ = writeln!(
        out,
        "{}",
        cut(&format!("{}  {status}", clock(elapsed)), WIDTH)
    );
    let _ = writeln!(out, "(Ctrl-C ends early with the summary)");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<6} {:<7}  {:<7} {:>5}  {:<8}  {:<5}  RE-IMAGE (step, time in it; steps done)",
        "SERVER", "KIND", "ACCOUNT", "EPOCH", "STATE", "POWER"
    );
    match &sample.servers {
        Ok(servers) => {
            for server in servers {
                let _ = writeln!(out, "{}", cut(&server_row(server), WIDTH));
            }
        }
        Err(error) => {
            let _ = writeln!(out, "{}", cut(&format!("cannot read: {error}"), WIDTH));
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", cut(&accounts_line(sample), WIDTH));
    let _ = writeln!(out);
    let _ = writeln!(out, "LATEST AUDIT RECORDS (GET /v1/audit)");
    let skip = sample.audit.len().saturating_sub(AUDIT_LINES);
    for record in &sample.audit[skip..] {
        let _ = writeln!(out, "  {}", audit_line(SITE, record, WIDTH - 2));
    }
    out
}

/// One server's row: id, kind, account, epoch, state, power, re-image.
fn server_row(server: &Value) -> String {
    let machine = &server["machine"];
    let (kind, power, reimage) = if machine.is_object() {
        ("machine", text(&machine["power"]), reimage_cell(machine))
    } else {
        ("process", "-".to_owned(), "-".to_owned())
    };
    format!(
        "{:<6} {:<7}  {:<7} {:>5}  {:<8}  {:<5}  {reimage}",
        text(&server["id"]),
        kind,
        text(&server["account"]),
        epoch(&server["epoch"]),
        text(&server["state"]),
        power,
    )
}

/// A machine's re-image as a cell: the step in progress and how long it has taken, then
/// the steps done; else why it is out of use; else its last boot.
pub fn reimage_cell(machine: &Value) -> String {
    let reimage = &machine["reimage"];
    if reimage.is_object() {
        let done: Vec<String> = steps(&reimage["done"])
            .into_iter()
            .map(|(step, ms)| format!("{} {}", short(&step), seconds(ms)))
            .collect();
        let done = if done.is_empty() {
            String::new()
        } else {
            format!("; {}", done.join(", "))
        };
        // Its account and epoch are the row's: the lease it is re-imaged for.
        return format!(
            "{} {}{done}",
            text(&reimage["step"]),
            seconds(reimage["step_ms"].as_u64().unwrap_or(0)),
        );
    }
    if let Some(failed) = machine["failed"].as_str() {
        return format!("failed: {failed}");
    }
    if let Some(bmc) = machine["bmc"]
        .as_str()
        .filter(|bmc| bmc.starts_with("unreachable"))
    {
        return format!("BMC {bmc}");
    }
    let last = steps(&machine["last_boot"]);
    if last.is_empty() {
        return "-".to_owned();
    }
    let total: u64 = last.iter().map(|(_, ms)| ms).sum();
    format!("booted {} in {}", text(&machine["image"]), seconds(total))
}

/// `[{step, ms}]` as pairs.
pub fn steps(value: &Value) -> Vec<(String, u64)> {
    value
        .as_array()
        .map(|list| {
            list.iter()
                .map(|s| (text(&s["step"]), s["ms"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// A step's name for the list of those done, where room is short.
fn short(step: &str) -> &str {
    match step {
        "powering-off" => "off",
        "setting-boot" => "boot set",
        "powering-on" => "on",
        other => other,
    }
}

/// Milliseconds as `4.2 s`.
pub fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// `ACCOUNTS  api 2/2 ✓  shop 1/1 ✓  blog 1/1 ✓`: serving of demand, and the SLA.
fn accounts_line(sample: &Sample) -> String {
    let accounts: Vec<String> = sample
        .accounts
        .iter()
        .map(|a| {
            format!(
                "{} {}/{} (min {}, max {}) {}",
                text(&a["name"]),
                text(&a["servers"]),
                text(&a["demand"]),
                text(&a["min_servers"]),
                text(&a["max_servers"]),
                sla(&a["sla_met"])
            )
        })
        .collect();
    format!("ACCOUNTS  {}", accounts.join("   "))
}

/// One line for a pipe: time, status, then each server.
pub fn compact(elapsed: Duration, status: &str, sample: &Sample) -> String {
    let servers = match &sample.servers {
        Ok(servers) => servers
            .iter()
            .map(|s| {
                let mut cell = format!(
                    "{} {} {} {}",
                    text(&s["id"]),
                    text(&s["account"]),
                    epoch(&s["epoch"]),
                    text(&s["state"])
                );
                let machine = &s["machine"];
                if machine.is_object() {
                    let _ = write!(cell, " power {}", text(&machine["power"]));
                    if machine["reimage"].is_object() || machine["failed"].is_string() {
                        let _ = write!(cell, " ({})", reimage_cell(machine));
                    }
                }
                cell
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(error) => format!("cannot read: {error}"),
    };
    format!("{}  {status} | {servers}", clock(elapsed))
}

/// The records of `sample` newer than `last_seq`, as lines for a pipe; moves `last_seq`.
pub fn new_audit_lines(sample: &Sample, last_seq: &mut Option<u64>) -> Vec<String> {
    let mut lines = Vec::new();
    for record in &sample.audit {
        let Some(seq) = record["seq"].as_u64() else {
            continue;
        };
        if last_seq.is_none_or(|shown| seq > shown) {
            lines.push(format!("  audit {}", audit_line(SITE, record, 160)));
            *last_seq = Some(seq);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> Sample {
        Sample {
            servers: Ok(vec![
                json!({"id": "a1", "state": "serving", "account": "api", "epoch": 1}),
                json!({"id": "m1", "state": "serving", "account": "blog", "epoch": 3,
                    "machine": {"mac": "52:54:00:6c:00:01", "power": "on", "bmc": "answering",
                        "reimage": null, "image": "blog", "failed": null,
                        "last_boot": [{"step": "powering-off", "ms": 12},
                            {"step": "setting-boot", "ms": 40},
                            {"step": "powering-on", "ms": 6100},
                            {"step": "booting", "ms": 800}]}}),
                json!({"id": "m2", "state": "starting", "account": "blog", "epoch": 5,
                    "machine": {"mac": "52:54:00:6c:00:02", "power": "on", "bmc": "answering",
                        "reimage": {"account": "blog", "epoch": 5, "step": "powering-on",
                            "step_ms": 3250, "done": [{"step": "powering-off", "ms": 5900},
                                {"step": "setting-boot", "ms": 51}]},
                        "last_boot": [], "image": null, "failed": null}}),
            ]),
            accounts: vec![json!({"name": "blog", "servers": 1, "demand": 2,
                "min_servers": 2, "max_servers": 2, "sla_met": false})],
            audit: vec![json!({"seq": 18, "kind": "reimage", "server": "m2",
                "account": "blog", "epoch": 5, "reason": "re-imaging m2 for blog under e5"})],
        }
    }

    /// A machine in the middle of a re-image shows its step, how long it has been in it and
    /// the steps done; one that booted, its last boot; every line fits in 100 columns.
    #[test]
    fn rows_show_the_reimage_step_and_its_time_within_100_columns() {
        let sample = sample();
        let table = render(Duration::from_secs(21), "re-imaging m2", &sample);
        for line in table.lines() {
            assert!(line.chars().count() <= WIDTH, "{line}");
        }
        let m2 = table.lines().find(|l| l.starts_with("m2 ")).unwrap();
        assert!(m2.contains("machine"), "{m2}");
        assert!(m2.contains("e5  starting  on"), "{m2}");
        assert!(
            m2.contains("powering-on 3.2 s; off 5.9 s, boot set 0.1 s"),
            "{m2}"
        );
        let m1 = table.lines().find(|l| l.starts_with("m1 ")).unwrap();
        assert!(m1.contains("booted blog in 7.0 s"), "{m1}");
        let a1 = table.lines().find(|l| l.starts_with("a1 ")).unwrap();
        assert!(a1.contains("process  api"), "{a1}");
        assert!(table.contains("blog 1/2 (min 2, max 2) ✗"), "{table}");
        assert!(
            table.contains("site-m #18 reimage      m2   blog"),
            "{table}"
        );
        let line = compact(Duration::from_secs(21), "re-imaging m2", &sample);
        assert!(
            line.contains("m2 blog e5 starting power on (powering-on 3.2 s"),
            "{line}"
        );
        assert!(line.contains("a1 api e1 serving, m1 blog e3 serving power on,"));
    }

    #[test]
    fn a_pipe_sees_each_audit_record_once() {
        let sample = sample();
        let mut last = None;
        assert_eq!(new_audit_lines(&sample, &mut last).len(), 1);
        assert_eq!(last, Some(18));
        assert!(new_audit_lines(&sample, &mut last).is_empty());
    }

    #[test]
    fn a_failed_machine_or_an_unreachable_bmc_says_so() {
        let failed = json!({"reimage": null, "failed": "never registered", "bmc": "answering"});
        assert_eq!(reimage_cell(&failed), "failed: never registered");
        let silent = json!({"reimage": null, "failed": null, "bmc": "unreachable: refused"});
        assert_eq!(reimage_cell(&silent), "BMC unreachable: refused");
        let fresh = json!({"reimage": null, "failed": null, "bmc": "answering", "last_boot": []});
        assert_eq!(reimage_cell(&fresh), "-");
    }
}
