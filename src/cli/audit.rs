//! `leasehold audit [--gateway URL] [--limit N] [--follow]`: the gateway's audit log, every
//! decision with its reason, oldest first; `--follow` keeps printing new records as they
//! are journaled, like `tail -f`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use serde_json::Value;

use super::status::{AdminArgs, Gateway, audit_row, rfc3339_utc};

/// How often `--follow` asks for new records: decisions happen in rounds of 100 ms, and a
/// person reading a tail does not need them sooner.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// The API's largest page (docs/api.md).
const PAGE_MAX: u64 = 1000;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// How many of the newest records to print first (1..=1000).
    #[arg(long, short = 'n', default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=PAGE_MAX))]
    limit: u64,
    /// Keep printing new records as they come, until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let gateway = Gateway::new(&args.admin)?;
    let first = records(&gateway, &format!("/v1/audit?limit={}", args.limit))?;
    println!("{}", line(&HEADER.map(str::to_owned)));
    let mut last = print(&first, 0);
    if first.is_empty() {
        eprintln!("no decisions in the audit log of {} yet", gateway.url());
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Ctrl-C ends the loop (the default SIGINT action): there is nothing to clean up.
    let mut lost = false;
    loop {
        std::thread::sleep(FOLLOW_EVERY);
        match records(
            &gateway,
            &format!("/v1/audit?after={last}&limit={PAGE_MAX}"),
        ) {
            Ok(batch) => {
                if lost {
                    eprintln!("the gateway at {} answers again", gateway.url());
                    lost = false;
                }
                last = print(&batch, last);
            }
            // A restarting gateway is worth waiting for: its journal keeps the sequence,
            // so the tail resumes where it stopped. Say so once, not every second.
            Err(error) if !lost => {
                eprintln!("{error:#}; retrying every second");
                lost = true;
            }
            Err(_) => {}
        }
    }
}

const HEADER: [&str; 7] = [
    "SEQ", "TIME", "KIND", "SERVER", "ACCOUNT", "EPOCH", "REASON",
];

/// Fixed widths rather than measured ones: `--follow` prints batch after batch under one
/// heading, and the columns must line up across them. Long cells push, never cut.
fn line(cells: &[String]) -> String {
    // KIND fits the longest kind, `ownership_acquired`.
    const WIDTHS: [usize; 6] = [6, 24, 18, 8, 20, 5];
    let mut out = String::new();
    for (ix, cell) in cells.iter().enumerate() {
        if ix > 0 {
            out.push_str("  ");
        }
        match WIDTHS.get(ix) {
            // Numbers read best right-aligned.
            Some(&width) if ix == 0 => out.push_str(&format!("{cell:>width$}")),
            Some(&width) => out.push_str(&format!("{cell:<width$}")),
            None => out.push_str(cell),
        }
    }
    out.trim_end().to_owned()
}

fn records(gateway: &Gateway, path: &str) -> anyhow::Result<Vec<Value>> {
    match gateway.get(path)? {
        Value::Array(records) => Ok(records),
        other => bail!("GET {path} answered {other}, not a JSON array"),
    }
}

/// Prints `records` and returns the highest sequence number seen (or `last`).
fn print(records: &[Value], last: u64) -> u64 {
    let mut highest = last;
    for record in records {
        println!("{}", line(&audit_row(record, rfc3339_utc)));
        if let Some(seq) = record["seq"].as_u64() {
            highest = highest.max(seq);
        }
    }
    highest
}
