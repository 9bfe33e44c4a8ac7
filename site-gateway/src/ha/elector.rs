//! The election's shell: a thread that campaigns for the site's election key in etcd,
//! keeps its lease alive while it holds the key, and gives it up on a handover. What the
//! answers mean is decided by [`Candidate`]; this file only carries them, with the time
//! each request was sent.
//!
//! A thread, not an actor: every step is a blocking request with a deadline, and the
//! election must go on while the gateway's runtime is busy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leasehold_etcd::{Compare, Etcd, Lease, Op};
use leasehold_federation::ids::SiteId;
use serde_json::Value;

use super::store::SiteKeys;
use crate::model::Millis;
use crate::model::election::{Candidate, Change, Generation, Holder, Role};

/// How a gateway campaigns.
#[derive(Clone, Debug)]
pub struct ElectorConfig {
    pub site: SiteId,
    /// This gateway's `[[site.gateway]]` name.
    pub name: String,
    /// What the key holds while this gateway is active: its name and addresses, for
    /// standbys to point nodes and operators at.
    pub record: Value,
    /// The etcd lease's TTL: how long a dead active gateway holds the key.
    pub ttl_s: i64,
    /// How long before its lease could end an active gateway stops acting.
    pub margin: Duration,
    /// How often a standby tries for the key (and an active one renews its lease, at most
    /// a third of the TTL).
    pub poll: Duration,
}

/// What the rest of the gateway reads of the election.
struct Shared {
    origin: Instant,
    candidate: Mutex<Candidate>,
    /// The holder's record, as the key held it when last read.
    active_record: Mutex<Option<Value>>,
    resign: AtomicBool,
    stop: AtomicBool,
}

/// A running campaign; dropped, it resigns and ends.
pub struct Elector {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Elector {
    pub fn start(etcd: Arc<Etcd>, config: ElectorConfig) -> Elector {
        let shared = Arc::new(Shared {
            origin: Instant::now(),
            candidate: Mutex::new(Candidate::new(Millis(
                u64::try_from(config.margin.as_millis()).unwrap_or(u64::MAX),
            ))),
            active_record: Mutex::new(None),
            resign: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let campaign = Campaign {
            etcd,
            keys: SiteKeys::new(&config.site),
            config,
            shared: shared.clone(),
            lease: None,
        };
        let thread = std::thread::Builder::new()
            .name("election".to_owned())
            .spawn(move || campaign.run())
            .ok();
        Elector {
            shared,
            thread: Mutex::new(thread),
        }
    }

    /// The generation this gateway may act under now, if it is active.
    pub fn acting(&self) -> Option<Generation> {
        let now = self.shared.now();
        self.shared.candidate().acting(now)
    }

    pub fn role(&self) -> Role {
        self.shared.candidate().role().clone()
    }

    /// The generation this gateway was elected under, as stamped on what it sends its
    /// nodes and peers (docs/ha.md, "Generations"); `None` while standby.
    pub fn stamp(&self) -> Option<u64> {
        match self.role() {
            Role::Active { generation, .. } => u64::try_from(generation.0).ok(),
            Role::Standby { .. } => None,
        }
    }

    /// The active gateway's record (name and addresses), as last read, while standby.
    pub fn active_record(&self) -> Option<Value> {
        self.shared
            .active_record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Give the key up now, so that a standby takes over without waiting for the lease
    /// to end; this gateway campaigns again afterwards, as a standby.
    pub fn handover(&self) {
        self.shared.resign.store(true, Ordering::SeqCst);
    }
}

impl Elector {
    /// Ends the campaign: an active gateway gives the key up (its lease revoked, so a
    /// standby takes over at once rather than when the lease would have ended). Blocks
    /// until done, at most one etcd request's deadline.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn now(&self) -> Millis {
        Millis(u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn candidate(&self) -> std::sync::MutexGuard<'_, Candidate> {
        self.candidate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Campaign {
    etcd: Arc<Etcd>,
    keys: SiteKeys,
    config: ElectorConfig,
    shared: Arc<Shared>,
    /// This gateway's etcd lease and when its last grant or keep-alive was sent.
    lease: Option<(Lease, Millis)>,
}

impl Campaign {
    fn run(mut self) {
        let site = self.config.site.clone();
        let name = self.config.name.clone();
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                self.resign(&site, &name);
                return;
            }
            let active = matches!(self.shared.candidate().role(), Role::Active { .. });
            if active {
                self.keep_active(&site, &name);
            } else {
                self.try_for_key(&site, &name);
            }
        }
    }

    fn report(&self, change: Change, site: &SiteId, name: &str) {
        match change {
            Change::Nothing => {}
            Change::BecameActive(generation) => {
                tracing::info!(%site, gateway = name, %generation, "this gateway is the site's active gateway")
            }
            Change::Deposed { generation, why } => {
                tracing::warn!(%site, gateway = name, %generation, why = %why, "this gateway stopped acting for the site")
            }
            Change::ActiveIs(Some(holder)) => {
                tracing::info!(%site, gateway = name, active = %holder.name, generation = %holder.generation, "standby; another gateway is active")
            }
            Change::ActiveIs(None) => {}
        }
    }

    /// A lease of our own, alive: granted, or kept alive if we hold one.
    fn ensure_lease(&mut self) -> Option<Lease> {
        if let Some((lease, _)) = self.lease {
            let sent = self.shared.now();
            match self.etcd.keep_alive(lease.id) {
                Ok(Some(_)) => {
                    self.lease = Some((lease, sent));
                    return Some(lease);
                }
                Ok(None) => self.lease = None,
                Err(error) => {
                    tracing::debug!(%error, "keeping a standby's lease alive failed");
                    return None;
                }
            }
        }
        let sent = self.shared.now();
        match self.etcd.grant(self.config.ttl_s) {
            Ok(lease) => {
                self.lease = Some((lease, sent));
                Some(lease)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot take an etcd lease to campaign with; trying again");
                None
            }
        }
    }

    fn try_for_key(&mut self, site: &SiteId, name: &str) {
        // A handover asked of a standby has nothing to hand over.
        self.shared.resign.store(false, Ordering::SeqCst);
        if let Some(lease) = self.ensure_lease() {
            let key = self.keys.active();
            let record = serde_json::to_vec(&self.config.record).unwrap_or_default();
            let answer = self.etcd.txn(
                &[Compare::CreatedAt {
                    key: key.clone(),
                    revision: 0,
                }],
                &[Op::Put {
                    key: key.clone(),
                    value: record,
                    lease: lease.id,
                }],
                &[Op::Get { key }],
            );
            match answer {
                Ok(outcome) if outcome.succeeded => {
                    // The lease was last refreshed when `refreshed` was sent: it lasts at
                    // least its TTL from then.
                    let refreshed = self.lease.map_or(Millis(0), |(_, sent)| sent);
                    let ttl = Millis(u64::try_from(lease.ttl_s).unwrap_or(0) * 1_000);
                    let change = self.shared.candidate().won(
                        refreshed,
                        lease.id,
                        ttl,
                        Generation(outcome.revision),
                    );
                    *self.shared.lock_record() = Some(self.config.record.clone());
                    self.report(change, site, name);
                    return;
                }
                Ok(outcome) => {
                    let found = outcome.gets.into_iter().flatten().next();
                    let holder = found.as_ref().map(|kv| {
                        let record: Value =
                            serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                        let holder = Holder {
                            name: record["name"].as_str().unwrap_or("?").to_owned(),
                            generation: Generation(kv.create_revision),
                        };
                        (holder, record)
                    });
                    *self.shared.lock_record() = holder.as_ref().map(|(_, record)| record.clone());
                    let change = self
                        .shared
                        .candidate()
                        .lost(holder.map(|(holder, _)| holder));
                    self.report(change, site, name);
                }
                Err(error) => {
                    tracing::warn!(%error, "campaigning for the site's election key failed; trying again");
                }
            }
        }
        self.pause(self.config.poll);
    }

    fn keep_active(&mut self, site: &SiteId, name: &str) {
        let ttl = Duration::from_secs(u64::try_from(self.config.ttl_s).unwrap_or(1));
        self.pause(self.config.poll.min(ttl / 3));
        if self.shared.resign.swap(false, Ordering::SeqCst) {
            self.resign(site, name);
            // Leave the key to another gateway before trying for it again.
            self.pause(ttl);
            return;
        }
        if let Some((lease, _)) = self.lease {
            let sent = self.shared.now();
            match self.etcd.keep_alive(lease.id) {
                Ok(ttl_left) => {
                    if ttl_left.is_some() {
                        self.lease = Some((lease, sent));
                    } else {
                        self.lease = None;
                    }
                    let ttl_left = ttl_left.map(|s| Millis(u64::try_from(s).unwrap_or(0) * 1_000));
                    let change = self.shared.candidate().kept_alive(sent, lease.id, ttl_left);
                    self.report(change, site, name);
                }
                Err(error) => {
                    tracing::warn!(%error, "keeping the active gateway's etcd lease alive failed")
                }
            }
        }
        let now = self.shared.now();
        let change = self.shared.candidate().tick(now);
        if let Change::Deposed { .. } = change {
            // Unconfirmed: the lease may live on in etcd; give it up, and campaign again
            // with a new one (a new generation).
            if let Some((lease, _)) = self.lease.take() {
                let _ = self.etcd.revoke(lease.id);
            }
        }
        self.report(change, site, name);
    }

    fn resign(&mut self, site: &SiteId, name: &str) {
        let change = self.shared.candidate().resign();
        if let Some((lease, _)) = self.lease.take() {
            // Revoking the lease deletes the key: a standby's next try wins.
            if let Err(error) = self.etcd.revoke(lease.id) {
                tracing::warn!(%error, "giving up the etcd lease failed; a standby takes over once it ends");
            }
        }
        self.report(change, site, name);
    }

    /// Sleeps `duration`, waking early to stop or resign.
    fn pause(&self, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            if self.shared.stop.load(Ordering::SeqCst) || self.shared.resign.load(Ordering::SeqCst)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
        }
    }
}

impl Shared {
    fn lock_record(&self) -> std::sync::MutexGuard<'_, Option<Value>> {
        self.active_record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
