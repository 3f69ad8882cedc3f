//! The registry: one table of detectors (id, title, the models each needs, how to build
//! it), *above* the detectors — no detector imports it. Front ends (the `bnood` command,
//! the evaluation protocol, saved detector files) build, describe and load detectors
//! through a [`Registry`]; [`Registry::builtin`] holds bnood's seven ([`DetectorKind`],
//! parameters in [`DetectorParams`]), and another crate adds its own with
//! [`Registry::register`]: a type implementing [`Fit`] (or [`Statistic`](crate::Statistic))
//! and a [`DetectorEntry`].
//!
//! A detector from the registry is an [`Unfitted`] value; [`Unfitted::fit`] gives a
//! [`FittedDetector`], which scores (it derefs to [`Detector`]) and knows the id and
//! parameters a detector file records.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use bnood_data::ImageSet;
use bnood_models::{AnyModel, LikelihoodModel};

use crate::detector::Fit;
use crate::params::{ParamGuard, ScoringParams};
use crate::{
    BnCalibration, BnTest, BnTestParams, DetectError, Detector, Dose, InputComplexity,
    LikelihoodRatio, LogLikelihood, ProgressHook, Result, TPerm, Typicality, Waic,
};

/// Every detector of bnood: the four of the paper's Table 2 and four per-input detectors
/// from the literature. Serialised and parsed by [`id`](Self::id) (`logp`, `tperm`, `waic`,
/// `bn`, `input-complexity`, `likelihood-ratio`, `typicality`, `dose`); the titles are
/// accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum DetectorKind {
    /// `−ln p(x)` with running statistics (`LogLikelihood`).
    #[serde(rename = "logp", alias = "log p(x)")]
    #[cfg_attr(feature = "cli", value(name = "logp"))]
    LogLikelihood,
    /// Two-sided likelihood permutation test (`TPerm`).
    #[serde(rename = "tperm", alias = "T_perm")]
    #[cfg_attr(feature = "cli", value(name = "tperm"))]
    TPerm,
    /// WAIC over an ensemble of independently trained models (`Waic`).
    #[serde(rename = "waic", alias = "WAIC")]
    #[cfg_attr(feature = "cli", value(name = "waic"))]
    Waic,
    /// The paper's BatchNorm mixed-batch test (`BnTest`).
    #[serde(rename = "bn", alias = "BN test")]
    #[cfg_attr(feature = "cli", value(name = "bn"))]
    BnTest,
    /// Serrà et al.'s input complexity, `−log₂ p(x) − L(x)` (`InputComplexity`).
    #[serde(rename = "input-complexity", alias = "input complexity")]
    #[cfg_attr(feature = "cli", value(name = "input-complexity"))]
    InputComplexity,
    /// Ren et al.'s likelihood ratio against a background model (`LikelihoodRatio`).
    #[serde(rename = "likelihood-ratio", alias = "likelihood ratio")]
    #[cfg_attr(feature = "cli", value(name = "likelihood-ratio"))]
    LikelihoodRatio,
    /// Nalisnick et al.'s typicality test, per input (`Typicality`).
    #[serde(rename = "typicality")]
    #[cfg_attr(feature = "cli", value(name = "typicality"))]
    Typicality,
    /// Morningstar et al.'s density of states estimation over several statistics, per
    /// input (`Dose`).
    #[serde(rename = "dose", alias = "DoSE")]
    #[cfg_attr(feature = "cli", value(name = "dose"))]
    Dose,
}

impl DetectorKind {
    /// All of them: the paper's Table 2 in its column order, then the per-input detectors.
    pub const ALL: [DetectorKind; 8] = [
        DetectorKind::LogLikelihood,
        DetectorKind::TPerm,
        DetectorKind::Waic,
        DetectorKind::BnTest,
        DetectorKind::InputComplexity,
        DetectorKind::LikelihoodRatio,
        DetectorKind::Typicality,
        DetectorKind::Dose,
    ];

    /// The paper's Table 2 detectors, in its column order.
    pub const PAPER: [DetectorKind; 4] = [
        DetectorKind::LogLikelihood,
        DetectorKind::TPerm,
        DetectorKind::Waic,
        DetectorKind::BnTest,
    ];

    /// The short name used on the command line and in files: `logp`, `tperm`, `waic`, `bn`,
    /// `input-complexity`, `likelihood-ratio`, `typicality`, `dose`.
    pub fn id(self) -> &'static str {
        match self {
            DetectorKind::LogLikelihood => "logp",
            DetectorKind::TPerm => "tperm",
            DetectorKind::Waic => "waic",
            DetectorKind::BnTest => "bn",
            DetectorKind::InputComplexity => "input-complexity",
            DetectorKind::LikelihoodRatio => "likelihood-ratio",
            DetectorKind::Typicality => "typicality",
            DetectorKind::Dose => "dose",
        }
    }

    /// The column title in tables (the paper's Table 2 for its four).
    pub fn title(self) -> &'static str {
        match self {
            DetectorKind::LogLikelihood => "log p(x)",
            DetectorKind::TPerm => "T_perm",
            DetectorKind::Waic => "WAIC",
            DetectorKind::BnTest => "BN test",
            DetectorKind::InputComplexity => "input complexity",
            DetectorKind::LikelihoodRatio => "likelihood ratio",
            DetectorKind::Typicality => "typicality",
            DetectorKind::Dose => "DoSE",
        }
    }

    /// Models the detector needs: WAIC an ensemble of at least two, the likelihood ratio a
    /// model and its background model, the others one.
    pub fn min_models(self) -> usize {
        self.models_needed().0
    }

    /// How many models the detector needs and, for an error, what they are.
    fn models_needed(self) -> (usize, &'static str) {
        match self {
            DetectorKind::Waic => (
                2,
                "independently trained models of the same data (add ensemble members with --ensemble)",
            ),
            DetectorKind::LikelihoodRatio => (
                2,
                "the model and a background model trained with `bnood train --background-mutation 0.2` (pass it with --background)",
            ),
            _ => (1, "a model"),
        }
    }

    /// Whether it scores with an ensemble of independently trained models (WAIC), so that a
    /// front end's extra models (`--ensemble`) are its members.
    pub fn uses_ensemble(self) -> bool {
        self == DetectorKind::Waic
    }

    /// Whether it needs a background model (the likelihood ratio, `--background`).
    pub fn uses_background(self) -> bool {
        self == DetectorKind::LikelihoodRatio
    }

    /// Whether a front end's `members` models (the scored one and its ensemble members) and
    /// a background model, when `background`, are enough for it ([`models_from`](Self::models_from)).
    pub fn has_models(self, members: usize, background: bool) -> bool {
        let taken = if self.uses_ensemble() {
            members
        } else {
            members.min(1) + usize::from(self.uses_background() && background)
        };
        taken >= self.min_models()
    }

    /// The models it is built over ([`build`]), from a front end's models: `members[0]` is
    /// the scored model and the rest its ensemble members; `background` the background
    /// model. WAIC takes all members, the likelihood ratio the scored model and the
    /// background model, the others the scored model; models it does not use are left out.
    ///
    /// # Errors
    /// [`DetectError::EmptySet`] when they are not enough, naming what to pass.
    pub fn models_from<M: Clone>(self, members: &[M], background: Option<&M>) -> Result<Vec<M>> {
        let models: Vec<M> = if self.uses_ensemble() {
            members.to_vec()
        } else if self.uses_background() {
            members.iter().take(1).chain(background).cloned().collect()
        } else {
            members.iter().take(1).cloned().collect()
        };
        check_models(self.id(), self.title(), self.models_needed(), models.len())?;
        Ok(models)
    }

    /// Its row of [`Registry::builtin`].
    pub fn entry(self) -> DetectorEntry {
        let (min_models, models) = self.models_needed();
        DetectorEntry {
            id: self.id().into(),
            title: self.title().into(),
            min_models,
            models: models.into(),
            build: Arc::new(move |models, device, params| {
                let params: DetectorParams =
                    serde_json::from_value(params.clone()).map_err(|e| {
                        DetectError::InvalidParameter(format!(
                            "parameters of the {} detector: {e}",
                            self.title()
                        ))
                    })?;
                build(self, models, device, &params)
            }),
        }
    }

    /// Parses an [`id`](Self::id) or a [`title`](Self::title), case-insensitively.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] listing the valid names.
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.id() == lower || k.title().to_ascii_lowercase() == lower)
            .ok_or_else(|| {
                DetectError::InvalidParameter(format!(
                    "unknown detector `{name}`: choose one of {}",
                    Self::ALL.map(DetectorKind::id).join(", ")
                ))
            })
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

impl FromStr for DetectorKind {
    type Err = DetectError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Every detector's parameters in one value: the running-statistics scoring of the
/// likelihood baselines and the BN test's own (which carry their own scoring parameters).
/// Checked when a detector is [`build`]t.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DetectorParams {
    /// Scoring of [`LogLikelihood`], [`TPerm`] and [`Waic`].
    pub scoring: ScoringParams,
    /// Parameters of [`BnTest`].
    pub bn: BnTestParams,
}

/// How the BN test composes its mixed batches (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum BnMode {
    /// The paper's test on a *pool*: `--r1`/`--r2` shares of the scored images per batch,
    /// so an image's score depends on the other images scored with it.
    #[default]
    Pool,
    /// One scored image per batch of `--batch-size` with reference images, against running
    /// statistics (`r1 = 0`, `r2 = 1/b`): an image's score depends on it and the reference
    /// set only (`BnTestParams::per_input`).
    PerInput,
}

/// [`DetectorParams`] as command-line flags (a clap `Args` group, flattened into every
/// front end that builds detectors): `--mode`, `--batch-size`, `--r1`, `--r2`, `--draws`,
/// `--calibration-draws`, `--bn-calibration`, `--pool-null-batches`, `--held-out-fraction`,
/// `--seed`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct DetectorArgs {
    /// BN test mode: `pool` (the paper's, ratios --r1/--r2) or `per-input` (one scored image per batch).
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = BnMode::Pool))]
    pub mode: BnMode,
    /// Images per mixed batch b of the BN test.
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 64, allow_negative_numbers = true)
    )]
    pub batch_size: usize,
    /// BN test ratio r1 (share of test images in a batch; 0 = running statistics) [default: 0.1]. Not with --mode per-input.
    // Negative-looking values are taken as values (and refused as out of range), not flags.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub r1: Option<f64>,
    /// BN test ratio r2 [default: 0.9]. Not with --mode per-input.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub r2: Option<f64>,
    /// Batch compositions of the held-out images that calibrate the BN test's p-values [default: 1].
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub calibration_draws: Option<usize>,
    /// What the BN test's pool mode ranks an image's Δ against: `in-pool` (the held-out images scored inside every test pool: per-image p-values at --fpr on in-distribution pools, and a verdict on the whole pool; the default of `fit` and `score`) or `held-out` (the paper's, the default of `eval`: the held-out images scored as their own pool; its per-image flags exceed --fpr).
    #[cfg_attr(feature = "cli", arg(long, value_enum))]
    pub bn_calibration: Option<BnCalibration>,
    /// Null batches of reference images behind the BN test's verdict on the whole pool (the window statistic of `bnood monitor` on the pool); 0 turns the verdict off.
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = crate::DEFAULT_POOL_NULL_BATCHES, allow_negative_numbers = true)
    )]
    pub pool_null_batches: usize,
    /// Share of the reference images held out to calibrate: the BN test's Δ (the rest is mixed into batches), DoSE's score (the rest fits its densities).
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 0.5, allow_negative_numbers = true)
    )]
    pub held_out_fraction: f64,
    /// Monte Carlo draws of the batch composition.
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 1, allow_negative_numbers = true)
    )]
    pub draws: usize,
    /// Seed of the BN test's batch composition, DoSE's reference split and of subsets.
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 0, allow_negative_numbers = true)
    )]
    pub seed: u64,
}

impl DetectorArgs {
    /// The parameters these flags give (default scoring parameters).
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] for `--r1`/`--r2` with `--mode per-input`, which
    /// sets both ratios itself.
    pub fn params(&self) -> Result<DetectorParams> {
        self.params_calibrated_by_default(BnCalibration::HeldOut)
    }

    /// [`params`](Self::params), with the pool mode's calibration `calibration` unless
    /// `--bn-calibration` names one (the per-input mode always takes the held-out images'
    /// Δs: its images do not share batches). `bnood fit` and `score` pass
    /// [`BnCalibration::InPool`], so that their per-image flags meet `--fpr` and a pool gets
    /// its verdict; `bnood eval` keeps the paper's [`BnCalibration::HeldOut`].
    ///
    /// # Errors
    /// As [`params`](Self::params).
    pub fn params_calibrated_by_default(
        &self,
        calibration: BnCalibration,
    ) -> Result<DetectorParams> {
        let calibration = match (self.bn_calibration, self.mode) {
            (Some(given), _) => given,
            (None, BnMode::PerInput) => BnCalibration::HeldOut,
            (None, BnMode::Pool) => calibration,
        };
        let defaults = BnTestParams::new().check()?;
        let bn = match self.mode {
            BnMode::Pool => BnTestParams::new().batch_size(self.batch_size).ratios(
                self.r1.unwrap_or(defaults.r1()),
                self.r2.unwrap_or(defaults.r2()),
            ),
            BnMode::PerInput => {
                if self.r1.is_some() || self.r2.is_some() {
                    return Err(DetectError::InvalidParameter(
                        "--mode per-input sets r1 = 0 and r2 = 1/b itself: drop --r1/--r2 (choose b with --batch-size)".into(),
                    ));
                }
                BnTestParams::new().per_input_batch_size(self.batch_size)
            }
        };
        let bn = match self.calibration_draws {
            Some(k) => bn.calibration_draws(k),
            None => bn,
        }
        .calibration(calibration)
        .pool_null_batches(self.pool_null_batches);
        Ok(DetectorParams {
            bn: bn
                .held_out_fraction(self.held_out_fraction)
                .draws(self.draws)
                .seed(self.seed),
            ..DetectorParams::default()
        })
    }
}

/// Builds the built-in detector `kind` over `models` (living on `device`; any
/// [`LikelihoodModel`], e.g. `AnyModel` or `RealNvp`) with `params`:
/// the first model is scored by every detector; [`Waic`] takes all of them as its ensemble
/// and [`LikelihoodRatio`] the second as its background model. The same as
/// [`Registry::builtin`]`.build(kind.id(), …)`.
///
/// # Errors
/// [`DetectError::EmptySet`] when fewer models are given than the kind needs
/// ([`DetectorKind::min_models`]); the detector's own parameter errors.
pub fn build<M: LikelihoodModel + Clone + 'static>(
    kind: DetectorKind,
    models: Vec<M>,
    device: &Device,
    params: &DetectorParams,
) -> Result<Unfitted> {
    check_models(kind.id(), kind.title(), kind.models_needed(), models.len())?;
    let scoring = params.scoring.clone();
    let id = kind.id();
    let p = params.clone();
    Ok(match kind {
        DetectorKind::LogLikelihood => Unfitted::new(
            id,
            p,
            LogLikelihood::with_params(first(models), device, scoring)?,
        ),
        DetectorKind::TPerm => {
            Unfitted::new(id, p, TPerm::with_params(first(models), device, scoring)?)
        }
        DetectorKind::BnTest => Unfitted::new(
            id,
            p,
            BnTest::new(first(models), device, params.bn.clone())?,
        ),
        DetectorKind::Waic => Unfitted::new(id, p, Waic::with_params(models, device, scoring)?),
        DetectorKind::InputComplexity => Unfitted::new(
            id,
            p,
            InputComplexity::with_params(first(models), device, scoring)?,
        ),
        DetectorKind::LikelihoodRatio => {
            let mut models = models.into_iter();
            let (model, background) = (models.next(), models.next());
            let (Some(model), Some(background)) = (model, background) else {
                unreachable!("check_models counted two models");
            };
            Unfitted::new(
                id,
                p,
                LikelihoodRatio::with_params(model, background, device, scoring)?,
            )
        }
        DetectorKind::Typicality => Unfitted::new(
            id,
            p,
            Typicality::with_params(first(models), device, scoring)?,
        ),
        // DoSE shares the BN test's split fraction and seed (`--held-out-fraction`, `--seed`):
        // the held-out part calibrates, the rest fits the densities.
        DetectorKind::Dose => Unfitted::new(
            id,
            p,
            Dose::new(
                first(models),
                device,
                scoring,
                params.bn.check_ref()?.held_out_fraction(),
                params.bn.check_ref()?.seed(),
            )?,
        ),
    })
}

/// The first model (there is one: the caller counted them).
fn first<M>(models: Vec<M>) -> M {
    models
        .into_iter()
        .next()
        .expect("check_models counted at least one model")
}

/// [`DetectError::EmptySet`] unless `got` models are enough for the detector `id`.
fn check_models(id: &str, title: &str, (min, what): (usize, &str), got: usize) -> Result<()> {
    if got >= min {
        return Ok(());
    }
    Err(DetectError::EmptySet(format!(
        "the {title} detector (`{id}`) needs {what}: at least {min} model(s), but got {got}"
    )))
}

/// A row of a [`Registry`]: what names a detector, what it needs and how to build it.
#[derive(Clone)]
pub struct DetectorEntry {
    /// The short name on the command line and in detector files (e.g. `"bn"`).
    pub id: String,
    /// The column title in tables (e.g. `"BN test"`).
    pub title: String,
    /// Models it needs at least (the first is the one scored).
    pub min_models: usize,
    /// What those models are, for the error when too few are given.
    pub models: String,
    /// Builds the unfitted detector over models on a device with parameters as stored in a
    /// detector file (JSON). Called only with at least `min_models` models.
    #[allow(clippy::type_complexity)]
    pub build:
        Arc<dyn Fn(Vec<AnyModel>, &Device, &serde_json::Value) -> Result<Unfitted> + Send + Sync>,
}

impl fmt::Debug for DetectorEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetectorEntry")
            .field("id", &self.id)
            .field("title", &self.title)
            .field("min_models", &self.min_models)
            .finish_non_exhaustive()
    }
}

/// The detectors a front end can build and load, by id.
#[derive(Debug, Clone)]
pub struct Registry {
    entries: Vec<DetectorEntry>,
}

impl Registry {
    /// bnood's detectors, in [`DetectorKind::ALL`]'s order.
    pub fn builtin() -> Self {
        Self {
            entries: DetectorKind::ALL.map(DetectorKind::entry).to_vec(),
        }
    }

    /// This registry with `entry` added.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] when its id is taken, or it needs no model.
    pub fn register(mut self, entry: DetectorEntry) -> Result<Self> {
        if self.get(&entry.id).is_some() {
            return Err(DetectError::InvalidParameter(format!(
                "a detector with id `{}` is registered already: choose another id",
                entry.id
            )));
        }
        if entry.min_models == 0 {
            return Err(DetectError::InvalidParameter(format!(
                "the detector `{}` needs no model, but a detector file records the models a detector was fitted with: give min_models ≥ 1",
                entry.id
            )));
        }
        self.entries.push(entry);
        Ok(self)
    }

    /// The entries, in registration order.
    pub fn entries(&self) -> &[DetectorEntry] {
        &self.entries
    }

    /// The entry of `id`, or of a built-in detector's title (e.g. `"T_perm"`).
    pub fn get(&self, id: &str) -> Option<&DetectorEntry> {
        self.entries.iter().find(|e| e.id == id).or_else(|| {
            let id = DetectorKind::parse(id).ok()?.id();
            self.entries.iter().find(|e| e.id == id)
        })
    }

    /// Builds the detector `id` over `models` on `device`, with `params` as stored in a
    /// detector file.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] for an unknown id (listing the known ones) or bad
    /// parameters; [`DetectError::EmptySet`] for too few models.
    pub fn build(
        &self,
        id: &str,
        models: Vec<AnyModel>,
        device: &Device,
        params: &serde_json::Value,
    ) -> Result<Unfitted> {
        let entry = self.get(id).ok_or_else(|| {
            DetectError::InvalidParameter(format!(
                "unknown detector `{id}`: this program knows {}",
                self.entries
                    .iter()
                    .map(|e| e.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        check_models(
            &entry.id,
            &entry.title,
            (entry.min_models, &entry.models),
            models.len(),
        )?;
        (entry.build)(models, device, params)
    }
}

/// [`Fit`] through a trait object, for detectors chosen at run time.
trait DynFit {
    fn fit(&self, reference: &ImageSet) -> Result<Box<dyn Detector>>;
    fn restore(&self, state: serde_json::Value) -> Result<Box<dyn Detector>>;
    /// Restores from the `"state"` field of a detector file's JSON text, deserialised
    /// straight into the detector's state type (no intermediate `serde_json::Value`, whose
    /// numbers take 16 times the file's bytes).
    fn restore_from_file(&self, file: &[u8]) -> Result<Box<dyn Detector>>;
    fn set_progress(&mut self, progress: ProgressHook);
}

/// The `"state"` field of a detector file; every other field is skipped unparsed.
#[derive(serde::Deserialize)]
struct StateField<S> {
    state: S,
}

fn state_error(e: serde_json::Error) -> DetectError {
    DetectError::InvalidParameter(format!(
        "the saved state does not fit this detector ({e}): fit the detector again"
    ))
}

impl<F: Fit> DynFit for F
where
    F::Fitted: 'static,
{
    fn fit(&self, reference: &ImageSet) -> Result<Box<dyn Detector>> {
        Ok(Box::new(Fit::fit(self, reference)?))
    }

    fn restore(&self, state: serde_json::Value) -> Result<Box<dyn Detector>> {
        let state = serde_json::from_value(state).map_err(state_error)?;
        Ok(Box::new(Fit::restore(self, state)?))
    }

    fn restore_from_file(&self, file: &[u8]) -> Result<Box<dyn Detector>> {
        let StateField { state } = serde_json::from_slice(file).map_err(state_error)?;
        Ok(Box::new(Fit::restore(self, state)?))
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        Fit::set_progress(self, progress);
    }
}

/// What a detector file records as a detector's parameters.
type StoredParams = Arc<dyn erased_serde::Serialize + Send + Sync>;

/// A detector of a [`Registry`] with its id and parameters, not yet fitted.
pub struct Unfitted {
    id: String,
    params: StoredParams,
    detector: Box<dyn DynFit>,
}

impl Unfitted {
    /// Wraps `detector`, registered as `id`, built with `params` (written to detector files
    /// and given back to the entry's `build` when one is loaded).
    pub fn new<F>(
        id: impl Into<String>,
        params: impl Serialize + Send + Sync + 'static,
        detector: F,
    ) -> Self
    where
        F: Fit + 'static,
        F::Fitted: 'static,
    {
        Self {
            id: id.into(),
            params: Arc::new(params),
            detector: Box::new(detector),
        }
    }

    /// The registry id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Fits on `reference` ([`Fit::fit`]).
    ///
    /// # Errors
    /// The detector's fitting errors.
    pub fn fit(&self, reference: &ImageSet) -> Result<FittedDetector> {
        Ok(self.fitted(self.detector.fit(reference)?))
    }

    /// The fitted detector of a saved state ([`Detector::state`]), instead of fitting again.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] when the state does not fit this detector.
    pub fn restore(&self, state: serde_json::Value) -> Result<FittedDetector> {
        Ok(self.fitted(self.detector.restore(state)?))
    }

    /// [`restore`](Self::restore) from the JSON text of a whole detector file (its
    /// `"state"` field, read straight into the detector's state type).
    ///
    /// # Errors
    /// As [`restore`](Self::restore).
    pub(crate) fn restore_from_file(&self, file: &[u8]) -> Result<FittedDetector> {
        Ok(self.fitted(self.detector.restore_from_file(file)?))
    }

    /// Reports the progress of fitting and of the fitted detector's scoring.
    pub fn set_progress(&mut self, progress: ProgressHook) {
        self.detector.set_progress(progress);
    }

    fn fitted(&self, detector: Box<dyn Detector>) -> FittedDetector {
        FittedDetector {
            id: self.id.clone(),
            params: Arc::clone(&self.params),
            detector,
        }
    }
}

impl fmt::Debug for Unfitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unfitted").field("id", &self.id).finish()
    }
}

/// A fitted detector of a [`Registry`]: scores through [`Detector`] (it derefs to one) and
/// knows the id and parameters its detector file records.
pub struct FittedDetector {
    id: String,
    params: StoredParams,
    detector: Box<dyn Detector>,
}

impl FittedDetector {
    /// The registry id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The parameters it was built with, as a detector file records them.
    pub fn params(&self) -> &(dyn erased_serde::Serialize + Send + Sync) {
        &*self.params
    }

    /// The parameters as JSON (e.g. to read a built-in detector's [`DetectorParams`]).
    pub fn params_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.params).unwrap_or(serde_json::Value::Null)
    }

    /// The fitted detector.
    pub fn into_inner(self) -> Box<dyn Detector> {
        self.detector
    }
}

impl Deref for FittedDetector {
    type Target = dyn Detector;

    fn deref(&self) -> &(dyn Detector + 'static) {
        &*self.detector
    }
}

impl DerefMut for FittedDetector {
    fn deref_mut(&mut self) -> &mut (dyn Detector + 'static) {
        &mut *self.detector
    }
}

impl fmt::Debug for FittedDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FittedDetector")
            .field("id", &self.id)
            .field("name", &self.detector.name())
            .finish()
    }
}
