//! A customer request load on one account: a thread sends `GET /` round robin to the
//! account's endpoints, as its gateway lists them (refreshed every second, so servers that
//! join or leave are followed), at a rate that can change while it runs, and counts what
//! worked. The demo drives its schedule with it; load-driven tests can too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::admin::get_json;

/// How often the endpoints are asked for again.
const REFRESH: Duration = Duration::from_secs(1);
/// One request's budget: a server that went away must not stall the schedule for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest the driver sleeps at once, so that a new rate or a stop is seen quickly.
const SLICE: Duration = Duration::from_millis(20);
/// After a stall (slow answers), at most this much backlog is sent late; the rest is
/// dropped, since a burst would measure the stall, not the schedule.
const MAX_BACKLOG: Duration = Duration::from_secs(1);

/// Requests so far. `failed` counts requests answered with an error status, not answered
/// in time, or with no endpoint to go to (a customer with nowhere to go is not served).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadCounts {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
}

#[derive(Default)]
struct Shared {
    /// Requests per second, as f64 bits, so the rate can change without a lock.
    rate_bits: AtomicU64,
    stop: AtomicBool,
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    /// When each failed request was sent, for judging failures against fault windows.
    failed_at: Mutex<Vec<Instant>>,
}

impl Shared {
    fn rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }

    fn counts(&self) -> LoadCounts {
        LoadCounts {
            sent: self.sent.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// The load on one account; stops (and joins its thread) on [`LoadDriver::stop`] or drop.
pub struct LoadDriver {
    account: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LoadDriver {
    /// Starts sending to `account`'s endpoints as listed by the gateway at `admin`, at
    /// `rate` requests per second (0 sends nothing).
    pub fn start(admin: SocketAddr, account: &str, rate: f64) -> Result<LoadDriver, String> {
        LoadDriver::start_any(vec![admin], account, rate)
    }

    /// [`LoadDriver::start`], asking each gateway of `admins` in turn for the endpoints and
    /// taking the first non-empty list, so that the load follows an account to whichever
    /// site serves it (a failover moves it).
    pub fn start_any(
        admins: Vec<SocketAddr>,
        account: &str,
        rate: f64,
    ) -> Result<LoadDriver, String> {
        let shared = Arc::new(Shared::default());
        let driver_shared = shared.clone();
        let path = format!("/v1/accounts/{account}/endpoints");
        let thread = std::thread::Builder::new()
            .name(format!("load-{account}"))
            .spawn(move || drive(&admins, &path, &driver_shared))
            .map_err(|error| format!("cannot start the load thread for {account}: {error}"))?;
        let driver = LoadDriver {
            account: account.to_owned(),
            shared,
            thread: Some(thread),
        };
        driver.set_rate(rate);
        Ok(driver)
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// Changes the rate from the next request on. Negative and NaN rates mean 0.
    pub fn set_rate(&self, rate: f64) {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            0.0
        };
        self.shared
            .rate_bits
            .store(rate.to_bits(), Ordering::Relaxed);
    }

    pub fn rate(&self) -> f64 {
        self.shared.rate()
    }

    pub fn counts(&self) -> LoadCounts {
        self.shared.counts()
    }

    /// When each failed request so far was sent.
    pub fn failure_times(&self) -> Vec<Instant> {
        self.shared
            .failed_at
            .lock()
            .map(|times| times.clone())
            .unwrap_or_default()
    }

    /// Stops sending, waits for the request in flight, and returns the final counts.
    pub fn stop(mut self) -> LoadCounts {
        self.halt();
        self.shared.counts()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LoadDriver {
    fn drop(&mut self) {
        self.halt();
    }
}

fn drive(admins: &[SocketAddr], path: &str, shared: &Shared) {
    // One agent for the whole run, so connections to a workload are kept alive between
    // requests, as a real client's would be.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut endpoints: Vec<String> = Vec::new();
    let mut refreshed: Option<Instant> = None;
    let mut turn = 0usize;
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if refreshed.is_none_or(|at| now.duration_since(at) >= REFRESH) {
            // A failed refresh keeps the last list: the gateway being slow for a moment
            // is no reason to stop sending to servers that were serving. An empty list
            // from a gateway that answered is believed (nowhere to go is a failure).
            if let Some(listed) = refresh(admins, path) {
                endpoints = listed;
            }
            refreshed = Some(now);
        }
        let rate = shared.rate();
        if rate <= 0.0 {
            next = now;
            std::thread::sleep(SLICE);
            continue;
        }
        if now < next {
            std::thread::sleep((next - now).min(SLICE));
            continue;
        }
        next += Duration::from_secs_f64(1.0 / rate);
        if next + MAX_BACKLOG < now {
            next = now;
        }
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let served = match endpoints.get(turn % endpoints.len().max(1)) {
            Some(endpoint) => {
                turn = turn.wrapping_add(1);
                request(&agent, endpoint)
            }
            None => false,
        };
        if served {
            shared.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut times) = shared.failed_at.lock() {
                times.push(now);
            }
        }
    }
}

/// The first non-empty endpoint list of the gateways in `admins`; an empty list if some
/// answered but none listed any; `None` if none answered.
fn refresh(admins: &[SocketAddr], path: &str) -> Option<Vec<String>> {
    let mut answered = false;
    for admin in admins {
        let Some(listed) = get_json(*admin, path).ok() else {
            continue;
        };
        let Some(listed) = listed.as_array() else {
            continue;
        };
        answered = true;
        let endpoints: Vec<String> = listed
            .iter()
            .filter_map(|entry| entry.as_str().map(str::to_owned))
            .collect();
        if !endpoints.is_empty() {
            return Some(endpoints);
        }
    }
    answered.then(Vec::new)
}

/// One `GET /`; true for a 2xx answer read to the end.
fn request(agent: &ureq::Agent, endpoint: &str) -> bool {
    match agent.get(&format!("http://{endpoint}/")).call() {
        Ok(mut response) => {
            response.status().is_success() && response.body_mut().read_to_string().is_ok()
        }
        Err(_) => false,
    }
}
