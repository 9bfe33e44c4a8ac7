//! The relay's fault model: what may happen to a datagram on each direction of the link
//! ([`Faults`], [`LinkFaults`]), how settings are checked ([`FaultsError`]), and the seeded
//! decision for one datagram ([`LinkDice`], [`decide`]), which is plain code with no I/O so
//! that it can be tested on its own.

use std::time::Duration;

use rand_pcg::Pcg64;
use rand_pcg::rand_core::{Rng, SeedableRng};

/// The longest `delay + jitter` a link may have. A relay holds delayed datagrams in memory,
/// and a fault test has no use for minutes of delay; the bound also keeps `Instant + delay`
/// far from overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// A direction of the relayed link, named from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Datagrams from a client toward the target (site A → site B when A's peer address
    /// is the relay).
    ToTarget,
    /// The target's answers back toward the client.
    FromTarget,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::ToTarget, Direction::FromTarget];

    pub(crate) fn index(self) -> usize {
        match self {
            Direction::ToTarget => 0,
            Direction::FromTarget => 1,
        }
    }

    fn field_prefix(self) -> &'static str {
        match self {
            Direction::ToTarget => "to_target",
            Direction::FromTarget => "from_target",
        }
    }
}

/// What happens to datagrams going one way. `LinkFaults::default()` is a clean link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkFaults {
    /// Every datagram waits at least this long.
    pub delay: Duration,
    /// Each datagram (and each duplicate) waits a further uniform random time in
    /// `0..=jitter`. As on a real link (and with netem), jitter alone can reorder.
    pub jitter: Duration,
    /// Probability, `0.0..=1.0`, that a datagram is dropped.
    pub loss: f64,
    /// Probability, `0.0..=1.0`, that a delivered datagram is sent twice (each copy with
    /// its own jitter).
    pub duplicate: f64,
    /// Probability, `0.0..=1.0`, that a delivered datagram is held back until the next one
    /// on the same link has been sent (or [`REORDER_WINDOW`](super::REORDER_WINDOW) has
    /// passed), so that the two arrive swapped.
    pub reorder: f64,
    /// Drop everything this way: a one-way partition when set on one direction only.
    pub cut: bool,
}

impl LinkFaults {
    /// A clean link.
    pub fn none() -> LinkFaults {
        LinkFaults::default()
    }

    /// A link that drops everything.
    pub fn cut() -> LinkFaults {
        LinkFaults {
            cut: true,
            ..LinkFaults::default()
        }
    }

    fn validate(&self, direction: Direction) -> Result<(), FaultsError> {
        let prefix = direction.field_prefix();
        for (name, value) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            // `contains` is false for NaN, so NaN is refused too.
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultsError::Probability {
                    field: format!("{prefix}.{name}"),
                    value,
                });
            }
        }
        let longest = self.delay.saturating_add(self.jitter);
        if longest > MAX_DELAY {
            return Err(FaultsError::Delay {
                field: format!("{prefix}.delay + {prefix}.jitter"),
                value: longest,
            });
        }
        Ok(())
    }
}

/// The faults of both directions. `Faults::default()` is [`Faults::none`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub to_target: LinkFaults,
    pub from_target: LinkFaults,
}

impl Faults {
    /// A clean link both ways (also how to heal a partition).
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Nothing passes either way.
    pub fn partition() -> Faults {
        Faults::both(LinkFaults::cut())
    }

    /// `direction` is cut; the other way is clean.
    pub fn one_way(direction: Direction) -> Faults {
        Faults::only(direction, LinkFaults::cut())
    }

    /// `link` faults on `direction`; the other way is clean.
    pub fn only(direction: Direction, link: LinkFaults) -> Faults {
        let mut faults = Faults::none();
        *faults.link_mut(direction) = link;
        faults
    }

    /// A round trip of at least `rtt`: half of it each way.
    pub fn rtt(rtt: Duration) -> Faults {
        Faults::both(LinkFaults {
            delay: rtt / 2,
            ..LinkFaults::default()
        })
    }

    /// The same faults both ways.
    pub fn both(link: LinkFaults) -> Faults {
        Faults {
            to_target: link.clone(),
            from_target: link,
        }
    }

    /// The same faults with the directions swapped: for the relay of the connection the
    /// other site dials. Between sites A and B there are two relays (A dials B through
    /// one, B dials A through the other); to make A → B lossy on both connections, give
    /// A's relay `faults` and B's relay `faults.reversed()`.
    pub fn reversed(&self) -> Faults {
        Faults {
            to_target: self.from_target.clone(),
            from_target: self.to_target.clone(),
        }
    }

    pub fn link(&self, direction: Direction) -> &LinkFaults {
        match direction {
            Direction::ToTarget => &self.to_target,
            Direction::FromTarget => &self.from_target,
        }
    }

    pub fn link_mut(&mut self, direction: Direction) -> &mut LinkFaults {
        match direction {
            Direction::ToTarget => &mut self.to_target,
            Direction::FromTarget => &mut self.from_target,
        }
    }

    /// Checks every field; the error names the first bad one (`from_target.loss`).
    pub fn validate(&self) -> Result<(), FaultsError> {
        for direction in Direction::BOTH {
            self.link(direction).validate(direction)?;
        }
        Ok(())
    }
}

/// A fault setting the relay refuses; it keeps the settings it had.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultsError {
    #[error("`{field}` is {value}, but a probability must be within 0.0..=1.0")]
    Probability { field: String, value: f64 },
    #[error("`{field}` is {value:?}, longer than the relay's limit of {MAX_DELAY:?}")]
    Delay { field: String, value: Duration },
}

/// Why a datagram was dropped by a fault (as opposed to a full queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    Cut,
    Loss,
}

/// The fate of one datagram.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Drop(DropCause),
    /// Send one copy after each delay (two delays when duplicated); `reorder` asks the
    /// link to hold the datagram back until its successor has gone.
    Deliver {
        delays: Vec<Duration>,
        reorder: bool,
    },
}

/// The random numbers behind one datagram's decision, each uniform in `[0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draws {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    /// One per copy.
    pub jitter: [f64; 2],
}

/// A seeded random stream for one direction of one client's link.
///
/// Every datagram consumes the same five numbers, whatever the settings, so the n-th
/// datagram of a link always meets the same dice: changing one fault mid-run does not
/// shift the decisions of the others.
pub struct LinkDice {
    rng: Pcg64,
}

impl LinkDice {
    /// The stream for the `client`-th client (in order of first appearance) in
    /// `direction`, under the relay's `seed`.
    pub fn new(seed: u64, client: u64, direction: Direction) -> LinkDice {
        let stream = client * 2 + direction.index() as u64;
        LinkDice {
            rng: Pcg64::seed_from_u64(seed ^ splitmix64(stream)),
        }
    }

    pub fn roll(&mut self) -> Draws {
        Draws {
            loss: self.unit(),
            duplicate: self.unit(),
            reorder: self.unit(),
            jitter: [self.unit(), self.unit()],
        }
    }

    /// A uniform number in `[0, 1)` from the top 53 bits, so `p = 1.0` always fires and
    /// `p = 0.0` never does.
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The decision for one datagram on a link with `faults`, given its `draws`.
pub fn decide(faults: &LinkFaults, draws: &Draws) -> Decision {
    if faults.cut {
        return Decision::Drop(DropCause::Cut);
    }
    if draws.loss < faults.loss {
        return Decision::Drop(DropCause::Loss);
    }
    let copies = if draws.duplicate < faults.duplicate {
        2
    } else {
        1
    };
    let delays = draws.jitter[..copies]
        .iter()
        .map(|jitter| faults.delay + faults.jitter.mul_f64(*jitter))
        .collect();
    Decision::Deliver {
        delays,
        reorder: draws.reorder < faults.reorder,
    }
}

/// Spreads small stream numbers over all 64 bits (the SplitMix64 finaliser), so that
/// neighbouring clients' streams share nothing visible.
fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(value: f64) -> Draws {
        Draws {
            loss: value,
            duplicate: value,
            reorder: value,
            jitter: [value, value],
        }
    }

    #[test]
    fn a_probability_outside_zero_to_one_is_refused_by_its_field_name() {
        let mut faults = Faults::none();
        faults.from_target.loss = 1.5;
        assert_eq!(
            faults.validate(),
            Err(FaultsError::Probability {
                field: "from_target.loss".into(),
                value: 1.5
            })
        );
        let mut faults = Faults::none();
        faults.to_target.reorder = -0.1;
        let error = faults.validate().unwrap_err();
        assert!(error.to_string().contains("`to_target.reorder`"), "{error}");
    }

    #[test]
    fn nan_is_not_a_probability() {
        let mut faults = Faults::none();
        faults.to_target.duplicate = f64::NAN;
        assert!(matches!(
            faults.validate(),
            Err(FaultsError::Probability { field, .. }) if field == "to_target.duplicate"
        ));
    }

    #[test]
    fn delay_and_jitter_beyond_the_limit_are_refused() {
        let mut faults = Faults::none();
        faults.to_target.delay = MAX_DELAY;
        faults.to_target.jitter = Duration::from_millis(1);
        assert!(matches!(faults.validate(), Err(FaultsError::Delay { .. })));
        faults.to_target.jitter = Duration::ZERO;
        assert_eq!(faults.validate(), Ok(()));
    }

    #[test]
    fn the_helpers_set_what_they_say() {
        assert_eq!(Faults::none(), Faults::default());
        assert!(Faults::partition().to_target.cut && Faults::partition().from_target.cut);
        let one_way = Faults::one_way(Direction::FromTarget);
        assert!(one_way.from_target.cut && !one_way.to_target.cut);
        assert_eq!(
            Faults::one_way(Direction::ToTarget).reversed(),
            Faults::one_way(Direction::FromTarget)
        );
        let rtt = Faults::rtt(Duration::from_millis(100));
        assert_eq!(rtt.to_target.delay, Duration::from_millis(50));
        assert_eq!(rtt.from_target.delay, Duration::from_millis(50));
    }

    #[test]
    fn certain_and_impossible_probabilities_hold_at_the_edges_of_the_dice() {
        let always = LinkFaults {
            loss: 1.0,
            ..LinkFaults::none()
        };
        let almost_one = draws(1.0 - f64::EPSILON);
        assert_eq!(
            decide(&always, &almost_one),
            Decision::Drop(DropCause::Loss)
        );
        let never = LinkFaults::none();
        assert_eq!(
            decide(&never, &draws(0.0)),
            Decision::Deliver {
                delays: vec![Duration::ZERO],
                reorder: false
            }
        );
    }

    #[test]
    fn cut_wins_over_everything_and_duplicates_get_their_own_jitter() {
        let mut faults = LinkFaults {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(10),
            duplicate: 1.0,
            ..LinkFaults::cut()
        };
        assert_eq!(decide(&faults, &draws(0.5)), Decision::Drop(DropCause::Cut));
        faults.cut = false;
        let mut roll = draws(0.5);
        roll.jitter = [0.0, 0.5];
        assert_eq!(
            decide(&faults, &roll),
            Decision::Deliver {
                delays: vec![Duration::from_millis(10), Duration::from_millis(15)],
                reorder: false
            }
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_dice_and_links_get_different_ones() {
        let rolls = |seed, client, direction| {
            let mut dice = LinkDice::new(seed, client, direction);
            (0..20).map(|_| dice.roll()).collect::<Vec<_>>()
        };
        let first = rolls(7, 0, Direction::ToTarget);
        assert_eq!(first, rolls(7, 0, Direction::ToTarget));
        for (seed, client, direction) in [
            (7, 0, Direction::FromTarget),
            (7, 1, Direction::ToTarget),
            (8, 0, Direction::ToTarget),
        ] {
            assert_ne!(
                first,
                rolls(seed, client, direction),
                "{seed} {client} {direction:?}"
            );
        }
    }
}
