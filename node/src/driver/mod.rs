//! The `process` re-initialization driver: stops the old workload, clears the old
//! account's scratch, and starts the new account's command under a guard.
//!
//! It is one tokio task that does one thing at a time, in the order the `Server` actor
//! asked, so "stop the old one, then start the new one" needs no locks; it reports back to
//! the actor as [`DriverReport`] messages. It alone writes the workload_* lines of the event
//! log: `workload_starting` is fsynced before the spawn, `workload_stopped` written only
//! once the guard has exited and the workload's pid is gone.

pub mod guard;
pub mod launch;
pub mod os;
pub mod probe;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch};
use leasehold_federation::wire::common::InitPointer;
use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::event_log::{EventKind, EventLog, StopReason};
use launch::{LaunchContext, LaunchPlan};

/// The pid file the guard writes, in the work dir.
pub const PID_FILE: &str = "workload.pid";
/// How long a guard may take to report its workload's pid.
const PID_FILE_WAIT: Duration = Duration::from_secs(5);

/// What a driver tells the `Server` actor: this one, or the fleet's simulated one. Low
/// rate (a few per workload), so it goes by `do_send`.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub enum DriverReport {
    Started {
        epoch: Epoch,
        /// `None` from a simulated driver, which has no process to name.
        process: Option<StartedProcess>,
    },
    StartFailed {
        epoch: Epoch,
        reason: String,
    },
    /// The workload is confirmed gone, and `workload_stopped` is on disk.
    Gone {
        epoch: Epoch,
        reason: StopReason,
        exit_code: Option<i32>,
    },
}

/// The process a start made, and what probes it.
#[derive(Debug, Clone)]
pub struct StartedProcess {
    pub pid: u32,
    /// Its guard's pid, which is the workload's process group.
    pub guard_pid: u32,
    pub health_url: Option<String>,
    pub metrics: Option<(String, String)>,
}

enum Order {
    Start {
        // Boxed: a pointer is large and stops are the common order.
        pointer: Box<InitPointer>,
        service_addr: String,
    },
    Stop {
        epoch: Epoch,
        cause: StopReason,
    },
    /// A workload an earlier image of this agent started (crate::handover).
    Adopt(Adopted),
}

/// What the driver takes over from a replaced agent: the workload and its guard, which is
/// still this process's child, since `exec` keeps the pid.
#[derive(Debug, Clone)]
pub struct Adopted {
    pub account: AccountId,
    pub epoch: Epoch,
    pub pid: u32,
    pub guard_pid: u32,
    pub stop_timeout: Duration,
}

/// How often an adopted guard is looked at: tokio only waits for children it spawned.
const ADOPTED_POLL: Duration = Duration::from_millis(25);

/// The workload's guard: the child this image spawned, or one an earlier image of this
/// agent spawned, waited for by its pid.
enum Guard {
    Spawned(Child),
    Adopted {
        pid: u32,
        /// Set once reaped: its exit code, if it had one.
        exited: Option<Option<i32>>,
    },
}

impl Guard {
    /// Waits until the guard exits; its exit code, if it had one.
    async fn wait(&mut self) -> Option<i32> {
        match self {
            Guard::Spawned(child) => child.wait().await.ok().and_then(|status| status.code()),
            Guard::Adopted { pid, exited } => loop {
                if let Some(code) = *exited {
                    return code;
                }
                *exited = os::reap_child(*pid);
                if exited.is_none() {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
            },
        }
    }

    /// Whether the guard is still there (one that has exited is reaped).
    fn running(&mut self) -> bool {
        match self {
            Guard::Spawned(child) => matches!(child.try_wait(), Ok(None)),
            Guard::Adopted { pid, exited } => {
                if exited.is_none() {
                    *exited = os::reap_child(*pid);
                }
                exited.is_none()
            }
        }
    }
}

/// The actor's handle on the driver task.
#[derive(Clone)]
pub struct Driver {
    commands: mpsc::UnboundedSender<Order>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

/// What the driver needs from the agent.
#[derive(Debug, Clone)]
pub struct DriverSetup {
    pub work: PathBuf,
    pub server: leasehold_federation::ids::ServerId,
    pub agent_exe: PathBuf,
    pub log: EventLog,
    /// The account whose scratch is on disk (from the event log), cleared on a move.
    pub last_account: Option<AccountId>,
    /// That account's data directory, wiped on a move (from the event log; `None` for a
    /// log from before data was wiped).
    pub last_data_dir: Option<PathBuf>,
}

struct Running {
    account: AccountId,
    epoch: Epoch,
    guard: Guard,
    pgid: u32,
    pid: u32,
    stop_timeout: Duration,
}

struct DriverTask {
    setup: DriverSetup,
    reports: actix::Recipient<DriverReport>,
    running: Option<Running>,
}

impl Driver {
    /// Starts the driver task; it ends when every handle is dropped.
    pub fn spawn(setup: DriverSetup, reports: actix::Recipient<DriverReport>) -> Driver {
        let (commands, receiver) = mpsc::unbounded_channel();
        let task = DriverTask {
            setup,
            reports,
            running: None,
        };
        tokio::spawn(task.run(receiver));
        Driver { commands }
    }

    pub fn start(&self, pointer: InitPointer, service_addr: String) {
        let _ = self.commands.send(Order::Start {
            pointer: Box::new(pointer),
            service_addr,
        });
    }

    pub fn stop(&self, epoch: Epoch, cause: StopReason) {
        let _ = self.commands.send(Order::Stop { epoch, cause });
    }

    pub fn adopt(&self, adopted: Adopted) {
        let _ = self.commands.send(Order::Adopt(adopted));
    }
}

impl DriverTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Order>) {
        loop {
            let exited = async {
                match &mut self.running {
                    Some(running) => running.guard.wait().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Order::Start { pointer, service_addr }) => self.start(*pointer, service_addr).await,
                    Some(Order::Stop { epoch, cause }) => self.stop(epoch, cause).await,
                    Some(Order::Adopt(adopted)) => self.adopt(adopted),
                    None => break,
                },
                code = exited => self.exited(code).await,
            }
        }
    }

    async fn start(&mut self, pointer: InitPointer, service_addr: String) {
        let epoch = pointer.epoch;
        if self.running.is_some() {
            // The model never asks this; refusing keeps S-3 even if it did.
            self.report(DriverReport::StartFailed {
                epoch,
                reason: "another workload is still running".into(),
            });
            return;
        }
        let context = LaunchContext {
            work: self.setup.work.clone(),
            server: self.setup.server.clone(),
            agent_exe: self.setup.agent_exe.clone(),
            service_addr,
        };
        let plan = launch::plan(&pointer, &context);
        let account = pointer.account.clone();
        let previous = self.setup.last_account.replace(account.clone());
        let previous_data = self.setup.last_data_dir.replace(plan.data_dir.clone());
        let log = &self.setup.log;
        let wiped = prepare_dirs(&self.setup.work, previous, previous_data, &account, &plan).await;
        match wiped {
            Err(reason) => {
                self.report(DriverReport::StartFailed { epoch, reason });
                return;
            }
            // On disk before the next tenant's workload starts: the evidence of hygiene.
            Ok(Some((account, paths))) => {
                log.append_synced(EventKind::DataWiped { account, paths })
                    .await;
            }
            Ok(None) => {}
        }
        log.append_synced(EventKind::WorkloadStarting {
            account: account.clone(),
            epoch,
            data_dir: Some(plan.data_dir.display().to_string()),
        })
        .await;
        match self.spawn_guard(&plan, epoch).await {
            Ok((guard, pid)) => {
                let pgid = guard.id().unwrap_or(0);
                log.append_synced(EventKind::WorkloadStarted {
                    account: account.clone(),
                    epoch,
                    pid,
                    pgid,
                })
                .await;
                tracing::info!(%account, %epoch, pid, pgid, "workload started");
                self.running = Some(Running {
                    account,
                    epoch,
                    guard: Guard::Spawned(guard),
                    pgid,
                    pid,
                    stop_timeout: Duration::from_millis(pointer.software.stop_timeout_ms),
                });
                self.report(DriverReport::Started {
                    epoch,
                    process: Some(StartedProcess {
                        pid,
                        guard_pid: pgid,
                        health_url: plan.health_url,
                        metrics: plan.metrics,
                    }),
                });
            }
            Err(reason) => {
                tracing::warn!(%account, %epoch, %reason, "workload did not start");
                log.append_synced(EventKind::WorkloadStopped {
                    account,
                    epoch,
                    pid: None,
                    cause: StopReason::FailedStart,
                    exit_code: None,
                    reaped_alive: None,
                })
                .await;
                self.report(DriverReport::StartFailed { epoch, reason });
            }
        }
    }

    /// Spawns the guard in a new process group and waits for the workload's pid.
    async fn spawn_guard(&self, plan: &LaunchPlan, epoch: Epoch) -> Result<(Child, u32), String> {
        let pid_file = self.setup.work.join(PID_FILE);
        let _ = tokio::fs::remove_file(&pid_file).await;
        let mut guard = Command::new(&self.setup.agent_exe)
            .args(["node", "guard", "--agent-pid"])
            .arg(std::process::id().to_string())
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--")
            .arg(&plan.program)
            .args(&plan.args)
            .envs(&plan.env)
            .current_dir(&plan.data_dir)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|error| format!("cannot start the guard: {error}"))?;
        let deadline = tokio::time::Instant::now() + PID_FILE_WAIT;
        loop {
            if let Some(pid) = read_pid_file(&pid_file).await {
                return Ok((guard, pid));
            }
            if let Ok(Some(status)) = guard.try_wait() {
                return Err(format!(
                    "`{}` did not start for {epoch} (guard exited with {status})",
                    plan.program
                ));
            }
            if tokio::time::Instant::now() > deadline {
                if let Some(pgid) = guard.id() {
                    os::signal_group(pgid, Signal::SIGKILL);
                }
                let _ = guard.wait().await;
                return Err("the guard reported no workload pid in time".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(&mut self, epoch: Epoch, cause: StopReason) {
        let Some(mut running) = self.running.take_if(|r| r.epoch == epoch) else {
            return; // Already gone (it exited by itself, and that was reported).
        };
        // SIGTERM to the workload, not the guard: the guard then just sees it exit.
        if running.guard.running() {
            os::signal_process(running.pid, Signal::SIGTERM);
        }
        // A lease about to end leaves no time for a long goodbye (S-1).
        let grace = if cause == StopReason::LeaseExpired {
            running.stop_timeout.min(crate::model::LEASE_END_GRACE)
        } else {
            running.stop_timeout
        };
        let exit = match tokio::time::timeout(grace, running.guard.wait()).await {
            Ok(code) => code,
            Err(_) => {
                tracing::warn!(%epoch, pid = running.pid, "workload ignored SIGTERM; killing its group");
                os::signal_group(running.pgid, Signal::SIGKILL);
                running.guard.wait().await
            }
        };
        tracing::debug!(%epoch, ?exit, "guard exited");
        self.finish(running, cause, None).await;
    }

    /// The workload a replaced agent ran is this driver's from now on; its files are the
    /// account's already (no wipe, no start).
    fn adopt(&mut self, adopted: Adopted) {
        if self.running.is_some() {
            tracing::error!(epoch = %adopted.epoch, "asked to adopt a workload beside one that runs; refused");
            return;
        }
        tracing::info!(account = %adopted.account, epoch = %adopted.epoch, pid = adopted.pid, guard = adopted.guard_pid, "workload adopted");
        self.setup.last_account = Some(adopted.account.clone());
        self.running = Some(Running {
            account: adopted.account,
            epoch: adopted.epoch,
            guard: Guard::Adopted {
                pid: adopted.guard_pid,
                exited: None,
            },
            pgid: adopted.guard_pid,
            pid: adopted.pid,
            stop_timeout: adopted.stop_timeout,
        });
    }

    async fn exited(&mut self, code: Option<i32>) {
        let Some(running) = self.running.take() else {
            return;
        };
        tracing::info!(account = %running.account, epoch = %running.epoch, ?code, "workload exited by itself");
        self.finish(running, StopReason::Exited, code).await;
    }

    /// The guard has exited: clear the rest of the group, wait for the workload's pid to
    /// go, record it, report it.
    async fn finish(&mut self, running: Running, cause: StopReason, exit_code: Option<i32>) {
        // The workload's own children may linger in the group.
        os::signal_group(running.pgid, Signal::SIGKILL);
        os::wait_gone(running.pid).await;
        let _ = tokio::fs::remove_file(self.setup.work.join(PID_FILE)).await;
        self.setup
            .log
            .append_synced(EventKind::WorkloadStopped {
                account: running.account.clone(),
                epoch: running.epoch,
                pid: Some(running.pid),
                cause,
                exit_code,
                reaped_alive: None,
            })
            .await;
        tracing::info!(account = %running.account, epoch = %running.epoch, ?cause, "workload stopped");
        self.report(DriverReport::Gone {
            epoch: running.epoch,
            reason: cause,
            exit_code,
        });
    }

    fn report(&self, report: DriverReport) {
        self.reports.do_send(report);
    }
}

async fn read_pid_file(path: &Path) -> Option<u32> {
    let text = tokio::fs::read_to_string(path).await.ok()?;
    text.trim().parse().ok()
}

/// When the account changes, removes the previous account's scratch and data (so that no
/// tenant's files are left for the next: docs/node.md, "Tenant hygiene"), then makes the
/// new account's data and scratch dirs. Returns what it removed, for the event log.
async fn prepare_dirs(
    work: &Path,
    previous: Option<AccountId>,
    previous_data: Option<PathBuf>,
    account: &AccountId,
    plan: &LaunchPlan,
) -> Result<Option<(AccountId, Vec<String>)>, String> {
    let mut wiped = None;
    if let Some(previous) = previous.filter(|p| p != account) {
        let mut paths = vec![launch::scratch_dir(work, previous.as_str())];
        // Never the work dir itself, nor the new account's own dir (accounts do not share
        // one: `leasehold config check` refuses it).
        paths.extend(previous_data.filter(|dir| dir != &plan.data_dir && dir.as_path() != work));
        let mut removed = Vec::new();
        for old in paths {
            match tokio::fs::remove_dir_all(&old).await {
                Ok(()) => {
                    tracing::info!(path = %old.display(), account = %previous, "removed the previous account's files")
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(format!("cannot remove {}: {error}", old.display())),
            }
            removed.push(old.display().to_string());
        }
        wiped = Some((previous, removed));
    }
    for dir in [&plan.data_dir, &plan.scratch_dir] {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    }
    Ok(wiped)
}
