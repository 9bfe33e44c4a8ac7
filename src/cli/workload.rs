//! `leasehold workload`: the demo workload, a small real HTTP service (actix-web) that
//! serves a page per account, burns a set amount of CPU per request, and reports its own
//! load on `/metrics`, so that SLA targets can be set in requests per second rather than
//! in CPU share (which on a shared demo machine says more about the neighbours). It
//! exits promptly on SIGTERM or SIGINT.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, clap::Args)]
pub struct WorkloadArgs {
    /// Where to serve HTTP, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The account's data dir; DIR/index.html, if present, is appended to the page.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The account this instance serves.
    #[arg(long, value_name = "NAME")]
    pub account: String,
    /// CPU to burn per request to `/`, in microseconds.
    #[arg(long, value_name = "US", default_value_t = 2000)]
    pub cost_us: u64,
}

/// The window of the `leasehold_workload_load` gauge.
const LOAD_WINDOW: Duration = Duration::from_secs(2);

struct Workload {
    account: String,
    data: PathBuf,
    cost: Duration,
    requests_total: AtomicU64,
    in_flight: AtomicI64,
    /// When each request of the last `LOAD_WINDOW` arrived.
    recent: Mutex<VecDeque<Instant>>,
}

impl Workload {
    fn requests_per_second(&self) -> f64 {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > LOAD_WINDOW)
        {
            recent.pop_front();
        }
        recent.len() as f64 / LOAD_WINDOW.as_secs_f64()
    }

    fn record_request(&self) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.push_back(Instant::now());
    }
}

/// Counts a request as in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicI64);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicI64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hashes until `cost` has passed: real CPU work that an optimizer cannot remove.
fn burn(cost: Duration) -> u64 {
    let start = Instant::now();
    let mut hasher = DefaultHasher::new();
    let mut round = 0u64;
    while start.elapsed() < cost {
        for _ in 0..64 {
            round.hash(&mut hasher);
            round = round.wrapping_add(hasher.finish());
        }
    }
    round
}

async fn page(state: web::Data<Workload>) -> HttpResponse {
    let _in_flight = InFlight::enter(&state.in_flight);
    state.record_request();
    let cost = state.cost;
    let checksum = burn(cost);
    let index = state.data.join("index.html");
    let extra = web::block(move || std::fs::read_to_string(index).ok())
        .await
        .ok()
        .flatten();
    let mut body = String::new();
    if let Ok(greeting) = std::env::var("GREETING") {
        body.push_str(&greeting);
        body.push('\n');
    }
    let env = |name| std::env::var(name).unwrap_or_else(|_| "-".into());
    body.push_str(&format!(
        "account: {}\nserver: {}\nepoch: {}\nwork: {checksum:x}\n",
        state.account,
        env("LEASEHOLD_SERVER"),
        env("LEASEHOLD_EPOCH"),
    ));
    if let Some(extra) = extra {
        body.push('\n');
        body.push_str(&extra);
    }
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

async fn metrics(state: web::Data<Workload>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(render_metrics(&state))
}

/// The three metrics in Prometheus text format, by hand (three lines need no library).
fn render_metrics(state: &Workload) -> String {
    format!(
        "# HELP leasehold_workload_load Requests per second over the last 2 s.\n\
         # TYPE leasehold_workload_load gauge\n\
         leasehold_workload_load {}\n\
         # HELP leasehold_workload_requests_total Requests served since start.\n\
         # TYPE leasehold_workload_requests_total counter\n\
         leasehold_workload_requests_total {}\n\
         # HELP leasehold_workload_in_flight Requests being served now.\n\
         # TYPE leasehold_workload_in_flight gauge\n\
         leasehold_workload_in_flight {}\n",
        state.requests_per_second(),
        state.requests_total.load(Ordering::Relaxed),
        state.in_flight.load(Ordering::Relaxed),
    )
}

pub fn run(args: WorkloadArgs) -> anyhow::Result<ExitCode> {
    let state = web::Data::new(Workload {
        account: args.account,
        data: args.data,
        cost: Duration::from_micros(args.cost_us),
        requests_total: AtomicU64::new(0),
        in_flight: AtomicI64::new(0),
        recent: Mutex::new(VecDeque::new()),
    });
    let listen = args.listen.clone();
    let shared = state.clone();
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/", web::get().to(page))
                .route("/health", web::get().to(health))
                .route("/metrics", web::get().to(metrics))
        })
        // Two cores are shared by a whole demo; one worker is plenty for a workload.
        .workers(1)
        // actix-server's own SIGTERM handling waits 300 ms more than it needs to; a move's
        // end-to-end budget is 300 ms, so this process handles the signal itself.
        .disable_signals()
        .bind(&listen)
        .with_context(|| format!("cannot listen on {listen}"))?
        .run();
        tracing::info!(%listen, "workload serving");
        let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        tokio::select! {
            outcome = server => outcome.context("workload server failed")?,
            _ = terminate.recv() => finish_in_flight(&shared).await,
            _ = interrupt.recv() => finish_in_flight(&shared).await,
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The node drained this server before it sent SIGTERM, so at most a few requests are
/// left: give them a moment, then go.
async fn finish_in_flight(state: &Workload) {
    let deadline = Instant::now() + Duration::from_millis(200);
    while state.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
