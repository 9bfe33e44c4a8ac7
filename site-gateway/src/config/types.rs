//! The validated site config: what the gateway and node agents run from. Every value here
//! has passed the checks in `validate`, so users never re-check it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use leasehold_federation::ids::{AccountId, ServerId, SiteId};

/// One site's config file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// The file it was read from (as given), so reloads and messages can name it.
    pub path: PathBuf,
    pub site: SiteSection,
    pub admin: AdminSection,
    pub timings: Timings,
    pub lending: Lending,
    pub journal: JournalSection,
    /// Where the secrets of peers' accounts this site may take over are
    /// (`[failover_secrets]`), by account.
    pub failover_secrets: BTreeMap<AccountId, PathBuf>,
    pub peers: Vec<Peer>,
    pub servers: Vec<Server>,
    pub accounts: Vec<Account>,
}

/// `[journal]`: retention of what the journal keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalSection {
    /// Audit records older than this many days are removed (each removal audited as
    /// `audit_pruned`); take backups to keep them longer.
    pub audit_retention_days: u32,
    /// The step of the site's own demand trace (`<state>/demand-trace.jsonl`,
    /// docs/replay.md), seconds; 0: no trace is kept.
    pub demand_trace_step_s: u64,
}

impl JournalSection {
    /// A minute: a day is 1,440 lines per account.
    pub const DEFAULT_DEMAND_TRACE_STEP_S: u64 = 60;
    /// An hour.
    pub const MAX_DEMAND_TRACE_STEP_S: u64 = 3600;
    /// About thirteen months: a year's audit with a month to spare for the yearly review.
    pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 400;
    /// A century: beyond it, keep backups.
    pub const MAX_AUDIT_RETENTION_DAYS: u32 = 36_500;
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            audit_retention_days: JournalSection::DEFAULT_AUDIT_RETENTION_DAYS,
            demand_trace_step_s: JournalSection::DEFAULT_DEMAND_TRACE_STEP_S,
        }
    }
}

/// `[site]`: who this site is and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSection {
    pub name: SiteId,
    /// Admin HTTP API, metrics and status page.
    pub admin_addr: SocketAddr,
    /// QUIC, site to site.
    pub federation_addr: SocketAddr,
    /// QUIC, node agents (the management channel).
    pub management_addr: SocketAddr,
    /// HTTP: the iPXE scripts machines boot from; required when a server is a machine.
    pub boot_addr: Option<SocketAddr>,
    /// The management address booted machines are told to dial.
    pub advertise_management_addr: Option<leasehold_federation::addr::HostPort>,
    /// The address peers dial to reach `federation_addr`, where it differs (NAT, port
    /// forwarding, a load balancer): what the multi-file check holds peers' `addr` to.
    pub advertise_federation_addr: Option<leasehold_federation::addr::HostPort>,
    /// Set on the first sites of a new federation: a new journal takes these members at
    /// once instead of joining the set its peers run (docs/ownership.md, "Members").
    /// Exactly the site and its peers; ignored once the journal has members.
    pub initial_members: Option<Vec<SiteId>>,
    /// Sites removed from the federation while they are down for good (their gateway
    /// stopped, never to start again on its journal): a membership step that removes one
    /// does not wait for its answer (docs/ownership.md, "Removing a site that is down
    /// for good"). Never this site or one of its peers.
    pub departed: Vec<SiteId>,
    /// Where the journal lives.
    pub store: SiteStore,
    /// Every gateway of the site, the one whose addresses `[site]` gives first; empty
    /// for a site of one gateway that names none.
    pub gateways: Vec<GatewayAddrs>,
}

/// `[admin]`: how the admin address is secured (docs/operations.md, "Securing the admin
/// address"). Paths are resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSection {
    /// HTTPS with this certificate; `None` is plain HTTP, which the file said explicitly.
    pub tls: Option<AdminTls>,
    /// The token file (`leasehold token add`).
    pub tokens: Option<PathBuf>,
    /// The role of a request that carries no token; `None` refuses such requests.
    pub anonymous_role: Option<crate::admin::tokens::Role>,
    /// Where the access log goes; default `access.log` in the gateway's state directory.
    pub access_log: Option<PathBuf>,
}

/// The admin address's certificate chain and key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl AdminSection {
    /// Plain HTTP, no tokens, anyone reads: only for configs built in code for runs that
    /// serve no admin address (simulation, benchmarks of the core) and for unit tests.
    pub fn unsecured() -> AdminSection {
        AdminSection {
            tls: None,
            tokens: None,
            anonymous_role: Some(crate::admin::tokens::Role::Read),
            access_log: None,
        }
    }
}

/// Where a site's journal lives (`[site] store`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SiteStore {
    /// A redb file in the gateway's state directory: one gateway, nothing to install.
    #[default]
    Redb,
    /// etcd, shared by the site's gateways (docs/ha.md).
    Etcd(EtcdStore),
}

/// `[site] etcd_*`: the cluster that holds the site's journal and election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdStore {
    /// Client URLs, `http://` or `https://`.
    pub endpoints: Vec<String>,
    /// The CA of the cluster's certificates (https).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, where the cluster asks for one.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The TTL of each gateway's etcd lease: how long a dead active gateway holds the
    /// election key.
    pub lease_ttl_s: u64,
}

impl EtcdStore {
    /// etcd's shortest lease with its default election timeout.
    pub const DEFAULT_LEASE_TTL_S: u64 = 2;
    pub const MAX_LEASE_TTL_S: u64 = 60;
}

/// One gateway of a site and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAddrs {
    pub name: String,
    pub admin_addr: SocketAddr,
    pub federation_addr: SocketAddr,
    pub management_addr: SocketAddr,
}

impl SiteSection {
    /// The management address a booted machine dials: an IP or a name its agent resolves.
    pub fn machine_gateway_addr(&self) -> leasehold_federation::addr::HostPort {
        self.advertise_management_addr
            .clone()
            .unwrap_or_else(|| self.management_addr.into())
    }
}

/// `[timings]`, with defaults chosen from the failover target (lease 2 s, renewed four
/// times per TTL, heartbeats four times a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    pub lease_ttl: Duration,
    /// `renew_interval_ms` as the config gives it (500 ms where it gives none): how often
    /// this site renews what it borrows and relays what it lends.
    pub renew_interval: Duration,
    /// How often node agents renew their leases: `renew_interval_ms` where the config
    /// gives it, else [`Timings::default_node_renew_interval`] of the site's size.
    pub node_renew_interval: Duration,
    /// `heartbeat_interval_ms` as the config gives it (250 ms where it gives none): how
    /// often peers are pinged.
    pub heartbeat_interval: Duration,
    /// How often node agents pulse: `heartbeat_interval_ms` where the config gives it,
    /// else [`Timings::default_heartbeat_interval`] of the site's size.
    pub node_heartbeat_interval: Duration,
    pub heartbeat_misses_before_failed: u32,
    /// A server that just moved does not move again before this.
    pub move_cooldown: Duration,
    /// How long a server drains before it leaves its group.
    pub drain_timeout: Duration,
    /// Graceful stop of a workload before a forced kill.
    pub workload_stop_timeout: Duration,
    /// How long a site's grant of ownership of an account lasts (docs/ownership.md).
    pub ownership_ttl: Duration,
    /// How often an owner renews its ownership.
    pub ownership_renew_interval: Duration,
    /// How long an account's home site must be up before a site that took the account over
    /// gives it back.
    pub failback_after: Duration,
    /// How long a machine may take from power-on to its node agent's registration before
    /// it is powered off and marked failed (firmware, network boot and the image's start).
    pub machine_boot_timeout: Duration,
    /// How long a BMC may take to show a power change it was asked for.
    pub machine_power_timeout: Duration,
}

impl Timings {
    pub const DEFAULT_LEASE_TTL_MS: u64 = 2000;
    pub const DEFAULT_RENEW_INTERVAL_MS: u64 = 500;
    pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 250;
    pub const DEFAULT_HEARTBEAT_MISSES_BEFORE_FAILED: u32 = 4;
    pub const DEFAULT_MOVE_COOLDOWN_MS: u64 = 10_000;
    pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 1000;
    pub const DEFAULT_WORKLOAD_STOP_TIMEOUT_MS: u64 = 2000;
    pub const DEFAULT_OWNERSHIP_TTL_MS: u64 = 3000;
    pub const DEFAULT_OWNERSHIP_RENEW_INTERVAL_MS: u64 = 500;
    pub const DEFAULT_FAILBACK_AFTER_MS: u64 = 30_000;
    /// Server firmware alone can take minutes to pass its self-test.
    pub const DEFAULT_MACHINE_BOOT_TIMEOUT_MS: u64 = 600_000;
    pub const DEFAULT_MACHINE_POWER_TIMEOUT_MS: u64 = 120_000;
    /// The clock drift every site's ownership arithmetic allows for (1 %).
    pub const CLOCK_DRIFT: f64 = 0.01;
    /// The stall between an owner's decision and its effect that the arithmetic allows for.
    pub const MAX_PAUSE: Duration = Duration::from_millis(100);

    /// How many heartbeats a second a site takes at the default interval before the
    /// interval grows with the site (2,000 servers at 250 ms).
    pub const HEARTBEAT_BUDGET_PER_S: u64 = 8_000;

    /// The longest interval the defaults give a node's pulses: every server is heard from
    /// at least once a second, however large the site (issue #14's target).
    pub const MAX_DEFAULT_NODE_INTERVAL: Duration = Duration::from_secs(1);

    /// The interval that keeps a site of `servers` at [`Self::HEARTBEAT_BUDGET_PER_S`]
    /// pulses a second.
    fn paced(servers: usize) -> Duration {
        let servers = u64::try_from(servers).unwrap_or(u64::MAX);
        Duration::from_micros(servers.saturating_mul(1_000_000) / Self::HEARTBEAT_BUDGET_PER_S)
    }

    /// The heartbeat interval of a site of `servers` whose config sets none: 250 ms up to
    /// 2,000 servers, then as long as keeps the site's heartbeats at
    /// [`Self::HEARTBEAT_BUDGET_PER_S`], up to the nodes' renew interval (where every
    /// pulse of a server that holds a lease carries its renewal anyway) and to a second.
    /// A silent server is still noticed after its misses; its lease, which decides when its
    /// account may be served elsewhere, is timed apart (docs/node.md).
    pub fn default_heartbeat_interval(servers: usize, node_renew_interval: Duration) -> Duration {
        let base = Duration::from_millis(Self::DEFAULT_HEARTBEAT_INTERVAL_MS);
        base.max(Self::paced(servers))
            .min(node_renew_interval.max(base))
            .min(Self::MAX_DEFAULT_NODE_INTERVAL.max(base))
    }

    /// The renew interval a site of `servers` gives its nodes where the config sets none:
    /// `renew_interval` (500 ms at the defaults) until the site's pulses pass
    /// [`Self::HEARTBEAT_BUDGET_PER_S`] at that interval (4,000 servers), then the paced
    /// interval, up to a second and to half the lease TTL (1 s at the defaults, from 8,000
    /// servers). Each renewal is one pulse and one answer, and a packet is what a gateway
    /// pays for (docs/benchmarks.md), so a large site renews less often; half the TTL
    /// still leaves the node its retries before the lease ends (docs/node.md).
    pub fn default_node_renew_interval(
        servers: usize,
        renew_interval: Duration,
        lease_ttl: Duration,
    ) -> Duration {
        let longest = Self::MAX_DEFAULT_NODE_INTERVAL.min(lease_ttl / 2);
        renew_interval.max(Self::paced(servers).min(longest))
    }

    /// The ownership timing these timings give (docs/ownership.md).
    pub fn ownership(&self) -> crate::model::ownership::Timing {
        crate::model::ownership::Timing {
            ttl: self.ownership_ttl,
            renew_every: self.ownership_renew_interval,
            drift: Self::CLOCK_DRIFT,
            max_pause: Self::MAX_PAUSE,
        }
    }
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_millis(Self::DEFAULT_LEASE_TTL_MS),
            renew_interval: Duration::from_millis(Self::DEFAULT_RENEW_INTERVAL_MS),
            node_renew_interval: Duration::from_millis(Self::DEFAULT_RENEW_INTERVAL_MS),
            heartbeat_interval: Duration::from_millis(Self::DEFAULT_HEARTBEAT_INTERVAL_MS),
            node_heartbeat_interval: Duration::from_millis(Self::DEFAULT_HEARTBEAT_INTERVAL_MS),
            heartbeat_misses_before_failed: Self::DEFAULT_HEARTBEAT_MISSES_BEFORE_FAILED,
            move_cooldown: Duration::from_millis(Self::DEFAULT_MOVE_COOLDOWN_MS),
            drain_timeout: Duration::from_millis(Self::DEFAULT_DRAIN_TIMEOUT_MS),
            workload_stop_timeout: Duration::from_millis(Self::DEFAULT_WORKLOAD_STOP_TIMEOUT_MS),
            ownership_ttl: Duration::from_millis(Self::DEFAULT_OWNERSHIP_TTL_MS),
            ownership_renew_interval: Duration::from_millis(
                Self::DEFAULT_OWNERSHIP_RENEW_INTERVAL_MS,
            ),
            failback_after: Duration::from_millis(Self::DEFAULT_FAILBACK_AFTER_MS),
            machine_boot_timeout: Duration::from_millis(Self::DEFAULT_MACHINE_BOOT_TIMEOUT_MS),
            machine_power_timeout: Duration::from_millis(Self::DEFAULT_MACHINE_POWER_TIMEOUT_MS),
        }
    }
}

/// `[lending]`, with the defaults resolved: absent lists become every peer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lending {
    /// Free servers this site never lends.
    pub reserve: u32,
    /// At most this many servers lent out at once (0: lend nothing).
    pub max_lent: u32,
    /// Sites allowed to borrow from this one.
    pub lend_to: Vec<SiteId>,
    /// Sites to borrow from, in order of preference.
    pub borrow_from: Vec<SiteId>,
    /// `borrow_from` was not written: every peer, nearest (by measured RTT) first.
    pub borrow_by_rtt: bool,
}

/// `[[peer]]`: another site and its federation address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: SiteId,
    /// Where to dial it: an IP literal, or a DNS name resolved at every dial.
    pub addr: leasehold_federation::addr::HostPort,
    /// Its other gateways' federation addresses, for a peer of standby gateways
    /// (docs/ha.md): it is dialled at each in turn until the one that acts answers.
    pub other_addrs: Vec<leasehold_federation::addr::HostPort>,
}

impl Peer {
    /// Every address of the peer, `addr` first.
    pub fn addrs(&self) -> impl Iterator<Item = &leasehold_federation::addr::HostPort> {
        std::iter::once(&self.addr).chain(&self.other_addrs)
    }
}

/// `[[server]]`: one server of this site's inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub id: ServerId,
    /// Where the server's workload serves customer traffic.
    pub service_addr: SocketAddr,
    /// Set when the server is a machine behind a BMC (`driver = "redfish"`); `None` for a
    /// node agent that runs as a process on its own.
    pub machine: Option<Machine>,
}

/// A server that is a machine: re-imaged through its BMC for every move (docs/machines.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// `https://host[:port]` or `http://...` of its BMC.
    pub bmc_url: String,
    /// The file (mode 0600) with the BMC's user name and password.
    pub bmc_credentials: PathBuf,
    /// PEM file to verify an https BMC with.
    pub bmc_ca: Option<PathBuf>,
    /// `false` only where the operator said so: an https BMC is then not verified.
    pub bmc_tls_verify: bool,
    /// The NIC it boots from (PXE, with DHCP chain-loading iPXE to the boot service),
    /// lower case with colons.
    pub mac: String,
}

/// `[[account]]`: an account homed at this site, with its SLA and workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub name: AccountId,
    pub min_servers: u32,
    pub max_servers: u32,
    /// Higher wins when servers are short.
    pub priority: u32,
    /// Per-server load the account aims for, in the unit of its load metric; > 0, finite.
    pub target_load: f64,
    /// Sites that take the account over, in order.
    pub failover: Vec<SiteId>,
    /// A site that took the account over keeps it: no failback when this site is back.
    pub pinned: bool,
    pub workload: Workload,
    /// What a machine boots to serve the account; machines serve only accounts with one.
    pub image: Option<Image>,
}

/// `[account.image]`: the kernel and initrd a machine boots for the account (URLs its
/// firmware can fetch) and the kernel command line; the gateway adds the node agent's
/// `leasehold.*` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
}

/// `[account.workload]`: the software and data half of the initialization pointer.
/// Command, args and env values may hold placeholders (see [`super::placeholders`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// A label for the software version, shown in status and audit.
    pub software: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The account's data; a relative path is under the node's work directory.
    pub data_dir: PathBuf,
    pub health_path: Option<String>,
    pub metrics_path: Option<String>,
    /// The gauge in `metrics_path` that is the load; set exactly when `metrics_path` is.
    pub load_metric: Option<String>,
    /// The file or directory of the workload's secrets (resolved against the config's
    /// directory); read by the gateway (`crate::secrets`), never part of a catalogue.
    pub secrets: Option<PathBuf>,
}

impl SiteConfig {
    /// This config as gateway `name` of the site runs it: `[site]`'s addresses are that
    /// gateway's. A site that lists its gateways must be run as one of them; one that
    /// lists none, without a name.
    pub fn as_gateway(mut self, name: Option<&str>) -> Result<SiteConfig, String> {
        let names = || {
            self.site
                .gateways
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            None if self.site.gateways.is_empty() => Ok(self),
            None => Err(format!(
                "{}: site `{}` has the gateways {}: start each with --name NAME",
                self.path.display(),
                self.site.name,
                names()
            )),
            Some(name) => {
                let Some(gateway) = self.site.gateways.iter().find(|g| g.name == name) else {
                    return Err(if self.site.gateways.is_empty() {
                        format!(
                            "{}: --name {name}, but site `{}` lists no gateways ([[site.gateway]], docs/ha.md); start it without --name",
                            self.path.display(),
                            self.site.name
                        )
                    } else {
                        format!(
                            "{}: site `{}` has no gateway `{name}`; its gateways are {}",
                            self.path.display(),
                            self.site.name,
                            names()
                        )
                    });
                };
                let gateway = gateway.clone();
                self.site.admin_addr = gateway.admin_addr;
                self.site.federation_addr = gateway.federation_addr;
                self.site.management_addr = gateway.management_addr;
                Ok(self)
            }
        }
    }

    /// One line for `config check` and logs, e.g.
    /// `site-a: 4 servers, 2 accounts (shop, blog), 2 peers (site-b, site-c), lease TTL 2000 ms`.
    pub fn summary(&self) -> String {
        let accounts: Vec<&str> = self.accounts.iter().map(|a| a.name.as_str()).collect();
        let peers: Vec<&str> = self.peers.iter().map(|p| p.name.as_str()).collect();
        format!(
            "{}: {}, {}, {}, lease TTL {} ms",
            self.site.name,
            count(self.servers.len(), "server"),
            listed(accounts.len(), "account", &accounts),
            listed(peers.len(), "peer", &peers),
            self.timings.lease_ttl.as_millis()
        )
    }

    pub fn account(&self, name: &AccountId) -> Option<&Account> {
        self.accounts.iter().find(|a| &a.name == name)
    }

    pub fn peer(&self, name: &SiteId) -> Option<&Peer> {
        self.peers.iter().find(|p| &p.name == name)
    }
}

fn count(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn listed(n: usize, word: &str, names: &[&str]) -> String {
    if names.is_empty() {
        count(n, word)
    } else {
        format!("{} ({})", count(n, word), names.join(", "))
    }
}
