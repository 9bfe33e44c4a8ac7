//! One file's own semantic checks: raw layer in, [`SiteConfig`] or every error found out.
//! Accounts are checked in `account.rs`; checks across files in `federation.rs`.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use std::collections::BTreeMap;
use std::path::PathBuf;

use leasehold_federation::addr::HostPort;
use leasehold_federation::ids::{AccountId, InvalidId, ServerId, SiteId};
use toml::Spanned;

use super::error::{ConfigError, Source};
use super::raw::{RawJournal, RawLending, RawServer, RawSite, RawTimings};
use super::types::{JournalSection, Lending, Peer, Server, SiteConfig, SiteSection, Timings};

/// Collects errors for one file, so that every check runs even after one has failed.
pub(crate) struct Checker<'a> {
    pub source: &'a Source,
    /// The site's name as written, for messages, even when it is not a valid id.
    pub site: &'a str,
    pub errors: Vec<ConfigError>,
}

impl Checker<'_> {
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(self.source.error_at(span, message));
    }

    /// A path as written in the file: relative ones are relative to the file's directory,
    /// so that a config and the files it names move together.
    pub fn path(&self, given: &str) -> std::path::PathBuf {
        let given = std::path::Path::new(given);
        match self.source.path.parent() {
            Some(dir) if given.is_relative() => dir.join(given),
            _ => given.to_path_buf(),
        }
    }

    /// Parses an id, or records why not with `subject` saying whose it is.
    pub fn id<T>(
        &mut self,
        raw: &Spanned<String>,
        subject: &str,
        parse: fn(&str) -> Result<T, InvalidId>,
    ) -> Option<T> {
        match parse(raw.get_ref()) {
            Ok(id) => Some(id),
            Err(e) => {
                self.error(raw.span(), format!("{subject}: {e}"));
                None
            }
        }
    }

    /// An address to dial: an IP literal or a DNS name, with its port.
    fn host_port(&mut self, raw: &Spanned<String>, subject: &str) -> Option<HostPort> {
        match raw.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(e) => {
                self.error(raw.span(), format!("{subject}: {e}"));
                None
            }
        }
    }

    pub(crate) fn addr(&mut self, raw: &Spanned<String>, subject: &str) -> Option<SocketAddr> {
        match raw.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(e) => {
                self.error(
                    raw.span(),
                    format!(
                        "{subject} `{}` is not an IP:port address ({e}); write e.g. `127.0.0.1:7101`",
                        raw.get_ref()
                    ),
                );
                None
            }
        }
    }
}

pub(crate) fn validate(source: &Source, raw: &RawSite) -> Result<SiteConfig, Vec<ConfigError>> {
    let mut c = Checker {
        source,
        site: raw.site.name.get_ref(),
        errors: Vec::new(),
    };
    let mut site = site_section(&mut c, raw);
    let admin = super::admin::admin(&mut c, raw);
    let timings = timings(&mut c, &raw.timings, raw.servers.len());
    let store = super::ha::store(&mut c, raw);
    let own = site
        .as_ref()
        .map(|s| (s.admin_addr, s.federation_addr, s.management_addr));
    let gateways = super::ha::gateways(
        &mut c,
        raw,
        &store,
        own,
        (timings.lease_ttl, timings.ownership_ttl),
    );
    if let Some(site) = site.as_mut() {
        site.store = store;
        site.gateways = gateways;
    }
    let peers = peers(&mut c, raw);
    let peer_names: Vec<&str> = raw
        .peers
        .iter()
        .map(|p| p.name.get_ref().as_str())
        .collect();
    let servers = servers(&mut c, raw);
    let lending = lending(&mut c, &raw.lending, &peer_names, raw.servers.len());
    let journal = journal(&mut c, &raw.journal);
    let failover_secrets = failover_secrets(&mut c, raw);
    listeners(&mut c, raw);
    let accounts = super::account::accounts(&mut c, &raw.accounts, &peer_names);

    match (site, admin, peers, servers, lending, accounts) {
        (Some(site), Some(admin), Some(peers), Some(servers), Some(lending), Some(accounts))
            if c.errors.is_empty() =>
        {
            Ok(SiteConfig {
                path: source.path.clone(),
                site,
                admin,
                timings,
                lending,
                journal,
                failover_secrets,
                peers,
                servers,
                accounts,
            })
        }
        _ => Err(c.errors),
    }
}

fn site_section(c: &mut Checker<'_>, raw: &RawSite) -> Option<SiteSection> {
    let s = &raw.site;
    let name = c.id(&s.name, "[site] name", SiteId::parse);
    let subject = |key| format!("{key} of site `{}`", s.name.get_ref());
    let admin_addr = c.addr(&s.admin_addr, &subject("admin_addr"));
    let federation_addr = c.addr(&s.federation_addr, &subject("federation_addr"));
    let management_addr = c.addr(&s.management_addr, &subject("management_addr"));
    let boot_addr = match &s.boot_addr {
        Some(raw) => Some(c.addr(raw, &subject("boot_addr"))?),
        None => None,
    };
    let advertise_federation_addr = match &s.advertise_federation_addr {
        Some(raw) => Some(c.host_port(raw, &subject("advertise_federation_addr"))?),
        None => None,
    };
    let advertise_management_addr = match &s.advertise_management_addr {
        Some(raw) => Some(c.host_port(raw, &subject("advertise_management_addr"))?),
        None => None,
    };
    let first_machine = raw.servers.iter().find(|server| {
        server
            .driver
            .as_ref()
            .is_some_and(|d| d.get_ref() == "redfish")
    });
    if let (Some(machine), Some(management), None) =
        (first_machine, management_addr, &advertise_management_addr)
        && management.ip().is_unspecified()
    {
        c.error(
            s.management_addr.span(),
            format!(
                "site `{}`: server `{}` is a machine, and machines cannot dial the unspecified address {management}; give advertise_management_addr (the address machines reach the gateway at)",
                s.name.get_ref(),
                machine.id.get_ref()
            ),
        );
    }
    if boot_addr.is_none()
        && let Some(machine) = raw.servers.iter().find(|server| {
            server
                .driver
                .as_ref()
                .is_some_and(|d| d.get_ref() == "redfish")
        })
    {
        c.error(
            s.name.span(),
            format!(
                "site `{}`: server `{}` is a machine, so [site] needs boot_addr (where machines fetch their iPXE scripts), e.g. boot_addr = \"0.0.0.0:7180\"",
                s.name.get_ref(),
                machine.id.get_ref()
            ),
        );
    }
    Some(SiteSection {
        name: name?,
        admin_addr: admin_addr?,
        federation_addr: federation_addr?,
        management_addr: management_addr?,
        boot_addr,
        advertise_management_addr,
        advertise_federation_addr,
        initial_members: initial_members(c, raw),
        departed: departed(c, raw),
        store: Default::default(),
        gateways: Vec::new(),
    })
}

/// `[site] departed`: sites removed while down for good; none may be this site or a peer.
fn departed(c: &mut Checker<'_>, raw: &RawSite) -> Vec<SiteId> {
    let Some(listed) = raw.site.departed.as_ref() else {
        return Vec::new();
    };
    let mut departed = Vec::new();
    for name in listed.get_ref() {
        let site = match SiteId::parse(name) {
            Ok(site) => site,
            Err(e) => {
                c.error(listed.span(), format!("[site] departed: {e}"));
                continue;
            }
        };
        let configured = *raw.site.name.get_ref() == *name
            || raw.peers.iter().any(|peer| peer.name.get_ref() == name);
        if configured {
            c.error(
                listed.span(),
                format!(
                    "site `{}`: [site] departed names `{name}`, which is this site or one of its [[peer]]s; a departed site is one removed from the federation: remove its [[peer]] first",
                    raw.site.name.get_ref()
                ),
            );
            continue;
        }
        departed.push(site);
    }
    departed.sort();
    departed.dedup();
    departed
}

/// `[site] initial_members`: the founding set, which must be exactly the site and its
/// peers (a founder that took another set would found another federation).
fn initial_members(c: &mut Checker<'_>, raw: &RawSite) -> Option<Vec<SiteId>> {
    let listed = raw.site.initial_members.as_ref()?;
    let mut members = Vec::new();
    for name in listed.get_ref() {
        match SiteId::parse(name) {
            Ok(site) => members.push(site),
            Err(e) => {
                c.error(listed.span(), format!("[site] initial_members: {e}"));
                return None;
            }
        }
    }
    members.sort();
    members.dedup();
    let mut configured: Vec<&str> = raw
        .peers
        .iter()
        .map(|p| p.name.get_ref().as_str())
        .collect();
    configured.push(raw.site.name.get_ref());
    configured.sort();
    let names: Vec<&str> = members.iter().map(SiteId::as_str).collect();
    if names != configured {
        c.error(
            listed.span(),
            format!(
                "site `{}`: [site] initial_members is [{}], but the site and its [[peer]]s are [{}]; each founding site lists exactly its members",
                raw.site.name.get_ref(),
                names.join(", "),
                configured.join(", ")
            ),
        );
        return None;
    }
    Some(members)
}

fn timings(c: &mut Checker<'_>, raw: &RawTimings, servers: usize) -> Timings {
    let mut positive = |value: &Option<Spanned<u64>>, key: &str, default: u64| match value {
        Some(v) if *v.get_ref() == 0 => {
            c.error(
                v.span(),
                format!(
                    "site `{}`: timings.{key} must be greater than 0 (default {default})",
                    c.site
                ),
            );
            Duration::from_millis(default)
        }
        Some(v) => Duration::from_millis(*v.get_ref()),
        None => Duration::from_millis(default),
    };
    let t = Timings {
        lease_ttl: positive(
            &raw.lease_ttl_ms,
            "lease_ttl_ms",
            Timings::DEFAULT_LEASE_TTL_MS,
        ),
        renew_interval: positive(
            &raw.renew_interval_ms,
            "renew_interval_ms",
            Timings::DEFAULT_RENEW_INTERVAL_MS,
        ),
        heartbeat_interval: positive(
            &raw.heartbeat_interval_ms,
            "heartbeat_interval_ms",
            Timings::DEFAULT_HEARTBEAT_INTERVAL_MS,
        ),
        move_cooldown: positive(
            &raw.move_cooldown_ms,
            "move_cooldown_ms",
            Timings::DEFAULT_MOVE_COOLDOWN_MS,
        ),
        drain_timeout: positive(
            &raw.drain_timeout_ms,
            "drain_timeout_ms",
            Timings::DEFAULT_DRAIN_TIMEOUT_MS,
        ),
        workload_stop_timeout: positive(
            &raw.workload_stop_timeout_ms,
            "workload_stop_timeout_ms",
            Timings::DEFAULT_WORKLOAD_STOP_TIMEOUT_MS,
        ),
        ownership_ttl: positive(
            &raw.ownership_ttl_ms,
            "ownership_ttl_ms",
            Timings::DEFAULT_OWNERSHIP_TTL_MS,
        ),
        ownership_renew_interval: positive(
            &raw.ownership_renew_interval_ms,
            "ownership_renew_interval_ms",
            Timings::DEFAULT_OWNERSHIP_RENEW_INTERVAL_MS,
        ),
        failback_after: positive(
            &raw.failback_after_ms,
            "failback_after_ms",
            Timings::DEFAULT_FAILBACK_AFTER_MS,
        ),
        machine_boot_timeout: positive(
            &raw.machine_boot_timeout_ms,
            "machine_boot_timeout_ms",
            Timings::DEFAULT_MACHINE_BOOT_TIMEOUT_MS,
        ),
        machine_power_timeout: positive(
            &raw.machine_power_timeout_ms,
            "machine_power_timeout_ms",
            Timings::DEFAULT_MACHINE_POWER_TIMEOUT_MS,
        ),
        heartbeat_misses_before_failed: Timings::DEFAULT_HEARTBEAT_MISSES_BEFORE_FAILED,
        node_heartbeat_interval: Duration::from_millis(Timings::DEFAULT_HEARTBEAT_INTERVAL_MS),
        node_renew_interval: Duration::from_millis(Timings::DEFAULT_RENEW_INTERVAL_MS),
    };
    if let Err(why) = t.ownership().check() {
        let span = raw
            .ownership_ttl_ms
            .as_ref()
            .or(raw.ownership_renew_interval_ms.as_ref())
            .map_or(0..0, |v| v.span());
        c.error(span, format!("site `{}`: ownership timings: {why}", c.site));
    }
    let misses = match &raw.heartbeat_misses_before_failed {
        Some(v) if *v.get_ref() == 0 => {
            c.error(
                v.span(),
                format!(
                    "site `{}`: timings.heartbeat_misses_before_failed must be at least 1",
                    c.site
                ),
            );
            t.heartbeat_misses_before_failed
        }
        Some(v) => *v.get_ref(),
        None => t.heartbeat_misses_before_failed,
    };
    // A lease that expires before it is renewed lapses on every round; zero values were
    // reported above and would only add noise here.
    let zero = |v: &Option<Spanned<u64>>| v.as_ref().is_some_and(|v| *v.get_ref() == 0);
    if !zero(&raw.lease_ttl_ms) && !zero(&raw.renew_interval_ms) && t.renew_interval >= t.lease_ttl
    {
        let span = raw
            .lease_ttl_ms
            .as_ref()
            .or(raw.renew_interval_ms.as_ref())
            .map_or(0..0, |v| v.span());
        c.error(
            span,
            format!(
                "site `{}`: lease TTL {} ms is not longer than its renew interval {} ms; a lease would lapse before it is renewed",
                c.site,
                t.lease_ttl.as_millis(),
                t.renew_interval.as_millis()
            ),
        );
    }
    let node_renew_interval = match raw.renew_interval_ms {
        Some(_) => t.renew_interval,
        None => Timings::default_node_renew_interval(servers, t.renew_interval, t.lease_ttl),
    };
    let node_heartbeat_interval = match raw.heartbeat_interval_ms {
        Some(_) => t.heartbeat_interval,
        None => Timings::default_heartbeat_interval(servers, node_renew_interval),
    };
    Timings {
        heartbeat_misses_before_failed: misses,
        node_renew_interval,
        node_heartbeat_interval,
        ..t
    }
}

fn peers(c: &mut Checker<'_>, raw: &RawSite) -> Option<Vec<Peer>> {
    let mut out = Some(Vec::new());
    for (i, p) in raw.peers.iter().enumerate() {
        let name = p.name.get_ref();
        let subject = format!("peer of site `{}`", c.site);
        let id = c.id(&p.name, &subject, SiteId::parse);
        if name == c.site {
            c.error(
                p.name.span(),
                format!("site `{}` lists itself as a peer", c.site),
            );
        }
        if let Some(first) = raw.peers[..i].iter().find(|q| q.name.get_ref() == name) {
            let msg = format!(
                "peer `{name}` of site `{}` is listed twice (first at {})",
                c.site,
                c.source.place(&first.name.span())
            );
            c.error(p.name.span(), msg);
        }
        let addr = c.host_port(&p.addr, &format!("addr of peer `{name}`"));
        let mut other_addrs = Some(Vec::new());
        for (j, other) in p.other_addrs.iter().enumerate() {
            let parsed = c.host_port(other, &format!("other_addrs of peer `{name}`"));
            let listed_before = std::iter::once(&p.addr)
                .chain(&p.other_addrs[..j])
                .any(|before| before.get_ref() == other.get_ref());
            if listed_before {
                c.error(
                    other.span(),
                    format!(
                        "peer `{name}` of site `{}`: address `{}` is listed twice",
                        c.site,
                        other.get_ref()
                    ),
                );
            }
            match (parsed, other_addrs.as_mut()) {
                (Some(parsed), Some(list)) => list.push(parsed),
                _ => other_addrs = None,
            }
        }
        match (id, addr, other_addrs, out.as_mut()) {
            (Some(name), Some(addr), Some(other_addrs), Some(list)) => list.push(Peer {
                name,
                addr,
                other_addrs,
            }),
            _ => out = None,
        }
    }
    out
}

fn servers(c: &mut Checker<'_>, raw: &RawSite) -> Option<Vec<Server>> {
    let mut out = Some(Vec::new());
    for (i, s) in raw.servers.iter().enumerate() {
        let id_text = s.id.get_ref();
        let id = c.id(
            &s.id,
            &format!("server of site `{}`", c.site),
            ServerId::parse,
        );
        if let Some(first) = raw.servers[..i].iter().find(|t| t.id.get_ref() == id_text) {
            let msg = format!(
                "server `{id_text}` at site `{}` is listed twice (first at {}); server ids must be unique",
                c.site,
                c.source.place(&first.id.span())
            );
            c.error(s.id.span(), msg);
        }
        let addr = c.addr(
            &s.service_addr,
            &format!("service_addr of server `{id_text}`"),
        );
        let machine = super::machine::machine(c, s);
        if let (Some(mac), Ok(Some(_))) = (&s.mac, &machine) {
            let same = |t: &RawServer| {
                t.mac
                    .as_ref()
                    .and_then(|m| super::machine::normal_mac(m.get_ref()))
                    == super::machine::normal_mac(mac.get_ref())
            };
            if let Some(first) = raw.servers[..i].iter().find(|t| same(t)) {
                let msg = format!(
                    "server `{id_text}` at site `{}` has the mac of server `{}` (at {}); each machine boots from a NIC of its own",
                    c.site,
                    first.id.get_ref(),
                    c.source.place(&first.id.span())
                );
                c.error(mac.span(), msg);
            }
        }
        match (id, addr, machine, out.as_mut()) {
            (Some(id), Some(service_addr), Ok(machine), Some(list)) => list.push(Server {
                id,
                service_addr,
                machine,
            }),
            _ => out = None,
        }
    }
    out
}

/// `[failover_secrets]`: account name -> the file or directory of its secrets, for the
/// peers' accounts this site may take over. Its own accounts name theirs in their workload.
fn failover_secrets(c: &mut Checker<'_>, raw: &RawSite) -> BTreeMap<AccountId, PathBuf> {
    let mut secrets = BTreeMap::new();
    for (name, path) in &raw.failover_secrets {
        let Ok(account) = AccountId::parse(name) else {
            c.error(
                path.span(),
                format!("failover_secrets: `{name}` is not a valid account name"),
            );
            continue;
        };
        if raw.accounts.iter().any(|a| a.name.get_ref() == name) {
            c.error(
                path.span(),
                format!(
                    "failover_secrets names `{name}`, an account of this site: give its secrets in its [account.workload] secrets instead"
                ),
            );
            continue;
        }
        if path.get_ref().trim().is_empty() {
            c.error(path.span(), format!("failover_secrets.{name} is empty"));
            continue;
        }
        secrets.insert(account, c.path(path.get_ref()));
    }
    secrets
}

fn journal(c: &mut Checker<'_>, raw: &RawJournal) -> JournalSection {
    let mut journal = JournalSection::default();
    if let Some(days) = &raw.audit_retention_days {
        let max = JournalSection::MAX_AUDIT_RETENTION_DAYS;
        if !(1..=max).contains(days.get_ref()) {
            c.error(
                days.span(),
                format!(
                    "site `{}`: journal.audit_retention_days is {}; give a number of days from 1 to {max} (take backups to keep the audit log longer)",
                    c.site,
                    days.get_ref()
                ),
            );
        } else {
            journal.audit_retention_days = *days.get_ref();
        }
    }
    if let Some(step) = &raw.demand_trace_step_s {
        let max = JournalSection::MAX_DEMAND_TRACE_STEP_S;
        if *step.get_ref() > max {
            c.error(
                step.span(),
                format!(
                    "site `{}`: journal.demand_trace_step_s is {}; give seconds from 1 to {max}, or 0 to keep no demand trace",
                    c.site,
                    step.get_ref()
                ),
            );
        } else {
            journal.demand_trace_step_s = *step.get_ref();
        }
    }
    journal
}

fn lending(
    c: &mut Checker<'_>,
    raw: &RawLending,
    peers: &[&str],
    server_count: usize,
) -> Option<Lending> {
    let reserve = raw.reserve.as_ref().map_or(0, |r| *r.get_ref());
    if let Some(r) = &raw.reserve
        && *r.get_ref() as usize > server_count
    {
        c.error(
            r.span(),
            format!(
                "site `{}`: lending.reserve {reserve} is more than the site's {server_count} servers",
                c.site
            ),
        );
    }
    let lend_to = site_list(c, raw.lend_to.as_deref(), "lending.lend_to", peers);
    let borrow_from = site_list(c, raw.borrow_from.as_deref(), "lending.borrow_from", peers);
    Some(Lending {
        reserve,
        max_lent: raw.max_lent.as_ref().map_or(0, |m| *m.get_ref()),
        lend_to: lend_to?,
        borrow_from: borrow_from?,
        borrow_by_rtt: raw.borrow_from.is_none(),
    })
}

/// A list of peer names (lend_to, borrow_from); absent means every peer, in `[[peer]]` order.
fn site_list(
    c: &mut Checker<'_>,
    list: Option<&[Spanned<String>]>,
    key: &str,
    peers: &[&str],
) -> Option<Vec<SiteId>> {
    let Some(list) = list else {
        return peers.iter().map(|p| SiteId::parse(p).ok()).collect();
    };
    let mut out = Some(Vec::new());
    for (i, entry) in list.iter().enumerate() {
        let name = entry.get_ref();
        if list[..i].iter().any(|e| e.get_ref() == name) {
            c.error(
                entry.span(),
                format!("site `{}`: {key} lists `{name}` twice", c.site),
            );
        }
        if !peers.contains(&name.as_str()) {
            c.error(
                entry.span(),
                format!(
                    "site `{}`: {key} names `{name}`, which is not a configured peer ({})",
                    c.site,
                    known(peers)
                ),
            );
            out = None;
        }
        match (SiteId::parse(name), out.as_mut()) {
            (Ok(id), Some(v)) => v.push(id),
            _ => out = None,
        }
    }
    out
}

/// "peers: a, b" or "no peers are configured", for messages about unknown peers.
pub(crate) fn known(peers: &[&str]) -> String {
    if peers.is_empty() {
        "no peers are configured".to_owned()
    } else {
        format!("peers: {}", peers.join(", "))
    }
}

/// Two of this file's listeners on one address. The gateway's own three share a host, so
/// there an unspecified IP also clashes with any IP on the same port.
fn listeners(c: &mut Checker<'_>, raw: &RawSite) {
    let s = &raw.site;
    let mut seen: Vec<(SocketAddr, String, Range<usize>, bool)> = Vec::new();
    let mut gateway = vec![
        ("admin_addr", &s.admin_addr),
        ("federation_addr", &s.federation_addr),
        ("management_addr", &s.management_addr),
    ];
    if let Some(boot) = &s.boot_addr {
        gateway.push(("boot_addr", boot));
    }
    let gateway = gateway.iter().map(|(k, v)| ((*k).to_owned(), *v, true));
    let servers = raw.servers.iter().map(|sv| {
        let label = format!("service_addr of server `{}`", sv.id.get_ref());
        (label, &sv.service_addr, false)
    });
    for (label, raw_addr, on_gateway) in gateway.chain(servers) {
        let Ok(addr) = raw_addr.get_ref().parse::<SocketAddr>() else {
            continue;
        };
        let clash = seen.iter().find(|(other, _, _, other_on_gateway)| {
            *other == addr
                || (on_gateway
                    && *other_on_gateway
                    && other.port() == addr.port()
                    && (other.ip().is_unspecified() || addr.ip().is_unspecified()))
        });
        if let Some((_, other_label, other_span, _)) = clash {
            let msg = format!(
                "site `{}`: {label} {addr} is the same address as {other_label} (at {}); two listeners cannot share an address",
                c.site,
                c.source.place(other_span)
            );
            c.error(raw_addr.span(), msg);
        }
        seen.push((addr, label, raw_addr.span(), on_gateway));
    }
}
