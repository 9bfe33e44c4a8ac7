//! The SiteMaster's side of ownership (docs/ownership.md): a peer's claims are voted on by
//! this site's acceptor at once (it keeps nothing on disk, so there is nothing to journal
//! first), a peer's releases and votes go to the ownership core, and what the Peer actors
//! learn (liveness, catalogues) feeds the choice of accounts to claim.

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
        let votes = match &mut self.ownership {
            Some(ownership) => ownership.claims(&message.from, &message.claims, now),
            None => OwnershipVotes { votes: Vec::new() },
        };
        MessageResult(votes)
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
        if let Some(ownership) = &mut self.ownership {
            ownership.released(&message.from, &message.releases);
        }
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
        let effects = match &mut self.ownership {
            Some(ownership) => ownership.votes(&message.from, &message.votes, now),
            None => return,
        };
        self.sync_ownership(ctx);
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
        if let Some(ownership) = &mut self.ownership {
            ownership.catalogue(&message.site, message.accounts);
        }
    }
}
