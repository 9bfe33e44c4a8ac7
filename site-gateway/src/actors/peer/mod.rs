//! The Peer actor: one per peer site in the config. It keeps an outgoing QUIC connection
//! to the peer's federation address (dialling again with backoff when it drops), pings it
//! to judge liveness and measure RTT, announces this site's account catalogue, and keeps
//! the peer's. Its inbound connection (the peer dialling us) is served by a read loop that
//! answers stateless requests itself and hands the rest to this actor.
//!
//! Each side sends its own requests on the connection it dialled, so either side's view
//! of the other depends only on its own dialling: no tie-break between two connections.
//!
//! Loans pass through here both ways: what the peer sends goes to the SiteMaster (a loan
//! request with the peer's account spec from its catalogue), and what the master sends the
//! peer ([`Outgoing`]) goes out on our connection, its answer back to the master.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use leasehold_federation::addr::HostPort;
use leasehold_federation::generation::GenerationFence;
use leasehold_federation::ids::SiteId;
use leasehold_federation::transport::connection::{Connection, Inbox, ReplyPort, close_code};
use leasehold_federation::transport::endpoint::Endpoint;
use leasehold_federation::transport::identity::PeerName;
use leasehold_federation::wire::common::{Refusal, RefusalCause};
use leasehold_federation::wire::site::LoanRenewal;
use leasehold_federation::wire::site::{
    AccountCatalogue, LoanOffer, LoanReturned, PeerHello, PeerWelcome, Ping, Pong, RequestLoan,
};
use leasehold_federation::wire::{Inbound, InboundOneWay, InboundRequest};
use serde::Serialize;

use super::loans::{
    LendTo, LoanAnswered, PeerSeen, RecallFrom, RenewLoanFrom, ReturnFrom, StatusFrom,
};
use super::master::SiteMaster;
use super::ownership::{CatalogueSeen, ClaimsFrom, OwnershipAnswered, ReleasedBy};
use crate::model::Millis;
use crate::model::effects::PeerMessage;
use crate::model::peers::{Liveness, PeerHealth};

/// How long a loan request or renewal may take: the lender journals before it answers.
const LOAN_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an ownership claim may take: a vote later than this is of no use to a round.
const OWNERSHIP_TIMEOUT: Duration = Duration::from_secs(1);

const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a Peer needs to know of its own site.
#[derive(Clone)]
pub struct Local {
    pub site: SiteId,
    pub endpoint: Arc<Endpoint>,
    pub catalogue: Arc<AccountCatalogue>,
    pub ping_interval: Duration,
    pub misses: u32,
    pub started: Instant,
    /// This gateway's generation, on a site of standby gateways: in hellos and welcomes.
    pub generation: Option<u64>,
    /// The site's master, set once it has started (after the peers).
    pub master: Arc<OnceLock<Addr<SiteMaster>>>,
}

pub struct Peer {
    name: SiteId,
    /// As configured: a name is resolved at every dial.
    addr: HostPort,
    /// Its other gateways' addresses (a peer of standby gateways), dialled after `addr`.
    other_addrs: Vec<HostPort>,
    /// The address the connection we dialled is to.
    dialled_addr: Option<SocketAddr>,
    local: Local,
    health: PeerHealth,
    outgoing: Option<(u64, Connection)>,
    inbound: Option<(u64, Connection)>,
    generation: u64,
    dialing: bool,
    backoff: Duration,
    seq: u64,
    /// Refusals and failures are logged when they change, not on every retry.
    last_failure: Option<String>,
    catalogue: Option<AccountCatalogue>,
    /// The highest generation of the peer's gateways taken (a peer of standbys): shared
    /// with the tasks that serve its connections, which refuse a deposed gateway's.
    fence: Arc<std::sync::Mutex<GenerationFence>>,
}

impl Peer {
    /// `addr` and `other_addrs` as `[[peer]]` gives them.
    pub fn new(name: SiteId, (addr, other_addrs): (HostPort, Vec<HostPort>), local: Local) -> Self {
        let health = PeerHealth::new(local.ping_interval, local.misses);
        Peer {
            name,
            addr,
            other_addrs,
            dialled_addr: None,
            local,
            health,
            outgoing: None,
            inbound: None,
            generation: 0,
            dialing: false,
            backoff: BACKOFF_FIRST,
            seq: 0,
            last_failure: None,
            catalogue: None,
            fence: Arc::default(),
        }
    }

    fn now(&self) -> Millis {
        Millis(u64::try_from(self.local.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        if self.dialing || self.outgoing.is_some() {
            return;
        }
        self.dialing = true;
        self.generation += 1;
        let generation = self.generation;
        let endpoint = self.local.endpoint.clone();
        let addrs: Vec<HostPort> = std::iter::once(self.addr.clone())
            .chain(self.other_addrs.iter().cloned())
            .collect();
        let name = PeerName::Site(self.name.clone());
        let hello = PeerHello {
            site: self.local.site.clone(),
            config_version: self.local.catalogue.version,
            generation: self.local.generation,
        };
        let catalogue = self.local.catalogue.clone();
        let timeout = self.local.ping_interval * self.local.misses;
        let several = addrs.len() > 1;
        let dialled = async move {
            // Every address of the peer in turn (one for a site of one gateway; every
            // gateway of a site of standbys, of which only the one that acts answers our
            // hello). Each is resolved again at every dial: a site whose address changed
            // is found at the new one; each address a name has is tried in turn
            // (`localhost` may be ::1 first).
            let mut failures = Vec::new();
            for addr in &addrs {
                let targets = match addr.resolve().await {
                    Ok(targets) => targets,
                    Err(error) => {
                        failures.push(format!("{addr}: {error}"));
                        continue;
                    }
                };
                for target in targets {
                    // A dead gateway of several must not hold the dial up past the time
                    // a peer is judged down.
                    let connecting = endpoint.connect(target, &name);
                    let connected = if several {
                        match tokio::time::timeout(timeout, connecting).await {
                            Ok(connected) => connected,
                            Err(_) => {
                                failures.push(format!("{target}: no handshake within {timeout:?}"));
                                continue;
                            }
                        }
                    } else {
                        connecting.await
                    };
                    let (connection, inbox) = match connected {
                        Ok(connected) => connected,
                        Err(error) => {
                            failures.push(format!("{target}: {error}"));
                            continue;
                        }
                    };
                    // With TLS 1.3 a refusal of our certificate shows up on first use, so
                    // the hello doubles as the check that the peer accepted us; a standby
                    // gateway closes the connection instead, naming the active one.
                    match connection.request_within(&hello, timeout).await {
                        Ok(welcome) => {
                            connection
                                .send(catalogue.as_ref())
                                .await
                                .map_err(|error| error.to_string())?;
                            return Ok::<_, String>((target, connection, inbox, welcome));
                        }
                        Err(error) => failures.push(format!(
                            "{target}: the peer did not answer our hello (it may refuse our certificate, or be a standby): {error}"
                        )),
                    }
                }
            }
            Err(failures.join("; "))
        };
        ctx.spawn(dialled.into_actor(self).map(move |result, peer, ctx| {
            peer.dialing = false;
            match result {
                Ok((target, connection, inbox, welcome)) => {
                    peer.dialled_addr = Some(target);
                    peer.connected(generation, connection, inbox, welcome, ctx)
                }
                Err(reason) => peer.dial_failed(reason, ctx),
            }
        }));
    }

    fn connected(
        &mut self,
        generation: u64,
        connection: Connection,
        inbox: Inbox,
        welcome: PeerWelcome,
        ctx: &mut Context<Self>,
    ) {
        if welcome.site != self.name {
            self.dial_failed(format!("it introduced itself as `{}`", welcome.site), ctx);
            connection.close(close_code::REFUSED, "wrong site in welcome");
            return;
        }
        if let Err(refusal) = take_generation(&self.fence, "a welcome", welcome.generation) {
            connection.close(close_code::REFUSED, &refusal.detail);
            self.dial_failed(refusal.detail, ctx);
            return;
        }
        tracing::info!(peer = %self.name, addr = %self.addr, at = ?self.dialled_addr, "peer connected");
        self.last_failure = None;
        self.backoff = BACKOFF_FIRST;
        self.health.answered(self.now(), connection.rtt());
        // The peer may also send on the connection we dialled; serve it like an inbound one.
        tokio::spawn(serve_inbound(
            self.name.clone(),
            self.local.clone(),
            (connection.clone(), inbox),
            ctx.address(),
            (self.fence.clone(), welcome.generation),
        ));
        let watched = connection.clone();
        ctx.spawn(
            async move { watched.closed().await }
                .into_actor(self)
                .map(move |why, peer, ctx| peer.lost(generation, why.to_string(), ctx)),
        );
        self.outgoing = Some((generation, connection));
    }

    fn dial_failed(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.last_failure.as_ref() != Some(&reason) {
            tracing::warn!(peer = %self.name, addr = %self.addr, %reason, "cannot reach peer; retrying with backoff");
            self.last_failure = Some(reason);
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        ctx.run_later(delay, |peer, ctx| peer.dial(ctx));
    }

    fn lost(&mut self, generation: u64, why: String, ctx: &mut Context<Self>) {
        if self
            .outgoing
            .as_ref()
            .is_some_and(|(g, _)| *g == generation)
        {
            tracing::warn!(peer = %self.name, %why, "connection to peer lost");
            self.outgoing = None;
            self.health.lost();
            self.dial(ctx);
        }
    }

    fn redial(&mut self, generation: u64, ctx: &mut Context<Self>) {
        if let Some((current, connection)) = &self.outgoing
            && *current == generation
        {
            tracing::warn!(peer = %self.name, "peer silent; dropping the connection and dialling again");
            connection.close(close_code::DONE, "peer silent");
            self.outgoing = None;
            self.dial(ctx);
        }
    }

    fn ping(&mut self, ctx: &mut Context<Self>) {
        let Some((generation, connection)) = self.outgoing.clone() else {
            return;
        };
        self.seq += 1;
        let sent = Instant::now();
        let ping = Ping {
            seq: self.seq,
            sent_at_us: u64::try_from(sent.duration_since(self.local.started).as_micros())
                .unwrap_or(u64::MAX),
        };
        let timeout = self.local.ping_interval * 2;
        ctx.spawn(
            async move { connection.request_within(&ping, timeout).await }
                .into_actor(self)
                .map(move |answer, peer, ctx| match answer {
                    // The RTT is timed on our side, per ping, so a late pong still counts.
                    Ok(_) => {
                        let now = peer.now();
                        peer.health.answered(now, sent.elapsed());
                        peer.tell_master();
                    }
                    Err(error) => {
                        tracing::debug!(peer = %peer.name, generation, %error, "ping unanswered");
                        // A peer that died without closing (kill -9, a cut link) leaves a
                        // connection QUIC would keep until its idle timeout: once the pings
                        // say down, drop it and dial afresh.
                        let now = peer.now();
                        if peer.health.judge(now) == Liveness::Down {
                            peer.redial(generation, ctx);
                        }
                        peer.tell_master();
                    }
                }),
        );
    }

    /// The master chooses lenders among peers that are up, nearest first when asked to.
    fn tell_master(&self) {
        if let Some(master) = self.local.master.get() {
            let now = self.now();
            // do_send: one per ping per peer, a low and fixed rate.
            master.do_send(PeerSeen {
                site: self.name.clone(),
                up: self.health.judge(now) == Liveness::Up && self.outgoing.is_some(),
                rtt: self.health.rtt(),
            });
        }
    }
}

impl Actor for Peer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.dial(ctx);
        ctx.run_interval(self.local.ping_interval, |peer, ctx| peer.ping(ctx));
    }
}

/// The peer dialled us; its connection is served here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DialledIn {
    pub connection: Connection,
    pub inbox: Inbox,
}

impl Handler<DialledIn> for Peer {
    type Result = ();

    fn handle(&mut self, message: DialledIn, ctx: &mut Context<Self>) {
        self.generation += 1;
        let connection = message.connection.clone();
        if let Some((_, old)) = self.inbound.replace((self.generation, message.connection)) {
            old.close(close_code::DONE, "replaced by a newer connection");
        }
        // Its generation is the hello's, the first thing a peer sends on it.
        tokio::spawn(serve_inbound(
            self.name.clone(),
            self.local.clone(),
            (connection, message.inbox),
            ctx.address(),
            (self.fence.clone(), None),
        ));
    }
}

/// This site's accounts changed (a config edit): announce them to the peer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Announce(pub Arc<AccountCatalogue>);

impl Handler<Announce> for Peer {
    type Result = ();

    fn handle(&mut self, Announce(catalogue): Announce, ctx: &mut Context<Self>) {
        self.local.catalogue = catalogue.clone();
        if let Some((_, connection)) = self.outgoing.clone() {
            let name = self.name.clone();
            ctx.spawn(
                async move {
                    if let Err(error) = connection.send(catalogue.as_ref()).await {
                        tracing::warn!(peer = %name, %error, "new catalogue not delivered; it goes with the next connection");
                    }
                }
                .into_actor(self),
            );
        }
    }
}

/// The peer left the config: close its connections and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

impl Handler<Leave> for Peer {
    type Result = ();

    fn handle(&mut self, _: Leave, ctx: &mut Context<Self>) {
        for (_, connection) in self.outgoing.take().into_iter().chain(self.inbound.take()) {
            connection.close(close_code::DONE, "removed from the config");
        }
        ctx.stop();
    }
}

/// The peer announced its accounts.
#[derive(Message)]
#[rtype(result = "()")]
struct CatalogueReceived(AccountCatalogue);

impl Handler<CatalogueReceived> for Peer {
    type Result = ();

    fn handle(&mut self, CatalogueReceived(catalogue): CatalogueReceived, _: &mut Context<Self>) {
        // Keep the newest: a reordered older announcement must not undo a newer one.
        if self
            .catalogue
            .as_ref()
            .is_none_or(|current| catalogue.version >= current.version)
        {
            tracing::info!(peer = %self.name, version = catalogue.version, accounts = catalogue.accounts.len(), "peer catalogue received");
            if let Some(master) = self.local.master.get() {
                master.do_send(CatalogueSeen {
                    site: self.name.clone(),
                    accounts: catalogue.accounts.clone(),
                });
            }
            self.catalogue = Some(catalogue);
        }
    }
}

#[derive(Message)]
#[rtype(result = "PeerStatus")]
pub struct GetPeerStatus;

/// One element of `GET /v1/peers`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub name: SiteId,
    /// As configured (`[[peer]] addr`): an IP literal or a DNS name.
    pub addr: HostPort,
    /// The address our connection to it was made to (what `addr` resolved to then).
    pub dialled_addr: Option<SocketAddr>,
    /// Why the last dial failed (a name that does not resolve, a refusal, no answer);
    /// `None` once connected.
    pub last_error: Option<String>,
    pub state: Liveness,
    /// Smoothed RTT of our pings, in milliseconds.
    pub rtt_ms: Option<f64>,
    pub silent_ms: Option<u64>,
    /// Our connection to it is up.
    pub dialled: bool,
    /// Its connection to us is up.
    pub dialled_in: bool,
    /// When the certificate it presented on our connection to it expires (Unix time): a
    /// renewal shows here once a new connection is made.
    pub certificate_expires: Option<i64>,
    pub catalogue_version: Option<u64>,
    /// The accounts it homes, from its catalogue.
    pub accounts: Vec<String>,
}

impl Handler<GetPeerStatus> for Peer {
    type Result = MessageResult<GetPeerStatus>;

    fn handle(&mut self, _: GetPeerStatus, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        MessageResult(PeerStatus {
            name: self.name.clone(),
            addr: self.addr.clone(),
            dialled_addr: self.dialled_addr,
            last_error: self.last_failure.clone(),
            state: self.health.judge(now),
            rtt_ms: self.health.rtt().map(|rtt| rtt.as_secs_f64() * 1000.0),
            silent_ms: self
                .health
                .silent_for(now)
                .map(|silent| u64::try_from(silent.as_millis()).unwrap_or(u64::MAX)),
            dialled: self.outgoing.is_some(),
            dialled_in: self.inbound.is_some(),
            certificate_expires: self
                .outgoing
                .as_ref()
                .and_then(|(_, connection)| connection.peer_certificate_expiry()),
            catalogue_version: self.catalogue.as_ref().map(|c| c.version),
            accounts: self
                .catalogue
                .as_ref()
                .map(|c| c.accounts.iter().map(|a| a.name.to_string()).collect())
                .unwrap_or_default(),
        })
    }
}

mod inbound;
mod outgoing;

/// Takes `generation` from the peer if it is not older than one taken before; `Err` says
/// why not (a deposed gateway of the peer's site).
fn take_generation(
    fence: &std::sync::Mutex<GenerationFence>,
    what: &str,
    generation: Option<u64>,
) -> Result<(), Refusal> {
    // Each update is whole; a panic elsewhere leaves nothing half-set.
    let mut fence = fence
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    fence.check(what, generation)?;
    fence.registered(generation);
    Ok(())
}

use inbound::serve_inbound;
pub use outgoing::Outgoing;
