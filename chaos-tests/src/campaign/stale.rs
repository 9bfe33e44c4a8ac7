//! A stand-in for a stopped gateway that hands one node an old grant again: it listens on
//! the gateway's management address with the site's own certificate (as a gateway
//! restarted from an old backup, or a delayed duplicate of an old command, would reach the
//! node), accepts the node's registration, and sends `ApplyPointer` under the newest epoch
//! the node reports, for another account. A correct node refuses it (S-2: an epoch not
//! newer than one applied); a node that accepts it has granted one (server, epoch) to two
//! accounts, which the node's event log shows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_federation::ids::{AccountId, ServerId, SiteId};
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::certs::load_site_identity;
use leasehold_federation::transport::endpoint::{Endpoint, Limits};
use leasehold_federation::transport::identity::PeerPolicy;
use leasehold_federation::wire::common::{DataRef, InitPointer, Software};
use leasehold_federation::wire::node::{ApplyPointer, PointerApplication, Registration};
use leasehold_federation::wire::{Inbound, InboundRequest};

/// What the stand-in saw and did, for the report.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    /// One line per event: registration, the replay and the node's answer.
    pub log: Vec<String>,
}

/// The stand-in; it stops listening when dropped (or [`StaleGrant::stop`]).
pub struct StaleGrant {
    runtime: Option<tokio::runtime::Runtime>,
    endpoint: Arc<Endpoint>,
    replayed: Arc<Mutex<Replayed>>,
}

/// Who the stand-in plays and what it replays.
pub struct Stand {
    pub site: SiteId,
    pub server: ServerId,
    pub management: SocketAddr,
    /// The account the replayed grant names (not the one the node serves).
    pub account: AccountId,
    pub timings: (u64, u64, u64),
}

impl StaleGrant {
    /// Listens on `stand.management` (the site's gateway must have exited) with the
    /// site's certificate from `certs`.
    pub fn start(certs: &Path, stand: Stand) -> Result<StaleGrant, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start a runtime: {error}"))?;
        let identity = load_site_identity(certs, &stand.site).map_err(|e| e.to_string())?;
        let policy = PeerPolicy::Nodes {
            site: stand.site.clone(),
            servers: BTreeSet::from([stand.server.clone()]),
        };
        // quinn's driver runs on the runtime that creates the endpoint (notes).
        let endpoint = runtime.block_on(async {
            Endpoint::listen(
                stand.management,
                &identity,
                Alpn::Node,
                policy,
                Limits::default(),
            )
        });
        let endpoint = Arc::new(endpoint.map_err(|e| format!("cannot listen: {e}"))?);
        let replayed = Arc::new(Mutex::new(Replayed::default()));
        runtime.spawn(serve(endpoint.clone(), stand, replayed.clone()));
        Ok(StaleGrant {
            runtime: Some(runtime),
            endpoint,
            replayed,
        })
    }

    /// Stops listening and returns what happened.
    pub fn stop(mut self) -> Replayed {
        self.shut();
        self.replayed
            .lock()
            .map(|replayed| replayed.clone())
            .unwrap_or_default()
    }

    fn shut(&mut self) {
        self.endpoint.close("the stand-in steps aside");
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_millis(500));
        }
    }
}

impl Drop for StaleGrant {
    fn drop(&mut self) {
        self.shut();
    }
}

async fn serve(endpoint: Arc<Endpoint>, stand: Stand, replayed: Arc<Mutex<Replayed>>) {
    let note = |line: String| {
        if let Ok(mut replayed) = replayed.lock() {
            replayed.log.push(line);
        }
    };
    while let Some(handshake) = endpoint.accept().await {
        let Ok((connection, mut inbox)) = handshake.finish().await else {
            continue;
        };
        // The node registers first; everything else it sends is left unanswered, so it
        // never gets a lease from the stand-in.
        while let Some(Ok(message)) = inbox.next().await {
            let Inbound::Request(InboundRequest::RegisterServer(request, reply)) = message else {
                continue;
            };
            note(format!(
                "{} registered with highest epoch {} (running {:?})",
                request.server,
                request.highest_epoch,
                request
                    .running
                    .as_ref()
                    .map(|r| (r.account.to_string(), r.epoch.value()))
            ));
            let (heartbeat_interval_ms, lease_ttl_ms, renew_interval_ms) = stand.timings;
            let accepted = Registration::Accepted {
                site: stand.site.clone(),
                heartbeat_interval_ms,
                lease_ttl_ms,
                renew_interval_ms,
                service_addr: "127.0.0.1:9".to_owned(),
                generation: None,
            };
            if reply.send(&accepted).await.is_err() {
                break;
            }
            let replay = ApplyPointer {
                server: request.server.clone(),
                pointer: InitPointer {
                    account: stand.account.clone(),
                    software: Software {
                        label: "replayed".to_owned(),
                        command: "true".to_owned(),
                        args: Vec::new(),
                        env: BTreeMap::new(),
                        health_path: None,
                        metrics_path: None,
                        load_metric: None,
                        stop_timeout_ms: 1000,
                    },
                    data: DataRef {
                        dir: format!("data/{}", stand.account),
                    },
                    epoch: request.highest_epoch,
                    secrets: Default::default(),
                },
                generation: None,
            };
            let answer = connection.request(&replay).await;
            note(match answer {
                Ok(PointerApplication::Accepted { epoch }) => format!(
                    "replayed {epoch} for {} to {}: ACCEPTED",
                    stand.account, request.server
                ),
                Ok(PointerApplication::Refused(refusal)) => format!(
                    "replayed {} for {} to {}: refused ({refusal:?})",
                    request.highest_epoch, stand.account, request.server
                ),
                Err(error) => format!("replayed {}: no answer ({error})", request.highest_epoch),
            });
        }
    }
}
