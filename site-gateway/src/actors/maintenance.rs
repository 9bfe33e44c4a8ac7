//! The SiteMaster's maintenance message (`POST /v1/servers/{id}/drain` and `/undrain`):
//! one call of the core, answered once its record is journaled.

use actix::prelude::*;
use leasehold_federation::ids::ServerId;

use super::master::SiteMaster;
use crate::model::effects::MaintenanceRecord;
use crate::model::site::MaintenanceRefusal;

/// Put a server into maintenance (`Some`) or give it back (`None`). The answer is `Ok`
/// once journaled, the core's refusal, or `Err(None)` if the journal did not take it (the
/// gateway is stopping).
#[derive(Message)]
#[rtype(result = "Result<(), Option<MaintenanceRefusal>>")]
pub struct SetMaintenance {
    pub server: ServerId,
    pub record: Option<MaintenanceRecord>,
}

impl Handler<SetMaintenance> for SiteMaster {
    type Result = ResponseFuture<Result<(), Option<MaintenanceRefusal>>>;

    fn handle(&mut self, message: SetMaintenance, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        match self
            .core
            .set_maintenance(&message.server, message.record, now)
        {
            Err(refusal) => Box::pin(async move { Err(Some(refusal)) }),
            Ok(effects) => {
                let (durable, journaled) = tokio::sync::oneshot::channel();
                self.perform_then(effects, ctx, Some(durable));
                Box::pin(async move { journaled.await.map_err(|_| None) })
            }
        }
    }
}
