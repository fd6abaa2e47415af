//! The one place in twinseal-siamese that uses `unsafe`.
//!
//! Two things here need it, both for speed on the CPU:
//!
//! * [`matmul`] wraps `gemm::gemm`, the matrix-multiply kernel candle itself
//!   uses, which takes raw pointers and strides. The wrapper checks, before the
//!   call, that every element the strides can reach lies inside the slice it
//!   was given (and that the destination does not overlap the inputs, which
//!   Rust's borrow rules already guarantee for `&mut` against `&`), so the
//!   unsafe call cannot read or write out of bounds.
//! * [`tanh_in_place`] and friends are compiled several times for different
//!   SIMD instruction sets by the `multiversion` macro, which dispatches at run
//!   time after detecting the CPU's features; its expansion contains `unsafe`
//!   calls of `#[target_feature]` functions, sound because the feature was
//!   detected first.
//!
//! Everything else in the crate is safe Rust (`unsafe_code` is denied at the
//! crate level and allowed for this module only).
#![allow(unsafe_code)]

use multiversion::multiversion;

use super::ConvGeom;

/// A matrix view: `rows x cols` elements at `data[offset + r * row_stride + c * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between two rows, in elements.
    pub row_stride: usize,
    /// Distance between two columns, in elements.
    pub col_stride: usize,
}

impl Mat {
    /// A contiguous row-major matrix.
    pub const fn row_major(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of this view (no data moves).
    pub const fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// One past the largest index this view can touch (0 for an empty matrix).
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
        }
    }
}

/// `dst = (accumulate ? dst : 0) + lhs * rhs`, single-threaded.
///
/// # Panics
/// When the shapes do not agree or a view reaches past its slice.
pub fn matmul(dst: &mut [f32], d: Mat, lhs: &[f32], l: Mat, rhs: &[f32], r: Mat, accumulate: bool) {
    assert_eq!(d.rows, l.rows, "matmul: dst rows != lhs rows");
    assert_eq!(d.cols, r.cols, "matmul: dst cols != rhs cols");
    assert_eq!(l.cols, r.rows, "matmul: lhs cols != rhs rows");
    assert!(d.extent() <= dst.len(), "matmul: dst view out of bounds");
    assert!(l.extent() <= lhs.len(), "matmul: lhs view out of bounds");
    assert!(r.extent() <= rhs.len(), "matmul: rhs view out of bounds");
    if d.rows == 0 || d.cols == 0 {
        return;
    }
    if l.cols == 0 {
        if !accumulate {
            dst[..d.extent()].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above prove that every (row, col) index of each view,
    // with its strides, lies inside its slice; `dst` is a unique borrow, so it
    // cannot alias `lhs` or `rhs`. Strides fit in isize because they index
    // allocated slices. gemm reads `dst` only when `read_dst` is true.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            l.cols,
            dst.as_mut_ptr(),
            d.col_stride as isize,
            d.row_stride as isize,
            accumulate,
            lhs.as_ptr(),
            l.col_stride as isize,
            l.row_stride as isize,
            rhs.as_ptr(),
            r.col_stride as isize,
            r.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Upper bound of the argument range of the rational approximation; tanh is
/// 1.0 in f32 beyond it.
const TANH_CLAMP: f32 = 7.905_311;

/// tanh of one value by the rational approximation used by Eigen
/// (`ptanh_float`): max error a few ulp, and branch-free so that it vectorises.
#[inline(always)]
fn tanh_approx(x: f32) -> f32 {
    const A1: f32 = 4.893_524_5e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525e-3;
    const B2: f32 = 2.268_434_6e-3;
    const B4: f32 = 1.185_347_1e-4;
    const B6: f32 = 1.198_258_4e-6;
    let x = x.clamp(-TANH_CLAMP, TANH_CLAMP);
    let x2 = x * x;
    let mut p = A13;
    p = p * x2 + A11;
    p = p * x2 + A9;
    p = p * x2 + A7;
    p = p * x2 + A5;
    p = p * x2 + A3;
    p = p * x2 + A1;
    p *= x;
    let mut q = B6;
    q = q * x2 + B4;
    q = q * x2 + B2;
    q = q * x2 + B0;
    p / q
}

/// `v[i] = tanh(v[i])` (fast approximation, see [`tanh_approx`]).
#[multiversion(targets = "simd")]
pub fn tanh_in_place(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = tanh_approx(*x);
    }
}

/// `g[i] *= 1 - y[i]^2`: the tanh derivative applied to an incoming gradient.
#[multiversion(targets = "simd")]
pub fn tanh_backward_in_place(g: &mut [f32], y: &[f32]) {
    assert_eq!(g.len(), y.len());
    for (g, &y) in g.iter_mut().zip(y) {
        *g *= 1.0 - y * y;
    }
}

/// Average pooling with a square window `p` and stride `p` over `planes`
/// planes of `h x w` (h and w multiples of p), into `planes` planes of
/// `h/p x w/p`.
#[multiversion(targets = "simd")]
pub fn avg_pool(x: &[f32], planes: usize, h: usize, w: usize, p: usize, y: &mut [f32]) {
    let (ho, wo) = (h / p, w / p);
    assert_eq!(x.len(), planes * h * w);
    assert_eq!(y.len(), planes * ho * wo);
    let scale = 1.0 / (p * p) as f32;
    if p == 2 {
        // The common case, written so that it vectorises: two input rows per output row.
        for (rows, out) in x.chunks_exact(2 * w).zip(y.chunks_exact_mut(wo)) {
            let (r0, r1) = rows.split_at(w);
            for ((o, a), b) in out
                .iter_mut()
                .zip(r0.chunks_exact(2))
                .zip(r1.chunks_exact(2))
            {
                *o = (a[0] + a[1] + b[0] + b[1]) * 0.25;
            }
        }
        return;
    }
    for (xp, yp) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(ho * wo)) {
        for (oy, yrow) in yp.chunks_exact_mut(wo).enumerate() {
            yrow.fill(0.0);
            for dy in 0..p {
                let xrow = &xp[(oy * p + dy) * w..(oy * p + dy + 1) * w];
                for (out, win) in yrow.iter_mut().zip(xrow.chunks_exact(p)) {
                    *out += win.iter().sum::<f32>();
                }
            }
            for out in yrow.iter_mut() {
                *out *= scale;
            }
        }
    }
}

/// The gradient of [`avg_pool`]: spreads each output gradient evenly over its window.
#[multiversion(targets = "simd")]
pub fn avg_pool_backward(gy: &[f32], planes: usize, h: usize, w: usize, p: usize, gx: &mut [f32]) {
    let (ho, wo) = (h / p, w / p);
    assert_eq!(gx.len(), planes * h * w);
    assert_eq!(gy.len(), planes * ho * wo);
    let scale = 1.0 / (p * p) as f32;
    // Output row r of plane q feeds input rows p*r .. p*r+p of that plane.
    for (grow, rows) in gy.chunks_exact(wo).zip(gx.chunks_exact_mut(p * w)) {
        for xrow in rows.chunks_exact_mut(w) {
            for (win, &g) in xrow.chunks_exact_mut(p).zip(grow) {
                win.fill(g * scale);
            }
        }
    }
}

/// Copies a short row. Rows here are a few dozen floats; `copy_from_slice`
/// would call `memmove` for each, which cost more than the copy itself (a
/// sixth of the training time in a profile), so whole 8-float blocks are
/// copied as fixed-size arrays, which compile to plain vector moves.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let block: [f32; 8] = s.try_into().expect("8 floats");
        d.copy_from_slice(&block);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// Lowers one image to its im2col matrix `[patch, pixels]`.
#[multiversion(targets = "simd")]
pub fn im2col(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    let (ho, wo, k) = (g.ho(), g.wo(), g.k);
    let mut row = 0;
    for ci in 0..g.cin {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..k {
            for kx in 0..k {
                let dst = &mut cols[row * ho * wo..(row + 1) * ho * wo];
                for oy in 0..ho {
                    let src = &plane[(oy + ky) * g.w + kx..(oy + ky) * g.w + kx + wo];
                    copy_row(&mut dst[oy * wo..(oy + 1) * wo], src);
                }
                row += 1;
            }
        }
    }
}

/// Adds an im2col-shaped gradient back onto the image it came from.
#[multiversion(targets = "simd")]
pub fn col2im_add(g: &ConvGeom, cols: &[f32], dx: &mut [f32]) {
    let (ho, wo, k) = (g.ho(), g.wo(), g.k);
    let mut row = 0;
    for ci in 0..g.cin {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..k {
            for kx in 0..k {
                let src = &cols[row * ho * wo..(row + 1) * ho * wo];
                for oy in 0..ho {
                    let dst = &mut plane[(oy + ky) * g.w + kx..(oy + ky) * g.w + kx + wo];
                    for (d, s) in dst.iter_mut().zip(&src[oy * wo..(oy + 1) * wo]) {
                        *d += s;
                    }
                }
                row += 1;
            }
        }
    }
}

/// Makes candle run its element-wise CPU ops on the calling thread.
///
/// candle parallelises large element-wise ops over its own spinning thread
/// pool; beside rayon (which runs twinseal's kernels) on a small machine the
/// two pools fight and a quarter of the cycles went to spin-waits. Setting
/// `CANDLE_NUM_THREADS=1` (unless the user set it) before candle's pool
/// starts keeps those ops on one thread. Call it first thing in `main`,
/// before any other thread exists: that is what makes changing the
/// environment sound.
pub fn prefer_single_threaded_candle() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called at the start of `main` before any thread is spawned,
        // so no other thread can read or write the environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_approximation_is_accurate() {
        let mut worst = 0f32;
        let mut x = -12.0f32;
        while x < 12.0 {
            let mut v = [x];
            tanh_in_place(&mut v);
            worst = worst.max((v[0] - x.tanh()).abs());
            x += 1e-3;
        }
        assert!(worst < 2e-6, "worst tanh error {worst}");
    }

    #[test]
    fn matmul_matches_naive_with_transposes() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut c = vec![1.0f32; m * n];
        matmul(
            &mut c,
            Mat::row_major(m, n),
            &a,
            Mat::row_major(m, k),
            &b,
            Mat::row_major(k, n),
            true,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum::<f32>();
                assert!((c[i * n + j] - want).abs() < 1e-5);
            }
        }
        // (b^T a^T) = (a b)^T
        let mut ct = vec![0.0f32; n * m];
        matmul(
            &mut ct,
            Mat::row_major(n, m),
            &b,
            Mat::row_major(k, n).t(),
            &a,
            Mat::row_major(m, k).t(),
            false,
        );
        for i in 0..m {
            for j in 0..n {
                assert!((ct[j * m + i] - (c[i * n + j] - 1.0)).abs() < 1e-5);
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn matmul_rejects_short_slices() {
        let a = vec![0.0f32; 5];
        let b = vec![0.0f32; 6];
        let mut c = vec![0.0f32; 6];
        matmul(
            &mut c,
            Mat::row_major(2, 3),
            &a,
            Mat::row_major(2, 3),
            &b,
            Mat::row_major(3, 3),
            false,
        );
    }

    #[test]
    fn pooling_and_its_gradient() {
        let x: Vec<f32> = (0..2 * 4 * 4).map(|i| i as f32).collect();
        let mut y = vec![0.0; 2 * 2 * 2];
        avg_pool(&x, 2, 4, 4, 2, &mut y);
        assert_eq!(y[0], (0.0 + 1.0 + 4.0 + 5.0) / 4.0);
        assert_eq!(y[7], (26.0 + 27.0 + 30.0 + 31.0) / 4.0);
        let mut gx = vec![0.0; 32];
        avg_pool_backward(&y, 2, 4, 4, 2, &mut gx);
        assert_eq!(gx[5], y[0] / 4.0);
        assert_eq!(gx[31], y[7] / 4.0);
    }
}
