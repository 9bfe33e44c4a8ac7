//! The site file exactly as written: serde structs that refuse unknown keys and keep the
//! spans later checks point at. Nothing here is validated beyond TOML types.
//!
//! Names and addresses stay strings here (with spans) so that an invalid one becomes one
//! collected error among many, instead of stopping deserialization at the first.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSite {
    pub site: RawSiteSection,
    /// Required; `None` only so that its absence is one collected error, named.
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub timings: RawTimings,
    #[serde(default)]
    pub lending: RawLending,
    #[serde(default)]
    pub journal: RawJournal,
    /// Account name -> where its secrets are, for peers' accounts this site may take over.
    #[serde(default)]
    pub failover_secrets: BTreeMap<String, Spanned<String>>,
    #[serde(default, rename = "peer")]
    pub peers: Vec<RawPeer>,
    #[serde(default, rename = "server")]
    pub servers: Vec<RawServer>,
    #[serde(default, rename = "account")]
    pub accounts: Vec<RawAccount>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSiteSection {
    pub name: Spanned<String>,
    pub admin_addr: Spanned<String>,
    pub federation_addr: Spanned<String>,
    pub management_addr: Spanned<String>,
    /// HTTP: the iPXE scripts machines boot from (docs/machines.md).
    pub boot_addr: Option<Spanned<String>>,
    /// The management address machines are told to dial, where it differs from
    /// `management_addr` (an unspecified IP, NAT, a VM's view of its host).
    pub advertise_management_addr: Option<Spanned<String>>,
    /// The address peers dial for `federation_addr`, where it differs.
    pub advertise_federation_addr: Option<Spanned<String>>,
    /// The founding members of a new federation (docs/ownership.md, "Members").
    pub initial_members: Option<Spanned<Vec<String>>>,
    /// Sites removed while down for good: their answer is not waited for.
    pub departed: Option<Spanned<Vec<String>>>,
    /// Where the journal lives: `redb` (default) or `etcd` (docs/ha.md; checked in
    /// `ha.rs`, like the rest of the standby gateways' keys).
    pub store: Option<Spanned<String>>,
    pub etcd_endpoints: Option<Spanned<Vec<String>>>,
    pub etcd_ca: Option<Spanned<String>>,
    pub etcd_cert: Option<Spanned<String>>,
    pub etcd_key: Option<Spanned<String>>,
    pub etcd_lease_ttl_s: Option<Spanned<u64>>,
    /// The name of the gateway whose addresses `[site]` gives, when the site has others.
    pub gateway_name: Option<Spanned<String>>,
    /// The site's other gateways (`[[site.gateway]]`).
    #[serde(default, rename = "gateway")]
    pub gateways: Vec<RawGateway>,
}

/// `[[site.gateway]]`: another gateway of the site, a standby while one acts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub name: Spanned<String>,
    pub admin_addr: Spanned<String>,
    pub federation_addr: Spanned<String>,
    pub management_addr: Spanned<String>,
}

/// `[admin]` (checked in `admin.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
    pub plain_http: Option<Spanned<bool>>,
    pub tokens: Option<Spanned<String>>,
    pub anonymous_role: Option<Spanned<String>>,
    pub access_log: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimings {
    pub lease_ttl_ms: Option<Spanned<u64>>,
    pub renew_interval_ms: Option<Spanned<u64>>,
    pub heartbeat_interval_ms: Option<Spanned<u64>>,
    pub heartbeat_misses_before_failed: Option<Spanned<u32>>,
    pub move_cooldown_ms: Option<Spanned<u64>>,
    pub drain_timeout_ms: Option<Spanned<u64>>,
    pub workload_stop_timeout_ms: Option<Spanned<u64>>,
    pub ownership_ttl_ms: Option<Spanned<u64>>,
    pub ownership_renew_interval_ms: Option<Spanned<u64>>,
    pub failback_after_ms: Option<Spanned<u64>>,
    pub machine_boot_timeout_ms: Option<Spanned<u64>>,
    pub machine_power_timeout_ms: Option<Spanned<u64>>,
}

/// `[journal]`: how long the journal keeps what it keeps (docs/operations.md, "Backups").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJournal {
    pub audit_retention_days: Option<Spanned<u32>>,
    pub demand_trace_step_s: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLending {
    pub reserve: Option<Spanned<u32>>,
    pub max_lent: Option<Spanned<u32>>,
    /// `None` (absent) means every peer; `Some([])` means nobody.
    pub lend_to: Option<Vec<Spanned<String>>>,
    pub borrow_from: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeer {
    pub name: Spanned<String>,
    pub addr: Spanned<String>,
    /// The federation addresses of the peer's other gateways, when it runs standbys.
    #[serde(default)]
    pub other_addrs: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub id: Spanned<String>,
    pub service_addr: Spanned<String>,
    /// `process` (default) or `redfish`; the rest are for `redfish` only.
    pub driver: Option<Spanned<String>>,
    pub bmc_url: Option<Spanned<String>>,
    pub bmc_credentials: Option<Spanned<String>>,
    pub bmc_ca: Option<Spanned<String>>,
    pub bmc_tls_verify: Option<Spanned<bool>>,
    pub mac: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccount {
    pub name: Spanned<String>,
    pub min_servers: Spanned<u32>,
    pub max_servers: Spanned<u32>,
    #[serde(default)]
    pub priority: u32,
    pub target_load: Spanned<f64>,
    #[serde(default)]
    pub failover: Vec<Spanned<String>>,
    #[serde(default)]
    pub pinned: bool,
    pub workload: RawWorkload,
    pub image: Option<RawImage>,
}

/// `[account.image]`: what a machine boots to serve the account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawImage {
    pub kernel: Spanned<String>,
    pub initrd: Spanned<String>,
    #[serde(default)]
    pub cmdline: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkload {
    pub software: Spanned<String>,
    pub command: Spanned<String>,
    #[serde(default)]
    pub args: Vec<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<String>>,
    pub data_dir: Spanned<String>,
    pub health_path: Option<Spanned<String>>,
    pub metrics_path: Option<Spanned<String>>,
    pub load_metric: Option<Spanned<String>>,
    /// A file of `NAME=value` lines, or a directory of files named for their variables.
    pub secrets: Option<Spanned<String>>,
}
