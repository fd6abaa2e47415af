//! The fused CPU kernels against candle's stock ops, and every layer's
//! gradient against finite differences.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use twinseal_siamese::Siamese;
use twinseal_siamese::config::{ConvLayer, HeadKind, ModelConfig, TowerConfig};
use twinseal_siamese::loss;

fn small_tower() -> TowerConfig {
    TowerConfig {
        height: 12,
        width: 12,
        convs: vec![
            ConvLayer {
                filters: 3,
                kernel: 3,
                pool: 2,
            },
            ConvLayer {
                filters: 4,
                kernel: 3,
                pool: 1,
            },
        ],
        hidden: vec![6],
        embedding_dim: 4,
    }
}

fn input(n: usize, h: usize, w: usize, seed: u32) -> Tensor {
    let v: Vec<f32> = (0..n * h * w)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, (n, 1, h, w), &Device::Cpu).unwrap()
}

/// Largest absolute element of `t`.
fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

/// Largest difference between the gradients of `var` in two stores,
/// relative to the largest magnitude in `reference` (at least `floor`).
fn relative_grad_diff(got: &GradStore, reference: &GradStore, var: &Var, floor: f32) -> f32 {
    let (a, b) = (
        got.get(var.as_tensor()).unwrap(),
        reference.get(var.as_tensor()).unwrap(),
    );
    max_abs_diff(a, b) / max_abs(b).max(floor)
}

/// A fixed random projection of the output, so gradients are not all alike.
fn project(y: &Tensor) -> Tensor {
    let n = y.elem_count();
    let r: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect();
    let r = Tensor::from_vec(r, y.shape(), y.device()).unwrap();
    y.mul(&r).unwrap().sum_all().unwrap()
}

#[test]
fn fused_kernels_match_candle_forward_and_gradients() {
    for cfg in [small_tower(), TowerConfig::seed()] {
        let model = Siamese::new(
            ModelConfig::seed(HeadKind::Distance).with_tower(cfg.clone()),
            3,
            &Device::Cpu,
        )
        .unwrap();
        // The input is a variable so that the input gradient of the first conv is checked too.
        let x = Var::from_tensor(&input(5, cfg.height, cfg.width, 1)).unwrap();
        let fast = model.tower().forward(x.as_tensor()).unwrap();
        let stock = model.tower().forward_stock(x.as_tensor()).unwrap();
        assert_eq!(fast.dims(), stock.dims());
        let d = max_abs_diff(&fast, &stock);
        assert!(d < 2e-5, "forward differs by {d}");
        let gf = project(&fast).backward().unwrap();
        let gs = project(&stock).backward().unwrap();
        let mut checked = 0;
        for (name, var) in model.trainable() {
            let d = relative_grad_diff(&gf, &gs, &var, 1e-3);
            assert!(d < 1e-4, "gradient of {name} differs by {d} (relative)");
            checked += 1;
        }
        let d = max_abs_diff(
            gf.get(x.as_tensor()).unwrap(),
            gs.get(x.as_tensor()).unwrap(),
        );
        assert!(d < 1e-4, "input gradient differs by {d}");
        assert_eq!(checked, 2 * (cfg.convs.len() + cfg.hidden.len() + 1));
    }
}

/// Central finite differences of `f` with respect to every element of `var`
/// (or the first `limit`), against the autograd gradient.
fn check_var(name: &str, var: &Var, f: &dyn Fn() -> Tensor, limit: usize) {
    check_var_eps(name, var, f, limit, 1e-2)
}

fn check_var_eps(name: &str, var: &Var, f: &dyn Fn() -> Tensor, limit: usize, eps: f32) {
    let grads = f().backward().unwrap();
    let g: Vec<f32> = grads
        .get(var.as_tensor())
        .expect("a gradient")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let orig = var.as_tensor().copy().unwrap();
    let base: Vec<f32> = orig.flatten_all().unwrap().to_vec1().unwrap();
    for i in 0..base.len().min(limit) {
        let at = |delta: f32| {
            let mut v = base.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, orig.shape(), &Device::Cpu).unwrap())
                .unwrap();
            f().to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let numeric = ((at(eps) - at(-eps)) / (2.0 * eps as f64)) as f32;
        var.set(&orig).unwrap();
        let tol = 2e-2 * numeric.abs().max(g[i].abs()).max(1e-2);
        assert!(
            (numeric - g[i]).abs() <= tol,
            "{name}[{i}]: autograd {} vs finite difference {numeric}",
            g[i]
        );
    }
}

#[test]
fn every_layer_gradient_matches_finite_differences() {
    let cfg = small_tower();
    for head in [HeadKind::Distance, HeadKind::Sigmoid] {
        let model = Siamese::new(
            ModelConfig::seed(head).with_tower(cfg.clone()),
            11,
            &Device::Cpu,
        )
        .unwrap();
        let a = input(4, 12, 12, 5);
        let b = input(4, 12, 12, 9);
        let same = Tensor::new(&[1f32, 0., 1., 0.], &Device::Cpu).unwrap();
        // Contrastive loss through the whole network, evaluated with batch statistics.
        let f = || {
            let both = Tensor::cat(&[&a, &b], 0).unwrap();
            let (_, s) = model.forward_pairs_standardised(&both, true).unwrap();
            loss::contrastive(&s, &same, 1.0).unwrap()
        };
        for (name, var) in model.trainable() {
            check_var(&format!("{head:?}/{name}"), &var, &f, 24);
        }
    }
}

#[test]
fn all_pairs_and_triplet_losses_have_correct_gradients() {
    let e = Var::from_tensor(
        &Tensor::new(
            &[
                [0.1f32, 0.5],
                [0.3, -0.2],
                [0.0, 0.9],
                [-0.4, 0.2],
                [0.25, 0.3],
            ],
            &Device::Cpu,
        )
        .unwrap(),
    )
    .unwrap();
    let labels = [0u32, 0, 1, 1, 0];
    let f = || {
        let (idx, same) = loss::upper_pairs(&labels);
        let d = loss::pairwise_distances(e.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap();
        let d = d
            .index_select(&Tensor::new(idx.as_slice(), &Device::Cpu).unwrap(), 0)
            .unwrap();
        loss::contrastive_balanced(&d, &same, 1.0).unwrap()
    };
    check_var("all-pairs", &e, &f, 10);
    // Mining picks negatives by distance: a small step keeps the choice fixed.
    let g = || {
        loss::triplet_semihard(e.as_tensor(), &labels, 0.5)
            .unwrap()
            .0
    };
    check_var_eps("triplet", &e, &g, 10, 1e-3);
}

#[test]
fn inference_path_matches_the_graph() {
    let model = Siamese::new(ModelConfig::seed(HeadKind::Sigmoid), 5, &Device::Cpu).unwrap();
    let a = input(3, 28, 28, 1).affine(0.5, 0.5).unwrap();
    let b = input(3, 28, 28, 2).affine(0.5, 0.5).unwrap();
    let (d, s) = model.forward_pairs(&a, &b, false).unwrap();
    let va: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let vb: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scores = model.score_pairs(&va, &vb).unwrap();
    let (d, s): (Vec<f32>, Vec<f32>) = (d.to_vec1().unwrap(), s.to_vec1().unwrap());
    for i in 0..3 {
        assert!((scores[i].distance - d[i]).abs() < 1e-5);
        assert!((scores[i].score - s[i]).abs() < 1e-5);
        assert!((scores[i].probability - (1.0 - s[i])).abs() < 1e-5);
    }
}

#[test]
fn fused_all_pairs_loss_matches_the_candle_chain() {
    for head in [HeadKind::Sigmoid, HeadKind::Distance] {
        let model = Siamese::new(ModelConfig::seed(head), 4, &Device::Cpu).unwrap();
        let v: Vec<f32> = (0..12 * 10)
            .map(|i| (((i * 7919) % 199) as f32 / 100.0 - 1.0) * 0.8)
            .collect();
        let e = Var::from_tensor(&Tensor::from_vec(v, (12, 10), &Device::Cpu).unwrap()).unwrap();
        let labels = [0u32, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 0];
        let (fused, scores, same) = model.all_pairs_loss(e.as_tensor(), &labels, 1.0).unwrap();
        let (idx, same2) = loss::upper_pairs(&labels);
        assert_eq!(same, same2);
        let d = loss::pairwise_distances(e.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap();
        let d = d
            .index_select(&Tensor::new(idx.as_slice(), &Device::Cpu).unwrap(), 0)
            .unwrap();
        let s = model.head_score(&d, true).unwrap();
        let chain = loss::contrastive_balanced(&s, &same, 1.0).unwrap();
        let (a, b) = (
            fused.to_scalar::<f32>().unwrap(),
            chain.to_scalar::<f32>().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-5 * b.abs().max(1.0),
            "{head:?}: loss {a} vs {b}"
        );
        let sv: Vec<f32> = s.to_vec1().unwrap();
        assert!(scores.iter().zip(&sv).all(|(x, y)| (x - y).abs() < 1e-5));
        let gf = fused.backward().unwrap();
        let gc = chain.backward().unwrap();
        let mut vars = vec![("embeddings".to_string(), e.clone())];
        vars.extend(
            model
                .trainable()
                .into_iter()
                .filter(|(k, _)| k.starts_with("head.")),
        );
        for (name, var) in vars {
            let diff = relative_grad_diff(&gf, &gc, &var, 1e-4);
            assert!(
                diff < 1e-3,
                "{head:?}: gradient of {name} differs by {diff} (relative)"
            );
        }
    }
}
