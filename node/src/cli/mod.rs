//! Command-line interface: clap derive lives here and in the per-area files beside it; each
//! area's handler in `commands/` turns these arguments into the library's `Config` structs.

use clap::{Parser, Subcommand};

pub(crate) mod blob;
pub(crate) mod chain;
pub(crate) mod infer;
pub(crate) mod job;
pub(crate) mod learn;
pub(crate) mod node;

/// QuackMesh: decentralized federated learning and compute rental on a libp2p mesh, paid in
/// $DUCK on DuckChain.
#[derive(Debug, Parser)]
#[command(name = "quackmesh", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `quackmesh=debug,libp2p=info`.
    #[arg(long, global = true, env = "QUACKMESH_LOG", default_value = "info")]
    pub(crate) log: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Top-level subcommands; each area adds its own.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a node (see `quackmesh node --help`).
    Node(node::NodeArgs),
    /// Put and get blobs through a running node.
    Blob(blob::BlobArgs),
    /// Federated training jobs: submit one, follow its rounds, download its model.
    Job(job::JobArgs),
    /// Distributed inference on a rented cluster: submit a batch, follow it, get the predictions.
    Infer(infer::InferArgs),
    /// On-chain contracts: deploy them (`chain deploy`), show a deployment (`chain info`).
    #[command(subcommand)]
    Chain(chain::ChainCommand),
    /// The node's Ethereum account: address, $DUCK balance, faucet, encrypted keystore.
    #[command(subcommand)]
    Wallet(chain::WalletCommand),
    /// The compute marketplace: list machines, rent a cluster, end a rental, withdraw rent,
    /// unlist a machine.
    #[command(subcommand)]
    Market(chain::MarketCommand),
    /// Trains a model centrally on MNIST-format data, evaluates it and saves safetensors.
    Train(learn::TrainArgs),
    /// Evaluates saved weights (loss, accuracy) on MNIST-format data.
    Eval(learn::EvalArgs),
    /// Prepares datasets (partitioning for contributors).
    Data(learn::DataArgs),
}
