//! The `members` scenario's federation and the fault of its own (docs/chaos.md): the
//! founders start without the spare site, as the founding members; a `member-change`
//! adds the spare by the procedure docs/ownership.md gives (every founder's config names
//! it, then it starts) and, at its end, removes it (their configs leave it out; once every
//! founder runs the set without it, it stops). The configs with the spare are kept beside
//! the federation, in `members/`, to write them back at each change.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::faults::wall_ms;
use crate::harness::admin::get_json;
use crate::harness::federation::Federation;
use crate::harness::site::{joining, save_config, without_site};
use crate::harness::wait_for;

/// How long every founder may take to run the set without the spare once their configs
/// leave it out: a step waits an ownership TTL after each site took its set, and sites
/// hear each other every renew interval.
const SETTLED_WITHIN: Duration = Duration::from_secs(30);

/// What a member change did, with the times the checks place the founders' audit
/// records between (wall ms).
#[derive(Debug, Clone)]
pub struct MemberChanged {
    /// The spare's index (after the founders).
    pub spare: usize,
    /// When the founders' configs named the spare.
    pub added_wall_ms: u64,
    /// When they left it out again.
    pub removed_wall_ms: Option<u64>,
    /// When the spare stopped.
    pub left_wall_ms: Option<u64>,
    /// Every founder ran the founders alone again, as its `/v1/status` said, or why not.
    pub settled: Result<String, String>,
}

/// The founders of a federation whose last site is the spare.
fn founders(federation: &Federation) -> usize {
    federation.sites.len() - 1
}

fn full_config(federation: &Federation, site: usize) -> PathBuf {
    federation.path(&format!("members/{}.toml", federation.sites[site].name))
}

/// Before anything starts: keeps every config as written (with the spare), and leaves the
/// founders' without it and the spare's without founding members.
pub fn prepare(federation: &Federation) -> Result<(), String> {
    let spare = founders(federation);
    let spare_name = federation.sites[spare].name.clone();
    std::fs::create_dir_all(federation.path("members"))
        .map_err(|error| format!("cannot create the members folder: {error}"))?;
    for (index, site) in federation.sites.iter().enumerate() {
        let text = std::fs::read_to_string(&site.config)
            .map_err(|error| format!("cannot read {}: {error}", site.config.display()))?;
        save_config(&full_config(federation, index), &text)?;
        let started = if index == spare {
            joining(&text)
        } else {
            without_site(&text, &spare_name)
        };
        save_config(&site.config, &started)?;
    }
    Ok(())
}

/// The spare added: every founder's config names it, then it starts with its agents.
pub fn add(federation: &mut Federation, spare: usize) -> Result<MemberChanged, String> {
    check_spare(federation, spare)?;
    for founder in 0..spare {
        let full = std::fs::read_to_string(full_config(federation, founder))
            .map_err(|error| format!("cannot read the kept config: {error}"))?;
        save_config(&federation.sites[founder].config, &full)?;
    }
    let added_wall_ms = wall_ms();
    federation.start_gateway(spare)?;
    federation.start_nodes_of(spare)?;
    Ok(MemberChanged {
        spare,
        added_wall_ms,
        removed_wall_ms: None,
        left_wall_ms: None,
        settled: Err("not removed yet".into()),
    })
}

/// The spare removed: the founders' configs leave it out; once every founder runs the
/// founders alone, the spare's agents and gateway stop.
pub fn remove(federation: &mut Federation, changed: &mut MemberChanged) -> Result<(), String> {
    let spare = changed.spare;
    let spare_name = federation.sites[spare].name.clone();
    for founder in 0..spare {
        let full = std::fs::read_to_string(full_config(federation, founder))
            .map_err(|error| format!("cannot read the kept config: {error}"))?;
        save_config(
            &federation.sites[founder].config,
            &without_site(&full, &spare_name),
        )?;
    }
    changed.removed_wall_ms = Some(wall_ms());
    let names: Vec<String> = federation.sites[..spare]
        .iter()
        .map(|site| site.name.clone())
        .collect();
    let expected = Value::from(names.clone());
    let began = std::time::Instant::now();
    changed.settled = wait_for(
        "every founder to run the founders alone",
        SETTLED_WITHIN,
        || {
            for (founder, name) in names.iter().enumerate() {
                let status = get_json(federation.admin(founder), "/v1/status")?;
                if status["members"]["running"] != expected {
                    return Err(format!("{name} runs {}", status["members"]["running"]));
                }
            }
            Ok(format!(
                "every founder ran [{}] {:.1} s after the edit",
                names.join(", "),
                began.elapsed().as_secs_f64()
            ))
        },
    );
    // Stopped whether or not they settled: the spare must not outlive its fault.
    federation.stop_nodes_of(spare, Signal::SIGTERM)?;
    federation.stop_gateway(spare, Signal::SIGTERM)?;
    changed.left_wall_ms = Some(wall_ms());
    changed.settled.clone().map(|_| ())
}

fn check_spare(federation: &Federation, spare: usize) -> Result<(), String> {
    if spare + 1 == federation.sites.len() && spare > 0 {
        Ok(())
    } else {
        Err(format!(
            "site {spare} is not the spare of a {}-site federation",
            federation.sites.len()
        ))
    }
}
