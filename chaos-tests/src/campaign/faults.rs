//! How each kind of fault is applied to a running federation and healed, and the evidence
//! each leaves for the checks (what a gateway listed before it stopped, what a config
//! edit did).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leasehold_federation::ids::{AccountId, ServerId, SiteId};
use leasehold_node::event_log::EventKind;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;

use super::layout::{account_name, server_name};
use super::members::{self, MemberChanged};
use super::schedule::{Fault, FaultKind, Target};
use super::stale::{StaleGrant, Stand};
use crate::harness::admin::{account_state, get_json, get_text};
use crate::harness::evidence::node_events;
use crate::harness::federation::Federation;
use crate::harness::wait_for;
use crate::relay::{Direction, Faults, LinkFaults};

/// How long a config edit may take to be seen (the reload watcher debounces).
const EDIT_SEEN_WITHIN: Duration = Duration::from_secs(10);

/// A lease as a gateway listed it in `/v1/servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedLease {
    pub server: String,
    pub account: String,
    pub epoch: u64,
}

/// A gateway stopped and started again: what it listed just before, and when (wall ms).
#[derive(Debug, Clone)]
pub struct Restarted {
    pub site: usize,
    pub leases_before: Vec<ListedLease>,
    /// When the list was read.
    pub listed_wall_ms: u64,
    /// When the gateway had exited.
    pub stopped_wall_ms: u64,
    pub restarted_wall_ms: Option<u64>,
}

/// What a config edit did, as the site's admin API showed it.
#[derive(Debug, Clone)]
pub struct ConfigEdited {
    pub site: usize,
    /// The invalid edit was counted refused and the site answered `/ready` afterwards.
    pub invalid_refused: Result<String, String>,
    /// The valid edit's new minimum showed in `/v1/accounts`.
    pub valid_applied: Result<String, String>,
    /// Undoing it at the fault's end showed too.
    pub undone: Result<String, String>,
}

/// A fault as it really happened: the times it was applied and healed (ms from the
/// campaign's start), what went wrong applying it, and its evidence.
#[derive(Debug, Clone)]
pub struct Applied {
    pub fault: Fault,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
    pub restarted: Option<Restarted>,
    pub config: Option<Box<ConfigEdited>>,
    pub member: Option<MemberChanged>,
}

/// What a fault in force holds until it is healed.
#[derive(Default)]
pub struct InForce {
    stand_in: Option<StaleGrant>,
    killed_node: Option<String>,
    edited_from: Option<(u32, u32)>,
    /// Which gateway of the site of standbys a takeover killed.
    killed_gateway: Option<usize>,
}

pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// Applies `record.fault`; what must be undone later stays in the returned [`InForce`].
pub fn apply(federation: &mut Federation, record: &mut Applied) -> InForce {
    let mut held = InForce::default();
    if let Err(error) = try_apply(federation, record, &mut held) {
        record.errors.push(format!("applying: {error}"));
    }
    held
}

/// Heals `record.fault`.
pub fn heal(federation: &mut Federation, record: &mut Applied, held: InForce) {
    if let Err(error) = try_heal(federation, record, held) {
        record.errors.push(format!("healing: {error}"));
    }
}

fn try_apply(
    federation: &mut Federation,
    record: &mut Applied,
    held: &mut InForce,
) -> Result<(), String> {
    let sites = federation.sites.len();
    let target = record.fault.target.clone();
    match (record.fault.kind, &target) {
        (FaultKind::GatewayKill, Target::Site(site)) => {
            stop_gateway(federation, record, *site, Signal::SIGKILL)
        }
        (FaultKind::Restart, Target::Site(site)) => {
            stop_gateway(federation, record, *site, Signal::SIGTERM)
        }
        (FaultKind::GatewayTakeover, Target::Site(site)) => {
            if federation.standby_site() != Some(*site) {
                return Err(format!(
                    "{} runs no standby gateways",
                    federation.sites[*site].name
                ));
            }
            // Judged as a restart of the site: what the acting gateway listed, and the
            // leases its successor must recover from the store.
            let mut restarted = listed_before(federation, *site);
            // The successor recovers the leases only once the killed one's etcd lease has
            // ended, seconds after the kill.
            restarted.stopped_wall_ms = wall_ms();
            let (killed, acting) = federation.kill_acting_standby()?;
            restarted.restarted_wall_ms = Some(wall_ms());
            record.restarted = Some(restarted);
            record
                .notes
                .push(format!("gw-{} killed; gw-{} acts", killed + 1, acting + 1));
            held.killed_gateway = Some(killed);
            Ok(())
        }
        (FaultKind::GatewayPause, Target::Site(site)) => {
            federation.signal_gateway(*site, Signal::SIGSTOP)
        }
        (FaultKind::NodeKill, Target::Server { site, server }) => {
            // The target, or the next server of its site that runs a workload: killing
            // an idle agent tests little.
            let name = busy_server(federation, *site, *server)?
                .map_or_else(|| server_name(*site, *server), |(name, _)| name);
            federation.kill_node(&name)?;
            record
                .notes
                .push(format!("killed the node agent of {name}"));
            held.killed_node = Some(name);
            Ok(())
        }
        (FaultKind::WorkloadKill, Target::Server { site, server }) => {
            let killed = kill_a_workload(federation, *site, *server)?;
            record.notes.push(killed);
            Ok(())
        }
        (FaultKind::StaleGrant, Target::Server { site, server }) => {
            // SIGTERM, not SIGKILL: the gateway closes its connections, so the node
            // redials at once (after a kill -9 it would wait for QUIC's idle timeout).
            stop_gateway(federation, record, *site, Signal::SIGTERM)?;
            let stand = Stand {
                site: SiteId::parse(&federation.sites[*site].name).map_err(|e| e.to_string())?,
                server: ServerId::parse(&server_name(*site, *server)).map_err(|e| e.to_string())?,
                management: federation.sites[*site].management,
                account: AccountId::parse(&account_name((*site + 1) % sites))
                    .map_err(|e| e.to_string())?,
                timings: (100, 1000, 250),
            };
            held.stand_in = Some(StaleGrant::start(&federation.path("certs"), stand)?);
            Ok(())
        }
        (FaultKind::PartitionIsolate, Target::Site(site)) => federation.isolate(*site, true),
        (FaultKind::PartitionSplit, Target::Minority(cut)) => {
            for inside in cut {
                for outside in (0..sites).filter(|other| !cut.contains(other)) {
                    federation.set_link(*inside, outside, &Faults::partition())?;
                }
            }
            Ok(())
        }
        (FaultKind::PartitionOneWay, Target::Link { from, to }) => {
            federation.set_link(*from, *to, &Faults::one_way(Direction::ToTarget))
        }
        (FaultKind::PartitionPair, Target::Pair { a, b }) => {
            federation.set_link(*a, *b, &Faults::partition())
        }
        (FaultKind::SlowNetwork, Target::Everything) => {
            // 150 ms of RTT plus up to 50 ms of jitter, and 3 % loss, each way.
            let slow = Faults::both(LinkFaults {
                delay: Duration::from_millis(75),
                jitter: Duration::from_millis(25),
                loss: 0.03,
                ..LinkFaults::none()
            });
            for_each_link(federation, &slow)
        }
        (FaultKind::ConfigEdit, Target::Site(site)) => {
            let edited = edit_config(federation, *site, held);
            record.config = Some(Box::new(edited));
            Ok(())
        }
        (FaultKind::MemberChange, Target::Site(spare)) => {
            let changed = members::add(federation, *spare)?;
            record.notes.push(format!(
                "{} named in every founder's config, started",
                federation.sites[*spare].name
            ));
            record.member = Some(changed);
            Ok(())
        }
        (kind, target) => Err(format!("{kind} cannot hit {target}")),
    }
}

fn try_heal(
    federation: &mut Federation,
    record: &mut Applied,
    mut held: InForce,
) -> Result<(), String> {
    let target = record.fault.target.clone();
    match (record.fault.kind, &target) {
        (FaultKind::GatewayKill | FaultKind::Restart, Target::Site(site)) => {
            federation.start_gateway(*site)?;
            if let Some(restarted) = &mut record.restarted {
                restarted.restarted_wall_ms = Some(wall_ms());
            }
            Ok(())
        }
        (FaultKind::StaleGrant, Target::Server { site, .. }) => {
            if let Some(stand_in) = held.stand_in.take() {
                record.notes.extend(stand_in.stop().log);
            }
            federation.start_gateway(*site)?;
            if let Some(restarted) = &mut record.restarted {
                restarted.restarted_wall_ms = Some(wall_ms());
            }
            Ok(())
        }
        (FaultKind::GatewayPause, Target::Site(site)) => {
            federation.signal_gateway(*site, Signal::SIGCONT)
        }
        (FaultKind::NodeKill, Target::Server { site, .. }) => match held.killed_node.take() {
            Some(name) => federation.start_node(*site, &name),
            None => Ok(()),
        },
        (FaultKind::WorkloadKill, _) => Ok(()),
        (FaultKind::GatewayTakeover, Target::Site(_)) => match held.killed_gateway.take() {
            Some(killed) => {
                federation.restart_standby(killed)?;
                record
                    .notes
                    .push(format!("gw-{} back as a standby", killed + 1));
                Ok(())
            }
            None => Ok(()),
        },
        (
            FaultKind::PartitionIsolate
            | FaultKind::PartitionSplit
            | FaultKind::PartitionOneWay
            | FaultKind::PartitionPair
            | FaultKind::SlowNetwork,
            _,
        ) => for_each_link(federation, &Faults::none()),
        (FaultKind::ConfigEdit, Target::Site(site)) => {
            let undone = undo_config_edit(federation, *site, held.edited_from);
            if let Some(config) = &mut record.config {
                config.undone = undone;
            }
            Ok(())
        }
        (FaultKind::MemberChange, Target::Site(_)) => {
            let Some(changed) = &mut record.member else {
                return Ok(());
            };
            let removed = members::remove(federation, changed);
            if let Ok(settled) = &changed.settled {
                record
                    .notes
                    .push(format!("left out of every config; {settled}; stopped"));
            }
            removed
        }
        (kind, target) => Err(format!("{kind} cannot hit {target}")),
    }
}

fn for_each_link(federation: &Federation, faults: &Faults) -> Result<(), String> {
    let sites = federation.sites.len();
    for a in 0..sites {
        for b in a + 1..sites {
            federation.set_link(a, b, faults)?;
        }
    }
    Ok(())
}

/// Stops site `site`'s gateway with `signal`, noting what it listed right before.
fn stop_gateway(
    federation: &mut Federation,
    record: &mut Applied,
    site: usize,
    signal: Signal,
) -> Result<(), String> {
    let mut restarted = listed_before(federation, site);
    let stopped = federation.stop_gateway(site, signal);
    restarted.stopped_wall_ms = wall_ms();
    record.restarted = Some(restarted);
    stopped
}

/// The leases site `site`'s gateway lists right before it is stopped.
fn listed_before(federation: &Federation, site: usize) -> Restarted {
    let listed = get_json(federation.admin(site), "/v1/servers").unwrap_or(Value::Null);
    let leases_before = listed
        .as_array()
        .map(|servers| {
            servers
                .iter()
                .filter_map(|entry| {
                    Some(ListedLease {
                        server: entry["id"].as_str()?.to_owned(),
                        account: entry["account"].as_str()?.to_owned(),
                        epoch: entry["epoch"].as_u64()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Restarted {
        site,
        leases_before,
        listed_wall_ms: wall_ms(),
        stopped_wall_ms: wall_ms(),
        restarted_wall_ms: None,
    }
}

/// kill -9 of the workload running on `server` of `site` by its node's event log, or on
/// the site's next server that runs one. Returns what it killed.
fn kill_a_workload(federation: &Federation, site: usize, server: usize) -> Result<String, String> {
    let (
        name,
        Running {
            account,
            epoch,
            pid,
        },
    ) = busy_server(federation, site, server)?
        .ok_or_else(|| format!("no workload runs at {}", federation.sites[site].name))?;
    let raw = i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
    nix::sys::signal::kill(Pid::from_raw(raw), Signal::SIGKILL)
        .map_err(|error| format!("cannot kill pid {pid}: {error}"))?;
    Ok(format!(
        "killed the workload of {account} (e{epoch}) on {name}, pid {pid}"
    ))
}

/// The first server of `site`, from `server` on (round), whose node's event log shows a
/// workload running, with that workload.
fn busy_server(
    federation: &Federation,
    site: usize,
    server: usize,
) -> Result<Option<(String, Running)>, String> {
    let servers = federation.sites[site].servers.len();
    for step in 0..servers {
        let name = server_name(site, (server + step) % servers);
        if let Some(running) = running_workload(federation, &name)? {
            return Ok(Some((name, running)));
        }
    }
    Ok(None)
}

/// A workload process, as its node's event log names it.
struct Running {
    account: String,
    epoch: u64,
    pid: u32,
}

/// The workload a node's event log says runs now: started, not stopped.
fn running_workload(federation: &Federation, server: &str) -> Result<Option<Running>, String> {
    let mut running = None;
    for event in node_events(&federation.work(server))? {
        match event.kind {
            EventKind::WorkloadStarted {
                account,
                epoch,
                pid,
                ..
            } => {
                running = Some(Running {
                    account: account.to_string(),
                    epoch: epoch.value(),
                    pid,
                })
            }
            EventKind::WorkloadStopped { epoch, .. }
                if running.as_ref().is_some_and(|r| r.epoch == epoch.value()) =>
            {
                running = None;
            }
            _ => {}
        }
    }
    Ok(running)
}

/// The config status counters of site `site`: (refused, applied).
fn reloads(federation: &Federation, site: usize) -> Result<(u64, u64), String> {
    let status = get_json(federation.admin(site), "/v1/status")?;
    let config = &status["config"];
    Ok((
        config["reloads_refused"].as_u64().unwrap_or(0),
        config["reloads_applied"].as_u64().unwrap_or(0),
    ))
}

/// An invalid edit (an unknown table), which must be refused while the site runs on; then
/// a valid one raising the site's account's minimum and maximum by one, which must show.
fn edit_config(federation: &mut Federation, site: usize, held: &mut InForce) -> ConfigEdited {
    let mut edited = ConfigEdited {
        site,
        invalid_refused: Err("not tried".into()),
        valid_applied: Err("not tried".into()),
        undone: Err("not tried".into()),
    };
    edited.invalid_refused = invalid_edit(federation, site);
    let account = account_name(site);
    let Some(spec) = federation.specs[site]
        .accounts
        .iter_mut()
        .find(|spec| spec.name == account)
    else {
        edited.valid_applied = Err(format!("no account {account} at site {site}"));
        return edited;
    };
    let before = (spec.min_servers, spec.max_servers);
    spec.min_servers += 1;
    spec.max_servers += 1;
    held.edited_from = Some(before);
    edited.valid_applied = federation
        .edit(site)
        .and_then(|()| wait_minimum(federation, site, &account, u64::from(before.0) + 1));
    edited
}

fn invalid_edit(federation: &Federation, site: usize) -> Result<String, String> {
    let (refused_before, _) = reloads(federation, site)?;
    let config = &federation.sites[site].config;
    let text = std::fs::read_to_string(config)
        .map_err(|error| format!("cannot read {}: {error}", config.display()))?;
    let temporary = config.with_extension("toml.chaos");
    std::fs::write(
        &temporary,
        format!("{text}\n[chaos_not_a_table]\nkey = 1\n"),
    )
    .and_then(|()| std::fs::rename(&temporary, config))
    .map_err(|error| format!("cannot write {}: {error}", config.display()))?;
    let admin = federation.admin(site);
    let seen = wait_for("the invalid edit to be refused", EDIT_SEEN_WITHIN, || {
        let status = get_json(admin, "/v1/status")?;
        let refused = status["config"]["reloads_refused"].as_u64().unwrap_or(0);
        if refused > refused_before {
            Ok(status["config"]["last_refused"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned())
        } else {
            Err(status["config"].to_string())
        }
    })?;
    get_text(admin, "/ready").map_err(|error| format!("not ready after the refusal: {error}"))?;
    Ok(format!("refused ({seen}); the site answers /ready"))
}

fn wait_minimum(
    federation: &Federation,
    site: usize,
    account: &str,
    minimum: u64,
) -> Result<String, String> {
    let admin = federation.admin(site);
    wait_for(
        &format!("{account}'s minimum to be {minimum}"),
        EDIT_SEEN_WITHIN,
        || {
            let state = account_state(admin, account)?;
            if state["min_servers"].as_u64() == Some(minimum) {
                Ok(format!("{account} min_servers = {minimum} in /v1/accounts"))
            } else {
                Err(state.to_string())
            }
        },
    )
}

fn undo_config_edit(
    federation: &mut Federation,
    site: usize,
    edited_from: Option<(u32, u32)>,
) -> Result<String, String> {
    let (min, max) = edited_from.ok_or("the valid edit was not made")?;
    let account = account_name(site);
    if let Some(spec) = federation.specs[site]
        .accounts
        .iter_mut()
        .find(|spec| spec.name == account)
    {
        spec.min_servers = min;
        spec.max_servers = max;
    }
    federation.edit(site)?;
    wait_minimum(federation, site, &account, u64::from(min))
}
