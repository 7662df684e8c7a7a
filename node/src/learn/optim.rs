//! Local optimizers (SGD with momentum, Adam) with FedProx's proximal term, applied to candle
//! tensors in place: on the CPU the update runs as a fused candle `InplaceOp2` over the
//! parameter's own storage (no allocation, one pass over parameter, gradient and state); on
//! other devices it round-trips through the host. The maths follows PyTorch's `torch.optim`.

use std::sync::Mutex;

use candle_core::{CpuStorage, Device, InplaceOp2, Layout, Tensor, Var};
use serde::{Deserialize, Serialize};

/// Which optimizer local training uses, with its hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD, optionally with (heavy-ball) momentum: `v = momentum * v + g; p -= lr * v`.
    Sgd {
        /// Momentum factor in [0, 1); 0 is plain SGD.
        momentum: f32,
    },
    /// Adam with bias correction.
    Adam {
        /// Decay of the first moment (0.9).
        beta1: f32,
        /// Decay of the second moment (0.999).
        beta2: f32,
        /// Added to the denominator (1e-8).
        eps: f32,
    },
}

impl Optimizer {
    /// Plain SGD.
    pub fn sgd() -> Self {
        Optimizer::Sgd { momentum: 0.0 }
    }

    /// Adam with PyTorch's defaults.
    pub fn adam() -> Self {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// A description of what is wrong with the hyperparameters, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        match *self {
            Optimizer::Sgd { momentum } if !(0.0..1.0).contains(&momentum) => {
                Some(format!("momentum {momentum} must be in [0, 1)"))
            }
            Optimizer::Adam { beta1, beta2, eps }
                if !((0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && eps > 0.0
                    && eps.is_finite()) =>
            {
                Some(format!(
                    "adam betas ({beta1}, {beta2}) must be in [0, 1) and eps {eps} positive"
                ))
            }
            _ => None,
        }
    }
}

/// Per-parameter optimizer state (momentum or Adam moments) plus the step counter.
pub(crate) struct OptState {
    rule: Optimizer,
    lr: f32,
    /// FedProx coefficient mu (0 = off): the gradient gets `mu * (p - p_global)`.
    prox_mu: f32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: i32,
}

impl OptState {
    /// State for parameters of the given sizes.
    pub(crate) fn new(rule: Optimizer, lr: f32, prox_mu: f32, sizes: &[usize]) -> Self {
        let zeros = || sizes.iter().map(|&n| vec![0.0; n]).collect::<Vec<_>>();
        let m = match rule {
            Optimizer::Sgd { momentum: 0.0 } => vec![Vec::new(); sizes.len()],
            _ => zeros(),
        };
        let v = match rule {
            Optimizer::Adam { .. } => zeros(),
            Optimizer::Sgd { .. } => vec![Vec::new(); sizes.len()],
        };
        Self {
            rule,
            lr,
            prox_mu,
            m,
            v,
            step: 0,
        }
    }

    /// Changes the learning rate (for schedules).
    pub(crate) fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    /// Starts a new step (Adam's bias correction counts steps).
    pub(crate) fn begin_step(&mut self) {
        self.step += 1;
    }

    /// Updates parameter `index` in place from its gradient. `global` is the parameter's value
    /// in the global model (used by FedProx only).
    pub(crate) fn apply(
        &mut self,
        index: usize,
        param: &Var,
        grad: &Tensor,
        global: &[f32],
    ) -> candle_core::Result<()> {
        let (m, v) = (&mut self.m[index], &mut self.v[index]);
        let op = UpdateOp {
            rule: self.rule,
            lr: self.lr,
            prox: (self.prox_mu > 0.0).then_some((self.prox_mu, global)),
            step: self.step,
            state: Mutex::new((m.as_mut_slice(), v.as_mut_slice())),
        };
        if matches!(param.device(), Device::Cpu) {
            param.as_tensor().inplace_op2(grad, &op)
        } else {
            // Other devices: update on the host and copy back (fine for small models).
            let mut p = param.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let g = grad.flatten_all()?.to_vec1::<f32>()?;
            op.run(&mut p, &g)?;
            param.set(&Tensor::from_vec(p, param.shape(), param.device())?)
        }
    }
}

/// One fused update over one parameter tensor.
struct UpdateOp<'a> {
    rule: Optimizer,
    lr: f32,
    prox: Option<(f32, &'a [f32])>,
    step: i32,
    // `InplaceOp2::cpu_fwd` takes `&self`; the lock is never contended (one caller).
    state: Mutex<(&'a mut [f32], &'a mut [f32])>,
}

impl UpdateOp<'_> {
    fn run(&self, p: &mut [f32], g: &[f32]) -> candle_core::Result<()> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| candle_core::Error::Msg("optimizer state poisoned".into()))?;
        let (m, v) = &mut *state;
        if g.len() != p.len() || self.prox.is_some_and(|(_, g0)| g0.len() != p.len()) {
            return Err(candle_core::Error::Msg(format!(
                "optimizer: parameter of {} values, gradient of {}",
                p.len(),
                g.len()
            )));
        }
        let lr = self.lr;
        // The proximal term is folded into the gradient: g' = g + mu * (p - p0).
        let grad = |i: usize, p: f32| match self.prox {
            Some((mu, g0)) => g[i] + mu * (p - g0[i]),
            None => g[i],
        };
        match self.rule {
            Optimizer::Sgd { momentum: 0.0 } => {
                if self.prox.is_none() {
                    // The hot path of plain SGD: a straight axpy the compiler vectorises.
                    for (p, g) in p.iter_mut().zip(g) {
                        *p -= lr * g;
                    }
                } else {
                    for (i, p) in p.iter_mut().enumerate() {
                        *p -= lr * grad(i, *p);
                    }
                }
            }
            Optimizer::Sgd { momentum } => {
                for (i, (p, m)) in p.iter_mut().zip(m.iter_mut()).enumerate() {
                    *m = momentum * *m + grad(i, *p);
                    *p -= lr * *m;
                }
            }
            Optimizer::Adam { beta1, beta2, eps } => {
                let c1 = 1.0 - beta1.powi(self.step);
                let c2 = 1.0 - beta2.powi(self.step);
                let step_size = lr / c1;
                let c2_sqrt = c2.sqrt();
                for (i, ((p, m), v)) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).enumerate()
                {
                    let g = grad(i, *p);
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *p -= step_size * *m / (v.sqrt() / c2_sqrt + eps);
                }
            }
        }
        Ok(())
    }
}

impl InplaceOp2 for UpdateOp<'_> {
    fn name(&self) -> &'static str {
        "quackmesh-optimizer-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
            return Err(candle_core::Error::Msg(
                "optimizer expects f32 tensors".into(),
            ));
        };
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            return Err(candle_core::Error::Msg(
                "optimizer expects contiguous tensors".into(),
            ));
        };
        self.run(&mut p[p0..p1], &g[g0..g1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_steps(rule: Optimizer, prox_mu: f32, steps: usize) -> Vec<f32> {
        let dev = Device::Cpu;
        let p = Var::from_slice(&[1.0f32, -2.0, 0.5], 3, &dev).unwrap();
        let global = [0.0f32, 0.0, 0.0];
        let mut st = OptState::new(rule, 0.1, prox_mu, &[3]);
        for _ in 0..steps {
            st.begin_step();
            // Gradient of 0.5 * |p|^2 is p itself.
            let g = p.as_tensor().copy().unwrap();
            st.apply(0, &p, &g, &global).unwrap();
        }
        p.as_tensor().to_vec1().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    // Expected values from torch.optim on the same problem:
    //   p = torch.tensor([1., -2., .5], requires_grad=True); opt = SGD/Adam([p], lr=0.1, ...)
    //   for _ in range(n): opt.zero_grad(); (0.5 * (p**2).sum()).backward(); opt.step()
    #[test]
    fn sgd_matches_torch() {
        close(&run_steps(Optimizer::sgd(), 0.0, 2), &[0.81, -1.62, 0.405]);
    }

    #[test]
    fn sgd_momentum_matches_torch() {
        // torch: SGD(momentum=0.9), 2 steps -> p * (1 - 0.1) then p - 0.1 * (0.9 g1 + g2)
        close(
            &run_steps(Optimizer::Sgd { momentum: 0.9 }, 0.0, 2),
            &[0.72, -1.44, 0.36],
        );
    }

    #[test]
    fn adam_matches_torch() {
        // torch.optim.Adam(lr=0.1) after 2 steps (same values from its documented update rule).
        close(
            &run_steps(Optimizer::adam(), 0.0, 2),
            &[0.800_412_2, -1.800_166_5, 0.301_187_4],
        );
    }

    #[test]
    fn prox_term_pulls_towards_global() {
        // g' = p + 1.0 * (p - 0) = 2p: one SGD step of lr 0.1 scales p by 0.8.
        close(&run_steps(Optimizer::sgd(), 1.0, 1), &[0.8, -1.6, 0.4]);
    }

    #[test]
    fn bad_hyperparameters_are_reported() {
        assert!(Optimizer::Sgd { momentum: 1.0 }.problem().is_some());
        assert!(
            Optimizer::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 0.0
            }
            .problem()
            .is_some()
        );
        assert!(Optimizer::adam().problem().is_none());
    }
}
