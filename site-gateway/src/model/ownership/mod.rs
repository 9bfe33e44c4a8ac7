//! Account ownership by majority lease (issue #5, docs/ownership.md): which site serves an
//! account as its owner, such that no two sites ever do at once, also when a site is
//! partitioned, paused or restarted.
//!
//! Every site is an [`Acceptor`]: per account, it grants an ownership lease to at most one
//! site at a time, for `ttl` on its own clock from when the request arrived. A site that
//! wants to own an account (a [`Claimant`]) asks every site, itself included; with grants
//! from a majority it owns the account until the send time of that request plus
//! [`Timing::held_for`], which is shorter than any granting acceptor's view by the clock
//! drift and pause margins. Any two majorities share an acceptor, and that acceptor grants
//! to a second site only after its grant to the first has run out on its clock, which is
//! after the first site stopped counting itself owner. This is the timing argument of
//! PaxosLease (Trencseni, Gazsó, Reinhardt, 2010), without its prepare phase: a grant is a
//! lease, not a value, and terms only order takeovers (docs/decisions.md D-21).
//!
//! Plain state: `now` comes in, requests and standings go out; the shell carries them.

mod acceptor;
mod claimant;
pub mod members;
mod site;
mod site_members;

// The simulation plants a bug through a field that only debug builds have.
#[cfg(all(test, debug_assertions))]
mod members_sim_tests;
#[cfg(all(test, debug_assertions))]
mod sim_tests;
#[cfg(test)]
mod site_tests;
#[cfg(test)]
mod test_support;

use std::time::Duration;

pub use acceptor::{Acceptor, Grant};
pub use claimant::{Change, Claimant, Standing};
pub use leasehold_federation::ids::Term;
pub use leasehold_federation::wire::site::Vote;
pub use site::{Owner, SiteOwnership};
pub use site_members::MembersStatus;

/// The timing of ownership leases. Every site of a federation must use the same values
/// (the config check compares them across site files).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// How long an acceptor's grant lasts on its own clock, from receipt.
    pub ttl: Duration,
    /// How often an owner renews.
    pub renew_every: Duration,
    /// The most any site's clock may run fast or slow, as a fraction (0.01 = 1 %).
    pub drift: f64,
    /// The longest a gateway may stall between deciding as owner and its decision taking
    /// effect (a scheduling pause, a GC-like stall); a SIGSTOP longer than this is covered
    /// by the nodes' own leases, not by this margin (docs/ownership.md).
    pub max_pause: Duration,
}

impl Timing {
    /// How long after *sending* a request that a majority granted the claimant may count
    /// itself owner, on its own clock: `ttl · (1 − drift) / (1 + drift) − max_pause`.
    ///
    /// An acceptor's grant lasts at least `ttl / (1 + drift)` of real time from receipt,
    /// which is after the send; the claimant's `held_for` of its own clock lasts at most
    /// `held_for / (1 − drift)` of real time. So the claimant stops counting itself owner
    /// before any acceptor that granted it can grant to another site, with `max_pause` to
    /// spare.
    pub fn held_for(&self) -> Duration {
        let ttl = self.ttl.as_secs_f64();
        let held = ttl * (1.0 - self.drift) / (1.0 + self.drift) - self.max_pause.as_secs_f64();
        Duration::from_secs_f64(held.max(0.0))
    }

    /// Why these values cannot work, if they cannot: an owner must be able to renew
    /// several times within what it holds.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..0.5).contains(&self.drift) {
            return Err(format!("drift {} must be in [0, 0.5)", self.drift));
        }
        if self.held_for() < self.renew_every * 2 {
            return Err(format!(
                "an owner holds {} ms per grant (ttl {} ms less drift and pause margins) and must renew at least twice in that; renew_every is {} ms",
                self.held_for().as_millis(),
                self.ttl.as_millis(),
                self.renew_every.as_millis()
            ));
        }
        Ok(())
    }
}

/// How many of `sites` make a majority.
pub fn majority(sites: usize) -> usize {
    sites / 2 + 1
}
