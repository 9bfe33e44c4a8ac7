//! Standby gateways (docs/ha.md): a site's journal in etcd, and the election that picks
//! which of the site's gateways acts. The decisions are in [`crate::model::election`];
//! these are their shells, blocking, on threads of their own.

pub mod elector;
pub mod standby;
pub mod store;
pub mod warm;

pub use elector::{Elector, ElectorConfig};
pub use store::{EtcdJournal, SiteKeys, StoreError};
