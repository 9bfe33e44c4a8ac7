//! A federation whose first site runs two gateways on a journal in etcd (docs/ha.md), its
//! node agents given both and its peers dialling both; the other sites run one gateway
//! each, as [`Federation`] starts them. For the test of takeovers in a federation: what
//! is judged comes from node event logs and the sites' audit logs.

use std::net::SocketAddr;
use std::path::Path;

use super::federation::Federation;
use super::onesite::{SETTLE, gateway_args};
use super::process::ProcessGuard;
use super::site::{PortPicker, SiteSpec, save_config};
use super::standby_site::{self, StandbyGateway};

/// The site of standbys is the federation's first.
pub const STANDBY_SITE: usize = 0;

pub struct StandbyFederation {
    pub federation: Federation,
    /// gw-1 (the addresses `[site]` gives) and gw-2 of the first site.
    pub gateways: Vec<StandbyGateway>,
    /// Their federation addresses, in the same order.
    pub federation_addrs: Vec<SocketAddr>,
}

impl StandbyFederation {
    /// Writes the federation of `specs` (whose timings must allow standbys: node leases
    /// and ownership TTL above the etcd lease plus 3 s, docs/ha.md) with its first site on
    /// the etcd at `endpoints`, and a second gateway for it; starts nothing.
    pub fn prepare(
        binary: &Path,
        specs: Vec<SiteSpec>,
        endpoints: &[String],
    ) -> Result<StandbyFederation, String> {
        let federation = Federation::prepare(binary, specs)?;
        let mut picker = PortPicker::default();
        let mut pick = || -> Result<SocketAddr, String> {
            format!("127.0.0.1:{}", picker.pick()?)
                .parse()
                .map_err(|error| format!("{error}"))
        };
        let (admin, federation_addr, management) = (pick()?, pick()?, pick()?);
        drop(picker);
        let site = &federation.sites[STANDBY_SITE];
        let endpoints = endpoints
            .iter()
            .map(|endpoint| format!("{endpoint:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let text = read(&site.config)?.replacen(
            "[site]\n",
            &format!(
                "[site]\nstore = \"etcd\"\netcd_endpoints = [{endpoints}]\ngateway_name = \"gw-1\"\n"
            ),
            1,
        );
        let text = format!(
            "{text}\n[[site.gateway]]\nname = \"gw-2\"\nadmin_addr = \"{admin}\"\nfederation_addr = \"{federation_addr}\"\nmanagement_addr = \"{management}\"\n"
        );
        save_config(&site.config, &text)?;
        // Every peer dials both of its gateways.
        let entry = format!("name = \"{}\"\naddr = \"{}\"\n", site.name, site.federation);
        for other in federation.sites.iter().skip(1) {
            let text = read(&other.config)?;
            if !text.contains(&entry) {
                return Err(format!(
                    "{} has no [[peer]] entry `{entry}`:\n{text}",
                    other.name
                ));
            }
            let text = text.replacen(
                &entry,
                &format!("{entry}other_addrs = [\"{federation_addr}\"]\n"),
                1,
            );
            save_config(&other.config, &text)?;
        }
        let gateway = |name: &str, addrs: (SocketAddr, SocketAddr)| {
            let mut args = gateway_args(
                &site.config,
                &federation.path("certs"),
                &federation.path(&format!("state-{}-{name}", site.name)),
            );
            args.extend(["--name".to_owned(), name.to_owned()]);
            StandbyGateway::new(
                name,
                addrs,
                args,
                federation.path(&format!("gateway-{}-{name}.log", site.name)),
            )
        };
        let gateways = vec![
            gateway("gw-1", (site.admin, site.management)),
            gateway("gw-2", (admin, management)),
        ];
        let federation_addrs = vec![site.federation, federation_addr];
        Ok(StandbyFederation {
            federation,
            gateways,
            federation_addrs,
        })
    }

    /// Starts the first site's gateways (waiting until one acts), every other site's
    /// gateway, then every node agent; the first site's agents are given both gateways.
    pub fn start(&mut self) -> Result<usize, String> {
        let binary = self.federation.binary().to_path_buf();
        for gateway in &mut self.gateways {
            gateway.start(&binary)?;
        }
        let acting = self.wait_active("one gateway of the first site to act")?;
        for index in 1..self.federation.sites.len() {
            self.federation.start_gateway(index)?;
        }
        let servers: Vec<String> = self.federation.sites[STANDBY_SITE]
            .servers
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        for server in servers {
            self.start_node(&server)?;
        }
        for index in 1..self.federation.sites.len() {
            self.federation.start_nodes_of(index)?;
        }
        Ok(acting)
    }

    /// Starts the agent of `server` of the first site, given both gateways; it counts
    /// among the federation's nodes (their event logs are judged alike).
    fn start_node(&mut self, server: &str) -> Result<(), String> {
        let work = self.federation.work(server);
        std::fs::create_dir_all(&work)
            .map_err(|error| format!("cannot create {}: {error}", work.display()))?;
        let args = standby_site::agent_args(
            &self.gateways,
            server,
            &self.federation.path("certs"),
            &work,
        );
        let log = self.federation.path(&format!("node-{server}.log"));
        let binary = self.federation.binary().to_path_buf();
        let node = ProcessGuard::spawn(server, &binary, &args, &log)?;
        self.federation
            .nodes
            .push((STANDBY_SITE, server.to_owned(), node));
        Ok(())
    }

    /// Which of the first site's gateways acts now.
    pub fn active(&self) -> Result<usize, String> {
        standby_site::active(&self.gateways)
    }

    pub fn wait_active(&self, what: &str) -> Result<usize, String> {
        super::wait_for(what, SETTLE, || self.active())
            .map_err(|error| format!("{error}\n{}", self.logs()))
    }

    /// kill -9 of the acting gateway of the first site; waits until the other acts, and
    /// returns it.
    pub fn kill_active(&mut self, acting: usize) -> Result<usize, String> {
        standby_site::kill_and_wait_successor(&self.gateways, acting)
    }

    /// Starts gateway `ix` of the first site again and waits until it stands by.
    pub fn restart_standby(&mut self, ix: usize) -> Result<(), String> {
        let binary = self.federation.binary().to_path_buf();
        standby_site::restart_standby(&binary, &mut self.gateways, ix)
    }

    /// The first site's gateways' logs and every other gateway's.
    pub fn logs(&self) -> String {
        let others = (1..self.federation.sites.len())
            .map(|index| {
                format!(
                    "--- {} ---\n{}",
                    self.federation.sites[index].name,
                    self.federation.output(index)
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        format!("{}\n{others}", standby_site::logs(&self.gateways))
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}
