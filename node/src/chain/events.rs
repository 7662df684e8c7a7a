//! `ChainEvent`: the contract events the node reacts to, decoded from logs. Variants are named
//! as the Solidity events and carry the generated event structs. ERC-20 `Transfer`/`Approval`
//! logs are not events of interest and are skipped.

use alloy::primitives::{Address, B256};
use alloy::rpc::types::Log;
use alloy::sol_types::SolEventInterface;

use super::Deployment;
use super::bindings::{
    ComputeMarketplace as M, DuckToken as T, InferencePool as I, TrainingPool as P,
};

/// An event of one of our contracts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ChainEvent {
    // ComputeMarketplace
    MachineListed(M::MachineListed),
    MachineUpdated(M::MachineUpdated),
    MachineUnlisted(M::MachineUnlisted),
    MachineRented(M::MachineRented),
    RentalEnded(M::RentalEnded),
    ClusterFormed(M::ClusterFormed),
    RentWithdrawn(M::RentWithdrawn),
    // TrainingPool
    CoordinatorRegistered(P::CoordinatorRegistered),
    CoordinatorUnregistered(P::CoordinatorUnregistered),
    TrainingJobCreated(P::TrainingJobCreated),
    TermClaimed(P::TermClaimed),
    LeaseRenewed(P::LeaseRenewed),
    RoundRecorded(P::RoundRecorded),
    TrainingJobCompleted(P::TrainingJobCompleted),
    RewardDistributed(P::RewardDistributed),
    TrainingJobFinished(P::TrainingJobFinished),
    // InferencePool
    InferenceJobCreated(I::InferenceJobCreated),
    ResultPosted(I::ResultPosted),
    ComputePaid(I::ComputePaid),
    InferenceJobFinished(I::InferenceJobFinished),
    // DuckToken
    FaucetDripped(T::FaucetDripped),
}

impl ChainEvent {
    /// The Solidity event's name.
    pub fn name(&self) -> &'static str {
        match self {
            ChainEvent::MachineListed(_) => "MachineListed",
            ChainEvent::MachineUpdated(_) => "MachineUpdated",
            ChainEvent::MachineUnlisted(_) => "MachineUnlisted",
            ChainEvent::MachineRented(_) => "MachineRented",
            ChainEvent::RentalEnded(_) => "RentalEnded",
            ChainEvent::ClusterFormed(_) => "ClusterFormed",
            ChainEvent::RentWithdrawn(_) => "RentWithdrawn",
            ChainEvent::CoordinatorRegistered(_) => "CoordinatorRegistered",
            ChainEvent::CoordinatorUnregistered(_) => "CoordinatorUnregistered",
            ChainEvent::TrainingJobCreated(_) => "TrainingJobCreated",
            ChainEvent::TermClaimed(_) => "TermClaimed",
            ChainEvent::LeaseRenewed(_) => "LeaseRenewed",
            ChainEvent::RoundRecorded(_) => "RoundRecorded",
            ChainEvent::TrainingJobCompleted(_) => "TrainingJobCompleted",
            ChainEvent::RewardDistributed(_) => "RewardDistributed",
            ChainEvent::TrainingJobFinished(_) => "TrainingJobFinished",
            ChainEvent::InferenceJobCreated(_) => "InferenceJobCreated",
            ChainEvent::ResultPosted(_) => "ResultPosted",
            ChainEvent::ComputePaid(_) => "ComputePaid",
            ChainEvent::InferenceJobFinished(_) => "InferenceJobFinished",
            ChainEvent::FaucetDripped(_) => "FaucetDripped",
        }
    }

    /// Decodes a log emitted by one of `deployment`'s contracts. `Ok(None)` for logs that are
    /// not events of interest (other addresses, ERC-20 transfers); `Err` for a log of ours
    /// that does not decode (an ABI mismatch).
    pub fn decode(deployment: &Deployment, log: &Log) -> Result<Option<Self>, String> {
        let address = log.address();
        let inner = &log.inner;
        let topics = inner.topics();
        let data = &inner.data.data;
        if address == deployment.compute_marketplace {
            use M::ComputeMarketplaceEvents as E;
            let ev = E::decode_raw_log(topics, data).map_err(|e| e.to_string())?;
            return Ok(Some(match ev {
                E::MachineListed(e) => ChainEvent::MachineListed(e),
                E::MachineUpdated(e) => ChainEvent::MachineUpdated(e),
                E::MachineUnlisted(e) => ChainEvent::MachineUnlisted(e),
                E::MachineRented(e) => ChainEvent::MachineRented(e),
                E::RentalEnded(e) => ChainEvent::RentalEnded(e),
                E::ClusterFormed(e) => ChainEvent::ClusterFormed(e),
                E::RentWithdrawn(e) => ChainEvent::RentWithdrawn(e),
            }));
        }
        if address == deployment.training_pool {
            use P::TrainingPoolEvents as E;
            let ev = E::decode_raw_log(topics, data).map_err(|e| e.to_string())?;
            return Ok(match ev {
                E::CoordinatorRegistered(e) => Some(ChainEvent::CoordinatorRegistered(e)),
                E::CoordinatorUnregistered(e) => Some(ChainEvent::CoordinatorUnregistered(e)),
                E::TrainingJobCreated(e) => Some(ChainEvent::TrainingJobCreated(e)),
                E::TermClaimed(e) => Some(ChainEvent::TermClaimed(e)),
                E::LeaseRenewed(e) => Some(ChainEvent::LeaseRenewed(e)),
                E::RoundRecorded(e) => Some(ChainEvent::RoundRecorded(e)),
                E::TrainingJobCompleted(e) => Some(ChainEvent::TrainingJobCompleted(e)),
                E::RewardDistributed(e) => Some(ChainEvent::RewardDistributed(e)),
                E::TrainingJobFinished(e) => Some(ChainEvent::TrainingJobFinished(e)),
                // OpenZeppelin's EIP712 declares EIP712DomainChanged; ours never emits it.
                E::EIP712DomainChanged(_) => None,
            });
        }
        if address == deployment.inference_pool {
            use I::InferencePoolEvents as E;
            let ev = E::decode_raw_log(topics, data).map_err(|e| e.to_string())?;
            return Ok(Some(match ev {
                E::InferenceJobCreated(e) => ChainEvent::InferenceJobCreated(e),
                E::ResultPosted(e) => ChainEvent::ResultPosted(e),
                E::ComputePaid(e) => ChainEvent::ComputePaid(e),
                E::InferenceJobFinished(e) => ChainEvent::InferenceJobFinished(e),
            }));
        }
        if address == deployment.duck_token && deployment.duck_token_deployed {
            use T::DuckTokenEvents as E;
            return Ok(match E::decode_raw_log(topics, data) {
                Ok(E::FaucetDripped(e)) => Some(ChainEvent::FaucetDripped(e)),
                Ok(_) => None,
                Err(e) => return Err(e.to_string()),
            });
        }
        Ok(None)
    }
}

/// Where a log sits in the chain: events are delivered in this order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct LogPosition {
    /// Block number.
    pub block: u64,
    /// Index of the log in its block.
    pub log_index: u64,
}

impl LogPosition {
    /// The position right after this one.
    pub fn next(self) -> Self {
        Self {
            block: self.block,
            log_index: self.log_index + 1,
        }
    }
}

/// An event with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedEvent {
    /// The decoded event.
    pub event: ChainEvent,
    /// Its position (block, log index).
    pub position: LogPosition,
    /// The transaction that emitted it.
    pub tx_hash: B256,
    /// The contract that emitted it.
    pub address: Address,
}
