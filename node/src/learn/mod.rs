//! The learning engine (candle): MNIST-format data, the models, local training, evaluation,
//! aggregation of updates and their validation. Contributors, rented workers and coordinators
//! all use it; nothing here does I/O beyond reading and writing the files it is handed.
//!
//! - [`data`]: IDX reader/writer, [`Dataset`] (+ bytes form, shards), partitioning.
//! - [`model`]: [`ModelSpec`] (what a job names), the [`Model`] trait, the MLP and CNN.
//! - [`weights`]: [`Weights`], named f32 tensors in a flat buffer, deterministic safetensors.
//! - [`train`]: [`train()`] with SGD/Adam, FedProx and DP; [`eval`]: [`evaluate()`].
//! - [`aggregate`]: streaming FedAvg, median, trimmed mean, norm clipping, server optimizers.
//! - [`validate`]: the checks an update must pass before it counts.
//!
//! Everything runs on the CPU by default; built with the `cuda` feature, [`device()`] picks
//! the first CUDA GPU when one is present.
//!
//! # A federated round in a few lines
//!
//! ```no_run
//! use indicatif::ProgressBar;
//! use quackmesh::learn::{
//!     AggregationConfig, Dataset, ModelSpec, ServerState, Split, TrainConfig, Weights,
//!     evaluate, train, validate_update,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = ModelSpec::mlp();
//! let global = Weights::init(&spec, 42); // the job's initial model
//! let data = Dataset::load_dir("data/mnist".as_ref(), Split::Train)?;
//! let test = Dataset::load_dir("data/mnist".as_ref(), Split::Test)?;
//!
//! // Contributors: train locally (blocking, CPU-bound: run it in `spawn_blocking`).
//! let cfg = TrainConfig::default(); // 1 epoch, batch 32, SGD lr 0.05
//! let mut updates = Vec::new();
//! for i in 0..2 {
//!     let shard = data.shard(i, 2)?;
//!     let (w, report) = train(&spec, &global, &shard, &cfg, &ProgressBar::hidden())?;
//!     // On the wire: w.to_safetensors_bytes()?, and w.hash()? is its model hash.
//!     updates.push((w, report.samples as u64));
//! }
//!
//! // Coordinator: check each update, then aggregate them as they arrive.
//! let mut acc = AggregationConfig::default().start(&global)?;
//! for (w, samples) in &updates {
//!     validate_update(&spec, &global, w, 100.0)?;
//!     acc.add(w, *samples)?;
//! }
//! let next = acc.finish(&mut ServerState::default())?.weights;
//! println!("accuracy {:.4}", evaluate(&spec, &next, &test)?.accuracy);
//! # Ok(())
//! # }
//! ```

pub mod aggregate;
mod cnn_engine;
pub mod data;
pub mod eval;
pub mod model;
pub mod optim;
pub mod train;
pub mod validate;
pub mod weights;

pub use aggregate::{Accumulator, AggregationConfig, Aggregator, ServerOptimizer, ServerState};
pub use data::{Dataset, Scheme, Split};
pub use eval::{EvalReport, evaluate, predict};
pub use model::{Model, ModelSpec};
pub use optim::Optimizer;
pub use train::{DpConfig, LrSchedule, TrainConfig, TrainReport, train};
pub use validate::{UpdateError, validate_update};
pub use weights::Weights;

/// The device training and evaluation run on: the first CUDA GPU when the crate is built with
/// the `cuda` feature and one is available, the CPU otherwise.
pub fn device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(dev) = candle_core::Device::new_cuda(0) {
            return dev;
        }
    }
    candle_core::Device::Cpu
}
