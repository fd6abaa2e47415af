//! candle custom ops backed by [`crate::kernels`]: a fused convolution, bias
//! and tanh, with or without the average pooling after it, each with its
//! backward pass, so that the
//! tower trains through candle's autograd at the speed of the hand-written
//! kernels. On devices other than the CPU the model uses candle's stock ops
//! instead (see [`crate::model`]).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};

use crate::kernels::{self, ConvGeom};

/// Runs `f` on the contiguous f32 CPU data of `t`.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => {
            let data = cpu.as_slice::<f32>()?;
            match layout.contiguous_offsets() {
                Some((a, b)) => Ok(f(&data[a..b])),
                None => {
                    drop(storage);
                    let c = t.contiguous()?;
                    with_f32(&c, f)
                }
            }
        }
        _ => candle_core::bail!("twinseal kernels run on the CPU only"),
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("twinseal kernels need contiguous inputs"),
    }
}

/// `avg_pool(tanh(conv2d(x, w) + b), pool)` in one op (stride 1, no
/// padding; x `[n, cin, h, w]`, w `[cout, cin, k, k]`, b `[cout]`; `pool = 1`
/// for no pooling). The activations
/// before pooling are needed by the backward pass; they are kept here (the
/// "saved tensors" of an autograd function) instead of being materialised as
/// a tensor of the graph, which saves a pass over them, the pooling op's
/// gradient tensor and candle's accumulation of it.
pub(crate) struct ConvTanhPool {
    pub geom: ConvGeom,
    pub pool: usize,
    pub saved: std::sync::Mutex<Option<std::sync::Arc<Vec<f32>>>>,
}

impl CustomOp3 for ConvTanhPool {
    fn name(&self) -> &'static str {
        "twinseal-conv-tanh-pool"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let (x, w, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let n = l1.dims()[0];
        if x.len() != n * g.in_len() || w.len() != g.cout * g.patch() || b.len() != g.cout {
            candle_core::bail!("conv-tanh-pool: shapes do not match the layer's geometry");
        }
        let (y, p) = kernels::conv_tanh_pool_forward(g, self.pool, x, w, b);
        *self.saved.lock().expect("saved activations") = Some(std::sync::Arc::new(y));
        Ok((
            CpuStorage::F32(p),
            Shape::from((n, g.cout, g.ho() / self.pool, g.wo() / self.pool)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = &self.geom;
        let y = self.saved.lock().expect("saved activations").clone();
        let Some(y) = y else {
            candle_core::bail!("conv-tanh-pool: backward before forward")
        };
        let need_dx = x.track_op();
        let grads = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(grad_res, |gp| {
                    kernels::conv_tanh_pool_backward(g, self.pool, x, w, &y, gp, need_dx)
                })
            })
        })???;
        let dev = x.device();
        let dx = match grads.dx {
            Some(dx) => Some(Tensor::from_vec(dx, x.shape(), dev)?),
            None => None,
        };
        let dw = Tensor::from_vec(grads.dw, w.shape(), dev)?;
        let db = Tensor::from_vec(grads.db, g.cout, dev)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// What [`AllPairsContrastive`] computed in its forward pass.
#[derive(Debug, Default, Clone)]
pub(crate) struct AllPairsSaved {
    /// Distance of every pair.
    pub d: Vec<f32>,
    /// Head score of every pair (the distance itself for the distance head).
    pub s: Vec<f32>,
    /// Batch-normalised distance (sigmoid head).
    pub n: Vec<f32>,
    /// Batch mean and variance of the distances (sigmoid head).
    pub mean: f32,
    pub var: f32,
    /// Inverse standard deviation used by the batch norm.
    pub rstd: f32,
    /// Counts the two loss terms are averaged over.
    pub n_same: f32,
    pub n_active: f32,
}

/// The whole all-pairs contrastive loss in one op: every pair `i < j` of the
/// embeddings `[m, dim]`, its Euclidean distance, the head (the seed's batch
/// norm, dense and sigmoid with parameters `[gamma, beta, weight, bias]`, or
/// the distance itself), and [`crate::loss::contrastive_balanced`] on top,
/// forward and backward by hand. As a chain of candle ops on 32,640 pairs per
/// batch this took half of every training step; it computes the same
/// function (checked against that chain in the tests).
pub(crate) struct AllPairsContrastive {
    pub same: Vec<bool>,
    pub margin: f32,
    pub sigmoid_head: bool,
    pub saved: std::sync::Arc<std::sync::Mutex<AllPairsSaved>>,
}

const BN_EPS: f32 = 1e-3;
const DIST_EPS: f32 = 1e-7;

impl AllPairsContrastive {
    fn pairs(m: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..m).flat_map(move |i| (i + 1..m).map(move |j| (i, j)))
    }
}

impl candle_core::CustomOp2 for AllPairsContrastive {
    fn name(&self) -> &'static str {
        "twinseal-all-pairs-contrastive"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, dim) = l1.shape().dims2()?;
        let e = slice(s1, l1)?;
        let p = slice(s2, l2)?;
        if p.len() != 4 || self.same.len() != m * (m.saturating_sub(1)) / 2 {
            candle_core::bail!("all-pairs loss: wrong parameter or label count");
        }
        let d: Vec<f32> = Self::pairs(m)
            .map(|(i, j)| {
                let q: f32 = e[i * dim..(i + 1) * dim]
                    .iter()
                    .zip(&e[j * dim..(j + 1) * dim])
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                q.max(DIST_EPS).sqrt()
            })
            .collect();
        let mut saved = AllPairsSaved::default();
        let s: Vec<f32> = if self.sigmoid_head {
            let k = d.len().max(1) as f64;
            let mean = (d.iter().map(|&v| v as f64).sum::<f64>() / k) as f32;
            let var = (d.iter().map(|&v| ((v - mean) as f64).powi(2)).sum::<f64>() / k) as f32;
            let rstd = 1.0 / (var + BN_EPS).sqrt();
            let (g, be, w, b) = (p[0], p[1], p[2], p[3]);
            saved.n = d.iter().map(|&v| (v - mean) * rstd).collect();
            (saved.mean, saved.var, saved.rstd) = (mean, var, rstd);
            saved
                .n
                .iter()
                .map(|&n| 1.0 / (1.0 + (-(w * (g * n + be) + b)).exp()))
                .collect()
        } else {
            d.clone()
        };
        let n_same = self.same.iter().filter(|&&y| y).count().max(1) as f32;
        let n_active = self
            .same
            .iter()
            .zip(&s)
            .filter(|&(&y, &s)| !y && s < self.margin)
            .count()
            .max(1) as f32;
        let mut loss = 0f64;
        for (&y, &s) in self.same.iter().zip(&s) {
            loss += if y {
                (s * s / n_same) as f64
            } else {
                ((self.margin - s).max(0.0).powi(2) / n_active) as f64
            };
        }
        (saved.d, saved.s, saved.n_same, saved.n_active) = (d, s, n_same, n_active);
        *self.saved.lock().expect("saved pairs") = saved;
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        e_t: &Tensor,
        p_t: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g_out = grad_res
            .to_dtype(candle_core::DType::F32)?
            .to_scalar::<f32>()?;
        let sv = self.saved.lock().expect("saved pairs").clone();
        let (m, dim) = e_t.dims2()?;
        let p: Vec<f32> = p_t.to_vec1()?;
        // d loss / d score
        let gs: Vec<f32> = self
            .same
            .iter()
            .zip(&sv.s)
            .map(|(&y, &s)| {
                g_out
                    * if y {
                        2.0 * s / sv.n_same
                    } else {
                        -2.0 * (self.margin - s).max(0.0) / sv.n_active
                    }
            })
            .collect();
        let mut gp = [0f32; 4];
        let gd: Vec<f32> = if self.sigmoid_head {
            let (g, be, w) = (p[0], p[1], p[2]);
            let gz: Vec<f32> = gs
                .iter()
                .zip(&sv.s)
                .map(|(&gs, &s)| gs * s * (1.0 - s))
                .collect();
            let (mut gn_sum, mut gnn_sum) = (0f64, 0f64);
            let mut gn = Vec::with_capacity(gz.len());
            for (&gz, &n) in gz.iter().zip(&sv.n) {
                gp[0] += gz * w * n;
                gp[1] += gz * w;
                gp[2] += gz * (g * n + be);
                gp[3] += gz;
                let v = gz * w * g;
                gn_sum += v as f64;
                gnn_sum += (v * n) as f64;
                gn.push(v);
            }
            let k = gn.len().max(1) as f64;
            let (mg, mgn) = ((gn_sum / k) as f32, (gnn_sum / k) as f32);
            gn.iter()
                .zip(&sv.n)
                .map(|(&v, &n)| sv.rstd * (v - mg - n * mgn))
                .collect()
        } else {
            gs
        };
        let e: Vec<f32> = e_t.flatten_all()?.to_vec1()?;
        let mut ge = vec![0f32; m * dim];
        for ((i, j), (&gd, &d)) in Self::pairs(m).zip(gd.iter().zip(&sv.d)) {
            let q: f32 = e[i * dim..(i + 1) * dim]
                .iter()
                .zip(&e[j * dim..(j + 1) * dim])
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            if q <= DIST_EPS {
                continue;
            }
            let c = gd / d;
            for t in 0..dim {
                let diff = c * (e[i * dim + t] - e[j * dim + t]);
                ge[i * dim + t] += diff;
                ge[j * dim + t] -= diff;
            }
        }
        let dev = e_t.device();
        let gp_t = if self.sigmoid_head {
            Some(Tensor::new(&gp, dev)?)
        } else {
            None
        };
        Ok((Some(Tensor::from_vec(ge, (m, dim), dev)?), gp_t))
    }
}
