//! A federation one of whose sites runs two gateways on a journal in etcd (docs/ha.md):
//! its node agents given both, its peers dialling both; the other sites run one gateway
//! each. [`Federation::add_standby`] makes a prepared federation so; then the federation's
//! own calls (start a gateway, an agent, the admin address, the logs) act on both of that
//! site's gateways. For `tests/standby_federation.rs` and the `gateway-takeover` chaos
//! scenario: what is judged comes from node event logs and audit logs.

use std::net::SocketAddr;
use std::path::Path;

use super::federation::Federation;
use super::onesite::{SETTLE, gateway_args};
use super::site::{gateway_addrs, save_config};
use super::standby_site::{self, StandbyGateway};

/// The site of two gateways.
pub struct Standby {
    pub site: usize,
    /// gw-1 (the addresses `[site]` gives) and gw-2.
    pub gateways: Vec<StandbyGateway>,
    /// Their federation addresses, in the same order.
    pub federation_addrs: Vec<SocketAddr>,
}

impl Federation {
    /// Makes site `site` of this prepared federation (not started) one of two gateways on
    /// the etcd at `endpoints`: its config names etcd and a second gateway, and every peer
    /// lists that gateway's federation address in `other_addrs` (directly, not through a
    /// relay). Its timings must allow standbys, at every site: node leases and ownership
    /// TTL above the etcd lease plus 3 s (docs/ha.md).
    pub fn add_standby(&mut self, site: usize, endpoints: &[String]) -> Result<(), String> {
        let (admin, federation_addr, management) = gateway_addrs()?;
        let prepared = self.sites[site].clone();
        let endpoints = endpoints
            .iter()
            .map(|endpoint| format!("{endpoint:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let text = read(&prepared.config)?.replacen(
            "[site]\n",
            &format!(
                "[site]\nstore = \"etcd\"\netcd_endpoints = [{endpoints}]\ngateway_name = \"gw-1\"\n"
            ),
            1,
        );
        let text = format!(
            "{text}\n[[site.gateway]]\nname = \"gw-2\"\nadmin_addr = \"{admin}\"\nfederation_addr = \"{federation_addr}\"\nmanagement_addr = \"{management}\"\n"
        );
        save_config(&prepared.config, &text)?;
        // Every peer dials both gateways: its entry (to the first, perhaps through a relay)
        // gains the second.
        let entry = format!("[[peer]]\nname = \"{}\"\naddr = \"", prepared.name);
        for (index, other) in self.sites.iter().enumerate() {
            if index == site {
                continue;
            }
            let text = read(&other.config)?;
            let Some(at) = text.find(&entry) else {
                return Err(format!(
                    "{} has no [[peer]] entry for {}:\n{text}",
                    other.name, prepared.name
                ));
            };
            let end = text[at + entry.len()..]
                .find('\n')
                .map_or(text.len(), |line| at + entry.len() + line + 1);
            let text = format!(
                "{}other_addrs = [\"{federation_addr}\"]\n{}",
                &text[..end],
                &text[end..]
            );
            save_config(&other.config, &text)?;
        }
        let gateway = |name: &str, addrs: (SocketAddr, SocketAddr)| {
            let mut args = gateway_args(
                &prepared.config,
                &self.path("certs"),
                &self.path(&format!("state-{}-{name}", prepared.name)),
            );
            args.extend(["--name".to_owned(), name.to_owned()]);
            StandbyGateway::new(
                name,
                addrs,
                args,
                self.path(&format!("gateway-{}-{name}.log", prepared.name)),
            )
        };
        let gateways = vec![
            gateway("gw-1", (prepared.admin, prepared.management)),
            gateway("gw-2", (admin, management)),
        ];
        self.standby = Some(Standby {
            site,
            gateways,
            federation_addrs: vec![prepared.federation, federation_addr],
        });
        Ok(())
    }

    /// Starts every gateway of the site of standbys that is not running (as a supervisor
    /// would), and waits until one acts.
    pub(super) fn start_standby_gateways(&mut self) -> Result<(), String> {
        let binary = self.binary().to_path_buf();
        let standby = self.standby.as_mut().ok_or("no site of standbys")?;
        for gateway in &mut standby.gateways {
            if gateway.exited() {
                gateway.start(&binary)?;
            }
        }
        self.standby_active("one gateway of the site of standbys to act")
            .map(|_| ())
    }

    /// Which gateway of the site of standbys acts, waiting for one to.
    pub fn standby_active(&self, what: &str) -> Result<usize, String> {
        let standby = self.standby.as_ref().ok_or("no site of standbys")?;
        super::wait_for(what, SETTLE, || standby_site::active(&standby.gateways))
            .map_err(|error| format!("{error}\n{}", standby_site::logs(&standby.gateways)))
    }

    /// kill -9 of the acting gateway of the site of standbys; waits until the other acts.
    /// (killed, now acting).
    pub fn kill_acting_standby(&mut self) -> Result<(usize, usize), String> {
        let acting = self.standby_active("a gateway of the site of standbys to act")?;
        let standby = self.standby.as_ref().ok_or("no site of standbys")?;
        let next = standby_site::kill_and_wait_successor(&standby.gateways, acting)?;
        Ok((acting, next))
    }

    /// Starts gateway `ix` of the site of standbys again and waits until it stands by.
    pub fn restart_standby(&mut self, ix: usize) -> Result<(), String> {
        let binary = self.binary().to_path_buf();
        let standby = self.standby.as_mut().ok_or("no site of standbys")?;
        // Reaped first: a killed process is not running, whatever its guard held.
        standby.gateways[ix].exited();
        standby_site::restart_standby(&binary, &mut standby.gateways, ix)
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}
