//! A site of two gateways on a real etcd (docs/ha.md): one acts, the other stands by;
//! kill -9 of the one that acts, again and again, and the other takes over with no
//! workload stopped and no server changing account. Checked from the node agents' event
//! logs and the journal in etcd, not from what the gateways say of themselves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leasehold_chaos_tests::harness::admin::{get_json, get_text};
use leasehold_chaos_tests::harness::etcd::{EtcdCluster, etcd_available};
use leasehold_chaos_tests::harness::evidence::{mono_now_ns, node_events, violations};
use leasehold_chaos_tests::harness::onesite::{OneSite, account, gateway_args};
use leasehold_chaos_tests::harness::process::ProcessGuard;
use leasehold_chaos_tests::harness::site::PortPicker;
use leasehold_chaos_tests::harness::wait_for;
use leasehold_node::event_log::EventKind;
use nix::sys::signal::Signal;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
/// Takeovers in a run.
const KILLS: usize = 10;

struct Gateway {
    name: &'static str,
    admin: SocketAddr,
    management: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    guard: Option<ProcessGuard>,
}

impl Gateway {
    fn start(&mut self) {
        self.guard = Some(
            ProcessGuard::spawn(self.name, Path::new(BINARY), &self.args, &self.log)
                .expect("a gateway starts"),
        );
    }

    fn ready(&self) -> bool {
        get_text(self.admin, "/ready").is_ok()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The site's config, made a site of gateways gw-1 (`[site]`'s addresses) and gw-2 on a
/// journal in etcd, with node leases long enough for a takeover.
fn two_gateways(
    site: &OneSite,
    endpoints: &[String],
    picker: &mut PortPicker,
) -> (SocketAddr, SocketAddr, SocketAddr) {
    let config = std::fs::read_to_string(&site.site.config).expect("the site's config");
    let mut pick = || -> SocketAddr {
        format!("127.0.0.1:{}", picker.pick().expect("a port"))
            .parse()
            .expect("an address")
    };
    let (admin, federation, management) = (pick(), pick(), pick());
    let endpoints = endpoints
        .iter()
        .map(|endpoint| format!("{endpoint:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = config
        .replacen(
            "[site]\n",
            &format!(
                "[site]\nstore = \"etcd\"\netcd_endpoints = [{endpoints}]\ngateway_name = \"gw-1\"\n"
            ),
            1,
        )
        .replacen("lease_ttl_ms = 1000", "lease_ttl_ms = 8000", 1);
    assert!(config.contains("lease_ttl_ms = 8000"), "{config}");
    let config = format!(
        "{config}\n[[site.gateway]]\nname = \"gw-2\"\nadmin_addr = \"{admin}\"\nfederation_addr = \"{federation}\"\nmanagement_addr = \"{management}\"\n"
    );
    std::fs::write(&site.site.config, config).expect("write the config");
    (admin, federation, management)
}

#[test]
fn killing_the_active_gateway_again_and_again_stops_no_workload() {
    if let Err(why) = etcd_available() {
        panic!("this test needs etcd: {why}");
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let etcd = EtcdCluster::start(&dir.path().join("etcd"), 1).expect("etcd starts");
    let servers = ["a1".to_owned(), "a2".to_owned()];
    let site = OneSite::prepare(
        Path::new(BINARY),
        dir.path(),
        "site-a",
        &servers,
        vec![account("shop", 1, 1, 10), account("blog", 1, 1, 5)],
    )
    .expect("the site's config and certificates");
    let mut picker = PortPicker::default();
    let (admin_2, _, management_2) = two_gateways(&site, &etcd.endpoints(), &mut picker);
    drop(picker);
    let args = |name: &str, state: &str| {
        let mut args = gateway_args(&site.site.config, &site.path("certs"), &site.path(state));
        args.extend(["--name".to_owned(), name.to_owned()]);
        args
    };
    let mut gateways = [
        Gateway {
            name: "gw-1",
            admin: site.site.admin,
            management: site.site.management,
            args: args("gw-1", "state-1"),
            log: site.path("gw-1.log"),
            guard: None,
        },
        Gateway {
            name: "gw-2",
            admin: admin_2,
            management: management_2,
            args: args("gw-2", "state-2"),
            log: site.path("gw-2.log"),
            guard: None,
        },
    ];
    for gateway in &mut gateways {
        gateway.start();
    }
    let logs = |gateways: &[Gateway]| {
        gateways
            .iter()
            .map(|g| format!("--- {} ---\n{}", g.name, g.output()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let active = |gateways: &[Gateway]| -> Result<usize, String> {
        let ready: Vec<usize> = (0..gateways.len())
            .filter(|ix| gateways[*ix].ready())
            .collect();
        match ready.as_slice() {
            [one] => Ok(*one),
            [] => Err("no gateway ready".to_owned()),
            many => Err(format!("{} gateways ready at once", many.len())),
        }
    };
    let first = wait_for("one gateway to act", Duration::from_secs(60), || {
        active(&gateways)
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", logs(&gateways)));
    // The standby says so, and who acts.
    let standby =
        get_text(gateways[1 - first].admin, "/ready").expect_err("a standby is not ready");
    assert!(
        standby.contains("standby") && standby.contains(gateways[first].name),
        "{standby}"
    );

    // Node agents given both gateways.
    let mut nodes = Vec::new();
    for server in &servers {
        let work = site.work(server);
        std::fs::create_dir_all(&work).expect("a work directory");
        let node_args = vec![
            "node".to_owned(),
            "run".to_owned(),
            "--gateway".to_owned(),
            gateways[0].management.to_string(),
            "--gateway".to_owned(),
            gateways[1].management.to_string(),
            "--id".to_owned(),
            server.clone(),
            "--certs".to_owned(),
            site.path("certs").display().to_string(),
            "--work".to_owned(),
            work.display().to_string(),
        ];
        nodes.push(
            ProcessGuard::spawn(
                server,
                Path::new(BINARY),
                &node_args,
                &site.path(&format!("node-{server}.log")),
            )
            .expect("a node agent starts"),
        );
    }
    let serving = |admin: SocketAddr| -> Result<Vec<(String, String, u64)>, String> {
        let servers = get_json(admin, "/v1/servers")?;
        let mut held: Vec<(String, String, u64)> = servers
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
        if held.len() == 2 {
            Ok(held)
        } else {
            Err(format!("{servers}"))
        }
    };
    let mut acting = first;
    let placed = wait_for("both accounts served", Duration::from_secs(60), || {
        serving(gateways[acting].admin)
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", logs(&gateways)));

    let mut takeovers = Vec::new();
    for kill in 0..KILLS {
        let killed = acting;
        let killed_at = mono_now_ns();
        gateways[killed]
            .guard
            .as_ref()
            .expect("the active gateway runs")
            .signal(Signal::SIGKILL)
            .expect("kill -9");
        let next = wait_for("the standby to act", Duration::from_secs(30), || {
            let now = active(&gateways)?;
            if now == killed {
                Err("the killed gateway still answers".to_owned())
            } else {
                Ok(now)
            }
        })
        .unwrap_or_else(|error| panic!("kill {kill}: {error}\n{}", logs(&gateways)));
        // The takeover is done when every node's lease was extended after the kill: only
        // the new active can have done that. From the nodes' own event logs.
        let renewed = wait_for(
            "every node renewed by the new active",
            Duration::from_secs(30),
            || {
                let mut last = 0;
                for server in &servers {
                    let first = node_events(&site.work(server))?
                        .into_iter()
                        .find(|event| {
                            event.mono_ns > killed_at
                                && matches!(event.kind, EventKind::LeaseExtended { .. })
                        })
                        .ok_or_else(|| format!("{server} not renewed since the kill"))?;
                    last = last.max(first.mono_ns);
                }
                Ok(last)
            },
        )
        .unwrap_or_else(|error| panic!("kill {kill}: {error}\n{}", logs(&gateways)));
        takeovers.push(Duration::from_nanos(renewed - killed_at));
        // The same servers, accounts and epochs, served under the new active.
        wait_for(
            "the same placement under the new active",
            Duration::from_secs(30),
            || {
                let now = serving(gateways[next].admin)?;
                if now == placed {
                    Ok(now)
                } else {
                    Err(format!("{now:?}"))
                }
            },
        )
        .unwrap_or_else(|error| {
            panic!(
                "kill {kill}: {error}; before {placed:?}\n{}",
                logs(&gateways)
            )
        });
        // The killed one comes back, as a standby.
        gateways[killed].start();
        wait_for(
            "the restarted gateway to stand by",
            Duration::from_secs(30),
            || {
                get_text(gateways[killed].admin, "/ready")
                    .err()
                    .filter(|text| text.contains("standby"))
                    .ok_or_else(|| "not standing by yet".to_owned())
            },
        )
        .unwrap_or_else(|error| panic!("kill {kill}: {error}\n{}", logs(&gateways)));
        acting = next;
    }
    takeovers.sort();

    // An upgrade's handover: SIGTERM to the active gateway gives the key up as it exits,
    // and the standby takes over, the nodes' workloads running on.
    let leaving = acting;
    let termed_at = mono_now_ns();
    let mut guard = gateways[leaving]
        .guard
        .take()
        .expect("the active gateway runs");
    guard.signal(Signal::SIGTERM).expect("SIGTERM");
    wait_for(
        "the active gateway to exit",
        Duration::from_secs(30),
        || {
            if guard.exited() {
                Ok(())
            } else {
                Err("running".to_owned())
            }
        },
    )
    .unwrap_or_else(|error| panic!("{error}\n{}", logs(&gateways)));
    assert!(
        gateways[leaving]
            .output()
            .contains("handed over: the site's election key given up"),
        "{}",
        logs(&gateways)
    );
    wait_for(
        "every node renewed by the other gateway",
        Duration::from_secs(30),
        || {
            for server in &servers {
                node_events(&site.work(server))?
                    .into_iter()
                    .find(|event| {
                        event.mono_ns > termed_at
                            && matches!(event.kind, EventKind::LeaseExtended { .. })
                    })
                    .ok_or_else(|| format!("{server} not renewed since the handover"))?;
            }
            Ok(())
        },
    )
    .unwrap_or_else(|error| panic!("handover: {error}\n{}", logs(&gateways)));
    assert_eq!(active(&gateways), Ok(1 - leaving), "the other gateway acts");
    eprintln!("takeovers, kill -9 to every node renewed by the new active (sorted): {takeovers:?}");

    // The evidence: no workload stopped, no second pointer, no safety violation.
    for server in &servers {
        let events = node_events(&site.work(server)).expect("the node's event log");
        let stopped: Vec<_> = events
            .iter()
            .filter(|event| matches!(event.kind, EventKind::WorkloadStopped { .. }))
            .collect();
        assert!(
            stopped.is_empty(),
            "{server}: workloads stopped: {stopped:?}"
        );
        let pointers = events
            .iter()
            .filter(|event| matches!(event.kind, EventKind::PointerAccepted { .. }))
            .count();
        assert_eq!(pointers, 1, "{server}: one pointer in all, at the start");
    }
    let works: Vec<PathBuf> = servers.iter().map(|s| site.work(s)).collect();
    let works: Vec<&Path> = works.iter().map(PathBuf::as_path).collect();
    let found = violations(&works, Duration::from_millis(500)).expect("the node logs");
    assert!(found.is_empty(), "{found:?}");
    // The standbys refused the agents' registrations, naming the gateway that acted.
    let agent_log = std::fs::read_to_string(site.path("node-a1.log")).expect("a1's log");
    assert!(
        agent_log.contains("is a standby; the active gateway is gw-"),
        "no standby refusal in a1's log:\n{agent_log}"
    );
    drop(nodes);
}
