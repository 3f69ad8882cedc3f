//! The experiments: Table 2 (OoD sets × detectors), Table 5 (`r1 = 0`, several `r2`), the
//! ratio sweep of Figure 3, the contamination grid and the calibration study.
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
    BnCalibration, BnTestParams, Detector, DetectorKind, DetectorParams, FittedBnTest,
    FittedDetector, LikelihoodModel, ParamGuard, Scores, Unfitted,
};

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
        /// Whether p-values come from in-pool calibration (`BnCalibration::InPool`); absent
        /// (false) in older reports.
        #[serde(default)]
        in_pool: bool,
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
            in_pool: p.calibration() == BnCalibration::InPool,
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
                in_pool: words.split_whitespace().any(|w| w == "in-pool"),
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
                in_pool,
            } => {
                write!(f, "b={batch_size} r1={r1:.2} r2={r2:.2} draws={draws}")?;
                if *in_pool {
                    write!(f, " in-pool")?;
                }
                Ok(())
            }
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
    /// Also run the BN test in its per-input mode with these parameters (a second BN-test
    /// column) when the BN test is among `detectors`.
    pub bn_per_input: Option<BnTestParams>,
    /// Show progress bars on stderr (with the `cli` feature; nothing without it).
    pub progress: bool,
}

/// One detector column of a study: its kind, the setting shown in tables and the
/// parameters it is built with.
#[derive(Debug, Clone)]
pub struct DetectorSpec {
    /// The detector.
    pub kind: DetectorKind,
    /// Its setting in tables.
    pub setting: Setting,
    /// Its parameters.
    pub params: DetectorParams,
}

impl Protocol {
    /// The detector columns of this protocol for a model with `members` ensemble members
    /// and, when `background` is set, a background model: WAIC is left out with one member
    /// (it would equal log p) and the likelihood ratio without a background model; the BN
    /// test gives one column for `bn` and one for `bn_per_input`.
    ///
    /// # Errors
    /// [`EvalError`] for invalid BN-test parameters.
    pub fn specs(&self, members: usize, background: bool) -> Result<Vec<DetectorSpec>> {
        let mut specs = Vec::new();
        for &kind in &self.detectors {
            if !kind.has_models(members, background) {
                continue;
            }
            let spec = |setting, bn: &BnTestParams| DetectorSpec {
                kind,
                setting,
                params: DetectorParams {
                    bn: bn.clone(),
                    ..DetectorParams::default()
                },
            };
            match kind {
                DetectorKind::BnTest => {
                    specs.push(spec(Setting::bn_test(&self.bn)?, &self.bn));
                    if let Some(per_input) = &self.bn_per_input {
                        specs.push(spec(Setting::bn_test(per_input)?, per_input));
                    }
                }
                DetectorKind::Waic => {
                    specs.push(spec(Setting::Ensemble { models: members }, &self.bn))
                }
                _ => specs.push(spec(Setting::Default, &self.bn)),
            }
        }
        Ok(specs)
    }
}

/// Builds the detector of `spec` over `members` (scored model first, WAIC ensemble) and
/// `background` (the likelihood ratio's background model).
///
/// # Errors
/// Detector errors.
pub fn build_spec<M: LikelihoodModel + Clone + 'static>(
    spec: &DetectorSpec,
    members: &[M],
    background: Option<&M>,
    device: &Device,
) -> Result<Unfitted> {
    let models = spec.kind.models_from(members, background)?;
    Ok(bnood_detect::build(
        spec.kind,
        models,
        device,
        &spec.params,
    )?)
}

impl Default for Protocol {
    /// The paper's four detectors, its `b = 64, r1 = 0.1, r2 = 0.9`, one draw, bars on.
    fn default() -> Self {
        Self {
            detectors: DetectorKind::PAPER.to_vec(),
            bn: BnTestParams::new(),
            bn_per_input: None,
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
fn run_detector(
    detector: &Unfitted,
    setting: &Setting,
    model_name: &str,
    reference: &ImageSet,
    test_in: &ImageSet,
    oods: &[ImageSet],
) -> Result<Vec<Row>> {
    let t = Instant::now();
    let detector = detector.fit(reference)?;
    let kind = DetectorKind::parse(detector.id())?;
    let in_scores = detector.score(test_in)?;
    let shared = t.elapsed().as_secs_f64();
    let mut rows = Vec::with_capacity(oods.len());
    for ood in oods {
        let t = Instant::now();
        let ood_scores = detector.score(ood)?;
        let secs = shared + t.elapsed().as_secs_f64();
        rows.push(row(
            (model_name, test_in.name(), ood.name()),
            kind,
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
/// `models[0]` is the model scored by every detector; WAIC uses all of `models`
/// (independently trained members; with one model WAIC is skipped, since its variance term
/// would be zero and it would equal log p — the report says so by the absence of its rows);
/// the likelihood ratio uses `background` (skipped without one).
///
/// # Errors
/// [`EvalError::InvalidSetting`] for an empty model list, OoD list or set; detector and
/// metric errors (shape mismatches, pools too small for the BN test's `r·b`, NaNs).
#[allow(clippy::too_many_arguments)]
pub fn ood_table<M: LikelihoodModel + Clone + 'static>(
    models: &[M],
    background: Option<&M>,
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
    let mut rows = Vec::new();
    for spec in protocol.specs(models.len(), background.is_some())? {
        let mut detector = build_spec(&spec, models, background, device)?;
        detector.set_progress(crate::bar_hook(protocol.progress));
        rows.extend(run_detector(
            &detector,
            &spec.setting,
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
pub fn r2_table<M: LikelihoodModel + Clone + 'static>(
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
        let mut bn = bnood_detect::build(
            DetectorKind::BnTest,
            vec![model.clone()],
            device,
            &DetectorParams {
                bn: params.clone(),
                ..DetectorParams::default()
            },
        )?;
        bn.set_progress(crate::bar_hook(protocol.progress));
        rows.extend(run_detector(
            &bn,
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
    /// Wall-clock seconds of scoring this pool.
    pub seconds: f64,
}

fn bn_kind() -> DetectorKind {
    DetectorKind::BnTest
}

fn unknown_setting() -> Setting {
    Setting::Default
}

/// How many of `scores`' images are flagged at `threshold`.
fn flagged_count(scores: &Scores, threshold: f64) -> usize {
    scores.decisions(threshold).iter().filter(|&&f| f).count()
}

fn flagged_share(scores: &Scores, threshold: f64) -> f64 {
    flagged_count(scores, threshold) as f64 / scores.len().max(1) as f64
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
                (pure, detector.score(&ood_all.head(n_ood)?)?)
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
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    Ok(rows)
}

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
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (si, spec) in specs.iter().enumerate() {
        let calibration_images = match spec.kind {
            DetectorKind::BnTest => {
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
                });
            }
        }
    }
    Ok(rows)
}

/// The paper's Table 1 quantity (mean held-out bits/dim), from `bnood-models`, where the
/// training loop's learning curve uses it too.
pub use bnood_models::held_out::mean_bits_per_dim;

/// One pool of the contamination study: OoD fraction `f`, and how many in-distribution and
/// OoD images it holds.
struct PoolMix {
    f: f64,
    n_in: usize,
    n_ood: usize,
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
