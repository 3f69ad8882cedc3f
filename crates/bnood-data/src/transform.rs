//! Seeded transforms the experiments need: the paper's random rotation (OoD set
//! "Rotation"), uniform dequantisation, the logit transform with its log-determinant, and
//! conversions between nats and bits per dimension.

use burn::tensor::{Tensor, TensorData, activation::sigmoid};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};
use crate::image_set::ImageSet;

/// The paper's rotation range for the "Rotation" OoD set: each image is rotated by an
/// angle drawn uniformly from (90°, 270°) (Table 2 caption).
pub const PAPER_ROTATION_DEGREES: (f64, f64) = (90.0, 270.0);

/// The logit transform's α used by RealNVP on MNIST-like data (Dinh et al. 2016).
pub const PAPER_LOGIT_ALPHA: f64 = 0.05;

/// Rotates every image of `set` anticlockwise by its own angle drawn uniformly (ChaCha8,
/// `seed`) from `[degrees.0, degrees.1)`, about the image centre, with bilinear
/// interpolation; pixels that come from outside the image are 0 (background). Labels are
/// kept; the name gets a `+rotated` suffix.
///
/// # Errors
/// [`DataError::InvalidArgument`] if the range is empty, reversed or not finite.
pub fn rotate_randomly(set: &ImageSet, degrees: (f64, f64), seed: u64) -> Result<ImageSet> {
    let (lo, hi) = degrees;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(DataError::InvalidArgument(format!(
            "rotation range ({lo}, {hi}) degrees must be finite with low < high"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shape = set.image_shape();
    let mut pixels = Vec::with_capacity(set.pixels().len());
    for i in 0..set.len() {
        let angle = rng.random_range(lo..hi);
        let image = set.image(i).expect("index is inside the set");
        pixels.extend(rotate_image(image, shape, angle));
    }
    ImageSet::new(
        format!("{}+rotated", set.name()),
        pixels,
        set.shape(),
        set.labels().map(<[u32]>::to_vec),
    )
}

/// Rotates one `[C, H, W]` image anticlockwise by `degrees` about its centre
/// (`((W−1)/2, (H−1)/2)`), bilinear interpolation, zero outside. Values are rounded to the
/// nearest integer.
pub fn rotate_image(image: &[u8], [c, h, w]: [usize; 3], degrees: f64) -> Vec<u8> {
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let at = |ch: usize, y: isize, x: isize| -> f64 {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
            0.0
        } else {
            f64::from(image[ch * h * w + y as usize * w + x as usize])
        }
    };
    let mut out = vec![0u8; c * h * w];
    for y in 0..h {
        for x in 0..w {
            // Inverse map: the output pixel takes its value from the source point rotated
            // back by −θ (y grows downwards, so anticlockwise on screen flips the sign).
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let sx = cos * dx - sin * dy + cx;
            let sy = sin * dx + cos * dy + cy;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            for ch in 0..c {
                let v = at(ch, y0, x0) * (1.0 - fx) * (1.0 - fy)
                    + at(ch, y0, x0 + 1) * fx * (1.0 - fy)
                    + at(ch, y0 + 1, x0) * (1.0 - fx) * fy
                    + at(ch, y0 + 1, x0 + 1) * fx * fy;
                out[ch * h * w + y * w + x] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Ren et al.'s (NeurIPS 2019) input perturbation for training a *background* model of a
/// likelihood-ratio detector: every pixel of `set` is, independently with probability
/// `rate`, replaced by a value drawn uniformly from `0..=255` (ChaCha8, `seed`). The other
/// pixels are kept. Labels are kept; the name gets a `+mutated(rate)` suffix.
///
/// # Errors
/// [`DataError::InvalidArgument`] unless `0 ≤ rate ≤ 1` (Ren et al. use 0.1–0.3).
pub fn mutate_pixels(set: &ImageSet, rate: f64, seed: u64) -> Result<ImageSet> {
    check_mutation_rate(rate)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pixels: Vec<u8> = set
        .pixels()
        .iter()
        .map(|&p| {
            if rng.random::<f64>() < rate {
                rng.random::<u8>()
            } else {
                p
            }
        })
        .collect();
    ImageSet::new(
        format!("{}+mutated({rate})", set.name()),
        pixels,
        set.shape(),
        set.labels().map(<[u32]>::to_vec),
    )
}

/// Checks a mutation rate of [`mutate_pixels`]: finite, in `[0, 1]`.
///
/// # Errors
/// [`DataError::InvalidArgument`] naming the valid range.
pub fn check_mutation_rate(rate: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&rate) {
        return Err(DataError::InvalidArgument(format!(
            "mutation rate {rate} must lie in [0, 1]: it is the probability that a pixel is replaced by a random value (Ren et al. use 0.1 to 0.3)"
        )));
    }
    Ok(())
}

/// Uniform dequantisation: adds independent noise `u ~ U[0, 1)` to every pixel of a batch
/// on the 0–255 scale, giving continuous values in `[0, 256)`. The noise stream is ChaCha8
/// seeded once, so a sequence of calls is reproducible; noise is drawn on the host and
/// uploaded, so it does not depend on the backend.
#[derive(Debug, Clone)]
pub struct Dequantizer {
    rng: ChaCha8Rng,
}

impl Dequantizer {
    /// A dequantiser whose noise stream starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// `x + u`, `x` of shape `[N, C, H, W]` on the 0–255 scale.
    pub fn apply(&mut self, x: Tensor<4>) -> Tensor<4> {
        let dims = x.dims();
        let noise: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|_| self.rng.random::<f32>())
            .collect();
        let device = x.device();
        x + Tensor::from_data(TensorData::new(noise, dims), &device)
    }
}

/// The logit transform of RealNVP: for `x ∈ [0, 256)` (dequantised pixels),
/// `y = α + (1 − 2α)·x/256`, `z = ln y − ln(1 − y)`.
///
/// Its log-determinant per dimension is `ln(1 − 2α) − ln 256 − ln y − ln(1 − y)` (nats), so a
/// density `p_z` in logit space gives the density of `x` on the 0–256 scale as
/// `ln p_x(x) = ln p_z(z) + log_det`. Bits per dimension computed from `ln p_x` are directly
/// comparable with the paper's Table 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitTransform {
    alpha: f64,
}

impl Default for LogitTransform {
    fn default() -> Self {
        Self {
            alpha: PAPER_LOGIT_ALPHA,
        }
    }
}

impl LogitTransform {
    /// A transform with the given `α`.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] unless `0 ≤ α < 0.5`.
    pub fn new(alpha: f64) -> Result<Self> {
        if !(0.0..0.5).contains(&alpha) {
            return Err(DataError::InvalidArgument(format!(
                "logit α = {alpha} must lie in [0, 0.5)"
            )));
        }
        Ok(Self { alpha })
    }

    /// The transform's `α`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Maps `x` `[N, C, H, W]` on the `[0, 256)` scale to logit space; returns `z` (same shape)
    /// and the log-determinant per sample, `[N]`, in nats.
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let [n, c, h, w] = x.dims();
        let y = x
            .mul_scalar((1.0 - 2.0 * self.alpha) / 256.0)
            .add_scalar(self.alpha);
        let log_y = y.clone().log();
        let log_1my = y.neg().add_scalar(1.0).log();
        let z = log_y.clone() - log_1my.clone();
        let per_dim_const = (1.0 - 2.0 * self.alpha).ln() - 256f64.ln();
        let log_det = (log_y + log_1my)
            .neg()
            .reshape([n, c * h * w])
            .sum_dim(1)
            .reshape([n])
            .add_scalar(per_dim_const * (c * h * w) as f64);
        (z, log_det)
    }

    /// Maps logit-space `z` back to the `[0, 256)` pixel scale.
    pub fn inverse(&self, z: Tensor<4>) -> Tensor<4> {
        sigmoid(z)
            .sub_scalar(self.alpha)
            .mul_scalar(256.0 / (1.0 - 2.0 * self.alpha))
    }
}

/// Converts a log-likelihood in nats of one image with `dims` values into bits per
/// dimension: `−ln p / (dims · ln 2)`. Lower is a better fit.
pub fn bits_per_dim(log_prob_nats: f64, dims: usize) -> f64 {
    -log_prob_nats / (dims as f64 * std::f64::consts::LN_2)
}

/// Inverse of [`bits_per_dim`]: the log-likelihood in nats of one image with `dims` values.
pub fn log_prob_nats_from_bits_per_dim(bits_per_dim: f64, dims: usize) -> f64 {
    -bits_per_dim * dims as f64 * std::f64::consts::LN_2
}

/// Bits per dimension of every sample of a `[N]` tensor of log-likelihoods in nats.
pub fn bits_per_dim_tensor(log_prob_nats: Tensor<1>, dims: usize) -> Tensor<1> {
    log_prob_nats.div_scalar(-(dims as f64) * std::f64::consts::LN_2)
}
