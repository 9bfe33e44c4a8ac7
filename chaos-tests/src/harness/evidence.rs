//! Safety from the evidence nodes leave: every node's event log, read back and checked.

use std::path::Path;
use std::time::Duration;

use leasehold_node::event_log::{Event, read_log};
use leasehold_node::evidence::{Violation, check_server_log};

/// The event log of the node agent whose work directory is `work`.
pub fn node_events(work: &Path) -> Result<Vec<Event>, String> {
    read_log(work).map_err(|error| error.to_string())
}

/// When the first event that `matches` happened in the log in `work`, on the machine's
/// monotonic clock (one clock for every node agent on this machine, so times of two nodes'
/// logs compare).
pub fn first_event_ns(
    work: &Path,
    matches: impl Fn(&leasehold_node::event_log::EventKind) -> bool,
) -> Option<u64> {
    node_events(work)
        .ok()?
        .into_iter()
        .find(|event| matches(&event.kind))
        .map(|event| event.mono_ns)
}

/// Violations in each node's log (S-2, S-3, S-1 within `stop_slack`).
pub fn violations(
    works: &[&Path],
    stop_slack: Duration,
) -> Result<Vec<(String, Violation)>, String> {
    let mut found = Vec::new();
    for work in works {
        let events = node_events(work)?;
        for violation in check_server_log(&events, stop_slack) {
            found.push((work.display().to_string(), violation));
        }
    }
    Ok(found)
}

/// The raw lines of the event log in `work` that tell the story of `epoch` up to line
/// `upto_seq` (all of it if `None`): its `pointer_accepted`, its last `lease_extended`
/// before that point, and its workload's starts and stops; prefixed with the log's path, as
/// a failure's evidence for a person to check against the file.
pub fn epoch_lines(work: &Path, epoch: u64, upto_seq: Option<u64>) -> Vec<String> {
    // The rotated files first, oldest first, then the file written to.
    let mut files = leasehold_node::event_log::rotated_files(work).unwrap_or_default();
    files.push(work.join("events.jsonl"));
    let mut texts = Vec::new();
    for path in files {
        match std::fs::read_to_string(&path) {
            Ok(text) => texts.push((path, text)),
            Err(_) => return vec![format!("(cannot read {})", path.display())],
        }
    }
    let mut picked: Vec<(u64, String)> = Vec::new();
    let mut last_lease: Option<(u64, String)> = None;
    'files: for (path, text) in &texts {
        for line in text.lines() {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(seq), Some(kind)) = (value["seq"].as_u64(), value["event"].as_str()) else {
                continue;
            };
            if upto_seq.is_some_and(|upto| seq > upto) {
                break 'files;
            }
            if value["epoch"].as_u64() != Some(epoch) {
                continue;
            }
            let shown = format!("{}: {line}", path.display());
            match kind {
                "lease_extended" => last_lease = Some((seq, shown)),
                _ => picked.push((seq, shown)),
            }
        }
    }
    picked.extend(last_lease);
    picked.sort_by_key(|(seq, _)| *seq);
    picked.into_iter().map(|(_, line)| line).collect()
}

/// When a workload of `account` ran on a server, by the node's own log: from the start of
/// its process (`workload_starting`, logged before the spawn) to its confirmed end
/// (`workload_stopped`), or to `until_mono_ns` if it is still running. Monotonic
/// nanoseconds, comparable across the node agents of one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub server: String,
    pub account: String,
    pub epoch: u64,
    pub from_mono_ns: u64,
    pub to_mono_ns: u64,
    /// The wall clock when it started, to place the gateways' audit records (which carry
    /// wall-clock milliseconds) on the monotonic line.
    pub from_wall_ms: u64,
}

impl Running {
    /// `wall_ms` on this run's monotonic line (to the millisecond).
    fn mono_of(&self, wall_ms: u64) -> u64 {
        let offset_ns = (i128::from(wall_ms) - i128::from(self.from_wall_ms)) * 1_000_000;
        u64::try_from((i128::from(self.from_mono_ns) + offset_ns).max(0)).unwrap_or(u64::MAX)
    }
}

/// Every workload run in the event log of the node agent working in `work`.
pub fn running(work: &Path, until_mono_ns: u64) -> Result<Vec<Running>, String> {
    use leasehold_node::event_log::EventKind;
    let mut open: Vec<Running> = Vec::new();
    let mut done = Vec::new();
    for event in node_events(work)? {
        match event.kind {
            EventKind::WorkloadStarting { account, epoch, .. } => open.push(Running {
                server: event.server.to_string(),
                account: account.to_string(),
                epoch: epoch.value(),
                from_mono_ns: event.mono_ns,
                to_mono_ns: until_mono_ns,
                from_wall_ms: event.wall_ms,
            }),
            EventKind::WorkloadStopped { epoch, .. } => {
                if let Some(ix) = open.iter().position(|run| run.epoch == epoch.value()) {
                    let mut run = open.remove(ix);
                    run.to_mono_ns = event.mono_ns;
                    done.push(run);
                }
            }
            _ => {}
        }
    }
    done.extend(open);
    Ok(done)
}

/// A server one site lent to another, from the lender's audit log: under `epoch` it ran
/// the borrower's account for the borrower, until `taken_home` if its home took it as its
/// own then (a drain-first hand-back, audited `handover`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LentRun {
    pub server: String,
    pub epoch: u64,
    pub borrower: String,
    pub taken_home: Option<Stamp>,
}

/// When an audit record was written: its `mono_ns` (CLOCK_MONOTONIC, as the node logs
/// have it; 0 in records from before it was added) and its `wall_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub mono_ns: u64,
    pub wall_ms: u64,
}

/// The loans in one site's audit records (`GET /v1/audit`, oldest first): `lend` records,
/// and the `handover` records that end them.
pub fn lent_runs(audit: &[serde_json::Value]) -> Vec<LentRun> {
    let mut lent: Vec<LentRun> = Vec::new();
    for record in audit {
        let (Some(server), Some(epoch)) = (record["server"].as_str(), record["epoch"].as_u64())
        else {
            continue;
        };
        match record["kind"].as_str() {
            Some("lend") => {
                if let Some(borrower) = record["peer"].as_str() {
                    lent.push(LentRun {
                        server: server.to_owned(),
                        epoch,
                        borrower: borrower.to_owned(),
                        taken_home: None,
                    });
                }
            }
            Some("handover") => {
                if let Some(run) = lent
                    .iter_mut()
                    .find(|run| run.server == server && run.epoch == epoch)
                {
                    run.taken_home = Some(Stamp {
                        mono_ns: record["mono_ns"].as_u64().unwrap_or(0),
                        wall_ms: record["wall_ms"].as_u64().unwrap_or(0),
                    });
                }
            }
            _ => {}
        }
    }
    lent
}

/// Two sites' groups serving one account at once, from their nodes' event logs: for every
/// pair of runs of `account` served for different sites, the overlap, if any. `sites`
/// gives each site with the work directories of its node agents; `lent` the servers lent
/// (from every lender's audit log, [`lent_runs`]): a lent server serves for its borrower
/// while the loan lasts, and for its own site from when its site took it home.
pub fn owner_overlaps(
    sites: &[(String, Vec<std::path::PathBuf>)],
    lent: &[LentRun],
    account: &str,
    until_mono_ns: u64,
) -> Result<Vec<String>, String> {
    // (the site it served for, the run clipped to that stretch)
    let mut runs: Vec<(String, Running)> = Vec::new();
    for (site, works) in sites {
        for work in works {
            for run in running(work, until_mono_ns)? {
                if run.account != account {
                    continue;
                }
                let loan = lent
                    .iter()
                    .find(|loan| loan.server == run.server && loan.epoch == run.epoch);
                let Some(loan) = loan else {
                    runs.push((site.clone(), run));
                    continue;
                };
                // The monotonic stamp where the record has one; else the wall clock, to
                // the millisecond.
                let home_from = loan.taken_home.map_or(run.to_mono_ns, |at| {
                    let mono = if at.mono_ns > 0 {
                        at.mono_ns
                    } else {
                        run.mono_of(at.wall_ms)
                    };
                    mono.min(run.to_mono_ns)
                });
                let mut for_borrower = run.clone();
                for_borrower.to_mono_ns = home_from.max(run.from_mono_ns);
                runs.push((loan.borrower.clone(), for_borrower));
                if home_from < run.to_mono_ns {
                    let mut for_home = run;
                    for_home.from_mono_ns = home_from;
                    runs.push((site.clone(), for_home));
                }
            }
        }
    }
    let mut found = Vec::new();
    for (i, (site_a, a)) in runs.iter().enumerate() {
        for (site_b, b) in &runs[i + 1..] {
            if site_a == site_b {
                continue;
            }
            let start = a.from_mono_ns.max(b.from_mono_ns);
            let end = a.to_mono_ns.min(b.to_mono_ns);
            if start < end {
                found.push(format!(
                    "{account} ran for {site_a} on {} ({}) and for {site_b} on {} ({}) at once, for {} ms",
                    a.server,
                    a.epoch,
                    b.server,
                    b.epoch,
                    (end - start) / 1_000_000
                ));
                for run in [a, b] {
                    let work = sites
                        .iter()
                        .flat_map(|(_, works)| works)
                        .find(|work| work.file_name().is_some_and(|name| *name == *run.server));
                    if let Some(work) = work {
                        found.extend(
                            epoch_lines(work, run.epoch, None)
                                .into_iter()
                                .map(|line| format!("  {line}")),
                        );
                    }
                }
            }
        }
    }
    Ok(found)
}

/// CLOCK_MONOTONIC now, in the node logs' unit.
pub fn mono_now_ns() -> u64 {
    leasehold_node::clock::mono_now().as_nanos()
}

/// Every file under `dir` (recursively, symlinks not followed) whose bytes contain
/// `needle`, as paths relative to `dir`, sorted: where a secret was written down.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, needle: &[u8], found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                walk(root, &path, needle, found);
            } else if kind.is_file()
                && std::fs::read(&path)
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                let relative = path.strip_prefix(root).unwrap_or(&path);
                found.push(relative.display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    if !needle.is_empty() {
        walk(dir, dir, needle.as_bytes(), &mut found);
    }
    found.sort();
    found
}
