//! The live view: once a second, what each server of each site runs, what each account
//! gets (its borrowed servers included), the loans between sites and the latest decisions,
//! from the gateways' admin APIs. A terminal gets a table redrawn in place, at most 100
//! columns wide; a pipe or a log gets one compact line a second plus each new audit record
//! once, so it reads as a history.

use std::fmt::Write as _;
use std::time::Duration;

use leasehold_chaos_tests::harness::load::LoadCounts;
use serde_json::Value;

use super::loans::{LoanCounts, LoanView};
use super::schedule::ACCOUNTS;
use super::summary::percentile;
use crate::cli::status::{number, text};

/// ANSI: clear the screen and move the cursor home.
pub const CLEAR: &str = "\x1b[2J\x1b[H";
/// The table's width on a terminal.
pub const WIDTH: usize = 100;
/// One site's column of servers.
const COLUMN: usize = 31;
/// Audit lines shown under the table, newest last, across the sites.
const AUDIT_LINES: usize = 6;

/// What one gateway said this second.
#[derive(Debug, Clone)]
pub struct SiteState {
    pub servers: Vec<Value>,
    pub accounts: Vec<Value>,
    /// The newest audit records, oldest first.
    pub audit: Vec<Value>,
    pub loans: LoanView,
}

/// One site's part of a sample: its state, or why it could not be read.
#[derive(Debug, Clone)]
pub struct SiteSample {
    pub site: String,
    pub state: Result<SiteState, String>,
    /// Set once the demo has killed this site's gateway (`--kill-site`): since when, into
    /// the load. It is not asked any more.
    pub down_since: Option<Duration>,
}

/// Where the run is.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    pub elapsed: Duration,
    pub duration: Duration,
    pub phase: usize,
    pub phases: usize,
    pub phase_name: &'a str,
    pub rates: &'a [(String, f64)],
}

impl Header<'_> {
    fn when(&self) -> String {
        format!(
            "{} / {}  phase {}/{}: {}",
            clock(self.elapsed),
            clock(self.duration),
            self.phase + 1,
            self.phases,
            self.phase_name,
        )
    }

    fn rates(&self) -> String {
        let rates: Vec<String> = self
            .rates
            .iter()
            .map(|(account, rate)| format!("{account} {rate:.0}/s"))
            .collect();
        rates.join(", ")
    }
}

/// The full table, for a terminal.
pub fn render(header: &Header, sample: &[SiteSample], requests: &[(String, LoadCounts)]) -> String {
    let mut out = String::new();
    let names: Vec<&str> = sample.iter().map(|s| s.site.as_str()).collect();
    let _ = writeln!(
        out,
        "leasehold demo: {} (Ctrl-C ends early with the summary)",
        names.join(", ")
    );
    let _ = writeln!(out, "{}", cut(&header.when(), WIDTH));
    let _ = writeln!(out, "{}", cut(&format!("load: {}", header.rates()), WIDTH));
    let _ = writeln!(out);
    servers(&mut out, sample);
    let _ = writeln!(out);
    accounts(&mut out, sample, requests);
    let _ = writeln!(out);
    loans(&mut out, sample);
    let _ = writeln!(out);
    let _ = writeln!(out, "LATEST DECISIONS (GET /v1/audit of each site)");
    for (site, record) in latest_audit(sample, AUDIT_LINES) {
        let _ = writeln!(out, "  {}", audit_line(site, record, WIDTH - 2));
    }
    out
}

/// Each site a column: its servers, a lent one as `b3 serving shop@site-a`.
fn servers(out: &mut String, sample: &[SiteSample]) {
    let mut columns: Vec<Vec<String>> = Vec::new();
    for site in sample {
        let mut column = Vec::new();
        match &site.state {
            _ if site.down_since.is_some() => {
                let since = site.down_since.map(clock).unwrap_or_default();
                column.push(format!("{}  DOWN since {since}", site.site.to_uppercase()));
                column.extend(DOWN_LINES.iter().map(|line| (*line).to_owned()));
            }
            Ok(state) => {
                let title = match state.loans.loans() {
                    Some(loans) => format!(
                        "{}  lends {}, borrows {}",
                        site.site.to_uppercase(),
                        loans.lent.len(),
                        loans.borrowed.len()
                    ),
                    None => site.site.to_uppercase(),
                };
                column.push(title);
                for server in &state.servers {
                    column.push(format!(
                        "{:<3} {:<8} {:<12} {:>4}",
                        text(&server["id"]),
                        text(&server["state"]),
                        server_account(server),
                        epoch(&server["epoch"]),
                    ));
                }
            }
            Err(error) => {
                column.push(site.site.to_uppercase());
                column.push("cannot read:".to_owned());
                column.push(error.clone());
            }
        }
        columns.push(column);
    }
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0);
    for row in 0..rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|column| {
                let cell = column.get(row).map(String::as_str).unwrap_or("");
                format!("{:<COLUMN$}", cut(cell, COLUMN))
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
}

/// What a killed site's column says instead of its servers.
const DOWN_LINES: [&str; 4] = [
    "gateway killed (SIGKILL)",
    "its node agents run on, and",
    "stop their workloads when",
    "their leases run out",
];

/// Every account of the schedule, as its owner sees it (its home, or the site that took it
/// over), with its borrowed servers and the demo's requests.
fn accounts(out: &mut String, sample: &[SiteSample], requests: &[(String, LoadCounts)]) {
    let _ = writeln!(
        out,
        "{:<8} {:<7} {:<11} {:>6} {:>7} {:>6} {:>5} {:>6}  {:<3} {:>5}  {:>15}",
        "ACCOUNT",
        "HOME",
        "OWNER",
        "DEMAND",
        "SERVERS",
        "BORROW",
        "START",
        "LOAD",
        "SLA",
        "SHORT",
        "REQUESTS OK/ALL"
    );
    for (home, name) in ACCOUNTS {
        let counts = requests
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, counts)| format!("{}/{}", counts.ok, counts.sent))
            .unwrap_or_else(|| "-".to_owned());
        let row = account_row(sample, home, name);
        let empty = Value::Null;
        let account = row.map_or(&empty, |(_, account)| account);
        let owner = match (
            account["owner"].as_str(),
            account["ownership_term"].as_u64(),
        ) {
            (Some(owner), Some(term)) => format!("{owner} t{term}"),
            (Some(owner), None) => owner.to_owned(),
            (None, _) if row.is_some() => "unknown".to_owned(),
            (None, _) => "none seen".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<8} {:<7} {:<11} {:>6} {:>7} {:>6} {:>5} {:>6}  {:<3} {:>5}  {:>15}",
            name,
            home,
            owner,
            text(&account["demand"]),
            text(&account["servers"]),
            text(&account["borrowed"]),
            text(&account["starting"]),
            number(&account["load"]),
            sla(&account["sla_met"]),
            text(&account["shortfall"]),
            counts,
        );
    }
}

/// An account's row, and the site it comes from: the site that names itself the account's
/// owner; else its home's row, if its home answered; else none (its home is down or did not
/// answer, and nobody has taken it over yet).
pub fn account_row<'a>(
    sample: &'a [SiteSample],
    home: &str,
    account: &str,
) -> Option<(&'a str, &'a Value)> {
    let rows = || {
        sample.iter().filter_map(|site| {
            let state = site.state.as_ref().ok()?;
            let row = state.accounts.iter().find(|a| a["name"] == account)?;
            Some((site.site.as_str(), row))
        })
    };
    let owner = rows().find(|(site, row)| row["owner"] == *site);
    owner.or_else(|| rows().find(|(site, _)| *site == home))
}

/// The federation's loans: counts summed over the sites, then each loan now.
fn loans(out: &mut String, sample: &[SiteSample]) {
    let mut total = LoanCounts::default();
    let mut latencies = Vec::new();
    let mut served = false;
    for site in sample {
        if let Ok(state) = &site.state
            && let Some(loans) = state.loans.loans()
        {
            served = true;
            total.add(&loans.counts);
            latencies.extend(loans.latencies_ms.iter().copied());
        }
    }
    if !served {
        let _ = writeln!(
            out,
            "LOANS: no gateway serves GET /v1/loans (a build without loans)"
        );
        return;
    }
    latencies.sort_by(f64::total_cmp);
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
    let line = format!(
        "LOANS  borrowed {}, returned {}, recalled {}, expired {}; latency p50 {}, max {}",
        total.borrowed,
        total.returned,
        total.recalled,
        total.expired,
        ms(percentile(&latencies, 0.5)),
        ms(latencies.last().copied()),
    );
    let _ = writeln!(out, "{}", cut(&line, WIDTH));
    for site in sample {
        let Ok(state) = &site.state else { continue };
        let Some(loans) = state.loans.loans() else {
            continue;
        };
        for loan in &loans.borrowed {
            let latency = loan["latency_ms"]
                .as_f64()
                .map_or(String::new(), |ms| format!(", {ms:.0} ms to serve"));
            let line = format!(
                "{} borrows {} of {} for {}: {} {}{latency}, lease {} ms left",
                site.site,
                text(&loan["server"]),
                text(&loan["lender"]),
                text(&loan["account"]),
                text(&loan["state"]),
                epoch(&loan["epoch"]),
                text(&loan["expires_in_ms"]),
            );
            let _ = writeln!(out, "  {}", cut(&line, WIDTH - 2));
        }
    }
}

/// The newest `count` audit records across the sites, oldest first.
fn latest_audit(sample: &[SiteSample], count: usize) -> Vec<(&str, &Value)> {
    let mut all: Vec<(&str, &Value)> = Vec::new();
    for site in sample {
        if let Ok(state) = &site.state {
            all.extend(
                state
                    .audit
                    .iter()
                    .map(|record| (site.site.as_str(), record)),
            );
        }
    }
    all.sort_by_key(|(_, record)| record["wall_ms"].as_u64().unwrap_or(0));
    let skip = all.len().saturating_sub(count);
    all.split_off(skip)
}

/// One line for a pipe: time, phase, rates, then each site's servers and accounts.
pub fn compact(header: &Header, sample: &[SiteSample]) -> String {
    let mut parts = vec![format!("{}  load: {}", header.when(), header.rates())];
    for site in sample {
        if let Some(since) = site.down_since {
            parts.push(format!(
                "{} DOWN since {} (gateway killed)",
                site.site,
                clock(since)
            ));
            continue;
        }
        let state = match &site.state {
            Ok(state) => state,
            Err(error) => {
                parts.push(format!("{} cannot read: {error}", site.site));
                continue;
            }
        };
        let servers: Vec<String> = state
            .servers
            .iter()
            .map(|s| match s["state"].as_str() {
                Some("serving") => format!(
                    "{} {} {}",
                    text(&s["id"]),
                    server_account(s),
                    epoch(&s["epoch"])
                ),
                Some("free" | "offline") | None => {
                    format!("{} {}", text(&s["id"]), text(&s["state"]))
                }
                Some(other) => format!(
                    "{} {other} {} {}",
                    text(&s["id"]),
                    server_account(s),
                    epoch(&s["epoch"])
                ),
            })
            .collect();
        // Its own accounts, and those it has taken over (owner itself, another home).
        let accounts: Vec<String> = state
            .accounts
            .iter()
            .filter(|a| {
                a["owner"] == site.site.as_str()
                    || (a["owner"].is_null() && a["home"].as_str().is_none_or(|h| h == site.site))
            })
            .map(|a| {
                let borrowed = match a["borrowed"].as_u64() {
                    Some(n) if n > 0 => format!(" ({n} borrowed)"),
                    _ => String::new(),
                };
                let taken = match a["home"].as_str() {
                    Some(home) if home != site.site => format!(" (taken over from {home})"),
                    _ => String::new(),
                };
                format!(
                    "{}{taken} {}/{}{borrowed} load {} {}",
                    text(&a["name"]),
                    text(&a["servers"]),
                    text(&a["demand"]),
                    number(&a["load"]),
                    sla(&a["sla_met"])
                )
            })
            .collect();
        let lending = match state.loans.loans() {
            Some(loans) => format!(
                "; lends {}, borrows {}",
                loans.lent.len(),
                loans.borrowed.len()
            ),
            None => String::new(),
        };
        parts.push(format!(
            "{} {}; {}{lending}",
            site.site,
            servers.join(", "),
            accounts.join(", ")
        ));
    }
    parts.join(" | ")
}

/// `site-a #12 reclaim a3 shop → blog (e5): reason`, cut to `width` characters.
pub fn audit_line(site: &str, record: &Value, width: usize) -> String {
    let from = record["from"].as_str().unwrap_or("free");
    let to = record["account"].as_str().unwrap_or("free");
    let account = record["account"].as_str().unwrap_or("");
    let what = match (record["kind"].as_str(), record["peer"].as_str()) {
        (Some("assign" | "reclaim" | "release" | "join"), _) => format!("{from} → {to}"),
        (Some("takeover"), Some(peer)) => format!("{account} ← {peer}"),
        (Some("handback" | "handback_started"), Some(peer)) => format!("{account} → {peer}"),
        (Some("handover"), Some(peer)) => format!("{account} ← {peer}"),
        (Some("ownership_acquired" | "ownership_lost"), _) => match record["term"].as_u64() {
            Some(term) => format!("{account} t{term}"),
            None => account.to_owned(),
        },
        (_, Some(peer)) => format!("{account} ↔ {peer}"),
        _ => account.to_owned(),
    };
    let line = format!(
        "{site} #{} {:<12} {:<4} {:<13} {}",
        text(&record["seq"]),
        text(&record["kind"]),
        record["server"].as_str().unwrap_or(""),
        what,
        text(&record["reason"])
    );
    cut(&line, width)
}

/// The account a server runs; a lent one's with the borrower: `shop@site-a`.
fn server_account(server: &Value) -> String {
    match server["lent_to"].as_str() {
        Some(borrower) => format!("{}@{borrower}", text(&server["account"])),
        None => text(&server["account"]),
    }
}

pub fn epoch(value: &Value) -> String {
    value
        .as_u64()
        .map_or("-".to_owned(), |epoch| format!("e{epoch}"))
}

pub fn cut(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut short: String = line.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    short
}

pub fn sla(value: &Value) -> &'static str {
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
    use serde_json::json;

    use super::super::loans;
    use super::*;

    #[test]
    fn audit_lines_name_the_site_and_the_move() {
        let record = json!({"seq": 7, "kind": "reclaim", "server": "a3", "account": "blog",
            "from": "shop", "epoch": 4, "reason": "blog below its demand"});
        assert_eq!(
            audit_line("site-a", &record, 200),
            "site-a #7 reclaim      a3   shop → blog   blog below its demand"
        );
        assert_eq!(audit_line("site-a", &record, 10).chars().count(), 10);
        let loan = json!({"seq": 9, "kind": "borrow", "server": "b3", "account": "shop",
            "peer": "site-b", "epoch": 4, "reason": "lent"});
        assert!(audit_line("site-a", &loan, 200).contains("shop ↔ site-b"));
    }

    fn state(servers: Vec<Value>, accounts: Vec<Value>, loans: LoanView) -> SiteState {
        SiteState {
            servers,
            accounts,
            audit: vec![],
            loans,
        }
    }

    /// Three sites with a lent server and a borrowing account fit in 100 columns, and show
    /// the loan at both ends.
    #[test]
    fn the_table_shows_loans_within_100_columns() {
        let lent = loans::parse(&json!({"borrowed": [], "lent": [{"server": "b2"}],
            "counts": {"borrowed": 0, "returned": 0, "recalled": 0, "expired": 0, "lent": 1},
            "latencies_ms": []}));
        let borrowing = loans::parse(&json!({"borrowed": [{"server": "b2", "lender": "site-b",
                "account": "shop", "epoch": 4, "state": "serving", "expires_in_ms": 1800,
                "latency_ms": 35}], "lent": [],
            "counts": {"borrowed": 1, "returned": 0, "recalled": 0, "expired": 0, "lent": 0},
            "latencies_ms": [35]}));
        let server = |id: &str, account: &str, lent_to: Option<&str>| {
            json!({"id": id, "state": "serving", "account": account, "epoch": 14,
                "lent_to": lent_to})
        };
        let account = |name: &str, home: &str, borrowed: u32| {
            json!({"name": name, "home": home, "demand": 6, "servers": 6, "starting": 0,
                "borrowed": borrowed, "load": 110.0, "sla_met": true, "shortfall": null})
        };
        let sample = vec![
            SiteSample {
                site: "site-a".into(),
                state: Ok(state(
                    vec![server("a1", "shop", None)],
                    vec![account("shop", "site-a", 1)],
                    borrowing,
                )),
                down_since: None,
            },
            SiteSample {
                site: "site-b".into(),
                state: Ok(state(
                    vec![
                        server("b1", "wiki", None),
                        server("b2", "shop", Some("site-a")),
                    ],
                    vec![account("wiki", "site-b", 0), account("shop", "site-a", 0)],
                    lent,
                )),
                down_since: None,
            },
            SiteSample {
                site: "site-c".into(),
                state: Err("GET /v1/servers: connection refused".into()),
                down_since: None,
            },
        ];
        let rates = vec![("shop".to_owned(), 110.0)];
        let header = Header {
            elapsed: Duration::from_secs(37),
            duration: Duration::from_secs(90),
            phase: 2,
            phases: 4,
            phase_name: "shop burst: 6 wanted, site-a can give 3; borrowed from site-b and site-c",
            rates: &rates,
        };
        let table = render(&header, &sample, &[("shop".into(), LoadCounts::default())]);
        for line in table.lines() {
            assert!(line.chars().count() <= WIDTH, "{} wide: {line}", line.len());
        }
        assert!(table.contains("b2  serving  shop@site-a"), "{table}");
        assert!(table.contains("SITE-B  lends 1, borrows 0"), "{table}");
        assert!(
            table.contains("site-a borrows b2 of site-b for shop: serving e4"),
            "{table}"
        );
        assert!(table.contains("LOANS  borrowed 1, returned 0"), "{table}");
        // shop appears once, at its home, with its borrowed count.
        let shop_rows: Vec<&str> = table.lines().filter(|l| l.starts_with("shop ")).collect();
        assert_eq!(shop_rows.len(), 1, "{table}");
        assert!(shop_rows[0].contains("site-a"), "{table}");
        assert!(table.contains("cannot read:"), "{table}");
        let line = compact(&header, &sample);
        assert!(line.contains("b2 shop@site-a e14"), "{line}");
        assert!(line.contains("shop 6/6 (1 borrowed)"), "{line}");
    }

    /// After site-a's gateway is killed: its column says since when, shop is listed once,
    /// at its home with its new owner, and the takeover shows in the audit lines.
    #[test]
    fn a_killed_site_is_down_and_its_accounts_show_their_new_owner() {
        let account = |name: &str, owner: &str, term: u64| {
            json!({"name": name, "home": "site-a", "owner": owner, "ownership_term": term,
                "demand": 1, "servers": 1, "starting": 0, "borrowed": 0, "load": 5.0,
                "sla_met": true, "shortfall": null, "min_servers": 1})
        };
        let mut site_b = state(
            vec![json!({"id": "b1", "state": "serving", "account": "shop", "epoch": 3})],
            vec![account("shop", "site-b", 2)],
            LoanView::NotServed,
        );
        site_b.audit = vec![json!({"seq": 30, "wall_ms": 5, "kind": "takeover",
            "account": "shop", "peer": "site-a", "term": 2, "server": null,
            "reason": "site-b took shop over (t2)"})];
        let sample = vec![
            SiteSample {
                site: "site-a".into(),
                state: Err("gateway killed".into()),
                down_since: Some(Duration::from_secs(31)),
            },
            SiteSample {
                site: "site-b".into(),
                state: Ok(site_b),
                down_since: None,
            },
        ];
        let rates = vec![("shop".to_owned(), 5.0)];
        let header = Header {
            elapsed: Duration::from_secs(35),
            duration: Duration::from_secs(60),
            phase: 2,
            phases: 4,
            phase_name: "shop burst",
            rates: &rates,
        };
        let table = render(&header, &sample, &[]);
        for line in table.lines() {
            assert!(line.chars().count() <= WIDTH, "{} wide: {line}", line.len());
        }
        assert!(table.contains("SITE-A  DOWN since 0:31"), "{table}");
        assert!(table.contains("gateway killed (SIGKILL)"), "{table}");
        let shop: Vec<&str> = table.lines().filter(|l| l.starts_with("shop ")).collect();
        assert_eq!(shop.len(), 1, "{table}");
        assert!(shop[0].contains("site-a  site-b t2"), "{table}");
        let blog: Vec<&str> = table.lines().filter(|l| l.starts_with("blog ")).collect();
        assert!(blog[0].contains("none seen"), "{table}");
        let audit = table
            .lines()
            .find(|l| l.contains("site-b #30 takeover"))
            .unwrap();
        assert!(audit.contains("shop ← site-a"), "{table}");
        let line = compact(&header, &sample);
        assert!(line.contains("site-a DOWN since 0:31"), "{line}");
        assert!(line.contains("shop (taken over from site-a) 1/1"), "{line}");
        assert_eq!(account_row(&sample, "site-a", "shop").unwrap().0, "site-b");
    }

    #[test]
    fn clock_is_minutes_and_seconds() {
        assert_eq!(clock(Duration::from_secs(75)), "1:15");
    }
}
