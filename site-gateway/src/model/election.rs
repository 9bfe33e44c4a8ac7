//! Which of a site's gateways may act (docs/ha.md): plain state, no etcd, no clock.
//!
//! The gateways of a site campaign for one key in etcd, each with an etcd lease of its own;
//! the one whose transaction creates the key is active, and the key's create revision is
//! its *generation*: a later holder always has a higher one, since etcd's revisions only
//! grow. Holding the key is not enough to act, though: a gateway that was paused (SIGSTOP,
//! a stalled VM) or cut off from etcd may still believe it holds it after its lease ended
//! and another gateway was elected. So an active gateway acts only until its lease is
//! *certainly* alive: a keep-alive sent at `sent` and answered with `ttl` proves the lease
//! lasts until at least `sent + ttl` by etcd's clock (etcd received the request after it
//! was sent), and the gateway acts until `sent + ttl - margin`, the margin covering the
//! two clocks' rates. The successor is elected only after etcd ended the lease, so the two
//! never act at once. What a paused gateway could still send between its last check and
//! its pause is caught by the generation every command and journal write carries.

use super::Millis;

/// An election key's create revision in etcd: which term of which gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub i64);

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// The gateway that holds the key, as its record in etcd says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holder's `[[site.gateway]]` name.
    pub name: String,
    pub generation: Generation,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not holding the key; `active` is who does, if anyone is known to.
    Standby { active: Option<Holder> },
    /// Holding the key under `generation`, with etcd lease `lease`; acting until
    /// `acting_until` unless a keep-alive moves it on.
    Active {
        generation: Generation,
        lease: i64,
        acting_until: Millis,
    },
}

/// What changed, for the shell to tell the rest of the gateway and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Nothing,
    /// This gateway now acts under `generation`.
    BecameActive(Generation),
    /// This gateway no longer acts under `generation`, and why.
    Deposed {
        generation: Generation,
        why: Deposed,
    },
    /// Another gateway is active (or none is known, `None`).
    ActiveIs(Option<Holder>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deposed {
    /// etcd said the lease has ended.
    LeaseEnded,
    /// No keep-alive was confirmed in time: etcd may have ended the lease already.
    Unconfirmed,
    /// This gateway gave the key up (handover, shutdown).
    Resigned,
}

impl std::fmt::Display for Deposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Deposed::LeaseEnded => "etcd ended its lease",
            Deposed::Unconfirmed => {
                "no keep-alive was confirmed before its lease could have ended (etcd unreachable, or this process paused)"
            }
            Deposed::Resigned => "it handed over",
        })
    }
}

/// One gateway's part in its site's election.
#[derive(Clone, Debug)]
pub struct Candidate {
    margin: Millis,
    role: Role,
}

impl Candidate {
    /// `margin`: how long before a lease could end the gateway stops acting.
    pub fn new(margin: Millis) -> Candidate {
        Candidate {
            margin,
            role: Role::Standby { active: None },
        }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The generation this gateway may act under at `now`, if any.
    pub fn acting(&self, now: Millis) -> Option<Generation> {
        match self.role {
            Role::Active {
                generation,
                acting_until,
                ..
            } if now < acting_until => Some(generation),
            _ => None,
        }
    }

    fn until(&self, sent: Millis, ttl: Millis) -> Millis {
        Millis((sent.0 + ttl.0).saturating_sub(self.margin.0))
    }

    /// A campaign sent at `sent` with lease `lease` (of `ttl`, granted or kept alive no
    /// earlier than `sent`) created the key at `generation`.
    pub fn won(&mut self, sent: Millis, lease: i64, ttl: Millis, generation: Generation) -> Change {
        self.role = Role::Active {
            generation,
            lease,
            acting_until: self.until(sent, ttl),
        };
        Change::BecameActive(generation)
    }

    /// A campaign found the key held by `holder` (or gone again, `None`).
    pub fn lost(&mut self, holder: Option<Holder>) -> Change {
        match &self.role {
            // A campaign is only run by a standby; an active gateway that sees another
            // holder was deposed without noticing: it stops now.
            Role::Active { generation, .. } => {
                let generation = *generation;
                self.role = Role::Standby { active: holder };
                Change::Deposed {
                    generation,
                    why: Deposed::LeaseEnded,
                }
            }
            Role::Standby { active } if *active == holder => Change::Nothing,
            Role::Standby { .. } => {
                self.role = Role::Standby {
                    active: holder.clone(),
                };
                Change::ActiveIs(holder)
            }
        }
    }

    /// A keep-alive of `lease` sent at `sent` was answered: the lease has `ttl` left
    /// (`Some`, renewed to its full TTL), or has ended (`None`). Answers for another lease
    /// than the active one (a late answer of an earlier term) change nothing.
    pub fn kept_alive(&mut self, sent: Millis, lease: i64, ttl: Option<Millis>) -> Change {
        let Role::Active {
            generation,
            lease: held,
            acting_until,
        } = self.role
        else {
            return Change::Nothing;
        };
        if held != lease {
            return Change::Nothing;
        }
        match ttl {
            Some(ttl) => {
                self.role = Role::Active {
                    generation,
                    lease,
                    acting_until: acting_until.max(self.until(sent, ttl)),
                };
                Change::Nothing
            }
            None => self.depose(generation, Deposed::LeaseEnded),
        }
    }

    /// Time passed: an active gateway whose confirmations ran out stops acting.
    pub fn tick(&mut self, now: Millis) -> Change {
        match self.role {
            Role::Active {
                generation,
                acting_until,
                ..
            } if now >= acting_until => self.depose(generation, Deposed::Unconfirmed),
            _ => Change::Nothing,
        }
    }

    /// This gateway gives the key up.
    pub fn resign(&mut self) -> Change {
        match self.role {
            Role::Active { generation, .. } => self.depose(generation, Deposed::Resigned),
            Role::Standby { .. } => Change::Nothing,
        }
    }

    fn depose(&mut self, generation: Generation, why: Deposed) -> Change {
        self.role = Role::Standby { active: None };
        Change::Deposed { generation, why }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Millis = Millis(3_000);
    const MARGIN: Millis = Millis(500);

    fn holder(name: &str, generation: i64) -> Option<Holder> {
        Some(Holder {
            name: name.to_owned(),
            generation: Generation(generation),
        })
    }

    #[test]
    fn a_winner_acts_until_its_lease_could_end_less_the_margin() {
        let mut candidate = Candidate::new(MARGIN);
        assert_eq!(candidate.acting(Millis(0)), None);
        assert_eq!(
            candidate.won(Millis(1_000), 7, TTL, Generation(42)),
            Change::BecameActive(Generation(42))
        );
        assert_eq!(candidate.acting(Millis(3_499)), Some(Generation(42)));
        // The lease, granted no earlier than 1,000, lasts at least to 4,000; the margin
        // stops the gateway at 3,500.
        assert_eq!(candidate.acting(Millis(3_500)), None);
        assert_eq!(
            candidate.tick(Millis(3_500)),
            Change::Deposed {
                generation: Generation(42),
                why: Deposed::Unconfirmed
            }
        );
        assert_eq!(candidate.acting(Millis(0)), None, "deposed for good");
    }

    #[test]
    fn a_keep_alive_moves_the_end_from_when_it_was_sent_not_answered() {
        let mut candidate = Candidate::new(MARGIN);
        candidate.won(Millis(0), 7, TTL, Generation(42));
        // Sent at 1,000, answered at 2,900: the lease is proven only from 1,000.
        assert_eq!(
            candidate.kept_alive(Millis(1_000), 7, Some(TTL)),
            Change::Nothing
        );
        assert_eq!(candidate.acting(Millis(3_499)), Some(Generation(42)));
        assert_eq!(candidate.acting(Millis(3_500)), None);
        // A late answer of an older keep-alive does not move the end back.
        candidate.kept_alive(Millis(200), 7, Some(TTL));
        assert_eq!(candidate.acting(Millis(3_499)), Some(Generation(42)));
        // An answer for another lease (an earlier term's) changes nothing.
        candidate.kept_alive(Millis(3_000), 6, Some(TTL));
        assert_eq!(candidate.acting(Millis(3_500)), None);
    }

    #[test]
    fn an_ended_lease_or_a_resignation_deposes_at_once() {
        let mut candidate = Candidate::new(MARGIN);
        candidate.won(Millis(0), 7, TTL, Generation(42));
        assert_eq!(
            candidate.kept_alive(Millis(100), 7, None),
            Change::Deposed {
                generation: Generation(42),
                why: Deposed::LeaseEnded
            }
        );
        assert_eq!(candidate.acting(Millis(101)), None);
        candidate.won(Millis(200), 8, TTL, Generation(50));
        assert_eq!(
            candidate.resign(),
            Change::Deposed {
                generation: Generation(50),
                why: Deposed::Resigned
            }
        );
        assert_eq!(candidate.acting(Millis(201)), None);
        assert_eq!(candidate.resign(), Change::Nothing);
    }

    #[test]
    fn a_standby_learns_who_is_active_once_per_change() {
        let mut candidate = Candidate::new(MARGIN);
        assert_eq!(
            candidate.lost(holder("gw-1", 5)),
            Change::ActiveIs(holder("gw-1", 5))
        );
        assert_eq!(candidate.lost(holder("gw-1", 5)), Change::Nothing);
        assert_eq!(
            candidate.lost(holder("gw-2", 9)),
            Change::ActiveIs(holder("gw-2", 9))
        );
        // An active gateway that finds the key held by another is deposed.
        candidate.won(Millis(0), 7, TTL, Generation(12));
        assert_eq!(
            candidate.lost(holder("gw-2", 13)),
            Change::Deposed {
                generation: Generation(12),
                why: Deposed::LeaseEnded
            }
        );
        assert_eq!(candidate.acting(Millis(1)), None);
    }
}
