//! `SiteCore`: every decision of one site in one plain struct. It holds what the
//! `SiteMaster` actor used to combine itself (the site model, the ownership core, the
//! running config) and the glue between them (a round, ownership sync, config edits), so
//! that the gateway's actors and the deterministic simulation (`leasehold sim`) run the
//! same code in the same order. No actors, no I/O, no clock: `now` comes in, effects go
//! out (docs/architecture.md, "Core and shell").
//!
//! One method per input, each with its typed answer (a node's registration, a renewal, a
//! loan offer, ownership votes), rather than one enum of every input: the shell's typed
//! messages map one to one onto them. A round has two halves, because each account's
//! `Group` (its own actor, a shell over [`DemandModel`]) decides the account's demand from
//! the load [`SiteCore::begin_round`] measured, and [`SiteCore::finish_round`] arbitrates
//! on those demands in the same round. [`Groups`] runs the same demand models in order for
//! a caller with no actors (the simulation, tests).

mod config;
mod inputs;
mod machines;
#[cfg(test)]
mod tests;

use leasehold_federation::ids::{ServerId, SiteId};
use leasehold_federation::wire::common::Health;

pub use config::{ConfigApplied, ConfigOutcome, ConfigStatus};
pub use inputs::WorkloadEvent;
pub use machines::BootAnswer;

use super::Millis;
use super::arbiter::AccountIx;
use super::demand::{DemandModel, Sla};
use super::effects::Effect;
use super::ownership::{Owner, SiteOwnership};
use super::site::{Recovered, ServerIx, SiteModel};
use crate::config::{Account, SiteConfig};

pub struct SiteCore {
    model: SiteModel,
    /// Which accounts this site owns (docs/ownership.md); `None`: it owns its own for ever.
    ownership: Option<SiteOwnership>,
    /// The config the site runs on (the last good one, with the parts that need a
    /// restart kept as they were) and what live edits did.
    config: Option<SiteConfig>,
    status: ConfigStatus,
    /// Effects of a round's first half, performed with its second.
    round: Vec<Effect>,
    rounds: u64,
}

/// One heartbeat, as the shell read it off the heartbeat board: the server by its place
/// in the site ([`SiteCore::server_ix`]), which the shell learnt when it registered.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub server: ServerIx,
    pub health: Health,
    pub load: Option<f64>,
    pub at: Millis,
}

/// The accounts whose `Group` must start (with its SLA), stop, or learn a new SLA.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupChanges {
    pub started: Vec<(AccountIx, Sla)>,
    pub stopped: Vec<AccountIx>,
    pub sla_changed: Vec<(AccountIx, Sla)>,
}

impl GroupChanges {
    pub fn is_empty(&self) -> bool {
        self.started.is_empty() && self.stopped.is_empty() && self.sla_changed.is_empty()
    }

    fn extend(&mut self, other: GroupChanges) {
        self.started.extend(other.started);
        self.stopped.extend(other.stopped);
        self.sla_changed.extend(other.sla_changed);
    }
}

/// What a round's first half asks of the groups: each served account's total load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundLoads {
    /// (account, the total load of the servers serving it), in account order; an account
    /// no server serves has no entry, and its demand holds.
    pub loads: Vec<(AccountIx, f64)>,
    /// Some account was short of its demand in the last round, with no server free: the
    /// demand models keep no margin (`DemandModel::observe_pressed`).
    pub pressed: bool,
    /// Groups to start or stop before they are asked (an account taken over this round).
    pub groups: GroupChanges,
}

/// An account's SLA as its demand model needs it.
pub fn sla_of(account: &Account) -> Sla {
    Sla {
        min_servers: account.min_servers,
        max_servers: account.max_servers,
        target_load: account.target_load,
    }
}

impl SiteCore {
    /// The site of `config`, rebuilt from what its journal `recovered`; the effects are
    /// those of the recovery (performed before anything else), the groups those of every
    /// account.
    pub fn new(
        config: SiteConfig,
        hash: String,
        recovered: &Recovered,
        mut ownership: Option<SiteOwnership>,
        wall_ms: u64,
        now: Millis,
    ) -> (SiteCore, Vec<Effect>, GroupChanges) {
        let (model, mut effects) = SiteModel::new(&config, recovered, now);
        if let Some(ownership) = &mut ownership {
            effects.extend(ownership.restore_members(
                recovered.members.clone(),
                recovered.new_journal,
                config.site.initial_members.is_some(),
                now,
            ));
            ownership.set_departed(config.site.departed.clone());
            ownership.resume_terms(&recovered.terms);
        }
        let mut core = SiteCore {
            model,
            ownership,
            status: ConfigStatus::loaded(&config, hash, wall_ms),
            config: Some(config),
            round: Vec::new(),
            rounds: 0,
        };
        let mut groups = GroupChanges {
            started: core
                .model
                .accounts()
                .iter()
                .enumerate()
                .filter(|(_, account)| account.is_home())
                .map(|(ix, account)| (ix as AccountIx, sla_of(&account.config)))
                .collect(),
            ..GroupChanges::default()
        };
        // Before any node's renewal is answered: nothing is owned until a majority says so.
        groups.extend(core.sync_ownership(now));
        (core, effects, groups)
    }

    pub fn model(&self) -> &SiteModel {
        &self.model
    }

    /// Where `server` stands in this site, for its heartbeats ([`Heartbeat::server`]).
    pub fn server_ix(&self, server: &ServerId) -> Option<ServerIx> {
        self.model.server_ix(server)
    }

    pub fn ownership(&self) -> Option<&SiteOwnership> {
        self.ownership.as_ref()
    }

    /// The config the site runs on (the file's, less what needs a restart).
    pub fn running_config(&self) -> Option<&SiteConfig> {
        self.config.as_ref()
    }

    /// The sites the ownership core talks to: the members it runs and those it wants.
    pub fn member_sites(&self) -> Vec<SiteId> {
        self.ownership
            .as_ref()
            .map(|ownership| ownership.member_sites())
            .unwrap_or_default()
    }

    pub fn config_status(&self) -> &ConfigStatus {
        &self.status
    }

    /// Rounds finished so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// A round's first half: the heartbeats since the last round, ownerships that ran out
    /// or were won, accounts taken over (their groups start); then each account's measured
    /// load, for its group to turn into demand.
    pub fn begin_round(&mut self, heartbeats: Vec<Heartbeat>, now: Millis) -> RoundLoads {
        for beat in heartbeats {
            self.model
                .heartbeat_at(beat.server, beat.health, beat.load, beat.at);
        }
        if let Some(ownership) = &mut self.ownership {
            self.round.extend(ownership.tick(now));
        }
        let groups = self.sync_ownership(now);
        let loads = self
            .model
            .begin_tick(now, &mut self.round)
            .into_iter()
            .zip(self.model.accounts())
            .enumerate()
            .filter(|(_, (_, account))| account.is_home())
            // With no server serving it there is no measurement, only an absence of
            // reports: its demand holds (a zero would shrink it while its servers start).
            .filter(|(_, ((_, serving), _))| *serving > 0)
            .map(|(ix, ((load, _), _))| (ix as AccountIx, load))
            .collect();
        let pressed = self.model.pressed();
        RoundLoads {
            loads,
            pressed,
            groups,
        }
    }

    /// A round's second half, on the demands the groups decided from this round's loads:
    /// expiry, failure detection, arbitration, loans, and the drain-first failback of
    /// accounts whose home's servers now carry them alone (docs/ownership.md). Returns the
    /// whole round's effects (with the first half's) and the groups that change.
    pub fn finish_round(
        &mut self,
        demands: &[(AccountIx, u32)],
        now: Millis,
    ) -> (Vec<Effect>, GroupChanges) {
        for (account, demand) in demands {
            self.model.set_demand(*account, *demand);
        }
        let mut effects = std::mem::take(&mut self.round);
        self.model.tick_into(now, &mut effects);
        let mut groups = GroupChanges::default();
        if let Some(ownership) = &mut self.ownership {
            let ready = self.model.ready_to_hand_over(now);
            for account in &ready {
                effects.extend(ownership.hand_over(account, now));
                effects.extend(self.model.handed_over(account));
            }
            if !ready.is_empty() {
                groups = self.sync_ownership(now);
            }
        }
        self.rounds += 1;
        (effects, groups)
    }

    /// Feeds the ownership core's view of every account to the site model, and takes over
    /// the peer accounts it now owns (each gets a group). Called in every round and after
    /// every vote, so that nothing is served on an ownership that has run out.
    fn sync_ownership(&mut self, now: Millis) -> GroupChanges {
        let mut groups = GroupChanges::default();
        let Some(ownership) = &self.ownership else {
            return groups;
        };
        // A peer's account gets an entry here once this site owns it, not while it claims.
        let adopted: Vec<_> = ownership
            .adopted()
            .values()
            .map(|spec| (spec.clone(), ownership.owner(&spec.name, now)))
            .filter(|(_, owner)| matches!(owner, Owner::Here { .. }))
            .collect();
        // By index, and cloning no name: this runs for every account in every round.
        for ix in 0..self.model.accounts().len() {
            let account = &self.model.accounts()[ix];
            if account.guest.is_some() {
                continue;
            }
            let name = &account.config.name;
            let owner = ownership.owner(name, now);
            let handing_back = ownership.handing_back(name).cloned();
            self.model.set_owner_at(ix as AccountIx, owner);
            self.model
                .set_handing_back_at(ix as AccountIx, handing_back.as_ref());
        }
        for (spec, owner) in adopted {
            if let Some(ix) = self.model.adopt(&spec, owner) {
                let sla = sla_of(&self.model.accounts()[ix as usize].config);
                groups.started.push((ix, sla));
            }
        }
        groups
    }
}

/// Every account's demand model, run in order, as the `Group` actors run them: what a
/// caller with no actors (the simulation, tests) pairs with a [`SiteCore`].
#[derive(Debug, Default)]
pub struct Groups {
    models: Vec<Option<DemandModel>>,
}

impl Groups {
    /// Starts, stops and re-configures groups as the core asked.
    pub fn apply(&mut self, changes: &GroupChanges) {
        for ix in &changes.stopped {
            if let Some(slot) = self.models.get_mut(*ix as usize) {
                *slot = None;
            }
        }
        for (ix, sla) in &changes.started {
            let ix = *ix as usize;
            if ix >= self.models.len() {
                self.models.resize_with(ix + 1, || None);
            }
            self.models[ix] = Some(DemandModel::new(*sla));
        }
        for (ix, sla) in &changes.sla_changed {
            if let Some(Some(model)) = self.models.get_mut(*ix as usize) {
                model.set_sla(*sla);
            }
        }
    }

    /// Each running group's demand from its account's load this round (and whether the
    /// site is pressed, [`RoundLoads::pressed`]).
    pub fn decide(&mut self, start: &RoundLoads, now: Millis) -> Vec<(AccountIx, u32)> {
        start
            .loads
            .iter()
            .filter_map(|(ix, load)| {
                let model = self.models.get_mut(*ix as usize)?.as_mut()?;
                Some((*ix, model.observe_pressed(*load, now, start.pressed)))
            })
            .collect()
    }

    /// One whole round of `core` with these groups: begin, decide, finish.
    pub fn round(
        &mut self,
        core: &mut SiteCore,
        heartbeats: Vec<Heartbeat>,
        now: Millis,
    ) -> Vec<Effect> {
        let start = core.begin_round(heartbeats, now);
        self.apply(&start.groups);
        let demands = self.decide(&start, now);
        let (effects, groups) = core.finish_round(&demands, now);
        self.apply(&groups);
        effects
    }
}
