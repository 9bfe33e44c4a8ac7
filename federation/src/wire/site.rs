//! Messages between two site gateways (ALPN `leasehold-site/1`): liveness, the account
//! catalogue, and loans of servers. The sender's site is never a field: it is the name in
//! the sender's certificate, which the transport has checked.

use serde::{Deserialize, Serialize};

use super::common::{DataRef, Health, Refusal, Secrets, Software};
use crate::ids::{AccountId, Epoch, ServerId, SiteId, Term};

/// First message on a site-to-site connection, from the side that opened it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerHello {
    pub site: SiteId,
    pub config_version: u64,
    /// The generation of the sending site's active gateway, on a site of standby
    /// gateways (docs/ha.md, "Generations"); a receiver refuses one older than it has
    /// taken from that site. Added within version 1: absent from a site of one gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerWelcome {
    pub site: SiteId,
    pub config_version: u64,
    /// The generation of the sending site's active gateway, on a site of standby
    /// gateways (docs/ha.md, "Generations"); a receiver refuses one older than it has
    /// taken from that site. Added within version 1: absent from a site of one gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// Liveness and RTT probe; the answer echoes `seq` and `sent_at_us`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    pub seq: u64,
    /// The sender's monotonic clock; only the sender interprets it.
    pub sent_at_us: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    pub seq: u64,
    pub sent_at_us: u64,
}

/// The accounts a site homes, so that a peer can run a server for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountCatalogue {
    pub site: SiteId,
    /// Grows with every config change; a receiver keeps the newest.
    pub version: u64,
    pub accounts: Vec<AccountSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountSpec {
    pub name: AccountId,
    pub home: SiteId,
    pub min_servers: u32,
    pub max_servers: u32,
    pub priority: u32,
    pub target_load: f64,
    pub failover: Vec<SiteId>,
    /// Stays with the site that took it over: no failback when its home is back.
    #[serde(default)]
    pub pinned: bool,
    pub software: Software,
    pub data: DataRef,
}

/// Borrower → lender: lend me up to `count` servers for `account`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLoan {
    pub account: AccountId,
    pub count: u32,
    /// The borrower owns `account`, homed at the lender, and is handing it back: it
    /// borrows the home's servers so that they serve before its own stop (docs/ownership.md).
    #[serde(default)]
    pub handback: bool,
    /// The account's secrets, for the workload the lent servers will run; absent when the
    /// account has none (docs/operations.md, "Secrets").
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secrets: Secrets,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LoanOffer {
    /// Possibly fewer than asked; each lent server is re-initialized by the lender.
    Granted {
        servers: Vec<LentServer>,
    },
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LentServer {
    pub server: ServerId,
    pub epoch: Epoch,
    /// Where the server serves the account's traffic.
    pub service_addr: String,
    pub ttl_ms: u64,
}

/// Borrower → lender: keep this loan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewLoan {
    pub server: ServerId,
    pub epoch: Epoch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LoanRenewal {
    /// Valid for `ttl_ms` from when the borrower sent the request.
    Renewed {
        epoch: Epoch,
        ttl_ms: u64,
    },
    Refused(Refusal),
}

/// Borrower → lender: I am done with this server (it is drained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReturnLoan {
    pub server: ServerId,
    pub epoch: Epoch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoanReturned {
    pub server: ServerId,
    pub epoch: Epoch,
}

/// Lender → borrower: I need this server back; drain it within `grace_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallLoan {
    pub server: ServerId,
    pub epoch: Epoch,
    pub grace_ms: u64,
}

/// Lender → borrower: health and load of a lent server, relayed from its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LentServerStatus {
    pub server: ServerId,
    pub epoch: Epoch,
    pub account: AccountId,
    pub health: Health,
    pub load: Option<f64>,
}

/// Claimant → acceptor: grant me ownership of these accounts (docs/ownership.md). One
/// message carries every account the claimant asks for in a round, so that a federation
/// with many accounts sends one message per peer per renew interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimOwnership {
    pub claims: Vec<OwnershipClaim>,
    /// The claimant's members: the set its claims need a majority of, the set its config
    /// wants, and which changes of the others it has heard (docs/ownership.md,
    /// "Members"). Sent with every claim message, and alone (no claims) at least every
    /// renew interval. Absent from a peer of an older build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<MembershipReport>,
}

/// A site's membership, as it tells its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipReport {
    /// The sites whose majority its claims need, sorted; empty: it claims nothing yet.
    pub running: Vec<SiteId>,
    /// The sites its config names (itself and its peers), sorted.
    pub wanted: Vec<SiteId>,
    /// Its current change: new with every start and every edit of `wanted`.
    pub change: u64,
    /// Each peer's `change` as last heard from it.
    pub seen: Vec<(SiteId, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnershipClaim {
    pub account: AccountId,
    pub term: Term,
    /// The claimant's round, echoed in the vote.
    pub round: u64,
}

/// Acceptor → claimant: one vote per claim, in any order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnershipVotes {
    pub votes: Vec<OwnershipVote>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnershipVote {
    pub account: AccountId,
    pub round: u64,
    pub vote: Vote,
}

/// An acceptor's answer to one claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Vote {
    /// Granted for the acceptor's ownership TTL from receipt, under `term`.
    Granted { term: Term },
    /// Another site holds a grant here, for `for_ms` more.
    Held {
        holder: SiteId,
        term: Term,
        for_ms: u64,
    },
    /// The term is not above what this acceptor granted for the account before.
    Stale { promised: Term },
    /// The acceptor restarted and grants nothing for `for_ms` more; or it does not count
    /// the claimant a member (docs/ownership.md, "Members").
    Quiet { for_ms: u64 },
}

/// Holder → acceptor: I give these grants up (a handover).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseOwnership {
    pub releases: Vec<OwnershipRelease>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnershipRelease {
    pub account: AccountId,
    pub term: Term,
    /// A drain-first hand-back names the account's home: the acceptor grants it at once,
    /// but anyone else only once the released grant would have run out, since the home's
    /// servers lent for the hand-back may serve the account until then (added within
    /// version 1: absent means a plain release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<SiteId>,
}
