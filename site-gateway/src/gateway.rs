//! Starting a site gateway: load and check the config (the same loader as `config check`),
//! load the site's certificate, recover the journal, then start the actors, the management
//! listener and the admin API on one actix system over a multi-thread tokio runtime, and
//! run until SIGINT or SIGTERM. SIGHUP and edits of the config file reload it
//! (`crate::reload`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::certs::{CertError, load_site_identity};
use leasehold_federation::transport::endpoint::{Endpoint, EndpointError, Limits};
use leasehold_federation::transport::identity::PeerPolicy;

use crate::actors::PulseBoard;
use crate::actors::journal::JournalWriter;
use crate::actors::journal::SiteJournal;
use crate::actors::master::{LinkUp, SiteMaster};
use crate::config::{self, ConfigErrors, EtcdStore, SiteConfig, SiteStore};
use crate::ha::{Elector, ElectorConfig, EtcdJournal};
use crate::journal::{Journal, JournalError};
use crate::model::Millis;
use crate::model::core::SiteCore;

#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub config: PathBuf,
    pub certs: PathBuf,
    /// Where the journal lives; default `./leasehold-state-<site>`.
    pub state: Option<PathBuf>,
    /// Offer node agents only this version of the management protocol; `None`: every
    /// version this build speaks.
    pub node_protocol: Option<u16>,
    /// Which of the site's gateways this is (`[[site.gateway]]`, docs/ha.md).
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Config(ConfigErrors),
    /// `--name` does not fit the config's gateways.
    #[error("{0}")]
    Gateway(String),
    #[error("the site's etcd store: {0}")]
    Etcd(String),
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("management or federation listener: {0}")]
    Listener(#[from] EndpointError),
    #[error("cannot listen for the admin API on {addr} (is another process using it?)")]
    Admin {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Reload(#[from] crate::reload::ReloadError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsErrors),
    #[error(transparent)]
    Machines(#[from] crate::machines::MachinesError),
    #[error(transparent)]
    BootKey(#[from] crate::machines::boot_key::BootKeyError),
    #[error(transparent)]
    AdminTls(#[from] crate::admin::tls::AdminTlsError),
    #[error(transparent)]
    Tokens(#[from] crate::admin::tokens::TokenFileError),
    #[error(transparent)]
    AccessLog(#[from] crate::admin::access::AccessLogError),
    #[error("cannot listen for the boot service on {addr} (is another process using it?)")]
    Boot {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the gateway until SIGINT/SIGTERM. Everything that can be refused (config, certs,
/// journal, addresses) is refused before anything starts.
pub fn run(options: GatewayOptions) -> Result<(), GatewayError> {
    let config = config::load_site(&options.config)
        .map_err(GatewayError::Config)?
        .as_gateway(options.name.as_deref())
        .map_err(GatewayError::Gateway)?;
    // The hash names this config in status and audit; an unreadable file was refused above.
    let hash = std::fs::read(&options.config)
        .map(|bytes| crate::reload::hash(&bytes))
        .unwrap_or_default();
    let identity = load_site_identity(&options.certs, &config.site.name)?;
    // The TCP addresses are bound before the journal opens (QUIC's two are bound in
    // `serve`, before its first actor): an address another process holds stops the start,
    // named, and changes nothing.
    let admin_addr = config.site.admin_addr;
    let admin_listener = tcp_listener(admin_addr).map_err(|source| GatewayError::Admin {
        addr: admin_addr,
        source,
    })?;
    let machines_configured = config.servers.iter().any(|server| server.machine.is_some());
    let boot_listener = match config.site.boot_addr {
        Some(addr) if machines_configured => Some((
            addr,
            tcp_listener(addr).map_err(|source| GatewayError::Boot { addr, source })?,
        )),
        _ => None,
    };
    let state = options
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("leasehold-state-{}", config.site.name)));
    let store = match &config.site.store {
        SiteStore::Redb => {
            #[allow(unused_mut)] // planted only in debug builds
            let (mut journal, recovered) = Journal::open(&state, &config.site.name)?;
            // A test-only build switch (tests/chaos.rs): debug builds honour it, release
            // builds do not contain it.
            #[cfg(debug_assertions)]
            if std::env::var("LEASEHOLD_TEST_PLANT").as_deref() == Ok("drop-journal-write") {
                tracing::warn!(
                    "TEST SWITCH LEASEHOLD_TEST_PLANT=drop-journal-write: this gateway does not journal lease grants but acts as if it did, which is unsafe"
                );
                journal.plant_drop_lease_grants();
            }
            tracing::info!(
                site = %config.site.name,
                leases = recovered.leases.len(),
                state = %state.display(),
                "journal recovered"
            );
            Store::Redb {
                journal: Box::new(journal),
                recovered,
            }
        }
        SiteStore::Etcd(etcd) => Store::Etcd(Arc::new(etcd_client(etcd)?)),
    };
    // Secrets files are read now: one others may read, or that is malformed, stops the
    // start, named.
    let secrets = crate::secrets::SecretStore::load(&config)?;
    // Machines' credentials and CAs are read now: a bad file stops the start, named.
    let machines = crate::machines::Machines::from_config(&config)?;
    let machines = if machines.is_empty() {
        None
    } else {
        let key = crate::machines::boot_key::BootKey::load_or_create(
            &state.join("boot.key"),
            &config.site.name,
        )?;
        Some((Arc::new(machines), Arc::new(key)))
    };
    let admin = admin_security(&config, &state, &identity, admin_listener)?;
    let book_path = crate::peer_book::PeerBook::file_in(&state);
    let peer_book = crate::peer_book::PeerBook::load(book_path.clone()).unwrap_or_else(|error| {
        tracing::warn!(%error, "starting from the config's peers alone; the file is written again at the next change");
        crate::peer_book::PeerBook::empty_at(book_path)
    });
    // A site's own demand, kept for `leasehold replay`; nothing else depends on it.
    let demand_trace = if config.journal.demand_trace_step_s == 0 {
        None
    } else {
        let header = crate::demand_trace::header(&config, crate::actors::wall_ms());
        match crate::demand_trace::start(&state, header) {
            Ok(sender) => Some(sender),
            Err(error) => {
                tracing::warn!(state = %state.display(), %error, "no demand trace is kept this run");
                None
            }
        }
    };
    let runtime = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime builds on this platform")
    });
    let read = FromDisk {
        store,
        machines,
        secrets,
        certs: options.certs.clone(),
        peer_book,
        node_protocol: options.node_protocol,
        boot_listener,
        gateway_name: options.name.clone(),
        demand_trace,
    };
    runtime.block_on(serve(config, hash, identity, read, admin))
}

/// What the start read from disk before the runtime: the journal and what it recovered,
/// the machines' BMCs and boot key, the workload secrets.
struct FromDisk {
    store: Store,
    machines: Option<(
        Arc<crate::machines::Machines>,
        Arc<crate::machines::boot_key::BootKey>,
    )>,
    secrets: crate::secrets::SecretStore,
    /// The certificate directory, read again on SIGHUP.
    certs: PathBuf,
    peer_book: crate::peer_book::PeerBook,
    node_protocol: Option<u16>,
    /// The boot service's address, bound.
    boot_listener: Option<(std::net::SocketAddr, std::net::TcpListener)>,
    demand_trace: Option<crate::demand_trace::TraceSender>,
    /// `--name`: which of the site's gateways this is.
    gateway_name: Option<String>,
}

/// The admin address's TLS, tokens and access log, read before anything starts: a bad
/// certificate or token file stops the start, named.
fn admin_security(
    config: &SiteConfig,
    state: &std::path::Path,
    identity: &leasehold_federation::transport::certs::Identity,
    listener: std::net::TcpListener,
) -> Result<crate::api::AdminServe, GatewayError> {
    let addr = config.site.admin_addr;
    let (tls, admin_certificate, certificate_expiry) = match &config.admin.tls {
        Some(tls) => {
            let (certificate, expiry) = crate::admin::tls::AdminCertificate::load(tls)?;
            let server = crate::admin::tls::server_config(certificate.clone())?;
            (Some(server), Some(certificate), expiry)
        }
        None => (None, None, None),
    };
    let tokens = match &config.admin.tokens {
        Some(path) => Some(Arc::new(crate::admin::TokenStore::open(path)?)),
        None => None,
    };
    let access_path = config
        .admin
        .access_log
        .clone()
        .unwrap_or_else(|| state.join("access.log"));
    let access = crate::admin::access::AccessLog::open(&access_path)?;
    let warnings = config.admin.warnings(addr);
    // When each certificate the gateway presents or trusts expires: metrics and the page.
    let not_after = leasehold_federation::transport::certs::not_after;
    let certificates: Vec<(&'static str, i64)> = [
        ("site", identity.chain.first().and_then(not_after)),
        ("ca", identity.ca_not_after()),
        ("admin", certificate_expiry),
    ]
    .into_iter()
    .filter_map(|(which, at)| at.map(|at| (which, at)))
    .collect();
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        %addr,
        scheme = if tls.is_some() { "https" } else { "http" },
        tokens = %tokens.as_ref().map_or("(none)".to_owned(), |store| store.path().display().to_string()),
        anonymous_role = %config.admin.anonymous_role.map_or("(none)", |role| role.as_str()),
        access_log = %access_path.display(),
        "admin address secured as configured"
    );
    Ok(crate::api::AdminServe {
        addr,
        listener,
        tls,
        certificate: admin_certificate,
        site: config.site.name.clone(),
        journal_file: Journal::file_in(state),
        demand_trace: state.join(crate::demand_trace::FILE),
        boot_key: state.join("boot.key"),
        auth: Arc::new(crate::admin::AdminAuth {
            site: config.site.name.to_string(),
            tokens,
            anonymous: config.admin.anonymous_role,
            tls: config.admin.tls.is_some(),
            warnings,
            certificates: Arc::new(crate::admin::CertificateExpiries::new(certificates)),
            access,
        }),
    })
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    config: SiteConfig,
    hash: String,
    identity: leasehold_federation::transport::certs::Identity,
    read: FromDisk,
    admin: crate::api::AdminServe,
) -> Result<(), GatewayError> {
    let FromDisk {
        store,
        machines,
        secrets,
        certs,
        peer_book,
        node_protocol,
        boot_listener,
        demand_trace,
        gateway_name,
    } = read;
    let policy = PeerPolicy::Nodes {
        site: config.site.name.clone(),
        servers: config
            .servers
            .iter()
            .map(|server| server.id.clone())
            .collect(),
    };
    // Created inside the runtime that drives it for the life of the process.
    let board = Arc::new(PulseBoard::default());
    let endpoint = Endpoint::listen(
        config.site.management_addr,
        &identity,
        Alpn::Node,
        policy,
        Limits {
            only_version: node_protocol,
            ..Limits::management_listener()
        },
    )?
    .with_datagram_sink(board.clone());
    let endpoint = Arc::new(endpoint);
    let federation_endpoint = crate::federation::listen(&config, &identity)?;
    // A gateway of a site whose journal is in etcd acts only once elected: until then it
    // is a standby (docs/ha.md): it reads the journal to keep its view warm, and again
    // to act on once it acts.
    let (journal, recovered, election) = match store {
        Store::Redb { journal, recovered } => (SiteJournal::Redb(*journal), recovered, None),
        Store::Etcd(etcd) => {
            let (journal, recovered, election) = elected(
                &config,
                etcd,
                (endpoint.clone(), federation_endpoint.clone()),
                (standby_admin(&admin)?, admin.tls.clone()),
            )
            .await?;
            (journal, recovered, Some(election))
        }
    };
    // The clock of the core starts now: a standby may have waited long before it acts.
    let started = Instant::now();
    let generation = election.as_ref().and_then(|election| election.stamp());
    let peers = crate::federation::start(
        &config,
        (federation_endpoint, generation),
        started,
        peer_book,
    );
    let journal_thread = Arbiter::new();
    let retention_days = config.journal.audit_retention_days;
    let journal = JournalWriter::start_in_arbiter(&journal_thread.handle(), move |_| {
        JournalWriter::new(journal, retention_days)
    });
    let (core, recovery_effects, groups) = SiteCore::new(
        config.clone(),
        hash,
        &recovered,
        Some(ownership(&config)),
        crate::actors::wall_ms(),
        Millis(0),
    );
    let metrics = Arc::new(crate::metrics::Metrics::new(&config.site.name));
    let mut master = SiteMaster::new(
        core,
        recovery_effects,
        groups,
        started,
        journal.clone(),
        board,
        metrics.clone(),
    )
    .with_federation(peers.clone())
    .with_management(endpoint.clone())
    .with_secrets(secrets)
    .with_election(election.clone());
    if let Some(sender) = demand_trace {
        let accounts = config.accounts.iter().map(|a| a.name.to_string()).collect();
        master = master.with_demand_trace(accounts, config.journal.demand_trace_step_s, sender);
    }
    if let Some((machines, key)) = &machines {
        master = master.with_machines(machines.clone(), key.clone());
    }
    let master = master.start();
    let boot = match (&machines, boot_listener) {
        (Some((_, key)), Some((addr, listener))) => {
            let server = crate::machines::boot_service::serve(
                listener,
                master.clone(),
                key.clone(),
                config.site.name.clone(),
                config.site.machine_gateway_addr(),
            )
            .map_err(|source| GatewayError::Boot { addr, source })?;
            let handle = server.handle();
            actix::spawn(async move {
                if let Err(error) = server.await {
                    tracing::error!(%error, "boot service stopped");
                }
            });
            tracing::info!(%addr, "boot service listening");
            Some(handle)
        }
        _ => None,
    };
    peers.attach(master.clone());
    crate::reload::start(config.path.clone(), gateway_name.clone(), master.clone())?;
    if let Some(store) = &admin.auth.tokens {
        crate::reload::watch_tokens(store.clone())?;
    }
    crate::reload::watch_certificates(
        certs,
        config.site.name.clone(),
        vec![endpoint.clone(), peers.endpoint()],
        admin.auth.certificates.clone(),
    )?;
    if let Some(certificate) = &admin.certificate {
        crate::reload::watch_admin_certificate(
            certificate.clone(),
            admin.auth.certificates.clone(),
        )?;
    }
    let admin = crate::api::serve(admin, master.clone(), journal, metrics, peers.clone()).map_err(
        |source| GatewayError::Admin {
            addr: config.site.admin_addr,
            source,
        },
    )?;
    let admin_handle = admin.handle();
    actix::spawn(async move {
        if let Err(error) = admin.await {
            tracing::error!(%error, "admin API stopped");
        }
    });
    let accepting = tokio::spawn(accept_nodes(endpoint.clone(), master));
    let watching = election
        .clone()
        .map(|election| tokio::spawn(exit_when_deposed(config.site.name.to_string(), election)));
    tracing::info!(
        site = %config.site.name,
        management = %config.site.management_addr,
        admin = %config.site.admin_addr,
        "gateway running"
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    accepting.abort();
    // Tell every node and peer we are gone, so that they redial now rather than at QUIC's
    // idle timeout, when their leases would have run out; bounded, since a peer that does
    // not answer must not hold the exit.
    endpoint.close("gateway shutting down");
    peers.close("gateway shutting down");
    let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
    admin_handle.stop(true).await;
    if let Some(boot) = boot {
        boot.stop(true).await;
    }
    journal_thread.stop();
    if let (Some(election), Some(watching)) = (election, watching) {
        // Hand over once everything above is closed: a standby acts as soon as the key is
        // gone, instead of when this gateway's lease would have ended (docs/ha.md,
        // "Upgrades").
        watching.abort();
        let _ = tokio::task::spawn_blocking(move || election.stop()).await;
        tracing::info!(site = %config.site.name, "handed over: the site's election key given up");
    }
    Ok(())
}

/// The exit code of a gateway that stopped acting for its site (EX_TEMPFAIL): its
/// supervisor starts it again, as a standby.
pub const EXIT_DEPOSED: i32 = 75;

/// What the start opened: the redb journal and what it recovered, or the etcd cluster
/// the site's gateways share.
enum Store {
    Redb {
        journal: Box<Journal>,
        recovered: crate::model::site::Recovered,
    },
    Etcd(Arc<leasehold_etcd::Etcd>),
}

fn etcd_client(store: &EtcdStore) -> Result<leasehold_etcd::Etcd, GatewayError> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|error| {
            GatewayError::Etcd(format!("cannot read {what} {}: {error}", path.display()))
        })
    };
    let ca_pem = match &store.ca {
        Some(path) => Some(read(path, "etcd_ca")?),
        None => None,
    };
    let client_pem = match &store.client {
        Some((cert, key)) => Some((read(cert, "etcd_cert")?, read(key, "etcd_key")?)),
        None => None,
    };
    leasehold_etcd::Etcd::new(&leasehold_etcd::EtcdConfig {
        endpoints: store.endpoints.clone(),
        ca_pem,
        client_pem,
        // A request must fail well inside the lease it would keep alive.
        timeout: Duration::from_millis(store.lease_ttl_s * 1000 / 3),
    })
    .map_err(|error| GatewayError::Etcd(error.to_string()))
}

/// How many connections wait to be accepted: what actix-web's own `bind` gives (std's
/// `TcpListener::bind` gives 128); the admin API serves 256 at once and the rest wait here.
const TCP_BACKLOG: i32 = 2048;

/// `addr` bound and listening, as actix-web's `bind` would have it (address reuse, its
/// backlog), but before anything starts.
fn tcp_listener(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(TCP_BACKLOG)?;
    Ok(socket.into())
}

/// The admin address for the standby's own API: the same socket as the active API's, so
/// that it stays bound in between (a request then waits in its backlog, never refused).
fn standby_admin(admin: &crate::api::AdminServe) -> Result<std::net::TcpListener, GatewayError> {
    admin
        .listener
        .try_clone()
        .map_err(|source| GatewayError::Admin {
            addr: admin.addr,
            source,
        })
}

/// Campaigns, serving as a standby until elected; then reads the journal from etcd.
async fn elected(
    config: &SiteConfig,
    etcd: Arc<leasehold_etcd::Etcd>,
    (management, federation): (Arc<Endpoint>, Arc<Endpoint>),
    (admin, admin_tls): (std::net::TcpListener, Option<rustls::ServerConfig>),
) -> Result<(SiteJournal, crate::model::site::Recovered, Arc<Elector>), GatewayError> {
    let SiteStore::Etcd(store) = &config.site.store else {
        return Err(GatewayError::Etcd(
            "the site's store is not etcd".to_owned(),
        ));
    };
    let name = config
        .site
        .gateways
        .iter()
        .find(|g| g.admin_addr == config.site.admin_addr)
        .map_or_else(|| config.site.name.to_string(), |g| g.name.clone());
    let record = serde_json::json!({
        "name": name,
        "admin_addr": config.site.admin_addr.to_string(),
        "management_addr": config.site.management_addr.to_string(),
        "federation_addr": config.site.federation_addr.to_string(),
    });
    let election = Arc::new(Elector::start(
        etcd.clone(),
        ElectorConfig {
            site: config.site.name.clone(),
            name: name.clone(),
            record,
            ttl_s: i64::try_from(store.lease_ttl_s).unwrap_or(i64::MAX),
            margin: ELECTION_MARGIN,
            poll: ELECTION_POLL,
        },
    ));
    tracing::info!(site = %config.site.name, gateway = %name, endpoints = ?store.endpoints, "standby until elected");
    let generation = crate::ha::standby::until_active(
        config.site.name.as_str(),
        &name,
        admin,
        admin_tls,
        (management, federation),
        (election.clone(), etcd.clone()),
    )
    .await
    .map_err(|source| GatewayError::Admin {
        addr: config.site.admin_addr,
        source,
    })?;
    let site = config.site.name.clone();
    let loaded = tokio::task::spawn_blocking(move || EtcdJournal::load(etcd, &site))
        .await
        .map_err(|error| GatewayError::Etcd(error.to_string()))?
        .map_err(|error| GatewayError::Etcd(error.to_string()))?;
    let (journal, recovered) = loaded;
    tracing::info!(
        site = %config.site.name,
        gateway = %name,
        %generation,
        leases = recovered.leases.len(),
        "elected: journal read from etcd; acting for the site"
    );
    Ok((
        SiteJournal::Etcd {
            journal,
            election: election.clone(),
        },
        recovered,
        election,
    ))
}

/// How long before its etcd lease could end a gateway stops acting (docs/ha.md).
const ELECTION_MARGIN: Duration = Duration::from_millis(500);
/// How often a standby tries for the election key.
const ELECTION_POLL: Duration = Duration::from_millis(100);

/// Exits the process the moment this gateway may no longer act: whatever it would do next
/// could race its successor's. Its supervisor starts it again, as a standby.
async fn exit_when_deposed(site: String, election: Arc<Elector>) {
    loop {
        if election.acting().is_none() {
            tracing::error!(%site, "this gateway no longer acts for its site (its etcd lease could have ended); it exits, to start again as a standby");
            std::process::exit(EXIT_DEPOSED);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Node handshakes in progress at once; a node that dials beyond them is refused at once
/// and dials again after its backoff (docs/node.md, "When every node dials at once").
const HANDSHAKES_AT_ONCE: usize = 64;

/// How long a node handshake may hold its place. A node gives up on its handshake after
/// 2 s and dials afresh, so one still running after this is of use to nobody, and a peer
/// that starts handshakes and never finishes them cannot hold the places for long.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(3);

async fn accept_nodes(endpoint: Arc<Endpoint>, master: Addr<SiteMaster>) {
    // When thousands of nodes dial at once (the gateway restarted, a site powered up),
    // handshakes beyond what the gateway finishes within the nodes' 2 s connect timeout
    // are abandoned by them and dialled again: the gateway's work on them is lost, the
    // redials cost more handshakes, and the registered nodes' pulses wait behind them.
    // At 20,000 nodes that fed on itself: registrations peaked, then fell to 5,300 in one
    // run (D-53). Refusing the excess costs a packet and no cryptography.
    let admitted = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
    let mut refused: u64 = 0;
    while let Some(handshake) = endpoint.accept().await {
        let Ok(permit) = admitted.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::info!(
                    refused,
                    at_once = HANDSHAKES_AT_ONCE,
                    "node handshakes refused while others finish; they dial again after their backoff"
                );
            }
            handshake.refuse();
            continue;
        };
        let master = master.clone();
        tokio::spawn(async move {
            let remote = handshake.remote_address();
            let finished = tokio::time::timeout(HANDSHAKE_DEADLINE, handshake.finish()).await;
            drop(permit);
            match finished {
                Ok(Ok((connection, inbox))) => master.do_send(LinkUp { connection, inbox }),
                // Logged by `finish` with its reason.
                Ok(Err(_)) => {}
                // Dropping the handshake closed its connection.
                Err(_) => {
                    tracing::debug!(%remote, "a node handshake passed its {HANDSHAKE_DEADLINE:?} deadline; dropped")
                }
            }
        });
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// The site's ownership core (docs/ownership.md).
fn ownership(config: &SiteConfig) -> crate::model::ownership::SiteOwnership {
    #[allow(unused_mut)] // planted only in debug builds
    let mut ownership = crate::model::ownership::SiteOwnership::new(
        config.site.name.clone(),
        config.peers.iter().map(|peer| peer.name.clone()).collect(),
        config
            .accounts
            .iter()
            .map(|account| account.name.clone())
            .collect(),
        config.timings.ownership(),
        config.timings.failback_after,
        Millis(0),
    );
    // A test-only build switch (tests/failover.rs): debug builds honour it, release
    // builds do not contain it.
    #[cfg(debug_assertions)]
    if std::env::var("LEASEHOLD_TEST_PLANT").as_deref() == Ok("renew-without-majority") {
        tracing::warn!(
            "TEST SWITCH LEASEHOLD_TEST_PLANT=renew-without-majority: this gateway renews ownership without a majority, which is unsafe"
        );
        ownership.plant_renew_without_majority();
    }
    ownership
}

#[cfg(test)]
mod tests {
    use super::tcp_listener;

    /// Address reuse lets a restarted gateway bind past its old connections' TIME_WAIT,
    /// never past a process that listens there.
    #[test]
    fn an_address_another_listener_holds_is_refused() {
        let first = tcp_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = tcp_listener(addr).unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);
        drop(first);
        assert!(tcp_listener(addr).is_ok());
    }
}
