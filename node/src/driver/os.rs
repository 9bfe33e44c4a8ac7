//! The few operating-system facts the driver needs: signals to a process or a group, and
//! what `/proc/<pid>/stat` says about a process. Each call is a syscall or a tiny read.

use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

fn pid_of(pid: u32) -> Option<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .map(Pid::from_raw)
}

/// Sends `signal` to one process; false if it is not there.
pub fn signal_process(pid: u32, signal: Signal) -> bool {
    pid_of(pid).is_some_and(|pid| kill(pid, signal).is_ok())
}

/// Sends `signal` to a whole process group; false if the group is empty.
pub fn signal_group(pgid: u32, signal: Signal) -> bool {
    pid_of(pgid).is_some_and(|pgid| killpg(pgid, signal).is_ok())
}

/// Reaps `pid`, a child of this process, if it has exited: `Some(code)` once it has (the
/// code is `None` after a signal, or when it is not ours to wait for), `None` while it runs.
pub fn reap_child(pid: u32) -> Option<Option<i32>> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let Some(pid) = pid_of(pid) else {
        return Some(None);
    };
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(Some(code)),
        Ok(WaitStatus::Signaled(..)) => Some(None),
        Ok(_) => None,
        Err(_) => Some(None),
    }
}

/// The parent of `pid`, if it is running.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Whether any process is left in the group (signal 0 checks without sending).
pub fn group_exists(pgid: u32) -> bool {
    pid_of(pgid).is_some_and(|pgid| killpg(pgid, None).is_ok())
}

/// The fields of `/proc/<pid>/stat` after the command name, which may itself hold spaces
/// and parentheses; `None` if the process is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// Whether `pid` still exists and is not a zombie. A zombie runs nothing; if its parent
/// (the guard) died, it waits for a reaper we do not control, so it counts as gone.
pub fn process_running(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|fields| fields.first().cloned())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// The process group of `pid`, if it is running.
pub fn process_group_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// User plus system CPU time of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let fields = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of stat; the list starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (USER_HZ), for turning ticks into seconds.
pub fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        // USER_HZ is 100 on every Linux ABI.
        _ => 100.0,
    }
}

/// Waits until `pid` is no longer running, re-sending SIGKILL to it now and then. It never
/// gives up: starting another workload beside one that will not die would break S-3.
pub async fn wait_gone(pid: u32) {
    let mut waited = Duration::ZERO;
    let step = Duration::from_millis(5);
    while process_running(pid) {
        if waited >= Duration::from_secs(2) && waited.as_millis() % 2000 < 5 {
            tracing::warn!(pid, "workload still running after SIGKILL; waiting");
            signal_process(pid, Signal::SIGKILL);
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_stat() {
        let me = std::process::id();
        assert!(process_running(me));
        assert!(cpu_ticks(me).is_some());
        assert_eq!(
            process_group_of(me),
            u32::try_from(nix::unistd::getpgrp().as_raw()).ok()
        );
        assert!(!process_running(u32::MAX));
        assert!(ticks_per_second() > 0.0);
    }
}
