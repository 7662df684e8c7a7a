//! A training job's off-chain spec, and the coordinator's compute steps on it.
//!
//! The chain holds a job's money and three hashes: the initial weights, the validation set and
//! this spec (each a blob id in the mesh). The spec says what the job trains and how
//! (architecture, local hyperparameters, aggregation rule, round sizes, the update-norm bound).
//! Its CBOR bytes are the blob, so every node reads exactly what the requester committed to.
//!
//! The compute steps (evaluating an offered update, aggregating a round) are plain functions over
//! bytes and [`learn`](crate::learn) types: CPU-bound and blocking, no I/O; drivers run them on
//! tokio's blocking pool.

use serde::{Deserialize, Serialize};

use crate::{
    learn::{
        AggregationConfig, Dataset, ModelSpec, TrainConfig, Weights,
        aggregate::{AggregateError, ServerState},
        evaluate, validate_update,
    },
    roles::round::RoundConfig,
};

/// Version of [`TrainingJobSpec`]'s wire form.
pub const SPEC_VERSION: u16 = 1;
/// Largest spec blob accepted.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// Largest weights blob accepted (a 4096-wide MLP is ~13 MB; the CNN far less).
pub const MAX_WEIGHTS_BYTES: usize = 64 * 1024 * 1024;
/// Largest validation/dataset blob accepted (full MNIST training set is ~47 MB as bytes).
pub const MAX_DATASET_BYTES: usize = 128 * 1024 * 1024;

/// Why a spec or a compute step failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The spec's bytes are not a spec.
    #[error("malformed job spec: {0}")]
    MalformedSpec(String),
    /// A field is out of range.
    #[error("invalid job spec: {0}")]
    InvalidSpec(String),
    /// Weights or a dataset could not be decoded.
    #[error("bad {what}: {reason}")]
    BadInput {
        /// Which input.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Evaluation or training failed.
    #[error("learning failed: {0}")]
    Learn(String),
    /// Aggregation failed.
    #[error("aggregation failed: {0}")]
    Aggregate(#[from] AggregateError),
}

/// The off-chain half of a training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingJobSpec {
    /// [`SPEC_VERSION`].
    pub version: u16,
    /// The model's architecture.
    pub model: ModelSpec,
    /// Local training hyperparameters every contributor uses.
    pub train: TrainConfig,
    /// How updates are combined.
    pub aggregation: AggregationConfig,
    /// Updates per round (K): a round closes as soon as this many are accepted.
    pub min_contributors: u32,
    /// At a round's deadline it closes with at least this many accepted updates.
    pub quorum: u32,
    /// Seconds a round collects before its deadline.
    pub round_timeout_secs: u64,
    /// Largest accepted L2 distance between an update and the global model.
    pub max_update_norm: f64,
    /// Cluster training: the requester's training set (a dataset blob, shared with the job's
    /// cluster only). The coordinator cuts it into one shard per rented machine and assigns
    /// the shards in its round heads; the machines train on what they are assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<crate::hash::Hash32>,
}

impl TrainingJobSpec {
    /// Checks every field's range (call on any spec from the network).
    pub fn check(&self) -> Result<(), JobError> {
        let bad = |m: String| Err(JobError::InvalidSpec(m));
        if self.version != SPEC_VERSION {
            return bad(format!(
                "spec version {} (this node reads {SPEC_VERSION})",
                self.version
            ));
        }
        self.model
            .check()
            .map_err(|e| JobError::InvalidSpec(e.to_string()))?;
        self.train
            .check()
            .map_err(|e| JobError::InvalidSpec(e.to_string()))?;
        self.aggregation
            .check()
            .map_err(|e| JobError::InvalidSpec(e.to_string()))?;
        if self.min_contributors == 0 || self.min_contributors > 1000 {
            return bad(format!(
                "min_contributors {} must be 1 to 1000",
                self.min_contributors
            ));
        }
        if self.quorum == 0 || self.quorum > self.min_contributors {
            return bad(format!(
                "quorum {} must be 1 to min_contributors",
                self.quorum
            ));
        }
        if self.round_timeout_secs == 0 || self.round_timeout_secs > 7 * 24 * 3600 {
            return bad(format!(
                "round timeout {} s must be 1 s to a week",
                self.round_timeout_secs
            ));
        }
        if !(self.max_update_norm > 0.0 && self.max_update_norm.is_finite()) {
            return bad(format!(
                "max update norm {} must be positive",
                self.max_update_norm
            ));
        }
        Ok(())
    }

    /// The spec's blob bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, JobError> {
        crate::cbor::to_vec(self).map_err(|e| JobError::MalformedSpec(e.to_string()))
    }

    /// Decodes and checks a spec blob.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, JobError> {
        let spec: Self = crate::cbor::from_slice(bytes, MAX_SPEC_BYTES)
            .map_err(|e| JobError::MalformedSpec(e.to_string()))?;
        spec.check()?;
        Ok(spec)
    }

    /// The round machine's parameters for this job.
    pub fn round_config(&self, total_rounds: u64, min_accuracy_bps: u16) -> RoundConfig {
        RoundConfig {
            total_rounds,
            target_updates: self.min_contributors as usize,
            quorum: self.quorum as usize,
            round_timeout_ms: self.round_timeout_secs * 1000,
            min_accuracy_bps,
            republish_ms: 2_000,
        }
    }
}

/// Accuracy as basis points (0..=10000).
pub fn to_bps(accuracy: f64) -> u16 {
    (accuracy.clamp(0.0, 1.0) * 10_000.0).round() as u16
}

/// Decodes weights from a blob.
pub fn decode_weights(bytes: &[u8]) -> Result<Weights, JobError> {
    Weights::from_safetensors_bytes(bytes, MAX_WEIGHTS_BYTES).map_err(|e| JobError::BadInput {
        what: "weights",
        reason: e.to_string(),
    })
}

/// Decodes a dataset from a blob.
pub fn decode_dataset(bytes: &[u8]) -> Result<Dataset, JobError> {
    Dataset::from_bytes(bytes, MAX_DATASET_BYTES).map_err(|e| JobError::BadInput {
        what: "dataset",
        reason: e.to_string(),
    })
}

/// Judges an offered update: decodes it, checks names, shapes, finiteness and the norm bound
/// against the global model, and measures its accuracy on the validation set. `Err` carries
/// the reason sent to the contributor.
pub fn evaluate_update(
    spec: &TrainingJobSpec,
    global: &Weights,
    update_bytes: &[u8],
    validation: &Dataset,
) -> Result<(Weights, u16), String> {
    let update = decode_weights(update_bytes).map_err(|e| e.to_string())?;
    validate_update(&spec.model, global, &update, spec.max_update_norm)
        .map_err(|e| format!("rejected update: {e}"))?;
    let report = evaluate(&spec.model, &update, validation)
        .map_err(|e| format!("evaluation failed: {e}"))?;
    Ok((update, to_bps(report.accuracy)))
}

/// The result of aggregating a round.
#[derive(Debug)]
pub struct RoundResult {
    /// The new global model.
    pub weights: Weights,
    /// Its safetensors bytes (the blob).
    pub bytes: Vec<u8>,
    /// Its accuracy on the validation set, basis points.
    pub accuracy_bps: u16,
    /// Updates that went in.
    pub updates: usize,
}

/// Aggregates accepted updates (weights with sample counts) into the next global model and
/// measures it on the validation set.
pub fn aggregate_round(
    spec: &TrainingJobSpec,
    global: &Weights,
    updates: &[(&Weights, u64)],
    server: &mut ServerState,
    validation: &Dataset,
) -> Result<RoundResult, JobError> {
    let mut acc = spec.aggregation.start(global)?;
    for (w, samples) in updates {
        acc.add(w, *samples)?;
    }
    let aggregated = acc.finish(server)?;
    let report = evaluate(&spec.model, &aggregated.weights, validation)
        .map_err(|e| JobError::Learn(e.to_string()))?;
    let bytes = aggregated
        .weights
        .to_safetensors_bytes()
        .map_err(|e| JobError::Learn(e.to_string()))?;
    Ok(RoundResult {
        weights: aggregated.weights,
        bytes,
        accuracy_bps: to_bps(report.accuracy),
        updates: aggregated.updates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::{Aggregator, train::progress_bar};

    pub(crate) fn spec() -> TrainingJobSpec {
        TrainingJobSpec {
            version: SPEC_VERSION,
            model: ModelSpec::mlp(),
            train: TrainConfig::default(),
            aggregation: AggregationConfig::default(),
            min_contributors: 2,
            quorum: 1,
            round_timeout_secs: 30,
            max_update_norm: 100.0,
            dataset: None,
        }
    }

    #[test]
    fn spec_round_trips_and_checks() {
        let s = spec();
        assert_eq!(
            TrainingJobSpec::from_bytes(&s.to_bytes().unwrap()).unwrap(),
            s
        );
        let bad = TrainingJobSpec {
            quorum: 3,
            ..spec()
        };
        assert!(matches!(
            TrainingJobSpec::from_bytes(&bad.to_bytes().unwrap()),
            Err(JobError::InvalidSpec(_))
        ));
        let bad = TrainingJobSpec {
            version: 9,
            ..spec()
        };
        assert!(TrainingJobSpec::from_bytes(&bad.to_bytes().unwrap()).is_err());
        assert!(matches!(
            TrainingJobSpec::from_bytes(b"\x01\x02garbage"),
            Err(JobError::MalformedSpec(_))
        ));
    }

    #[test]
    fn bps_rounds_and_clamps() {
        assert_eq!(to_bps(0.97254), 9725);
        assert_eq!(to_bps(1.5), 10_000);
        assert_eq!(to_bps(-1.0), 0);
    }

    #[test]
    fn update_evaluation_rejects_bad_and_measures_good() {
        let s = spec();
        let (train, test) = crate::test_utils::learn::load_subset();
        let (train, test) = (train.take(2_000), test.take(500));
        let global = Weights::init(&s.model, 1);
        // Garbage bytes.
        assert!(
            evaluate_update(&s, &global, b"not safetensors", &test)
                .unwrap_err()
                .contains("weights")
        );
        // NaN.
        let mut nan = global.clone();
        nan.flat_mut()[5] = f32::NAN;
        let err =
            evaluate_update(&s, &global, &nan.to_safetensors_bytes().unwrap(), &test).unwrap_err();
        assert!(err.contains("non-finite"), "{err}");
        // Enormous norm.
        let big = global.with_values(global.flat().iter().map(|v| v * 1e6).collect());
        let err =
            evaluate_update(&s, &global, &big.to_safetensors_bytes().unwrap(), &test).unwrap_err();
        assert!(err.contains("norm"), "{err}");
        // A real update trains to a useful accuracy.
        let (trained, _) =
            crate::learn::train(&s.model, &global, &train, &s.train, &progress_bar(false)).unwrap();
        let (_, bps) =
            evaluate_update(&s, &global, &trained.to_safetensors_bytes().unwrap(), &test).unwrap();
        assert!(bps > 7_000, "accuracy {bps} bps");
    }

    #[test]
    fn aggregate_round_of_two_updates_evaluates_the_average() {
        let s = TrainingJobSpec {
            aggregation: AggregationConfig {
                rule: Aggregator::FedAvg,
                ..Default::default()
            },
            ..spec()
        };
        let test = crate::test_utils::learn::load_subset().1.take(500);
        let global = Weights::init(&s.model, 1);
        let a = global.with_values(global.flat().iter().map(|v| v + 0.01).collect());
        let b = global.with_values(global.flat().iter().map(|v| v - 0.03).collect());
        let r = aggregate_round(
            &s,
            &global,
            &[(&a, 300), (&b, 100)],
            &mut ServerState::default(),
            &test,
        )
        .unwrap();
        assert_eq!(r.updates, 2);
        // (0.01 * 300 - 0.03 * 100) / 400 = 0: the average is the global model.
        let max_diff = r
            .weights
            .flat()
            .iter()
            .zip(global.flat())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(max_diff < 1e-6, "{max_diff}");
        assert_eq!(decode_weights(&r.bytes).unwrap(), r.weights);
    }
}
