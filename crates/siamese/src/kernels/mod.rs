//! Fast CPU kernels for the tower's convolution blocks.
//!
//! candle's stock `conv2d` lowers every image separately to im2col + gemm and
//! its backward is slower still; for the seed's 4- and 16-channel layers that
//! made an epoch several times slower than Keras (see ARCHITECTURE.md). These
//! kernels do the same lowering, but per image inside a rayon task with the
//! scratch buffers reused, fuse the bias and the tanh into the convolution, and
//! compute the three gradients (input, weight, bias) in one pass. They are
//! checked against candle's own `conv2d`/`tanh`/`avg_pool2d` in the tests of
//! [`crate::ops`].

pub mod simd;

use rayon::prelude::*;
use simd::{Mat, matmul};

/// The shape of a stride-1, unpadded ("valid") convolution over one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Input channels.
    pub cin: usize,
    /// Output channels (filters).
    pub cout: usize,
    /// Square kernel size.
    pub k: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
}

impl ConvGeom {
    /// Output height.
    pub const fn ho(&self) -> usize {
        self.h + 1 - self.k
    }
    /// Output width.
    pub const fn wo(&self) -> usize {
        self.w + 1 - self.k
    }
    /// Elements of one input image.
    pub const fn in_len(&self) -> usize {
        self.cin * self.h * self.w
    }
    /// Elements of one output image.
    pub const fn out_len(&self) -> usize {
        self.cout * self.ho() * self.wo()
    }
    /// Rows of the im2col matrix (= elements of one filter).
    pub const fn patch(&self) -> usize {
        self.cin * self.k * self.k
    }
    /// Output pixels per channel.
    pub const fn pixels(&self) -> usize {
        self.ho() * self.wo()
    }
}

/// Images per rayon task. Fixed, not derived from the thread count: the
/// weight gradients are summed task by task in task order, so a fixed split
/// makes training bit-for-bit reproducible on any machine.
const IMAGES_PER_TASK: usize = 16;

fn images_per_task(_n: usize) -> usize {
    IMAGES_PER_TASK
}

use simd::{col2im_add, im2col};

/// One image: `y = tanh(w * x + b)`, `cols` is scratch of `patch * pixels`.
fn conv_tanh_image(g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], cols: &mut [f32]) {
    let px = g.pixels();
    im2col(g, x, cols);
    for (co, out) in y.chunks_exact_mut(px).enumerate() {
        out.fill(b[co]);
    }
    matmul(
        y,
        Mat::row_major(g.cout, px),
        w,
        Mat::row_major(g.cout, g.patch()),
        cols,
        Mat::row_major(g.patch(), px),
        true,
    );
    simd::tanh_in_place(y);
}

/// Forward of a convolution block over `n` images (NCHW, contiguous):
/// `y = tanh(conv(x, w) + b)`. `w` is `[cout, cin, k, k]`, `b` is `[cout]`.
pub fn conv_tanh_forward(g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let n = x.len() / g.in_len();
    assert_eq!(x.len(), n * g.in_len());
    assert_eq!(w.len(), g.cout * g.patch());
    assert_eq!(b.len(), g.cout);
    let mut y = vec![0f32; n * g.out_len()];
    let per = images_per_task(n);
    y.par_chunks_mut(per * g.out_len())
        .zip(x.par_chunks(per * g.in_len()))
        .for_each_init(
            || vec![0f32; g.patch() * g.pixels()],
            |cols, (ys, xs)| {
                for (yi, xi) in ys
                    .chunks_exact_mut(g.out_len())
                    .zip(xs.chunks_exact(g.in_len()))
                {
                    conv_tanh_image(g, xi, w, b, yi, cols);
                }
            },
        );
    y
}

/// Forward of a convolution block with its pooling fused in: returns the
/// activations `y = tanh(conv(x, w) + b)` (kept for the backward pass) and
/// their `pool x pool` average pooling, in one pass per image.
pub fn conv_tanh_pool_forward(
    g: &ConvGeom,
    pool: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / g.in_len();
    assert_eq!(x.len(), n * g.in_len());
    assert_eq!(w.len(), g.cout * g.patch());
    assert_eq!(b.len(), g.cout);
    let pooled_len = g.out_len() / (pool * pool);
    let mut y = vec![0f32; n * g.out_len()];
    let mut p = vec![0f32; n * pooled_len];
    let per = images_per_task(n);
    y.par_chunks_mut(per * g.out_len())
        .zip(p.par_chunks_mut(per * pooled_len))
        .zip(x.par_chunks(per * g.in_len()))
        .for_each_init(
            || vec![0f32; g.patch() * g.pixels()],
            |cols, ((ys, ps), xs)| {
                for ((yi, pi), xi) in ys
                    .chunks_exact_mut(g.out_len())
                    .zip(ps.chunks_exact_mut(pooled_len))
                    .zip(xs.chunks_exact(g.in_len()))
                {
                    conv_tanh_image(g, xi, w, b, yi, cols);
                    simd::avg_pool(yi, g.cout, g.ho(), g.wo(), pool, pi);
                }
            },
        );
    (y, p)
}

/// Inference forward of a block: like [`conv_tanh_pool_forward`] but the
/// activations before pooling live only in per-task scratch.
pub fn conv_tanh_pool_infer(
    g: &ConvGeom,
    pool: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
) -> Vec<f32> {
    let n = x.len() / g.in_len();
    let pooled_len = g.out_len() / (pool * pool);
    let mut p = vec![0f32; n * pooled_len];
    let per = images_per_task(n);
    p.par_chunks_mut(per * pooled_len)
        .zip(x.par_chunks(per * g.in_len()))
        .for_each_init(
            || (vec![0f32; g.patch() * g.pixels()], vec![0f32; g.out_len()]),
            |(cols, y), (ps, xs)| {
                for (pi, xi) in ps
                    .chunks_exact_mut(pooled_len)
                    .zip(xs.chunks_exact(g.in_len()))
                {
                    conv_tanh_image(g, xi, w, b, y, cols);
                    simd::avg_pool(y, g.cout, g.ho(), g.wo(), pool, pi);
                }
            },
        );
    p
}

/// Single-threaded forward of one block for a few images, for latency-bound
/// serving (no task scheduling at all). `cols` is reusable scratch.
pub fn conv_tanh_forward_serial(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    cols: &mut Vec<f32>,
) {
    cols.resize(g.patch() * g.pixels(), 0.0);
    for (yi, xi) in y
        .chunks_exact_mut(g.out_len())
        .zip(x.chunks_exact(g.in_len()))
    {
        conv_tanh_image(g, xi, w, b, yi, cols);
    }
}

/// Gradients of a convolution block.
#[derive(Debug)]
pub struct ConvGrads {
    /// Gradient with respect to the input, when asked for.
    pub dx: Option<Vec<f32>>,
    /// Gradient with respect to the weights `[cout, cin, k, k]`.
    pub dw: Vec<f32>,
    /// Gradient with respect to the bias `[cout]`.
    pub db: Vec<f32>,
}

/// Backward of [`conv_tanh_forward`], given its input `x`, its output `y` and
/// the gradient `gy` of the loss with respect to `y`.
pub fn conv_tanh_backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    y: &[f32],
    gy: &[f32],
    need_dx: bool,
) -> ConvGrads {
    conv_tanh_pool_backward(g, 1, x, w, y, gy, need_dx)
}

/// Backward of [`conv_tanh_pool_forward`]: `gp` is the gradient of the loss
/// with respect to the pooled output (`pool = 1`: with respect to `y`).
pub fn conv_tanh_pool_backward(
    g: &ConvGeom,
    pool: usize,
    x: &[f32],
    w: &[f32],
    y: &[f32],
    gp: &[f32],
    need_dx: bool,
) -> ConvGrads {
    let n = x.len() / g.in_len();
    let pooled_len = g.out_len() / (pool * pool);
    assert_eq!(y.len(), n * g.out_len());
    assert_eq!(gp.len(), n * pooled_len);
    let (px, patch) = (g.pixels(), g.patch());
    let per = images_per_task(n);
    let mut dx = if need_dx {
        vec![0f32; x.len()]
    } else {
        Vec::new()
    };
    let dx_chunks: Vec<&mut [f32]> = if need_dx {
        dx.chunks_mut(per * g.in_len()).collect()
    } else {
        Vec::new()
    };
    let tasks: Vec<(usize, Option<&mut [f32]>)> = {
        let mut it = dx_chunks.into_iter();
        (0..n.div_ceil(per)).map(|t| (t, it.next())).collect()
    };
    let partials: Vec<(Vec<f32>, Vec<f32>)> = tasks
        .into_par_iter()
        .map_init(
            || (vec![0f32; patch * px], vec![0f32; g.out_len()]),
            |(cols, gz), (t, mut dx_chunk)| {
                let (mut dw, mut db) = (vec![0f32; g.cout * patch], vec![0f32; g.cout]);
                let first = t * per;
                let last = (first + per).min(n);
                for i in first..last {
                    let xi = &x[i * g.in_len()..(i + 1) * g.in_len()];
                    let gpi = &gp[i * pooled_len..(i + 1) * pooled_len];
                    if pool > 1 {
                        simd::avg_pool_backward(gpi, g.cout, g.ho(), g.wo(), pool, gz);
                    } else {
                        gz.copy_from_slice(gpi);
                    }
                    simd::tanh_backward_in_place(gz, &y[i * g.out_len()..(i + 1) * g.out_len()]);
                    for (co, row) in gz.chunks_exact(px).enumerate() {
                        db[co] += row.iter().sum::<f32>();
                    }
                    im2col(g, xi, cols);
                    // dw[cout, patch] += gz[cout, px] * cols^T[px, patch]
                    matmul(
                        &mut dw,
                        Mat::row_major(g.cout, patch),
                        gz,
                        Mat::row_major(g.cout, px),
                        cols,
                        Mat::row_major(patch, px).t(),
                        true,
                    );
                    if let Some(dxc) = dx_chunk.as_deref_mut() {
                        // dcols[patch, px] = w^T[patch, cout] * gz[cout, px], reusing `cols`.
                        matmul(
                            cols,
                            Mat::row_major(patch, px),
                            w,
                            Mat::row_major(g.cout, patch).t(),
                            gz,
                            Mat::row_major(g.cout, px),
                            false,
                        );
                        let off = (i - first) * g.in_len();
                        col2im_add(g, cols, &mut dxc[off..off + g.in_len()]);
                    }
                }
                (dw, db)
            },
        )
        .collect();
    // Sum the per-task partial gradients in task order (deterministic).
    let (mut dw, mut db) = (vec![0f32; g.cout * patch], vec![0f32; g.cout]);
    for (pw, pb) in &partials {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    ConvGrads {
        dx: need_dx.then_some(dx),
        dw,
        db,
    }
}

/// Parallel average pooling over `n` images of `c` planes (see [`simd::avg_pool`]).
pub fn avg_pool_forward(x: &[f32], c: usize, h: usize, w: usize, p: usize) -> Vec<f32> {
    let plane_in = h * w;
    let plane_out = (h / p) * (w / p);
    let planes = x.len() / plane_in;
    let mut y = vec![0f32; planes * plane_out];
    let per = images_per_task(planes / c.max(1)).max(1) * c.max(1);
    y.par_chunks_mut(per * plane_out)
        .zip(x.par_chunks(per * plane_in))
        .for_each(|(ys, xs)| simd::avg_pool(xs, xs.len() / plane_in, h, w, p, ys));
    y
}

/// Gradient of [`avg_pool_forward`].
pub fn avg_pool_backward(gy: &[f32], c: usize, h: usize, w: usize, p: usize) -> Vec<f32> {
    let plane_in = h * w;
    let plane_out = (h / p) * (w / p);
    let planes = gy.len() / plane_out;
    let mut gx = vec![0f32; planes * plane_in];
    let per = images_per_task(planes / c.max(1)).max(1) * c.max(1);
    gx.par_chunks_mut(per * plane_in)
        .zip(gy.par_chunks(per * plane_out))
        .for_each(|(xs, ys)| simd::avg_pool_backward(ys, xs.len() / plane_in, h, w, p, xs));
    gx
}
