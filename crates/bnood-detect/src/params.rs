//! Parameters shared by every detector, checked once (linfa's param guard): a `…Params`
//! builder turns into its `Valid…Params` through [`ParamGuard`], and detectors only ever
//! hold the checked form.

use serde::{Deserialize, Serialize};

use crate::{DetectError, Result};

/// Turns unchecked parameters into checked ones (after linfa's `ParamGuard`).
pub trait ParamGuard {
    /// The checked parameters.
    type Checked;

    /// Checks the parameters and returns a reference to the checked form.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] naming the first invalid value.
    fn check_ref(&self) -> Result<&Self::Checked>;

    /// Checks the parameters and returns the checked form.
    ///
    /// # Errors
    /// As [`check_ref`](Self::check_ref).
    fn check(self) -> Result<Self::Checked>;
}

/// How integer pixels become the continuous values `[0, 256)` a [`LikelihoodModel`]
/// expects, at scoring time.
///
/// [`LikelihoodModel`]: bnood_models::LikelihoodModel
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dequantization {
    /// `pixel + 0.5`, the centre of each pixel's bin. Deterministic: an image gets the same
    /// value whatever batch it is scored in. The default.
    #[default]
    Midpoint,
    /// `pixel + u`, `u ~ Uniform[0, 1)`, as in training. The noise of an image is drawn from
    /// a ChaCha8 stream keyed by `seed` and the image's index in the set being scored, so
    /// it too is independent of batching and thread count (but an image at another index,
    /// or in another set, gets other noise).
    Uniform {
        /// Seed of the noise.
        seed: u64,
    },
}

/// Checked [`ScoringParams`]: how images are fed to the model in running-statistics
/// (evaluation-mode) scoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidScoringParams {
    batch_size: usize,
    dequantization: Dequantization,
}

impl ValidScoringParams {
    /// Images per forward pass when scoring with running statistics (only speed and memory
    /// depend on it: in running mode every image is scored independently).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The dequantisation applied before scoring.
    pub fn dequantization(&self) -> Dequantization {
        self.dequantization
    }
}

/// Unchecked scoring parameters: batch size 64, [`Dequantization::Midpoint`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScoringParams(pub(crate) ValidScoringParams);

impl Default for ScoringParams {
    fn default() -> Self {
        Self(ValidScoringParams {
            batch_size: 64,
            dequantization: Dequantization::Midpoint,
        })
    }
}

impl ScoringParams {
    /// The defaults: batch size 64, midpoint dequantisation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Images per forward pass in running-statistics scoring (at least 1).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.0.batch_size = batch_size;
        self
    }

    /// The dequantisation applied before scoring.
    pub fn dequantization(mut self, dequantization: Dequantization) -> Self {
        self.0.dequantization = dequantization;
        self
    }
}

impl ParamGuard for ScoringParams {
    type Checked = ValidScoringParams;

    fn check_ref(&self) -> Result<&ValidScoringParams> {
        if self.0.batch_size == 0 {
            return Err(DetectError::InvalidParameter(
                "scoring batch size is 0: pass at least 1 (64 is a good default)".into(),
            ));
        }
        Ok(&self.0)
    }

    fn check(self) -> Result<ValidScoringParams> {
        self.check_ref()?;
        Ok(self.0)
    }
}

impl Default for ValidScoringParams {
    fn default() -> Self {
        ScoringParams::default().0
    }
}
