//! The management channel's connection loop: dial the gateway, register, hand the
//! gateway's commands to the `Server` actor, and on any loss reconnect with backoff
//! (100 ms doubling to 2 s). The workload keeps running meanwhile, as long as its lease
//! is valid: the lease, not the connection, decides.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use leasehold_federation::addr::HostPort;
use leasehold_federation::ids::{ServerId, SiteId};
use leasehold_federation::transport::connection::{Connection, Inbox};
use leasehold_federation::transport::endpoint::Endpoint;
use leasehold_federation::transport::identity::PeerName;
use leasehold_federation::wire::node::{RegisterServer, Registration};
use leasehold_federation::wire::{Inbound, InboundOneWay, InboundRequest};

use super::Server;
use super::messages::{
    ApplyPointerReceived, Connected, DescribeForRegistration, Disconnected, PulseAnswered,
    StopWorkloadReceived,
};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and who the gateway is.
#[derive(Debug, Clone)]
pub struct LinkTarget {
    /// An IP literal or a DNS name, resolved at every connect.
    pub gateway: HostPort,
    /// Dial only IPv4 addresses (the endpoint is bound to an IPv4 socket), or only IPv6.
    pub ipv4: bool,
    pub site: SiteId,
    pub server: ServerId,
    /// A machine's boot claim, sent with every registration.
    pub boot: Option<leasehold_federation::wire::node::BootClaim>,
}

/// Runs until the `Server` actor is gone.
pub async fn run_link(endpoint: Arc<Endpoint>, target: LinkTarget, server: Addr<Server>) {
    let mut backoff = BACKOFF_FIRST;
    let mut generation = 0;
    loop {
        match register(&endpoint, &target, &server).await {
            Ok(Some((connection, inbox, accepted))) => {
                backoff = BACKOFF_FIRST;
                generation += 1;
                let protocol = connection.version();
                tracing::info!(gateway = %target.gateway, site = %target.site, protocol, "registered");
                server.do_send(Connected {
                    generation,
                    connection,
                    heartbeat_interval: accepted.heartbeat_interval,
                    renew_interval: accepted.renew_interval,
                    service_addr: accepted.service_addr,
                });
                let ended = serve(inbox, &server).await;
                tracing::warn!(reason = %ended, "management channel lost; reconnecting");
                server.do_send(Disconnected { generation });
            }
            Ok(None) => {}
            Err(Gone) => return,
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The `Server` actor has stopped.
struct Gone;

struct Accepted {
    heartbeat_interval: Duration,
    renew_interval: Duration,
    service_addr: String,
}

/// One attempt: connect and register. `Ok(None)` is a failure worth retrying (logged).
async fn register(
    endpoint: &Endpoint,
    target: &LinkTarget,
    server: &Addr<Server>,
) -> Result<Option<(Connection, Inbox, Accepted)>, Gone> {
    let expected = PeerName::Site(target.site.clone());
    // Resolved again at every connect: a gateway whose address changed is found there.
    let addresses = match target.gateway.resolve().await {
        Ok(addresses) => addresses,
        Err(error) => {
            tracing::warn!(%error, "cannot resolve the gateway's address");
            return Ok(None);
        }
    };
    let mut reached = None;
    for address in addresses
        .into_iter()
        .filter(|address| address.is_ipv4() == target.ipv4)
    {
        match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect(address, &expected)).await {
            Ok(Ok(pair)) => {
                reached = Some(pair);
                break;
            }
            Ok(Err(error)) => tracing::warn!(%address, %error, "cannot reach the gateway"),
            Err(_) => {
                tracing::warn!(gateway = %target.gateway, %address, "no handshake within {CONNECT_TIMEOUT:?}")
            }
        }
    }
    let Some((connection, inbox)) = reached else {
        return Ok(None);
    };
    let (running, highest_epoch) = server
        .send(DescribeForRegistration)
        .await
        .map_err(|_| Gone)?;
    let request = RegisterServer {
        server: target.server.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
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
        }) => {
            tracing::debug!(%site, heartbeat_interval_ms, lease_ttl_ms, renew_interval_ms, %service_addr, "registration accepted");
            Ok(Some((
                connection,
                inbox,
                Accepted {
                    // Zero would be a busy loop; a gateway never means that.
                    heartbeat_interval: Duration::from_millis(heartbeat_interval_ms.max(10)),
                    renew_interval: Duration::from_millis(renew_interval_ms.max(10)),
                    service_addr,
                },
            )))
        }
        Ok(Registration::Refused(refusal)) => {
            tracing::warn!(%refusal, "the gateway refused registration");
            connection.close(0, "registration refused");
            Ok(None)
        }
        Err(error) => {
            // With TLS 1.3 a refused client certificate shows up here, on first use.
            tracing::warn!(%error, "registration failed (refused certificate?)");
            connection.close(0, "registration failed");
            Ok(None)
        }
    }
}

/// Hands the gateway's commands to the actor until the connection ends; returns why.
async fn serve(mut inbox: Inbox, server: &Addr<Server>) -> String {
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
