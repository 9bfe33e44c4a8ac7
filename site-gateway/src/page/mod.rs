//! The status page at `/` on the admin address: the site at a glance for a person, rendered
//! on the server (first paint needs no JS) from the same actors the JSON API asks, and kept
//! fresh by a small inline script. No external assets: admin networks often have no route
//! to the internet, and this machine has none.

mod render;

use actix::Addr;
use actix_web::HttpResponse;
use actix_web::http::header;

use crate::actors::journal::{JournalWriter, ReadAudit};
use crate::actors::master::{ConfigStatus, GetStatus, SiteMaster};
use crate::actors::peer::{GetPeerStatus, Peer};
use crate::admin::tokens::Caller;
use crate::journal::AuditRecord;
use crate::model::site::SiteSnapshot;

pub(crate) use render::STYLE;
pub use render::{STATE_ORDER, escape, render};

/// How many audit records the page shows, newest first.
pub const AUDIT_ROWS: usize = 15;

/// Everything the page shows, gathered before rendering so that rendering is a pure
/// function (unit-tested with hostile strings, no actors needed).
#[derive(Debug, Clone)]
pub struct View {
    pub snapshot: SiteSnapshot,
    pub uptime_ms: u64,
    pub rounds: u64,
    pub reallocations: u64,
    pub reallocation_ms_p50: Option<u64>,
    pub reallocation_ms_p99: Option<u64>,
    /// The config file the site runs on and what live edits did; a refused edit shows as
    /// a banner, since the site then runs on a config that is not the file's.
    pub config: Option<ConfigStatus>,
    /// The newest audit records, oldest first (as the journal returns them); an error
    /// shows in the audit section instead of failing the whole page.
    pub audit: Result<Vec<AuditRecord>, String>,
    /// Site-to-site peers; `None` when the gateway could not say (renders a labelled
    /// empty section rather than invented data), empty when none are configured.
    pub peers: Option<Vec<PeerView>>,
    /// Servers lent to or borrowed from peers (`GET /v1/loans`); `None` as for `peers`.
    pub loans: Option<Vec<LoanView>>,
    pub viewer: Viewer,
}

/// One peer site as the page shows it (from its `Peer` actor).
#[derive(Debug, Clone)]
pub struct PeerView {
    pub name: String,
    pub addr: String,
    /// `up`, `suspect` or `down`, as `/v1/peers` spells it.
    pub liveness: String,
    pub rtt_ms: Option<f64>,
    /// Time since the peer last answered, if it ever did.
    pub silent_ms: Option<u64>,
    /// Our connection to it is up.
    pub dialled: bool,
    /// Its connection to us is up.
    pub dialled_in: bool,
    /// The accounts it homes, from its catalogue.
    pub accounts: Vec<String>,
    /// Why the last dial failed, while it is not connected.
    pub last_error: Option<String>,
}

/// Whether a loan brings a server here or sends one of ours away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoanDirection {
    /// A peer's server serves one of our accounts.
    In,
    /// One of our servers serves a peer's account.
    Out,
}

/// One loan as the page shows it.
#[derive(Debug, Clone)]
pub struct LoanView {
    pub direction: LoanDirection,
    pub server: String,
    /// The lender (for `In`) or the borrower (for `Out`).
    pub site: String,
    pub account: String,
    pub epoch: u64,
    pub expires_in_ms: Option<u64>,
}

/// Who looks at the page, and what they must be warned of.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// The signed-in token (or `anonymous`), as the gate found it.
    pub caller: Option<Caller>,
    /// Plain HTTP or anonymous reads on an address others reach (`AdminSection::warnings`).
    pub warnings: Vec<String>,
    /// A token file is configured, so there is a sign-in to leave.
    pub can_sign_out: bool,
    /// When each certificate expires (Unix time), named as the page names it (`site`,
    /// `node a1`); the page warns 30 days before.
    pub certificates: Vec<(String, i64)>,
    /// Now, on the gateway's wall clock (Unix time), to count the days left.
    pub now_unix: i64,
}

/// `GET /`: the status page. Takes the actors' addresses rather than the API's state type
/// so that the page stays a module of its own, with one route in `api.rs`.
pub async fn index(
    master: Addr<SiteMaster>,
    journal: Addr<JournalWriter>,
    peers: Vec<Addr<Peer>>,
    viewer: Viewer,
) -> HttpResponse {
    let Ok(status) = master.send(GetStatus).await else {
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body("the site master is not answering; the gateway may be shutting down\n");
    };
    let audit = match journal
        .send(ReadAudit {
            after: None,
            limit: AUDIT_ROWS,
        })
        .await
    {
        Ok(Ok(records)) => Ok(records),
        Ok(Err(failure)) => Err(failure.to_string()),
        Err(_) => Err("the journal is not answering".to_owned()),
    };
    let mut viewer = viewer;
    // Of the node agents' certificates, the one that expires first.
    if let Some((server, at)) = status.snapshot.earliest_node_certificate() {
        viewer.certificates.push((format!("node {server}"), at));
    }
    let view = View {
        snapshot: status.snapshot,
        uptime_ms: status.uptime_ms,
        rounds: status.rounds,
        reallocations: status.reallocations,
        reallocation_ms_p50: status.reallocation_ms_p50,
        reallocation_ms_p99: status.reallocation_ms_p99,
        config: Some(status.config),
        audit,
        peers: peer_views(&peers).await,
        loans: loan_views(&master).await,
        viewer,
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // The page is a live view: a cached copy would show a site that no longer exists.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(render(&view))
}

/// The servers this site borrowed and lent; `None` if the master does not answer.
async fn loan_views(master: &Addr<SiteMaster>) -> Option<Vec<LoanView>> {
    let loans = master.send(crate::actors::loans::GetLoans).await.ok()?;
    let borrowed = loans.borrowed.into_iter().map(|loan| LoanView {
        direction: LoanDirection::In,
        server: loan.server.to_string(),
        site: loan.lender.to_string(),
        account: loan.account.to_string(),
        epoch: loan.epoch,
        expires_in_ms: Some(loan.expires_in_ms),
    });
    let lent = loans.lent.into_iter().map(|loan| LoanView {
        direction: LoanDirection::Out,
        server: loan.server.to_string(),
        site: loan.borrower.to_string(),
        account: loan.account.to_string(),
        epoch: loan.epoch,
        expires_in_ms: Some(loan.expires_in_ms),
    });
    Some(borrowed.chain(lent).collect())
}

/// What each peer actor says; `None` if one does not answer (the gateway is stopping).
async fn peer_views(peers: &[Addr<Peer>]) -> Option<Vec<PeerView>> {
    let mut views = Vec::with_capacity(peers.len());
    for peer in peers {
        let status = peer.send(GetPeerStatus).await.ok()?;
        views.push(PeerView {
            name: status.name.to_string(),
            addr: status.addr.to_string(),
            // Spelled as the JSON API spells it, so page, CLI and API agree.
            liveness: serde_json::to_value(status.state)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", status.state)),
            rtt_ms: status.rtt_ms,
            silent_ms: status.silent_ms,
            dialled: status.dialled,
            dialled_in: status.dialled_in,
            last_error: status.last_error.clone(),
            accounts: status.accounts,
        });
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Some(views)
}
