//! The admin HTTP API on the site's `admin_addr` (docs/api.md): status, servers, accounts,
//! endpoints, audit, liveness and readiness. Handlers ask the actors and shape JSON; they
//! decide nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::Addr;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::{Deserialize, Serialize};

use crate::actors::journal::{JournalWriter, ReadAudit};
use crate::actors::master::{GetStatus, SiteMaster, Status};
use crate::actors::peer::{GetPeerStatus, PeerStatus};
use crate::federation::Federation;

#[derive(Clone)]
struct Api {
    master: Addr<SiteMaster>,
    journal: Addr<JournalWriter>,
    peers: Arc<Federation>,
}

/// Binds the admin API and returns the server to run (on the current actix system).
pub fn serve(
    addr: SocketAddr,
    master: Addr<SiteMaster>,
    journal: Addr<JournalWriter>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    peers: Arc<Federation>,
) -> std::io::Result<actix_web::dev::Server> {
    let scrape = web::Data::new(crate::metrics::Scrape::new(
        metrics,
        master.clone(),
        peers.clone(),
    ));
    let api = Api {
        master,
        journal,
        peers,
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(api.clone()))
            .app_data(scrape.clone())
            .route(
                "/",
                web::get().to(|api: web::Data<Api>| {
                    crate::page::index(api.master.clone(), api.journal.clone(), api.peers.peers())
                }),
            )
            .route("/live", web::get().to(live))
            .route("/ready", web::get().to(ready))
            .route("/v1/status", web::get().to(status))
            .route("/v1/servers", web::get().to(servers))
            .route("/v1/peers", web::get().to(list_peers))
            .route("/v1/accounts", web::get().to(accounts))
            .route("/v1/loans", web::get().to(loans))
            .route("/v1/accounts/{name}/endpoints", web::get().to(endpoints))
            .route("/v1/audit", web::get().to(audit))
            .route("/metrics", web::get().to(crate::metrics::serve_metrics))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?
    .run();
    Ok(server)
}

#[derive(Serialize)]
struct ApiError {
    error: String,
}

fn error(status: actix_web::http::StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(ApiError { error: message })
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
