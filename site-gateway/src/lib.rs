//! A Leasehold site gateway. For now: the per-site config ([`config`]).

pub mod config;
