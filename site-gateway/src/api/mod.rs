//! The admin HTTP API on the site's `admin_addr` (docs/api.md): status, servers, accounts,
//! endpoints, audit, liveness and readiness, behind the gate of `crate::admin` (TLS,
//! tokens, roles, limits). Handlers ask the actors and shape JSON; they decide nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::{App, HttpResponse, HttpServer, middleware, web};
use serde::{Deserialize, Serialize};

use crate::actors::journal::{JournalWriter, ReadAudit};
use crate::actors::master::{GetStatus, SiteMaster, Status};
use crate::actors::peer::{GetPeerStatus, PeerStatus};
use crate::admin::AdminAuth;
use crate::admin::guard::MAX_BODY_BYTES;
use crate::admin::tokens::Caller;
use crate::federation::Federation;

mod backup;

#[derive(Clone)]
struct Api {
    master: Addr<SiteMaster>,
    journal: Addr<JournalWriter>,
    peers: Arc<Federation>,
    site: leasehold_federation::ids::SiteId,
    files: backup::StateFiles,
    demand_trace: std::path::PathBuf,
}

/// How long a client may take to send a request's head, and a TLS handshake: a client that
/// trickles bytes (slowloris) holds a connection no longer than this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a kept-alive connection may sit idle between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections open at once (the server has one worker); more wait in the backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// Where and how the admin API serves.
pub struct AdminServe {
    pub addr: SocketAddr,
    /// `addr`, bound before anything starts: an address another process holds stops the
    /// start, named, before any actor runs.
    pub listener: std::net::TcpListener,
    /// HTTPS with this config; `None` is plain HTTP (said explicitly in the config).
    pub tls: Option<rustls::ServerConfig>,
    /// What `tls` presents, read again when its files change.
    pub certificate: Option<Arc<crate::admin::tls::AdminCertificate>>,
    pub auth: Arc<AdminAuth>,
    pub site: leasehold_federation::ids::SiteId,
    /// The journal's file, whose size `/metrics` shows.
    pub journal_file: std::path::PathBuf,
    /// The boot key, which a backup carries.
    pub boot_key: std::path::PathBuf,
    /// The site's own demand trace (`demand_trace`), served at `/v1/demand-trace`.
    pub demand_trace: std::path::PathBuf,
}

/// Binds the admin API and returns the server to run (on the current actix system).
pub fn serve(
    serve: AdminServe,
    master: Addr<SiteMaster>,
    journal: Addr<JournalWriter>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    peers: Arc<Federation>,
) -> std::io::Result<actix_web::dev::Server> {
    let scrape = web::Data::new(crate::metrics::Scrape::new(
        metrics,
        master.clone(),
        peers.clone(),
        serve.journal_file.clone(),
        serve.auth.certificates.clone(),
    ));
    let api = Api {
        master,
        journal,
        peers,
        site: serve.site.clone(),
        files: backup::StateFiles {
            journal: serve.journal_file.clone(),
            boot_key: serve.boot_key.clone(),
        },
        demand_trace: serve.demand_trace.clone(),
    };
    let auth = web::Data::from(serve.auth);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(api.clone()))
            .app_data(scrape.clone())
            .app_data(auth.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .app_data(web::FormConfig::default().limit(MAX_BODY_BYTES))
            .service(only("/", "GET", [web::get().to(page)]))
            .service(only("/live", "GET", [web::get().to(live)]))
            .service(only("/ready", "GET", [web::get().to(ready)]))
            .service(only("/v1/status", "GET", [web::get().to(status)]))
            .service(only("/v1/servers", "GET", [web::get().to(servers)]))
            .service(only("/v1/peers", "GET", [web::get().to(list_peers)]))
            .service(only("/v1/accounts", "GET", [web::get().to(accounts)]))
            .service(only("/v1/loans", "GET", [web::get().to(loans)]))
            .service(only(
                "/v1/accounts/{name}/endpoints",
                "GET",
                [web::get().to(endpoints)],
            ))
            .service(only("/v1/audit", "GET", [web::get().to(audit)]))
            .service(only(
                "/v1/demand-trace",
                "GET",
                [web::get().to(demand_trace)],
            ))
            .service(only(
                "/v1/journal/backup",
                "GET",
                [web::get().to(backup::backup)],
            ))
            .service(only(
                "/metrics",
                "GET",
                [web::get().to(crate::metrics::serve_metrics)],
            ))
            .service(only(
                "/v1/servers/{id}/drain",
                "POST",
                [web::post().to(drain)],
            ))
            .service(only(
                "/v1/servers/{id}/undrain",
                "POST",
                [web::post().to(undrain)],
            ))
            .service(only(
                "/login",
                "GET, POST",
                [
                    web::get().to(crate::admin::login::form),
                    web::post().to(crate::admin::login::login),
                ],
            ))
            .service(only(
                "/logout",
                "POST",
                [web::post().to(crate::admin::login::logout)],
            ))
            .default_service(web::to(not_found))
            // Outermost: every request, routed or not, passes the gate first.
            .wrap(middleware::from_fn(crate::admin::guard::gate))
    })
    .workers(1)
    .disable_signals()
    .client_request_timeout(REQUEST_TIMEOUT)
    .tls_handshake_timeout(REQUEST_TIMEOUT)
    .keep_alive(IDLE_TIMEOUT)
    .client_disconnect_timeout(Duration::from_secs(1))
    .max_connections(MAX_CONNECTIONS)
    .max_connection_rate(64);
    let server = match serve.tls {
        Some(tls) => server.listen_rustls_0_23(serve.listener, tls)?,
        None => server.listen(serve.listener)?,
    };
    Ok(server.run())
}

/// A resource that answers only `routes`; any other method gets 405 with `Allow: allow`.
fn only<const N: usize>(
    path: &str,
    allow: &'static str,
    routes: [actix_web::Route; N],
) -> actix_web::Resource {
    routes
        .into_iter()
        .fold(web::resource(path), actix_web::Resource::route)
        .default_service(web::to(move || not_allowed(allow)))
}

async fn not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = error(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("this endpoint answers {allow} only; see docs/api.md"),
    );
    response.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
    response
}

async fn page(
    api: web::Data<Api>,
    auth: web::Data<AdminAuth>,
    caller: Option<web::ReqData<Caller>>,
) -> HttpResponse {
    crate::page::index(
        api.master.clone(),
        api.journal.clone(),
        api.peers.peers(),
        crate::page::Viewer {
            caller: caller.map(web::ReqData::into_inner),
            warnings: auth.warnings.clone(),
            can_sign_out: auth.tokens.is_some(),
            certificates: auth
                .certificates
                .current()
                .into_iter()
                .map(|(which, at)| (which.to_owned(), at))
                .collect(),
            now_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
        },
    )
    .await
}

fn error(status: actix_web::http::StatusCode, message: String) -> HttpResponse {
    crate::admin::guard::json_error(status, message)
}

fn unavailable() -> HttpResponse {
    error(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "the site master is not answering; the gateway may be shutting down".to_owned(),
    )
}

async fn fetch_status(api: &Api) -> Option<Status> {
    api.master.send(GetStatus).await.ok()
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().body("live\n")
}

/// Ready once the master has run a round: the journal is recovered and decisions flow.
async fn ready(api: web::Data<Api>) -> HttpResponse {
    match fetch_status(&api).await {
        Some(status) if status.rounds > 0 => HttpResponse::Ok().body("ready\n"),
        _ => HttpResponse::ServiceUnavailable().body("not ready\n"),
    }
}

#[derive(Serialize)]
struct StatusBody {
    site: String,
    uptime_ms: u64,
    rounds: u64,
    servers: usize,
    servers_by_state: BTreeMap<&'static str, usize>,
    accounts: usize,
    accounts_below_sla: Vec<String>,
    reallocations: u64,
    reallocation_ms_p50: Option<u64>,
    reallocation_ms_p99: Option<u64>,
    /// The running config and live edits: hash, last refused edit, reload counts.
    config: crate::actors::master::ConfigStatus,
    /// Who votes on ownership (docs/ownership.md, "Members"); absent for a site alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<crate::model::ownership::MembersStatus>,
}

/// The demand this gateway measured since it started, as a trace (`leasehold-trace/1`,
/// docs/replay.md): its whole lines, so a step being written is left for the next read.
async fn demand_trace(api: web::Data<Api>) -> HttpResponse {
    let path = api.demand_trace.clone();
    let read = web::block(move || std::fs::read_to_string(&path)).await;
    match read {
        Ok(Ok(text)) => {
            let whole = text.rfind('\n').map_or("", |end| &text[..=end]).to_owned();
            HttpResponse::Ok()
                .content_type("application/x-ndjson")
                .body(whole)
        }
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => HttpResponse::NotFound()
            .json(serde_json::json!({
                "error": format!(
                    "this gateway keeps no demand trace: it could not start {} (its log says why)",
                    api.demand_trace.display()
                )
            })),
        Ok(Err(error)) => HttpResponse::InternalServerError().json(serde_json::json!({
            "error": format!("cannot read {}: {error}", api.demand_trace.display())
        })),
        Err(_) => unavailable(),
    }
}

async fn status(api: web::Data<Api>) -> HttpResponse {
    let Some(status) = fetch_status(&api).await else {
        return unavailable();
    };
    let mut by_state = BTreeMap::new();
    for server in &status.snapshot.servers {
        *by_state.entry(server.state).or_insert(0) += 1;
    }
    HttpResponse::Ok().json(StatusBody {
        site: status.snapshot.site.to_string(),
        uptime_ms: status.uptime_ms,
        rounds: status.rounds,
        servers: status.snapshot.servers.len(),
        servers_by_state: by_state,
        accounts: status.snapshot.accounts.len(),
        accounts_below_sla: status
            .snapshot
            .accounts
            .iter()
            .filter(|account| !account.sla_met)
            .map(|account| account.name.to_string())
            .collect(),
        reallocations: status.reallocations,
        reallocation_ms_p50: status.reallocation_ms_p50,
        reallocation_ms_p99: status.reallocation_ms_p99,
        config: status.config,
        members: status.members,
    })
}

async fn servers(api: web::Data<Api>) -> HttpResponse {
    match fetch_status(&api).await {
        Some(status) => HttpResponse::Ok().json(status.snapshot.servers),
        None => unavailable(),
    }
}

/// Every configured peer: liveness, RTT, connections both ways, its catalogue.
async fn list_peers(api: web::Data<Api>) -> HttpResponse {
    let current = api.peers.peers();
    let mut peers: Vec<PeerStatus> = Vec::with_capacity(current.len());
    for peer in &current {
        match peer.send(GetPeerStatus).await {
            Ok(status) => peers.push(status),
            Err(_) => return unavailable(),
        }
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    HttpResponse::Ok().json(peers)
}

/// Servers borrowed and lent, requests in flight, totals and loan latencies.
async fn loans(api: web::Data<Api>) -> HttpResponse {
    match api.master.send(crate::actors::loans::GetLoans).await {
        Ok(loans) => HttpResponse::Ok().json(loans),
        Err(_) => unavailable(),
    }
}

async fn accounts(api: web::Data<Api>) -> HttpResponse {
    match fetch_status(&api).await {
        Some(status) => HttpResponse::Ok().json(status.snapshot.accounts),
        None => unavailable(),
    }
}

async fn endpoints(api: web::Data<Api>, name: web::Path<String>) -> HttpResponse {
    let Some(status) = fetch_status(&api).await else {
        return unavailable();
    };
    match status
        .snapshot
        .accounts
        .into_iter()
        .find(|account| account.name.as_str() == name.as_str())
    {
        Some(account) => HttpResponse::Ok().json(account.endpoints),
        None => error(
            actix_web::http::StatusCode::NOT_FOUND,
            format!(
                "no account `{name}` at {}; GET /v1/accounts lists them",
                status.snapshot.site
            ),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Records after this sequence number, oldest first; without it, the newest.
    after: Option<u64>,
    limit: Option<usize>,
}

const AUDIT_LIMIT_MAX: usize = 1000;

async fn audit(api: web::Data<Api>, query: web::Query<AuditQuery>) -> HttpResponse {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > AUDIT_LIMIT_MAX {
        return error(
            actix_web::http::StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {AUDIT_LIMIT_MAX}, not {limit}"),
        );
    }
    match api
        .journal
        .send(ReadAudit {
            after: query.after,
            limit,
        })
        .await
    {
        Ok(Ok(records)) => HttpResponse::Ok().json(records),
        Ok(Err(failure)) => error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            failure.to_string(),
        ),
        Err(_) => unavailable(),
    }
}

async fn not_found(request: actix_web::HttpRequest) -> HttpResponse {
    error(
        actix_web::http::StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} {}; see docs/api.md",
            request.method(),
            request.path()
        ),
    )
}

/// The body of `POST /v1/servers/{id}/drain`; it may be empty.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    /// Why, for the audit log.
    reason: Option<String>,
    /// Drain at once, even below the account's minimum.
    #[serde(default)]
    force: bool,
}

/// `POST /v1/servers/{id}/drain`: into maintenance; `202` once journaled.
async fn drain(
    api: web::Data<Api>,
    id: web::Path<String>,
    caller: Option<web::ReqData<Caller>>,
    body: web::Bytes,
) -> HttpResponse {
    let body: DrainBody = if body.iter().all(u8::is_ascii_whitespace) {
        DrainBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(bad) => {
                return error(
                    actix_web::http::StatusCode::BAD_REQUEST,
                    format!(
                        "the body must be JSON like {{\"reason\": \"replace a disk\", \"force\": false}}, or empty: {bad}"
                    ),
                );
            }
        }
    };
    let record = crate::model::effects::MaintenanceRecord {
        by: caller.map_or_else(|| "-".to_owned(), |caller| caller.into_inner().name),
        reason: body.reason.unwrap_or_else(|| "no reason given".to_owned()),
        since_wall_ms: crate::actors::wall_ms(),
        force: body.force,
    };
    maintenance(&api, &id, Some(record)).await
}

/// `POST /v1/servers/{id}/undrain`: back in use.
async fn undrain(api: web::Data<Api>, id: web::Path<String>) -> HttpResponse {
    maintenance(&api, &id, None).await
}

async fn maintenance(
    api: &Api,
    id: &str,
    record: Option<crate::model::effects::MaintenanceRecord>,
) -> HttpResponse {
    let Ok(server) = leasehold_federation::ids::ServerId::parse(id) else {
        return error(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("`{id}` is not a server id; GET /v1/servers lists them"),
        );
    };
    let asked = crate::actors::maintenance::SetMaintenance {
        server: server.clone(),
        record,
    };
    match api.master.send(asked).await {
        Ok(Ok(server)) => HttpResponse::Accepted().json(server),
        Ok(Err(Some(refused))) => {
            let status = match refused {
                crate::model::site::MaintenanceRefusal::UnknownServer { .. } => {
                    actix_web::http::StatusCode::NOT_FOUND
                }
                crate::model::site::MaintenanceRefusal::Lent { .. } => {
                    actix_web::http::StatusCode::CONFLICT
                }
            };
            error(status, refused.to_string())
        }
        Ok(Err(None)) | Err(_) => unavailable(),
    }
}
