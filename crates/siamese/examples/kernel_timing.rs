//! Times the fused convolution kernels of the seed's tower on one batch
//! (256 images, the size of one training step), forward and backward.
//!
//! `cargo run --release -p twinseal-siamese --example kernel_timing`

use std::time::Instant;

use twinseal_siamese::kernels::{self, ConvGeom};

fn time<R>(name: &str, reps: usize, mut f: impl FnMut() -> R) {
    let _ = f();
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    println!(
        "{name:<28} {:>9.1} us",
        t.elapsed().as_secs_f64() * 1e6 / reps as f64
    );
}

fn main() {
    let n = 256;
    let g1 = ConvGeom {
        cin: 1,
        cout: 4,
        k: 5,
        h: 28,
        w: 28,
    };
    let g2 = ConvGeom {
        cin: 4,
        cout: 16,
        k: 5,
        h: 12,
        w: 12,
    };
    for g in [g1, g2] {
        let x: Vec<f32> = (0..n * g.in_len())
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let w: Vec<f32> = (0..g.cout * g.patch())
            .map(|i| ((i * 31) % 17) as f32 / 40.0 - 0.2)
            .collect();
        let b = vec![0.1f32; g.cout];
        let y = kernels::conv_tanh_forward(&g, &x, &w, &b);
        let gy = vec![0.01f32; y.len()];
        println!("conv {}->{} on {}x{}, {n} images:", g.cin, g.cout, g.h, g.w);
        time("  forward", 50, || {
            kernels::conv_tanh_forward(&g, &x, &w, &b)
        });
        time("  backward (no dx)", 50, || {
            kernels::conv_tanh_backward(&g, &x, &w, &y, &gy, false)
        });
        time("  backward (with dx)", 50, || {
            kernels::conv_tanh_backward(&g, &x, &w, &y, &gy, true)
        });
        time("  pool", 50, || {
            kernels::avg_pool_forward(&y, g.cout, g.ho(), g.wo(), 2)
        });
    }
}
