//! A live config edit, applied to the site core as a diff (docs/configuration.md "Live
//! edits"). Accounts keep their index for the life of the process, because leases, the
//! arbiter's views and the Group actors all name an account by its position: a removed
//! account is tombstoned, never deleted, and a re-added name gets its old index back.

use leasehold_federation::ids::AccountId;

use super::{AccountEntry, SiteModel, audit};
use crate::config::SiteConfig;
use crate::config::diff::diff_accounts;
use crate::model::Millis;
use crate::model::arbiter::AccountIx;
use crate::model::effects::{AuditKind, Effect};

/// What [`SiteModel::reconfigure`] changed, for the shell to follow with its actors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Accounts that need a Group (new ones and re-added tombstones).
    pub started: Vec<AccountIx>,
    /// Accounts whose Group must stop (now tombstoned).
    pub stopped: Vec<AccountIx>,
    /// Accounts still present whose SLA (min, max, target load) changed.
    pub sla_changed: Vec<AccountIx>,
}

impl SiteModel {
    /// Applies `new` (already validated; `hash` names it in the audit log). SLAs and
    /// workloads are replaced in place, so the next round decides with them and the next
    /// grant runs the new workload; timings are replaced, so grants and renewals from now
    /// on use them. A removed account keeps its index with `removed` set: its view asks for
    /// no servers, so the arbiter drains and frees them on the ordinary release path, and no
    /// new lease is ever granted for it. Servers that run as processes are added and removed
    /// likewise; machines, changed server addresses and the site's addresses need a restart
    /// and are not touched here (the shell reports them).
    pub fn reconfigure(
        &mut self,
        new: &SiteConfig,
        hash: &str,
        _now: Millis,
    ) -> (Reconfigured, Vec<Effect>) {
        let short = &hash[..hash.len().min(12)];
        let mut done = Reconfigured::default();
        let mut effects = Vec::new();
        let mut summary = Vec::new();
        for account in &new.accounts {
            match self.account_index.get(&account.name).copied() {
                Some(ix) if self.accounts[ix as usize].removed => {
                    let entry = &mut self.accounts[ix as usize];
                    *entry = AccountEntry::new(account.clone());
                    done.started.push(ix);
                    summary.push(format!("+{}", account.name));
                    effects.push(config_audit(Some(&account.name), format!("config {short}: account {} added back; its group starts and asks for {} to {} servers", account.name, account.min_servers, account.max_servers),
                    ));
                }
                Some(ix) => {
                    let entry = &mut self.accounts[ix as usize];
                    let fields = diff_accounts(&entry.config, account);
                    if fields.is_empty() {
                        continue;
                    }
                    let sla = ["min_servers", "max_servers", "target_load"];
                    if fields.iter().any(|field| sla.contains(field)) {
                        done.sla_changed.push(ix);
                    }
                    entry.config = account.clone();
                    entry.demand = entry.demand.clamp(account.min_servers, account.max_servers);
                    summary.push(format!("~{}({})", account.name, fields.join(",")));
                    effects.push(config_audit(Some(&account.name), format!(
                            "config {short}: account {} changed ({}); the next round decides with it{}",
                            account.name,
                            fields.join(", "),
                            if fields.contains(&"workload") {
                                ", and new leases run the new workload"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                None => {
                    let ix = self.accounts.len() as AccountIx;
                    self.accounts.push(AccountEntry::new(account.clone()));
                    self.account_index.insert(account.name.clone(), ix);
                    done.started.push(ix);
                    summary.push(format!("+{}", account.name));
                    effects.push(config_audit(Some(&account.name), format!("config {short}: account {} added; its group starts and asks for {} to {} servers", account.name, account.min_servers, account.max_servers),
                    ));
                }
            }
        }
        self.reconfigure_servers(new, short, &mut summary, &mut effects);
        if self.lending != new.lending {
            self.lending = new.lending.clone();
            summary.push("lending".to_owned());
            effects.push(config_audit(None, format!("config {short}: lending changed (reserve {}, max_lent {}); loans already made run on, new requests follow it", new.lending.reserve, new.lending.max_lent),
            ));
        }
        for ix in 0..self.accounts.len() {
            let entry = &mut self.accounts[ix];
            // A peer's account (a loan's guest, or one taken over) is not in our file.
            if entry.removed
                || entry.guest.is_some()
                || entry.adopted_from.is_some()
                || new.account(&entry.config.name).is_some()
            {
                continue;
            }
            entry.removed = true;
            entry.demand = 0;
            entry.shortfall = None;
            done.stopped.push(ix as AccountIx);
            let name = entry.config.name.clone();
            summary.push(format!("-{name}"));
            effects.push(config_audit(Some(&name), format!("config {short}: account {name} removed; its servers are drained and freed, and it gets no new lease"),
            ));
        }
        if self.timings != new.timings {
            self.timings = new.timings;
            summary.push("timings".to_owned());
            effects.push(config_audit(None, format!("config {short}: timings changed; they apply from each lease's next grant or renewal and each node's next registration"),
            ));
        }
        let summary = if summary.is_empty() {
            "no change to accounts or timings".to_owned()
        } else {
            summary.join(" ")
        };
        effects.push(config_audit(
            None,
            format!("config {hash} of {} applied: {summary}", new.path.display()),
        ));
        (done, effects)
    }
}

impl SiteModel {
    /// Servers that run as processes, added to or removed from the file. A removed one is
    /// kept at its index (leases and views name servers by position) and drained as for
    /// maintenance; a re-added one is back. Machines and changed addresses need a restart
    /// (the diff says so) and are left as they are.
    fn reconfigure_servers(
        &mut self,
        new: &SiteConfig,
        short: &str,
        summary: &mut Vec<String>,
        effects: &mut Vec<Effect>,
    ) {
        for server in new.servers.iter().filter(|server| server.machine.is_none()) {
            match self.server_index.get(&server.id).copied() {
                Some(ix) if self.servers[ix].removed => {
                    self.servers[ix].removed = false;
                    summary.push(format!("+{}", server.id));
                    effects.push(config_audit(
                        None,
                        format!(
                            "config {short}: server {} added back to the inventory",
                            server.id
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    let ix = self.servers.len();
                    self.servers.push(super::server::ServerEntry::new(
                        server.id.clone(),
                        server.service_addr.to_string(),
                    ));
                    self.server_index.insert(server.id.clone(), ix);
                    summary.push(format!("+{}", server.id));
                    effects.push(config_audit(None, format!("config {short}: server {} added to the inventory; it is free for accounts once its node agent registers", server.id)));
                }
            }
        }
        for entry in &mut self.servers {
            let listed = new.servers.iter().any(|server| server.id == entry.id);
            if listed || entry.removed || entry.machine.is_some() {
                continue;
            }
            entry.removed = true;
            self.rare.out_of_use = true;
            summary.push(format!("-{}", entry.id));
            let then = if entry.lease.is_some() {
                "it drains once its account has its minimum without it, then leaves the inventory"
            } else {
                "it leaves the inventory"
            };
            effects.push(config_audit(
                None,
                format!("config {short}: server {} removed; {then}", entry.id),
            ));
        }
    }
}

/// A `config` audit entry, about `account` or the site as a whole.
fn config_audit(account: Option<&AccountId>, reason: String) -> Effect {
    audit(AuditKind::Config, None, account, None, None, reason)
}
