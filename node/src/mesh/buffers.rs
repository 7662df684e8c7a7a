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

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::blob::MAX_CHUNK_BYTES;

/// The chunk path's pool: enough for the chunks in flight in a busy node. A fetch from 16
/// holders has up to 64 chunk requests outstanding, each answer read into a buffer, then the
/// write queue and batch; serving has its upload slots. With room for 32 or 64 the pool ran
/// dry in the swarm benchmark, and each miss was a fresh megabyte the kernel zeroed (3-6% of
/// the swarm's CPU). What a transfer's peak left behind is freed once idle ([`CHUNK_IDLE`]).
static CHUNKS: BufferPool = BufferPool::new(128, 64 * 1024, MAX_CHUNK_BYTES);

/// A pooled chunk buffer unused for this long is freed, so an idle node does not keep its
/// busiest moment's megabytes.
pub const CHUNK_IDLE: Duration = Duration::from_secs(10);

/// A buffer of exactly `len` bytes from the chunk pool, contents unspecified: the caller must
/// overwrite all of them.
pub fn take_chunk(len: usize) -> Vec<u8> {
    CHUNKS.take_len(len)
}

/// Returns a chunk buffer to the chunk pool.
pub fn give_chunk(buf: Vec<u8>) {
    CHUNKS.give(buf);
}

/// Frees the chunk buffers idle for [`CHUNK_IDLE`], every [`CHUNK_IDLE`], forever (the mesh's
/// event loop runs it beside itself).
pub async fn trim_chunks_periodically() {
    let mut every = tokio::time::interval(CHUNK_IDLE);
    loop {
        every.tick().await;
        CHUNKS.trim(Instant::now(), CHUNK_IDLE);
    }
}

/// A bounded pool of byte buffers, last in first out: the buffers at the bottom are the ones
/// unused longest, which [`BufferPool::trim`] frees.
#[derive(Debug)]
pub struct BufferPool {
    /// Each buffer with the moment it was given back, oldest first.
    bufs: Mutex<Vec<(Vec<u8>, Instant)>>,
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
            .map(|(buf, _)| buf)
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
            bufs.push((buf, Instant::now()));
        }
    }

    /// Frees the buffers given back before `now - max_idle` and not taken since.
    pub fn trim(&self, now: Instant, max_idle: Duration) {
        let mut bufs = self.bufs.lock().unwrap_or_else(PoisonError::into_inner);
        let stale = bufs.partition_point(|(_, at)| now.duration_since(*at) >= max_idle);
        bufs.drain(..stale);
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
    fn trim_frees_only_the_buffers_idle_too_long() {
        let pool = BufferPool::new(4, 1024, MIB);
        pool.give(vec![1u8; 2048]);
        std::thread::sleep(Duration::from_millis(60));
        pool.give(vec![2u8; 2048]);
        pool.trim(Instant::now(), Duration::from_millis(30));
        assert_eq!(pool.pooled(), 1, "only the first has been idle for 30 ms");
        assert_eq!(pool.take()[0], 2);
        // Last in, first out.
        pool.give(vec![3u8; 2048]);
        pool.give(vec![4u8; 2048]);
        assert_eq!(pool.take()[0], 4);
        pool.trim(Instant::now() + Duration::from_secs(11), CHUNK_IDLE);
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
