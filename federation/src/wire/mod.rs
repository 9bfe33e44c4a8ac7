//! The wire: every message that crosses a process, its envelope, codec and frames.
//!
//! One message type per intent. A request names its response type ([`Request::Response`]),
//! so a caller gets a typed answer and a handler can only reply with the right type.
//! [`catalogue`] lists every kind once, with who may send it; adding a message means adding
//! it there, and the round-trip tests refuse a kind without a sample.
//!
//! Versioning: within [`WIRE_VERSION`], messages only gain fields marked
//! `#[serde(default)]`; anything else bumps the version. Golden encodings in the tests hold
//! us to it.

pub mod catalogue;
pub mod codec;
pub mod common;
pub mod envelope;
pub mod frame;
pub mod node;
pub mod node_v1;
pub mod site;

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use catalogue::{Inbound, InboundOneWay, InboundRequest};
pub use envelope::{Envelope, WireError};

/// The version this build speaks. A peer speaking another is refused with a reason.
pub const WIRE_VERSION: u16 = 1;

/// Every message body on the wire.
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind named in the envelope: the type's name.
    const KIND: &'static str;
}

/// A message that expects exactly one answer of type `Response`.
pub trait Request: Message {
    type Response: Message;
}

/// A message that expects no answer.
pub trait OneWay: Message {}

/// A one-way message that travels in a QUIC datagram: small, frequent, and superseded by
/// the next one, so a lost one is not resent. Every other one-way kind takes a stream.
pub trait Datagram: OneWay {}

/// Who sends a message. A receiver refuses a kind that its peer's role may not send, so a
/// node cannot speak site-to-site messages even over a valid connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sender {
    /// A node agent, to its gateway.
    Node,
    /// A site gateway, to one of its node agents.
    Gateway,
    /// A site gateway, to a peer site gateway.
    Site,
}

/// The typed way to answer one inbound request: a `Reply<R, _>` can only send an
/// `R::Response`. `P` is the transport's port back to the requester.
pub struct Reply<R, P> {
    pub(crate) port: P,
    pub(crate) id: u64,
    _request: PhantomData<fn() -> R>,
}

impl<R: Request, P> Reply<R, P> {
    pub(crate) fn new(port: P, id: u64) -> Self {
        Reply {
            port,
            id,
            _request: PhantomData,
        }
    }

    /// The correlation id of the request this answers.
    pub fn request_id(&self) -> u64 {
        self.id
    }
}

impl<R, P> std::fmt::Debug for Reply<R, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
