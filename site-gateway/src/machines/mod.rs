//! The machine shell (docs/machines.md): what the site core's `MachineCommand`s ask of
//! BMCs, done on the blocking pool, and reported back to the master as the core's inputs.
//! The boot service (`boot_service.rs`) answers machines' iPXE requests from the core's
//! state; the boot key (`boot_key.rs`) makes and checks their tokens.

pub mod boot_key;
pub mod boot_service;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_redfish::{Bmc, BmcConfig, BootTarget, Credentials, PowerState, TlsTrust};

use crate::actors::master::{MachineReport, SiteMaster};
use crate::config::SiteConfig;
use crate::model::effects::MachineCommand;
use crate::model::site::{BootStep, Power};

#[derive(Debug, thiserror::Error)]
pub enum MachinesError {
    #[error("server {server}: {source}")]
    Credentials {
        server: ServerId,
        source: leasehold_redfish::Error,
    },
    #[error("server {server}: bmc_ca {path}: {detail}")]
    Ca {
        server: ServerId,
        path: String,
        detail: String,
    },
}

/// One machine's BMC: its settings, and the connection (session) once made. A command
/// holds the slot's lock for its whole run, so one machine's BMC sees one command at a
/// time (the core sends one at a time anyway).
struct Slot {
    config: BmcConfig,
    bmc: Option<Bmc>,
}

impl Slot {
    /// Runs `work` on the BMC, connecting first if needed; any error drops the connection,
    /// so the next command discovers and logs in afresh (a BMC that rebooted, a session
    /// that expired).
    fn run<T>(
        &mut self,
        work: impl FnOnce(&mut Bmc) -> Result<T, leasehold_redfish::Error>,
    ) -> Result<T, leasehold_redfish::Error> {
        let bmc = match &mut self.bmc {
            Some(bmc) => bmc,
            None => self.bmc.insert(Bmc::connect(&self.config)?),
        };
        let result = work(bmc);
        if result.is_err() {
            self.bmc = None;
        }
        result
    }
}

pub struct Machines {
    slots: HashMap<ServerId, Arc<Mutex<Slot>>>,
    power_timeout: Duration,
}

impl Machines {
    /// The site's machines with their BMC settings; every credentials and CA file is read
    /// now, so a bad one stops the gateway at start with its name.
    pub fn from_config(config: &SiteConfig) -> Result<Machines, MachinesError> {
        let mut slots = HashMap::new();
        for server in &config.servers {
            let Some(machine) = &server.machine else {
                continue;
            };
            let credentials =
                Credentials::from_file(&machine.bmc_credentials).map_err(|source| {
                    MachinesError::Credentials {
                        server: server.id.clone(),
                        source,
                    }
                })?;
            let mut bmc = BmcConfig::new(&machine.bmc_url, credentials);
            bmc.mac = Some(machine.mac.clone());
            bmc.tls = match (&machine.bmc_ca, machine.bmc_tls_verify) {
                (Some(path), _) => Some(TlsTrust::Verify {
                    ca_pem: std::fs::read(path).map_err(|error| MachinesError::Ca {
                        server: server.id.clone(),
                        path: path.display().to_string(),
                        detail: error.to_string(),
                    })?,
                }),
                (None, false) => {
                    tracing::warn!(server = %server.id, bmc = %machine.bmc_url, "bmc_tls_verify = false: this BMC's certificate is not verified");
                    Some(TlsTrust::NoVerify)
                }
                (None, true) => None,
            };
            slots.insert(
                server.id.clone(),
                Arc::new(Mutex::new(Slot {
                    config: bmc,
                    bmc: None,
                })),
            );
        }
        Ok(Machines {
            slots,
            power_timeout: config.timings.machine_power_timeout,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Does `command` in the background and reports to `master`.
    pub fn perform(&self, command: MachineCommand, master: Addr<SiteMaster>) {
        let server = match &command {
            MachineCommand::Probe { server }
            | MachineCommand::PowerOff { server, .. }
            | MachineCommand::Reimage { server, .. } => server.clone(),
        };
        let Some(slot) = self.slots.get(&server).cloned() else {
            tracing::error!(%server, "a machine command for a server with no BMC settings");
            return;
        };
        let timeout = self.power_timeout;
        actix::spawn(async move {
            let report = match command {
                MachineCommand::Probe { server } => {
                    match blocking(&slot, |bmc| bmc.system()).await {
                        Ok(state) => MachineReport::Power {
                            server,
                            power: power_of(&state.power),
                        },
                        Err(error) => failed(server, None, &error),
                    }
                }
                MachineCommand::PowerOff { server, reason } => {
                    tracing::info!(%server, %reason, "powering off");
                    match blocking(&slot, move |bmc| bmc.power_off(timeout)).await {
                        Ok(()) => MachineReport::Power {
                            server,
                            power: Power::Off,
                        },
                        Err(error) => failed(server, None, &error),
                    }
                }
                MachineCommand::Reimage { server, epoch } => {
                    reimage(&slot, &server, epoch, timeout, &master).await
                }
            };
            // A master that is gone means the gateway is stopping; nothing to report to.
            let _ = master.send(report).await;
        });
    }
}

/// One step of a re-image, run on the blocking pool.
type BmcWork = Box<dyn FnOnce(&mut Bmc) -> Result<(), leasehold_redfish::Error> + Send>;

/// Power off, set the one-time network boot, power on; each step reported (and its
/// report taken in by the master) before the next, so the boot service answers with the
/// new script only once the machine is set to fetch it.
async fn reimage(
    slot: &Arc<Mutex<Slot>>,
    server: &ServerId,
    epoch: Epoch,
    timeout: Duration,
    master: &Addr<SiteMaster>,
) -> MachineReport {
    let steps: [(BootStep, BmcWork); 3] = [
        (
            BootStep::PoweringOff,
            Box::new(move |bmc: &mut Bmc| bmc.power_off(timeout)),
        ),
        (
            BootStep::SettingBoot,
            Box::new(|bmc: &mut Bmc| bmc.set_one_time_boot(&BootTarget::Pxe).map(|_| ())),
        ),
        (
            BootStep::PoweringOn,
            Box::new(move |bmc: &mut Bmc| bmc.power_on(timeout)),
        ),
    ];
    for (step, work) in steps {
        if let Err(error) = blocking(slot, work).await {
            return failed(server.clone(), Some(epoch), &error);
        }
        let progress = MachineReport::Progress {
            server: server.clone(),
            epoch,
            reached: step,
        };
        if master.send(progress).await.is_err() {
            break;
        }
    }
    MachineReport::Done
}

async fn blocking<T: Send + 'static>(
    slot: &Arc<Mutex<Slot>>,
    work: impl FnOnce(&mut Bmc) -> Result<T, leasehold_redfish::Error> + Send + 'static,
) -> Result<T, leasehold_redfish::Error> {
    let slot = slot.clone();
    let joined = tokio::task::spawn_blocking(move || {
        // A poisoned lock means a BMC call panicked; its state is only a connection,
        // dropped below, so going on is safe.
        let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.run(work)
    })
    .await;
    joined.unwrap_or_else(|error| {
        Err(leasehold_redfish::Error::Config {
            url: "(blocking pool)".to_owned(),
            detail: format!("the BMC call did not finish: {error}"),
        })
    })
}

fn failed(
    server: ServerId,
    epoch: Option<Epoch>,
    error: &leasehold_redfish::Error,
) -> MachineReport {
    tracing::warn!(%server, %error, "BMC command failed");
    MachineReport::Failed {
        server,
        epoch,
        error: error.to_string(),
        unreachable: error.is_unreachable(),
    }
}

fn power_of(power: &PowerState) -> Power {
    match power {
        PowerState::On => Power::On,
        PowerState::Off => Power::Off,
        _ => Power::Unknown,
    }
}
