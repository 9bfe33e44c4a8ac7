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
            && grant.holder != *candidate
        {
            return Vote::Held {
                holder: grant.holder.clone(),
                term: grant.term,
                for_ms: grant.expires_at.0 - now.0,
            };
        }
        let renewal = self
            .grants
            .get(account)
            .is_some_and(|grant| grant.holder == *candidate && grant.term == term);
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
            },
        );
        Vote::Granted { term }
    }

    /// The holder gives its grant up (a handover): another site may be granted at once.
    pub fn release(&mut self, account: &AccountId, holder: &SiteId, term: Term) {
        if self
            .grants
            .get(account)
            .is_some_and(|grant| grant.holder == *holder && grant.term == term)
        {
            self.grants.remove(account);
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
        acceptor.release(&shop, &site("site-b"), term(2));
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
}
