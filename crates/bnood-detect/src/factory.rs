//! The detector catalogue: every detector named once ([`DetectorKind`]), its parameters in
//! one serialisable type ([`DetectorParams`]) and one function that builds it ([`build`]).
//! Front ends (the `bnood` command, the evaluation protocol, saved detector files) go
//! through here and never match on the kind themselves.
//!
//! Adding a detector means: its own module (a type implementing [`Detector`]) plus one
//! variant of [`DetectorKind`] with its arms in this file.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use bnood_models::LikelihoodModel;

use crate::params::{ScoringParams, ValidScoringParams};
use crate::{BnTest, BnTestParams, DetectError, Detector, LogLikelihood, Result, TPerm, Waic};

/// The detectors of the paper's Table 2. Serialised and parsed by [`id`](Self::id)
/// (`logp`, `tperm`, `waic`, `bn`); the table titles are accepted too.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
pub enum DetectorKind {
    /// `−ln p(x)` with running statistics (`LogLikelihood`).
    #[serde(rename = "logp", alias = "log p(x)")]
    #[value(name = "logp")]
    LogLikelihood,
    /// Two-sided likelihood permutation test (`TPerm`).
    #[serde(rename = "tperm", alias = "T_perm")]
    #[value(name = "tperm")]
    TPerm,
    /// WAIC over an ensemble of independently trained models (`Waic`).
    #[serde(rename = "waic", alias = "WAIC")]
    #[value(name = "waic")]
    Waic,
    /// The paper's BatchNorm mixed-batch test (`BnTest`).
    #[serde(rename = "bn", alias = "BN test")]
    #[value(name = "bn")]
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

    /// The short name used on the command line and in files: `logp`, `tperm`, `waic`, `bn`.
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

    /// Models the detector needs: WAIC an ensemble of at least two, the others one.
    pub fn min_models(self) -> usize {
        match self {
            DetectorKind::Waic => 2,
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

/// [`DetectorParams`] as command-line flags (a clap `Args` group, flattened into every
/// front end that builds detectors): `--batch-size`, `--r1`, `--r2`, `--draws`, `--seed`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct DetectorArgs {
    /// Images per mixed batch b of the BN test.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// BN test ratio r1 (share of test images in a batch; 0 = running statistics).
    // Negative-looking values are taken as values (and refused as out of range), not flags.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub r1: f64,
    /// BN test ratio r2.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub r2: f64,
    /// Share of the BN test's reference images held out to calibrate Δ (the rest is mixed into batches).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub held_out_fraction: f64,
    /// Monte Carlo draws of the batch composition.
    #[arg(long, default_value_t = 1)]
    pub draws: usize,
    /// Seed of the BN test's batch composition and of subsets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl DetectorArgs {
    /// The parameters these flags give (default scoring parameters).
    pub fn params(&self) -> DetectorParams {
        DetectorParams {
            bn: BnTestParams::new()
                .batch_size(self.batch_size)
                .ratios(self.r1, self.r2)
                .held_out_fraction(self.held_out_fraction)
                .draws(self.draws)
                .seed(self.seed),
            ..DetectorParams::default()
        }
    }
}

/// Builds the detector `kind` over `models` (living on `device`) with `params`: the first
/// model is scored by every detector; [`Waic`] takes all of them as its ensemble.
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
    })
}
