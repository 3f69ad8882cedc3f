//! The contamination grid: test pools holding a share `f` of OoD images among
//! in-distribution ones, each scored as one pool, AUROC within the pool.

use super::*;

/// One cell of the contamination grid: a detector on pools that mix one OoD set into
/// in-distribution images at one share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContaminationRow {
    /// The detector (reports before the grid hold BN-test rows only).
    #[serde(default = "bn_kind")]
    pub detector: DetectorKind,
    /// Its setting.
    #[serde(default = "unknown_setting")]
    pub setting: Setting,
    /// The OoD set mixed in.
    #[serde(default)]
    pub ood: String,
    /// Share of OoD images in the test pool.
    pub ood_fraction: f64,
    /// In-distribution images in the pool (for 100 %: in the separately scored pure pool).
    pub n_in: usize,
    /// OoD images in the pool.
    pub n_ood: usize,
    /// AUROC of the detector's scores separating the pool's OoD images from its
    /// in-distribution images.
    pub auroc: f64,
    /// Average precision, OoD positive.
    pub average_precision: f64,
    /// FPR at 95 % TPR.
    pub fpr_at_95_tpr: f64,
    /// Share of the pool's in-distribution images flagged at a 5 % target false-positive
    /// rate (`Detector::threshold_for_fpr(0.05)`); `None` in older reports.
    #[serde(default)]
    pub flagged_in_at_5: Option<f64>,
    /// Share of the pool's OoD images flagged at the same threshold (the detection rate).
    #[serde(default)]
    pub flagged_ood_at_5: Option<f64>,
    /// The p-value of the detector's verdict on the whole pool ("it is in-distribution";
    /// the BN test with in-pool calibration), `None` for detectors without one and in
    /// older reports. For `f = 1`, the verdict on the pure OoD pool.
    #[serde(default)]
    pub pool_p_value: Option<f64>,
    /// Wall-clock seconds of scoring this pool.
    pub seconds: f64,
}

/// The contamination study of one fitted `detector` against one OoD set: test pools of
/// `pool_size` images, a share `f` of them OoD (drawn from `outliers`) and the rest
/// in-distribution (from `inliers`). A detector whose scores depend on the pool (the BN
/// test's pool mode) scores each pool as one test pool, so OoD images share mixed batches
/// with in-distribution images in proportion `f`; a per-input detector
/// ([`Detector::is_per_input`]) scores the largest in-distribution and OoD parts once and
/// every pool reuses their scores (the same numbers, computed once). AUROC is computed
/// within the pool. A pool with no in-distribution image (`f = 1`) is compared with a pure
/// in-distribution pool of the same size, as in Table 2. The pools' images are the same for
/// every detector (seeded by `seed`).
///
/// # Errors
/// [`EvalError::InvalidSetting`] for fractions outside `(0, 1]`, a pool that would hold
/// no OoD image, or too few images in `inliers` / `outliers`; detector errors.
pub fn contamination(
    detector: &FittedDetector,
    setting: &Setting,
    inliers: &ImageSet,
    outliers: &ImageSet,
    fractions: &[f64],
    pool_size: usize,
    seed: u64,
) -> Result<Vec<ContaminationRow>> {
    let mut counts = Vec::with_capacity(fractions.len());
    for &f in fractions {
        if !(f > 0.0 && f <= 1.0) {
            return Err(EvalError::InvalidSetting(format!(
                "OoD fraction {f} must lie in (0, 1]"
            )));
        }
        let n_ood = (f * pool_size as f64).round() as usize;
        let n_in = pool_size - n_ood.min(pool_size);
        if n_ood == 0 {
            return Err(EvalError::InvalidSetting(format!(
                "a pool of {pool_size} images at OoD fraction {f} holds no OoD image: use a larger pool"
            )));
        }
        if n_ood > outliers.len() || n_in > inliers.len() || pool_size > inliers.len() {
            return Err(EvalError::InvalidSetting(format!(
                "the contamination study needs {pool_size} in-distribution and {n_ood} OoD images, but has {} and {}",
                inliers.len(),
                outliers.len()
            )));
        }
        counts.push(PoolMix { f, n_in, n_ood });
    }
    let threshold = detector.threshold_for_fpr(0.05).ok();
    // The images: prefixes of one seeded permutation of each set, the same for every pool.
    let max_ood = counts.iter().map(|c| c.n_ood).max().unwrap_or(0);
    let in_all = inliers.subset(pool_size, seeds::derive(seed, seeds::CONTAMINATION_INLIERS))?;
    let ood_all = outliers.subset(max_ood, seeds::derive(seed, seeds::OOD_SUBSET))?;
    let per_input = detector.is_per_input();
    let cached = if per_input {
        Some((detector.score(&in_all)?, detector.score(&ood_all)?))
    } else {
        None
    };
    let mut pure_in: Option<Scores> = None;
    let mut rows = Vec::with_capacity(counts.len());
    for PoolMix { f, n_in, n_ood } in counts {
        let t = Instant::now();
        let mut pool_p_value = None;
        let (in_scores, ood_scores) = match &cached {
            Some((i, o)) => (
                i.slice(0..if n_in == 0 { pool_size } else { n_in }),
                o.slice(0..n_ood),
            ),
            None if n_in == 0 => {
                let pure = match &pure_in {
                    Some(s) => s.clone(),
                    None => {
                        let s = detector.score(&in_all)?;
                        pure_in = Some(s.clone());
                        s
                    }
                };
                let ood = detector.score(&ood_all.head(n_ood)?)?;
                pool_p_value = ood.pool.map(|v| v.p_value);
                (pure, ood)
            }
            None => {
                let pool = ImageSet::concat(
                    format!(
                        "{}+{} ({:.0}% OoD)",
                        inliers.name(),
                        outliers.name(),
                        f * 100.0
                    ),
                    &[&in_all.head(n_in)?, &ood_all.head(n_ood)?],
                )?;
                let s = detector.score(&pool)?;
                pool_p_value = s.pool.map(|v| v.p_value);
                (s.slice(0..n_in), s.slice(n_in..s.len()))
            }
        };
        let m = bnood_metrics::evaluate(&in_scores.scores, &ood_scores.scores)?;
        rows.push(ContaminationRow {
            detector: DetectorKind::parse(detector.id())?,
            setting: setting.clone(),
            ood: outliers.name().to_string(),
            ood_fraction: f,
            n_in: in_scores.len(),
            n_ood: ood_scores.len(),
            auroc: m.auroc,
            average_precision: m.average_precision,
            fpr_at_95_tpr: m.fpr_at_95_tpr,
            flagged_in_at_5: threshold.map(|t| flagged_share(&in_scores, t)),
            flagged_ood_at_5: threshold.map(|t| flagged_share(&ood_scores, t)),
            pool_p_value,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    Ok(rows)
}

/// One pool of the contamination study: OoD fraction `f`, and how many in-distribution and
/// OoD images it holds.
struct PoolMix {
    f: f64,
    n_in: usize,
    n_ood: usize,
}
