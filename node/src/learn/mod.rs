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
pub use eval::{EvalReport, evaluate};
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
