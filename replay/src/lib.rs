//! How good are a site's moves? (issue #15, docs/replay.md)
//!
//! - [`trace`]: the demand trace format (`leasehold-trace/1`, JSON lines): per account,
//!   its load at a fixed step; it lives in the gateway's crate, which writes a site's own
//!   (`demand_trace`).
//! - [`generate`]: a seeded trace, bursty and diurnal with flash crowds.
//! - [`world`]: one site's production [`SiteCore`](leasehold_site_gateway::model::core::SiteCore)
//!   and demand models, run in virtual time over a trace, with servers that take a
//!   re-initialization time to join; what it did, per account.
//! - [`bounds`]: what any policy must lose on the same trace (the lower bound) and what
//!   a split with no moves loses.
//! - [`optimum`]: the offline optimum with the same re-initialization delay, a min-cost
//!   flow over a time-expanded graph.
//! - [`report`]: the figures side by side, as JSON and as a table.

pub mod bounds;
pub mod generate;
pub mod optimum;
pub mod report;
pub use leasehold_site_gateway::trace;
pub mod world;
