//! Everything that crosses a process boundary in Leasehold, and nothing else.
//!
//! - [`addr`]: `HOST:PORT` addresses to dial, names resolved at each dial.
//! - [`generation`]: which gateway of a site of standbys to take messages from.
//! - [`ids`]: the newtypes for sites, servers, accounts and epochs.
//! - [`placeholders`]: the `{name}` grammar of workload commands, shared by config check
//!   and the node agent.
//! - [`wire`]: the versioned envelope, every message type, the CBOR codec, frames.
//! - [`transport`]: QUIC (quinn) with mutual TLS (rustls, ring), certificates, peer identity.
//!
//! Architecture invariant: this crate knows nothing of actix, of the decision core, or of
//! config files. The gateway and the node agent depend on it; it depends on neither.

pub mod addr;
pub mod generation;
pub mod ids;
pub mod placeholders;
pub mod transport;
pub mod wire;
