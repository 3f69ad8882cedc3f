//! The BN test's verdict on a whole test pool: the window statistic of [`crate::WindowTest`]
//! applied to the pool, against null batches of the in-distribution images the fitted test
//! keeps (see [`PoolVerdict`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::Device;
use rand::RngExt;
use rand::seq::SliceRandom;
use rand::seq::index::sample;

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;

use crate::params::ValidScoringParams;
use crate::scores::PoolVerdict;
use crate::scoring::{batch_gap_sum, running_log_likelihoods, stream};
use crate::{ProgressHook, Result};

/// Stream tags of the verdict: the pool's grouping, the null batches and the resampling.
const TAG_GROUPS: u64 = 21;
const TAG_NULL: u64 = 22;
const TAG_RESAMPLE: u64 = 23;

/// Resampled means of `g` null batch statistics behind a pool verdict's p-value when the
/// pool is scored in `g > 1` batches.
pub const POOL_RESAMPLES: usize = 10_000;

/// Default [`crate::BnTestParams::pool_null_batches`]: the null batches of reference images
/// scored for a pool verdict.
pub const DEFAULT_POOL_NULL_BATCHES: usize = 200;

/// What the verdict reuses across the pools one fitted test scores: `S₀` of the kept
/// reference images, and the null batch statistics per batch size. Clones of a fitted test
/// share it (it depends on the fitted state only).
#[derive(Debug, Default, Clone)]
pub(crate) struct NullCache {
    reference_log_p: Arc<OnceLock<Vec<f64>>>,
    nulls: Arc<Mutex<BTreeMap<usize, Arc<Vec<f64>>>>>,
}

/// Everything a pool verdict reads.
pub(crate) struct VerdictInputs<'a, M> {
    pub model: &'a M,
    pub device: &'a Device,
    pub scoring: &'a ValidScoringParams,
    pub progress: &'a ProgressHook,
    pub seed: u64,
    /// Largest batch the pool is cut into (the BN test's `b`).
    pub batch_size: usize,
    /// Null batches `K`.
    pub null_batches: usize,
    /// The in-distribution images the fitted test keeps.
    pub reference: &'a ImageSet,
}

/// How a pool of `n` images is cut: `g` batches of `c` images, `c ≤ min(b, reference)`, as
/// equal as possible (the last batch filled up with other pool images).
fn grouping(n: usize, batch_size: usize, reference: usize) -> Option<(usize, usize)> {
    let cap = batch_size.min(reference);
    if n < 2 || cap < 2 {
        return None;
    }
    let groups = n.div_ceil(cap);
    Some((groups, n.div_ceil(groups)))
}

/// The verdict on `pool` (see [`PoolVerdict`]); `None` when the pool or the kept reference
/// holds fewer than two images, or `K = 0`.
pub(crate) fn pool_verdict<M: LikelihoodModel>(
    inputs: &VerdictInputs<'_, M>,
    cache: &NullCache,
    pool: &ImageSet,
) -> Result<Option<PoolVerdict>> {
    let n = pool.len();
    let k = inputs.null_batches;
    let Some((groups, size)) = grouping(n, inputs.batch_size, inputs.reference.len()) else {
        return Ok(None);
    };
    if k == 0 {
        return Ok(None);
    }
    // The pool, shuffled and cut into `groups` batches of `size`; the last one's missing
    // rows are other pool images (they count in its mean like the others).
    let mut rng = stream(inputs.seed, &[TAG_GROUPS]);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let batches: Vec<Vec<usize>> = (0..groups)
        .map(|g| {
            let rows = &order[(g * size).min(n)..((g + 1) * size).min(n)];
            let mut batch = rows.to_vec();
            if batch.len() < size {
                let others = &order[..g * size];
                let fill = sample(&mut rng, others.len(), size - batch.len());
                batch.extend(fill.iter().map(|i| others[i]));
            }
            batch
        })
        .collect();
    let pool_log_p = running_log_likelihoods(
        inputs.model,
        pool,
        inputs.scoring,
        inputs.progress,
        inputs.device,
    )?;
    let values = batches
        .iter()
        .map(|rows| batch_statistic(inputs, pool, rows, &pool_log_p))
        .collect::<Result<Vec<f64>>>()?;
    let statistic = values.iter().sum::<f64>() / groups as f64;
    let null = null_statistics(inputs, cache, size)?;
    // Two-sided: OoD rows usually pull the batch statistics away from the running ones
    // (T above the null), but a pool that is OoD as a whole can fit its own batch
    // statistics better than the running ones fit it (T far below the null: 8×8 KMNIST
    // under a digits model, docs/results.md).
    let (above, below, total) = if groups == 1 {
        let above = null.iter().filter(|&&t| t >= statistic).count();
        let below = null.iter().filter(|&&t| t <= statistic).count();
        (above, below, k)
    } else {
        let mut rng = stream(inputs.seed, &[TAG_RESAMPLE, size as u64, groups as u64]);
        let (mut above, mut below) = (0, 0);
        for _ in 0..POOL_RESAMPLES {
            let mean = (0..groups)
                .map(|_| null[rng.random_range(0..k)])
                .sum::<f64>()
                / groups as f64;
            above += usize::from(mean >= statistic);
            below += usize::from(mean <= statistic);
        }
        (above, below, POOL_RESAMPLES)
    };
    let one_sided = |count: usize| (1 + count) as f64 / (1 + total) as f64;
    let p_value = (2.0 * one_sided(above.min(below))).min(1.0);
    let null_mean = null.iter().sum::<f64>() / k as f64;
    let null_sd =
        (null.iter().map(|t| (t - null_mean).powi(2)).sum::<f64>() / (k.max(2) - 1) as f64).sqrt();
    Ok(Some(PoolVerdict {
        p_value,
        window_p_value: p_value,
        rank: None,
        statistic,
        null_mean,
        null_sd,
        batches: groups,
        batch_size: size,
        null_batches: k,
        pool_size: n,
        reference_size: inputs.reference.len(),
    }))
}

/// `K` null batch statistics of `size` reference images each (cached per size).
fn null_statistics<M: LikelihoodModel>(
    inputs: &VerdictInputs<'_, M>,
    cache: &NullCache,
    size: usize,
) -> Result<Arc<Vec<f64>>> {
    if let Some(null) = cache
        .nulls
        .lock()
        .map_err(|_| poisoned())?
        .get(&size)
        .cloned()
    {
        return Ok(null);
    }
    let reference = inputs.reference;
    let log_p = match cache.reference_log_p.get() {
        Some(v) => v,
        None => {
            let v = running_log_likelihoods(
                inputs.model,
                reference,
                inputs.scoring,
                inputs.progress,
                inputs.device,
            )?;
            cache.reference_log_p.get_or_init(|| v)
        }
    };
    let k = inputs.null_batches;
    inputs.progress.start(
        &format!("{k} null batches of {size} for the pool verdict"),
        k as u64,
    );
    let null = (0..k)
        .map(|j| {
            let mut rng = stream(inputs.seed, &[TAG_NULL, size as u64, j as u64]);
            let rows = sample(&mut rng, reference.len(), size).into_vec();
            let t = batch_statistic(inputs, reference, &rows, log_p);
            inputs.progress.advance(1);
            t
        })
        .collect::<Result<Vec<f64>>>()?;
    let null = Arc::new(null);
    cache
        .nulls
        .lock()
        .map_err(|_| poisoned())?
        .insert(size, null.clone());
    Ok(null)
}

/// `mean over rows of (S₀ − S₁)` in nats, `S₁` with the batch's own statistics (`r = 1`).
fn batch_statistic<M: LikelihoodModel>(
    inputs: &VerdictInputs<'_, M>,
    set: &ImageSet,
    rows: &[usize],
    log_p: &[f64],
) -> Result<f64> {
    let s0: Vec<f64> = rows.iter().map(|&i| log_p[i]).collect();
    let sum = batch_gap_sum(
        inputs.model,
        inputs.device,
        inputs.scoring.dequantization(),
        set,
        rows,
        &s0,
    )?;
    Ok(sum / rows.len() as f64)
}

fn poisoned() -> crate::DetectError {
    crate::DetectError::InvalidParameter(
        "the pool verdict's cache was poisoned by a panic in another thread: fit the detector again"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::grouping;

    #[test]
    fn a_pool_is_cut_into_equal_batches_no_larger_than_b_or_the_reference() {
        assert_eq!(grouping(1000, 64, 500), Some((16, 63)));
        assert_eq!(grouping(250, 64, 500), Some((4, 63)));
        assert_eq!(grouping(50, 64, 500), Some((1, 50)));
        assert_eq!(grouping(64, 64, 500), Some((1, 64)));
        assert_eq!(grouping(65, 64, 500), Some((2, 33)));
        assert_eq!(grouping(1000, 64, 20), Some((50, 20)));
        assert_eq!(grouping(1, 64, 500), None);
        assert_eq!(grouping(100, 64, 1), None);
    }
}
