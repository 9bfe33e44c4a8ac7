//! The subcommands of `leasehold`, one module each. Each parses its own arguments and calls
//! into the library crates; no decision logic lives here.

pub mod certs;
pub mod config;
pub mod demo;
