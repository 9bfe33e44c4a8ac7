//! The federation a campaign runs on: `sites` sites named `site-a`, `site-b`, ...; each
//! with three servers and one account of its own (SLA minimum 1, maximum 2), failing over
//! to the other sites in order, and the timings whose bounds the checks hold it to.

use crate::harness::onesite::{FAST_TIMINGS, account};
use crate::harness::site::SiteSpec;

/// Servers per site: its own account at its minimum, one account taken over from a failed
/// peer, and one spare for a config edit that raises a minimum.
pub const SERVERS_PER_SITE: usize = 3;

/// Ownership timings of the campaign (as `tests/failover.rs`): TTL and renew interval.
pub const OWNERSHIP_TTL_MS: u64 = 1500;
pub const OWNERSHIP_RENEW_MS: u64 = 250;
/// How long a site that took an account over waits, once its home is back, to hand it back.
pub const FAILBACK_AFTER_MS: u64 = 2000;

/// The failover bound the checks hold each fault to: from a fault's end, every account is
/// back at its SLA minimum within this. docs/ownership.md derives about 2.3 s for these
/// timings (grants run out after `ttl × 1.01`, a claim every renew interval plus up to
/// 200 ms, a round, the workload's start); the rest is room for two loaded cores, as
/// `tests/failover.rs` allows.
pub const RECOVERY_BOUND_MS: u64 = 6000;

/// The quiet time after every fault before the next may start: the recovery bound, then a
/// failback (a taken-over account goes home `FAILBACK_AFTER_MS` after its home is back,
/// stop-then-start, which takes up to another recovery bound). So that "back at the
/// minimum after each fault" judges that fault alone.
pub const RECOVERY_GAP_MS: u64 = RECOVERY_BOUND_MS + FAILBACK_AFTER_MS + RECOVERY_BOUND_MS;

/// The timings of every site when the first runs standby gateways (`gateway-takeover`):
/// node leases and ownership grants that outlast a takeover (docs/ha.md, "The timing": at
/// least etcd's 2 s lease plus 3 s), the same ownership TTL at every site. A whole site
/// fails over after the longer TTL; this scenario fails none over.
pub const STANDBY_TIMINGS: [(&str, u64); 2] = [("lease_ttl_ms", 8000), ("ownership_ttl_ms", 6000)];

/// The largest federation a campaign builds (site letters a..z).
pub const MAX_SITES: usize = 26;

pub fn site_name(index: usize) -> String {
    format!("site-{}", letter(index))
}

pub fn server_name(site: usize, server: usize) -> String {
    format!("{}{}", letter(site), server + 1)
}

pub fn account_name(site: usize) -> String {
    const NAMES: [&str; 5] = ["shop", "wiki", "mail", "chat", "docs"];
    match NAMES.get(site) {
        Some(name) => (*name).to_owned(),
        None => format!("acct-{}", letter(site)),
    }
}

fn letter(index: usize) -> char {
    char::from(b'a' + (index % MAX_SITES) as u8)
}

/// The site specs of a campaign of `sites` sites.
pub fn specs(sites: usize) -> Vec<SiteSpec> {
    let mut timings = FAST_TIMINGS.to_vec();
    timings.extend([
        ("ownership_ttl_ms", OWNERSHIP_TTL_MS),
        ("ownership_renew_interval_ms", OWNERSHIP_RENEW_MS),
        ("failback_after_ms", FAILBACK_AFTER_MS),
    ]);
    (0..sites)
        .map(|site| SiteSpec {
            name: site_name(site),
            servers: (0..SERVERS_PER_SITE)
                .map(|server| server_name(site, server))
                .collect(),
            accounts: vec![account(&account_name(site), 1, 2, 10 + site as u32)],
            timings: timings.clone(),
            lending: None,
        })
        .collect()
}
