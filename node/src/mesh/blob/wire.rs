//! Messages of the blob protocol ([`crate::mesh::topics::BLOB_PROTOCOL`]): ask a holder for a
//! manifest, for the bitfield of chunks it has, or for one chunk. Chunk payloads are CBOR byte
//! strings; every chunk answer also carries the holder's current bitfield, so a fetcher learns
//! what a peer that is itself still fetching can already serve (swarming).

use serde::{Deserialize, Serialize};

use crate::mesh::{
    blob::{Bitfield, BlobId, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES},
    codec::CodecLimits,
};

/// Version of the blob protocol's envelope.
pub const BLOB_VERSION: u16 = 1;
/// Largest blob request read (ids and indices only).
pub const MAX_BLOB_REQUEST_BYTES: usize = 1024;
/// Largest blob response read: a manifest, or a chunk plus a bitfield.
pub const MAX_BLOB_RESPONSE_BYTES: usize = max(MAX_MANIFEST_BYTES, MAX_CHUNK_BYTES) + 64 * 1024;

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// The codec limits of the blob protocol.
pub const BLOB_LIMITS: CodecLimits = CodecLimits {
    request_bytes: MAX_BLOB_REQUEST_BYTES,
    response_bytes: MAX_BLOB_RESPONSE_BYTES,
    version: BLOB_VERSION,
    // Fetchers ask this protocol for bitfields and manifests (a few KiB); chunks travel on
    // chunk streams. Reserving a chunk's megabyte for every answer cost a fresh zeroed
    // allocation per bitfield whenever the codec's pool ran dry (the swarm's profile); the
    // rare larger answer grows the buffer.
    response_prealloc_bytes: 16 * 1024,
};

/// A request to a blob holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobRequest {
    /// The canonical manifest bytes of a blob.
    Manifest {
        /// The blob.
        id: BlobId,
    },
    /// Which chunks the holder has.
    Have {
        /// The blob.
        id: BlobId,
    },
    /// One chunk.
    Chunk {
        /// The blob.
        id: BlobId,
        /// Chunk index.
        index: u32,
    },
}

impl BlobRequest {
    /// The blob asked about.
    pub fn id(&self) -> BlobId {
        match self {
            Self::Manifest { id } | Self::Have { id } | Self::Chunk { id, .. } => *id,
        }
    }
}

/// A holder's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobResponse {
    /// The manifest's canonical bytes (the requester checks that they hash to the id).
    Manifest {
        /// Encoded manifest.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The chunks the holder has.
    Have {
        /// One bit per chunk.
        have: Bitfield,
    },
    /// A chunk and the holder's current bitfield.
    Chunk {
        /// Chunk bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// One bit per chunk.
        have: Bitfield,
    },
    /// The holder does not have it (any more).
    NotFound,
    /// The blob is private and the requester is not on its allow-list.
    Denied,
    /// All upload slots and the queue are taken: retry later or elsewhere.
    Busy,
    /// This holder has already uploaded this chunk more often than others it holds: get it
    /// from a peer that has it, or ask again later (the holder spreads its upload over every
    /// chunk first, so that a blob fans out instead of the same chunks leaving it repeatedly).
    NotNow,
    /// The request could not be decoded.
    Error {
        /// Why.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        hash::Hash32,
        mesh::message::{MessageError, decode_versioned, encode_versioned},
    };

    #[test]
    fn chunk_response_is_raw_bytes_and_fits_the_cap() {
        let r = BlobResponse::Chunk {
            data: vec![0xAB; MAX_CHUNK_BYTES],
            have: Bitfield::full(100_000),
        };
        let bytes = encode_versioned(BLOB_VERSION, &r, MAX_BLOB_RESPONSE_BYTES).unwrap();
        assert!(bytes.len() < MAX_CHUNK_BYTES + 13_000);
        let back: BlobResponse =
            decode_versioned(&bytes, MAX_BLOB_RESPONSE_BYTES, BLOB_VERSION).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn requests_round_trip_and_reject_bad_input() {
        let id = Hash32::of(b"blob");
        for r in [
            BlobRequest::Manifest { id },
            BlobRequest::Have { id },
            BlobRequest::Chunk { id, index: 7 },
        ] {
            let b = encode_versioned(BLOB_VERSION, &r, MAX_BLOB_REQUEST_BYTES).unwrap();
            let back: BlobRequest =
                decode_versioned(&b, MAX_BLOB_REQUEST_BYTES, BLOB_VERSION).unwrap();
            assert_eq!(back.id(), id);
            assert_eq!(back, r);
            assert!(
                decode_versioned::<BlobRequest>(
                    &b[..b.len() - 2],
                    MAX_BLOB_REQUEST_BYTES,
                    BLOB_VERSION
                )
                .is_err()
            );
        }
        assert!(matches!(
            decode_versioned::<BlobRequest>(&[0u8; 2000], MAX_BLOB_REQUEST_BYTES, BLOB_VERSION),
            Err(MessageError::TooLarge { .. })
        ));
        let future = encode_versioned(3, &BlobRequest::Have { id }, 1024).unwrap();
        assert!(matches!(
            decode_versioned::<BlobRequest>(&future, MAX_BLOB_REQUEST_BYTES, BLOB_VERSION),
            Err(MessageError::UnknownVersion { got: 3, .. })
        ));
    }
}
