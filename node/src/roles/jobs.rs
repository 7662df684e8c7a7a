//! What a node knows about training jobs: a record per job built from the chain (the source of
//! truth: `getJob` when a job is first seen, then its events), kept in the store so the API and
//! a restarted node have it at once. Pure updates from chain events; no I/O here.

use alloy::primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::{
    chain::{ChainEvent, client::Job},
    hash::Hash32,
    roles::wire::EthAddress,
    store::Tree,
};

/// Job records by job id (big-endian u64 keys, so scans are in id order).
pub const JOBS: Tree<JobRecord> = Tree::new("roles.jobs");

/// Lifecycle of a job as the chain reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Rounds still to run.
    Open,
    /// All rounds recorded; contributors may still claim during the claim window.
    Completed,
    /// Finished: the unspent pool went back to the requester.
    Finished,
}

/// A recorded round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundSummary {
    /// The round.
    pub round: u64,
    /// The global model after it (blob id).
    pub model: Hash32,
    /// Its accuracy on the validation set, basis points.
    pub accuracy_bps: u16,
    /// The term that recorded it.
    pub term: u64,
}

/// A reward paid for an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardSummary {
    /// Who was paid.
    pub contributor: EthAddress,
    /// For which round.
    pub round: u64,
    /// The update.
    pub update: Hash32,
    /// Amount in wei of $DUCK, decimal.
    pub amount: String,
}

/// A node's view of one training job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub job_id: u64,
    /// Who pays and gets the refund.
    pub requester: EthAddress,
    /// Initial weights (blob id).
    pub model: Hash32,
    /// Validation set (blob id).
    pub validation: Hash32,
    /// Off-chain spec (blob id of a [`super::job::TrainingJobSpec`]).
    pub spec: Hash32,
    /// Rounds to run.
    pub rounds: u64,
    /// Minimum accuracy of a paid update, basis points.
    pub min_accuracy_bps: u16,
    /// Paid update slots per round.
    pub max_updates_per_round: u32,
    /// Coordinator lease, seconds.
    pub lease_secs: u64,
    /// Claim window after completion, seconds.
    pub claim_window_secs: u64,
    /// 0 = open to everyone, else the cluster whose members train.
    pub cluster_id: u64,
    /// The deposit, wei decimal.
    pub total_pool: String,
    /// Reward per accepted update, wei decimal.
    pub reward_per_update: String,
    /// Current coordinator term (0 = none yet).
    pub term: u64,
    /// The current term's holder.
    pub holder: EthAddress,
    /// Recorded rounds, in order.
    pub rounds_done: Vec<RoundSummary>,
    /// Rewards paid.
    pub rewards: Vec<RewardSummary>,
    /// Lifecycle.
    pub status: JobStatus,
    /// Unix time of completion (0 until completed).
    pub completed_at: u64,
    /// Refund at finish, wei decimal.
    pub refund: Option<String>,
}

/// The store key of a job.
pub fn key(job_id: u64) -> [u8; 8] {
    job_id.to_be_bytes()
}

/// A `uint256` id that must fit in u64 (ids are counters; anything larger is an error upstream).
pub fn small_id(v: U256) -> Option<u64> {
    u64::try_from(v).ok()
}

impl JobRecord {
    /// The record of `job_id` from the chain's `getJob`.
    pub fn from_chain(job_id: u64, job: &Job) -> Self {
        let s = &job.spec;
        let status = if job.finished {
            JobStatus::Finished
        } else if job.completedAt > 0 {
            JobStatus::Completed
        } else {
            JobStatus::Open
        };
        Self {
            job_id,
            requester: job.requester.into_array(),
            model: s.modelHash.into(),
            validation: s.validationHash.into(),
            spec: s.specHash.into(),
            rounds: s.rounds,
            min_accuracy_bps: s.minAccuracyBps,
            max_updates_per_round: s.maxUpdatesPerRound,
            lease_secs: s.leaseSeconds,
            claim_window_secs: s.claimWindow,
            cluster_id: small_id(s.clusterId).unwrap_or(u64::MAX),
            total_pool: s.totalRewardPool.to_string(),
            reward_per_update: s.rewardPerUpdate.to_string(),
            term: job.term,
            holder: job.holder.into_array(),
            rounds_done: Vec::new(),
            rewards: Vec::new(),
            status,
            completed_at: job.completedAt,
            refund: job.finished.then(|| job.refunded.to_string()),
        }
    }

    /// The latest global model: the last recorded round's, or the initial weights.
    pub fn latest_model(&self) -> (u64, Hash32, Option<u16>) {
        match self.rounds_done.last() {
            Some(r) => (r.round, r.model, Some(r.accuracy_bps)),
            None => (0, self.model, None),
        }
    }

    /// Applies one of this job's chain events; returns whether anything changed. Events are
    /// replayed after a restart, so applying one twice changes nothing.
    pub fn apply(&mut self, event: &ChainEvent) -> bool {
        match event {
            ChainEvent::TermClaimed(e) if small_id(e.jobId) == Some(self.job_id) => {
                if e.term > self.term {
                    self.term = e.term;
                    self.holder = e.coordinator.into_array();
                    return true;
                }
                false
            }
            ChainEvent::RoundRecorded(e) if small_id(e.jobId) == Some(self.job_id) => {
                if self.rounds_done.iter().any(|r| r.round == e.round) {
                    return false;
                }
                self.rounds_done.push(RoundSummary {
                    round: e.round,
                    model: e.globalModelHash.into(),
                    accuracy_bps: e.accuracyBps,
                    term: e.term,
                });
                self.rounds_done.sort_by_key(|r| r.round);
                true
            }
            ChainEvent::TrainingJobCompleted(e) if small_id(e.jobId) == Some(self.job_id) => {
                let changed = self.status == JobStatus::Open;
                if changed {
                    self.status = JobStatus::Completed;
                    self.completed_at = e.completedAt;
                }
                changed
            }
            ChainEvent::RewardDistributed(e) if small_id(e.jobId) == Some(self.job_id) => {
                let update: Hash32 = e.updateHash.into();
                if self.rewards.iter().any(|r| r.update == update) {
                    return false;
                }
                self.rewards.push(RewardSummary {
                    contributor: e.contributor.into_array(),
                    round: e.round,
                    update,
                    amount: e.amount.to_string(),
                });
                true
            }
            ChainEvent::TrainingJobFinished(e) if small_id(e.jobId) == Some(self.job_id) => {
                let changed = self.status != JobStatus::Finished;
                self.status = JobStatus::Finished;
                self.refund = Some(e.refund.to_string());
                changed
            }
            _ => false,
        }
    }

    /// The job this event belongs to, for events that concern training jobs.
    pub fn job_of(event: &ChainEvent) -> Option<u64> {
        let id = match event {
            ChainEvent::TrainingJobCreated(e) => e.jobId,
            ChainEvent::TermClaimed(e) => e.jobId,
            ChainEvent::LeaseRenewed(e) => e.jobId,
            ChainEvent::RoundRecorded(e) => e.jobId,
            ChainEvent::TrainingJobCompleted(e) => e.jobId,
            ChainEvent::RewardDistributed(e) => e.jobId,
            ChainEvent::TrainingJobFinished(e) => e.jobId,
            _ => return None,
        };
        small_id(id)
    }

    /// The requester as an address.
    pub fn requester_address(&self) -> Address {
        Address::from(self.requester)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::bindings::TrainingPool;
    use alloy::primitives::B256;

    fn record() -> JobRecord {
        JobRecord {
            job_id: 3,
            requester: [1; 20],
            model: Hash32([2; 32]),
            validation: Hash32([3; 32]),
            spec: Hash32([4; 32]),
            rounds: 2,
            min_accuracy_bps: 7000,
            max_updates_per_round: 2,
            lease_secs: 10,
            claim_window_secs: 5,
            cluster_id: 0,
            total_pool: "400".into(),
            reward_per_update: "100".into(),
            term: 0,
            holder: [0; 20],
            rounds_done: vec![],
            rewards: vec![],
            status: JobStatus::Open,
            completed_at: 0,
            refund: None,
        }
    }

    #[test]
    fn events_build_the_job_history_idempotently() {
        let mut r = record();
        let term = ChainEvent::TermClaimed(TrainingPool::TermClaimed {
            jobId: U256::from(3),
            term: 1,
            coordinator: Address::repeat_byte(9),
        });
        assert!(r.apply(&term));
        assert!(!r.apply(&term));
        assert_eq!((r.term, r.holder), (1, [9; 20]));
        let round = |n: u64| {
            ChainEvent::RoundRecorded(TrainingPool::RoundRecorded {
                jobId: U256::from(3),
                round: n,
                term: 1,
                globalModelHash: B256::repeat_byte(n as u8),
                accuracyBps: 9000 + n as u16,
            })
        };
        assert!(r.apply(&round(2)));
        assert!(r.apply(&round(1)));
        assert!(!r.apply(&round(1)));
        assert_eq!(r.latest_model(), (2, Hash32([2; 32]), Some(9002)));
        // Another job's events change nothing.
        let other = ChainEvent::TermClaimed(TrainingPool::TermClaimed {
            jobId: U256::from(4),
            term: 7,
            coordinator: Address::ZERO,
        });
        assert!(!r.apply(&other));
        let done = ChainEvent::TrainingJobCompleted(TrainingPool::TrainingJobCompleted {
            jobId: U256::from(3),
            completedAt: 77,
        });
        assert!(r.apply(&done));
        assert_eq!((r.status, r.completed_at), (JobStatus::Completed, 77));
        let fin = ChainEvent::TrainingJobFinished(TrainingPool::TrainingJobFinished {
            jobId: U256::from(3),
            refund: U256::from(5),
        });
        assert!(r.apply(&fin));
        assert_eq!(r.status, JobStatus::Finished);
        assert_eq!(r.refund.as_deref(), Some("5"));
        assert_eq!(JobRecord::job_of(&fin), Some(3));
    }
}
