//! Ctrl-C (SIGINT) and SIGTERM for a program that runs a federation of child processes
//! (`leasehold chaos`, `leasehold demo`, a test binary): once [`watch`] is called, a
//! signal no longer kills the program outright (which would leave its children running,
//! each in a process group of its own) but is recorded here; [`super::wait_for`] and
//! [`sleep`] return early when it is, so the program unwinds promptly, its guards stop
//! every process it started, and it says what it kept. A second signal while stopping
//! sweeps every process of this harness at once ([`super::sweep`]) and exits.

use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::sweep;

/// The signal that asked this process to stop (0: none yet).
static REQUESTED: AtomicI32 = AtomicI32::new(0);
static WATCHING: Once = Once::new();

/// The signal that asked the process to stop, if one did.
pub fn requested() -> Option<Signal> {
    match REQUESTED.load(Ordering::Relaxed) {
        0 => None,
        number => Signal::try_from(number).ok(),
    }
}

/// The exit code a shell gives a program ended by `signal` (130 for SIGINT, 143 for
/// SIGTERM), for a program that stopped cleanly because of it.
pub fn exit_code(signal: Signal) -> u8 {
    128u8.saturating_add(signal as i32 as u8)
}

/// Records SIGINT and SIGTERM from now on instead of dying of them; `program` names the
/// process in what it prints. Installed once per process; the handlers are in place when
/// this returns, so no early signal kills the program with its children running.
pub fn watch(program: &'static str) -> Result<(), String> {
    let mut outcome = Ok(());
    WATCHING.call_once(|| outcome = install(program));
    outcome
}

fn install(program: &'static str) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the signal watcher: {error}"))?;
    let (mut int, mut term) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::interrupt()).map_err(|error| format!("SIGINT: {error}"))?,
            signal(SignalKind::terminate()).map_err(|error| format!("SIGTERM: {error}"))?,
        )
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                loop {
                    let signal = tokio::select! {
                        _ = int.recv() => Signal::SIGINT,
                        _ = term.recv() => Signal::SIGTERM,
                    };
                    let first = REQUESTED
                        .compare_exchange(0, signal as i32, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok();
                    if first {
                        eprintln!(
                            "\n{program}: {} received: stopping every process it started",
                            signal.as_str()
                        );
                    } else {
                        // Asked twice: the person wants it gone now; leave nothing behind.
                        let killed = sweep::kill_all_of_this_harness();
                        eprintln!(
                            "\n{program}: {} again: killed {} processes at once; exiting",
                            signal.as_str(),
                            killed.len()
                        );
                        std::process::exit(i32::from(exit_code(signal)));
                    }
                }
            });
        })
        .map_err(|error| format!("cannot start the signal watcher: {error}"))?;
    Ok(())
}

/// Sleeps for `duration`, or less if a signal asks the process to stop; returns whether
/// it slept the whole time.
pub fn sleep(duration: Duration) -> bool {
    let due = Instant::now() + duration;
    loop {
        if requested().is_some() {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        std::thread::sleep((due - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(Signal::SIGINT), 130);
        assert_eq!(exit_code(Signal::SIGTERM), 143);
    }
}
