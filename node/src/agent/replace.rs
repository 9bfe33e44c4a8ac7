//! An agent replaced in place on SIGUSR2 (crate::handover): the old image's half, which
//! writes the handover and executes the binary again, and the new image's check of what it
//! found before it adopts the workload.

use std::os::unix::process::CommandExt as _;
use std::path::Path;

use crate::actors::Server;
use crate::actors::messages::{PrepareHandover, ReplacementFailed};
use crate::agent::recover::Orphan;
use crate::driver::os;
use crate::event_log::{EventKind, EventLog};
use crate::handover::{self, Handover};
use crate::model::LEASE_END_MARGIN;

/// Writes the handover and re-executes `exe` with this process's arguments. Returns only
/// if that did not happen, saying why; the agent then goes on as it was.
pub async fn replace_in_place(
    server: &actix::Addr<Server>,
    log: &EventLog,
    work: &Path,
    exe: &Path,
) -> String {
    let handover = match server.send(PrepareHandover).await {
        Ok(Ok(handover)) => handover,
        Ok(Err(why)) => return why,
        Err(_) => return "the agent is stopping".into(),
    };
    if let Some(handover) = &handover {
        // Past this time nothing but the guard would stop the workload: it kills it then,
        // unless the new image has taken the lease over and removed the deadline.
        let deadline = handover.lease_until.minus(LEASE_END_MARGIN);
        let (dir, written) = (work.to_path_buf(), handover.clone());
        let wrote = tokio::task::spawn_blocking(move || {
            handover::set_deadline(&dir, deadline)?;
            handover::write(&dir, &written)
        })
        .await;
        match wrote {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                forget(server, work);
                return format!("cannot write the handover in {}: {error}", work.display());
            }
            Err(error) => {
                forget(server, work);
                return format!("cannot write the handover: {error}");
            }
        }
    }
    // Synced: every line before it is on disk before the image goes.
    log.append_synced(EventKind::AgentReplaced {
        agent_pid: std::process::id(),
        exe: exe.display().to_string(),
    })
    .await;
    match &handover {
        Some(handover) => tracing::info!(
            exe = %exe.display(),
            account = %handover.pointer.account,
            epoch = %handover.pointer.epoch,
            pid = handover.workload_pid,
            "SIGUSR2: replacing this agent in place; its workload runs on"
        ),
        None => {
            tracing::info!(exe = %exe.display(), "SIGUSR2: replacing this agent in place; no workload runs")
        }
    }
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    forget(server, work);
    format!("cannot execute {}: {error}", exe.display())
}

/// A handover that will not be taken: the files go, this image keeps the lease, and its
/// commands are acted on again.
fn forget(server: &actix::Addr<Server>, work: &Path) {
    let _ = std::fs::remove_file(work.join(handover::HANDOVER_FILE));
    handover::clear_deadline(work);
    server.do_send(ReplacementFailed);
}

/// Whether the new image may adopt what `handover` describes: it was written by this very
/// process (an `exec`, not another agent's start), the event log's running workload is the
/// same one (account, epoch, pid and guard), and the workload and its guard still run, the
/// guard as this process's child and the workload as the guard's.
pub fn adoptable(handover: &Handover, orphan: Option<&Orphan>) -> Result<(), String> {
    let me = std::process::id();
    if handover.agent_pid != me {
        return Err(format!(
            "it was written by agent {}, and this is {me}",
            handover.agent_pid
        ));
    }
    let pointer = &handover.pointer;
    let same = orphan.is_some_and(|orphan| {
        orphan.account == pointer.account
            && orphan.epoch == pointer.epoch
            && orphan.pid == Some(handover.workload_pid)
            && orphan.pgid == Some(handover.guard_pid)
    });
    if !same {
        return Err(format!(
            "the event log's running workload is {orphan:?}, not {} under {} (pid {})",
            pointer.account, pointer.epoch, handover.workload_pid
        ));
    }
    if !os::process_running(handover.guard_pid) || os::parent_of(handover.guard_pid) != Some(me) {
        return Err(format!(
            "its guard (pid {}) is gone or not this agent's child",
            handover.guard_pid
        ));
    }
    // Its parent, not its group: a workload may start a session of its own.
    if !os::process_running(handover.workload_pid)
        || os::parent_of(handover.workload_pid) != Some(handover.guard_pid)
    {
        return Err(format!(
            "the workload (pid {}) is gone or not its guard's child",
            handover.workload_pid
        ));
    }
    Ok(())
}
