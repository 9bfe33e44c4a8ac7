//! A standby gateway, until it acts: its admin address answers `/live`, `/metrics` (that it
//! does not act, and its view of the site's store, [`super::warm`]), and `/ready` with 503
//! saying it is standby, who is active, and what it last read of the store; every other
//! request gets 503 naming the active gateway's admin address. Its management listener is
//! open and refuses every registration, naming the active gateway (a node agent given
//! every gateway dials them all and registers with the one that accepts, docs/node.md);
//! once it acts, the same listener serves its nodes. Its federation listener closes every peer's connection as
//! soon as it is made, with the same words; once it acts, it serves its peers.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use leasehold_federation::ids::SiteId;
use leasehold_federation::transport::connection::close_code;
use leasehold_federation::transport::endpoint::Endpoint;
use leasehold_federation::wire::common::{Refusal, RefusalCause};
use leasehold_federation::wire::node::Registration;
use leasehold_federation::wire::{Inbound, InboundRequest};

use super::Elector;
use super::warm::WarmView;
use crate::model::election::Generation;

/// How long a standby waits for a node to read its refusal and close.
const REFUSAL_READ: Duration = Duration::from_secs(2);

/// How often a standby looks whether it acts now.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// Serves the standby's admin API on `admin` (a second handle of the admin socket) until
/// `election` says this gateway acts: then stops serving, leaving the socket bound for the
/// active gateway's API, and returns its generation.
pub async fn until_active(
    site: &str,
    name: &str,
    admin: std::net::TcpListener,
    admin_tls: Option<rustls::ServerConfig>,
    (management, federation): (Arc<Endpoint>, Arc<Endpoint>),
    (election, etcd): (Arc<Elector>, Arc<leasehold_etcd::Etcd>),
) -> std::io::Result<Generation> {
    // The config's site name, checked when it was read.
    let site_id = SiteId::parse(site).map_err(|error| std::io::Error::other(error.to_string()))?;
    let view = WarmView::default();
    let reading = tokio::spawn(view.clone().keep_reading(etcd, site_id.clone()));
    let site = site.to_owned();
    let name = name.to_owned();
    let refusing = tokio::spawn(refuse_registrations(
        management,
        site.clone(),
        name.clone(),
        election.clone(),
    ));
    let refusing_peers = tokio::spawn(refuse_peers(
        federation,
        site.clone(),
        name.clone(),
        election.clone(),
    ));
    let answers = election.clone();
    let shown = view.clone();
    let server = HttpServer::new(move || {
        let election = answers.clone();
        let site = site.clone();
        let name = name.clone();
        let view = shown.clone();
        let metrics_view = shown.clone();
        let metrics_site = site_id.clone();
        App::new()
            .route(
                "/live",
                web::get().to(|| async { HttpResponse::Ok().body("live\n") }),
            )
            .route(
                "/metrics",
                web::get().to(move || {
                    let text = metrics_view.metrics(&metrics_site);
                    async move {
                        match text {
                            Ok(text) => HttpResponse::Ok()
                                .content_type(
                                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                                )
                                .body(text),
                            Err(_) => HttpResponse::InternalServerError()
                                .body("cannot encode the metrics\n"),
                        }
                    }
                }),
            )
            .default_service(web::to(move || {
                let words = format!(
                    "{}; {}\n",
                    standby_words(&site, &name, &election).trim_end(),
                    view.words()
                );
                async move { HttpResponse::ServiceUnavailable().body(words) }
            }))
    })
    .workers(1)
    .disable_signals();
    // Over TLS where the admin address is configured so, as the active gateway serves it.
    let server = match admin_tls {
        Some(tls) => server.listen_rustls_0_23(admin, tls)?,
        None => server.listen(admin)?,
    }
    .run();
    let handle = server.handle();
    let serving = actix::spawn(server);
    let generation = loop {
        if let Some(generation) = election.acting() {
            break generation;
        }
        tokio::time::sleep(LOOK_EVERY).await;
    };
    handle.stop(true).await;
    let _ = serving.await;
    // The listeners stay open for the active gateway's own accept loops.
    reading.abort();
    refusing.abort();
    refusing_peers.abort();
    Ok(generation)
}

/// Answers every registration on the management listener with a refusal that names the
/// active gateway, then closes the connection.
async fn refuse_registrations(
    management: Arc<Endpoint>,
    site: String,
    name: String,
    election: Arc<Elector>,
) {
    while let Some(handshake) = management.accept().await {
        let words = standby_words(&site, &name, &election);
        tokio::spawn(async move {
            let Ok((connection, mut inbox)) = handshake.finish().await else {
                return;
            };
            while let Some(Ok(message)) = inbox.next().await {
                if let Inbound::Request(InboundRequest::RegisterServer(_, reply)) = message {
                    let refused = Registration::Refused(Refusal {
                        cause: RefusalCause::NotAllowed,
                        detail: words.trim_end().to_owned(),
                    });
                    let _ = reply.send(&refused).await;
                    // The node closes once it has read the refusal; closing first could
                    // drop the answer in flight.
                    let _ = tokio::time::timeout(REFUSAL_READ, async {
                        while let Some(Ok(_)) = inbox.next().await {}
                    })
                    .await;
                    break;
                }
            }
            connection.close(0, "standby gateway");
        });
    }
}

/// Closes every peer's connection on the federation listener as soon as it is made,
/// naming the active gateway: a peer dials every gateway of a site of standbys in turn
/// and talks to the one whose hello is answered.
async fn refuse_peers(
    federation: Arc<Endpoint>,
    site: String,
    name: String,
    election: Arc<Elector>,
) {
    while let Some(handshake) = federation.accept().await {
        let words = standby_words(&site, &name, &election);
        tokio::spawn(async move {
            if let Ok((connection, _inbox)) = handshake.finish().await {
                connection.close(close_code::REFUSED, words.trim_end());
            }
        });
    }
}

/// "standby: …", with the active gateway's name and admin address where known.
fn standby_words(site: &str, name: &str, election: &Elector) -> String {
    match election.active_record() {
        Some(record) => format!(
            "standby: gateway {name} of site {site} is a standby; the active gateway is {} (admin http://{}, management {})\n",
            record["name"].as_str().unwrap_or("?"),
            record["admin_addr"].as_str().unwrap_or("?"),
            record["management_addr"].as_str().unwrap_or("?"),
        ),
        None => format!(
            "standby: gateway {name} of site {site} is a standby; no gateway of the site is active yet\n"
        ),
    }
}
