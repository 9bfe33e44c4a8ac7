//! Live config edits through the core: a file that passed validation is diffed against
//! the running config and applied (accounts, SLAs, timings the model takes live, the
//! accounts this site homes for ownership); what needs a restart is reported and kept as
//! it was. A refused file changes nothing but the status.

use serde::Serialize;

use super::{GroupChanges, SiteCore, sla_of};
use crate::config::SiteConfig;
use crate::config::diff::{ConfigDiff, diff};
use crate::model::Millis;
use crate::model::effects::Effect;
use leasehold_federation::ids::SiteId;

/// The config the site runs on and the outcome of live edits (`/v1/status` `config`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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

impl ConfigStatus {
    pub(super) fn loaded(config: &SiteConfig, hash: String, wall_ms: u64) -> ConfigStatus {
        ConfigStatus {
            path: config.path.display().to_string(),
            hash,
            applied_at_ms: wall_ms,
            ..ConfigStatus::default()
        }
    }
}

/// What a valid file did.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigOutcome {
    /// The same bytes as the running config (a SIGHUP, a touch): nothing applied.
    Unchanged,
    /// The file is back to the running config after a refused edit: nothing to apply,
    /// the refusal is over.
    RefusalCleared,
    /// Applied; `diff` against the running config (none for a core built without one).
    Applied { diff: Option<Box<ConfigDiff>> },
}

/// The outcome, the effects to perform and the groups that change.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigApplied {
    pub outcome: ConfigOutcome,
    pub effects: Vec<Effect>,
    pub groups: GroupChanges,
}

impl SiteCore {
    /// A live edit that passed validation; `hash` is the sha256 of the file's bytes, hex.
    /// Peers and the catalogue are the shell's to re-dial and re-announce with `config`.
    pub fn apply_config(
        &mut self,
        config: &SiteConfig,
        hash: String,
        wall_ms: u64,
        now: Millis,
    ) -> ConfigApplied {
        if hash == self.status.hash {
            let outcome = match self.status.last_refused.take() {
                Some(_) => {
                    self.status.reloads_applied += 1;
                    self.status.applied_at_ms = wall_ms;
                    ConfigOutcome::RefusalCleared
                }
                None => ConfigOutcome::Unchanged,
            };
            return ConfigApplied {
                outcome,
                effects: Vec::new(),
                groups: GroupChanges::default(),
            };
        }
        let changes = self.config.as_ref().map(|old| diff(old, config));
        let (done, effects) = self.model.reconfigure(config, &hash, now);
        let sla = |ix: u32| sla_of(&self.model.accounts()[ix as usize].config);
        let groups = GroupChanges {
            started: done.started.iter().map(|ix| (*ix, sla(*ix))).collect(),
            stopped: done.stopped.clone(),
            sla_changed: done.sla_changed.iter().map(|ix| (*ix, sla(*ix))).collect(),
        };
        let mut needs_restart = changes
            .as_ref()
            .map(|changes| changes.needs_restart.clone())
            .unwrap_or_default();
        if let Some(ownership) = &mut self.ownership {
            ownership.set_home(config.accounts.iter().map(|a| a.name.clone()).collect());
            ownership.set_failback_after(config.timings.failback_after);
            let mut wanted: Vec<SiteId> =
                config.peers.iter().map(|peer| peer.name.clone()).collect();
            wanted.push(config.site.name.clone());
            if !ownership.started_alone() {
                // Taken a step at a time by the ownership core (docs/ownership.md,
                // "Members"); `/v1/status` says what it waits for.
                ownership.set_wanted(wanted, now);
                ownership.set_departed(config.site.departed.clone());
            } else if wanted.len() > 1 {
                needs_restart.push(format!(
                    "peers of a site that started alone: [{}] (it owns its accounts without asking anyone until a restart)",
                    wanted.iter().map(SiteId::as_str).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        self.status = ConfigStatus {
            path: config.path.display().to_string(),
            hash,
            applied_at_ms: wall_ms,
            last_refused: None,
            reloads_applied: self.status.reloads_applied + 1,
            reloads_refused: self.status.reloads_refused,
            needs_restart,
        };
        // Keep the addresses, inventory and ownership timings the site actually runs
        // with, so a later diff still reports them as needing a restart. The peers are the
        // federation's, which takes them live; who votes on ownership follows them a step
        // at a time, above.
        let mut running = config.clone();
        if let Some(old) = &self.config {
            running.site = old.site.clone();
            // Servers that run as processes come and go live; the rest of the inventory
            // stays as started until a restart.
            let mut servers: Vec<_> = old
                .servers
                .iter()
                .filter(|server| {
                    server.machine.is_some()
                        || config.servers.iter().any(|after| after.id == server.id)
                })
                .cloned()
                .collect();
            servers.extend(
                config
                    .servers
                    .iter()
                    .filter(|server| server.machine.is_none())
                    .filter(|server| old.servers.iter().all(|before| before.id != server.id))
                    .cloned(),
            );
            running.servers = servers;
            running.timings.ownership_ttl = old.timings.ownership_ttl;
            running.timings.ownership_renew_interval = old.timings.ownership_renew_interval;
        }
        self.config = Some(running);
        ConfigApplied {
            outcome: ConfigOutcome::Applied {
                diff: changes.map(Box::new),
            },
            effects,
            groups,
        }
    }

    /// A live edit that validation refused (`errors`: file:line:column each). The site
    /// keeps running on its last good config.
    pub fn config_refused(&mut self, errors: String) {
        self.status.reloads_refused += 1;
        self.status.last_refused = Some(errors);
    }
}
