//! The admin API polls of a campaign: one thread per site asks its gateway for
//! `/v1/accounts` every [`POLL_EVERY`] and records what each account's owner and servers
//! were, or that the gateway did not answer (killed, stopped, restarting). A site of
//! standby gateways is asked at each gateway's address in turn until one answers (a
//! standby answers 503).

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
    /// `admins`: each site's admin addresses (one, or one per gateway of a site of
    /// standbys).
    pub fn start(admins: &[Vec<SocketAddr>], start: Instant) -> Result<Pollers, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (site, addrs) in admins.iter().cloned().enumerate() {
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
                        let accounts = addrs.iter().find_map(|admin| poll(&agent, *admin));
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
                let after = samples.partition_point(|sample| sample.at_ms <= at_ms);
                latest_answer(samples, after, at_ms)
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

/// The answer that says how a site stood at `at_ms`, given that `samples[..after]` are
/// its samples up to then: the latest sample, unless it is a blip (one poll that timed out
/// on a busy machine between two answers), in which case the answer before it; `None` when
/// the site was not answering (killed, stopped) or its answer is older than [`FRESH_MS`].
fn latest_answer(samples: &[Sample], after: usize, at_ms: u64) -> Option<&Vec<AccountSeen>> {
    let answered = |ix: usize| samples.get(ix).is_some_and(|s| s.accounts.is_some());
    let mut ix = after.checked_sub(1)?;
    while !answered(ix) {
        let blip = ix > 0 && answered(ix - 1) && answered(ix + 1);
        if !blip {
            return None;
        }
        ix -= 1;
    }
    let sample = &samples[ix];
    (at_ms - sample.at_ms <= FRESH_MS)
        .then_some(sample.accounts.as_ref())
        .flatten()
}

/// Whether every account has an owner serving it with at least its minimum.
pub fn all_at_minimum(standings: &[(String, Standing)]) -> bool {
    standings.iter().all(|(_, standing)| {
        !standing.owners.is_empty() && standing.servers >= standing.min_servers
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, servers: Option<u64>) -> Sample {
        Sample {
            site: 0,
            at_ms,
            accounts: servers.map(|servers| {
                vec![AccountSeen {
                    name: "shop".into(),
                    owner: Some("site-a".into()),
                    servers,
                    min_servers: 1,
                    max_servers: 2,
                }]
            }),
        }
    }

    fn at_minimum(samples: &[Sample], at_ms: u64) -> bool {
        let timeline = Timeline::new(samples, &["site-a".to_owned()]);
        all_at_minimum(&timeline.standing_at(&["shop".to_owned()], at_ms))
    }

    /// One missed poll between two answers is a busy machine, not an outage; a gateway
    /// that stops answering is below the minimum from its first missed poll.
    #[test]
    fn a_single_missed_poll_is_a_blip_and_a_silent_gateway_an_outage() {
        let blip = [sample(0, Some(1)), sample(250, None), sample(500, Some(1))];
        assert!(at_minimum(&blip, 300));
        let silent = [sample(0, Some(1)), sample(250, None), sample(500, None)];
        assert!(!at_minimum(&silent, 300));
        assert!(!at_minimum(&silent, 600));
        let short = [sample(0, Some(1)), sample(250, Some(0))];
        assert!(!at_minimum(&short, 300));
        // An answer older than FRESH_MS says nothing.
        assert!(!at_minimum(&[sample(0, Some(1))], FRESH_MS + 1));
    }
}
