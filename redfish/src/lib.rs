//! A Redfish client for the BMC of one machine.
//!
//! What it does, in the order a move of a machine needs it: find the machine's
//! `ComputerSystem` from the service root (by MAC when a BMC serves several), log in with a
//! session (basic auth where the BMC has no session service), set a one-time network boot,
//! reset the machine and watch its power state until it is what was asked, following task
//! monitors where a BMC answers 202.
//!
//! Vendors differ; what this client assumes of a BMC and what it does about each known
//! quirk is in docs/machines.md. The rules that hold everywhere:
//! - Nothing is hard-coded that the BMC can say: links come from `@odata.id`s, the reset
//!   target from the resource's `Actions`, allowed values from `@Redfish.AllowableValues`
//!   (or the action's `@Redfish.ActionInfo`). A value the BMC does not allow is refused here
//!   before any request that would change something.
//! - Every change is read back: the boot override after its PATCH, the power state after a
//!   reset.
//! - Transient failures (connection refused or reset, 502/503/504, a GET's 500) are retried
//!   with backoff; a 401 on a session logs in again once; a 412 on a stale ETag re-reads the
//!   resource once.
//! - Credentials come from a file of mode 0600 ([`Credentials`]) and are never logged.
//!
//! The client is blocking: one machine's BMC is driven by one thread of the gateway's
//! blocking pool at a time, and a BMC answers in milliseconds to seconds, so an async
//! client would buy nothing but a runtime dependency here.

mod bmc;
mod credentials;
mod system;
mod task;
mod transport;

pub use bmc::{Bmc, BmcConfig, TlsTrust};
pub use credentials::Credentials;
pub use system::{BootTarget, PowerState, ResetType, SystemState};
pub use transport::Retry;

use std::time::Duration;

/// Why a BMC did not do what was asked. Every variant names the BMC's URL (or the file) so an
/// operator reading a log line knows which machine and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("BMC {url} is unreachable after {attempts} attempts: {detail}")]
    Unreachable {
        url: String,
        attempts: u32,
        detail: String,
    },
    #[error(
        "BMC {url} refused the credentials from {credentials} (401): check the user name and password in that file"
    )]
    Unauthorized { url: String, credentials: String },
    #[error("BMC {url} answered {method} with {status}: {message}")]
    Refused {
        url: String,
        method: &'static str,
        status: u16,
        message: String,
    },
    #[error(
        "BMC {url} refused {field} = {value:?}: it allows only {allowed:?}; nothing was changed"
    )]
    NotAllowed {
        url: String,
        field: &'static str,
        value: String,
        allowed: Vec<String>,
    },
    #[error(
        "BMC {url}: the resource changed under every attempt to change it (412 Precondition Failed on its ETag twice)"
    )]
    StaleEtag { url: String },
    #[error("BMC {url} refused the reset {reset} with 409 Conflict {attempts} times: {message}")]
    Conflict {
        url: String,
        reset: String,
        attempts: u32,
        message: String,
    },
    #[error("BMC {url}: {what} was not applied: asked for {wanted:?}, read back {seen:?}")]
    NotApplied {
        url: String,
        what: &'static str,
        wanted: String,
        seen: String,
    },
    #[error("BMC {url}: waited {waited:?} for {what}; last seen: {last}")]
    Timeout {
        url: String,
        what: String,
        waited: Duration,
        last: String,
    },
    #[error("BMC {url}: task {task} ended {state}: {message}")]
    TaskFailed {
        url: String,
        task: String,
        state: String,
        message: String,
    },
    #[error("BMC {url}: cannot find the machine: {detail}")]
    Discovery { url: String, detail: String },
    #[error("BMC {url}: unexpected answer from {path}: {detail}")]
    Invalid {
        url: String,
        path: String,
        detail: String,
    },
    #[error("BMC credentials {path}: {detail}")]
    Credentials { path: String, detail: String },
    #[error("BMC {url}: {detail}")]
    Config { url: String, detail: String },
    #[error(
        "BMC {url}: TLS failed: {detail}; check bmc_ca (the CA or certificate the BMC presents)"
    )]
    Tls { url: String, detail: String },
}

impl Error {
    /// Whether the BMC could not be reached at all (as opposed to answering no): the
    /// gateway then leaves the machine out of use rather than guessing its state.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}
