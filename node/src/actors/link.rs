//! The management channel's connection loop: dial the site's gateways, register with the
//! one that accepts, hand its commands to the `Server` actor, and on any loss reconnect
//! with backoff (100 ms doubling to 2 s, each wait drawn between half and all of it, so
//! that the nodes of a site that lost its gateway do not all dial again in the same
//! instant). The workload keeps running meanwhile, as long as its lease is valid: the
//! lease, not the connection, decides.
//!
//! A site may run several gateways, one active and the others standby (`--gateway` given
//! once for each). Every attempt dials them all at once, each on its own task (resolve,
//! connect within `CONNECT_TIMEOUT` (2 s), then `RegisterServer` within it again), and
//! keeps the first that answers `Accepted`. A standby refuses, naming the active one: with
//! several gateways that is logged at info level, being normal; with one, a refusal is a
//! warning. Every other connection of the attempt is closed with a reason, one that is
//! accepted later too: the node is registered with one gateway at a time. The actor is
//! asked once per attempt what it runs, when the first handshake completes, and every
//! gateway is told the same. A gateway of several that refuses is asked again every
//! 200 ms, for up to 5 s, while no other has accepted: a standby acts as soon as the dead
//! gateway's etcd lease ends. When no gateway accepts, the attempt ends once each has
//! answered or failed.
//!
//! `leasehold fleet` runs this link for each simulated server (D-50): its servers share
//! endpoints, each presenting its own certificate (`LinkTarget::presents`), and what an
//! attempt meets is counted through [`LinkWatch`], so that the fleet tells a gateway that
//! refuses apart from one it cannot reach.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use leasehold_federation::addr::HostPort;
use leasehold_federation::ids::{ServerId, SiteId};
use leasehold_federation::transport::connection::{Connection, Inbox, RequestError};
use leasehold_federation::transport::endpoint::{ConnectError, DialIdentity, Endpoint};
use leasehold_federation::transport::identity::PeerName;
use leasehold_federation::wire::node::{RegisterServer, Registration};
use leasehold_federation::wire::{Inbound, InboundOneWay, InboundRequest};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;

use super::messages::{
    ApplyPointerReceived, Connected, DescribeForRegistration, Described, Disconnected,
    PulseAnswered, StopWorkloadReceived,
};
use super::server::{Server, Workloads};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the agent closes a connection to a gateway that it does not register with (the
/// gateway sees it).
const CLOSED_FOR_ANOTHER: &str = "registered with another gateway of the site";

/// Where and who the site's gateways are.
#[derive(Debug, Clone)]
pub struct LinkTarget {
    /// Every gateway of the site, in any order (one active, the others standby): IP
    /// literals or DNS names, each resolved at every connect. Never empty.
    pub gateways: Vec<HostPort>,
    /// Dial only IPv4 addresses (the endpoint is bound to an IPv4 socket), or only IPv6.
    pub ipv4: bool,
    pub site: SiteId,
    pub server: ServerId,
    /// A machine's boot claim, sent with every registration.
    pub boot: Option<leasehold_federation::wire::node::BootClaim>,
    /// The certificate to present from an endpoint that servers share (the fleet's);
    /// `None`: the endpoint's own.
    pub presents: Option<DialIdentity>,
    pub agent_version: String,
}

/// What a link's attempts meet, for whoever counts them: the fleet's progress and status
/// lines, and its "every server refused". The agent only logs.
pub trait LinkWatch: Send + Sync + 'static {
    /// A handshake completed: a connection is open.
    fn reached(&self) {}
    /// A connection reached was closed without a registration.
    fn left(&self) {}
    /// The gateway said no: its TLS policy, or `Registration::Refused`.
    fn refused(&self, _server: &ServerId, _why: String) {}
    /// Unreachable, no answer in time, or closed for another reason.
    fn failed(&self) {}
    fn registered(&self, _server: &ServerId, _first_time: bool) {}
    /// A registered connection was lost.
    fn lost(&self) {}
}

/// The agent's: it logs what it meets, and counts nothing.
pub struct Unwatched;

impl LinkWatch for Unwatched {}

impl LinkTarget {
    /// Several gateways: a refusal (a standby's) is normal, not a warning.
    fn several(&self) -> bool {
        self.gateways.len() > 1
    }
}

/// Runs until the `Server` actor is gone.
pub async fn run_link<W: Workloads>(
    endpoint: Arc<Endpoint>,
    target: LinkTarget,
    server: Addr<Server<W>>,
    watch: Arc<dyn LinkWatch>,
) {
    let target = Arc::new(target);
    let mut backoff = BACKOFF_FIRST;
    let mut generation = 0;
    let mut attempt: u64 = 0;
    loop {
        match register(&endpoint, &target, &server, &watch).await {
            Ok(Some(Registered {
                gateway,
                connection,
                inbox,
                accepted,
            })) => {
                backoff = BACKOFF_FIRST;
                generation += 1;
                watch.registered(&target.server, generation == 1);
                let protocol = connection.version();
                let address = connection.remote_address();
                tracing::info!(server = %target.server, %gateway, %address, site = %target.site, protocol, "registered");
                server.do_send(Connected {
                    generation,
                    connection,
                    heartbeat_interval: accepted.heartbeat_interval,
                    renew_interval: accepted.renew_interval,
                    service_addr: accepted.service_addr,
                    gateway_generation: accepted.generation,
                });
                let ended = serve(inbox, &server).await;
                watch.lost();
                tracing::warn!(server = %target.server, %gateway, reason = %ended, "management channel lost; reconnecting");
                server.do_send(Disconnected { generation });
            }
            Ok(None) => {}
            Err(Gone) => return,
        }
        tokio::time::sleep(jittered(backoff, &target.server, generation, attempt)).await;
        attempt += 1;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A wait between half of `backoff` and all of it, drawn from the server's name and the
/// attempt: spread across a site's nodes, and the same for a server each run (no random
/// source to seed).
fn jittered(backoff: Duration, server: &ServerId, generation: u64, attempt: u64) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (server.as_str(), generation, attempt).hash(&mut hasher);
    let half = backoff / 2;
    let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_micros(hasher.finish() % spread)
}

/// The `Server` actor has stopped.
struct Gone;

struct Accepted {
    generation: Option<u64>,
    heartbeat_interval: Duration,
    renew_interval: Duration,
    service_addr: String,
}

/// A gateway that accepted the registration, and the connection to it.
struct Registered {
    gateway: HostPort,
    connection: Connection,
    inbox: Inbox,
    accepted: Accepted,
}

/// How one gateway's part of an attempt ended.
enum Outcome {
    Accepted(Box<Registered>),
    /// Unreachable, or too late (logged, its connection closed).
    Failed,
    /// The gateway at this address refused (a standby, logged), and may act soon.
    Refused(SocketAddr),
    Gone,
}

/// What the gateways' tasks of one attempt share.
#[derive(Default)]
struct Attempt {
    /// What the actor said it runs: asked once, when the first handshake completes.
    description: OnceCell<Described>,
    /// A gateway has accepted (or the actor is gone): the others register no more.
    settled: AtomicBool,
    /// Addresses already dialled in this attempt: two `--gateway` that resolve to one
    /// address reach one gateway, which would take the second registration as a reconnect
    /// and close the first.
    dialled: Mutex<HashSet<SocketAddr>>,
}

/// Everything one gateway's part of an attempt uses.
struct Dial<W: Workloads> {
    endpoint: Arc<Endpoint>,
    target: Arc<LinkTarget>,
    server: Addr<Server<W>>,
    watch: Arc<dyn LinkWatch>,
    attempt: Arc<Attempt>,
}

impl<W: Workloads> Clone for Dial<W> {
    fn clone(&self) -> Self {
        Dial {
            endpoint: self.endpoint.clone(),
            target: self.target.clone(),
            server: self.server.clone(),
            watch: self.watch.clone(),
            attempt: self.attempt.clone(),
        }
    }
}

/// One attempt: dial every gateway at once and register with the first that accepts.
/// `Ok(None)`: none did (each failure logged), worth retrying.
async fn register<W: Workloads>(
    endpoint: &Arc<Endpoint>,
    target: &Arc<LinkTarget>,
    server: &Addr<Server<W>>,
    watch: &Arc<dyn LinkWatch>,
) -> Result<Option<Registered>, Gone> {
    let dial = Dial {
        endpoint: endpoint.clone(),
        target: target.clone(),
        server: server.clone(),
        watch: watch.clone(),
        attempt: Arc::new(Attempt::default()),
    };
    if let [gateway] = target.gateways.as_slice() {
        // No task for one gateway: a fleet makes thousands of these attempts at its start.
        return match register_with(dial, gateway.clone()).await {
            Outcome::Accepted(registered) => Ok(Some(*registered)),
            Outcome::Gone => Err(Gone),
            Outcome::Failed | Outcome::Refused(_) => Ok(None),
        };
    }
    let attempt = dial.attempt.clone();
    let mut dialling = JoinSet::new();
    for gateway in &target.gateways {
        dialling.spawn(register_until_accepted(dial.clone(), gateway.clone()));
    }
    while let Some(joined) = dialling.join_next().await {
        let settled = match joined {
            Ok(Outcome::Accepted(registered)) => Ok(Some(*registered)),
            Ok(Outcome::Gone) => Err(Gone),
            Ok(Outcome::Failed | Outcome::Refused(_)) => continue,
            Err(error) => {
                tracing::error!(%error, "a registration task failed");
                continue;
            }
        };
        attempt.settled.store(true, Ordering::SeqCst);
        if !dialling.is_empty() {
            // Not aborted: a connection they reach must be closed, never left open.
            tokio::spawn(close_the_rest(dialling, watch.clone()));
        }
        return settled;
    }
    Ok(None)
}

/// Waits for the rest of an attempt that has settled, closing any gateway that accepts
/// late: the node keeps the registration it took first.
async fn close_the_rest(mut dialling: JoinSet<Outcome>, watch: Arc<dyn LinkWatch>) {
    while let Some(joined) = dialling.join_next().await {
        if let Ok(Outcome::Accepted(late)) = joined {
            // Two gateways of one site accepting the same server: worth an operator's look.
            tracing::warn!(gateway = %late.gateway, "a second gateway accepted registration; closing that connection");
            late.connection.close(0, CLOSED_FOR_ANOTHER);
            watch.left();
        }
    }
}

/// How long, within one attempt, a gateway that refuses is asked again, and how often:
/// with several gateways a refusal is a standby's, which acts as soon as the active one's
/// etcd lease ends; asked again at once, the node registers with it then, instead of after
/// a gateway that is down has timed out its handshake (docs/ha.md, "The timing").
const REFUSED_RETRY_FOR: Duration = Duration::from_secs(5);
const REFUSED_RETRY_EVERY: Duration = Duration::from_millis(200);

/// [`register_with`], asked again while a gateway of several refuses and no other has
/// accepted.
async fn register_until_accepted<W: Workloads>(dial: Dial<W>, gateway: HostPort) -> Outcome {
    let until = tokio::time::Instant::now() + REFUSED_RETRY_FOR;
    loop {
        let outcome = register_with(dial.clone(), gateway.clone()).await;
        let Outcome::Refused(address) = outcome else {
            return outcome;
        };
        if !dial.target.several()
            || dial.attempt.settled.load(Ordering::SeqCst)
            || tokio::time::Instant::now() + REFUSED_RETRY_EVERY > until
        {
            return outcome;
        }
        tokio::time::sleep(REFUSED_RETRY_EVERY).await;
        // Dialled again by this task, on purpose.
        dial.attempt
            .dialled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&address);
    }
}

/// One gateway's part of an attempt: resolve, connect, register.
async fn register_with<W: Workloads>(dial: Dial<W>, gateway: HostPort) -> Outcome {
    let Dial {
        endpoint,
        target,
        server,
        watch,
        attempt,
    } = dial;
    let several = target.several();
    let expected = PeerName::Site(target.site.clone());
    // Resolved again at every connect: a gateway whose address changed is found there.
    let addresses = match gateway.resolve().await {
        Ok(addresses) => addresses,
        Err(error) => {
            tracing::warn!(%gateway, %error, "cannot resolve the gateway's address");
            watch.failed();
            return Outcome::Failed;
        }
    };
    let family = if target.ipv4 { "IPv4" } else { "IPv6" };
    let addresses: Vec<SocketAddr> = addresses
        .into_iter()
        .filter(|address| address.is_ipv4() == target.ipv4)
        .collect();
    if addresses.is_empty() {
        tracing::warn!(%gateway, "the gateway has no {family} address, the family of the agent's socket (that of the first --gateway)");
        watch.failed();
        return Outcome::Failed;
    }
    let mut reached = None;
    for address in addresses {
        // A poisoned lock only means another task panicked; the set is still sound.
        let first = attempt
            .dialled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(address);
        if !first {
            tracing::debug!(%gateway, %address, "dialled already for another --gateway");
            continue;
        }
        let connecting = async {
            match &target.presents {
                Some(identity) => endpoint.connect_as(identity, address, &expected).await,
                None => endpoint.connect(address, &expected).await,
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok((connection, inbox))) => {
                watch.reached();
                reached = Some((connection, inbox, address));
                break;
            }
            Ok(Err(error)) => {
                // Our own timeout fires long before quinn's idle timeout, so a handshake or
                // identity error is the gateway answering no.
                if matches!(
                    error,
                    ConnectError::Handshake { .. } | ConnectError::Identity { .. }
                ) {
                    watch.refused(&target.server, error.to_string());
                } else {
                    watch.failed();
                }
                tracing::warn!(server = %target.server, %gateway, %address, %error, "cannot reach the gateway")
            }
            Err(_) => {
                watch.failed();
                tracing::warn!(server = %target.server, %gateway, %address, "no handshake within {CONNECT_TIMEOUT:?}")
            }
        }
    }
    let Some((connection, inbox, address)) = reached else {
        return Outcome::Failed;
    };
    let described = attempt
        .description
        .get_or_try_init(|| server.send(DescribeForRegistration))
        .await;
    let Ok(Described {
        running,
        highest_epoch,
        fence,
    }) = described.cloned()
    else {
        connection.close(0, "the agent is stopping");
        watch.left();
        return Outcome::Gone;
    };
    if attempt.settled.load(Ordering::SeqCst) {
        tracing::debug!(%gateway, "not registering: another gateway accepted first");
        connection.close(0, CLOSED_FOR_ANOTHER);
        watch.left();
        return Outcome::Failed;
    }
    let request = RegisterServer {
        server: target.server.clone(),
        agent_version: target.agent_version.clone(),
        running,
        highest_epoch,
        boot: target.boot.clone(),
    };
    match connection.request_within(&request, CONNECT_TIMEOUT).await {
        Ok(Registration::Accepted {
            site,
            heartbeat_interval_ms,
            lease_ttl_ms,
            renew_interval_ms,
            service_addr,
            generation,
        }) => {
            if let Err(refusal) = fence.check("an acceptance", generation) {
                tracing::warn!(%gateway, %refusal, "not registering with a deposed gateway");
                connection.close(
                    0,
                    "a deposed gateway: its generation is older than one registered with",
                );
                watch.left();
                watch.failed();
                return Outcome::Failed;
            }
            tracing::debug!(%gateway, %site, heartbeat_interval_ms, lease_ttl_ms, renew_interval_ms, %service_addr, ?generation, "registration accepted");
            Outcome::Accepted(Box::new(Registered {
                gateway,
                connection,
                inbox,
                accepted: Accepted {
                    generation,
                    // Zero would be a busy loop; a gateway never means that.
                    heartbeat_interval: Duration::from_millis(heartbeat_interval_ms.max(10)),
                    renew_interval: Duration::from_millis(renew_interval_ms.max(10)),
                    service_addr,
                },
            }))
        }
        Ok(Registration::Refused(refusal)) => {
            if several {
                // A standby saying which gateway is active: normal.
                tracing::info!(%gateway, %refusal, "the gateway refused registration");
            } else {
                tracing::warn!(server = %target.server, %gateway, %refusal, "the gateway refused registration");
            }
            watch.refused(&target.server, format!("registration refused: {refusal}"));
            connection.close(0, "registration refused");
            watch.left();
            Outcome::Refused(address)
        }
        Err(error) => {
            // With TLS 1.3 a refused client certificate shows up here, on first use: the
            // gateway closes the connection with its policy's reason, within
            // CONNECT_TIMEOUT, far inside the idle timeout: closed by it, not by silence.
            if matches!(error, RequestError::ConnectionLost { .. }) {
                watch.refused(&target.server, error.to_string());
            } else {
                watch.failed();
            }
            tracing::warn!(server = %target.server, %gateway, %error, "registration failed (refused certificate?)");
            connection.close(0, "registration failed");
            watch.left();
            Outcome::Failed
        }
    }
}

/// Hands the gateway's commands to the actor until the connection ends; returns why.
async fn serve<W: Workloads>(mut inbox: Inbox, server: &Addr<Server<W>>) -> String {
    while let Some(item) = inbox.next().await {
        match item {
            Ok(Inbound::Request(InboundRequest::ApplyPointer(request, reply))) => {
                server.do_send(ApplyPointerReceived(request, reply));
            }
            Ok(Inbound::Request(InboundRequest::StopWorkload(request, reply))) => {
                server.do_send(StopWorkloadReceived(request, reply));
            }
            Ok(Inbound::OneWay(InboundOneWay::PulseAnswer(answer))) => {
                server.do_send(PulseAnswered(answer));
            }
            // The transport refuses kinds a gateway may not send, so this is unreachable
            // in practice; drop the message (its stream closes unanswered) and say so.
            Ok(other) => tracing::warn!(?other, "unexpected message from the gateway"),
            Err(error) => return error.to_string(),
        }
    }
    "the inbox ended".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_is_drawn_between_half_and_all_of_it_and_differs_between_servers() {
        let backoff = Duration::from_millis(800);
        let waits: HashSet<Duration> = (0..200)
            .map(|i| {
                let server = ServerId::parse(&format!("f{i}")).expect("a valid server id");
                let wait = jittered(backoff, &server, 1, 3);
                assert!(wait >= backoff / 2 && wait < backoff, "{wait:?}");
                wait
            })
            .collect();
        assert!(
            waits.len() > 150,
            "spread over the site: {} distinct",
            waits.len()
        );
        let one = ServerId::parse("f1").expect("a valid server id");
        assert_eq!(jittered(backoff, &one, 1, 3), jittered(backoff, &one, 1, 3));
        assert_ne!(jittered(backoff, &one, 1, 3), jittered(backoff, &one, 1, 4));
    }
}
