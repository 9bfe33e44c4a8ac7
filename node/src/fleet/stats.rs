//! What the fleet counts for its progress and status lines: connections, registrations,
//! renewals, errors, refusals with their reasons, and the process's own memory and CPU (so
//! that the cost of N simulated servers is printed, not guessed).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use leasehold_federation::ids::{AccountId, ServerId};

use crate::actors::link::LinkWatch;
use crate::driver::os;

/// Shared by every simulated server's link and actor; counters only, so atomics suffice.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Links whose QUIC handshake completed and that have not lost the connection since.
    pub connected: AtomicUsize,
    /// Links registered with the gateway now.
    pub registered: AtomicUsize,
    /// Servers that have registered at least once.
    pub ever_registered: AtomicUsize,
    pub renewals: AtomicU64,
    pub renewals_refused: AtomicU64,
    pub errors: Errors,
    /// Per server that has never registered: how often, and why, the gateway refused it.
    refusals: Mutex<BTreeMap<ServerId, (u32, String)>>,
}

/// What went wrong, by kind: a fleet that counts thousands of errors under load should say
/// whether its servers cannot reach the gateway, lose their connections, or go unanswered.
#[derive(Debug, Default)]
pub struct Errors {
    /// Dials and registrations that failed: unreachable, no answer in time, or closed.
    pub dials: AtomicU64,
    /// Refusals by the gateway: its TLS policy, or `Registration::Refused`.
    pub refused: AtomicU64,
    /// Registered connections lost.
    pub lost: AtomicU64,
    /// Renewals with no answer within their timeout, or answered for another epoch.
    pub unanswered: AtomicU64,
    /// Pulses that could not be sent.
    pub pulses: AtomicU64,
    /// Reports (joined, failed, stopped) not delivered.
    pub reports: AtomicU64,
}

impl Errors {
    /// Each kind by the name the status line gives it.
    pub fn kinds(&self) -> [(&'static str, u64); 6] {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        [
            ("dials", load(&self.dials)),
            ("refused", load(&self.refused)),
            ("lost", load(&self.lost)),
            ("unanswered", load(&self.unanswered)),
            ("pulses", load(&self.pulses)),
            ("reports", load(&self.reports)),
        ]
    }

    pub fn total(&self) -> u64 {
        self.kinds().iter().map(|(_, count)| count).sum()
    }

    /// `17 (dials 3, unanswered 14)`: the total, then each kind that happened.
    fn describe(&self) -> String {
        let happened: Vec<String> = self
            .kinds()
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        if happened.is_empty() {
            "0".to_owned()
        } else {
            format!("{} ({})", self.total(), happened.join(", "))
        }
    }
}

/// Each simulated server's link (the agent's own, `actors::link`) counts here.
impl LinkWatch for FleetStats {
    fn reached(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    fn left(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }

    fn refused(&self, server: &ServerId, why: String) {
        FleetStats::refused(self, server, why);
    }

    fn failed(&self) {
        self.errors.dials.fetch_add(1, Ordering::Relaxed);
    }

    fn registered(&self, server: &ServerId, first_time: bool) {
        FleetStats::registered(self, server, first_time);
    }

    fn lost(&self) {
        self.registered.fetch_sub(1, Ordering::Relaxed);
        self.connected.fetch_sub(1, Ordering::Relaxed);
        self.errors.lost.fetch_add(1, Ordering::Relaxed);
    }
}

impl FleetStats {
    /// The gateway refused `server` (its TLS policy, or `Registration::Refused`).
    pub fn refused(&self, server: &ServerId, reason: String) {
        self.errors.refused.fetch_add(1, Ordering::Relaxed);
        let mut refusals = self.lock_refusals();
        let entry = refusals.entry(server.clone()).or_insert((0, String::new()));
        entry.0 += 1;
        entry.1 = reason;
    }

    /// `server` registered: it counts as admitted from now on.
    pub fn registered(&self, server: &ServerId, first_time: bool) {
        self.registered.fetch_add(1, Ordering::Relaxed);
        if first_time {
            self.ever_registered.fetch_add(1, Ordering::Relaxed);
        }
        self.lock_refusals().remove(server);
    }

    /// When no server of `count` has ever registered and each has been refused at least
    /// `times`: one refusal reason, for the error that ends the fleet.
    pub fn refused_everywhere(&self, count: usize, times: u32) -> Option<String> {
        if self.ever_registered.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let refusals = self.lock_refusals();
        if refusals.len() < count || refusals.values().any(|(seen, _)| *seen < times) {
            return None;
        }
        refusals
            .iter()
            .next()
            .map(|(server, (_, reason))| format!("{server}: {reason}"))
    }

    /// How many servers are being refused now.
    pub fn refused_now(&self) -> usize {
        self.lock_refusals().len()
    }

    fn lock_refusals(&self) -> std::sync::MutexGuard<'_, BTreeMap<ServerId, (u32, String)>> {
        // Plain counts and strings: valid after any panic, which is fatal anyway.
        self.refusals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The fleet process's own resident memory and CPU time, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub rss_bytes: Option<u64>,
    pub cpu: Option<Duration>,
    pub at: Instant,
}

impl Usage {
    /// This process's.
    pub fn now() -> Usage {
        Usage::of(std::process::id())
    }

    /// Process `pid`'s, from /proc.
    pub fn of(pid: u32) -> Usage {
        let rss_bytes = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmRSS:"))
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .map(|kib: u64| kib * 1024);
        let cpu = os::cpu_ticks(pid)
            .map(|ticks| Duration::from_secs_f64(ticks as f64 / os::ticks_per_second()));
        Usage {
            rss_bytes,
            cpu,
            at: Instant::now(),
        }
    }

    /// "rss 183 MiB, cpu 41% of a core" since `earlier`.
    pub fn describe_since(&self, earlier: &Usage) -> String {
        let rss = self
            .rss_bytes
            .map_or("?".to_owned(), |bytes| format!("{}", bytes / (1024 * 1024)));
        let cpu = match (self.cpu, earlier.cpu) {
            (Some(now), Some(then)) => {
                let wall = self.at.duration_since(earlier.at).as_secs_f64();
                if wall > 0.0 {
                    format!(
                        "{:.0}%",
                        100.0 * now.saturating_sub(then).as_secs_f64() / wall
                    )
                } else {
                    "?".to_owned()
                }
            }
            _ => "?".to_owned(),
        };
        format!("rss {rss} MiB, cpu {cpu} of a core")
    }
}

/// One status line: registered, serving per account, renewals/s, errors, cost.
pub fn status_line(
    count: usize,
    stats: &FleetStats,
    serving: &BTreeMap<AccountId, usize>,
    renewals_per_second: f64,
    usage: &str,
) -> String {
    let serving = if serving.is_empty() {
        "none".to_owned()
    } else {
        serving
            .iter()
            .map(|(account, servers)| format!("{account}={servers}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let refused = match stats.refused_now() {
        0 => String::new(),
        refused => format!(", refused {refused}"),
    };
    format!(
        "registered {}/{count}, serving {serving}, renewals {renewals_per_second:.0}/s, errors {}{refused}; {usage}",
        stats.registered.load(Ordering::Relaxed),
        stats.errors.describe(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_everywhere_needs_every_server_refused_often_enough_and_none_admitted() {
        let stats = FleetStats::default();
        let (g1, g2) = (
            ServerId::parse("g1").unwrap(),
            ServerId::parse("g2").unwrap(),
        );
        stats.refused(&g1, "not in the inventory".into());
        stats.refused(&g2, "not in the inventory".into());
        assert_eq!(stats.refused_everywhere(2, 2), None);
        stats.refused(&g1, "not in the inventory".into());
        stats.refused(&g2, "not in the inventory".into());
        assert_eq!(
            stats.refused_everywhere(2, 2).as_deref(),
            Some("g1: not in the inventory")
        );
        assert_eq!(stats.refused_everywhere(3, 2), None);
        stats.registered(&g1, true);
        assert_eq!(stats.refused_everywhere(1, 1), None);
        assert_eq!(stats.refused_now(), 1);
    }

    #[test]
    fn the_status_line_says_which_errors_happened() {
        let stats = FleetStats::default();
        let line = |stats: &FleetStats| status_line(3, stats, &BTreeMap::new(), 6.0, "rss 1 MiB");
        assert!(line(&stats).contains(", errors 0;"), "{}", line(&stats));
        stats.errors.dials.fetch_add(3, Ordering::Relaxed);
        stats.errors.unanswered.fetch_add(14, Ordering::Relaxed);
        assert!(
            line(&stats).contains(", errors 17 (dials 3, unanswered 14);"),
            "{}",
            line(&stats)
        );
    }
}
