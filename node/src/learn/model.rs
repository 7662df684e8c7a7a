//! Model architectures for 28x28 digits and the spec that names one in a job.
//!
//! Layers are created through a candle `VarBuilder` (STYLE §10): the `pp()` names become the
//! safetensors keys, which are wire format, so renaming a layer bumps [`MODEL_VERSION`].
//! Inputs are normalised images flattened to `[batch, 784]`; outputs are logits `[batch, 10]`.

use std::{collections::HashMap, fmt, str::FromStr};

use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::data::{IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES};

/// Version of the tensor naming and layer layout described here.
pub const MODEL_VERSION: u32 = 1;
/// Convolution kernel side of the CNN.
const KERNEL: usize = 5;
/// Largest MLP hidden layer a spec may ask for (keeps a hostile job spec from making every
/// node allocate gigabytes).
const MAX_HIDDEN: usize = 4096;
/// Largest number of channels per CNN layer (conv2 holds conv1 * conv2 * 25 weights).
const MAX_CHANNELS: usize = 256;

/// Why a model could not be described or built.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A spec written for another version of the tensor layout.
    #[error("model version {found} is not supported (this node knows version {MODEL_VERSION})")]
    UnsupportedVersion {
        /// Version in the spec.
        found: u32,
    },
    /// Sizes out of range.
    #[error("invalid model spec: {0}")]
    InvalidSpec(String),
    /// Building or running the candle graph failed (e.g. weights of the wrong shape).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Which network, with its sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Arch {
    /// `784 -> hidden -> 10`, ReLU between (tensors `fc1.*`, `fc2.*`).
    Mlp {
        /// Hidden units (128 by default).
        hidden: usize,
    },
    /// Two 5x5 convolutions, each followed by ReLU and 2x2 max pooling, then one linear layer
    /// (tensors `conv1.*`, `conv2.*`, `fc.*`).
    Cnn {
        /// Channels of the first convolution (16 by default).
        conv1: usize,
        /// Channels of the second convolution (32 by default).
        conv2: usize,
    },
}

/// A model as a job names it: architecture plus layout version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Layout version ([`MODEL_VERSION`]).
    pub version: u32,
    /// Architecture and sizes.
    pub arch: Arch,
}

impl ModelSpec {
    /// The default MLP, 784-128-10.
    pub fn mlp() -> Self {
        Self {
            version: MODEL_VERSION,
            arch: Arch::Mlp { hidden: 128 },
        }
    }

    /// The default CNN: conv 1->16, conv 16->32, linear 512->10.
    pub fn cnn() -> Self {
        Self {
            version: MODEL_VERSION,
            arch: Arch::Cnn {
                conv1: 16,
                conv2: 32,
            },
        }
    }

    /// Checks the version and that every size is within bounds.
    pub fn check(&self) -> Result<(), ModelError> {
        if self.version != MODEL_VERSION {
            return Err(ModelError::UnsupportedVersion {
                found: self.version,
            });
        }
        let (widths, max): (&[usize], usize) = match &self.arch {
            Arch::Mlp { hidden } => (&[*hidden], MAX_HIDDEN),
            Arch::Cnn { conv1, conv2 } => (&[*conv1, *conv2], MAX_CHANNELS),
        };
        if let Some(w) = widths.iter().find(|&&w| w == 0 || w > max) {
            return Err(ModelError::InvalidSpec(format!(
                "layer width {w} must be 1 to {max}"
            )));
        }
        Ok(())
    }

    /// Side of the CNN's feature maps after both conv+pool stages (28 -> 24 -> 12 -> 8 -> 4).
    fn cnn_final_side() -> usize {
        let conv1 = IMAGE_SIDE - KERNEL + 1;
        let conv2 = conv1 / 2 - KERNEL + 1;
        conv2 / 2
    }

    /// Every tensor's name and shape, sorted by name (the order of [`super::Weights`]).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut shapes: Vec<(String, Vec<usize>)> = match self.arch {
            Arch::Mlp { hidden } => vec![
                ("fc1.weight".into(), vec![hidden, IMAGE_PIXELS]),
                ("fc1.bias".into(), vec![hidden]),
                ("fc2.weight".into(), vec![NUM_CLASSES, hidden]),
                ("fc2.bias".into(), vec![NUM_CLASSES]),
            ],
            Arch::Cnn { conv1, conv2 } => {
                let side = Self::cnn_final_side();
                vec![
                    ("conv1.weight".into(), vec![conv1, 1, KERNEL, KERNEL]),
                    ("conv1.bias".into(), vec![conv1]),
                    ("conv2.weight".into(), vec![conv2, conv1, KERNEL, KERNEL]),
                    ("conv2.bias".into(), vec![conv2]),
                    ("fc.weight".into(), vec![NUM_CLASSES, conv2 * side * side]),
                    ("fc.bias".into(), vec![NUM_CLASSES]),
                ]
            }
        };
        shapes.sort_by(|a, b| a.0.cmp(&b.0));
        shapes
    }

    /// The spec whose layout `weights` has (a model file names no architecture: its tensor
    /// names and shapes tell): `None` when it is neither the MLP's nor the CNN's.
    pub fn of_weights(weights: &super::Weights) -> Option<Self> {
        let shape = |name: &str| {
            weights
                .entries()
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.shape.clone())
        };
        let arch = if let Some(fc1) = shape("fc1.weight") {
            Arch::Mlp {
                hidden: *fc1.first()?,
            }
        } else {
            let (c1, c2) = (shape("conv1.weight")?, shape("conv2.weight")?);
            Arch::Cnn {
                conv1: *c1.first()?,
                conv2: *c2.first()?,
            }
        };
        let spec = Self {
            version: MODEL_VERSION,
            arch,
        };
        (spec.check().is_ok() && weights.same_layout(&super::Weights::zeros(&spec))).then_some(spec)
    }

    /// Fan-in of each tensor's layer (for initialisation).
    pub(crate) fn fan_ins(&self) -> HashMap<String, usize> {
        let layers: Vec<(&str, usize)> = match self.arch {
            Arch::Mlp { hidden } => vec![("fc1", IMAGE_PIXELS), ("fc2", hidden)],
            Arch::Cnn { conv1, conv2 } => {
                let side = Self::cnn_final_side();
                vec![
                    ("conv1", KERNEL * KERNEL),
                    ("conv2", conv1 * KERNEL * KERNEL),
                    ("fc", conv2 * side * side),
                ]
            }
        };
        layers
            .into_iter()
            .flat_map(|(l, fan)| [(format!("{l}.weight"), fan), (format!("{l}.bias"), fan)])
            .collect()
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.tensor_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// Builds the network over `vb` (which must hold every tensor of [`Self::tensor_shapes`]).
    pub fn build(&self, vb: VarBuilder<'_>) -> Result<Box<dyn Model>, ModelError> {
        self.check()?;
        Ok(match self.arch {
            Arch::Mlp { hidden } => Box::new(Mlp::new(hidden, vb)?),
            Arch::Cnn { conv1, conv2 } => Box::new(Cnn::new(conv1, conv2, vb)?),
        })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.arch {
            Arch::Mlp { hidden } => write!(f, "mlp-{IMAGE_PIXELS}-{hidden}-{NUM_CLASSES}"),
            Arch::Cnn { conv1, conv2 } => write!(f, "cnn-{conv1}-{conv2}"),
        }
    }
}

impl FromStr for ModelSpec {
    type Err = ModelError;
    /// `mlp` or `cnn` (default sizes).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mlp" => Ok(Self::mlp()),
            "cnn" => Ok(Self::cnn()),
            _ => Err(ModelError::InvalidSpec(format!(
                "unknown model {s:?}: expected mlp or cnn"
            ))),
        }
    }
}

/// A network mapping normalised images `[batch, 784]` to logits `[batch, 10]`.
pub trait Model: Send + Sync {
    /// Logits for a batch.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor>;
}

/// The MLP: `fc1` (784 -> hidden), ReLU, `fc2` (hidden -> 10).
#[derive(Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// Takes `fc1.*` and `fc2.*` from `vb`.
    pub fn new(hidden: usize, vb: VarBuilder<'_>) -> candle_core::Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(IMAGE_PIXELS, hidden, vb.pp("fc1"))?,
            fc2: candle_nn::linear(hidden, NUM_CLASSES, vb.pp("fc2"))?,
        })
    }
}

impl Model for Mlp {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(xs)?.relu()?)
    }
}

/// The CNN: conv1 -> ReLU -> pool -> conv2 -> ReLU -> pool -> flatten -> fc.
#[derive(Debug)]
pub struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    fc: Linear,
}

impl Cnn {
    /// Takes `conv1.*`, `conv2.*` and `fc.*` from `vb`.
    pub fn new(conv1: usize, conv2: usize, vb: VarBuilder<'_>) -> candle_core::Result<Self> {
        let cfg = Conv2dConfig::default();
        let side = ModelSpec::cnn_final_side();
        Ok(Self {
            conv1: candle_nn::conv2d(1, conv1, KERNEL, cfg, vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(conv1, conv2, KERNEL, cfg, vb.pp("conv2"))?,
            fc: candle_nn::linear(conv2 * side * side, NUM_CLASSES, vb.pp("fc"))?,
        })
    }
}

impl Model for Cnn {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let b = xs.dim(0)?;
        let xs = xs.reshape((b, 1, IMAGE_SIDE, IMAGE_SIDE))?;
        let xs = max_pool_2x2(&self.conv1.forward(&xs)?.relu()?)?;
        let xs = max_pool_2x2(&self.conv2.forward(&xs)?.relu()?)?;
        self.fc.forward(&xs.flatten_from(1)?)
    }
}

/// 2x2 max pooling as a reshape and two max reductions. Same values as candle's `max_pool2d`,
/// but its gradient is right: candle 0.11's `max_pool2d` backward multiplies the gradient by
/// the window's share of maxima (1/4 for a unique maximum) where it should divide by it.
fn max_pool_2x2(xs: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    xs.reshape((b, c, h / 2, 2, w / 2, 2))?.max(5)?.max(3)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::learn::Weights;

    #[test]
    fn spec_serde_and_parse() {
        for spec in [ModelSpec::mlp(), ModelSpec::cnn()] {
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(serde_json::from_str::<ModelSpec>(&json).unwrap(), spec);
            let cbor = crate::cbor::to_vec(&spec).unwrap();
            assert_eq!(
                crate::cbor::from_slice::<ModelSpec>(&cbor, 256).unwrap(),
                spec
            );
        }
        assert_eq!("cnn".parse::<ModelSpec>().unwrap(), ModelSpec::cnn());
        assert!("resnet".parse::<ModelSpec>().is_err());
        let mut bad = ModelSpec::mlp();
        bad.version = 99;
        assert!(matches!(
            bad.check(),
            Err(ModelError::UnsupportedVersion { found: 99 })
        ));
        bad = ModelSpec {
            version: MODEL_VERSION,
            arch: Arch::Mlp { hidden: 0 },
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn both_models_map_batches_to_logits() {
        let dev = Device::Cpu;
        for spec in [ModelSpec::mlp(), ModelSpec::cnn()] {
            let w = Weights::init(&spec, 3);
            let vb = VarBuilder::from_tensors(w.to_candle(&dev).unwrap(), DType::F32, &dev);
            let model = spec.build(vb).unwrap();
            let xs = Tensor::zeros((3, IMAGE_PIXELS), DType::F32, &dev).unwrap();
            assert_eq!(model.forward(&xs).unwrap().dims(), &[3, NUM_CLASSES]);
        }
        assert_eq!(ModelSpec::cnn().num_params(), 416 + 12_832 + 5_130);
    }

    #[test]
    fn max_pool_matches_candle_values_with_the_right_gradient() {
        let dev = Device::Cpu;
        let x = candle_core::Var::from_vec((0..32).map(|v| v as f32).collect(), (1, 2, 4, 4), &dev)
            .unwrap();
        let ours = max_pool_2x2(x.as_tensor()).unwrap();
        let theirs = x.as_tensor().max_pool2d(2).unwrap();
        assert_eq!(
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // d(sum of pooled)/dx is 1 at each window's maximum, 0 elsewhere.
        let grads = ours.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        let g = g.to_vec1::<f32>().unwrap();
        assert_eq!(g.iter().sum::<f32>(), 8.0);
        assert_eq!(g[5], 1.0); // max of the first window (values 0, 1, 4, 5)
    }

    #[test]
    fn build_rejects_weights_of_the_wrong_shape() {
        let dev = Device::Cpu;
        let w = Weights::init(&ModelSpec::mlp(), 3);
        let vb = VarBuilder::from_tensors(w.to_candle(&dev).unwrap(), DType::F32, &dev);
        let other = ModelSpec {
            version: MODEL_VERSION,
            arch: Arch::Mlp { hidden: 64 },
        };
        assert!(matches!(other.build(vb), Err(ModelError::Candle(_))));
    }
}
