//! Three sites' ownership policies on one clock, messages carried by hand: each owns its own
//! accounts; when site-a dies, site-b (first in shop's failover list) takes shop over and
//! site-c does not; when site-a is back for `failback_after`, site-b gives shop back.

use std::time::Duration;

use leasehold_federation::ids::{AccountId, SiteId};

use super::{Owner, SiteOwnership, Term, Timing};
use crate::model::Millis;
use crate::model::effects::{AuditKind, Effect, JournalOp, PeerMessage};
use crate::model::fixtures::spec;

const STEP: Duration = Duration::from_millis(50);

fn site(name: &str) -> SiteId {
    SiteId::parse(name).unwrap()
}

fn account(name: &str) -> AccountId {
    AccountId::parse(name).unwrap()
}

fn timing() -> Timing {
    super::test_support::timing(1500, 250)
}

struct World {
    sites: Vec<SiteOwnership>,
    names: Vec<SiteId>,
    down: Vec<bool>,
    /// Sites whose messages to their peers are lost, while the peers see them up (a
    /// gateway whose peer links are not up yet).
    mute: Vec<bool>,
    now: Millis,
    audits: Vec<(usize, AuditKind, AccountId)>,
    /// The terms each site journaled, as (site, account, term).
    journaled: Vec<(usize, AccountId, Term)>,
}

impl World {
    fn new() -> World {
        let names = vec![site("site-a"), site("site-b"), site("site-c")];
        let homes = [("site-a", "shop"), ("site-b", "wiki"), ("site-c", "mail")];
        let sites = names
            .iter()
            .zip(homes)
            .map(|(name, (_, home))| {
                let peers = names.iter().filter(|p| *p != name).cloned().collect();
                SiteOwnership::new(
                    name.clone(),
                    peers,
                    vec![account(home)],
                    timing(),
                    Duration::from_secs(3),
                    Millis(0),
                )
            })
            .collect();
        let mut world = World {
            sites,
            names,
            down: vec![false; 3],
            mute: vec![false; 3],
            now: Millis(0),
            audits: Vec::new(),
            journaled: Vec::new(),
        };
        world.share_catalogues();
        world.see_peers();
        world
    }

    fn share_catalogues(&mut self) {
        let specs = [
            ("site-a", spec("shop", "site-a", &["site-b", "site-c"])),
            ("site-b", spec("wiki", "site-b", &["site-c", "site-a"])),
            ("site-c", spec("mail", "site-c", &["site-a", "site-b"])),
        ];
        for (i, me) in self.sites.iter_mut().enumerate() {
            for (home, spec) in &specs {
                if *home != self.names[i].as_str() {
                    me.catalogue(&site(home), vec![spec.clone()]);
                }
            }
        }
    }

    /// Each running site sees the others as up or down as they are.
    fn see_peers(&mut self) {
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    let up = !self.down[j];
                    let name = self.names[j].clone();
                    self.sites[i].peer_seen(&name, up, self.now);
                }
            }
        }
    }

    fn deliver(&mut self, from: usize, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::ToPeer { to, message } => {
                    let j = self.names.iter().position(|n| *n == to).unwrap();
                    if self.down[j] || self.down[from] || (self.mute[from] && j != from) {
                        continue;
                    }
                    let sender = self.names[from].clone();
                    match message {
                        PeerMessage::ClaimOwnership(claims) => {
                            let votes = self.sites[j].claims(&sender, &claims, self.now);
                            let answer = self.names[j].clone();
                            let back = self.sites[from].votes(&answer, &votes, self.now);
                            self.deliver(from, back);
                        }
                        PeerMessage::ReleaseOwnership(releases) => {
                            self.sites[j].released(&sender, &releases);
                        }
                        other => panic!("not an ownership message: {other:?}"),
                    }
                }
                Effect::Audit(entry) => {
                    if let Some(account) = entry.account {
                        self.audits.push((from, entry.kind, account));
                    }
                }
                Effect::Journal(JournalOp::Owned { account, term }) => {
                    self.journaled.push((from, account, term));
                }
                _ => {}
            }
        }
    }

    /// Site `i` started afresh now (a restarted or replaced gateway): its acceptor quiet,
    /// its claims resuming `terms`.
    fn restart(&mut self, i: usize, terms: &[(AccountId, Term)]) {
        let homes = ["shop", "wiki", "mail"];
        let peers = self
            .names
            .iter()
            .filter(|p| **p != self.names[i])
            .cloned()
            .collect();
        let mut fresh = SiteOwnership::new(
            self.names[i].clone(),
            peers,
            vec![account(homes[i])],
            timing(),
            Duration::from_secs(3),
            self.now,
        );
        fresh.resume_terms(terms);
        self.sites[i] = fresh;
        self.down[i] = false;
        self.share_catalogues();
        self.see_peers();
    }

    /// The term site `i` owns account `name` under now; the test cannot go on otherwise.
    fn owned_term(&self, i: usize, name: &str) -> Term {
        match self.sites[i].owner(&account(name), self.now) {
            Owner::Here { term, .. } => term,
            other => panic!("{} does not own {name}: {other:?}", self.names[i]),
        }
    }

    fn owners(&self, name: &str) -> Vec<usize> {
        (0..3)
            .filter(|i| !self.down[*i])
            .filter(|i| {
                matches!(
                    self.sites[*i].owner(&account(name), self.now),
                    Owner::Here { .. }
                )
            })
            .collect()
    }

    /// Runs for `total`; at every step at most one site owns each account.
    fn run(&mut self, total: Duration) {
        let steps = total.as_millis() / STEP.as_millis();
        for _ in 0..steps {
            self.now = self.now + STEP;
            self.see_peers();
            for i in 0..3 {
                if self.down[i] {
                    continue;
                }
                let effects = self.sites[i].tick(self.now);
                self.deliver(i, effects);
            }
            for name in ["shop", "wiki", "mail"] {
                assert!(
                    self.owners(name).len() <= 1,
                    "{name} owned by {:?} at {:?}",
                    self.owners(name),
                    self.now
                );
            }
        }
    }
}

#[test]
fn each_site_owns_its_own_accounts_once_the_acceptors_are_past_their_quiet_start() {
    let mut world = World::new();
    world.run(Duration::from_millis(1000));
    assert!(
        world.owners("shop").is_empty(),
        "no grant during the quiet start"
    );
    world.run(Duration::from_millis(1500));
    assert_eq!(world.owners("shop"), vec![0]);
    assert_eq!(world.owners("wiki"), vec![1]);
    assert_eq!(world.owners("mail"), vec![2]);
    // The others know who holds shop.
    assert!(matches!(
        world.sites[1].owner(&account("shop"), world.now),
        Owner::There { .. } | Owner::Unknown
    ));
}

/// site-a goes down, site-b takes shop over, then site-a comes back with no memory.
fn taken_over_then_home_back() -> World {
    let mut world = World::new();
    world.run(Duration::from_millis(3000));
    assert_eq!(world.owners("shop"), vec![0]);
    world.down[0] = true;
    world.run(Duration::from_millis(4000));
    assert_eq!(
        world.owners("shop"),
        vec![1],
        "site-b is first in shop's failover list"
    );
    assert!(
        world
            .audits
            .iter()
            .any(|(i, kind, a)| *i == 1 && *kind == AuditKind::Takeover && a.as_str() == "shop")
    );
    assert!(!world.sites[2].adopted().contains_key(&account("shop")));
    world.down[0] = false;
    world.sites[0] = SiteOwnership::new(
        site("site-a"),
        vec![site("site-b"), site("site-c")],
        vec![account("shop")],
        timing(),
        Duration::from_secs(3),
        world.now,
    );
    world
}

fn audited(world: &World, at: usize, kind: AuditKind) -> bool {
    world
        .audits
        .iter()
        .any(|(i, k, a)| *i == at && *k == kind && a.as_str() == "shop")
}

#[test]
fn the_first_live_failover_site_takes_over_and_hands_back_drain_first_once_the_home_is_up() {
    let mut world = taken_over_then_home_back();
    world.share_catalogues();
    world.run(Duration::from_millis(2500));
    assert_eq!(world.owners("shop"), vec![1], "not before failback_after");
    assert!(world.sites[1].handing_back(&account("shop")).is_none());
    world.run(Duration::from_millis(1000));
    // failback_after (3 s) has passed: site-b starts handing back, and keeps owning shop
    // until its site core says the home's servers carry it.
    assert_eq!(
        world.sites[1].handing_back(&account("shop")),
        Some(&site("site-a"))
    );
    assert!(audited(&world, 1, AuditKind::HandbackStarted));
    world.run(Duration::from_millis(5000));
    assert_eq!(world.owners("shop"), vec![1], "owned until handed over");
    // The site core is ready: site-b releases shop, and site-a owns it within a few
    // rounds, not after the grants would have run out (ttl 1 s).
    let now = world.now;
    let effects = world.sites[1].hand_over(&account("shop"), now);
    world.deliver(1, effects);
    assert!(audited(&world, 1, AuditKind::Handback));
    assert!(world.owners("shop").is_empty());
    world.run(Duration::from_millis(400));
    assert_eq!(world.owners("shop"), vec![0], "back home");
    assert!(world.sites[1].adopted().is_empty());
}

#[test]
fn a_hand_back_that_does_not_finish_falls_back_to_stop_then_start() {
    let mut world = taken_over_then_home_back();
    world.share_catalogues();
    world.run(Duration::from_millis(3500));
    assert!(world.sites[1].handing_back(&account("shop")).is_some());
    // The site core never reports ready (say site-a lends nothing).
    world.run(super::site::HANDBACK_TIMEOUT);
    assert!(world.sites[1].handing_back(&account("shop")).is_none());
    assert!(audited(&world, 1, AuditKind::Handback));
    world.run(Duration::from_millis(2000));
    assert_eq!(
        world.owners("shop"),
        vec![0],
        "back home once the grants ran out"
    );
}

#[test]
fn a_pinned_account_stays_with_the_site_that_took_it_over() {
    let mut world = taken_over_then_home_back();
    let mut pinned = spec("shop", "site-a", &["site-b", "site-c"]);
    pinned.pinned = true;
    for i in [1, 2] {
        world.sites[i].catalogue(&site("site-a"), vec![pinned.clone()]);
    }
    world.run(Duration::from_millis(8000));
    assert_eq!(world.owners("shop"), vec![1]);
    assert!(world.sites[1].handing_back(&account("shop")).is_none());
    assert!(!audited(&world, 1, AuditKind::HandbackStarted));
}

#[test]
fn a_lender_finds_a_taken_over_accounts_spec_in_its_homes_catalogue() {
    let world = World::new();
    // site-c lends to site-b for shop after site-b took shop over: only site-a's catalogue
    // describes shop.
    let spec = world.sites[2].spec_of(&account("shop")).unwrap();
    assert_eq!(spec.home, site("site-a"));
    assert!(world.sites[2].spec_of(&account("nope")).is_none());
}

/// site-a's gateway is replaced within the grants' TTL, as a standby takes over (docs/ha.md):
/// started on its journal, the new one claims shop under the journaled term, which its
/// peers grant as a renewal of site-a's own grants: the same term, no other owner meanwhile.
/// Started without it, it would have had to go one term up.
#[test]
fn a_site_started_on_its_journal_owns_its_account_again_under_the_journaled_term() {
    let mut world = World::new();
    world.run(Duration::from_millis(2500));
    let term = world.owned_term(0, "shop");
    assert!(
        world.journaled.contains(&(0, account("shop"), term)),
        "the term is journaled as site-a comes to own shop: {:?}",
        world.journaled
    );
    let restart = |world: &mut World, terms: &[(AccountId, Term)], muted: Duration| {
        world.restart(0, terms);
        // Its claims lost for a while, as a standby's first ones before its peer links
        // are up.
        world.mute[0] = true;
        world.run(muted);
        world.mute[0] = false;
        // Less than the grants' TTL in all: the peers still hold site-a's grants.
        world.run(Duration::from_millis(600));
        world.owned_term(0, "shop")
    };
    assert_eq!(
        restart(&mut world, &[(account("shop"), term)], Duration::ZERO),
        term
    );
    assert_eq!(world.owners("shop"), vec![0]);
    // Rounds that no peer answered ask for the journaled term again.
    let muted = Duration::from_millis(600);
    assert_eq!(restart(&mut world, &[(account("shop"), term)], muted), term);
    assert_eq!(world.owners("shop"), vec![0]);
    // Without the journaled term, the first claim is refused as stale and the next goes up.
    assert_eq!(restart(&mut world, &[], Duration::ZERO), term.next());
    assert!(
        !world
            .audits
            .iter()
            .any(|(at, kind, _)| *at != 0 && *kind == AuditKind::Takeover),
        "{:?}",
        world.audits
    );
}

/// site-c restarts, and site-a's gateway is replaced before site-c's acceptor has woken to
/// grant it shop: only site-b holds site-a's grant. site-b, next in shop's failover list,
/// does not claim shop while its own acceptor holds that grant, so site-c stays free, and
/// the replaced site-a owns shop again under its journaled term (site-b's grant, site-c's
/// fresh one) long before its own acceptor wakes. Had site-b claimed, site-c would have
/// granted it, and site-a could not have owned shop until its own acceptor woke.
#[test]
fn a_failover_site_does_not_claim_an_account_its_own_acceptor_holds_for_another() {
    let mut world = World::new();
    world.run(Duration::from_millis(3500));
    let term = world.owned_term(0, "shop");
    world.restart(2, &[]);
    // site-a dies before site-c's acceptor wakes (the TTL, 1,500 ms, after its start).
    world.run(Duration::from_millis(1400));
    world.down[0] = true;
    world.run(Duration::from_millis(700));
    world.restart(0, &[(account("shop"), term)]);
    // Well within site-a's own acceptor's quiet start.
    world.run(Duration::from_millis(600));
    assert_eq!(world.owned_term(0, "shop"), term);
    assert_eq!(world.owners("shop"), vec![0]);
}
