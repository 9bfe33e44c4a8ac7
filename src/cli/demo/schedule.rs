//! The demo's load schedule: four phases, a quarter of the duration each, with the request
//! rates per account of every site. docs/demo.md explains, from the SLAs and lending terms
//! of configs/, why these rates move servers both ways inside site-a, make site-a borrow
//! from site-b and site-c during shop's burst, and give the servers back after it.

use std::time::Duration;

/// One phase: what a person watching is told, and requests per second per account.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: &'static str,
    pub rates: Vec<(&'static str, f64)>,
}

/// The accounts the schedule drives, each with its home site; the demo refuses configs
/// whose sites do not home them.
pub const ACCOUNTS: [(&str, &str); 4] = [
    ("site-a", "shop"),
    ("site-a", "blog"),
    ("site-b", "wiki"),
    ("site-c", "mail"),
];

/// All with target_load 20 per server (docs/demo.md has the arithmetic): shop 50 → 3
/// servers, 110 → 6 (its max: 3 more than site-a can give it), 5 → 1; blog 35 → 2, 5 → 1;
/// wiki 30 → 2, 10 → 1, 50 → 3 (its max); mail 50 → 3, 25 → its minimum of 2. Shrinking
/// takes 3 s a step.
pub fn phases() -> Vec<Phase> {
    vec![
        Phase {
            name: "shop busy, blog quiet; wiki and mail busy too",
            rates: vec![
                ("shop", 50.0),
                ("blog", 5.0),
                ("wiki", 30.0),
                ("mail", 50.0),
            ],
        },
        Phase {
            name: "shop quiet, blog busy: blog borrows until shop shrinks",
            rates: vec![
                ("shop", 5.0),
                ("blog", 35.0),
                ("wiki", 10.0),
                ("mail", 25.0),
            ],
        },
        Phase {
            name: "shop burst: 6 wanted, site-a can give 3; the rest is borrowed",
            rates: vec![
                ("shop", 110.0),
                ("blog", 5.0),
                ("wiki", 10.0),
                ("mail", 25.0),
            ],
        },
        Phase {
            name: "burst over, borrowed servers go back; wiki busy: site-b recalls one",
            rates: vec![("shop", 5.0), ("blog", 5.0), ("wiki", 50.0), ("mail", 25.0)],
        },
    ]
}

/// The phase (index) at `elapsed` into a run of `duration`: equal parts, the last one
/// taking whatever rounding leaves and any time past the end.
pub fn phase_at(elapsed: Duration, duration: Duration, phases: usize) -> usize {
    if phases == 0 || duration.is_zero() {
        return 0;
    }
    let fraction = elapsed.as_secs_f64() / duration.as_secs_f64();
    // Truncation is the point: the index of the part we are in.
    let index = (fraction * phases as f64).floor() as usize;
    index.min(phases - 1)
}

/// When phase `index` starts, in seconds into the run.
pub fn phase_start(index: usize, duration: Duration, phases: usize) -> f64 {
    if phases == 0 {
        return 0.0;
    }
    duration.as_secs_f64() * index as f64 / phases as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_parts_of_the_duration() {
        let duration = Duration::from_secs(60);
        assert_eq!(phase_at(Duration::ZERO, duration, 4), 0);
        assert_eq!(phase_at(Duration::from_secs(14), duration, 4), 0);
        assert_eq!(phase_at(Duration::from_secs(15), duration, 4), 1);
        assert_eq!(phase_at(Duration::from_secs(59), duration, 4), 3);
        assert_eq!(phase_at(Duration::from_secs(600), duration, 4), 3);
        assert_eq!(phase_start(2, duration, 4), 30.0);
    }

    #[test]
    fn every_phase_names_every_account() {
        for phase in phases() {
            assert_eq!(phase.rates.len(), ACCOUNTS.len(), "{phase:?}");
            for (_, account) in ACCOUNTS {
                assert!(phase.rates.iter().any(|(name, _)| *name == account));
            }
        }
    }
}
