//! The SiteMaster's messages about ownership (docs/ownership.md), each handed to the
//! site core: a peer's claims (voted on at once), its releases and its votes on ours, and
//! the catalogues the Peer actors learn (the accounts this site may have to take over).

use actix::prelude::*;
use leasehold_federation::ids::SiteId;
use leasehold_federation::wire::site::{
    AccountSpec, ClaimOwnership, OwnershipVotes, ReleaseOwnership,
};

use super::master::SiteMaster;

/// A peer claims accounts; the answer is this site's votes.
#[derive(Message)]
#[rtype(result = "OwnershipVotes")]
pub struct ClaimsFrom {
    pub from: SiteId,
    pub claims: ClaimOwnership,
}

impl Handler<ClaimsFrom> for SiteMaster {
    type Result = MessageResult<ClaimsFrom>;

    fn handle(&mut self, message: ClaimsFrom, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        MessageResult(self.core.claims_from(&message.from, &message.claims, now))
    }
}

/// A peer gives ownership grants up.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleasedBy {
    pub from: SiteId,
    pub releases: ReleaseOwnership,
}

impl Handler<ReleasedBy> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: ReleasedBy, _: &mut Context<Self>) {
        self.core.released_by(&message.from, &message.releases);
    }
}

/// A peer's votes on our claims.
#[derive(Message)]
#[rtype(result = "()")]
pub struct OwnershipAnswered {
    pub from: SiteId,
    pub votes: OwnershipVotes,
}

impl Handler<OwnershipAnswered> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: OwnershipAnswered, ctx: &mut Context<Self>) {
        let now = self.now();
        let (effects, groups) = self
            .core
            .ownership_answered(&message.from, &message.votes, now);
        self.apply_groups(groups);
        self.perform(effects, ctx);
    }
}

/// A peer announced the accounts it homes: the ones this site may have to take over.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CatalogueSeen {
    pub site: SiteId,
    pub accounts: Vec<AccountSpec>,
}

impl Handler<CatalogueSeen> for SiteMaster {
    type Result = ();

    fn handle(&mut self, message: CatalogueSeen, _: &mut Context<Self>) {
        self.core.catalogue_seen(&message.site, message.accounts);
    }
}
