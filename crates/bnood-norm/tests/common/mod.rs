//! Shared helpers for the bnood-norm integration tests: deterministic inputs, host (f64)
//! reference math, and conversions between host vectors and tensors.
#![allow(dead_code)]

use bnood_norm::{BatchNorm, BatchNormConfig};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

/// Deterministic pseudo-random values in [-1, 1) (64-bit LCG, high bits), so the tests need
/// no RNG crate and every run sees the same numbers.
pub fn lcg_values(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = (state >> 40) as f64 / (1u64 << 24) as f64; // [0, 1)
            (2.0 * unit - 1.0) as f32
        })
        .collect()
}

/// An `[n, c, h, w]` input whose channels have clearly different means and spreads
/// (channel k: mean `offsets[k]`, spread `scales[k]`), so per-channel bugs show.
pub fn nchw_input(seed: u64, shape: [usize; 4], offsets: &[f32], scales: &[f32]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    assert_eq!(offsets.len(), c);
    assert_eq!(scales.len(), c);
    let noise = lcg_values(seed, n * c * h * w);
    let mut out = Vec::with_capacity(noise.len());
    for b in 0..n {
        for k in 0..c {
            for s in 0..h * w {
                let i = ((b * c + k) * h * w) + s;
                out.push(offsets[k] + scales[k] * noise[i]);
            }
        }
    }
    out
}

/// Tensor `[n, c, h, w]` from host values.
pub fn tensor4(values: &[f32], shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// Tensor `[c]` from host values.
pub fn tensor1(values: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// Host copy of a tensor's values as f32.
pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().expect("tensor holds f32 values")
}

/// Host copy of a parameter's values.
pub fn host_param(p: &Param<Tensor<1>>) -> Vec<f32> {
    host(p.val())
}

/// Bit patterns, for "bit-identical" comparisons (distinguishes -0.0 and NaN payloads).
pub fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Per-channel mean and **biased** variance (over N·H·W) of an `[n, c, h, w]` input, in f64.
pub fn host_batch_stats(x: &[f32], shape: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
    let [n, c, h, w] = shape;
    let count = (n * h * w) as f64;
    let mut mean = vec![0.0f64; c];
    let mut var = vec![0.0f64; c];
    for b in 0..n {
        for k in 0..c {
            for s in 0..h * w {
                mean[k] += x[(b * c + k) * h * w + s] as f64;
            }
        }
    }
    for m in &mut mean {
        *m /= count;
    }
    for b in 0..n {
        for k in 0..c {
            for s in 0..h * w {
                let d = x[(b * c + k) * h * w + s] as f64 - mean[k];
                var[k] += d * d;
            }
        }
    }
    for v in &mut var {
        *v /= count;
    }
    (mean, var)
}

/// `y = (x − mean) / √(var + ε) · γ + β` per channel, in f64.
pub fn host_normalise(
    x: &[f64],
    shape: [usize; 4],
    mean: &[f64],
    var: &[f64],
    eps: f64,
    gamma: &[f64],
    beta: &[f64],
) -> Vec<f64> {
    let [n, c, h, w] = shape;
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for k in 0..c {
            let inv = 1.0 / (var[k] + eps).sqrt();
            for s in 0..h * w {
                let i = (b * c + k) * h * w + s;
                y[i] = (x[i] - mean[k]) * inv * gamma[k] + beta[k];
            }
        }
    }
    y
}

/// The `Batch`-mode output computed on the host in f64.
pub fn host_batch_norm(
    x: &[f32],
    shape: [usize; 4],
    eps: f64,
    gamma: &[f32],
    beta: &[f32],
) -> Vec<f64> {
    let (mean, var) = host_batch_stats(x, shape);
    host_normalise(
        &to_f64(x),
        shape,
        &mean,
        &var,
        eps,
        &to_f64(gamma),
        &to_f64(beta),
    )
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Asserts `|actual − expected| ≤ tol·max(1, |expected|)` elementwise.
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (a as f64 - e).abs();
        assert!(
            err <= tol * e.abs().max(1.0),
            "{what}[{i}]: got {a}, expected {e} (|diff| = {err:e}, tol {tol:e})"
        );
    }
}

/// Host values of a layer: γ, β, running mean, running variance.
pub struct LayerValues {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
}

impl LayerValues {
    /// Non-trivial values for a 3-channel layer.
    pub fn three_channels() -> Self {
        Self {
            gamma: vec![1.5, -0.75, 2.25],
            beta: vec![0.25, -1.0, 3.0],
            running_mean: vec![0.5, -2.0, 1.25],
            running_var: vec![2.0, 0.5, 1.75],
        }
    }
}

/// Builds a layer on `device` with the given ε and momentum and replaces all four
/// parameters with `values`. Running state is set before any `Train` pass, so the tape's
/// parameter ids are those of the new running params.
pub fn layer_with(device: &Device, eps: f64, momentum: f64, values: &LayerValues) -> BatchNorm {
    let c = values.gamma.len();
    let mut layer = BatchNormConfig::new(c)
        .with_epsilon(eps)
        .with_momentum(momentum)
        .init(device)
        .expect("valid config");
    layer.gamma = Param::from_tensor(tensor1(&values.gamma, device));
    layer.beta = Param::from_tensor(tensor1(&values.beta, device));
    layer.running_mean =
        Param::from_tensor(tensor1(&values.running_mean, device)).set_require_grad(false);
    layer.running_var =
        Param::from_tensor(tensor1(&values.running_var, device)).set_require_grad(false);
    layer
}
