//! When a starting node runs its Kademlia bootstrap rounds.
//!
//! A fresh node bootstraps at 1, 2, 4, ... s after start so that it finds the network while
//! the network is still forming (peers that joined after our first round). But a round is not
//! free for anyone: it is a handful of closest-peer queries, and every peer answering one walks
//! its whole routing table (`libp2p-kad` copies each of its 256 buckets to do so). In the
//! 17-node swarm benchmark one round cost 1.2 CPU-seconds across the nodes, and the round at
//! 8 s fell in the middle of the transfers. So a round runs only while the routing table is
//! still changing; the first round that would find the table as it was after the previous one
//! ends the warm-up. Later arrivals are still learnt: they query us themselves, libp2p-kad
//! bootstraps on its own while the table holds fewer than 20 peers, and the periodic
//! bootstrap (`MeshConfig::bootstrap_interval`) keeps running.

use std::time::{Duration, Instant};

/// Seconds after start of the warm-up rounds.
pub(crate) const ROUNDS_SECS: [u64; 6] = [1, 2, 4, 8, 16, 32];

/// The warm-up schedule of one node.
#[derive(Debug)]
pub(crate) struct Warmup {
    started: Instant,
    round: usize,
    /// Routing-table size when the previous round was due (`None` before the first).
    known_before: Option<usize>,
}

impl Warmup {
    pub(crate) fn new(started: Instant) -> Self {
        Self {
            started,
            round: 0,
            known_before: None,
        }
    }

    /// When the next round is due; `None` once the warm-up is over.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        ROUNDS_SECS
            .get(self.round)
            .map(|s| self.started + Duration::from_secs(*s))
    }

    /// A round is due and the routing table holds `known` peers: whether to bootstrap now.
    pub(crate) fn on_due(&mut self, known: usize) -> bool {
        let changed = match self.known_before {
            None => true,
            Some(before) => known != before,
        };
        self.known_before = Some(known);
        // An empty table is a node still waiting for its first peer: keep trying (the
        // bootstrap itself fails at once with no peers, and costs nobody anything).
        if changed || known == 0 {
            self.round += 1;
            true
        } else {
            self.round = ROUNDS_SECS.len();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_run_while_the_table_grows_and_stop_at_the_first_that_would_find_it_unchanged() {
        let t0 = Instant::now();
        let mut w = Warmup::new(t0);
        assert_eq!(w.next_at(), Some(t0 + Duration::from_secs(1)));
        assert!(w.on_due(1), "the first round always runs");
        assert_eq!(w.next_at(), Some(t0 + Duration::from_secs(2)));
        assert!(w.on_due(9), "the first round found 8 peers");
        assert_eq!(w.next_at(), Some(t0 + Duration::from_secs(4)));
        assert!(w.on_due(16), "still growing");
        assert!(!w.on_due(16), "nothing new since the last round");
        assert_eq!(w.next_at(), None, "warm-up over");
    }

    #[test]
    fn a_node_without_peers_keeps_its_rounds() {
        let t0 = Instant::now();
        let mut w = Warmup::new(t0);
        for secs in ROUNDS_SECS {
            assert_eq!(w.next_at(), Some(t0 + Duration::from_secs(secs)));
            assert!(w.on_due(0));
        }
        assert_eq!(w.next_at(), None, "warm-up over");
    }

    #[test]
    fn a_table_that_shrank_counts_as_changed() {
        let mut w = Warmup::new(Instant::now());
        assert!(w.on_due(5));
        assert!(w.on_due(3), "peers left: look again");
        assert!(!w.on_due(3));
    }

    #[test]
    fn all_rounds_run_on_a_network_still_forming() {
        let mut w = Warmup::new(Instant::now());
        for (i, _) in ROUNDS_SECS.iter().enumerate() {
            assert!(w.on_due(i + 1));
        }
        assert_eq!(w.next_at(), None, "warm-up over");
    }
}
