//! `[site] store`, `etcd_*`, `gateway_name` and `[[site.gateway]]`: where the journal
//! lives, and the site's gateways when it has more than one (docs/ha.md).

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::RawSite;
use super::types::{EtcdStore, GatewayAddrs, SiteStore};
use super::validate::Checker;

/// How much longer than the etcd lease a node's lease must be on a site of several
/// gateways: etcd's expiry check (every 500 ms), the standby's poll (100 ms), its read of
/// the store, the node noticing its gateway is gone (a 2 s idle timeout, running while the
/// etcd lease runs out: the new gateway listens elsewhere, so no stateless reset tells
/// it), its next ask of the standby (every 200 ms) and one renewal round; with room for a
/// loaded machine (docs/ha.md, "The timing").
pub const TAKEOVER_ALLOWANCE: Duration = Duration::from_millis(3_000);

pub(crate) fn store(c: &mut Checker<'_>, raw: &RawSite) -> SiteStore {
    let s = &raw.site;
    let kind = s
        .store
        .as_ref()
        .map_or("redb", |kind| kind.get_ref().as_str());
    let etcd_keys = [
        (
            "etcd_endpoints",
            s.etcd_endpoints.as_ref().map(|v| v.span()),
        ),
        ("etcd_ca", s.etcd_ca.as_ref().map(|v| v.span())),
        ("etcd_cert", s.etcd_cert.as_ref().map(|v| v.span())),
        ("etcd_key", s.etcd_key.as_ref().map(|v| v.span())),
        (
            "etcd_lease_ttl_s",
            s.etcd_lease_ttl_s.as_ref().map(|v| v.span()),
        ),
    ];
    match kind {
        "redb" => {
            for (key, span) in etcd_keys {
                if let Some(span) = span {
                    c.error(
                        span,
                        format!(
                            "site `{}`: {key} is for a journal in etcd; add store = \"etcd\" to [site], or remove it",
                            c.site
                        ),
                    );
                }
            }
            SiteStore::Redb
        }
        "etcd" => etcd(c, raw).map_or(SiteStore::Redb, SiteStore::Etcd),
        other => {
            let span = s.store.as_ref().map(|v| v.span()).unwrap_or_default();
            c.error(
                span,
                format!(
                    "site `{}`: store `{other}` is not one this build knows: `redb` (a file in the state directory, the default) or `etcd` (shared by standby gateways, docs/ha.md)",
                    c.site
                ),
            );
            SiteStore::Redb
        }
    }
}

fn etcd(c: &mut Checker<'_>, raw: &RawSite) -> Option<EtcdStore> {
    let s = &raw.site;
    let store_span = s.store.as_ref().map(|v| v.span()).unwrap_or_default();
    let Some(endpoints) = &s.etcd_endpoints else {
        c.error(
            store_span,
            format!(
                "site `{}`: store = \"etcd\" needs etcd_endpoints, the cluster's client URLs, e.g. etcd_endpoints = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\", \"http://10.0.0.3:2379\"]",
                c.site
            ),
        );
        return None;
    };
    let mut ok = true;
    if endpoints.get_ref().is_empty() {
        c.error(
            endpoints.span(),
            format!("site `{}`: etcd_endpoints is empty", c.site),
        );
        ok = false;
    }
    let mut https = false;
    for endpoint in endpoints.get_ref() {
        if endpoint.starts_with("https://") {
            https = true;
        } else if !endpoint.starts_with("http://") {
            c.error(
                endpoints.span(),
                format!(
                    "site `{}`: etcd endpoint `{endpoint}` must be a client URL starting with http:// or https://",
                    c.site
                ),
            );
            ok = false;
        }
    }
    let ca = s.etcd_ca.as_ref().map(|ca| c.path(ca.get_ref()));
    if https && ca.is_none() {
        c.error(
            endpoints.span(),
            format!(
                "site `{}`: an https etcd endpoint needs etcd_ca, the CA that signed the cluster's certificates",
                c.site
            ),
        );
        ok = false;
    }
    let client = match (&s.etcd_cert, &s.etcd_key) {
        (Some(cert), Some(key)) => Some((c.path(cert.get_ref()), c.path(key.get_ref()))),
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => {
            c.error(
                one.span(),
                format!(
                    "site `{}`: etcd_cert and etcd_key go together (the client certificate and its key)",
                    c.site
                ),
            );
            ok = false;
            None
        }
    };
    let lease_ttl_s = match &s.etcd_lease_ttl_s {
        None => EtcdStore::DEFAULT_LEASE_TTL_S,
        Some(ttl) => {
            let value = *ttl.get_ref();
            if !(EtcdStore::DEFAULT_LEASE_TTL_S..=EtcdStore::MAX_LEASE_TTL_S).contains(&value) {
                c.error(
                    ttl.span(),
                    format!(
                        "site `{}`: etcd_lease_ttl_s = {value} is out of range: {} (etcd's shortest lease) to {} s",
                        c.site,
                        EtcdStore::DEFAULT_LEASE_TTL_S,
                        EtcdStore::MAX_LEASE_TTL_S
                    ),
                );
                ok = false;
            }
            value
        }
    };
    ok.then(|| EtcdStore {
        endpoints: endpoints.get_ref().clone(),
        ca,
        client,
        lease_ttl_s,
    })
}

/// The site's gateways, `[site]`'s own first: empty for a site that names none.
pub(crate) fn gateways(
    c: &mut Checker<'_>,
    raw: &RawSite,
    store: &SiteStore,
    own: Option<(SocketAddr, SocketAddr, SocketAddr)>,
    (lease_ttl, ownership_ttl): (Duration, Duration),
) -> Vec<GatewayAddrs> {
    let s = &raw.site;
    if s.gateways.is_empty() {
        if let Some(name) = &s.gateway_name {
            c.error(
                name.span(),
                format!(
                    "site `{}`: gateway_name names [site]'s gateway among others, and there is no [[site.gateway]]; remove it, or list the others",
                    c.site
                ),
            );
        }
        return Vec::new();
    }
    let first_span = s.gateways[0].name.span();
    let SiteStore::Etcd(etcd) = store else {
        c.error(
            first_span.clone(),
            format!(
                "site `{}`: a site of several gateways keeps its journal in etcd, which they share: add store = \"etcd\" and etcd_endpoints to [site] (docs/ha.md)",
                c.site
            ),
        );
        return Vec::new();
    };
    let Some(own_name) = &s.gateway_name else {
        c.error(
            first_span.clone(),
            format!(
                "site `{}`: with [[site.gateway]], [site] needs gateway_name, the name of the gateway whose addresses [site] gives",
                c.site
            ),
        );
        return Vec::new();
    };
    let needed = Duration::from_secs(etcd.lease_ttl_s) + TAKEOVER_ALLOWANCE;
    if !raw.peers.is_empty() && ownership_ttl <= needed {
        // The peers' grants to this site must outlast a takeover, or a failover site
        // takes its accounts over while its next gateway comes up.
        c.error(
            first_span.clone(),
            format!(
                "site `{}`: with standby gateways and peers, [timings] ownership_ttl_ms ({} ms) must be more than etcd_lease_ttl_s ({} s) plus {} ms, or a takeover lets a peer take the site's accounts over (docs/ha.md, \"The timing\"); give ownership_ttl_ms = {} or more, in every site's file",
                c.site,
                ownership_ttl.as_millis(),
                etcd.lease_ttl_s,
                TAKEOVER_ALLOWANCE.as_millis(),
                needed.as_millis() + 1
            ),
        );
    }
    if lease_ttl <= needed {
        c.error(
            first_span.clone(),
            format!(
                "site `{}`: with standby gateways, [timings] lease_ttl_ms ({} ms) must be more than etcd_lease_ttl_s ({} s) plus {} ms, or a takeover stops every workload before the new gateway renews it (docs/ha.md, \"The timing\"); give lease_ttl_ms = {} or more",
                c.site,
                lease_ttl.as_millis(),
                etcd.lease_ttl_s,
                TAKEOVER_ALLOWANCE.as_millis(),
                needed.as_millis() + 1
            ),
        );
    }
    let mut all = Vec::new();
    if let Some((admin_addr, federation_addr, management_addr)) = own {
        all.push(GatewayAddrs {
            name: own_name.get_ref().clone(),
            admin_addr,
            federation_addr,
            management_addr,
        });
    }
    for gateway in &s.gateways {
        let name = gateway.name.get_ref();
        if !valid_name(name) {
            c.error(
                gateway.name.span(),
                format!(
                    "site `{}`: gateway name `{name}` must be 1 to 63 lowercase letters, digits and dashes",
                    c.site
                ),
            );
        }
        let names: Vec<&str> = all.iter().map(|g| g.name.as_str()).collect();
        if names.contains(&name.as_str()) || own_name.get_ref() == name && all.is_empty() {
            c.error(
                gateway.name.span(),
                format!("site `{}`: gateway `{name}` is named twice", c.site),
            );
        }
        let subject = |key: &str| format!("{key} of gateway `{name}`");
        let addrs = (
            c.addr(&gateway.admin_addr, &subject("admin_addr")),
            c.addr(&gateway.federation_addr, &subject("federation_addr")),
            c.addr(&gateway.management_addr, &subject("management_addr")),
        );
        if let (Some(admin_addr), Some(federation_addr), Some(management_addr)) = addrs {
            for (addr, raw_addr) in [
                (admin_addr, &gateway.admin_addr),
                (federation_addr, &gateway.federation_addr),
                (management_addr, &gateway.management_addr),
            ] {
                let clash = all.iter().find(|other| {
                    [
                        other.admin_addr,
                        other.federation_addr,
                        other.management_addr,
                    ]
                    .contains(&addr)
                });
                if let Some(other) = clash {
                    c.error(
                        raw_addr.span(),
                        format!(
                            "site `{}`: {addr} of gateway `{name}` is also an address of gateway `{}`; two listeners cannot share an address",
                            c.site, other.name
                        ),
                    );
                }
            }
            all.push(GatewayAddrs {
                name: name.clone(),
                admin_addr,
                federation_addr,
                management_addr,
            });
        }
    }
    if !valid_name(own_name.get_ref()) {
        c.error(
            own_name.span(),
            format!(
                "site `{}`: gateway_name `{}` must be 1 to 63 lowercase letters, digits and dashes",
                c.site,
                own_name.get_ref()
            ),
        );
    }
    all
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
