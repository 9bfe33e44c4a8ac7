//! The SiteMaster's maintenance message (`POST /v1/servers/{id}/drain` and `/undrain`):
//! one call of the core, answered once its record is journaled.

use actix::prelude::*;
use leasehold_federation::ids::ServerId;

use super::master::SiteMaster;
use crate::model::effects::MaintenanceRecord;
use crate::model::site::{MaintenanceRefusal, ServerSnapshot};

/// Put a server into maintenance (`Some`) or give it back (`None`). The answer is the
/// server as the change left it (not as a later round did: an undrained server may be
/// taken in the next round), once journaled; the core's refusal; or `Err(None)` if the
/// journal did not take it (the gateway is stopping).
#[derive(Message)]
#[rtype(result = "Result<ServerSnapshot, Option<MaintenanceRefusal>>")]
pub struct SetMaintenance {
    pub server: ServerId,
    pub record: Option<MaintenanceRecord>,
}

impl Handler<SetMaintenance> for SiteMaster {
    type Result = ResponseFuture<Result<ServerSnapshot, Option<MaintenanceRefusal>>>;

    fn handle(&mut self, message: SetMaintenance, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        match self
            .core
            .set_maintenance(&message.server, message.record, now)
        {
            Err(refusal) => Box::pin(async move { Err(Some(refusal)) }),
            Ok(effects) => {
                let left = self.server_status(&message.server, now);
                let (durable, journaled) = tokio::sync::oneshot::channel();
                self.perform_then(effects, ctx, Some(durable));
                Box::pin(async move {
                    journaled.await.map_err(|_| None)?;
                    left.ok_or(None)
                })
            }
        }
    }
}
