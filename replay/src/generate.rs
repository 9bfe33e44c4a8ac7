//! A seeded demand trace with what a hosting site sees: a daily cycle, noise that comes
//! in bursts, and flash crowds (a load several times the usual, come in a minute, gone
//! over half an hour). The same seed gives the same trace, byte for byte, so the trace
//! shipped in `traces/` is checked against its command.

use std::collections::BTreeMap;

use rand_pcg::Pcg64;
use rand_pcg::rand_core::{Rng, SeedableRng};

use crate::trace::{FORMAT, Header, Step, Trace, TraceAccount};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub seed: u64,
    pub accounts: usize,
    pub hours: u64,
    pub step_s: u64,
}

const NAMES: [&str; 12] = [
    "shop", "wiki", "mail", "chat", "docs", "blog", "maps", "news", "game", "bank", "feed", "auth",
];
/// The load one server carries at its target (requests per second).
pub const TARGET_LOAD: f64 = 50.0;

struct Random(Pcg64);

impl Random {
    fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }
}

/// One account's load over time, before it is sampled at each step.
struct Account {
    name: String,
    base: f64,
    amplitude: f64,
    peak_hour: f64,
    /// Burst noise: a log-scale random walk pulled back to 0.
    noise: f64,
    /// Flash crowds: (start s, height, decay s).
    crowds: Vec<(f64, f64, f64)>,
    min_servers: u32,
    max_servers: u32,
    priority: u32,
}

pub fn generate(shape: Shape) -> Trace {
    let mut random = Random(Pcg64::seed_from_u64(shape.seed));
    let duration = (shape.hours * 3600) as f64;
    let mut accounts: Vec<Account> = (0..shape.accounts)
        .map(|ix| {
            let name = match NAMES.get(ix) {
                Some(name) => (*name).to_owned(),
                None => format!("acct{ix}"),
            };
            // From one to eight servers' worth at the daily mean, log-uniform.
            let base = TARGET_LOAD * (random.between(0.0, 8f64.ln())).exp();
            let amplitude = random.between(0.3, 0.6);
            let peak_hour = random.between(9.0, 21.0);
            // About one flash crowd per account every six hours.
            let mut crowds = Vec::new();
            let mut at = 0.0;
            loop {
                at += -(1.0 - random.unit()).ln() * 6.0 * 3600.0;
                if at >= duration {
                    break;
                }
                crowds.push((at, random.between(1.5, 4.0), random.between(600.0, 1800.0)));
            }
            let peak = base * (1.0 + amplitude) * 2.5;
            Account {
                name,
                base,
                amplitude,
                peak_hour,
                noise: 0.0,
                crowds,
                min_servers: 1 + (random.unit() < 0.3) as u32,
                max_servers: ((peak / TARGET_LOAD).ceil() as u32).max(2),
                priority: 10 + 10 * (random.unit() * 3.0) as u32,
            }
        })
        .collect();
    let steps = (shape.hours * 3600 / shape.step_s.max(1)) as usize;
    let mut out = Vec::with_capacity(steps);
    for ix in 0..steps {
        let t = (ix as u64 * shape.step_s) as f64;
        let mut load = BTreeMap::new();
        for account in &mut accounts {
            let hour = t / 3600.0;
            let daily = 1.0
                + account.amplitude
                    * (std::f64::consts::TAU * (hour - account.peak_hour) / 24.0).cos();
            // Bursts: most steps move a little; one in twenty jumps.
            let kick = if random.unit() < 0.05 {
                random.between(-0.5, 0.5)
            } else {
                random.between(-0.05, 0.05)
            };
            account.noise = 0.9 * account.noise + kick;
            let crowd: f64 = account
                .crowds
                .iter()
                .filter(|(start, _, _)| *start <= t)
                .map(|(start, height, decay)| height * (-(t - start) / decay).exp())
                .sum();
            let value = account.base * daily * account.noise.exp() * (1.0 + crowd);
            // Whole requests per second: the trace stays short and reads easily.
            load.insert(account.name.clone(), value.round());
        }
        out.push(Step {
            t_s: ix as u64 * shape.step_s,
            load,
        });
    }
    Trace {
        header: Header {
            trace: FORMAT.to_owned(),
            step_s: shape.step_s,
            accounts: accounts
                .iter()
                .map(|account| TraceAccount {
                    name: account.name.clone(),
                    min_servers: account.min_servers,
                    max_servers: account.max_servers,
                    target_load: TARGET_LOAD,
                    priority: account.priority,
                })
                .collect(),
            source: format!(
                "generated: leasehold trace generate --seed {} --accounts {} --hours {} --step-s {}",
                shape.seed, shape.accounts, shape.hours, shape.step_s
            ),
            licence: "CC0-1.0".to_owned(),
        },
        steps: out,
    }
}

/// A site config to replay `trace` on: `servers` servers and the trace's accounts with
/// their SLA fields, the default timings, the demo workload. Its addresses are loopback
/// ones; a replay opens none of them.
pub fn site_config(trace: &Trace, site: &str, servers: u32) -> String {
    let mut text = format!(
        "# A site to replay {source} on (docs/replay.md): {servers} servers and the\n\
         # trace's accounts, with their SLA fields; every timing at its default.\n\n\
         [site]\nname = \"{site}\"\nadmin_addr = \"127.0.0.1:7901\"\n\
         federation_addr = \"127.0.0.1:7902\"\nmanagement_addr = \"127.0.0.1:7903\"\n\n\
         [admin]\nplain_http = true\nanonymous_role = \"read\"\n",
        source = trace.header.source,
    );
    for ix in 1..=servers {
        text.push_str(&format!(
            "\n[[server]]\nid = \"r{ix}\"\nservice_addr = \"127.0.0.1:{}\"\n",
            20_000 + ix
        ));
    }
    for account in &trace.header.accounts {
        text.push_str(&format!(
            "\n[[account]]\nname = \"{name}\"\nmin_servers = {min}\nmax_servers = {max}\n\
             priority = {priority}\ntarget_load = {target:?}\n\n[account.workload]\n\
             software = \"{name}-web 1.0\"\ncommand = \"{{leasehold}}\"\n\
             args = [\"workload\", \"--listen\", \"{{service_addr}}\", \"--data\", \"{{data_dir}}\", \"--account\", \"{{account}}\"]\n\
             data_dir = \"data/{name}\"\nhealth_path = \"/health\"\nmetrics_path = \"/metrics\"\n\
             load_metric = \"leasehold_workload_load\"\n",
            name = account.name,
            min = account.min_servers,
            max = account.max_servers,
            priority = account.priority,
            target = account.target_load,
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(seed: u64) -> Shape {
        Shape {
            seed,
            accounts: 4,
            hours: 24,
            step_s: 60,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
        assert_eq!(generate(shape(1)), generate(shape(1)));
        assert_ne!(generate(shape(1)).steps, generate(shape(2)).steps);
        let trace = generate(shape(1));
        assert_eq!(trace.steps.len(), 24 * 60);
        assert_eq!(Trace::parse(&trace.to_text()).unwrap(), trace);
    }

    /// The shapes it promises: over a day each account's busiest hour carries well above
    /// its quietest, and somewhere a step jumps to at least twice the one before (a
    /// flash crowd or a burst).
    #[test]
    fn the_trace_is_diurnal_and_bursty() {
        let trace = generate(shape(3));
        for account in &trace.header.accounts {
            let hourly: Vec<f64> = trace
                .steps
                .chunks(60)
                .map(|hour| hour.iter().map(|s| s.load[&account.name]).sum::<f64>() / 60.0)
                .collect();
            let busiest = hourly.iter().cloned().fold(0.0, f64::max);
            let quietest = hourly.iter().cloned().fold(f64::MAX, f64::min);
            assert!(busiest > 1.5 * quietest, "{}: {hourly:?}", account.name);
        }
        let jumps = trace
            .steps
            .windows(2)
            .flat_map(|pair| {
                pair[1]
                    .load
                    .iter()
                    .filter(|(name, load)| **load >= 2.0 * pair[0].load[*name].max(1.0))
                    .map(|(name, _)| name.clone())
                    .collect::<Vec<_>>()
            })
            .count();
        assert!(jumps > 0);
    }
}
