//! The discretized logistic mixture likelihood of PixelCNN++ (Salimans et al. 2017, eq. 2)
//! for one-channel images: per pixel, `M` logistic components on the `[−1, 1]` scale, each
//! integrated over the pixel's bin of width `2/255`; the bins of 0 and 255 extend to −∞ and
//! +∞, so the 256 probabilities of a pixel sum to exactly 1.
//!
//! Unlike the reference implementations, which replace a bin's mass below 1e-5 by the
//! density at its centre times the bin width, every bin here is the exact difference of two
//! logistic CDFs, evaluated in log space without cancellation:
//!
//! `ln(σ(a) − σ(b)) = a − softplus(a) − softplus(b) + ln(1 − e^{−(a−b)})`, `a > b`,
//!
//! with `a − b = 2/(255·s)` and `ln(1 − e^{−δ})` from a series for small `δ` (a wide
//! component), so the result stays finite for saturated scales and extreme logits.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softplus};

/// Half a bin on the `[−1, 1]` scale.
const HALF_BIN: f64 = 1.0 / 255.0;

/// The smallest log-scale a component may have (as in Salimans et al.'s code): `e^{−7}`
/// on the `[−1, 1]` scale, about an eighth of a bin.
pub const MIN_LOG_SCALE: f64 = -7.0;

/// Below this `δ = a − b`, `ln(1 − e^{−δ})` is taken from its series (error below 1e-7).
const SERIES_BELOW: f64 = 0.5;

/// The parameters of a per-pixel logistic mixture, each `[N, M, H, W]` for `M` components:
/// unnormalised mixture weights (logits), component means and log-scales on the `[−1, 1]`
/// pixel scale (pixel `k ∈ 0..=255` sits at `k/127.5 − 1`).
#[derive(Debug, Clone)]
pub struct LogisticMixture {
    /// Unnormalised log-weights of the components, `[N, M, H, W]`.
    pub logit_weights: Tensor<4>,
    /// Component means on the `[−1, 1]` scale, `[N, M, H, W]`.
    pub means: Tensor<4>,
    /// Component log-scales on the `[−1, 1]` scale, `[N, M, H, W]`; values below
    /// [`MIN_LOG_SCALE`] are raised to it.
    pub log_scales: Tensor<4>,
}

impl LogisticMixture {
    /// Reads the network's output `[N, 3M, H, W]`: channels `0..M` are the weights' logits,
    /// `M..2M` the means, `2M..3M` the log-scales (Salimans et al.'s one-channel layout).
    pub fn from_output(output: Tensor<4>, mixtures: usize) -> Self {
        let part = |i: usize| output.clone().narrow(1, i * mixtures, mixtures);
        Self {
            logit_weights: part(0),
            means: part(1),
            log_scales: part(2),
        }
    }

    /// `ln P(pixel)` in nats, `[N, 1, H, W]`, for integer pixels `pixels` `[N, 1, H, W]`
    /// given as floats on the `[−1, 1]` scale (`k/127.5 − 1`, `k ∈ 0..=255`). Only the bin
    /// a pixel falls in matters, so values between bin centres are read as the nearest
    /// bin's; the edge bins are `(−∞, −1 + 1/255]` and `[1 − 1/255, ∞)`.
    pub fn log_prob(&self, pixels: Tensor<4>) -> Tensor<4> {
        let pixels = pixels.expand(self.means.dims());
        let log_scales = self.log_scales.clone().clamp_min(MIN_LOG_SCALE);
        let inv_scale = log_scales.clone().neg().exp();
        let centred = pixels.clone() - self.means.clone();
        // a = (x + ½ bin − μ)/s and b = (x − ½ bin − μ)/s: the bin's upper and lower edges.
        let upper = (centred.clone().add_scalar(HALF_BIN)) * inv_scale.clone();
        let lower = (centred.sub_scalar(HALF_BIN)) * inv_scale;
        // Pixel 0: ln σ(a) = −softplus(−a); pixel 255: ln(1 − σ(b)) = −softplus(b).
        let first_bin = softplus(upper.clone().neg(), 1.0).neg();
        let last_bin = softplus(lower.clone(), 1.0).neg();
        // Inner bins: ln(σ(a) − σ(b)), exact (see the module doc).
        // ln δ = ln(a − b) = ln(bin width) − ln s, exact even where s overflows e^{−ln s}.
        let log_delta = log_scales.neg().add_scalar((2.0 * HALF_BIN).ln());
        let inner = upper.clone() - softplus(upper, 1.0) - softplus(lower, 1.0)
            + log_one_minus_exp_neg(log_delta);
        let is_first = pixels.clone().lower_elem(-1.0 + HALF_BIN);
        let is_last = pixels.greater_elem(1.0 - HALF_BIN);
        let per_component = inner
            .mask_where(is_first, first_bin)
            .mask_where(is_last, last_bin);
        // eq. 2: ln Σ_k π_k P_k(x), with log-sum-exp over the components.
        log_sum_exp_dim1(log_softmax(self.logit_weights.clone(), 1) + per_component)
    }
}

/// `ln(1 − e^{−δ})` for `δ = e^{log_delta} > 0`, accurate for tiny `δ` (where `1 − e^{−δ}`
/// would round to 0) and finite for every finite `log_delta`.
fn log_one_minus_exp_neg(log_delta: Tensor<4>) -> Tensor<4> {
    // δ is capped where the direct formula is used anyway, so exp() never overflows.
    let delta = log_delta.clone().clamp_max(10.0).exp();
    let small = delta.clone().lower_elem(SERIES_BELOW);
    // ln(1 − e^{−δ}) = ln δ − δ/2 + δ²/24 − δ⁴/2880 + O(δ⁶).
    let d2 = delta.clone().powi_scalar(2);
    let series = log_delta - delta.clone().mul_scalar(0.5) + d2.clone().div_scalar(24.0)
        - d2.powi_scalar(2).div_scalar(2880.0);
    // Where the series is used, δ < 0.5 keeps 1 − e^{−δ} away from 0 in the direct branch
    // too, so neither branch produces a NaN gradient.
    let direct = delta
        .clamp_min(SERIES_BELOW)
        .neg()
        .exp()
        .neg()
        .add_scalar(1.0)
        .log();
    direct.mask_where(small, series)
}

/// `ln Σ_k e^{x_k}` over dimension 1 of `[N, M, H, W]`, giving `[N, 1, H, W]`.
fn log_sum_exp_dim1(x: Tensor<4>) -> Tensor<4> {
    let max = x.clone().detach().max_dim(1);
    (x - max.clone()).exp().sum_dim(1).log() + max
}
