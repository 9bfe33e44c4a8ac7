//! A Leasehold site gateway (`leasehold gateway run`): its config ([`config`]), its
//! decision core ([`model`], plain Rust), its journal ([`journal`]), the actor shell
//! ([`actors`]), the admin API ([`api`]) and its security ([`admin`]), the machine shell and boot service
//! ([`machines`]) and the start-up that ties them ([`gateway`]); the demand it measured,
//! kept as a trace ([`demand_trace`], in the format of [`trace`]) for `leasehold replay`.

pub mod actors;
pub mod admin;
pub mod api;
pub mod config;
pub mod demand_trace;
pub mod federation;
pub mod gateway;
pub mod ha;
pub mod journal;
pub mod journal_state;
pub mod machines;
pub mod metrics;
pub mod model;
pub mod page;
pub mod peer_book;
pub mod reload;
pub mod secrets;
pub mod trace;
