//! The experiments: Table 2 (OoD sets × detectors), Table 5 (`r1 = 0`, several `r2`), the
//! ratio sweep of Figure 3, and a test-pool contamination study.
//!
//! Conventions, all as in the paper's Section 6 unless a field says otherwise:
//! - in-distribution test images and each OoD set are scored as *separate, pure* test
//!   pools (the BN test's mixed batches hold test images of one set plus reference images);
//! - the reference set is held-out-from-scoring in-distribution data (the paper mixes in
//!   training images; so do our examples);
//! - higher score = more OoD; AUROC / AP treat OoD as the positive class.

use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use bnood_data::ImageSet;
use bnood_detect::{
    BnTest, BnTestParams, Detector, LikelihoodModel, LogLikelihood, ParamGuard, ProgressHook,
    Scores, TPerm, Waic,
};

use crate::progress::BarProgress;
use crate::{EvalError, Result};

/// The detectors of the paper's Table 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DetectorKind {
    /// `−ln p(x)` with running statistics.
    LogLikelihood,
    /// Two-sided likelihood permutation test.
    TPerm,
    /// WAIC over an ensemble of independently trained models.
    Waic,
    /// The paper's BatchNorm mixed-batch test.
    BnTest,
}

impl DetectorKind {
    /// All four, in the paper's column order.
    pub const ALL: [DetectorKind; 4] = [
        DetectorKind::LogLikelihood,
        DetectorKind::TPerm,
        DetectorKind::Waic,
        DetectorKind::BnTest,
    ];

    /// The short name used in tables and on the command line: `logp`, `tperm`, `waic`, `bn`.
    pub fn id(self) -> &'static str {
        match self {
            DetectorKind::LogLikelihood => "logp",
            DetectorKind::TPerm => "tperm",
            DetectorKind::Waic => "waic",
            DetectorKind::BnTest => "bn",
        }
    }

    /// The column title of the paper's Table 2.
    pub fn title(self) -> &'static str {
        match self {
            DetectorKind::LogLikelihood => "log p(x)",
            DetectorKind::TPerm => "T_perm",
            DetectorKind::Waic => "WAIC",
            DetectorKind::BnTest => "BN test",
        }
    }

    /// Parses an [`id`](Self::id) (also accepts the titles, case-insensitively).
    ///
    /// # Errors
    /// [`EvalError::InvalidSetting`] listing the valid names.
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.id() == lower || k.title().to_ascii_lowercase() == lower)
            .ok_or_else(|| {
                EvalError::InvalidSetting(format!(
                    "unknown detector `{name}`: choose one of logp, tperm, waic, bn"
                ))
            })
    }
}

/// One cell of an OoD table: a detector's result for one in-distribution / OoD pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Model name (e.g. `"RealNVP"`).
    pub model: String,
    /// In-distribution test set name.
    pub in_distribution: String,
    /// OoD set name (e.g. `"KMNIST"`).
    pub ood: String,
    /// Detector column title.
    pub detector: String,
    /// Detector parameters in words (e.g. `"b=64 r1=0.10 r2=0.90 draws=1"`).
    pub setting: String,
    /// In-distribution test images scored.
    pub n_in: usize,
    /// OoD images scored.
    pub n_ood: usize,
    /// Area under the ROC curve, OoD positive.
    pub auroc: f64,
    /// Average precision, OoD positive.
    pub average_precision: f64,
    /// False-positive rate at 95 % true-positive rate.
    pub fpr_at_95_tpr: f64,
    /// Wall-clock seconds of fitting, in-distribution scoring and OoD scoring together
    /// (what this cell costs when run alone; in-distribution scoring is shared between
    /// the cells of one detector, so a table costs less than the sum).
    pub seconds: f64,
    /// ROC curve points `(FPR, TPR)`, thinned to at most 256 points.
    pub roc: Vec<(f64, f64)>,
}

/// Settings shared by the experiments.
#[derive(Debug, Clone)]
pub struct Protocol {
    /// Detectors to run (Table 2 columns).
    pub detectors: Vec<DetectorKind>,
    /// BN-test parameters (`b`, `r1`, `r2`, draws, seed, held-out fraction, scoring).
    pub bn: BnTestParams,
    /// Show progress bars on stderr.
    pub progress: bool,
}

impl Default for Protocol {
    /// All four detectors, the paper's `b = 64, r1 = 0.1, r2 = 0.9`, one draw, bars on.
    fn default() -> Self {
        Self {
            detectors: DetectorKind::ALL.to_vec(),
            bn: BnTestParams::new(),
            progress: true,
        }
    }
}

/// Words describing the BN test's parameters, e.g. `b=64 r1=0.10 r2=0.90 draws=1`.
pub fn bn_setting(bn: &BnTestParams) -> Result<String> {
    let p = bn.check_ref()?;
    Ok(format!(
        "b={} r1={:.2} r2={:.2} draws={}",
        p.batch_size(),
        p.r1(),
        p.r2(),
        p.draws()
    ))
}

fn thin_roc(in_scores: &[f64], ood_scores: &[f64]) -> Result<Vec<(f64, f64)>> {
    let roc = bnood_metrics::roc_curve(in_scores, ood_scores)?;
    let n = roc.fpr.len();
    let step = n.div_ceil(256).max(1);
    let mut points: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (roc.fpr[i], roc.tpr[i]))
        .collect();
    if (n - 1) % step != 0 {
        points.push((roc.fpr[n - 1], roc.tpr[n - 1]));
    }
    Ok(points)
}

fn row(
    names: (&str, &str, &str),
    detector: &str,
    setting: &str,
    in_scores: &Scores,
    ood_scores: &Scores,
    seconds: f64,
) -> Result<Row> {
    let m = bnood_metrics::evaluate(&in_scores.scores, &ood_scores.scores)?;
    Ok(Row {
        model: names.0.to_string(),
        in_distribution: names.1.to_string(),
        ood: names.2.to_string(),
        detector: detector.to_string(),
        setting: setting.to_string(),
        n_in: in_scores.len(),
        n_ood: ood_scores.len(),
        auroc: m.auroc,
        average_precision: m.average_precision,
        fpr_at_95_tpr: m.fpr_at_95_tpr,
        seconds,
        roc: thin_roc(&in_scores.scores, &ood_scores.scores)?,
    })
}

/// Fits `detector` on `reference`, scores `test_in` once and every OoD set, and returns
/// one [`Row`] per OoD set.
#[allow(clippy::too_many_arguments)]
fn run_detector(
    detector: &mut dyn Detector,
    title: &str,
    setting: &str,
    model_name: &str,
    reference: &ImageSet,
    test_in: &ImageSet,
    oods: &[ImageSet],
) -> Result<Vec<Row>> {
    let t = Instant::now();
    detector.fit(reference)?;
    let in_scores = detector.score(test_in)?;
    let shared = t.elapsed().as_secs_f64();
    let mut rows = Vec::with_capacity(oods.len());
    for ood in oods {
        let t = Instant::now();
        let ood_scores = detector.score(ood)?;
        let secs = shared + t.elapsed().as_secs_f64();
        rows.push(row(
            (model_name, test_in.name(), ood.name()),
            title,
            setting,
            &in_scores,
            &ood_scores,
            secs,
        )?);
    }
    Ok(rows)
}

fn check_sets(test_in: &ImageSet, oods: &[ImageSet], reference: &ImageSet) -> Result<()> {
    if oods.is_empty() {
        return Err(EvalError::InvalidSetting(
            "no OoD set given: name at least one (e.g. kmnist)".into(),
        ));
    }
    for set in std::iter::once(test_in)
        .chain(oods)
        .chain(std::iter::once(reference))
    {
        if set.is_empty() {
            return Err(EvalError::InvalidSetting(format!(
                "image set `{}` is empty: give it at least one image",
                set.name()
            )));
        }
    }
    Ok(())
}

/// The paper's Table 2 for one model: every detector of `protocol` on `test_in` against
/// every set of `oods`, fitted on `reference`.
///
/// `models[0]` is the model scored by log p, T_perm and the BN test; WAIC uses all of
/// `models` (independently trained members; with one model WAIC is skipped, since its
/// variance term would be zero and it would equal log p — the report says so by the
/// absence of its rows).
///
/// # Errors
/// [`EvalError::InvalidSetting`] for an empty model list, OoD list or set; detector and
/// metric errors (shape mismatches, pools too small for the BN test's `r·b`, NaNs).
pub fn ood_table<M: LikelihoodModel + Clone>(
    models: &[M],
    model_name: &str,
    reference: &ImageSet,
    test_in: &ImageSet,
    oods: &[ImageSet],
    protocol: &Protocol,
    device: &Device,
) -> Result<Vec<Row>> {
    let model = models.first().ok_or_else(|| {
        EvalError::InvalidSetting("no model given: pass at least one trained model".into())
    })?;
    check_sets(test_in, oods, reference)?;
    let hook = || BarProgress::hook(protocol.progress);
    let mut rows = Vec::new();
    for &kind in &protocol.detectors {
        let (mut detector, setting): (Box<dyn Detector>, String) = match kind {
            DetectorKind::LogLikelihood => (
                Box::new(LogLikelihood::new(model.clone(), device)),
                String::new(),
            ),
            DetectorKind::TPerm => (Box::new(TPerm::new(model.clone(), device)), String::new()),
            DetectorKind::Waic => {
                if models.len() < 2 {
                    continue;
                }
                (
                    Box::new(Waic::new(models.to_vec(), device)?),
                    format!("{} models", models.len()),
                )
            }
            DetectorKind::BnTest => (
                Box::new(BnTest::new(model.clone(), device, protocol.bn.clone())?),
                bn_setting(&protocol.bn)?,
            ),
        };
        detector.set_progress(hook());
        rows.extend(run_detector(
            detector.as_mut(),
            kind.title(),
            &setting,
            model_name,
            reference,
            test_in,
            oods,
        )?);
    }
    Ok(rows)
}

/// The paper's Table 5: the BN test with `r1 = 0` (running statistics, the paper's
/// "r1 → 0") and each `r2` of `r2s`, other parameters from `protocol.bn`.
///
/// # Errors
/// As [`ood_table`]; [`EvalError::InvalidSetting`] for an empty `r2s`.
#[allow(clippy::too_many_arguments)]
pub fn r2_table<M: LikelihoodModel + Clone>(
    model: &M,
    model_name: &str,
    reference: &ImageSet,
    test_in: &ImageSet,
    oods: &[ImageSet],
    r2s: &[f64],
    protocol: &Protocol,
    device: &Device,
) -> Result<Vec<Row>> {
    if r2s.is_empty() {
        return Err(EvalError::InvalidSetting(
            "no r2 given: pass at least one ratio in (0, 1], e.g. 0.15,0.3,0.5,0.9".into(),
        ));
    }
    check_sets(test_in, oods, reference)?;
    let mut rows = Vec::new();
    for &r2 in r2s {
        let params = protocol.bn.clone().ratios(0.0, r2);
        let mut bn = BnTest::new(model.clone(), device, params.clone())?;
        bn.set_progress(BarProgress::hook(protocol.progress));
        rows.extend(run_detector(
            &mut bn,
            "BN test",
            &bn_setting(&params)?,
            model_name,
            reference,
            test_in,
            oods,
        )?);
    }
    Ok(rows)
}

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
    bn: &BnTest<M>,
    pools: &[ImageSet],
    ratios: &[f64],
) -> Result<Vec<SweepSeries>> {
    if ratios.is_empty() || pools.is_empty() {
        return Err(EvalError::InvalidSetting(
            "the ratio sweep needs at least one ratio and one test pool".into(),
        ));
    }
    let dims = bn.model().dims();
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

/// One line of the contamination study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContaminationRow {
    /// Share of OoD images in the test pool.
    pub ood_fraction: f64,
    /// In-distribution images in the pool (for 100 %: in the separately scored pure pool).
    pub n_in: usize,
    /// OoD images in the pool.
    pub n_ood: usize,
    /// AUROC of the BN test's Δ separating the pool's OoD images from its in-distribution
    /// images.
    pub auroc: f64,
    /// Average precision, OoD positive.
    pub average_precision: f64,
    /// FPR at 95 % TPR.
    pub fpr_at_95_tpr: f64,
    /// Wall-clock seconds of scoring this pool.
    pub seconds: f64,
}

/// The contamination study: test pools of `pool_size` images, a share `f` of them OoD
/// (drawn from `outliers`) and the rest in-distribution (from `inliers`), scored by the
/// fitted BN test `bn` as one pool — so OoD images share mixed batches with in-distribution
/// test images in proportion `f`. AUROC is computed within the pool. A pool with no
/// in-distribution image (`f = 1`) is compared with a pure in-distribution pool of the same
/// size, as in Table 2.
///
/// # Errors
/// [`EvalError::InvalidSetting`] for fractions outside `(0, 1]`, a pool that would hold
/// no OoD image, or too few images in `inliers` / `outliers`; BN-test errors.
pub fn contamination<M: LikelihoodModel>(
    bn: &BnTest<M>,
    inliers: &ImageSet,
    outliers: &ImageSet,
    fractions: &[f64],
    pool_size: usize,
    seed: u64,
) -> Result<Vec<ContaminationRow>> {
    let mut rows = Vec::with_capacity(fractions.len());
    let mut pure_in: Option<Vec<f64>> = None;
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
        let t = Instant::now();
        let ood_part = outliers.subset(n_ood, seed ^ 0x00D)?;
        let (in_scores, ood_scores) = if n_in == 0 {
            let in_scores = match &pure_in {
                Some(s) => s.clone(),
                None => {
                    let s = bn
                        .score_detailed(&inliers.subset(pool_size, seed ^ 0x1D)?)?
                        .delta;
                    pure_in = Some(s.clone());
                    s
                }
            };
            (in_scores, bn.score_detailed(&ood_part)?.delta)
        } else {
            let in_part = inliers.subset(n_in, seed ^ 0x1D)?;
            let pool = ImageSet::concat(
                format!(
                    "{}+{} ({:.0}% OoD)",
                    inliers.name(),
                    outliers.name(),
                    f * 100.0
                ),
                &[&in_part, &ood_part],
            )?;
            let delta = bn.score_detailed(&pool)?.delta;
            (delta[..n_in].to_vec(), delta[n_in..].to_vec())
        };
        let m = bnood_metrics::evaluate(&in_scores, &ood_scores)?;
        rows.push(ContaminationRow {
            ood_fraction: f,
            n_in: in_scores.len(),
            n_ood: ood_scores.len(),
            auroc: m.auroc,
            average_precision: m.average_precision,
            fpr_at_95_tpr: m.fpr_at_95_tpr,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    Ok(rows)
}

/// A progress hook for detectors built outside this module.
pub fn progress_hook(show: bool) -> ProgressHook {
    BarProgress::hook(show)
}
