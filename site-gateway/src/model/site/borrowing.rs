//! The borrower's state: servers peers lent us, requests in flight, what we know of the
//! peers, and totals. The rules that change it are in `borrow.rs`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use serde::{Deserialize, Serialize};

use crate::model::Millis;
use crate::model::arbiter::AccountIx;

/// After a refusal (or a partial grant), a lender is not asked again for this long.
pub const ASK_AGAIN_AFTER: Duration = Duration::from_secs(2);
/// A request with no answer by then is given up (the Peer times out well before).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Loan latencies kept for `/v1/loans`.
pub(super) const LATENCIES_KEPT: usize = 1000;

/// A borrowed server as journaled: enough to keep counting and renewing it after a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BorrowRecord {
    pub server: ServerId,
    pub lender: SiteId,
    pub account: AccountId,
    pub epoch: Epoch,
    pub service_addr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BorrowState {
    /// Lent, its workload not healthy yet (or no longer).
    Starting,
    /// Healthy: it serves the account and is one of its endpoints.
    Serving,
    /// Out of the endpoints, draining; returned once `drain` has passed.
    Returning {
        since: Millis,
        drain: Duration,
        recalled: bool,
    },
}

impl BorrowState {
    pub fn name(self) -> &'static str {
        match self {
            BorrowState::Starting => "starting",
            BorrowState::Serving => "serving",
            BorrowState::Returning { .. } => "returning",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Borrowed {
    pub lender: SiteId,
    pub server: ServerId,
    pub epoch: Epoch,
    pub account: AccountIx,
    pub service_addr: String,
    pub requested_at: Millis,
    /// Our view of the loan's lease: the send time of the last renewal answered, plus TTL.
    pub expires_at: Millis,
    pub state: BorrowState,
    pub load: Option<f64>,
    /// Request to serving, once it served.
    pub latency_ms: Option<u64>,
    /// Send times of renewals not answered yet, oldest first. A renewal goes out every
    /// renew interval whether or not the last was answered, so one slow answer does not
    /// let the lease run out; an answer is anchored at the oldest send time (the earliest
    /// the lender can have renewed from).
    pub(super) renews_sent: VecDeque<Millis>,
    pub(super) renewed_at: Millis,
}

/// Renewals in flight per loan, at most (older ones are given up).
pub(super) const RENEWS_IN_FLIGHT: usize = 8;

/// A loan request in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub lender: SiteId,
    pub account: AccountIx,
    pub count: u32,
    pub sent_at: Millis,
}

/// Totals since start, for `/v1/loans` and the demo's report (which reads them back, and
/// sums them over the sites; a count a gateway does not send reads as 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoanCounts {
    /// Servers peers lent us.
    pub borrowed: u64,
    /// Servers we drained and gave back because we no longer needed them.
    pub returned: u64,
    /// Servers we gave back because their lender recalled them.
    pub recalled: u64,
    /// Loans we stopped counting because their lease ran out unrenewed.
    pub expired: u64,
    /// Loans the lender ended (the server failed or its lease there ended).
    pub ended: u64,
    /// Servers we lent to peers.
    pub lent: u64,
}

impl LoanCounts {
    /// Adds `other`'s counts to these (totals over several sites).
    pub fn add(&mut self, other: &LoanCounts) {
        self.borrowed += other.borrowed;
        self.returned += other.returned;
        self.recalled += other.recalled;
        self.expired += other.expired;
        self.ended += other.ended;
        self.lent += other.lent;
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PeerView {
    pub(super) up: bool,
    pub(super) rtt: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct Borrowing {
    pub loans: Vec<Borrowed>,
    pub asks: Vec<Ask>,
    pub(super) not_before: HashMap<SiteId, Millis>,
    /// A lender's refusals are audited once until it grants again.
    pub(super) refusal_audited: HashMap<SiteId, String>,
    pub(super) peers: HashMap<SiteId, PeerView>,
    pub counts: LoanCounts,
    pub latencies_ms: VecDeque<u64>,
}

impl Borrowing {
    pub fn serving(&self) -> impl Iterator<Item = &Borrowed> {
        self.loans
            .iter()
            .filter(|loan| loan.state == BorrowState::Serving)
    }

    /// Borrowed for `account` and not on their way back.
    pub(super) fn active(&self, account: AccountIx) -> impl Iterator<Item = &Borrowed> {
        self.loans.iter().filter(move |loan| {
            loan.account == account && !matches!(loan.state, BorrowState::Returning { .. })
        })
    }

    pub(super) fn find(
        &self,
        lender: &SiteId,
        server: &ServerId,
        epoch: Epoch,
    ) -> Result<usize, String> {
        match self
            .loans
            .iter()
            .position(|loan| loan.server == *server && loan.lender == *lender)
        {
            Some(ix) if self.loans[ix].epoch == epoch => Ok(ix),
            Some(ix) => Err(format!(
                "{lender} named {server} under {epoch}, but we borrowed it under {}",
                self.loans[ix].epoch
            )),
            None => Err(format!("{server} is not borrowed from {lender}")),
        }
    }
}
