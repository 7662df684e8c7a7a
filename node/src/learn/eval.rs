//! Evaluation: mean cross-entropy loss and accuracy of weights on a dataset, forward passes
//! only, in large batches.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{
    cnn_engine::CnnEngine,
    data::{Dataset, IMAGE_PIXELS},
    model::{Arch, Model, ModelSpec},
    train::TrainError,
    weights::Weights,
};

/// Images per forward pass during evaluation.
const EVAL_BATCH: usize = 1000;

/// What computes the logits.
enum Net {
    Cnn(CnnEngine),
    Model(Box<dyn Model>),
}

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
    // The CNN on the CPU: the training engine's im2col forward pass, ~3x faster than candle's
    // conv2d here. Chunks of 250 images keep its patch matrices near 25 MB.
    let net = match spec.arch {
        Arch::Cnn { conv1, conv2 } if matches!(device, Device::Cpu) => {
            let params = weights
                .entries()
                .iter()
                .map(|e| {
                    Var::from_slice(
                        &weights.flat()[e.offset..e.offset + e.len],
                        e.shape.as_slice(),
                        device,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            Net::Cnn(CnnEngine::new(weights, params, device, conv1, conv2)?)
        }
        _ => Net::Model(spec.build(VarBuilder::from_tensors(
            weights.to_candle(device)?,
            DType::F32,
            device,
        ))?),
    };
    let chunk_size = match net {
        Net::Cnn(_) => 250,
        Net::Model(_) => EVAL_BATCH,
    };
    let batcher = data.batcher();
    let (mut labels, mut correct, mut loss_sum) = (Vec::new(), 0usize, 0.0f64);
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(chunk_size) {
        let mut images = Vec::with_capacity(chunk.len() * IMAGE_PIXELS);
        batcher.gather(chunk, &mut images, &mut labels);
        let logits = match &net {
            Net::Cnn(engine) => engine.logits(&images, chunk.len())?,
            Net::Model(model) => {
                let x = Tensor::from_vec(images, (chunk.len(), IMAGE_PIXELS), device)?;
                model.forward(&x)?
            }
        };
        let y = Tensor::from_slice(&labels, chunk.len(), device)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnn_fast_path_matches_the_candle_model() {
        let spec = ModelSpec::cnn();
        let w = Weights::init(&spec, 4);
        let mut x = 3u32;
        let pixels: Vec<u8> = (0..300 * IMAGE_PIXELS)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        let data = Dataset::new(pixels, (0..300).map(|i| (i % 10) as u8).collect()).unwrap();
        let fast = evaluate(&spec, &w, &data).unwrap();
        // The generic path, as on a GPU: candle's conv2d through the Model trait.
        let dev = Device::Cpu;
        let model = spec
            .build(VarBuilder::from_tensors(
                w.to_candle(&dev).unwrap(),
                DType::F32,
                &dev,
            ))
            .unwrap();
        let x = Tensor::from_vec(data.normalised(), (300, IMAGE_PIXELS), &dev).unwrap();
        let y = Tensor::from_slice(
            &data
                .labels()
                .iter()
                .map(|&l| u32::from(l))
                .collect::<Vec<_>>(),
            300,
            &dev,
        )
        .unwrap();
        let logits = model.forward(&x).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &y)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (fast.loss - f64::from(loss)).abs() < 1e-4,
            "{fast:?} vs {loss}"
        );
    }
}
