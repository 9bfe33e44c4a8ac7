//! What a command run by a test left behind: the test sets a tag of its own in the
//! command's environment ([`TAG`]), every process the command starts inherits it, and
//! [`tagged`] finds them in `/proc` however they were started (other process groups,
//! orphans). The evidence that "nothing of it is left" is then the machine's process table,
//! not what the command says about itself.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::sweep::{command_line, kill_marked_by, processes_with};

/// The environment variable a test tags a command's processes with.
pub const TAG: &str = "LEASEHOLD_TEST_TAG";

/// Every live process tagged `tag`, with its command line.
pub fn tagged(tag: &str) -> Vec<(u32, String)> {
    processes_with(TAG)
        .into_iter()
        .filter(|(_, value)| value == tag)
        .map(|(pid, _)| (pid, command_line(pid).unwrap_or_default()))
        .collect()
}

/// How many of `processes` have `what` in their command line.
pub fn count(processes: &[(u32, String)], what: &str) -> usize {
    processes
        .iter()
        .filter(|(_, line)| line.contains(what))
        .count()
}

/// Workload processes among `processes` (the demo workload itself, not its guard).
pub fn workloads(processes: &[(u32, String)]) -> usize {
    processes
        .iter()
        .filter(|(_, line)| line.contains(" workload --listen") && !line.contains(" guard "))
        .count()
}

/// Waits until `ready` holds for the processes tagged `tag`, or fails after `timeout`
/// with what was last seen.
pub fn wait_for_tagged(
    tag: &str,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&[(u32, String)]) -> bool,
) -> Result<(), String> {
    super::wait_for(what, timeout, || {
        let seen = tagged(tag);
        if ready(&seen) {
            Ok(())
        } else {
            Err(format!("{seen:#?}"))
        }
    })
}

/// A command a test started with its tag: dropped (the test passed, failed or panicked),
/// it kills the command and every process tagged with its tag, so a failed test leaves
/// nothing for the next one.
pub struct TaggedChild {
    pub child: Child,
    pub tag: String,
}

impl Drop for TaggedChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let tag = self.tag.clone();
        kill_marked_by(TAG, |value| value == tag);
    }
}

/// Sends `signal` to the tagged command and waits for it to exit, at most `timeout` (then
/// kills it and fails, saying what of it still runs).
pub fn signal_and_wait(
    tagged_child: &mut TaggedChild,
    signal: Signal,
    timeout: Duration,
) -> Result<ExitStatus, String> {
    let TaggedChild { child, tag } = tagged_child;
    let tag = tag.as_str();
    let pid = i32::try_from(child.id()).map_err(|_| "pid out of range".to_owned())?;
    nix::sys::signal::kill(Pid::from_raw(pid), signal)
        .map_err(|error| format!("cannot send {signal}: {error}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|error| error.to_string())? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "still running {timeout:?} after {signal}; tagged processes: {:#?}",
                tagged(tag)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
