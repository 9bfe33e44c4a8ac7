//! What a trace costs any policy, and what it costs a split with no moves, in
//! SLA-violation server-seconds: at each instant, for each account, how many servers its
//! SLA entitles it to (its [`need`]) beyond those serving it.

use crate::trace::Trace;

/// An account's SLA as the bounds and the replay read it (from the site's config).
#[derive(Debug, Clone, PartialEq)]
pub struct Sla {
    pub name: String,
    pub min_servers: u32,
    pub max_servers: u32,
    pub target_load: f64,
    pub priority: u32,
}

/// The servers `load` entitles an account to: enough to carry it at its target load per
/// server, within its minimum and maximum.
pub fn need(sla: &Sla, load: f64) -> u32 {
    let wanted = (load / sla.target_load).ceil();
    // Saturating: a load beyond u32's servers is the maximum anyway.
    let wanted = if wanted >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        wanted.max(0.0) as u32
    };
    wanted.clamp(sla.min_servers, sla.max_servers.max(sla.min_servers))
}

/// Σ over the trace of max(0, Σ accounts' need − servers) × step: at every instant the
/// servers serve at most `servers` of what the accounts need, so no policy, however
/// clairvoyant and however fast its moves, loses less.
pub fn lower_bound(trace: &Trace, slas: &[Sla], servers: u32) -> f64 {
    trace
        .steps
        .iter()
        .map(|step| {
            let needed: u64 = slas
                .iter()
                .map(|sla| u64::from(need(sla, step.load.get(&sla.name).copied().unwrap_or(0.0))))
                .sum();
            needed.saturating_sub(u64::from(servers)) as f64 * trace.header.step_s as f64
        })
        .sum()
}

/// A split of `servers` that never moves: every account its minimum (in priority order
/// while they last), then what remains shared in proportion to each account's room above
/// its minimum (`max_servers − min_servers`), never above its maximum, the remainders by
/// largest fraction.
pub fn static_split(slas: &[Sla], servers: u32) -> Vec<u32> {
    let mut order: Vec<usize> = (0..slas.len()).collect();
    order.sort_by_key(|ix| std::cmp::Reverse(slas[*ix].priority));
    let mut split = vec![0u32; slas.len()];
    let mut left = servers;
    for ix in &order {
        let given = slas[*ix].min_servers.min(left);
        split[*ix] = given;
        left -= given;
    }
    let room: Vec<u32> = slas
        .iter()
        .zip(&split)
        .map(|(sla, given)| sla.max_servers.saturating_sub(*given))
        .collect();
    let total_room: u64 = room.iter().map(|r| u64::from(*r)).sum();
    if total_room == 0 || left == 0 {
        return split;
    }
    let share = u64::from(left).min(total_room);
    let mut fractions = Vec::with_capacity(slas.len());
    for (ix, room) in room.iter().enumerate() {
        let exact = share * u64::from(*room);
        let whole = (exact / total_room) as u32;
        split[ix] += whole;
        left -= whole;
        fractions.push((exact % total_room, ix));
    }
    fractions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, ix) in fractions {
        if left == 0 {
            break;
        }
        if split[ix] < slas[ix].max_servers {
            split[ix] += 1;
            left -= 1;
        }
    }
    split
}

/// Each account's violation over the trace when it has `split[ix]` servers throughout:
/// no moves but the first, so its servers serve from `reinit_ms` on (every policy starts
/// from idle servers, as the replay does).
pub fn static_violation(trace: &Trace, slas: &[Sla], split: &[u32], reinit_ms: u64) -> Vec<f64> {
    let step_ms = trace.header.step_s * 1000;
    slas.iter()
        .zip(split)
        .map(|(sla, given)| {
            trace
                .steps
                .iter()
                .enumerate()
                .map(|(k, step)| {
                    let need = need(sla, step.load.get(&sla.name).copied().unwrap_or(0.0));
                    let start = k as u64 * step_ms;
                    let before = reinit_ms.clamp(start, start + step_ms) - start;
                    let short = f64::from(need.saturating_sub(*given));
                    (f64::from(need) * before as f64 + short * (step_ms - before) as f64) / 1000.0
                })
                .sum()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::trace::{FORMAT, Header, Step, TraceAccount};

    fn sla(name: &str, min: u32, max: u32, priority: u32) -> Sla {
        Sla {
            name: name.into(),
            min_servers: min,
            max_servers: max,
            target_load: 10.0,
            priority,
        }
    }

    fn trace(step_s: u64, loads: &[(f64, f64)]) -> Trace {
        Trace {
            header: Header {
                trace: FORMAT.into(),
                step_s,
                accounts: ["a", "b"]
                    .iter()
                    .map(|name| TraceAccount {
                        name: (*name).into(),
                        min_servers: 1,
                        max_servers: 5,
                        target_load: 10.0,
                        priority: 1,
                    })
                    .collect(),
                source: "test".into(),
                licence: "CC0-1.0".into(),
            },
            steps: loads
                .iter()
                .enumerate()
                .map(|(ix, (a, b))| Step {
                    t_s: ix as u64 * step_s,
                    load: BTreeMap::from([("a".into(), *a), ("b".into(), *b)]),
                })
                .collect(),
        }
    }

    #[test]
    fn need_is_the_servers_at_target_load_within_the_sla() {
        let shop = sla("a", 1, 5, 1);
        assert_eq!(need(&shop, 0.0), 1);
        assert_eq!(need(&shop, 10.0), 1);
        assert_eq!(need(&shop, 10.5), 2);
        assert_eq!(need(&shop, 49.0), 5);
        assert_eq!(need(&shop, 1e30), 5);
    }

    /// By hand: 4 servers; a needs 3, 1, 5 and b needs 2, 1, 2 over three 60 s steps: the
    /// total need is 5, 2, 7; beyond 4 servers that is 1, 0, 3 servers for 60 s each.
    #[test]
    fn the_lower_bound_is_the_total_need_beyond_the_servers() {
        let slas = [sla("a", 1, 5, 1), sla("b", 1, 5, 1)];
        let trace = trace(60, &[(30.0, 20.0), (5.0, 0.0), (50.0, 15.0)]);
        assert_eq!(lower_bound(&trace, &slas, 4), (1 + 3) as f64 * 60.0);
        assert_eq!(lower_bound(&trace, &slas, 7), 0.0);
    }

    /// By hand: 6 servers, minimums 1 and 1, room 4 and 2: the 4 left split 4·4/6 = 2.67
    /// and 4·2/6 = 1.33, so 2 and 1, and the last to the larger fraction (a): a 4, b 2.
    #[test]
    fn a_static_split_gives_minimums_then_shares_the_rest_by_room() {
        let slas = [sla("a", 1, 5, 1), sla("b", 1, 3, 1)];
        assert_eq!(static_split(&slas, 6), vec![4, 2]);
        // Never above a maximum, even with servers to spare.
        assert_eq!(static_split(&slas, 20), vec![5, 3]);
        // Too few for the minimums: the higher priority first.
        let slas = [sla("a", 2, 5, 1), sla("b", 2, 3, 9)];
        assert_eq!(static_split(&slas, 3), vec![1, 2]);
    }

    /// By hand: a has 2 servers, b 2; a needs 3, 1, 5 (short 1, 0, 3), b needs 2, 1, 2
    /// (short 0): a loses (1 + 3) × 60 s, b nothing.
    #[test]
    fn a_static_split_loses_what_each_account_needs_beyond_its_share() {
        let slas = [sla("a", 1, 5, 1), sla("b", 1, 5, 1)];
        let trace = trace(60, &[(30.0, 20.0), (5.0, 0.0), (50.0, 15.0)]);
        assert_eq!(
            static_violation(&trace, &slas, &[2, 2], 0),
            vec![240.0, 0.0]
        );
        // With 90 s to join, the first 90 s lose all they need: a 3 × 60 + 1 × 30 s and
        // then its shortfall 1 × 30 s (the rest of step 1, short 0) + 3 × 60 s; b
        // 2 × 60 + 1 × 30 s.
        assert_eq!(
            static_violation(&trace, &slas, &[2, 2], 90_000),
            vec![180.0 + 30.0 + 180.0, 120.0 + 30.0]
        );
    }
}
