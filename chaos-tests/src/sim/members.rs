//! The operator who changes a simulated federation's members while faults go on (issue
//! #19; docs/ownership.md, "Members"): spare sites after the founders are added and
//! removed, their own config written and their gateway started when added, every config
//! of the new set edited within two seconds of each other, a removed site left running on
//! its old config or stopped, or stopped for good before it is removed (the configs then
//! name it `departed`). Every choice is drawn from the simulation's generator.

use crate::campaign::prng::SplitMix64;

/// How an operator changes the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembersOperator {
    /// One site per change, the next change once every site of the last one runs it:
    /// docs/ownership.md's procedure.
    OneAtATime,
    /// Two sites per change, the next one 8 to 14 s later whatever happened: a change
    /// the members' rules refuse (a planted bug lets it through).
    TwoAtOnce,
}

impl MembersOperator {
    pub fn parse(text: &str) -> Result<MembersOperator, String> {
        match text {
            "one-at-a-time" => Ok(MembersOperator::OneAtATime),
            "two-at-once" => Ok(MembersOperator::TwoAtOnce),
            other => Err(format!(
                "unknown members operator `{other}` (one-at-a-time, two-at-once)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MembersOperator::OneAtATime => "one-at-a-time",
            MembersOperator::TwoAtOnce => "two-at-once",
        }
    }
}

/// The spare sites a federation whose members change has after its founders.
pub const SPARES: usize = 2;

/// What the operator does at a moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Look whether the last change is done, and start the next.
    Change,
    /// The site's config now names these members.
    Edit { site: usize, members: Vec<usize> },
    /// A site added: its config is written naming these members, its gateway started.
    Start { site: usize, members: Vec<usize> },
    /// A site removed earlier is shut down for good.
    Stop(usize),
    /// A site is lost for good before its removal: its gateway stops, never to start
    /// again, and the configs of the change name it `departed`.
    Lose(usize),
}

/// Microseconds between the operator's looks while a change is under way.
const LOOK_AGAIN_US: u64 = 1_000_000;
/// The configs of a change are edited within this long of each other.
const EDITS_WITHIN_US: u64 = 2_000_000;
/// A pause between a change done and the next one.
const BETWEEN_US: (u64, u64) = (1_000_000, 6_000_000);
/// A hasty operator's next change, whatever happened.
const HASTY_US: (u64, u64) = (8_000_000, 14_000_000);

pub struct Operator {
    pub kind: MembersOperator,
    founders: usize,
    sites: usize,
    /// The members the configs were last edited to.
    pub target: Vec<usize>,
    /// Removed sites to shut down once their removal is done.
    to_stop: Vec<usize>,
    /// Sites added and removed, by the changes started.
    pub added: u64,
    pub removed: u64,
    /// The sites lost for good and removed while down, named `departed` in the configs.
    pub departed: Vec<usize>,
    /// No change starts any more (the calm before the liveness check).
    pub resting: bool,
}

impl Operator {
    pub fn new(kind: MembersOperator, founders: usize) -> Operator {
        Operator {
            kind,
            founders,
            sites: founders + SPARES,
            target: (0..founders).collect(),
            to_stop: Vec::new(),
            added: 0,
            removed: 0,
            departed: Vec::new(),
            resting: false,
        }
    }

    /// At an [`Act::Change`]: what to do now and later, as (after µs, act); always
    /// another `Change` unless resting. `runs(site)` is the set a site's gateway runs
    /// now, if it is up.
    pub fn look(
        &mut self,
        runs: impl Fn(usize) -> Option<Vec<usize>>,
        rng: &mut SplitMix64,
    ) -> Vec<(u64, Act)> {
        if self.resting {
            return Vec::new();
        }
        let done = self
            .target
            .iter()
            .all(|site| runs(*site).as_ref() == Some(&self.target));
        if self.kind == MembersOperator::OneAtATime && !done {
            return vec![(LOOK_AGAIN_US, Act::Change)];
        }
        let mut acts: Vec<(u64, Act)> = self.to_stop.drain(..).map(|s| (0, Act::Stop(s))).collect();
        let (added, removed) = self.draw(rng);
        // Now and then a site to remove is lost first: down for good, removed without its
        // answer. One spare at most, so that one is left to add and remove.
        if self.kind == MembersOperator::OneAtATime
            && self.departed.is_empty()
            && let [site] = removed.as_slice()
            && rng.below(8) == 0
        {
            self.departed.push(*site);
            acts.push((0, Act::Lose(*site)));
        }
        let mut next: Vec<usize> = self
            .target
            .iter()
            .copied()
            .filter(|s| !removed.contains(s))
            .chain(added.iter().copied())
            .collect();
        next.sort_unstable();
        for site in &next {
            let after = rng.below(EDITS_WITHIN_US);
            let members = next.clone();
            let act = if added.contains(site) {
                Act::Start {
                    site: *site,
                    members,
                }
            } else {
                Act::Edit {
                    site: *site,
                    members,
                }
            };
            acts.push((after, act));
        }
        self.added += added.len() as u64;
        self.removed += removed.len() as u64;
        // A removed site is shut down, or left running on its old config (harmless: it
        // claims nothing the others grant).
        for site in removed {
            if !self.departed.contains(&site) && rng.below(2) == 0 {
                self.to_stop.push(site);
            }
        }
        self.target = next;
        let pause = match self.kind {
            MembersOperator::OneAtATime => {
                EDITS_WITHIN_US + rng.between(BETWEEN_US.0, BETWEEN_US.1)
            }
            MembersOperator::TwoAtOnce => rng.between(HASTY_US.0, HASTY_US.1),
        };
        acts.push((pause, Act::Change));
        acts
    }

    /// The sites the next change adds and removes: one spare in or out, or two.
    fn draw(&self, rng: &mut SplitMix64) -> (Vec<usize>, Vec<usize>) {
        let outside: Vec<usize> = (self.founders..self.sites)
            .filter(|s| !self.target.contains(s) && !self.departed.contains(s))
            .collect();
        let inside: Vec<usize> = (self.founders..self.sites)
            .filter(|s| self.target.contains(s))
            .collect();
        match self.kind {
            MembersOperator::OneAtATime => {
                let add = inside.is_empty() || (!outside.is_empty() && rng.below(2) == 0);
                if add {
                    (vec![*rng.pick(&outside)], Vec::new())
                } else {
                    (Vec::new(), vec![*rng.pick(&inside)])
                }
            }
            MembersOperator::TwoAtOnce if outside.len() >= 2 => (outside, Vec::new()),
            MembersOperator::TwoAtOnce => (Vec::new(), inside),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_site_per_change_and_only_once_the_last_is_run_by_every_site() {
        let mut rng = SplitMix64::new(3);
        let mut operator = Operator::new(MembersOperator::OneAtATime, 3);
        let mut running: Vec<Vec<usize>> = vec![vec![0, 1, 2]; 5];
        for _ in 0..50 {
            let before = operator.target.clone();
            let acts = operator.look(|s| Some(running[s].clone()), &mut rng);
            let after = operator.target.clone();
            let apart = before
                .iter()
                .filter(|s| !after.contains(s))
                .chain(after.iter().filter(|s| !before.contains(s)))
                .count();
            assert_eq!(apart, 1, "{before:?} -> {after:?}");
            assert!(after.iter().all(|s| *s < 5) && (0..3).all(|f| after.contains(&f)));
            assert!(acts.iter().any(|(_, act)| *act == Act::Change));
            // Not done: the operator only looks again.
            let waiting = operator.look(|_| None, &mut rng);
            assert_eq!(waiting, vec![(LOOK_AGAIN_US, Act::Change)]);
            assert_eq!(operator.target, after);
            for site in &after {
                running[*site] = after.clone();
            }
        }
        operator.resting = true;
        assert!(
            operator
                .look(|s| Some(running[s].clone()), &mut rng)
                .is_empty()
        );
    }

    #[test]
    fn a_hasty_operator_adds_and_removes_both_spares_at_once() {
        let mut rng = SplitMix64::new(4);
        let mut operator = Operator::new(MembersOperator::TwoAtOnce, 3);
        operator.look(|_| None, &mut rng);
        assert_eq!(operator.target, vec![0, 1, 2, 3, 4]);
        operator.look(|_| None, &mut rng);
        assert_eq!(operator.target, vec![0, 1, 2]);
    }
}
