//! Which of a site's gateways to take messages from: a site of standby gateways
//! (docs/ha.md) stamps what it sends with the *generation* of the gateway that acts, and a
//! later active gateway always has a higher one. A receiver (a node agent of the site, a
//! peer site) keeps the highest generation it has taken and refuses anything of a lower
//! one: a deposed gateway's. A site of one gateway sends no generation, and nothing is
//! refused for lacking one.
//!
//! Kept in memory: a receiver that restarts learns the generation again. A deposed gateway
//! stops acting before its successor is elected and exits at once (docs/ha.md, "A deposed
//! gateway exits"), so this is the second line, for what a paused gateway might still send
//! between its last check and its pause.

use crate::wire::common::{Refusal, RefusalCause};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerationFence {
    highest: Option<u64>,
}

impl GenerationFence {
    /// The highest generation taken, if any.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Whether `what`, stamped with `generation`, comes from a gateway that still acts as
    /// far as this receiver knows. `Err` names both generations.
    pub fn check(&self, what: &str, generation: Option<u64>) -> Result<(), Refusal> {
        match (generation, self.highest) {
            (Some(sent), Some(highest)) if sent < highest => Err(Refusal {
                cause: RefusalCause::NotAllowed,
                detail: format!(
                    "{what} from a gateway of generation g{sent}, but generation g{highest} of its site has been heard from: the sender is a deposed gateway"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// A gateway of `generation` was taken (an agent registered with it, a peer's hello
    /// answered), checked first with [`GenerationFence::check`].
    pub fn registered(&mut self, generation: Option<u64>) {
        if let Some(generation) = generation {
            self.highest = Some(self.highest.map_or(generation, |h| h.max(generation)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_generation_is_refused_once_a_newer_one_is_registered() {
        let mut fence = GenerationFence::default();
        assert!(
            fence.check("ApplyPointer", Some(5)).is_ok(),
            "nothing known yet"
        );
        fence.registered(Some(7));
        let refusal = fence.check("ApplyPointer", Some(5)).unwrap_err();
        assert_eq!(refusal.cause, RefusalCause::NotAllowed);
        assert!(
            refusal.detail.contains("g5") && refusal.detail.contains("g7"),
            "{refusal}"
        );
        assert!(
            fence.check("StopWorkload", Some(7)).is_ok(),
            "the same generation"
        );
        assert!(fence.check("StopWorkload", Some(9)).is_ok(), "a newer one");
    }

    #[test]
    fn the_highest_never_goes_back_and_no_generation_refuses_nothing() {
        let mut fence = GenerationFence::default();
        fence.registered(Some(9));
        fence.registered(Some(4));
        fence.registered(None);
        assert_eq!(fence.highest(), Some(9));
        assert!(
            fence.check("PulseAnswer", None).is_ok(),
            "a site of one gateway"
        );
        assert!(fence.check("PulseAnswer", Some(8)).is_err());
    }
}
