//! The federation a simulation runs: `sites` founding sites named as a campaign's
//! (`site-a`, ...), each with `servers` servers and one account of its own (SLA minimum 1,
//! maximum 2), failing over to the other members in order, lending one server to any
//! peer, with the campaign's fast timings; and, when the members change, spare sites after
//! them with servers and no account of their own, which the operator adds and removes.
//! Built as validated configs directly: nothing is written.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use leasehold_federation::ids::{AccountId, ServerId, SiteId};
use leasehold_site_gateway::config::{
    Account, Lending, Peer, Server, SiteConfig, SiteSection, Timings, Workload,
};

use crate::campaign::layout::{
    FAILBACK_AFTER_MS, OWNERSHIP_RENEW_MS, OWNERSHIP_TTL_MS, account_name, server_name, site_name,
};
use crate::harness::onesite::FAST_TIMINGS;

/// Load per server the accounts aim for; the simulated workloads report around it.
pub const TARGET_LOAD: f64 = 5.0;

fn parsed<T>(
    parse: impl Fn(&str) -> Result<T, leasehold_federation::ids::InvalidId>,
    text: &str,
) -> T {
    // The names are made here from fixed patterns, so they always parse.
    parse(text).unwrap_or_else(|error| panic!("the simulation names `{text}`: {error}"))
}

pub fn site_id(site: usize) -> SiteId {
    parsed(SiteId::parse, &site_name(site))
}

pub fn server_id(site: usize, server: usize) -> ServerId {
    parsed(ServerId::parse, &server_name(site, server))
}

pub fn account_id(site: usize) -> AccountId {
    parsed(AccountId::parse, &account_name(site))
}

/// A placeholder address: nothing listens in a simulation, but configs carry addresses
/// (service addresses reach the borrower in a loan).
fn addr(site: usize, port: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], (10_000 + site * 100 + port) as u16))
}

/// The campaign's fast timings, with its ownership timings.
pub fn timings() -> Timings {
    let fast: BTreeMap<&str, u64> = FAST_TIMINGS.iter().copied().collect();
    let ms = |key: &str| Duration::from_millis(fast[key]);
    Timings {
        lease_ttl: ms("lease_ttl_ms"),
        renew_interval: ms("renew_interval_ms"),
        node_renew_interval: ms("renew_interval_ms"),
        heartbeat_interval: ms("heartbeat_interval_ms"),
        node_heartbeat_interval: ms("heartbeat_interval_ms"),
        heartbeat_misses_before_failed: fast["heartbeat_misses_before_failed"] as u32,
        move_cooldown: ms("move_cooldown_ms"),
        drain_timeout: ms("drain_timeout_ms"),
        workload_stop_timeout: ms("workload_stop_timeout_ms"),
        ownership_ttl: Duration::from_millis(OWNERSHIP_TTL_MS),
        ownership_renew_interval: Duration::from_millis(OWNERSHIP_RENEW_MS),
        failback_after: Duration::from_millis(FAILBACK_AFTER_MS),
        machine_boot_timeout: Duration::from_millis(Timings::DEFAULT_MACHINE_BOOT_TIMEOUT_MS),
        machine_power_timeout: Duration::from_millis(Timings::DEFAULT_MACHINE_POWER_TIMEOUT_MS),
    }
}

/// The account homed at `site`, failing over to the other `members` (site indices, in
/// order) from the one after it.
pub fn member_account(site: usize, members: &[usize], min: u32, max: u32) -> Account {
    let name = account_name(site);
    let at = members.iter().position(|m| *m == site).unwrap_or(0);
    Account {
        name: account_id(site),
        min_servers: min,
        max_servers: max,
        priority: 10 + site as u32,
        target_load: TARGET_LOAD,
        failover: (1..members.len())
            .map(|step| site_id(members[(at + step) % members.len()]))
            .collect(),
        pinned: false,
        workload: Workload {
            software: format!("{name} 1"),
            command: "{leasehold}".into(),
            args: vec!["workload".into()],
            env: BTreeMap::new(),
            data_dir: PathBuf::from(format!("data/{name}")),
            health_path: None,
            metrics_path: None,
            load_metric: None,
            secrets: None,
        },
        image: None,
    }
}

/// Site `site`'s config when it names `members` (site indices, in order, itself among
/// them) and `departed` (sites removed while down for good): the first `founders` sites
/// home an account each (its SLA `raise` above the layout's) and found the federation;
/// the others home none and join it.
pub fn member_config(
    site: usize,
    members: &[usize],
    departed: &[usize],
    founders: usize,
    servers: usize,
    raise: u32,
) -> SiteConfig {
    let peers: Vec<SiteId> = members
        .iter()
        .filter(|s| **s != site)
        .map(|s| site_id(*s))
        .collect();
    // Validation wants the founding set to be exactly the config's sites: an operator
    // drops the line once the members change (only a new journal reads it).
    let founding = (site < founders && members.iter().copied().eq(0..founders))
        .then(|| (0..founders).map(site_id).collect());
    let accounts = if site < founders {
        vec![member_account(site, members, 1 + raise, 2 + raise)]
    } else {
        Vec::new()
    };
    SiteConfig {
        path: PathBuf::from(format!("{}.toml", site_name(site))),
        admin: leasehold_site_gateway::config::AdminSection::unsecured(),
        site: SiteSection {
            name: site_id(site),
            admin_addr: addr(site, 1),
            federation_addr: addr(site, 2),
            management_addr: addr(site, 3),
            boot_addr: None,
            advertise_management_addr: None,
            advertise_federation_addr: None,
            initial_members: founding,
            departed: (departed.iter())
                .filter(|gone| !members.contains(gone))
                .map(|gone| site_id(*gone))
                .collect(),
            store: Default::default(),
            gateways: Vec::new(),
        },
        timings: timings(),
        lending: Lending {
            reserve: 0,
            max_lent: 1,
            lend_to: peers.clone(),
            borrow_from: Vec::new(),
            borrow_by_rtt: true,
        },
        journal: Default::default(),
        failover_secrets: Default::default(),
        peers: peers
            .iter()
            .map(|peer| Peer {
                name: peer.clone(),
                addr: addr(site, 50).into(),
                other_addrs: Vec::new(),
            })
            .collect(),
        servers: (0..servers)
            .map(|server| Server {
                id: server_id(site, server),
                service_addr: addr(site, 10 + server),
                machine: None,
            })
            .collect(),
        accounts,
    }
}
