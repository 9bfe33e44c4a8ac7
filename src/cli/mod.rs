//! The subcommands of `leasehold`, one module each. Each parses its own arguments and calls
//! into the library crates; no decision logic lives here.

pub mod admin_client;
pub mod audit;
pub mod bench;
pub mod certs;
pub mod chaos;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod gateway;
pub mod journal;
pub mod node;
pub mod server;
pub mod sim;
pub mod status;
pub mod token;
pub mod workload;
