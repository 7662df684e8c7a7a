//! Content-addressed blobs (models, updates, validation sets) and their exchange.
//!
//! - [`manifest`]: chunking and the manifest whose hash is the blob id (pure).
//! - [`bitfield`]: which chunks a peer holds (pure).
//! - [`wire`]: the blob protocol's requests and responses.
//! - [`store`]: chunk bytes in one file per blob; manifests, held-chunk bitfields, completion,
//!   wanted list and allow-lists in redb.
//! - [`scheduler`]: which chunk to ask which holder for (pure, unit-tested).
//! - [`uploads`]: upload slots and the rate limiter of the serving side (pure).
//! - [`serve`]: answering one blob request from the store.
//! - [`stream`]: the chunk stream protocol: pipelined chunk requests on long-lived streams,
//!   its server and the fetcher's per-holder pipes.
//! - [`fetch`]: the async driver of one fetch: discovery, requests, verification, persistence.
//!
//! A fetcher announces itself as a provider as soon as it has the manifest and serves every
//! chunk it has written, so a blob spreads like a swarm: later fetchers take chunks from
//! several holders, and the origin's upload stops being the bottleneck.

pub mod bitfield;
pub mod fetch;
pub mod manifest;
pub mod scheduler;
pub mod serve;
pub mod store;
pub mod stream;
pub mod uploads;
pub mod wire;

pub use bitfield::Bitfield;
pub use fetch::{DroppedHolder, FetchOptions, FetchReport, FetchState};
pub use manifest::{CHUNK_BYTES, MAX_CHUNK_BYTES, MAX_CHUNKS, MAX_MANIFEST_BYTES, Manifest};
pub use store::{BlobState, BlobStore, BlobSummary, VerifiedChunk};
pub use wire::{BlobRequest, BlobResponse};

use crate::{hash::Hash32, store::StoreError};

/// A blob id: the BLAKE3 hash of the blob's canonical manifest.
pub type BlobId = Hash32;

/// Errors of the blob layer.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Manifest bytes that do not hash to the blob id asked for.
    #[error("manifest for blob {id} hashes to {got}")]
    ManifestMismatch {
        /// The id asked for.
        id: BlobId,
        /// What the bytes hash to.
        got: BlobId,
    },
    /// A manifest that cannot be decoded or is inconsistent.
    #[error("bad manifest: {0}")]
    BadManifest(String),
    /// A chunk whose length or hash does not match the manifest.
    #[error("chunk {index} does not match the manifest: {reason}")]
    ChunkMismatch {
        /// The chunk.
        index: u32,
        /// What differed.
        reason: String,
    },
    /// A chunk index past the end of the blob.
    #[error("chunk {index} out of range ({chunks} chunks)")]
    ChunkOutOfRange {
        /// The index.
        index: u32,
        /// The blob's chunk count.
        chunks: u32,
    },
    /// No manifest for this blob here.
    #[error("unknown blob {0}")]
    UnknownBlob(BlobId),
    /// A chunk the store should have but does not (store damaged).
    #[error("blob {id} is missing chunk {index}")]
    MissingChunk {
        /// The blob.
        id: BlobId,
        /// The chunk.
        index: u32,
    },
    /// The blob is larger than this operation allows.
    #[error("blob of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A blob file could not be read or written.
    #[error("blob file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// Encoding a manifest failed.
    #[error("cannot encode manifest: {0}")]
    Encode(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BlobError {
    /// Whether the error proves that the peer who sent the data misbehaved.
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            Self::ManifestMismatch { .. }
                | Self::BadManifest(_)
                | Self::ChunkMismatch { .. }
                | Self::ChunkOutOfRange { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_fault_classification() {
        assert!(BlobError::BadManifest("x".into()).is_peer_fault());
        assert!(
            BlobError::ChunkMismatch {
                index: 0,
                reason: "x".into()
            }
            .is_peer_fault()
        );
        assert!(!BlobError::UnknownBlob(Hash32::of(b"x")).is_peer_fault());
        assert!(!BlobError::Store(StoreError::Io("disk".into())).is_peer_fault());
    }
}
