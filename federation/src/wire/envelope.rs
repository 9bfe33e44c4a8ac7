//! The one envelope every Leasehold message travels in, and the errors of opening one.
//!
//! An envelope names its wire version and message kind, carries a correlation id (a
//! response repeats its request's id) and the message body as nested CBOR bytes. Decoding
//! in two steps lets a receiver tell "not CBOR", "a version I do not speak", "a kind I do
//! not know" and "a known kind with a bad body" apart, and say so when it closes the
//! connection.

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::frame::{self, FrameError};
use super::{Message, WIRE_VERSION};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Wire version; a receiver refuses any other than [`WIRE_VERSION`].
    pub v: u16,
    /// The message kind, the Rust type name of the body (`RenewLease`).
    pub kind: String,
    /// Correlation id: chosen by the requester, repeated in the response.
    pub id: u64,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// Why bytes from a peer are not a message we accept. Each variant is a reason the
/// connection is closed with (see `transport::connection`).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("frame is not a CBOR envelope: {0}")]
    NotAnEnvelope(CodecError),
    #[error("wire version {got} is not supported (this build speaks version {supported})")]
    UnsupportedVersion { got: u16, supported: u16 },
    #[error("unknown message kind `{kind}`")]
    UnknownKind { kind: String },
    #[error("message `{kind}` is not valid here: {why}")]
    Misplaced { kind: String, why: &'static str },
    #[error("message `{kind}` has a malformed body: {detail}")]
    MalformedBody { kind: String, detail: CodecError },
    #[error("expected a `{expected}` response, got `{got}`")]
    UnexpectedResponse { expected: &'static str, got: String },
    #[error("response id {got} does not match request id {expected}")]
    MismatchedId { expected: u64, got: u64 },
    #[error("cannot encode `{kind}`: {detail}")]
    Encode {
        kind: &'static str,
        detail: CodecError,
    },
}

impl Envelope {
    pub fn seal<M: Message>(id: u64, message: &M) -> Result<Envelope, WireError> {
        let body = codec::encode(message).map_err(|detail| WireError::Encode {
            kind: M::KIND,
            detail,
        })?;
        Ok(Envelope {
            v: WIRE_VERSION,
            kind: M::KIND.to_owned(),
            id,
            body,
        })
    }

    /// Decodes the body as `M`, which must be the kind the envelope names.
    pub fn open<M: Message>(&self) -> Result<M, WireError> {
        if self.kind != M::KIND {
            return Err(WireError::UnexpectedResponse {
                expected: M::KIND,
                got: self.kind.clone(),
            });
        }
        codec::decode(&self.body).map_err(|detail| WireError::MalformedBody {
            kind: self.kind.clone(),
            detail,
        })
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        codec::encode(self).map_err(|detail| WireError::Encode {
            kind: "Envelope",
            detail,
        })
    }

    /// Decodes an envelope and checks its version. The kind is checked by the catalogue.
    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope, WireError> {
        let envelope: Envelope = codec::decode(bytes).map_err(WireError::NotAnEnvelope)?;
        if envelope.v != WIRE_VERSION {
            return Err(WireError::UnsupportedVersion {
                got: envelope.v,
                supported: WIRE_VERSION,
            });
        }
        Ok(envelope)
    }

    /// Seals `message` and frames it, ready to write to a stream.
    pub fn frame<M: Message>(id: u64, message: &M, limit: u32) -> Result<Vec<u8>, WireError> {
        let bytes = Envelope::seal(id, message)?.to_bytes()?;
        Ok(frame::encode_frame(&bytes, limit)?)
    }

    /// Takes exactly one framed envelope: the whole input must be one frame.
    pub fn from_frame(bytes: &[u8], limit: u32) -> Result<Envelope, WireError> {
        let (payload, rest) = frame::split_frame(bytes, limit)?;
        if !rest.is_empty() {
            return Err(WireError::NotAnEnvelope(CodecError {
                detail: format!("{} bytes after the frame", rest.len()),
            }));
        }
        Envelope::from_bytes(payload)
    }
}
