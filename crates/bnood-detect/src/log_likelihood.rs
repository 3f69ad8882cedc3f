//! The plain likelihood baseline: score = `−ln p(x)`.

use burn::tensor::Device;

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;

use crate::params::{ParamGuard, ScoringParams, ValidScoringParams};
use crate::scoring::{check_fpr, quantile_linear, running_log_likelihoods, sorted};
use crate::{DetectError, Detector, Result, Scores};

/// Scores an image by its negative log-likelihood `−ln p(x)` in nats, with BatchNorm
/// running statistics (the paper's evaluation mode): low likelihood = OoD. The baseline
/// that fails when OoD data gets *higher* likelihood (e.g. SVHN under a CIFAR-10 model).
///
/// Scoring needs no reference data; [`fit`](Detector::fit) only stores the reference
/// scores for [`threshold_for_fpr`](Detector::threshold_for_fpr).
#[derive(Debug)]
pub struct LogLikelihood<M> {
    model: M,
    device: Device,
    params: ValidScoringParams,
    /// Reference scores, ascending.
    reference: Option<Vec<f64>>,
}

impl<M: LikelihoodModel> LogLikelihood<M> {
    /// A detector over `model`, which lives on `device`, with default [`ScoringParams`].
    pub fn new(model: M, device: &Device) -> Self {
        Self {
            model,
            device: device.clone(),
            params: ValidScoringParams::default(),
            reference: None,
        }
    }

    /// A detector with explicit scoring parameters.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] for invalid parameters.
    pub fn with_params(model: M, device: &Device, params: ScoringParams) -> Result<Self> {
        Ok(Self {
            params: params.check()?,
            ..Self::new(model, device)
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
        running_log_likelihoods(&self.model, set, &self.params, &self.device)
    }
}

/// `(1 − fpr)` quantile of ascending reference scores, shared with [`crate::Waic`].
pub(crate) fn score_threshold(reference: Option<&Vec<f64>>, name: &str, fpr: f64) -> Result<f64> {
    let reference = reference.ok_or_else(|| DetectError::NotFitted {
        detector: name.to_string(),
        action: "threshold_for_fpr",
    })?;
    check_fpr(fpr)?;
    Ok(quantile_linear(reference, 1.0 - fpr))
}

impl<M: LikelihoodModel> Detector for LogLikelihood<M> {
    fn name(&self) -> &str {
        "log-likelihood"
    }

    fn fit(&mut self, reference: &ImageSet) -> Result<()> {
        let scores = self.score(reference)?.scores;
        self.reference = Some(sorted(&scores));
        Ok(())
    }

    fn score(&self, test: &ImageSet) -> Result<Scores> {
        Ok(Scores {
            scores: self
                .log_likelihoods(test)?
                .into_iter()
                .map(|l| -l)
                .collect(),
            p_values: None,
        })
    }

    fn set_progress(&mut self, progress: crate::ProgressHook) {
        self.params.progress = progress;
    }

    fn threshold_for_fpr(&self, target_fpr: f64) -> Result<f64> {
        score_threshold(self.reference.as_ref(), self.name(), target_fpr)
    }
}
