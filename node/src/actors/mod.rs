//! The node's actix shell: the `Server` actor (owns the model, performs its effects) and
//! the link task that keeps the management channel to the gateway up.

pub mod link;
pub mod messages;
pub mod server;

pub use server::Server;
