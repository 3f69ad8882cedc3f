//! Shared plumbing: image sets to dequantised tensors, log-likelihoods back to the host,
//! seeded random streams, and the running-statistics scorer the likelihood baselines share.

use burn::tensor::{Device, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use bnood_data::ImageSet;
use bnood_data::seeds::splitmix64;
use bnood_models::{LikelihoodModel, StatsMode};

use crate::params::{Dequantization, ValidScoringParams};
use crate::progress::ProgressHook;
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
    progress: &ProgressHook,
    device: &Device,
) -> Result<Vec<f64>> {
    check_shape(set, model.image_shape())?;
    let n = set.len();
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    progress.start(
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
        progress.advance(1);
        start = end;
    }
    Ok(out)
}

/// `Σ over rows of (S₀ − S₁)` in nats for one batch: `S₀` the rows' running-statistics
/// log-likelihoods (`s0`, aligned with `rows`), `S₁` with the batch's own BatchNorm
/// statistics (the paper's `r = 1` batch, eq. 5). The window test sums it over chunks, the
/// pool verdict over the pool's batches.
pub(crate) fn batch_gap_sum<M: LikelihoodModel>(
    model: &M,
    device: &Device,
    dequantization: Dequantization,
    set: &ImageSet,
    rows: &[usize],
    s0: &[f64],
) -> Result<f64> {
    let x = images_tensor(set, rows, dequantization, device)?;
    let (s1, _) = bnood_norm::mixed_batch(x, None, |x, mode| model.log_prob(x, mode))?;
    let s1 = host(s1)?;
    reject_nan(&s1, set, rows)?;
    Ok(s0.iter().zip(&s1).map(|(s0, s1)| s0 - s1).sum())
}

/// An independent ChaCha8 stream for `seed` and a path of tags (which pool, which ratio,
/// which draw…), so every random choice is reproducible and independent of the others.
pub(crate) fn stream(seed: u64, tags: &[u64]) -> ChaCha8Rng {
    let key = tags
        .iter()
        .fold(splitmix64(seed), |acc, &t| splitmix64(acc ^ splitmix64(t)));
    ChaCha8Rng::seed_from_u64(key)
}

/// What the likelihood baselines ([`crate::LogLikelihood`], [`crate::TPerm`],
/// [`crate::Waic`]) share: the device their models live on, checked scoring parameters and
/// a progress hook; it scores sets with running statistics.
#[derive(Debug, Clone)]
pub(crate) struct RunningScorer {
    device: Device,
    params: ValidScoringParams,
    progress: ProgressHook,
}

impl RunningScorer {
    pub(crate) fn new(device: &Device, params: ValidScoringParams) -> Self {
        Self {
            device: device.clone(),
            params,
            progress: ProgressHook::none(),
        }
    }

    pub(crate) fn set_progress(&mut self, progress: ProgressHook) {
        self.progress = progress;
    }

    /// `ln p(x)` in nats of every image of `set` under `model`, running statistics.
    pub(crate) fn log_likelihoods<M: LikelihoodModel>(
        &self,
        model: &M,
        set: &ImageSet,
    ) -> Result<Vec<f64>> {
        running_log_likelihoods(model, set, &self.params, &self.progress, &self.device)
    }
}
