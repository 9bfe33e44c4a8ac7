//! Site config files for tests, with free loopback ports, and the certificates to run them.
//! Tests never use the fixed ports of configs/; only the demo does.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use leasehold_federation::ids::{ServerId, SiteId};
use leasehold_federation::transport::certs;
use leasehold_federation::transport::identity::PeerName;

/// An account of a test site; the workload is `leasehold workload` with a health check
/// and its load metric, like the example configs.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    pub name: String,
    pub min_servers: u32,
    pub max_servers: u32,
    pub priority: u32,
    pub target_load: f64,
    /// Another command than the demo workload (`command`, `args`), e.g. one that fails.
    pub command: Option<(String, Vec<String>)>,
    /// `[account.workload] secrets`, a path relative to the configs' directory; every
    /// other site of the federation names the same file in `[failover_secrets]`.
    pub secrets: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SiteSpec {
    pub name: String,
    pub servers: Vec<String>,
    pub accounts: Vec<AccountSpec>,
    /// `[timings]` keys to set, e.g. `("move_cooldown_ms", 1000)`.
    pub timings: Vec<(&'static str, u64)>,
    /// `[lending]` `reserve` and `max_lent`; `lend_to` and `borrow_from` are left to their
    /// default (every peer, nearest first). `None`: lend nothing.
    pub lending: Option<(u32, u32)>,
}

impl SiteSpec {
    /// Site `name` with one server and one account that needs exactly it: the demo
    /// workload, priority 10, no lending, default timings.
    pub fn one_server(name: &str, server: &str, account: &str) -> SiteSpec {
        SiteSpec {
            name: name.into(),
            servers: vec![server.into()],
            accounts: vec![AccountSpec {
                name: account.into(),
                min_servers: 1,
                max_servers: 1,
                priority: 10,
                target_load: 5.0,
                command: None,
                secrets: None,
            }],
            timings: Vec::new(),
            lending: None,
        }
    }
}

/// The `[admin]` table of test configs: plain HTTP on loopback, and reads without a token,
/// said explicitly as the config requires. tests/admin_security.rs replaces it to test TLS,
/// tokens and roles.
pub const LOOPBACK_ADMIN: &str =
    "[admin]\nplain_http = true          # loopback only\nanonymous_role = \"read\"\n\n";

/// A site config written to disk, with the addresses it chose.
#[derive(Debug, Clone)]
pub struct PreparedSite {
    pub name: String,
    pub config: PathBuf,
    pub admin: SocketAddr,
    pub federation: SocketAddr,
    pub management: SocketAddr,
    pub servers: Vec<(String, SocketAddr)>,
}

/// A loopback port free for both TCP and UDP right now (QUIC listens on UDP, the admin
/// API and workloads on TCP), below the kernel's ephemeral range (see [`PortPicker`]).
pub fn free_port() -> Result<u16, String> {
    PortPicker::default().pick()
}

/// Picks ports for one set of configs and holds each one bound until dropped, so that no
/// two picks of a plan can be the same port, and no other test's plan can take one
/// meanwhile. Ports come from below the kernel's ephemeral range: between the pick and the
/// process that binds it, any socket bound to port 0 on this machine (a QUIC client, a
/// relay's upstream socket, an HTTP client) may be handed a port of the ephemeral range,
/// which once made a campaign's gateway fail to start ("Address already in use").
///
/// A plan's picker is dropped once its configs are written, well before every process of
/// the plan has bound its ports; a second picker of the same process (a standby gateway's
/// addresses, picked after the federation's) could then take a port the first handed out
/// and a gateway not yet started still waits to bind, which once made a campaign's site
/// fail to start for its admin address. So no port is handed out twice in one process
/// while the range has others ([`handed_out`]).
#[derive(Default)]
pub struct PortPicker {
    held: Vec<(TcpListener, UdpSocket)>,
}

/// Where picks start: above the ports of well-known services and of configs/ (7xxx-9xxx).
const PICK_FROM: u16 = 20_000;

/// The first port of the kernel's ephemeral range (Linux default 32768).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A different start for each pick, across threads and processes.
fn pick_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PICKS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos() as u64);
    let mixed = (u64::from(std::process::id()) << 32)
        ^ nanos
        ^ PICKS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // SplitMix64's finaliser, so that nearby inputs land far apart.
    let mut z = mixed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ports this process has handed out, each kept from a second pick.
fn handed_out() -> std::sync::MutexGuard<'static, std::collections::HashSet<u16>> {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static HANDED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    HANDED
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        // A set of numbers is whole even if a holder panicked.
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PortPicker {
    pub fn pick(&mut self) -> Result<u16, String> {
        self.pick_from(pick_seed())
    }

    /// A pick whose walk through the range starts at `start`.
    fn pick_from(&mut self, start: u64) -> Result<u16, String> {
        let end = ephemeral_start();
        if end > PICK_FROM + 1000 {
            let span = u64::from(end - PICK_FROM);
            let mut handed = handed_out();
            // Once most of the range has been handed out, a port may come round again.
            if handed.len() as u64 > span * 3 / 4 {
                handed.clear();
            }
            for step in 0..400u64 {
                let port = PICK_FROM + ((start.wrapping_add(step * 7919)) % span) as u16;
                if handed.contains(&port) {
                    continue;
                }
                if let Some(pair) = bind_both(port) {
                    self.held.push(pair);
                    handed.insert(port);
                    return Ok(port);
                }
            }
        }
        // A machine whose ephemeral range leaves no room below it: any free port.
        for _ in 0..50 {
            let tcp = TcpListener::bind("127.0.0.1:0").map_err(|error| error.to_string())?;
            let port = tcp.local_addr().map_err(|error| error.to_string())?.port();
            if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
                self.held.push((tcp, udp));
                return Ok(port);
            }
        }
        Err("no port free for both TCP and UDP after 250 tries".to_owned())
    }
}

fn bind_both(port: u16) -> Option<(TcpListener, UdpSocket)> {
    let tcp = TcpListener::bind(("127.0.0.1", port)).ok()?;
    let udp = UdpSocket::bind(("127.0.0.1", port)).ok()?;
    Some((tcp, udp))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Free loopback (admin, federation, management) addresses for one more gateway of a site.
pub fn gateway_addrs() -> Result<(SocketAddr, SocketAddr, SocketAddr), String> {
    let mut ports = PortPicker::default();
    Ok((
        loopback(ports.pick()?),
        loopback(ports.pick()?),
        loopback(ports.pick()?),
    ))
}

/// Writes `dir/<site>.toml` for `spec` with fresh ports.
pub fn prepare_site(dir: &Path, spec: &SiteSpec) -> Result<PreparedSite, String> {
    let mut sites = prepare_federation(dir, std::slice::from_ref(spec))?;
    Ok(sites.remove(0))
}

/// Writes one config per spec with fresh ports; every site peers with every other, and
/// each account fails over to the other sites in the order given.
pub fn prepare_federation(dir: &Path, specs: &[SiteSpec]) -> Result<Vec<PreparedSite>, String> {
    let mut ports = PortPicker::default();
    let mut plans = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut servers = Vec::new();
        for id in &spec.servers {
            servers.push((id.clone(), loopback(ports.pick()?)));
        }
        plans.push(PreparedSite {
            name: spec.name.clone(),
            config: dir.join(format!("{}.toml", spec.name)),
            admin: loopback(ports.pick()?),
            federation: loopback(ports.pick()?),
            management: loopback(ports.pick()?),
            servers,
        });
    }
    for index in 0..specs.len() {
        rewrite_site(specs, &plans, index)?;
    }
    Ok(plans)
}

/// Writes the config of site `index` from `specs[index]` on the addresses of `plans` (a
/// live edit, when its gateway runs).
pub fn rewrite_site(
    specs: &[SiteSpec],
    plans: &[PreparedSite],
    index: usize,
) -> Result<(), String> {
    rewrite_site_via(specs, plans, index, &|peer| plans[peer].federation)
}

/// [`rewrite_site`], with each peer reached at `via(peer index)` (a relay, for faults).
pub fn rewrite_site_via(
    specs: &[SiteSpec],
    plans: &[PreparedSite],
    index: usize,
    via: &dyn Fn(usize) -> SocketAddr,
) -> Result<(), String> {
    let peers: Vec<(&str, SocketAddr)> = (0..plans.len())
        .filter(|peer| *peer != index)
        .map(|peer| (plans[peer].name.as_str(), via(peer)))
        .collect();
    // The peers' accounts with secrets, which this site may take over.
    let theirs: Vec<(&str, &str)> = specs
        .iter()
        .enumerate()
        .filter(|(other, _)| *other != index)
        .flat_map(|(_, other)| &other.accounts)
        .filter_map(|account| Some((account.name.as_str(), account.secrets.as_deref()?)))
        .collect();
    write_site(&specs[index], &plans[index], &peers, &theirs)
}

fn write_site(
    spec: &SiteSpec,
    plan: &PreparedSite,
    peers: &[(&str, SocketAddr)],
    theirs: &[(&str, &str)],
) -> Result<(), String> {
    let PreparedSite {
        admin,
        federation,
        management,
        servers,
        config,
        ..
    } = plan;
    // The sites of a test federation start together: each founds it with the same set.
    let mut founders: Vec<String> = peers
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    founders.push(format!("\"{}\"", spec.name));
    founders.sort();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "[site]\nname = \"{}\"\nadmin_addr = \"{admin}\"\nfederation_addr = \"{federation}\"\nmanagement_addr = \"{management}\"\ninitial_members = [{}]\n",
        spec.name,
        founders.join(", ")
    );
    text.push_str(LOOPBACK_ADMIN);
    if !spec.timings.is_empty() {
        text.push_str("[timings]\n");
        for (key, value) in &spec.timings {
            let _ = writeln!(text, "{key} = {value}");
        }
        text.push('\n');
    }
    if let Some((reserve, max_lent)) = spec.lending {
        let _ = writeln!(
            text,
            "[lending]\nreserve = {reserve}\nmax_lent = {max_lent}\n"
        );
    }
    if !theirs.is_empty() {
        text.push_str("[failover_secrets]\n");
        for (account, path) in theirs {
            let _ = writeln!(text, "{account} = {path:?}");
        }
        text.push('\n');
    }
    for (name, addr) in peers {
        let _ = writeln!(text, "[[peer]]\nname = \"{name}\"\naddr = \"{addr}\"\n");
    }
    let failover: Vec<&str> = peers.iter().map(|(name, _)| *name).collect();
    for (id, addr) in servers {
        let _ = writeln!(
            text,
            "[[server]]\nid = \"{id}\"\nservice_addr = \"{addr}\"\n"
        );
    }
    for account in &spec.accounts {
        text.push_str(&account_text(account, &failover));
    }
    // As an editor saves: a watching gateway never reads a half-written file.
    let temporary = config.with_extension("toml.new");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, config))
        .map_err(|error| format!("cannot write {}: {error}", config.display()))
}

/// An `[[account]]` running the demo workload (or `account.command`), failing over to
/// `failover`; the caller appends `[account.image]` for machines.
pub fn account_text(account: &AccountSpec, failover: &[&str]) -> String {
    let (command, args) = match &account.command {
        Some((command, args)) => (command.clone(), args.clone()),
        None => (
            "{leasehold}".to_owned(),
            [
                "workload",
                "--listen",
                "{service_addr}",
                "--data",
                "{data_dir}",
                "--account",
                "{account}",
            ]
            .iter()
            .map(|arg| arg.to_string())
            .collect(),
        ),
    };
    format!(
        "[[account]]\nname = \"{name}\"\nmin_servers = {min}\nmax_servers = {max}\npriority = {priority}\ntarget_load = {target:?}\nfailover = {failover:?}\n\n[account.workload]\nsoftware = \"{name}-web 1.0\"\ncommand = {command:?}\nargs = {args:?}\ndata_dir = \"data/{name}\"\nhealth_path = \"/health\"\nmetrics_path = \"/metrics\"\nload_metric = \"leasehold_workload_load\"\n{secrets}",
        secrets = account
            .secrets
            .as_ref()
            .map_or(String::new(), |path| format!("secrets = {path:?}\n")),
        name = account.name,
        min = account.min_servers,
        max = account.max_servers,
        priority = account.priority,
        target = account.target_load,
    )
}

/// A federation CA in `dir` with certificates for each site and each of its servers.
pub fn create_certs(dir: &Path, sites: &[(&str, Vec<String>)]) -> Result<(), String> {
    certs::init_ca(dir, true).map_err(|error| error.to_string())?;
    for (site, servers) in sites {
        let site = SiteId::parse(site).map_err(|error| error.to_string())?;
        certs::issue(dir, &PeerName::Site(site.clone()), true)
            .map_err(|error| error.to_string())?;
        for server in servers {
            let server = ServerId::parse(server).map_err(|error| error.to_string())?;
            certs::issue(
                dir,
                &PeerName::Node {
                    site: site.clone(),
                    server,
                },
                true,
            )
            .map_err(|error| error.to_string())?;
        }
    }
    Ok(())
}

/// `text`, a site config the harness wrote, without site `name`: no `[[peer]]` block for
/// it, no failover entry, no founding member (docs/ownership.md, "Members": how a site is
/// removed, and how the founders of a federation start before a site is added).
pub fn without_site(text: &str, name: &str) -> String {
    let peer = format!("name = \"{name}\"");
    text.split("\n\n")
        .filter(|block| !(block.starts_with("[[peer]]") && block.contains(&peer)))
        .collect::<Vec<_>>()
        .join("\n\n")
        .replace(&format!(", \"{name}\""), "")
        .replace(&format!("\"{name}\", "), "")
}

/// `text` without `initial_members`: the config of a site that joins a running
/// federation rather than founding one.
pub fn joining(text: &str) -> String {
    text.lines()
        .filter(|line| !line.starts_with("initial_members"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces the config at `path` with `text` in one rename, so that a gateway's watcher
/// never reads half of it.
pub fn save_config(path: &Path, text: &str) -> Result<(), String> {
    let temporary = path.with_extension("toml.new");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two pickers walking from the same start, the first dropped (its ports released)
    /// before the second picks: the second still does not hand out the first's port.
    #[test]
    fn a_port_is_not_handed_out_twice_in_one_process() {
        let start = pick_seed();
        let first = PortPicker::default().pick_from(start).expect("a port");
        let second = PortPicker::default().pick_from(start).expect("a port");
        assert_ne!(first, second);
        let handed = handed_out();
        assert!(handed.contains(&first) && handed.contains(&second));
    }
}
