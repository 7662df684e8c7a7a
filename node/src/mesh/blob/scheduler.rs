//! The fetch scheduler: given what we have, what each holder has and what is in flight, decides
//! which chunk to ask which holder for next. Rarest chunk first (ties broken at random, so that
//! fetchers started together ask the origin for different chunks and can then trade them), at
//! most `per_peer` requests per holder and `total` overall, duplicate requests only in the
//! endgame. Holders that serve bad data or deny us are dropped; busy ones are backed off.
//!
//! Pure: no I/O, no clock, no global RNG. Time comes in as an argument and randomness from a
//! seed, so the tests below replay exact schedules.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use libp2p::PeerId;

use crate::mesh::blob::Bitfield;

/// Tuning of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Chunk requests in flight per holder.
    pub per_peer: usize,
    /// Chunk requests in flight overall.
    pub total: usize,
    /// Transport failures before a holder is dropped.
    pub max_failures: u32,
    /// Pause before asking a holder again after it said it was busy or failed.
    pub backoff: Duration,
    /// How often to ask an incomplete holder that has nothing useful what it has now.
    pub have_refresh: Duration,
    /// Concurrent requests for the same chunk in the endgame.
    pub max_duplicates: usize,
    /// How long a chunk request must have been outstanding before the endgame duplicates it
    /// (duplicates cost upload elsewhere: only chase slow ones); at least
    /// [`ENDGAME_LATENCIES`] times the fetch's typical chunk latency.
    pub endgame_after: Duration,
    /// A request outstanding this long is also asked of another holder (in the endgame or
    /// not) and no longer counts against `max_duplicates`: a holder whose stream stalled must
    /// not keep chunks waiting for the full request timeout. A healthy request waits at most
    /// for the holder's upload queue (about 0.7 s for 32 queued chunks at 400 Mbit/s). At
    /// least [`STALE_LATENCIES`] times the fetch's typical chunk latency.
    pub stale_after: Duration,
}

/// The endgame duplicates a request once it is this many typical latencies old: a fixed
/// 500 ms duplicated most of the last chunks when the swarm was busy (a chunk took about
/// 0.6-1 s from request to arrival), 6-9% of all transfers.
pub const ENDGAME_LATENCIES: u32 = 2;
/// A request this many typical latencies old counts as stuck.
pub const STALE_LATENCIES: u32 = 3;

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            per_peer: 2,
            total: 16,
            max_failures: 3,
            backoff: Duration::from_millis(200),
            have_refresh: Duration::from_millis(500),
            max_duplicates: 2,
            endgame_after: Duration::from_millis(500),
            stale_after: Duration::from_secs(2),
        }
    }
}

/// What the driver should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask `peer` which chunks it has.
    QueryHave {
        /// The holder.
        peer: PeerId,
    },
    /// Ask `peer` for chunk `index`.
    RequestChunk {
        /// The holder.
        peer: PeerId,
        /// The chunk.
        index: u32,
    },
}

/// How a request to a holder failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The holder's upload slots are full.
    Busy,
    /// The holder wants to send other chunks first (it has sent this one more often).
    NotNow,
    /// The holder does not have what it advertised.
    NotFound,
    /// The holder refuses us (private blob).
    Denied,
    /// Timeout, connection closed, undecodable response.
    Transport,
}

/// Why a holder was dropped from a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// It served a chunk, manifest or bitfield that failed verification.
    BadData,
    /// It refused us.
    Denied,
    /// Too many transport failures.
    Failures,
}

#[derive(Debug, Default)]
struct Holder {
    have: Option<Bitfield>,
    chunks_in_flight: usize,
    have_in_flight: bool,
    last_have_query: Option<Instant>,
    failures: u32,
    backoff_until: Option<Instant>,
    served: u32,
    dropped: Option<DropReason>,
    /// Chunks this holder asked us to get elsewhere, until when.
    deferred: HashMap<u32, Instant>,
}

fn short(p: &PeerId) -> String {
    let s = p.to_base58();
    s[s.len().saturating_sub(6)..].to_owned()
}

impl Holder {
    fn usable(&self, now: Instant) -> bool {
        self.dropped.is_none() && self.backoff_until.is_none_or(|t| now >= t)
    }
}

/// The scheduling state of one blob fetch.
#[derive(Debug)]
pub struct Scheduler {
    have: Bitfield,
    /// Chunks in flight: who was asked and when.
    requested: HashMap<u32, Vec<(PeerId, Instant)>>,
    holders: BTreeMap<PeerId, Holder>,
    cfg: SchedulerConfig,
    rng: u64,
    in_flight: usize,
    /// Moving average of the time from a chunk request to its verified arrival; none until a
    /// chunk has arrived.
    latency: Option<Duration>,
}

impl Scheduler {
    /// A scheduler for a blob of which we already hold `have`; `seed` breaks ties.
    pub fn new(have: Bitfield, cfg: SchedulerConfig, seed: u64) -> Self {
        Self {
            have,
            requested: HashMap::new(),
            holders: BTreeMap::new(),
            cfg,
            rng: seed | 1,
            in_flight: 0,
            latency: None,
        }
    }

    fn random(&mut self, n: usize) -> usize {
        // xorshift64*: plenty for tie-breaking.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }

    /// Adds a possible holder (its bitfield is asked for first). Dropped holders stay dropped.
    pub fn add_holder(&mut self, peer: PeerId) {
        self.holders.entry(peer).or_default();
    }

    /// Adds a holder known to have everything (e.g. the one that served the manifest and said
    /// so), saving a round trip.
    pub fn add_complete_holder(&mut self, peer: PeerId) {
        let full = Bitfield::full(self.have.len());
        let h = self.holders.entry(peer).or_default();
        if h.dropped.is_none() {
            h.have = Some(full);
        }
    }

    /// Whether `peer` is known (live or dropped).
    pub fn knows(&self, peer: &PeerId) -> bool {
        self.holders.contains_key(peer)
    }

    /// Records a holder's bitfield (an invalid one drops it).
    pub fn on_have(&mut self, peer: PeerId, have: Bitfield) {
        let n = self.have.len();
        let h = self.holders.entry(peer).or_default();
        h.have_in_flight = false;
        if have.is_valid_for(n) {
            h.have = Some(have);
        } else {
            h.dropped = Some(DropReason::BadData);
        }
    }

    /// A bitfield query failed.
    pub fn on_have_failed(&mut self, peer: PeerId, failure: Failure, now: Instant) {
        if let Some(h) = self.holders.get_mut(&peer) {
            h.have_in_flight = false;
        }
        self.penalise(peer, failure, now);
    }

    /// Forgets `peer`'s request for `index`; returns when it was made.
    fn finish_request(&mut self, peer: &PeerId, index: u32) -> Option<Instant> {
        let peers = self.requested.get_mut(&index)?;
        let asked = peers.iter().position(|(p, _)| p == peer).map(|pos| {
            let (_, at) = peers.swap_remove(pos);
            self.in_flight -= 1;
            if let Some(h) = self.holders.get_mut(peer) {
                h.chunks_in_flight -= 1;
            }
            at
        });
        if peers.is_empty() {
            self.requested.remove(&index);
        }
        asked
    }

    /// A verified chunk arrived at `now`; `remote_have` is the holder's bitfield sent along.
    /// Returns whether the chunk was new to us (false for an endgame duplicate).
    pub fn on_chunk_ok(
        &mut self,
        peer: PeerId,
        index: u32,
        remote_have: Bitfield,
        now: Instant,
    ) -> bool {
        if let Some(asked) = self.finish_request(&peer, index) {
            let took = now.saturating_duration_since(asked);
            // An exponential moving average, weight 1/8 on the newest.
            self.latency = Some(self.latency.map_or(took, |avg| (avg * 7 + took) / 8));
        }
        let n = self.have.len();
        if let Some(h) = self.holders.get_mut(&peer) {
            h.served += 1;
            h.failures = 0;
            if remote_have.is_valid_for(n) {
                h.have = Some(remote_have);
            }
        }
        self.have.set(index)
    }

    /// A chunk failed verification: the holder is dropped for this fetch.
    pub fn on_chunk_bad(&mut self, peer: PeerId, index: u32) {
        let _ = self.finish_request(&peer, index);
        if let Some(h) = self.holders.get_mut(&peer) {
            h.dropped = Some(DropReason::BadData);
        }
    }

    /// Drops `peer` from this fetch (e.g. it served a bad manifest or a nonsensical answer).
    pub fn drop_holder(&mut self, peer: PeerId, reason: DropReason) {
        self.holders.entry(peer).or_default().dropped = Some(reason);
    }

    /// A chunk request failed.
    pub fn on_chunk_failed(&mut self, peer: PeerId, index: u32, failure: Failure, now: Instant) {
        let _ = self.finish_request(&peer, index);
        if failure == Failure::NotNow {
            let until = now + self.cfg.backoff;
            if let Some(h) = self.holders.get_mut(&peer) {
                h.deferred.retain(|_, t| *t > now);
                h.deferred.insert(index, until);
            }
            return;
        }
        self.penalise(peer, failure, now);
    }

    fn penalise(&mut self, peer: PeerId, failure: Failure, now: Instant) {
        let Some(h) = self.holders.get_mut(&peer) else {
            return;
        };
        match failure {
            Failure::Busy => h.backoff_until = Some(now + self.cfg.backoff),
            // Chunk-specific; handled in `on_chunk_failed`. For a bitfield query it means busy.
            Failure::NotNow => h.backoff_until = Some(now + self.cfg.backoff),
            Failure::NotFound => {
                // Its bitfield was stale or wrong: ask again before using it.
                h.have = None;
                h.backoff_until = Some(now + self.cfg.backoff);
            }
            Failure::Denied => h.dropped = Some(DropReason::Denied),
            Failure::Transport => {
                h.failures += 1;
                h.backoff_until = Some(now + self.cfg.backoff);
                if h.failures >= self.cfg.max_failures {
                    h.dropped = Some(DropReason::Failures);
                }
            }
        }
    }

    /// One line on what a stalled fetch waits for: each missing chunk with who was asked and
    /// how long ago, and how many usable holders are known to have it (for debug logs).
    pub fn waiting_summary(&self, now: Instant) -> String {
        let mut out = String::new();
        for i in (0..self.have.len()).filter(|&i| !self.have.get(i)).take(8) {
            let asked: Vec<String> = self
                .requested
                .get(&i)
                .map(|ps| {
                    ps.iter()
                        .map(|(p, t)| {
                            format!("{}@{}ms", short(p), now.duration_since(*t).as_millis())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let (mut known, mut usable) = (0, 0);
            for h in self.holders.values() {
                if h.have.as_ref().is_some_and(|b| b.get(i)) {
                    known += 1;
                    if h.usable(now) && h.chunks_in_flight < self.cfg.per_peer {
                        usable += 1;
                    }
                }
            }
            out.push_str(&format!(
                "[{i}: asked {asked:?}, {known} known holders, {usable} free] "
            ));
        }
        let no_have = self.holders.values().filter(|h| h.have.is_none()).count();
        let querying = self.holders.values().filter(|h| h.have_in_flight).count();
        let backed_off = self.holders.values().filter(|h| !h.usable(now)).count();
        out.push_str(&format!(
            "in flight {}, holders {} ({no_have} without bitfield, {querying} being asked, {backed_off} unusable), chunk latency {:?}",
            self.in_flight,
            self.holders.len(),
            self.latency
        ));
        out
    }

    /// Whether every chunk has arrived.
    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// Chunks we have.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Chunk requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Holders not dropped.
    pub fn live_holders(&self) -> usize {
        self.holders
            .values()
            .filter(|h| h.dropped.is_none())
            .count()
    }

    /// Whether any holder query (bitfield or chunk) is outstanding.
    pub fn is_busy(&self) -> bool {
        self.in_flight > 0 || self.holders.values().any(|h| h.have_in_flight)
    }

    /// Dropped holders and why.
    pub fn dropped(&self) -> Vec<(PeerId, DropReason)> {
        self.holders
            .iter()
            .filter_map(|(p, h)| h.dropped.map(|r| (*p, r)))
            .collect()
    }

    /// Chunks each holder served (duplicates included).
    pub fn served(&self) -> BTreeMap<PeerId, u32> {
        self.holders
            .iter()
            .filter(|(_, h)| h.served > 0)
            .map(|(p, h)| (*p, h.served))
            .collect()
    }

    /// The next requests to send; marks them in flight.
    pub fn next_actions(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.plan_have_queries(now, &mut actions);
        if !self.is_complete() {
            self.plan_chunk_requests(now, &mut actions);
        }
        actions
    }

    fn plan_have_queries(&mut self, now: Instant, actions: &mut Vec<Action>) {
        // Re-polling holders that had nothing for us is only worth it while we have room for
        // more requests (in a busy swarm every poll is a stream on some peer's connection).
        let saturated = self.in_flight >= self.cfg.total;
        let complete = self.is_complete();
        let ours = self.have.clone();
        let refresh = self.cfg.have_refresh;
        // Chunks we could ask someone for right now: missing and not already asked of anyone.
        let askable: Vec<bool> = (0..ours.len())
            .map(|i| !ours.get(i) && !self.requested.contains_key(&i))
            .collect();
        for (peer, h) in &mut self.holders {
            if complete || !h.usable(now) || h.have_in_flight {
                continue;
            }
            let needed = match &h.have {
                None => true,
                Some(theirs) => {
                    !saturated
                        && !theirs.is_full()
                        && h.chunks_in_flight == 0
                        && h.last_have_query.is_none_or(|t| now >= t + refresh)
                        // Nothing to ask it for as far as we know (chunks already asked of
                        // others do not count: those others may be stuck).
                        && !theirs.ones().any(|i| askable.get(i as usize).copied().unwrap_or(false))
                }
            };
            if needed {
                h.have_in_flight = true;
                h.last_have_query = Some(now);
                actions.push(Action::QueryHave { peer: *peer });
            }
        }
    }

    fn plan_chunk_requests(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let n = self.have.len();
        // How many live holders have each chunk: the rarest go first.
        let mut rarity = vec![0u32; n as usize];
        for h in self.holders.values().filter(|h| h.dropped.is_none()) {
            if let Some(b) = &h.have {
                for i in b.ones() {
                    rarity[i as usize] += 1;
                }
            }
        }
        let mut exhausted: Vec<PeerId> = Vec::new();
        while self.in_flight < self.cfg.total {
            // The usable holder with the fewest requests in flight (random among equals).
            let per_peer = self.cfg.per_peer;
            let candidates: Vec<(PeerId, usize)> = self
                .holders
                .iter()
                .filter(|(p, h)| {
                    h.usable(now)
                        && h.have.is_some()
                        && h.chunks_in_flight < per_peer
                        && !exhausted.contains(p)
                })
                .map(|(p, h)| (*p, h.chunks_in_flight))
                .collect();
            let Some(least) = candidates.iter().map(|(_, n)| *n).min() else {
                break;
            };
            let ties: Vec<PeerId> = candidates
                .iter()
                .filter(|(_, n)| *n == least)
                .map(|(p, _)| *p)
                .collect();
            let peer = ties[self.random(ties.len())];
            match self.pick_chunk(&peer, &rarity, now) {
                Some(index) => {
                    self.requested.entry(index).or_default().push((peer, now));
                    self.in_flight += 1;
                    if let Some(h) = self.holders.get_mut(&peer) {
                        h.chunks_in_flight += 1;
                    }
                    actions.push(Action::RequestChunk { peer, index });
                }
                None => exhausted.push(peer),
            }
        }
    }

    /// The chunk to ask `peer` for: the rarest missing, unrequested chunk it has; in the endgame
    /// (every missing chunk already requested) the least-requested one it has that is not
    /// already requested from it.
    fn pick_chunk(&mut self, peer: &PeerId, rarity: &[u32], now: Instant) -> Option<u32> {
        let holder = self.holders.get(peer)?;
        let theirs = holder.have.as_ref()?;
        let deferred = |i: u32| holder.deferred.get(&i).is_some_and(|t| *t > now);
        let missing: Vec<u32> = theirs
            .ones()
            .filter(|&i| !self.have.get(i) && !deferred(i))
            .collect();
        let fresh: Vec<u32> = missing
            .iter()
            .copied()
            .filter(|i| !self.requested.contains_key(i))
            .collect();
        // Requests outstanding since before `stale` may be stuck on their holder.
        let stale = now.checked_sub(self.patience(self.cfg.stale_after, STALE_LATENCIES));
        let is_stale = |t: &Instant| stale.is_some_and(|s| *t <= s);
        let (pool, key): (Vec<u32>, Box<dyn Fn(u32) -> u32>) = if !fresh.is_empty() {
            (fresh, Box::new(|i| rarity[i as usize]))
        } else if !self.unrequested_missing_exists() {
            let slow = now.checked_sub(self.patience(self.cfg.endgame_after, ENDGAME_LATENCIES));
            let dup: Vec<u32> = missing
                .into_iter()
                .filter(|i| {
                    self.requested.get(i).is_some_and(|ps| {
                        let live = ps.iter().filter(|(_, t)| !is_stale(t)).count();
                        live < self.cfg.max_duplicates
                            && !ps.iter().any(|(p, _)| p == peer)
                            && ps.iter().all(|(_, t)| slow.is_some_and(|s| *t <= s))
                    })
                })
                .collect();
            let counts: HashMap<u32, u32> = self
                .requested
                .iter()
                .map(|(i, ps)| (*i, ps.len() as u32))
                .collect();
            (dup, Box::new(move |i| counts.get(&i).copied().unwrap_or(0)))
        } else {
            // Not the endgame: other holders have chunks nobody asked for yet. Only requests
            // that have hung for `stale_after` are asked of this holder too, so one stuck
            // holder cannot hold chunks back until the request timeout.
            let dup: Vec<u32> = missing
                .into_iter()
                .filter(|i| {
                    self.requested.get(i).is_some_and(|ps| {
                        !ps.iter().any(|(p, _)| p == peer) && ps.iter().all(|(_, t)| is_stale(t))
                    })
                })
                .collect();
            if dup.is_empty() {
                return None;
            }
            (dup, Box::new(|_| 0))
        };
        let best = pool.iter().map(|&i| key(i)).min()?;
        let ties: Vec<u32> = pool.into_iter().filter(|&i| key(i) == best).collect();
        Some(ties[self.random(ties.len())])
    }

    /// How long to wait on a request before acting on it: `floor`, or `latencies` typical
    /// chunk latencies of this fetch if that is longer.
    fn patience(&self, floor: Duration, latencies: u32) -> Duration {
        self.latency.map_or(floor, |l| floor.max(l * latencies))
    }

    /// The typical time from a chunk request to its arrival in this fetch, once known.
    pub fn latency(&self) -> Option<Duration> {
        self.latency
    }

    fn unrequested_missing_exists(&self) -> bool {
        (0..self.have.len()).any(|i| !self.have.get(i) && !self.requested.contains_key(&i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SchedulerConfig {
        SchedulerConfig {
            per_peer: 2,
            total: 8,
            max_failures: 2,
            backoff: Duration::from_millis(100),
            have_refresh: Duration::from_millis(50),
            max_duplicates: 2,
            endgame_after: Duration::from_millis(100),
            stale_after: Duration::from_secs(1),
        }
    }

    fn chunks(actions: &[Action]) -> Vec<(PeerId, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::RequestChunk { peer, index } => Some((*peer, *index)),
                Action::QueryHave { .. } => None,
            })
            .collect()
    }

    fn bits(len: u32, ones: &[u32]) -> Bitfield {
        let mut b = Bitfield::empty(len);
        for &i in ones {
            b.set(i);
        }
        b
    }

    #[test]
    fn unknown_holder_is_asked_what_it_has_first() {
        let now = Instant::now();
        let mut s = Scheduler::new(Bitfield::empty(4), cfg(), 1);
        let p = PeerId::random();
        s.add_holder(p);
        assert_eq!(s.next_actions(now), vec![Action::QueryHave { peer: p }]);
        // Nothing more until it answers.
        assert!(s.next_actions(now).is_empty());
        s.on_have(p, Bitfield::full(4));
        let reqs = chunks(&s.next_actions(now));
        assert_eq!(reqs.len(), 2, "per-peer cap");
        assert_ne!(reqs[0].1, reqs[1].1);
    }

    #[test]
    fn a_stuck_holder_does_not_hold_up_the_rest() {
        // The swarm's late fetcher: the origin's answers hang. Another holder was last seen
        // with one of the chunks asked of the origin and nothing else we lack. It must be
        // asked again (it may have more by now), and once the origin's requests are stale
        // the chunk is asked of it too, endgame or not.
        let t0 = Instant::now();
        let mut s = Scheduler::new(bits(8, &[0, 1, 2, 3]), cfg(), 3);
        let (origin, other) = (PeerId::random(), PeerId::random());
        s.add_complete_holder(origin);
        s.add_holder(other);
        let first = s.next_actions(t0);
        let stuck = chunks(&first);
        assert_eq!(stuck.len(), 2);
        assert!(stuck.iter().all(|(p, _)| *p == origin));
        let (_, asked) = stuck[0];
        s.on_have(other, bits(8, &[0, 1, asked]));
        assert!(
            chunks(&s.next_actions(t0)).is_empty(),
            "nothing fresh to ask for"
        );

        let later = t0 + Duration::from_millis(200);
        let again = s.next_actions(later);
        assert!(
            again.contains(&Action::QueryHave { peer: other }),
            "{again:?}: {}",
            s.waiting_summary(later)
        );
        // It has not answered yet; once the origin's requests are stale, it gets `asked`.
        s.on_have(other, bits(8, &[0, 1, asked]));
        let stale = t0 + cfg().stale_after + Duration::from_millis(1);
        let dup = chunks(&s.next_actions(stale));
        assert!(
            dup.contains(&(other, asked)),
            "{dup:?}: {}",
            s.waiting_summary(stale)
        );
    }

    #[test]
    fn single_holder_fetch_completes() {
        let now = Instant::now();
        let mut s = Scheduler::new(Bitfield::empty(5), cfg(), 7);
        let p = PeerId::random();
        s.add_complete_holder(p);
        let mut got = Vec::new();
        for _ in 0..10 {
            for (peer, i) in chunks(&s.next_actions(now)) {
                assert!(s.on_chunk_ok(peer, i, Bitfield::full(5), now));
                got.push(i);
            }
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert!(s.is_complete());
        assert_eq!(s.served()[&p], 5);
        assert!(s.next_actions(now).is_empty());
    }

    #[test]
    fn rarest_chunks_go_to_the_only_holder_that_has_them() {
        let now = Instant::now();
        let mut s = Scheduler::new(Bitfield::empty(4), cfg(), 3);
        let origin = PeerId::random();
        let peer = PeerId::random();
        s.add_complete_holder(origin);
        s.add_holder(peer);
        s.on_have(peer, bits(4, &[0, 1]));
        let reqs = chunks(&s.next_actions(now));
        for (p, i) in &reqs {
            if *p == origin {
                assert!(*i >= 2, "origin asked for common chunk {i}");
            } else {
                assert!(*i < 2);
            }
        }
        assert_eq!(reqs.len(), 4);
    }

    #[test]
    fn bad_holder_is_dropped_and_chunk_refetched_elsewhere() {
        let now = Instant::now();
        let mut s = Scheduler::new(Bitfield::empty(2), cfg(), 5);
        let bad = PeerId::random();
        let good = PeerId::random();
        s.add_complete_holder(bad);
        s.add_complete_holder(good);
        let reqs = chunks(&s.next_actions(now));
        let (_, idx) = *reqs.iter().find(|(p, _)| *p == bad).unwrap();
        s.on_chunk_bad(bad, idx);
        assert_eq!(s.dropped(), vec![(bad, DropReason::BadData)]);
        for (p, i) in reqs.iter().filter(|(p, _)| *p == good) {
            s.on_chunk_ok(*p, *i, Bitfield::full(2), now);
        }
        // The bad peer's other requests may still land; drain them.
        for (p, i) in reqs.iter().filter(|(p, i)| *p == bad && *i != idx) {
            s.on_chunk_failed(*p, *i, Failure::Transport, now);
        }
        for _ in 0..4 {
            for (p, i) in chunks(&s.next_actions(now)) {
                assert_eq!(p, good);
                s.on_chunk_ok(p, i, Bitfield::full(2), now);
            }
        }
        assert!(s.is_complete());
    }

    #[test]
    fn busy_holder_is_backed_off() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(Bitfield::empty(3), cfg(), 9);
        let p = PeerId::random();
        s.add_complete_holder(p);
        let reqs = chunks(&s.next_actions(t0));
        for (peer, i) in reqs {
            s.on_chunk_failed(peer, i, Failure::Busy, t0);
        }
        assert!(s.next_actions(t0 + Duration::from_millis(50)).is_empty());
        assert_eq!(
            chunks(&s.next_actions(t0 + Duration::from_millis(150))).len(),
            2
        );
        assert!(s.dropped().is_empty());
    }

    #[test]
    fn not_now_defers_only_that_chunk_on_that_holder() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.per_peer = 1;
        let mut s = Scheduler::new(Bitfield::empty(2), c, 29);
        let origin = PeerId::random();
        s.add_complete_holder(origin);
        let (_, first) = chunks(&s.next_actions(t0))[0];
        s.on_chunk_failed(origin, first, Failure::NotNow, t0);
        // The holder stays usable, for the other chunk.
        assert_eq!(chunks(&s.next_actions(t0)), vec![(origin, 1 - first)]);
        assert!(s.dropped().is_empty());
        s.on_chunk_ok(origin, 1 - first, Bitfield::full(2), t0);
        assert!(chunks(&s.next_actions(t0 + Duration::from_millis(10))).is_empty());
        assert_eq!(
            chunks(&s.next_actions(t0 + Duration::from_millis(150))),
            vec![(origin, first)]
        );
    }

    #[test]
    fn repeated_transport_failures_drop_the_holder() {
        let mut now = Instant::now();
        let mut s = Scheduler::new(Bitfield::empty(3), cfg(), 11);
        let p = PeerId::random();
        s.add_complete_holder(p);
        for _ in 0..3 {
            for (peer, i) in chunks(&s.next_actions(now)) {
                s.on_chunk_failed(peer, i, Failure::Transport, now);
            }
            now += Duration::from_secs(1);
        }
        assert_eq!(s.dropped(), vec![(p, DropReason::Failures)]);
        assert_eq!(s.live_holders(), 0);
    }

    #[test]
    fn endgame_duplicates_the_last_chunks_on_free_holders() {
        let now = Instant::now();
        let mut c = cfg();
        c.per_peer = 1;
        let mut s = Scheduler::new(bits(3, &[0, 1]), c, 13);
        let slow = PeerId::random();
        let fast = PeerId::random();
        s.add_complete_holder(slow);
        let first = chunks(&s.next_actions(now));
        assert_eq!(first, vec![(slow, 2)]);
        s.add_complete_holder(fast);
        assert!(
            chunks(&s.next_actions(now)).is_empty(),
            "no duplicate while the first request is young"
        );
        let later = now + Duration::from_millis(150);
        assert_eq!(chunks(&s.next_actions(later)), vec![(fast, 2)]);
        assert!(s.on_chunk_ok(fast, 2, Bitfield::full(3), later));
        assert!(
            !s.on_chunk_ok(slow, 2, Bitfield::full(3), later),
            "duplicate is not new"
        );
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn the_endgame_waits_as_long_as_this_fetch_chunks_usually_take() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.per_peer = 1;
        let mut s = Scheduler::new(Bitfield::empty(3), c, 17);
        let (a, b) = (PeerId::random(), PeerId::random());
        s.add_complete_holder(a);
        // Two chunks took 1 s each.
        let mut t = t0;
        for _ in 0..2 {
            let (p, i) = chunks(&s.next_actions(t))[0];
            t += Duration::from_secs(1);
            assert!(s.on_chunk_ok(p, i, Bitfield::full(3), t));
        }
        assert_eq!(s.latency(), Some(Duration::from_secs(1)));
        let last = chunks(&s.next_actions(t));
        assert_eq!(last.len(), 1);
        s.add_complete_holder(b);
        // endgame_after is 100 ms, but here 1.5 s is an ordinary wait, not a slow holder.
        assert!(chunks(&s.next_actions(t + Duration::from_millis(1500))).is_empty());
        assert_eq!(
            chunks(&s.next_actions(t + Duration::from_millis(2100))),
            vec![(b, last[0].1)],
            "two typical latencies: duplicated"
        );
    }

    #[test]
    fn stalled_requests_stop_counting_against_the_duplicate_cap() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.per_peer = 1;
        let mut s = Scheduler::new(bits(2, &[0]), c, 31);
        let stuck = [PeerId::random(), PeerId::random()];
        for p in stuck {
            s.add_complete_holder(p);
        }
        assert_eq!(chunks(&s.next_actions(t0)).len(), 1);
        let dup = chunks(&s.next_actions(t0 + Duration::from_millis(150)));
        assert_eq!(dup.len(), 1, "one duplicate in the endgame");
        // Both requests hang; a third holder comes along.
        let third = PeerId::random();
        s.add_complete_holder(third);
        assert!(
            chunks(&s.next_actions(t0 + Duration::from_millis(500))).is_empty(),
            "two live requests are the cap"
        );
        assert_eq!(
            chunks(&s.next_actions(t0 + Duration::from_millis(1300))),
            vec![(third, 1)],
            "stalled requests no longer count"
        );
    }

    #[test]
    fn totals_are_capped() {
        let now = Instant::now();
        let mut s = Scheduler::new(Bitfield::empty(100), cfg(), 17);
        for _ in 0..10 {
            s.add_complete_holder(PeerId::random());
        }
        let reqs = chunks(&s.next_actions(now));
        assert_eq!(reqs.len(), 8);
        let mut idx: Vec<u32> = reqs.iter().map(|r| r.1).collect();
        idx.sort_unstable();
        idx.dedup();
        assert_eq!(idx.len(), 8, "no duplicates outside the endgame");
    }

    #[test]
    fn incomplete_holder_with_nothing_new_is_polled_again() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(bits(2, &[0]), cfg(), 19);
        let p = PeerId::random();
        s.add_holder(p);
        assert_eq!(s.next_actions(t0), vec![Action::QueryHave { peer: p }]);
        s.on_have(p, bits(2, &[0]));
        assert!(s.next_actions(t0 + Duration::from_millis(10)).is_empty());
        assert_eq!(
            s.next_actions(t0 + Duration::from_millis(60)),
            vec![Action::QueryHave { peer: p }]
        );
        s.on_have(p, bits(2, &[0, 1]));
        assert_eq!(
            chunks(&s.next_actions(t0 + Duration::from_millis(61))),
            vec![(p, 1)]
        );
    }

    #[test]
    fn invalid_bitfield_drops_the_holder() {
        let mut s = Scheduler::new(Bitfield::empty(9), cfg(), 23);
        let p = PeerId::random();
        s.add_holder(p);
        s.on_have(p, Bitfield::full(3));
        assert_eq!(s.dropped(), vec![(p, DropReason::BadData)]);
    }

    #[test]
    fn seeds_spread_first_requests() {
        // Fetchers that start together with one origin should not all ask for the same chunks.
        let now = Instant::now();
        let origin = PeerId::random();
        let mut firsts = std::collections::HashSet::new();
        for seed in 0..16u64 {
            let mut s = Scheduler::new(Bitfield::empty(64), cfg(), seed * 7919 + 1);
            s.add_complete_holder(origin);
            for (_, i) in chunks(&s.next_actions(now)) {
                firsts.insert(i);
            }
        }
        assert!(firsts.len() > 16, "only {} distinct chunks", firsts.len());
    }
}
