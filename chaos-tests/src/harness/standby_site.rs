//! One site run by two gateways on a journal in etcd (docs/ha.md), with node agents given
//! both: for the standby gateways' test and `leasehold bench takeover`. What is measured
//! and checked comes from the node agents' event logs and the gateways' own answers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leasehold_node::event_log::EventKind;
use nix::sys::signal::Signal;

use super::admin::{get_json, get_text};
use super::evidence::{mono_now_ns, node_events};
use super::onesite::{OneSite, gateway_args};
use super::process::ProcessGuard;
use super::site::{AccountSpec, gateway_addrs};
use super::wait_for;

/// Long enough for any step of a takeover on a loaded machine.
const STEP: Duration = Duration::from_secs(30);

/// One of the site's gateways.
pub struct StandbyGateway {
    pub name: String,
    pub admin: SocketAddr,
    pub management: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    pub guard: Option<ProcessGuard>,
}

impl StandbyGateway {
    /// Gateway `name` of a site of standbys, run with `args` (which name it), logging to
    /// `log`; not started.
    pub fn new(
        name: &str,
        (admin, management): (SocketAddr, SocketAddr),
        args: Vec<String>,
        log: PathBuf,
    ) -> StandbyGateway {
        StandbyGateway {
            name: name.to_owned(),
            admin,
            management,
            args,
            log,
            guard: None,
        }
    }

    pub fn start(&mut self, binary: &Path) -> Result<(), String> {
        self.guard = Some(ProcessGuard::spawn(
            &self.name, binary, &self.args, &self.log,
        )?);
        Ok(())
    }

    /// Whether its `/ready` answers 200: only the active gateway's does.
    pub fn ready(&self) -> bool {
        get_text(self.admin, "/ready").is_ok()
    }

    /// Its `/ready` answer when it is a standby (a 503 saying so), or why not.
    pub fn standing_by(&self) -> Result<String, String> {
        match get_text(self.admin, "/ready") {
            Err(text) if text.contains("standby") => Ok(text),
            Err(text) => Err(text),
            Ok(_) => Err(format!("{} is ready: it acts", self.name)),
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        self.guard
            .as_ref()
            .ok_or_else(|| format!("{} is not running", self.name))?
            .signal(signal)
    }

    /// Whether it has exited (reaped), or was never started.
    pub fn exited(&mut self) -> bool {
        self.guard.as_mut().is_none_or(ProcessGuard::exited)
    }
}

/// A site of gateways gw-1 and gw-2 and node agents that know both.
pub struct StandbySite {
    binary: PathBuf,
    pub site: OneSite,
    pub gateways: Vec<StandbyGateway>,
    pub servers: Vec<String>,
    nodes: Vec<ProcessGuard>,
}

/// Who held what, as the active gateway's `/v1/servers` says: (server, account, epoch) of
/// every server serving and healthy, sorted.
pub type Placement = Vec<(String, String, u64)>;

impl StandbySite {
    /// Writes the site (servers, accounts, node leases of `lease_ttl_ms`) on the etcd at
    /// `endpoints`, with certificates; starts nothing.
    pub fn prepare(
        binary: &Path,
        dir: &Path,
        endpoints: &[String],
        servers: &[String],
        accounts: Vec<AccountSpec>,
        lease_ttl_ms: u64,
    ) -> Result<StandbySite, String> {
        let site = OneSite::prepare(binary, dir, "site-a", servers, accounts)?;
        let (admin, federation, management) = gateway_addrs()?;
        let config = std::fs::read_to_string(&site.site.config)
            .map_err(|error| format!("cannot read the site's config: {error}"))?;
        let endpoints = endpoints
            .iter()
            .map(|endpoint| format!("{endpoint:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let lease = format!("lease_ttl_ms = {lease_ttl_ms}");
        let config = config
            .replacen(
                "[site]\n",
                &format!(
                    "[site]\nstore = \"etcd\"\netcd_endpoints = [{endpoints}]\ngateway_name = \"gw-1\"\n"
                ),
                1,
            )
            .replacen("lease_ttl_ms = 1000", &lease, 1);
        if !config.contains(&lease) {
            return Err(format!(
                "the site's config has no lease_ttl_ms to change:\n{config}"
            ));
        }
        let config = format!(
            "{config}\n[[site.gateway]]\nname = \"gw-2\"\nadmin_addr = \"{admin}\"\nfederation_addr = \"{federation}\"\nmanagement_addr = \"{management}\"\n"
        );
        std::fs::write(&site.site.config, config)
            .map_err(|error| format!("cannot write the site's config: {error}"))?;
        let gateway = |name: &str, admin, management| {
            let mut args = gateway_args(
                &site.site.config,
                &site.path("certs"),
                &site.path(&format!("state-{name}")),
            );
            args.extend(["--name".to_owned(), name.to_owned()]);
            StandbyGateway::new(
                name,
                (admin, management),
                args,
                site.path(&format!("{name}.log")),
            )
        };
        let gateways = vec![
            gateway("gw-1", site.site.admin, site.site.management),
            gateway("gw-2", admin, management),
        ];
        Ok(StandbySite {
            binary: binary.to_path_buf(),
            site,
            gateways,
            servers: servers.to_vec(),
            nodes: Vec::new(),
        })
    }

    /// Starts both gateways and waits until one acts; its index.
    pub fn start_gateways(&mut self) -> Result<usize, String> {
        for gateway in &mut self.gateways {
            gateway.start(&self.binary)?;
        }
        self.wait_active("one gateway to act")
    }

    /// Starts a node agent on every server, each given both gateways.
    pub fn start_nodes(&mut self) -> Result<(), String> {
        for server in &self.servers {
            let work = self.site.work(server);
            std::fs::create_dir_all(&work)
                .map_err(|error| format!("cannot create {}: {error}", work.display()))?;
            let args = agent_args(&self.gateways, server, &self.site.path("certs"), &work);
            let log = self.site.path(&format!("node-{server}.log"));
            self.nodes
                .push(ProcessGuard::spawn(server, &self.binary, &args, &log)?);
        }
        Ok(())
    }

    /// Every gateway's log, for failure messages.
    pub fn logs(&self) -> String {
        logs(&self.gateways)
    }

    /// The one gateway that is ready (acts); an error if none is, or both are.
    pub fn active(&self) -> Result<usize, String> {
        active(&self.gateways)
    }

    pub fn wait_active(&self, what: &str) -> Result<usize, String> {
        wait_for(what, STEP, || self.active()).map_err(|error| format!("{error}\n{}", self.logs()))
    }

    /// What gateway `ix` says every server serves, when every server serves.
    pub fn placement(&self, ix: usize) -> Result<Placement, String> {
        let servers = get_json(self.gateways[ix].admin, "/v1/servers")?;
        let mut held: Placement = servers
            .as_array()
            .ok_or("no server list")?
            .iter()
            .filter(|s| s["state"] == "serving" && s["health"] == "healthy")
            .map(|s| {
                (
                    s["id"].as_str().unwrap_or("?").to_owned(),
                    s["account"].as_str().unwrap_or("?").to_owned(),
                    s["epoch"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        held.sort();
        if held.len() == self.servers.len() {
            Ok(held)
        } else {
            Err(format!("{servers}"))
        }
    }

    pub fn wait_placement(&self, ix: usize, what: &str) -> Result<Placement, String> {
        wait_for(what, STEP, || self.placement(ix))
            .map_err(|error| format!("{error}\n{}", self.logs()))
    }

    /// When every node's lease had been extended at least `times` since `since_ns`
    /// (CLOCK_MONOTONIC): the latest of their `times`-th extensions.
    pub fn renewed_since(&self, since_ns: u64, times: usize) -> Result<u64, String> {
        let mut last = 0;
        for server in &self.servers {
            let extended: Vec<u64> = node_events(&self.site.work(server))?
                .into_iter()
                .filter(|event| {
                    event.mono_ns > since_ns
                        && matches!(event.kind, EventKind::LeaseExtended { .. })
                })
                .map(|event| event.mono_ns)
                .collect();
            let at = extended
                .get(times.saturating_sub(1))
                .ok_or_else(|| format!("{server}: {} renewals since", extended.len()))?;
            last = last.max(*at);
        }
        Ok(last)
    }

    pub fn wait_renewed_since(
        &self,
        since_ns: u64,
        times: usize,
        what: &str,
    ) -> Result<u64, String> {
        wait_for(what, STEP, || self.renewed_since(since_ns, times))
            .map_err(|error| format!("{error}\n{}", self.logs()))
    }

    /// kill -9 of gateway `acting`; waits until the other acts and every node's lease was
    /// extended since the kill (only the new active can have done that). The new active,
    /// and the time from the kill to the last node's first renewal.
    pub fn kill_active(&mut self, acting: usize) -> Result<(usize, Duration), String> {
        let killed_at = mono_now_ns();
        let next = kill_and_wait_successor(&self.gateways, acting)?;
        let renewed =
            self.wait_renewed_since(killed_at, 1, "every node renewed by the new active")?;
        Ok((
            next,
            Duration::from_nanos(renewed.saturating_sub(killed_at)),
        ))
    }

    /// Starts again, without waiting, every gateway that has exited (a deposed one exits,
    /// to come back as a standby, as its supervisor would start it).
    pub fn restart_exited(&mut self) -> Result<(), String> {
        for gateway in &mut self.gateways {
            if gateway.exited() {
                gateway.start(&self.binary)?;
            }
        }
        Ok(())
    }

    /// Starts gateway `ix` again and waits until it stands by.
    pub fn restart_standby(&mut self, ix: usize) -> Result<(), String> {
        restart_standby(&self.binary, &mut self.gateways, ix)
    }
}

/// `leasehold node run` of `server`, given every one of `gateways`.
pub fn agent_args(
    gateways: &[StandbyGateway],
    server: &str,
    certs: &Path,
    work: &Path,
) -> Vec<String> {
    let mut args = vec!["node".to_owned(), "run".to_owned()];
    for gateway in gateways {
        args.extend(["--gateway".to_owned(), gateway.management.to_string()]);
    }
    args.extend([
        "--id".to_owned(),
        server.to_owned(),
        "--certs".to_owned(),
        certs.display().to_string(),
        "--work".to_owned(),
        work.display().to_string(),
    ]);
    args
}

/// Every gateway's log, for failure messages.
pub fn logs(gateways: &[StandbyGateway]) -> String {
    gateways
        .iter()
        .map(|g| format!("--- {} ---\n{}", g.name, g.output()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one gateway of `gateways` that is ready (acts); an error if none is, or several.
pub fn active(gateways: &[StandbyGateway]) -> Result<usize, String> {
    let ready: Vec<usize> = (0..gateways.len())
        .filter(|ix| gateways[*ix].ready())
        .collect();
    match ready.as_slice() {
        [one] => Ok(*one),
        [] => Err("no gateway ready".to_owned()),
        many => Err(format!("{} gateways ready at once", many.len())),
    }
}

/// kill -9 of gateway `acting`; waits until another acts, and returns it.
pub fn kill_and_wait_successor(
    gateways: &[StandbyGateway],
    acting: usize,
) -> Result<usize, String> {
    gateways[acting].signal(Signal::SIGKILL)?;
    wait_for("the standby to act", STEP, || {
        let now = active(gateways)?;
        if now == acting {
            Err("the killed gateway still answers".to_owned())
        } else {
            Ok(now)
        }
    })
    .map_err(|error| format!("{error}\n{}", logs(gateways)))
}

/// Starts gateway `ix` of `gateways` again and waits until it stands by.
pub fn restart_standby(
    binary: &Path,
    gateways: &mut [StandbyGateway],
    ix: usize,
) -> Result<(), String> {
    gateways[ix].start(binary)?;
    let gateway = &gateways[ix];
    wait_for("the restarted gateway to stand by", STEP, || {
        gateway.standing_by()
    })
    .map(|_| ())
    .map_err(|error| format!("{error}\n{}", logs(gateways)))
}
