//! The site's side of a membership change (docs/ownership.md, "Members"): what it starts
//! from (the journal, or the founding set of a new federation), a config edit of its
//! peers, the steps [`Members`] allows, journaled and audited, and stepping out when the
//! others moved on without it.

use leasehold_federation::ids::SiteId;
use serde::Serialize;

use super::members::{MemberSet, Members, Stepped};
use super::site::{PeerState, SiteOwnership};
use crate::model::Millis;
use crate::model::effects::{AuditEntry, AuditKind, Effect, JournalOp};

/// The members as `/v1/status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MembersStatus {
    /// The sites whose majority this site's claims need; empty: none yet.
    pub running: Vec<String>,
    /// The sites its config names.
    pub wanted: Vec<String>,
    /// Why it does not run the wanted set yet, in words.
    pub waiting: Vec<String>,
}

fn names(set: &MemberSet) -> Vec<String> {
    set.iter().map(|site| site.to_string()).collect()
}

impl SiteOwnership {
    /// At start, after the journal was read: the members it last journaled; else, for a
    /// journal older than membership changes, the config's (as before); else, for a new
    /// journal, the founding set if the config names one (`initial_members`), or none (it
    /// joins the set its peers run). Returns what to journal.
    pub fn restore_members(
        &mut self,
        journaled: Option<Vec<SiteId>>,
        new_journal: bool,
        founding: bool,
        now: Millis,
    ) -> Vec<Effect> {
        let wanted = self.members.wanted().clone();
        let (running, record) = match journaled {
            Some(running) => (running.into_iter().collect(), false),
            None if new_journal && !founding => (MemberSet::new(), false),
            None => (wanted.clone(), true),
        };
        let boot = self.members.change();
        #[cfg(debug_assertions)]
        let plant = self.members.plant;
        self.members = Members::new(
            self.site.clone(),
            Some(running),
            wanted,
            self.timing().ttl,
            boot.rotate_left(17) ^ now.0,
            now,
        );
        #[cfg(debug_assertions)]
        {
            self.members.plant = plant;
        }
        let running: Vec<SiteId> = self.members.running().iter().cloned().collect();
        self.claimant.set_sites(running.clone());
        if record || (self.solo && new_journal) {
            vec![Effect::Journal(JournalOp::Members { running })]
        } else {
            Vec::new()
        }
    }

    /// The config's sites (this one and its peers) after an edit.
    pub fn set_wanted(&mut self, wanted: Vec<SiteId>, now: Millis) {
        for site in &wanted {
            if *site != self.site && !self.peers.contains_key(site) {
                self.peers.insert(
                    site.clone(),
                    PeerState {
                        up: false,
                        since: now,
                    },
                );
            }
        }
        self.members.set_wanted(wanted.into_iter().collect());
    }

    /// The sites the config says were removed while down for good.
    pub fn set_departed(&mut self, departed: Vec<SiteId>) {
        self.members.set_departed(departed.into_iter().collect());
    }

    /// The sites whose members it runs or wants.
    pub fn member_sites(&self) -> Vec<SiteId> {
        self.members.everyone().into_iter().collect()
    }

    /// Whether a site that started alone was given peers (it takes them at a restart).
    pub fn started_alone(&self) -> bool {
        self.solo
    }

    pub fn members_status(&self, now: Millis) -> MembersStatus {
        let mut waiting: Vec<String> = self
            .members
            .waiting(now)
            .iter()
            .map(ToString::to_string)
            .collect();
        if self.members.stranded() {
            waiting.push(
                "the sites of the config run sets without this site: it claims nothing, and joins once it counts no ownership".into(),
            );
        }
        MembersStatus {
            running: names(self.members.running()),
            wanted: names(self.members.wanted()),
            waiting,
        }
    }

    /// Whether this site claims ownerships: it runs a set it is in, and was not left
    /// behind.
    pub(super) fn claiming(&self) -> bool {
        self.members.running().contains(&self.site) && !self.members.stranded()
    }

    /// A step the members allow now, or stepping out, journaled (before the claims of
    /// this round go out under it) and audited.
    pub(super) fn step_members(&mut self, now: Millis) -> Vec<Effect> {
        if self.solo {
            return Vec::new();
        }
        let stepped = if self.members.stranded() {
            (!self.claimant.owns_any(now)).then(|| self.members.drop_running())
        } else {
            self.members.step(now)
        };
        let Some(Stepped { from, to }) = stepped else {
            return Vec::new();
        };
        let running: Vec<SiteId> = to.iter().cloned().collect();
        self.claimant.set_sites(running.clone());
        let list = |set: &MemberSet| {
            if set.is_empty() {
                "none".to_owned()
            } else {
                names(set).join(", ")
            }
        };
        let reason = if to.is_empty() {
            format!(
                "{}'s config names it with [{}], whose sites run sets without it: it steps out of [{}] and joins as a new site",
                self.site,
                list(self.members.wanted()),
                list(&from)
            )
        } else {
            format!(
                "{}'s ownership claims now need a majority of [{}] (were: [{}]): every site of both sets agreed, and older ownerships have run out",
                self.site,
                list(&to),
                list(&from)
            )
        };
        vec![
            Effect::Journal(JournalOp::Members { running }),
            Effect::Audit(AuditEntry::site_wide(AuditKind::Members, reason)),
        ]
    }
}
