//! The Leasehold node agent (`leasehold node run`): one per server. It applies the
//! gateway's initialization pointers under leases and epochs, runs the account's workload
//! through the process driver, and keeps the event log that safety is judged from.
//!
//! - [`model`]: the plain state machine (no I/O, no clock).
//! - [`actors`]: the `Server` actor and its management-channel link.
//! - [`pulse`]: when a node pulses and what a pulse carries (plain, shared with the fleet).
//! - [`driver`]: the process driver, the guard, health and load probes.
//! - [`event_log`] and [`evidence`]: the record and its checker (public: the gateway's
//!   tests, the demo and the chaos checker read them).
//! - [`agent`]: startup, restart recovery, signals.
//! - [`handover`]: what an agent replaced in place (SIGUSR2) leaves its successor.
//! - [`metrics`]: the agent's own `/metrics` (`--metrics-addr`).
//! - [`boot_args`]: a machine's identity and boot claim from its kernel command line.

pub mod actors;
pub mod agent;
pub mod boot_args;
pub mod clock;
pub mod driver;
pub mod event_log;
pub mod evidence;
pub mod fleet;
pub mod handover;
pub mod metrics;
pub mod model;
pub mod pulse;
