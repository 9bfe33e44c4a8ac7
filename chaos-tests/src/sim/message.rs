//! What travels on the simulated network: the management channel between a site's
//! gateway and its node agents, and the federation between gateways. The bodies are the
//! wire's own types; what the real transport adds (a request's id, the stream its answer
//! comes back on, the connection's generation) is spelled out here.

use leasehold_federation::ids::{AccountId, Epoch, ServerId};
use leasehold_federation::wire::common::{Health, InitPointer, Refusal};
use leasehold_federation::wire::node::{
    LeaseRenewal, PointerApplication, Registration, RunningWorkload, StopOutcome,
};
use leasehold_federation::wire::site::{AccountSpec, LoanOffer, LoanRenewal, OwnershipVotes};
use leasehold_node::model::Report;
use leasehold_site_gateway::model::effects::PeerMessage;

/// A request's id, unique in a simulation: its answer names it.
pub type RequestId = u64;

#[derive(Debug, Clone)]
pub enum Msg {
    // Node agent -> its gateway. Each but `Register` goes on the connection of the gateway
    // incarnation it names (`generation`): a restarted gateway never hears what was meant
    // for the one before, as a closed QUIC connection delivers nothing.
    Register {
        server: ServerId,
        running: Option<RunningWorkload>,
        highest_epoch: Epoch,
        request: RequestId,
    },
    Heartbeat {
        generation: u64,
        server: ServerId,
        health: Health,
        load: Option<f64>,
    },
    Renew {
        generation: u64,
        server: ServerId,
        epoch: Epoch,
        request: RequestId,
    },
    Report {
        generation: u64,
        server: ServerId,
        report: Report,
    },
    PointerAnswer {
        generation: u64,
        request: RequestId,
        answer: PointerApplication,
    },
    StopAnswer {
        generation: u64,
        request: RequestId,
        answer: StopOutcome,
    },
    // Gateway -> one of its node agents; `generation` is the gateway's incarnation, as a
    // connection ties an answer to the process that sent it.
    Registered {
        generation: u64,
        request: RequestId,
        answer: Result<Registration, Refusal>,
    },
    RenewAnswer {
        request: RequestId,
        answer: LeaseRenewal,
    },
    Apply {
        generation: u64,
        request: RequestId,
        pointer: InitPointer,
    },
    Stop {
        generation: u64,
        request: RequestId,
        epoch: Epoch,
        drain_ms: u64,
    },
    // Gateway <-> gateway.
    Ping {
        request: RequestId,
    },
    Pong {
        request: RequestId,
    },
    Catalogue {
        accounts: Vec<AccountSpec>,
    },
    /// A message of the site core's for a peer; `request` when it expects an answer.
    Peer {
        request: Option<RequestId>,
        message: PeerMessage,
    },
    LoanOfferAnswer {
        request: RequestId,
        account: AccountId,
        offer: LoanOffer,
    },
    LoanRenewalAnswer {
        request: RequestId,
        server: ServerId,
        epoch: Epoch,
        answer: LoanRenewal,
    },
    VotesAnswer {
        request: RequestId,
        votes: OwnershipVotes,
    },
}

impl Msg {
    /// The gateway incarnation a node's message is for (`None` for a registration).
    pub fn for_generation(&self) -> Option<u64> {
        match self {
            Msg::Heartbeat { generation, .. }
            | Msg::Renew { generation, .. }
            | Msg::Report { generation, .. }
            | Msg::PointerAnswer { generation, .. }
            | Msg::StopAnswer { generation, .. } => Some(*generation),
            _ => None,
        }
    }

    /// A short name for the trace.
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Register { .. } => "register",
            Msg::Heartbeat { .. } => "heartbeat",
            Msg::Renew { .. } => "renew",
            Msg::Report { .. } => "report",
            Msg::PointerAnswer { .. } => "pointer-answer",
            Msg::StopAnswer { .. } => "stop-answer",
            Msg::Registered { .. } => "registered",
            Msg::RenewAnswer { .. } => "renew-answer",
            Msg::Apply { .. } => "apply",
            Msg::Stop { .. } => "stop",
            Msg::Ping { .. } => "ping",
            Msg::Pong { .. } => "pong",
            Msg::Catalogue { .. } => "catalogue",
            Msg::Peer { .. } => "peer",
            Msg::LoanOfferAnswer { .. } => "loan-offer",
            Msg::LoanRenewalAnswer { .. } => "loan-renewal",
            Msg::VotesAnswer { .. } => "votes",
        }
    }
}
