//! The admin API polls of a campaign: one thread per site asks its gateway for
//! `/v1/accounts` every [`POLL_EVERY`] and records what each account's owner and servers
//! were, or that the gateway did not answer (killed, stopped, restarting).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// A stopped gateway never answers; a poll must not hold the others' cadence for long.
const POLL_TIMEOUT: Duration = Duration::from_millis(600);
/// How old an answer may be and still say how a site stands.
pub const FRESH_MS: u64 = 750;

/// One account as one site's gateway listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSeen {
    pub name: String,
    pub owner: Option<String>,
    pub servers: u64,
    pub min_servers: u64,
    pub max_servers: u64,
}

/// One poll of one site, `at_ms` after the campaign's start; `accounts` is `None` when the
/// gateway did not answer.
#[derive(Debug, Clone)]
pub struct Sample {
    pub site: usize,
    pub at_ms: u64,
    pub accounts: Option<Vec<AccountSeen>>,
}

/// The pollers of every site; [`Pollers::stop`] returns every sample, oldest first.
pub struct Pollers {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pollers {
    pub fn start(admins: &[SocketAddr], start: Instant) -> Result<Pollers, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (site, admin) in admins.iter().copied().enumerate() {
            let (stop, samples) = (stop.clone(), samples.clone());
            let thread = std::thread::Builder::new()
                .name(format!("poll-{site}"))
                .spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .timeout_global(Some(POLL_TIMEOUT))
                        .build()
                        .into();
                    while !stop.load(Ordering::Relaxed) {
                        let asked = Instant::now();
                        let accounts = poll(&agent, admin);
                        let at_ms = asked.saturating_duration_since(start).as_millis() as u64;
                        if let Ok(mut samples) = samples.lock() {
                            samples.push(Sample {
                                site,
                                at_ms,
                                accounts,
                            });
                        }
                        std::thread::sleep(POLL_EVERY.saturating_sub(asked.elapsed()));
                    }
                })
                .map_err(|error| format!("cannot start a poller: {error}"))?;
            threads.push(thread);
        }
        Ok(Pollers {
            stop,
            samples,
            threads,
        })
    }

    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        let mut samples = self
            .samples
            .lock()
            .map(|samples| samples.clone())
            .unwrap_or_default();
        samples.sort_by_key(|sample| sample.at_ms);
        samples
    }
}

fn poll(agent: &ureq::Agent, admin: SocketAddr) -> Option<Vec<AccountSeen>> {
    let body = agent
        .get(&format!("http://{admin}/v1/accounts"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    let value: Value = serde_json::from_str(&body).ok()?;
    Some(value.as_array()?.iter().filter_map(account_seen).collect())
}

fn account_seen(entry: &Value) -> Option<AccountSeen> {
    Some(AccountSeen {
        name: entry["name"].as_str()?.to_owned(),
        owner: entry["owner"].as_str().map(str::to_owned),
        servers: entry["servers"].as_u64().unwrap_or(0),
        min_servers: entry["min_servers"].as_u64().unwrap_or(0),
        max_servers: entry["max_servers"].as_u64().unwrap_or(0),
    })
}

/// What the polls say about one account at one instant: the servers that its owner(s)
/// serve it with, and its minimum as the owner states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub owners: Vec<String>,
    pub servers: u64,
    pub min_servers: u64,
}

/// The samples of each site, in time order, to judge the federation at any instant.
pub struct Timeline {
    per_site: Vec<Vec<Sample>>,
    sites: Vec<String>,
}

impl Timeline {
    pub fn new(samples: &[Sample], sites: &[String]) -> Timeline {
        let mut per_site: Vec<Vec<Sample>> = vec![Vec::new(); sites.len()];
        for sample in samples {
            if let Some(site) = per_site.get_mut(sample.site) {
                site.push(sample.clone());
            }
        }
        for site in &mut per_site {
            site.sort_by_key(|sample| sample.at_ms);
        }
        Timeline {
            per_site,
            sites: sites.to_vec(),
        }
    }

    /// Every sample's time, once, in order: the instants at which the federation is judged.
    pub fn instants(&self) -> Vec<u64> {
        let mut times: Vec<u64> = self.per_site.iter().flatten().map(|s| s.at_ms).collect();
        times.sort_unstable();
        times.dedup();
        times
    }

    /// Each account's standing at `at_ms`, from each site's latest answer at or before it
    /// (a site with no answer in the last [`FRESH_MS`] counts for nothing).
    pub fn standing_at(&self, accounts: &[String], at_ms: u64) -> Vec<(String, Standing)> {
        let latest: Vec<Option<&Vec<AccountSeen>>> = self
            .per_site
            .iter()
            .map(|samples| {
                // The latest answer no older than three polls: one poll that timed out on
                // a busy machine is not an outage, a gateway that stopped answering is.
                let after = samples.partition_point(|sample| sample.at_ms <= at_ms);
                samples[..after]
                    .iter()
                    .rev()
                    .take_while(|sample| at_ms - sample.at_ms <= FRESH_MS)
                    .find_map(|sample| sample.accounts.as_ref())
            })
            .collect();
        accounts
            .iter()
            .map(|account| {
                let mut standing = Standing {
                    owners: Vec::new(),
                    servers: 0,
                    min_servers: 0,
                };
                for (site, seen) in latest.iter().enumerate() {
                    let Some(entry) =
                        seen.and_then(|seen| seen.iter().find(|a| &a.name == account))
                    else {
                        continue;
                    };
                    if entry.owner.as_deref() == Some(self.sites[site].as_str()) {
                        standing.owners.push(self.sites[site].clone());
                        standing.servers += entry.servers;
                        standing.min_servers = standing.min_servers.max(entry.min_servers);
                    }
                }
                (account.clone(), standing)
            })
            .collect()
    }
}

/// Whether every account has an owner serving it with at least its minimum.
pub fn all_at_minimum(standings: &[(String, Standing)]) -> bool {
    standings.iter().all(|(_, standing)| {
        !standing.owners.is_empty() && standing.servers >= standing.min_servers
    })
}
