//! What the site core asks its shell to do: journal, send, audit, observe.
//!
//! The shell performs a batch of effects in two steps: every `Journal` and `Audit` effect
//! of the batch is made durable first, in one transaction, then the `Send`s go out
//! (invariant D-1: journal before acting). `Observe` is for metrics and reports only.

use leasehold_federation::ids::Term;
use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use leasehold_federation::wire::common::InitPointer;
use leasehold_federation::wire::site::{
    AccountSpec, ClaimOwnership, LentServerStatus, RecallLoan, ReleaseOwnership, RenewLoan,
    RequestLoan, ReturnLoan,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Journal(JournalOp),
    Audit(AuditEntry),
    Send(Command),
    /// A message to a peer site, sent (like `Send`) only once the batch is durable.
    ToPeer {
        to: SiteId,
        message: PeerMessage,
    },
    Observe(Observation),
    /// Work on a machine's BMC, done (like `Send`) only once the batch is durable; the
    /// shell reports back with the core's `machine_*` inputs.
    Machine(MachineCommand),
}

/// What the site core asks of a machine's BMC (docs/machines.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineCommand {
    /// Read the power state: at start, and again while the BMC does not answer.
    Probe { server: ServerId },
    /// Power it off and wait until the BMC says it is off; `reason` is for the log.
    PowerOff { server: ServerId, reason: String },
    /// Re-image for the lease under `epoch`: power off, set the one-time network boot (the
    /// boot service then answers with the script for `epoch`), power on.
    Reimage { server: ServerId, epoch: Epoch },
}

/// What the site core sends a peer site; the answers to requests come back as events.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerMessage {
    RequestLoan(RequestLoan),
    RenewLoan(RenewLoan),
    ReturnLoan(ReturnLoan),
    RecallLoan(RecallLoan),
    Status(LentServerStatus),
    ClaimOwnership(ClaimOwnership),
    ReleaseOwnership(ReleaseOwnership),
}

/// Who holds a lent server: the borrowing site, and the account as that site announced it
/// (journaled with the lease, so that a restarted lender still knows what runs there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoanHolder {
    pub borrower: SiteId,
    pub spec: AccountSpec,
}

/// A change to the durable lease state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JournalOp {
    /// `server` is leased to `account` under `epoch` (and `epoch` is now its highest).
    LeaseGranted {
        server: ServerId,
        account: AccountId,
        epoch: Epoch,
        /// Set when the lease is a loan to a peer site.
        lent_to: Option<Box<LoanHolder>>,
    },
    /// The lease of `server` under `epoch` is over; the server holds no lease.
    LeaseEnded { server: ServerId, epoch: Epoch },
    /// `server` has seen `epoch` (a node reported it); no later lease may reuse it.
    EpochSeen { server: ServerId, epoch: Epoch },
    /// `lender` lent us `server` under its `epoch` for `account`.
    Borrowed {
        server: ServerId,
        lender: SiteId,
        account: AccountId,
        epoch: Epoch,
        service_addr: String,
    },
    /// We no longer count the borrowed `server` (returned, recalled, ended or expired).
    BorrowEnded { server: ServerId, epoch: Epoch },
    /// This site's running member set (docs/ownership.md, "Members"); empty: it runs none.
    Members { running: Vec<SiteId> },
    /// `server` is in maintenance (`Some`), or no longer (`None`).
    Maintenance {
        server: ServerId,
        record: Option<MaintenanceRecord>,
    },
    /// This site came to own `account` under `term` (docs/ownership.md): a gateway that
    /// starts on the journal, a standby taking over above all, claims it under that term
    /// first, which its peers grant as a renewal while their grants to this site last.
    Owned { account: AccountId, term: Term },
}

/// Why and since when a server is out of use, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceRecord {
    /// Who asked: the admin token's name.
    pub by: String,
    pub reason: String,
    /// Wall clock, milliseconds since the Unix epoch.
    pub since_wall_ms: u64,
    /// Drain at once, even if that leaves its account below its minimum.
    pub force: bool,
}

/// A command to one server's node agent.
// Commands are few (one per decision) and short-lived: boxing the pointer would cost an
// allocation per command to save bytes in a handful of them.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Apply {
        server: ServerId,
        pointer: InitPointer,
    },
    Stop {
        server: ServerId,
        epoch: Epoch,
        drain_ms: u64,
        reason: String,
    },
}

/// One decision or event of the site, with its reason, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub kind: AuditKind,
    pub server: Option<ServerId>,
    pub account: Option<AccountId>,
    /// The account a server left, for moves.
    pub from: Option<AccountId>,
    pub epoch: Option<Epoch>,
    /// The other site of a loan; the home site of an account taken over or handed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<SiteId>,
    /// The ownership term, for ownership records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<Term>,
    pub reason: String,
}

impl AuditEntry {
    /// A record about the site as a whole: no server, account, epoch, peer or term.
    pub fn site_wide(kind: AuditKind, reason: String) -> AuditEntry {
        AuditEntry {
            kind,
            server: None,
            account: None,
            from: None,
            epoch: None,
            peer: None,
            term: None,
            reason,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A free server joins an account.
    Assign,
    /// A server is drained from one account to join another.
    Reclaim,
    /// A reclaimed server, drained, joins the account it was reclaimed for (under a new
    /// epoch); `from` is the account it left.
    Join,
    /// A server is drained from an account and freed.
    Release,
    /// An account cannot get the servers its SLA asks for.
    Shortfall,
    /// A server missed its heartbeats; its lease is revoked.
    ServerFailed,
    /// A lease ended (stopped, expired, refused, workload exited or failed).
    LeaseEnded,
    /// A workload failed to start or failed its health check.
    WorkloadFailed,
    /// A lease recovered from the journal after a restart.
    Recovered,
    /// A live config edit was applied; the reason names the change and the file's hash.
    Config,
    /// Borrower: a peer lent us a server for one of our accounts.
    Borrow,
    /// Lender: one of our servers is lent to a peer site for one of its accounts.
    Lend,
    /// A lent server went back (the borrower returned it, drained).
    LoanReturn,
    /// The lender asked for a lent server back, with a grace period to drain it.
    LoanRecall,
    /// A loan's lease ran out without renewal (borrower: we stop counting the server;
    /// lender: the server comes home).
    LoanExpired,
    /// A peer refused our loan request, or granted fewer servers than asked.
    LoanRefused,
    /// A majority granted this site ownership of one of its own accounts.
    OwnershipAcquired,
    /// This site took over a peer's account (its home and earlier failover sites down).
    Takeover,
    /// This site starts giving an account it took over back to its home site: it borrows
    /// the home's servers for it first (drain-first, docs/ownership.md).
    HandbackStarted,
    /// This site gave an account it took over back to its home site.
    Handback,
    /// Home site: a server it lent to the account's interim owner now serves the account
    /// as its own, since this site owns the account again.
    Handover,
    /// This site could not renew an ownership in time and stopped serving the account.
    OwnershipLost,
    /// The sites whose majority this site's ownership claims need changed (a step of a
    /// membership change, docs/ownership.md "Members").
    Members,
    /// A machine is re-imaged for an account: powered off, set to boot the account's
    /// image once from the network, powered on.
    Reimage,
    /// A re-imaged machine's node agent registered from the new image; the reason has how
    /// long each step took.
    Booted,
    /// A machine was powered off through its BMC because its lease ended unheard (or its
    /// state was unknown), before it serves anything else.
    Fence,
    /// A machine registered from a boot that is not its current re-image; refused and
    /// powered off.
    StaleBoot,
    /// A machine could not be re-imaged or never registered after booting; out of use.
    MachineFailed,
    /// A machine's BMC does not answer: the machine stays out of use until it does.
    BmcUnreachable,
    /// An operator took a server out of use for maintenance (`leasehold server drain`):
    /// it drains, once its account has a replacement if it needs one, and stays free.
    Maintenance,
    /// An operator gave a server in maintenance back (`leasehold server undrain`).
    MaintenanceOver,
    /// The journal was restored from a backup (`leasehold journal restore`); written by the
    /// restore, first of the restored journal's new records.
    JournalRestored,
    /// Audit records older than the retention were removed (`journal.audit_retention_days`).
    AuditPruned,
}

/// Why a lease ended; the audit entry says it in words, metrics count it by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseEndCause {
    /// The gateway's lease timer ran out without a renewal, or the node reported it stopped
    /// because its own lease ran out (S-1).
    Expired,
    /// The node drained and stopped the workload when told to (a move or a release), or
    /// for a newer command.
    Stopped,
    /// The workload exited by itself.
    WorkloadExited,
    /// The workload failed to start or failed its health check.
    WorkloadFailed,
    /// The node refused the pointer (e.g. a stale epoch).
    PointerRefused,
    /// The node re-registered without the workload the gateway held a lease for.
    NodeLostWorkload,
    /// The account is no longer in the config (seen when the journal is recovered).
    AccountRemoved,
    /// A machine's re-image failed, or it never registered after booting.
    MachineFailed,
}

impl LeaseEndCause {
    pub const ALL: [LeaseEndCause; 8] = [
        LeaseEndCause::Expired,
        LeaseEndCause::Stopped,
        LeaseEndCause::WorkloadExited,
        LeaseEndCause::WorkloadFailed,
        LeaseEndCause::PointerRefused,
        LeaseEndCause::NodeLostWorkload,
        LeaseEndCause::AccountRemoved,
        LeaseEndCause::MachineFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LeaseEndCause::Expired => "expired",
            LeaseEndCause::Stopped => "stopped",
            LeaseEndCause::WorkloadExited => "workload_exited",
            LeaseEndCause::WorkloadFailed => "workload_failed",
            LeaseEndCause::PointerRefused => "pointer_refused",
            LeaseEndCause::NodeLostWorkload => "node_lost_workload",
            LeaseEndCause::AccountRemoved => "account_removed",
            LeaseEndCause::MachineFailed => "machine_failed",
        }
    }
}

/// Facts for metrics and reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A lease ended (its audit entry has the details).
    LeaseEnded { cause: LeaseEndCause },
    /// Borrower: a borrowed server serves; `latency_ms` from our request to healthy.
    LoanServing { latency_ms: u64 },
    /// A server joined `account`: `latency_ms` from the decision to the workload healthy.
    Reallocated {
        server: ServerId,
        account: AccountId,
        latency_ms: u64,
    },
}
