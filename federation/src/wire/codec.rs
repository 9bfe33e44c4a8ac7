//! The one place that calls the CBOR library (ciborium). Swapping the codec changes only
//! this file; nothing else in Leasehold names ciborium. See docs/decisions.md (D-2) for
//! why ciborium and not serde_cbor.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value could not be encoded or decoded as CBOR. `detail` is the codec's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct CodecError {
    pub detail: String,
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|error| CodecError {
        detail: error.to_string(),
    })?;
    Ok(bytes)
}

/// Decodes one CBOR item that must fill `bytes` exactly: trailing bytes are an error, so
/// two frames glued together can never pass for one.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut reader = bytes;
    let value = ciborium::from_reader(&mut reader).map_err(|error| CodecError {
        detail: describe(error),
    })?;
    if !reader.is_empty() {
        return Err(CodecError {
            detail: format!("{} bytes after the end of the CBOR item", reader.len()),
        });
    }
    Ok(value)
}

fn describe(error: ciborium::de::Error<std::io::Error>) -> String {
    match error {
        ciborium::de::Error::Io(io) => format!("input ended inside a CBOR item ({io})"),
        ciborium::de::Error::Syntax(offset) => format!("not CBOR: syntax error at byte {offset}"),
        ciborium::de::Error::Semantic(Some(offset), message) => {
            format!("{message} (at byte {offset})")
        }
        ciborium::de::Error::Semantic(None, message) => message,
        ciborium::de::Error::RecursionLimitExceeded => "CBOR nested too deeply".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_trailing_bytes() {
        let mut bytes = encode(&7u32).unwrap();
        bytes.push(0);
        let error = decode::<u32>(&bytes).unwrap_err();
        assert_eq!(error.detail, "1 bytes after the end of the CBOR item");
    }

    #[test]
    fn refuses_an_item_cut_short() {
        let bytes = encode(&"a string of some length").unwrap();
        let error = decode::<String>(&bytes[..5]).unwrap_err();
        assert!(
            error.detail.starts_with("input ended inside a CBOR item"),
            "{error}"
        );
    }
}
