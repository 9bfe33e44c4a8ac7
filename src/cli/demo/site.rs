//! The demo's processes, one site at a time: the ports a site listens on, checked before
//! anything starts; the processes started and which of them are left at the end.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use anyhow::bail;
use leasehold_chaos_tests::harness::process::process_alive;
use leasehold_site_gateway::config::SiteConfig;

/// Binds every address of every site, and lets go at once: a taken port is named before
/// anything starts, instead of surfacing as a child's failure in a log.
pub fn check_ports(configs: &[&SiteConfig]) -> anyhow::Result<()> {
    let mut taken = Vec::new();
    for config in configs {
        taken.extend(taken_ports(config));
    }
    if taken.is_empty() {
        return Ok(());
    }
    let files: Vec<String> = configs
        .iter()
        .map(|c| c.path.display().to_string())
        .collect();
    bail!(
        "the demo uses the fixed ports of {}, and these are taken:\n{}\nanother `leasehold demo` or a gateway of these configs may be running; stop it and try again",
        files.join(", "),
        taken.join("\n")
    )
}

/// One line per address of `config` that cannot be bound now.
fn taken_ports(config: &SiteConfig) -> Vec<String> {
    let site = &config.site;
    let name = &site.name;
    let tcp = |addr: SocketAddr| TcpListener::bind(addr).map(drop);
    let udp = |addr: SocketAddr| UdpSocket::bind(addr).map(drop);
    let mut checks = vec![
        (
            site.admin_addr,
            format!("{name} admin_addr, TCP"),
            tcp(site.admin_addr),
        ),
        (
            site.management_addr,
            format!("{name} management_addr, QUIC/UDP"),
            udp(site.management_addr),
        ),
        (
            site.federation_addr,
            format!("{name} federation_addr, QUIC/UDP"),
            udp(site.federation_addr),
        ),
    ];
    for server in &config.servers {
        checks.push((
            server.service_addr,
            format!("workload of {name} server {}, TCP", server.id),
            tcp(server.service_addr),
        ));
    }
    checks
        .into_iter()
        .filter_map(|(addr, what, result)| {
            result
                .err()
                .map(|error| format!("  {addr} ({what}): {error}"))
        })
        .collect()
}

/// A process the demo started, directly or through a node agent, for the end-of-run check.
#[derive(Debug, Clone)]
pub struct Started {
    pub name: String,
    pub pid: u32,
}

/// Those of `started` that still run.
pub fn left_running(started: &[Started]) -> Vec<Started> {
    started
        .iter()
        .filter(|process| process_alive(process.pid))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use leasehold_chaos_tests::harness::site::PortPicker;

    use super::*;

    /// site-a of configs/ on fresh ports (never the demo's own), with its admin port held.
    #[test]
    fn a_taken_port_is_named_with_its_site_and_role() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/site-a.toml");
        let mut text = std::fs::read_to_string(example).unwrap();
        let mut picker = PortPicker::default();
        let own = ["7101", "7201", "7301", "8101", "8102", "8103", "8104"];
        for port in own {
            let fresh = picker.pick().unwrap();
            text = text.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{fresh}"));
        }
        drop(picker);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site-a.toml");
        std::fs::write(&path, text).unwrap();
        let config = leasehold_site_gateway::config::load_site(&path).unwrap();
        assert_eq!(taken_ports(&config), Vec::<String>::new());

        let held = TcpListener::bind(config.site.admin_addr).unwrap();
        let found = taken_ports(&config);
        assert_eq!(found.len(), 1, "{found:?}");
        let expected = format!("{} (site-a admin_addr, TCP)", config.site.admin_addr);
        assert!(found[0].contains(&expected), "{found:?}");
        let error = check_ports(&[&config]).unwrap_err().to_string();
        assert!(error.contains(&expected), "{error}");
        assert!(error.contains("another `leasehold demo`"), "{error}");
        drop(held);
    }
}
