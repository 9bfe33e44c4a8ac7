//! Child processes that never outlive their guard: each runs in a process group of its own
//! and carries a marker naming its guard ([`super::sweep`]); on drop the guard kills the
//! whole group and then every process with its marker (a node agent's workload runs in a
//! group of its own), so a failing test leaks no gateway, node agent or workload into the
//! next one.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::sweep;

pub use super::sweep::process_alive;

pub struct ProcessGuard {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// The value of [`sweep::MARKER`] this guard's processes carry.
    marker: String,
}

/// Numbers the guards of this process, for their markers.
static GUARDS: AtomicU64 = AtomicU64::new(0);
/// The first guard of a harness process sweeps what a killed one left behind.
static ORPHANS_SWEPT: Once = Once::new();

impl ProcessGuard {
    /// Starts `binary args...` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, binary: &Path, args: &[String], log: &Path) -> Result<Self, String> {
        ProcessGuard::spawn_with_env(name, binary, args, log, &[])
    }

    /// [`ProcessGuard::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        binary: &Path,
        args: &[String],
        log: &Path,
        env: &[(String, String)],
    ) -> Result<Self, String> {
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|error| format!("cannot open {}: {error}", log.display()))?;
        let errors = output
            .try_clone()
            .map_err(|error| format!("cannot open {}: {error}", log.display()))?;
        ORPHANS_SWEPT.call_once(|| {
            let swept = sweep::kill_orphans();
            if !swept.is_empty() {
                eprintln!(
                    "harness: killed {} processes left by a harness that is gone: {swept:?}",
                    swept.len()
                );
            }
        });
        let marker = format!(
            "{}.{}",
            std::process::id(),
            GUARDS.fetch_add(1, Ordering::Relaxed)
        );
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .env("LEASEHOLD_LOG", "info")
            .envs(env.iter().map(|(key, value)| (key, value)))
            .env(sweep::MARKER, &marker)
            .process_group(0)
            .spawn()
            .map_err(|error| format!("cannot start {name} ({}): {error}", binary.display()))?;
        Ok(ProcessGuard {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_path_buf(),
            marker,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|child| child.id())
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The process's own output so far, for failure messages.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited (and reaps it if so).
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Sends `signal` to the process only (not its group): kill -9 of a gateway or a node
    /// agent leaves what it started to fend for itself, as a real crash would.
    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        let pid = self.pid().ok_or("already reaped")?;
        let pid = i32::try_from(pid).map_err(|_| "pid out of range".to_owned())?;
        nix::sys::signal::kill(Pid::from_raw(pid), signal)
            .map_err(|error| format!("cannot signal {}: {error}", self.name))
    }

    /// SIGTERM, then SIGKILL to the whole group after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let _ = self.signal(Signal::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if self.exited() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_group();
    }

    /// SIGKILL to the process's group, then to every process that carries this guard's
    /// marker (what it started in groups of their own), so nothing of it outlives the guard.
    fn kill_group(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            let marker = &self.marker;
            sweep::kill_marked(|found| found == marker);
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.kill_group();
    }
}
