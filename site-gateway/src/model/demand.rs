//! An account's demand: how many servers its measured load calls for under its SLA, with
//! hysteresis so that a noisy load does not make servers flap between accounts.
//!
//! Growing is immediate (an account short of capacity is hurting now); shrinking is slow and
//! one server at a time, and only once the remaining servers would sit well below target
//! (`shrink_headroom`), so the load that a released server leaves behind does not push the
//! account straight back above target.
//!
//! Under pressure (another account of the site is short of what it asks, and no server is
//! free) that margin is what the short account lacks: the demand then steps down to what
//! the load needs at its target, one server a round (docs/replay.md, "What it shows").

use std::time::Duration;

use super::Millis;

/// How long the load must continuously allow a smaller demand before the demand steps down
/// by one server.
pub const SCALE_DOWN_AFTER: Duration = Duration::from_secs(3);

/// Shrink only if the servers left would run at no more than this fraction of
/// `target_load`: a margin against stepping down and straight back up.
pub const SHRINK_HEADROOM: f64 = 0.75;

/// The terms of an account's SLA that the demand follows (the rest, priority and failover,
/// belong to arbitration and ownership).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sla {
    pub min_servers: u32,
    pub max_servers: u32,
    /// The load one server should carry, in the unit of the servers' load reports.
    pub target_load: f64,
}

impl Sla {
    /// `value` within [min, max]. Validated config has min ≤ max; should an unvalidated
    /// SLA reach here, the minimum wins (it is the promise), and nothing panics.
    fn clamp(&self, value: u32) -> u32 {
        value.min(self.max_servers).max(self.min_servers)
    }
}

/// The hysteresis of a [`DemandModel`]; `Default` is [`SCALE_DOWN_AFTER`] and
/// [`SHRINK_HEADROOM`]. Tests and load-trace replays tune it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemandTuning {
    pub scale_down_after: Duration,
    /// In (0, 1]; a value outside is treated as 1 (shrink as soon as the load allows).
    pub shrink_headroom: f64,
}

impl Default for DemandTuning {
    fn default() -> Self {
        DemandTuning {
            scale_down_after: SCALE_DOWN_AFTER,
            shrink_headroom: SHRINK_HEADROOM,
        }
    }
}

/// The demand of one account at one site. The account's `Group` actor owns it and feeds it
/// the summed load of its servers; time is a parameter, so replays run it on a virtual clock.
#[derive(Debug, Clone)]
pub struct DemandModel {
    sla: Sla,
    tuning: DemandTuning,
    demand: u32,
    /// Since when the load has continuously allowed a smaller demand; `None` when it does not.
    low_since: Option<Millis>,
    /// The last total load observed (after sanitizing), for the audit log's "load / target".
    last_load: f64,
}

impl DemandModel {
    /// Starts at the SLA minimum: a new group asks for what it is promised, and grows from
    /// its first load reports.
    pub fn new(sla: Sla) -> Self {
        Self::with_tuning(sla, DemandTuning::default())
    }

    pub fn with_tuning(sla: Sla, tuning: DemandTuning) -> Self {
        let headroom = tuning.shrink_headroom;
        let shrink_headroom = if headroom > 0.0 && headroom <= 1.0 {
            headroom
        } else {
            1.0
        };
        DemandModel {
            sla,
            tuning: DemandTuning {
                shrink_headroom,
                ..tuning
            },
            demand: sla.clamp(0),
            low_since: None,
            last_load: 0.0,
        }
    }

    /// Feeds one measurement: `total_load` is the sum of the account's servers' loads, in
    /// the unit of `target_load` per server. Returns the demand after it.
    pub fn observe(&mut self, total_load: f64, now: Millis) -> u32 {
        self.observe_pressed(total_load, now, false)
    }

    /// [`DemandModel::observe`], knowing whether the site is `pressed`: some account short
    /// of its demand with no server free. Pressed, the demand keeps no margin above what
    /// the load needs at its target, and steps down to it without waiting out the period.
    pub fn observe_pressed(&mut self, total_load: f64, now: Millis, pressed: bool) -> u32 {
        // A NaN or negative sum comes from a bad report; treating it as idle can only start
        // the slow shrink timer, never move a server at once.
        let load = if total_load.is_nan() || total_load < 0.0 {
            0.0
        } else {
            total_load
        };
        self.last_load = load;
        let target = self.sla.target_load;
        // `as u32` saturates (and maps NaN to 0), so a huge or infinite load asks for
        // `max_servers` rather than wrapping.
        let up = (load / target).ceil() as u32;
        if up > self.demand {
            self.demand = self.sla.clamp(up);
            self.low_since = None;
            return self.demand;
        }
        let (headroom, period) = if pressed {
            (1.0, std::time::Duration::ZERO)
        } else {
            (self.tuning.shrink_headroom, self.tuning.scale_down_after)
        };
        let down = (load / (target * headroom)).ceil() as u32;
        let may_shrink = self.sla.clamp(down) < self.demand;
        match (may_shrink, self.low_since) {
            (false, _) => self.low_since = None,
            (true, None) => self.low_since = Some(now),
            (true, Some(since)) => {
                if now.since(since) >= period {
                    self.demand = self.sla.clamp(self.demand.saturating_sub(1));
                    // One step per period: the next step needs another full period of low
                    // load, measured with one server fewer.
                    self.low_since = Some(now);
                }
            }
        }
        self.demand
    }

    pub fn demand(&self) -> u32 {
        self.demand
    }

    pub fn sla(&self) -> Sla {
        self.sla
    }

    /// The last total load observed (0 before the first), for audit lines.
    pub fn last_load(&self) -> f64 {
        self.last_load
    }

    /// A config reload: the demand is re-clamped to the new bounds at once (an operator who
    /// raises a minimum means now); the shrink timer restarts, since it measured against
    /// the old terms.
    pub fn set_sla(&mut self, sla: Sla) {
        self.sla = sla;
        self.demand = sla.clamp(self.demand);
        self.low_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sla(min: u32, max: u32, target: f64) -> Sla {
        Sla {
            min_servers: min,
            max_servers: max,
            target_load: target,
        }
    }

    fn at(seconds: f64) -> Millis {
        Millis((seconds * 1000.0) as u64)
    }

    /// Pressed, the margin goes: 70 / 20 = 3.5 needs 4 servers, which unpressed would run at
    /// 87.5 % of target (above the 75 % headroom), so a demand of 5 stays; pressed, it
    /// steps down to 4 within two observations, and not below what the load needs.
    #[test]
    fn under_pressure_the_demand_sheds_its_margin_down_to_the_need() {
        let mut calm = DemandModel::new(sla(1, 10, 20.0));
        let mut pressed = DemandModel::new(sla(1, 10, 20.0));
        for model in [&mut calm, &mut pressed] {
            assert_eq!(model.observe(100.0, at(0.0)), 5);
        }
        for step in 1..=100 {
            calm.observe(70.0, at(f64::from(step) * 0.1));
        }
        assert_eq!(calm.demand(), 5);
        assert_eq!(pressed.observe_pressed(70.0, at(0.1), true), 5);
        assert_eq!(pressed.observe_pressed(70.0, at(0.2), true), 4);
        assert_eq!(pressed.observe_pressed(70.0, at(0.3), true), 4);
        assert_eq!(pressed.observe_pressed(70.0, at(10.0), true), 4);
        // Growing is as before.
        assert_eq!(pressed.observe_pressed(81.0, at(10.1), true), 5);
    }

    #[test]
    fn starts_at_the_minimum() {
        assert_eq!(DemandModel::new(sla(2, 10, 20.0)).demand(), 2);
    }

    #[test]
    fn grows_at_once_to_the_servers_the_load_needs() {
        let mut model = DemandModel::new(sla(1, 10, 20.0));
        // 55 / 20 = 2.75 → 3 servers.
        assert_eq!(model.observe(55.0, at(0.0)), 3);
        assert_eq!(model.observe(60.0, at(0.1)), 3);
        assert_eq!(model.observe(60.1, at(0.2)), 4);
    }

    #[test]
    fn growth_is_capped_at_the_maximum() {
        let mut model = DemandModel::new(sla(1, 4, 20.0));
        assert_eq!(model.observe(1000.0, at(0.0)), 4);
        assert_eq!(model.observe(f64::INFINITY, at(1.0)), 4);
    }

    #[test]
    fn shrinks_one_step_after_the_load_stays_low_for_the_period() {
        let mut model = DemandModel::new(sla(1, 10, 20.0));
        model.observe(100.0, at(0.0)); // 5
        // 30 / (20 × 0.75) = 2 < 5: the timer starts at 1 s.
        assert_eq!(model.observe(30.0, at(1.0)), 5);
        assert_eq!(model.observe(30.0, at(3.9)), 5);
        assert_eq!(model.observe(30.0, at(4.0)), 4);
        // The next step needs another full period.
        assert_eq!(model.observe(30.0, at(6.9)), 4);
        assert_eq!(model.observe(30.0, at(7.0)), 3);
        assert_eq!(model.observe(30.0, at(10.0)), 2);
        assert_eq!(
            model.observe(30.0, at(13.0)),
            2,
            "2 servers at 75 % of target is the floor"
        );
    }

    #[test]
    fn a_spike_restarts_the_shrink_timer() {
        let mut model = DemandModel::new(sla(1, 10, 20.0));
        model.observe(100.0, at(0.0)); // 5
        model.observe(30.0, at(1.0));
        // 70 / 15 = 4.67 → 5: not low enough to shrink from 5; the timer resets.
        model.observe(70.0, at(2.0));
        model.observe(30.0, at(3.0));
        assert_eq!(model.observe(30.0, at(5.9)), 5);
        assert_eq!(model.observe(30.0, at(6.0)), 4);
    }

    #[test]
    fn does_not_shrink_when_the_rest_would_run_above_the_headroom() {
        let mut model = DemandModel::new(sla(1, 10, 20.0));
        model.observe(80.0, at(0.0)); // 4
        // 3 servers would carry 55 / 3 = 18.3 > 15 each: keep 4.
        for second in 1..20 {
            assert_eq!(model.observe(55.0, at(f64::from(second))), 4);
        }
    }

    #[test]
    fn never_shrinks_below_the_minimum() {
        let mut model = DemandModel::new(sla(3, 10, 20.0));
        for second in 0..30 {
            assert_eq!(model.observe(0.0, at(f64::from(second))), 3);
        }
    }

    #[test]
    fn nan_and_negative_loads_count_as_idle() {
        let mut model = DemandModel::new(sla(1, 10, 20.0));
        model.observe(100.0, at(0.0));
        assert_eq!(model.observe(f64::NAN, at(1.0)), 5);
        assert_eq!(model.last_load(), 0.0);
        assert_eq!(model.observe(-50.0, at(4.0)), 4);
    }

    #[test]
    fn tuning_overrides_the_period_and_headroom() {
        let tuning = DemandTuning {
            scale_down_after: Duration::from_millis(500),
            shrink_headroom: 1.0,
        };
        let mut model = DemandModel::with_tuning(sla(1, 10, 20.0), tuning);
        model.observe(100.0, at(0.0)); // 5
        model.observe(80.0, at(1.0)); // 80 / 20 = 4 < 5 with no headroom
        assert_eq!(model.observe(80.0, at(1.5)), 4);
    }

    #[test]
    fn set_sla_reclamps_at_once() {
        let mut model = DemandModel::new(sla(1, 10, 20.0));
        model.observe(200.0, at(0.0)); // 10
        model.set_sla(sla(1, 6, 20.0));
        assert_eq!(model.demand(), 6);
        model.set_sla(sla(8, 12, 20.0));
        assert_eq!(model.demand(), 8);
    }

    #[test]
    fn an_inverted_sla_does_not_panic_and_keeps_the_minimum() {
        let mut model = DemandModel::new(sla(5, 2, 20.0));
        assert_eq!(model.observe(1000.0, at(0.0)), 5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Demand stays within [min, max]; it drops by one at a time, and two drops are at
        /// least one period apart, whatever the load does.
        #[test]
        fn demand_stays_in_bounds_and_shrinks_one_step_per_period(
            min in 0u32..5,
            extra in 0u32..20,
            target in 1.0f64..50.0,
            steps in proptest::collection::vec((0.0f64..1500.0, 0u64..2000), 1..80),
        ) {
            let bounds = sla(min, min + extra, target);
            let mut model = DemandModel::new(bounds);
            let mut now = Millis(0);
            let mut previous = model.demand();
            // The last time the demand rose or dropped: a drop needs a full period of low
            // load after it.
            let mut anchor: Option<Millis> = None;
            for (load, advance) in steps {
                now = Millis(now.0 + advance);
                let demand = model.observe(load, now);
                prop_assert!(demand >= bounds.min_servers && demand <= bounds.max_servers);
                let since_anchor = now.since(anchor.unwrap_or(now));
                if demand < previous {
                    prop_assert_eq!(previous - demand, 1);
                    prop_assert!(anchor.is_some() && since_anchor >= SCALE_DOWN_AFTER);
                }
                if demand != previous || anchor.is_none() {
                    anchor = Some(now);
                }
                previous = demand;
            }
        }
    }
}
