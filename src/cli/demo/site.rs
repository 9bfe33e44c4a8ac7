//! One site of the demo as real processes: its ports checked, certificates, the gateway,
//! one node agent per server; stopping them all and finding out what is left.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leasehold_chaos_tests::harness::admin::{get_json, get_text};
use leasehold_chaos_tests::harness::evidence::node_events;
use leasehold_chaos_tests::harness::process::{ProcessGuard, process_alive};
use leasehold_chaos_tests::harness::site::create_certs;
use leasehold_node::event_log::EventKind;
use leasehold_site_gateway::config::SiteConfig;

/// How long the gateway may take to become ready, and the nodes to bring every account to
/// its minimum. Generous: the demo may share two cores with a build.
const SETTLE: Duration = Duration::from_secs(60);

/// Binds every address the site will listen on, and lets go at once: a taken port is
/// named before anything starts, instead of surfacing as a child's failure in a log.
pub fn check_ports(config: &SiteConfig) -> anyhow::Result<()> {
    let site = &config.site;
    let name = &site.name;
    let mut taken = Vec::new();
    let tcp = |addr: SocketAddr| TcpListener::bind(addr).map(drop);
    let udp = |addr: SocketAddr| UdpSocket::bind(addr).map(drop);
    let mut check = |addr: SocketAddr, what: String, result: std::io::Result<()>| {
        if let Err(error) = result {
            taken.push(format!("  {addr} ({what}): {error}"));
        }
    };
    check(
        site.admin_addr,
        format!("{name} admin_addr, TCP"),
        tcp(site.admin_addr),
    );
    check(
        site.management_addr,
        format!("{name} management_addr, QUIC/UDP"),
        udp(site.management_addr),
    );
    check(
        site.federation_addr,
        format!("{name} federation_addr, QUIC/UDP"),
        udp(site.federation_addr),
    );
    for server in &config.servers {
        check(
            server.service_addr,
            format!("workload of server {}, TCP", server.id),
            tcp(server.service_addr),
        );
    }
    if taken.is_empty() {
        Ok(())
    } else {
        bail!(
            "the demo uses the fixed ports of {}, and these are taken:\n{}\nanother `leasehold demo` or a gateway of these configs may be running; stop it and try again",
            config.path.display(),
            taken.join("\n")
        )
    }
}

/// A process the demo started, directly or through a node agent, for the end-of-run check.
#[derive(Debug, Clone)]
pub struct Started {
    pub name: String,
    pub pid: u32,
}

/// The site's processes. Dropping it kills every process group it started (the guards').
pub struct RunningSite {
    pub admin: SocketAddr,
    work: PathBuf,
    gateway: Option<ProcessGuard>,
    nodes: Vec<(String, ProcessGuard)>,
    started: Vec<Started>,
}

impl RunningSite {
    /// Certificates, the gateway, then one node agent per server; returns once the gateway
    /// is ready and every account has its minimum serving, or `interrupt` is set.
    pub fn start(
        binary: &Path,
        config: &SiteConfig,
        work: &Path,
        interrupt: &Arc<AtomicBool>,
    ) -> anyhow::Result<RunningSite> {
        let site = config.site.name.to_string();
        let servers: Vec<String> = config.servers.iter().map(|s| s.id.to_string()).collect();
        let certs = work.join("certs");
        create_certs(&certs, &[(site.as_str(), servers.clone())])
            .map_err(|error| anyhow::anyhow!("cannot create certificates: {error}"))?;
        let mut running = RunningSite {
            admin: config.site.admin_addr,
            work: work.to_path_buf(),
            gateway: None,
            nodes: Vec::new(),
            started: Vec::new(),
        };

        let args = strings(&[
            "gateway",
            "run",
            "--config",
            &config.path.to_string_lossy(),
            "--certs",
            &certs.to_string_lossy(),
            "--state",
            &work.join("state").to_string_lossy(),
        ]);
        let gateway = ProcessGuard::spawn(
            &format!("gateway {site}"),
            binary,
            &args,
            &work.join("gateway.log"),
        )
        .map_err(anyhow::Error::msg)?;
        println!(
            "  started the {site} gateway (pid {}), admin API http://{}",
            gateway.pid().unwrap_or_default(),
            running.admin
        );
        running.remember(&gateway);
        running.gateway = Some(gateway);
        let admin = running.admin;
        running.wait("the gateway to be ready", interrupt, || {
            get_text(admin, "/ready").map(drop)
        })?;

        for server in &servers {
            let node_work = work.join("nodes").join(server);
            std::fs::create_dir_all(&node_work)
                .with_context(|| format!("cannot create {}", node_work.display()))?;
            let args = strings(&[
                "node",
                "run",
                "--gateway",
                &config.site.management_addr.to_string(),
                "--id",
                server,
                "--certs",
                &certs.to_string_lossy(),
                "--work",
                &node_work.to_string_lossy(),
            ]);
            let node = ProcessGuard::spawn(
                &format!("node {server}"),
                binary,
                &args,
                &work.join(format!("node-{server}.log")),
            )
            .map_err(anyhow::Error::msg)?;
            running.remember(&node);
            running.nodes.push((server.clone(), node));
        }
        println!(
            "  started {} node agents: {}",
            servers.len(),
            servers.join(", ")
        );
        let minimums: Vec<(String, u64)> = config
            .accounts
            .iter()
            .map(|a| (a.name.to_string(), u64::from(a.min_servers)))
            .collect();
        running.wait(
            "every account to have its minimum serving",
            interrupt,
            || {
                let accounts = get_json(admin, "/v1/accounts")?;
                for (name, min) in &minimums {
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
            },
        )?;
        Ok(running)
    }

    fn remember(&mut self, guard: &ProcessGuard) {
        if let Some(pid) = guard.pid() {
            self.started.push(Started {
                name: guard.name().to_owned(),
                pid,
            });
        }
    }

    /// Polls `probe` until it succeeds; fails on timeout, on interrupt, or when a process
    /// the demo started has exited (with the end of its log, which says why).
    fn wait(
        &mut self,
        what: &str,
        interrupt: &AtomicBool,
        mut probe: impl FnMut() -> Result<(), String>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let last = match probe() {
                Ok(()) => return Ok(()),
                Err(last) => last,
            };
            if interrupt.load(Ordering::Relaxed) {
                bail!("interrupted while waiting for {what}");
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
        let gateway = self.gateway.iter_mut();
        let nodes = self.nodes.iter_mut().map(|(_, node)| node);
        gateway.chain(nodes).find_map(|guard| {
            guard
                .exited()
                .then(|| (guard.name().to_owned(), guard.output()))
        })
    }

    /// The node agents' work dirs, where their event logs are.
    pub fn node_works(&self) -> Vec<PathBuf> {
        self.nodes
            .iter()
            .map(|(server, _)| self.work.join("nodes").join(server))
            .collect()
    }

    /// SIGTERM to every node agent (they stop their workloads), then to the gateway, each
    /// killed with its group after its grace.
    pub fn stop(&mut self, node_grace: Duration) {
        for (_, node) in &mut self.nodes {
            let _ = node.signal(nix::sys::signal::Signal::SIGTERM);
        }
        for (_, node) in &mut self.nodes {
            node.stop(node_grace);
        }
        if let Some(gateway) = &mut self.gateway {
            gateway.stop(Duration::from_secs(5));
        }
    }

    /// Every process the demo started: the gateway, the node agents, and each workload
    /// and its guard as the node event logs record them.
    pub fn all_started(&self) -> Vec<Started> {
        let mut all = self.started.clone();
        for work in self.node_works() {
            let Ok(events) = node_events(&work) else {
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
                    let what = format!("{} {account} {epoch}", event.server);
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

/// Those of `started` that still run.
pub fn left_running(started: &[Started]) -> Vec<Started> {
    started
        .iter()
        .filter(|process| process_alive(process.pid))
        .cloned()
        .collect()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
