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
