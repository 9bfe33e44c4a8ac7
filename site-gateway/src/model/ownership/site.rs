//! A site's ownership policy on top of the acceptor and the claimant: which accounts it
//! claims (its own, and a peer's when the sites before it in the account's `failover` list
//! are down), when it gives one back (its home site has been up for `failback_after`), and
//! what it tells its peers. Plain state: `now` in, messages and audit entries out.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rustc_hash::FxHashSet;

use leasehold_federation::ids::{AccountId, SiteId};
use leasehold_federation::wire::site::{
    AccountSpec, ClaimOwnership, OwnershipClaim, OwnershipRelease, OwnershipVote, OwnershipVotes,
    ReleaseOwnership,
};

use super::members::{MemberSet, Members};
use super::{Acceptor, Change, Claimant, Standing, Term, Timing, Vote};
use crate::model::Millis;
use crate::model::effects::{AuditEntry, AuditKind, Effect, JournalOp, PeerMessage};

/// Where this site stands with an account, as the site core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This site owns it until `until`.
    Here { term: Term, until: Millis },
    /// Another site holds it (as far as our last claim learned).
    There { holder: SiteId, term: Term },
    /// Nobody is known to hold it; this site is claiming it (at start, after a restart).
    Unknown,
}

/// How long a drain-first hand-back may take before this site falls back to
/// stop-then-start (its home lent too few servers, or they did not come up).
pub const HANDBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// A drain-first hand-back under way (docs/ownership.md): this site still owns the account
/// and serves it on servers its home lends it; once its own have stopped it releases the
/// ownership, and the home takes the servers it lent as its own.
#[derive(Debug, Clone)]
struct HandingBack {
    home: SiteId,
    since: Millis,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct PeerState {
    pub(super) up: bool,
    pub(super) since: Millis,
}

#[derive(Debug, Clone)]
pub struct SiteOwnership {
    pub(super) site: SiteId,
    /// A federation of one site owns its accounts without asking.
    pub(super) solo: bool,
    acceptor: Acceptor,
    pub(super) claimant: Claimant,
    /// Looked up for every account in every round; only ever iterated into a sorted map.
    home: FxHashSet<AccountId>,
    pub(super) peers: BTreeMap<SiteId, PeerState>,
    catalogues: BTreeMap<SiteId, Vec<AccountSpec>>,
    failback_after: Duration,
    /// Other holders learned from votes, per account.
    holders: HashMap<AccountId, (SiteId, Term)>,
    /// When a site that does not own an account may claim it next (owners renew on time).
    next_claim: HashMap<AccountId, Millis>,
    /// Accounts we own but do not home: their spec, for the site core.
    adopted: BTreeMap<AccountId, AccountSpec>,
    /// Adopted accounts being handed back drain-first.
    handing_back: BTreeMap<AccountId, HandingBack>,
    /// Seed of the claim back-off (xorshift); from the site's name, so a run replays.
    jitter: u64,
    /// No peer's account is taken over before this: at start every peer looks down until
    /// its Peer actor has reached it.
    takeovers_from: Millis,
    /// Who votes on ownership, changed while running (docs/ownership.md, "Members").
    pub(super) members: Members,
    /// When our members were last told to the peers.
    pub(super) reported_at: Option<Millis>,
}

impl SiteOwnership {
    pub fn new(
        site: SiteId,
        peers: Vec<SiteId>,
        home: Vec<AccountId>,
        timing: Timing,
        failback_after: Duration,
        now: Millis,
    ) -> SiteOwnership {
        let mut sites = peers.clone();
        sites.push(site.clone());
        sites.sort();
        let jitter = site
            .as_str()
            .bytes()
            .fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
            | 1;
        let all: MemberSet = sites.iter().cloned().collect();
        SiteOwnership {
            solo: peers.is_empty(),
            acceptor: Acceptor::new(timing.ttl, now),
            members: Members::new(
                site.clone(),
                Some(all.clone()),
                all,
                timing.ttl,
                jitter ^ now.0,
                now,
            ),
            reported_at: None,
            claimant: Claimant::new(site.clone(), sites, timing),
            site,
            home: home.into_iter().collect(),
            peers: peers
                .into_iter()
                .map(|peer| {
                    (
                        peer,
                        PeerState {
                            up: false,
                            since: now,
                        },
                    )
                })
                .collect(),
            catalogues: BTreeMap::new(),
            failback_after,
            holders: HashMap::new(),
            next_claim: HashMap::new(),
            adopted: BTreeMap::new(),
            handing_back: BTreeMap::new(),
            jitter,
            takeovers_from: now + timing.ttl,
        }
    }

    pub fn timing(&self) -> &Timing {
        self.claimant.timing()
    }

    /// Plants a bug, in debug builds only: renewals count on this site's own grant alone.
    /// For tests that show the overlap checker fails when ownership is unsafe.
    #[cfg(debug_assertions)]
    pub fn plant_renew_without_majority(&mut self) {
        self.claimant.plant_renew_without_majority = true;
    }

    /// Plants a bug, in debug builds only: the members step to a config that adds or
    /// removes several sites at once. For tests that show the checkers catch an unsafe
    /// membership change.
    #[cfg(debug_assertions)]
    pub fn plant_members_many_at_once(&mut self) {
        self.members.plant.many_at_once = true;
    }

    /// The accounts this site homes changed (a config edit).
    pub fn set_home(&mut self, home: Vec<AccountId>) {
        self.home = home.into_iter().collect();
    }

    /// `failback_after` changed (a config edit): a policy of this site alone, which the
    /// ownership argument does not depend on.
    pub fn set_failback_after(&mut self, failback_after: Duration) {
        self.failback_after = failback_after;
    }

    pub fn failback_after(&self) -> Duration {
        self.failback_after
    }

    pub fn peer_seen(&mut self, peer: &SiteId, up: bool, now: Millis) {
        if let Some(state) = self.peers.get_mut(peer)
            && state.up != up
        {
            *state = PeerState { up, since: now };
        }
    }

    pub fn catalogue(&mut self, peer: &SiteId, accounts: Vec<AccountSpec>) {
        if self.peers.contains_key(peer) {
            // An account we took over follows its home's newest config (`pinned` above all).
            for spec in &accounts {
                if let Some(adopted) = self.adopted.get_mut(&spec.name) {
                    *adopted = spec.clone();
                }
            }
            self.catalogues.insert(peer.clone(), accounts);
        }
    }

    /// Where this site stands with `account` at `now`.
    pub fn owner(&self, account: &AccountId, now: Millis) -> Owner {
        if self.solo && self.home.contains(account) {
            return Owner::Here {
                term: Term::NONE.next(),
                until: Millis(u64::MAX),
            };
        }
        match self.claimant.standing(account, now) {
            Standing::Owner { term, until } => Owner::Here { term, until },
            Standing::NotOwner => match self.holders.get(account) {
                Some((holder, term)) => Owner::There {
                    holder: holder.clone(),
                    term: *term,
                },
                None => Owner::Unknown,
            },
        }
    }

    /// An account's spec from any peer's catalogue: a peer that took an account over
    /// borrows for it, and only its home's catalogue describes it.
    pub fn spec_of(&self, account: &AccountId) -> Option<AccountSpec> {
        self.catalogues
            .values()
            .flatten()
            .find(|spec| spec.name == *account)
            .cloned()
    }

    /// A peer's account this site owns now, with its spec.
    pub fn adopted(&self) -> &BTreeMap<AccountId, AccountSpec> {
        &self.adopted
    }

    /// The home an account is being handed back to, drain-first.
    pub fn handing_back(&self, account: &AccountId) -> Option<&SiteId> {
        self.handing_back.get(account).map(|handing| &handing.home)
    }

    fn up(&self, site: &SiteId) -> bool {
        *site == self.site || self.peers.get(site).is_some_and(|peer| peer.up)
    }

    /// The accounts this site should own now: its own, each peer account whose home and
    /// earlier failover sites are all down while this site is next in line, and those it
    /// took over and still owns.
    fn wanted(&self, now: Millis) -> BTreeMap<AccountId, Option<AccountSpec>> {
        if !self.claiming() {
            return BTreeMap::new();
        }
        let mut wanted: BTreeMap<AccountId, Option<AccountSpec>> = self
            .home
            .iter()
            .map(|account| (account.clone(), None))
            .collect();
        // An account taken over is kept (renewed) until it is handed back, even once its
        // home is up again: the home gets it through the hand-back, never by a lapse.
        for (account, spec) in &self.adopted {
            if matches!(self.claimant.standing(account, now), Standing::Owner { .. }) {
                wanted.insert(account.clone(), Some(spec.clone()));
            }
        }
        if now < self.takeovers_from {
            return wanted;
        }
        for specs in self.catalogues.values() {
            for spec in specs {
                if self.home.contains(&spec.name) || !spec.failover.contains(&self.site) {
                    continue;
                }
                let before_us = std::iter::once(&spec.home)
                    .chain(spec.failover.iter().take_while(|site| **site != self.site));
                if before_us.clone().all(|site| !self.up(site)) {
                    wanted.insert(spec.name.clone(), Some(spec.clone()));
                }
            }
        }
        wanted
    }

    fn jitter(&mut self, bound_ms: u64) -> Duration {
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        Duration::from_millis(self.jitter % bound_ms.max(1))
    }

    /// One round: ownerships that ran out, hand-backs, and the claims due now (this site's
    /// own vote is counted at once; the peers' come back through [`Self::votes`]).
    pub fn tick(&mut self, now: Millis) -> Vec<Effect> {
        if self.solo {
            return Vec::new();
        }
        let mut effects = Vec::new();
        for (account, term) in self.claimant.expired(now) {
            self.adopted.remove(&account);
            self.handing_back.remove(&account);
            effects.push(audit(
                AuditKind::OwnershipLost,
                &account,
                None,
                term,
                format!("{} could not renew its ownership of {account} ({term}) from a majority of sites in time; it no longer serves it", self.site),
            ));
        }
        effects.extend(self.step_members(now));
        effects.extend(self.hand_back(now));
        let wanted = self.wanted(now);
        let mut claims: Vec<OwnershipClaim> = Vec::new();
        let renew_every = self.timing().renew_every;
        for (account, spec) in wanted {
            let owner = matches!(
                self.claimant.standing(&account, now),
                Standing::Owner { .. }
            );
            if !self.claimant.due(&account, now) {
                continue;
            }
            // A takeover this site's own acceptor would refuse, for the live grant it holds
            // for another site, is not claimed until that grant ends: the claim could take
            // only the grants of the other acceptors, and those the holder must have to
            // renew. A holder whose gateway was replaced before every acceptor had granted
            // it, and its failover site, would otherwise take each other's acceptors turn
            // by turn until the holder's own acceptor woke from its quiet start.
            if spec.is_some() && !owner && self.acceptor.held_against(&account, &self.site, now) {
                continue;
            }
            if !owner && self.next_claim.get(&account).is_some_and(|at| now < *at) {
                continue;
            }
            if !owner {
                let wait = renew_every + self.jitter(200);
                self.next_claim.insert(account.clone(), now + wait);
            }
            if let Some(spec) = spec {
                self.adopted.entry(account.clone()).or_insert(spec);
            }
            let (round, term) = self.claimant.start_round(&account, now);
            let vote = self.acceptor.ask(&account, &self.site.clone(), term, now);
            let site = self.site.clone();
            effects.extend(self.counted(&account, &site, round, &vote, now));
            claims.push(OwnershipClaim {
                account,
                term,
                round,
            });
        }
        // Our members go with every claim, and alone at least every renew interval.
        let report_due = self
            .reported_at
            .is_none_or(|at| now.since(at) >= renew_every);
        if !claims.is_empty() || report_due {
            self.reported_at = Some(now);
            let report = self.members.report();
            for peer in self.members.everyone() {
                if peer == self.site {
                    continue;
                }
                effects.push(Effect::ToPeer {
                    to: peer,
                    message: PeerMessage::ClaimOwnership(ClaimOwnership {
                        claims: claims.clone(),
                        members: Some(report.clone()),
                    }),
                });
            }
        }
        effects
    }

    /// Starts handing back every adopted account whose home site has been up for
    /// `failback_after` (unless its config pins it): drain-first, so this site keeps owning
    /// it while the site core borrows the home's servers for it and drains its own, and
    /// releases it in [`Self::hand_over`]. A hand-back whose home goes down again is called
    /// off; one that has not finished within [`HANDBACK_TIMEOUT`] falls back to
    /// stop-then-start.
    fn hand_back(&mut self, now: Millis) -> Vec<Effect> {
        let mut effects = Vec::new();
        let home_stable = |peers: &BTreeMap<SiteId, PeerState>, home: &SiteId| {
            peers
                .get(home)
                .is_some_and(|peer| peer.up && now.since(peer.since) >= self.failback_after)
        };
        let starting: Vec<(AccountId, SiteId)> = self
            .adopted
            .iter()
            .filter(|(account, spec)| {
                !spec.pinned
                    && !self.handing_back.contains_key(*account)
                    && home_stable(&self.peers, &spec.home)
            })
            .map(|(account, spec)| (account.clone(), spec.home.clone()))
            .collect();
        for (account, home) in starting {
            let Standing::Owner { term, .. } = self.claimant.standing(&account, now) else {
                continue;
            };
            self.handing_back.insert(
                account.clone(),
                HandingBack {
                    home: home.clone(),
                    since: now,
                },
            );
            effects.push(audit(
                AuditKind::HandbackStarted,
                &account,
                Some(&home),
                term,
                format!(
                    "{home}, {account}'s home, has been up for {} s: {} hands {account} ({term}) back drain-first: it borrows {home}'s servers for {account}, stops its own, then releases its ownership",
                    self.failback_after.as_secs(),
                    self.site
                ),
            ));
        }
        let called_off: Vec<AccountId> = self
            .handing_back
            .iter()
            .filter(|(account, handing)| {
                !self.up(&handing.home) || self.adopted.get(*account).is_none_or(|spec| spec.pinned)
            })
            .map(|(account, _)| account.clone())
            .collect();
        for account in called_off {
            self.handing_back.remove(&account);
        }
        let late: Vec<(AccountId, SiteId)> = self
            .handing_back
            .iter()
            .filter(|(_, handing)| now.since(handing.since) >= HANDBACK_TIMEOUT)
            .map(|(account, handing)| (account.clone(), handing.home.clone()))
            .collect();
        for (account, home) in late {
            self.handing_back.remove(&account);
            self.adopted.remove(&account);
            let Some(term) = self.claimant.give_up(&account) else {
                continue;
            };
            effects.push(audit(
                AuditKind::Handback,
                &account,
                Some(&home),
                term,
                format!(
                    "{home}'s servers did not take {account} over within {} s: {} gives {account} ({term}) back stop-then-start; it stops serving it, and {home} owns it once the grants run out",
                    HANDBACK_TIMEOUT.as_secs(),
                    self.site
                ),
            ));
        }
        effects
    }

    /// The site core is ready to let go of `account`: its home's servers serve it, and no
    /// server of ours (or lent by a third site) runs it any more. This site stops counting
    /// itself owner and releases its grants at once: nothing of ours can serve it now, so
    /// the home need not wait for the grants to run out.
    pub fn hand_over(&mut self, account: &AccountId, now: Millis) -> Vec<Effect> {
        let Some(handing) = self.handing_back.remove(account) else {
            return Vec::new();
        };
        self.adopted.remove(account);
        let Some(term) = self.claimant.give_up(account) else {
            return Vec::new();
        };
        let everyone = self.claimant.sites().to_vec();
        let home = handing.home;
        let mut effects = self.release(account, term, everyone, Some(&home));
        effects.push(audit(
            AuditKind::Handback,
            account,
            Some(&home),
            term,
            format!(
                "{} gave {account} ({term}) back to {home} drain-first after {} ms: {home}'s servers serve it and none of {}'s does; {} released its ownership, and {home} takes the servers it lent as its own",
                self.site,
                now.since(handing.since).as_millis(),
                self.site,
                self.site
            ),
        ));
        effects
    }

    /// Gives up our grants for `account` under `term` at `acceptors`: our own acceptor at
    /// once, each peer by a `ReleaseOwnership`; a hand-back names its `successor` (the
    /// account's home; see [`Acceptor::release`]).
    fn release(
        &mut self,
        account: &AccountId,
        term: Term,
        acceptors: impl IntoIterator<Item = SiteId>,
        successor: Option<&SiteId>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        for acceptor in acceptors {
            if acceptor == self.site {
                let site = self.site.clone();
                self.acceptor.release(account, &site, term, successor);
            } else {
                effects.push(Effect::ToPeer {
                    to: acceptor,
                    message: PeerMessage::ReleaseOwnership(ReleaseOwnership {
                        releases: vec![OwnershipRelease {
                            account: account.clone(),
                            term,
                            successor: successor.cloned(),
                        }],
                    }),
                });
            }
        }
        effects
    }

    /// A peer's votes on our claims.
    pub fn votes(&mut self, from: &SiteId, votes: &OwnershipVotes, now: Millis) -> Vec<Effect> {
        let mut effects = Vec::new();
        for vote in &votes.votes {
            effects.extend(self.counted(&vote.account, from, vote.round, &vote.vote, now));
        }
        effects
    }

    fn counted(
        &mut self,
        account: &AccountId,
        from: &SiteId,
        round: u64,
        vote: &Vote,
        now: Millis,
    ) -> Vec<Effect> {
        if let Vote::Held { holder, term, .. } = vote
            && *holder != self.site
        {
            self.holders
                .insert(account.clone(), (holder.clone(), *term));
        }
        let mut effects = Vec::new();
        match self.claimant.answered(account, from, round, vote, now) {
            Some(Change::Acquired { term, .. }) => {
                self.holders.remove(account);
                let (kind, reason) = match self.adopted.get(account) {
                    Some(spec) => (
                        AuditKind::Takeover,
                        format!(
                            "{} took {account} over ({term}): its home {} and the sites before {} in its failover list are down",
                            self.site, spec.home, self.site
                        ),
                    ),
                    None => (
                        AuditKind::OwnershipAcquired,
                        format!(
                            "{} owns {account} ({term}), granted by a majority of sites",
                            self.site
                        ),
                    ),
                };
                let home = self.adopted.get(account).map(|spec| spec.home.clone());
                // Journaled with the audit, before anything is done as its owner.
                effects.push(Effect::Journal(JournalOp::Owned {
                    account: account.clone(),
                    term,
                }));
                effects.push(audit(kind, account, home.as_ref(), term, reason));
            }
            Some(Change::Failed { term, release }) => {
                // Refused for a stale term only (say, after our own restart, when the
                // acceptors still hold our old grant): claim again at once, one term up,
                // rather than after the back-off.
                if self
                    .holders
                    .get(account)
                    .is_none_or(|(holder, _)| *holder == self.site)
                {
                    self.next_claim.remove(account);
                }
                effects.extend(self.release(account, term, release, None));
            }
            Some(Change::Renewed { .. }) | None => {}
        }
        effects
    }

    /// The terms this site owned accounts under, from its journal: each is claimed again
    /// under its term first (docs/ha.md, "The timing").
    pub fn resume_terms(&mut self, terms: &[(AccountId, Term)]) {
        for (account, term) in terms {
            self.claimant.resume(account, *term);
        }
    }

    /// A peer claims accounts: this site's acceptor votes on each.
    pub fn claims(
        &mut self,
        from: &SiteId,
        claims: &ClaimOwnership,
        now: Millis,
    ) -> OwnershipVotes {
        if let Some(report) = &claims.members {
            self.members.heard(from, report, now);
        }
        let claimed = claims
            .members
            .as_ref()
            .map(|report| report.running.as_slice());
        let member = self.members.grants(from, claimed);
        let ttl = self.timing().ttl.as_millis() as u64;
        OwnershipVotes {
            votes: claims
                .claims
                .iter()
                .map(|claim| OwnershipVote {
                    account: claim.account.clone(),
                    round: claim.round,
                    // Not a member here: granted nothing, as by an acceptor just started.
                    vote: if member {
                        self.acceptor.ask(&claim.account, from, claim.term, now)
                    } else {
                        Vote::Quiet { for_ms: ttl }
                    },
                })
                .collect(),
        }
    }

    /// A peer gives grants up. For an account homed here, our next claim goes out at the
    /// next round rather than after the back-off: a drain-first hand-back waits on it.
    pub fn released(&mut self, from: &SiteId, releases: &ReleaseOwnership) {
        for release in &releases.releases {
            self.acceptor.release(
                &release.account,
                from,
                release.term,
                release.successor.as_ref(),
            );
            if self.home.contains(&release.account) {
                self.next_claim.remove(&release.account);
            }
        }
    }
}

fn audit(
    kind: AuditKind,
    account: &AccountId,
    home: Option<&SiteId>,
    term: Term,
    reason: String,
) -> Effect {
    Effect::Audit(AuditEntry {
        kind,
        server: None,
        account: Some(account.clone()),
        from: None,
        epoch: None,
        peer: home.cloned(),
        term: Some(term),
        reason,
    })
}
