//! Checks across the files of one federation: names that must match between sites, and
//! things that must be unique across all of them.
//!
//! These run on the raw layer, so a file with errors of its own still takes part and one
//! run reports everything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;

use toml::Spanned;

use super::error::{ConfigError, Source};
use super::raw::RawSite;
use leasehold_federation::addr::HostPort;

pub(crate) struct File {
    pub source: Source,
    pub raw: RawSite,
}

impl File {
    fn name(&self) -> &str {
        self.raw.site.name.get_ref()
    }

    fn lists_peer(&self, site: &str) -> bool {
        self.raw.peers.iter().any(|p| p.name.get_ref() == site)
    }
}

#[cfg(test)]
pub(crate) fn check(files: &[File]) -> Vec<ConfigError> {
    check_with_warnings(files).0
}

/// The errors, and the warnings: what is fine in some networks and wrong in others (a
/// peer dialled at another address than its site listens on, without an advertised one).
pub(crate) fn check_with_warnings(files: &[File]) -> (Vec<ConfigError>, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut sites: BTreeMap<&str, &File> = BTreeMap::new();
    for f in files {
        match sites.get(f.name()) {
            Some(first) => errors.push(f.source.error_at(
                f.raw.site.name.span(),
                format!(
                    "site `{}` is defined by two files: {} and {}",
                    f.name(),
                    first.source.place(&first.raw.site.name.span()),
                    f.source.path.display()
                ),
            )),
            None => {
                sites.insert(f.name(), f);
            }
        }
    }
    for f in files {
        references(f, &sites, &mut errors);
        addresses(f, &sites, &mut errors, &mut warnings);
        standby_addresses(f, &sites, &mut errors);
    }
    unique(files, &mut errors);
    listeners(files, &mut errors);
    ownership_timings(files, &mut errors);
    (errors, warnings)
}

/// Each peer's `addr` against the address its site says peers dial: `advertise_federation_addr`
/// when it gives one (a mismatch is an error), else `federation_addr` (a mismatch may be NAT
/// or port forwarding: a warning). A name is compared only by `config check --resolve`.
fn addresses(
    f: &File,
    sites: &BTreeMap<&str, &File>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    for p in &f.raw.peers {
        let Some(other) = sites.get(p.name.get_ref().as_str()) else {
            continue;
        };
        let Ok(addr) = p.addr.get_ref().parse::<HostPort>() else {
            continue;
        };
        if let Some(advertised) = &other.raw.site.advertise_federation_addr {
            if let Ok(theirs) = advertised.get_ref().parse::<HostPort>()
                && theirs != addr
            {
                errors.push(f.source.error_at(
                    p.addr.span(),
                    format!(
                        "peer `{}` of site `{}` has addr {addr}, but that site advertises {theirs} ({}): peers dial the advertised address",
                        other.name(),
                        f.name(),
                        other.source.place(&advertised.span())
                    ),
                ));
            }
            continue;
        }
        let (Some(addr), Ok(theirs)) = (
            addr.socket_addr(),
            other
                .raw
                .site
                .federation_addr
                .get_ref()
                .parse::<SocketAddr>(),
        ) else {
            continue;
        };
        if !reaches(addr, theirs) {
            warnings.push(f.source.error_at(
                p.addr.span(),
                format!(
                    "peer `{}` of site `{}` has addr {addr}, but that site's federation_addr is {theirs} ({}): fine behind NAT or port forwarding; say so with advertise_federation_addr = \"{addr}\" in [site] of `{}`, and this is checked",
                    other.name(),
                    f.name(),
                    other.source.place(&other.raw.site.federation_addr.span()),
                    other.name()
                ),
            ));
        }
    }
}

/// Whether dialling `addr` reaches a listener on `listener`: a site listening on every
/// interface can be reached at any of its IPs.
fn reaches(addr: SocketAddr, listener: SocketAddr) -> bool {
    if listener.ip().is_unspecified() {
        addr.port() == listener.port()
    } else {
        addr == listener
    }
}

/// A peer of standby gateways is dialled at every gateway's address (docs/ha.md): each
/// `[[site.gateway]]`'s `federation_addr` must be among a peer entry's `addr` and
/// `other_addrs`, or a takeover would cut this site off from that one. Names are not
/// resolved here; an address given by name is taken to cover its gateway.
fn standby_addresses(f: &File, sites: &BTreeMap<&str, &File>, errors: &mut Vec<ConfigError>) {
    for p in &f.raw.peers {
        let Some(other) = sites.get(p.name.get_ref().as_str()) else {
            continue;
        };
        if other.raw.site.gateways.is_empty() {
            continue;
        }
        let listed: Vec<HostPort> = std::iter::once(&p.addr)
            .chain(&p.other_addrs)
            .filter_map(|addr| addr.get_ref().parse::<HostPort>().ok())
            .collect();
        if listed.iter().any(|addr| addr.socket_addr().is_none()) {
            continue;
        }
        let own = other
            .raw
            .site
            .gateway_name
            .as_ref()
            .map_or("of [site]", |name| name.get_ref().as_str());
        let gateways = std::iter::once((own, &other.raw.site.federation_addr)).chain(
            other
                .raw
                .site
                .gateways
                .iter()
                .map(|g| (g.name.get_ref().as_str(), &g.federation_addr)),
        );
        for (gateway, raw) in gateways {
            let Ok(theirs) = raw.get_ref().parse::<SocketAddr>() else {
                continue;
            };
            let covered = listed
                .iter()
                .filter_map(HostPort::socket_addr)
                .any(|addr| reaches(addr, theirs));
            if !covered {
                errors.push(f.source.error_at(
                    p.name.span(),
                    format!(
                        "peer `{}` of site `{}` does not list the federation_addr {theirs} of its gateway `{gateway}` ({}): a site of standby gateways is dialled at each, or a takeover cuts `{}` off from it; add it to other_addrs",
                        other.name(),
                        f.name(),
                        other.source.place(&raw.span()),
                        f.name()
                    ),
                ));
            }
        }
    }
}

/// `ownership_ttl_ms` and `ownership_renew_interval_ms` must be one value across the
/// federation: the ownership argument has every site's acceptors and claimants on one TTL
/// (docs/ownership.md). A file that leaves a key out has its default.
fn ownership_timings(files: &[File], errors: &mut Vec<ConfigError>) {
    type Key = fn(&super::raw::RawTimings) -> Option<&Spanned<u64>>;
    let keys: [(&str, Key, u64); 2] = [
        (
            "ownership_ttl_ms",
            |t| t.ownership_ttl_ms.as_ref(),
            super::types::Timings::DEFAULT_OWNERSHIP_TTL_MS,
        ),
        (
            "ownership_renew_interval_ms",
            |t| t.ownership_renew_interval_ms.as_ref(),
            super::types::Timings::DEFAULT_OWNERSHIP_RENEW_INTERVAL_MS,
        ),
    ];
    for (key, get, default) in keys {
        let Some(first) = files.first() else {
            return;
        };
        let value = |f: &File| get(&f.raw.timings).map_or(default, |v| *v.get_ref());
        let said = |f: &File| match get(&f.raw.timings) {
            Some(v) => format!("{} at {}", v.get_ref(), f.source.place(&v.span())),
            None => format!("{default} (the default) in {}", f.source.path.display()),
        };
        for f in &files[1..] {
            if value(f) != value(first) {
                let span =
                    get(&f.raw.timings).map_or_else(|| f.raw.site.name.span(), Spanned::span);
                errors.push(f.source.error_at(
                    span,
                    format!(
                        "timings.{key} of site `{}` is {}, but site `{}` has {}; every site of a federation must have the same {key} (docs/ownership.md)",
                        f.name(),
                        value(f),
                        first.name(),
                        said(first)
                    ),
                ));
            }
        }
    }
}

/// `owner` says whose reference it is, e.g. "site `site-a`".
fn undefined(f: &File, entry: &Spanned<String>, what: &str, owner: &str) -> ConfigError {
    f.source.error_at(
        entry.span(),
        format!(
            "{what} `{}` of {owner} is not defined by any of the files checked",
            entry.get_ref(),
        ),
    )
}

/// Every site a file names must be one of the files, and peerings must agree both ways.
fn references(f: &File, sites: &BTreeMap<&str, &File>, errors: &mut Vec<ConfigError>) {
    let site = format!("site `{}`", f.name());
    for p in &f.raw.peers {
        let Some(other) = sites.get(p.name.get_ref().as_str()) else {
            errors.push(undefined(f, &p.name, "peer", &site));
            continue;
        };
        if !other.lists_peer(f.name()) {
            errors.push(f.source.error_at(
                p.name.span(),
                format!(
                    "site `{}` lists `{}` as a peer, but site `{}` ({}) does not list `{}`; peerings must be configured on both sides",
                    f.name(),
                    other.name(),
                    other.name(),
                    other.source.path.display(),
                    f.name()
                ),
            ));
        }
    }
    let lending = &f.raw.lending;
    let lists = [
        ("lending.lend_to site", lending.lend_to.as_deref()),
        ("lending.borrow_from site", lending.borrow_from.as_deref()),
    ];
    for (what, list) in lists {
        for entry in list.unwrap_or_default() {
            if !sites.contains_key(entry.get_ref().as_str()) {
                errors.push(undefined(f, entry, what, &site));
            }
        }
    }
    for a in &f.raw.accounts {
        for entry in &a.failover {
            let Some(other) = sites.get(entry.get_ref().as_str()) else {
                let owner = format!("account `{}` at {site}", a.name.get_ref());
                errors.push(undefined(f, entry, "failover site", &owner));
                continue;
            };
            // A site that takes the account over runs it with its own copy of the secrets:
            // catalogues carry none.
            if a.workload.secrets.is_some()
                && !other.raw.failover_secrets.contains_key(a.name.get_ref())
            {
                errors.push(f.source.error_at(
                    entry.span(),
                    format!(
                        "account `{}` of {site} has secrets, and `{}` may take it over, but {} gives no [failover_secrets] {} = FILE: a takeover would run it without them",
                        a.name.get_ref(),
                        other.name(),
                        other.source.path.display(),
                        a.name.get_ref()
                    ),
                ));
            }
        }
    }
    for (account, path) in &f.raw.failover_secrets {
        let homed = sites.values().any(|other| {
            other
                .raw
                .accounts
                .iter()
                .any(|a| a.name.get_ref() == account)
        });
        if !homed {
            errors.push(f.source.error_at(
                path.span(),
                format!(
                    "{site}: failover_secrets names `{account}`, which no site of the federation homes"
                ),
            ));
        }
    }
}

/// Accounts are homed at one site and servers belong to one inventory, federation-wide.
fn unique(files: &[File], errors: &mut Vec<ConfigError>) {
    let accounts = files
        .iter()
        .enumerate()
        .flat_map(|(i, f)| f.raw.accounts.iter().map(move |a| (i, &a.name)));
    duplicates(files, accounts, errors, |name, first, second| {
        format!(
            "account `{name}` is homed at two sites, `{first}` and `{second}`; an account has one home site"
        )
    });
    let servers = files
        .iter()
        .enumerate()
        .flat_map(|(i, f)| f.raw.servers.iter().map(move |s| (i, &s.id)));
    duplicates(files, servers, errors, |id, first, second| {
        format!(
            "server `{id}` is in the inventory of two sites, `{first}` and `{second}`; server ids must be unique across the federation"
        )
    });
}

/// Reports each name that appears in more than one file, at its later place. Repeats
/// within one file are the file's own check.
fn duplicates<'a>(
    files: &[File],
    names: impl Iterator<Item = (usize, &'a Spanned<String>)>,
    errors: &mut Vec<ConfigError>,
    message: impl Fn(&str, &str, &str) -> String,
) {
    let mut first: BTreeMap<&str, (usize, Range<usize>)> = BTreeMap::new();
    for (i, name) in names {
        match first.get(name.get_ref().as_str()) {
            Some((j, span)) if *j != i => {
                let (a, b) = (&files[*j], &files[i]);
                let text = message(name.get_ref(), a.name(), b.name());
                errors.push(b.source.error_at(
                    name.span(),
                    format!("{text} (first at {})", a.source.place(span)),
                ));
            }
            Some(_) => {}
            None => {
                first.insert(name.get_ref(), (i, name.span()));
            }
        }
    }
}

/// Listeners on one address in two files. Unspecified IPs are skipped: sites on different
/// hosts may all bind 0.0.0.0 on the same port.
fn listeners(files: &[File], errors: &mut Vec<ConfigError>) {
    let mut seen: BTreeMap<SocketAddr, (usize, String, Range<usize>)> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        let s = &f.raw.site;
        let gateway = [
            ("admin_addr".to_owned(), &s.admin_addr),
            ("federation_addr".to_owned(), &s.federation_addr),
            ("management_addr".to_owned(), &s.management_addr),
        ];
        let servers = f.raw.servers.iter().map(|sv| {
            (
                format!("service_addr of server `{}`", sv.id.get_ref()),
                &sv.service_addr,
            )
        });
        for (label, raw) in gateway.into_iter().chain(servers) {
            let Ok(addr) = raw.get_ref().parse::<SocketAddr>() else {
                continue;
            };
            if addr.ip().is_unspecified() {
                continue;
            }
            match seen.get(&addr) {
                Some((j, other_label, span)) if *j != i => {
                    let other = &files[*j];
                    errors.push(f.source.error_at(
                        raw.span(),
                        format!(
                            "site `{}`: {label} {addr} is the same address as {other_label} of site `{}` (at {}); two listeners cannot share an address",
                            f.name(),
                            other.name(),
                            other.source.place(span)
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    seen.insert(addr, (i, label, raw.span()));
                }
            }
        }
    }
}
