//! The end of `leasehold demo --machines`: the re-image of the machine that moved, step by
//! step with its timings (the gateway's audit log and `/v1/servers`), and a verdict from
//! evidence: the machine's boots as the harness played them, each with the event log of
//! the node agent its image started. Printed for a person, and as JSON for `--report`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leasehold_chaos_tests::harness::evidence::{
    Running, mono_now_ns, node_events, running, violations,
};
use leasehold_chaos_tests::harness::machines::BootRecord;
use leasehold_node::event_log::EventKind;
use serde_json::{Value, json};

use super::machines_table::{SITE, seconds, steps};
use super::run::wall_ms;
use super::site::Started;
use super::summary::round1;
use crate::cli::status::text;

/// The audit kinds of machines (docs/machines.md), counted in the summary.
pub const MACHINE_KINDS: [&str; 6] = [
    "reimage",
    "booted",
    "fence",
    "stale_boot",
    "machine_failed",
    "bmc_unreachable",
];
/// Scheduling delay the S-1 check tolerates past a lease's end on a busy machine, as
/// tests/machines.rs does.
const STOP_SLACK: Duration = Duration::from_millis(500);

/// The live edit, as the demo made it.
#[derive(Debug, Clone)]
pub struct Edit {
    /// When the file was written (wall clock).
    pub wall_ms: u64,
    /// What changed, for a person.
    pub change: String,
    /// The machine that served `from` then, and its epoch.
    pub machine: String,
    pub from: String,
    pub to: String,
    pub epoch_before: u64,
}

/// What the run gathered, for the summary to judge.
pub struct Gathered {
    /// When the live view began (the gateway ready), wall clock.
    pub start_wall_ms: u64,
    pub duration: Duration,
    pub interrupted: bool,
    /// Why the script did not reach its end (a timeout), if it did not.
    pub failure: Option<String>,
    pub edit: Option<Edit>,
    /// Every audit record, oldest first.
    pub audit: Vec<Value>,
    /// `/v1/servers` just before the stop.
    pub servers: Vec<Value>,
    /// Each machine's boots that started an agent, as the player recorded them.
    pub boots: Vec<(String, Vec<BootRecord>)>,
    /// The node work dirs of the process servers.
    pub process_works: Vec<PathBuf>,
    pub started: Vec<Started>,
    pub left: Vec<Started>,
    pub work_dir: String,
}

/// One boot of the machine that moved, from its record and its node agent's event log.
#[derive(Debug, Clone)]
pub struct BootSeen {
    /// 1 for the machine's first boot.
    pub number: usize,
    /// `leasehold.epoch` of its kernel command line.
    pub epoch: Option<u64>,
    pub work: PathBuf,
    pub runs: Vec<Running>,
    /// How its last workload ended: as its log says, by the power going off, or not yet.
    pub ended: String,
    /// Its last workload still ran when the demo stopped.
    pub running_at_end: bool,
    pub off_mono_ns: Option<u64>,
}

/// One check of the verdict.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The re-image of the machine that moved.
#[derive(Debug, Clone)]
pub struct Reimage {
    pub edit: Edit,
    /// Its epoch once it serves the new account.
    pub epoch_after: Option<u64>,
    /// Its audit records from the edit on.
    pub timeline: Vec<Value>,
    /// The steps of its last boot, from `/v1/servers`.
    pub steps: Vec<(String, u64)>,
    /// reclaim → lease_ended, reimage → booted (audit log); booted → workload healthy
    /// (the new boot's log); the edit → workload healthy.
    pub drain_ms: Option<u64>,
    pub reimage_ms: Option<u64>,
    pub workload_ms: Option<u64>,
    pub edit_to_serving_ms: Option<u64>,
    pub boots: Vec<BootSeen>,
}

pub struct MachineSummary {
    pub gathered: Gathered,
    pub reimage: Option<Reimage>,
    pub checks: Vec<Check>,
    pub holds: bool,
    pub node_logs: usize,
    pub violations: Vec<String>,
    /// (wall ms, mono ns) read together: places the node logs' monotonic stamps on the
    /// wall clock of the audit log.
    clocks: (u64, u64),
}

impl MachineSummary {
    pub fn judge(gathered: Gathered) -> MachineSummary {
        let clocks = (wall_ms(), mono_now_ns());
        let mut works: Vec<&Path> = gathered
            .process_works
            .iter()
            .map(PathBuf::as_path)
            .collect();
        for (_, boots) in &gathered.boots {
            works.extend(boots.iter().map(|boot| boot.work.as_path()));
        }
        let violations: Vec<String> = match violations(&works, STOP_SLACK) {
            Ok(found) => found
                .into_iter()
                .map(|(work, violation)| format!("{work}: {violation}"))
                .collect(),
            Err(error) => vec![format!("cannot read a node event log: {error}")],
        };
        let reimage = gathered
            .edit
            .clone()
            .map(|edit| reimage(&gathered, edit, clocks.1));
        let checks = match &reimage {
            Some(reimage) => checks(&gathered, reimage, &violations, works.len()),
            None => vec![Check {
                name: "reached",
                ok: false,
                detail: gathered.failure.clone().unwrap_or_else(|| {
                    "the demo ended before its live edit: no re-image to judge".to_owned()
                }),
            }],
        };
        let holds = checks.iter().all(|check| check.ok);
        MachineSummary {
            node_logs: works.len(),
            gathered,
            reimage,
            checks,
            holds,
            violations,
            clocks,
        }
    }

    /// Seconds since the live view began, of a wall-clock stamp.
    fn t(&self, wall_ms: u64) -> f64 {
        (wall_ms as f64 - self.gathered.start_wall_ms as f64) / 1000.0
    }

    /// [`Self::t`] of a node log's monotonic stamp.
    fn t_mono(&self, mono_ns: u64) -> f64 {
        let (wall, mono) = self.clocks;
        let wall_of = wall as f64 - (mono as f64 - mono_ns as f64) / 1e6;
        (wall_of - self.gathered.start_wall_ms as f64) / 1000.0
    }

    /// How many audit records of each machine kind.
    fn machine_events(&self) -> Vec<(&'static str, usize)> {
        MACHINE_KINDS
            .iter()
            .map(|kind| {
                let count = self
                    .gathered
                    .audit
                    .iter()
                    .filter(|r| r["kind"] == *kind)
                    .count();
                (*kind, count)
            })
            .collect()
    }

    /// The summary for a person.
    pub fn render(&self) -> String {
        let g = &self.gathered;
        let mut out = String::new();
        let ended = if g.interrupted {
            "interrupted after "
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "leasehold demo --machines: summary ({SITE}; {ended}{:.1} s; t = seconds after the gateway was ready)",
            g.duration.as_secs_f64()
        );
        if let Some(failure) = &g.failure {
            let _ = writeln!(out, "  FAILED: {failure}");
        }
        if let Some(r) = &self.reimage {
            self.render_reimage(&mut out, r);
        }
        let events: Vec<String> = self
            .machine_events()
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        let _ = writeln!(
            out,
            "  machine records in the audit log: {}",
            events.join(", ")
        );
        let verdict = match (&self.reimage, self.holds) {
            (None, _) => "not reached",
            (Some(_), true) => "holds",
            (Some(_), false) => "DOES NOT HOLD",
        };
        let _ = writeln!(out, "  verdict: {verdict}");
        for check in &self.checks {
            let mark = if check.ok { "✓" } else { "✗" };
            let _ = writeln!(out, "    {mark} {}: {}", check.name, check.detail);
        }
        for violation in &self.violations {
            let _ = writeln!(out, "    violation: {violation}");
        }
        let _ = writeln!(
            out,
            "  processes: {} started, {} left running{}",
            g.started.len(),
            g.left.len(),
            g.left
                .iter()
                .map(|p| format!(" ({} pid {})", p.name, p.pid))
                .collect::<String>()
        );
        out
    }

    fn render_reimage(&self, out: &mut String, r: &Reimage) {
        let e = &r.edit;
        let _ = writeln!(
            out,
            "  live edit at t+{:.1}s: {} ({} served {} under e{})",
            self.t(e.wall_ms),
            e.change,
            e.machine,
            e.from,
            e.epoch_before
        );
        let after = r
            .epoch_after
            .map_or("not served yet".to_owned(), |epoch| format!("e{epoch}"));
        let _ = writeln!(
            out,
            "  re-image of {}: {} e{} → {} {after}",
            e.machine, e.from, e.epoch_before, e.to
        );
        for record in &r.timeline {
            let t = format!("t+{:.1}s", self.t(record["wall_ms"].as_u64().unwrap_or(0)));
            let _ = writeln!(
                out,
                "    {t:<8} #{:<3} {:<12} {}",
                text(&record["seq"]),
                text(&record["kind"]),
                text(&record["reason"])
            );
        }
        if !r.steps.is_empty() {
            let list: Vec<String> = r
                .steps
                .iter()
                .map(|(step, ms)| format!("{step} {ms} ms"))
                .collect();
            let total: u64 = r.steps.iter().map(|(_, ms)| ms).sum();
            let _ = writeln!(
                out,
                "  steps of its boot (GET /v1/servers, last_boot): {}; {total} ms in all",
                list.join(", ")
            );
        }
        let ms = |value: Option<u64>| value.map_or("-".to_owned(), |ms| format!("{ms} ms"));
        let _ = writeln!(
            out,
            "  drain (reclaim → lease_ended) {}; re-image (reimage → booted) {}; workload (booted → healthy) {}; edit → serving {}: {}",
            ms(r.drain_ms),
            ms(r.reimage_ms),
            ms(r.workload_ms),
            e.to,
            r.edit_to_serving_ms.map_or("-".to_owned(), seconds)
        );
        let _ = writeln!(
            out,
            "  boots of {} (the machine player's records, each boot's node event log):",
            e.machine
        );
        for boot in &r.boots {
            let _ = writeln!(out, "    {}", self.boot_line(boot));
        }
    }

    fn boot_line(&self, boot: &BootSeen) -> String {
        let epoch = boot
            .epoch
            .map_or("e?".to_owned(), |epoch| format!("e{epoch}"));
        let runs: Vec<String> = boot
            .runs
            .iter()
            .map(|run| {
                let to = self.run_end(boot, run);
                let to = to.map_or("the end".to_owned(), |t| format!("t+{t:.1}s"));
                format!(
                    "{} from t+{:.1}s to {to}",
                    run.account,
                    self.t(run.from_wall_ms)
                )
            })
            .collect();
        let runs = if runs.is_empty() {
            "no workload".to_owned()
        } else {
            runs.join(", ")
        };
        let off = boot.off_mono_ns.map_or(String::new(), |off| {
            format!(", power off at t+{:.1}s", self.t_mono(off))
        });
        format!(
            "boot {} under {epoch}: {runs} ({}){off}",
            boot.number, boot.ended
        )
    }

    /// When `run` of `boot` ended, unless it still ran when the demo stopped.
    fn run_end(&self, boot: &BootSeen, run: &Running) -> Option<f64> {
        let last = boot.runs.last().is_some_and(|r| std::ptr::eq(r, run));
        (!(last && boot.running_at_end)).then(|| self.t_mono(run.to_mono_ns))
    }

    /// The report, as `--report` writes it.
    pub fn to_json(&self) -> Value {
        let g = &self.gathered;
        let process = |p: &Started| json!({"name": p.name, "pid": p.pid});
        let events: serde_json::Map<String, Value> = self
            .machine_events()
            .into_iter()
            .map(|(kind, count)| (kind.to_owned(), json!(count)))
            .collect();
        json!({
            "mode": "machines",
            "site": SITE,
            "duration_s": round1(g.duration.as_secs_f64()),
            "interrupted": g.interrupted,
            "failure": g.failure,
            "reimage": self.reimage.as_ref().map(|r| self.reimage_json(r)),
            "machine_events": events,
            "verdict": {
                "holds": self.holds,
                "checks": self.checks.iter().map(|c| json!({"check": c.name, "ok": c.ok,
                    "detail": c.detail})).collect::<Vec<_>>(),
            },
            "node_logs": self.node_logs,
            "safety_violations": self.violations.len(),
            "violations": self.violations,
            "processes": g.started.iter().map(process).collect::<Vec<_>>(),
            "processes_left": g.left.iter().map(process).collect::<Vec<_>>(),
            "work_dir": g.work_dir,
        })
    }

    fn reimage_json(&self, r: &Reimage) -> Value {
        let e = &r.edit;
        let boots: Vec<Value> = r
            .boots
            .iter()
            .map(|boot| {
                json!({
                    "boot": boot.number,
                    "epoch": boot.epoch,
                    "work": boot.work.display().to_string(),
                    "runs": boot.runs.iter().map(|run| json!({
                        "account": run.account,
                        "epoch": run.epoch,
                        "from_t_s": round1(self.t(run.from_wall_ms)),
                        "to_t_s": self.run_end(boot, run).map(round1),
                        "from_mono_ns": run.from_mono_ns,
                        "to_mono_ns": run.to_mono_ns,
                    })).collect::<Vec<_>>(),
                    "ended": boot.ended,
                    "running_at_end": boot.running_at_end,
                    "off_t_s": boot.off_mono_ns.map(|off| round1(self.t_mono(off))),
                })
            })
            .collect();
        json!({
            "server": e.machine,
            "from": e.from,
            "to": e.to,
            "edit": e.change,
            "edit_t_s": round1(self.t(e.wall_ms)),
            "epoch_before": e.epoch_before,
            "epoch_after": r.epoch_after,
            "steps": r.steps.iter().map(|(step, ms)| json!({"step": step, "ms": ms}))
                .collect::<Vec<_>>(),
            "steps_source": "GET /v1/servers: the machine's last_boot",
            "drain_ms": r.drain_ms,
            "reimage_ms": r.reimage_ms,
            "workload_ms": r.workload_ms,
            "edit_to_serving_ms": r.edit_to_serving_ms,
            "timeline": r.timeline.iter().map(|record| json!({
                "t_s": round1(self.t(record["wall_ms"].as_u64().unwrap_or(0))),
                "seq": record["seq"],
                "kind": record["kind"],
                "account": record["account"],
                "epoch": record["epoch"],
                "reason": record["reason"],
            })).collect::<Vec<_>>(),
            "boots": boots,
        })
    }
}

/// The re-image that followed `edit`, from the audit log, `/v1/servers` and the boots.
fn reimage(g: &Gathered, edit: Edit, now_mono_ns: u64) -> Reimage {
    let entry = g.servers.iter().find(|s| s["id"] == edit.machine.as_str());
    let epoch_after = entry
        .filter(|s| s["state"] == "serving" && s["account"] == edit.to.as_str())
        .and_then(|s| s["epoch"].as_u64())
        .filter(|epoch| *epoch > edit.epoch_before);
    let timeline: Vec<Value> = g
        .audit
        .iter()
        .filter(|r| {
            r["server"] == edit.machine.as_str()
                && r["wall_ms"].as_u64().unwrap_or(0) >= edit.wall_ms
        })
        .cloned()
        .collect();
    let at = |kind: &str, after: u64| {
        timeline
            .iter()
            .filter(|r| r["kind"] == kind)
            .filter(|r| {
                epoch_after.is_none()
                    || kind == "reclaim"
                    || kind == "lease_ended"
                    || r["epoch"].as_u64() == epoch_after
            })
            .filter_map(|r| r["wall_ms"].as_u64())
            .find(|wall| *wall >= after)
    };
    let reclaim = at("reclaim", 0);
    let ended = reclaim.and_then(|from| at("lease_ended", from));
    let started = at("reimage", 0);
    let booted = started.and_then(|from| at("booted", from));
    let since = |from: Option<u64>, to: Option<u64>| Some(to?.saturating_sub(from?));
    let boots: Vec<BootSeen> = g
        .boots
        .iter()
        .find(|(machine, _)| *machine == edit.machine)
        .map(|(_, boots)| {
            boots
                .iter()
                .enumerate()
                .map(|(ix, boot)| boot_seen(ix + 1, boot, now_mono_ns))
                .collect()
        })
        .unwrap_or_default();
    let healthy = epoch_after.and_then(|epoch| {
        let boot = boots.iter().rev().find(|b| b.epoch == Some(epoch))?;
        healthy_wall_ms(&boot.work, epoch)
    });
    let steps = entry
        .filter(|s| s["machine"]["image"] == edit.to.as_str())
        .map(|s| steps(&s["machine"]["last_boot"]))
        .unwrap_or_default();
    Reimage {
        epoch_after,
        steps,
        drain_ms: since(reclaim, ended),
        reimage_ms: since(started, booted),
        workload_ms: since(booted, healthy),
        edit_to_serving_ms: since(Some(edit.wall_ms), healthy),
        timeline,
        boots,
        edit,
    }
}

fn boot_seen(number: usize, boot: &BootRecord, now_mono_ns: u64) -> BootSeen {
    let epoch = boot
        .cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix("leasehold.epoch="))
        .and_then(|epoch| epoch.parse().ok());
    let until = boot.off_mono_ns.unwrap_or(now_mono_ns);
    let runs = running(&boot.work, until).unwrap_or_default();
    let events = node_events(&boot.work).unwrap_or_default();
    let stopped = events.iter().rev().find_map(|event| match &event.kind {
        EventKind::WorkloadStopped { cause, .. } => Some(
            serde_json::to_value(cause)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{cause:?}")),
        ),
        _ => None,
    });
    let running_at_end = !runs.is_empty() && stopped.is_none() && boot.off_mono_ns.is_none();
    let ended = match (runs.last(), stopped, boot.off_mono_ns) {
        (None, _, _) => "its log shows no workload".to_owned(),
        (Some(_), Some(cause), _) => format!("workload_stopped in its log, cause {cause}"),
        (Some(_), None, Some(_)) => "ended by the power going off".to_owned(),
        (Some(_), None, None) => "still running when the demo stopped".to_owned(),
    };
    BootSeen {
        number,
        epoch,
        work: boot.work.clone(),
        runs,
        ended,
        running_at_end,
        off_mono_ns: boot.off_mono_ns,
    }
}

/// When the workload of `epoch` was first healthy, by the node log in `work`.
fn healthy_wall_ms(work: &Path, epoch: u64) -> Option<u64> {
    node_events(work)
        .ok()?
        .into_iter()
        .find_map(|event| match event.kind {
            EventKind::WorkloadHealthy { epoch: e, .. } if e.value() == epoch => {
                Some(event.wall_ms)
            }
            _ => None,
        })
}

/// The verdict's checks: moved, a higher epoch, the old workload stopped before the new
/// one started on the machine, no safety violation.
fn checks(g: &Gathered, r: &Reimage, violations: &[String], logs: usize) -> Vec<Check> {
    let e = &r.edit;
    let entry = g.servers.iter().find(|s| s["id"] == e.machine.as_str());
    let now = entry.map_or("not in /v1/servers".to_owned(), |s| {
        format!(
            "{} {} under e{}",
            text(&s["state"]),
            text(&s["account"]),
            text(&s["epoch"])
        )
    });
    let moved = Check {
        name: "moved",
        ok: r.epoch_after.is_some(),
        detail: format!(
            "{} served {} under e{} at the edit; at the end it is {now} (GET /v1/servers)",
            e.machine, e.from, e.epoch_before
        ),
    };
    let old = r
        .boots
        .iter()
        .rev()
        .find(|b| b.epoch == Some(e.epoch_before));
    let new = r
        .epoch_after
        .and_then(|after| r.boots.iter().rev().find(|b| b.epoch == Some(after)));
    let epoch = match (old, new) {
        (Some(old), Some(new)) => Check {
            name: "epoch",
            ok: new.epoch > old.epoch,
            detail: format!(
                "boot {} booted under e{}, boot {} under e{} (their kernel command lines; /v1/servers agrees)",
                old.number,
                e.epoch_before,
                new.number,
                new.epoch.unwrap_or(0)
            ),
        },
        _ => Check {
            name: "epoch",
            ok: false,
            detail: format!(
                "no boot of {} under e{} and a later one under a higher epoch among its {} boots",
                e.machine,
                e.epoch_before,
                r.boots.len()
            ),
        },
    };
    let order = order_check(e, old, new);
    let safety = Check {
        name: "safety",
        ok: violations.is_empty(),
        detail: format!(
            "{} violations of S-1..S-3 in the {logs} node event logs (every boot of the machines, the process servers)",
            violations.len()
        ),
    };
    vec![moved, epoch, order, safety]
}

/// The old account's workload ran only on the old boot, the new one's only on the new
/// boot, and the old one had ended (monotonic clock) before the new one started.
fn order_check(e: &Edit, old: Option<&BootSeen>, new: Option<&BootSeen>) -> Check {
    let fail = |detail: String| Check {
        name: "order",
        ok: false,
        detail,
    };
    let (Some(old), Some(new)) = (old, new) else {
        return fail("the two boots to compare were not found".to_owned());
    };
    let only = |boot: &BootSeen, account: &str| boot.runs.iter().all(|run| run.account == account);
    if !only(old, &e.from) || !only(new, &e.to) {
        return fail(format!(
            "boot {} ran {:?}, boot {} ran {:?}",
            old.number,
            old.runs.iter().map(|r| &r.account).collect::<Vec<_>>(),
            new.number,
            new.runs.iter().map(|r| &r.account).collect::<Vec<_>>()
        ));
    }
    let ended = old.runs.iter().map(|run| run.to_mono_ns).max();
    let started = new.runs.iter().map(|run| run.from_mono_ns).min();
    match (ended, started) {
        (Some(ended), Some(started)) if ended < started => Check {
            name: "order",
            ok: true,
            detail: format!(
                "{}'s workload on {} ended {} before {}'s started (boot {}'s and boot {}'s logs, monotonic clock; {})",
                e.from,
                e.machine,
                seconds((started - ended) / 1_000_000),
                e.to,
                old.number,
                new.number,
                old.ended
            ),
        },
        (Some(ended), Some(started)) => fail(format!(
            "{}'s workload ran until {} ns, {}'s started at {} ns: they overlap",
            e.from, ended, e.to, started
        )),
        (None, _) => fail(format!(
            "boot {}'s log shows no {} workload",
            old.number, e.from
        )),
        (_, None) => fail(format!(
            "boot {}'s log shows no {} workload",
            new.number, e.to
        )),
    }
}
