//! Servers that are machines (docs/machines.md). A machine joins an account by booting the
//! account's image: the lease is granted and journaled as for any server, then instead of
//! sending the pointer to a running node agent, the core asks the shell to re-image the
//! machine (power off, one-time network boot, power on) and waits for the node agent of
//! the new image to register with the lease's epoch and the boot's token; the pointer goes
//! to that agent, and the workload joins as on any server.
//!
//! Safety (docs/invariants.md):
//! - S-3 holds as for any server: a machine is re-imaged only for a lease it holds, and a
//!   lease is granted only once the previous one ended (stopped, or expired on the node's
//!   own clock first, S-1).
//! - M-1, no stale boot: a registration is accepted only for the epoch of the re-image in
//!   progress and with its token, once; any other is refused and the machine powered off.
//! - M-2, fencing: a machine whose lease ended while it was not heard from is powered off
//!   through its BMC before it is offered to any account; one whose BMC does not answer is
//!   never offered on a guess.
//!
//! The shell does the BMC work on its blocking pool, one command per machine at a time
//! (`busy`), and reports with [`SiteModel::machine_power`], [`SiteModel::machine_progress`]
//! and [`SiteModel::machine_failed`].

use std::time::Duration;

use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::wire::common::{Refusal, RefusalCause};
use leasehold_federation::wire::node::{Registration, RunningWorkload};

use super::server::Phase;
use super::{SiteModel, audit, millis};
use crate::model::Millis;
use crate::model::arbiter::AccountIx;
use crate::model::effects::{AuditKind, Command, Effect, LeaseEndCause, MachineCommand};

/// How long a BMC that did not answer is left before it is asked again.
pub const BMC_RETRY: Duration = Duration::from_secs(10);

/// What the BMC last said of the machine's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Unknown,
    Off,
    On,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BmcHealth {
    /// Not asked yet (at start).
    Unknown,
    Answering,
    Unreachable {
        since: Millis,
        error: String,
    },
}

/// Why a re-image will not come up, as the machine's `failed`, the audit record and the
/// lease's end say it.
struct BootFailure {
    out_of_use: String,
    audit: String,
    lease_end: &'static str,
}

/// A re-image in progress, step by step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BootStep {
    PoweringOff,
    SettingBoot,
    PoweringOn,
    /// Powered on: firmware, network boot, the image's start, until its agent registers.
    Booting,
}

impl BootStep {
    pub fn name(self) -> &'static str {
        match self {
            BootStep::PoweringOff => "powering-off",
            BootStep::SettingBoot => "setting-boot",
            BootStep::PoweringOn => "powering-on",
            BootStep::Booting => "booting",
        }
    }

    fn next(self) -> BootStep {
        match self {
            BootStep::PoweringOff => BootStep::SettingBoot,
            BootStep::SettingBoot => BootStep::PoweringOn,
            BootStep::PoweringOn | BootStep::Booting => BootStep::Booting,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    pub account: AccountIx,
    pub epoch: Epoch,
    pub step: BootStep,
    pub started: Millis,
    pub step_since: Millis,
    /// Each finished step and how long it took, in milliseconds.
    pub steps: Vec<(BootStep, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineState {
    /// Its boot NIC, lower case with colons: how the boot service knows it.
    pub mac: String,
    pub power: Power,
    pub bmc: BmcHealth,
    pub boot: Option<Boot>,
    /// The image its node agent registered from: the account and the epoch of that boot.
    pub image: Option<(AccountIx, Epoch)>,
    /// A command is out to the shell; no other is sent until it reports.
    pub busy: bool,
    /// Out of use after a re-image that failed or never registered, with why.
    pub failed: Option<String>,
    /// Why the next power-off is a fence, for its audit entry.
    pub fence: Option<String>,
    /// The steps of the last boot that registered, in milliseconds, for status.
    pub last_boot: Vec<(BootStep, u64)>,
}

impl MachineState {
    pub fn new(mac: &str) -> MachineState {
        MachineState {
            mac: mac.to_owned(),
            power: Power::Unknown,
            bmc: BmcHealth::Unknown,
            boot: None,
            image: None,
            busy: false,
            failed: None,
            fence: Some("its state was not known at start".to_owned()),
            last_boot: Vec::new(),
        }
    }

    /// Powered off, its BMC answering, nothing in flight: it may be re-imaged for any
    /// account that has an image.
    pub fn ready(&self) -> bool {
        self.power == Power::Off
            && self.bmc == BmcHealth::Answering
            && !self.busy
            && self.failed.is_none()
            && self.boot.is_none()
    }
}

/// A registration's boot claim as the shell checked it: the token is the shell's to verify
/// (it holds the key), the epoch the core's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedClaim {
    pub epoch: Epoch,
    pub token_valid: bool,
}

impl SiteModel {
    /// Whether `server` is a machine, and so must be re-imaged to join `account` unless its
    /// agent already runs that account's image and is connected.
    pub(super) fn needs_reimage(&self, ix: usize, account: AccountIx) -> bool {
        let entry = &self.servers[ix];
        match &entry.machine {
            None => false,
            Some(machine) => {
                !(entry.connected && machine.image.is_some_and(|(image, _)| image == account))
            }
        }
    }

    /// Starts the re-image of machine `ix` for its new lease (already journaled by the
    /// caller's batch, which puts the journal first).
    pub(super) fn start_reimage(
        &mut self,
        ix: usize,
        account: AccountIx,
        epoch: Epoch,
        now: Millis,
    ) -> Vec<Effect> {
        let entry = &mut self.servers[ix];
        let Some(machine) = entry.machine.as_mut() else {
            return Vec::new();
        };
        machine.boot = Some(Boot {
            account,
            epoch,
            step: BootStep::PoweringOff,
            started: now,
            step_since: now,
            steps: Vec::new(),
        });
        machine.busy = true;
        machine.image = None;
        machine.fence = None;
        // What the old image's agent still says is of no account now; the new one's
        // registration is what counts (and silence while booting is not a failure).
        entry.last_heartbeat = None;
        let server = entry.id.clone();
        let name = self.account_name(account).clone();
        vec![
            audit(
                AuditKind::Reimage,
                Some(&server),
                Some(&name),
                None,
                Some(epoch),
                format!(
                    "re-imaging {server} for {name} under {epoch}: power off, boot {name}'s image once from the network, power on"
                ),
            ),
            Effect::Machine(MachineCommand::Reimage { server, epoch }),
        ]
    }

    /// A machine's agent registered with a boot claim.
    pub fn register_booted(
        &mut self,
        server: &ServerId,
        claim: CheckedClaim,
        running: Option<&RunningWorkload>,
        highest_epoch: Epoch,
        now: Millis,
    ) -> (Result<Registration, Refusal>, Vec<Effect>) {
        let ix = match self.index_of(server) {
            Ok(ix) => ix,
            Err(refusal) => return (Err(refusal), Vec::new()),
        };
        let Some(machine) = self.servers[ix].machine.as_ref() else {
            let refusal = Refusal {
                cause: RefusalCause::NotAllowed,
                detail: format!(
                    "{server} is not a machine in this site's config; a process agent registers without --boot-args"
                ),
            };
            return (Err(refusal), Vec::new());
        };
        let lease_epoch = self.servers[ix].lease.as_ref().map(|lease| lease.epoch);
        let booting = machine.boot.as_ref().filter(|boot| {
            boot.epoch == claim.epoch && boot.step >= BootStep::PoweringOn && claim.token_valid
        });
        if let Some(boot) = booting.cloned() {
            return self.booted(ix, boot, highest_epoch, now);
        }
        // The same image's agent again (it restarted, or reconnected): as any server.
        let same_image = machine.boot.is_none()
            && claim.token_valid
            && machine.image.is_some_and(|(_, epoch)| epoch == claim.epoch)
            && lease_epoch == Some(claim.epoch);
        if same_image {
            return match self.register_agent(ix, running, highest_epoch, now) {
                Ok((registration, effects)) => (Ok(registration), effects),
                Err(refusal) => (Err(refusal), Vec::new()),
            };
        }
        let current = match (&machine.boot, lease_epoch) {
            (Some(boot), _) => format!("its re-image in progress is {}", boot.epoch),
            (None, Some(epoch)) => format!("its lease is {epoch}, and no re-image is pending"),
            (None, None) => "no re-image is pending".to_owned(),
        };
        let why = if claim.token_valid {
            format!("{server} booted the image of {}; {current}", claim.epoch)
        } else {
            format!(
                "{server} registered from a boot of {} with a token the boot service did not issue for it; {current}",
                claim.epoch
            )
        };
        // Powered on for a re-image, it came up with something else: that re-image will
        // not come up (its firmware boots another script, or someone else holds its
        // identity). Failing it now finds the account another server at once, rather
        // than after the boot timeout.
        let failed_boot = machine
            .boot
            .as_ref()
            .filter(|boot| boot.step >= BootStep::PoweringOn)
            .map(|boot| boot.epoch);
        let mut effects = vec![audit(
            AuditKind::StaleBoot,
            Some(server),
            None,
            None,
            Some(claim.epoch),
            format!("{why}: registration refused, powering it off"),
        )];
        if let Some(pending) = failed_boot {
            let failure = BootFailure {
                out_of_use: format!("booted a stale image during its re-image under {pending}"),
                audit: format!(
                    "{server} was powered on for {pending} but came up with another boot ({why}); powering it off and leaving it out of use"
                ),
                lease_end: "its machine booted a stale image",
            };
            effects.extend(self.fail_boot(ix, pending, failure, now));
            if let Some(machine) = self.servers[ix].machine.as_mut() {
                machine.fence = Some(format!(
                    "it booted a stale image during its re-image under {pending}"
                ));
            }
        }
        effects.extend(self.power_off(ix, "it booted a stale image".to_owned()));
        let refusal = Refusal {
            cause: RefusalCause::StaleBoot,
            detail: format!("{why}; this machine is being powered off"),
        };
        (Err(refusal), effects)
    }

    /// The re-image of `boot` came up: its agent registered. The lease starts its TTL now
    /// and the pointer goes to the new agent.
    fn booted(
        &mut self,
        ix: usize,
        boot: Boot,
        highest_epoch: Epoch,
        now: Millis,
    ) -> (Result<Registration, Refusal>, Vec<Effect>) {
        let ttl = self.timings.lease_ttl;
        let mut effects: Vec<Effect> = self.epoch_seen(ix, highest_epoch).into_iter().collect();
        let entry = &mut self.servers[ix];
        entry.connected = true;
        entry.last_heartbeat = Some(now);
        if let Some(lease) = entry.lease.as_mut() {
            lease.expires_at = now + ttl;
        }
        let mut steps = boot.steps.clone();
        steps.push((boot.step, millis(now.since(boot.step_since))));
        if let Some(machine) = entry.machine.as_mut() {
            machine.boot = None;
            machine.busy = false;
            machine.power = Power::On;
            machine.image = Some((boot.account, boot.epoch));
            machine.last_boot = steps.clone();
        }
        let server = entry.id.clone();
        let service_addr = entry.service_addr.clone();
        let account = self.account_name(boot.account).clone();
        let took: Vec<String> = steps
            .iter()
            .map(|(step, ms)| format!("{} {ms} ms", step.name()))
            .collect();
        effects.push(audit(
            AuditKind::Booted,
            Some(&server),
            Some(&account),
            None,
            Some(boot.epoch),
            format!(
                "{server} booted {account}'s image under {} and registered in {} ms ({})",
                boot.epoch,
                now.since(boot.started).as_millis(),
                took.join(", ")
            ),
        ));
        effects.push(Effect::Send(Command::Apply {
            server,
            pointer: self.pointer(boot.account, boot.epoch),
        }));
        let registration = Registration::Accepted {
            site: self.site.clone(),
            heartbeat_interval_ms: millis(self.timings.node_heartbeat_interval),
            lease_ttl_ms: millis(ttl),
            renew_interval_ms: millis(self.timings.node_renew_interval),
            service_addr,
            generation: None,
        };
        (Ok(registration), effects)
    }

    /// The shell read or changed a machine's power (a probe, a power-off).
    pub fn machine_power(&mut self, server: &ServerId, power: Power, _now: Millis) -> Vec<Effect> {
        let Ok(ix) = self.index_of(server) else {
            return Vec::new();
        };
        let entry = &mut self.servers[ix];
        let Some(machine) = entry.machine.as_mut() else {
            return Vec::new();
        };
        machine.busy = false;
        machine.power = power;
        let was_unreachable = matches!(machine.bmc, BmcHealth::Unreachable { .. });
        machine.bmc = BmcHealth::Answering;
        let mut effects = Vec::new();
        if power == Power::Off
            && let Some(why) = machine.fence.take()
        {
            effects.push(audit(
                AuditKind::Fence,
                Some(&entry.id),
                None,
                None,
                None,
                format!(
                    "{} powered off through its BMC before any reuse: {why}",
                    entry.id
                ),
            ));
        }
        if was_unreachable {
            tracing::info!(server = %entry.id, "BMC answers again");
        }
        // Off and leaseless, nothing runs on it: no agent to hear from, no image to reuse,
        // and a machine that went silent (failed) is of use again, as a process server is
        // once it answers again.
        if power == Power::Off && entry.lease.is_none() {
            entry.last_heartbeat = None;
            entry.connected = false;
            if let Some(machine) = entry.machine.as_mut() {
                machine.image = None;
            }
        }
        entry.phase = match entry.phase {
            Phase::Offline | Phase::Free if entry.lease.is_none() => entry.idle_phase(),
            Phase::Failed { .. } if entry.lease.is_none() && power == Power::Off => {
                entry.idle_phase()
            }
            ref phase => phase.clone(),
        };
        effects
    }

    /// The shell got a re-image of `epoch` past `reached` (powered off, boot set, powered
    /// on).
    pub fn machine_progress(
        &mut self,
        server: &ServerId,
        epoch: Epoch,
        reached: BootStep,
        now: Millis,
    ) {
        let Ok(ix) = self.index_of(server) else {
            return;
        };
        let Some(machine) = self.servers[ix].machine.as_mut() else {
            return;
        };
        let Some(boot) = machine.boot.as_mut().filter(|boot| boot.epoch == epoch) else {
            // The re-image was given up while its command ran (a stale boot failed it):
            // the command is over once it has powered the machine on.
            if reached == BootStep::PoweringOn {
                machine.busy = false;
                machine.power = Power::On;
            }
            return;
        };
        while boot.step <= reached && boot.step != BootStep::Booting {
            boot.steps
                .push((boot.step, millis(now.since(boot.step_since))));
            boot.step = boot.step.next();
            boot.step_since = now;
        }
        match boot.step {
            BootStep::SettingBoot => machine.power = Power::Off,
            BootStep::Booting => {
                machine.power = Power::On;
                machine.busy = false;
            }
            _ => {}
        }
    }

    /// The shell could not do what was asked of a machine's BMC.
    pub fn machine_failed(
        &mut self,
        server: &ServerId,
        epoch: Option<Epoch>,
        error: &str,
        unreachable: bool,
        now: Millis,
    ) -> Vec<Effect> {
        let Ok(ix) = self.index_of(server) else {
            return Vec::new();
        };
        let Some(machine) = self.servers[ix].machine.as_mut() else {
            return Vec::new();
        };
        machine.busy = false;
        machine.power = Power::Unknown;
        let mut effects = Vec::new();
        if unreachable {
            if !matches!(machine.bmc, BmcHealth::Unreachable { .. }) {
                effects.push(audit(
                    AuditKind::BmcUnreachable,
                    Some(server),
                    None,
                    None,
                    epoch,
                    format!(
                        "the BMC of {server} does not answer ({error}); {server} stays out of use until it does, asked again every {} s",
                        BMC_RETRY.as_secs()
                    ),
                ));
            }
            machine.bmc = BmcHealth::Unreachable {
                since: now,
                error: error.to_owned(),
            };
        } else {
            // The BMC answered, but not as asked (a refusal, a value it does not allow, a
            // power state that never came): out of use, with why, rather than retried
            // into the same answer every round.
            machine.bmc = BmcHealth::Answering;
            machine.failed.get_or_insert_with(|| error.to_owned());
        }
        let aborted = machine
            .boot
            .as_ref()
            .filter(|boot| Some(boot.epoch) == epoch)
            .map(|boot| boot.step);
        if let Some(step) = aborted {
            machine.boot = None;
            if !unreachable {
                machine.failed = Some(format!("re-image failed while {}: {error}", step.name()));
            }
            // A fence before any reuse: the machine may be half way through its cycle.
            machine.fence = Some(format!(
                "its re-image under {} failed",
                epoch.map_or("?".to_owned(), |epoch| epoch.to_string())
            ));
            effects.push(audit(
                AuditKind::MachineFailed,
                Some(server),
                None,
                None,
                epoch,
                format!(
                    "re-imaging {server} failed while {}: {error}; its lease ends and another server is found",
                    step.name()
                ),
            ));
            effects.extend(self.end_lease(
                ix,
                LeaseEndCause::MachineFailed,
                "its machine could not be re-imaged",
                now,
            ));
        }
        effects
    }

    /// Per machine, each round: hold a booting machine's lease, time out a boot that never
    /// registers, fence a machine whose lease ended unheard, ask a silent BMC again.
    pub(super) fn tick_machines(&mut self, now: Millis) -> Vec<Effect> {
        let ttl = self.timings.lease_ttl;
        let boot_timeout = self.timings.machine_boot_timeout;
        let mut effects = Vec::new();
        for ix in 0..self.servers.len() {
            let entry = &mut self.servers[ix];
            let Some(machine) = entry.machine.as_mut() else {
                continue;
            };
            if let Some(boot) = &machine.boot {
                // Nothing runs the account on it before its new agent registers, so the
                // lease is the gateway's to hold meanwhile.
                if let Some(lease) = entry.lease.as_mut() {
                    lease.expires_at = now + ttl;
                }
                if boot.step == BootStep::Booting && now.since(boot.step_since) > boot_timeout {
                    let (epoch, waited) = (boot.epoch, now.since(boot.step_since));
                    let server = entry.id.clone();
                    let failure = BootFailure {
                        out_of_use: format!(
                            "never registered within {} s of power-on",
                            boot_timeout.as_secs()
                        ),
                        audit: format!(
                            "{server} powered on for {epoch} but its node agent did not register within {} ms; powering it off and leaving it out of use",
                            waited.as_millis()
                        ),
                        lease_end: "its machine never registered after booting",
                    };
                    effects.extend(self.fail_boot(ix, epoch, failure, now));
                    effects.extend(self.power_off(ix, format!("it never registered for {epoch}")));
                }
                continue;
            }
            if machine.busy || entry.lease.is_some() {
                continue;
            }
            let server = entry.id.clone();
            match &machine.bmc {
                BmcHealth::Unknown => {
                    machine.busy = true;
                    effects.push(Effect::Machine(MachineCommand::Probe { server }));
                }
                BmcHealth::Unreachable { since, .. } if now.since(*since) >= BMC_RETRY => {
                    machine.busy = true;
                    effects.push(Effect::Machine(MachineCommand::Probe { server }));
                }
                BmcHealth::Unreachable { .. } => {}
                BmcHealth::Answering => {
                    // Out of use but left on with a fence due (it booted a stale image
                    // while its re-image command still ran): powered off once, now that
                    // the BMC is free. A BMC that fails it leaves the power unknown, so
                    // this is not tried again and again.
                    if machine.failed.is_some() && machine.power == Power::On {
                        if let Some(why) = machine.fence.clone() {
                            machine.busy = true;
                            effects.push(Effect::Machine(MachineCommand::PowerOff {
                                server,
                                reason: why,
                            }));
                        }
                        continue;
                    }
                    if !entry.connected && machine.power != Power::Off && machine.failed.is_none() {
                        let why = machine.fence.clone().unwrap_or_else(|| {
                            "its node agent is gone and it may still be running".to_owned()
                        });
                        machine.fence.get_or_insert(why.clone());
                        machine.busy = true;
                        effects.push(Effect::Machine(MachineCommand::PowerOff {
                            server,
                            reason: why,
                        }));
                    }
                }
            }
        }
        effects
    }

    /// The re-image of `epoch` will not come up: the machine is out of use and the lease
    /// ends, so that the account gets another server; the caller powers it off.
    fn fail_boot(
        &mut self,
        ix: usize,
        epoch: Epoch,
        failure: BootFailure,
        now: Millis,
    ) -> Vec<Effect> {
        let entry = &mut self.servers[ix];
        let server = entry.id.clone();
        let Some(machine) = entry.machine.as_mut() else {
            return Vec::new();
        };
        machine.boot = None;
        machine.failed = Some(failure.out_of_use);
        let mut effects = vec![audit(
            AuditKind::MachineFailed,
            Some(&server),
            None,
            None,
            Some(epoch),
            failure.audit,
        )];
        effects.extend(self.end_lease(ix, LeaseEndCause::MachineFailed, failure.lease_end, now));
        effects
    }

    /// Asks the shell to power machine `ix` off, unless it is busy with something else.
    fn power_off(&mut self, ix: usize, reason: String) -> Vec<Effect> {
        let entry = &mut self.servers[ix];
        let Some(machine) = entry.machine.as_mut() else {
            return Vec::new();
        };
        if machine.busy {
            return Vec::new();
        }
        machine.busy = true;
        vec![Effect::Machine(MachineCommand::PowerOff {
            server: entry.id.clone(),
            reason,
        })]
    }

    /// The machine whose boot NIC is `mac`, and what it should boot now: the account and
    /// epoch of its re-image between power-on and registration; `None` (boot from disk)
    /// otherwise.
    pub fn pending_boot(&self, mac: &str) -> Option<(&ServerId, Option<(AccountIx, Epoch)>)> {
        let entry = self
            .servers
            .iter()
            .find(|entry| entry.machine.as_ref().is_some_and(|m| m.mac == mac))?;
        let pending = entry
            .machine
            .as_ref()
            .and_then(|machine| machine.boot.as_ref())
            .filter(|boot| boot.step >= BootStep::PoweringOn)
            .map(|boot| (boot.account, boot.epoch));
        Some((&entry.id, pending))
    }
}
