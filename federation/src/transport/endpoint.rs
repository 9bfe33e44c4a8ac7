//! A quinn endpoint bound to one address and one ALPN, with mutual TLS against the
//! federation CA. A site gateway runs two: the federation endpoint (site ALPN, peers) and
//! the management endpoint (node ALPN, its node agents); a node agent runs one client.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use super::certs::Identity;
use super::connection::{Connection, DatagramSink, Inbox, close_code};
use super::identity::{IdentityError, PeerName, PeerPolicy};
use super::{Alpn, tls};
use crate::wire::Sender;
use crate::wire::frame::DEFAULT_MAX_FRAME_BYTES;

/// Limits of every connection of an endpoint.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame accepted or sent.
    pub max_frame_bytes: u32,
    /// How long a request waits for its answer, and a stream for its frame.
    pub request_timeout: Duration,
    /// A connection with no traffic for this long is dead.
    pub idle_timeout: Duration,
    /// QUIC keep-alive, well inside `idle_timeout`.
    pub keep_alive: Duration,
    /// Requests and one-way messages a peer may have in flight at once.
    pub max_concurrent_streams: u32,
    /// Decoded messages waiting for the connection's owner.
    pub inbox_capacity: usize,
    /// Flow-control windows and datagram buffers; `None` keeps quinn's, which are sized
    /// for bulk transfer (megabytes per connection).
    pub windows: Option<Windows>,
    /// The round-trip time assumed before one is measured; `None` keeps quinn's 333 ms,
    /// right for the unknown paths between sites.
    pub initial_rtt: Option<Duration>,
    /// The longest the peer is asked to wait before it acknowledges a packet it has no
    /// answer for (QUIC's ACK-frequency extension); `None` keeps QUIC's 25 ms. Longer than
    /// the interval between a connection's messages, an acknowledgement rides on the next
    /// message instead of a packet of its own; the price is that a lost packet with none
    /// after it is resent about this much later.
    pub ack_delay: Option<Duration>,
    /// Speak only this version of the endpoint's protocol, not every version this build
    /// speaks: to stand in for a build one version apart, or to hold a site at the older
    /// version while it is upgraded (docs/wire.md, "Versioning").
    pub only_version: Option<u16>,
}

/// What one connection may have in flight, and so at most buffer: a management connection
/// carries small messages, and a gateway holds tens of thousands of them.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Bytes a peer may send on one stream before we read them.
    pub stream_receive: u32,
    /// Bytes a peer may send on all streams of the connection before we read them.
    pub connection_receive: u32,
    /// Bytes we send before the peer acknowledges them.
    pub send: u64,
    /// Datagrams received and not yet read, and queued to send, in bytes.
    pub datagram_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(1),
            max_concurrent_streams: 256,
            inbox_capacity: 1024,
            windows: None,
            initial_rtt: None,
            ack_delay: None,
            only_version: None,
        }
    }
}

impl Limits {
    /// The management channel's: a node has a few commands and reports in flight at once
    /// and pulses in datagrams, so its connection needs kilobytes of windows, not quinn's
    /// megabytes (docs/node.md, "What a connection costs").
    pub fn management() -> Limits {
        Limits {
            max_concurrent_streams: 16,
            inbox_capacity: 64,
            windows: Some(Windows {
                stream_receive: 64 * 1024,
                connection_receive: 256 * 1024,
                send: 256 * 1024,
                datagram_buffer: 16 * 1024,
            }),
            // Within a site. A handshake's first packet, sent while the gateway restarts,
            // is lost; quinn resends it after about three initial RTTs (a second at its
            // default), and the node's lease runs meanwhile. 50 ms brings the resend
            // within 200 ms of the gateway's return.
            initial_rtt: Some(Duration::from_millis(50)),
            // A node pulses at least once a second and the gateway acknowledges every
            // pulse: the pulses keep the connection alive. A keep-alive at the pulse
            // interval raced them and cost a PING and its acknowledgement now and then.
            keep_alive: Duration::from_secs(3),
            ..Limits::default()
        }
    }

    /// A gateway's, for the connections of its nodes. A node pulses at least once a
    /// second and a leased node's pulse is answered: the node is asked to hold its
    /// acknowledgement of an answer for up to 1.25 s, a quarter more than the longest
    /// pulse interval, so that it rides on the next pulse, even one sent a tick late,
    /// instead of taking a packet of its own (D-55). Only the gateway asks: a delay asked
    /// of the gateway would lengthen the node's probe timeout, and with it the idle
    /// timeout by which a node of standby gateways notices that its gateway is gone
    /// (QUIC keeps that at least three probe timeouts).
    pub fn management_listener() -> Limits {
        Limits {
            ack_delay: Some(Duration::from_millis(1250)),
            ..Limits::management()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("QUIC rejected the TLS configuration: {0}")]
    QuicCrypto(String),
    #[error("cannot listen on {addr}: {source} (is another process using it?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid transport limit: {0}")]
    Limit(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot start a connection to {peer} at {addr}: {source}")]
    Start {
        peer: String,
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },
    #[error("handshake with {peer} at {addr} failed: {source}")]
    Handshake {
        peer: String,
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("{peer} at {addr} presented an unusable identity: {reason}")]
    Identity {
        peer: String,
        addr: SocketAddr,
        reason: String,
    },
    #[error("{peer} at {addr} speaks no protocol of ours: {reason}")]
    Protocol {
        peer: String,
        addr: SocketAddr,
        reason: String,
    },
}

/// Why an incoming connection was not accepted. Every one is logged with its reason.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("refused a connection from {remote}: {reason}")]
    Refused { remote: SocketAddr, reason: String },
}

/// A certificate to present when dialling from a shared endpoint
/// ([`Endpoint::dial_identity`]).
#[derive(Clone)]
pub struct DialIdentity {
    name: String,
    config: quinn::ClientConfig,
}

impl std::fmt::Debug for DialIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialIdentity")
            .field("name", &self.name)
            .finish()
    }
}

pub struct Endpoint {
    inner: quinn::Endpoint,
    alpn: Alpn,
    policy: Arc<RwLock<PeerPolicy>>,
    limits: Limits,
    sink: Option<Arc<dyn DatagramSink>>,
    /// It accepts connections (not a dial-only endpoint).
    listens: bool,
    /// What it presents when it dials as itself; replaced by [`Endpoint::set_identity`].
    client: RwLock<quinn::ClientConfig>,
}

impl Endpoint {
    /// Listens on `addr` for peers that `policy` admits, and can dial out as well.
    /// Must be called inside the tokio runtime that will drive the endpoint for its life.
    pub fn listen(
        addr: SocketAddr,
        identity: &Identity,
        alpn: Alpn,
        policy: PeerPolicy,
        limits: Limits,
    ) -> Result<Endpoint, EndpointError> {
        let policy = Arc::new(RwLock::new(policy));
        let server_config = server_config(identity, alpn, &policy, &limits)?;
        // A fixed reset key, derived from our private key: after a restart (kill -9) on
        // the same address, the new process's stateless resets are valid for the old
        // process's connections, so peers and nodes learn at their next packet that the
        // connection is gone and redial at once, instead of at the idle timeout.
        // Connection ids must validate across the restart too, or the new process drops
        // the old connections' packets without a reset.
        let (reset, cid_key) = restart_keys(identity);
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset));
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let inner = bind(addr, endpoint_config, Some(server_config))?;
        Ok(Endpoint {
            inner,
            alpn,
            policy,
            client: RwLock::new(client_config(identity, alpn, &limits)?),
            limits,
            sink: None,
            listens: true,
        })
    }

    /// An endpoint that only dials out (a node agent), bound to `addr` (port 0 is fine).
    pub fn dial_only(
        addr: SocketAddr,
        identity: &Identity,
        alpn: Alpn,
        limits: Limits,
    ) -> Result<Endpoint, EndpointError> {
        // A fleet's endpoint carries hundreds of connections on its one socket.
        let inner = bind(addr, quinn::EndpointConfig::default(), None)?;
        Ok(Endpoint {
            inner,
            alpn,
            policy: Arc::new(RwLock::new(PeerPolicy::Sites(Default::default()))),
            client: RwLock::new(client_config(identity, alpn, &limits)?),
            limits,
            sink: None,
            listens: false,
        })
    }

    /// Datagrams of every connection accepted from now on go to `sink`, not to the
    /// connections' inboxes.
    pub fn with_datagram_sink(mut self, sink: Arc<dyn DatagramSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Presents `identity` from now on (a renewed certificate, a new CA bundle): in the
    /// handshakes of connections it accepts and of those it dials. Open connections keep
    /// the certificates they were made with; nothing is dropped.
    pub fn set_identity(&self, identity: &Identity) -> Result<(), EndpointError> {
        let client = client_config(identity, self.alpn, &self.limits)?;
        if self.listens {
            let server = server_config(identity, self.alpn, &self.policy, &self.limits)?;
            self.inner.set_server_config(Some(server));
        }
        match self.client.write() {
            Ok(mut current) => *current = client,
            Err(poisoned) => *poisoned.into_inner() = client,
        }
        Ok(())
    }

    /// Replaces who may connect from now on (after a config reload). Open connections
    /// are not re-checked here; their owner decides.
    pub fn set_policy(&self, policy: PeerPolicy) {
        // A poisoned lock means a panic elsewhere, which is fatal to the process anyway
        // (docs/architecture.md); keep serving with the new policy regardless.
        match self.policy.write() {
            Ok(mut current) => *current = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }

    /// Dials `expected` at `addr`. The server's certificate must name `expected`.
    ///
    /// With TLS 1.3 a client learns that the server refused *its* certificate only on
    /// first use of the connection: a refused client sees this succeed and its first
    /// request fail. Callers log early request failures as possible refusals.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: &PeerName,
    ) -> Result<(Connection, Inbox), ConnectError> {
        self.connect_presenting(None, addr, expected).await
    }

    /// What a connection of this endpoint presents when it dials as `identity` rather than
    /// as the endpoint's own: many servers of a fleet share one endpoint (one UDP socket),
    /// each connection with its own certificate.
    pub fn dial_identity(&self, identity: &Identity) -> Result<DialIdentity, EndpointError> {
        Ok(DialIdentity {
            name: identity.name.to_string(),
            config: client_config(identity, self.alpn, &self.limits)?,
        })
    }

    /// [`Endpoint::connect`], presenting `identity`'s certificate.
    pub async fn connect_as(
        &self,
        identity: &DialIdentity,
        addr: SocketAddr,
        expected: &PeerName,
    ) -> Result<(Connection, Inbox), ConnectError> {
        self.connect_presenting(Some(identity.config.clone()), addr, expected)
            .await
    }

    async fn connect_presenting(
        &self,
        config: Option<quinn::ClientConfig>,
        addr: SocketAddr,
        expected: &PeerName,
    ) -> Result<(Connection, Inbox), ConnectError> {
        let peer = expected.to_string();
        let server_name = expected.dns_name();
        let config = match config {
            Some(config) => config,
            None => match self.client.read() {
                Ok(current) => current.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            },
        };
        let connecting = self
            .inner
            .connect_with(config, addr, &server_name)
            .map_err(|source| ConnectError::Start {
                peer: peer.clone(),
                addr,
                source,
            })?;
        let connection =
            connecting
                .await
                .map_err(|source| match explain_handshake(self.alpn, &source) {
                    Some(reason) => ConnectError::Protocol {
                        peer: peer.clone(),
                        addr,
                        reason,
                    },
                    None => ConnectError::Handshake {
                        peer: peer.clone(),
                        addr,
                        source,
                    },
                })?;
        let name = peer_name(&connection)
            .map_err(|error| error.to_string())
            .and_then(|name| {
                if &name == expected {
                    Ok(name)
                } else {
                    Err(format!("its certificate names {name}, not {expected}"))
                }
            });
        let name = match name {
            Ok(name) => name,
            Err(reason) => {
                connection.close(close_code::REFUSED.into(), reason.as_bytes());
                return Err(ConnectError::Identity { peer, addr, reason });
            }
        };
        let remote_role = match self.alpn {
            Alpn::Site => Sender::Site,
            Alpn::Node => Sender::Gateway,
        };
        let Some(version) = negotiated_version(self.alpn, &connection) else {
            let reason = format!("it agreed on no version of {}", self.alpn.protocol_name());
            connection.close(close_code::REFUSED.into(), reason.as_bytes());
            return Err(ConnectError::Protocol { peer, addr, reason });
        };
        Ok(Connection::start(
            connection,
            name,
            (remote_role, version),
            self.limits.clone(),
            self.sink.clone(),
        ))
    }

    /// The next peer knocking; `None` once the endpoint is closed. Finish its handshake
    /// with [`Handshake::finish`], in a task of its own when serving many peers, so that
    /// one slow peer never holds up the next.
    pub async fn accept(&self) -> Option<Handshake> {
        let incoming = self.inner.accept().await?;
        Some(Handshake {
            incoming,
            alpn: self.alpn,
            policy: self.policy.clone(),
            limits: self.limits.clone(),
            sink: self.sink.clone(),
        })
    }

    /// Closes every connection with `reason` and stops accepting.
    pub fn close(&self, reason: &str) {
        self.inner.close(close_code::DONE.into(), reason.as_bytes());
    }

    /// Waits until every connection has told its peer it is closed.
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
    }
}

/// An incoming connection whose handshake has not finished yet.
pub struct Handshake {
    incoming: quinn::Incoming,
    alpn: Alpn,
    policy: Arc<RwLock<PeerPolicy>>,
    limits: Limits,
    sink: Option<Arc<dyn DatagramSink>>,
}

impl Handshake {
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Refuses the connection before any cryptography: one packet back
    /// (`CONNECTION_REFUSED`), which the peer's dial reports as a failed handshake. For a
    /// listener that sheds load: a handshake costs far more than the refusal.
    pub fn refuse(self) {
        self.incoming.refuse();
    }

    /// Completes the handshake. A refusal (foreign CA, expired certificate, a peer the
    /// policy does not admit, a wrong ALPN) is logged with its reason and returned.
    pub async fn finish(self) -> Result<(Connection, Inbox), AcceptError> {
        let Handshake {
            incoming,
            alpn,
            policy,
            limits,
            sink,
        } = self;
        let remote = incoming.remote_address();
        let outcome = match incoming.await {
            Ok(connection) => admit(alpn, &policy, limits, sink, connection),
            Err(error) => Err(AcceptError::Refused {
                remote,
                reason: error.to_string(),
            }),
        };
        if let Err(error) = &outcome {
            tracing::warn!(%error, ?alpn, "incoming connection refused");
        }
        outcome
    }
}

/// The TLS verifier already checked the CA and the policy; this checks again on the
/// established connection, so that a verifier bug cannot let a peer through unnamed.
fn admit(
    alpn: Alpn,
    policy: &RwLock<PeerPolicy>,
    limits: Limits,
    sink: Option<Arc<dyn DatagramSink>>,
    connection: quinn::Connection,
) -> Result<(Connection, Inbox), AcceptError> {
    let remote = connection.remote_address();
    let refuse = |reason: String| {
        connection.close(close_code::REFUSED.into(), reason.as_bytes());
        AcceptError::Refused { remote, reason }
    };
    let name = peer_name(&connection).map_err(|error| refuse(error.to_string()))?;
    let Some(version) = negotiated_version(alpn, &connection) else {
        return Err(refuse(format!(
            "{name} negotiated no protocol this listener speaks ({})",
            alpn.protocol_name()
        )));
    };
    let admitted = match policy.read() {
        Ok(policy) => policy.admits(&name).map_err(|refusal| refusal.to_string()),
        Err(_) => Err("peer policy unavailable".to_owned()),
    };
    admitted.map_err(refuse)?;
    let remote_role = match alpn {
        Alpn::Site => Sender::Site,
        Alpn::Node => Sender::Node,
    };
    Ok(Connection::start(
        connection,
        name,
        (remote_role, version),
        limits,
        sink,
    ))
}

/// The version of `alpn`'s protocol the handshake agreed on.
fn negotiated_version(alpn: Alpn, connection: &quinn::Connection) -> Option<u16> {
    let negotiated = connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol?;
    alpn.version_of(&negotiated)
}

/// Says what a handshake that no protocol could be agreed for means: the peer speaks
/// none of ours (a TLS `no_application_protocol` alert, 120).
fn explain_handshake(alpn: Alpn, error: &quinn::ConnectionError) -> Option<String> {
    let no_protocol = quinn::TransportErrorCode::crypto(120);
    let code = match error {
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code,
        quinn::ConnectionError::TransportError(error) => error.code,
        _ => return None,
    };
    (code == no_protocol).then(|| {
        format!(
            "it offers none of {} (it may run a leasehold more than one version apart): \
             upgrade it, or run the version of leasehold it runs",
            alpn.spoken()
        )
    })
}

/// The name in the certificate the peer presented in this connection's handshake.
fn peer_name(connection: &quinn::Connection) -> Result<PeerName, IdentityError> {
    match connection.peer_identity() {
        Some(chain) => tls::peer_name_of(chain.as_ref()),
        None => Err(IdentityError::NoPeerCertificate {
            reason: "the handshake carried no certificate",
        }),
    }
}

fn server_config(
    identity: &Identity,
    alpn: Alpn,
    policy: &Arc<RwLock<PeerPolicy>>,
    limits: &Limits,
) -> Result<quinn::ServerConfig, EndpointError> {
    let mut server_tls = tls::server_config(identity, alpn, policy.clone())?;
    server_tls.alpn_protocols = alpn.ids(&spoken_versions(alpn, limits)?);
    let server_crypto = QuicServerConfig::try_from(server_tls)
        .map_err(|error| EndpointError::QuicCrypto(error.to_string()))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server_config.transport_config(transport_config(limits)?);
    Ok(server_config)
}

fn client_config(
    identity: &Identity,
    alpn: Alpn,
    limits: &Limits,
) -> Result<quinn::ClientConfig, EndpointError> {
    let mut client_tls = tls::client_config(identity, alpn)?;
    client_tls.alpn_protocols = alpn.ids(&spoken_versions(alpn, limits)?);
    let client_crypto = QuicClientConfig::try_from(client_tls)
        .map_err(|error| EndpointError::QuicCrypto(error.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(client_crypto));
    config.transport_config(transport_config(limits)?);
    Ok(config)
}

/// The versions an endpoint offers: every one this build speaks, or the one it is held to.
fn spoken_versions(alpn: Alpn, limits: &Limits) -> Result<Vec<u16>, EndpointError> {
    match limits.only_version {
        None => Ok(alpn.versions().to_vec()),
        Some(version) if alpn.versions().contains(&version) => Ok(vec![version]),
        Some(version) => Err(EndpointError::Limit(format!(
            "{} is not a protocol this build speaks ({})",
            alpn.name_of(version),
            alpn.spoken()
        ))),
    }
}

fn transport_config(limits: &Limits) -> Result<Arc<quinn::TransportConfig>, EndpointError> {
    let mut config = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
        .map_err(|_| EndpointError::Limit(format!("idle timeout {:?}", limits.idle_timeout)))?;
    config
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(limits.keep_alive))
        .max_concurrent_bidi_streams(limits.max_concurrent_streams.into())
        .max_concurrent_uni_streams(limits.max_concurrent_streams.into());
    if let Some(rtt) = limits.initial_rtt {
        config.initial_rtt(rtt);
    }
    if let Some(delay) = limits.ack_delay {
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.max_ack_delay(Some(delay));
        config.ack_frequency_config(Some(ack));
    }
    if let Some(windows) = limits.windows {
        config
            .stream_receive_window(windows.stream_receive.into())
            .receive_window(windows.connection_receive.into())
            .send_window(windows.send)
            .datagram_receive_buffer_size(Some(windows.datagram_buffer))
            .datagram_send_buffer_size(windows.datagram_buffer);
    }
    Ok(Arc::new(config))
}

/// A quinn endpoint on a UDP socket of `addr` with widened buffers, driven by the tokio
/// runtime it is called in.
fn bind(
    addr: SocketAddr,
    config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, EndpointError> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| EndpointError::Bind { addr, source })?;
    widen_buffers(&socket, addr);
    let runtime = quinn::default_runtime().ok_or_else(|| EndpointError::Bind {
        addr,
        source: std::io::Error::other("no async runtime found"),
    })?;
    quinn::Endpoint::new(config, server, socket, runtime)
        .map_err(|source| EndpointError::Bind { addr, source })
}

/// What an endpoint asks of the kernel for its UDP socket's buffers. One socket carries
/// every connection of a listener (tens of thousands of nodes whose pulses arrive in
/// bursts) or of a fleet's shared endpoint; the default buffer (about 200 KiB here) drops
/// such bursts as datagrams, and lost pulses are lost renewals. The kernel caps the
/// request at `net.core.rmem_max` and `wmem_max` (docs/node.md says how to raise them).
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

fn widen_buffers(socket: &std::net::UdpSocket, addr: SocketAddr) {
    let socket = socket2::SockRef::from(socket);
    let receive = socket
        .set_recv_buffer_size(SOCKET_BUFFER)
        .and_then(|()| socket.recv_buffer_size());
    let send = socket
        .set_send_buffer_size(SOCKET_BUFFER)
        .and_then(|()| socket.send_buffer_size());
    match (receive, send) {
        (Ok(receive), Ok(send)) => {
            tracing::debug!(%addr, receive, send, "UDP socket buffers");
        }
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%addr, %error, "cannot size the UDP socket's buffers; bursts may drop datagrams");
        }
    }
}

/// The stateless-reset key and connection-id key of a listening endpoint, derived from
/// this peer's private key: they survive restarts, and only this peer can compute them.
fn restart_keys(identity: &Identity) -> (ring::hmac::Key, u64) {
    let derive = |purpose: &[u8]| {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(b"leasehold quic v1\0");
        context.update(purpose);
        context.update(identity.key.secret_der());
        context.finish()
    };
    let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derive(b"stateless reset").as_ref());
    let cid = derive(b"connection ids");
    let mut first = [0u8; 8];
    first.copy_from_slice(&cid.as_ref()[..8]);
    (reset, u64::from_le_bytes(first))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::ids::{ServerId, SiteId};
    use crate::transport::certs;
    use crate::wire::site::Ping;

    fn site() -> SiteId {
        SiteId::parse("site-a").unwrap()
    }

    fn node() -> PeerName {
        PeerName::Node {
            site: site(),
            server: ServerId::parse("a1").unwrap(),
        }
    }

    struct Certs {
        _dir: tempfile::TempDir,
        site: Identity,
        node: Identity,
    }

    fn certs() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path(), false).unwrap();
        certs::issue(dir.path(), &PeerName::Site(site()), false).unwrap();
        certs::issue(dir.path(), &node(), false).unwrap();
        Certs {
            site: certs::load_site_identity(dir.path(), &site()).unwrap(),
            node: certs::load_node_identity(dir.path(), &ServerId::parse("a1").unwrap()).unwrap(),
            _dir: dir,
        }
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn nodes_policy() -> PeerPolicy {
        PeerPolicy::Nodes {
            site: site(),
            servers: BTreeSet::from([ServerId::parse("a1").unwrap()]),
        }
    }

    fn nodes_listener(certs: &Certs, limits: Limits) -> Endpoint {
        Endpoint::listen(loopback(), &certs.site, Alpn::Node, nodes_policy(), limits).unwrap()
    }

    /// A renewed certificate is presented from the next handshake on, and the connection made
    /// with the old one goes on working.
    #[tokio::test]
    async fn a_new_identity_is_presented_to_new_connections_and_old_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path(), false).unwrap();
        certs::issue(dir.path(), &PeerName::Site(site()), false).unwrap();
        certs::issue(dir.path(), &node(), false).unwrap();
        let site_identity = certs::load_site_identity(dir.path(), &site()).unwrap();
        let node_identity =
            certs::load_node_identity(dir.path(), &ServerId::parse("a1").unwrap()).unwrap();
        let listener = Arc::new(
            Endpoint::listen(
                loopback(),
                &site_identity,
                Alpn::Node,
                nodes_policy(),
                Limits::management(),
            )
            .unwrap(),
        );
        let addr = listener.local_addr().unwrap();
        let accepting = listener.clone();
        tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Some(handshake) = accepting.accept().await {
                if let Ok(pair) = handshake.finish().await {
                    kept.push(pair);
                }
            }
        });
        let agent =
            Endpoint::dial_only(loopback(), &node_identity, Alpn::Node, Limits::management())
                .unwrap();
        let expected = PeerName::Site(site());
        let (before, _) = agent.connect(addr, &expected).await.unwrap();
        let old_expiry = before.peer_certificate_expiry().unwrap();

        certs::issue_for_days(dir.path(), &PeerName::Site(site()), 30, true).unwrap();
        let renewed = certs::load_site_identity(dir.path(), &site()).unwrap();
        listener.set_identity(&renewed).unwrap();

        let (after, _) = agent.connect(addr, &expected).await.unwrap();
        let new_expiry = after.peer_certificate_expiry().unwrap();
        assert!(
            new_expiry < old_expiry - 300 * 86_400,
            "the new connection sees the 30-day certificate: {new_expiry} vs {old_expiry}"
        );
        assert_eq!(before.peer_certificate_expiry(), Some(old_expiry));
        assert!(
            before.close_reason().is_none(),
            "the old connection is still open"
        );
    }

    /// A listener and an agent held to `listener` and `agent` (None: every version this
    /// build speaks): the version each end's connection says it speaks.
    async fn negotiated(certs: &Certs, listener: Option<u16>, agent: Option<u16>) -> (u16, u16) {
        let held = |version| Limits {
            only_version: version,
            ..Limits::management()
        };
        let listener = Endpoint::listen(
            loopback(),
            &certs.site,
            Alpn::Node,
            nodes_policy(),
            held(listener),
        )
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let agent = Endpoint::dial_only(loopback(), &certs.node, Alpn::Node, held(agent)).unwrap();
        let dial = tokio::spawn(async move {
            let (connection, inbox) = agent.connect(addr, &PeerName::Site(site())).await.unwrap();
            (agent, connection, inbox)
        });
        let (accepted, _inbox) = listener.accept().await.unwrap().finish().await.unwrap();
        let (_agent, dialled, _) = dial.await.unwrap();
        (accepted.version(), dialled.version())
    }

    #[tokio::test]
    async fn builds_one_management_version_apart_agree_on_the_older_either_way() {
        let certs = certs();
        // Both of this build: the newest.
        assert_eq!(negotiated(&certs, None, None).await, (2, 2));
        // A gateway of the previous protocol, an agent of this build.
        assert_eq!(negotiated(&certs, Some(1), None).await, (1, 1));
        // A gateway of this build, an agent of the previous protocol.
        assert_eq!(negotiated(&certs, None, Some(1)).await, (1, 1));
    }

    #[tokio::test]
    async fn a_version_this_build_does_not_speak_is_refused_when_held_to() {
        let certs = certs();
        let held = Limits {
            only_version: Some(3),
            ..Limits::management()
        };
        let Err(error) = Endpoint::dial_only(loopback(), &certs.node, Alpn::Node, held) else {
            panic!("an endpoint held to leasehold-node/3 was made");
        };
        assert_eq!(
            error.to_string(),
            "invalid transport limit: leasehold-node/3 is not a protocol this build speaks \
             (leasehold-node/2, leasehold-node/1)"
        );
    }

    #[tokio::test]
    async fn a_listener_more_than_one_version_apart_is_named_as_such() {
        let certs = certs();
        // A gateway of a build two versions on: it offers only a protocol we do not speak.
        let policy = Arc::new(RwLock::new(nodes_policy()));
        let mut tls = tls::server_config(&certs.site, Alpn::Node, policy).unwrap();
        tls.alpn_protocols = vec![b"leasehold-node/3".to_vec()];
        let crypto = QuicServerConfig::try_from(tls).unwrap();
        let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let newer = quinn::Endpoint::server(server, loopback()).unwrap();
        let addr = newer.local_addr().unwrap();
        tokio::spawn(async move {
            while let Some(incoming) = newer.accept().await {
                let _ = incoming.await;
            }
        });
        let agent =
            Endpoint::dial_only(loopback(), &certs.node, Alpn::Node, Limits::management()).unwrap();
        let error = agent
            .connect(addr, &PeerName::Site(site()))
            .await
            .unwrap_err();
        assert!(matches!(error, ConnectError::Protocol { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("it offers none of leasehold-node/2, leasehold-node/1"),
            "{error}"
        );
    }

    /// An agent connects to a management listener and does `misbehave` on its connection:
    /// what the listener's inbox ended with, and what the agent's connection closed with.
    async fn violation<F, Fut>(misbehave: F) -> (String, String)
    where
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let certs = certs();
        let listener = nodes_listener(&certs, Limits::management());
        let addr = listener.local_addr().unwrap();
        let agent =
            Endpoint::dial_only(loopback(), &certs.node, Alpn::Node, Limits::management()).unwrap();
        let dial = tokio::spawn(async move {
            let (connection, _inbox) = agent.connect(addr, &PeerName::Site(site())).await.unwrap();
            misbehave(connection.clone()).await;
            connection.closed().await
        });
        let (_connection, mut inbox) = listener.accept().await.unwrap().finish().await.unwrap();
        let ended = inbox.next().await.unwrap().unwrap_err().to_string();
        (ended, dial.await.unwrap().to_string())
    }

    #[tokio::test]
    async fn a_kind_of_the_other_management_version_closes_the_connection() {
        let (ended, closed) = violation(|connection| async move {
            assert_eq!(connection.version(), 2);
            // A heartbeat of protocol 1 on a connection that agreed on 2.
            let heartbeat = crate::wire::node_v1::Heartbeat {
                server: ServerId::parse("a1").unwrap(),
                seq: 1,
                running: None,
                health: crate::wire::common::Health::Healthy,
                load: None,
            };
            connection.send(&heartbeat).await.unwrap();
        })
        .await;
        assert!(
            ended.contains("`Heartbeat` is not valid here: the protocol version this connection agreed on does not have it"),
            "{ended}"
        );
        assert!(closed.contains("`Heartbeat` is not valid here"), "{closed}");
    }

    #[tokio::test]
    async fn connections_of_one_endpoint_each_present_their_own_certificate() {
        let certs = certs();
        let a2 = PeerName::Node {
            site: site(),
            server: ServerId::parse("a2").unwrap(),
        };
        certs::issue(certs._dir.path(), &a2, false).unwrap();
        let a2_identity =
            certs::load_node_identity(certs._dir.path(), &ServerId::parse("a2").unwrap()).unwrap();
        let mut policy = nodes_policy();
        if let PeerPolicy::Nodes { servers, .. } = &mut policy {
            servers.insert(ServerId::parse("a2").unwrap());
        }
        let listener = Endpoint::listen(
            loopback(),
            &certs.site,
            Alpn::Node,
            policy,
            Limits::management(),
        )
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let shared =
            Endpoint::dial_only(loopback(), &certs.node, Alpn::Node, Limits::management()).unwrap();
        let as_a2 = shared.dial_identity(&a2_identity).unwrap();
        let dial = tokio::spawn(async move {
            let gateway = PeerName::Site(site());
            let first = shared.connect(addr, &gateway).await.unwrap();
            let second = shared.connect_as(&as_a2, addr, &gateway).await.unwrap();
            (shared, first, second)
        });
        let mut admitted = BTreeSet::new();
        let mut from = BTreeSet::new();
        for _ in 0..2 {
            let (connection, _inbox) = listener.accept().await.unwrap().finish().await.unwrap();
            admitted.insert(connection.peer().to_string());
            from.insert(connection.remote_address());
        }
        let (shared, _first, _second) = dial.await.unwrap();
        assert_eq!(
            admitted,
            BTreeSet::from([node().to_string(), a2.to_string()])
        );
        // Both came from the one socket of the shared endpoint.
        assert_eq!(from.len(), 1, "{from:?}");
        assert_eq!(
            from.first().map(|a| a.port()),
            Some(shared.local_addr().unwrap().port())
        );
    }

    /// Packets the listener receives while a node sends `pulses` pulses 150 ms apart and the
    /// listener answers each, counted from the first pulse's arrival, leaving out those of
    /// the search for the path's MTU.
    async fn packets_over_answered_pulses(listener_limits: Limits, pulses: u64) -> u64 {
        use crate::ids::Epoch;
        use crate::wire::catalogue::{Inbound, InboundOneWay};
        use crate::wire::common::Health;
        use crate::wire::node::{LeaseRenewal, Pulse, PulseAnswer};

        let certs = certs();
        let listener = nodes_listener(&certs, listener_limits);
        let addr = listener.local_addr().unwrap();
        let agent =
            Endpoint::dial_only(loopback(), &certs.node, Alpn::Node, Limits::management()).unwrap();
        let node = tokio::spawn(async move {
            let (connection, mut inbox) =
                agent.connect(addr, &PeerName::Site(site())).await.unwrap();
            for seq in 0..=pulses {
                let pulse = Pulse {
                    seq,
                    health: Health::Healthy,
                    load: None,
                    renew: Some(Epoch::from_journal(1)),
                };
                connection.send_datagram(&pulse).unwrap();
                match inbox.next().await {
                    Some(Ok(Inbound::OneWay(InboundOneWay::PulseAnswer(answer)))) => {
                        assert_eq!(answer.seq, seq)
                    }
                    other => panic!("pulse {seq}: expected its answer, got {other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            // Kept open until the listener has counted.
            (agent, connection)
        });
        let (connection, mut inbox) = listener.accept().await.unwrap().finish().await.unwrap();
        let mut first = connection.inner.stats();
        for seq in 0..=pulses {
            match inbox.next().await {
                Some(Ok(Inbound::OneWay(InboundOneWay::Pulse(pulse)))) => {
                    assert_eq!(pulse.seq, seq)
                }
                other => panic!("expected pulse {seq}, got {other:?}"),
            }
            if seq == 0 {
                first = connection.inner.stats();
            }
            let answer = PulseAnswer {
                seq,
                renewal: LeaseRenewal::Renewed {
                    epoch: Epoch::from_journal(1),
                    ttl_ms: 2_000,
                },
                generation: None,
            };
            connection.send_datagram(&answer).unwrap();
        }
        let after = connection.inner.stats();
        // Each end searches for the path's MTU at the start: a probe of the node's, or the
        // node's acknowledgement of one of the listener's, is not what is counted here.
        let probing = (after.frame_rx.immediate_ack - first.frame_rx.immediate_ack)
            + (after.path.sent_plpmtud_probes - first.path.sent_plpmtud_probes);
        let received = (after.udp_rx.datagrams - first.udp_rx.datagrams).saturating_sub(probing);
        drop(node.await.unwrap());
        received
    }

    /// A gateway asks its nodes to hold the acknowledgement of an answer until their next
    /// pulse (D-55): it then receives a packet per pulse, not two. QUIC's own 25 ms, kept
    /// by `Limits::management()`, is the contrast that shows the count can tell them apart.
    #[tokio::test]
    async fn a_node_acknowledges_its_gateways_answer_on_its_next_pulse() {
        let pulses = 10;
        let held = packets_over_answered_pulses(Limits::management_listener(), pulses).await;
        assert!(
            held <= pulses + 2,
            "{held} packets for {pulses} pulses: the acknowledgements went on their own"
        );
        let own = packets_over_answered_pulses(Limits::management(), pulses).await;
        assert!(
            own >= pulses + pulses / 2,
            "{own} packets for {pulses} pulses without the delay: the count cannot tell"
        );
    }

    #[tokio::test]
    async fn a_datagram_of_a_stream_kind_closes_the_connection_as_a_protocol_violation() {
        let (ended, closed) = violation(|connection| async move {
            // A node may not send a Ping at all, and nothing but datagram kinds travel so.
            let bytes = crate::wire::Envelope::seal(
                0,
                &Ping {
                    seq: 1,
                    sent_at_us: 0,
                },
            )
            .unwrap()
            .to_bytes()
            .unwrap();
            connection.inner.send_datagram(bytes.into()).unwrap();
        })
        .await;
        assert!(ended.contains("`Ping` is not valid here"), "{ended}");
        assert!(closed.contains("`Ping` is not valid here"), "{closed}");
    }
}
