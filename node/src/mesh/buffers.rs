//! Buffers reused instead of allocated per message. Every chunk a node receives or serves
//! needs about a megabyte for a moment; a fresh allocation costs a zero fill and, once the
//! allocator has handed large blocks back to the kernel, page faults that clear the pages once
//! more. In the swarm benchmark's profile that zeroing cost more CPU than the BLAKE3 checks.
//! [`BufferPool`] keeps a bounded number of buffers; the chunk path shares one pool
//! ([`take_chunk`], [`give_chunk`]) and each request-response codec has its own.
//!
//! A reused buffer holds older bytes (possibly another blob's): [`BufferPool::take_len`] is
//! only for callers that overwrite all `len` bytes (`read_exact`, `read_exact_at`) before
//! anything reads them.

use std::sync::{Mutex, PoisonError};

use super::blob::MAX_CHUNK_BYTES;

/// The chunk path's pool: enough for the chunks in flight in a busy node (fetch queue, write
/// batch, upload slots), about 32 MiB at most whatever the load.
static CHUNKS: BufferPool = BufferPool::new(32, 64 * 1024, MAX_CHUNK_BYTES);

/// A buffer of exactly `len` bytes from the chunk pool, contents unspecified: the caller must
/// overwrite all of them.
pub fn take_chunk(len: usize) -> Vec<u8> {
    CHUNKS.take_len(len)
}

/// Returns a chunk buffer to the chunk pool.
pub fn give_chunk(buf: Vec<u8>) {
    CHUNKS.give(buf);
}

/// A bounded pool of byte buffers.
#[derive(Debug)]
pub struct BufferPool {
    bufs: Mutex<Vec<Vec<u8>>>,
    max_buffers: usize,
    min_bytes: usize,
    max_bytes: usize,
}

impl BufferPool {
    /// A pool keeping at most `max_buffers` buffers whose capacity lies in
    /// `min_bytes..=max_bytes` (smaller ones are not worth keeping, larger ones would pin
    /// memory).
    pub const fn new(max_buffers: usize, min_bytes: usize, max_bytes: usize) -> Self {
        Self {
            bufs: Mutex::new(Vec::new()),
            max_buffers,
            min_bytes,
            max_bytes,
        }
    }

    /// A buffer as it was given back (or a new empty one): length and contents unspecified.
    pub fn take(&self) -> Vec<u8> {
        self.bufs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    /// A buffer of exactly `len` bytes, contents unspecified.
    pub fn take_len(&self, len: usize) -> Vec<u8> {
        let mut buf = if len <= self.max_bytes {
            self.take()
        } else {
            Vec::new()
        };
        // Shrinking keeps the bytes; growing zero-fills only the new part.
        buf.resize(len, 0);
        buf
    }

    /// Keeps `buf` for reuse if its size is in bounds and the pool has room.
    pub fn give(&self, buf: Vec<u8>) {
        if !(self.min_bytes..=self.max_bytes).contains(&buf.capacity()) {
            return;
        }
        let mut bufs = self.bufs.lock().unwrap_or_else(PoisonError::into_inner);
        if bufs.len() < self.max_buffers {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn take_len_has_the_asked_length_and_reuses_a_given_buffer() {
        let pool = BufferPool::new(4, 1024, MIB);
        let mut a = pool.take_len(MIB);
        assert_eq!(a.len(), MIB);
        a.fill(7);
        let ptr = a.as_ptr();
        pool.give(a);
        assert_eq!(pool.pooled(), 1);
        let b = pool.take_len(1000);
        assert_eq!((b.len(), b.as_ptr()), (1000, ptr));
        assert!(b.iter().all(|&x| x == 7), "shrinking keeps the bytes");
        pool.give(b);
        let c = pool.take_len(MIB);
        assert_eq!(c.len(), MIB);
        assert_eq!(pool.pooled(), 0);
    }

    #[test]
    fn only_buffers_in_bounds_are_kept_and_only_so_many() {
        let pool = BufferPool::new(4, 1024, MIB);
        pool.give(vec![0u8; 16]);
        pool.give(Vec::with_capacity(MIB + 1));
        assert_eq!(pool.pooled(), 0);
        assert_eq!(pool.take_len(MIB + 1).len(), MIB + 1);
        for _ in 0..7 {
            pool.give(Vec::with_capacity(MIB));
        }
        assert_eq!(pool.pooled(), 4);
    }
}
