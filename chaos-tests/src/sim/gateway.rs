//! A simulated site gateway: the production [`SiteCore`] and demand models ([`Groups`]),
//! driven as the actor shell drives them (a round every 100 ms of the site's own clock,
//! the groups' demands within the round), with the shell's duties done here in virtual
//! time: effects journaled before their commands and peer messages go out (a batch
//! commits after a drawn latency, in order; a crash loses what had not committed), links
//! to registered nodes, requests with timeouts, pings and catalogues to peers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use leasehold_federation::ids::{ServerId, SiteId};
use leasehold_federation::wire::common::Health;
use leasehold_federation::wire::node::{PointerApplication, StopOutcome};
use leasehold_federation::wire::site::AccountSpec;
use leasehold_node::model::Report;
use leasehold_site_gateway::actors::master::ROUND_INTERVAL;
use leasehold_site_gateway::config::SiteConfig;
use leasehold_site_gateway::federation::catalogue;
use leasehold_site_gateway::journal_state::JournalState;
use leasehold_site_gateway::model::Millis;
use leasehold_site_gateway::model::core::{Groups, Heartbeat, SiteCore, WorkloadEvent};
use leasehold_site_gateway::model::effects::{
    AuditEntry, AuditKind, Command, Effect, JournalOp, PeerMessage,
};
use leasehold_site_gateway::model::ownership::SiteOwnership;
use leasehold_site_gateway::model::peers::{Liveness, PeerHealth};

use super::ctx::{Ctx, Timer};
use super::message::{Msg, RequestId};
use super::net::End;

/// How long a journal commit takes, microseconds: drawn per batch.
const COMMIT_US: (u64, u64) = (300, 3_000);
/// How long a gateway waits for a peer's answer to a loan request or renewal.
const PEER_REQUEST_TIMEOUT_US: u64 = 1_000_000;
/// How often the catalogue is announced again (the real Peer sends it on each connect).
const CATALOGUE_EVERY_US: u64 = 1_000_000;

/// An audit record as the simulation keeps it: the entry and the true time it was
/// committed (the evidence a real gateway's journal gives with its `mono_ns`).
#[derive(Debug, Clone)]
pub struct AuditSeen {
    pub entry: AuditEntry,
    pub true_us: u64,
}

/// A batch of effects waiting for its journal commit.
#[derive(Debug, Default)]
struct Batch {
    ops: Vec<JournalOp>,
    audits: Vec<AuditEntry>,
    commands: Vec<Command>,
    to_peers: Vec<(SiteId, PeerMessage)>,
    /// An answer that may go only once the batch is durable (a loan offer).
    reply: Option<(End, Msg)>,
}

/// What an outstanding request was for.
#[derive(Debug, Clone)]
enum Pending {
    Apply(ServerId, leasehold_federation::ids::Epoch),
    Stop(ServerId, leasehold_federation::ids::Epoch),
    Ping {
        peer: usize,
        sent: Millis,
    },
    LoanRequest {
        lender: SiteId,
        account: leasehold_federation::ids::AccountId,
    },
    LoanRenewal {
        lender: SiteId,
        server: ServerId,
        epoch: leasehold_federation::ids::Epoch,
    },
    Claim,
}

struct PeerShell {
    site: SiteId,
    health: PeerHealth,
    catalogue: Vec<AccountSpec>,
}

/// A running gateway process: everything here is lost in a crash.
struct Incarnation {
    core: SiteCore,
    groups: Groups,
    started_us: u64,
    board: BTreeMap<ServerId, (Health, Option<f64>, Millis)>,
    links: BTreeMap<ServerId, usize>,
    batches: VecDeque<Batch>,
    pending: BTreeMap<RequestId, Pending>,
    peers: BTreeMap<usize, PeerShell>,
    next_catalogue_us: u64,
}

pub struct SimGateway {
    pub index: usize,
    pub config: SiteConfig,
    /// Local milliseconds per true millisecond, within 1 ± the drift the ownership
    /// arithmetic allows.
    pub rate: f64,
    /// Bumped at every start: timers and answers of an older incarnation are ignored.
    pub generation: u64,
    /// Durable: survives a crash.
    pub journal: JournalState,
    /// The audit records committed since the checker last read them, with their true
    /// time.
    pub audit: Vec<AuditSeen>,
    /// Every audit record committed, counted by kind.
    pub audited: BTreeMap<AuditKind, u64>,
    /// The config edit that was last refused (the core's status says so too).
    pub hash: String,
    /// Sites by index, to address peers.
    sites: Vec<SiteId>,
    /// Whether a gateway ever ran on the journal: the first start finds a new one.
    opened: bool,
    /// Durable, as the peer book beside the journal (`peer_book`): the sites whose
    /// address this gateway has from a config, the only ones it can keep talking to once
    /// its config no longer names them.
    book: BTreeSet<usize>,
    /// A planted bug (debug builds only): see [`super::Plant`].
    drop_lease_grants: bool,
    renew_without_majority: bool,
    members_many_at_once: bool,
    up: Option<Incarnation>,
}

impl SimGateway {
    pub fn new(index: usize, config: SiteConfig, sites: Vec<SiteId>, rate: f64) -> SimGateway {
        SimGateway {
            index,
            config,
            rate,
            generation: 0,
            journal: JournalState::default(),
            audit: Vec::new(),
            audited: BTreeMap::new(),
            hash: "config-0".into(),
            sites,
            opened: false,
            book: BTreeSet::new(),
            drop_lease_grants: false,
            renew_without_majority: false,
            members_many_at_once: false,
            up: None,
        }
    }

    pub fn plant(
        &mut self,
        drop_lease_grants: bool,
        renew_without_majority: bool,
        members_many_at_once: bool,
    ) {
        self.drop_lease_grants = drop_lease_grants;
        self.renew_without_majority = renew_without_majority;
        self.members_many_at_once = members_many_at_once;
    }

    pub fn is_up(&self) -> bool {
        self.up.is_some()
    }

    pub fn core(&self) -> Option<&SiteCore> {
        self.up.as_ref().map(|up| &up.core)
    }

    /// The site's own clock, as its gateway process reads it (0 at its start).
    pub fn local(&self, now_us: u64) -> Millis {
        let started = self.up.as_ref().map_or(now_us, |up| up.started_us);
        Millis((now_us.saturating_sub(started) as f64 * self.rate / 1000.0) as u64)
    }

    /// True microseconds for `local` milliseconds of this site's clock.
    fn true_us(&self, local: Duration) -> u64 {
        (local.as_micros() as f64 / self.rate) as u64
    }

    fn site_index(&self, site: &SiteId) -> Option<usize> {
        self.sites.iter().position(|s| s == site)
    }

    /// As `Federation::apply` keeps the peer book: the config's peers, and the members
    /// still counted whose address it had.
    fn learn_addresses(&mut self) {
        // A file edited while no gateway runs touches nothing but the file.
        if self.up.is_none() {
            return;
        }
        let members: BTreeSet<usize> = (self.up.iter())
            .flat_map(|up| up.core.member_sites())
            .filter_map(|site| self.site_index(&site))
            .collect();
        let peers = (self.config.peers.iter()).filter_map(|peer| self.site_index(&peer.name));
        let kept: BTreeSet<usize> = self.book.intersection(&members).copied().collect();
        self.book = peers.chain(kept).collect();
    }

    /// The sites this gateway is connected with: its config's peers, and the members its
    /// ownership core still counts or wants whose address is in its book (a site removed
    /// from the config stays until the step that removes it from the members), as the
    /// real shell keeps them (`Federation::apply`); its listener refuses every other site.
    fn peer_sites(&self) -> Vec<usize> {
        let Some(up) = &self.up else {
            return Vec::new();
        };
        let members: Vec<usize> = (up.core.member_sites().iter())
            .filter_map(|site| self.site_index(site))
            .filter(|site| self.book.contains(site))
            .collect();
        let mut peers: Vec<usize> = (self.config.peers.iter())
            .filter_map(|peer| self.site_index(&peer.name))
            .chain(members)
            .filter(|peer| *peer != self.index)
            .collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// Starts (or restarts) the gateway on its journal.
    pub fn start(&mut self, ctx: &mut Ctx) {
        self.generation += 1;
        let ownership = self.ownership();
        let mut recovered = self.journal.recovered();
        recovered.new_journal = !self.opened;
        self.opened = true;
        let (core, effects, started) = SiteCore::new(
            self.config.clone(),
            self.hash.clone(),
            &recovered,
            Some(ownership),
            ctx.now_us / 1000,
            Millis(0),
        );
        let mut groups = Groups::default();
        groups.apply(&started);
        let interval = self.config.timings.heartbeat_interval;
        let misses = self.config.timings.heartbeat_misses_before_failed;
        let peers = (0..self.sites.len())
            .filter(|peer| *peer != self.index)
            .map(|peer| {
                let shell = PeerShell {
                    site: self.sites[peer].clone(),
                    health: PeerHealth::new(interval, misses),
                    catalogue: Vec::new(),
                };
                (peer, shell)
            })
            .collect();
        self.up = Some(Incarnation {
            core,
            groups,
            started_us: ctx.now_us,
            board: BTreeMap::new(),
            links: BTreeMap::new(),
            batches: VecDeque::new(),
            pending: BTreeMap::new(),
            peers,
            next_catalogue_us: ctx.now_us,
        });
        self.learn_addresses();
        self.perform(effects, None, ctx);
        let round = self.true_us(ROUND_INTERVAL);
        ctx.timer(round, Timer::Round);
        ctx.timer(0, Timer::PeerTick);
    }

    fn ownership(&self) -> SiteOwnership {
        let config = &self.config;
        #[allow(unused_mut)] // planted only in debug builds
        let mut ownership = SiteOwnership::new(
            config.site.name.clone(),
            config.peers.iter().map(|peer| peer.name.clone()).collect(),
            config.accounts.iter().map(|a| a.name.clone()).collect(),
            config.timings.ownership(),
            config.timings.failback_after,
            Millis(0),
        );
        #[cfg(debug_assertions)]
        if self.renew_without_majority {
            ownership.plant_renew_without_majority();
        }
        #[cfg(debug_assertions)]
        if self.members_many_at_once {
            ownership.plant_members_many_at_once();
        }
        ownership
    }

    /// kill -9: everything but the journal is gone.
    pub fn crash(&mut self) {
        self.up = None;
        self.generation += 1;
    }

    /// The servers whose node agents are linked to this gateway now.
    pub fn linked_nodes(&self) -> Vec<usize> {
        self.up
            .as_ref()
            .map(|up| up.links.values().copied().collect())
            .unwrap_or_default()
    }

    /// A live config edit: a valid one goes through the core; an invalid one is refused
    /// by validation (the real gateway never hands it to the master) and changes nothing
    /// but the status.
    /// The file is edited whether or not the gateway runs: a gateway that starts later
    /// reads it.
    pub fn edit(&mut self, config: Option<SiteConfig>, hash: String, ctx: &mut Ctx) {
        let now = self.local(ctx.now_us);
        match config {
            Some(config) => {
                let effects = match &mut self.up {
                    Some(up) => {
                        let applied =
                            up.core
                                .apply_config(&config, hash.clone(), ctx.now_us / 1000, now);
                        up.groups.apply(&applied.groups);
                        applied.effects
                    }
                    None => Vec::new(),
                };
                self.config = config;
                self.hash = hash;
                self.learn_addresses();
                self.perform(effects, None, ctx);
            }
            None => {
                if let Some(up) = &mut self.up {
                    up.core
                        .config_refused(format!("{hash}: refused by validation"));
                }
            }
        }
    }

    pub fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        match timer {
            Timer::Round => self.round(ctx),
            Timer::Commit => self.commit(ctx),
            Timer::PeerTick => self.peer_tick(ctx),
            Timer::RequestTimeout(request) => self.timed_out(request, ctx),
            _ => {}
        }
    }

    fn round(&mut self, ctx: &mut Ctx) {
        let now = self.local(ctx.now_us);
        let Some(up) = &mut self.up else { return };
        let heartbeats = std::mem::take(&mut up.board)
            .into_iter()
            .filter_map(|(server, (health, load, at))| {
                Some(Heartbeat {
                    server: up.core.server_ix(&server)?,
                    health,
                    load,
                    at,
                })
            })
            .collect();
        let effects = up.groups.round(&mut up.core, heartbeats, now);
        self.perform(effects, None, ctx);
        let round = self.true_us(ROUND_INTERVAL);
        ctx.timer(round, Timer::Round);
    }

    /// Journal and audit first: the batch's commands and peer messages (and an answer
    /// that waits for it) go out when it commits.
    fn perform(&mut self, effects: Vec<Effect>, reply: Option<(End, Msg)>, ctx: &mut Ctx) {
        let Some(up) = &mut self.up else { return };
        let mut batch = Batch {
            reply,
            ..Batch::default()
        };
        for effect in effects {
            match effect {
                Effect::Journal(op) => batch.ops.push(op),
                Effect::Audit(entry) => batch.audits.push(entry),
                Effect::Send(command) => batch.commands.push(command),
                Effect::ToPeer { to, message } => batch.to_peers.push((to, message)),
                Effect::Observe(_) => {}
                // The simulated sites have no machines (their layout gives none).
                Effect::Machine(_) => {}
            }
        }
        if batch.ops.is_empty()
            && batch.audits.is_empty()
            && batch.commands.is_empty()
            && batch.to_peers.is_empty()
        {
            if let Some((to, msg)) = batch.reply {
                ctx.send(to, msg);
            }
            return;
        }
        up.batches.push_back(batch);
        if up.batches.len() == 1 {
            let latency = ctx.rng.between(COMMIT_US.0, COMMIT_US.1);
            ctx.timer(latency, Timer::Commit);
        }
    }

    fn commit(&mut self, ctx: &mut Ctx) {
        let Some(up) = &mut self.up else { return };
        let Some(batch) = up.batches.pop_front() else {
            return;
        };
        if !up.batches.is_empty() {
            let latency = ctx.rng.between(COMMIT_US.0, COMMIT_US.1);
            ctx.timer(latency, Timer::Commit);
        }
        for op in &batch.ops {
            if self.drop_lease_grants && matches!(op, JournalOp::LeaseGranted { .. }) {
                continue;
            }
            self.journal.apply(op);
        }
        for entry in batch.audits {
            *self.audited.entry(entry.kind).or_insert(0) += 1;
            self.audit.push(AuditSeen {
                entry,
                true_us: ctx.now_us,
            });
        }
        for command in batch.commands {
            self.deliver(command, ctx);
        }
        for (to, message) in batch.to_peers {
            self.send_to_peer(to, message, ctx);
        }
        if let Some((to, msg)) = batch.reply {
            ctx.send(to, msg);
        }
    }

    fn deliver(&mut self, command: Command, ctx: &mut Ctx) {
        let now = self.local(ctx.now_us);
        let generation = self.generation;
        let timeout =
            self.true_us(self.config.timings.workload_stop_timeout + Duration::from_secs(5));
        let Some(up) = &mut self.up else { return };
        let server = match &command {
            Command::Apply { server, .. } | Command::Stop { server, .. } => server.clone(),
        };
        let Some(node) = up.links.get(&server).copied() else {
            let effects = up.core.undeliverable(command, now);
            self.perform(effects, None, ctx);
            return;
        };
        let request = ctx.request_id();
        let msg = match command {
            Command::Apply { server, pointer } => {
                up.pending
                    .insert(request, Pending::Apply(server, pointer.epoch));
                Msg::Apply {
                    generation,
                    request,
                    pointer,
                }
            }
            Command::Stop {
                server,
                epoch,
                drain_ms,
                ..
            } => {
                up.pending.insert(request, Pending::Stop(server, epoch));
                Msg::Stop {
                    generation,
                    request,
                    epoch,
                    drain_ms,
                }
            }
        };
        ctx.send(End::Node(node), msg);
        ctx.timer(timeout, Timer::RequestTimeout(request));
    }

    fn send_to_peer(&mut self, to: SiteId, message: PeerMessage, ctx: &mut Ctx) {
        let now = self.local(ctx.now_us);
        let connected = self.peer_sites();
        let Some(peer) = self.site_index(&to).filter(|peer| connected.contains(peer)) else {
            let Some(up) = &mut self.up else { return };
            let effects = up.core.peer_unreachable(&to, message, now);
            self.perform(effects, None, ctx);
            return;
        };
        let Some(up) = &mut self.up else { return };
        let pending = match &message {
            PeerMessage::RequestLoan(request) => Some(Pending::LoanRequest {
                lender: to.clone(),
                account: request.account.clone(),
            }),
            PeerMessage::RenewLoan(renew) => Some(Pending::LoanRenewal {
                lender: to.clone(),
                server: renew.server.clone(),
                epoch: renew.epoch,
            }),
            PeerMessage::ClaimOwnership(_) => Some(Pending::Claim),
            _ => None,
        };
        let request = pending.map(|pending| {
            let request = ctx.request_id();
            up.pending.insert(request, pending);
            ctx.timer(PEER_REQUEST_TIMEOUT_US, Timer::RequestTimeout(request));
            request
        });
        ctx.send(End::Gateway(peer), Msg::Peer { request, message });
    }

    fn peer_tick(&mut self, ctx: &mut Ctx) {
        let now = self.local(ctx.now_us);
        let interval = self.config.timings.heartbeat_interval;
        let every = self.true_us(interval);
        let announce = self
            .up
            .as_ref()
            .is_some_and(|up| ctx.now_us >= up.next_catalogue_us);
        // Built only when it goes out: a tick that announces nothing is most of them.
        let accounts = announce.then(|| catalogue(&self.config).accounts);
        let connected = self.peer_sites();
        let Some(up) = &mut self.up else { return };
        for peer in connected {
            let request = ctx.request_id();
            up.pending
                .insert(request, Pending::Ping { peer, sent: now });
            ctx.send(End::Gateway(peer), Msg::Ping { request });
            ctx.timer(every * 2, Timer::RequestTimeout(request));
            if let Some(accounts) = &accounts {
                let accounts = accounts.clone();
                ctx.send(End::Gateway(peer), Msg::Catalogue { accounts });
            }
        }
        if announce {
            up.next_catalogue_us = ctx.now_us + CATALOGUE_EVERY_US;
        }
        ctx.timer(every, Timer::PeerTick);
    }

    fn tell_core(&mut self, peer: usize, now: Millis) {
        let Some(up) = &mut self.up else { return };
        let Some(shell) = up.peers.get(&peer) else {
            return;
        };
        let live = shell.health.judge(now) == Liveness::Up;
        let (site, rtt) = (shell.site.clone(), shell.health.rtt());
        up.core.peer_seen(&site, live, rtt, now);
    }

    fn timed_out(&mut self, request: RequestId, ctx: &mut Ctx) {
        let now = self.local(ctx.now_us);
        let Some(up) = &mut self.up else { return };
        let Some(pending) = up.pending.remove(&request) else {
            return;
        };
        let why = "timed out".to_owned();
        let effects = match pending {
            Pending::Apply(server, epoch) => {
                up.core.pointer_answered(&server, epoch, Err(why), now)
            }
            Pending::Stop(server, epoch) => up.core.stop_answered(&server, epoch, Err(why), now),
            Pending::LoanRequest { lender, account } => {
                up.core.loan_offered(&lender, &account, Err(why), now)
            }
            Pending::LoanRenewal {
                lender,
                server,
                epoch,
            } => up.core.loan_renewed(&lender, &server, epoch, Err(why), now),
            Pending::Ping { peer, .. } => {
                self.tell_core(peer, now);
                return;
            }
            Pending::Claim => return,
        };
        self.perform(effects, None, ctx);
    }

    pub fn on_msg(&mut self, from: End, msg: Msg, ctx: &mut Ctx) {
        match from {
            End::Node(node) => self.handle_node(node, msg, ctx),
            End::Gateway(peer) => self.handle_peer(peer, msg, ctx),
        }
    }

    fn handle_node(&mut self, node: usize, msg: Msg, ctx: &mut Ctx) {
        let now = self.local(ctx.now_us);
        let generation = self.generation;
        if msg
            .for_generation()
            .is_some_and(|meant| meant != generation)
        {
            return;
        }
        let Some(up) = &mut self.up else { return };
        let effects = match msg {
            Msg::Register {
                server,
                running,
                highest_epoch,
                request,
            } => {
                let answer = match up
                    .core
                    .register(&server, running.as_ref(), highest_epoch, now)
                {
                    Ok((registration, effects)) => {
                        up.links.insert(server, node);
                        self.perform(effects, None, ctx);
                        Ok(registration)
                    }
                    Err(refusal) => Err(refusal),
                };
                ctx.send(
                    End::Node(node),
                    Msg::Registered {
                        generation,
                        request,
                        answer,
                    },
                );
                return;
            }
            Msg::Heartbeat {
                server,
                health,
                load,
                ..
            } => {
                if up.links.get(&server) == Some(&node) {
                    up.board.insert(server, (health, load, now));
                }
                return;
            }
            Msg::Renew {
                server,
                epoch,
                request,
                ..
            } => {
                if let Some(answer) = up.core.renew(&server, epoch, now) {
                    ctx.send(End::Node(node), Msg::RenewAnswer { request, answer });
                }
                return;
            }
            Msg::Report { server, report, .. } => {
                let (epoch, event) = match report {
                    Report::Joined(joined) => (joined.epoch, WorkloadEvent::Joined),
                    Report::Failed(failed) => (failed.epoch, WorkloadEvent::Failed(failed.reason)),
                    Report::Stopped(stopped) => {
                        (stopped.epoch, WorkloadEvent::Stopped(stopped.cause))
                    }
                };
                up.core.workload_reported(&server, epoch, &event, now)
            }
            Msg::PointerAnswer {
                request, answer, ..
            } => match up.pending.remove(&request) {
                Some(Pending::Apply(server, epoch)) => {
                    let answer: Result<PointerApplication, String> = Ok(answer);
                    up.core.pointer_answered(&server, epoch, answer, now)
                }
                _ => return,
            },
            Msg::StopAnswer {
                request, answer, ..
            } => match up.pending.remove(&request) {
                Some(Pending::Stop(server, epoch)) => {
                    let answer: Result<StopOutcome, String> = Ok(answer);
                    up.core.stop_answered(&server, epoch, answer, now)
                }
                _ => return,
            },
            _ => return,
        };
        self.perform(effects, None, ctx);
    }

    /// The node's connection is gone (its agent died, or the gateway closed it).
    pub fn link_lost(&mut self, node: usize) {
        let Some(up) = &mut self.up else { return };
        let servers: Vec<ServerId> = up
            .links
            .iter()
            .filter(|(_, n)| **n == node)
            .map(|(server, _)| server.clone())
            .collect();
        for server in servers {
            up.links.remove(&server);
            up.core.disconnected(&server);
        }
    }

    fn handle_peer(&mut self, peer: usize, msg: Msg, ctx: &mut Ctx) {
        let now = self.local(ctx.now_us);
        let Some(site) = self.sites.get(peer).cloned() else {
            return;
        };
        if !self.peer_sites().contains(&peer) {
            return;
        }
        let Some(up) = &mut self.up else { return };
        let effects = match msg {
            Msg::Ping { request } => {
                ctx.send(End::Gateway(peer), Msg::Pong { request });
                return;
            }
            Msg::Pong { request } => {
                if let Some(Pending::Ping { peer, sent }) = up.pending.remove(&request)
                    && let Some(shell) = up.peers.get_mut(&peer)
                {
                    shell.health.answered(now, now.since(sent));
                    self.tell_core(peer, now);
                }
                return;
            }
            Msg::Catalogue { accounts } => {
                if let Some(shell) = up.peers.get_mut(&peer) {
                    shell.catalogue = accounts.clone();
                }
                up.core.catalogue_seen(&site, accounts);
                return;
            }
            Msg::Peer { request, message } => {
                return self.peer_message(peer, site, request, message, ctx);
            }
            Msg::LoanOfferAnswer {
                request,
                account,
                offer,
            } => match up.pending.remove(&request) {
                Some(Pending::LoanRequest { lender, .. }) => {
                    up.core.loan_offered(&lender, &account, Ok(offer), now)
                }
                _ => return,
            },
            Msg::LoanRenewalAnswer {
                request,
                server,
                epoch,
                answer,
            } => match up.pending.remove(&request) {
                Some(Pending::LoanRenewal { lender, .. }) => {
                    up.core
                        .loan_renewed(&lender, &server, epoch, Ok(answer), now)
                }
                _ => return,
            },
            Msg::VotesAnswer { request, votes } => match up.pending.remove(&request) {
                Some(Pending::Claim) => {
                    let (effects, groups) = up.core.ownership_answered(&site, &votes, now);
                    up.groups.apply(&groups);
                    effects
                }
                _ => return,
            },
            _ => return,
        };
        self.perform(effects, None, ctx);
    }

    fn peer_message(
        &mut self,
        peer: usize,
        site: SiteId,
        request: Option<RequestId>,
        message: PeerMessage,
        ctx: &mut Ctx,
    ) {
        let now = self.local(ctx.now_us);
        let Some(up) = &mut self.up else { return };
        let to = End::Gateway(peer);
        let effects = match message {
            PeerMessage::RequestLoan(asked) => {
                let spec = up
                    .peers
                    .get(&peer)
                    .and_then(|shell| shell.catalogue.iter().find(|s| s.name == asked.account))
                    .cloned();
                let (offer, effects) = up.core.lend_to(
                    &site,
                    &asked.account,
                    spec,
                    asked.count,
                    asked.handback,
                    now,
                );
                let reply = request.map(|request| {
                    let answer = Msg::LoanOfferAnswer {
                        request,
                        account: asked.account.clone(),
                        offer,
                    };
                    (to, answer)
                });
                return self.perform(effects, reply, ctx);
            }
            PeerMessage::RenewLoan(renew) => {
                let answer = up
                    .core
                    .renew_loan_from(&site, &renew.server, renew.epoch, now);
                if let Some(request) = request {
                    let msg = Msg::LoanRenewalAnswer {
                        request,
                        server: renew.server,
                        epoch: renew.epoch,
                        answer,
                    };
                    ctx.send(to, msg);
                }
                return;
            }
            PeerMessage::ReturnLoan(returned) => up
                .core
                .return_from(&site, &returned.server, returned.epoch, now)
                .unwrap_or_default(),
            PeerMessage::RecallLoan(recall) => {
                up.core.recall_from(&site, &recall, now).unwrap_or_default()
            }
            PeerMessage::Status(status) => {
                up.core.status_from(&site, &status, now).unwrap_or_default()
            }
            PeerMessage::ClaimOwnership(claims) => {
                let votes = up.core.claims_from(&site, &claims, now);
                if let Some(request) = request {
                    ctx.send(to, Msg::VotesAnswer { request, votes });
                }
                return;
            }
            PeerMessage::ReleaseOwnership(releases) => {
                up.core.released_by(&site, &releases);
                return;
            }
        };
        self.perform(effects, None, ctx);
    }
}
