//! Why the arbiter decided what it did, in terms an operator can check against the SLA:
//! which account, which SLA term, where the server came from, and which alternatives were
//! passed over. The shell writes these to the audit log with [`Reason::describe`].

use std::fmt::Write as _;
use std::time::Duration;

use super::AccountIx;

/// At most this many passed-over alternatives are kept per decision: they are for a human
/// reading the audit log, and a list of thousands would hide the point.
pub const MAX_PASSED_OVER: usize = 3;

/// The SLA term that a decision serves (or that a shortfall breaks), with the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaTerm {
    /// The account has fewer servers than its SLA minimum.
    BelowMinimum { min: u32, have: u32 },
    /// The account has fewer servers than its demand (already clamped to [min, max]).
    BelowDemand { demand: u32, have: u32 },
    /// The account has more servers than its demand, and nobody else needs them.
    AboveDemand { demand: u32, have: u32 },
    /// The account has more servers than its SLA maximum (after a config reload, say).
    AboveMaximum { max: u32, have: u32 },
}

/// Where the server of a decision comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The site's pool of free servers.
    Free,
    /// An account above its demand, which keeps at least its demand.
    Surplus { from: AccountIx, from_demand: u32 },
    /// An account of lower priority (or, for a minimum, any account) above its minimum,
    /// which keeps at least its minimum.
    Preempted { from: AccountIx, from_priority: u32 },
    /// The account's own surplus, going back to the free pool (a `Release`).
    OwnSurplus,
}

/// A server the arbiter looked at for this decision and did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassedOver {
    pub server: u32,
    pub why: PassOverWhy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOverWhy {
    /// It moved recently; it may move again after `left`.
    Cooldown { left: Duration },
    /// Its account is at its SLA minimum.
    AtMinimum { account: AccountIx, min: u32 },
    /// Its account's priority is not lower than the needy account's, and it is not above
    /// its demand.
    HigherPriority { account: AccountIx, priority: u32 },
    /// A workload of the needy account just failed on it.
    AvoidsAccount,
    /// It is a machine, and the needy account has no image for machines to boot.
    NoImage,
}

/// The reason of one decision: `account` is the account the decision acts for (the one that
/// receives the server, or the one that releases it), `server` the server it moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub account: AccountIx,
    pub server: u32,
    pub term: SlaTerm,
    pub source: Source,
    /// At most [`MAX_PASSED_OVER`], in the order the arbiter met them.
    pub passed_over: Vec<PassedOver>,
}

impl Reason {
    /// One audit line, e.g. "shop below its demand (3 > 2 servers); took free server #12;
    /// passed over #4 (cooldown 6.1 s left), #9 (blog at its minimum 1)". The shell knows
    /// the names; the load figures behind a demand are the demand model's to add.
    pub fn describe(
        &self,
        account_name: impl Fn(AccountIx) -> String,
        server_name: impl Fn(u32) -> String,
    ) -> String {
        let mut line = describe_term(&account_name(self.account), self.term);
        let server = server_name(self.server);
        // `write!` into a String cannot fail; the results are ignored for that reason.
        let _ = match self.source {
            Source::Free => write!(line, "; took free server {server}"),
            Source::Surplus { from, from_demand } => write!(
                line,
                "; took server {server} from {}, above its demand {from_demand}",
                account_name(from)
            ),
            Source::Preempted {
                from,
                from_priority,
            } => write!(
                line,
                "; took server {server} from {} (priority {from_priority}, above its minimum)",
                account_name(from)
            ),
            Source::OwnSurplus => write!(line, "; released server {server} to the free pool"),
        };
        line.push_str(&describe_passed_over(
            &self.passed_over,
            &account_name,
            &server_name,
        ));
        line
    }
}

/// "shop below its minimum (1 < 2 servers)" and the like; shared with shortfalls.
pub(super) fn describe_term(account: &str, term: SlaTerm) -> String {
    match term {
        SlaTerm::BelowMinimum { min, have } => {
            format!("{account} below its minimum ({have} < {min} servers)")
        }
        SlaTerm::BelowDemand { demand, have } => {
            format!("{account} below its demand ({demand} > {have} servers)")
        }
        SlaTerm::AboveDemand { demand, have } => {
            format!("{account} above its demand ({have} > {demand} servers)")
        }
        SlaTerm::AboveMaximum { max, have } => {
            format!("{account} above its maximum ({have} > {max} servers)")
        }
    }
}

/// "; passed over #4 (cooldown 6.1 s left), ..." or nothing.
pub(super) fn describe_passed_over(
    passed_over: &[PassedOver],
    account_name: &impl Fn(AccountIx) -> String,
    server_name: &impl Fn(u32) -> String,
) -> String {
    let mut text = String::new();
    for (i, passed) in passed_over.iter().enumerate() {
        text.push_str(if i == 0 { "; passed over " } else { ", " });
        let server = server_name(passed.server);
        let _ = match passed.why {
            PassOverWhy::Cooldown { left } => {
                write!(text, "{server} (cooldown {:.1} s left)", left.as_secs_f64())
            }
            PassOverWhy::AtMinimum { account, min } => {
                write!(
                    text,
                    "{server} ({} at its minimum {min})",
                    account_name(account)
                )
            }
            PassOverWhy::HigherPriority { account, priority } => {
                write!(
                    text,
                    "{server} ({} has priority {priority}, not lower)",
                    account_name(account)
                )
            }
            PassOverWhy::AvoidsAccount => {
                write!(
                    text,
                    "{server} (a workload of this account just failed there)"
                )
            }
            PassOverWhy::NoImage => {
                write!(
                    text,
                    "{server} (a machine, and this account has no [account.image])"
                )
            }
        };
    }
    text
}
