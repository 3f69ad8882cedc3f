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
use bnood_data::seeds;
use bnood_detect::{
    BnTest, BnTestParams, Detector, DetectorKind, DetectorParams, LikelihoodModel, ParamGuard,
    Scores,
};

use crate::progress::BarProgress;
use crate::{EvalError, Result};

/// The parameters of a table cell's detector, typed (shown in tables as before:
/// `b=64 r1=0.10 r2=0.90 draws=1`, `2 models`, or nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Setting {
    /// The detector's defaults (log p, T_perm).
    Default,
    /// WAIC over an ensemble of this many models.
    Ensemble {
        /// Ensemble size K.
        models: usize,
    },
    /// The BN test's parameters.
    BnTest {
        /// Batch size b.
        batch_size: usize,
        /// First ratio.
        r1: f64,
        /// Second ratio.
        r2: f64,
        /// Monte Carlo draws.
        draws: usize,
    },
}

impl Setting {
    /// The setting of a BN test with parameters `bn`.
    ///
    /// # Errors
    /// [`EvalError`] for invalid parameters.
    pub fn bn_test(bn: &BnTestParams) -> Result<Self> {
        let p = bn.check_ref()?;
        Ok(Self::BnTest {
            batch_size: p.batch_size(),
            r1: p.r1(),
            r2: p.r2(),
            draws: p.draws(),
        })
    }

    /// `r2` of a BN-test setting.
    pub fn r2(&self) -> Option<f64> {
        match self {
            Self::BnTest { r2, .. } => Some(*r2),
            _ => None,
        }
    }

    /// Parses the words of reports written before settings were typed.
    fn from_words(words: &str) -> Self {
        let field = |key: &str| {
            words
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_string)
        };
        if let (Some(b), Some(r1), Some(r2), Some(draws)) =
            (field("b="), field("r1="), field("r2="), field("draws="))
            && let (Ok(batch_size), Ok(r1), Ok(r2), Ok(draws)) =
                (b.parse(), r1.parse(), r2.parse(), draws.parse())
        {
            return Self::BnTest {
                batch_size,
                r1,
                r2,
                draws,
            };
        }
        match words.strip_suffix(" models").map(str::parse) {
            Some(Ok(models)) => Self::Ensemble { models },
            _ => Self::Default,
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => Ok(()),
            Self::Ensemble { models } => write!(f, "{models} models"),
            Self::BnTest {
                batch_size,
                r1,
                r2,
                draws,
            } => write!(f, "b={batch_size} r1={r1:.2} r2={r2:.2} draws={draws}"),
        }
    }
}

/// Reads a [`Setting`] in its typed form, or in the words of reports written before it.
fn setting_or_words<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Setting, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Typed(Setting),
        Words(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::Typed(setting) => setting,
        Either::Words(words) => Setting::from_words(&words),
    })
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
    /// The detector (its column title is [`DetectorKind::title`]).
    pub detector: DetectorKind,
    /// The detector's parameters.
    #[serde(deserialize_with = "setting_or_words")]
    pub setting: Setting,
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
    detector: DetectorKind,
    setting: &Setting,
    in_scores: &Scores,
    ood_scores: &Scores,
    seconds: f64,
) -> Result<Row> {
    let m = bnood_metrics::evaluate(&in_scores.scores, &ood_scores.scores)?;
    Ok(Row {
        model: names.0.to_string(),
        in_distribution: names.1.to_string(),
        ood: names.2.to_string(),
        detector,
        setting: setting.clone(),
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
    setting: &Setting,
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
            detector.kind(),
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
pub fn ood_table<M: LikelihoodModel + Clone + 'static>(
    models: &[M],
    model_name: &str,
    reference: &ImageSet,
    test_in: &ImageSet,
    oods: &[ImageSet],
    protocol: &Protocol,
    device: &Device,
) -> Result<Vec<Row>> {
    if models.is_empty() {
        return Err(EvalError::InvalidSetting(
            "no model given: pass at least one trained model".into(),
        ));
    }
    check_sets(test_in, oods, reference)?;
    let params = DetectorParams {
        bn: protocol.bn.clone(),
        ..DetectorParams::default()
    };
    let mut rows = Vec::new();
    for &kind in &protocol.detectors {
        // WAIC needs an ensemble; with one model it would equal log p, so it is skipped.
        if models.len() < kind.min_models() {
            continue;
        }
        let setting = match kind {
            DetectorKind::Waic => Setting::Ensemble {
                models: models.len(),
            },
            DetectorKind::BnTest => Setting::bn_test(&protocol.bn)?,
            DetectorKind::LogLikelihood | DetectorKind::TPerm => Setting::Default,
        };
        let mut detector = bnood_detect::build(kind, models.to_vec(), device, &params)?;
        detector.set_progress(BarProgress::hook(protocol.progress));
        rows.extend(run_detector(
            detector.as_mut(),
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
            &Setting::bn_test(&params)?,
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
        let ood_part = outliers.subset(n_ood, seeds::derive(seed, seeds::OOD_SUBSET))?;
        let (in_scores, ood_scores) = if n_in == 0 {
            let in_scores = match &pure_in {
                Some(s) => s.clone(),
                None => {
                    let s = bn
                        .score_detailed(&inliers.subset(
                            pool_size,
                            seeds::derive(seed, seeds::CONTAMINATION_INLIERS),
                        )?)?
                        .delta;
                    pure_in = Some(s.clone());
                    s
                }
            };
            (in_scores, bn.score_detailed(&ood_part)?.delta)
        } else {
            let in_part =
                inliers.subset(n_in, seeds::derive(seed, seeds::CONTAMINATION_INLIERS))?;
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

/// The paper's Table 1 quantity: mean bits/dim of the images of `set` under `model` with
/// BatchNorm statistics from `mode`, in batches of `batch_size` drawn from the set in order
/// (no mixing), midpoint-dequantised (`pixel + 0.5`). A lone last image has no batch
/// statistics and is left out in every mode, so that modes average over the same images.
///
/// # Errors
/// [`EvalError::InvalidSetting`] for a batch size below 2 or a set that leaves no image;
/// model and data errors.
pub fn mean_bits_per_dim<M: LikelihoodModel>(
    model: &M,
    set: &ImageSet,
    mode: &bnood_models::StatsMode,
    batch_size: usize,
    device: &Device,
) -> Result<f64> {
    if batch_size < 2 {
        return Err(EvalError::InvalidSetting(format!(
            "batch size {batch_size} leaves no batch statistics: use at least 2 (the paper uses 64)"
        )));
    }
    let (mut total, mut n) = (0.0, 0usize);
    for batch in set.batches(batch_size, device)? {
        if batch.dims()[0] < 2 {
            continue;
        }
        let bpd = model.bits_per_dim(batch.add_scalar(0.5), mode)?;
        let values = bpd.into_data().iter::<f64>().collect::<Vec<_>>();
        total += values.iter().sum::<f64>();
        n += values.len();
    }
    if n == 0 {
        return Err(EvalError::InvalidSetting(format!(
            "`{}` leaves no image to score in batches of {batch_size}",
            set.name()
        )));
    }
    Ok(total / n as f64)
}
