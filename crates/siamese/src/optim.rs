//! Optimisers: RMSprop (the seed's, with Keras's defaults) and Adam.
//!
//! Gradients returned by candle's `backward()` stay attached to the graph;
//! keeping them in optimiser state would chain every step's graph to the next
//! and leak memory, so every value stored here is detached first.

use candle_core::{Tensor, Var, backprop::GradStore};

use crate::Result;

/// Which optimiser to use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// RMSprop as Keras implements it: `v = rho v + (1 - rho) g^2`,
    /// `w -= lr g / sqrt(v + eps)`, no momentum.
    RmsProp {
        /// Learning rate (seed: 1e-3).
        lr: f64,
        /// Decay of the squared-gradient average (seed: 0.9).
        rho: f64,
        /// Added under the root (seed: 1e-7).
        eps: f64,
    },
    /// Adam with bias correction (Kingma & Ba), Keras's epsilon placement.
    Adam {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Added to the denominator.
        eps: f64,
    },
}

impl OptimizerKind {
    /// The seed's optimiser: RMSprop, lr 1e-3, rho 0.9, eps 1e-7.
    pub const fn rmsprop() -> Self {
        Self::RmsProp {
            lr: 1e-3,
            rho: 0.9,
            eps: 1e-7,
        }
    }
    /// Adam with the usual defaults: lr 1e-3, betas 0.9/0.999, eps 1e-7.
    pub const fn adam() -> Self {
        Self::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
        }
    }
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RmsProp { lr, rho, eps } => write!(f, "rmsprop(lr={lr}, rho={rho}, eps={eps})"),
            Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => write!(f, "adam(lr={lr}, beta1={beta1}, beta2={beta2}, eps={eps})"),
        }
    }
}

/// Optimiser state for a fixed list of variables.
pub struct Optimizer {
    kind: OptimizerKind,
    vars: Vec<Var>,
    m: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
    step: i32,
}

impl Optimizer {
    /// State for `vars`.
    pub fn new(kind: OptimizerKind, vars: Vec<Var>) -> Self {
        let n = vars.len();
        Self {
            kind,
            vars,
            m: vec![None; n],
            v: vec![None; n],
            step: 0,
        }
    }

    /// Applies one update from the gradients in `grads`; variables without
    /// a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let w = var.as_tensor();
            let new = match self.kind {
                OptimizerKind::RmsProp { lr, rho, eps } => {
                    let sq = g.sqr()?;
                    let v = match &self.v[i] {
                        Some(v) => ((v * rho)? + (sq * (1.0 - rho))?)?,
                        None => (sq * (1.0 - rho))?,
                    };
                    let upd = g.div(&(&v + eps)?.sqrt()?)?;
                    self.v[i] = Some(v.detach());
                    (w - (upd * lr)?)?
                }
                OptimizerKind::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                } => {
                    let m = match &self.m[i] {
                        Some(m) => ((m * beta1)? + (&g * (1.0 - beta1))?)?,
                        None => (&g * (1.0 - beta1))?,
                    };
                    let v = match &self.v[i] {
                        Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                        None => (g.sqr()? * (1.0 - beta2))?,
                    };
                    let t = self.step;
                    let lr_t = lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t));
                    let upd = m.div(&(v.sqrt()? + eps)?)?;
                    self.m[i] = Some(m.detach());
                    self.v[i] = Some(v.detach());
                    (w - (upd * lr_t)?)?
                }
            };
            var.set(&new.detach())?;
        }
        Ok(())
    }
}
