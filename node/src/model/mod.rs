//! The node's plain state machine: which pointer it serves, in which phase, under which
//! lease; no I/O and no clock (time comes in as [`MonoTime`]). Inputs return [`Effect`]s
//! that the `Server` actor performs.
//!
//! Its rules are the node's half of the safety invariants (docs/invariants.md):
//! - S-2: a pointer or stop whose epoch is not newer than the highest applied is refused,
//!   and the highest applied epoch only grows.
//! - S-3: at most one workload process exists (`process`); a new one is started only when
//!   the old one is confirmed gone, and only under the current epoch.
//! - S-1: a workload starts only under a lease that has not ended by the node's clock, and
//!   is stopped as soon as that lease ends; a lease runs from when its renewal was *sent*.

use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch, ServerId};
use leasehold_federation::wire::common::{Health, InitPointer, Refusal, RefusalCause};
use leasehold_federation::wire::node::{
    RunningWorkload, StopCause, WorkloadFailed, WorkloadJoined, WorkloadStopped,
};

use crate::clock::MonoTime;
use crate::event_log::StopReason;

/// How long to wait before asking again when a renewal got no answer.
pub const RENEW_RETRY: Duration = Duration::from_millis(100);

/// A workload whose lease is about to end unrenewed starts stopping this long before the
/// end, so that it is gone *by* the end, not after it (invariant S-1): the driver gives it
/// [`LEASE_END_GRACE`] to exit on SIGTERM, then kills its group, leaving the rest of the
/// margin for the kill and the reaping.
pub const LEASE_END_MARGIN: Duration = Duration::from_millis(250);

/// How long a workload stopped for its lease's end may take to exit before SIGKILL.
pub const LEASE_END_GRACE: Duration = Duration::from_millis(150);

/// Where the current assignment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; the previous workload is being stopped first.
    AwaitingPrevious,
    /// Asking for the first lease; nothing started yet.
    AwaitingLease,
    /// The process is being started or is running; its health check has not passed.
    Starting,
    Healthy,
    /// A commanded stop waits out the drain time first.
    Draining,
    Stopping(StopReason),
    /// Nothing runs for this epoch any more.
    Stopped(StopReason),
    Failed(String),
}

/// What the actor must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    StartWorkload {
        pointer: InitPointer,
    },
    StopWorkload {
        epoch: Epoch,
        cause: StopReason,
    },
    /// Send `RenewLease` for `epoch`, noting the send time.
    SendRenew {
        epoch: Epoch,
    },
    /// Call [`NodeModel::drain_ended`] after `drain`.
    StartDrain {
        epoch: Epoch,
        drain: Duration,
    },
    /// Answer the pending `StopWorkload`s of `epoch` with `Stopped`.
    ReplyStopped {
        epoch: Epoch,
    },
    RecordLease {
        epoch: Epoch,
        until: MonoTime,
    },
    RecordHealthy {
        account: AccountId,
        epoch: Epoch,
    },
    RecordFailed {
        account: AccountId,
        epoch: Epoch,
        reason: String,
    },
    Report(Report),
    /// Shutdown was asked for and no workload is left.
    ShutdownComplete,
}

/// What the gateway is told, one-way.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Joined(WorkloadJoined),
    Failed(WorkloadFailed),
    Stopped(WorkloadStopped),
}

#[derive(Debug, Clone)]
struct Assignment {
    pointer: InitPointer,
    accepted_at: MonoTime,
    phase: Phase,
    lease_until: Option<MonoTime>,
}

/// The one workload process the node believes exists, from the moment its start is asked
/// until the driver confirms it gone.
#[derive(Debug, Clone)]
struct ProcessSlot {
    account: AccountId,
    epoch: Epoch,
    pid: Option<u32>,
    stopping: Option<StopReason>,
    /// Why it failed, to report once it is gone.
    failure: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NodeModel {
    server: ServerId,
    highest_epoch: Epoch,
    renew_interval: Duration,
    current: Option<Assignment>,
    process: Option<ProcessSlot>,
    renew_in_flight: Option<Epoch>,
    next_renew_at: MonoTime,
    pending_stop_replies: Vec<Epoch>,
    shutting_down: bool,
    /// A planted bug, in debug builds only (chaos tests, `LEASEHOLD_TEST_PLANT=
    /// skip-epoch-check`): accept a pointer whose epoch is not newer than one applied.
    #[cfg(debug_assertions)]
    plant_skip_epoch_check: bool,
}

/// The wire's coarser cause for a stop reason.
pub fn wire_cause(reason: StopReason, exit_code: Option<i32>) -> StopCause {
    match reason {
        StopReason::LeaseExpired | StopReason::LeaseRefused => StopCause::LeaseExpired,
        StopReason::Exited => StopCause::Exited { code: exit_code },
        StopReason::Commanded
        | StopReason::Superseded
        | StopReason::FailedHealth
        | StopReason::FailedStart
        | StopReason::OrphanReaped
        | StopReason::AgentShutdown => StopCause::Commanded,
    }
}

impl NodeModel {
    /// A node that has applied epochs up to `highest_epoch` (from its event log) and runs
    /// nothing: a restarted agent reaps any orphan before it builds this.
    pub fn new(server: ServerId, highest_epoch: Epoch, renew_interval: Duration) -> NodeModel {
        NodeModel {
            server,
            highest_epoch,
            renew_interval,
            current: None,
            process: None,
            renew_in_flight: None,
            next_renew_at: MonoTime::from_nanos(0),
            pending_stop_replies: Vec::new(),
            shutting_down: false,
            #[cfg(debug_assertions)]
            plant_skip_epoch_check: false,
        }
    }

    /// Plants the bug that skips the epoch check of `apply` (debug builds only).
    #[cfg(debug_assertions)]
    pub fn plant_skip_epoch_check(&mut self) {
        self.plant_skip_epoch_check = true;
    }

    /// The gateway's renewal interval, from its `Registration`.
    pub fn set_renew_interval(&mut self, interval: Duration) {
        self.renew_interval = interval;
    }

    pub fn renew_interval(&self) -> Duration {
        self.renew_interval
    }

    pub fn highest_epoch(&self) -> Epoch {
        self.highest_epoch
    }

    pub fn phase(&self) -> Option<&Phase> {
        self.current.as_ref().map(|a| &a.phase)
    }

    /// The epoch of the current assignment, if any.
    pub fn current_epoch(&self) -> Option<Epoch> {
        self.current.as_ref().map(|a| a.pointer.epoch)
    }

    pub fn lease_until(&self) -> Option<MonoTime> {
        self.current.as_ref().and_then(|a| a.lease_until)
    }

    /// The workload process that exists now, with its pid once known.
    pub fn process(&self) -> Option<(AccountId, Epoch, Option<u32>)> {
        self.process
            .as_ref()
            .map(|p| (p.account.clone(), p.epoch, p.pid))
    }
    /// The server this node is.
    pub fn server(&self) -> &ServerId {
        &self.server
    }

    /// The account of [`Self::running`], borrowed.
    pub fn running_account(&self) -> Option<&AccountId> {
        let current = self.current.as_ref()?;
        let process = self.process.as_ref()?;
        (process.epoch == current.pointer.epoch).then_some(&process.account)
    }

    /// What heartbeats and registrations say runs: the current epoch's process, if any.
    pub fn running(&self) -> Option<RunningWorkload> {
        let current = self.current.as_ref()?;
        let process = self.process.as_ref()?;
        (process.epoch == current.pointer.epoch).then(|| RunningWorkload {
            account: process.account.clone(),
            epoch: process.epoch,
        })
    }

    pub fn health(&self) -> Health {
        match self.phase() {
            None | Some(Phase::Stopped(_)) => Health::Idle,
            Some(Phase::AwaitingPrevious | Phase::AwaitingLease | Phase::Starting) => {
                Health::Starting
            }
            Some(Phase::Healthy | Phase::Draining) => Health::Healthy,
            Some(Phase::Stopping(cause)) => Health::Unhealthy {
                reason: format!("stopping ({cause:?})"),
            },
            Some(Phase::Failed(reason)) => Health::Unhealthy {
                reason: reason.clone(),
            },
        }
    }

    /// `ApplyPointer`: refuse a wrong server or an epoch not newer than the highest applied
    /// (S-2); otherwise take it, stop what runs, and ask for the first lease.
    pub fn apply(
        &mut self,
        server: &ServerId,
        pointer: InitPointer,
        now: MonoTime,
    ) -> Result<Vec<Effect>, Refusal> {
        self.check_server(server)?;
        #[cfg(debug_assertions)]
        let planted = self.plant_skip_epoch_check;
        #[cfg(not(debug_assertions))]
        let planted = false;
        if pointer.epoch <= self.highest_epoch && !planted {
            return Err(self.stale(pointer.epoch));
        }
        self.highest_epoch = self.highest_epoch.max(pointer.epoch);
        let mut effects = Vec::new();
        if let Some(process) = &mut self.process
            && process.stopping.is_none()
        {
            process.stopping = Some(StopReason::Superseded);
            effects.push(Effect::StopWorkload {
                epoch: process.epoch,
                cause: StopReason::Superseded,
            });
        }
        let phase = if self.process.is_some() {
            Phase::AwaitingPrevious
        } else {
            Phase::AwaitingLease
        };
        self.current = Some(Assignment {
            pointer,
            accepted_at: now,
            phase,
            lease_until: None,
        });
        self.renew_in_flight = None;
        self.next_renew_at = now;
        self.renew_if_due(now, &mut effects);
        Ok(effects)
    }

    /// `StopWorkload`: for the current epoch, drain then stop; `Stopped` is answered once
    /// nothing of that epoch runs. An older epoch is refused (S-2).
    pub fn stop_requested(
        &mut self,
        server: &ServerId,
        epoch: Epoch,
        drain: Duration,
    ) -> Result<Vec<Effect>, Refusal> {
        self.check_server(server)?;
        if epoch < self.highest_epoch {
            return Err(self.stale(epoch));
        }
        if epoch > self.highest_epoch {
            return Err(Refusal {
                cause: RefusalCause::UnknownLease,
                detail: format!(
                    "no pointer with {epoch} was applied here; the highest is {}",
                    self.highest_epoch
                ),
            });
        }
        let mut effects = Vec::new();
        if let Some(current) = &mut self.current {
            match current.phase {
                Phase::Starting | Phase::Healthy => {
                    current.phase = Phase::Draining;
                    effects.push(Effect::StartDrain { epoch, drain });
                }
                Phase::AwaitingPrevious | Phase::AwaitingLease => {
                    current.phase = Phase::Stopped(StopReason::Commanded);
                    current.lease_until = None;
                }
                Phase::Draining | Phase::Stopping(_) | Phase::Stopped(_) | Phase::Failed(_) => {}
            }
        }
        if self.process.as_ref().is_some_and(|p| p.epoch == epoch) {
            self.pending_stop_replies.push(epoch);
        } else {
            effects.push(Effect::ReplyStopped { epoch });
        }
        Ok(effects)
    }

    /// The drain time of a commanded stop is over.
    pub fn drain_ended(&mut self, epoch: Epoch) -> Vec<Effect> {
        match &mut self.current {
            Some(current) if current.pointer.epoch == epoch && current.phase == Phase::Draining => {
                current.phase = Phase::Stopping(StopReason::Commanded);
                self.stop_process(epoch, StopReason::Commanded)
            }
            _ => Vec::new(),
        }
    }

    /// The gateway renewed the lease of `epoch`; the request was sent at `sent_at`, so the
    /// lease runs until `sent_at + ttl` (S-1). The first lease starts the workload.
    pub fn lease_renewed(
        &mut self,
        epoch: Epoch,
        sent_at: MonoTime,
        ttl: Duration,
        now: MonoTime,
    ) -> Vec<Effect> {
        if self.renew_in_flight == Some(epoch) {
            self.renew_in_flight = None;
        }
        let mut effects = Vec::new();
        let Some(current) = &mut self.current else {
            return effects;
        };
        if current.pointer.epoch != epoch || !wants_lease(&current.phase) {
            return effects;
        }
        let until = sent_at.plus(ttl);
        if until <= now {
            // Granted, but already over by our clock: worth nothing; ask again now.
            self.next_renew_at = now;
            return effects;
        }
        let until = current.lease_until.map_or(until, |old| old.max(until));
        current.lease_until = Some(until);
        self.next_renew_at = sent_at.plus(self.renew_interval);
        effects.push(Effect::RecordLease { epoch, until });
        // A first lease that `tick` would stop at once (it ends within the stop margin) is
        // no lease to start on: a workload started on it can be logged as starting after
        // its lease ended (S-1). A gateway about to lose an account's ownership grants such
        // slivers; the chaos campaigns saw workloads started with 49 ms of lease left.
        let worth_starting = until > now.plus(LEASE_END_MARGIN);
        if current.phase == Phase::AwaitingLease && self.process.is_none() && worth_starting {
            current.phase = Phase::Starting;
            self.process = Some(ProcessSlot {
                account: current.pointer.account.clone(),
                epoch,
                pid: None,
                stopping: None,
                failure: None,
            });
            effects.push(Effect::StartWorkload {
                pointer: current.pointer.clone(),
            });
        }
        effects
    }

    /// The gateway refused to renew: stop at once, or never start.
    pub fn lease_refused(&mut self, epoch: Epoch, refusal: &Refusal) -> Vec<Effect> {
        if self.renew_in_flight == Some(epoch) {
            self.renew_in_flight = None;
        }
        let Some(current) = &mut self.current else {
            return Vec::new();
        };
        if current.pointer.epoch != epoch {
            return Vec::new();
        }
        current.lease_until = None;
        match current.phase {
            Phase::AwaitingLease => {
                let reason = format!("lease refused: {refusal}");
                current.phase = Phase::Failed(reason.clone());
                let account = current.pointer.account.clone();
                vec![
                    Effect::RecordFailed {
                        account: account.clone(),
                        epoch,
                        reason: reason.clone(),
                    },
                    self.failed_report(account, epoch, reason),
                ]
            }
            Phase::Starting | Phase::Healthy | Phase::Draining => {
                current.phase = Phase::Stopping(StopReason::LeaseRefused);
                self.stop_process(epoch, StopReason::LeaseRefused)
            }
            _ => Vec::new(),
        }
    }

    /// A renewal got no answer (timeout, no connection): maybe done, so ask again soon;
    /// the lease end stays where the last answer put it.
    pub fn renew_unanswered(&mut self, epoch: Epoch, now: MonoTime) {
        if self.renew_in_flight == Some(epoch) {
            self.renew_in_flight = None;
            self.next_renew_at = now.plus(RENEW_RETRY);
        }
    }

    /// Time passes: stop a workload whose lease ends within [`LEASE_END_MARGIN`] (S-1),
    /// renew when due.
    pub fn tick(&mut self, now: MonoTime) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Some(current) = &mut self.current
            && matches!(
                current.phase,
                Phase::Starting | Phase::Healthy | Phase::Draining
            )
            && current
                .lease_until
                .is_none_or(|until| until <= now.plus(LEASE_END_MARGIN))
        {
            current.phase = Phase::Stopping(StopReason::LeaseExpired);
            current.lease_until = None;
            let epoch = current.pointer.epoch;
            effects.extend(self.stop_process(epoch, StopReason::LeaseExpired));
        }
        self.renew_if_due(now, &mut effects);
        effects
    }

    /// The driver knows the workload's pid.
    pub fn workload_started(&mut self, epoch: Epoch, pid: u32) {
        if let Some(process) = &mut self.process
            && process.epoch == epoch
        {
            process.pid = Some(pid);
        }
    }

    pub fn health_passed(&mut self, epoch: Epoch, now: MonoTime) -> Vec<Effect> {
        let Some(current) = &mut self.current else {
            return Vec::new();
        };
        if current.pointer.epoch != epoch || current.phase != Phase::Starting {
            return Vec::new();
        }
        current.phase = Phase::Healthy;
        let account = current.pointer.account.clone();
        let start_ms = u64::try_from(now.since(current.accepted_at).as_millis()).unwrap_or(0);
        vec![
            Effect::RecordHealthy {
                account: account.clone(),
                epoch,
            },
            Effect::Report(Report::Joined(WorkloadJoined {
                server: self.server.clone(),
                account,
                epoch,
                start_ms,
            })),
        ]
    }

    pub fn health_failed(&mut self, epoch: Epoch, reason: String) -> Vec<Effect> {
        let Some(current) = &mut self.current else {
            return Vec::new();
        };
        if current.pointer.epoch != epoch || current.phase != Phase::Starting {
            return Vec::new();
        }
        current.phase = Phase::Stopping(StopReason::FailedHealth);
        let account = current.pointer.account.clone();
        if let Some(process) = &mut self.process {
            process.failure = Some(reason.clone());
        }
        let mut effects = vec![Effect::RecordFailed {
            account,
            epoch,
            reason,
        }];
        effects.extend(self.stop_process(epoch, StopReason::FailedHealth));
        effects
    }

    /// The driver confirmed the workload of `epoch` gone (the guard exited and the
    /// process is no more), because it was stopped for `reason` or exited by itself.
    pub fn workload_gone(
        &mut self,
        epoch: Epoch,
        reason: StopReason,
        exit_code: Option<i32>,
        now: MonoTime,
    ) -> Vec<Effect> {
        let Some(process) = self.process.take_if(|p| p.epoch == epoch) else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        let report = match &mut self.current {
            Some(current) if current.pointer.epoch == epoch => {
                current.lease_until = None;
                let failure = match (&current.phase, process.failure) {
                    (_, Some(failure)) => Some(failure),
                    (Phase::Starting, None) => Some(format!(
                        "exited before passing its health check (code {exit_code:?})"
                    )),
                    _ => None,
                };
                match failure {
                    Some(reason) => {
                        if current.phase == Phase::Starting {
                            effects.push(Effect::RecordFailed {
                                account: process.account.clone(),
                                epoch,
                                reason: reason.clone(),
                            });
                        }
                        current.phase = Phase::Failed(reason.clone());
                        self.failed_report(process.account, epoch, reason)
                    }
                    None => {
                        current.phase = Phase::Stopped(reason);
                        self.stopped_report(process.account, epoch, reason, exit_code)
                    }
                }
            }
            _ => self.stopped_report(process.account, epoch, reason, exit_code),
        };
        effects.push(report);
        self.after_gone(now, &mut effects);
        effects
    }

    /// The driver could not start the workload of `epoch` (no process exists).
    pub fn start_failed(&mut self, epoch: Epoch, reason: String, now: MonoTime) -> Vec<Effect> {
        let Some(process) = self.process.take_if(|p| p.epoch == epoch) else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        if let Some(current) = &mut self.current
            && current.pointer.epoch == epoch
        {
            current.phase = Phase::Failed(reason.clone());
            current.lease_until = None;
        }
        effects.push(Effect::RecordFailed {
            account: process.account.clone(),
            epoch,
            reason: reason.clone(),
        });
        effects.push(self.failed_report(process.account, epoch, reason));
        self.after_gone(now, &mut effects);
        effects
    }

    /// Whether this agent may be replaced in place now (SIGUSR2; crate::handover), and
    /// what its successor must adopt: nothing when nothing runs; the healthy workload's
    /// pointer, pid and lease end; or why not now (a start, a drain or a stop under way is
    /// finished first, by this agent).
    pub fn handover(&self) -> Result<Option<(InitPointer, u32, MonoTime)>, String> {
        let idle = self.process.is_none()
            && self
                .current
                .as_ref()
                .is_none_or(|c| matches!(c.phase, Phase::Stopped(_) | Phase::Failed(_)));
        if idle {
            return Ok(None);
        }
        if self.shutting_down {
            return Err("the agent is shutting down".into());
        }
        let (Some(current), Some(process)) = (&self.current, &self.process) else {
            return Err("a workload is being stopped".into());
        };
        let epoch = current.pointer.epoch;
        match (&current.phase, process.pid, current.lease_until) {
            (Phase::Healthy, Some(pid), Some(until))
                if process.epoch == epoch && process.stopping.is_none() =>
            {
                Ok(Some((current.pointer.clone(), pid, until)))
            }
            (phase, _, _) => Err(format!(
                "the workload of {epoch} is {phase:?}, not healthy under a lease; try again once it is"
            )),
        }
    }

    /// The new image of a replaced agent takes over the workload its predecessor ran:
    /// healthy, under `pointer`'s epoch, with the lease that ends at `lease_until` (the
    /// same machine's monotonic clock, so S-1 goes on from where it was). Only a fresh
    /// model adopts; the first renewal goes at once.
    pub fn adopt(
        &mut self,
        pointer: InitPointer,
        pid: u32,
        lease_until: MonoTime,
        now: MonoTime,
    ) -> Vec<Effect> {
        if self.current.is_some() || self.process.is_some() {
            return Vec::new();
        }
        let epoch = pointer.epoch;
        self.highest_epoch = self.highest_epoch.max(epoch);
        self.process = Some(ProcessSlot {
            account: pointer.account.clone(),
            epoch,
            pid: Some(pid),
            stopping: None,
            failure: None,
        });
        self.current = Some(Assignment {
            pointer,
            accepted_at: now,
            phase: Phase::Healthy,
            lease_until: Some(lease_until),
        });
        self.renew_in_flight = None;
        self.next_renew_at = now;
        // A lease that ended during the replacement stops the workload at once (S-1).
        self.tick(now)
    }

    /// SIGTERM or SIGINT: stop the workload, then say so.
    pub fn shutdown(&mut self) -> Vec<Effect> {
        self.shutting_down = true;
        let Some(process) = &self.process else {
            return vec![Effect::ShutdownComplete];
        };
        let epoch = process.epoch;
        if let Some(current) = &mut self.current
            && current.pointer.epoch == epoch
            && process.stopping.is_none()
        {
            current.phase = Phase::Stopping(StopReason::AgentShutdown);
        }
        self.stop_process(epoch, StopReason::AgentShutdown)
    }

    fn after_gone(&mut self, now: MonoTime, effects: &mut Vec<Effect>) {
        let running = self.process.as_ref().map(|p| p.epoch);
        let (release, keep): (Vec<Epoch>, Vec<Epoch>) = self
            .pending_stop_replies
            .drain(..)
            .partition(|epoch| Some(*epoch) != running);
        self.pending_stop_replies = keep;
        let mut released: Vec<Epoch> = release;
        released.dedup();
        effects.extend(
            released
                .into_iter()
                .map(|epoch| Effect::ReplyStopped { epoch }),
        );
        if self.process.is_none() {
            if let Some(current) = &mut self.current
                && current.phase == Phase::AwaitingPrevious
            {
                current.phase = Phase::AwaitingLease;
                self.next_renew_at = now;
                self.renew_if_due(now, effects);
            }
            if self.shutting_down {
                effects.push(Effect::ShutdownComplete);
            }
        }
    }

    /// Asks the driver to stop the process of `epoch`, unless a stop is already under way.
    fn stop_process(&mut self, epoch: Epoch, cause: StopReason) -> Vec<Effect> {
        match &mut self.process {
            Some(process) if process.epoch == epoch && process.stopping.is_none() => {
                process.stopping = Some(cause);
                vec![Effect::StopWorkload { epoch, cause }]
            }
            _ => Vec::new(),
        }
    }

    fn renew_if_due(&mut self, now: MonoTime, effects: &mut Vec<Effect>) {
        let Some(current) = &self.current else {
            return;
        };
        if wants_lease(&current.phase)
            && self.renew_in_flight.is_none()
            && now >= self.next_renew_at
        {
            let epoch = current.pointer.epoch;
            self.renew_in_flight = Some(epoch);
            effects.push(Effect::SendRenew { epoch });
        }
    }

    fn check_server(&self, server: &ServerId) -> Result<(), Refusal> {
        if server == &self.server {
            return Ok(());
        }
        Err(Refusal {
            cause: RefusalCause::WrongServer,
            detail: format!("this is {}, not {server}", self.server),
        })
    }

    fn stale(&self, epoch: Epoch) -> Refusal {
        Refusal {
            cause: RefusalCause::StaleEpoch {
                seen: self.highest_epoch,
            },
            detail: format!(
                "{epoch} is not newer than {}, already applied here",
                self.highest_epoch
            ),
        }
    }

    fn failed_report(&self, account: AccountId, epoch: Epoch, reason: String) -> Effect {
        Effect::Report(Report::Failed(WorkloadFailed {
            server: self.server.clone(),
            account,
            epoch,
            reason,
        }))
    }

    fn stopped_report(
        &self,
        account: AccountId,
        epoch: Epoch,
        reason: StopReason,
        exit_code: Option<i32>,
    ) -> Effect {
        Effect::Report(Report::Stopped(WorkloadStopped {
            server: self.server.clone(),
            account,
            epoch,
            cause: wire_cause(reason, exit_code),
        }))
    }
}

/// Whether an assignment in `phase` holds, or is about to need, a lease.
fn wants_lease(phase: &Phase) -> bool {
    matches!(
        phase,
        Phase::AwaitingLease | Phase::Starting | Phase::Healthy | Phase::Draining
    )
}

#[cfg(test)]
pub(crate) mod tests;
