//! Safety from the evidence nodes leave: every node's event log, read back and checked.

use std::path::Path;
use std::time::Duration;

use leasehold_node::event_log::{Event, read_events};
use leasehold_node::evidence::{Violation, check_server_log};

/// The event log of the node agent whose work directory is `work`.
pub fn node_events(work: &Path) -> Result<Vec<Event>, String> {
    read_events(&work.join("events.jsonl")).map_err(|error| error.to_string())
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
}

/// Every workload run in the event log of the node agent working in `work`.
pub fn running(work: &Path, until_mono_ns: u64) -> Result<Vec<Running>, String> {
    use leasehold_node::event_log::EventKind;
    let mut open: Vec<Running> = Vec::new();
    let mut done = Vec::new();
    for event in node_events(work)? {
        match event.kind {
            EventKind::WorkloadStarting { account, epoch } => open.push(Running {
                server: event.server.to_string(),
                account: account.to_string(),
                epoch: epoch.value(),
                from_mono_ns: event.mono_ns,
                to_mono_ns: until_mono_ns,
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

/// Two sites' groups serving one account at once, from their nodes' event logs: for every
/// pair of runs of `account` on servers of different sites, the overlap, if any. `sites`
/// gives each site with the work directories of its node agents; a server lent to another
/// site would run that site's account and must be left out by the caller.
pub fn owner_overlaps(
    sites: &[(String, Vec<std::path::PathBuf>)],
    account: &str,
    until_mono_ns: u64,
) -> Result<Vec<String>, String> {
    let mut runs: Vec<(String, Running)> = Vec::new();
    for (site, works) in sites {
        for work in works {
            for run in running(work, until_mono_ns)? {
                if run.account == account {
                    runs.push((site.clone(), run));
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
                    "{account} ran at {site_a} on {} ({}) and at {site_b} on {} ({}) at once, for {} ms",
                    a.server,
                    a.epoch,
                    b.server,
                    b.epoch,
                    (end - start) / 1_000_000
                ));
            }
        }
    }
    Ok(found)
}

/// CLOCK_MONOTONIC now, in the node logs' unit.
pub fn mono_now_ns() -> u64 {
    leasehold_node::clock::mono_now().as_nanos()
}
