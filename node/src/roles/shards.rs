//! Cluster training, the pure part: which rented machine trains on which shard of the
//! requester's training set. The coordinator computes a [`ShardPlan`] for every round head it
//! publishes; the machines train on the union of the shards the plan gives them.
//!
//! The training set is cut into one contiguous shard per rental of the cluster
//! ([`crate::learn::Dataset::shard`]), and shard `i` belongs to the machine of rental `i`
//! (its "home") while that machine is live. The shards of machines that are gone (their rental
//! ended, or they dropped off the mesh) go to the live machines, each to the least loaded
//! (ties to the lowest PeerId), so a departure moves only the departed machine's shards and
//! every shard is still trained on.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::mesh::message::MessageError;

use super::cluster::PeerBytes;

/// Most shards a plan names (and rentals a cluster job is cut for).
pub const MAX_SHARDS: u32 = 1_024;

/// One machine's shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardAssignment {
    /// The machine (PeerId bytes).
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    /// Its shards, ascending.
    pub shards: Vec<u32>,
}

/// Who trains on what in a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    /// Shards the training set is cut into.
    pub shards: u32,
    /// The live machines' shards (machines with none are left out).
    pub assignments: Vec<ShardAssignment>,
}

impl ShardPlan {
    /// Plans `homes.len()` shards (shard `i` at home on `homes[i]`) over the `live` machines.
    pub fn new(homes: &[PeerBytes], live: &BTreeSet<PeerBytes>) -> Self {
        let shards = homes.len().min(MAX_SHARDS as usize);
        let mut owned: Vec<(PeerBytes, Vec<u32>)> =
            live.iter().map(|p| (p.clone(), Vec::new())).collect();
        let mut orphans = Vec::new();
        for (i, home) in homes.iter().take(shards).enumerate() {
            match owned.iter_mut().find(|(p, _)| p == home) {
                Some((_, list)) => list.push(i as u32),
                None => orphans.push(i as u32),
            }
        }
        for shard in orphans {
            // `live` is sorted, so the first of the least loaded is the lowest PeerId.
            if let Some((_, list)) = owned.iter_mut().min_by_key(|(_, l)| l.len()) {
                list.push(shard);
            }
        }
        Self {
            shards: shards as u32,
            assignments: owned
                .into_iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(peer, mut shards)| {
                    shards.sort_unstable();
                    ShardAssignment { peer, shards }
                })
                .collect(),
        }
    }

    /// The shards of `peer` (empty: none this round).
    pub fn shards_of(&self, peer: &[u8]) -> Vec<u32> {
        self.assignments
            .iter()
            .find(|a| a.peer == peer)
            .map(|a| a.shards.clone())
            .unwrap_or_default()
    }

    /// The most updates a round planned this way can still bring: one per machine the plan
    /// gives work, plus each update already offered (and not rejected) by a machine the plan
    /// no longer names, or by a sender this node cannot place (`None`). A machine that left
    /// after offering is thus not counted twice, nor its offer used to close the round before
    /// the machines still training have sent theirs.
    pub fn expected_updates<'a>(
        &self,
        offered_by: impl IntoIterator<Item = Option<&'a [u8]>>,
    ) -> usize {
        let elsewhere = offered_by
            .into_iter()
            .filter(|p| p.is_none_or(|p| !self.assignments.iter().any(|a| a.peer == p)))
            .count();
        self.assignments.len() + elsewhere
    }

    /// Field bounds: every shard below `shards`, named once.
    pub fn validate(&self) -> Result<(), MessageError> {
        let bad = || Err(MessageError::Invalid("malformed shard plan".into()));
        if self.shards > MAX_SHARDS || self.assignments.len() > MAX_SHARDS as usize {
            return bad();
        }
        let mut seen = BTreeSet::new();
        for a in &self.assignments {
            if a.peer.len() > 64 {
                return bad();
            }
            for s in &a.shards {
                if *s >= self.shards || !seen.insert(*s) {
                    return bad();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> PeerBytes {
        vec![n]
    }

    fn live(ps: &[u8]) -> BTreeSet<PeerBytes> {
        ps.iter().map(|n| p(*n)).collect()
    }

    #[test]
    fn every_machine_at_home() {
        let plan = ShardPlan::new(&[p(2), p(1)], &live(&[1, 2]));
        assert_eq!(plan.shards, 2);
        assert_eq!(plan.shards_of(&p(2)), vec![0]);
        assert_eq!(plan.shards_of(&p(1)), vec![1]);
        plan.validate().unwrap();
    }

    #[test]
    fn departed_machines_shards_go_to_the_least_loaded_and_others_stay() {
        let homes = [p(1), p(2), p(3), p(4)];
        let plan = ShardPlan::new(&homes, &live(&[1, 3, 4]));
        assert_eq!(plan.shards_of(&p(1)), vec![0, 1]);
        assert_eq!(plan.shards_of(&p(3)), vec![2]);
        assert_eq!(plan.shards_of(&p(4)), vec![3]);
        assert!(plan.shards_of(&p(2)).is_empty());
        // Two gone: each survivor takes one more.
        let plan = ShardPlan::new(&homes, &live(&[3, 4]));
        assert_eq!(plan.shards_of(&p(3)), vec![0, 2]);
        assert_eq!(plan.shards_of(&p(4)), vec![1, 3]);
        // Everything is still trained on, once.
        let all: BTreeSet<u32> = plan
            .assignments
            .iter()
            .flat_map(|a| a.shards.clone())
            .collect();
        assert_eq!(all, (0..4).collect());
        plan.validate().unwrap();
    }

    #[test]
    fn nobody_live_means_nothing_assigned_and_a_stranger_gets_none() {
        let plan = ShardPlan::new(&[p(1), p(2)], &BTreeSet::new());
        assert!(plan.assignments.is_empty());
        // A live peer that is no rental's machine still shares the work when it is live (the
        // driver passes only the cluster's machines).
        let plan = ShardPlan::new(&[p(1)], &live(&[1]));
        assert!(plan.shards_of(&p(9)).is_empty());
    }

    #[test]
    fn expected_updates_count_planned_machines_and_offers_from_elsewhere() {
        let plan = ShardPlan::new(&[p(1), p(2), p(3)], &live(&[1, 3]));
        assert_eq!(plan.expected_updates([]), 2);
        // An offer of a planned machine is one of its two; one of a departed machine (2) or of
        // an unknown sender adds to them.
        let (one, two) = (p(1), p(2));
        assert_eq!(plan.expected_updates([Some(one.as_slice())]), 2);
        assert_eq!(
            plan.expected_updates([Some(one.as_slice()), Some(two.as_slice()), None]),
            4
        );
    }

    #[test]
    fn malformed_plans_rejected() {
        let dup = ShardPlan {
            shards: 2,
            assignments: vec![
                ShardAssignment {
                    peer: p(1),
                    shards: vec![0],
                },
                ShardAssignment {
                    peer: p(2),
                    shards: vec![0],
                },
            ],
        };
        assert!(dup.validate().is_err());
        let out_of_range = ShardPlan {
            shards: 1,
            assignments: vec![ShardAssignment {
                peer: p(1),
                shards: vec![1],
            }],
        };
        assert!(out_of_range.validate().is_err());
        let too_many = ShardPlan {
            shards: MAX_SHARDS + 1,
            assignments: vec![],
        };
        assert!(too_many.validate().is_err());
    }
}
