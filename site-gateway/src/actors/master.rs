//! The SiteMaster actor: owns the site core ([`SiteModel`]) and performs its effects.
//! Every round (`ROUND_INTERVAL`) it reads the heartbeat board, feeds each Group its
//! account's load, and runs the core's tick. Effects are journaled before any command of
//! theirs goes out (invariant D-1).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use hdrhistogram::Histogram;
use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::transport::connection::{Connection, Inbox};
use leasehold_federation::transport::identity::PeerName;
use leasehold_federation::wire::common::Refusal;
use leasehold_federation::wire::node::{
    LeaseRenewal, PointerApplication, Registration, RunningWorkload, StopOutcome,
};
use serde::Serialize;

use super::group::{DemandChanged, Group, LoadMeasured, SetSla};
use super::journal::{JournalWriter, Persist};
use super::link::{CloseLink, Deliver, ServerLink, WorkloadEvent};
use super::{HeartbeatBoard, wall_ms};
use crate::config::SiteConfig;
use crate::federation::Federation;
use crate::metrics::Metrics;
use crate::model::Millis;
use crate::model::arbiter::AccountIx;
use crate::model::demand::{DemandModel, Sla};
use crate::model::effects::{Command, Effect, Observation};
use crate::model::ownership::{Owner, SiteOwnership};
use crate::model::site::{SiteModel, SiteSnapshot};

/// The exit code when the journal cannot be written (EX_IOERR).
pub const EXIT_JOURNAL_FAILED: i32 = 74;

/// How often the master runs a round (failure detection, expiry, arbitration).
pub const ROUND_INTERVAL: Duration = Duration::from_millis(100);

pub struct SiteMaster {
    pub(super) model: SiteModel,
    started: Instant,
    journal: Addr<JournalWriter>,
    /// By account index; `None` for a removed (tombstoned) account.
    groups: Vec<Option<Addr<Group>>>,
    links: HashMap<ServerId, (u64, Addr<ServerLink>)>,
    next_link_id: u64,
    board: Arc<HeartbeatBoard>,
    pending: Vec<Effect>,
    rounds: u64,
    reallocations: u64,
    latency_ms: Histogram<u64>,
    metrics: Arc<Metrics>,
    /// The config the site runs on (the last good one) and what reloads did.
    config: Option<SiteConfig>,
    config_status: ConfigStatus,
    /// The peers, changed by config edits; `None` in tests that run no federation.
    pub(super) federation: Option<Arc<Federation>>,
    /// Which accounts this site owns (docs/ownership.md); `None`: it owns its own for ever.
    pub(super) ownership: Option<SiteOwnership>,
}

/// The config the site runs on and the outcome of live edits (`/v1/status` `config`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigStatus {
    pub path: String,
    /// sha256 of the file's bytes, hex.
    pub hash: String,
    /// Wall-clock ms when this config was loaded or applied.
    pub applied_at_ms: u64,
    /// The errors of the last refused edit (file:line:column each), until an edit is
    /// applied.
    pub last_refused: Option<String>,
    pub reloads_applied: u64,
    pub reloads_refused: u64,
    /// What the running config differs in from the file and needs a restart to take.
    pub needs_restart: Vec<String>,
}

fn sla_of(account: &crate::config::Account) -> Sla {
    Sla {
        min_servers: account.min_servers,
        max_servers: account.max_servers,
        target_load: account.target_load,
    }
}

impl SiteMaster {
    /// The config the model was built from and its hash: live edits are diffed against it.
    pub fn with_config(mut self, config: SiteConfig, hash: String) -> Self {
        self.config_status = ConfigStatus {
            path: config.path.display().to_string(),
            hash,
            applied_at_ms: wall_ms(),
            ..ConfigStatus::default()
        };
        self.config = Some(config);
        self
    }

    /// Decide ownership of accounts with `ownership` (docs/ownership.md).
    pub fn with_ownership(mut self, ownership: SiteOwnership) -> Self {
        self.ownership = Some(ownership);
        self
    }

    /// Feeds the ownership core's view of every account to the site core, and takes over
    /// the peer accounts it now owns (each gets a Group). Called before every round and
    /// after every vote, so that nothing is served on an ownership that has run out.
    pub(super) fn sync_ownership(&mut self, ctx: &mut Context<Self>) {
        let now = self.now();
        let Some(ownership) = &self.ownership else {
            return;
        };
        // A peer's account gets an entry here once this site owns it, not while it claims.
        let adopted: Vec<_> = ownership
            .adopted()
            .values()
            .map(|spec| (spec.clone(), ownership.owner(&spec.name, now)))
            .filter(|(_, owner)| matches!(owner, Owner::Here { .. }))
            .collect();
        let names: Vec<_> = self
            .model
            .accounts()
            .iter()
            .filter(|account| account.guest.is_none())
            .map(|account| account.config.name.clone())
            .collect();
        let owners: Vec<_> = names
            .into_iter()
            .map(|name| {
                let owner = ownership.owner(&name, now);
                let handing_back = ownership.handing_back(&name).cloned();
                (name, owner, handing_back)
            })
            .collect();
        for (name, owner, handing_back) in owners {
            self.model.set_owner(&name, owner);
            self.model.set_handing_back(&name, handing_back.as_ref());
        }
        for (spec, owner) in adopted {
            if let Some(ix) = self.model.adopt(&spec, owner) {
                let group = self.start_group(ix, ctx);
                let ix = ix as usize;
                if ix >= self.groups.len() {
                    self.groups.resize(ix + 1, None);
                }
                self.groups[ix] = Some(group);
            }
        }
    }

    /// The federation whose peers and catalogue config edits change.
    pub fn with_federation(mut self, federation: Arc<Federation>) -> Self {
        self.federation = Some(federation);
        self
    }

    fn start_group(&self, ix: AccountIx, ctx: &mut Context<Self>) -> Addr<Group> {
        let config = &self.model.accounts()[ix as usize].config;
        Group::new(
            ix,
            DemandModel::new(sla_of(config)),
            ctx.address().recipient(),
        )
        .start()
    }

    /// `recovered` are the effects of rebuilding the model from the journal; they are
    /// performed when the actor starts.
    pub fn new(
        model: SiteModel,
        started: Instant,
        journal: Addr<JournalWriter>,
        board: Arc<HeartbeatBoard>,
        recovered: Vec<Effect>,
        metrics: Arc<Metrics>,
    ) -> Self {
        SiteMaster {
            model,
            started,
            journal,
            groups: Vec::new(),
            links: HashMap::new(),
            next_link_id: 1,
            board,
            pending: recovered,
            metrics,
            rounds: 0,
            reallocations: 0,
            config: None,
            config_status: ConfigStatus::default(),
            federation: None,
            ownership: None,
            // 1 ms .. 10 min, 3 significant digits; the bounds are constants, so this
            // cannot fail.
            latency_ms: Histogram::new_with_bounds(1, 600_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits is valid")),
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
        for effect in effects {
            match effect {
                Effect::Journal(op) => {
                    self.metrics.journal_op(&op); // metrics
                    ops.push(op)
                }
                Effect::Audit(entry) => {
                    tracing::info!(
                        site = %self.model.site(),
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
            }
        }
        if ops.is_empty() && audits.is_empty() && commands.is_empty() && to_peers.is_empty() {
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
        if let Some((_, link)) = self.links.get(&server) {
            // do_send: one command per decision, a low and bounded rate; the link answers
            // through PointerAnswered / StopAnswered.
            link.do_send(Deliver(command));
            return;
        }
        let now = self.now();
        let effects = match command {
            Command::Apply { server, pointer } => self.model.pointer_answered(
                &server,
                pointer.epoch,
                Err("not connected".to_owned()),
                now,
            ),
            Command::Stop { server, epoch, .. } => {
                self.model
                    .stop_answered(&server, epoch, Err("not connected".to_owned()), now)
            }
        };
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

    fn round(&mut self, ctx: &mut Context<Self>) {
        let began = Instant::now(); // metrics: the round's duration, measured in the shell
        for (server, sample) in self.board.drain() {
            let at = self.at(sample.at);
            self.model
                .heartbeat(&server, sample.health, sample.load, at);
        }
        let now = self.now();
        let mut effects = match &mut self.ownership {
            Some(ownership) => ownership.tick(now),
            None => Vec::new(),
        };
        self.sync_ownership(ctx);
        for (group, (load, _)) in self.groups.iter().zip(self.model.account_loads()) {
            let Some(group) = group else { continue };
            group.do_send(LoadMeasured {
                total_load: load,
                now,
            });
        }
        effects.extend(self.model.tick(now));
        // Drain-first failback: an account whose home's servers now carry it alone goes
        // back to its home (docs/ownership.md).
        if let Some(ownership) = &mut self.ownership {
            let ready = self.model.ready_to_hand_over(now);
            for account in &ready {
                effects.extend(ownership.hand_over(account, now));
                effects.extend(self.model.handed_over(account));
            }
            if !ready.is_empty() {
                self.sync_ownership(ctx);
            }
        }
        self.rounds += 1;
        self.perform(effects, ctx);
        self.metrics.round_finished(began.elapsed()); // metrics
    }
}

impl Actor for SiteMaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Well above the default 16: every node's requests pass through here.
        ctx.set_mailbox_capacity(4096);
        self.groups = (0..self.model.accounts().len())
            .map(|ix| Some(self.start_group(ix as AccountIx, ctx)))
            .collect();
        // Before any node's renewal is answered: nothing is owned until a majority says so.
        self.sync_ownership(ctx);
        let recovered = std::mem::take(&mut self.pending);
        self.perform(recovered, ctx);
        ctx.run_interval(ROUND_INTERVAL, |master, ctx| master.round(ctx));
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
        let timeout = self.model.timings().workload_stop_timeout + Duration::from_secs(5);
        ServerLink::new(
            server,
            link_id,
            (message.connection, message.inbox),
            ctx.address(),
            self.board.clone(),
            timeout,
        )
        .start();
    }
}

/// A node introduced itself on its link.
#[derive(Message)]
#[rtype(result = "Result<Registration, Refusal>")]
pub struct RegisterServer {
    pub server: ServerId,
    pub link_id: u64,
    pub link: Addr<ServerLink>,
    pub running: Option<RunningWorkload>,
    pub highest_epoch: Epoch,
}

impl Handler<RegisterServer> for SiteMaster {
    type Result = Result<Registration, Refusal>;

    fn handle(&mut self, message: RegisterServer, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let (registration, effects) = self.model.register(
            &message.server,
            message.running.as_ref(),
            message.highest_epoch,
            now,
        )?;
        if let Some((_, old)) = self
            .links
            .insert(message.server.clone(), (message.link_id, message.link))
        {
            old.do_send(CloseLink);
        }
        tracing::info!(server = %message.server, "node registered");
        self.perform(effects, ctx);
        Ok(registration)
    }
}

/// A node asks to keep its lease. `None`: this site does not own the lease's account now,
/// and the node gets no answer (docs/ownership.md).
#[derive(Message)]
#[rtype(result = "Option<LeaseRenewal>")]
pub struct RenewLease {
    pub server: ServerId,
    pub epoch: Epoch,
}

impl Handler<RenewLease> for SiteMaster {
    type Result = MessageResult<RenewLease>;

    fn handle(&mut self, message: RenewLease, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let renewal = self
            .model
            .renew_as_owner(&message.server, message.epoch, now);
        if let Some(renewal) = &renewal {
            self.metrics.renewal(renewal); // metrics
        }
        MessageResult(renewal)
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
            self.model
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
            .model
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
        let effects = match &message.event {
            WorkloadEvent::Joined => {
                self.model
                    .workload_joined(&message.server, message.epoch, now)
            }
            WorkloadEvent::Failed(reason) => {
                self.model
                    .workload_failed(&message.server, message.epoch, reason, now)
            }
            WorkloadEvent::Stopped(cause) => {
                self.model
                    .workload_stopped(&message.server, message.epoch, cause, now)
            }
        };
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
            .is_some_and(|(id, _)| *id == message.link_id)
        {
            self.links.remove(&message.server);
            self.model.disconnected(&message.server);
            tracing::info!(server = %message.server, "node disconnected");
        }
    }
}

impl Handler<DemandChanged> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: DemandChanged, _: &mut Context<Self>) {
        self.model.set_demand(message.account, message.demand);
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
}

impl Handler<GetStatus> for SiteMaster {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let percentile =
            |q: f64| (!self.latency_ms.is_empty()).then(|| self.latency_ms.value_at_quantile(q));
        MessageResult(Status {
            snapshot: self.model.snapshot(now),
            uptime_ms: now.0,
            rounds: self.rounds,
            reallocations: self.reallocations,
            reallocation_ms_p50: percentile(0.5),
            reallocation_ms_p99: percentile(0.99),
            config: self.config_status.clone(),
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
}

impl Handler<ApplyConfig> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: ApplyConfig, ctx: &mut Context<Self>) {
        let ApplyConfig { config, hash } = message;
        let short = &hash[..hash.len().min(12)];
        if hash == self.config_status.hash {
            match self.config_status.last_refused.take() {
                // The file is back to the config the site runs on: the refusal is over,
                // with nothing to apply.
                Some(_) => {
                    tracing::info!(
                        hash = short,
                        "config file is back to the running config; refusal cleared"
                    );
                    self.metrics.config_reload(true); // metrics
                    self.config_status.reloads_applied += 1;
                    self.config_status.applied_at_ms = wall_ms();
                }
                // A SIGHUP or a touch without a change: nothing to apply, nothing to count.
                None => tracing::info!(hash = short, "config file unchanged; nothing applied"),
            }
            return;
        }
        let diff = self
            .config
            .as_ref()
            .map(|old| crate::config::diff::diff(old, &config));
        let now = self.now();
        let (done, effects) = self.model.reconfigure(&config, &hash, now);
        for ix in &done.stopped {
            // Dropping the last address stops the Group once its mailbox is empty.
            if let Some(slot) = self.groups.get_mut(*ix as usize) {
                *slot = None;
            }
        }
        for ix in &done.started {
            let group = self.start_group(*ix, ctx);
            let ix = *ix as usize;
            if ix >= self.groups.len() {
                self.groups.resize(ix + 1, None);
            }
            self.groups[ix] = Some(group);
        }
        for ix in &done.sla_changed {
            if let Some(Some(group)) = self.groups.get(*ix as usize) {
                let sla = sla_of(&self.model.accounts()[*ix as usize].config);
                group.do_send(SetSla(sla));
            }
        }
        let needs_restart = diff
            .as_ref()
            .map(|diff| diff.needs_restart.clone())
            .unwrap_or_default();
        // Peers added, removed or re-addressed, and the new catalogue, take effect now.
        if let Some(federation) = &self.federation {
            federation.apply(&config);
        }
        if let Some(ownership) = &mut self.ownership {
            ownership.set_home(config.accounts.iter().map(|a| a.name.clone()).collect());
        }
        for what in &needs_restart {
            tracing::warn!(what = %what, "this part of the config edit needs a restart and was not applied");
        }
        match &diff {
            Some(diff) => tracing::info!(hash = short, "config applied:\n{diff}"),
            None => tracing::info!(hash = short, "config applied"),
        }
        self.metrics.config_reload(true); // metrics
        self.config_status = ConfigStatus {
            path: config.path.display().to_string(),
            hash,
            applied_at_ms: wall_ms(),
            last_refused: None,
            reloads_applied: self.config_status.reloads_applied + 1,
            reloads_refused: self.config_status.reloads_refused,
            needs_restart,
        };
        // Keep the addresses and inventory the site actually runs with, so a later diff
        // still reports them as needing a restart.
        let mut running = config;
        if let Some(old) = &self.config {
            running.site = old.site.clone();
            running.servers = old.servers.clone();
            running.peers = old.peers.clone();
        }
        self.config = Some(running);
        self.perform(effects, ctx);
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
        self.config_status.reloads_refused += 1;
        self.config_status.last_refused = Some(message.errors);
    }
}
