//! One site of real processes for a test: a gateway on free ports and a node agent per
//! server, all under process guards, in a directory the caller owns (and deletes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::admin::{account_state, get_text, ops_and_viewer_tokens};
use super::process::ProcessGuard;
use super::site::{AccountSpec, PreparedSite, SiteSpec, create_certs, prepare_site};
use super::wait_for;

/// Generous: two cores run every process of every test at once.
pub const SETTLE: Duration = Duration::from_secs(40);

/// Timings that make a test site settle in about a second, yet keep leases renewed several
/// times per TTL as in production.
pub const FAST_TIMINGS: [(&str, u64); 7] = [
    ("lease_ttl_ms", 1000),
    ("renew_interval_ms", 250),
    ("heartbeat_interval_ms", 100),
    ("heartbeat_misses_before_failed", 5),
    ("move_cooldown_ms", 1000),
    ("drain_timeout_ms", 200),
    ("workload_stop_timeout_ms", 1000),
];

/// An account running the demo workload (`leasehold workload`) with target load 5.
pub fn account(name: &str, min: u32, max: u32, priority: u32) -> AccountSpec {
    AccountSpec {
        name: name.into(),
        min_servers: min,
        max_servers: max,
        priority,
        target_load: 5.0,
        command: None,
        secrets: None,
    }
}

/// `leasehold gateway run` of the site in `config`.
pub fn gateway_args(config: &Path, certs: &Path, state: &Path) -> Vec<String> {
    let path = |path: &Path| path.to_string_lossy().into_owned();
    vec![
        "gateway".into(),
        "run".into(),
        "--config".into(),
        path(config),
        "--certs".into(),
        path(certs),
        "--state".into(),
        path(state),
    ]
}

/// `leasehold node run` of `server`, whose gateway manages it at `management`.
pub fn node_args(management: SocketAddr, server: &str, certs: &Path, work: &Path) -> Vec<String> {
    vec![
        "node".into(),
        "run".into(),
        "--gateway".into(),
        management.to_string(),
        "--id".into(),
        server.into(),
        "--certs".into(),
        certs.to_string_lossy().into_owned(),
        "--work".into(),
        work.to_string_lossy().into_owned(),
    ]
}

/// A running site. Dropping it kills its gateway and node agents (and their workloads).
pub struct OneSite {
    binary: PathBuf,
    dir: PathBuf,
    pub site: PreparedSite,
    pub gateway: Option<ProcessGuard>,
    pub nodes: Vec<(String, ProcessGuard)>,
}

impl OneSite {
    /// Writes site `name` into `dir` with `servers` and `accounts`, creates certificates,
    /// starts the gateway (waiting until it is ready) and a node agent on each of `agents`.
    pub fn start(
        binary: &Path,
        dir: &Path,
        name: &str,
        servers: &[&str],
        agents: &[&str],
        accounts: Vec<AccountSpec>,
    ) -> Result<OneSite, String> {
        let servers: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
        let mut started = OneSite::prepare(binary, dir, name, &servers, accounts)?;
        started.start_gateway()?;
        for server in agents {
            started.start_node(server)?;
        }
        Ok(started)
    }

    /// site-a with servers a1 and a2 and one account, shop (one server, priority 10), an
    /// `ops.token` and a `viewer.token` in `dir` for its writes and reads, its gateway
    /// started and no node agent yet: the site of the tests that drain, back up, or mix
    /// agents.
    pub fn shop_on_two_servers(binary: &Path, dir: &Path) -> Result<OneSite, String> {
        let servers = ["a1".to_owned(), "a2".to_owned()];
        let mut site = OneSite::prepare(
            binary,
            dir,
            "site-a",
            &servers,
            vec![account("shop", 1, 1, 10)],
        )?;
        // Reads stay open on loopback, as in every test site; writes need a token.
        ops_and_viewer_tokens(binary, dir, &site.site.config)?;
        site.start_gateway()?;
        Ok(site)
    }

    /// [`OneSite::start`] without starting anything: the config and the certificates, for
    /// a test that edits the config first.
    pub fn prepare(
        binary: &Path,
        dir: &Path,
        name: &str,
        servers: &[String],
        accounts: Vec<AccountSpec>,
    ) -> Result<OneSite, String> {
        let spec = SiteSpec {
            name: name.into(),
            servers: servers.to_vec(),
            accounts,
            timings: FAST_TIMINGS.to_vec(),
            lending: None,
        };
        let site = prepare_site(dir, &spec)?;
        create_certs(&dir.join("certs"), &[(name, servers.to_vec())])?;
        Ok(OneSite {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            site,
            gateway: None,
            nodes: Vec::new(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn admin(&self) -> SocketAddr {
        self.site.admin
    }

    /// Starts the gateway and waits until `/ready` answers.
    pub fn start_gateway(&mut self) -> Result<(), String> {
        self.start_gateway_with(&[])
    }

    /// [`OneSite::start_gateway`] with more arguments for `leasehold gateway run`.
    pub fn start_gateway_with(&mut self, extra: &[String]) -> Result<(), String> {
        let mut args = gateway_args(&self.site.config, &self.path("certs"), &self.path("state"));
        args.extend_from_slice(extra);
        let gateway =
            ProcessGuard::spawn("gateway", &self.binary, &args, &self.path("gateway.log"))?;
        self.gateway = Some(gateway);
        let admin = self.admin();
        wait_for("the gateway to be ready", SETTLE, || {
            get_text(admin, "/ready")
        })
        .map(|_| ())
        .map_err(|error| format!("{error}\n--- gateway log ---\n{}", self.gateway_output()))
    }

    /// Starts the node agent of `server`, working in `nodes/<server>`.
    pub fn start_node(&mut self, server: &str) -> Result<(), String> {
        self.start_node_with(server, &[])
    }

    /// [`OneSite::start_node`] with more arguments for `leasehold node run`.
    pub fn start_node_with(&mut self, server: &str, extra: &[String]) -> Result<(), String> {
        let work = self.work(server);
        std::fs::create_dir_all(&work)
            .map_err(|error| format!("cannot create {}: {error}", work.display()))?;
        let mut args = node_args(self.site.management, server, &self.path("certs"), &work);
        args.extend_from_slice(extra);
        let log = self.path(&format!("node-{server}.log"));
        let node = ProcessGuard::spawn(server, &self.binary, &args, &log)?;
        self.nodes.push((server.to_owned(), node));
        Ok(())
    }

    /// The node agent's work directory (its event log lives there).
    pub fn work(&self, server: &str) -> PathBuf {
        self.path(&format!("nodes/{server}"))
    }

    pub fn gateway_output(&self) -> String {
        self.gateway
            .as_ref()
            .map(|gateway| gateway.output())
            .unwrap_or_default()
    }

    /// Waits until `account` has exactly `count` serving servers; returns its
    /// `/v1/accounts` entry.
    pub fn wait_serving(&self, account: &str, count: u64) -> Result<Value, String> {
        let admin = self.admin();
        wait_for(
            &format!("{account} to have {count} serving servers"),
            SETTLE,
            || {
                let state = account_state(admin, account)?;
                if state["servers"] == count {
                    Ok(state)
                } else {
                    Err(state.to_string())
                }
            },
        )
        .map_err(|error| format!("{error}\n--- gateway log ---\n{}", self.gateway_output()))
    }
}
