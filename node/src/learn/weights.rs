//! Model weights as named f32 tensors in one flat buffer, in a fixed order (sorted by name, the
//! same order safetensors writes) so that every node lays out the same model identically and
//! aggregation can run over flat slices. The safetensors bytes are deterministic for the same
//! values: their BLAKE3 hash is the model hash recorded on chain.

use std::{collections::HashMap, path::Path};

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng, rngs::StdRng};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::model::ModelSpec;
use crate::hash::Hash32;

/// Largest safetensors JSON header we parse (ours are a few hundred bytes).
const MAX_HEADER_BYTES: usize = 64 << 10;
/// Most tensors one weights file may hold.
const MAX_TENSORS: usize = 256;

/// Why weights could not be built, encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// Input larger than the caller's cap.
    #[error("weights of {len} bytes exceed the {limit}-byte limit")]
    TooLarge {
        /// Input size.
        len: usize,
        /// The cap.
        limit: usize,
    },
    /// The safetensors header is larger than we accept.
    #[error("safetensors header of {len} bytes exceeds {MAX_HEADER_BYTES}")]
    HeaderTooLarge {
        /// Announced header size.
        len: u64,
    },
    /// Not a valid safetensors file.
    #[error("malformed safetensors: {0}")]
    Malformed(String),
    /// A tensor of another type than f32.
    #[error("tensor {name:?} has dtype {dtype}, expected F32")]
    WrongDtype {
        /// Tensor name.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// Too many tensors.
    #[error("{count} tensors exceed the limit of {MAX_TENSORS}")]
    TooManyTensors {
        /// Tensors found.
        count: usize,
    },
    /// The same name twice, or a tensor whose data does not match its shape.
    #[error("bad tensor {name:?}: {reason}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("cannot read or write {path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A candle operation failed while converting to or from tensors.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// One tensor's place in the flat buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Tensor name, e.g. `fc1.weight` (wire format: renaming one bumps the model version).
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// First element in the flat buffer.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

/// Named f32 tensors stored in one flat buffer, sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    entries: Vec<Entry>,
    data: Vec<f32>,
}

impl Weights {
    /// Builds weights from `(name, shape, values)` triples, in any order.
    pub fn from_tensors(
        mut tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    ) -> Result<Self, WeightsError> {
        if tensors.len() > MAX_TENSORS {
            return Err(WeightsError::TooManyTensors {
                count: tensors.len(),
            });
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let mut entries = Vec::with_capacity(tensors.len());
        let mut data = Vec::with_capacity(tensors.iter().map(|t| t.2.len()).sum());
        for (i, (name, shape, values)) in tensors.into_iter().enumerate() {
            if i > 0 && entries.last().is_some_and(|e: &Entry| e.name == name) {
                return Err(WeightsError::BadTensor {
                    name,
                    reason: "duplicate name".into(),
                });
            }
            let numel: usize = shape.iter().product();
            if numel != values.len() {
                return Err(WeightsError::BadTensor {
                    name,
                    reason: format!("shape {shape:?} needs {numel} values, got {}", values.len()),
                });
            }
            entries.push(Entry {
                name,
                shape,
                offset: data.len(),
                len: numel,
            });
            data.extend_from_slice(&values);
        }
        Ok(Self { entries, data })
    }

    /// Weights of `spec` with every value zero (check an untrusted spec with
    /// [`ModelSpec::check`] first: its sizes decide the allocation).
    pub fn zeros(spec: &ModelSpec) -> Self {
        let mut offset = 0;
        let entries: Vec<Entry> = spec
            .tensor_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let len = shape.iter().product();
                let e = Entry {
                    name,
                    shape,
                    offset,
                    len,
                };
                offset += len;
                e
            })
            .collect();
        Self {
            entries,
            data: vec![0.0; offset],
        }
    }

    /// Fresh weights for `spec`, reproducible from `seed`: PyTorch's default initialisation
    /// for linear and conv layers, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    pub fn init(spec: &ModelSpec, seed: u64) -> Self {
        let mut w = Self::zeros(spec);
        let mut rng = StdRng::seed_from_u64(seed);
        let fans = spec.fan_ins();
        for e in &w.entries {
            let fan_in = fans.get(&e.name).copied().unwrap_or(1).max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            for v in &mut w.data[e.offset..e.offset + e.len] {
                *v = rng.random_range(-bound..bound);
            }
        }
        w
    }

    /// The tensors' names, shapes and positions, sorted by name.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// All values, tensor after tensor in [`Weights::entries`] order.
    pub fn flat(&self) -> &[f32] {
        &self.data
    }

    /// All values, mutable.
    pub fn flat_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Total number of values.
    pub fn num_params(&self) -> usize {
        self.data.len()
    }

    /// The values of the tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| &self.data[e.offset..e.offset + e.len])
    }

    /// Whether `other` has the same names and shapes in the same order.
    pub fn same_layout(&self, other: &Weights) -> bool {
        self.entries == other.entries
    }

    /// The same layout with these values (panics if the length differs: a programming error).
    pub fn with_values(&self, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), self.data.len(), "flat length must match layout");
        Self {
            entries: self.entries.clone(),
            data,
        }
    }

    /// Euclidean distance to `other` over all values, in f64 (layouts must match).
    pub fn l2_distance(&self, other: &Weights) -> f64 {
        l2_distance(&self.data, &other.data)
    }

    /// Encodes as safetensors (F32, little-endian, header metadata `format: pt`). Deterministic:
    /// tensors are written sorted by name and the header has a single metadata key.
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, WeightsError> {
        let bytes: Vec<Vec<u8>> = self
            .entries
            .iter()
            .map(|e| {
                self.data[e.offset..e.offset + e.len]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
            .collect();
        let views = self
            .entries
            .iter()
            .zip(&bytes)
            .map(|(e, b)| {
                TensorView::new(Dtype::F32, e.shape.clone(), b)
                    .map(|v| (e.name.as_str(), v))
                    .map_err(|err| WeightsError::Malformed(err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| WeightsError::Malformed(e.to_string()))
    }

    /// Decodes safetensors bytes of at most `limit` bytes holding only F32 tensors.
    pub fn from_safetensors_bytes(bytes: &[u8], limit: usize) -> Result<Self, WeightsError> {
        if bytes.len() > limit {
            return Err(WeightsError::TooLarge {
                len: bytes.len(),
                limit,
            });
        }
        let header: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| WeightsError::Malformed("shorter than the 8-byte header size".into()))?;
        let header_len = u64::from_le_bytes(header);
        if header_len > MAX_HEADER_BYTES as u64 {
            return Err(WeightsError::HeaderTooLarge { len: header_len });
        }
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Malformed(e.to_string()))?;
        if st.len() > MAX_TENSORS {
            return Err(WeightsError::TooManyTensors { count: st.len() });
        }
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                if view.dtype() != Dtype::F32 {
                    return Err(WeightsError::WrongDtype {
                        name,
                        dtype: view.dtype().to_string(),
                    });
                }
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok((name, view.shape().to_vec(), values))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_tensors(tensors)
    }

    /// The BLAKE3 hash of the safetensors bytes: the model hash used on chain and as blob id.
    pub fn hash(&self) -> Result<Hash32, WeightsError> {
        Ok(Hash32::of(&self.to_safetensors_bytes()?))
    }

    /// Writes the safetensors bytes to `path` (via a temp file and rename: never half-written).
    pub fn save(&self, path: &Path) -> Result<(), WeightsError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| WeightsError::Io { path, source }
        };
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, self.to_safetensors_bytes()?).map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    }

    /// Reads a safetensors file of at most `limit` bytes.
    pub fn load(path: &Path, limit: usize) -> Result<Self, WeightsError> {
        let io = |source| WeightsError::Io {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > limit as u64 {
            return Err(WeightsError::TooLarge {
                len: len as usize,
                limit,
            });
        }
        Self::from_safetensors_bytes(&std::fs::read(path).map_err(io)?, limit)
    }

    /// Candle tensors of these weights on `device`, keyed by name (for a `VarBuilder`).
    pub fn to_candle(&self, device: &Device) -> Result<HashMap<String, Tensor>, WeightsError> {
        self.entries
            .iter()
            .map(|e| {
                let t = Tensor::from_slice(
                    &self.data[e.offset..e.offset + e.len],
                    e.shape.as_slice(),
                    device,
                )?;
                Ok((e.name.clone(), t))
            })
            .collect()
    }
}

/// Euclidean distance between two equally long slices, accumulated in f64.
pub fn l2_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_is_exact_and_deterministic() {
        let spec = ModelSpec::mlp();
        let w = Weights::init(&spec, 7);
        let bytes = w.to_safetensors_bytes().unwrap();
        assert_eq!(bytes, w.clone().to_safetensors_bytes().unwrap());
        let back = Weights::from_safetensors_bytes(&bytes, 1 << 20).unwrap();
        assert_eq!(back, w);
        assert_eq!(back.hash().unwrap(), Hash32::of(&bytes));
        assert_ne!(Weights::init(&spec, 8).hash().unwrap(), w.hash().unwrap());
    }

    #[test]
    fn init_is_seeded_and_bounded() {
        let spec = ModelSpec::mlp();
        let a = Weights::init(&spec, 1);
        assert_eq!(a, Weights::init(&spec, 1));
        let bound = 1.0 / (784f32).sqrt();
        assert!(
            a.get("fc1.weight")
                .unwrap()
                .iter()
                .all(|v| v.abs() <= bound)
        );
        assert_eq!(a.num_params(), 784 * 128 + 128 + 128 * 10 + 10);
        let names: Vec<&str> = a.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
    }

    #[test]
    fn decode_rejects_bad_input() {
        let w = Weights::init(&ModelSpec::mlp(), 1);
        let bytes = w.to_safetensors_bytes().unwrap();
        assert!(matches!(
            Weights::from_safetensors_bytes(&bytes, 1000),
            Err(WeightsError::TooLarge { .. })
        ));
        assert!(matches!(
            Weights::from_safetensors_bytes(&bytes[..bytes.len() - 1], 1 << 20),
            Err(WeightsError::Malformed(_))
        ));
        assert!(matches!(
            Weights::from_safetensors_bytes(&[1, 2, 3], 1 << 20),
            Err(WeightsError::Malformed(_))
        ));
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(matches!(
            Weights::from_safetensors_bytes(&huge, 1 << 20),
            Err(WeightsError::HeaderTooLarge { .. })
        ));
        let f64_bytes = safetensors::serialize(
            [(
                "x",
                TensorView::new(Dtype::F64, vec![1], &[0u8; 8]).unwrap(),
            )],
            None,
        )
        .unwrap();
        assert!(matches!(
            Weights::from_safetensors_bytes(&f64_bytes, 1 << 20),
            Err(WeightsError::WrongDtype { .. })
        ));
    }

    #[test]
    fn from_tensors_checks_shapes_and_duplicates() {
        assert!(Weights::from_tensors(vec![("a".into(), vec![2, 2], vec![0.0; 3])]).is_err());
        assert!(
            Weights::from_tensors(vec![
                ("a".into(), vec![1], vec![0.0]),
                ("a".into(), vec![1], vec![1.0])
            ])
            .is_err()
        );
        let w = Weights::from_tensors(vec![
            ("b".into(), vec![1], vec![2.0]),
            ("a".into(), vec![2], vec![0.0, 1.0]),
        ])
        .unwrap();
        assert_eq!(w.flat(), &[0.0, 1.0, 2.0]);
        assert_eq!(w.get("b"), Some(&[2.0][..]));
    }
}
