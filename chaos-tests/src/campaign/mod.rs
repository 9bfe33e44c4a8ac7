//! Seeded fault campaigns on a real federation (issue #6, docs/chaos.md): a schedule of
//! faults drawn from a seed, a runner that applies them to gateways, node agents,
//! workloads, configs and the relays between sites while a load runs, checkers that judge
//! the evidence the system left, and a report.
//!
//! - [`schedule`]: (scenario, seed, duration, sites) → faults; pure.
//! - [`layout`]: the federation a campaign runs on, and the bounds it is held to.
//! - [`runner`]: runs a campaign and gathers the evidence.
//! - [`faults`]: how each kind of fault is applied and healed.
//! - [`poll`]: the admin API polls.
//! - [`stale`]: a stand-in gateway that replays an old grant to a node.
//! - [`members`]: the `members` scenario's spare site, added and removed.
//! - [`checks`]: the invariants, judged from node logs, audit logs and polls.
//! - [`report`]: the JSON report and the summary.
//! - [`timeline`]: the SVG picture of a campaign, beside the report.

pub mod checks;
pub mod faults;
pub mod layout;
pub mod members;
pub mod poll;
pub mod prng;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod stale;
pub mod timeline;
