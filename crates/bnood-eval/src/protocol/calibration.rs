//! The calibration study: the share of in-distribution images a detector flags at a target
//! false-positive rate over many seeds, with the sampling error of that share (per image or
//! between pools, whichever is the detector's independent unit).

use super::*;

/// What a detector's flags are independent across, given its reference set: which
/// yardstick its calibration is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionUnit {
    /// Each image is scored on its own (`Detector::is_per_input`): one pool's flags are
    /// independent, and the binomial [`sampling_interval`] is the yardstick.
    Image,
    /// Images are scored together (the BN test's pool mode): one pool's images share its
    /// mixed batches, so their flags are correlated, the pool is the independent unit, and
    /// the [`between_pool_interval`] is the yardstick.
    Pool,
}

impl DecisionUnit {
    /// The unit of a detector.
    pub fn of(detector: &dyn Detector) -> Self {
        if detector.is_per_input() {
            Self::Image
        } else {
            Self::Pool
        }
    }
}

/// One line of the calibration study: how often a detector flags in-distribution images
/// at a target false-positive rate, over many seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRow {
    /// The detector.
    pub detector: DetectorKind,
    /// Its setting.
    pub setting: Setting,
    /// Whether its flags are independent per image or correlated within a pool; `None` in
    /// reports written before it was recorded (judged by `interval` then).
    #[serde(default)]
    pub decisions: Option<DecisionUnit>,
    /// Images per in-distribution test pool.
    pub pool_size: usize,
    /// Seeds (each: its own reference set, detector seed and pool).
    pub seeds: usize,
    /// The target false-positive rate passed to `threshold_for_fpr`.
    pub target_fpr: f64,
    /// In-distribution images flagged, over all seeds.
    pub flagged: usize,
    /// In-distribution images scored, over all seeds.
    pub total: usize,
    /// `flagged / total`.
    pub share: f64,
    /// Reference images each seed's threshold was estimated from (for the BN test: the
    /// held-out part).
    pub calibration_images: usize,
    /// Where a calibrated detector's share falls 95 % of the time if its flags are
    /// independent ([`sampling_interval`]): binomial error of `total` images plus the error
    /// of each seed's threshold, estimated from `calibration_images` reference images.
    pub interval: (f64, f64),
    /// Where it falls 95 % of the time with the pool as the independent unit
    /// ([`between_pool_interval`] of `per_seed_shares`), valid whether or not the flags
    /// within one pool are correlated; `None` for one seed or in older reports.
    #[serde(default)]
    pub between_pool_interval: Option<(f64, f64)>,
    /// Each seed's pool's flagged share, in seed order (empty in older reports).
    #[serde(default)]
    pub per_seed_shares: Vec<f64>,
    /// Lowest and highest share of one seed's pool.
    pub per_seed_range: (f64, f64),
    /// For a detector that gives a verdict on the whole pool (the BN test with in-pool
    /// calibration): how many of the in-distribution pools it declared OoD at level
    /// `α = target_fpr`; `None` for the others and in older reports.
    #[serde(default)]
    pub pool_verdicts: Option<PoolVerdictCount>,
}

/// How often a pool verdict falsely declared an in-distribution pool OoD, over the seeds
/// of the calibration study (one pool per seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolVerdictCount {
    /// Pools declared OoD (`p ≤ α`).
    pub rejected: usize,
    /// Pools judged.
    pub pools: usize,
    /// Where `rejected / pools` falls 95 % of the time for a verdict with level exactly
    /// `α`: `α ± 1.96 √(α(1 − α)/pools)`, clipped to `[0, 1]` (binomial: the pools are
    /// independent).
    pub interval: (f64, f64),
}

impl PoolVerdictCount {
    /// The count of `rejected` pools of `pools` at level `alpha`, with its interval.
    pub fn new(rejected: usize, pools: usize, alpha: f64) -> Self {
        let half = 1.96 * (alpha * (1.0 - alpha) / pools.max(1) as f64).sqrt();
        Self {
            rejected,
            pools,
            interval: ((alpha - half).max(0.0), (alpha + half).min(1.0)),
        }
    }

    /// `rejected / pools`.
    pub fn rate(&self) -> f64 {
        self.rejected as f64 / self.pools.max(1) as f64
    }
}

impl CalibrationRow {
    /// The interval this row is judged by: the [`between_pool_interval`] for a detector
    /// that decides per pool (its flags are correlated within a pool, so the binomial one
    /// is too narrow), the binomial `interval` otherwise (it is the sharper valid one for
    /// independent flags).
    pub fn yardstick(&self) -> (f64, f64) {
        match (self.decisions, self.between_pool_interval) {
            (Some(DecisionUnit::Pool), Some(between)) => between,
            _ => self.interval,
        }
    }

    /// Whether the flagged share lies within [`yardstick`](Self::yardstick).
    pub fn is_within(&self) -> bool {
        let (lo, hi) = self.yardstick();
        self.share >= lo && self.share <= hi
    }
}

/// The 95 % interval of the flagged share of a calibrated detector at target `p`, over
/// `total` in-distribution images from `seeds` seeds whose thresholds were each estimated
/// from `calibration_images` reference values, **if the images are flagged independently**:
/// the variance is `p(1 − p)/total` (which images are flagged) plus
/// `p(1 − p)/(seeds · calibration_images)` (the true false-positive rate of an empirical
/// quantile of n values varies by `p(1 − p)/n` around `p`), normal approximation with
/// continuity correction. Too narrow for flags that are correlated within a pool: use
/// [`between_pool_interval`] for those.
pub fn sampling_interval(
    p: f64,
    total: usize,
    seeds: usize,
    calibration_images: usize,
) -> (f64, f64) {
    let z = 1.959_963_984_540_054_f64;
    let n = total.max(1) as f64;
    let threshold_var = p * (1.0 - p) / (seeds.max(1) as f64 * calibration_images.max(1) as f64);
    let half = z * (p * (1.0 - p) / n + threshold_var).sqrt() + 0.5 / n;
    ((p - half).max(0.0), (p + half).min(1.0))
}

/// The 95 % interval of the flagged share of a calibrated detector at target `p`, with the
/// **pool as the independent unit**: `shares` holds one flagged share per pool, each pool
/// from its own seed (reference set, detector seed, threshold), so the shares are
/// independent and their mean falls in `p ± t₀.₉₇₅,S−1 · sd / √S`, with `S` pools and `sd`
/// the shares' sample standard deviation (Student's t interval of a mean). The spread
/// between pools holds every source of error at once (which images, each seed's threshold,
/// each pool's shared batch statistics), so no threshold term is added; it holds for flags
/// correlated within a pool, where [`sampling_interval`] does not. Approximate for few,
/// skewed shares (a normal mean). `None` for fewer than two pools.
pub fn between_pool_interval(p: f64, shares: &[f64]) -> Option<(f64, f64)> {
    let s = shares.len();
    if s < 2 {
        return None;
    }
    let mean = shares.iter().sum::<f64>() / s as f64;
    let var = shares.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (s - 1) as f64;
    let half = t_quantile_975(s - 1) * (var / s as f64).sqrt();
    Some(((p - half).max(0.0), (p + half).min(1.0)))
}

/// The 0.975 quantile of Student's t with `df ≥ 1` degrees of freedom: a table for
/// `df ≤ 30` (from the distribution's density by Simpson integration and bisection, to 4
/// decimals; the snippet is in this module's tests), beyond it the
/// Cornish–Fisher expansion in `1/df` to third order (error below 1e-4 from `df = 30` on).
fn t_quantile_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010,
        2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739,
        2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
    ];
    if (1..=30).contains(&df) {
        return TABLE[df - 1];
    }
    let z = 1.959_963_984_540_054_f64;
    let v = df.max(1) as f64;
    let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
    z + (z3 + z) / (4.0 * v)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * v.powi(3))
}

/// The calibration study: for each of `seeds` seeds, a fresh reference set of
/// `reference_size` images drawn from `reference_source`, every detector of `specs` fitted
/// on it (its own seed = the study's seed), and in-distribution test pools of each size in
/// `pool_sizes` drawn from `inliers`; each pool is scored and the share flagged at each
/// target of `fprs` counted. A per-input detector scores the largest pool once (smaller
/// pools are its prefixes).
///
/// # Errors
/// [`EvalError::InvalidSetting`] for empty settings or sets too small; detector errors.
#[allow(clippy::too_many_arguments)]
pub fn calibration<M: LikelihoodModel + Clone + 'static>(
    specs: &[DetectorSpec],
    members: &[M],
    background: Option<&M>,
    reference_source: &ImageSet,
    reference_size: usize,
    inliers: &ImageSet,
    pool_sizes: &[usize],
    seeds_n: usize,
    fprs: &[f64],
    progress: bool,
    device: &Device,
) -> Result<Vec<CalibrationRow>> {
    let max_pool = pool_sizes.iter().copied().max().unwrap_or(0);
    if seeds_n == 0 || fprs.is_empty() || max_pool == 0 || members.is_empty() {
        return Err(EvalError::InvalidSetting(
            "the calibration study needs at least one seed, target, pool size and model".into(),
        ));
    }
    if max_pool > inliers.len() || reference_size > reference_source.len() || reference_size == 0 {
        return Err(EvalError::InvalidSetting(format!(
            "the calibration study needs pools of {max_pool} from `{}` ({} images) and references of {reference_size} from `{}` ({} images)",
            inliers.name(),
            inliers.len(),
            reference_source.name(),
            reference_source.len()
        )));
    }
    // counts[spec][pool][fpr]
    let mut counts =
        vec![vec![vec![FlagCount::default(); fprs.len()]; pool_sizes.len()]; specs.len()];
    let mut units = vec![DecisionUnit::Pool; specs.len()];
    for seed in 0..seeds_n as u64 {
        let reference = reference_source
            .subset(reference_size, seeds::derive(seed, seeds::REFERENCE_SUBSET))?;
        let pool_all = inliers.subset(max_pool, seeds::derive(seed, seeds::TEST_SUBSET))?;
        for (si, spec) in specs.iter().enumerate() {
            let mut spec = spec.clone();
            spec.params.bn = spec.params.bn.clone().seed(seed);
            let mut detector = build_spec(&spec, members, background, device)?;
            detector.set_progress(crate::bar_hook(progress));
            let detector = detector.fit(&reference)?;
            units[si] = DecisionUnit::of(&*detector);
            let thresholds = fprs
                .iter()
                .map(|&f| detector.threshold_for_fpr(f))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let all = if detector.is_per_input() {
                Some(detector.score(&pool_all)?)
            } else {
                None
            };
            for (pi, &size) in pool_sizes.iter().enumerate() {
                let scores = match &all {
                    Some(s) => s.slice(0..size),
                    None => detector.score(&pool_all.head(size)?)?,
                };
                for (fi, &t) in thresholds.iter().enumerate() {
                    let flagged = flagged_count(&scores, t);
                    let c = &mut counts[si][pi][fi];
                    c.flagged += flagged;
                    c.total += size;
                    c.shares.push(flagged as f64 / size as f64);
                    if let Some(verdict) = &scores.pool {
                        c.verdicts += 1;
                        c.rejected += usize::from(verdict.is_ood(fprs[fi]));
                    }
                }
            }
        }
    }
    rows_of(
        specs,
        &counts,
        &units,
        (pool_sizes, fprs),
        seeds_n,
        reference_size,
    )
}

/// The study's rows from its counts `counts[spec][pool][fpr]`: one per detector, pool size
/// and target, with both intervals and the pool verdicts' count.
fn rows_of(
    specs: &[DetectorSpec],
    counts: &[Vec<Vec<FlagCount>>],
    units: &[DecisionUnit],
    (pool_sizes, fprs): (&[usize], &[f64]),
    seeds_n: usize,
    reference_size: usize,
) -> Result<Vec<CalibrationRow>> {
    let mut rows = Vec::new();
    for (si, spec) in specs.iter().enumerate() {
        // The BN test and DoSE calibrate on the held-out part of the reference set.
        let calibration_images = match spec.kind {
            DetectorKind::BnTest | DetectorKind::Dose => {
                let bn = spec.params.bn.check_ref()?;
                (bn.held_out_fraction() * reference_size as f64).round() as usize
            }
            _ => reference_size,
        };
        for (pi, &size) in pool_sizes.iter().enumerate() {
            for (fi, &target) in fprs.iter().enumerate() {
                let FlagCount {
                    flagged,
                    total,
                    shares,
                    rejected,
                    verdicts,
                } = &counts[si][pi][fi];
                let lo = shares.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = shares.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                rows.push(CalibrationRow {
                    detector: spec.kind,
                    setting: spec.setting.clone(),
                    decisions: Some(units[si]),
                    pool_size: size,
                    seeds: seeds_n,
                    target_fpr: target,
                    flagged: *flagged,
                    total: *total,
                    share: *flagged as f64 / *total as f64,
                    calibration_images,
                    interval: sampling_interval(target, *total, seeds_n, calibration_images),
                    between_pool_interval: between_pool_interval(target, shares),
                    per_seed_shares: shares.clone(),
                    per_seed_range: (lo, hi),
                    pool_verdicts: (*verdicts > 0)
                        .then(|| PoolVerdictCount::new(*rejected, *verdicts, target)),
                });
            }
        }
    }
    Ok(rows)
}

/// What the calibration study counts for one detector, pool size and target rate, summed
/// over seeds.
#[derive(Clone, Default)]
struct FlagCount {
    /// In-distribution images flagged.
    flagged: usize,
    /// In-distribution images scored.
    total: usize,
    /// The flagged share of each seed's pool.
    shares: Vec<f64>,
    /// Pools declared OoD by the detector's pool verdict at the target as its level.
    rejected: usize,
    /// Pools that got a verdict.
    verdicts: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: shares 0.04, 0.06, 0.08, 0.02 have mean 0.05 and squared deviations
    /// summing to 0.002, so sd = √(0.002 / 3) = 0.025820 and sd/√4 = 0.012910; with
    /// t₀.₉₇₅,₃ = 3.1824 the half-width is 0.041085.
    #[test]
    fn between_pool_interval_is_the_t_interval_of_the_per_pool_shares_around_the_target() {
        let (lo, hi) = between_pool_interval(0.05, &[0.04, 0.06, 0.08, 0.02]).expect("4 pools");
        assert!((lo - (0.05 - 0.041085)).abs() < 1e-5, "{lo}");
        assert!((hi - (0.05 + 0.041085)).abs() < 1e-5, "{hi}");
        // Centred on the target, not on the shares' mean (0.01); clipped at 0. Shares 0 and
        // 0.02: sd = 0.014142, sd/√2 = 0.01, t₀.₉₇₅,₁ = 12.7062.
        let (lo, hi) = between_pool_interval(0.01, &[0.0, 0.02]).expect("2 pools");
        assert_eq!(lo, 0.0);
        assert!((hi - (0.01 + 0.127062)).abs() < 1e-9, "{hi}");
    }

    #[test]
    fn between_pool_interval_needs_two_pools_and_is_a_point_without_spread() {
        assert_eq!(between_pool_interval(0.05, &[]), None);
        assert_eq!(between_pool_interval(0.05, &[0.05]), None);
        assert_eq!(
            between_pool_interval(0.05, &[0.03, 0.03, 0.03]),
            Some((0.05, 0.05))
        );
    }

    /// The table's values came from this Python (no SciPy needed):
    /// ```python
    /// import math
    /// def pdf(x, v):
    ///     return math.exp(math.lgamma((v+1)/2) - math.lgamma(v/2)) / math.sqrt(v*math.pi) \
    ///         * (1 + x*x/v) ** (-(v+1)/2)
    /// def half_cdf(x, v, n=20000):  # P(0 <= T <= x), Simpson
    ///     h = x / n
    ///     return h / 3 * (pdf(0, v) + pdf(x, v)
    ///                     + sum((4 if i % 2 else 2) * pdf(i*h, v) for i in range(1, n)))
    /// def q(v):
    ///     lo, hi = 0.0, 20.0
    ///     for _ in range(60):
    ///         mid = (lo + hi) / 2
    ///         lo, hi = (mid, hi) if half_cdf(mid, v) < 0.475 else (lo, mid)
    ///     return (lo + hi) / 2
    /// # q(1..30) = 12.7062 … 2.0423; q(39) = 2.02269; q(60) = 2.00030
    /// ```
    #[test]
    fn t_quantile_matches_the_table_and_the_expansion_beyond_it() {
        assert_eq!(t_quantile_975(1), 12.7062);
        assert_eq!(t_quantile_975(9), 2.2622);
        assert_eq!(t_quantile_975(30), 2.0423);
        assert!((t_quantile_975(39) - 2.02269).abs() < 1e-4);
        assert!((t_quantile_975(60) - 2.00030).abs() < 1e-4);
        assert!((t_quantile_975(100_000) - 1.959_964).abs() < 1e-4);
    }

    fn row(decisions: Option<DecisionUnit>, share: f64) -> CalibrationRow {
        CalibrationRow {
            detector: DetectorKind::BnTest,
            setting: Setting::Default,
            decisions,
            pool_size: 100,
            seeds: 4,
            target_fpr: 0.05,
            flagged: (share * 400.0).round() as usize,
            total: 400,
            share,
            calibration_images: 200,
            interval: (0.03, 0.07),
            between_pool_interval: Some((0.0, 0.12)),
            per_seed_shares: vec![0.0, 0.2, 0.0, 0.2],
            per_seed_range: (0.0, 0.2),
            pool_verdicts: None,
        }
    }

    #[test]
    fn pool_detectors_are_judged_between_pools_and_per_input_ones_binomially() {
        assert!(row(Some(DecisionUnit::Pool), 0.10).is_within());
        assert!(!row(Some(DecisionUnit::Image), 0.10).is_within());
        // Older reports record no unit: judged as they were written, binomially.
        assert!(!row(None, 0.10).is_within());
        assert_eq!(
            row(Some(DecisionUnit::Image), 0.05).yardstick(),
            (0.03, 0.07)
        );
    }
}
