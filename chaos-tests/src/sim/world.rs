//! The simulated world: true time, one queue of events in time order (ties broken by the
//! order they were scheduled, so a seed replays exactly), the gateways and node agents,
//! the network, the faults, the load, and the trace every event is hashed into.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};

use crate::campaign::prng::SplitMix64;

use super::checks::Checker;
use super::ctx::{Action, Ctx, Timer};
use super::faults::{Fault, FaultKind};
use super::gateway::SimGateway;
use super::layout::{self, TARGET_LOAD};
use super::members::{Act, MembersOperator, Operator, SPARES};
use super::message::Msg;
use super::net::{End, LinkFaults, Network};
use super::node::SimNode;

/// The lines of trace kept for a violation's report.
const TRACE_KEPT: usize = 40;
/// How often (in events) the evidence already judged is dropped.
const TRIM_EVERY: u64 = 50_000;
/// How often the load is measured into the node agents.
const LOAD_EVERY_US: u64 = 100_000;
/// A workload whose agent died is killed by its guard after this long.
const GUARD_KILLS_US: (u64, u64) = (5_000, 100_000);
/// A node agent sees its gateway's connection gone after this long.
const CONNECTION_LOST_US: (u64, u64) = (50_000, 1_000_000);

#[derive(Debug)]
pub enum Event {
    Timer {
        end: End,
        generation: u64,
        timer: Timer,
    },
    Deliver {
        from: End,
        to: End,
        msg: Box<Msg>,
    },
    FaultStarts(Fault),
    FaultEnds(Fault),
    GuardKills {
        node: usize,
        generation: u64,
    },
    ConnectionLost {
        node: usize,
        gateway_generation: u64,
    },
    Load,
    /// The operator who changes the members acts.
    Members(Act),
}

/// The operator's first look: the federation has settled once.
const MEMBERS_FROM_US: u64 = 5_000_000;

struct Scheduled {
    at_us: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_us, self.seq).cmp(&(other.at_us, other.seq))
    }
}

/// FNV-1a, 64 bits: a hash of every event in order that any build computes the same.
#[derive(Debug, Clone, Copy)]
pub struct TraceHash(u64);

impl TraceHash {
    fn new() -> TraceHash {
        TraceHash(0xcbf2_9ce4_8422_2325)
    }

    fn add(&mut self, text: &str) {
        for byte in text.bytes().chain(std::iter::once(b'\n')) {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

pub struct World {
    pub now_us: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    pub rng: SplitMix64,
    next_request: u64,
    pub net: Network,
    pub gateways: Vec<SimGateway>,
    pub nodes: Vec<SimNode>,
    paused_until: Vec<u64>,
    /// Load per account (by site index), in the unit of the target load.
    load: Vec<f64>,
    bursts: BTreeMap<u64, usize>,
    pub checker: Checker,
    pub trace: TraceHash,
    pub recent: VecDeque<String>,
    pub events: u64,
    /// Every trace line, when asked for (`leasehold sim --trace FILE`).
    trace_file: Option<BufWriter<File>>,
    /// Audit records already put in the trace, per gateway.
    audits_noted: Vec<usize>,
    /// The sites that home an account and found the federation; spares follow them.
    founders: usize,
    servers: usize,
    /// The members each site's config names now (site indices).
    named: Vec<Vec<usize>>,
    /// Each site's SLA raise by a config-edit fault now.
    raise: Vec<u32>,
    /// Whether the site's gateway is installed: a spare is not until it is added, and a
    /// removed one that was shut down no longer is (a crash fault does not restart it).
    deployed: Vec<bool>,
    pub operator: Option<Operator>,
}

impl World {
    /// `founders` sites of `servers` servers each; with a members operator, [`SPARES`]
    /// more that it adds and removes.
    pub fn new(
        seed: u64,
        founders: usize,
        servers: usize,
        members: Option<MembersOperator>,
    ) -> World {
        let mut rng = SplitMix64::new(seed);
        let sites = founders + if members.is_some() { SPARES } else { 0 };
        let names: Vec<_> = (0..sites).map(layout::site_id).collect();
        let named: Vec<Vec<usize>> = (0..sites)
            .map(|site| {
                if site < founders {
                    (0..founders).collect()
                } else {
                    vec![site]
                }
            })
            .collect();
        let drift = leasehold_site_gateway::config::Timings::CLOCK_DRIFT;
        let rate = |rng: &mut SplitMix64| 1.0 - drift + (rng.below(2_001) as f64 / 1_000.0) * drift;
        let timings = layout::timings();
        let gateways: Vec<SimGateway> = (0..sites)
            .map(|site| {
                let config = layout::member_config(site, &named[site], &[], founders, servers, 0);
                SimGateway::new(site, config, names.clone(), rate(&mut rng))
            })
            .collect();
        let nodes: Vec<SimNode> = (0..sites * servers)
            .map(|index| {
                let (site, server) = (index / servers, index % servers);
                let offset = rng.below(1_000_000_000_000);
                SimNode::new(
                    index,
                    layout::server_id(site, server),
                    site,
                    offset,
                    rate(&mut rng),
                    timings.renew_interval,
                    timings.node_heartbeat_interval,
                )
            })
            .collect();
        World {
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            next_request: 0,
            net: Network::default(),
            checker: Checker::new(nodes.len(), gateways.len()),
            paused_until: vec![0; sites],
            load: vec![TARGET_LOAD * 0.6; sites],
            bursts: BTreeMap::new(),
            gateways,
            nodes,
            trace: TraceHash::new(),
            recent: VecDeque::new(),
            events: 0,
            trace_file: None,
            audits_noted: vec![0; sites],
            founders,
            servers,
            named,
            raise: vec![0; sites],
            deployed: (0..sites).map(|site| site < founders).collect(),
            operator: members.map(|kind| Operator::new(kind, founders)),
        }
    }

    /// Writes every trace line to `file` from now on.
    pub fn trace_to(&mut self, file: File) {
        self.trace_file = Some(BufWriter::new(file));
    }

    /// Every decision a gateway committed since the last call, into the trace: what a
    /// person replaying a failure reads first.
    fn note_audits(&mut self) {
        for site in 0..self.gateways.len() {
            let from = self.audits_noted[site];
            let lines: Vec<String> = self.gateways[site].audit[from..]
                .iter()
                .map(|seen| {
                    let entry = &seen.entry;
                    format!(
                        "{} {} audit {:?} {}",
                        seen.true_us,
                        self.gateways[site].config.site.name,
                        entry.kind,
                        entry.reason
                    )
                })
                .collect();
            self.audits_noted[site] = self.gateways[site].audit.len();
            for line in lines {
                self.note(line);
            }
        }
    }

    pub fn schedule(&mut self, after_us: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at_us: self.now_us + after_us,
            seq: self.seq,
            event,
        }));
    }

    /// Starts every gateway and node agent, and the load.
    pub fn boot(&mut self) {
        for site in 0..self.gateways.len() {
            if self.deployed[site] {
                self.start_gateway(site);
            }
        }
        for node in 0..self.nodes.len() {
            self.start_node(node);
        }
        self.schedule(LOAD_EVERY_US, Event::Load);
        if self.operator.is_some() {
            self.schedule(MEMBERS_FROM_US, Event::Members(Act::Change));
        }
    }

    /// The sites that found the federation and home an account each.
    pub fn founders(&self) -> usize {
        self.founders
    }

    /// No membership change starts from now on (the calm).
    pub fn rest_members(&mut self) {
        if let Some(operator) = &mut self.operator {
            operator.resting = true;
        }
    }

    /// After the calm: every site of the last change took it, by its journal (a change
    /// of two sites at once is never taken: there is nothing to check).
    pub fn members_after_calm(&mut self) {
        let Some(operator) = &self.operator else {
            return;
        };
        if operator.kind != MembersOperator::OneAtATime {
            return;
        }
        let runs: Vec<Option<Vec<usize>>> = (self.gateways.iter())
            .map(|gateway| {
                let journaled = gateway.journal.recovered().members?;
                Some(
                    (journaled.iter())
                        .filter_map(|site| {
                            self.gateways
                                .iter()
                                .position(|g| g.config.site.name == *site)
                        })
                        .collect(),
                )
            })
            .collect();
        self.checker.members_after_calm(&operator.target, &runs);
    }

    /// The set site `site`'s gateway runs now, as site indices, if it is up.
    fn runs(&self, site: usize) -> Option<Vec<usize>> {
        let now = self.gateways[site].local(self.now_us);
        let ownership = self.gateways[site].core()?.ownership()?;
        let status = ownership.members_status(now);
        Some(
            status
                .running
                .iter()
                .filter_map(|name| {
                    self.gateways
                        .iter()
                        .position(|g| g.config.site.name.as_str() == name)
                })
                .collect(),
        )
    }

    fn members(&mut self, act: Act) {
        self.note(format!("{} members {act:?}", self.now_us));
        match act {
            Act::Change => {
                let Some(mut operator) = self.operator.take() else {
                    return;
                };
                let running: Vec<Option<Vec<usize>>> = (0..self.gateways.len())
                    .map(|site| self.runs(site))
                    .collect();
                let acts = operator.look(|site| running[site].clone(), &mut self.rng);
                self.operator = Some(operator);
                for (after, act) in acts {
                    self.schedule(after, Event::Members(act));
                }
            }
            Act::Edit { site, members } => {
                self.named[site] = members;
                self.write_config(site);
            }
            Act::Start { site, members } => {
                self.named[site] = members;
                self.write_config(site);
                self.deployed[site] = true;
                if !self.gateways[site].is_up() {
                    self.start_gateway(site);
                }
            }
            Act::Lose(site) | Act::Stop(site) => {
                self.deployed[site] = false;
                if self.gateways[site].is_up() {
                    self.crash_gateway(site);
                }
            }
        }
    }

    fn note(&mut self, line: String) {
        if let Some(file) = &mut self.trace_file {
            // A trace that cannot be written is no reason to stop the run; it says so once.
            if let Err(error) = writeln!(file, "{line}") {
                eprintln!("sim: cannot write the trace ({error}); it stops here");
                self.trace_file = None;
            }
        }
        self.trace.add(&line);
        if self.recent.len() == TRACE_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    /// Handles the next event; false when there is none.
    pub fn step(&mut self) -> bool {
        let Some(Reverse(next)) = self.queue.pop() else {
            return false;
        };
        self.now_us = next.at_us;
        self.events += 1;
        match next.event {
            Event::Timer {
                end,
                generation,
                timer,
            } => self.timer(end, generation, timer),
            Event::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Event::FaultStarts(fault) => self.fault_starts(fault),
            Event::FaultEnds(fault) => self.fault_ends(fault),
            Event::GuardKills { node, generation } => {
                let node_ref = &mut self.nodes[node];
                // Spawned or still being spawned: the guard is there either way.
                if node_ref.generation == generation
                    && let Some((account, epoch)) = node_ref.process().map(|(a, e)| (a.clone(), e))
                {
                    node_ref.workload_died_with_agent();
                    self.checker.died(node, &account, epoch);
                    self.note(format!("{} guard killed {account} {epoch}", self.now_us));
                }
            }
            Event::ConnectionLost {
                node,
                gateway_generation,
            } => {
                let mut ctx = Ctx::new(self.now_us, &mut self.rng, &mut self.next_request);
                self.nodes[node].connection_lost(gateway_generation, &mut ctx);
                let actions = ctx.actions;
                self.perform(End::Node(node), actions);
            }
            Event::Load => self.measure_load(),
            Event::Members(act) => self.members(act),
        }
        self.note_audits();
        self.checker.read(self.now_us, &self.gateways, &self.nodes);
        if self.events.is_multiple_of(TRIM_EVERY) {
            self.trim();
        }
        true
    }

    /// Evidence already judged is dropped, so a long run's memory stays bounded.
    fn trim(&mut self) {
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let removed = node.trim();
            self.checker.lines_trimmed(index, removed);
        }
        for (site, gateway) in self.gateways.iter_mut().enumerate() {
            gateway.audit.clear();
            self.checker.audits_trimmed(site);
            self.audits_noted[site] = 0;
        }
    }

    fn paused(&self, end: End) -> Option<u64> {
        match end {
            End::Gateway(site) if self.paused_until[site] > self.now_us => {
                Some(self.paused_until[site])
            }
            _ => None,
        }
    }

    /// A stopped gateway handles its events when it runs again, in their order.
    fn defer(&mut self, until_us: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at_us: until_us,
            seq: self.seq,
            event,
        }));
    }

    fn timer(&mut self, end: End, generation: u64, timer: Timer) {
        if let Some(until) = self.paused(end) {
            return self.defer(
                until,
                Event::Timer {
                    end,
                    generation,
                    timer,
                },
            );
        }
        let mut ctx = Ctx::new(self.now_us, &mut self.rng, &mut self.next_request);
        match end {
            End::Gateway(site) => {
                let gateway = &mut self.gateways[site];
                if gateway.generation != generation || !gateway.is_up() {
                    return;
                }
                gateway.on_timer(timer, &mut ctx);
            }
            End::Node(node) => {
                let node_ref = &mut self.nodes[node];
                if node_ref.generation != generation || !node_ref.is_up() {
                    return;
                }
                node_ref.on_timer(timer, &mut ctx);
            }
        }
        let actions = ctx.actions;
        self.perform(end, actions);
    }

    fn deliver(&mut self, from: End, to: End, msg: Box<Msg>) {
        if let Some(until) = self.paused(to) {
            return self.defer(until, Event::Deliver { from, to, msg });
        }
        let line = format!("{} {from:?}->{to:?} {}", self.now_us, msg.kind());
        self.note(line);
        let mut ctx = Ctx::new(self.now_us, &mut self.rng, &mut self.next_request);
        match to {
            End::Gateway(site) => {
                if !self.gateways[site].is_up() {
                    return;
                }
                self.gateways[site].on_msg(from, *msg, &mut ctx);
            }
            End::Node(node) => {
                if !self.nodes[node].is_up() {
                    return;
                }
                self.nodes[node].on_msg(*msg, &mut ctx);
            }
        }
        let actions = ctx.actions;
        self.perform(to, actions);
    }

    fn generation(&self, end: End) -> u64 {
        match end {
            End::Gateway(site) => self.gateways[site].generation,
            End::Node(node) => self.nodes[node].generation,
        }
    }

    fn perform(&mut self, from: End, actions: Vec<Action>) {
        let generation = self.generation(from);
        for action in actions {
            match action {
                Action::Send { to, msg } => {
                    for delay in self.net.deliveries(from, to, &mut self.rng) {
                        self.schedule(
                            delay,
                            Event::Deliver {
                                from,
                                to,
                                msg: msg.clone(),
                            },
                        );
                    }
                }
                Action::Timer { after_us, timer } => self.schedule(
                    after_us,
                    Event::Timer {
                        end: from,
                        generation,
                        timer,
                    },
                ),
            }
        }
    }

    fn start_gateway(&mut self, site: usize) {
        let mut ctx = Ctx::new(self.now_us, &mut self.rng, &mut self.next_request);
        self.gateways[site].start(&mut ctx);
        let actions = ctx.actions;
        self.note(format!("{} start gateway {site}", self.now_us));
        self.perform(End::Gateway(site), actions);
    }

    fn start_node(&mut self, node: usize) {
        let mut ctx = Ctx::new(self.now_us, &mut self.rng, &mut self.next_request);
        self.nodes[node].start(&mut ctx);
        let actions = ctx.actions;
        self.note(format!("{} start node {node}", self.now_us));
        self.perform(End::Node(node), actions);
    }

    fn crash_gateway(&mut self, site: usize) {
        let linked = self.gateways[site].linked_nodes();
        let generation = self.gateways[site].generation;
        self.gateways[site].crash();
        self.paused_until[site] = 0;
        for node in linked {
            let after = self.rng.between(CONNECTION_LOST_US.0, CONNECTION_LOST_US.1);
            self.schedule(
                after,
                Event::ConnectionLost {
                    node,
                    gateway_generation: generation,
                },
            );
        }
    }

    fn crash_node(&mut self, node: usize) {
        self.nodes[node].crash();
        let site = self.nodes[node].site;
        self.gateways[site].link_lost(node);
        let after = self.rng.between(GUARD_KILLS_US.0, GUARD_KILLS_US.1);
        let generation = self.nodes[node].generation;
        self.schedule(after, Event::GuardKills { node, generation });
    }

    fn fault_starts(&mut self, fault: Fault) {
        self.note(format!(
            "{} fault {} {} {:?} for {} us",
            self.now_us,
            fault.id,
            fault.kind.name(),
            fault.targets,
            fault.duration_us
        ));
        let sites = self.gateways.len();
        let cut = LinkFaults {
            cut: true,
            ..LinkFaults::CLEAN
        };
        match fault.kind {
            FaultKind::GatewayCrash => self.crash_gateway(fault.targets[0]),
            FaultKind::GatewayPause => {
                let site = fault.targets[0];
                if self.gateways[site].is_up() {
                    self.paused_until[site] =
                        self.paused_until[site].max(self.now_us + fault.duration_us);
                }
            }
            FaultKind::NodeCrash => {
                if self.nodes[fault.targets[0]].is_up() {
                    self.crash_node(fault.targets[0]);
                }
            }
            FaultKind::WorkloadCrash => {
                let node = fault.targets[0];
                let mut ctx = Ctx::new(self.now_us, &mut self.rng, &mut self.next_request);
                self.nodes[node].workload_crash(&mut ctx);
                let actions = ctx.actions;
                self.perform(End::Node(node), actions);
            }
            FaultKind::PartitionIsolate => {
                let site = fault.targets[0];
                for other in (0..sites).filter(|other| *other != site) {
                    self.net
                        .set(End::Gateway(site), End::Gateway(other), fault.id, cut);
                    self.net
                        .set(End::Gateway(other), End::Gateway(site), fault.id, cut);
                }
            }
            FaultKind::PartitionOneWay => {
                let (a, b) = (fault.targets[0], fault.targets[1]);
                self.net
                    .set(End::Gateway(a), End::Gateway(b), fault.id, cut);
            }
            FaultKind::PartitionPair => {
                let (a, b) = (fault.targets[0], fault.targets[1]);
                self.net
                    .set(End::Gateway(a), End::Gateway(b), fault.id, cut);
                self.net
                    .set(End::Gateway(b), End::Gateway(a), fault.id, cut);
            }
            FaultKind::SlowNetwork => {
                let slow = LinkFaults {
                    cut: false,
                    delay_us: self.rng.between(10_000, 100_000),
                    jitter_us: self.rng.between(0, 50_000),
                    loss_ppm: self.rng.between(0, 100_000),
                    duplicate_ppm: self.rng.between(0, 20_000),
                };
                for a in 0..sites {
                    for b in (0..sites).filter(|b| *b != a) {
                        self.net
                            .set(End::Gateway(a), End::Gateway(b), fault.id, slow);
                    }
                }
            }
            FaultKind::ConfigEdit => self.edit(fault.targets[0], 1),
            FaultKind::ConfigRefused => {
                let site = fault.targets[0];
                let mut ctx = Ctx::new(self.now_us, &mut self.rng, &mut self.next_request);
                self.gateways[site].edit(None, format!("refused-{}", fault.id), &mut ctx);
            }
            FaultKind::LoadBurst => {
                let site = fault.targets[0];
                self.bursts.insert(fault.id, site);
            }
            FaultKind::StaleGrant => self.stale_grant(fault.targets[0]),
        }
        let duration = fault.duration_us;
        self.schedule(duration, Event::FaultEnds(fault));
    }

    fn fault_ends(&mut self, fault: Fault) {
        self.note(format!("{} fault {} ends", self.now_us, fault.id));
        match fault.kind {
            FaultKind::GatewayCrash => {
                let site = fault.targets[0];
                if self.deployed[site] && !self.gateways[site].is_up() {
                    self.start_gateway(site);
                }
            }
            FaultKind::NodeCrash => {
                let node = fault.targets[0];
                if !self.nodes[node].is_up() {
                    self.start_node(node);
                }
            }
            FaultKind::ConfigEdit => self.edit(fault.targets[0], 0),
            FaultKind::LoadBurst => {
                self.bursts.remove(&fault.id);
            }
            _ => self.net.heal(fault.id),
        }
    }

    /// Replays the node's newest accepted epoch for another account, on its connection
    /// (a stand-in with the site's certificate, as the real-process tier plays it).
    fn stale_grant(&mut self, node: usize) {
        let Some(generation) = self.nodes[node].connected_generation() else {
            return;
        };
        let newest = self.nodes[node]
            .log
            .iter()
            .rev()
            .find_map(|line| match &line.event.kind {
                leasehold_node::event_log::EventKind::PointerAccepted { account, epoch } => {
                    Some((account.clone(), *epoch))
                }
                _ => None,
            });
        let Some((account, epoch)) = newest else {
            return;
        };
        let other = (0..self.founders)
            .map(|site| layout::member_account(site, &[site], 1, 2))
            .find(|candidate| candidate.name != account);
        let Some(other) = other else { return };
        let stop_timeout = layout::timings().workload_stop_timeout;
        let pointer = leasehold_federation::wire::common::InitPointer {
            account: other.name.clone(),
            software: leasehold_site_gateway::model::site::software_of(&other, stop_timeout),
            data: leasehold_site_gateway::model::site::data_of(&other),
            epoch,
            secrets: Default::default(),
        };
        self.next_request += 1;
        let msg = Msg::Apply {
            generation,
            request: self.next_request,
            pointer,
        };
        let site = self.nodes[node].site;
        self.schedule(
            0,
            Event::Deliver {
                from: End::Gateway(site),
                to: End::Node(node),
                msg: Box::new(msg),
            },
        );
    }

    /// A valid edit: the site's account's SLA is `raise` above the layout's (0 undoes it).
    fn edit(&mut self, site: usize, raise: u32) {
        self.raise[site] = raise;
        self.write_config(site);
    }

    /// Site `site`'s file as it stands (its members, its SLA raise), applied live.
    fn write_config(&mut self, site: usize) {
        let departed = (self.operator.as_ref()).map_or(&[][..], |operator| &operator.departed);
        let config = layout::member_config(
            site,
            &self.named[site],
            departed,
            self.founders,
            self.servers,
            self.raise[site],
        );
        let hash = format!("config-{site}-{}-{}", self.raise[site], self.now_us);
        let mut ctx = Ctx::new(self.now_us, &mut self.rng, &mut self.next_request);
        self.gateways[site].edit(Some(config), hash, &mut ctx);
        let actions = ctx.actions;
        self.perform(End::Gateway(site), actions);
    }

    /// Each account's load, shared by the servers running it (a burst makes it three
    /// servers' worth): what each node agent reports in its heartbeats.
    fn measure_load(&mut self) {
        let accounts: Vec<_> = (0..self.founders).map(layout::account_id).collect();
        for (site, account) in accounts.iter().enumerate() {
            let burst = self.bursts.values().any(|s| *s == site);
            let total = if burst {
                TARGET_LOAD * 2.6
            } else {
                self.load[site]
            };
            let serving: Vec<usize> = (0..self.nodes.len())
                .filter(|n| self.nodes[*n].running().is_some_and(|(a, _)| a == account))
                .collect();
            for node in &serving {
                self.nodes[*node].set_load(Some(total / serving.len() as f64));
            }
        }
        self.schedule(LOAD_EVERY_US, Event::Load);
    }
}
