//! Figure 3: bits/dim of a test pool as the share `r` of test images in each mixed batch
//! varies.

use super::*;

/// One curve of Figure 3: the mean bits/dim of a test pool's images as the share `r` of
/// test images in each mixed batch varies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSeries {
    /// Test pool name.
    pub set: String,
    /// Images in the pool.
    pub n: usize,
    /// `(r, mean −log₂ p̃ / D)` points: bits/dim of `S_{b,r}` (eq. 6) averaged over the pool.
    pub points: Vec<(f64, f64)>,
}

/// Figure 3: `S_{b,r}` of every image of each pool, for each `r` of `ratios`, averaged
/// and reported in bits/dim. `bn` must be fitted (its reference images fill the batches).
///
/// # Errors
/// [`EvalError::InvalidSetting`] for no ratios or pools; BN-test errors.
pub fn ratio_sweep<M: LikelihoodModel>(
    bn: &FittedBnTest<M>,
    pools: &[ImageSet],
    ratios: &[f64],
) -> Result<Vec<SweepSeries>> {
    if ratios.is_empty() || pools.is_empty() {
        return Err(EvalError::InvalidSetting(
            "the ratio sweep needs at least one ratio and one test pool".into(),
        ));
    }
    let dims = bn.detector().model().dims();
    pools
        .iter()
        .map(|pool| {
            let points = ratios
                .iter()
                .map(|&r| {
                    let s = bn.statistic(pool, r)?;
                    let mean_nats = s.iter().sum::<f64>() / s.len() as f64;
                    Ok((r, bnood_data::transform::bits_per_dim(mean_nats, dims)))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(SweepSeries {
                set: pool.name().to_string(),
                n: pool.len(),
                points,
            })
        })
        .collect()
}
