//! Distributed inference, the pure part: how a batch is cut into parts, the part outputs the
//! workers store as blobs, and the requester's plan (which part runs where, retries after a
//! failure, the joined result). Nothing here reads a clock, the chain or the network.
//!
//! A job on `InferencePool` names a model blob, an input blob (an IDX file of 28x28 images)
//! and a number of parts. Part `i` of `p` over `n` images covers images
//! `[i * n / p, (i + 1) * n / p)`, so every part differs by at most one image and the parts
//! tile the batch in order. A worker (a provider of the cluster) runs its part, stores a
//! [`PartOutput`] blob and posts that blob's hash with its compute time on chain; the requester
//! fetches the blob, checks it against the hash on chain and the range it asked for, and joins
//! the parts in order.

use std::collections::BTreeSet;

use alloy::primitives::U256;
use serde::{Deserialize, Serialize};

use crate::{cbor, hash::Hash32, learn::data::NUM_CLASSES};

use super::cluster::PeerBytes;

/// Version of [`PartOutput`].
pub const OUTPUT_VERSION: u16 = 1;
/// Largest input blob (an IDX images file) a worker fetches: 160k MNIST images.
pub const MAX_INPUT_BYTES: usize = 128 << 20;
/// Largest images per part the requester cuts by default (the contract allows 4,096 parts).
pub const PART_IMAGES: u64 = 5_000;
/// Most parts of a job (the contract's `MAX_PARTS`).
pub const MAX_PARTS: u32 = 4_096;
/// Largest encoded [`PartOutput`] read.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// Delay before a failed part is tried again (doubling up to [`MAX_RETRY_MS`]).
pub const RETRY_MS: u64 = 500;
/// Longest delay between tries of a part.
pub const MAX_RETRY_MS: u64 = 8_000;

/// Why a part output was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    /// A part output is not what was asked for.
    #[error("bad part output: {0}")]
    BadOutput(String),
}

/// The images `(start, count)` of part `part` of `parts` over `n` images.
pub fn part_range(n: u64, parts: u32, part: u32) -> (u64, u64) {
    let (p, i) = (u128::from(parts.max(1)), u128::from(part));
    let n = u128::from(n);
    // u128: n * p cannot overflow for any u64 n and u32 p.
    let start = (i * n / p) as u64;
    let end = ((i + 1) * n / p) as u64;
    (start, end.saturating_sub(start))
}

/// The parts a requester cuts `images` into for `workers` machines: at least one per worker,
/// and none above [`PART_IMAGES`] images.
pub fn default_parts(images: u64, workers: usize) -> u32 {
    let by_size = images.div_ceil(PART_IMAGES);
    let parts = by_size.max(workers as u64).min(images).max(1);
    parts.min(u64::from(MAX_PARTS)) as u32
}

/// The price per compute second a requester offers by default: the dearest machine's hourly
/// price spread over the hour's seconds (rounded up, at least 1 wei), so a second of work pays
/// what a second of the rental costs.
pub fn default_price_per_second(max_price_per_hour: U256) -> U256 {
    max_price_per_hour
        .div_ceil(U256::from(3_600u64))
        .max(U256::from(1u64))
}

/// A part's predictions as a worker stores them (CBOR, content-addressed: its blob id is the
/// result hash posted on chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartOutput {
    /// [`OUTPUT_VERSION`].
    pub v: u16,
    /// The InferencePool job.
    pub job_id: u64,
    /// The part.
    pub part: u32,
    /// Its first image in the batch.
    pub start: u64,
    /// The predicted class of each of its images, in order.
    #[serde(with = "serde_bytes")]
    pub labels: Vec<u8>,
}

impl PartOutput {
    /// Encodes the output.
    pub fn to_bytes(&self) -> Result<Vec<u8>, InferenceError> {
        cbor::to_vec(self).map_err(|e| InferenceError::BadOutput(e.to_string()))
    }

    /// Decodes an output and checks it is the one asked for: `job_id`, `part`, `start` and
    /// `count` images, every label a class.
    pub fn decode_checked(
        bytes: &[u8],
        job_id: u64,
        part: u32,
        start: u64,
        count: u64,
    ) -> Result<Self, InferenceError> {
        let out: Self = cbor::from_slice(bytes, MAX_OUTPUT_BYTES)
            .map_err(|e| InferenceError::BadOutput(e.to_string()))?;
        if out.v != OUTPUT_VERSION {
            return Err(InferenceError::BadOutput(format!(
                "version {} (we read {OUTPUT_VERSION})",
                out.v
            )));
        }
        if (out.job_id, out.part, out.start) != (job_id, part, start) {
            return Err(InferenceError::BadOutput(format!(
                "it is job {} part {} from image {}, not job {job_id} part {part} from {start}",
                out.job_id, out.part, out.start
            )));
        }
        if out.labels.len() as u64 != count {
            return Err(InferenceError::BadOutput(format!(
                "{} predictions for {count} images",
                out.labels.len()
            )));
        }
        if out.labels.iter().any(|l| usize::from(*l) >= NUM_CLASSES) {
            return Err(InferenceError::BadOutput(
                "a prediction is not a class".into(),
            ));
        }
        Ok(out)
    }
}

/// Where a part stands in the requester's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged: an internally tagged enum buffers its fields, which makes serde treat
// CBOR as human-readable and read `Hash32` as hex text.
#[serde(rename_all = "snake_case")]
pub enum PartState {
    /// Waiting for a worker, not before `not_before_ms`.
    Pending {
        /// Earliest next try (local clock, ms).
        not_before_ms: u64,
    },
    /// Sent to `worker`.
    Running {
        /// The worker (PeerId bytes).
        worker: PeerBytes,
    },
    /// Posted on chain and fetched.
    Done {
        /// The worker that ran it.
        worker: PeerBytes,
        /// Its output blob (the hash on chain).
        result: Hash32,
        /// Compute time the worker posted.
        compute_ms: u64,
        /// $DUCK paid for it (wei, decimal).
        payment: String,
    },
}

/// One part of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSlot {
    /// First image.
    pub start: u64,
    /// Images.
    pub count: u64,
    /// Where it stands.
    pub state: PartState,
    /// Failed tries so far.
    pub failures: u32,
    /// Workers that failed it (tried last).
    pub failed_by: BTreeSet<PeerBytes>,
    /// The predictions once done.
    #[serde(with = "serde_bytes", default)]
    pub labels: Vec<u8>,
}

/// The requester's plan: parts, who runs them, what came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The parts, in batch order.
    pub parts: Vec<PartSlot>,
}

impl Plan {
    /// A plan of `parts` parts over `images` images, all pending.
    pub fn new(images: u64, parts: u32) -> Self {
        Self {
            parts: (0..parts)
                .map(|i| {
                    let (start, count) = part_range(images, parts, i);
                    PartSlot {
                        start,
                        count,
                        state: PartState::Pending { not_before_ms: 0 },
                        failures: 0,
                        failed_by: BTreeSet::new(),
                        labels: Vec::new(),
                    }
                })
                .collect(),
        }
    }

    /// After a restart nothing runs any more: running parts go back to pending.
    pub fn reset_running(&mut self) {
        for p in &mut self.parts {
            if matches!(p.state, PartState::Running { .. }) {
                p.state = PartState::Pending { not_before_ms: 0 };
            }
        }
    }

    /// Hands due pending parts to idle `workers` (one part per worker at a time; a worker
    /// that failed a part gets it only when no other idle worker is there). Marks them running
    /// and returns `(part, worker)`.
    pub fn assign(&mut self, now_ms: u64, workers: &[PeerBytes]) -> Vec<(u32, PeerBytes)> {
        let busy: BTreeSet<PeerBytes> = self
            .parts
            .iter()
            .filter_map(|p| match &p.state {
                PartState::Running { worker } => Some(worker.clone()),
                _ => None,
            })
            .collect();
        let mut idle: Vec<PeerBytes> = workers
            .iter()
            .filter(|w| !busy.contains(*w))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for (i, p) in self.parts.iter_mut().enumerate() {
            if idle.is_empty() {
                break;
            }
            let PartState::Pending { not_before_ms } = p.state else {
                continue;
            };
            if not_before_ms > now_ms {
                continue;
            }
            let pick = idle
                .iter()
                .position(|w| !p.failed_by.contains(w))
                .unwrap_or(0);
            let worker = idle.remove(pick);
            p.state = PartState::Running {
                worker: worker.clone(),
            };
            out.push((i as u32, worker));
        }
        out
    }

    /// `worker` failed `part`: it goes back to pending after a growing delay. Ignored unless
    /// that worker runs that part.
    pub fn failed(&mut self, part: u32, worker: &PeerBytes, now_ms: u64) {
        let Some(p) = self.parts.get_mut(part as usize) else {
            return;
        };
        if !matches!(&p.state, PartState::Running { worker: w } if w == worker) {
            return;
        }
        p.failures = p.failures.saturating_add(1);
        p.failed_by.insert(worker.clone());
        let delay = RETRY_MS
            .saturating_mul(1u64 << p.failures.min(16).saturating_sub(1))
            .min(MAX_RETRY_MS);
        p.state = PartState::Pending {
            not_before_ms: now_ms.saturating_add(delay),
        };
    }

    /// `part` came back: its output was checked by the caller.
    pub fn done(
        &mut self,
        part: u32,
        worker: PeerBytes,
        result: Hash32,
        compute_ms: u64,
        payment: String,
        labels: Vec<u8>,
    ) {
        if let Some(p) = self.parts.get_mut(part as usize) {
            p.state = PartState::Done {
                worker,
                result,
                compute_ms,
                payment,
            };
            p.labels = labels;
        }
    }

    /// Parts done.
    pub fn done_count(&self) -> usize {
        self.parts
            .iter()
            .filter(|p| matches!(p.state, PartState::Done { .. }))
            .count()
    }

    /// Whether every part is done.
    pub fn is_complete(&self) -> bool {
        self.done_count() == self.parts.len()
    }

    /// The predictions of the whole batch, in order, once every part is done.
    pub fn joined(&self) -> Option<Vec<u8>> {
        if !self.is_complete() {
            return None;
        }
        Some(
            self.parts
                .iter()
                .flat_map(|p| p.labels.iter().copied())
                .collect(),
        )
    }

    /// Compute milliseconds posted per worker, summed.
    pub fn compute_ms_total(&self) -> u64 {
        self.parts
            .iter()
            .filter_map(|p| match p.state {
                PartState::Done { compute_ms, .. } => Some(compute_ms),
                _ => None,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u8) -> PeerBytes {
        vec![n]
    }

    #[test]
    fn parts_tile_the_batch_in_order() {
        for (n, parts) in [(10_000u64, 3u32), (7, 7), (5, 1), (1, 1), (10_001, 4)] {
            let mut next = 0;
            for i in 0..parts {
                let (start, count) = part_range(n, parts, i);
                assert_eq!(start, next);
                assert!(count >= n / u64::from(parts));
                assert!(count <= n.div_ceil(u64::from(parts)));
                next = start + count;
            }
            assert_eq!(next, n);
        }
        assert_eq!(part_range(10_000, 3, 0), (0, 3_333));
        assert_eq!(part_range(10_000, 3, 2), (6_666, 3_334));
        // Huge batches do not overflow.
        let (s, c) = part_range(u64::MAX, MAX_PARTS, MAX_PARTS - 1);
        assert_eq!(s + c, u64::MAX);
    }

    #[test]
    fn default_parts_one_per_worker_and_bounded_size() {
        assert_eq!(default_parts(10_000, 3), 3);
        assert_eq!(default_parts(10_000, 1), 2);
        assert_eq!(default_parts(2, 3), 2, "no empty parts");
        assert_eq!(default_parts(0, 3), 1);
        assert_eq!(default_parts(u64::MAX, 1), MAX_PARTS);
    }

    #[test]
    fn default_price_rounds_up_to_a_wei() {
        assert_eq!(
            default_price_per_second(U256::from(3_600u64)),
            U256::from(1u64)
        );
        assert_eq!(
            default_price_per_second(U256::from(3_601u64)),
            U256::from(2u64)
        );
        assert_eq!(default_price_per_second(U256::ZERO), U256::from(1u64));
    }

    #[test]
    fn output_checked_against_what_was_asked() {
        let out = PartOutput {
            v: OUTPUT_VERSION,
            job_id: 4,
            part: 1,
            start: 10,
            labels: vec![1, 2, 9],
        };
        let bytes = out.to_bytes().unwrap();
        assert_eq!(
            PartOutput::decode_checked(&bytes, 4, 1, 10, 3).unwrap(),
            out
        );
        for (job, part, start, count) in
            [(5, 1, 10, 3), (4, 2, 10, 3), (4, 1, 11, 3), (4, 1, 10, 4)]
        {
            assert!(PartOutput::decode_checked(&bytes, job, part, start, count).is_err());
        }
        let bad = PartOutput {
            labels: vec![1, 10, 2],
            ..out.clone()
        };
        assert!(PartOutput::decode_checked(&bad.to_bytes().unwrap(), 4, 1, 10, 3).is_err());
        let future = PartOutput { v: 2, ..out };
        assert!(PartOutput::decode_checked(&future.to_bytes().unwrap(), 4, 1, 10, 3).is_err());
        assert!(PartOutput::decode_checked(&[0xff, 0x00, 0x13], 4, 1, 10, 3).is_err());
        assert!(PartOutput::decode_checked(&bytes[..bytes.len() - 1], 4, 1, 10, 3).is_err());
    }

    #[test]
    fn plan_survives_the_store_encoding() {
        let mut plan = Plan::new(9, 3);
        plan.assign(0, &[w(1), w(2)]);
        plan.failed(1, &w(2), 5);
        plan.done(0, w(1), Hash32::of(b"a"), 4, "4".into(), vec![1, 2, 3]);
        let bytes = cbor::to_vec(&plan).unwrap();
        assert_eq!(cbor::from_slice::<Plan>(&bytes, 1 << 20).unwrap(), plan);
    }

    #[test]
    fn plan_one_part_per_idle_worker() {
        let mut plan = Plan::new(10, 4);
        let got = plan.assign(0, &[w(1), w(2)]);
        assert_eq!(got, vec![(0, w(1)), (1, w(2))]);
        // Both busy: nothing more.
        assert!(plan.assign(0, &[w(1), w(2)]).is_empty());
        plan.done(0, w(1), Hash32::of(b"a"), 5, "5".into(), vec![0; 2]);
        assert_eq!(plan.assign(0, &[w(1), w(2)]), vec![(2, w(1))]);
    }

    #[test]
    fn failed_part_moves_to_another_worker_after_a_delay() {
        let mut plan = Plan::new(9, 3);
        assert_eq!(plan.assign(0, &[w(1), w(2), w(3)]).len(), 3);
        // Worker 2 dies with part 1; a failure reported by the wrong worker is ignored.
        plan.failed(1, &w(3), 100);
        assert!(matches!(plan.parts[1].state, PartState::Running { .. }));
        plan.failed(1, &w(2), 100);
        assert!(
            plan.assign(100, &[w(1), w(3)]).is_empty(),
            "not before the delay"
        );
        plan.done(0, w(1), Hash32::of(b"a"), 1, "1".into(), vec![1; 3]);
        // Both 1 and 2 idle: the part goes to the one that did not fail it.
        assert_eq!(plan.assign(100 + RETRY_MS, &[w(2), w(1)]), vec![(1, w(1))]);
        plan.failed(1, &w(1), 1_000);
        // Only failed workers left: one of them tries again, later still.
        assert!(plan.assign(1_000 + RETRY_MS, &[w(1)]).is_empty());
        assert_eq!(plan.assign(1_000 + 2 * RETRY_MS, &[w(1)]), vec![(1, w(1))]);
        assert_eq!(plan.parts[1].failures, 2);
    }

    #[test]
    fn joined_in_order_once_complete_and_restart_resets_running() {
        let mut plan = Plan::new(5, 2);
        plan.assign(0, &[w(1), w(2)]);
        plan.done(1, w(2), Hash32::of(b"b"), 7, "7".into(), vec![3, 4, 5]);
        assert_eq!(plan.joined(), None);
        plan.reset_running();
        assert_eq!(plan.parts[0].state, PartState::Pending { not_before_ms: 0 });
        assert!(matches!(plan.parts[1].state, PartState::Done { .. }));
        plan.assign(0, &[w(1)]);
        plan.done(0, w(1), Hash32::of(b"a"), 3, "3".into(), vec![1, 2]);
        assert_eq!(plan.joined(), Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(plan.compute_ms_total(), 10);
    }
}
