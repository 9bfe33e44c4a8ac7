//! This site's side of the federation: the federation listener, one Peer actor per peer
//! in the config, and the account catalogue this site announces.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use actix::prelude::*;
use leasehold_federation::addr::HostPort;
use leasehold_federation::ids::SiteId;
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::certs::Identity;
use leasehold_federation::transport::endpoint::{Endpoint, EndpointError, Limits};
use leasehold_federation::transport::identity::{PeerName, PeerPolicy};
use leasehold_federation::wire::site::AccountCatalogue;

use crate::actors::peer::{Announce, DialledIn, Leave, Local, Peer};
use crate::config::SiteConfig;
use crate::model::site::account_spec;
use crate::peer_book::PeerBook;

/// The accounts this site homes, as its peers need them to run a server for one. The
/// version is the wall-clock millisecond the config was loaded, so it grows across
/// restarts and reloads and a peer keeps the newest.
pub fn catalogue(config: &SiteConfig) -> AccountCatalogue {
    let version = crate::actors::wall_ms();
    AccountCatalogue {
        site: config.site.name.clone(),
        version,
        accounts: config
            .accounts
            .iter()
            .map(|account| {
                account_spec(
                    &config.site.name,
                    account,
                    config.timings.workload_stop_timeout,
                )
            })
            .collect(),
    }
}

/// A peer's `[[peer]] addr` and `other_addrs`.
type PeerAddrs = (HostPort, Vec<HostPort>);

/// The Peer actors of this site by peer name, shared by the accept loop, the admin API and
/// the status page; a live config edit changes it.
pub type PeerDirectory = Arc<RwLock<BTreeMap<SiteId, Addr<Peer>>>>;

/// This site's side of the federation, kept so that a config edit can add, remove and
/// re-address peers and announce a new catalogue without a restart.
pub struct Federation {
    endpoint: Arc<Endpoint>,
    local: Mutex<Local>,
    peers: PeerDirectory,
    addrs: Mutex<BTreeMap<SiteId, PeerAddrs>>,
    /// Where the peers it keeps are, across restarts (see [`PeerBook`]).
    book: Arc<PeerBook>,
}

impl Federation {
    /// Closes every connection with the peers (the gateway is exiting).
    pub fn close(&self, reason: &str) {
        self.endpoint.close(reason);
    }

    /// The federation listener (and dialler), whose certificate a renewal replaces.
    pub fn endpoint(&self) -> Arc<Endpoint> {
        self.endpoint.clone()
    }

    /// The Peer actor of `site`, if it is a peer now.
    pub fn peer(&self, site: &SiteId) -> Option<Addr<Peer>> {
        match self.peers.read() {
            Ok(peers) => peers.get(site).cloned(),
            Err(poisoned) => poisoned.into_inner().get(site).cloned(),
        }
    }

    /// The master, once started: Peers hand it loans and liveness from then on.
    pub fn attach(&self, master: Addr<crate::actors::master::SiteMaster>) {
        let _ = lock(&self.local).master.set(master);
    }

    /// The peers now, in name order.
    pub fn peers(&self) -> Vec<Addr<Peer>> {
        match self.peers.read() {
            Ok(peers) => peers.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        }
    }

    pub fn directory(&self) -> PeerDirectory {
        self.peers.clone()
    }

    /// Applies an accepted config edit (from inside the actix system): peers added are
    /// dialled, removed ones left, re-addressed ones dialled at their new address; the
    /// listener admits exactly the new peers; every peer gets the new catalogue. A site
    /// removed from the config but in `keep` (the ownership members still counted, until
    /// the membership change that removes it is done: docs/ownership.md) stays, at the
    /// address it had, in this run or (after a restart) in the peer book.
    pub fn apply(&self, config: &SiteConfig, keep: &[SiteId]) {
        let catalogue = Arc::new(catalogue(config));
        let local = {
            let mut local = lock(&self.local);
            local.catalogue = catalogue.clone();
            local.clone()
        };
        let mut addrs = lock(&self.addrs);
        let mut peers = match self.peers.write() {
            Ok(peers) => peers,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut wanted: BTreeMap<SiteId, PeerAddrs> = config
            .peers
            .iter()
            .map(|peer| {
                (
                    peer.name.clone(),
                    (peer.addr.clone(), peer.other_addrs.clone()),
                )
            })
            .collect();
        for site in keep {
            if *site != config.site.name
                && !wanted.contains_key(site)
                && let Some(addrs) = addrs
                    .get(site)
                    .cloned()
                    .or_else(|| self.book.get(site).map(|addr| (addr, Vec::new())))
            {
                wanted.insert(site.clone(), addrs);
            }
        }
        // The book keeps each peer's first address: enough to reach a site being removed.
        let book: BTreeMap<SiteId, HostPort> = wanted
            .iter()
            .map(|(site, (addr, _))| (site.clone(), addr.clone()))
            .collect();
        if self.book.set(book) {
            // The file is written on the blocking pool, never on an actor's thread.
            let book = self.book.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(error) = book.save() {
                    tracing::warn!(%error, "a gateway restarted in the middle of a membership change may not reach a site it removes");
                }
            });
        }
        self.endpoint
            .set_policy(PeerPolicy::Sites(wanted.keys().cloned().collect()));
        let gone: Vec<SiteId> = addrs
            .iter()
            .filter(|(name, addr)| wanted.get(*name) != Some(*addr))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(peer) = peers.remove(&name) {
                peer.do_send(Leave);
            }
            addrs.remove(&name);
            tracing::info!(peer = %name, "peer removed from the config");
        }
        for (name, peer_addrs) in &wanted {
            match peers.get(name) {
                Some(peer) => peer.do_send(Announce(catalogue.clone())),
                None => {
                    let peer = Peer::new(name.clone(), peer_addrs.clone(), local.clone()).start();
                    peers.insert(name.clone(), peer);
                    addrs.insert(name.clone(), peer_addrs.clone());
                    tracing::info!(peer = %name, addr = %peer_addrs.0, "peer added by a config edit");
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn policy(config: &SiteConfig) -> PeerPolicy {
    PeerPolicy::Sites(config.peers.iter().map(|peer| peer.name.clone()).collect())
}

/// Listens on `federation_addr` for the configured peers only. A standby gateway refuses
/// them on it (docs/ha.md) until it acts and [`start`]s the federation on it.
pub fn listen(config: &SiteConfig, identity: &Identity) -> Result<Arc<Endpoint>, EndpointError> {
    Ok(Arc::new(Endpoint::listen(
        config.site.federation_addr,
        identity,
        Alpn::Site,
        policy(config),
        Limits::default(),
    )?))
}

/// Starts a Peer actor per peer, and hands each peer's inbound connections on `endpoint`
/// (from [`listen`]) to its actor.
pub fn start(
    config: &SiteConfig,
    (endpoint, generation): (Arc<Endpoint>, Option<u64>),
    started: Instant,
    book: PeerBook,
) -> Arc<Federation> {
    let local = Local {
        site: config.site.name.clone(),
        endpoint: endpoint.clone(),
        catalogue: Arc::new(catalogue(config)),
        ping_interval: config.timings.heartbeat_interval,
        misses: config.timings.heartbeat_misses_before_failed,
        started,
        generation,
        master: Arc::new(OnceLock::new()),
    };
    let mut peers = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for peer in &config.peers {
        let peer_addrs = (peer.addr.clone(), peer.other_addrs.clone());
        let actor = Peer::new(peer.name.clone(), peer_addrs.clone(), local.clone()).start();
        peers.insert(peer.name.clone(), actor);
        addrs.insert(peer.name.clone(), peer_addrs);
    }
    let directory: PeerDirectory = Arc::new(RwLock::new(peers));
    tokio::spawn(accept_peers(endpoint.clone(), directory.clone()));
    Arc::new(Federation {
        endpoint,
        local: Mutex::new(local),
        peers: directory,
        addrs: Mutex::new(addrs),
        book: Arc::new(book),
    })
}

async fn accept_peers(endpoint: Arc<Endpoint>, peers: PeerDirectory) {
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
            let peer = match peers.read() {
                Ok(peers) => peers.get(&site).cloned(),
                Err(poisoned) => poisoned.into_inner().get(&site).cloned(),
            };
            if let Some(peer) = peer {
                peer.do_send(DialledIn { connection, inbox });
            }
        });
    }
}
