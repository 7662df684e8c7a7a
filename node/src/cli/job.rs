//! Arguments of `quackmesh job`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::blob::DEFAULT_NODE_URL;

/// Submit and follow federated training jobs through a running node (which holds the chain key
/// that pays, and serves the blobs).
#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    #[command(subcommand)]
    pub(crate) command: JobCommand,
    /// API URL of the node.
    #[arg(long, global = true, value_name = "URL", env = "QUACKMESH_NODE", default_value = DEFAULT_NODE_URL)]
    pub(crate) node: String,
}

/// Job subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum JobCommand {
    /// Create a training job: uploads the validation set to the node, which stores the initial
    /// weights and the spec as blobs, deposits the reward pool on chain and announces the job.
    /// Prints `job_id: N`.
    Submit(Box<SubmitArgs>),
    /// Show a job's rounds (global accuracy per round), its coordinator term and the rewards paid.
    Status {
        /// The job id.
        id: u64,
        /// Print the raw JSON record.
        #[arg(long)]
        json: bool,
    },
    /// Download a job's latest global model (safetensors).
    Model {
        /// The job id.
        id: u64,
        /// Where to write it.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// List the jobs the node knows.
    List,
}

/// `quackmesh job submit`
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// Model architecture: mlp (784-128-10) or cnn.
    #[arg(long, default_value = "mlp")]
    pub(crate) model: String,
    /// Rounds of federated training.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: u64,
    /// The whole reward pool in $DUCK, split evenly over every paid update
    /// (rounds x min-contributors); deposited from the node's account.
    #[arg(long, value_name = "DUCK")]
    pub(crate) reward: String,
    /// Minimum validation accuracy (0..1) of an update that earns a reward.
    #[arg(long, default_value_t = 0.70)]
    pub(crate) min_accuracy: f64,
    /// Validation set: a directory of MNIST-format IDX files (the t10k-* test split is used
    /// when present, else train-*). The coordinator measures every update on it.
    #[arg(long, value_name = "DIR")]
    pub(crate) validation: PathBuf,
    /// Use at most this many validation images.
    #[arg(long, value_name = "N")]
    pub(crate) validation_limit: Option<usize>,
    /// Updates per round: a round closes as soon as this many are accepted.
    #[arg(long, default_value_t = 2)]
    pub(crate) min_contributors: u32,
    /// At a round's deadline it closes with at least this many updates.
    #[arg(long, default_value_t = 1)]
    pub(crate) quorum: u32,
    /// Seconds a round waits for updates before its deadline.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub(crate) round_timeout: u64,
    /// fedavg, median or trimmed-mean.
    #[arg(long, default_value = "fedavg")]
    pub(crate) aggregator: String,
    /// Local epochs per round.
    #[arg(long, default_value_t = 1)]
    pub(crate) epochs: usize,
    /// Local batch size.
    #[arg(long, default_value_t = 32)]
    pub(crate) batch_size: usize,
    /// Local learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub(crate) lr: f32,
    /// Local optimizer: sgd or adam.
    #[arg(long, default_value = "sgd")]
    pub(crate) optimizer: String,
    /// Learning-rate schedule of each local run: constant or linear (decays to 0).
    #[arg(long, default_value = "constant")]
    pub(crate) lr_schedule: String,
    /// Seed of the initial weights and the local shuffling.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Coordinator term lease in seconds (a silent coordinator is replaced after it).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub(crate) lease: u64,
    /// Seconds after the last round during which contributors may still claim rewards.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub(crate) claim_window: u64,
    /// Largest accepted L2 distance of an update from the global model.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) max_update_norm: f64,
    /// Train only on this rented cluster (see `quackmesh market rent`).
    #[arg(long, value_name = "CLUSTER_ID", default_value_t = 0)]
    pub(crate) cluster: u64,
    /// Cluster training: a directory of MNIST-format IDX files (train-* split) uploaded as the
    /// job's training set, visible to the cluster only; the coordinator splits it into one
    /// shard per rented machine and moves a departed machine's shard to the others.
    /// Needs `--cluster`.
    #[arg(long, value_name = "DIR", requires = "cluster")]
    pub(crate) dataset: Option<PathBuf>,
    /// Use at most this many training-set images.
    #[arg(long, value_name = "N", requires = "dataset")]
    pub(crate) dataset_limit: Option<usize>,
}
