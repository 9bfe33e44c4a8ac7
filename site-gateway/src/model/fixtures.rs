//! Fixtures shared by the unit tests of several modules.

use leasehold_federation::ids::{AccountId, SiteId};
use leasehold_federation::wire::common::{DataRef, Software};
use leasehold_federation::wire::site::AccountSpec;

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
