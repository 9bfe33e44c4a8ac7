//! What an edit of a site file changes: the gateway applies a reload as this diff, and
//! `leasehold config diff OLD NEW` prints it before anyone edits a running site.

use std::fmt;

use super::types::{Account, SiteConfig};

/// The difference between two validated configs of one site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub accounts_added: Vec<String>,
    pub accounts_removed: Vec<String>,
    /// Each changed account with the names of its changed fields.
    pub accounts_changed: Vec<(String, Vec<&'static str>)>,
    pub peers_added: Vec<String>,
    pub peers_removed: Vec<String>,
    /// Peers whose address changed.
    pub peers_changed: Vec<String>,
    /// The names of the `[timings]` keys that changed.
    pub timings_changed: Vec<&'static str>,
    pub lending_changed: bool,
    /// Servers (not machines) added to the inventory: admitted and free for accounts.
    pub servers_added: Vec<String>,
    /// Servers (not machines) removed: drained like a server in maintenance, then gone.
    pub servers_removed: Vec<String>,
    /// What a running gateway cannot take without a restart, in words.
    pub needs_restart: Vec<String>,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

pub fn diff(old: &SiteConfig, new: &SiteConfig) -> ConfigDiff {
    let mut diff = ConfigDiff::default();
    for account in &new.accounts {
        match old.account(&account.name) {
            None => diff.accounts_added.push(account.name.to_string()),
            Some(before) => {
                let fields = account_fields(before, account);
                if !fields.is_empty() {
                    diff.accounts_changed
                        .push((account.name.to_string(), fields));
                }
            }
        }
    }
    for account in &old.accounts {
        if new.account(&account.name).is_none() {
            diff.accounts_removed.push(account.name.to_string());
        }
    }
    for peer in &new.peers {
        match old.peer(&peer.name) {
            None => diff.peers_added.push(peer.name.to_string()),
            Some(before) if before.addr != peer.addr => {
                diff.peers_changed.push(peer.name.to_string())
            }
            Some(_) => {}
        }
    }
    for peer in &old.peers {
        if new.peer(&peer.name).is_none() {
            diff.peers_removed.push(peer.name.to_string());
        }
    }
    let (a, b) = (&old.timings, &new.timings);
    let timings = [
        ("lease_ttl_ms", a.lease_ttl != b.lease_ttl),
        (
            "renew_interval_ms",
            a.renew_interval != b.renew_interval || a.node_renew_interval != b.node_renew_interval,
        ),
        (
            "heartbeat_interval_ms",
            a.heartbeat_interval != b.heartbeat_interval
                || a.node_heartbeat_interval != b.node_heartbeat_interval,
        ),
        (
            "heartbeat_misses_before_failed",
            a.heartbeat_misses_before_failed != b.heartbeat_misses_before_failed,
        ),
        ("move_cooldown_ms", a.move_cooldown != b.move_cooldown),
        ("drain_timeout_ms", a.drain_timeout != b.drain_timeout),
        (
            "workload_stop_timeout_ms",
            a.workload_stop_timeout != b.workload_stop_timeout,
        ),
        (
            "machine_boot_timeout_ms",
            a.machine_boot_timeout != b.machine_boot_timeout,
        ),
        ("failback_after_ms", a.failback_after != b.failback_after),
    ];
    diff.timings_changed = timings
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect();
    diff.lending_changed = old.lending != new.lending;
    // These are bound at start-up: the listeners' sockets, the certificate's site name and
    // the management listener's list of admitted servers.
    let (s, t) = (&old.site, &new.site);
    let mut restart = |what: &str, before: String, after: String| {
        if before != after {
            diff.needs_restart
                .push(format!("{what}: {before} -> {after}"));
        }
    };
    restart("site name", s.name.to_string(), t.name.to_string());
    restart(
        "admin_addr",
        s.admin_addr.to_string(),
        t.admin_addr.to_string(),
    );
    restart(
        "federation_addr",
        s.federation_addr.to_string(),
        t.federation_addr.to_string(),
    );
    restart(
        "management_addr",
        s.management_addr.to_string(),
        t.management_addr.to_string(),
    );
    restart(
        "advertise_management_addr",
        s.advertise_management_addr
            .as_ref()
            .map_or("(none)".to_owned(), |a| a.to_string()),
        t.advertise_management_addr
            .as_ref()
            .map_or("(none)".to_owned(), |a| a.to_string()),
    );
    // The ownership argument needs every site's acceptor and claimant on one TTL
    // (docs/ownership.md); a site must not change its own alone, while running.
    restart(
        "ownership_ttl_ms",
        a.ownership_ttl.as_millis().to_string(),
        b.ownership_ttl.as_millis().to_string(),
    );
    restart(
        "ownership_renew_interval_ms",
        a.ownership_renew_interval.as_millis().to_string(),
        b.ownership_renew_interval.as_millis().to_string(),
    );
    // Each machine's BMC client is built at start with its power timeout.
    restart(
        "machine_power_timeout_ms",
        a.machine_power_timeout.as_millis().to_string(),
        b.machine_power_timeout.as_millis().to_string(),
    );
    restart(
        "boot_addr",
        s.boot_addr.map_or("(none)".to_owned(), |a| a.to_string()),
        t.boot_addr.map_or("(none)".to_owned(), |a| a.to_string()),
    );
    // The store and the election are set up at start (docs/ha.md).
    restart("store", format!("{:?}", s.store), format!("{:?}", t.store));
    restart(
        "gateways",
        format!("{:?}", s.gateways),
        format!("{:?}", t.gateways),
    );
    // The listener's TLS, the token file's path and the access log are bound at start; the
    // token file's contents are read again on every edit (`crate::reload`).
    restart("[admin]", old.admin.to_string(), new.admin.to_string());
    restart(
        "journal.audit_retention_days",
        old.journal.audit_retention_days.to_string(),
        new.journal.audit_retention_days.to_string(),
    );
    restart(
        "journal.demand_trace_step_s",
        old.journal.demand_trace_step_s.to_string(),
        new.journal.demand_trace_step_s.to_string(),
    );
    // Servers that run as processes come and go live; a machine's BMC client is built at
    // start, and a server's address is in its workload's arguments: those need a restart.
    let describe = |server: &crate::config::Server| match &server.machine {
        None => format!("{}@{}", server.id, server.service_addr),
        Some(machine) => format!(
            "{}@{} (machine {}, BMC {})",
            server.id, server.service_addr, machine.mac, machine.bmc_url
        ),
    };
    for server in &new.servers {
        match old.servers.iter().find(|before| before.id == server.id) {
            None if server.machine.is_none() => diff.servers_added.push(server.id.to_string()),
            None => diff
                .needs_restart
                .push(format!("server inventory: + {}", describe(server))),
            Some(before) if before != server => diff.needs_restart.push(format!(
                "server inventory: {} -> {}",
                describe(before),
                describe(server)
            )),
            Some(_) => {}
        }
    }
    for server in &old.servers {
        if new.servers.iter().any(|after| after.id == server.id) {
            continue;
        }
        match &server.machine {
            None => diff.servers_removed.push(server.id.to_string()),
            Some(_) => diff
                .needs_restart
                .push(format!("server inventory: - {}", describe(server))),
        }
    }
    diff
}

/// The names (as in the file) of the fields of an account that differ; the site core
/// applies account edits with it.
pub fn diff_accounts(a: &Account, b: &Account) -> Vec<&'static str> {
    account_fields(a, b)
}

fn account_fields(a: &Account, b: &Account) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if a.min_servers != b.min_servers {
        fields.push("min_servers");
    }
    if a.max_servers != b.max_servers {
        fields.push("max_servers");
    }
    if a.priority != b.priority {
        fields.push("priority");
    }
    // Bitwise: validated target loads are finite, and a rewrite of the same number is no
    // change.
    if a.target_load.to_bits() != b.target_load.to_bits() {
        fields.push("target_load");
    }
    if a.failover != b.failover {
        fields.push("failover");
    }
    if a.pinned != b.pinned {
        fields.push("pinned");
    }
    if a.workload != b.workload {
        fields.push("workload");
    }
    if a.image != b.image {
        fields.push("image");
    }
    fields
}

impl fmt::Display for ConfigDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        for name in &self.accounts_added {
            writeln!(f, "+ account {name}: gets a group and servers")?;
        }
        for name in &self.accounts_removed {
            writeln!(f, "- account {name}: drained, its servers freed")?;
        }
        for (name, fields) in &self.accounts_changed {
            writeln!(
                f,
                "~ account {name}: {} (used from the next decision)",
                fields.join(", ")
            )?;
        }
        for name in &self.peers_added {
            writeln!(
                f,
                "+ peer {name}: dialled, and admitted by the listener (it votes on ownership after a restart)"
            )?;
        }
        for name in &self.peers_removed {
            writeln!(
                f,
                "- peer {name}: its connections closed, no longer admitted (ownership majorities count it until a restart)"
            )?;
        }
        for name in &self.peers_changed {
            writeln!(f, "~ peer {name}: address changed, dialled again")?;
        }
        if !self.timings_changed.is_empty() {
            writeln!(
                f,
                "~ timings: {} (apply from each lease's next grant or renewal)",
                self.timings_changed.join(", ")
            )?;
        }
        if self.lending_changed {
            writeln!(f, "~ lending changed (new loan requests follow it)")?;
        }
        for name in &self.servers_added {
            writeln!(
                f,
                "+ server {name}: admitted on the management channel, and free for accounts once its agent registers"
            )?;
        }
        for name in &self.servers_removed {
            writeln!(
                f,
                "- server {name}: drained once its account has its minimum without it, then out of the inventory (its agent is refused at its next connection)"
            )?;
        }
        for what in &self.needs_restart {
            writeln!(f, "! needs a restart, not applied live: {what}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::types::{Peer, Server, SiteSection, Timings, Workload};

    fn account(name: &str, min: u32) -> Account {
        Account {
            name: name.parse().expect("a valid account name"),
            min_servers: min,
            max_servers: 3,
            priority: 10,
            target_load: 5.0,
            failover: Vec::new(),
            pinned: false,
            workload: Workload {
                software: "v1".into(),
                command: "run".into(),
                args: Vec::new(),
                env: Default::default(),
                data_dir: "data".into(),
                health_path: None,
                metrics_path: None,
                load_metric: None,
                secrets: None,
            },
            image: None,
        }
    }

    fn config() -> SiteConfig {
        SiteConfig {
            path: "site-a.toml".into(),
            admin: crate::config::AdminSection::unsecured(),
            site: SiteSection {
                name: "site-a".parse().expect("a valid site name"),
                admin_addr: "127.0.0.1:1".parse().expect("an address"),
                federation_addr: "127.0.0.1:2".parse().expect("an address"),
                management_addr: "127.0.0.1:3".parse().expect("an address"),
                boot_addr: None,
                advertise_management_addr: None,
                advertise_federation_addr: None,
                initial_members: None,
                departed: Vec::new(),
                store: Default::default(),
                gateways: Vec::new(),
            },
            timings: Timings::default(),
            lending: Default::default(),
            journal: Default::default(),
            failover_secrets: Default::default(),
            peers: vec![Peer {
                name: "site-b".parse().expect("a valid site name"),
                addr: "127.0.0.1:4".parse().expect("an address"),
                other_addrs: Vec::new(),
            }],
            servers: vec![Server {
                id: "a1".parse().expect("a valid server id"),
                service_addr: "127.0.0.1:5".parse().expect("an address"),
                machine: None,
            }],
            accounts: vec![account("shop", 1), account("blog", 1)],
        }
    }

    #[test]
    fn equal_configs_have_no_changes() {
        let diff = diff(&config(), &config());
        assert!(diff.is_empty());
        assert_eq!(diff.to_string(), "no changes\n");
    }

    #[test]
    fn accounts_added_removed_and_changed_are_named() {
        let old = config();
        let mut new = config();
        new.accounts.remove(1);
        new.accounts[0].min_servers = 2;
        new.accounts[0].workload.software = "v2".into();
        new.accounts.push(account("wiki", 1));
        let diff = diff(&old, &new);
        assert_eq!(diff.accounts_added, ["wiki"]);
        assert_eq!(diff.accounts_removed, ["blog"]);
        assert_eq!(
            diff.accounts_changed,
            [("shop".to_owned(), vec!["min_servers", "workload"])]
        );
        assert!(diff.needs_restart.is_empty());
        let text = diff.to_string();
        assert!(text.contains("+ account wiki"), "{text}");
        assert!(text.contains("- account blog"), "{text}");
        assert!(
            text.contains("~ account shop: min_servers, workload"),
            "{text}"
        );
    }

    #[test]
    fn peers_timings_and_lending() {
        let old = config();
        let mut new = config();
        new.peers[0].addr = "127.0.0.1:9".parse().expect("an address");
        new.peers.push(Peer {
            name: "site-c".parse().expect("a valid site name"),
            addr: "127.0.0.1:8".parse().expect("an address"),
            other_addrs: Vec::new(),
        });
        new.timings.lease_ttl = Duration::from_secs(5);
        new.timings.failback_after = Duration::from_secs(60);
        new.lending.max_lent = 2;
        let diff = diff(&old, &new);
        assert_eq!(diff.peers_added, ["site-c"]);
        assert_eq!(diff.peers_changed, ["site-b"]);
        // Peers change live (the federation dials, leaves and re-addresses them); who
        // votes on ownership is the site core's to report (`SiteCore::apply_config`).
        assert!(diff.needs_restart.is_empty(), "{:?}", diff.needs_restart);
        assert_eq!(diff.timings_changed, ["lease_ttl_ms", "failback_after_ms"]);
        assert!(diff.lending_changed);
    }

    #[test]
    fn the_ownership_timings_need_a_restart() {
        let old = config();
        let mut new = config();
        new.timings.ownership_ttl = Duration::from_secs(9);
        new.timings.ownership_renew_interval = Duration::from_secs(1);
        let diff = diff(&old, &new);
        assert!(diff.timings_changed.is_empty(), "{diff:?}");
        assert_eq!(diff.needs_restart.len(), 2, "{diff:?}");
        assert!(diff.needs_restart[0].starts_with("ownership_ttl_ms: 3000 -> 9000"));
        assert!(diff.needs_restart[1].starts_with("ownership_renew_interval_ms: 500 -> 1000"));
    }

    #[test]
    fn addresses_need_a_restart_and_servers_come_and_go_live() {
        let old = config();
        let mut new = config();
        new.site.admin_addr = "127.0.0.1:7".parse().expect("an address");
        new.servers.push(Server {
            id: "a2".parse().expect("a valid server id"),
            service_addr: "127.0.0.1:6".parse().expect("an address"),
            machine: None,
        });
        let diff = diff(&old, &new);
        assert_eq!(diff.needs_restart.len(), 1, "{diff:?}");
        assert_eq!(diff.servers_added, ["a2"]);
        let text = diff.to_string();
        assert!(
            text.contains("needs a restart") && text.contains("+ server a2: admitted"),
            "{text}"
        );
        // Removed again: live; re-addressed: a restart.
        let back = super::diff(&new, &old);
        assert_eq!(back.servers_removed, ["a2"]);
        let mut moved = old.clone();
        moved.servers[0].service_addr = "127.0.0.1:9".parse().expect("an address");
        let moved = super::diff(&old, &moved);
        assert!(moved.servers_added.is_empty() && moved.servers_removed.is_empty());
        assert!(
            moved.needs_restart[0].starts_with("server inventory: a1@"),
            "{moved:?}"
        );
    }

    #[test]
    fn what_machines_read_at_start_needs_a_restart() {
        let old = config();
        let mut new = config();
        new.site.advertise_management_addr = Some("10.0.0.5:3".parse().expect("an address"));
        new.timings.machine_power_timeout = Duration::from_secs(30);
        new.timings.machine_boot_timeout = Duration::from_secs(300);
        let diff = diff(&old, &new);
        assert_eq!(diff.needs_restart.len(), 2, "{diff:?}");
        assert!(
            diff.needs_restart[0].starts_with("advertise_management_addr: (none) -> 10.0.0.5:3"),
            "{diff:?}"
        );
        assert!(
            diff.needs_restart[1].starts_with("machine_power_timeout_ms: "),
            "{diff:?}"
        );
        // The boot timeout is the core's, and applies live.
        assert_eq!(diff.timings_changed, ["machine_boot_timeout_ms"]);
    }
}
