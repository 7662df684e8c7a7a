//! The checks an update must pass before it counts in aggregation: its tensors have exactly
//! the model's names and shapes, every value is finite, and its distance from the global model
//! (the L2 norm of update - global) is within a bound the job sets. Pure: no I/O.

use super::{model::ModelSpec, weights::Weights};

/// Why an update was rejected (every variant is the sender's fault).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateError {
    /// A tensor the model has is absent from the update.
    #[error("update lacks tensor {name:?}")]
    MissingTensor {
        /// The tensor's name.
        name: String,
    },
    /// The update has a tensor the model does not.
    #[error("update has unexpected tensor {name:?}")]
    UnexpectedTensor {
        /// The tensor's name.
        name: String,
    },
    /// A tensor of the wrong shape.
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor's name.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The update's shape.
        found: Vec<usize>,
    },
    /// A NaN or infinite value.
    #[error("tensor {name:?} holds non-finite value {value} at index {index}")]
    NonFinite {
        /// The tensor's name.
        name: String,
        /// Position within the tensor.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The update moved too far from the global model.
    #[error("update norm {norm} exceeds the bound {bound}")]
    UpdateNormTooLarge {
        /// L2 norm of update - global.
        norm: f64,
        /// The job's bound.
        bound: f64,
    },
    /// The global model itself does not match the spec (a local bug, not the sender's).
    #[error("the global model does not match the model spec")]
    GlobalMismatch,
}

impl UpdateError {
    /// A short stable label for metrics and logs (`shape`, `non_finite`, `norm`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            UpdateError::MissingTensor { .. } => "missing_tensor",
            UpdateError::UnexpectedTensor { .. } => "unexpected_tensor",
            UpdateError::ShapeMismatch { .. } => "shape",
            UpdateError::NonFinite { .. } => "non_finite",
            UpdateError::UpdateNormTooLarge { .. } => "norm",
            UpdateError::GlobalMismatch => "global_mismatch",
        }
    }

    /// Whether the sender is at fault (so a peer can be penalised); only
    /// [`UpdateError::GlobalMismatch`] is our own problem.
    pub fn is_sender_fault(&self) -> bool {
        !matches!(self, UpdateError::GlobalMismatch)
    }
}

/// Checks `update` against the model `spec` and the round's `global` weights. Returns the
/// update's L2 distance from `global` when it passes; `max_norm` is the bound on that distance.
pub fn validate_update(
    spec: &ModelSpec,
    global: &Weights,
    update: &Weights,
    max_norm: f64,
) -> Result<f64, UpdateError> {
    let expected = spec.tensor_shapes();
    if global.entries().len() != expected.len()
        || global
            .entries()
            .iter()
            .zip(&expected)
            .any(|(e, (n, s))| &e.name != n || &e.shape != s)
    {
        return Err(UpdateError::GlobalMismatch);
    }
    for (name, shape) in &expected {
        let Some(e) = update.entries().iter().find(|e| &e.name == name) else {
            return Err(UpdateError::MissingTensor { name: name.clone() });
        };
        if &e.shape != shape {
            return Err(UpdateError::ShapeMismatch {
                name: name.clone(),
                expected: shape.clone(),
                found: e.shape.clone(),
            });
        }
    }
    if let Some(extra) = update
        .entries()
        .iter()
        .find(|e| !expected.iter().any(|(n, _)| n == &e.name))
    {
        return Err(UpdateError::UnexpectedTensor {
            name: extra.name.clone(),
        });
    }
    // Same names and shapes, both sorted by name: the flat layouts now coincide.
    for e in update.entries() {
        let values = &update.flat()[e.offset..e.offset + e.len];
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(UpdateError::NonFinite {
                name: e.name.clone(),
                index,
                value,
            });
        }
    }
    let norm = update.l2_distance(global);
    if norm > max_norm {
        return Err(UpdateError::UpdateNormTooLarge {
            norm,
            bound: max_norm,
        });
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (ModelSpec, Weights) {
        let spec = ModelSpec::mlp();
        (spec, Weights::init(&spec, 1))
    }

    fn tensors(w: &Weights) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        w.entries()
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    e.shape.clone(),
                    w.get(&e.name).unwrap().to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn good_update_passes_with_its_norm() {
        let (spec, g) = setup();
        let mut u = g.clone();
        u.flat_mut()[0] += 3.0;
        u.flat_mut()[1] -= 4.0;
        let norm = validate_update(&spec, &g, &u, 10.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-5);
    }

    #[test]
    fn wrong_names_rejected() {
        let (spec, g) = setup();
        let mut t = tensors(&g);
        t.pop();
        let missing = Weights::from_tensors(t.clone()).unwrap();
        let err = validate_update(&spec, &g, &missing, 1e9).unwrap_err();
        assert_eq!(
            err,
            UpdateError::MissingTensor {
                name: "fc2.weight".into()
            }
        );
        t.push(("fc2.weight".into(), vec![10, 128], vec![0.0; 1280]));
        t.push(("extra".into(), vec![1], vec![0.0]));
        let extra = Weights::from_tensors(t).unwrap();
        assert_eq!(
            validate_update(&spec, &g, &extra, 1e9).unwrap_err().kind(),
            "unexpected_tensor"
        );
    }

    #[test]
    fn wrong_shape_rejected() {
        let (spec, g) = setup();
        let mut t = tensors(&g);
        t[3] = ("fc2.weight".into(), vec![128, 10], vec![0.0; 1280]);
        let u = Weights::from_tensors(t).unwrap();
        assert_eq!(
            validate_update(&spec, &g, &u, 1e9).unwrap_err(),
            UpdateError::ShapeMismatch {
                name: "fc2.weight".into(),
                expected: vec![10, 128],
                found: vec![128, 10]
            }
        );
    }

    #[test]
    fn nan_and_inf_rejected() {
        let (spec, g) = setup();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut u = g.clone();
            let off = u.entries()[2].offset; // fc2.bias
            u.flat_mut()[off + 4] = bad;
            let err = validate_update(&spec, &g, &u, 1e9).unwrap_err();
            assert!(
                matches!(&err, UpdateError::NonFinite { name, index: 4, .. } if name == "fc2.bias"),
                "{err:?}"
            );
            assert!(err.is_sender_fault());
        }
    }

    #[test]
    fn too_large_norm_rejected() {
        let (spec, g) = setup();
        let mut u = g.clone();
        u.flat_mut()[7] += 2.0;
        let err = validate_update(&spec, &g, &u, 1.5).unwrap_err();
        assert!(matches!(
            err,
            UpdateError::UpdateNormTooLarge { norm, bound } if (norm - 2.0).abs() < 1e-6 && bound == 1.5
        ));
        assert_eq!(err.kind(), "norm");
        assert!(err.to_string().contains("exceeds the bound 1.5"));
    }

    #[test]
    fn mismatched_global_is_not_the_senders_fault() {
        let (spec, g) = setup();
        let err = validate_update(&ModelSpec::cnn(), &g, &g, 1e9).unwrap_err();
        assert_eq!(err, UpdateError::GlobalMismatch);
        assert!(!err.is_sender_fault());
        let _ = spec;
    }
}
