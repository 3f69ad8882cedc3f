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

/// The paper's Table 1 quantity (mean held-out bits/dim), from `bnood-models`, where the
/// training loop's learning curve uses it too.
pub use bnood_models::held_out::mean_bits_per_dim;

mod calibration;
mod contamination;
mod sweep;
mod tables;

pub use calibration::{
    CalibrationRow, DecisionUnit, PoolVerdictCount, between_pool_interval, calibration,
    sampling_interval,
};
pub use contamination::{ContaminationRow, contamination};
pub use sweep::{SweepSeries, ratio_sweep};
pub use tables::{ood_table, r2_table};
