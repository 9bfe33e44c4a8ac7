//! Real Leasehold processes for integration tests, the demo and (issue #6) seeded fault
//! campaigns. The binary's path is an argument, so the root package's tests pass
//! `env!("CARGO_BIN_EXE_leasehold")` and the demo passes its own executable.
//!
//! - [`harness::process`]: child processes that die with their guard, pass or fail.
//! - [`harness::site`]: site config files with free loopback ports, certificates.
//! - [`harness::admin`]: polling a gateway's admin API with deadlines.
//! - [`harness::evidence`]: reading node event logs and checking them.
//! - [`relay`]: a fault-injecting UDP relay to put between sites (docs/relay.md).
//! - [`campaign`]: seeded fault campaigns with invariant checks (docs/chaos.md).
//! - [`sim`]: a deterministic simulation of whole federations on the production cores.

pub mod campaign;
pub mod harness;
pub mod relay;
pub mod sim;
