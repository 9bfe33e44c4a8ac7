//! The acceptor: every site grants ownership leases for every account, to at most one site
//! at a time per account.

use std::collections::HashMap;
use std::time::Duration;

use leasehold_federation::ids::{AccountId, SiteId};

use super::{Term, Vote};
use crate::model::Millis;

/// A grant this acceptor made: `holder` owns the account under `term` until `expires_at`
/// as far as this acceptor is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub holder: SiteId,
    pub term: Term,
    pub expires_at: Millis,
    /// Released by its holder in a drain-first hand-back to this site: it may be granted
    /// now; anyone else waits for `expires_at`, and the holder renews it no more.
    pub successor: Option<SiteId>,
}

#[derive(Debug, Clone)]
pub struct Acceptor {
    ttl: Duration,
    grants: HashMap<AccountId, Grant>,
    /// The highest term granted per account; a new holder needs a higher one.
    promised: HashMap<AccountId, Term>,
    quiet_until: Millis,
}

impl Acceptor {
    /// An acceptor that starts at `now`. It keeps no state on disk, so it grants nothing
    /// for one `ttl`: any grant it made before a restart has run out by then.
    pub fn new(ttl: Duration, now: Millis) -> Acceptor {
        Acceptor {
            ttl,
            grants: HashMap::new(),
            promised: HashMap::new(),
            quiet_until: now + ttl,
        }
    }

    /// Whether a claim of `account` by `candidate` would be refused here for a live grant
    /// another site holds (one not handed to `candidate`).
    pub fn held_against(&self, account: &AccountId, candidate: &SiteId, now: Millis) -> bool {
        self.grants.get(account).is_some_and(|grant| {
            grant.expires_at > now
                && grant.holder != *candidate
                && grant.successor.as_ref() != Some(candidate)
        })
    }

    /// `candidate` asks to own `account` under `term`. Granted if no other site holds an
    /// unexpired grant here, and `term` is the current holder's (a renewal) or above any
    /// term this acceptor granted for the account (a takeover).
    pub fn ask(
        &mut self,
        account: &AccountId,
        candidate: &SiteId,
        term: Term,
        now: Millis,
    ) -> Vote {
        if now < self.quiet_until {
            return Vote::Quiet {
                for_ms: self.quiet_until.0 - now.0,
            };
        }
        let promised = self.promised.get(account).copied().unwrap_or_default();
        if let Some(grant) = self.grants.get(account)
            && grant.expires_at > now
        {
            let handed_to_candidate = grant.successor.as_ref() == Some(candidate);
            let holder_renews = grant.holder == *candidate && grant.successor.is_none();
            if !handed_to_candidate && !holder_renews {
                return Vote::Held {
                    holder: grant.holder.clone(),
                    term: grant.term,
                    for_ms: grant.expires_at.0 - now.0,
                };
            }
        }
        let renewal = self.grants.get(account).is_some_and(|grant| {
            grant.holder == *candidate && grant.term == term && grant.successor.is_none()
        });
        if !renewal && term <= promised {
            return Vote::Stale { promised };
        }
        self.promised.insert(account.clone(), promised.max(term));
        self.grants.insert(
            account.clone(),
            Grant {
                holder: candidate.clone(),
                term,
                expires_at: now + self.ttl,
                successor: None,
            },
        );
        Vote::Granted { term }
    }

    /// The holder gives its grant up. With no `successor` (a claim that failed: nothing
    /// ran under it) another site may be granted at once. With one (a drain-first
    /// hand-back to the account's home) only the successor may be granted at once:
    /// servers lent for the hand-back may serve the account until the grant would have
    /// run out, so anyone else waits for that, as if the holder had stopped renewing.
    pub fn release(
        &mut self,
        account: &AccountId,
        holder: &SiteId,
        term: Term,
        successor: Option<&SiteId>,
    ) {
        let Some(grant) = self.grants.get_mut(account) else {
            return;
        };
        if grant.holder != *holder || grant.term != term {
            return;
        }
        match successor {
            Some(successor) => grant.successor = Some(successor.clone()),
            None => {
                self.grants.remove(account);
            }
        }
    }

    /// The grant in force for `account` at `now`, if any.
    pub fn grant(&self, account: &AccountId, now: Millis) -> Option<&Grant> {
        self.grants
            .get(account)
            .filter(|grant| grant.expires_at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(n: u64) -> Term {
        (0..n).fold(Term::NONE, |term, _| term.next())
    }

    fn site(name: &str) -> SiteId {
        SiteId::parse(name).unwrap()
    }

    #[test]
    fn one_holder_at_a_time_renewals_by_it_and_takeover_only_above_its_term() {
        let shop = AccountId::parse("shop").unwrap();
        let ttl = Duration::from_secs(2);
        let mut acceptor = Acceptor::new(ttl, Millis(0));
        assert!(matches!(
            acceptor.ask(&shop, &site("site-a"), term(1), Millis(100)),
            Vote::Quiet { .. }
        ));
        let start = Millis(2000);
        assert_eq!(
            acceptor.ask(&shop, &site("site-a"), term(1), start),
            Vote::Granted { term: term(1) }
        );
        assert!(matches!(
            acceptor.ask(
                &shop,
                &site("site-b"),
                term(2),
                start + Duration::from_millis(1999)
            ),
            Vote::Held { .. }
        ));
        // The holder renews under its term.
        assert_eq!(
            acceptor.ask(
                &shop,
                &site("site-a"),
                term(1),
                start + Duration::from_millis(1500)
            ),
            Vote::Granted { term: term(1) }
        );
        let later = start + Duration::from_millis(3600);
        // Expired: a takeover needs a higher term.
        assert_eq!(
            acceptor.ask(&shop, &site("site-b"), term(1), later),
            Vote::Stale { promised: term(1) }
        );
        assert_eq!(
            acceptor.ask(&shop, &site("site-b"), term(2), later),
            Vote::Granted { term: term(2) }
        );
        // The old holder cannot come back under its old term.
        let much_later = later + Duration::from_secs(3);
        assert_eq!(
            acceptor.ask(&shop, &site("site-a"), term(1), much_later),
            Vote::Stale { promised: term(2) }
        );
        // A release frees the account at once.
        acceptor.release(&shop, &site("site-b"), term(2), None);
        assert_eq!(
            acceptor.ask(
                &shop,
                &site("site-a"),
                term(3),
                later + Duration::from_millis(10)
            ),
            Vote::Granted { term: term(3) }
        );
    }

    /// The simulation's seed 96: site-c handed shop back to its home site-a drain-first,
    /// released its grants, and site-b (cut off from site-a) was granted shop 47 ms later
    /// while site-a's servers lent for the hand-back still ran it for site-c. A hand-back's
    /// release now lets only the home in at once; anyone else waits out the grant.
    #[test]
    fn a_hand_back_release_lets_the_home_in_at_once_and_anyone_else_only_after_the_grant() {
        let shop = AccountId::parse("shop").unwrap();
        let ttl = Duration::from_millis(1500);
        let mut acceptor = Acceptor::new(ttl, Millis(0));
        let start = Millis(1500);
        assert_eq!(
            acceptor.ask(&shop, &site("site-c"), term(4), start),
            Vote::Granted { term: term(4) }
        );
        let release = start + Duration::from_millis(200);
        acceptor.release(&shop, &site("site-c"), term(4), Some(&site("site-a")));
        // The old holder renews no more; a third site is held off until the grant ends.
        assert!(matches!(
            acceptor.ask(&shop, &site("site-c"), term(4), release),
            Vote::Held { .. }
        ));
        assert_eq!(
            acceptor.ask(&shop, &site("site-b"), term(5), release),
            Vote::Held {
                holder: site("site-c"),
                term: term(4),
                for_ms: 1300
            }
        );
        // The home is granted at once, above the released term.
        assert_eq!(
            acceptor.ask(&shop, &site("site-a"), term(5), release),
            Vote::Granted { term: term(5) }
        );
        // Had the home not come, the third site gets it once the grant ran out.
        let mut lone = Acceptor::new(ttl, Millis(0));
        lone.ask(&shop, &site("site-c"), term(4), start);
        lone.release(&shop, &site("site-c"), term(4), Some(&site("site-a")));
        assert_eq!(
            lone.ask(&shop, &site("site-b"), term(5), start + ttl),
            Vote::Granted { term: term(5) }
        );
    }
}
