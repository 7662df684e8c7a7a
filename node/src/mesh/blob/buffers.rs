//! Chunk-sized buffers reused across fetches and uploads. Every chunk a node receives or
//! serves needs about a megabyte of memory for a moment; a fresh allocation costs a zero fill
//! and, once the allocator has handed large blocks back to the kernel, page faults that clear
//! the pages once more. In the swarm benchmark's profile that zeroing cost more CPU than the
//! BLAKE3 checks. Buffers come back here after the chunk is written or sent.
//!
//! A reused buffer holds an older chunk's bytes: [`take`] is only for callers that overwrite
//! all `len` bytes (`read_exact`, `read_exact_at`) before anything reads them.

use std::sync::{Mutex, PoisonError};

use super::MAX_CHUNK_BYTES;

/// Buffers kept at most (about 32 MiB with 1 MiB chunks): enough for the chunks in flight in a
/// busy node (fetch queue, write batch, upload slots), bounded whatever the load.
const POOL_BUFFERS: usize = 32;
/// Smaller buffers are not worth keeping.
const MIN_POOLED_BYTES: usize = 64 * 1024;

static POOL: ChunkBuffers = ChunkBuffers::new();

/// A buffer of exactly `len` bytes from the node's pool, contents unspecified (zeroes or an
/// older chunk): the caller must overwrite all of them.
pub fn take(len: usize) -> Vec<u8> {
    POOL.take(len)
}

/// Returns a buffer from [`take`] (or any chunk buffer) to the node's pool.
pub fn give(buf: Vec<u8>) {
    POOL.give(buf);
}

/// A bounded pool of chunk-sized buffers.
#[derive(Debug)]
pub struct ChunkBuffers {
    bufs: Mutex<Vec<Vec<u8>>>,
}

impl ChunkBuffers {
    /// An empty pool.
    pub const fn new() -> Self {
        Self {
            bufs: Mutex::new(Vec::new()),
        }
    }

    /// A buffer of exactly `len` bytes, contents unspecified.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let reused = if len <= MAX_CHUNK_BYTES {
            self.bufs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
        } else {
            None
        };
        let mut buf = reused.unwrap_or_default();
        // Shrinking keeps the bytes; growing zero-fills only the new part.
        buf.resize(len, 0);
        buf
    }

    /// Keeps `buf` for reuse if it is chunk-sized and the pool has room.
    pub fn give(&self, buf: Vec<u8>) {
        if !(MIN_POOLED_BYTES..=MAX_CHUNK_BYTES).contains(&buf.capacity()) {
            return;
        }
        let mut bufs = self.bufs.lock().unwrap_or_else(PoisonError::into_inner);
        if bufs.len() < POOL_BUFFERS {
            bufs.push(buf);
        }
    }

    /// Buffers held.
    pub fn pooled(&self) -> usize {
        self.bufs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Default for ChunkBuffers {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_has_the_asked_length_and_reuses_a_given_buffer() {
        let pool = ChunkBuffers::new();
        let mut a = pool.take(MAX_CHUNK_BYTES);
        assert_eq!(a.len(), MAX_CHUNK_BYTES);
        a.fill(7);
        let ptr = a.as_ptr();
        pool.give(a);
        assert_eq!(pool.pooled(), 1);
        let b = pool.take(1000);
        assert_eq!((b.len(), b.as_ptr()), (1000, ptr));
        assert!(b.iter().all(|&x| x == 7), "shrinking keeps the bytes");
        pool.give(b);
        let c = pool.take(MAX_CHUNK_BYTES);
        assert_eq!(c.len(), MAX_CHUNK_BYTES);
        assert_eq!(pool.pooled(), 0);
    }

    #[test]
    fn only_chunk_sized_buffers_are_kept_and_only_so_many() {
        let pool = ChunkBuffers::new();
        pool.give(vec![0u8; 16]);
        pool.give(Vec::with_capacity(MAX_CHUNK_BYTES + 1));
        assert_eq!(pool.pooled(), 0);
        assert_eq!(pool.take(MAX_CHUNK_BYTES + 1).len(), MAX_CHUNK_BYTES + 1);
        for _ in 0..POOL_BUFFERS + 3 {
            pool.give(Vec::with_capacity(MAX_CHUNK_BYTES));
        }
        assert_eq!(pool.pooled(), POOL_BUFFERS);
    }
}
