//! Aggregation of contributor updates into the next global model. Pure maths over flat f32
//! slices: no I/O, clock or randomness, so the coordinator's round machine can call it directly.
//!
//! - [`Aggregator::FedAvg`]: the mean of the updates weighted by sample counts, streamed: an
//!   f64 accumulator takes one update at a time, so memory is `8 * params` bytes (plus the
//!   global model) however many updates arrive.
//! - [`Aggregator::Median`] / [`Aggregator::TrimmedMean`]: coordinate-wise robust statistics,
//!   unweighted. They need every update at once: memory is `4 * params * updates` bytes
//!   (1M parameters x 100 updates = 400 MB), so use them for small cohorts.
//! - Norm clipping (`clip_norm`): each update's delta (update - global) is scaled down to at
//!   most that L2 norm before it counts, bounding any single contributor's pull.
//! - FedAvg of identical models returns that model bit for bit (sums of exact f64 products).
//! - Server optimizers ([`ServerOptimizer`]): the aggregated delta is treated as a
//!   pseudo-gradient for server momentum (FedAvgM) or FedAdam, with state kept across rounds
//!   in a [`ServerState`].
//!
//! **Order independence.** Median and trimmed mean sort each coordinate's values, so their
//! result does not depend on arrival order at all. FedAvg sums in f64 and rounds once to f32
//! at the end; the f64 rounding error of up to a few thousand terms is far below half an f32
//! ulp, so two orders give results within 1 f32 ulp of each other per coordinate (bit-equal
//! except when a sum lands within ~1e-16 relative of an f32 rounding boundary).

use std::{borrow::Cow, sync::OnceLock};

use serde::{Deserialize, Serialize};

use super::weights::{Weights, l2_distance};

/// Why aggregation failed.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    /// An update whose tensor layout differs from the global model's.
    #[error("update layout does not match the global model ({found} values, expected {expected})")]
    LayoutMismatch {
        /// Values in the global model.
        expected: usize,
        /// Values in the update.
        found: usize,
    },
    /// `finish` with no update added.
    #[error("no updates to aggregate")]
    NoUpdates,
    /// FedAvg with a zero sample count for an update.
    #[error("an update claims zero samples")]
    ZeroSamples,
    /// Settings out of range.
    #[error("invalid aggregation config: {0}")]
    InvalidConfig(String),
}

/// Which statistic combines the updates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Aggregator {
    /// Mean weighted by sample counts (streaming).
    FedAvg,
    /// Coordinate-wise median (unweighted; mean of the two middle values for an even count).
    Median,
    /// Coordinate-wise mean after dropping the `floor(trim_fraction * n)` smallest and largest
    /// values of each coordinate (unweighted).
    TrimmedMean {
        /// Fraction trimmed from each end, in [0, 0.5).
        trim_fraction: f32,
    },
}

/// What the server does with the aggregated delta.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServerOptimizer {
    /// The new global model is the aggregate itself (`global + delta`).
    #[default]
    None,
    /// FedAvgM: `v = momentum * v + delta; global += lr * v`.
    Momentum {
        /// Server learning rate (1.0 is plain FedAvg when momentum is 0).
        lr: f32,
        /// Momentum factor in [0, 1).
        momentum: f32,
    },
    /// FedAdam (Reddi et al., 2021): `m = b1 m + (1-b1) delta; v = b2 v + (1-b2) delta^2;
    /// global += lr * m / (sqrt(v) + tau)`.
    Adam {
        /// Server learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Adaptivity floor tau (1e-3 in the paper).
        tau: f32,
    },
}

/// How a round's updates become the next global model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AggregationConfig {
    /// The statistic.
    pub rule: Aggregator,
    /// Clip each update's delta to this L2 norm first; `None` disables clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_norm: Option<f32>,
    /// The server optimizer.
    #[serde(default)]
    pub server: ServerOptimizer,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            rule: Aggregator::FedAvg,
            clip_norm: None,
            server: ServerOptimizer::None,
        }
    }
}

impl AggregationConfig {
    /// Checks every setting's range.
    pub fn check(&self) -> Result<(), AggregateError> {
        let bad = |m: String| Err(AggregateError::InvalidConfig(m));
        if let Aggregator::TrimmedMean { trim_fraction } = self.rule
            && !(0.0..0.5).contains(&trim_fraction)
        {
            return bad(format!("trim fraction {trim_fraction} must be in [0, 0.5)"));
        }
        if let Some(c) = self.clip_norm
            && !(c > 0.0 && c.is_finite())
        {
            return bad(format!("clip norm {c} must be positive"));
        }
        match self.server {
            ServerOptimizer::None => {}
            ServerOptimizer::Momentum { lr, momentum } => {
                if !(lr > 0.0 && lr.is_finite() && (0.0..1.0).contains(&momentum)) {
                    return bad(format!("server momentum lr {lr}, momentum {momentum}"));
                }
            }
            ServerOptimizer::Adam {
                lr,
                beta1,
                beta2,
                tau,
            } => {
                if !(lr > 0.0
                    && lr.is_finite()
                    && (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && tau > 0.0
                    && tau.is_finite())
                {
                    return bad(format!(
                        "server adam lr {lr}, betas ({beta1}, {beta2}), tau {tau}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Starts aggregating updates of `global`.
    pub fn start(&self, global: &Weights) -> Result<Accumulator, AggregateError> {
        self.check()?;
        Ok(Accumulator {
            global: global.clone(),
            clip_norm: self.clip_norm,
            server: self.server,
            count: 0,
            clipped: 0,
            total_samples: 0,
            state: match self.rule {
                Aggregator::FedAvg => State::Mean {
                    sum: vec![0.0; global.num_params()],
                },
                Aggregator::Median => State::Robust {
                    updates: Vec::new(),
                    trim: None,
                },
                Aggregator::TrimmedMean { trim_fraction } => State::Robust {
                    updates: Vec::new(),
                    trim: Some(trim_fraction),
                },
            },
        })
    }
}

/// The optimizer state the server keeps between rounds (persist it with the job).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerState {
    /// First moment / momentum buffer (empty until the first round).
    pub m: Vec<f32>,
    /// Second moment (FedAdam only).
    pub v: Vec<f32>,
}

/// What a finished aggregation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregated {
    /// The next global model.
    pub weights: Weights,
    /// Updates that went in.
    pub updates: usize,
    /// Sum of their sample counts.
    pub total_samples: u64,
    /// How many updates were scaled down by norm clipping.
    pub clipped: usize,
}

enum State {
    /// Sum of `samples * update` in f64 (FedAvg).
    Mean { sum: Vec<f64> },
    /// Every (clipped) update, for median / trimmed mean.
    Robust {
        updates: Vec<Vec<f32>>,
        trim: Option<f32>,
    },
}

/// An aggregation in progress: add updates one by one, then [`Accumulator::finish`].
pub struct Accumulator {
    global: Weights,
    clip_norm: Option<f32>,
    server: ServerOptimizer,
    count: usize,
    clipped: usize,
    total_samples: u64,
    state: State,
}

impl Accumulator {
    /// Adds one update (full weights, not a delta) trained on `samples` images; returns whether
    /// norm clipping scaled it down. Its layout must match the global model's; run
    /// [`super::validate_update`] first for the other checks.
    pub fn add(&mut self, update: &Weights, samples: u64) -> Result<bool, AggregateError> {
        Ok(self.add_batch(&[(update, samples)])? == 1)
    }

    /// Adds several updates at once and returns how many norm clipping scaled down. Same result
    /// as adding them one by one, but FedAvg's f64 sums are read and written once per batch
    /// instead of once per update, which is most of the cost of streaming aggregation. The
    /// accumulator's memory does not grow; the batch is the caller's. Nothing is added if any
    /// update is refused.
    pub fn add_batch(&mut self, batch: &[(&Weights, u64)]) -> Result<usize, AggregateError> {
        let mean = matches!(self.state, State::Mean { .. });
        for (update, samples) in batch {
            if !update.same_layout(&self.global) {
                return Err(AggregateError::LayoutMismatch {
                    expected: self.global.num_params(),
                    found: update.num_params(),
                });
            }
            if mean && *samples == 0 {
                return Err(AggregateError::ZeroSamples);
            }
        }
        let g = self.global.flat();
        // An unclipped update is used as is (not as global + delta) so that averaging
        // identical models returns them bit for bit.
        let prepared: Vec<(Cow<'_, [f32]>, f64)> = batch
            .iter()
            .map(|(update, samples)| {
                let u = update.flat();
                let scale = match self.clip_norm {
                    Some(c) => f64::from(c) / l2_distance(u, g),
                    None => 1.0,
                };
                let values = if scale < 1.0 {
                    let s = scale as f32;
                    Cow::Owned(u.iter().zip(g).map(|(&u, &g)| g + (u - g) * s).collect())
                } else {
                    Cow::Borrowed(u)
                };
                (values, *samples as f64)
            })
            .collect();
        let clipped = prepared
            .iter()
            .filter(|(v, _)| matches!(v, Cow::Owned(_)))
            .count();
        match &mut self.state {
            State::Mean { sum } => {
                let weighted: Vec<(&[f32], f64)> =
                    prepared.iter().map(|(v, w)| (v.as_ref(), *w)).collect();
                add_weighted(sum, &weighted);
            }
            State::Robust { updates, .. } => {
                updates.extend(prepared.into_iter().map(|(v, _)| v.into_owned()));
            }
        }
        self.count += batch.len();
        self.clipped += clipped;
        self.total_samples += batch.iter().map(|(_, n)| n).sum::<u64>();
        Ok(clipped)
    }

    /// Updates added so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no update was added yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Combines the updates, applies the server optimizer (updating `server_state`) and returns
    /// the next global model.
    pub fn finish(self, server_state: &mut ServerState) -> Result<Aggregated, AggregateError> {
        if self.count == 0 {
            return Err(AggregateError::NoUpdates);
        }
        let combined: Vec<f32> = match self.state {
            State::Mean { sum } => {
                let total = self.total_samples as f64;
                sum.iter().map(|&s| (s / total) as f32).collect()
            }
            State::Robust { updates, trim } => robust(&updates, trim),
        };
        let g = self.global.flat();
        // The server optimizers step along the pseudo-gradient delta = combined - global.
        let new: Vec<f32> = match self.server {
            ServerOptimizer::None => combined,
            ServerOptimizer::Momentum { lr, momentum } => {
                reset_if_stale(&mut server_state.m, g.len());
                g.iter()
                    .zip(&combined)
                    .zip(server_state.m.iter_mut())
                    .map(|((g, c), m)| {
                        *m = momentum * *m + (c - g);
                        g + lr * *m
                    })
                    .collect()
            }
            ServerOptimizer::Adam {
                lr,
                beta1,
                beta2,
                tau,
            } => {
                reset_if_stale(&mut server_state.m, g.len());
                reset_if_stale(&mut server_state.v, g.len());
                let ServerState { m, v } = server_state;
                g.iter()
                    .zip(&combined)
                    .zip(m.iter_mut().zip(v.iter_mut()))
                    .map(|((g, c), (m, v))| {
                        let d = c - g;
                        *m = beta1 * *m + (1.0 - beta1) * d;
                        *v = beta2 * *v + (1.0 - beta2) * d * d;
                        g + lr * *m / (v.sqrt() + tau)
                    })
                    .collect()
            }
        };
        Ok(Aggregated {
            weights: self.global.with_values(new),
            updates: self.count,
            total_samples: self.total_samples,
            clipped: self.clipped,
        })
    }
}

/// Zeroes a server buffer of the wrong size (first round, or the model changed).
fn reset_if_stale(buf: &mut Vec<f32>, len: usize) {
    if buf.len() != len {
        *buf = vec![0.0; len];
    }
}

/// Elements of the accumulator processed per block: 16 KiB of f64, which stays in L1 while
/// every update of a batch is added to it.
const BLOCK: usize = 2048;

/// `sum += w_k * u_k` for every `(u_k, w_k)`, in f64, block by block so that each block of the
/// sums is loaded and stored once per batch. With integer sample counts below 2^29, every
/// product is exact in f64, and so is the sum of identical values.
fn add_weighted(sum: &mut [f64], updates: &[(&[f32], f64)]) {
    // Large models: one contiguous share of the coordinates per core. Each thread reads its own
    // slice of every update, so the result is the same bits as single-threaded.
    // available_parallelism reads cgroup files on Linux: ask once per process, not per update.
    static THREADS: OnceLock<usize> = OnceLock::new();
    let threads = *THREADS.get_or_init(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
    });
    if threads > 1 && sum.len() * updates.len() >= PARALLEL_MIN_WORK {
        let share = sum.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let mut chunks = sum.chunks_mut(share).enumerate().peekable();
            while let Some((i, part)) = chunks.next() {
                let start = i * share;
                let parts: Vec<(&[f32], f64)> = updates
                    .iter()
                    .map(|(u, w)| (&u[start..start + part.len()], *w))
                    .collect();
                if chunks.peek().is_some() {
                    scope.spawn(move || add_weighted_serial(part, &parts));
                } else {
                    add_weighted_serial(part, &parts); // the last share on this thread
                }
            }
        });
    } else {
        add_weighted_serial(sum, updates);
    }
}

/// Threads used by [`add_weighted`] at most.
const MAX_THREADS: usize = 4;
/// Batches smaller than this many values (parameters x updates) are summed on the calling
/// thread: spawning costs ~50 us, and much more on a saturated machine, where a lone 1M
/// update summed on two threads measured 2x slower than on one.
const PARALLEL_MIN_WORK: usize = 1 << 22;

fn add_weighted_serial(sum: &mut [f64], updates: &[(&[f32], f64)]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above); the function has no other
        // requirement.
        unsafe { add_weighted_avx2(sum, updates) };
        return;
    }
    add_weighted_portable(sum, updates);
}

/// [`add_weighted_portable`] compiled for AVX2 (4 f64 lanes instead of SSE2's 2). Rust never
/// fuses the multiply and add, so both versions give the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_weighted_avx2(sum: &mut [f64], updates: &[(&[f32], f64)]) {
    add_weighted_portable(sum, updates);
}

#[inline(always)]
fn add_weighted_portable(sum: &mut [f64], updates: &[(&[f32], f64)]) {
    for (b, s) in sum.chunks_mut(BLOCK).enumerate() {
        let start = b * BLOCK;
        for (u, w) in updates {
            let u = &u[start..start + s.len()];
            for (s, &u) in s.iter_mut().zip(u) {
                *s += w * f64::from(u);
            }
        }
    }
}

/// Coordinate-wise median (`trim = None`) or trimmed mean of the updates.
fn robust(updates: &[Vec<f32>], trim: Option<f32>) -> Vec<f32> {
    let n = updates.len();
    let len = updates.first().map_or(0, Vec::len);
    let cut = trim.map(|t| ((t * n as f32).floor() as usize).min((n - 1) / 2));
    let mut column = Vec::with_capacity(n);
    (0..len)
        .map(|j| {
            column.clear();
            column.extend(updates.iter().map(|u| u[j]));
            // total_cmp: a NaN (which validation should have refused) sorts last, not panics.
            column.sort_unstable_by(f32::total_cmp);
            match cut {
                None if n % 2 == 1 => column[n / 2],
                None => (column[n / 2 - 1] + column[n / 2]) / 2.0,
                Some(k) => {
                    let kept = &column[k..n - k];
                    (kept.iter().map(|&v| f64::from(v)).sum::<f64>() / kept.len() as f64) as f32
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(values: &[f32]) -> Weights {
        Weights::from_tensors(vec![("t".into(), vec![values.len()], values.to_vec())]).unwrap()
    }

    fn run(cfg: AggregationConfig, global: &Weights, updates: &[(Weights, u64)]) -> Vec<f32> {
        let mut acc = cfg.start(global).unwrap();
        for (u, n) in updates {
            acc.add(u, *n).unwrap();
        }
        acc.finish(&mut ServerState::default())
            .unwrap()
            .weights
            .flat()
            .to_vec()
    }

    fn rule(rule: Aggregator) -> AggregationConfig {
        AggregationConfig {
            rule,
            ..AggregationConfig::default()
        }
    }

    #[test]
    fn fedavg_of_identical_models_is_that_model() {
        let global = w(&[0.0, 0.0, 0.0]);
        let m = w(&[0.1, -3.7, 1e-3]);
        let updates: Vec<_> = (1..=5).map(|n| (m.clone(), n * 10)).collect();
        assert_eq!(
            run(AggregationConfig::default(), &global, &updates),
            m.flat()
        );
        for r in [
            Aggregator::Median,
            Aggregator::TrimmedMean { trim_fraction: 0.2 },
        ] {
            assert_eq!(run(rule(r), &global, &updates), m.flat());
        }
    }

    #[test]
    fn fedavg_hand_computed() {
        // (1*[1,2] + 3*[5,6]) / 4 = [4, 5], from a global of [10, 10] (deltas average the same).
        let global = w(&[10.0, 10.0]);
        let out = run(
            AggregationConfig::default(),
            &global,
            &[(w(&[1.0, 2.0]), 1), (w(&[5.0, 6.0]), 3)],
        );
        assert_eq!(out, [4.0, 5.0]);
    }

    #[test]
    fn median_and_trimmed_mean_hand_computed() {
        let global = w(&[0.0]);
        let ups: Vec<_> = [1.0, 2.0, 3.0, 4.0, 100.0]
            .iter()
            .map(|&v| (w(&[v]), 1))
            .collect();
        assert_eq!(run(rule(Aggregator::Median), &global, &ups), [3.0]);
        assert_eq!(
            run(
                rule(Aggregator::TrimmedMean { trim_fraction: 0.2 }),
                &global,
                &ups
            ),
            [3.0]
        );
        assert_eq!(run(rule(Aggregator::Median), &global, &ups[..4]), [2.5]);
        // trim 0 is the plain unweighted mean.
        assert_eq!(
            run(
                rule(Aggregator::TrimmedMean { trim_fraction: 0.0 }),
                &global,
                &ups
            ),
            [22.0]
        );
    }

    #[test]
    fn clipping_bounds_each_update() {
        // Deltas [3, 4] (norm 5) and [0, 0.5] clipped to norm 1: [0.6, 0.8] and [0, 0.5].
        let cfg = AggregationConfig {
            clip_norm: Some(1.0),
            ..AggregationConfig::default()
        };
        let global = w(&[0.0, 0.0]);
        let mut acc = cfg.start(&global).unwrap();
        assert!(acc.add(&w(&[3.0, 4.0]), 1).unwrap());
        assert!(!acc.add(&w(&[0.0, 0.5]), 1).unwrap());
        let out = acc.finish(&mut ServerState::default()).unwrap().weights;
        assert!((out.flat()[0] - 0.3).abs() < 1e-6 && (out.flat()[1] - 0.65).abs() < 1e-6);
    }

    #[test]
    fn server_momentum_and_adam_hand_computed() {
        let global = w(&[1.0]);
        let ups = [(w(&[3.0]), 1)]; // delta 2
        let mut state = ServerState::default();
        let cfg = AggregationConfig {
            server: ServerOptimizer::Momentum {
                lr: 0.5,
                momentum: 0.9,
            },
            ..AggregationConfig::default()
        };
        let mut acc = cfg.start(&global).unwrap();
        acc.add(&ups[0].0, 1).unwrap();
        assert_eq!(acc.finish(&mut state).unwrap().weights.flat(), [2.0]); // 1 + 0.5 * 2
        let mut acc = cfg.start(&global).unwrap();
        acc.add(&ups[0].0, 1).unwrap();
        // v = 0.9 * 2 + 2 = 3.8; 1 + 0.5 * 3.8 = 2.9
        assert!((acc.finish(&mut state).unwrap().weights.flat()[0] - 2.9).abs() < 1e-6);

        let cfg = AggregationConfig {
            server: ServerOptimizer::Adam {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-3,
            },
            ..AggregationConfig::default()
        };
        let mut state = ServerState::default();
        let mut acc = cfg.start(&global).unwrap();
        acc.add(&ups[0].0, 1).unwrap();
        // m = 0.2, v = 0.04, step = 0.1 * 0.2 / (0.2 + 0.001)
        let want = 1.0 + 0.1 * 0.2 / (0.2 + 1e-3);
        assert!((acc.finish(&mut state).unwrap().weights.flat()[0] - want).abs() < 1e-6);
    }

    #[test]
    fn order_does_not_matter() {
        // 30 pseudo-random updates of 1000 values, aggregated forwards and backwards.
        let n = 1000;
        let global = w(&vec![0.5; n]);
        let mut x = 12345u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let ups: Vec<(Weights, u64)> = (0..30)
            .map(|i| (w(&(0..n).map(|_| next()).collect::<Vec<_>>()), 1 + i * 7))
            .collect();
        let rev: Vec<_> = ups.iter().rev().cloned().collect();
        for r in [
            Aggregator::FedAvg,
            Aggregator::Median,
            Aggregator::TrimmedMean { trim_fraction: 0.1 },
        ] {
            let a = run(rule(r), &global, &ups);
            let b = run(rule(r), &global, &rev);
            for (x, y) in a.iter().zip(&b) {
                // Stated tolerance: 1 f32 ulp.
                assert!(
                    (x - y).abs() <= x.abs().max(y.abs()) * f32::EPSILON,
                    "{r:?}: {x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn errors_are_reported() {
        let global = w(&[0.0, 0.0]);
        let mut acc = AggregationConfig::default().start(&global).unwrap();
        assert!(matches!(
            acc.add(&w(&[1.0]), 1),
            Err(AggregateError::LayoutMismatch {
                expected: 2,
                found: 1
            })
        ));
        assert!(matches!(
            acc.add(&global, 0),
            Err(AggregateError::ZeroSamples)
        ));
        assert!(matches!(
            acc.finish(&mut ServerState::default()),
            Err(AggregateError::NoUpdates)
        ));
        assert!(
            rule(Aggregator::TrimmedMean { trim_fraction: 0.5 })
                .start(&global)
                .is_err()
        );
        let cfg = AggregationConfig {
            clip_norm: Some(0.0),
            ..AggregationConfig::default()
        };
        assert!(cfg.start(&global).is_err());
    }

    #[test]
    fn config_serde_round_trip() {
        let cfg = AggregationConfig {
            rule: Aggregator::TrimmedMean { trim_fraction: 0.1 },
            clip_norm: Some(5.0),
            server: ServerOptimizer::Momentum {
                lr: 1.0,
                momentum: 0.9,
            },
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(
            serde_json::from_str::<AggregationConfig>(&json).unwrap(),
            cfg
        );
    }
}
