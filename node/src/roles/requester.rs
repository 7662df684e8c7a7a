//! The requester: turns a job request into blobs on the mesh (initial weights, spec; the
//! validation set was uploaded before) and a funded `createTrainingJob` on chain. Runs on any
//! node with a chain key (through `POST /api/job` or `quackmesh job submit`).

use alloy::primitives::U256;
use serde::{Deserialize, Serialize};

use crate::{
    chain::{
        self,
        client::{JobSpec, REWARD_PER_UPDATE},
    },
    hash::Hash32,
    learn::{
        AggregationConfig, Aggregator, ModelSpec, Optimizer, TrainConfig, Weights,
        train::LrSchedule,
    },
    mesh::Client,
    roles::{
        job::{self, SPEC_VERSION, TrainingJobSpec},
        runtime::{Command, RolesHandle, now_ms},
    },
};

/// What a requester asks for (the JSON body of `POST /api/job`). Only `validation_blob` and
/// `reward` are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// `mlp` or `cnn`.
    #[serde(default = "default_model")]
    pub model: String,
    /// Rounds of federated training.
    #[serde(default = "default_rounds")]
    pub rounds: u64,
    /// The whole reward pool in $DUCK (decimal text), split evenly over every paid update slot
    /// (rounds x min_contributors).
    pub reward: String,
    /// Minimum validation accuracy of a paid update, 0..1.
    #[serde(default = "default_min_accuracy")]
    pub min_accuracy: f64,
    /// Blob id of the validation set (a dataset uploaded with `POST /api/blob`).
    pub validation_blob: Hash32,
    /// Updates per round (a round closes when this many are accepted).
    #[serde(default = "default_min_contributors")]
    pub min_contributors: u32,
    /// A round closes at its deadline with at least this many updates [default: 1].
    #[serde(default)]
    pub quorum: Option<u32>,
    /// Seconds a round waits for updates.
    #[serde(default = "default_round_timeout")]
    pub round_timeout_secs: u64,
    /// `fedavg`, `median` or `trimmed-mean`.
    #[serde(default = "default_aggregator")]
    pub aggregator: String,
    /// Local epochs per round.
    #[serde(default = "one")]
    pub epochs: usize,
    /// Local batch size.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Local learning rate.
    #[serde(default = "default_lr")]
    pub lr: f32,
    /// `sgd` or `adam`.
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
    /// `constant` or `linear` (decay to 0 over each local run).
    #[serde(default = "default_schedule")]
    pub lr_schedule: String,
    /// Seed of the initial weights and of local shuffling.
    #[serde(default)]
    pub seed: u64,
    /// Coordinator term lease, seconds.
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
    /// Seconds after the last round during which rewards can still be claimed.
    #[serde(default = "default_claim_window")]
    pub claim_window_secs: u64,
    /// Seconds from now after which the requester may end an unfinished job.
    #[serde(default = "default_deadline")]
    pub deadline_secs: u64,
    /// Largest accepted L2 distance of an update from the global model.
    #[serde(default = "default_max_norm")]
    pub max_update_norm: f64,
    /// Restrict training to a rented cluster (0: open to all contributors).
    #[serde(default)]
    pub cluster_id: u64,
    /// Cluster training: blob id of the training set (a dataset uploaded with
    /// `POST /api/blob`), split by the coordinator across the cluster's rented machines.
    /// Needs `cluster_id`.
    #[serde(default)]
    pub dataset_blob: Option<Hash32>,
}

fn default_model() -> String {
    "mlp".into()
}
fn default_rounds() -> u64 {
    5
}
fn default_min_accuracy() -> f64 {
    0.7
}
fn default_min_contributors() -> u32 {
    2
}
fn default_round_timeout() -> u64 {
    60
}
fn default_aggregator() -> String {
    "fedavg".into()
}
fn one() -> usize {
    1
}
fn default_batch() -> usize {
    32
}
fn default_lr() -> f32 {
    0.05
}
fn default_optimizer() -> String {
    "sgd".into()
}
fn default_schedule() -> String {
    "constant".into()
}
fn default_lease() -> u64 {
    10
}
fn default_claim_window() -> u64 {
    10
}
fn default_deadline() -> u64 {
    24 * 3600
}
fn default_max_norm() -> f64 {
    100.0
}

/// What `POST /api/job` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSubmitted {
    /// The new job's id.
    pub job_id: u64,
    /// The createTrainingJob transaction.
    pub tx_hash: String,
    /// Blob id of the initial weights.
    pub model: Hash32,
    /// Blob id of the spec.
    pub spec: Hash32,
    /// Blob id of the validation set.
    pub validation: Hash32,
    /// $DUCK per accepted update.
    pub reward_per_update: String,
    /// The deposit.
    pub total_reward_pool: String,
}

/// Why a job could not be submitted.
#[derive(Debug, thiserror::Error)]
pub enum RequesterError {
    /// The request is invalid.
    #[error("invalid job request: {0}")]
    Invalid(String),
    /// The validation set or training set blob is missing or not a dataset.
    #[error("dataset {id}: {reason}")]
    Validation {
        /// The blob.
        id: Hash32,
        /// Why.
        reason: String,
    },
    /// The mesh failed.
    #[error("mesh: {0}")]
    Mesh(String),
    /// The chain refused or failed.
    #[error(transparent)]
    Chain(#[from] chain::Error),
}

impl JobRequest {
    /// The off-chain spec this request describes.
    pub fn spec(&self) -> Result<TrainingJobSpec, RequesterError> {
        let bad = |m: String| RequesterError::Invalid(m);
        let model = match self.model.as_str() {
            "mlp" => ModelSpec::mlp(),
            "cnn" => ModelSpec::cnn(),
            other => return Err(bad(format!("model {other:?}: expected mlp or cnn"))),
        };
        let rule = match self.aggregator.as_str() {
            "fedavg" => Aggregator::FedAvg,
            "median" => Aggregator::Median,
            "trimmed-mean" | "trimmed_mean" => Aggregator::TrimmedMean { trim_fraction: 0.2 },
            other => {
                return Err(bad(format!(
                    "aggregator {other:?}: expected fedavg, median or trimmed-mean"
                )));
            }
        };
        let optimizer = match self.optimizer.as_str() {
            "sgd" => Optimizer::sgd(),
            "adam" => Optimizer::adam(),
            other => return Err(bad(format!("optimizer {other:?}: expected sgd or adam"))),
        };
        let schedule = match self.lr_schedule.as_str() {
            "constant" => LrSchedule::Constant,
            "linear" => LrSchedule::Linear,
            other => {
                return Err(bad(format!(
                    "lr schedule {other:?}: expected constant or linear"
                )));
            }
        };
        let spec = TrainingJobSpec {
            version: SPEC_VERSION,
            model,
            train: TrainConfig {
                epochs: self.epochs,
                batch_size: self.batch_size,
                lr: self.lr,
                optimizer,
                seed: self.seed,
                schedule,
                prox_mu: 0.0,
                dp: None,
            },
            aggregation: AggregationConfig {
                rule,
                ..AggregationConfig::default()
            },
            min_contributors: self.min_contributors,
            quorum: self.quorum.unwrap_or(1).min(self.min_contributors),
            round_timeout_secs: self.round_timeout_secs,
            max_update_norm: self.max_update_norm,
            dataset: self.dataset_blob,
        };
        if self.dataset_blob.is_some() && self.cluster_id == 0 {
            return Err(bad(
                "a training set (dataset_blob) is trained on a rented cluster: name cluster_id"
                    .into(),
            ));
        }
        spec.check().map_err(|e| bad(e.to_string()))?;
        if self.rounds == 0 || self.rounds > 10_000 {
            return Err(bad(format!("rounds {} must be 1 to 10000", self.rounds)));
        }
        if !(0.0..=1.0).contains(&self.min_accuracy) {
            return Err(bad(format!(
                "min accuracy {} must be within 0..1",
                self.min_accuracy
            )));
        }
        if self.lease_secs == 0 || self.claim_window_secs == 0 || self.deadline_secs == 0 {
            return Err(bad(
                "lease, claim window and deadline must be positive".into()
            ));
        }
        Ok(spec)
    }

    /// Reward per update (wei) and the pool actually deposited (`slots * per_update`).
    pub fn rewards(&self) -> Result<(U256, U256), RequesterError> {
        let pool = chain::config::parse_duck(&self.reward)
            .map_err(|e| RequesterError::Invalid(e.to_string()))?;
        let slots = U256::from(self.rounds) * U256::from(self.min_contributors);
        let per_update = pool / slots;
        if per_update.is_zero() {
            return Err(RequesterError::Invalid(format!(
                "reward {} DUCK is too small for {slots} update slots",
                self.reward
            )));
        }
        Ok((per_update, per_update * slots))
    }
}

/// How long the requester waits for its node to be a member of the job's cluster.
const MEMBERSHIP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Makes `blob` private to `cluster_id`'s members on this node (waiting, a little, for this
/// node to be one: its watcher reads the cluster after the rental).
pub(crate) async fn share_with_cluster(
    roles: &RolesHandle,
    cluster_id: u64,
    blob: Hash32,
) -> Result<(), RequesterError> {
    let started = tokio::time::Instant::now();
    loop {
        let (reply, shared) = tokio::sync::oneshot::channel();
        let sent = roles
            .send(Command::ShareBlob {
                cluster_id,
                blob,
                reply,
            })
            .await;
        if sent && shared.await.unwrap_or(false) {
            return Ok(());
        }
        if started.elapsed() > MEMBERSHIP_WAIT {
            return Err(RequesterError::Invalid(format!(
                "this node is not a member of cluster {cluster_id}: rent it with this node's account first"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Images in dataset blob `id`, which must be stored on this node (uploaded).
async fn stored_dataset_len(mesh: &Client, id: Hash32) -> Result<usize, RequesterError> {
    let blobs = mesh.blobs().clone();
    let bytes = tokio::task::spawn_blocking(move || blobs.read_all(&id))
        .await
        .map_err(|e| RequesterError::Mesh(e.to_string()))?
        .map_err(|e| RequesterError::Mesh(e.to_string()))?
        .ok_or_else(|| RequesterError::Validation {
            id,
            reason: "not stored on this node (upload it first)".into(),
        })?;
    let samples = tokio::task::spawn_blocking(move || job::decode_dataset(&bytes).map(|d| d.len()))
        .await
        .map_err(|e| RequesterError::Mesh(e.to_string()))?
        .map_err(|e| RequesterError::Validation {
            id,
            reason: e.to_string(),
        })?;
    if samples == 0 {
        return Err(RequesterError::Validation {
            id,
            reason: "empty".into(),
        });
    }
    Ok(samples)
}

/// Submits a job: checks the validation set, stores the initial weights and the spec as blobs,
/// deposits the reward pool and creates the job on chain, then tells the roles (which announce
/// it on the mesh).
pub async fn submit_job(
    mesh: &Client,
    chain: &chain::Client,
    roles: Option<&RolesHandle>,
    req: &JobRequest,
) -> Result<JobSubmitted, RequesterError> {
    let spec = req.spec()?;
    let (per_update, pool) = req.rewards()?;
    let samples = stored_dataset_len(mesh, req.validation_blob).await?;
    if let Some(dataset) = req.dataset_blob {
        let n = stored_dataset_len(mesh, dataset).await?;
        tracing::info!(target: "roles::requester", samples = n, "training set for the cluster");
    }
    let id = req.validation_blob;
    if let (Some(set), Some(roles)) = (req.dataset_blob, roles) {
        // The training set is the cluster's only, from before anyone hears of the job.
        share_with_cluster(roles, req.cluster_id, set).await?;
    }
    let weights = Weights::init(&spec.model, spec.train.seed);
    let weights_bytes = weights
        .to_safetensors_bytes()
        .map_err(|e| RequesterError::Invalid(e.to_string()))?;
    let put = |b: Vec<u8>| async move {
        mesh.put_blob(b)
            .await
            .map_err(|e| RequesterError::Mesh(e.to_string()))?
            .id()
            .map_err(|e| RequesterError::Mesh(e.to_string()))
    };
    let model = put(weights_bytes).await?;
    let spec_hash = put(spec
        .to_bytes()
        .map_err(|e| RequesterError::Invalid(e.to_string()))?)
    .await?;
    let chain_spec = JobSpec {
        modelHash: model.into(),
        validationHash: id.into(),
        specHash: spec_hash.into(),
        specUri: format!("quackmesh:blob:{spec_hash}"),
        totalRewardPool: pool,
        rewardPerUpdate: per_update,
        rewardPerRound: U256::ZERO,
        rounds: req.rounds,
        maxUpdatesPerRound: req.min_contributors,
        minAccuracyBps: job::to_bps(req.min_accuracy),
        rewardMode: REWARD_PER_UPDATE,
        leaseSeconds: req.lease_secs,
        claimWindow: req.claim_window_secs,
        deadline: now_ms() / 1000 + req.deadline_secs,
        clusterId: U256::from(req.cluster_id),
    };
    let sent = chain.create_training_job(chain_spec).await?;
    let job_id = u64::try_from(sent.value)
        .map_err(|_| RequesterError::Invalid("job id overflows u64".into()))?;
    tracing::info!(target: "roles::requester", job_id, samples, model = %model.short(), "training job created");
    if let Some(roles) = roles {
        roles.send(Command::JobCreated { job_id }).await;
    }
    Ok(JobSubmitted {
        job_id,
        tx_hash: format!("{:#x}", sent.tx_hash()),
        model,
        spec: spec_hash,
        validation: id,
        reward_per_update: chain::config::format_duck(per_update),
        total_reward_pool: chain::config::format_duck(pool),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> JobRequest {
        serde_json::from_str(r#"{"reward": "100", "validation_blob": "0000000000000000000000000000000000000000000000000000000000000001"}"#)
            .unwrap()
    }

    #[test]
    fn defaults_fill_a_valid_spec() {
        let r = req();
        let s = r.spec().unwrap();
        assert_eq!(s.min_contributors, 2);
        assert_eq!((r.rounds, r.model.as_str()), (5, "mlp"));
        let (per, pool) = r.rewards().unwrap();
        assert_eq!(pool, per * U256::from(10u64));
        assert_eq!(per, chain::config::parse_duck("10").unwrap());
    }

    #[test]
    fn bad_requests_are_refused_with_reasons() {
        let mut r = req();
        r.model = "resnet".into();
        assert!(r.spec().unwrap_err().to_string().contains("resnet"));
        let mut r = req();
        r.aggregator = "mean".into();
        assert!(r.spec().is_err());
        let mut r = req();
        r.min_accuracy = 1.5;
        assert!(r.spec().is_err());
        let mut r = req();
        r.reward = "0.000000000000000001".into();
        assert!(r.rewards().is_err());
        let mut r = req();
        r.reward = "lots".into();
        assert!(r.rewards().is_err());
        assert!(
            serde_json::from_str::<JobRequest>(
                r#"{"reward":"1","validation_blob":"00","bogus":1}"#
            )
            .is_err()
        );
    }
}
