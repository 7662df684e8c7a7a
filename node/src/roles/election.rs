//! Coordinator election by rendezvous hashing, and the decision each eligible peer takes.
//!
//! Every coordinator-eligible peer heartbeats on `quackmesh/1/coordinators`. For a job, peers are
//! ranked by `BLAKE3(job_id || peer_id)`; the live peer ranked first leads. No vote is needed:
//! every node that heard the same heartbeats computes the same ranking. Safety does not rest on
//! agreement, though: the chain's term lease fences coordinators, so a peer that wrongly thinks
//! it leads can only claim once the previous lease has run out.
//!
//! A live term holder is never pre-empted (a new, better-ranked peer joining does not steal a
//! running job); only when its heartbeats stop does the next in rank take over.
//!
//! Pure logic: time is an argument, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default time after the last heartbeat at which a coordinator counts as gone.
pub const DEFAULT_LIVENESS_MS: u64 = 10_000;

/// A peer's identity as bytes (a libp2p PeerId's byte form); kept opaque here.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerKey(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail = &self.0[self.0.len().saturating_sub(4)..];
        write!(f, "PeerKey(..{})", hex::encode(tail))
    }
}

/// The rendezvous score of `peer` for `job_id`; lower ranks first.
pub fn score(job_id: u64, peer: &PeerKey) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"quackmesh/election/1");
    h.update(&job_id.to_be_bytes());
    h.update(&peer.0);
    *h.finalize().as_bytes()
}

/// What the chain says about a job's coordinator term, as seen by the deciding peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermView {
    /// Current term number (0 = never claimed).
    pub term: u64,
    /// The peer holding the current term, if known.
    pub holder: Option<PeerKey>,
    /// Whether the current term's lease has run out (always true when `term == 0`).
    pub lease_expired: bool,
}

/// What an eligible peer should do about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// I hold the live term: run the job.
    Lead,
    /// I am first in rank and the lease is free: claim the next term now.
    Claim,
    /// I am first in rank but the previous holder's lease has not run out yet.
    WaitForLease,
    /// Someone else leads (or should lead); follow it.
    Follow(PeerKey),
}

/// Liveness of coordinator-eligible peers, from their heartbeats.
#[derive(Debug, Clone)]
pub struct Election {
    me: PeerKey,
    liveness_ms: u64,
    last_seen: BTreeMap<PeerKey, u64>,
}

impl Election {
    /// An election view for the local peer `me` (which is always live to itself).
    pub fn new(me: PeerKey, liveness_ms: u64) -> Self {
        Self {
            me,
            liveness_ms,
            last_seen: BTreeMap::new(),
        }
    }

    /// The local peer.
    pub fn me(&self) -> &PeerKey {
        &self.me
    }

    /// Records a heartbeat from `peer` at `now_ms`.
    pub fn observe(&mut self, peer: PeerKey, now_ms: u64) {
        let seen = self.last_seen.entry(peer).or_insert(now_ms);
        *seen = (*seen).max(now_ms);
    }

    /// Drops peers not heard from for ten liveness periods (bounds memory).
    pub fn prune(&mut self, now_ms: u64) {
        let horizon = self.liveness_ms.saturating_mul(10);
        self.last_seen
            .retain(|_, seen| now_ms.saturating_sub(*seen) <= horizon);
    }

    /// Whether `peer` heartbeated within the liveness window.
    pub fn is_live(&self, peer: &PeerKey, now_ms: u64) -> bool {
        peer == &self.me
            || self
                .last_seen
                .get(peer)
                .is_some_and(|seen| now_ms.saturating_sub(*seen) < self.liveness_ms)
    }

    /// Live peers (including me), best first for `job_id`.
    pub fn ranking(&self, job_id: u64, now_ms: u64) -> Vec<PeerKey> {
        let mut live: Vec<PeerKey> = self
            .last_seen
            .keys()
            .filter(|p| self.is_live(p, now_ms))
            .cloned()
            .chain(std::iter::once(self.me.clone()))
            .collect();
        live.sort();
        live.dedup();
        live.sort_by_cached_key(|p| score(job_id, p));
        live
    }

    /// What the local peer should do about `job_id` given the chain's term.
    pub fn decide(&self, job_id: u64, term: &TermView, now_ms: u64) -> Decision {
        let no_term = term.term == 0;
        match &term.holder {
            Some(h) if h == &self.me && !term.lease_expired && !no_term => return Decision::Lead,
            Some(h) if h != &self.me && !no_term && self.is_live(h, now_ms) => {
                return Decision::Follow(h.clone());
            }
            _ => {}
        }
        let ranking = self.ranking(job_id, now_ms);
        match ranking.first() {
            Some(first) if first == &self.me => {
                if no_term || term.lease_expired {
                    Decision::Claim
                } else {
                    Decision::WaitForLease
                }
            }
            Some(first) => Decision::Follow(first.clone()),
            None => Decision::Claim, // unreachable: `me` is always ranked
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerKey {
        PeerKey(vec![n; 38])
    }

    fn free() -> TermView {
        TermView {
            term: 0,
            holder: None,
            lease_expired: true,
        }
    }

    /// Peers 1..=3, ordered by their rank for `job`.
    fn ranked(job: u64) -> Vec<PeerKey> {
        let mut e = Election::new(peer(1), DEFAULT_LIVENESS_MS);
        e.observe(peer(2), 0);
        e.observe(peer(3), 0);
        e.ranking(job, 0)
    }

    #[test]
    fn ranking_is_the_same_on_every_peer() {
        for job in 0..50 {
            let views: Vec<Vec<PeerKey>> = (1..=3)
                .map(|me| {
                    let mut e = Election::new(peer(me), DEFAULT_LIVENESS_MS);
                    for other in 1..=3 {
                        if other != me {
                            e.observe(peer(other), 100);
                        }
                    }
                    e.ranking(job, 200)
                })
                .collect();
            assert!(
                views.windows(2).all(|w| w[0] == w[1]),
                "job {job}: {views:?}"
            );
            assert_eq!(views[0].len(), 3);
        }
    }

    #[test]
    fn ranking_spreads_jobs_over_peers() {
        let firsts: std::collections::HashSet<PeerKey> =
            (0..60).map(|job| ranked(job)[0].clone()).collect();
        assert_eq!(firsts.len(), 3, "every peer should lead some of 60 jobs");
    }

    #[test]
    fn first_in_rank_claims_a_free_job_and_others_follow() {
        let job = 7;
        let order = ranked(job);
        for me in &order {
            let mut e = Election::new(me.clone(), DEFAULT_LIVENESS_MS);
            for p in &order {
                if p != me {
                    e.observe(p.clone(), 1_000);
                }
            }
            let d = e.decide(job, &free(), 2_000);
            if me == &order[0] {
                assert_eq!(d, Decision::Claim);
            } else {
                assert_eq!(d, Decision::Follow(order[0].clone()));
            }
        }
    }

    #[test]
    fn holder_leads_while_its_lease_runs() {
        let e = Election::new(peer(1), DEFAULT_LIVENESS_MS);
        let t = TermView {
            term: 3,
            holder: Some(peer(1)),
            lease_expired: false,
        };
        assert_eq!(e.decide(9, &t, 0), Decision::Lead);
    }

    #[test]
    fn live_holder_is_not_preempted_by_better_rank() {
        let job = 11;
        let order = ranked(job);
        let (best, holder) = (order[0].clone(), order[2].clone());
        let mut e = Election::new(best, DEFAULT_LIVENESS_MS);
        e.observe(holder.clone(), 5_000);
        let t = TermView {
            term: 1,
            holder: Some(holder.clone()),
            lease_expired: true,
        };
        assert_eq!(e.decide(job, &t, 6_000), Decision::Follow(holder));
    }

    #[test]
    fn next_in_rank_takes_over_when_holder_goes_silent() {
        let job = 5;
        let order = ranked(job);
        let (dead, next) = (order[0].clone(), order[1].clone());
        let mut e = Election::new(next.clone(), DEFAULT_LIVENESS_MS);
        e.observe(dead.clone(), 1_000);
        e.observe(order[2].clone(), 1_000);
        let mut t = TermView {
            term: 1,
            holder: Some(dead.clone()),
            lease_expired: false,
        };
        // Still heard recently: follow.
        assert_eq!(e.decide(job, &t, 5_000), Decision::Follow(dead.clone()));
        // Silent past the liveness window, but the chain lease still runs: wait, don't claim.
        e.observe(order[2].clone(), 11_500);
        assert_eq!(e.decide(job, &t, 11_500), Decision::WaitForLease);
        // Lease over: claim the next term.
        t.lease_expired = true;
        assert_eq!(e.decide(job, &t, 12_000), Decision::Claim);
        // The third peer agrees that `next` should lead.
        let mut third = Election::new(order[2].clone(), DEFAULT_LIVENESS_MS);
        third.observe(dead, 1_000);
        third.observe(next.clone(), 11_000);
        assert_eq!(third.decide(job, &t, 12_000), Decision::Follow(next));
    }

    #[test]
    fn holder_whose_lease_lapsed_reclaims() {
        let e = Election::new(peer(4), DEFAULT_LIVENESS_MS);
        let t = TermView {
            term: 2,
            holder: Some(peer(4)),
            lease_expired: true,
        };
        assert_eq!(e.decide(1, &t, 0), Decision::Claim);
    }

    #[test]
    fn alone_i_claim_everything() {
        let e = Election::new(peer(9), DEFAULT_LIVENESS_MS);
        for job in 0..10 {
            assert_eq!(e.decide(job, &free(), 0), Decision::Claim);
        }
    }

    #[test]
    fn prune_forgets_long_dead_peers() {
        let mut e = Election::new(peer(1), 1_000);
        e.observe(peer(2), 0);
        e.observe(peer(3), 50_000);
        e.prune(60_000);
        assert!(!e.last_seen.contains_key(&peer(2)));
        assert!(e.last_seen.contains_key(&peer(3)));
    }
}
