//! The Group actor: one per account homed at the site. It owns the account's demand
//! model and tells the master when the demand changes.

use actix::prelude::*;

use crate::model::Millis;
use crate::model::arbiter::AccountIx;
use crate::model::demand::DemandModel;

pub struct Group {
    account: AccountIx,
    model: DemandModel,
    demand: Option<u32>,
    master: Recipient<DemandChanged>,
}

impl Group {
    pub fn new(account: AccountIx, model: DemandModel, master: Recipient<DemandChanged>) -> Self {
        Group {
            account,
            model,
            demand: None,
            master,
        }
    }
}

impl Actor for Group {
    type Context = Context<Self>;
}

/// The account's measured load this round.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LoadMeasured {
    pub total_load: f64,
    pub now: Millis,
}

/// An account's demand changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DemandChanged {
    pub account: AccountIx,
    pub demand: u32,
}

impl Handler<LoadMeasured> for Group {
    type Result = ();

    fn handle(&mut self, message: LoadMeasured, _: &mut Context<Self>) {
        let demand = self.model.observe(message.total_load, message.now);
        if self.demand != Some(demand) {
            self.demand = Some(demand);
            // do_send: at most one message per account per round, and the master must
            // never wait on a group.
            self.master.do_send(DemandChanged {
                account: self.account,
                demand,
            });
        }
    }
}

/// A config edit changed the account's SLA.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetSla(pub crate::model::demand::Sla);

impl Handler<SetSla> for Group {
    type Result = ();

    fn handle(&mut self, message: SetSla, _: &mut Context<Self>) {
        self.model.set_sla(message.0);
        // Re-announce on the next load sample, clamped to the new bounds at once.
        self.demand = None;
    }
}
