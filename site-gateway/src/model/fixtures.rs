//! Fixtures shared by the unit tests of several modules.

use std::collections::BTreeMap;
use std::path::PathBuf;

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use leasehold_federation::wire::common::{DataRef, Software};
use leasehold_federation::wire::site::AccountSpec;

use crate::config::{Account, Lending, Server, SiteConfig, SiteSection, Timings, Workload};
use crate::model::effects::{Command, Effect};

/// An account `name` homed at `home`, as a catalogue describes it (SLA 1..=2).
pub(crate) fn spec(name: &str, home: &str, failover: &[&str]) -> AccountSpec {
    AccountSpec {
        name: AccountId::parse(name).expect("a valid account name"),
        home: SiteId::parse(home).expect("a valid site name"),
        min_servers: 1,
        max_servers: 2,
        priority: 10,
        target_load: 5.0,
        failover: failover
            .iter()
            .map(|s| SiteId::parse(s).expect("a valid site name"))
            .collect(),
        pinned: false,
        software: Software {
            label: format!("{name} 1"),
            command: "{leasehold}".into(),
            args: vec![],
            env: Default::default(),
            health_path: None,
            metrics_path: None,
            load_metric: None,
            stop_timeout_ms: 1000,
        },
        data: DataRef {
            dir: format!("data/{name}"),
        },
    }
}

/// Site `name` with servers `<prefix>1..` (serving on 127.0.0.1:8000 + 100 × the prefix's
/// place in the alphabet + n), accounts (name, min, max, priority) and `lending`.
pub(crate) fn site_config(
    name: &str,
    prefix: char,
    servers: usize,
    accounts: &[(&str, u32, u32, u32)],
    lending: Lending,
) -> SiteConfig {
    let addr = |port: u16| {
        format!("127.0.0.1:{port}")
            .parse()
            .expect("a valid address")
    };
    let base = 8000 + 100 * (prefix as u16 - 'a' as u16);
    SiteConfig {
        path: PathBuf::from(format!("{name}.toml")),
        admin: crate::config::AdminSection::unsecured(),
        site: SiteSection {
            name: SiteId::parse(name).expect("a valid site name"),
            admin_addr: addr(1),
            federation_addr: addr(2),
            management_addr: addr(3),
            boot_addr: None,
            advertise_management_addr: None,
            advertise_federation_addr: None,
            initial_members: None,
            departed: Vec::new(),
            store: Default::default(),
            gateways: Vec::new(),
        },
        timings: Timings::default(),
        lending,
        journal: Default::default(),
        failover_secrets: Default::default(),
        peers: Vec::new(),
        servers: (1..=servers)
            .map(|n| Server {
                id: ServerId::parse(&format!("{prefix}{n}")).expect("a valid server name"),
                service_addr: addr(base + n as u16),
                machine: None,
            })
            .collect(),
        accounts: accounts
            .iter()
            .map(|(name, min, max, priority)| Account {
                name: AccountId::parse(name).expect("a valid account name"),
                min_servers: *min,
                max_servers: *max,
                priority: *priority,
                target_load: 10.0,
                failover: Vec::new(),
                pinned: false,
                workload: Workload {
                    software: format!("{name} 1"),
                    command: "{leasehold}".into(),
                    args: vec!["workload".into()],
                    env: BTreeMap::new(),
                    data_dir: PathBuf::from(format!("data/{name}")),
                    health_path: None,
                    metrics_path: None,
                    load_metric: None,
                    secrets: None,
                },
                image: None,
            })
            .collect(),
    }
}

/// Every `Apply` command in `effects`: (server, epoch).
pub(crate) fn applies(effects: &[Effect]) -> Vec<(ServerId, Epoch)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send(Command::Apply { server, pointer }) => {
                Some((server.clone(), pointer.epoch))
            }
            _ => None,
        })
        .collect()
}
