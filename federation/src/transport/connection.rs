//! One QUIC connection to an authenticated peer: typed requests with a typed answer, one-way
//! messages, and an inbox of what the peer sends.
//!
//! Each request opens a bidirectional stream carrying one framed envelope each way; each
//! one-way message opens a unidirectional stream carrying one frame. Streams are cheap in
//! QUIC, keep messages independent (a slow reply never holds up another), and bound how
//! much a peer can have in flight by the stream limits in [`super::endpoint::Limits`].
//! A [`Datagram`] kind (a node's pulse and its answer) travels in one QUIC datagram, an
//! envelope with no frame: no stream, no retransmission, nothing to wait for.
//!
//! Anything malformed from the peer (a truncated or oversized frame, bytes that are not an
//! envelope, an unknown version or kind, a kind the peer's role may not send) closes the
//! connection with the reason, and the reason reaches the inbox as an [`InboxError`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::endpoint::Limits;
use super::identity::PeerName;
use crate::wire::catalogue::{
    check_version, open_inbound_datagram, open_inbound_one_way, open_inbound_request,
};
use crate::wire::frame::{FrameError, read_frame};
use crate::wire::{
    Datagram, Envelope, Inbound, InboundOneWay, OneWay, Reply, Request, Sender, WireError,
};

/// Application close codes, so the peer's log can say why without parsing the reason.
pub mod close_code {
    /// An orderly close (shutdown, replaced connection).
    pub const DONE: u32 = 0;
    /// The peer sent something that is not a valid message here.
    pub const PROTOCOL_VIOLATION: u32 = 1;
    /// The peer is authenticated but not authorized.
    pub const REFUSED: u32 = 2;
}

/// The port an inbound request is answered through.
#[derive(Debug)]
pub struct ReplyPort {
    stream: quinn::SendStream,
    max_frame_bytes: u32,
    timeout: Duration,
}

/// What arrives from the peer, decoded, with replies bound to their streams.
pub type InboundMessage = Inbound<ReplyPort>;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no answer to `{kind}` within {after:?}")]
    TimedOut { kind: &'static str, after: Duration },
    #[error("connection to {peer} lost: {source}")]
    ConnectionLost {
        peer: String,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("writing `{kind}` failed: {detail}")]
    Write { kind: &'static str, detail: String },
    #[error("reading the answer to `{kind}` failed: {source}")]
    Read {
        kind: &'static str,
        #[source]
        source: FrameError,
    },
    #[error(transparent)]
    Wire(#[from] WireError),
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("sending `{kind}` timed out after {after:?}")]
    TimedOut { kind: &'static str, after: Duration },
    #[error("connection to {peer} lost: {source}")]
    ConnectionLost {
        peer: String,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("writing `{kind}` failed: {detail}")]
    Write { kind: &'static str, detail: String },
    #[error("`{kind}` cannot go as a datagram: {detail}")]
    Datagram { kind: &'static str, detail: String },
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// One item of an inbox, boxed: the channel allocates its slots in blocks of 32 up front,
/// and an unboxed message (352 bytes) made that block 11 KiB on every connection, the
/// largest single part of what a management connection cost the gateway.
type Delivery = Box<Result<InboundMessage, InboxError>>;

/// Why the inbox ended. After any of these the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("{peer} sent an invalid message, connection closed: {source}")]
    ProtocolViolation {
        peer: String,
        #[source]
        source: WireError,
    },
    #[error("connection to {peer} closed: {source}")]
    Closed {
        peer: String,
        #[source]
        source: quinn::ConnectionError,
    },
}

/// Takes datagrams where they are decoded, in the connection's read task, instead of the
/// inbox: a listener of tens of thousands of nodes records their pulses with no task
/// hand-off per datagram. It must not block.
pub trait DatagramSink: Send + Sync + 'static {
    fn take(&self, peer: &PeerName, message: InboundOneWay);
}

/// A connection to one authenticated peer. Cheap to clone; every clone sends on the same
/// connection.
#[derive(Clone)]
pub struct Connection {
    pub(crate) inner: quinn::Connection,
    peer: Arc<PeerName>,
    /// The version of the connection's protocol that the handshake agreed on.
    version: u16,
    limits: Limits,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("remote", &self.inner.remote_address())
            .finish()
    }
}

/// What the peer sends on a connection, in arrival order of completed messages. Bounded:
/// when its owner falls behind, the peer's streams wait (QUIC flow control), so a flood
/// cannot grow our memory.
pub struct Inbox {
    receiver: mpsc::Receiver<Delivery>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("queued", &self.receiver.len())
            .finish()
    }
}

impl Inbox {
    /// The next message, an error that ended the connection, or `None` once it has ended.
    pub async fn next(&mut self) -> Option<Result<InboundMessage, InboxError>> {
        self.receiver.recv().await.map(|delivery| *delivery)
    }
}

impl Connection {
    /// Wraps an authenticated quinn connection and starts reading what the peer sends.
    /// `remote_role` is who the peer is to us; it decides which kinds we accept from it.
    pub(crate) fn start(
        inner: quinn::Connection,
        peer: PeerName,
        (remote_role, version): (Sender, u16),
        limits: Limits,
        sink: Option<Arc<dyn DatagramSink>>,
    ) -> (Connection, Inbox) {
        let (sender, receiver) = mpsc::channel(limits.inbox_capacity);
        let connection = Connection {
            inner,
            peer: Arc::new(peer),
            version,
            limits,
            next_id: Arc::new(AtomicU64::new(1)),
        };
        tokio::spawn(read_inbound(connection.clone(), remote_role, sender, sink));
        (connection, Inbox { receiver })
    }

    pub fn peer(&self) -> &PeerName {
        &self.peer
    }

    /// The version of its protocol the connection speaks (`leasehold-node/1` is 1): the
    /// newest both ends offered.
    pub fn version(&self) -> u16 {
        self.version
    }

    pub fn remote_address(&self) -> std::net::SocketAddr {
        self.inner.remote_address()
    }

    /// When the certificate the peer presented in this connection's handshake expires
    /// (Unix time); `None` if it cannot be read.
    pub fn peer_certificate_expiry(&self) -> Option<i64> {
        let identity = self.inner.peer_identity()?;
        let chain = identity.downcast_ref::<Vec<rustls_pki_types::CertificateDer<'static>>>()?;
        super::certs::not_after(chain.first()?)
    }

    /// Smoothed round-trip time as QUIC measures it.
    pub fn rtt(&self) -> Duration {
        self.inner.rtt()
    }

    /// Sends `request` and waits for its answer, at most the connection's request timeout.
    pub async fn request<R: Request>(&self, request: &R) -> Result<R::Response, RequestError> {
        self.request_within(request, self.limits.request_timeout)
            .await
    }

    /// A lost answer is "maybe done", not "failed": on `TimedOut` the caller must resync
    /// before acting as if the request had or had not taken effect.
    pub async fn request_within<R: Request>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, RequestError> {
        let exchange = async {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let frame = Envelope::frame(id, request, self.limits.max_frame_bytes)?;
            let (mut send, mut receive) =
                self.inner
                    .open_bi()
                    .await
                    .map_err(|source| RequestError::ConnectionLost {
                        peer: self.peer.to_string(),
                        source,
                    })?;
            write_frame(&mut send, &frame)
                .await
                .map_err(|detail| RequestError::Write {
                    kind: R::KIND,
                    detail,
                })?;
            let bytes = read_frame(&mut receive, self.limits.max_frame_bytes)
                .await
                .map_err(|source| RequestError::Read {
                    kind: R::KIND,
                    source,
                })?;
            let envelope = Envelope::from_bytes(&bytes).and_then(|envelope| {
                if envelope.id != id {
                    return Err(WireError::MismatchedId {
                        expected: id,
                        got: envelope.id,
                    });
                }
                envelope.open::<R::Response>()
            });
            envelope.map_err(|error| {
                self.close_for(&error);
                RequestError::Wire(error)
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(RequestError::TimedOut {
                kind: R::KIND,
                after: timeout,
            }),
        }
    }

    /// Sends a one-way message; returns once it is handed to QUIC.
    pub async fn send<M: OneWay>(&self, message: &M) -> Result<(), SendError> {
        let timeout = self.limits.request_timeout;
        let transfer = async {
            let frame = Envelope::frame(0, message, self.limits.max_frame_bytes)?;
            let mut stream =
                self.inner
                    .open_uni()
                    .await
                    .map_err(|source| SendError::ConnectionLost {
                        peer: self.peer.to_string(),
                        source,
                    })?;
            write_frame(&mut stream, &frame)
                .await
                .map_err(|detail| SendError::Write {
                    kind: M::KIND,
                    detail,
                })
        };
        match tokio::time::timeout(timeout, transfer).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SendError::TimedOut {
                kind: M::KIND,
                after: timeout,
            }),
        }
    }

    /// Queues a datagram and returns at once. It may be lost, like any datagram; the
    /// kinds that travel so are superseded by the next one of their kind.
    pub fn send_datagram<M: Datagram>(&self, message: &M) -> Result<(), SendError> {
        let bytes = Envelope::seal(0, message)?.to_bytes()?;
        self.inner
            .send_datagram(bytes.into())
            .map_err(|error| SendError::Datagram {
                kind: M::KIND,
                detail: error.to_string(),
            })
    }

    /// Closes the connection; the peer sees `code` and `reason`.
    pub fn close(&self, code: u32, reason: &str) {
        self.inner.close(code.into(), reason.as_bytes());
    }

    /// Resolves when the connection has closed, with why.
    /// Why the connection closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<quinn::ConnectionError> {
        self.inner.close_reason()
    }

    pub async fn closed(&self) -> quinn::ConnectionError {
        self.inner.closed().await
    }

    /// Refuses a kind that the version this connection speaks does not have.
    fn in_version(&self, envelope: Envelope) -> Result<Envelope, WireError> {
        check_version(&envelope.kind, self.version).map(|()| envelope)
    }

    fn close_for(&self, error: &WireError) {
        tracing::warn!(peer = %self.peer, %error, "closing connection: protocol violation");
        self.close(close_code::PROTOCOL_VIOLATION, &error.to_string());
    }
}

impl<R: Request> Reply<R, ReplyPort> {
    /// Answers the request. The only way to answer, so the answer has the right type.
    pub async fn send(self, response: &R::Response) -> Result<(), SendError> {
        let Reply { port, id, .. } = self;
        let ReplyPort {
            mut stream,
            max_frame_bytes,
            timeout,
        } = port;
        let frame = Envelope::frame(id, response, max_frame_bytes)?;
        let kind = <R::Response as crate::wire::Message>::KIND;
        match tokio::time::timeout(timeout, write_frame(&mut stream, &frame)).await {
            Ok(outcome) => outcome.map_err(|detail| SendError::Write { kind, detail }),
            Err(_) => Err(SendError::TimedOut {
                kind,
                after: timeout,
            }),
        }
    }
}

async fn write_frame(stream: &mut quinn::SendStream, frame: &[u8]) -> Result<(), String> {
    stream
        .write_all(frame)
        .await
        .map_err(|error| error.to_string())?;
    stream.finish().map_err(|error| error.to_string())
}

/// Accepts the peer's streams until the connection ends; one task per stream so that a
/// slow stream never delays the others. Datagrams are decoded here, in arrival order.
async fn read_inbound(
    connection: Connection,
    remote_role: Sender,
    inbox: mpsc::Sender<Delivery>,
    sink: Option<Arc<dyn DatagramSink>>,
) {
    let ended = loop {
        tokio::select! {
            stream = connection.inner.accept_uni() => match stream {
                Ok(stream) => {
                    tokio::spawn(read_one_way(connection.clone(), remote_role, stream, inbox.clone()));
                }
                Err(source) => break source,
            },
            stream = connection.inner.accept_bi() => match stream {
                Ok((send, receive)) => {
                    tokio::spawn(read_request(connection.clone(), remote_role, send, receive, inbox.clone()));
                }
                Err(source) => break source,
            },
            datagram = connection.inner.read_datagram() => match datagram {
                Ok(bytes) => {
                    if !take_datagram(&connection, remote_role, &bytes, &inbox, sink.as_deref()) {
                        break quinn::ConnectionError::LocallyClosed;
                    }
                }
                Err(source) => break source,
            },
        }
    };
    let peer = connection.peer.to_string();
    // A protocol violation closes locally and is reported by the stream task; the
    // accept loop then sees LocallyClosed, which needs no second report.
    if !matches!(ended, quinn::ConnectionError::LocallyClosed) {
        let _ = inbox
            .send(Box::new(Err(InboxError::Closed {
                peer,
                source: ended,
            })))
            .await;
    }
}

/// Decodes one datagram and hands it to the sink, or else to the inbox; `false` when it
/// closed the connection. A datagram that finds the inbox full is dropped, not waited for:
/// the next one of its kind supersedes it, and waiting would hold up the peer's streams.
fn take_datagram(
    connection: &Connection,
    remote_role: Sender,
    bytes: &[u8],
    inbox: &mpsc::Sender<Delivery>,
    sink: Option<&dyn DatagramSink>,
) -> bool {
    // QUIC bounds a datagram's size (one packet), so no frame limit applies.
    let decoded = Envelope::from_bytes(bytes)
        .and_then(|envelope| connection.in_version(envelope))
        .and_then(|envelope| open_inbound_datagram(&envelope, remote_role));
    match decoded {
        Ok(message) => {
            match sink {
                Some(sink) => sink.take(&connection.peer, message),
                None => {
                    if inbox
                        .try_send(Box::new(Ok(Inbound::OneWay(message))))
                        .is_err()
                    {
                        tracing::debug!(peer = %connection.peer, "inbox full: a datagram dropped");
                    }
                }
            }
            true
        }
        Err(error) => {
            connection.close_for(&error);
            let _ = inbox.try_send(Box::new(Err(InboxError::ProtocolViolation {
                peer: connection.peer.to_string(),
                source: error,
            })));
            false
        }
    }
}

async fn read_one_way(
    connection: Connection,
    remote_role: Sender,
    mut stream: quinn::RecvStream,
    inbox: mpsc::Sender<Delivery>,
) {
    let limits = &connection.limits;
    let decoded = read_envelope(&mut stream, limits)
        .await
        .and_then(|envelope| connection.in_version(envelope))
        .and_then(|envelope| open_inbound_one_way(&envelope, remote_role));
    deliver(&connection, decoded.map(Inbound::OneWay), &inbox).await;
}

async fn read_request(
    connection: Connection,
    remote_role: Sender,
    send: quinn::SendStream,
    mut receive: quinn::RecvStream,
    inbox: mpsc::Sender<Delivery>,
) {
    let limits = &connection.limits;
    let port = ReplyPort {
        stream: send,
        max_frame_bytes: limits.max_frame_bytes,
        timeout: limits.request_timeout,
    };
    let decoded = read_envelope(&mut receive, limits)
        .await
        .and_then(|envelope| connection.in_version(envelope))
        .and_then(|envelope| open_inbound_request(&envelope, remote_role, port));
    deliver(&connection, decoded.map(Inbound::Request), &inbox).await;
}

async fn read_envelope(
    stream: &mut quinn::RecvStream,
    limits: &Limits,
) -> Result<Envelope, WireError> {
    // A peer that opens a stream and never finishes its frame must not hold a task forever.
    let bytes = match tokio::time::timeout(
        limits.request_timeout,
        read_frame(stream, limits.max_frame_bytes),
    )
    .await
    {
        Ok(read) => read?,
        Err(_) => {
            return Err(WireError::Frame(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no complete frame within {:?}", limits.request_timeout),
            ))));
        }
    };
    Envelope::from_bytes(&bytes)
}

async fn deliver(
    connection: &Connection,
    decoded: Result<InboundMessage, WireError>,
    inbox: &mpsc::Sender<Delivery>,
) {
    let item = match decoded {
        Ok(message) => Ok(message),
        Err(WireError::Frame(FrameError::Io(error)))
            if error.kind() != std::io::ErrorKind::TimedOut =>
        {
            // The connection itself failed mid-stream; the accept loop reports why.
            tracing::debug!(peer = %connection.peer, %error, "stream ended with the connection");
            return;
        }
        Err(error) => {
            connection.close_for(&error);
            Err(InboxError::ProtocolViolation {
                peer: connection.peer.to_string(),
                source: error,
            })
        }
    };
    // The owner dropped the inbox: nobody will read this, and the connection is going away.
    let _ = inbox.send(Box::new(item)).await;
}
