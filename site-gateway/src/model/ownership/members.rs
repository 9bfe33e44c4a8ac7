//! Who votes on ownership, changed while the federation runs (docs/ownership.md,
//! "Members"). Majorities of two member sets that differ by one site always meet; sets two
//! apart need not. So a site moves its *running* set (the one its claims need a majority
//! of) one site at a time towards the set its config *wants*, and only once every site of
//! both sets has said, after hearing of this change, that it runs and wants one of the two,
//! and an ownership TTL has passed since each of them took the set it runs (so that no
//! ownership counted over an older set is still held). An acceptor grants only claimants
//! in its own running set whose set is within one site of it, so a site left behind on a
//! set it was removed from wins nothing.
//!
//! Plain state: reports from peers and `now` in, the report to send and the step to take
//! out; the site's ownership core carries them on its claims and journals each step.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use leasehold_federation::ids::SiteId;
use leasehold_federation::wire::site::MembershipReport;

use crate::model::Millis;

pub type MemberSet = BTreeSet<SiteId>;

/// A report as heard, with when the peer's running set was first heard as it is now.
#[derive(Debug, Clone)]
struct Heard {
    running: MemberSet,
    wanted: MemberSet,
    /// The peer's own change, echoed in our reports.
    change: u64,
    /// The change of ours this report echoes.
    seen_ours: Option<u64>,
    /// Receipt of the first report with this running set, in the unbroken run since.
    running_since: Millis,
}

/// Why a site does not take the set its config wants yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// The config adds or removes more than one site at once.
    TooFar {
        adds: Vec<SiteId>,
        removes: Vec<SiteId>,
    },
    /// No report from this site since it heard of our change.
    NotHeard(SiteId),
    /// No report from this site, which the change removes, since it heard of our change:
    /// the operator may say it is down for good.
    NotHeardLeaving(SiteId),
    /// This site runs or wants a set outside the two of the change.
    Elsewhere {
        site: SiteId,
        running: MemberSet,
        wanted: MemberSet,
    },
    /// Ownerships counted over an older set may still be held for this long.
    Settling { for_ms: u64 },
    /// This site runs no set, and no site of its config runs one to join from.
    NoneRunning,
}

/// A step the site took: its running set changed from `from` (empty: none yet) to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stepped {
    pub from: MemberSet,
    pub to: MemberSet,
}

/// Debug-build switches that break one rule each, so that tests show the checks catch an
/// unsafe membership change.
#[cfg(debug_assertions)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MembersPlant {
    /// Take a config that adds or removes several sites in one step.
    pub many_at_once: bool,
}

#[derive(Debug, Clone)]
pub struct Members {
    site: SiteId,
    /// Empty until the site first takes a set (a new journal).
    running: MemberSet,
    running_since: Millis,
    wanted: MemberSet,
    /// Our change: a new value with every edit of `wanted` and every start, which a peer
    /// echoes in its reports once it has heard it.
    change: u64,
    heard: BTreeMap<SiteId, Heard>,
    /// Sites the config says are down for good: a step that removes one does not wait
    /// for its answer.
    departed: MemberSet,
    ttl: Duration,
    #[cfg(debug_assertions)]
    pub plant: MembersPlant,
}

fn set(sites: &[SiteId]) -> MemberSet {
    sites.iter().cloned().collect()
}

fn apart(a: &MemberSet, b: &MemberSet) -> usize {
    a.symmetric_difference(b).count()
}

impl Members {
    /// `running`: the set the journal says this site runs, with when it took it; `None`
    /// for a new journal. `wanted`: the config's sites (this one and its peers). `boot`:
    /// a value that differs at every start (the change ids of two starts must differ).
    pub fn new(
        site: SiteId,
        running: Option<MemberSet>,
        wanted: MemberSet,
        ttl: Duration,
        boot: u64,
        now: Millis,
    ) -> Members {
        let mut members = Members {
            site,
            running: running.unwrap_or_default(),
            // After a restart the claimant has forgotten every ownership it counted; the
            // wait below only guards a set taken while running.
            running_since: Millis(now.0.saturating_sub(ttl.as_millis() as u64)),
            wanted,
            change: boot.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            heard: BTreeMap::new(),
            departed: MemberSet::new(),
            ttl,
            #[cfg(debug_assertions)]
            plant: MembersPlant::default(),
        };
        // A site alone needs nobody's word.
        if members.running.is_empty() && members.wanted == BTreeSet::from([members.site.clone()]) {
            members.running = members.wanted.clone();
        }
        members
    }

    /// The set this site's claims need a majority of; empty: it claims nothing yet.
    pub fn running(&self) -> &MemberSet {
        &self.running
    }

    pub fn wanted(&self) -> &MemberSet {
        &self.wanted
    }

    /// This site's current change (see [`MembershipReport::change`]).
    pub fn change(&self) -> u64 {
        self.change
    }

    /// Every site this one must talk to: both sets.
    pub fn everyone(&self) -> MemberSet {
        self.running.union(&self.wanted).cloned().collect()
    }

    /// The config's sites changed.
    pub fn set_wanted(&mut self, wanted: MemberSet) {
        if wanted != self.wanted {
            self.wanted = wanted;
            self.change = self.change.wrapping_add(2);
        }
    }

    /// The sites the config says are down for good.
    pub fn set_departed(&mut self, departed: MemberSet) {
        self.departed = departed;
    }

    /// What this site tells every peer, on each claim message.
    pub fn report(&self) -> MembershipReport {
        MembershipReport {
            running: self.running.iter().cloned().collect(),
            wanted: self.wanted.iter().cloned().collect(),
            change: self.change,
            seen: self
                .heard
                .iter()
                .map(|(site, heard)| (site.clone(), heard.change))
                .collect(),
        }
    }

    /// A peer's report, as received at `now`.
    pub fn heard(&mut self, from: &SiteId, report: &MembershipReport, now: Millis) {
        let running = set(&report.running);
        let since = match self.heard.get(from) {
            Some(before) if before.running == running => before.running_since,
            _ => now,
        };
        let seen_ours = report
            .seen
            .iter()
            .find(|(site, _)| *site == self.site)
            .map(|(_, change)| *change);
        self.heard.insert(
            from.clone(),
            Heard {
                running,
                wanted: set(&report.wanted),
                change: report.change,
                seen_ours,
                running_since: since,
            },
        );
    }

    /// Whether this site's acceptor may grant `claimant`, whose claims need a majority of
    /// `claimed`: it must be in our running set, and its set within one site of ours.
    /// A claim without a set (a peer of an older build) is taken as ours.
    pub fn grants(&self, claimant: &SiteId, claimed: Option<&[SiteId]>) -> bool {
        if self.running.is_empty() || !self.running.contains(claimant) {
            return false;
        }
        claimed.is_none_or(|claimed| apart(&set(claimed), &self.running) <= 1)
    }

    /// The set a site that runs none yet joins from: the one the sites of its config run
    /// (a change under way shows two: the one that is not the wanted set).
    fn joining_from(&self) -> Option<MemberSet> {
        let running: BTreeSet<&MemberSet> = self
            .wanted
            .iter()
            .filter_map(|site| self.heard.get(site))
            .map(|heard| &heard.running)
            .filter(|running| !running.is_empty())
            .collect();
        running
            .iter()
            .find(|set| ***set != self.wanted)
            .or(running.first())
            .map(|set| (*set).clone())
    }

    /// Why the site does not take its wanted set now; empty when it may (or has it).
    ///
    /// A step goes from the running set `R` to the wanted `W`, one site apart. A site that
    /// runs none yet (a new site, a lost journal, a site that stepped out) joins from the
    /// set `C` the sites of its config run, under the same rules with `R = C`, except that
    /// every site must already want `W` (two new sites must not join two different sets
    /// next to `C`). Every site of both sets must have answered since it heard of this
    /// change, running one of the two sets (or none) and wanting one of them; and an
    /// ownership TTL must have passed since each of them, and this site, took the set it
    /// runs.
    pub fn waiting(&self, now: Millis) -> Vec<Waiting> {
        if self.running == self.wanted {
            return Vec::new();
        }
        let joining = self.running.is_empty();
        let from = if joining {
            match self.joining_from() {
                Some(set) => set,
                None => return vec![Waiting::NoneRunning],
            }
        } else {
            self.running.clone()
        };
        let mut waiting = Vec::new();
        #[cfg(debug_assertions)]
        let many_at_once = self.plant.many_at_once;
        #[cfg(not(debug_assertions))]
        let many_at_once = false;
        if apart(&from, &self.wanted) > 1 && !many_at_once {
            waiting.push(Waiting::TooFar {
                adds: self.wanted.difference(&from).cloned().collect(),
                removes: from.difference(&self.wanted).cloned().collect(),
            });
        }
        let ttl = Millis(self.ttl.as_millis() as u64);
        let mut settled_at = if joining {
            now
        } else {
            self.running_since + self.ttl
        };
        for site in from.union(&self.wanted) {
            // A site removed while down for good cannot answer; it takes no step either
            // (docs/ownership.md, "Removing a site that is down for good").
            let gone = self.departed.contains(site) && !self.wanted.contains(site);
            if *site == self.site || gone {
                continue;
            }
            let heard = self
                .heard
                .get(site)
                .filter(|heard| heard.seen_ours == Some(self.change));
            let Some(heard) = heard else {
                waiting.push(if self.wanted.contains(site) {
                    Waiting::NotHeard(site.clone())
                } else {
                    Waiting::NotHeardLeaving(site.clone())
                });
                continue;
            };
            // A site that runs no set claims and grants nothing.
            let runs_one =
                heard.running.is_empty() || heard.running == self.wanted || heard.running == from;
            let wants_one = heard.wanted == self.wanted || (!joining && heard.wanted == from);
            if !runs_one || !wants_one {
                waiting.push(Waiting::Elsewhere {
                    site: site.clone(),
                    running: heard.running.clone(),
                    wanted: heard.wanted.clone(),
                });
                continue;
            }
            if !heard.running.is_empty() {
                settled_at = settled_at.max(Millis(heard.running_since.0 + ttl.0));
            }
        }
        if waiting.is_empty() && now < settled_at {
            waiting.push(Waiting::Settling {
                for_ms: settled_at.0 - now.0,
            });
        }
        waiting
    }

    /// Whether this site was left behind: every other site of its wanted set runs a set
    /// without it (it was removed, the others moved on, and its config names it again
    /// now). It can never reach its wanted set step by step, and the others cannot take
    /// it back while it runs its old set. Such a site claims nothing more; once it counts
    /// no ownership it [`Self::drop_running`]s, and joins its wanted set as a new site
    /// does.
    pub fn stranded(&self) -> bool {
        if self.running.is_empty() || self.running == self.wanted {
            return false;
        }
        let others: Vec<Option<&Heard>> = self
            .wanted
            .iter()
            .filter(|site| **site != self.site)
            .map(|site| self.heard.get(site))
            .collect();
        // Some run a set, and none counts this site in it (or has stepped out itself).
        others
            .iter()
            .all(|heard| heard.is_some_and(|heard| !heard.running.contains(&self.site)))
            && others
                .iter()
                .flatten()
                .any(|heard| !heard.running.is_empty())
    }

    /// Runs no set from now on: claims and grants nothing until it takes its wanted set
    /// as a new site does. Always safe for the others; the caller makes sure this site
    /// counts no ownership any more.
    pub fn drop_running(&mut self) -> Stepped {
        let from = std::mem::take(&mut self.running);
        Stepped {
            from,
            to: MemberSet::new(),
        }
    }

    /// Takes the wanted set if nothing is waited for.
    pub fn step(&mut self, now: Millis) -> Option<Stepped> {
        if self.running == self.wanted || !self.waiting(now).is_empty() {
            return None;
        }
        let from = std::mem::replace(&mut self.running, self.wanted.clone());
        self.running_since = now;
        Some(Stepped {
            from,
            to: self.running.clone(),
        })
    }
}

/// "site-a, site-b": names in order, for messages.
fn listed<'a>(sites: impl IntoIterator<Item = &'a SiteId>) -> String {
    sites
        .into_iter()
        .map(SiteId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waiting::TooFar { adds, removes } => write!(
                f,
                "the config adds [{}] and removes [{}]: change the members one site at a time",
                listed(adds),
                listed(removes)
            ),
            Waiting::NotHeard(site) => {
                write!(f, "{site} has not yet answered since this change")
            }
            Waiting::NotHeardLeaving(site) => write!(
                f,
                "{site} has not yet answered since this change; if it is down for good, name it in [site] departed (docs/ownership.md, \"Removing a site that is down for good\")"
            ),
            Waiting::Elsewhere {
                site,
                running,
                wanted,
            } => write!(
                f,
                "{site} runs [{}] and wants [{}]: edit its config to the same members",
                listed(running),
                listed(wanted)
            ),
            Waiting::NoneRunning => f.write_str(
                "no site of the config runs a set of members yet to join (the first sites of a new federation name each other in [site] initial_members)",
            ),
            Waiting::Settling { for_ms } => write!(
                f,
                "ownerships counted over the previous members may be held for {for_ms} ms more"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str) -> SiteId {
        SiteId::parse(name).unwrap()
    }

    fn of(names: &[&str]) -> MemberSet {
        names.iter().map(|name| site(name)).collect()
    }

    const FOUR: [&str; 4] = ["site-a", "site-b", "site-c", "site-d"];
    const THREE: [&str; 3] = ["site-a", "site-b", "site-c"];

    /// site-a runs the four and its config leaves site-d out; site-b and site-c answered
    /// that they run the four and want the three; site-d, down, never answers.
    fn removing_d() -> Members {
        let mut a = Members::new(
            site("site-a"),
            Some(of(&FOUR)),
            of(&THREE),
            Duration::from_millis(1500),
            7,
            Millis(10_000),
        );
        for peer in ["site-b", "site-c"] {
            let report = MembershipReport {
                running: FOUR.iter().map(|name| site(name)).collect(),
                wanted: THREE.iter().map(|name| site(name)).collect(),
                change: 3,
                seen: vec![(site("site-a"), a.change())],
            };
            a.heard(&site(peer), &report, Millis(10_000));
        }
        a
    }

    #[test]
    fn a_site_down_for_good_blocks_its_removal_until_the_config_names_it_departed() {
        let mut a = removing_d();
        assert_eq!(
            a.waiting(Millis(20_000)),
            vec![Waiting::NotHeardLeaving(site("site-d"))]
        );
        assert!(
            Waiting::NotHeardLeaving(site("site-d"))
                .to_string()
                .contains("name it in [site] departed")
        );
        assert!(a.step(Millis(20_000)).is_none());
        a.set_departed(of(&["site-d"]));
        let stepped = a
            .step(Millis(20_000))
            .expect("a step without site-d's answer");
        assert_eq!(stepped.to, of(&THREE));
    }

    #[test]
    fn departed_spares_the_departed_sites_answer_only() {
        let mut a = removing_d();
        a.set_departed(of(&["site-d"]));
        // site-c has not answered since this change: it is still waited for.
        a.heard.remove(&site("site-c"));
        assert_eq!(
            a.waiting(Millis(20_000)),
            vec![Waiting::NotHeard(site("site-c"))]
        );
    }
}
