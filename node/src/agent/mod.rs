//! `leasehold node run`: loads the node's identity, rebuilds its state from the event log
//! (reaping any orphaned workload, or adopting the one its predecessor in this process
//! handed over), starts the actors on an actix system over a tokio multi-thread runtime,
//! stops the workload on SIGTERM or SIGINT, and replaces itself in place on SIGUSR2.

pub mod recover;
mod replace;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use leasehold_federation::addr::HostPort;
use leasehold_federation::ids::ServerId;
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::certs::{CertError, load_node_identity};
use leasehold_federation::transport::endpoint::{Endpoint, EndpointError, Limits};
use leasehold_federation::transport::identity::PeerName;
use tokio::signal::unix::{SignalKind, signal};

use crate::actors::Server;
use crate::actors::link::{LinkTarget, Unwatched, run_link};
use crate::actors::messages::{Adopt, GetNodeStatus, Shutdown};
use crate::actors::server::ProcessWorkloads;
use crate::driver::{Driver, DriverSetup, PID_FILE};
use crate::event_log::{
    EVENT_LOG_FILE, EventKind, EventLog, EventLogError, Rotation, StopReason, read_log,
};
use crate::metrics::NodeMetrics;
use crate::model::NodeModel;

/// Until the gateway says otherwise at registration.
const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_millis(500);
/// How long shutdown waits for the workload to stop before exiting anyway (the guard
/// then kills it as the agent goes).
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The management address of every gateway of the site (one active, the others
    /// standby), in any order: IP literals, or DNS names resolved at every connect. Not
    /// empty; the agent registers with the one that accepts.
    pub gateways: Vec<HostPort>,
    pub server: ServerId,
    pub certs: PathBuf,
    pub work: PathBuf,
    pub start_timeout: Duration,
    /// A machine's boot claim from its kernel command line (`--boot-args`).
    pub boot: Option<leasehold_federation::wire::node::BootClaim>,
    /// Where to serve the agent's `/metrics`; `None`: not served.
    pub metrics_addr: Option<SocketAddr>,
    /// When the event log rotates, and how many rotated files it keeps.
    pub event_log: Rotation,
    /// Speak only this version of the management protocol; `None`: every version this
    /// build speaks, and the gateway picks the newest it speaks too.
    pub node_protocol: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no gateway to register with: give --gateway at least once")]
    NoGateway,
    #[error("--gateway {0} is given twice; name each gateway of the site once")]
    GatewayTwice(HostPort),
    #[error(
        "--gateway {first} is an IPv{first_family} address and --gateway {other} an IPv{other_family} one: the agent dials every gateway from one socket, of one family"
    )]
    MixedFamilies {
        first: HostPort,
        first_family: u8,
        other: HostPort,
        other_family: u8,
    },
    #[error("cannot load the node's certificate: {0}")]
    Identity(#[from] CertError),
    #[error("the certificate for {server} names {name}, not a node")]
    NotANode { server: ServerId, name: String },
    #[error("cannot use the work dir {path}: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find the agent's own executable: {0}")]
    Executable(#[source] std::io::Error),
    #[error(transparent)]
    EventLog(#[from] EventLogError),
    #[error("cannot open the management endpoint: {0}")]
    Endpoint(#[from] EndpointError),
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error("cannot watch the node's certificates: {0}")]
    WatchCertificates(#[from] leasehold_watch::WatchError),
    #[error("metrics on {addr}: {source} (is another process using it?)")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until SIGTERM or SIGINT; returns once the workload is stopped.
pub fn run_agent(options: AgentOptions) -> Result<(), AgentError> {
    check_gateways(&options.gateways)?;
    let identity = load_node_identity(&options.certs, &options.server)?;
    let site = match &identity.name {
        PeerName::Node { site, .. } => site.clone(),
        other => {
            return Err(AgentError::NotANode {
                server: options.server.clone(),
                name: other.to_string(),
            });
        }
    };
    let work = absolute_work_dir(&options.work)?;
    let log_path = work.join(EVENT_LOG_FILE);
    // Across rotated files: the newest begins with a checkpoint of the older ones.
    let recovered = recover::recover(&read_log(&work)?);
    let log = EventLog::open_rotating(
        &log_path,
        options.server.clone(),
        recovered.next_seq,
        recovered.state.clone(),
        options.event_log,
    )?;
    let agent_exe = std::env::current_exe().map_err(AgentError::Executable)?;
    tracing::info!(server = %options.server, %site, work = %work.display(), highest_epoch = %recovered.highest_epoch, "node agent starting");
    // A predecessor in this process (SIGUSR2) may have left its workload to adopt.
    let adopted = match crate::handover::take(&work) {
        Ok(Some(handover)) => match replace::adoptable(&handover, recovered.orphan.as_ref()) {
            Ok(()) => Some(handover),
            Err(why) => {
                tracing::warn!("a handover was left, and is not taken: {why}");
                None
            }
        },
        Ok(None) => None,
        Err(why) => {
            tracing::warn!("{why}");
            None
        }
    };
    if adopted.is_none() {
        // Left by a replacement that failed: no guard may act on it.
        crate::handover::clear_deadline(&work);
    }

    let runtime = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            // No runtime means no agent; nothing to fall back to.
            .expect("tokio runtime")
    });
    runtime.block_on(async move {
        log.append_synced(EventKind::AgentStarted {
            agent_pid: std::process::id(),
        })
        .await;
        if let Some(orphan) = recovered.orphan.as_ref().filter(|_| adopted.is_none()) {
            let pid_file_pid = std::fs::read_to_string(work.join(PID_FILE))
                .ok()
                .and_then(|text| text.trim().parse().ok());
            let alive = recover::reap(orphan, pid_file_pid).await;
            tracing::warn!(account = %orphan.account, epoch = %orphan.epoch, alive, "reaped the workload of a previous agent");
            log.append_synced(EventKind::WorkloadStopped {
                account: orphan.account.clone(),
                epoch: orphan.epoch,
                pid: orphan.pid.or(pid_file_pid),
                cause: StopReason::OrphanReaped,
                exit_code: None,
                reaped_alive: Some(alive),
            })
            .await;
        }
        // The socket's family follows the first gateway's address; a name is resolved until
        // it resolves, and an IPv4 address is preferred when it has both.
        let ipv4 = gateway_family(&options.gateways[0]).await;
        // The quinn endpoint must live inside this runtime, for the life of the process.
        let bind: SocketAddr = if ipv4 {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut limits = Limits {
            only_version: options.node_protocol,
            ..Limits::management()
        };
        if options.gateways.len() > 1 {
            // A site of standby gateways: when the active one dies, the one that takes
            // over listens on another address, so no stateless reset tells this agent its
            // connection is gone; only the idle timeout does, and it must come well inside
            // the lease (docs/ha.md, "The timing").
            limits.idle_timeout = SEVERAL_GATEWAYS_IDLE;
            limits.keep_alive = SEVERAL_GATEWAYS_IDLE / 4;
        }
        let endpoint = Arc::new(Endpoint::dial_only(bind, &identity, Alpn::Node, limits)?);
        let mut terminate = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;

        let setup = DriverSetup {
            work: work.clone(),
            server: options.server.clone(),
            agent_exe: agent_exe.clone(),
            log: log.clone(),
            last_account: recovered.last_account.clone(),
            last_data_dir: recovered.last_data_dir.clone(),
        };
        #[allow(unused_mut)] // planted only in debug builds
        let mut model = NodeModel::new(
            options.server.clone(),
            recovered.highest_epoch,
            DEFAULT_RENEW_INTERVAL,
        );
        // A test-only build switch (tests/chaos.rs): debug builds honour it, release
        // builds do not contain it.
        #[cfg(debug_assertions)]
        if std::env::var("LEASEHOLD_TEST_PLANT").as_deref() == Ok("skip-epoch-check") {
            tracing::warn!(
                "TEST SWITCH LEASEHOLD_TEST_PLANT=skip-epoch-check: this node accepts pointers with old epochs, which is unsafe"
            );
            model.plant_skip_epoch_check();
        }
        let metrics = Arc::new(NodeMetrics::new(&site, &options.server));
        let server_log = log.clone();
        let server = Server::<ProcessWorkloads>::create(|ctx| {
            let driver = Driver::spawn(setup, actix::AsyncContext::address(ctx).recipient());
            let workloads = ProcessWorkloads::new(driver, options.start_timeout);
            Server::new(model, Some(server_log), workloads, metrics.clone())
        });
        if let Some(handover) = adopted {
            let pointer = &handover.pointer;
            log.append_synced(EventKind::WorkloadAdopted {
                account: pointer.account.clone(),
                epoch: pointer.epoch,
                pid: handover.workload_pid,
            })
            .await;
            tracing::info!(account = %pointer.account, epoch = %pointer.epoch, pid = handover.workload_pid, "adopted the workload of this agent's previous image");
            if server.send(Adopt(handover)).await.is_ok() {
                // The model stops it at its lease's end from now on.
                crate::handover::clear_deadline(&work);
            }
        }
        let metrics_server = match options.metrics_addr {
            Some(addr) => Some(
                serve_metrics(addr, metrics, server.clone())
                    .map_err(|source| AgentError::Metrics { addr, source })?,
            ),
            None => None,
        };
        let target = LinkTarget {
            gateways: options.gateways.clone(),
            ipv4,
            site,
            server: options.server.clone(),
            boot: options.boot.clone(),
            presents: None,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let watch = Arc::new(Unwatched);
        tokio::spawn(run_link(endpoint.clone(), target, server.clone(), watch));
        reload_certificates(
            options.certs.clone(),
            options.server.clone(),
            endpoint.clone(),
        )?;

        let mut replace = signal(SignalKind::user_defined2()).map_err(AgentError::Signals)?;
        loop {
            tokio::select! {
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM");
                    break;
                }
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT");
                    break;
                }
                _ = replace.recv() => {
                    let why = replace::replace_in_place(&server, &log, &work, &agent_exe).await;
                    tracing::warn!("SIGUSR2: this agent was not replaced: {why}");
                }
            }
        }
        let (done, stopped) = tokio::sync::oneshot::channel();
        server.do_send(Shutdown { done });
        if tokio::time::timeout(SHUTDOWN_LIMIT, stopped).await.is_err() {
            tracing::error!("the workload did not stop in time; exiting (its guard kills it)");
        }
        endpoint.close("agent shutting down");
        if let Some(handle) = metrics_server {
            handle.stop(false).await;
        }
        actix::System::current().stop();
        Ok(())
    })
}

/// Serves `GET /metrics` on `addr` until the agent stops; answers nothing else.
fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<NodeMetrics>,
    server: actix::Addr<Server>,
) -> std::io::Result<actix_web::dev::ServerHandle> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let http = HttpServer::new(move || {
        let (metrics, server) = (metrics.clone(), server.clone());
        App::new().service(
            web::resource("/metrics")
                .route(web::get().to(move || {
                    let (metrics, server) = (metrics.clone(), server.clone());
                    async move {
                        let Ok(status) = server.send(GetNodeStatus).await else {
                            return HttpResponse::ServiceUnavailable()
                                .body("the agent is shutting down\n");
                        };
                        match metrics.encode(&status) {
                            Ok(text) => HttpResponse::Ok()
                                .content_type("text/plain; version=0.0.4; charset=utf-8")
                                .body(text),
                            Err(error) => HttpResponse::InternalServerError()
                                .body(format!("cannot encode the metrics: {error}\n")),
                        }
                    }
                }))
                .default_service(web::to(|| async {
                    HttpResponse::MethodNotAllowed()
                        .insert_header(("Allow", "GET"))
                        .finish()
                })),
        )
    })
    .workers(1)
    .disable_signals()
    .client_request_timeout(Duration::from_secs(5))
    .keep_alive(Duration::from_secs(15))
    .bind(addr)?
    .run();
    let handle = http.handle();
    actix::spawn(async move {
        if let Err(error) = http.await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    tracing::info!(%addr, "serving /metrics");
    Ok(handle)
}

/// Creates the work dir and makes it absolute, since workloads run in other directories.
fn absolute_work_dir(work: &Path) -> Result<PathBuf, AgentError> {
    let failed = |source| AgentError::WorkDir {
        path: work.to_owned(),
        source,
    };
    std::fs::create_dir_all(work).map_err(failed)?;
    std::fs::canonicalize(work).map_err(failed)
}

/// Refuses a list of gateways that is empty, names one twice, or mixes IPv4 and IPv6
/// literals: every gateway is dialled from one socket, whose family is the first one's (a
/// name's family is known only once it resolves; an address of the other family is then
/// skipped at every attempt, and logged).
fn check_gateways(gateways: &[HostPort]) -> Result<(), AgentError> {
    let family = |address: SocketAddr| if address.is_ipv4() { 4 } else { 6 };
    if gateways.is_empty() {
        return Err(AgentError::NoGateway);
    }
    let mut first_literal: Option<(&HostPort, u8)> = None;
    for (index, gateway) in gateways.iter().enumerate() {
        if gateways[..index].contains(gateway) {
            return Err(AgentError::GatewayTwice(gateway.clone()));
        }
        let Some(address) = gateway.socket_addr() else {
            continue;
        };
        match first_literal {
            None => first_literal = Some((gateway, family(address))),
            Some((first, first_family)) if first_family != family(address) => {
                return Err(AgentError::MixedFamilies {
                    first: first.clone(),
                    first_family,
                    other: gateway.clone(),
                    other_family: family(address),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The idle timeout of the management connection when the agent has several gateways.
const SEVERAL_GATEWAYS_IDLE: Duration = Duration::from_secs(2);

/// Whether to dial the gateway over IPv4: resolves its address, again with backoff while it
/// does not resolve (logged), and prefers IPv4 when it has both.
async fn gateway_family(gateway: &HostPort) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        match gateway.resolve().await {
            Ok(addresses) => return addresses.iter().any(SocketAddr::is_ipv4),
            Err(error) => {
                tracing::warn!(%error, "cannot resolve the gateway's address; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// On SIGHUP and when its certificate file or `ca.crt` changes, reads the node's
/// certificate, key and CA again and presents them from the next connection to the gateway
/// on; the connection that is up stays (docs/node.md). A pair that does not load is
/// refused, and the old one kept.
fn reload_certificates(
    certs: std::path::PathBuf,
    server: ServerId,
    endpoint: Arc<Endpoint>,
) -> Result<(), leasehold_watch::WatchError> {
    let files = [
        certs.join("nodes").join(format!("{server}.crt")),
        certs.join("ca.crt"),
    ];
    leasehold_watch::watch_or_sighup(&files, move |why| {
        match load_node_identity(&certs, &server) {
            Ok(identity) => match endpoint.set_identity(&identity) {
                Ok(()) => tracing::info!(
                    trigger = why,
                    "certificates read again; the next connection presents them"
                ),
                Err(error) => {
                    tracing::warn!(trigger = why, %error, "certificates refused; keeping the old ones")
                }
            },
            Err(error) => {
                tracing::warn!(trigger = why, %error, "certificates refused; keeping the old ones")
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateways(list: &[&str]) -> Vec<HostPort> {
        list.iter()
            .map(|gateway| gateway.parse().unwrap())
            .collect()
    }

    #[test]
    fn one_gateway_or_several_of_one_family_are_taken() {
        for list in [
            &["127.0.0.1:7301"][..],
            &["gw-1.example.net:7301"],
            &["127.0.0.1:7301", "127.0.0.1:7302", "10.0.0.3:7301"],
            &["[::1]:7301", "[2001:db8::2]:7301"],
            // A name's family is known only when it resolves.
            &["gw-1.example.net:7301", "[::1]:7302"],
        ] {
            assert!(check_gateways(&gateways(list)).is_ok(), "{list:?}");
        }
    }

    #[test]
    fn an_empty_list_a_gateway_given_twice_and_mixed_families_are_refused() {
        assert!(matches!(check_gateways(&[]), Err(AgentError::NoGateway)));
        let twice = check_gateways(&gateways(&[
            "gw-1.example.net:7301",
            "10.0.0.2:7301",
            "gw-1.example.net:7301",
        ]))
        .unwrap_err();
        assert_eq!(
            twice.to_string(),
            "--gateway gw-1.example.net:7301 is given twice; name each gateway of the site once"
        );
        let mixed = check_gateways(&gateways(&[
            "gw-1.example.net:7301",
            "127.0.0.1:7301",
            "127.0.0.2:7301",
            "[::1]:7302",
        ]))
        .unwrap_err();
        assert_eq!(
            mixed.to_string(),
            "--gateway 127.0.0.1:7301 is an IPv4 address and --gateway [::1]:7302 an IPv6 one: the agent dials every gateway from one socket, of one family"
        );
    }
}
