//! The offline optimum: the least SLA violation any schedule of the site's servers could
//! have had on a trace, knowing it all in advance, with the same re-initialization delay;
//! computed as a min-cost flow over a time-expanded graph (our own successive shortest
//! paths with potentials: the graph is small, and no solver crate is needed).
//!
//! Time is cut in slots that divide both the step and the re-initialization, at most a
//! sixth of the latter and at least a second ([`slot_ms`]). A unit of flow is a
//! server. At each slot a server is idle (in the pool) or serves one account; one that
//! leaves the pool at slot `k` for account `a` serves it from slot `k + d` (`d` slots of
//! re-initialization). Serving `a` in slot `k` covers up to `need(a, k)` servers' worth,
//! each covered server-slot earning 1; the optimum maximizes what is covered, and its
//! violation is the rest.
//!
//! So that no policy can beat it, whenever it moves: a server may serve its account to
//! the end of the slot in which it starts re-initializing for the next one (it leaves for
//! the pool at the start of that slot, having served it). A policy that moves mid-slot is
//! covered at least as well by that schedule, rounded out; so the optimum is a lower bound
//! on every policy's violation, and at most one slot per move below the strict optimum.
//! With no re-initialization (`d = 0`) it is the lower bound of [`crate::bounds`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::bounds::{Sla, need};
use crate::trace::Trace;

/// The optimum's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Optimum {
    pub violation_server_s: f64,
    /// The slot it was computed at, and the re-initialization in slots.
    pub slot_ms: u64,
    pub reinit_slots: u64,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Slots per re-initialization, at least: the relaxation gives a move at most one slot, so
/// the finer the slots the closer the bound to the strict optimum (and the larger the
/// graph: six keeps a day of six accounts at about 200,000 nodes).
const SLOTS_PER_REINIT: u64 = 6;

/// The slot: the largest divisor of both the step and the re-initialization (so that
/// loads change and servers join on slot boundaries) of at most a sixth of the
/// re-initialization, and at least a second (the re-initialization is then rounded down
/// to whole slots, which only lowers the bound).
fn slot_ms(step_ms: u64, reinit_ms: u64) -> u64 {
    let common = gcd(step_ms, reinit_ms);
    if reinit_ms == 0 {
        return common.max(1000);
    }
    let finest = (reinit_ms / SLOTS_PER_REINIT).max(1000);
    (1000..=finest.min(common))
        .rev()
        .find(|slot| common.is_multiple_of(*slot))
        .unwrap_or(1000)
}

struct Arc {
    to: usize,
    cap: i64,
    cost: i64,
}

struct Graph {
    arcs: Vec<Arc>,
    out: Vec<Vec<usize>>,
}

impl Graph {
    fn new(nodes: usize) -> Graph {
        Graph {
            arcs: Vec::new(),
            out: vec![Vec::new(); nodes],
        }
    }

    fn add(&mut self, from: usize, to: usize, cap: i64, cost: i64) {
        self.out[from].push(self.arcs.len());
        self.arcs.push(Arc { to, cap, cost });
        self.out[to].push(self.arcs.len());
        self.arcs.push(Arc {
            to: from,
            cap: 0,
            cost: -cost,
        });
    }

    /// Sends `amount` from `source` to `sink` at least cost; `order` is a topological
    /// order of the nodes (every arc as built goes forward in it), which gives the first
    /// potentials despite negative costs. Returns the cost.
    fn min_cost_flow(&mut self, source: usize, sink: usize, amount: i64, order: &[usize]) -> i64 {
        let nodes = self.out.len();
        const FAR: i64 = i64::MAX / 4;
        let mut potential = vec![FAR; nodes];
        potential[source] = 0;
        for &node in order {
            if potential[node] == FAR {
                continue;
            }
            for &ix in &self.out[node] {
                let arc = &self.arcs[ix];
                if arc.cap > 0 && potential[node] + arc.cost < potential[arc.to] {
                    potential[arc.to] = potential[node] + arc.cost;
                }
            }
        }
        for value in &mut potential {
            if *value == FAR {
                *value = 0;
            }
        }
        let (mut sent, mut cost) = (0, 0);
        let mut distance = vec![FAR; nodes];
        let mut via = vec![usize::MAX; nodes];
        while sent < amount {
            distance.iter_mut().for_each(|d| *d = FAR);
            via.iter_mut().for_each(|v| *v = usize::MAX);
            distance[source] = 0;
            let mut queue = BinaryHeap::from([Reverse((0i64, source))]);
            while let Some(Reverse((d, node))) = queue.pop() {
                if d > distance[node] {
                    continue;
                }
                for &ix in &self.out[node] {
                    let arc = &self.arcs[ix];
                    if arc.cap <= 0 {
                        continue;
                    }
                    let reduced = arc.cost + potential[node] - potential[arc.to];
                    let next = d + reduced;
                    if next < distance[arc.to] {
                        distance[arc.to] = next;
                        via[arc.to] = ix;
                        queue.push(Reverse((next, arc.to)));
                    }
                }
            }
            if distance[sink] == FAR {
                break;
            }
            for node in 0..nodes {
                if distance[node] < FAR {
                    potential[node] += distance[node];
                }
            }
            let mut push = amount - sent;
            let mut node = sink;
            while node != source {
                let ix = via[node];
                push = push.min(self.arcs[ix].cap);
                node = self.arcs[ix ^ 1].to;
            }
            let mut node = sink;
            while node != source {
                let ix = via[node];
                self.arcs[ix].cap -= push;
                self.arcs[ix ^ 1].cap += push;
                cost += push * self.arcs[ix].cost;
                node = self.arcs[ix ^ 1].to;
            }
            sent += push;
        }
        cost
    }
}

/// The most nodes the graph may have: about 40 bytes of arcs and a node's state each, a
/// few hundred megabytes at most. A day of six accounts is about 200,000.
pub const MAX_NODES: usize = 4_000_000;

/// The graph the optimum needs would be larger than `limit` nodes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "the optimum was not computed: its graph would have {nodes} nodes ({slots} slots of {slot_ms} ms × {accounts} accounts), over the limit of {limit}; replay a shorter part of the trace, or with a longer --reinit-ms"
)]
pub struct TooLarge {
    pub nodes: usize,
    pub slots: usize,
    pub slot_ms: u64,
    pub accounts: usize,
    pub limit: usize,
}

/// The optimum for `servers` servers on `trace` with the accounts' `slas`, servers taking
/// `reinit_ms` to join an account, all idle at the start; refused, before anything is
/// built, when its graph would exceed [`MAX_NODES`].
pub fn optimum(
    trace: &Trace,
    slas: &[Sla],
    servers: u32,
    reinit_ms: u64,
) -> Result<Optimum, TooLarge> {
    optimum_within(trace, slas, servers, reinit_ms, MAX_NODES)
}

/// [`optimum`] with a graph of at most `limit` nodes.
pub fn optimum_within(
    trace: &Trace,
    slas: &[Sla],
    servers: u32,
    reinit_ms: u64,
    limit: usize,
) -> Result<Optimum, TooLarge> {
    let step_ms = trace.header.step_s * 1000;
    let slot_ms = slot_ms(step_ms, reinit_ms);
    let d = (reinit_ms / slot_ms) as usize;
    let slots = (trace.duration_s() * 1000 / slot_ms) as usize;
    let accounts = slas.len();
    let width = 1 + 2 * accounts;
    let nodes = slots.saturating_mul(width).saturating_add(3);
    if nodes > limit {
        return Err(TooLarge {
            nodes,
            slots,
            slot_ms,
            accounts,
            limit,
        });
    }
    let pool = |k: usize| 1 + k * width;
    let inlet = |a: usize, k: usize| pool(k) + 1 + 2 * a;
    let sink = pool(slots) + 1;
    let mut graph = Graph::new(sink + 1);
    let n = i64::from(servers);
    let needs: Vec<Vec<i64>> = slas
        .iter()
        .map(|sla| {
            (0..slots)
                .map(|k| i64::from(need(sla, trace.load_at(&sla.name, k as u64 * slot_ms))))
                .collect()
        })
        .collect();
    graph.add(0, pool(0), n, 0);
    for k in 0..slots {
        graph.add(pool(k), pool(k + 1), n, 0);
        for (a, need) in needs.iter().map(|slots| slots[k]).enumerate() {
            if k + d < slots {
                graph.add(pool(k), inlet(a, k + d), n, 0);
            }
            let outlet = inlet(a, k) + 1;
            graph.add(inlet(a, k), outlet, need, -1);
            graph.add(inlet(a, k), outlet, n, 0);
            if k + 1 < slots {
                graph.add(outlet, inlet(a, k + 1), n, 0);
            } else {
                graph.add(outlet, sink, n, 0);
            }
            // Leaving: to the pool after the slot, or, re-initializing for the next
            // account, at its start (the relaxation above; with d = 0 it would count a
            // slot twice).
            let leaves_at = if d > 0 { k } else { k + 1 };
            graph.add(outlet, pool(leaves_at), n, 0);
        }
    }
    graph.add(pool(slots), sink, n, 0);
    // A topological order: within a slot, with re-initialization the accounts' nodes come
    // before the pool (an outlet leaves for its own slot's pool, and the pool feeds only
    // later slots); with none the pool comes first (it feeds its own slot's accounts).
    let mut order = vec![0];
    for k in 0..=slots {
        if k < slots && d == 0 {
            order.push(pool(k));
        }
        if k < slots {
            for a in 0..accounts {
                order.push(inlet(a, k));
                order.push(inlet(a, k) + 1);
            }
        }
        if k == slots || d > 0 {
            order.push(pool(k));
        }
    }
    order.push(sink);
    let cost = graph.min_cost_flow(0, sink, n, &order);
    let needed: i64 = needs.iter().flatten().sum();
    let covered = -cost;
    Ok(Optimum {
        violation_server_s: (needed - covered) as f64 * slot_ms as f64 / 1000.0,
        slot_ms,
        reinit_slots: d as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bounds::{lower_bound, static_split, static_violation};
    use crate::trace::{FORMAT, Header, Step, TraceAccount};

    fn sla(name: &str, min: u32, max: u32) -> Sla {
        Sla {
            name: name.into(),
            min_servers: min,
            max_servers: max,
            target_load: 1.0,
            priority: 1,
        }
    }

    /// Loads of 0 or 1 per step: with target load 1, the need is the load.
    fn trace(loads: &[(&str, &[f64])]) -> Trace {
        let steps = loads[0].1.len();
        Trace {
            header: Header {
                trace: FORMAT.into(),
                step_s: 60,
                accounts: loads
                    .iter()
                    .map(|(name, _)| TraceAccount {
                        name: (*name).into(),
                        min_servers: 0,
                        max_servers: 9,
                        target_load: 1.0,
                        priority: 1,
                    })
                    .collect(),
                source: "test".into(),
                licence: "CC0-1.0".into(),
            },
            steps: (0..steps)
                .map(|k| Step {
                    t_s: k as u64 * 60,
                    load: loads
                        .iter()
                        .map(|(name, values)| ((*name).to_owned(), values[k]))
                        .collect::<BTreeMap<_, _>>(),
                })
                .collect(),
        }
    }

    /// By hand: one server, a needs it in steps 0 and 1, b in 2 and 3. With no
    /// re-initialization it serves a, then b: nothing lost.
    #[test]
    fn with_instant_moves_one_server_serves_both_in_turn() {
        let slas = [sla("a", 0, 1), sla("b", 0, 1)];
        let trace = trace(&[("a", &[1.0, 1.0, 0.0, 0.0]), ("b", &[0.0, 0.0, 1.0, 1.0])]);
        let best = optimum(&trace, &slas, 1, 0).unwrap();
        assert_eq!(best.violation_server_s, 0.0);
        assert_eq!(best.reinit_slots, 0);
        assert_eq!(best.violation_server_s, lower_bound(&trace, &slas, 1));
    }

    /// By hand, re-initialization one step (60 s), so slots of 10 s and d = 6: the server
    /// joins its first account at 60 s at the earliest, so a's first step is lost (60 s).
    /// Serving a from 60 s, it starts re-initializing for b at 60 s in the relaxed model
    /// (having served a in the slot [60, 70)), and joins b at 120 s: a loses [70, 120), 50 s.
    /// 110 s; strictly (leaving after [60, 70)) b would be joined at 130 s: 120 s.
    #[test]
    fn a_re_initialization_costs_the_first_step_and_the_switch_is_relaxed_by_one_slot() {
        let slas = [sla("a", 0, 1), sla("b", 0, 1)];
        let trace = trace(&[("a", &[1.0, 1.0, 0.0, 0.0]), ("b", &[0.0, 0.0, 1.0, 1.0])]);
        let best = optimum(&trace, &slas, 1, 60_000).unwrap();
        assert_eq!((best.slot_ms, best.reinit_slots), (10_000, 6));
        assert_eq!(best.violation_server_s, 110.0);
        // The lower bound knows nothing of re-initialization: 0.
        assert_eq!(lower_bound(&trace, &slas, 1), 0.0);
    }

    /// By hand: two servers; a needs 2 for four steps, b needs 1 in step 2 only (120 to
    /// 180 s); re-initialization 30 s, so slots of 5 s and d = 6. Both servers join a at
    /// 30 s: a loses 2 × 30 s. Covering b would take one of a's two servers for all of b's
    /// step and a re-initialization each way (at best 60 + 25 + 25 s of a, relaxed), more
    /// than b's 60 s: the optimum leaves b uncovered. 120 s in all.
    #[test]
    fn slots_divide_step_and_re_initialization_at_a_sixth_of_the_latter() {
        let slas = [sla("a", 0, 2), sla("b", 0, 1)];
        let trace = trace(&[("a", &[2.0, 2.0, 2.0, 2.0]), ("b", &[0.0, 0.0, 1.0, 0.0])]);
        let best = optimum(&trace, &slas, 2, 30_000).unwrap();
        assert_eq!((best.slot_ms, best.reinit_slots), (5_000, 6));
        assert_eq!(best.violation_server_s, 120.0);
        // With a third server to spare, b is covered once it has joined (a re-init after
        // the start would be enough, so nothing is lost but the first 30 s of a).
        assert_eq!(
            optimum(&trace, &slas, 3, 30_000)
                .unwrap()
                .violation_server_s,
            60.0
        );
        // A graph over the limit is refused before it is built, saying its size.
        let refused = optimum_within(&trace, &slas, 2, 30_000, 100).unwrap_err();
        assert_eq!(
            (refused.slots, refused.slot_ms, refused.accounts),
            (48, 5_000, 2)
        );
        assert!(
            refused.to_string().contains("over the limit of 100"),
            "{refused}"
        );
        // Slots never finer than a second, and dividing both.
        assert_eq!(slot_ms(60_000, 2_000), 1_000);
        assert_eq!(slot_ms(300_000, 45_000), 7_500);
        assert_eq!(slot_ms(60_000, 0), 60_000);
    }

    /// On seeded random traces: the lower bound ≤ the optimum ≤ a static split (which
    /// is one schedule the optimum could choose), and more re-initialization never helps.
    #[test]
    fn the_optimum_lies_between_the_lower_bound_and_a_static_split() {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        for _ in 0..30 {
            let a: Vec<f64> = (0..12).map(|_| (next() * 4.0).floor()).collect();
            let b: Vec<f64> = (0..12).map(|_| (next() * 3.0).floor()).collect();
            let trace = trace(&[("a", &a), ("b", &b)]);
            let slas = [sla("a", 1, 4), sla("b", 0, 3)];
            let servers = 1 + (next() * 5.0) as u32;
            let lower = lower_bound(&trace, &slas, servers);
            let fast = optimum(&trace, &slas, servers, 0)
                .unwrap()
                .violation_server_s;
            let slow = optimum(&trace, &slas, servers, 120_000)
                .unwrap()
                .violation_server_s;
            let split = static_split(&slas, servers);
            let fixed: f64 = static_violation(&trace, &slas, &split, 120_000)
                .iter()
                .sum();
            assert_eq!(fast, lower, "{a:?} {b:?} {servers}");
            assert!(
                lower <= slow && slow <= fixed,
                "{lower} {slow} {fixed}: {a:?} {b:?} {servers}"
            );
        }
    }
}
