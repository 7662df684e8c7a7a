//! Content addressing: a blob is cut into chunks of [`CHUNK_BYTES`], each hashed with BLAKE3;
//! the manifest lists the chunk hashes, and the hash of the manifest's canonical CBOR encoding
//! is the blob id. Pure: no I/O.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{
    cbor,
    hash::Hash32,
    mesh::blob::{BlobError, BlobId},
};

/// Chunk size of the blobs we create (1 MiB).
pub const CHUNK_BYTES: usize = 1024 * 1024;
/// Largest chunk size accepted in a peer's manifest (bounds every chunk response).
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// Most chunks in one blob (100 000 chunks of 1 MiB: about 100 GiB).
pub const MAX_CHUNKS: usize = 100_000;
/// Largest encoded manifest accepted (34 bytes a chunk hash plus a small header).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Version of the manifest format (part of the hashed bytes, so part of the id).
pub const MANIFEST_VERSION: u16 = 1;

/// The description of a blob: its length, chunk size and the hash of every chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`MANIFEST_VERSION`]).
    pub v: u16,
    /// Total length in bytes.
    pub len: u64,
    /// Size of every chunk but the last.
    pub chunk_bytes: u32,
    /// BLAKE3 hash of each chunk, in order.
    pub chunks: Vec<Hash32>,
}

impl Manifest {
    /// The manifest of `data` cut into chunks of `chunk_bytes`.
    pub fn for_bytes_with(data: &[u8], chunk_bytes: usize) -> Self {
        let chunk_bytes = chunk_bytes.clamp(1, MAX_CHUNK_BYTES);
        Self {
            v: MANIFEST_VERSION,
            len: data.len() as u64,
            chunk_bytes: chunk_bytes as u32,
            chunks: data.chunks(chunk_bytes).map(Hash32::of).collect(),
        }
    }

    /// The manifest of `data` with the standard chunk size.
    pub fn for_bytes(data: &[u8]) -> Self {
        Self::for_bytes_with(data, CHUNK_BYTES)
    }

    /// The canonical encoding (what the id hashes).
    pub fn encode(&self) -> Result<Vec<u8>, BlobError> {
        cbor::to_vec(self).map_err(|e| BlobError::Encode(e.to_string()))
    }

    /// The blob id: the hash of the canonical encoding.
    pub fn id(&self) -> Result<BlobId, BlobError> {
        Ok(Hash32::of(&self.encode()?))
    }

    /// Decodes and validates a manifest received for blob `id`: the bytes must hash to `id`.
    pub fn decode_for(id: &BlobId, bytes: &[u8]) -> Result<Self, BlobError> {
        let got = Hash32::of(bytes);
        if &got != id {
            return Err(BlobError::ManifestMismatch { id: *id, got });
        }
        Self::decode(bytes)
    }

    /// Decodes (capped at [`MAX_MANIFEST_BYTES`]) and validates a manifest.
    pub fn decode(bytes: &[u8]) -> Result<Self, BlobError> {
        let m: Self = cbor::from_slice(bytes, MAX_MANIFEST_BYTES)
            .map_err(|e| BlobError::BadManifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Checks version, chunk size and that the chunk count matches the length.
    pub fn validate(&self) -> Result<(), BlobError> {
        let bad = |why: String| Err(BlobError::BadManifest(why));
        if self.v != MANIFEST_VERSION {
            return bad(format!("version {} (we speak {MANIFEST_VERSION})", self.v));
        }
        if self.chunk_bytes == 0 || self.chunk_bytes as usize > MAX_CHUNK_BYTES {
            return bad(format!("chunk size {}", self.chunk_bytes));
        }
        if self.chunks.len() > MAX_CHUNKS {
            return bad(format!("{} chunks (max {MAX_CHUNKS})", self.chunks.len()));
        }
        let expected = self.len.div_ceil(u64::from(self.chunk_bytes));
        if expected != self.chunks.len() as u64 {
            return bad(format!(
                "{} chunks for {} bytes of {}-byte chunks",
                self.chunks.len(),
                self.len,
                self.chunk_bytes
            ));
        }
        Ok(())
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        self.chunks.len() as u32
    }

    /// Byte range of chunk `index` inside the blob (empty when out of range).
    pub fn chunk_range(&self, index: u32) -> Range<u64> {
        let size = u64::from(self.chunk_bytes);
        let start = (u64::from(index) * size).min(self.len);
        start..(start + size).min(self.len)
    }

    /// Length of chunk `index`.
    pub fn chunk_len(&self, index: u32) -> usize {
        let r = self.chunk_range(index);
        (r.end - r.start) as usize
    }

    /// Checks that `data` is chunk `index` of this blob.
    pub fn verify_chunk(&self, index: u32, data: &[u8]) -> Result<(), BlobError> {
        let Some(expected) = self.chunks.get(index as usize) else {
            return Err(BlobError::ChunkOutOfRange {
                index,
                chunks: self.chunk_count(),
            });
        };
        if data.len() != self.chunk_len(index) {
            return Err(BlobError::ChunkMismatch {
                index,
                reason: format!("{} bytes, expected {}", data.len(), self.chunk_len(index)),
            });
        }
        let got = Hash32::of(data);
        if &got != expected {
            return Err(BlobError::ChunkMismatch {
                index,
                reason: format!("hash {} expected {}", got.short(), expected.short()),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn chunking_covers_every_byte() {
        let d = data(10 * 1024 + 5);
        let m = Manifest::for_bytes_with(&d, 1024);
        assert_eq!(m.chunk_count(), 11);
        m.validate().unwrap();
        let mut joined = Vec::new();
        for i in 0..m.chunk_count() {
            let r = m.chunk_range(i);
            let chunk = &d[r.start as usize..r.end as usize];
            m.verify_chunk(i, chunk).unwrap();
            joined.extend_from_slice(chunk);
        }
        assert_eq!(joined, d);
        assert_eq!(m.chunk_len(10), 5);
        assert_eq!(m.chunk_len(11), 0);
    }

    #[test]
    fn id_is_stable_and_content_dependent() {
        let a = Manifest::for_bytes(&data(3000));
        let b = Manifest::for_bytes(&data(3000));
        let c = Manifest::for_bytes(&data(3001));
        assert_eq!(a.id().unwrap(), b.id().unwrap());
        assert_ne!(a.id().unwrap(), c.id().unwrap());
    }

    #[test]
    fn empty_blob_has_no_chunks() {
        let m = Manifest::for_bytes(&[]);
        assert_eq!(m.chunk_count(), 0);
        m.validate().unwrap();
    }

    #[test]
    fn decode_for_checks_the_hash() {
        let m = Manifest::for_bytes(&data(5000));
        let bytes = m.encode().unwrap();
        let id = m.id().unwrap();
        assert_eq!(Manifest::decode_for(&id, &bytes).unwrap(), m);
        let other = Hash32::of(b"other");
        assert!(matches!(
            Manifest::decode_for(&other, &bytes),
            Err(BlobError::ManifestMismatch { .. })
        ));
    }

    #[test]
    fn inconsistent_manifests_rejected() {
        let mut m = Manifest::for_bytes_with(&data(5000), 1024);
        m.len = 100;
        assert!(matches!(m.validate(), Err(BlobError::BadManifest(_))));
        let mut m = Manifest::for_bytes(&data(10));
        m.chunk_bytes = (MAX_CHUNK_BYTES + 1) as u32;
        assert!(m.validate().is_err());
        let mut m = Manifest::for_bytes(&data(10));
        m.v = 2;
        assert!(m.validate().is_err());
        assert!(Manifest::decode(&[0xff, 0x00]).is_err());
    }

    #[test]
    fn wrong_chunk_detected() {
        let d = data(4096);
        let m = Manifest::for_bytes_with(&d, 1024);
        let mut bad = d[..1024].to_vec();
        bad[0] ^= 1;
        assert!(matches!(
            m.verify_chunk(0, &bad),
            Err(BlobError::ChunkMismatch { index: 0, .. })
        ));
        assert!(m.verify_chunk(0, &d[..1000]).is_err());
        assert!(matches!(
            m.verify_chunk(9, &d[..1024]),
            Err(BlobError::ChunkOutOfRange { .. })
        ));
    }
}
