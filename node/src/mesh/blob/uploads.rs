//! Serving side of the blob protocol, the pure parts: a queue of chunk requests with a fixed
//! number of upload slots (so a busy holder finishes whole chunks quickly, which lets them
//! spread, instead of trickling all requested chunks at once) and a per-peer cap, plus a token
//! bucket for an optional upload rate limit.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

use libp2p::PeerId;

use crate::mesh::blob::{Bitfield, BlobId};

/// Blobs whose upload counts are tracked; the oldest is forgotten beyond this.
const SPREAD_BLOBS: usize = 64;
/// Deferrals remembered (a requester is told `NotNow` at most once per chunk).
const SPREAD_DEFERRALS: usize = 65_536;

/// Chunk requests waiting for an upload slot.
#[derive(Debug)]
pub struct UploadQueue<K, T> {
    slots: usize,
    per_peer: usize,
    max_queued: usize,
    active: HashMap<K, PeerId>,
    queue: VecDeque<(PeerId, K, T)>,
    load: HashMap<PeerId, usize>,
}

impl<K: Hash + Eq + Copy, T> UploadQueue<K, T> {
    /// `slots` concurrent uploads, at most `per_peer` queued or active per requester and
    /// `max_queued` waiting overall.
    pub fn new(slots: usize, per_peer: usize, max_queued: usize) -> Self {
        Self {
            slots: slots.max(1),
            per_peer: per_peer.max(1),
            max_queued,
            active: HashMap::new(),
            queue: VecDeque::new(),
            load: HashMap::new(),
        }
    }

    /// Queues a request; gives it back when the peer or the queue is at its cap (answer Busy).
    pub fn offer(&mut self, peer: PeerId, key: K, item: T) -> Result<(), T> {
        let load = self.load.get(&peer).copied().unwrap_or(0);
        if load >= self.per_peer || self.queue.len() >= self.max_queued {
            return Err(item);
        }
        *self.load.entry(peer).or_default() += 1;
        self.queue.push_back((peer, key, item));
        Ok(())
    }

    /// The next request to serve, if a slot is free; it occupies the slot until
    /// [`UploadQueue::finish`].
    pub fn next_ready(&mut self) -> Option<(PeerId, K, T)> {
        if self.active.len() >= self.slots {
            return None;
        }
        let (peer, key, item) = self.queue.pop_front()?;
        self.active.insert(key, peer);
        Some((peer, key, item))
    }

    /// An upload ended (sent, failed or abandoned); frees its slot. Unknown keys are ignored.
    pub fn finish(&mut self, key: &K) -> bool {
        let Some(peer) = self.active.remove(key) else {
            return false;
        };
        if let Some(n) = self.load.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.load.remove(&peer);
            }
        }
        true
    }

    /// Uploads in progress.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

/// How often this node has uploaded each chunk of the blobs it serves. A chunk that has left
/// more often than the least-uploaded chunk this node holds is answered `NotNow` once per
/// requester: the node prefers to upload every chunk once before any twice (BitTorrent's
/// "super-seeding"), so first copies spread through the swarm instead of the origin sending the
/// same chunks repeatedly. Nothing is starved: a requester that asks again (it found no one
/// else with the chunk) is served, so the worst case is one retry delay.
#[derive(Debug, Default)]
pub struct ChunkSpread {
    counts: HashMap<BlobId, Vec<u32>>,
    order: VecDeque<BlobId>,
    deferred: HashSet<(PeerId, BlobId, u32)>,
}

impl ChunkSpread {
    /// Whether `peer`'s request for chunk `index` should be deferred, given what this node
    /// `have`s; remembers the deferral so that the next request is served.
    pub fn should_defer(
        &mut self,
        peer: &PeerId,
        id: &BlobId,
        index: u32,
        have: &Bitfield,
    ) -> bool {
        let Some(counts) = self.counts.get(id) else {
            return false;
        };
        let count = |i: u32| counts.get(i as usize).copied().unwrap_or(0);
        let least = have.ones().map(count).min().unwrap_or(0);
        if count(index) <= least {
            return false;
        }
        if self.deferred.len() >= SPREAD_DEFERRALS {
            self.deferred.clear();
        }
        self.deferred.insert((*peer, *id, index))
    }

    /// Records one upload of chunk `index` of a blob of `chunks` chunks.
    pub fn record(&mut self, id: &BlobId, index: u32, chunks: u32) {
        if !self.counts.contains_key(id) {
            if self.order.len() >= SPREAD_BLOBS
                && let Some(old) = self.order.pop_front()
            {
                self.counts.remove(&old);
            }
            self.order.push_back(*id);
            self.counts.insert(*id, vec![0; chunks as usize]);
        }
        if let Some(c) = self
            .counts
            .get_mut(id)
            .and_then(|c| c.get_mut(index as usize))
        {
            *c += 1;
        }
    }
}

/// A token bucket over bytes: callers take what they send and wait the returned delay.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `bytes_per_sec` on average, bursts of up to `burst` bytes.
    pub fn new(bytes_per_sec: u64, burst: u64, now: Instant) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        Self {
            rate,
            burst: burst as f64,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes `bytes` and returns how long to wait before sending them (zero when there was
    /// credit). Debt carries over, so the long-run rate holds.
    pub fn take(&mut self, bytes: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_limit_concurrent_uploads() {
        let mut q: UploadQueue<u32, &str> = UploadQueue::new(2, 4, 10);
        let p = PeerId::random();
        for k in 0..3 {
            q.offer(p, k, "x").unwrap();
        }
        assert_eq!(q.next_ready().map(|r| r.1), Some(0));
        assert_eq!(q.next_ready().map(|r| r.1), Some(1));
        assert!(q.next_ready().is_none());
        assert!(q.finish(&0));
        assert!(!q.finish(&0));
        assert_eq!(q.next_ready().map(|r| r.1), Some(2));
        assert_eq!((q.active(), q.queued()), (2, 0));
    }

    #[test]
    fn per_peer_and_queue_caps_refuse() {
        let mut q: UploadQueue<u32, u32> = UploadQueue::new(1, 2, 3);
        let a = PeerId::random();
        let b = PeerId::random();
        q.offer(a, 0, 0).unwrap();
        q.offer(a, 1, 1).unwrap();
        assert_eq!(q.offer(a, 2, 2), Err(2), "per-peer cap");
        q.offer(b, 3, 3).unwrap();
        assert_eq!(q.offer(b, 4, 4), Err(4), "queue cap");
        // Serving one of a's frees a place for a.
        let (_, k, _) = q.next_ready().unwrap();
        q.finish(&k);
        q.offer(a, 5, 5).unwrap();
    }

    #[test]
    fn every_chunk_leaves_once_before_any_leaves_twice() {
        let id = BlobId::of(b"blob");
        let have = Bitfield::full(3);
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = ChunkSpread::default();
        assert!(!s.should_defer(&a, &id, 0, &have));
        s.record(&id, 0, 3);
        assert!(
            s.should_defer(&b, &id, 0, &have),
            "0 left once, 1 and 2 never"
        );
        assert!(!s.should_defer(&b, &id, 0, &have), "asked again: served");
        assert!(
            s.should_defer(&a, &id, 0, &have),
            "another requester is deferred once"
        );
        assert!(!s.should_defer(&a, &id, 1, &have));
        s.record(&id, 1, 3);
        s.record(&id, 2, 3);
        assert!(
            !s.should_defer(&PeerId::random(), &id, 0, &have),
            "all left once"
        );
        // A partial holder only compares the chunks it has.
        let mut partial = Bitfield::empty(3);
        partial.set(0);
        let mut p = ChunkSpread::default();
        p.record(&id, 0, 3);
        assert!(!p.should_defer(&a, &id, 0, &partial));
    }

    #[test]
    fn token_bucket_holds_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 500, t0);
        assert_eq!(b.take(500, t0), Duration::ZERO);
        assert_eq!(b.take(1000, t0), Duration::from_secs(1));
        // Two seconds later the debt is paid and the bucket is full again (capped at burst).
        assert_eq!(b.take(500, t0 + Duration::from_secs(3)), Duration::ZERO);
        let d = b.take(100, t0 + Duration::from_secs(3));
        assert_eq!(d, Duration::from_millis(100));
    }
}
