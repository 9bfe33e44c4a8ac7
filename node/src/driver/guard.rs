//! `leasehold node guard`: the small parent of every workload, so that a workload never
//! outlives its agent. If the agent is killed with SIGKILL, nothing else would stop the
//! workload running past its lease, and a restarted agent could start a second account
//! beside it (S-1, S-3).
//!
//! The driver spawns the guard as the leader of a new process group; the workload inherits
//! that group. The guard writes the workload's pid to a file, waits for it, and exits with
//! its code. Whenever its parent is no longer the agent, it kills its whole group, itself
//! included.
//!
//! While an agent is replaced in place (crate::handover) its pid stays the same, so the
//! guard goes on; the old image leaves a deadline beside the pid file, the lease's end less
//! the stop margin, and the guard kills the group once that time comes, unless the new
//! image has taken the lease over and removed it by then (S-1 with no agent watching).

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::getpgrp;

/// How often the guard looks at its parent and its child. The agent's death is noticed
/// within this, plus the time to kill.
const POLL: Duration = Duration::from_millis(25);

/// Exit code when the workload could not be started at all (as a shell says it).
pub const SPAWN_FAILED: i32 = 127;

/// Runs `command args` under guard; returns the exit code for the guard itself.
pub fn run_guard(agent_pid: u32, pid_file: &Path, command: &str, args: &[String]) -> i32 {
    let mut child = match Command::new(command).args(args).spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!("leasehold guard: cannot start `{command}`: {error}");
            return SPAWN_FAILED;
        }
    };
    // Written beside and renamed, so the agent never reads half a pid.
    let partial = pid_file.with_extension("partial");
    let written = std::fs::write(&partial, format!("{}\n", child.id()))
        .and_then(|()| std::fs::rename(&partial, pid_file));
    if let Err(error) = written {
        eprintln!(
            "leasehold guard: cannot write {}: {error}",
            pid_file.display()
        );
        kill_group();
    }
    let deadline = pid_file.with_file_name(crate::handover::DEADLINE_FILE);
    loop {
        if std::os::unix::process::parent_id() != agent_pid {
            eprintln!("leasehold guard: agent {agent_pid} is gone; killing the workload");
            kill_group();
        }
        if crate::handover::read_deadline(&deadline)
            .is_some_and(|at| crate::clock::mono_now() >= at)
        {
            eprintln!(
                "leasehold guard: the lease ended while agent {agent_pid} was being replaced; killing the workload"
            );
            kill_group();
        }
        match child.try_wait() {
            Ok(Some(status)) => return exit_code(status),
            Ok(None) => {}
            Err(error) => {
                eprintln!("leasehold guard: cannot wait for the workload: {error}");
                kill_group();
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The workload's code, or 128 + the signal that ended it, as a shell reports it.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

fn kill_group() -> ! {
    // The guard is in the group too, so this normally does not return.
    let _ = killpg(getpgrp(), Signal::SIGKILL);
    std::process::exit(137);
}
