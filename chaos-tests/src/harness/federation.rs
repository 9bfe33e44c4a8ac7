//! Several sites of real processes for a test: a gateway per site on free ports and, on
//! request, a node agent per server, all under process guards, in a temporary directory
//! that is deleted when the federation is dropped (kept with `LEASEHOLD_KEEP_TEST_DIRS`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use tempfile::TempDir;

use super::admin::{get_json, get_text};
use super::evidence::violations;
use super::onesite::{SETTLE, gateway_args, node_args};
use super::process::ProcessGuard;
use super::site::{
    PreparedSite, SiteSpec, create_certs, prepare_federation, rewrite_site, rewrite_site_via,
};
use super::standby_federation::Standby;
use super::wait_for;
use crate::relay::{Faults, Relay};

pub struct Federation {
    binary: PathBuf,
    dir: TempDir,
    pub specs: Vec<SiteSpec>,
    pub sites: Vec<PreparedSite>,
    pub gateways: Vec<Option<ProcessGuard>>,
    /// (site index, server, agent)
    pub nodes: Vec<(usize, String, ProcessGuard)>,
    /// `relays[i][j]`: what site i's gateway dials to reach site j, when the federation was
    /// started with [`Federation::start_with_relays`] (docs/relay.md).
    relays: Vec<Vec<Option<Relay>>>,
    /// Extra environment of each site's gateway.
    pub gateway_env: Vec<Vec<(String, String)>>,
    /// A program and its arguments that every gateway runs under, when not empty (the
    /// gateway's own command follows them): [`super::hosts::HostsFile::prefix`].
    pub gateway_prefix: Vec<String>,
    /// A site run by two gateways on etcd, once [`Federation::add_standby`] made it so.
    pub standby: Option<Standby>,
}

impl Federation {
    /// Writes every site's config with free ports, creates the certificates, and starts
    /// every gateway (waiting until each is ready). No node agent runs yet.
    pub fn start(binary: &Path, specs: Vec<SiteSpec>) -> Result<Federation, String> {
        let mut federation = Federation::prepare(binary, specs)?;
        for index in 0..federation.sites.len() {
            federation.start_gateway(index)?;
        }
        Ok(federation)
    }

    /// [`Federation::start`] without starting anything: the configs and certificates only.
    pub fn prepare(binary: &Path, specs: Vec<SiteSpec>) -> Result<Federation, String> {
        let mut dir = TempDir::new().map_err(|error| error.to_string())?;
        if std::env::var_os("LEASEHOLD_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping the federation's files in {}", dir.path().display());
        }
        let sites = prepare_federation(dir.path(), &specs)?;
        let certs: Vec<(&str, Vec<String>)> = specs
            .iter()
            .map(|spec| (spec.name.as_str(), spec.servers.clone()))
            .collect();
        create_certs(&dir.path().join("certs"), &certs)?;
        Ok(Federation {
            binary: binary.to_path_buf(),
            dir,
            gateways: sites.iter().map(|_| None).collect(),
            relays: Vec::new(),
            gateway_env: sites.iter().map(|_| Vec::new()).collect(),
            gateway_prefix: Vec::new(),
            sites,
            specs,
            nodes: Vec::new(),
            standby: None,
        })
    }

    /// [`Federation::prepare`] with every site-to-site path through a fault-injecting UDP
    /// relay of its own (one per direction of dialling, seeded from `seed`): each site's
    /// `[[peer]] addr` is the relay, whose target is the peer's `federation_addr`.
    pub fn prepare_with_relays(
        binary: &Path,
        specs: Vec<SiteSpec>,
        seed: u64,
    ) -> Result<Federation, String> {
        let mut federation = Federation::prepare(binary, specs)?;
        let count = federation.sites.len();
        let loopback: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        for from in 0..count {
            let mut row = Vec::with_capacity(count);
            for to in 0..count {
                if from == to {
                    row.push(None);
                    continue;
                }
                let target = federation.sites[to].federation;
                let relay = Relay::start(loopback, target, seed ^ ((from * count + to) as u64))
                    .map_err(|error| format!("relay {from}->{to}: {error}"))?;
                row.push(Some(relay));
            }
            federation.relays.push(row);
        }
        for index in 0..count {
            let relays = &federation.relays;
            rewrite_site_via(&federation.specs, &federation.sites, index, &|peer| {
                relays[index][peer]
                    .as_ref()
                    .map_or(federation.sites[peer].federation, Relay::addr)
            })?;
        }
        Ok(federation)
    }

    /// Cuts site `index` off from every other site (both ways), or heals it (`false`).
    pub fn isolate(&self, index: usize, cut: bool) -> Result<(), String> {
        let faults = if cut {
            Faults::partition()
        } else {
            Faults::none()
        };
        for other in (0..self.sites.len()).filter(|other| *other != index) {
            self.set_link(index, other, &faults)?;
        }
        Ok(())
    }

    /// Sets the faults between sites `a` and `b`, as seen from `a`: `faults.to_target` on
    /// what `a` sends to `b`, `faults.from_target` on what `b` sends to `a`, on both QUIC
    /// connections between them (each site dials the other; docs/relay.md).
    pub fn set_link(&self, a: usize, b: usize, faults: &Faults) -> Result<(), String> {
        if self.relays.is_empty() {
            return Err("this federation was not started with relays".into());
        }
        let relay = |from: usize, to: usize| {
            self.relays
                .get(from)
                .and_then(|row| row.get(to))
                .and_then(Option::as_ref)
                .ok_or_else(|| format!("no relay from site {from} to site {to}"))
        };
        // a dials b: a's packets go to the target (b); b dials a: a's packets come back
        // from its target (a), so that relay takes the faults reversed.
        relay(a, b)?
            .set_faults(faults.clone())
            .map_err(|error| error.to_string())?;
        relay(b, a)?
            .set_faults(faults.reversed())
            .map_err(|error| error.to_string())
    }

    /// Keeps the federation's files after it is dropped (a failure's evidence); returns
    /// where they are.
    pub fn keep_files(&mut self) -> &Path {
        self.dir.disable_cleanup(true);
        self.dir.path()
    }

    /// The directory every file of the federation lives in.
    /// The `leasehold` binary every process runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Site `index`'s admin address: for the site of standbys, the acting gateway's (the
    /// first gateway's while none acts).
    pub fn admin(&self, index: usize) -> SocketAddr {
        match self
            .standby
            .as_ref()
            .filter(|standby| standby.site == index)
        {
            Some(standby) => super::standby_site::active(&standby.gateways)
                .map_or(standby.gateways[0].admin, |ix| standby.gateways[ix].admin),
            None => self.sites[index].admin,
        }
    }

    /// Every admin address of site `index`: one, or one per gateway of the site of
    /// standbys (only the acting one answers more than `/live`).
    pub fn admins(&self, index: usize) -> Vec<SocketAddr> {
        match self
            .standby
            .as_ref()
            .filter(|standby| standby.site == index)
        {
            Some(standby) => standby.gateways.iter().map(|g| g.admin).collect(),
            None => vec![self.sites[index].admin],
        }
    }

    pub fn index(&self, site: &str) -> usize {
        self.sites
            .iter()
            .position(|plan| plan.name == site)
            .unwrap_or_else(|| panic!("no site {site} in this federation"))
    }

    /// Starts the gateway of site `index` on its journal and waits until `/ready` answers.
    /// For the site of standbys: starts each of its gateways that is not running and waits
    /// until one acts.
    pub fn start_gateway(&mut self, index: usize) -> Result<(), String> {
        if self.standby_site() == Some(index) {
            return self.start_standby_gateways();
        }
        let site = &self.sites[index];
        let args = gateway_args(
            &site.config,
            &self.path("certs"),
            &self.path(&format!("state-{}", site.name)),
        );
        let log = self.path(&format!("gateway-{}.log", site.name));
        let (program, args) = match self.gateway_prefix.split_first() {
            None => (self.binary.clone(), args),
            Some((program, prefix)) => {
                let mut all = prefix.to_vec();
                all.push(self.binary.display().to_string());
                all.extend(args);
                (PathBuf::from(program), all)
            }
        };
        let gateway = ProcessGuard::spawn_with_env(
            &site.name,
            &program,
            &args,
            &log,
            &self.gateway_env[index],
        )?;
        self.gateways[index] = Some(gateway);
        let admin = self.admin(index);
        wait_for("the gateway to be ready", SETTLE, || {
            get_text(admin, "/ready")
        })
        .map(|_| ())
        .map_err(|error| format!("{error}\n--- gateway log ---\n{}", self.output(index)))
    }

    /// The site run by two gateways, if any.
    pub fn standby_site(&self) -> Option<usize> {
        self.standby.as_ref().map(|standby| standby.site)
    }

    /// kill -9 of the gateway of site `index`; its node agents keep running.
    pub fn kill_gateway(&mut self, index: usize) -> Result<(), String> {
        self.stop_gateway(index, Signal::SIGKILL)
    }

    /// Sends `signal` to the gateway of site `index` and waits (up to 5 s, then kills its
    /// group) until it has exited: SIGKILL for a crash, SIGTERM for a graceful stop.
    pub fn stop_gateway(&mut self, index: usize, signal: Signal) -> Result<(), String> {
        match self.gateways[index].take() {
            Some(mut gateway) => {
                gateway.signal(signal)?;
                gateway.stop(Duration::from_secs(5));
                Ok(())
            }
            None => Err(format!(
                "the gateway of {} is not running",
                self.sites[index].name
            )),
        }
    }

    /// Sends `signal` to the running gateway of site `index` (SIGSTOP, SIGCONT).
    pub fn signal_gateway(&self, index: usize, signal: Signal) -> Result<(), String> {
        self.gateways[index]
            .as_ref()
            .ok_or_else(|| format!("the gateway of {} is not running", self.sites[index].name))?
            .signal(signal)
    }

    /// kill -9 of the node agent of `server` (its workload dies with it, by its guard).
    pub fn kill_node(&mut self, server: &str) -> Result<(), String> {
        let at = self
            .nodes
            .iter()
            .position(|(_, name, _)| name == server)
            .ok_or_else(|| format!("no node agent of {server} runs"))?;
        let (_, _, mut node) = self.nodes.remove(at);
        node.signal(Signal::SIGKILL)?;
        node.stop(Duration::from_secs(5));
        Ok(())
    }

    /// Starts a node agent for every server of every site.
    pub fn start_all_nodes(&mut self) -> Result<(), String> {
        for index in 0..self.sites.len() {
            self.start_nodes_of(index)?;
        }
        Ok(())
    }

    /// Starts a node agent for every server of site `index`.
    pub fn start_nodes_of(&mut self, index: usize) -> Result<(), String> {
        let servers: Vec<String> = self.sites[index]
            .servers
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        for server in servers {
            self.start_node(index, &server)?;
        }
        Ok(())
    }

    /// Stops the node agents of site `index` with `signal` (SIGTERM stops their workloads
    /// first), waiting for each.
    pub fn stop_nodes_of(&mut self, index: usize, signal: Signal) -> Result<(), String> {
        let (theirs, others) = std::mem::take(&mut self.nodes)
            .into_iter()
            .partition(|(site, _, _)| *site == index);
        self.nodes = others;
        for (_, _, mut node) in theirs {
            node.signal(signal)?;
            node.stop(Duration::from_secs(10));
        }
        Ok(())
    }

    /// Starts the node agent of `server` of site `index`, working in `nodes/<server>`.
    pub fn start_node(&mut self, index: usize, server: &str) -> Result<(), String> {
        let work = self.work(server);
        std::fs::create_dir_all(&work)
            .map_err(|error| format!("cannot create {}: {error}", work.display()))?;
        let args = match self
            .standby
            .as_ref()
            .filter(|standby| standby.site == index)
        {
            Some(standby) => super::standby_site::agent_args(
                &standby.gateways,
                server,
                &self.path("certs"),
                &work,
            ),
            None => node_args(
                self.sites[index].management,
                server,
                &self.path("certs"),
                &work,
            ),
        };
        let log = self.path(&format!("node-{server}.log"));
        let node = ProcessGuard::spawn(server, &self.binary, &args, &log)?;
        self.nodes.push((index, server.to_owned(), node));
        Ok(())
    }

    /// The node agent's work directory (its event log lives there).
    pub fn work(&self, server: &str) -> PathBuf {
        self.path(&format!("nodes/{server}"))
    }

    /// The log of site `index`'s gateway (also after it was killed); both gateways' for the
    /// site of standbys.
    pub fn output(&self, index: usize) -> String {
        if let Some(standby) = self
            .standby
            .as_ref()
            .filter(|standby| standby.site == index)
        {
            return super::standby_site::logs(&standby.gateways);
        }
        std::fs::read_to_string(self.path(&format!("gateway-{}.log", self.sites[index].name)))
            .unwrap_or_default()
    }

    /// Every gateway's log, for a failure message.
    pub fn outputs(&self) -> String {
        (0..self.sites.len())
            .map(|index| format!("--- {} ---\n{}", self.sites[index].name, self.output(index)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Rewrites site `index`'s config from `specs[index]` (edit `specs` first); a running
    /// gateway applies it as a live edit.
    pub fn edit(&self, index: usize) -> Result<(), String> {
        rewrite_site(&self.specs, &self.sites, index)
    }

    /// Polls `GET path` on site `index` until `accept` holds; returns what it saw.
    pub fn wait_json(
        &self,
        index: usize,
        path: &str,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let admin = self.admin(index);
        wait_for(
            &format!("{}: {what}", self.sites[index].name),
            timeout,
            || {
                let value = get_json(admin, path)?;
                if accept(&value) {
                    Ok(value)
                } else {
                    Err(value.to_string())
                }
            },
        )
        .map_err(|error| format!("{error}\n{}", self.outputs()))
    }

    /// Polls site `index`'s `/v1/accounts` until the entry of `account` satisfies
    /// `accept`; `what` says what is awaited, after the account's name.
    pub fn wait_account(
        &self,
        index: usize,
        account: &str,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        self.wait_json(
            index,
            "/v1/accounts",
            &format!("{account} {what}"),
            timeout,
            |accounts| {
                accounts.as_array().is_some_and(|accounts| {
                    accounts
                        .iter()
                        .any(|entry| entry["name"] == account && accept(entry))
                })
            },
        )
    }

    /// Safety from every node's event log (S-1 within `stop_slack`, S-2, S-3): one line
    /// per violation, empty when there is none.
    pub fn violations(&self, stop_slack: Duration) -> Result<Vec<String>, String> {
        let works: Vec<PathBuf> = self
            .nodes
            .iter()
            .map(|(_, server, _)| self.work(server))
            .collect();
        let works: Vec<&Path> = works.iter().map(PathBuf::as_path).collect();
        Ok(violations(&works, stop_slack)?
            .into_iter()
            .map(|(work, violation)| format!("{work}: {violation:?}"))
            .collect())
    }
}
