//! Length-delimited frames: a 4-byte big-endian length, then that many bytes of payload.
//!
//! The length is checked against a maximum before anything is allocated, so a peer cannot
//! make us reserve memory by announcing a large frame.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest payload a frame may carry unless a connection sets its own limit.
/// A catalogue of a few thousand accounts fits; larger ones must be chunked by the sender.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;

const HEADER_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame announces {announced} bytes, more than the limit of {limit}")]
    Oversized { announced: u64, limit: u32 },
    #[error("frame truncated: expected {expected} bytes, the stream ended after {received}")]
    Truncated { expected: u64, received: u64 },
    #[error("stream ended before any frame")]
    Empty,
    #[error("reading a frame failed: {0}")]
    Io(#[from] std::io::Error),
}

impl PartialEq for FrameError {
    fn eq(&self, other: &Self) -> bool {
        use FrameError::*;
        match (self, other) {
            (
                Oversized {
                    announced: a,
                    limit: l,
                },
                Oversized {
                    announced: b,
                    limit: m,
                },
            ) => a == b && l == m,
            (
                Truncated {
                    expected: a,
                    received: r,
                },
                Truncated {
                    expected: b,
                    received: s,
                },
            ) => a == b && r == s,
            (Empty, Empty) => true,
            (Io(a), Io(b)) => a.kind() == b.kind(),
            _ => false,
        }
    }
}

/// Puts `payload` in a frame. Refuses a payload over `limit` rather than sending what the
/// other side would refuse anyway.
pub fn encode_frame(payload: &[u8], limit: u32) -> Result<Vec<u8>, FrameError> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|length| *length <= limit)
        .ok_or(FrameError::Oversized {
            announced: payload.len() as u64,
            limit,
        })?;
    let mut frame = Vec::with_capacity(HEADER_BYTES + payload.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Splits one frame off the front of `bytes`, returning its payload and the rest.
pub fn split_frame(bytes: &[u8], limit: u32) -> Result<(&[u8], &[u8]), FrameError> {
    if bytes.is_empty() {
        return Err(FrameError::Empty);
    }
    let Some((header, rest)) = bytes.split_first_chunk::<HEADER_BYTES>() else {
        return Err(FrameError::Truncated {
            expected: HEADER_BYTES as u64,
            received: bytes.len() as u64,
        });
    };
    let length = u32::from_be_bytes(*header);
    if length > limit {
        return Err(FrameError::Oversized {
            announced: u64::from(length),
            limit,
        });
    }
    let length = length as usize;
    if rest.len() < length {
        return Err(FrameError::Truncated {
            expected: length as u64,
            received: rest.len() as u64,
        });
    }
    Ok(rest.split_at(length))
}

/// Reads exactly one frame from a stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: u32,
) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; HEADER_BYTES];
    let got = read_up_to(reader, &mut header).await?;
    if got == 0 {
        return Err(FrameError::Empty);
    }
    if got < HEADER_BYTES {
        return Err(FrameError::Truncated {
            expected: HEADER_BYTES as u64,
            received: got as u64,
        });
    }
    let length = u32::from_be_bytes(header);
    if length > limit {
        return Err(FrameError::Oversized {
            announced: u64::from(length),
            limit,
        });
    }
    let mut payload = vec![0u8; length as usize];
    let got = read_up_to(reader, &mut payload).await?;
    if got < payload.len() {
        return Err(FrameError::Truncated {
            expected: u64::from(length),
            received: got as u64,
        });
    }
    Ok(payload)
}

/// Fills `buffer` unless the stream ends first; returns how much was read.
async fn read_up_to<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut [u8],
) -> Result<usize, std::io::Error> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = reader.read(&mut buffer[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips() {
        let frame = encode_frame(b"hello", 16).unwrap();
        assert_eq!(split_frame(&frame, 16).unwrap(), (&b"hello"[..], &b""[..]));
    }

    #[test]
    fn refuses_to_send_an_oversized_payload() {
        assert_eq!(
            encode_frame(&[0; 17], 16).unwrap_err(),
            FrameError::Oversized {
                announced: 17,
                limit: 16
            }
        );
    }

    #[test]
    fn refuses_a_frame_announcing_more_than_the_limit() {
        let frame = encode_frame(&[1; 32], 64).unwrap();
        assert_eq!(
            split_frame(&frame, 16).unwrap_err(),
            FrameError::Oversized {
                announced: 32,
                limit: 16
            }
        );
    }

    #[test]
    fn refuses_truncated_headers_and_payloads() {
        let frame = encode_frame(b"hello", 16).unwrap();
        assert_eq!(
            split_frame(&frame[..2], 16).unwrap_err(),
            FrameError::Truncated {
                expected: 4,
                received: 2
            }
        );
        assert_eq!(
            split_frame(&frame[..7], 16).unwrap_err(),
            FrameError::Truncated {
                expected: 5,
                received: 3
            }
        );
    }

    #[tokio::test]
    async fn reads_frames_from_a_stream_and_spots_truncation() {
        let frame = encode_frame(b"payload", 64).unwrap();
        let mut whole = &frame[..];
        assert_eq!(read_frame(&mut whole, 64).await.unwrap(), b"payload");
        let mut cut = &frame[..frame.len() - 1];
        assert_eq!(
            read_frame(&mut cut, 64).await.unwrap_err(),
            FrameError::Truncated {
                expected: 7,
                received: 6
            }
        );
        let mut nothing: &[u8] = &[];
        assert_eq!(
            read_frame(&mut nothing, 64).await.unwrap_err(),
            FrameError::Empty
        );
    }
}
