//! The QUIC transport between sites and between a node and its gateway.
//!
//! - [`certs`]: the federation CA, site and node certificates on disk.
//! - [`identity`]: who a certificate names ([`identity::PeerName`]) and who may connect
//!   ([`identity::PeerPolicy`]).
//! - [`tls`]: rustls configurations with mutual TLS against the federation CA.
//! - [`endpoint`]: a quinn endpoint that accepts and opens [`connection::Connection`]s.
//! - [`connection`]: request/response and one-way messages over one QUIC connection.

pub mod certs;
pub mod connection;
pub mod endpoint;
pub mod identity;
pub mod tls;

/// The application protocol a connection speaks. Site-to-site and node-to-gateway traffic
/// use different ALPNs so that a node certificate can never open a federation session and a
/// federation listener never serves the management channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alpn {
    /// Between two site gateways.
    Site,
    /// Between a node agent and its site gateway (the management channel).
    Node,
}

/// The management protocols before this one: a listener still negotiates them, only to
/// close the connection with a reason that names both versions (an agent that cannot
/// negotiate at all would only see a TLS alert).
pub const OLDER_NODE_PROTOCOLS: &[&[u8]] = &[b"leasehold-node/1"];

impl Alpn {
    /// The protocol this build speaks.
    pub fn protocol_id(self) -> &'static [u8] {
        self.protocol_name().as_bytes()
    }

    /// What a listener offers in its handshake: the protocol it speaks first, then the
    /// older ones it knows well enough to refuse by name.
    pub fn listener_ids(self) -> Vec<Vec<u8>> {
        let mut ids = vec![self.protocol_id().to_vec()];
        if self == Alpn::Node {
            ids.extend(OLDER_NODE_PROTOCOLS.iter().map(|id| id.to_vec()));
        }
        ids
    }

    /// The protocol as people read it.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Alpn::Site => "leasehold-site/1",
            Alpn::Node => "leasehold-node/2",
        }
    }
}
