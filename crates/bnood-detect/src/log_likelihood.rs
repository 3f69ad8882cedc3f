//! The plain likelihood baseline: score = `−ln p(x)`.

use burn::tensor::Device;

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;

use crate::factory::{DetectorKind, DetectorParams};
use crate::params::{ParamGuard, ScoringParams};
use crate::persist::FittedState;
use crate::reference::FittedScores;
use crate::scoring::RunningScorer;
use crate::{Detector, ProgressHook, Result, Scores};

/// Scores an image by its negative log-likelihood `−ln p(x)` in nats, with BatchNorm
/// running statistics (the paper's evaluation mode): low likelihood = OoD. The baseline
/// that fails when OoD data gets *higher* likelihood (e.g. SVHN under a CIFAR-10 model).
///
/// Scoring needs no reference data; [`fit`](Detector::fit) only stores the reference
/// scores for [`threshold_for_fpr`](Detector::threshold_for_fpr).
#[derive(Debug)]
pub struct LogLikelihood<M> {
    model: M,
    scorer: RunningScorer,
    reference: FittedScores,
}

impl<M: LikelihoodModel> LogLikelihood<M> {
    /// A detector over `model`, which lives on `device`, with default [`ScoringParams`].
    pub fn new(model: M, device: &Device) -> Self {
        Self {
            model,
            scorer: RunningScorer::new(device, ScoringParams::default().0),
            reference: FittedScores::default(),
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
            reference: FittedScores::default(),
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

impl<M: LikelihoodModel> Detector for LogLikelihood<M> {
    fn name(&self) -> &str {
        "log-likelihood"
    }

    fn kind(&self) -> DetectorKind {
        DetectorKind::LogLikelihood
    }

    fn params(&self) -> DetectorParams {
        DetectorParams::scoring_only(self.scorer.params())
    }

    fn fit(&mut self, reference: &ImageSet) -> Result<()> {
        let scores = self.score(reference)?.scores;
        self.reference.set(&scores);
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

    fn set_progress(&mut self, progress: ProgressHook) {
        self.scorer.set_progress(progress);
    }

    fn threshold_for_fpr(&self, target_fpr: f64) -> Result<f64> {
        self.reference.threshold(self.name(), target_fpr)
    }

    fn fitted_state(&self) -> Option<FittedState> {
        self.reference.state()
    }

    fn restore(&mut self, state: FittedState) -> Result<()> {
        self.reference = FittedScores::restored(self.name(), state)?;
        Ok(())
    }
}
