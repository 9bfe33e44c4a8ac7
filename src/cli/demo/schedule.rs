//! The demo's load schedule: three phases, a third of the duration each, with the request
//! rates per account. docs/demo.md explains, from the SLA of configs/site-a.toml, why these
//! rates make servers move both ways.

use std::time::Duration;

/// One phase: what a person watching is told, and requests per second per account.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: &'static str,
    pub rates: Vec<(&'static str, f64)>,
}

/// The accounts the schedule drives; the demo refuses a site-a without them.
pub const ACCOUNTS: [&str; 2] = ["shop", "blog"];

/// With target_load 20 per server: shop 50 → 3 servers (2.5 rounds up), blog 35 → 2,
/// 5 → the minimum of 1 after the demand's slow shrink.
pub fn phases() -> Vec<Phase> {
    vec![
        Phase {
            name: "shop busy, blog quiet",
            rates: vec![("shop", 50.0), ("blog", 5.0)],
        },
        Phase {
            name: "shop quiet, blog busy",
            rates: vec![("shop", 5.0), ("blog", 35.0)],
        },
        Phase {
            name: "both busy: 5 servers wanted, 4 exist; shop's priority wins",
            rates: vec![("shop", 50.0), ("blog", 35.0)],
        },
    ]
}

/// The phase (index) at `elapsed` into a run of `duration`: thirds, the last one taking
/// whatever rounding leaves and any time past the end.
pub fn phase_at(elapsed: Duration, duration: Duration, phases: usize) -> usize {
    if phases == 0 || duration.is_zero() {
        return 0;
    }
    let fraction = elapsed.as_secs_f64() / duration.as_secs_f64();
    // Truncation is the point: the index of the third we are in.
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
    fn thirds_of_the_duration() {
        let duration = Duration::from_secs(60);
        assert_eq!(phase_at(Duration::ZERO, duration, 3), 0);
        assert_eq!(phase_at(Duration::from_secs(19), duration, 3), 0);
        assert_eq!(phase_at(Duration::from_secs(20), duration, 3), 1);
        assert_eq!(phase_at(Duration::from_secs(59), duration, 3), 2);
        assert_eq!(phase_at(Duration::from_secs(600), duration, 3), 2);
        assert_eq!(phase_start(2, duration, 3), 40.0);
    }

    #[test]
    fn every_phase_names_every_account() {
        for phase in phases() {
            for account in ACCOUNTS {
                assert!(phase.rates.iter().any(|(name, _)| *name == account));
            }
        }
    }
}
