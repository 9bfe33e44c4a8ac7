//! The claimant: a site's side of owning accounts. It asks every site for a grant, counts
//! the answers of one round at a time, and owns an account from a majority of grants until
//! the round's send time plus [`super::Timing::held_for`].

use std::collections::BTreeSet;

// Account names, from our config and our peers' catalogues (sites we authenticated): looked
// up for every account in every round.
use rustc_hash::FxHashMap;

use leasehold_federation::ids::{AccountId, SiteId};

use super::{Term, Timing, Vote, majority};
use crate::model::Millis;

/// Where this site stands with an account at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    NotOwner,
    /// This site owns the account under `term` until `until` on its own clock.
    Owner {
        term: Term,
        until: Millis,
    },
}

/// What an answer changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A majority granted a round that was not a renewal: this site now owns the account.
    Acquired { term: Term, until: Millis },
    /// A majority granted a renewal: ownership extends to `until`.
    Renewed { term: Term, until: Millis },
    /// A claim (not a renewal) can no longer reach a majority. The sites in `release`
    /// granted it: releasing those grants lets another claimant win instead of every
    /// claimant holding a minority until the grants run out. Safe because the claimant never
    /// owned under this round, and ignores any later answer to it.
    Failed { term: Term, release: Vec<SiteId> },
}

#[derive(Debug, Clone)]
struct Round {
    id: u64,
    term: Term,
    sent_at: Millis,
    renewal: bool,
    /// The members the round was asked of: its majority is counted over them, also if
    /// the site's members change before the answers are in.
    sites: Vec<SiteId>,
    granted: BTreeSet<SiteId>,
    refused: BTreeSet<SiteId>,
}

#[derive(Debug, Clone, Default)]
struct Claim {
    owner: Option<(Term, Millis)>,
    /// The highest term seen for the account, in a grant or a refusal.
    highest: Term,
    round: Option<Round>,
    /// The term this site owned the account under before it started (from its journal):
    /// claims ask for it again, which acceptors still holding this site's grant take as a
    /// renewal, until a round under it is acquired or refused. A round no peer answered
    /// (a standby's first, sent before its peer links are up) asks for it once more, so
    /// that the site's peers see the same owner under the same term; used once, the next
    /// claim went one term up.
    resume: Option<Term>,
}

#[derive(Debug, Clone)]
pub struct Claimant {
    site: SiteId,
    /// Every site of the federation, this one included: the acceptors.
    sites: Vec<SiteId>,
    timing: Timing,
    claims: FxHashMap<AccountId, Claim>,
    next_round: u64,
    /// A planted bug, in debug builds only (the release build has no such field): a
    /// renewal counts as granted on this site's own grant, without a majority. The
    /// simulation and tests/failover.rs show the overlap checkers catch it.
    #[cfg(debug_assertions)]
    pub plant_renew_without_majority: bool,
}

impl Claimant {
    pub fn new(site: SiteId, sites: Vec<SiteId>, timing: Timing) -> Claimant {
        Claimant {
            site,
            sites,
            timing,
            claims: FxHashMap::default(),
            next_round: 1,
            #[cfg(debug_assertions)]
            plant_renew_without_majority: false,
        }
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// Where this site stands with `account` at `now`.
    pub fn standing(&self, account: &AccountId, now: Millis) -> Standing {
        match self.claims.get(account).and_then(|claim| claim.owner) {
            Some((term, until)) if now < until => Standing::Owner { term, until },
            _ => Standing::NotOwner,
        }
    }

    /// Whether this site counts itself owner of any account at `now`.
    pub fn owns_any(&self, now: Millis) -> bool {
        self.claims
            .values()
            .any(|claim| claim.owner.is_some_and(|(_, until)| now < until))
    }

    /// Whether a round for `account` is due: an owner renews every `renew_every`; a site
    /// that wants the account asks again every `renew_every` until it gets it.
    pub fn due(&self, account: &AccountId, now: Millis) -> bool {
        match self
            .claims
            .get(account)
            .and_then(|claim| claim.round.as_ref())
        {
            Some(round) => now.since(round.sent_at) >= self.timing.renew_every,
            None => true,
        }
    }

    /// Starts a round for `account` at `now`: a renewal under the current term if this site
    /// owns it, else a claim one above the highest term seen. Returns the round's id and
    /// term; the request goes to every site (this one included), and each answer comes
    /// back through [`Claimant::answered`].
    pub fn start_round(&mut self, account: &AccountId, now: Millis) -> (u64, Term) {
        let standing = self.standing(account, now);
        let claim = self.claims.entry(account.clone()).or_default();
        let (term, renewal) = match (standing, claim.resume) {
            (Standing::Owner { term, .. }, _) => (term, true),
            // Not a renewal as this site counts it: it owns once a majority grants.
            (Standing::NotOwner, Some(resumed)) if resumed >= claim.highest => (resumed, false),
            (Standing::NotOwner, _) => (claim.highest.next(), false),
        };
        claim.highest = claim.highest.max(term);
        let id = self.next_round;
        self.next_round += 1;
        claim.round = Some(Round {
            id,
            term,
            sent_at: now,
            renewal,
            sites: self.sites.clone(),
            granted: BTreeSet::new(),
            refused: BTreeSet::new(),
        });
        (id, term)
    }

    /// This site owned `account` under `term` before it started (its journal says so):
    /// its claims ask for that term again until one is acquired or refused (a standby
    /// taking over keeps the term its predecessor held, docs/ha.md).
    pub fn resume(&mut self, account: &AccountId, term: Term) {
        let claim = self.claims.entry(account.clone()).or_default();
        claim.highest = claim.highest.max(term);
        claim.resume = Some(term);
    }

    /// The acceptors to ask in a round.
    pub fn sites(&self) -> &[SiteId] {
        &self.sites
    }

    /// The members changed (docs/ownership.md, "Members"): rounds from now on need a
    /// majority of `sites` (sorted); rounds under way keep theirs. Ownerships already
    /// counted run on: the old and new sets are one site apart, so their majorities meet.
    pub fn set_sites(&mut self, sites: Vec<SiteId>) {
        self.sites = sites;
    }

    /// `from`'s answer to round `id` for `account`. An answer to an older round only teaches
    /// the highest term.
    pub fn answered(
        &mut self,
        account: &AccountId,
        from: &SiteId,
        id: u64,
        vote: &Vote,
        now: Millis,
    ) -> Option<Change> {
        let held_for = self.timing.held_for();
        #[cfg(debug_assertions)]
        let planted = self.plant_renew_without_majority && *from == self.site;
        #[cfg(not(debug_assertions))]
        let planted = false;
        let claim = self.claims.get_mut(account)?;
        match vote {
            Vote::Held { term, .. } => claim.highest = claim.highest.max(*term),
            Vote::Stale { promised } => claim.highest = claim.highest.max(*promised),
            Vote::Granted { .. } | Vote::Quiet { .. } => {}
        }
        let round = claim.round.as_mut().filter(|round| round.id == id)?;
        if !round.sites.contains(from) {
            return None;
        }
        let needed = majority(round.sites.len());
        let Vote::Granted { term } = vote else {
            round.refused.insert(from.clone());
            let hopeless = round.refused.len() > round.sites.len() - needed;
            if hopeless && !round.renewal {
                let (term, release) = (round.term, round.granted.iter().cloned().collect());
                claim.round = None;
                claim.resume = None;
                return Some(Change::Failed { term, release });
            }
            return None;
        };
        if *term != round.term {
            return None;
        }
        round.granted.insert(from.clone());
        let enough = round.granted.len() >= needed || (planted && round.renewal);
        if !enough {
            return None;
        }
        let (term, sent_at, renewal) = (round.term, round.sent_at, round.renewal);
        claim.round = None;
        let until = sent_at + held_for;
        // A majority for a round sent before the current ownership began, or one that
        // ends no later, changes nothing.
        let until = match claim.owner {
            Some((owned, current)) if owned == term => current.max(until),
            _ => until,
        };
        if until <= now {
            return None;
        }
        claim.resume = None;
        let was_owner =
            matches!(claim.owner, Some((owned, current)) if owned == term && current > now);
        claim.owner = Some((term, until));
        Some(if renewal && was_owner {
            Change::Renewed { term, until }
        } else {
            Change::Acquired { term, until }
        })
    }

    /// Ownerships that ran out by `now` (the site must have stopped serving them), each
    /// reported once.
    pub fn expired(&mut self, now: Millis) -> Vec<(AccountId, Term)> {
        let mut lost = Vec::new();
        for (account, claim) in &mut self.claims {
            if let Some((term, until)) = claim.owner
                && until <= now
            {
                claim.owner = None;
                lost.push((account.clone(), term));
            }
        }
        lost.sort();
        lost
    }

    /// Gives up `account` (a handover): the site stops counting itself owner at once.
    /// Returns the term to release at the acceptors.
    pub fn give_up(&mut self, account: &AccountId) -> Option<Term> {
        let claim = self.claims.get_mut(account)?;
        claim.round = None;
        claim.owner.take().map(|(term, _)| term)
    }

    /// This site's name.
    pub fn site(&self) -> &SiteId {
        &self.site
    }
}
