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
