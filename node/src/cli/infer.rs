//! Arguments of `quackmesh infer`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::blob::DEFAULT_NODE_URL;

/// Distributed inference on a rented cluster, through the renter's running node (which holds
/// the chain key that pays and the cluster's membership). Rent a cluster first with
/// `quackmesh market rent`.
#[derive(Debug, Args)]
pub(crate) struct InferArgs {
    #[command(subcommand)]
    pub(crate) command: InferCommand,
    /// API URL of the node.
    #[arg(long, global = true, value_name = "URL", env = "QUACKMESH_NODE", default_value = DEFAULT_NODE_URL)]
    pub(crate) node: String,
}

/// Inference subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum InferCommand {
    /// Create an InferencePool job: uploads the input (and the model when given as a file),
    /// deposits MAX_PAYMENT on chain, splits the images across the cluster's machines, which
    /// are paid per compute second; the rest is refunded. With `--output`, waits and writes the
    /// predictions (one class per line, in input order). Prints `inference_job: N`.
    Submit(Box<SubmitArgs>),
    /// Show a job's parts, the machines that ran them, compute time, payments and refund.
    Status {
        /// The inference job id.
        id: u64,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a finished job's predictions (one class per line, in input order).
    Output {
        /// The inference job id.
        id: u64,
        /// Where to write them.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// List the inference jobs this node requested.
    List,
}

/// `quackmesh infer submit`
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The model: a blob id (e.g. a job's global model, see `quackmesh job status`) or a
    /// safetensors file of MLP or CNN weights (uploaded to the node).
    #[arg(long, value_name = "HASH|FILE")]
    pub(crate) model: String,
    /// The images: an IDX file of 28x28 images, plain or gzip (e.g. t10k-images-idx3-ubyte).
    #[arg(long, value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// The cluster to run on (rented by the node's account).
    #[arg(long, value_name = "CLUSTER_ID")]
    pub(crate) cluster: u64,
    /// Most $DUCK the job may pay (deposited; the unpaid rest is refunded).
    #[arg(long, value_name = "DUCK")]
    pub(crate) max_payment: String,
    /// $DUCK per compute second [default: the dearest machine's hourly price / 3600].
    #[arg(long, value_name = "DUCK")]
    pub(crate) price_per_second: Option<String>,
    /// Parts to cut the batch into [default: one per machine, at most 5,000 images each].
    #[arg(long, value_name = "N")]
    pub(crate) parts: Option<u32>,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub(crate) timeout: u64,
    /// Wait for the job and write the predictions here.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Print the submission as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}
