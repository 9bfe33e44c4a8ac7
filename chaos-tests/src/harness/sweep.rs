//! Finds and kills every process a harness started, wherever it went: each child of a
//! [`super::process::ProcessGuard`] carries an environment marker naming its guard
//! (`LEASEHOLD_HARNESS_GUARD=<harness pid>.<guard number>`), which every process it starts
//! inherits (a node agent's workload guard and the workload itself run in process groups
//! of their own, so killing the agent's group does not reach them; the marker does).
//!
//! Three sweeps use it: a guard's own (its descendants, on drop), a whole harness's (every
//! guard of this process, when a signal ends it), and the orphans' (markers of a harness
//! process that no longer exists, e.g. a test binary killed with SIGKILL, swept when the
//! next harness starts), so one failure cannot leave processes for the next run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Whether a process with this pid exists and any of its threads has not exited yet.
/// The process's own state is not enough: its main thread shows as a zombie as soon as it
/// has exited, while its other threads may still be exiting (one in an fsync cannot be
/// interrupted), and the files, the journal's lock among them, are released only when
/// the last one has. A gateway started again on the same journal in that window found it
/// "in use by another process".
pub fn process_alive(pid: u32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.flatten().any(|thread| {
        std::fs::read_to_string(thread.path().join("stat"))
            .is_ok_and(|stat| state_of(&stat).is_some_and(|state| state != "Z" && state != "X"))
    })
}

/// The state in a `/proc/.../stat` line: it follows the parenthesised command name.
fn state_of(stat: &str) -> Option<&str> {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
}

/// The environment variable that marks a harness's processes.
pub const MARKER: &str = "LEASEHOLD_HARNESS_GUARD";

/// How long a sweep keeps killing: a node agent caught between two scans may still start
/// a workload, which the next scan finds.
const SWEEP_FOR: Duration = Duration::from_secs(5);

/// The marker of every live process (pid, marker value), read from `/proc/PID/environ`.
/// Processes that vanish or whose environment cannot be read are skipped.
pub fn marked_processes() -> Vec<(u32, String)> {
    processes_with(MARKER)
}

/// Every live process (not this one) whose environment has `variable`, with its value:
/// what a test uses to find every process a command it ran left behind, by a variable of
/// its own that the command's children inherit.
pub fn processes_with(variable: &str) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if let Some(value) = value_in(&environ, variable)
            && process_alive(pid)
        {
            found.push((pid, value));
        }
    }
    found
}

/// The value of `variable` in a NUL-separated environment block.
fn value_in(environ: &[u8], variable: &str) -> Option<String> {
    let prefix = format!("{variable}=");
    environ
        .split(|byte| *byte == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// The command line of process `pid` (arguments joined by spaces), if it still runs.
pub fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|byte| *byte == 0)
        .filter(|word| !word.is_empty())
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    Some(words.join(" "))
}

/// SIGKILL to every live process whose marker `matches`, again until none is left (or
/// [`SWEEP_FOR`] has passed); returns the pids killed.
pub fn kill_marked(matches: impl Fn(&str) -> bool) -> BTreeSet<u32> {
    kill_marked_by(MARKER, matches)
}

/// [`kill_marked`] for the environment variable `variable` (a test's own tag).
pub fn kill_marked_by(variable: &str, matches: impl Fn(&str) -> bool) -> BTreeSet<u32> {
    let deadline = Instant::now() + SWEEP_FOR;
    let mut killed = BTreeSet::new();
    loop {
        let targets: Vec<u32> = processes_with(variable)
            .into_iter()
            .filter(|(_, marker)| matches(marker))
            .map(|(pid, _)| pid)
            .collect();
        if targets.is_empty() || Instant::now() >= deadline {
            return killed;
        }
        for pid in targets {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
            killed.insert(pid);
        }
        // A killed process stays in /proc until its parent reaps it; process_alive skips
        // zombies, so the next scan sees only what still runs.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The harness pid a marker names.
fn owner_of(marker: &str) -> Option<u32> {
    marker.split_once('.')?.0.parse().ok()
}

/// Every process of this harness process's guards.
pub fn kill_all_of_this_harness() -> BTreeSet<u32> {
    let me = std::process::id();
    kill_marked(|marker| owner_of(marker) == Some(me))
}

/// Every process left by a harness process that is gone (killed before it could clean up).
pub fn kill_orphans() -> BTreeSet<u32> {
    kill_marked(|marker| owner_of(marker).is_some_and(|owner| !process_alive(owner)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_read_from_an_environment_block() {
        let block = b"PATH=/bin\0LEASEHOLD_HARNESS_GUARD=12.3\0HOME=/root\0";
        assert_eq!(value_in(block, MARKER).as_deref(), Some("12.3"));
        assert_eq!(value_in(b"PATH=/bin\0", MARKER), None);
        assert_eq!(owner_of("12.3"), Some(12));
        assert_eq!(owner_of("garbage"), None);
    }

    #[test]
    fn a_running_child_is_alive_and_one_that_exited_unreaped_is_not() {
        assert_eq!(
            state_of("42 (a) b) S 1 42"),
            Some("S"),
            "the last parenthesis"
        );
        let mut running = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        assert!(process_alive(running.id()));
        let _ = running.kill();
        let _ = running.wait();
        // Exited and not reaped: a zombie, whose every thread has exited.
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        let pid = exited.id();
        super::super::wait_for("the child to exit", Duration::from_secs(10), || {
            if process_alive(pid) {
                Err("alive".to_owned())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert!(
            std::fs::metadata(format!("/proc/{pid}")).is_ok(),
            "not reaped yet"
        );
        let _ = exited.wait();
        assert!(!process_alive(pid));
    }

    #[test]
    fn a_marked_child_and_its_own_child_in_another_group_are_found_and_killed() {
        use std::os::unix::process::CommandExt;
        let marker = format!("{}.sweep-test", std::process::id());
        // The shell starts a sleeper in a process group of its own, as a node agent's
        // workload guard is, then waits.
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "setsid sleep 60 & sleep 60"])
            .env(MARKER, &marker)
            .process_group(0)
            .spawn()
            .unwrap();
        let found = super::super::wait_for("both sleepers", Duration::from_secs(10), || {
            let mine: Vec<u32> = marked_processes()
                .into_iter()
                .filter(|(_, value)| *value == marker)
                .map(|(pid, _)| pid)
                .collect();
            if mine.len() >= 3 {
                Ok(mine)
            } else {
                Err(format!("{mine:?}"))
            }
        })
        .unwrap();
        let killed = kill_marked(|value| value == marker);
        let _ = shell.wait();
        for pid in found {
            assert!(killed.contains(&pid), "{pid} not killed: {killed:?}");
            assert!(!process_alive(pid), "{pid} still alive");
        }
    }
}
