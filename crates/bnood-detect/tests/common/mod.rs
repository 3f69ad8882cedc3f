//! The paper's Appendix D flow as a `LikelihoodModel`, and seeded samples of its p and q.
#![allow(dead_code)]

use std::f64::consts::PI;

use bnood_data::ImageSet;
use bnood_models::{LikelihoodModel, ModelError, StatsMode};
use bnood_norm::{BatchNorm, BatchNormConfig};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Pixel value of `x = 0` under [`AppendixDFlow::on_pixels`] (before the +0.5 midpoint).
pub const ZERO_PIXEL: i64 = 127;
/// Pixels per unit of `x` under [`AppendixDFlow::on_pixels`].
pub const PIXELS_PER_UNIT: f64 = 100.0;

/// Appendix D's 2-d flow with one coupling layer (eqs. 12–13), `pairs` independent copies:
/// `z1 = x1`, `z2 = x2 + BN(x1)·γ + β` with γ = 1, β = 0 (the optimum for p), standard
/// normal prior, unit Jacobian determinant, so
/// `ln p_f(x) = Σ_j ln φ(x1_j) + ln φ(x2_j + BN(x1_j))`.
///
/// Input `[N, 1, 1, 2·pairs]`: the first `pairs` values are `x1`, the rest `x2`, each read
/// as `x = (v − offset) / scale` (the density includes the `−2·pairs·ln scale` Jacobian of
/// that map). [`raw`](Self::raw) (offset 0, scale 1) treats the input directly as
/// `(x1, x2)`; [`on_pixels`](Self::on_pixels) reads midpoint-dequantised pixels, pixel 127
/// being 0 and 100 pixels one unit, so the detectors can score `ImageSet`s.
#[derive(Debug, Clone)]
pub struct AppendixDFlow {
    pub bn: BatchNorm,
    pub pairs: usize,
    pub offset: f64,
    pub scale: f64,
}

impl AppendixDFlow {
    /// The flow on raw `(x1, x2)` with running statistics of p: mean 0, variance 1 + σ².
    pub fn raw(device: &Device, sigma: f64) -> Self {
        Self::new(device, sigma, 1, 0.0, 1.0)
    }

    /// `pairs` copies reading pixels `v ∈ [0, 256)` as `x = (v − 127.5) / 100`.
    pub fn on_pixels(device: &Device, sigma: f64, pairs: usize) -> Self {
        Self::new(
            device,
            sigma,
            pairs,
            ZERO_PIXEL as f64 + 0.5,
            PIXELS_PER_UNIT,
        )
    }

    fn new(device: &Device, sigma: f64, pairs: usize, offset: f64, scale: f64) -> Self {
        let mut bn = BatchNormConfig::new(pairs)
            .init(device)
            .expect("valid BatchNorm");
        // The running statistics of p(x1): mean 0, variance 1 + σ² (set, not trained).
        bn.running_mean =
            Param::from_tensor(Tensor::zeros([pairs], device)).set_require_grad(false);
        bn.running_var = Param::from_tensor(Tensor::full([pairs], 1.0 + sigma * sigma, device))
            .set_require_grad(false);
        Self {
            bn,
            pairs,
            offset,
            scale,
        }
    }
}

impl LikelihoodModel for AppendixDFlow {
    fn image_shape(&self) -> [usize; 3] {
        [1, 1, 2 * self.pairs]
    }

    fn log_prob(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        let dims = x.dims();
        if dims[0] == 0 || dims[1..] != self.image_shape() {
            return Err(ModelError::Shape {
                expected: self.image_shape(),
                got: dims.to_vec(),
            });
        }
        let (n, p) = (dims[0], self.pairs);
        let x = x
            .reshape([n, 2 * p])
            .sub_scalar(self.offset)
            .div_scalar(self.scale);
        let x1 = x.clone().narrow(1, 0, p);
        let x2 = x.narrow(1, p, p);
        let z2 = x2 + self.bn.forward(x1.clone(), mode)?; // eq. 13, γ = 1, β = 0
        let sq = x1.powi_scalar(2) + z2.powi_scalar(2);
        let log_phi2 = sq.mul_scalar(-0.5).sub_scalar((2.0 * PI).ln()); // ln φ(z1) + ln φ(z2)
        Ok(log_phi2
            .sum_dim(1)
            .reshape([n])
            .sub_scalar(2.0 * p as f64 * self.scale.ln()))
    }
}

/// Standard normal draws (Box–Muller), seeded.
pub fn normals(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
        })
        .collect()
}

/// `n` draws of x1 from p: an even mixture of N(−1, σ²) and N(1, σ²).
pub fn sample_p(n: usize, sigma: f64, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let eps = normals(n, &mut rng);
    eps.into_iter()
        .map(|e| {
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            sign + sigma * e
        })
        .collect()
}

/// `n` draws of x1 from q = Uniform(−0.5, 0.5).
pub fn sample_q(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<f64>() - 0.5).collect()
}

/// Raw inputs `[n, 1, 1, 2]` with the given x1 and x2 = 0.
pub fn raw_inputs(x1: &[f64], device: &Device) -> Tensor<4> {
    let values: Vec<f32> = x1.iter().flat_map(|&x| [x as f32, 0.0]).collect();
    Tensor::from_data(TensorData::new(values, [x1.len(), 1, 1, 2]), device)
}

/// Pixel of a value `x` under [`AppendixDFlow::on_pixels`].
pub fn pixel(x: f64) -> u8 {
    let v = ZERO_PIXEL + (x * PIXELS_PER_UNIT).round() as i64;
    u8::try_from(v).expect("x within about ±1.27 maps into 0..=255")
}

/// An image set of `x1.len() / pairs` images `[1, 1, 2·pairs]`: consecutive `pairs` values
/// of `x1` per image, x2 = 0.
pub fn pixel_set(name: &str, x1: &[f64], pairs: usize) -> ImageSet {
    let n = x1.len() / pairs;
    let mut pixels = Vec::with_capacity(n * 2 * pairs);
    for image in x1.chunks_exact(pairs) {
        pixels.extend(image.iter().map(|&x| pixel(x)));
        pixels.extend(std::iter::repeat_n(pixel(0.0), pairs));
    }
    ImageSet::new(name, pixels, [n, 1, 1, 2 * pairs], None).expect("valid image set")
}

/// `n` images of `pairs` pairs drawn from p.
pub fn p_set(name: &str, n: usize, pairs: usize, sigma: f64, seed: u64) -> ImageSet {
    pixel_set(name, &sample_p(n * pairs, sigma, seed), pairs)
}

/// `n` images of `pairs` pairs drawn from q.
pub fn q_set(name: &str, n: usize, pairs: usize, seed: u64) -> ImageSet {
    pixel_set(name, &sample_q(n * pairs, seed), pairs)
}

/// A rank-1 tensor on the host, as f64.
pub fn host(t: Tensor<1>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// Mean of a slice.
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}
