//! The SiteMaster actor: a shell over the site's [`SiteCore`]. It turns messages into the
//! core's inputs, calls it, and performs the effects it returns: journal and audit first,
//! then commands to nodes and messages to peers (invariant D-1), and the `Group` actors it
//! asks to start or stop. Every round (`ROUND_INTERVAL`) it reads the pulse board, has
//! the core measure each account's load, asks each Group for its demand, and finishes the
//! round on those demands. No decision is taken here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use hdrhistogram::Histogram;
use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::connection::{Connection, Inbox};
use leasehold_federation::transport::identity::PeerName;
use leasehold_federation::wire::common::Refusal;
use leasehold_federation::wire::node::{
    BootClaim, PointerApplication, PulseAnswer, Registration, RunningWorkload, StopOutcome,
};
use serde::Serialize;

use super::group::{Group, LoadMeasured, SetSla};
use super::journal::{JournalWriter, Persist};
use super::link::{CloseLink, Deliver, PendingRenewal, ServerLink};
use super::{PulseBoard, wall_ms};
use crate::config::SiteConfig;
use crate::demand_trace::{DemandRecorder, TraceSender};
use crate::federation::Federation;
use crate::machines::Machines;
use crate::machines::boot_key::BootKey;
use crate::metrics::Metrics;
use crate::model::Millis;
use crate::model::arbiter::AccountIx;
use crate::model::core::BootAnswer;
use crate::model::core::{ConfigOutcome, GroupChanges, Heartbeat, SiteCore, WorkloadEvent};
use crate::model::demand::DemandModel;
use crate::model::effects::{Command, Effect, JournalOp, Observation};
use crate::model::site::{BootStep, CheckedClaim, Power, ServerSnapshot, SiteSnapshot};

pub use crate::model::core::ConfigStatus;

/// The exit code when the journal cannot be written (EX_IOERR).
pub const EXIT_JOURNAL_FAILED: i32 = 74;

/// How often the master runs a round (failure detection, expiry, arbitration).
pub const ROUND_INTERVAL: Duration = Duration::from_millis(100);

/// How often the master answers the renewals that pulses asked for, all at once. Well
/// inside a node's answer timeout (at least 100 ms, docs/node.md).
pub const RENEWAL_BATCH: Duration = Duration::from_millis(20);

/// A registered node's link: its actor carries commands; renewals are answered on its
/// connection directly, in datagrams, or for a node of `leasehold-node/1` on the stream
/// its renewal came on.
struct Link {
    id: u64,
    actor: Addr<ServerLink>,
    connection: Connection,
    renewal_v1: PendingRenewal,
}

pub struct SiteMaster {
    pub(super) core: SiteCore,
    started: Instant,
    journal: Addr<JournalWriter>,
    /// By account index; `None` for an account with no group (removed, a peer's guest).
    groups: Vec<Option<Addr<Group>>>,
    links: HashMap<ServerId, Link>,
    next_link_id: u64,
    board: Arc<PulseBoard>,
    /// The recovery's effects and the first groups, performed when the actor starts.
    pending: Vec<Effect>,
    pending_groups: GroupChanges,
    reallocations: u64,
    latency_ms: Histogram<u64>,
    metrics: Arc<Metrics>,
    /// The demand measured, averaged into a trace's steps, and where they are written
    /// (`demand_trace`); `None` when no trace is kept.
    demand_trace: Option<(DemandRecorder, TraceSender)>,
    /// The peers, changed by config edits; `None` in tests that run no federation.
    pub(super) federation: Option<Arc<Federation>>,
    /// The BMCs of the site's machines, and the key of their boot tokens; `None` for a
    /// site without machines.
    machines: Option<(Arc<Machines>, Arc<BootKey>)>,
    /// The version each node agent said at its last registration.
    /// What each node agent said of itself at its last registration, and the expiry of
    /// the certificate it presented, for `/v1/servers`, the metrics and the page.
    agents: HashMap<ServerId, AgentSeen>,
    /// Workload secrets, added to pointers and loan requests as they leave.
    pub(super) secrets: crate::secrets::SecretStore,
    /// The site's election, when its gateways share a journal in etcd: renewals go out
    /// only while this gateway acts (docs/ha.md).
    election: Option<Arc<crate::ha::Elector>>,
    /// The generation this gateway acts under, stamped on every acceptance, command and
    /// renewal it sends its nodes, which refuse an older one (docs/ha.md, "Generations").
    generation: Option<u64>,
    /// The management listener, whose admitted servers follow live edits of the inventory;
    /// `None` in tests that run no listener.
    management: Option<Arc<leasehold_federation::transport::endpoint::Endpoint>>,
}

impl SiteMaster {
    /// The management listener, so that servers added by an edit are admitted.
    pub fn with_management(
        mut self,
        endpoint: Arc<leasehold_federation::transport::endpoint::Endpoint>,
    ) -> Self {
        self.management = Some(endpoint);
        self
    }

    /// Admits every server the core knows, removed ones included: a removed server's agent
    /// is then refused at registration with a reason, rather than by a bare TLS alert.
    fn refresh_admitted(&self) {
        let Some(endpoint) = &self.management else {
            return;
        };
        let model = self.core.model();
        endpoint.set_policy(
            leasehold_federation::transport::identity::PeerPolicy::Nodes {
                site: model.site().clone(),
                servers: model
                    .servers()
                    .iter()
                    .map(|server| server.id.clone())
                    .collect(),
            },
        );
    }

    /// Dials, keeps and leaves peers as the running config and the ownership members
    /// say, and announces the catalogue to each.
    fn refresh_federation(&self) {
        if let (Some(federation), Some(config)) = (&self.federation, self.core.running_config()) {
            federation.apply(config, &self.core.member_sites());
        }
    }

    /// The site's machines: their BMCs, and the key that makes and checks boot tokens.
    pub fn with_machines(mut self, machines: Arc<Machines>, key: Arc<BootKey>) -> Self {
        self.machines = Some((machines, key));
        self
    }

    /// The site's election: this gateway renews only while it acts.
    pub fn with_election(mut self, election: Option<Arc<crate::ha::Elector>>) -> Self {
        self.generation = election.as_ref().and_then(|election| election.stamp());
        self.election = election;
        self
    }

    /// The workload secrets the config names, read at start.
    pub fn with_secrets(mut self, secrets: crate::secrets::SecretStore) -> Self {
        self.secrets = secrets;
        self
    }

    /// The federation whose peers and catalogue config edits change.
    pub fn with_federation(mut self, federation: Arc<Federation>) -> Self {
        self.federation = Some(federation);
        self
    }

    /// `recovered` are the effects of rebuilding the core from the journal and `groups`
    /// the groups it starts with (both from [`SiteCore::new`]); they are performed when
    /// the actor starts.
    pub fn new(
        core: SiteCore,
        recovered: Vec<Effect>,
        groups: GroupChanges,
        started: Instant,
        journal: Addr<JournalWriter>,
        board: Arc<PulseBoard>,
        metrics: Arc<Metrics>,
    ) -> Self {
        SiteMaster {
            core,
            started,
            journal,
            groups: Vec::new(),
            links: HashMap::new(),
            next_link_id: 1,
            board,
            pending: recovered,
            pending_groups: groups,
            metrics,
            reallocations: 0,
            federation: None,
            machines: None,
            management: None,
            secrets: crate::secrets::SecretStore::default(),
            election: None,
            generation: None,
            agents: HashMap::new(),
            demand_trace: None,
            // 1 ms .. 10 min, 3 significant digits; the bounds are constants, so this
            // cannot fail.
            latency_ms: Histogram::new_with_bounds(1, 600_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits is valid")),
        }
    }

    /// Keeps the demand it measures as a trace of `step_s` steps, sent to `sender`.
    pub fn with_demand_trace(
        mut self,
        accounts: Vec<String>,
        step_s: u64,
        sender: TraceSender,
    ) -> Self {
        let rounds =
            u32::try_from(step_s * 1000 / ROUND_INTERVAL.as_millis() as u64).unwrap_or(u32::MAX);
        self.demand_trace = Some((DemandRecorder::new(accounts, step_s, rounds), sender));
        self
    }

    /// Starts, stops and re-configures Group actors as the core asked.
    pub(super) fn apply_groups(&mut self, changes: GroupChanges) {
        for ix in changes.stopped {
            // Dropping the last address stops the Group once its mailbox is empty.
            if let Some(slot) = self.groups.get_mut(ix as usize) {
                *slot = None;
            }
        }
        for (ix, sla) in changes.started {
            let group = Group::new(DemandModel::new(sla)).start();
            let ix = ix as usize;
            if ix >= self.groups.len() {
                self.groups.resize(ix + 1, None);
            }
            self.groups[ix] = Some(group);
        }
        for (ix, sla) in changes.sla_changed {
            if let Some(Some(group)) = self.groups.get(ix as usize) {
                // do_send: a config edit, rare; the group answers nothing.
                group.do_send(SetSla(sla));
            }
        }
    }

    pub(super) fn now(&self) -> Millis {
        Millis(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn at(&self, instant: Instant) -> Millis {
        Millis(
            u64::try_from(instant.saturating_duration_since(self.started).as_millis())
                .unwrap_or(u64::MAX),
        )
    }

    /// Journals and audits first, then commands: the commands of a batch go out only once
    /// the journal writer (which serves batches in order) has made the batch durable.
    pub(super) fn perform(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        self.perform_then(effects, ctx, None);
    }

    /// [`SiteMaster::perform`], then `durable` is told once the batch is journaled (a
    /// loan offer is answered only then).
    pub(super) fn perform_then(
        &mut self,
        effects: Vec<Effect>,
        ctx: &mut Context<Self>,
        durable: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let mut ops = Vec::new();
        let mut audits = Vec::new();
        let mut commands = Vec::new();
        let mut to_peers = Vec::new();
        let mut machine_commands = Vec::new();
        let mut members_changed = false;
        for effect in effects {
            match effect {
                Effect::Journal(op) => {
                    self.metrics.journal_op(&op); // metrics
                    members_changed |= matches!(op, JournalOp::Members { .. });
                    ops.push(op)
                }
                Effect::Audit(entry) => {
                    tracing::info!(
                        site = %self.core.model().site(),
                        kind = ?entry.kind,
                        server = entry.server.as_ref().map_or("-", |s| s.as_str()),
                        account = entry.account.as_ref().map_or("-", |a| a.as_str()),
                        "{}",
                        entry.reason
                    );
                    self.metrics.audit(&entry); // metrics
                    audits.push(entry);
                }
                Effect::Send(command) => commands.push(command),
                Effect::ToPeer { to, message } => to_peers.push((to, message)),
                Effect::Observe(observation) => self.observe(observation),
                Effect::Machine(command) => machine_commands.push(command),
            }
        }
        if members_changed {
            // A site removed from the config stays a peer until the step that removes it
            // from the members is taken; then it is left.
            self.refresh_federation();
        }
        if ops.is_empty()
            && audits.is_empty()
            && commands.is_empty()
            && to_peers.is_empty()
            && machine_commands.is_empty()
        {
            if let Some(durable) = durable {
                let _ = durable.send(());
            }
            return;
        }
        let wall_ms = wall_ms();
        let sent = Instant::now(); // metrics: the journal round trip
        let persisted = self.journal.send(Persist {
            ops,
            audits,
            wall_ms,
        });
        ctx.spawn(persisted.into_actor(self).map(move |result, master, ctx| {
            match result {
                Ok(Ok(_)) => {
                    // Journaled while this gateway acted; asked again as its commands go
                    // out, for a process paused between the two (docs/ha.md).
                    master.exit_unless_acting("sends nothing");
                    master.metrics.journal_written(sent.elapsed()); // metrics
                    if let Some(durable) = durable {
                        let _ = durable.send(());
                    }
                    for command in commands {
                        master.deliver(command, ctx);
                    }
                    for (to, message) in to_peers {
                        master.send_to_peer(to, message, ctx);
                    }
                    for command in machine_commands {
                        match &master.machines {
                            Some((machines, _)) => machines.perform(command, ctx.address()),
                            None => {
                                tracing::error!(?command, "a machine command, and no machines")
                            }
                        }
                    }
                }
                Ok(Err(error)) => {
                    // Acting on what is not journaled could reuse an epoch after a restart.
                    // Exit at once: the nodes' leases run out and they stop their
                    // workloads (S-1), and a restart recovers from what is durable.
                    tracing::error!(%error, "journal write failed; the gateway exits rather than act without it");
                    std::process::exit(EXIT_JOURNAL_FAILED);
                }
                Err(error) => {
                    tracing::error!(%error, "journal writer is gone; the gateway exits");
                    std::process::exit(EXIT_JOURNAL_FAILED);
                }
            }
        }));
    }

    fn deliver(&mut self, command: Command, ctx: &mut Context<Self>) {
        let server = match &command {
            Command::Apply { server, .. } | Command::Stop { server, .. } => server.clone(),
        };
        if let Some(link) = self.links.get(&server) {
            // The secrets join the pointer here, on its way to the node's mutual-TLS
            // channel: a lent server gets its borrower's, any other this site's own.
            let command = match command {
                Command::Apply {
                    server,
                    mut pointer,
                } => {
                    let borrower = self
                        .core
                        .model()
                        .server(&server)
                        .and_then(|entry| entry.lease.as_ref())
                        .and_then(|lease| lease.loan.as_ref())
                        .map(|loan| &loan.borrower);
                    pointer.secrets = self.secrets.for_pointer(borrower, &pointer.account);
                    Command::Apply { server, pointer }
                }
                stop => stop,
            };
            // do_send: one command per decision, a low and bounded rate; the link answers
            // through PointerAnswered / StopAnswered.
            link.actor.do_send(Deliver(command));
            return;
        }
        let now = self.now();
        let effects = self.core.undeliverable(command, now);
        self.perform(effects, ctx);
    }

    fn observe(&mut self, observation: Observation) {
        self.metrics.observe(&observation); // metrics
        match observation {
            Observation::Reallocated { latency_ms, .. } => {
                self.reallocations += 1;
                let _ = self.latency_ms.record(latency_ms.max(1));
            }
            Observation::LeaseEnded { .. } | Observation::LoanServing { .. } => {}
        }
    }

    /// Answers the renewals pulses asked for since the last batch, each with the core's
    /// answer, in a datagram on the node's connection. A lease whose account this site
    /// does not own now gets no answer (docs/ownership.md); the node keeps what it has.
    fn answer_renewals(&mut self) {
        let renewals = self.board.take_renewals();
        if renewals.is_empty() {
            return;
        }
        // A renewal is not journaled, so the journal's fence does not stop it: the
        // election is asked here, just before they go out.
        self.exit_unless_acting("renews nothing");
        let now = self.now();
        for (server, ask) in renewals {
            // A node pulses only once registered; a pulse of a connection that never was
            // (or whose server has gone since) renews nothing.
            let Some(link) = self.links.get(&server) else {
                continue;
            };
            let Some(renewal) = self.core.renew(&server, ask.epoch, now) else {
                continue;
            };
            self.metrics.renewal(&renewal); // metrics
            if link.connection.version() == 1 {
                link.renewal_v1.answer(ask.seq, renewal);
                continue;
            }
            let answer = PulseAnswer {
                seq: ask.seq,
                renewal,
                generation: self.generation,
            };
            if let Err(error) = link.connection.send_datagram(&answer) {
                tracing::debug!(%server, %error, "renewal answer not sent");
            }
        }
    }

    /// This round's loads into the demand trace.
    fn record_demand(&mut self, loads: &[(AccountIx, f64)]) {
        let Some((recorder, sender)) = &mut self.demand_trace else {
            return;
        };
        let accounts = self.core.model().accounts();
        let named: Vec<(&str, f64)> = loads
            .iter()
            .filter_map(|(ix, load)| {
                let account = accounts.get(*ix as usize)?;
                Some((account.config.name.as_str(), *load))
            })
            .collect();
        if let Some(step) = recorder.round(&named) {
            sender.send(step);
        }
    }

    /// A round: the core's first half, each Group's demand from its account's load (the
    /// master waits for every answer, handling nothing else meanwhile, so the round
    /// arbitrates on this round's demand), then the core's second half.
    fn round(&mut self, ctx: &mut Context<Self>) {
        let began = Instant::now(); // metrics: the round's duration, measured in the shell
        // Renewals first: one that arrived before a lease's end keeps it through this round.
        self.answer_renewals();
        let heartbeats: Vec<Heartbeat> = self
            .board
            .take_heartbeats()
            .into_iter()
            .map(|(server, sample)| Heartbeat {
                server,
                health: sample.health,
                load: sample.load,
                at: self.at(sample.at),
            })
            .collect();
        let now = self.now();
        let start = self.core.begin_round(heartbeats, now);
        self.record_demand(&start.loads);
        self.apply_groups(start.groups);
        let pressed = start.pressed;
        let asked: Vec<(AccountIx, Request<Group, LoadMeasured>)> = start
            .loads
            .into_iter()
            .filter_map(|(ix, total_load)| {
                let group = self.groups.get(ix as usize)?.as_ref()?;
                let measured = LoadMeasured {
                    total_load,
                    now,
                    pressed,
                };
                Some((ix, group.send(measured)))
            })
            .collect();
        let answers = async move {
            let mut demands = Vec::with_capacity(asked.len());
            for (ix, request) in asked {
                // A group that is gone (its account removed meanwhile) has no say.
                if let Ok(demand) = request.await {
                    demands.push((ix, demand));
                }
            }
            demands
        };
        ctx.wait(answers.into_actor(self).map(move |demands, master, ctx| {
            let (effects, groups) = master.core.finish_round(&demands, now);
            master.apply_groups(groups);
            master.perform(effects, ctx);
            master.metrics.round_finished(began.elapsed()); // metrics
        }));
    }
}

impl Actor for SiteMaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Well above the default 16: every node's requests pass through here.
        ctx.set_mailbox_capacity(4096);
        let groups = std::mem::take(&mut self.pending_groups);
        self.apply_groups(groups);
        let recovered = std::mem::take(&mut self.pending);
        self.perform(recovered, ctx);
        // The members the journal runs may include a site the config no longer names.
        self.refresh_federation();
        ctx.run_interval(ROUND_INTERVAL, |master, ctx| master.round(ctx));
        ctx.run_interval(RENEWAL_BATCH, |master, _| master.answer_renewals());
    }
}

/// A node agent's connection finished its handshake.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LinkUp {
    pub connection: Connection,
    pub inbox: Inbox,
}

impl Handler<LinkUp> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: LinkUp, ctx: &mut Context<Self>) {
        let PeerName::Node { server, .. } = message.connection.peer().clone() else {
            // The management listener's policy admits only nodes.
            return;
        };
        let link_id = self.next_link_id;
        self.next_link_id += 1;
        let timeout = self.core.model().timings().workload_stop_timeout + Duration::from_secs(5);
        ServerLink::new(
            server,
            link_id,
            (message.connection, message.inbox),
            (ctx.address(), self.board.clone()),
            timeout,
            self.generation,
        )
        .start();
    }
}

/// A node agent as its last registration showed it.
#[derive(Debug, Clone)]
struct AgentSeen {
    version: String,
    /// The management protocol its connection speaks.
    protocol: u16,
    certificate_expires: Option<i64>,
}

/// A node introduced itself on its link.
#[derive(Message)]
#[rtype(result = "Result<Registration, Refusal>")]
pub struct RegisterServer {
    pub server: ServerId,
    pub link_id: u64,
    pub link: Addr<ServerLink>,
    /// Where renewals are answered.
    pub connection: Connection,
    /// Where a node of `leasehold-node/1` waits for the answer to its renewal.
    pub renewal_v1: PendingRenewal,
    pub running: Option<RunningWorkload>,
    pub highest_epoch: Epoch,
    /// A machine's boot claim (epoch and token from its kernel command line).
    pub boot: Option<BootClaim>,
    /// What the agent says it is, for `/v1/servers`.
    pub agent_version: String,
}

impl Handler<RegisterServer> for SiteMaster {
    type Result = Result<Registration, Refusal>;

    fn handle(&mut self, message: RegisterServer, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let (registration, effects) = match &message.boot {
            Some(claim) => {
                let token_valid = self
                    .machines
                    .as_ref()
                    .is_some_and(|(_, key)| key.verify(&message.server, claim.epoch, &claim.token));
                let checked = CheckedClaim {
                    epoch: claim.epoch,
                    token_valid,
                };
                let (registration, effects) = self.core.register_booted(
                    &message.server,
                    checked,
                    message.running.as_ref(),
                    message.highest_epoch,
                    now,
                );
                match registration {
                    Ok(registration) => (registration, effects),
                    Err(refusal) => {
                        tracing::warn!(server = %message.server, epoch = %claim.epoch, %refusal, "boot registration refused");
                        self.perform(effects, ctx);
                        return Err(refusal);
                    }
                }
            }
            None => self.core.register(
                &message.server,
                message.running.as_ref(),
                message.highest_epoch,
                now,
            )?,
        };
        let certificate_expires = message.connection.peer_certificate_expiry();
        let protocol = message.connection.version();
        let link = Link {
            id: message.link_id,
            actor: message.link,
            connection: message.connection,
            renewal_v1: message.renewal_v1,
        };
        if let Some(old) = self.links.insert(message.server.clone(), link) {
            old.actor.do_send(CloseLink);
        }
        // Its pulses count from now: the board records them by its place in the core.
        if let Some(place) = self.core.server_ix(&message.server) {
            self.board.admit(message.server.clone(), place);
        }
        tracing::info!(server = %message.server, agent_version = %message.agent_version, protocol, "node registered");
        self.agents.insert(
            message.server.clone(),
            AgentSeen {
                version: message.agent_version,
                protocol,
                certificate_expires,
            },
        );
        self.perform(effects, ctx);
        let mut registration = registration;
        if let Registration::Accepted { generation, .. } = &mut registration {
            *generation = self.generation;
        }
        Ok(registration)
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct PointerAnswered {
    pub server: ServerId,
    pub epoch: Epoch,
    pub answer: Result<PointerApplication, String>,
}

impl Handler<PointerAnswered> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: PointerAnswered, ctx: &mut Context<Self>) {
        if let Err(error) = &message.answer {
            tracing::warn!(server = %message.server, epoch = %message.epoch, %error, "pointer answer lost; the lease expires unless the node renews it");
        }
        let now = self.now();
        let effects =
            self.core
                .pointer_answered(&message.server, message.epoch, message.answer, now);
        self.perform(effects, ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAnswered {
    pub server: ServerId,
    pub epoch: Epoch,
    pub answer: Result<StopOutcome, String>,
}

impl Handler<StopAnswered> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: StopAnswered, ctx: &mut Context<Self>) {
        let now = self.now();
        let effects = self
            .core
            .stop_answered(&message.server, message.epoch, message.answer, now);
        self.perform(effects, ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkloadReported {
    pub server: ServerId,
    pub epoch: Epoch,
    pub event: WorkloadEvent,
}

impl Handler<WorkloadReported> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: WorkloadReported, ctx: &mut Context<Self>) {
        let now = self.now();
        let effects =
            self.core
                .workload_reported(&message.server, message.epoch, &message.event, now);
        self.perform(effects, ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct LinkClosed {
    pub server: ServerId,
    pub link_id: u64,
}

impl Handler<LinkClosed> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: LinkClosed, _: &mut Context<Self>) {
        // Only the current link's end disconnects the server; a replaced link's does not.
        if self
            .links
            .get(&message.server)
            .is_some_and(|link| link.id == message.link_id)
        {
            self.links.remove(&message.server);
            self.core.disconnected(&message.server);
            tracing::info!(server = %message.server, "node disconnected");
        }
    }
}

/// The site as the admin API shows it.
#[derive(Message)]
#[rtype(result = "Status")]
pub struct GetStatus;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub snapshot: SiteSnapshot,
    pub uptime_ms: u64,
    pub rounds: u64,
    pub reallocations: u64,
    pub reallocation_ms_p50: Option<u64>,
    pub reallocation_ms_p99: Option<u64>,
    pub config: ConfigStatus,
    /// Who votes on ownership, and what a change of them waits for; `None` without peers.
    pub members: Option<crate::model::ownership::MembersStatus>,
}

impl SiteMaster {
    /// What the server's agent said of itself when it registered.
    fn describe_agent(&self, server: &mut ServerSnapshot) {
        if let Some(agent) = self.agents.get(&server.id) {
            server.agent_version = Some(agent.version.clone());
            server.agent_protocol = Some(Alpn::Node.name_of(agent.protocol));
            server.certificate_expires = agent.certificate_expires;
        }
    }

    /// On a site of standby gateways, exits unless this gateway still acts: what it was
    /// about to do could race its successor's. Its supervisor starts it again as a
    /// standby.
    fn exit_unless_acting(&self, instead: &str) {
        if let Some(election) = &self.election
            && election.acting().is_none()
        {
            tracing::error!(
                "this gateway no longer acts for its site; it {instead} and exits, to start again as a standby"
            );
            std::process::exit(crate::gateway::EXIT_DEPOSED);
        }
    }

    /// One server as `/v1/servers` shows it now.
    pub(super) fn server_status(&self, id: &ServerId, now: Millis) -> Option<ServerSnapshot> {
        let mut server = self.core.model().server_snapshot_of(id, now)?;
        self.describe_agent(&mut server);
        Some(server)
    }
}

impl Handler<GetStatus> for SiteMaster {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let percentile =
            |q: f64| (!self.latency_ms.is_empty()).then(|| self.latency_ms.value_at_quantile(q));
        let mut snapshot = self.core.model().snapshot(now);
        for server in &mut snapshot.servers {
            self.describe_agent(server);
        }
        MessageResult(Status {
            snapshot,
            uptime_ms: now.0,
            rounds: self.core.rounds(),
            reallocations: self.reallocations,
            reallocation_ms_p50: percentile(0.5),
            reallocation_ms_p99: percentile(0.99),
            config: self.core.config_status().clone(),
            members: self
                .core
                .ownership()
                .filter(|ownership| !ownership.started_alone())
                .map(|ownership| ownership.members_status(now)),
        })
    }
}

/// A live edit that passed `config::load_site` (the reload task validated it off the
/// actor); `hash` is the sha256 of the file's bytes, hex.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyConfig {
    pub config: SiteConfig,
    pub hash: String,
    /// The secrets the edited config names, read again.
    pub secrets: std::collections::HashMap<
        leasehold_federation::ids::AccountId,
        leasehold_federation::wire::common::Secrets,
    >,
}

impl Handler<ApplyConfig> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: ApplyConfig, ctx: &mut Context<Self>) {
        let ApplyConfig {
            config,
            hash,
            secrets,
        } = message;
        self.secrets.replace_own(secrets);
        let short = hash[..hash.len().min(12)].to_owned();
        let now = self.now();
        let applied = self.core.apply_config(&config, hash, wall_ms(), now);
        match &applied.outcome {
            ConfigOutcome::Unchanged => {
                // A SIGHUP or a touch without a change: nothing to apply, nothing to count.
                tracing::info!(hash = short, "config file unchanged; nothing applied");
                return;
            }
            ConfigOutcome::RefusalCleared => {
                tracing::info!(
                    hash = short,
                    "config file is back to the running config; refusal cleared"
                );
                self.metrics.config_reload(true); // metrics
                return;
            }
            ConfigOutcome::Applied { diff } => {
                // Peers added, removed or re-addressed, and the new catalogue, take effect
                // now; so do servers added or removed.
                self.refresh_federation();
                self.refresh_admitted();
                for what in &self.core.config_status().needs_restart {
                    tracing::warn!(what = %what, "this part of the config edit needs a restart and was not applied");
                }
                match diff {
                    Some(diff) => tracing::info!(hash = short, "config applied:\n{diff}"),
                    None => tracing::info!(hash = short, "config applied"),
                }
                self.metrics.config_reload(true); // metrics
            }
        }
        self.apply_groups(applied.groups);
        self.perform(applied.effects, ctx);
    }
}

/// A live edit that `config::load_site` refused; `errors` is its Display (file:line:column
/// for each error). The site keeps running on its last good config.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfigRefused {
    pub errors: String,
}

impl Handler<ConfigRefused> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: ConfigRefused, _: &mut Context<Self>) {
        self.metrics.config_reload(false); // metrics
        self.core.config_refused(message.errors);
    }
}

/// What the machine shell did with a `MachineCommand`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum MachineReport {
    /// The BMC says the machine's power is this (a probe, a power-off done).
    Power { server: ServerId, power: Power },
    /// A re-image got past a step; the next starts once this is taken in.
    Progress {
        server: ServerId,
        epoch: Epoch,
        reached: BootStep,
    },
    /// The BMC did not do what was asked.
    Failed {
        server: ServerId,
        epoch: Option<Epoch>,
        error: String,
        unreachable: bool,
    },
    /// A re-image's steps are all done (its progress was reported step by step).
    Done,
}

impl Handler<MachineReport> for SiteMaster {
    type Result = ();

    fn handle(&mut self, report: MachineReport, ctx: &mut Context<Self>) {
        let now = self.now();
        let effects = match report {
            MachineReport::Power { server, power } => self.core.machine_power(&server, power, now),
            MachineReport::Progress {
                server,
                epoch,
                reached,
            } => {
                self.core.machine_progress(&server, epoch, reached, now);
                Vec::new()
            }
            MachineReport::Failed {
                server,
                epoch,
                error,
                unreachable,
            } => self
                .core
                .machine_failed(&server, epoch, &error, unreachable, now),
            MachineReport::Done => Vec::new(),
        };
        self.perform(effects, ctx);
    }
}

/// The boot service asks what the machine with this boot MAC should boot now.
#[derive(Message)]
#[rtype(result = "BootAnswer")]
pub struct BootScriptFor {
    pub mac: String,
}

impl Handler<BootScriptFor> for SiteMaster {
    type Result = MessageResult<BootScriptFor>;

    fn handle(&mut self, message: BootScriptFor, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.boot_answer(&message.mac))
    }
}
