//! This site's side of the federation: the federation listener, one Peer actor per peer
//! in the config, and the account catalogue this site announces.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use leasehold_federation::ids::SiteId;
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::certs::Identity;
use leasehold_federation::transport::endpoint::{Endpoint, EndpointError, Limits};
use leasehold_federation::transport::identity::{PeerName, PeerPolicy};
use leasehold_federation::wire::site::{AccountCatalogue, AccountSpec};

use crate::actors::peer::{DialledIn, Local, Peer};
use crate::config::SiteConfig;
use crate::model::site::{data_of, software_of};

/// The accounts this site homes, as its peers need them to run a server for one. The
/// version is the wall-clock millisecond the config was loaded, so it grows across
/// restarts and reloads and a peer keeps the newest.
pub fn catalogue(config: &SiteConfig) -> AccountCatalogue {
    let version = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    AccountCatalogue {
        site: config.site.name.clone(),
        version,
        accounts: config
            .accounts
            .iter()
            .map(|account| AccountSpec {
                name: account.name.clone(),
                home: config.site.name.clone(),
                min_servers: account.min_servers,
                max_servers: account.max_servers,
                priority: account.priority,
                target_load: account.target_load,
                failover: account.failover.clone(),
                software: software_of(account, config.timings.workload_stop_timeout),
                data: data_of(account),
            })
            .collect(),
    }
}

/// Listens on `federation_addr` for the configured peers only, starts a Peer actor per
/// peer, and hands each peer's inbound connections to its actor.
pub fn start(
    config: &SiteConfig,
    identity: &Identity,
    started: Instant,
) -> Result<Vec<Addr<Peer>>, EndpointError> {
    let policy = PeerPolicy::Sites(config.peers.iter().map(|peer| peer.name.clone()).collect());
    let endpoint = Arc::new(Endpoint::listen(
        config.site.federation_addr,
        identity,
        Alpn::Site,
        policy,
        Limits::default(),
    )?);
    let local = Local {
        site: config.site.name.clone(),
        endpoint: endpoint.clone(),
        catalogue: Arc::new(catalogue(config)),
        ping_interval: config.timings.heartbeat_interval,
        misses: config.timings.heartbeat_misses_before_failed,
        started,
    };
    let peers: HashMap<SiteId, Addr<Peer>> = config
        .peers
        .iter()
        .map(|peer| {
            let actor = Peer::new(peer.name.clone(), peer.addr, local.clone()).start();
            (peer.name.clone(), actor)
        })
        .collect();
    let addresses = peers.values().cloned().collect();
    tokio::spawn(accept_peers(endpoint, peers));
    Ok(addresses)
}

async fn accept_peers(endpoint: Arc<Endpoint>, peers: HashMap<SiteId, Addr<Peer>>) {
    while let Some(handshake) = endpoint.accept().await {
        let peers = peers.clone();
        tokio::spawn(async move {
            // A refusal (foreign CA, a site the config does not list) is logged by `finish`.
            let Ok((connection, inbox)) = handshake.finish().await else {
                return;
            };
            let PeerName::Site(site) = connection.peer().clone() else {
                return;
            };
            if let Some(peer) = peers.get(&site) {
                peer.do_send(DialledIn { connection, inbox });
            }
        });
    }
}
