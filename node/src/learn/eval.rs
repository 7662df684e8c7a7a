//! Evaluation: mean cross-entropy loss and accuracy of weights on a dataset, forward passes
//! only, in large batches.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{
    data::{Dataset, IMAGE_PIXELS},
    model::ModelSpec,
    train::TrainError,
    weights::Weights,
};

/// Images per forward pass during evaluation.
const EVAL_BATCH: usize = 1000;

/// Loss and accuracy on a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Images evaluated.
    pub samples: usize,
    /// Images classified correctly.
    pub correct: usize,
    /// `correct / samples` (0 for an empty dataset).
    pub accuracy: f64,
    /// Mean cross-entropy loss.
    pub loss: f64,
}

/// Evaluates `weights` (of model `spec`) on `data`, on [`super::device()`].
pub fn evaluate(
    spec: &ModelSpec,
    weights: &Weights,
    data: &Dataset,
) -> Result<EvalReport, TrainError> {
    evaluate_on(&super::device(), spec, weights, data)
}

/// [`evaluate`] on an explicit device.
pub fn evaluate_on(
    device: &Device,
    spec: &ModelSpec,
    weights: &Weights,
    data: &Dataset,
) -> Result<EvalReport, TrainError> {
    spec.check()?;
    if !weights.same_layout(&Weights::zeros(spec)) {
        return Err(TrainError::WeightsMismatch { spec: *spec });
    }
    let tensors = weights.to_candle(device)?;
    let model = spec.build(VarBuilder::from_tensors(tensors, DType::F32, device))?;
    let batcher = data.batcher();
    let (mut labels, mut correct, mut loss_sum) = (Vec::new(), 0usize, 0.0f64);
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(EVAL_BATCH) {
        let mut images = Vec::with_capacity(chunk.len() * IMAGE_PIXELS);
        batcher.gather(chunk, &mut images, &mut labels);
        let x = Tensor::from_vec(images, (chunk.len(), IMAGE_PIXELS), device)?;
        let y = Tensor::from_slice(&labels, chunk.len(), device)?;
        let logits = model.forward(&x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()?;
        loss_sum += f64::from(loss) * chunk.len() as f64;
        let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
        correct += predicted
            .iter()
            .zip(&labels)
            .filter(|(p, l)| p == l)
            .count();
    }
    let n = data.len();
    Ok(EvalReport {
        samples: n,
        correct,
        accuracy: if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        },
        loss: if n == 0 { 0.0 } else { loss_sum / n as f64 },
    })
}
