//! The demand a site measured, kept as a trace (`leasehold-trace/1`, docs/replay.md, "A
//! site's own trace"), so that an operator can replay last week under a config edit. The
//! master hands each round's loads to a [`DemandRecorder`] (plain: it averages them over
//! a step); each finished step goes to a writer thread over a bounded channel, which
//! appends it to `<state>/demand-trace.jsonl`. A gateway start begins a new file, the
//! last one kept beside it as `demand-trace-<wall ms>.jsonl` (the seven newest kept): a
//! trace's steps follow each other without a gap, and a restart is one.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::config::SiteConfig;
use crate::trace::{FORMAT, Header, Step, TraceAccount};

/// Older traces kept beside the current one.
const KEEP: usize = 7;
pub const FILE: &str = "demand-trace.jsonl";

/// Averages each account's total load over a step of rounds.
#[derive(Debug)]
pub struct DemandRecorder {
    accounts: Vec<String>,
    sums: Vec<f64>,
    rounds: u32,
    rounds_per_step: u32,
    step_s: u64,
    steps: u64,
}

impl DemandRecorder {
    /// For `accounts` (the header's, in its order), a step of `step_s` being
    /// `rounds_per_step` rounds.
    pub fn new(accounts: Vec<String>, step_s: u64, rounds_per_step: u32) -> DemandRecorder {
        DemandRecorder {
            sums: vec![0.0; accounts.len()],
            accounts,
            rounds: 0,
            rounds_per_step: rounds_per_step.max(1),
            step_s,
            steps: 0,
        }
    }

    /// One round's total load per account (an account it does not name: 0, as one no
    /// server serves); the step, once this round ends one.
    pub fn round(&mut self, loads: &[(&str, f64)]) -> Option<Step> {
        for (ix, name) in self.accounts.iter().enumerate() {
            if let Some((_, load)) = loads.iter().find(|(n, _)| n == name) {
                self.sums[ix] += load.max(0.0);
            }
        }
        self.rounds += 1;
        if self.rounds < self.rounds_per_step {
            return None;
        }
        let rounds = f64::from(self.rounds);
        let load = self
            .accounts
            .iter()
            .zip(&mut self.sums)
            .map(|(name, sum)| {
                // Tenths, as a person reads a load; the file stays small.
                let mean = (*sum / rounds * 10.0).round() / 10.0;
                *sum = 0.0;
                (name.clone(), mean)
            })
            .collect();
        self.rounds = 0;
        let step = Step {
            t_s: self.steps * self.step_s,
            load,
        };
        self.steps += 1;
        Some(step)
    }
}

/// The header of a site's own trace: its home accounts as the config has them now.
pub fn header(config: &SiteConfig, started_wall_ms: u64) -> Header {
    Header {
        trace: FORMAT.to_owned(),
        step_s: config.journal.demand_trace_step_s,
        accounts: config
            .accounts
            .iter()
            .map(|account| TraceAccount {
                name: account.name.to_string(),
                min_servers: account.min_servers,
                max_servers: account.max_servers,
                target_load: account.target_load,
                priority: account.priority,
            })
            .collect(),
        source: format!(
            "measured by the gateway of {}: each account's total load, averaged over each step, from wall time {started_wall_ms} ms",
            config.site.name
        ),
        licence: "the operator's own".to_owned(),
    }
}

/// Where the master sends finished steps. Dropping it ends the writer thread.
#[derive(Debug)]
pub struct TraceSender(SyncSender<Step>);

impl TraceSender {
    /// Queues `step`; a full queue (a disk minutes behind) drops it, said in the log: the
    /// trace is for replays, and must never hold the master up.
    pub fn send(&self, step: Step) {
        match self.0.try_send(step) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!("the demand trace's writer is behind: a step dropped")
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Starts a new trace in `state` with `header` (the last one kept beside it) and the
/// thread that appends steps to it.
pub fn start(state: &Path, header: Header) -> std::io::Result<TraceSender> {
    let path = state.join(FILE);
    set_aside(state, &path)?;
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    let mut line = serde_json::to_string(&header).map_err(std::io::Error::other)?;
    line.push('\n');
    file.write_all(line.as_bytes())?;
    // Ten steps: ten minutes of a disk that does not answer.
    let (sender, receiver) = sync_channel(10);
    std::thread::Builder::new()
        .name("demand-trace".into())
        .spawn(move || append(file, &path, receiver))?;
    Ok(TraceSender(sender))
}

fn append(mut file: std::fs::File, path: &Path, steps: Receiver<Step>) {
    for step in steps {
        let written = serde_json::to_string(&step)
            .map_err(std::io::Error::other)
            .and_then(|mut line| {
                line.push('\n');
                file.write_all(line.as_bytes())
            });
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "the demand trace stops: a step could not be written");
            return;
        }
    }
}

/// The current trace renamed to `demand-trace-<wall ms>.jsonl`, and the oldest beyond
/// [`KEEP`] removed.
fn set_aside(state: &Path, path: &Path) -> std::io::Result<()> {
    if path.exists() {
        let wall_ms = crate::actors::wall_ms();
        std::fs::rename(path, state.join(format!("demand-trace-{wall_ms}.jsonl")))?;
    }
    let mut kept: Vec<PathBuf> = std::fs::read_dir(state)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("demand-trace-") && n.ends_with(".jsonl"))
        })
        .collect();
    // Wall times of equal width sort by name as by time.
    kept.sort();
    let excess = kept.len().saturating_sub(KEEP);
    for old in &kept[..excess] {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Trace;

    #[test]
    fn a_step_is_the_mean_of_its_rounds_and_steps_follow_each_other() {
        let mut recorder = DemandRecorder::new(vec!["shop".into(), "blog".into()], 60, 3);
        assert_eq!(recorder.round(&[("shop", 10.0), ("blog", 1.0)]), None);
        assert_eq!(recorder.round(&[("shop", 20.0)]), None);
        let first = recorder.round(&[("shop", 30.0), ("blog", 2.0)]).unwrap();
        assert_eq!(first.t_s, 0);
        assert_eq!(first.load["shop"], 20.0);
        // blog was not measured in one round of three: 0 there.
        assert_eq!(first.load["blog"], 1.0);
        for _ in 0..2 {
            assert_eq!(recorder.round(&[("shop", 5.0)]), None);
        }
        let second = recorder.round(&[("shop", 5.0)]).unwrap();
        assert_eq!((second.t_s, second.load["shop"]), (60, 5.0));
    }

    #[test]
    fn a_start_keeps_the_last_trace_aside_and_the_new_one_reads_as_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let header = Header {
            trace: FORMAT.into(),
            step_s: 60,
            accounts: vec![TraceAccount {
                name: "shop".into(),
                min_servers: 1,
                max_servers: 3,
                target_load: 20.0,
                priority: 10,
            }],
            source: "test".into(),
            licence: "test".into(),
        };
        for run in 0..9 {
            let sender = start(dir.path(), header.clone()).unwrap();
            let mut recorder = DemandRecorder::new(vec!["shop".into()], 60, 2);
            for round in 0..4 {
                if let Some(step) = recorder.round(&[("shop", f64::from(run * 10 + round))]) {
                    sender.send(step);
                }
            }
            drop(sender);
            // The writer thread drains its queue once the sender is gone.
            let path = dir.path().join(FILE);
            let mut text = String::new();
            for _ in 0..200 {
                text = std::fs::read_to_string(&path).unwrap();
                if text.lines().count() == 3 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let trace = Trace::parse(&text).unwrap();
            assert_eq!(trace.steps.len(), 2);
            assert_eq!(trace.steps[1].load["shop"], f64::from(run * 10) + 2.5);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("demand-trace-")
            })
            .count();
        assert_eq!(aside, KEEP);
    }
}
