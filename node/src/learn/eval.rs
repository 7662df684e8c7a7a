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
    let (net, chunk_size) = build(device, spec, weights)?;
    let batcher = data.batcher();
    let (mut labels, mut correct, mut loss_sum) = (Vec::new(), 0usize, 0.0f64);
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(chunk_size) {
        let mut images = Vec::with_capacity(chunk.len() * IMAGE_PIXELS);
        batcher.gather(chunk, &mut images, &mut labels);
        let logits = net.logits(images, chunk.len(), device)?;
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

/// Builds the network that computes `spec`'s logits from `weights` on `device`, with the
/// number of images per forward pass that suits it.
fn build(device: &Device, spec: &ModelSpec, weights: &Weights) -> Result<(Net, usize), TrainError> {
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
    let chunk = match net {
        Net::Cnn(_) => 250,
        Net::Model(_) => EVAL_BATCH,
    };
    Ok((net, chunk))
}

impl Net {
    /// Logits of `n` normalised images.
    fn logits(&self, images: Vec<f32>, n: usize, device: &Device) -> Result<Tensor, TrainError> {
        Ok(match self {
            Net::Cnn(engine) => engine.logits(&images, n)?,
            Net::Model(model) => {
                let x = Tensor::from_vec(images, (n, IMAGE_PIXELS), device)?;
                model.forward(&x)?
            }
        })
    }
}

/// The predicted class of every image of `data` (its labels are ignored), in order, on
/// [`super::device()`]. An image's logits do not depend on the other images of its batch, so
/// the parts of a batch split across machines predict what one machine would.
pub fn predict(spec: &ModelSpec, weights: &Weights, data: &Dataset) -> Result<Vec<u8>, TrainError> {
    predict_on(&super::device(), spec, weights, data)
}

/// [`predict`] on an explicit device.
pub fn predict_on(
    device: &Device,
    spec: &ModelSpec,
    weights: &Weights,
    data: &Dataset,
) -> Result<Vec<u8>, TrainError> {
    let (net, chunk_size) = build(device, spec, weights)?;
    let batcher = data.batcher();
    let (mut labels, mut out) = (Vec::new(), Vec::with_capacity(data.len()));
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(chunk_size) {
        let mut images = Vec::with_capacity(chunk.len() * IMAGE_PIXELS);
        batcher.gather(chunk, &mut images, &mut labels);
        let predicted = net
            .logits(images, chunk.len(), device)?
            .argmax(1)?
            .to_vec1::<u32>()?;
        // argmax over 10 classes: always below 10.
        out.extend(predicted.into_iter().map(|p| p as u8));
    }
    Ok(out)
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

    fn noise_images(n: usize, seed: u32) -> Dataset {
        let mut x = seed;
        let pixels: Vec<u8> = (0..n * IMAGE_PIXELS)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        Dataset::new(pixels, (0..n).map(|i| (i % 10) as u8).collect()).unwrap()
    }

    #[test]
    fn predictions_agree_with_evaluation_and_with_any_split() {
        for spec in [ModelSpec::mlp(), ModelSpec::cnn()] {
            let w = Weights::init(&spec, 9);
            let data = noise_images(1_300, 5);
            let whole = predict(&spec, &w, &data).unwrap();
            assert_eq!(whole.len(), data.len());
            let correct = whole
                .iter()
                .zip(data.labels())
                .filter(|(p, l)| p == l)
                .count();
            assert_eq!(correct, evaluate(&spec, &w, &data).unwrap().correct);
            // Parts cut at odd places, as a cluster cuts an inference batch.
            let mut joined = Vec::new();
            for (start, count) in [(0, 433), (433, 434), (867, 433)] {
                let part = data.range(start, count).unwrap();
                joined.extend(predict(&spec, &w, &part).unwrap());
            }
            assert_eq!(joined, whole, "{spec}");
        }
    }

    #[test]
    fn spec_of_weights_reads_the_layout() {
        for spec in [
            ModelSpec::mlp(),
            ModelSpec::cnn(),
            ModelSpec {
                arch: Arch::Mlp { hidden: 32 },
                ..ModelSpec::mlp()
            },
        ] {
            assert_eq!(ModelSpec::of_weights(&Weights::init(&spec, 1)), Some(spec));
        }
        // Some other network's tensors.
        let odd =
            Weights::from_tensors(vec![("fc1.weight".into(), vec![3, 5], vec![0.0; 15])]).unwrap();
        assert_eq!(ModelSpec::of_weights(&odd), None);
    }
}
