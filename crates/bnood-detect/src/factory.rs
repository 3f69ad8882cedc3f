//! The detector catalogue: every detector named once ([`DetectorKind`]), its parameters in
//! one serialisable type ([`DetectorParams`]) and one function that builds it ([`build`]).
//! Front ends (the `bnood` command, the evaluation protocol, saved detector files) build,
//! describe and load detectors through here; they still compare kinds where a flag belongs
//! to one detector (e.g. `--background` to the likelihood ratio, `--ensemble` to WAIC).
//!
//! Adding a detector means: its own module (a type implementing [`Detector`]) plus one
//! variant of [`DetectorKind`] with its arms in this file.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use bnood_models::LikelihoodModel;

use crate::params::{ParamGuard, ScoringParams, ValidScoringParams};
use crate::{
    BnCalibration, BnTest, BnTestParams, DetectError, Detector, InputComplexity, LikelihoodRatio,
    LogLikelihood, Result, TPerm, Typicality, Waic,
};

/// Every detector of bnood: the four of the paper's Table 2 and three per-input detectors
/// from the literature. Serialised and parsed by [`id`](Self::id) (`logp`, `tperm`, `waic`,
/// `bn`, `input-complexity`, `likelihood-ratio`, `typicality`); the titles are accepted too.
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
}

impl DetectorKind {
    /// All of them: the paper's Table 2 in its column order, then the per-input detectors.
    pub const ALL: [DetectorKind; 7] = [
        DetectorKind::LogLikelihood,
        DetectorKind::TPerm,
        DetectorKind::Waic,
        DetectorKind::BnTest,
        DetectorKind::InputComplexity,
        DetectorKind::LikelihoodRatio,
        DetectorKind::Typicality,
    ];

    /// The paper's Table 2 detectors, in its column order.
    pub const PAPER: [DetectorKind; 4] = [
        DetectorKind::LogLikelihood,
        DetectorKind::TPerm,
        DetectorKind::Waic,
        DetectorKind::BnTest,
    ];

    /// The short name used on the command line and in files: `logp`, `tperm`, `waic`, `bn`,
    /// `input-complexity`, `likelihood-ratio`, `typicality`.
    pub fn id(self) -> &'static str {
        match self {
            DetectorKind::LogLikelihood => "logp",
            DetectorKind::TPerm => "tperm",
            DetectorKind::Waic => "waic",
            DetectorKind::BnTest => "bn",
            DetectorKind::InputComplexity => "input-complexity",
            DetectorKind::LikelihoodRatio => "likelihood-ratio",
            DetectorKind::Typicality => "typicality",
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
        }
    }

    /// Models the detector needs: WAIC an ensemble of at least two, the likelihood ratio a
    /// model and its background model, the others one.
    pub fn min_models(self) -> usize {
        match self {
            DetectorKind::Waic | DetectorKind::LikelihoodRatio => 2,
            _ => 1,
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

impl DetectorParams {
    /// Default BN-test parameters with these scoring parameters.
    pub(crate) fn scoring_only(scoring: &ValidScoringParams) -> Self {
        Self {
            scoring: ScoringParams(scoring.clone()),
            bn: BnTestParams::default(),
        }
    }
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
/// `--calibration-draws`, `--bn-calibration`, `--held-out-fraction`, `--seed`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct DetectorArgs {
    /// BN test mode: `pool` (the paper's, ratios --r1/--r2) or `per-input` (one scored image per batch).
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = BnMode::Pool))]
    pub mode: BnMode,
    /// Images per mixed batch b of the BN test.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 64))]
    pub batch_size: usize,
    /// BN test ratio r1 (share of test images in a batch; 0 = running statistics) [default: 0.1]. Not with --mode per-input.
    // Negative-looking values are taken as values (and refused as out of range), not flags.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub r1: Option<f64>,
    /// BN test ratio r2 [default: 0.9]. Not with --mode per-input.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub r2: Option<f64>,
    /// Batch compositions of the held-out images that calibrate the BN test's p-values [default: 1].
    #[cfg_attr(feature = "cli", arg(long))]
    pub calibration_draws: Option<usize>,
    /// What the BN test's pool mode ranks an image's Δ against: `held-out` (the paper's: the held-out images scored as their own pool; decides per pool) or `in-pool` (the held-out images scored inside every test pool: per-image p-values calibrated in mostly in-distribution pools).
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = BnCalibration::HeldOut))]
    pub bn_calibration: BnCalibration,
    /// Share of the BN test's reference images held out to calibrate Δ (the rest is mixed into batches).
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 0.5, allow_negative_numbers = true)
    )]
    pub held_out_fraction: f64,
    /// Monte Carlo draws of the batch composition.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1))]
    pub draws: usize,
    /// Seed of the BN test's batch composition and of subsets.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub seed: u64,
}

impl DetectorArgs {
    /// The parameters these flags give (default scoring parameters).
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] for `--r1`/`--r2` with `--mode per-input`, which
    /// sets both ratios itself.
    pub fn params(&self) -> Result<DetectorParams> {
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
        .calibration(self.bn_calibration);
        Ok(DetectorParams {
            bn: bn
                .held_out_fraction(self.held_out_fraction)
                .draws(self.draws)
                .seed(self.seed),
            ..DetectorParams::default()
        })
    }
}

/// Builds the detector `kind` over `models` (living on `device`) with `params`: the first
/// model is scored by every detector; [`Waic`] takes all of them as its ensemble and
/// [`LikelihoodRatio`] the second as its background model.
///
/// # Errors
/// [`DetectError::EmptySet`] when fewer models are given than the kind needs
/// ([`DetectorKind::min_models`]); the detector's own parameter errors.
pub fn build<M: LikelihoodModel + Clone + 'static>(
    kind: DetectorKind,
    models: Vec<M>,
    device: &Device,
    params: &DetectorParams,
) -> Result<Box<dyn Detector>> {
    if models.len() < kind.min_models() {
        return Err(DetectError::EmptySet(match kind {
            DetectorKind::Waic => format!(
                "WAIC needs independently trained models of the same data, at least 2, but got {}: add ensemble members",
                models.len()
            ),
            DetectorKind::LikelihoodRatio => format!(
                "the likelihood ratio needs the model and a background model (trained with `bnood train --background-mutation 0.2`), but got {} model(s): pass the background model",
                models.len()
            ),
            _ => format!("the {} detector needs a model, but got none", kind.title()),
        }));
    }
    let scoring = params.scoring.clone();
    Ok(match kind {
        DetectorKind::LogLikelihood => Box::new(LogLikelihood::with_params(
            models[0].clone(),
            device,
            scoring,
        )?),
        DetectorKind::TPerm => Box::new(TPerm::with_params(models[0].clone(), device, scoring)?),
        DetectorKind::BnTest => {
            Box::new(BnTest::new(models[0].clone(), device, params.bn.clone())?)
        }
        DetectorKind::Waic => Box::new(Waic::with_params(models, device, scoring)?),
        DetectorKind::InputComplexity => Box::new(InputComplexity::with_params(
            models[0].clone(),
            device,
            scoring,
        )?),
        DetectorKind::LikelihoodRatio => Box::new(LikelihoodRatio::with_params(
            models[0].clone(),
            models[1].clone(),
            device,
            scoring,
        )?),
        DetectorKind::Typicality => {
            Box::new(Typicality::with_params(models[0].clone(), device, scoring)?)
        }
    })
}
