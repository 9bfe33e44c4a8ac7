//! The inputs of a [`SiteCore`] about machines (docs/machines.md): a machine's agent
//! registering from a boot, what its BMC did, and the boot service's question.

use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::wire::common::Refusal;
use leasehold_federation::wire::node::{Registration, RunningWorkload};

use super::SiteCore;
use crate::config::Image;
use crate::model::Millis;
use crate::model::effects::Effect;
use crate::model::site::{BootStep, CheckedClaim, Power};

/// What the boot service answers a machine that asks for its script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAnswer {
    /// Boot this image: the re-image of `epoch` is waiting for it.
    Image {
        server: ServerId,
        account: leasehold_federation::ids::AccountId,
        epoch: Epoch,
        image: Image,
    },
    /// No re-image is pending: boot from the local disk.
    Disk,
    /// No machine of this site has that MAC.
    Unknown,
}

impl SiteCore {
    /// A machine's agent registered with the epoch and token from its kernel command line
    /// (the token checked by the shell, which holds the key).
    pub fn register_booted(
        &mut self,
        server: &ServerId,
        claim: CheckedClaim,
        running: Option<&RunningWorkload>,
        highest_epoch: Epoch,
        now: Millis,
    ) -> (Result<Registration, Refusal>, Vec<Effect>) {
        self.model
            .register_booted(server, claim, running, highest_epoch, now)
    }

    /// A machine's power, as its BMC said after a probe or a power-off.
    pub fn machine_power(&mut self, server: &ServerId, power: Power, now: Millis) -> Vec<Effect> {
        self.model.machine_power(server, power, now)
    }

    /// A re-image got past `reached`.
    pub fn machine_progress(
        &mut self,
        server: &ServerId,
        epoch: Epoch,
        reached: BootStep,
        now: Millis,
    ) {
        self.model.machine_progress(server, epoch, reached, now);
    }

    /// A BMC command failed; `epoch` names the re-image it was for, if any.
    pub fn machine_failed(
        &mut self,
        server: &ServerId,
        epoch: Option<Epoch>,
        error: &str,
        unreachable: bool,
        now: Millis,
    ) -> Vec<Effect> {
        self.model
            .machine_failed(server, epoch, error, unreachable, now)
    }

    /// The boot script for the machine whose boot NIC is `mac` (lower case, colons).
    pub fn boot_answer(&self, mac: &str) -> BootAnswer {
        let Some((server, pending)) = self.model.pending_boot(mac) else {
            return BootAnswer::Unknown;
        };
        let Some((account, epoch)) = pending else {
            return BootAnswer::Disk;
        };
        let config = &self.model.accounts()[account as usize].config;
        match &config.image {
            Some(image) => BootAnswer::Image {
                server: server.clone(),
                account: config.name.clone(),
                epoch,
                image: image.clone(),
            },
            // The arbiter gives machines only to accounts with an image; an edit that
            // removed it since is answered as no re-image, and the boot times out.
            None => BootAnswer::Disk,
        }
    }
}
