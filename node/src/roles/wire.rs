//! The roles' messages on the mesh: what coordinators, contributors and requesters say to each
//! other. They travel inside the mesh's versioned envelopes ([`crate::mesh::message`]), as
//! gossip (heartbeats, job announcements, round heads) or as RPC (update offers and verdicts).

use serde::{Deserialize, Serialize};

use crate::{hash::Hash32, mesh::message::MessageError, roles::round::Head};

/// An Ethereum address.
pub type EthAddress = [u8; 20];

/// Most jobs a heartbeat lists.
pub const MAX_HEARTBEAT_JOBS: usize = 256;
/// Longest rejection reason sent.
pub const MAX_REASON_CHARS: usize = 1024;

/// A coordinator-eligible peer is alive (topic `quackmesh/1/coordinators`). Signed by the
/// sender's libp2p key (gossipsub); `eth` must be registered on chain with the sender's PeerId.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The coordinator's chain address.
    pub eth: EthAddress,
    /// Jobs whose term it holds.
    pub leading: Vec<u64>,
    /// Sender's clock (unix ms), for logs only: liveness uses the receiver's clock.
    pub sent_ms: u64,
}

/// A renter's node names itself (topic `quackmesh/1/coordinators`, which every node
/// follows): `signature` is the renter's chain key's EIP-191 signature over
/// [`claim_message`](super::cluster::claim_message) of the sending PeerId, so the members of
/// the cluster admit that PeerId as the renter's. Gossiped while the cluster runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenterClaim {
    /// The chain.
    pub chain_id: u64,
    /// The cluster.
    pub cluster_id: u64,
    /// The renter's chain address.
    pub eth: EthAddress,
    /// 65-byte signature.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// Sender's clock (unix ms), not signed: it keeps repeated claims distinct for gossip.
    pub sent_ms: u64,
}

impl RenterClaim {
    /// Field bounds.
    pub fn validate(&self) -> Result<(), MessageError> {
        if self.signature.len() != 65 {
            return Err(MessageError::Invalid("malformed renter claim".into()));
        }
        Ok(())
    }
}

/// A job exists (topic `quackmesh/1/jobs`): a hint so nodes hear before their chain watcher
/// does. Receivers trust only the chain's record of the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAnnouncement {
    /// The job's id in the TrainingPool.
    pub job_id: u64,
    /// The chain the job lives on.
    pub chain_id: u64,
}

/// A job's state from its coordinator (topic `quackmesh/1/job/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundHeadMsg {
    /// The job.
    pub job_id: u64,
    /// The coordinator's chain address (the term holder).
    pub coordinator: EthAddress,
    /// Round, model, accuracy, term, the open round and its deadline.
    pub head: Head,
    /// Cluster training: which rented machine trains on which shard of the job's training set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<super::shards::ShardPlan>,
}

/// A contributor offers its update to the job's coordinator (RPC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateOffer {
    /// The job.
    pub job_id: u64,
    /// The round it was trained for.
    pub round: u64,
    /// The update's blob id (safetensors of the trained weights), fetched by the coordinator.
    pub update: Hash32,
    /// Samples it was trained on (its FedAvg weight).
    pub samples: u64,
    /// The contributor's chain address: the attestation names it, and only it can claim.
    pub contributor: EthAddress,
}

/// The coordinator's answer to an [`UpdateOffer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateVerdict {
    /// Accepted: an EIP-712 attestation the contributor submits to `TrainingPool.submitUpdate`.
    Attested {
        /// The round.
        round: u64,
        /// The update.
        update: Hash32,
        /// Measured accuracy on the job's validation set, basis points.
        accuracy_bps: u16,
        /// The coordinator's term.
        term: u64,
        /// 65-byte signature over the attestation.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Rejected, with the reason.
    Rejected {
        /// Why.
        reason: String,
    },
}

impl Heartbeat {
    /// Field bounds.
    pub fn validate(&self) -> Result<(), MessageError> {
        if self.leading.len() > MAX_HEARTBEAT_JOBS {
            return Err(MessageError::Invalid(format!(
                "heartbeat lists more than {MAX_HEARTBEAT_JOBS} jobs"
            )));
        }
        Ok(())
    }
}

impl RoundHeadMsg {
    /// Field bounds.
    pub fn validate(&self) -> Result<(), MessageError> {
        let h = &self.head;
        let open_ok = h.open_round.is_none_or(|r| r == h.completed_round + 1);
        if h.term == 0 || !open_ok || h.accuracy_bps.is_some_and(|a| a > 10_000) {
            return Err(MessageError::Invalid("inconsistent round head".into()));
        }
        if let Some(plan) = &self.shards {
            plan.validate()?;
        }
        Ok(())
    }
}

impl UpdateVerdict {
    /// Field bounds.
    pub fn validate(&self) -> Result<(), MessageError> {
        match self {
            Self::Attested {
                signature,
                accuracy_bps,
                ..
            } if signature.len() != 65 || *accuracy_bps > 10_000 => {
                Err(MessageError::Invalid("malformed attestation".into()))
            }
            Self::Rejected { reason } if reason.chars().count() > MAX_REASON_CHARS => {
                Err(MessageError::Invalid("rejection reason too long".into()))
            }
            _ => Ok(()),
        }
    }

    /// A rejection, its reason cut to [`MAX_REASON_CHARS`].
    pub fn rejected(reason: impl Into<String>) -> Self {
        let reason: String = reason.into().chars().take(MAX_REASON_CHARS).collect();
        Self::Rejected { reason }
    }
}

/// A requester asks a rented worker to run one part of an InferencePool job (RPC). The worker
/// checks it against the job on chain, runs it, posts the result there and answers
/// [`InferDone`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferTask {
    /// The chain the job lives on.
    pub chain_id: u64,
    /// The InferencePool job.
    pub job_id: u64,
    /// Its cluster (the worker serves only its cluster's renter).
    pub cluster_id: u64,
    /// The part to run.
    pub part: u32,
    /// The job's parts.
    pub parts: u32,
    /// The part's first image.
    pub start: u64,
    /// The part's images.
    pub count: u64,
    /// The model blob (safetensors weights).
    pub model: Hash32,
    /// The input blob (an IDX file of 28x28 images).
    pub input: Hash32,
}

/// A worker ran a part and posted its result on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferDone {
    /// The job.
    pub job_id: u64,
    /// The part.
    pub part: u32,
    /// The output blob ([`PartOutput`](super::inference::PartOutput)), the hash on chain.
    pub result: Hash32,
    /// The compute time posted, ms.
    pub compute_ms: u64,
    /// What the contract paid for it (wei, decimal; capped by the job's deposit).
    pub payment: String,
}

impl InferTask {
    /// Field bounds.
    pub fn validate(&self) -> Result<(), MessageError> {
        let sane = (1..=super::inference::MAX_PARTS).contains(&self.parts)
            && self.part < self.parts
            && self.count > 0
            && self.start.checked_add(self.count).is_some();
        if !sane {
            return Err(MessageError::Invalid("malformed inference task".into()));
        }
        Ok(())
    }
}
