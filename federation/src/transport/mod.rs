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
    /// The versions of its protocol this build speaks, newest first. A listener offers
    /// them all and a dialler asks for them all, so two builds one version apart agree on
    /// the older one (docs/wire.md, "Versioning").
    pub fn versions(self) -> &'static [u16] {
        match self {
            Alpn::Site => &[1],
            Alpn::Node => &[2, 1],
        }
    }

    /// The newest version this build speaks.
    pub fn current(self) -> u16 {
        self.versions()[0]
    }

    /// The protocol, newest version, as people read it (`leasehold-node/2`).
    pub fn protocol_name(self) -> &'static str {
        match self {
            Alpn::Site => "leasehold-site/1",
            Alpn::Node => "leasehold-node/2",
        }
    }

    /// One version of the protocol as people read it, and as its ALPN id.
    pub fn name_of(self, version: u16) -> String {
        match self {
            Alpn::Site => format!("leasehold-site/{version}"),
            Alpn::Node => format!("leasehold-node/{version}"),
        }
    }

    /// Every version this build speaks, newest first, as people read them
    /// (`leasehold-node/2, leasehold-node/1`).
    pub fn spoken(self) -> String {
        let names: Vec<String> = self.versions().iter().map(|v| self.name_of(*v)).collect();
        names.join(", ")
    }

    /// The version an ALPN id names, if it is one of this protocol's that this build speaks.
    pub fn version_of(self, id: &[u8]) -> Option<u16> {
        self.versions()
            .iter()
            .copied()
            .find(|version| self.name_of(*version).as_bytes() == id)
    }

    /// The ALPN ids of `versions`, in that order (the order is the listener's preference).
    pub fn ids(self, versions: &[u16]) -> Vec<Vec<u8>> {
        versions
            .iter()
            .map(|version| self.name_of(*version).into_bytes())
            .collect()
    }
}
