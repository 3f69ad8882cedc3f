//! The plain likelihood baseline: score = `−ln p(x)`.

use burn::tensor::Device;

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;

use crate::detector::Statistic;
use crate::params::{ParamGuard, ScoringParams};
use crate::scoring::RunningScorer;
use crate::{ProgressHook, Result};

/// Scores an image by its negative log-likelihood `−ln p(x)` in nats, with BatchNorm
/// running statistics (the paper's evaluation mode): low likelihood = OoD. The baseline
/// that fails when OoD data gets *higher* likelihood (e.g. SVHN under a CIFAR-10 model).
///
/// A [`Statistic`]: fitting ([`Fit::fit`](crate::Fit::fit)) only keeps the reference
/// scores for [`threshold_for_fpr`](crate::Detector::threshold_for_fpr).
#[derive(Debug, Clone)]
pub struct LogLikelihood<M> {
    model: M,
    scorer: RunningScorer,
}

impl<M: LikelihoodModel> LogLikelihood<M> {
    /// A detector over `model`, which lives on `device`, with default [`ScoringParams`].
    pub fn new(model: M, device: &Device) -> Self {
        Self {
            model,
            scorer: RunningScorer::new(device, ScoringParams::default().0),
        }
    }

    /// A detector with explicit scoring parameters.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`](crate::DetectError::InvalidParameter) for invalid
    /// parameters.
    pub fn with_params(model: M, device: &Device, params: ScoringParams) -> Result<Self> {
        Ok(Self {
            model,
            scorer: RunningScorer::new(device, params.check()?),
        })
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// `ln p(x)` in nats of every image of `set`, running statistics.
    ///
    /// # Errors
    /// Shape mismatches and model errors.
    pub fn log_likelihoods(&self, set: &ImageSet) -> Result<Vec<f64>> {
        self.scorer.log_likelihoods(&self.model, set)
    }
}

impl<M: LikelihoodModel + Clone> Statistic for LogLikelihood<M> {
    fn name(&self) -> &str {
        "log-likelihood"
    }

    /// `−ln p(x)` in nats, running statistics.
    fn statistic(&self, set: &ImageSet) -> Result<Vec<f64>> {
        Ok(self.log_likelihoods(set)?.into_iter().map(|l| -l).collect())
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.scorer.set_progress(progress);
    }
}
