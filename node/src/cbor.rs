//! CBOR encoding shared by the wire and the store.
//!
//! Every decode reads through a caller-named byte cap, so a peer (or a corrupted file) can never
//! make us allocate more than the caller budgeted for. Byte payloads must use `serde_bytes` so
//! they encode as CBOR byte strings, not arrays of integers.

use serde::{Serialize, de::DeserializeOwned};

/// Why a CBOR value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The input is larger than the cap the caller allows for this kind of value.
    #[error("message of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The cap that applied.
        limit: usize,
    },
    /// The bytes are not valid CBOR for the expected type (garbage, truncated, wrong shape).
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// Encoding failed (only possible for types serde cannot represent).
    #[error("CBOR encoding failed: {0}")]
    Encode(String),
}

/// Encodes `value` as CBOR.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a CBOR value of at most `limit` bytes. Trailing bytes after the value are rejected.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let mut reader = bytes;
    // ciborium's recursion limit (default 256) bounds nesting depth; the length cap above
    // bounds every allocation, since a CBOR length prefix larger than the input fails on read.
    let value =
        ciborium::from_reader(&mut reader).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes",
            reader.len()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        n: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    }

    #[test]
    fn round_trip_keeps_value() {
        let s = Sample {
            n: 7,
            data: vec![1, 2, 3],
        };
        let bytes = to_vec(&s).unwrap();
        assert_eq!(from_slice::<Sample>(&bytes, 1024).unwrap(), s);
    }

    #[test]
    fn bytes_encode_as_byte_string() {
        let s = Sample {
            n: 0,
            data: vec![0xAB; 1000],
        };
        // A byte string costs ~1 byte per byte; an array of integers would cost ~2.
        assert!(to_vec(&s).unwrap().len() < 1100);
    }

    #[test]
    fn oversize_rejected() {
        let bytes = to_vec(&Sample {
            n: 1,
            data: vec![0; 100],
        })
        .unwrap();
        assert!(matches!(
            from_slice::<Sample>(&bytes, 50),
            Err(CodecError::TooLarge { limit: 50, .. })
        ));
    }

    #[test]
    fn truncated_and_garbage_rejected() {
        let bytes = to_vec(&Sample {
            n: 1,
            data: vec![9; 100],
        })
        .unwrap();
        assert!(matches!(
            from_slice::<Sample>(&bytes[..40], 1024),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            from_slice::<Sample>(&[0xff, 0x00, 0x13], 1024),
            Err(CodecError::Malformed(_))
        ));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            from_slice::<Sample>(&extra, 1024),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // A byte string claiming 2^62 bytes inside a 12-byte message.
        let evil = [
            0xa2, 0x61, b'n', 0x01, 0x64, b'd', b'a', b't', b'a', 0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(from_slice::<Sample>(&evil, 1024).is_err());
    }
}
