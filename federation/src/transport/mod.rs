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

impl Alpn {
    pub fn protocol_id(self) -> &'static [u8] {
        match self {
            Alpn::Site => b"leasehold-site/1",
            Alpn::Node => b"leasehold-node/1",
        }
    }
}
