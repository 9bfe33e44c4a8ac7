//! One simulated server's management channel: dial, register, hand the gateway's commands
//! to its `Server` actor, reconnect with backoff. The same steps and timings as the node
//! agent's link (`actors::link`), but it reaches its actor through `Recipient`s of the
//! shared messages, and it tells refusals (the gateway's policy, `Registration::Refused`)
//! apart from an unreachable gateway so that the fleet can say why nothing is admitted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::Recipient;
use leasehold_federation::ids::{ServerId, SiteId};
use leasehold_federation::transport::connection::{Connection, Inbox, RequestError};
use leasehold_federation::transport::endpoint::{ConnectError, DialIdentity, Endpoint};
use leasehold_federation::transport::identity::PeerName;
use leasehold_federation::wire::node::{RegisterServer, Registration};
use leasehold_federation::wire::{Inbound, InboundOneWay, InboundRequest};

use super::stats::FleetStats;
use crate::actors::messages::{
    ApplyPointerReceived, Connected, DescribeForRegistration, Described, Disconnected,
    PulseAnswered, StopWorkloadReceived,
};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and who the gateway is, and who this simulated server is.
#[derive(Debug, Clone)]
pub struct SimLinkTarget {
    pub gateway: SocketAddr,
    pub site: SiteId,
    pub server: ServerId,
}

/// The actor's mailboxes the link uses (habit 3: recipients, not a concrete `Addr`).
#[derive(Clone)]
pub struct SimLinkPorts {
    pub connected: Recipient<Connected>,
    pub disconnected: Recipient<Disconnected>,
    pub describe: Recipient<DescribeForRegistration>,
    pub apply: Recipient<ApplyPointerReceived>,
    pub stop: Recipient<StopWorkloadReceived>,
    pub answered: Recipient<PulseAnswered>,
}

/// Runs until the actor is gone. `delay` spreads the first dials of a large fleet, so the
/// gateway is not handed a thousand handshakes in the same millisecond.
pub async fn run_sim_link(
    endpoint: Arc<Endpoint>,
    presents: DialIdentity,
    target: SimLinkTarget,
    ports: SimLinkPorts,
    stats: Arc<FleetStats>,
    delay: Duration,
) {
    tokio::time::sleep(delay).await;
    let mut backoff = BACKOFF_FIRST;
    let mut generation = 0;
    loop {
        match register(&endpoint, &presents, &target, &ports, &stats).await {
            Ok(Some((connection, inbox, accepted))) => {
                backoff = BACKOFF_FIRST;
                generation += 1;
                stats.registered(&target.server, generation == 1);
                tracing::debug!(server = %target.server, "registered");
                ports.connected.do_send(Connected {
                    generation,
                    connection,
                    heartbeat_interval: accepted.heartbeat_interval,
                    renew_interval: accepted.renew_interval,
                    service_addr: accepted.service_addr,
                    // The fleet drives a site of one gateway, which stamps none.
                    gateway_generation: None,
                });
                let ended = serve(inbox, &ports).await;
                stats.registered.fetch_sub(1, Ordering::Relaxed);
                stats.connected.fetch_sub(1, Ordering::Relaxed);
                stats.error();
                tracing::warn!(server = %target.server, reason = %ended, "management channel lost; reconnecting");
                ports.disconnected.do_send(Disconnected { generation });
            }
            Ok(None) => {}
            Err(Gone) => return,
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The actor has stopped.
struct Gone;

struct Accepted {
    heartbeat_interval: Duration,
    renew_interval: Duration,
    service_addr: String,
}

/// One attempt: connect and register. `Ok(None)` is a failure worth retrying (counted).
async fn register(
    endpoint: &Endpoint,
    presents: &DialIdentity,
    target: &SimLinkTarget,
    ports: &SimLinkPorts,
    stats: &FleetStats,
) -> Result<Option<(Connection, Inbox, Accepted)>, Gone> {
    let expected = PeerName::Site(target.site.clone());
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        endpoint.connect_as(presents, target.gateway, &expected),
    )
    .await;
    let (connection, inbox) = match connected {
        Ok(Ok(pair)) => pair,
        Ok(Err(error)) => {
            // Our own timeout (below) fires long before quinn's idle timeout, so a
            // handshake or identity error here is the gateway answering no.
            if matches!(
                error,
                ConnectError::Handshake { .. } | ConnectError::Identity { .. }
            ) {
                stats.refused(&target.server, error.to_string());
            } else {
                stats.error();
            }
            tracing::debug!(server = %target.server, %error, "cannot reach the gateway");
            return Ok(None);
        }
        Err(_) => {
            stats.error();
            tracing::debug!(server = %target.server, "no handshake within {CONNECT_TIMEOUT:?}");
            return Ok(None);
        }
    };
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let failed = |connection: Connection, why: &str| {
        stats.connected.fetch_sub(1, Ordering::Relaxed);
        connection.close(0, why);
        Ok(None)
    };
    let Described {
        running,
        highest_epoch,
        ..
    } = ports
        .describe
        .send(DescribeForRegistration)
        .await
        .map_err(|_| {
            stats.connected.fetch_sub(1, Ordering::Relaxed);
            Gone
        })?;
    let request = RegisterServer {
        server: target.server.clone(),
        agent_version: format!("{}-fleet", env!("CARGO_PKG_VERSION")),
        running,
        highest_epoch,
        boot: None,
    };
    match connection.request_within(&request, CONNECT_TIMEOUT).await {
        Ok(Registration::Accepted {
            heartbeat_interval_ms,
            renew_interval_ms,
            service_addr,
            ..
        }) => Ok(Some((
            connection,
            inbox,
            Accepted {
                // Zero would be a busy loop; a gateway never means that.
                heartbeat_interval: Duration::from_millis(heartbeat_interval_ms.max(10)),
                renew_interval: Duration::from_millis(renew_interval_ms.max(10)),
                service_addr,
            },
        ))),
        Ok(Registration::Refused(refusal)) => {
            stats.refused(&target.server, format!("registration refused: {refusal}"));
            tracing::debug!(server = %target.server, %refusal, "the gateway refused registration");
            failed(connection, "registration refused")
        }
        Err(error) => {
            // With TLS 1.3 a refused client certificate shows up here, on first use: the
            // gateway closes the connection with the policy's reason.
            match &error {
                // Lost within CONNECT_TIMEOUT, far inside the idle timeout: closed by the
                // gateway, not by silence.
                RequestError::ConnectionLost { .. } => {
                    stats.refused(&target.server, error.to_string());
                }
                _ => stats.error(),
            }
            tracing::debug!(server = %target.server, %error, "registration failed");
            failed(connection, "registration failed")
        }
    }
}

/// Hands the gateway's commands to the actor until the connection ends; returns why.
async fn serve(mut inbox: Inbox, ports: &SimLinkPorts) -> String {
    while let Some(item) = inbox.next().await {
        match item {
            // Commands are a few per workload: low rate, so `do_send` (as the agent does).
            Ok(Inbound::Request(InboundRequest::ApplyPointer(request, reply))) => {
                ports.apply.do_send(ApplyPointerReceived(request, reply));
            }
            Ok(Inbound::Request(InboundRequest::StopWorkload(request, reply))) => {
                ports.stop.do_send(StopWorkloadReceived(request, reply));
            }
            Ok(Inbound::OneWay(InboundOneWay::PulseAnswer(answer))) => {
                ports.answered.do_send(PulseAnswered(answer));
            }
            // The transport refuses kinds a gateway may not send; drop and say so.
            Ok(other) => tracing::warn!(?other, "unexpected message from the gateway"),
            Err(error) => return error.to_string(),
        }
    }
    "the inbox ended".into()
}
