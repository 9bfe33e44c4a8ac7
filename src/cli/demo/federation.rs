//! The federation of the demo as real processes: certificates for every site, a gateway per
//! site (each with its own journal), a node agent per server of every site; stopping them
//! all, and the list of everything started, for the end-of-run check.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leasehold_chaos_tests::harness::admin::{get_json, get_text};
use leasehold_chaos_tests::harness::evidence::node_events;
use leasehold_chaos_tests::harness::interrupt;
use leasehold_chaos_tests::harness::onesite::{gateway_args, node_args};
use leasehold_chaos_tests::harness::process::ProcessGuard;
use leasehold_chaos_tests::harness::site::create_certs;
use leasehold_node::event_log::EventKind;
use leasehold_site_gateway::config::SiteConfig;
use nix::sys::signal::Signal;

use super::site::Started;

/// How long each step of the start may take (gateways ready, peers up, every account at
/// its minimum). Generous: the demo may share two cores with a build.
const SETTLE: Duration = Duration::from_secs(60);

/// One site's gateway, as the rest of the demo reaches it.
#[derive(Debug, Clone)]
pub struct SiteHandle {
    pub name: String,
    pub admin: SocketAddr,
}

/// A node agent, and where its evidence is.
struct Node {
    site: String,
    server: String,
    work: PathBuf,
    guard: ProcessGuard,
}

/// The federation's processes. Dropping it kills every process group it started.
pub struct RunningFederation {
    pub sites: Vec<SiteHandle>,
    gateways: Vec<ProcessGuard>,
    nodes: Vec<Node>,
    started: Vec<Started>,
}

impl RunningFederation {
    /// Certificates, every gateway (each waited for until ready, then until it sees every
    /// peer up), then every node agent; returns once every account of every site has its
    /// minimum serving, or fails (also on Ctrl-C or SIGTERM) with the processes stopped.
    pub fn start(
        binary: &Path,
        configs: &[&SiteConfig],
        work: &Path,
    ) -> anyhow::Result<RunningFederation> {
        let certs = work.join("certs");
        let inventory: Vec<(&str, Vec<String>)> = configs
            .iter()
            .map(|c| {
                let servers = c.servers.iter().map(|s| s.id.to_string()).collect();
                (c.site.name.as_str(), servers)
            })
            .collect();
        create_certs(&certs, &inventory)
            .map_err(|error| anyhow::anyhow!("cannot create certificates: {error}"))?;
        let mut running = RunningFederation {
            sites: Vec::new(),
            gateways: Vec::new(),
            nodes: Vec::new(),
            started: Vec::new(),
        };
        for config in configs {
            running.start_gateway(binary, config, &certs, work)?;
        }
        for site in running.sites.clone() {
            running.wait(&format!("the {} gateway to be ready", site.name), || {
                get_text(site.admin, "/ready").map(drop)
            })?;
        }
        for site in running.sites.clone() {
            let what = format!("{} to see every peer up", site.name);
            running.wait(&what, || peers_up(site.admin))?;
        }
        for config in configs {
            running.start_nodes(binary, config, &certs, work)?;
        }
        for config in configs {
            let admin = config.site.admin_addr;
            let site = config.site.name.to_string();
            let minimums: Vec<(String, u64)> = config
                .accounts
                .iter()
                .map(|a| (a.name.to_string(), u64::from(a.min_servers)))
                .collect();
            let what = format!("every account of {site} to have its minimum serving");
            running.wait(&what, || minimums_serving(admin, &minimums))?;
        }
        Ok(running)
    }

    fn start_gateway(
        &mut self,
        binary: &Path,
        config: &SiteConfig,
        certs: &Path,
        work: &Path,
    ) -> anyhow::Result<()> {
        let site = config.site.name.to_string();
        let site_work = work.join(&site);
        make_dir(&site_work)?;
        let args = gateway_args(&config.path, certs, &site_work.join("state"));
        let log = site_work.join("gateway.log");
        let gateway = self.spawn(&format!("gateway {site}"), binary, &args, &log)?;
        println!(
            "  started the {site} gateway (pid {}), admin API http://{}",
            gateway.pid().unwrap_or_default(),
            config.site.admin_addr
        );
        self.gateways.push(gateway);
        self.sites.push(SiteHandle {
            name: site,
            admin: config.site.admin_addr,
        });
        Ok(())
    }

    fn start_nodes(
        &mut self,
        binary: &Path,
        config: &SiteConfig,
        certs: &Path,
        work: &Path,
    ) -> anyhow::Result<()> {
        let site = config.site.name.to_string();
        let mut names = Vec::new();
        for server in &config.servers {
            let server = server.id.to_string();
            let node_work = work.join(&site).join("nodes").join(&server);
            make_dir(&node_work)?;
            let args = node_args(config.site.management_addr, &server, certs, &node_work);
            let log = work.join(&site).join(format!("node-{server}.log"));
            let guard = self.spawn(&format!("node {server}"), binary, &args, &log)?;
            names.push(server.clone());
            self.nodes.push(Node {
                site: site.clone(),
                server,
                work: node_work,
                guard,
            });
        }
        println!(
            "  started {} node agents of {site}: {}",
            names.len(),
            names.join(", ")
        );
        Ok(())
    }

    /// Starts a process in a group of its own, remembered for the end-of-run check.
    fn spawn(
        &mut self,
        name: &str,
        binary: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<ProcessGuard> {
        let guard = ProcessGuard::spawn(name, binary, args, log).map_err(anyhow::Error::msg)?;
        if let Some(pid) = guard.pid() {
            self.started.push(Started {
                name: name.to_owned(),
                pid,
            });
        }
        Ok(guard)
    }

    /// Polls `probe` until it succeeds; fails on timeout, on interrupt, or when a process
    /// the demo started has exited (with the end of its log, which says why).
    fn wait(
        &mut self,
        what: &str,
        mut probe: impl FnMut() -> Result<(), String>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let last = match probe() {
                Ok(()) => return Ok(()),
                Err(last) => last,
            };
            if let Some(signal) = interrupt::requested() {
                bail!("{} while waiting for {what}", signal.as_str());
            }
            if let Some((name, output)) = self.exited() {
                bail!(
                    "{name} exited while waiting for {what}; the end of its log:\n{}",
                    tail(&output, 20)
                );
            }
            if Instant::now() >= deadline {
                bail!("waited {SETTLE:?} for {what}; last seen: {last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The name and output of a started process that has exited, if any.
    fn exited(&mut self) -> Option<(String, String)> {
        let gateways = self.gateways.iter_mut();
        let nodes = self.nodes.iter_mut().map(|node| &mut node.guard);
        gateways.chain(nodes).find_map(|guard| {
            guard
                .exited()
                .then(|| (guard.name().to_owned(), guard.output()))
        })
    }

    /// Kills `site`'s gateway with SIGKILL, the process only (its node agents run on, as in
    /// a real site failure), and reaps it; its pid.
    pub fn kill_gateway(&mut self, site: &str) -> anyhow::Result<u32> {
        let name = format!("gateway {site}");
        let Some(index) = self.gateways.iter().position(|g| g.name() == name) else {
            bail!("no running gateway of {site} to kill");
        };
        let gateway = self.gateways.remove(index);
        let pid = gateway.pid().unwrap_or_default();
        gateway
            .signal(Signal::SIGKILL)
            .map_err(|error| anyhow::anyhow!("cannot kill the {site} gateway: {error}"))?;
        // Dropping the guard reaps it (its process group is the gateway alone), so that no
        // later signal of the end-of-run stop can reach a process that reused its pid.
        drop(gateway);
        Ok(pid)
    }

    /// Every node agent's site and work dir (where its event log is).
    pub fn node_works(&self) -> Vec<(String, PathBuf)> {
        self.nodes
            .iter()
            .map(|node| (node.site.clone(), node.work.clone()))
            .collect()
    }

    /// SIGTERM to every node agent at once (they stop their workloads), each killed with
    /// its group after `node_grace`; then the same for the gateways.
    pub fn stop(&mut self, node_grace: Duration) {
        for node in &self.nodes {
            let _ = node.guard.signal(Signal::SIGTERM);
        }
        for node in &mut self.nodes {
            node.guard.stop(node_grace);
        }
        for gateway in &self.gateways {
            let _ = gateway.signal(Signal::SIGTERM);
        }
        for gateway in &mut self.gateways {
            gateway.stop(Duration::from_secs(5));
        }
    }

    /// Every process the demo started: the gateways, the node agents, and each workload
    /// and its guard as the node event logs record them.
    pub fn all_started(&self) -> Vec<Started> {
        let mut all = self.started.clone();
        for node in &self.nodes {
            let Ok(events) = node_events(&node.work) else {
                continue;
            };
            for event in events {
                if let EventKind::WorkloadStarted {
                    account,
                    epoch,
                    pid,
                    pgid,
                } = &event.kind
                {
                    let what = format!("{} {account} {epoch}", node.server);
                    all.push(Started {
                        name: format!("workload {what}"),
                        pid: *pid,
                    });
                    if pgid != pid {
                        all.push(Started {
                            name: format!("workload guard {what}"),
                            pid: *pgid,
                        });
                    }
                }
            }
        }
        all
    }
}

/// Ok once the gateway at `admin` sees each of its configured peers `up`.
fn peers_up(admin: SocketAddr) -> Result<(), String> {
    let peers = get_json(admin, "/v1/peers")?;
    let not_up: Vec<String> = peers
        .as_array()
        .ok_or_else(|| format!("/v1/peers is not an array: {peers}"))?
        .iter()
        .filter(|peer| peer["state"] != "up")
        .map(|peer| format!("{} is {}", peer["name"], peer["state"]))
        .collect();
    if not_up.is_empty() {
        Ok(())
    } else {
        Err(not_up.join(", "))
    }
}

/// Ok once each of `minimums` (account, minimum) has at least its minimum serving at the
/// gateway at `admin`.
fn minimums_serving(admin: SocketAddr, minimums: &[(String, u64)]) -> Result<(), String> {
    let accounts = get_json(admin, "/v1/accounts")?;
    for (name, min) in minimums {
        let serving = accounts
            .as_array()
            .and_then(|all| all.iter().find(|a| a["name"] == name.as_str()))
            .and_then(|a| a["servers"].as_u64())
            .unwrap_or(0);
        if serving < *min {
            return Err(format!("{name} has {serving} of {min}"));
        }
    }
    Ok(())
}

fn make_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
