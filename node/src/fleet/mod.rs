//! `leasehold fleet`: N simulated servers in one process, for scale tests and the demo.
//! Each is the node agent's own `Server` actor and link, with the real [`NodeModel`],
//! speaking the real management protocol over its own QUIC connection with its own node
//! certificate; only the workload (its start, its stop, its load) is simulated, behind the
//! actor's `Workloads` seam (D-50). See docs/fleet.md.
//!
//! - [`load`]: the synthetic load models, the census of who serves what, seeded draws.
//! - [`sim_driver`]: the simulated workloads and their driver.
//! - [`certs`]: load the node certificates, issuing missing ones when the CA key is here.
//! - [`stats`]: counters, and the process's own memory and CPU for the status line.

pub mod certs;
pub mod load;
pub mod sim_driver;
pub mod stats;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, AsyncContext};
use leasehold_federation::ids::{InvalidId, ServerId, SiteId};
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::certs::CertError;
use leasehold_federation::transport::endpoint::{Endpoint, EndpointError, Limits};
use leasehold_federation::transport::identity::PeerName;
use tokio::signal::unix::{SignalKind, signal};

use crate::actors::Server;
use crate::actors::link::{LinkTarget, run_link};
use crate::actors::messages::Shutdown;
use crate::agent::recover;
use crate::event_log::{
    EVENT_LOG_FILE, EventKind, EventLog, EventLogError, Rotation, StopReason, read_log,
};
use crate::model::NodeModel;
use load::{Census, LoadModel};
use sim_driver::{SimShared, SimWorkloads};
use stats::{FleetStats, Usage, status_line};

/// Until the gateway says otherwise at registration (as in the agent).
const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_millis(500);
/// Between the first dials of consecutive servers: 1,000 servers start within 2 s instead
/// of handing the gateway 1,000 handshakes at once.
const DIAL_SPACING: Duration = Duration::from_millis(2);
/// Simulated servers that share one endpoint (one UDP socket): each connection still
/// presents its own server's certificate, and a fleet of 20,000 stays far below the
/// open-file limits of a process.
const SERVERS_PER_SOCKET: usize = 250;
/// How often progress is printed while servers are still registering.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often a status line is printed once every server has registered.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// When every server has been refused this many times and none was ever admitted, the
/// fleet gives up: the gateway's inventory does not have these ids.
const REFUSALS_BEFORE_GIVING_UP: u32 = 3;
/// How long Ctrl-C waits for the simulated workloads to stop.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub gateway: SocketAddr,
    pub count: usize,
    pub certs: PathBuf,
    /// Server ids are `<prefix><from>` .. `<prefix><from + count - 1>`.
    pub prefix: String,
    pub from: u64,
    pub seed: u64,
    /// Simulated workload start time, around which each start is drawn.
    pub start: Duration,
    pub load: LoadModel,
    /// The site to issue missing certificates for; inferred when absent.
    pub site: Option<SiteId>,
    /// Write each server's event log to `<work>/<id>/events.jsonl`.
    pub work: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("--count must be at least 1")]
    NoServers,
    #[error("`{id}` is not a server id (from --prefix and --from): {source}")]
    BadId {
        id: String,
        #[source]
        source: InvalidId,
    },
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error(
        "{first}{}; or put the CA key at {} to have the fleet issue them",
        if *more > 0 { format!(" (and {more} more missing)") } else { String::new() },
        ca_key.display()
    )]
    MissingCertificates {
        first: String,
        more: usize,
        ca_key: PathBuf,
    },
    #[error(
        "cannot tell which site to issue node certificates for ({found} site certificates in {}/sites): pass --site",
        dir.display()
    )]
    WhichSite { dir: PathBuf, found: usize },
    #[error("the certificate of {server} names {name}, not a node")]
    NotANode { server: ServerId, name: String },
    #[error("the fleet's certificates name more than one site ({first} and {second})")]
    SitesDiffer { first: SiteId, second: SiteId },
    #[error("cannot use the work dir {path}: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    EventLog(#[from] EventLogError),
    #[error("cannot open a QUIC endpoint for {server}: {source}")]
    Endpoint {
        server: ServerId,
        // Boxed: the error type is large, and every fleet function returns `FleetError`.
        #[source]
        source: Box<EndpointError>,
    },
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(
        "the gateway refused every one of the {count} servers, each at least {REFUSALS_BEFORE_GIVING_UP} times, e.g. {example}; are --prefix and --from in its inventory?"
    )]
    AllRefused { count: usize, example: String },
}

/// The fleet's server ids.
pub fn server_ids(prefix: &str, from: u64, count: usize) -> Result<Vec<ServerId>, FleetError> {
    (0..count as u64)
        .map(|offset| {
            let id = format!("{prefix}{}", from.saturating_add(offset));
            ServerId::parse(&id).map_err(|source| FleetError::BadId { id, source })
        })
        .collect()
}

/// Runs the fleet until SIGINT or SIGTERM (then stops every simulated workload), or until
/// the gateway has refused every server.
pub fn run_fleet(options: FleetOptions) -> Result<(), FleetError> {
    if options.count == 0 {
        return Err(FleetError::NoServers);
    }
    let servers = server_ids(&options.prefix, options.from, options.count)?;
    let (identities, issued) =
        certs::load_or_issue(&options.certs, &servers, options.site.as_ref())?;
    if issued > 0 {
        println!(
            "issued {issued} node certificates in {}",
            options.certs.join("nodes").display()
        );
    }
    let site = fleet_site(&servers, &identities)?;
    let logs = match &options.work {
        Some(work) => open_logs(work, &servers)?,
        None => servers
            .iter()
            .map(|_| (leasehold_federation::ids::Epoch::NONE, None))
            .collect(),
    };
    println!(
        "fleet of {} ({} .. {}) for {site} at {}, load {:?}, seed {}",
        options.count,
        servers[0],
        servers[servers.len() - 1],
        options.gateway,
        options.load,
        options.seed
    );

    let runtime = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            // No runtime means no fleet; nothing to fall back to.
            .expect("tokio runtime")
    });
    runtime.block_on(async move {
        let before = Usage::now();
        let stats = Arc::new(FleetStats::default());
        let shared = SimShared {
            load: options.load.clone(),
            seed: options.seed,
            start: options.start,
            started_at: Instant::now(),
            census: Census::default(),
            stats: stats.clone(),
        };
        let bind: SocketAddr = if options.gateway.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
        let mut actors: Vec<Addr<Server<SimWorkloads>>> = Vec::with_capacity(servers.len());
        for (index, ((server, identity), (highest_epoch, log))) in
            servers.iter().zip(&identities).zip(logs).enumerate()
        {
            let endpoint_error = |source| FleetError::Endpoint {
                server: server.clone(),
                source: Box::new(source),
            };
            let endpoint = match endpoints.last() {
                Some(shared) if index % SERVERS_PER_SOCKET != 0 => shared.clone(),
                _ => {
                    // Its simulated servers pulse in datagrams only: it asks for the
                    // newest protocol, and a gateway that does not speak it says so.
                    let limits = Limits {
                        only_version: Some(Alpn::Node.current()),
                        ..Limits::management()
                    };
                    let endpoint = Arc::new(
                        Endpoint::dial_only(bind, identity, Alpn::Node, limits)
                            .map_err(endpoint_error)?,
                    );
                    endpoints.push(endpoint.clone());
                    endpoint
                }
            };
            let presents = endpoint.dial_identity(identity).map_err(endpoint_error)?;
            let model = NodeModel::new(server.clone(), highest_epoch, DEFAULT_RENEW_INTERVAL);
            let actor = Server::<SimWorkloads>::create(|ctx| {
                let reports = ctx.address().recipient();
                let workloads =
                    SimWorkloads::new(server.clone(), shared.clone(), log.clone(), reports);
                Server::new(model, log, workloads, stats.clone())
            });
            let target = LinkTarget {
                gateways: vec![options.gateway.into()],
                ipv4: options.gateway.is_ipv4(),
                site: site.clone(),
                server: server.clone(),
                boot: None,
                presents: Some(presents),
                agent_version: format!("{}-fleet", env!("CARGO_PKG_VERSION")),
            };
            let (linked, counts) = (actor.clone(), stats.clone());
            // Spread: a gateway handed a thousand handshakes in one millisecond drops some.
            let delay = DIAL_SPACING * u32::try_from(index).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                run_link(endpoint, target, linked, counts).await;
            });
            actors.push(actor);
        }

        let outcome = watch(&options, &stats, &shared.census, before).await;
        let (stopped, _) = shutdown(&actors).await;
        for endpoint in &endpoints {
            endpoint.close("fleet shutting down");
        }
        println!(
            "stopped: {stopped} of {} simulated workloads confirmed stopped",
            actors.len()
        );
        actix::System::current().stop();
        outcome
    })
}

/// Prints progress, then status lines, until a signal (Ok) or total refusal (Err).
async fn watch(
    options: &FleetOptions,
    stats: &FleetStats,
    census: &Census,
    before: Usage,
) -> Result<(), FleetError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(FleetError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(FleetError::Signals)?;
    let count = options.count;
    let began = Instant::now();
    let mut all_registered = false;
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    let mut last_status = Instant::now();
    let mut last_renewals = 0;
    let mut last_usage = before;
    loop {
        tokio::select! {
            _ = terminate.recv() => { println!("SIGTERM: stopping the fleet"); return Ok(()); }
            _ = interrupt.recv() => { println!("SIGINT: stopping the fleet"); return Ok(()); }
            _ = every.tick() => {}
        }
        if let Some(example) = stats.refused_everywhere(count, REFUSALS_BEFORE_GIVING_UP) {
            println!("every server refused; giving up: {example}");
            return Err(FleetError::AllRefused { count, example });
        }
        let registered = stats.registered.load(Ordering::Relaxed);
        if !all_registered {
            if registered >= count {
                all_registered = true;
                let usage = Usage::now();
                println!(
                    "all {count} registered in {:.1} s; {}",
                    began.elapsed().as_secs_f64(),
                    usage.describe_since(&before)
                );
            } else {
                let refused = match stats.refused_now() {
                    0 => String::new(),
                    refused => format!(", refused {refused}"),
                };
                let usage = Usage::now();
                println!(
                    "starting: connected {}/{count}, registered {registered}/{count}{refused}; {}",
                    stats.connected.load(Ordering::Relaxed),
                    usage.describe_since(&last_usage)
                );
                last_usage = usage;
            }
            flush();
            continue;
        }
        if last_status.elapsed() >= STATUS_EVERY {
            let renewals = stats.renewals.load(Ordering::Relaxed);
            let per_second =
                (renewals - last_renewals) as f64 / last_status.elapsed().as_secs_f64();
            let usage = Usage::now();
            println!(
                "{}",
                status_line(
                    count,
                    stats,
                    &census.snapshot(),
                    per_second,
                    &usage.describe_since(&last_usage)
                )
            );
            flush();
            last_status = Instant::now();
            last_renewals = renewals;
            last_usage = usage;
        }
    }
}

/// Stops every simulated workload (lease-respecting, as the agent does on SIGTERM); returns
/// how many confirmed.
async fn shutdown(actors: &[Addr<Server<SimWorkloads>>]) -> (usize, usize) {
    let waits: Vec<_> = actors
        .iter()
        .map(|actor| {
            let (done, stopped) = tokio::sync::oneshot::channel();
            actor.do_send(Shutdown { done });
            stopped
        })
        .collect();
    let mut confirmed = 0;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_LIMIT;
    for wait in waits {
        if tokio::time::timeout_at(deadline, wait)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            confirmed += 1;
        }
    }
    (confirmed, actors.len())
}

/// The site all the fleet's certificates name (the gateway is dialled as that site).
fn fleet_site(
    servers: &[ServerId],
    identities: &[leasehold_federation::transport::certs::Identity],
) -> Result<SiteId, FleetError> {
    let mut site: Option<SiteId> = None;
    for (server, identity) in servers.iter().zip(identities) {
        let PeerName::Node { site: named, .. } = &identity.name else {
            return Err(FleetError::NotANode {
                server: server.clone(),
                name: identity.name.to_string(),
            });
        };
        match &site {
            None => site = Some(named.clone()),
            Some(first) if first != named => {
                return Err(FleetError::SitesDiffer {
                    first: first.clone(),
                    second: named.clone(),
                });
            }
            Some(_) => {}
        }
    }
    // `servers` is never empty here (checked by the caller).
    site.ok_or(FleetError::NoServers)
}

/// Opens `<work>/<id>/events.jsonl` per server with the agent's recovery: the highest
/// epoch continues (S-2), and a workload a killed fleet left "running" is closed as an
/// orphan found already gone (nothing real ran).
fn open_logs(
    work: &std::path::Path,
    servers: &[ServerId],
) -> Result<Vec<(leasehold_federation::ids::Epoch, Option<EventLog>)>, FleetError> {
    let mut logs = Vec::with_capacity(servers.len());
    for server in servers {
        let dir = work.join(server.as_str());
        std::fs::create_dir_all(&dir).map_err(|source| FleetError::WorkDir {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(EVENT_LOG_FILE);
        let recovered = recover::recover(&read_log(&dir)?);
        let log = EventLog::open_rotating(
            &path,
            server.clone(),
            recovered.next_seq,
            recovered.state.clone(),
            Rotation::default(),
        )?;
        log.append(EventKind::AgentStarted {
            agent_pid: std::process::id(),
        });
        if let Some(orphan) = recovered.orphan {
            log.append(EventKind::WorkloadStopped {
                account: orphan.account,
                epoch: orphan.epoch,
                pid: None,
                cause: StopReason::OrphanReaped,
                exit_code: None,
                reaped_alive: Some(false),
            });
        }
        logs.push((recovered.highest_epoch, Some(log)));
    }
    Ok(logs)
}

fn flush() {
    // Progress goes to a pipe in tests; a failed flush only delays a line.
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_run_from_prefix_and_from() {
        let ids = server_ids("f", 7, 3).unwrap();
        let names: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
        assert_eq!(names, ["f7", "f8", "f9"]);
        assert!(matches!(
            server_ids("F_", 1, 1),
            Err(FleetError::BadId { id, .. }) if id == "F_1"
        ));
    }
}
