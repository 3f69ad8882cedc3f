//! Shared plumbing: image sets to dequantised tensors, log-likelihoods back to the host,
//! seeded random streams, quantiles and p-value grids.

use burn::tensor::{Device, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use bnood_data::ImageSet;
use bnood_models::{LikelihoodModel, StatsMode};

use crate::params::{Dequantization, ValidScoringParams};
use crate::{DetectError, Result};

/// Fails unless the images of `set` have the model's `[C, H, W]`.
pub(crate) fn check_shape(set: &ImageSet, expected: [usize; 3]) -> Result<()> {
    if set.image_shape() != expected {
        return Err(DetectError::ShapeMismatch {
            set: set.name().to_string(),
            expected,
            got: set.image_shape(),
        });
    }
    Ok(())
}

/// Images `indices` of `set` as a dequantised tensor `[len, C, H, W]` on `device`. The
/// uniform noise of an image depends only on the seed and its index in `set`.
pub(crate) fn images_tensor(
    set: &ImageSet,
    indices: &[usize],
    dequantization: Dequantization,
    device: &Device,
) -> Result<Tensor<4>> {
    let d = set.dims_per_image();
    let mut values = Vec::with_capacity(indices.len() * d);
    for &i in indices {
        let image = set.image(i).ok_or_else(|| {
            DetectError::InvalidParameter(format!(
                "image index {i} is outside `{}` ({} images)",
                set.name(),
                set.len()
            ))
        })?;
        match dequantization {
            Dequantization::Midpoint => {
                values.extend(image.iter().map(|&p| f32::from(p) + 0.5));
            }
            Dequantization::Uniform { seed } => {
                let mut rng = stream(seed, &[0xDE0_0A17, i as u64]);
                values.extend(image.iter().map(|&p| f32::from(p) + rng.random::<f32>()));
            }
        }
    }
    let [c, h, w] = set.image_shape();
    Ok(Tensor::from_data(
        TensorData::new(values, [indices.len(), c, h, w]),
        device,
    ))
}

/// A rank-1 tensor's values on the host, as f64.
pub(crate) fn host(values: Tensor<1>) -> Result<Vec<f64>> {
    let data = values
        .try_into_data()
        .map_err(|e| DetectError::Backend(format!("{e:?}")))?;
    Ok(data.iter::<f64>().collect())
}

/// Fails on the first NaN in `values`, which are the log-likelihoods of images
/// `indices` of `set`.
pub(crate) fn reject_nan(values: &[f64], set: &ImageSet, indices: &[usize]) -> Result<()> {
    match values.iter().position(|v| v.is_nan()) {
        Some(k) => Err(DetectError::NanLogLikelihood {
            set: set.name().to_string(),
            index: indices.get(k).copied().unwrap_or(k),
        }),
        None => Ok(()),
    }
}

/// `ln p(x)` in nats of every image of `set` with running BatchNorm statistics (the
/// paper's evaluation mode), in set order, `params.batch_size()` images per forward pass.
pub(crate) fn running_log_likelihoods<M: LikelihoodModel>(
    model: &M,
    set: &ImageSet,
    params: &ValidScoringParams,
    device: &Device,
) -> Result<Vec<f64>> {
    check_shape(set, model.image_shape())?;
    let n = set.len();
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    params.progress.start(
        &format!("log p on {}", set.name()),
        n.div_ceil(params.batch_size()) as u64,
    );
    while start < n {
        let end = (start + params.batch_size()).min(n);
        let indices: Vec<usize> = (start..end).collect();
        let x = images_tensor(set, &indices, params.dequantization(), device)?;
        let values = host(model.log_prob(x, &StatsMode::Running)?)?;
        reject_nan(&values, set, &indices)?;
        out.extend(values);
        params.progress.advance(1);
        start = end;
    }
    Ok(out)
}

/// SplitMix64 finaliser: spreads a 64-bit value over all bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An independent ChaCha8 stream for `seed` and a path of tags (which pool, which ratio,
/// which draw…), so every random choice is reproducible and independent of the others.
pub(crate) fn stream(seed: u64, tags: &[u64]) -> ChaCha8Rng {
    let key = tags.iter().fold(mix(seed), |acc, &t| mix(acc ^ mix(t)));
    ChaCha8Rng::seed_from_u64(key)
}

/// The `q` quantile of ascending `sorted` values with linear interpolation between order
/// statistics (NumPy's default `method="linear"`): position `q·(n − 1)`.
pub(crate) fn quantile_linear(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Checks a target false-positive rate: finite and in `(0, 1)`.
pub(crate) fn check_fpr(target_fpr: f64) -> Result<()> {
    if !(target_fpr > 0.0 && target_fpr < 1.0) {
        return Err(DetectError::InvalidParameter(format!(
            "target false-positive rate {target_fpr} must lie strictly between 0 and 1 (e.g. 0.05)"
        )));
    }
    Ok(())
}

/// The largest value `step·k ≤ target_fpr` (k ≥ 1), capped at 1: the p-value threshold of
/// a test whose p-values live on the grid `step·k`.
pub(crate) fn p_value_threshold(target_fpr: f64, step: f64, reference: usize) -> Result<f64> {
    check_fpr(target_fpr)?;
    let k = (target_fpr / step + 1e-9).floor();
    if k < 1.0 {
        return Err(DetectError::ReferenceTooSmall(format!(
            "with {reference} reference values the smallest p-value is {step:.4}, above the target false-positive rate {target_fpr}: fit on more reference images (about {} or more) or raise the target",
            (step * (reference + 1) as f64 / target_fpr - 1.0).ceil() as usize
        )));
    }
    Ok((k * step).min(1.0))
}

/// Ascending copy of `values` (no NaN: callers reject them first).
pub(crate) fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// `#{v ∈ sorted : v ≤ x}` and `#{v ∈ sorted : v ≥ x}` for ascending `sorted`.
pub(crate) fn counts_le_ge(sorted: &[f64], x: f64) -> (usize, usize) {
    let le = sorted.partition_point(|&v| v <= x);
    let lt = sorted.partition_point(|&v| v < x);
    (le, sorted.len() - lt)
}
