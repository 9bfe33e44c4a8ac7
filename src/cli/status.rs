//! `leasehold status [--gateway URL] [--json]`: the status page's picture as terminal
//! tables, in the manner of `nomad status`, read from a gateway's admin API (docs/api.md).
//! Also the pieces `leasehold audit` shares: tables and UTC times.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::bail;
// Server states in the order an operator reads them, as on the status page.
use leasehold_site_gateway::page::STATE_ORDER;
use serde_json::{Map, Value, json};

pub use super::admin_client::{AdminArgs, Gateway};

/// How many of the newest audit records the status shows.
const AUDIT_ROWS: usize = 10;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Print one JSON object {status, accounts, servers, audit, peers, loans} instead of
    /// tables.
    #[arg(long)]
    json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let gateway = Gateway::new(&args.admin)?;
    let picture = Picture::fetch(&gateway)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&picture.to_json())?);
    } else {
        print!("{}", picture.render(gateway.url()));
    }
    Ok(ExitCode::SUCCESS)
}

/// What the gateway says, in one piece.
struct Picture {
    status: Value,
    accounts: Vec<Value>,
    servers: Vec<Value>,
    /// The newest records, oldest first.
    audit: Vec<Value>,
    /// `None` until the gateway serves `/v1/peers` (issue #4).
    peers: Option<Vec<Value>>,
    /// `None` for a gateway older than loans (no `/v1/loans`).
    loans: Option<Value>,
}

fn array(value: Value, path: &str) -> anyhow::Result<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        other => bail!("GET {path} answered {other}, not a JSON array"),
    }
}

impl Picture {
    fn fetch(gateway: &Gateway) -> anyhow::Result<Picture> {
        let status = gateway.get("/v1/status")?;
        let accounts = array(gateway.get("/v1/accounts")?, "/v1/accounts")?;
        let servers = array(gateway.get("/v1/servers")?, "/v1/servers")?;
        let audit_path = format!("/v1/audit?limit={AUDIT_ROWS}");
        let audit = array(gateway.get(&audit_path)?, &audit_path)?;
        let peers = gateway
            .get_optional("/v1/peers")?
            .map(|value| array(value, "/v1/peers"))
            .transpose()?;
        let loans = gateway.get_optional("/v1/loans")?;
        Ok(Picture {
            status,
            accounts,
            servers,
            audit,
            peers,
            loans,
        })
    }

    fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("status".into(), self.status.clone());
        object.insert("accounts".into(), json!(self.accounts));
        object.insert("servers".into(), json!(self.servers));
        object.insert("audit".into(), json!(self.audit));
        // Only what the gateway has: absent endpoints are absent keys, not empty lists
        // that would claim "no peers" for a gateway that cannot know.
        if let Some(peers) = &self.peers {
            object.insert("peers".into(), json!(peers));
        }
        if let Some(loans) = &self.loans {
            object.insert("loans".into(), json!(loans));
        }
        Value::Object(object)
    }

    fn render(&self, url: &str) -> String {
        let mut out = String::new();
        let status = &self.status;
        let mut facts = Table::new(&[]);
        let mut fact = |name: &str, value: String| {
            facts.row(vec![name.to_owned(), format!("= {value}")]);
        };
        fact("Site", text(&status["site"]));
        fact("Gateway", url.to_owned());
        fact(
            "Uptime",
            status["uptime_ms"]
                .as_u64()
                .map(duration)
                .unwrap_or_else(|| "-".into()),
        );
        fact("Rounds", text(&status["rounds"]));
        let by_state = match status["servers_by_state"].as_object() {
            Some(states) => {
                let counts: Vec<String> = states
                    .iter()
                    .map(|(state, count)| format!("{} {state}", text(count)))
                    .collect();
                format!(" ({})", counts.join(", "))
            }
            None => String::new(),
        };
        fact("Servers", format!("{}{by_state}", text(&status["servers"])));
        let below: Vec<String> = status["accounts_below_sla"]
            .as_array()
            .map(|names| names.iter().map(text).collect())
            .unwrap_or_default();
        let sla = if below.is_empty() {
            "all at SLA".to_owned()
        } else {
            format!("below SLA: {}", below.join(", "))
        };
        fact("Accounts", format!("{} ({sla})", text(&status["accounts"])));
        let latency = match (
            status["reallocation_ms_p50"].as_u64(),
            status["reallocation_ms_p99"].as_u64(),
        ) {
            (Some(p50), Some(p99)) => format!(" (p50 {p50} ms, p99 {p99} ms)"),
            _ => String::new(),
        };
        fact(
            "Reallocations",
            format!("{}{latency}", text(&status["reallocations"])),
        );
        let config = &status["config"];
        if config.is_object() {
            let hash: String = text(&config["hash"]).chars().take(12).collect();
            fact(
                "Config",
                format!(
                    "{} ({hash}, {} applied, {} refused)",
                    text(&config["path"]),
                    text(&config["reloads_applied"]),
                    text(&config["reloads_refused"])
                ),
            );
        }
        out.push_str(&facts.render());

        // Before anything else: the site runs on another config than its file says.
        if let Some(errors) = config["last_refused"].as_str() {
            section(&mut out, "Config Edit Refused");
            let _ = writeln!(
                out,
                "the site keeps running on its last good config; fix the file:\n{}",
                errors.trim_end()
            );
        }
        if let Some(pending) = config["needs_restart"].as_array()
            && !pending.is_empty()
        {
            section(&mut out, "Waiting For A Restart");
            for change in pending {
                let _ = writeln!(out, "{}", text(change));
            }
        }

        section(&mut out, "Peers");
        match &self.peers {
            Some(peers) if !peers.is_empty() => out.push_str(&peers_table(peers).render()),
            Some(_) => out.push_str("no peers configured ([[peer]] in the site file)\n"),
            None => out.push_str("no peers connected yet\n"),
        }

        section(&mut out, "Accounts");
        out.push_str(&self.accounts_table());

        section(&mut out, "Servers");
        out.push_str(&self.servers_table());

        section(&mut out, "Loans");
        match &self.loans {
            Some(loans) => out.push_str(&loans_text(loans)),
            None => out.push_str("no loans (this gateway does not lend)\n"),
        }

        section(&mut out, "Latest Audit Entries");
        if self.audit.is_empty() {
            out.push_str("no decisions yet\n");
        } else {
            let mut table = audit_table();
            for record in &self.audit {
                table.row(audit_row(record, clock_utc));
            }
            out.push_str(&table.render());
        }
        out
    }

    fn accounts_table(&self) -> String {
        if self.accounts.is_empty() {
            return "no accounts at this site\n".to_owned();
        }
        let mut table = Table::new(&[
            "Name",
            "Owner",
            "Home",
            "SLA",
            "Servers",
            "Starting",
            "Demand",
            "Min",
            "Max",
            "Load",
            "Endpoints",
        ]);
        for account in &self.accounts {
            let sla = match (account["sla_met"].as_bool(), account["shortfall"].as_u64()) {
                (Some(true), _) => "met".to_owned(),
                (Some(false), Some(short)) if short > 0 => format!("BELOW (short {short})"),
                (Some(false), _) => "BELOW".to_owned(),
                (None, _) => "?".to_owned(),
            };
            let endpoints: Vec<String> = account["endpoints"]
                .as_array()
                .map(|list| list.iter().map(text).collect())
                .unwrap_or_default();
            table.row(vec![
                text(&account["name"]),
                text(&account["owner"]),
                text(&account["home"]),
                sla,
                text(&account["servers"]),
                text(&account["starting"]),
                text(&account["demand"]),
                text(&account["min_servers"]),
                text(&account["max_servers"]),
                number(&account["load"]),
                if endpoints.is_empty() {
                    "-".to_owned()
                } else {
                    endpoints.join(",")
                },
            ]);
        }
        table.render()
    }

    fn servers_table(&self) -> String {
        if self.servers.is_empty() {
            return "no servers in this site's inventory\n".to_owned();
        }
        let mut table = Table::new(&[
            "ID",
            "State",
            "Account",
            "Epoch",
            "Health",
            "Load",
            "Lease",
            "Connected",
            "Service Address",
        ]);
        let rank = |server: &Value| {
            let state = server["state"].as_str().unwrap_or_default();
            STATE_ORDER
                .iter()
                .position(|known| *known == state)
                .unwrap_or(STATE_ORDER.len())
        };
        let mut servers: Vec<&Value> = self.servers.iter().collect();
        // Stable: within a state, inventory order, as the config lists the servers.
        servers.sort_by_key(|server| rank(server));
        for server in servers {
            let lease = match (
                server["lease_expires_in_ms"].as_u64(),
                server["lease_revoked"].as_bool(),
            ) {
                (Some(ms), Some(true)) => format!("revoked, {} left", duration(ms)),
                (Some(ms), _) => format!("{} left", duration(ms)),
                (None, _) => "-".to_owned(),
            };
            table.row(vec![
                text(&server["id"]),
                text(&server["state"]),
                text(&server["account"]),
                text(&server["epoch"]),
                text(&server["health"]),
                number(&server["load"]),
                lease,
                match server["connected"].as_bool() {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "no".to_owned(),
                    None => "-".to_owned(),
                },
                text(&server["service_addr"]),
            ]);
        }
        table.render()
    }
}

fn section(out: &mut String, title: &str) {
    let _ = write!(out, "\n{title}\n");
}

/// Peers as `/v1/peers` describes them; a field a gateway does not send shows as `-`.
fn peers_table(peers: &[Value]) -> Table {
    let mut table = Table::new(&[
        "Name",
        "Address",
        "State",
        "RTT",
        "Silent",
        "Connections",
        "Accounts",
    ]);
    for peer in peers {
        let connections = match (peer["dialled"].as_bool(), peer["dialled_in"].as_bool()) {
            (Some(true), Some(true)) => "both ways",
            (Some(true), _) => "we dialled",
            (_, Some(true)) => "it dialled",
            (Some(false), Some(false)) => "none",
            _ => "-",
        };
        let accounts: Vec<String> = peer["accounts"]
            .as_array()
            .map(|names| names.iter().map(text).collect())
            .unwrap_or_default();
        table.row(vec![
            text(&peer["name"]),
            text(&peer["addr"]),
            text(&peer["state"]),
            peer["rtt_ms"]
                .as_f64()
                .map(|rtt| format!("{rtt:.1}ms"))
                .unwrap_or_else(|| "-".into()),
            peer["silent_ms"]
                .as_u64()
                .map(duration)
                .unwrap_or_else(|| "-".into()),
            connections.to_owned(),
            if accounts.is_empty() {
                "-".to_owned()
            } else {
                accounts.join(",")
            },
        ]);
    }
    table
}

/// Servers borrowed and lent (`/v1/loans`), one row each, then the totals since start.
fn loans_text(loans: &Value) -> String {
    let mut table = Table::new(&[
        "Direction",
        "Server",
        "Peer",
        "Account",
        "Epoch",
        "State",
        "Expires",
    ]);
    let rows = |key: &str| loans[key].as_array().cloned().unwrap_or_default();
    for loan in rows("borrowed") {
        table.row(vec![
            "borrowed".into(),
            text(&loan["server"]),
            format!("from {}", text(&loan["lender"])),
            text(&loan["account"]),
            text(&loan["epoch"]),
            text(&loan["state"]),
            loan["expires_in_ms"]
                .as_u64()
                .map(|ms| format!("in {}", duration(ms)))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    for loan in rows("lent") {
        let state = match loan["recalled"].as_bool() {
            Some(true) => format!("{} (recalled)", text(&loan["state"])),
            _ => text(&loan["state"]),
        };
        table.row(vec![
            "lent".into(),
            text(&loan["server"]),
            format!("to {}", text(&loan["borrower"])),
            text(&loan["account"]),
            text(&loan["epoch"]),
            state,
            loan["expires_in_ms"]
                .as_u64()
                .map(|ms| format!("in {}", duration(ms)))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let counts = &loans["counts"];
    let totals = format!(
        "since start: borrowed {}, returned {}, recalled {}, expired {}, lent {}\n",
        text(&counts["borrowed"]),
        text(&counts["returned"]),
        text(&counts["recalled"]),
        text(&counts["expired"]),
        text(&counts["lent"]),
    );
    if rows("borrowed").is_empty() && rows("lent").is_empty() {
        format!("no loans; {totals}")
    } else {
        format!("{}{totals}", table.render())
    }
}

/// The audit table's heading, as `leasehold status` prints it.
fn audit_table() -> Table {
    Table::new(&[
        "Seq",
        "Time (UTC)",
        "Kind",
        "Server",
        "Account",
        "Epoch",
        "Reason",
    ])
}

/// One audit record's cells: seq, time, kind, server, account (`from → to` for moves),
/// epoch, reason.
pub fn audit_row(record: &Value, time: fn(u64) -> String) -> Vec<String> {
    let account = match (record["from"].as_str(), record["account"].as_str()) {
        (Some(from), Some(to)) => format!("{from} → {to}"),
        (None, Some(to)) => to.to_owned(),
        (Some(from), None) => format!("{from} → free"),
        (None, None) => "-".to_owned(),
    };
    vec![
        text(&record["seq"]),
        record["wall_ms"]
            .as_u64()
            .map(time)
            .unwrap_or_else(|| "-".into()),
        text(&record["kind"]),
        text(&record["server"]),
        account,
        record["epoch"]
            .as_u64()
            .map(|epoch| format!("e{epoch}"))
            .unwrap_or_else(|| "-".into()),
        text(&record["reason"]),
    ]
}

/// Columns aligned by hand: two spaces between columns, the last one unpadded (it holds
/// the long texts: reasons, endpoint lists).
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|cell| cell.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let lines: Vec<&Vec<String>> = std::iter::once(&self.header)
            .filter(|header| !header.is_empty())
            .chain(&self.rows)
            .collect();
        let columns = lines.iter().map(|cells| cells.len()).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for cells in &lines {
            for (ix, cell) in cells.iter().enumerate() {
                widths[ix] = widths[ix].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for cells in lines {
            let mut line = String::new();
            for (ix, cell) in cells.iter().enumerate() {
                if ix > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths[ix].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A JSON value as a cell: strings bare, null as `-`.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON number as a cell with one decimal, or `-`.
pub fn number(value: &Value) -> String {
    value
        .as_f64()
        .map(|n| format!("{n:.1}"))
        .unwrap_or_else(|| "-".to_owned())
}

/// A short human duration: `850ms`, `42s`, `3m05s`, `2h03m`, `3d04h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

/// `HH:MM:SS` in UTC.
pub fn clock_utc(wall_ms: u64) -> String {
    let day = wall_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60)
}

/// RFC 3339 in UTC with milliseconds (`2026-11-25T22:06:21.148Z`): the audit log's records
/// come from several sites' clocks, and UTC is what they share.
pub fn rfc3339_utc(wall_ms: u64) -> String {
    let days = wall_ms / 86_400_000;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{}.{:03}Z",
        clock_utc(wall_ms),
        wall_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`), so no date crate is needed for one conversion.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_leave_the_last_unpadded() {
        let mut table = Table::new(&["ID", "State", "Reason"]);
        table.row(vec!["a1".into(), "serving".into(), "long text".into()]);
        table.row(vec!["a10".into(), "free".into(), "-".into()]);
        assert_eq!(
            table.render(),
            "ID   State    Reason\na1   serving  long text\na10  free     -\n"
        );
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_795_644_381_148), "2026-11-25T22:06:21.148Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn moves_read_from_to() {
        let record = json!({"seq": 12, "wall_ms": 0, "kind": "reclaim", "server": "a3",
            "account": "shop", "from": "blog", "epoch": 5, "reason": "shop is short"});
        assert_eq!(
            audit_row(&record, clock_utc),
            [
                "12",
                "00:00:00",
                "reclaim",
                "a3",
                "blog → shop",
                "e5",
                "shop is short"
            ]
        );
    }
}
