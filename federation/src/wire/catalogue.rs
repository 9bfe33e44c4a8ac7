//! The list of every message kind, who may send it, and how an inbound envelope becomes a
//! typed message. The only macro in the wire; it keeps the list in one place.

use super::envelope::{Envelope, WireError};
use super::node::*;
use super::node_v1::*;
use super::site::*;
use super::{Datagram, Message, OneWay, Reply, Request, Sender};

macro_rules! catalogue {
    (
        $(
            $sender:ident {
                requests { $( $request:ident => $response:ident ),* $(,)? }
                one_way { $( $one_way:ident ),* $(,)? }
                datagrams { $( $datagram:ident ),* $(,)? }
            }
        )*
    ) => {
        $(
            $(
                impl Message for $request { const KIND: &'static str = stringify!($request); }
                impl Request for $request { type Response = $response; }
                impl Message for $response { const KIND: &'static str = stringify!($response); }
            )*
            $(
                impl Message for $one_way { const KIND: &'static str = stringify!($one_way); }
                impl OneWay for $one_way {}
            )*
            $(
                impl Message for $datagram { const KIND: &'static str = stringify!($datagram); }
                impl OneWay for $datagram {}
                impl Datagram for $datagram {}
            )*
        )*

        /// Every request kind with the role that sends it.
        pub const REQUEST_KINDS: &[(&str, Sender)] = &[
            $( $( (stringify!($request), Sender::$sender), )* )*
        ];
        /// Every response kind.
        pub const RESPONSE_KINDS: &[&str] = &[ $( $( stringify!($response), )* )* ];
        /// Every one-way kind with the role that sends it.
        pub const ONE_WAY_KINDS: &[(&str, Sender)] = &[
            $( $( (stringify!($one_way), Sender::$sender), )* )*
        ];
        /// Every datagram kind with the role that sends it.
        pub const DATAGRAM_KINDS: &[(&str, Sender)] = &[
            $( $( (stringify!($datagram), Sender::$sender), )* )*
        ];

        /// An inbound request, decoded, with the typed handle to answer it.
        #[derive(Debug)]
        pub enum InboundRequest<P> {
            $( $( $request($request, Reply<$request, P>), )* )*
        }

        /// An inbound one-way message (on a stream or in a datagram), decoded.
        #[derive(Debug, Clone, PartialEq)]
        pub enum InboundOneWay {
            $( $( $one_way($one_way), )* $( $datagram($datagram), )* )*
        }

        impl<P> InboundRequest<P> {
            pub fn kind(&self) -> &'static str {
                match self { $( $( InboundRequest::$request(..) => stringify!($request), )* )* }
            }
        }

        impl InboundOneWay {
            pub fn kind(&self) -> &'static str {
                match self {
                    $( $( InboundOneWay::$one_way(..) => stringify!($one_way), )*
                       $( InboundOneWay::$datagram(..) => stringify!($datagram), )* )*
                }
            }
        }

        fn open_request<P>(envelope: &Envelope, port: P) -> Result<InboundRequest<P>, WireError> {
            match envelope.kind.as_str() {
                $( $( stringify!($request) => Ok(InboundRequest::$request(
                    envelope.open::<$request>()?,
                    Reply::new(port, envelope.id),
                )), )* )*
                other => Err(WireError::UnknownKind { kind: other.to_owned() }),
            }
        }

        fn open_one_way(envelope: &Envelope) -> Result<InboundOneWay, WireError> {
            match envelope.kind.as_str() {
                $( $( stringify!($one_way) => Ok(InboundOneWay::$one_way(envelope.open::<$one_way>()?)), )*
                   $( stringify!($datagram) => Ok(InboundOneWay::$datagram(envelope.open::<$datagram>()?)), )* )*
                other => Err(WireError::UnknownKind { kind: other.to_owned() }),
            }
        }
    };
}

catalogue! {
    Node {
        requests { RegisterServer => Registration, RenewLease => LeaseRenewal }
        one_way { WorkloadJoined, WorkloadFailed, WorkloadStopped, Heartbeat }
        datagrams { Pulse }
    }
    Gateway {
        requests { ApplyPointer => PointerApplication, StopWorkload => StopOutcome }
        one_way { }
        datagrams { PulseAnswer }
    }
    Site {
        requests {
            PeerHello => PeerWelcome,
            Ping => Pong,
            RequestLoan => LoanOffer,
            RenewLoan => LoanRenewal,
            ReturnLoan => LoanReturned,
            ClaimOwnership => OwnershipVotes,
        }
        one_way { AccountCatalogue, RecallLoan, LentServerStatus, ReleaseOwnership }
        datagrams { }
    }
}

/// A message that arrived, as its stream type says it is: a request on a bidirectional
/// stream (answer through its reply), a one-way message on a unidirectional one.
#[derive(Debug)]
pub enum Inbound<P> {
    Request(InboundRequest<P>),
    OneWay(InboundOneWay),
}

fn sender_of(kinds: &[(&str, Sender)], kind: &str) -> Option<Sender> {
    kinds
        .iter()
        .find(|(name, _)| *name == kind)
        .map(|(_, sender)| *sender)
}

fn check_sender(
    kinds: &[(&str, Sender)],
    envelope: &Envelope,
    from: Sender,
    wrong_stream: &'static str,
) -> Result<(), WireError> {
    match sender_of(kinds, &envelope.kind) {
        Some(sender) if sender == from => Ok(()),
        Some(_) => Err(WireError::Misplaced {
            kind: envelope.kind.clone(),
            why: "the peer's role may not send it",
        }),
        None if is_known_kind(&envelope.kind) => Err(WireError::Misplaced {
            kind: envelope.kind.clone(),
            why: wrong_stream,
        }),
        None => Err(WireError::UnknownKind {
            kind: envelope.kind.clone(),
        }),
    }
}

/// Opens an envelope that arrived on a bidirectional stream from a peer of role `from`.
pub fn open_inbound_request<P>(
    envelope: &Envelope,
    from: Sender,
    port: P,
) -> Result<InboundRequest<P>, WireError> {
    check_sender(
        REQUEST_KINDS,
        envelope,
        from,
        "it does not travel on a request stream",
    )?;
    open_request(envelope, port)
}

/// Opens an envelope that arrived on a unidirectional stream from a peer of role `from`.
pub fn open_inbound_one_way(envelope: &Envelope, from: Sender) -> Result<InboundOneWay, WireError> {
    check_sender(
        ONE_WAY_KINDS,
        envelope,
        from,
        "it does not travel on a one-way stream",
    )?;
    open_one_way(envelope)
}

/// Opens an envelope that arrived in a QUIC datagram from a peer of role `from`.
pub fn open_inbound_datagram(
    envelope: &Envelope,
    from: Sender,
) -> Result<InboundOneWay, WireError> {
    check_sender(
        DATAGRAM_KINDS,
        envelope,
        from,
        "it does not travel in a datagram",
    )?;
    open_one_way(envelope)
}

/// The kinds that belong to one version of their protocol only (ALPN `leasehold-node/N`
/// or `leasehold-site/N`); every other kind is the same in every version this build
/// speaks. A kind that a new version adds goes here, so that it is never sent on, nor
/// taken from, a connection that agreed on an older version (docs/wire.md, "Versioning").
pub const VERSIONED_KINDS: &[(&str, u16)] = &[
    ("Heartbeat", 1),
    ("RenewLease", 1),
    ("Pulse", 2),
    ("PulseAnswer", 2),
];

/// Refuses a kind that the version of its protocol a connection agreed on does not have:
/// a node of `leasehold-node/2` sends no `Heartbeat`, one of `/1` no `Pulse`.
pub fn check_version(kind: &str, version: u16) -> Result<(), WireError> {
    match VERSIONED_KINDS.iter().find(|(name, _)| *name == kind) {
        Some((_, only)) if *only != version => Err(WireError::Misplaced {
            kind: kind.to_owned(),
            why: "the protocol version this connection agreed on does not have it",
        }),
        _ => Ok(()),
    }
}

pub fn is_known_kind(kind: &str) -> bool {
    sender_of(REQUEST_KINDS, kind).is_some()
        || sender_of(ONE_WAY_KINDS, kind).is_some()
        || sender_of(DATAGRAM_KINDS, kind).is_some()
        || RESPONSE_KINDS.contains(&kind)
}
