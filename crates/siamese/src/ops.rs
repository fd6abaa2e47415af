//! candle custom ops backed by [`crate::kernels`]: a fused convolution, bias
//! and tanh, and an average pooling, each with its backward pass, so that the
//! tower trains through candle's autograd at the speed of the hand-written
//! kernels. On devices other than the CPU the model uses candle's stock ops
//! instead (see [`crate::model`]).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Storage, Tensor};

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

/// `tanh(conv2d(x, w) + b)`, stride 1, no padding; x `[n, cin, h, w]`,
/// w `[cout, cin, k, k]`, b `[cout]`.
pub(crate) struct ConvTanh {
    pub geom: ConvGeom,
}

impl CustomOp3 for ConvTanh {
    fn name(&self) -> &'static str {
        "twinseal-conv-tanh"
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
            candle_core::bail!("conv-tanh: shapes do not match the layer's geometry");
        }
        let y = kernels::conv_tanh_forward(g, x, w, b);
        Ok((CpuStorage::F32(y), Shape::from((n, g.cout, g.ho(), g.wo()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = &self.geom;
        let need_dx = x.track_op();
        let grads = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(res, |y| {
                    with_f32(grad_res, |gy| {
                        kernels::conv_tanh_backward(g, x, w, y, gy, need_dx)
                    })
                })
            })
        })????;
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

/// Average pooling with window and stride `p` over `[n, c, h, w]`.
pub(crate) struct AvgPool {
    pub p: usize,
}

impl CustomOp1 for AvgPool {
    fn name(&self) -> &'static str {
        "twinseal-avg-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let p = self.p;
        if h % p != 0 || w % p != 0 {
            candle_core::bail!("avg-pool: {h}x{w} is not a multiple of the window {p}");
        }
        let y = kernels::avg_pool_forward(slice(s, l)?, c, h, w, p);
        Ok((CpuStorage::F32(y), Shape::from((n, c, h / p, w / p))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (_, c, h, w) = arg.dims4()?;
        let gx = with_f32(grad_res, |gy| {
            kernels::avg_pool_backward(gy, c, h, w, self.p)
        })?;
        Ok(Some(Tensor::from_vec(gx, arg.shape(), arg.device())?))
    }
}
