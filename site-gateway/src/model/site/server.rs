//! One server as the site core sees it: its connection, its lease and where it is in its
//! life (free, starting, serving, draining, failed).

use leasehold_federation::ids::{Epoch, ServerId, SiteId};
use leasehold_federation::wire::common::Health;

use super::machine::{BmcHealth, MachineState, Power};
use crate::model::Millis;
use crate::model::arbiter::AccountIx;
use crate::model::effects::MaintenanceRecord;

/// A lease of one server to one account of this site.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub account: AccountIx,
    pub epoch: Epoch,
    /// Renewed by the node; the server is not reused before this has passed.
    pub expires_at: Millis,
    /// When the account got the server (for the move cooldown).
    pub granted_at: Millis,
    /// No more renewals: the server failed or its stop went unanswered. The lease still
    /// blocks the server until it expires, since the node may not know yet.
    pub revoked: bool,
    /// Set when the holder is a peer site: the server is lent (docs/loans.md). Boxed:
    /// few leases are loans, and every round reads every lease.
    pub loan: Option<Box<LoanTerms>>,
}

/// The loan side of a lease whose holder is a borrowing site. The node's lease is renewed
/// only while the loan's own lease runs, so the node stops at most one TTL after the
/// borrower stops renewing.
#[derive(Debug, Clone, PartialEq)]
pub struct LoanTerms {
    pub borrower: SiteId,
    /// Renewed by the borrower's `RenewLoan`; past it, the server comes home.
    pub expires_at: Millis,
    /// Recalled: the borrower was told to drain it by then; after it, we stop it.
    pub recall_by: Option<Millis>,
    /// When its health was last relayed to the borrower.
    pub relayed_at: Option<Millis>,
}

/// Where a draining server goes once its workload has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Join(AccountIx),
    Free,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Not connected, and no lease.
    Offline,
    /// Connected and healthy, no lease: the arbiter may assign it.
    Free,
    /// Leased; the pointer is sent; the workload is not healthy yet.
    Starting { decided_at: Millis },
    /// Leased, and the workload is healthy: it serves its account.
    Serving,
    /// Out of its account's endpoints; told to drain and stop; then `next`. `decided_at`
    /// is when the move was decided, so a move's latency includes its drain.
    Draining { next: Next, decided_at: Millis },
    /// Missed its heartbeats; its lease is revoked and runs out.
    Failed { since: Millis },
}

impl Phase {
    /// The name the admin API shows (`state` in `/v1/servers`).
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Offline => "offline",
            Phase::Free => "free",
            Phase::Starting { .. } => "starting",
            Phase::Serving => "serving",
            Phase::Draining { .. } => "draining",
            Phase::Failed { .. } => "failed",
        }
    }
}

/// Fields in the order written: what every round reads of every server comes first
/// (failure detection and expiry read the first four, the arbiter's views and the loads
/// the rest up to `removed`), so that a round's passes touch two or three cache lines
/// of an entry, not all of it. Names, addresses and health, which a round reads for few
/// servers, come last.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct ServerEntry {
    pub phase: Phase,
    pub lease: Option<Lease>,
    pub last_heartbeat: Option<Millis>,
    /// A lease recovered from the journal whose node has not registered since: silence
    /// until then is the gateway's own absence, not the server's failure, so heartbeat
    /// misses are not counted before it (the lease's expiry still is).
    pub back_by: Option<Millis>,
    pub load: Option<f64>,
    /// A workload of this account just failed here; do not try it here again soon.
    pub avoid: Option<(AccountIx, Millis)>,
    /// Set when the server is a machine behind a BMC (boxed: most servers are not).
    pub machine: Option<Box<MachineState>>,
    /// Out of use for maintenance (`leasehold server drain`), until undrained. Boxed, as
    /// `machine` is: few servers are in maintenance, and every round reads every entry.
    pub maintenance: Option<Box<MaintenanceRecord>>,
    pub connected: bool,
    /// Removed from the config by a live edit: drained as for maintenance, then out of the
    /// inventory (kept at its index, as a removed account is; re-added, it is back).
    pub removed: bool,
    /// The highest epoch ever issued to or seen from this server (invariant S-2).
    pub highest_epoch: Epoch,
    pub id: ServerId,
    pub service_addr: String,
    pub health: Health,
}

impl ServerEntry {
    pub fn new(id: ServerId, service_addr: String) -> Self {
        ServerEntry {
            id,
            service_addr,
            connected: false,
            last_heartbeat: None,
            back_by: None,
            health: Health::Idle,
            load: None,
            highest_epoch: Epoch::NONE,
            lease: None,
            phase: Phase::Offline,
            avoid: None,
            machine: None,
            maintenance: None,
            removed: false,
        }
    }

    /// Whether the arbiter may give it to an account now (when it holds no lease): a
    /// process server once its agent is connected; a machine once it is ready to be
    /// re-imaged, or its agent is connected and nothing is in flight.
    pub fn assignable(&self) -> bool {
        match &self.machine {
            None => self.connected,
            Some(machine) => {
                machine.failed.is_none()
                    && !machine.busy
                    && machine.boot.is_none()
                    && machine.bmc == BmcHealth::Answering
                    && (self.connected || machine.power == Power::Off)
            }
        }
    }

    /// Whether a peer may borrow it now: a free process server whose agent is connected.
    /// Never a machine: it would be re-imaged for the borrower's account, whose image is
    /// in the borrower's config only, and boot nothing (D-29).
    pub fn lendable(&self) -> bool {
        self.out_of_use().is_none()
            && self.machine.is_none()
            && self.connected
            && self.phase == Phase::Free
            && self.lease.is_none()
    }

    /// Why the server takes no new work (maintenance, or removed from the config).
    pub fn out_of_use(&self) -> Option<&'static str> {
        if self.removed {
            Some("it was removed from the config")
        } else if self.maintenance.is_some() {
            Some("it is in maintenance")
        } else {
            None
        }
    }

    /// Removed from the config, and holding nothing any more: no longer in the inventory.
    pub fn gone(&self) -> bool {
        self.removed && self.lease.is_none()
    }

    /// The account this server serves now, for endpoints and load.
    pub fn serving(&self) -> Option<AccountIx> {
        match (&self.phase, &self.lease) {
            (Phase::Serving, Some(lease)) if !lease.revoked => Some(lease.account),
            _ => None,
        }
    }

    /// The phase a server without a lease falls back to.
    pub fn idle_phase(&self) -> Phase {
        if self.assignable() {
            Phase::Free
        } else {
            Phase::Offline
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every round reads every server's entry several times over (failure detection,
    /// expiry, the arbiter's views, the accounts' loads): at 100,000 servers the entry's
    /// size is most of a round's time. What few servers have is boxed (`machine`,
    /// `maintenance`, a lease's `loan`): 232 bytes where it was 344.
    #[test]
    fn a_server_entry_stays_compact() {
        let size = size_of::<ServerEntry>();
        assert!(size <= 240, "ServerEntry grew to {size} bytes");
    }
}
