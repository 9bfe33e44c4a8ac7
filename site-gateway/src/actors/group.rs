//! The Group actor: one per account the site serves as its own, its local decision-maker.
//! A shell over the account's [`DemandModel`]: each round the master tells it the
//! account's measured load and it answers the demand, which the master's round arbitrates
//! on at once.

use actix::prelude::*;

use crate::model::Millis;
use crate::model::demand::{DemandModel, Sla};

pub struct Group {
    model: DemandModel,
}

impl Group {
    pub fn new(model: DemandModel) -> Self {
        Group { model }
    }
}

impl Actor for Group {
    type Context = Context<Self>;
}

/// The account's measured load this round; the answer is its demand (servers wanted).
#[derive(Message)]
#[rtype(result = "u32")]
pub struct LoadMeasured {
    pub total_load: f64,
    pub now: Millis,
    /// The site is pressed: some account short, no server free (`RoundLoads::pressed`).
    pub pressed: bool,
}

impl Handler<LoadMeasured> for Group {
    type Result = u32;

    fn handle(&mut self, message: LoadMeasured, _: &mut Context<Self>) -> u32 {
        self.model
            .observe_pressed(message.total_load, message.now, message.pressed)
    }
}

/// A config edit changed the account's SLA; the next demand is within the new bounds.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetSla(pub Sla);

impl Handler<SetSla> for Group {
    type Result = ();

    fn handle(&mut self, message: SetSla, _: &mut Context<Self>) {
        self.model.set_sla(message.0);
    }
}
