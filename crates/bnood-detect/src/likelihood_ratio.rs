//! The likelihood ratio of Ren et al. ("Likelihood Ratios for Out-of-Distribution
//! Detection", NeurIPS 2019).

use burn::tensor::Device;

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;

use crate::detector::Statistic;
use crate::params::{ParamGuard, ScoringParams};
use crate::scoring::{RunningScorer, check_shape};
use crate::{DetectError, ProgressHook, Result};

/// Scores an image by the negative likelihood ratio `−(ln p_θ(x) − ln p_bg(x))` in nats:
/// `p_θ` is the model trained on the in-distribution data, `p_bg` a *background* model of
/// the same data with its pixels perturbed at random (`bnood train --background-mutation
/// 0.2`, `bnood_data::mutate_pixels`), which learns the population-level background
/// statistics but not the semantic content. Both with running statistics. Higher = more
/// OoD. A per-input detector: each image is scored on its own.
///
/// Ren et al. also add L2 regularisation to the background model's training; bnood's
/// background models are trained like the foreground model apart from the mutation.
///
/// A [`Statistic`]: fitting ([`Fit::fit`](crate::Fit::fit)) only keeps the reference
/// scores for [`threshold_for_fpr`](crate::Detector::threshold_for_fpr).
#[derive(Debug, Clone)]
pub struct LikelihoodRatio<M> {
    model: M,
    background: M,
    scorer: RunningScorer,
}

impl<M: LikelihoodModel> LikelihoodRatio<M> {
    /// A detector over the in-distribution `model` and the `background` model (both on
    /// `device`).
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] for invalid parameters or models of different image
    /// shapes.
    pub fn with_params(
        model: M,
        background: M,
        device: &Device,
        params: ScoringParams,
    ) -> Result<Self> {
        if model.image_shape() != background.image_shape() {
            return Err(DetectError::InvalidParameter(format!(
                "the background model expects images {:?} but the model expects {:?}: train the background model on the same data (`bnood train --background-mutation 0.2`)",
                background.image_shape(),
                model.image_shape()
            )));
        }
        Ok(Self {
            model,
            background,
            scorer: RunningScorer::new(device, params.check()?),
        })
    }

    /// The in-distribution model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The background model.
    pub fn background(&self) -> &M {
        &self.background
    }

    /// `(ln p_θ(x), ln p_bg(x))` in nats of every image of `set`.
    ///
    /// # Errors
    /// Shape mismatches and model errors.
    pub fn log_likelihoods(&self, set: &ImageSet) -> Result<(Vec<f64>, Vec<f64>)> {
        check_shape(set, self.model.image_shape())?;
        Ok((
            self.scorer.log_likelihoods(&self.model, set)?,
            self.scorer.log_likelihoods(&self.background, set)?,
        ))
    }
}

impl<M: LikelihoodModel + Clone> Statistic for LikelihoodRatio<M> {
    fn name(&self) -> &str {
        "likelihood ratio"
    }

    /// `ln p_bg(x) − ln p_θ(x)` in nats.
    fn statistic(&self, set: &ImageSet) -> Result<Vec<f64>> {
        let (model, background) = self.log_likelihoods(set)?;
        Ok(model.iter().zip(&background).map(|(m, b)| b - m).collect())
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.scorer.set_progress(progress);
    }
}
