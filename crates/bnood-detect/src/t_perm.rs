//! The likelihood permutation test `T_perm` (paper eq. 2, after Song et al. 2017).

use burn::tensor::Device;

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;

use crate::factory::{DetectorKind, DetectorParams};
use crate::params::{ParamGuard, ScoringParams};
use crate::persist::FittedState;
use crate::reference::{ReferenceScores, fitted};
use crate::scoring::RunningScorer;
use crate::{Detector, ProgressHook, Result, Scores};

/// The rank of a test image's likelihood among N reference likelihoods, folded around the
/// median so that *both* unusually low and unusually high likelihoods are flagged (eq. 2):
///
/// `T_perm(x') = |L − N/2|`, `L = #{i : p(xᵢ) ≤ p(x')}`, in `[0, N/2]`,
///
/// with likelihoods from running statistics. The p-value is the two-sided rank p-value
/// from the same counts: with `U = #{i : p(xᵢ) ≥ p(x')}`,
///
/// `p = min(1, 2·min(1 + L, 1 + U) / (N + 1))`,
///
/// which is valid (`P(p ≤ α) ≤ α`) when the test image and the reference images are
/// exchangeable; attainable values are multiples of `2/(N + 1)`.
#[derive(Debug)]
pub struct TPerm<M> {
    model: M,
    scorer: RunningScorer,
    /// Reference log-likelihoods (nats).
    reference: Option<ReferenceScores>,
}

impl<M: LikelihoodModel> TPerm<M> {
    /// A detector over `model`, which lives on `device`, with default [`ScoringParams`].
    pub fn new(model: M, device: &Device) -> Self {
        Self {
            model,
            scorer: RunningScorer::new(device, ScoringParams::default().0),
            reference: None,
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
            reference: None,
        })
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The reference log-likelihoods in nats, ascending, once fitted.
    pub fn reference_log_likelihoods(&self) -> Option<&[f64]> {
        self.reference.as_ref().map(ReferenceScores::values)
    }
}

impl<M: LikelihoodModel> Detector for TPerm<M> {
    fn name(&self) -> &str {
        "T_perm"
    }

    fn kind(&self) -> DetectorKind {
        DetectorKind::TPerm
    }

    fn params(&self) -> DetectorParams {
        DetectorParams::scoring_only(self.scorer.params())
    }

    fn fit(&mut self, reference: &ImageSet) -> Result<()> {
        let values = self.scorer.log_likelihoods(&self.model, reference)?;
        self.reference = Some(ReferenceScores::new(&values));
        Ok(())
    }

    fn score(&self, test: &ImageSet) -> Result<Scores> {
        let reference = fitted(self.reference.as_ref(), self.name(), "score")?;
        let n = reference.len() as f64;
        let values = self.scorer.log_likelihoods(&self.model, test)?;
        let (scores, p_values) = values
            .iter()
            .map(|&l| {
                let (le, ge) = reference.counts_le_ge(l);
                let t = (le as f64 - n / 2.0).abs(); // eq. 2
                let p = (2.0 * (1 + le.min(ge)) as f64 / (n + 1.0)).min(1.0);
                (t, p)
            })
            .unzip();
        Ok(Scores {
            scores,
            p_values: Some(p_values),
        })
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.scorer.set_progress(progress);
    }

    fn threshold_for_fpr(&self, target_fpr: f64) -> Result<f64> {
        let reference = fitted(self.reference.as_ref(), self.name(), "threshold_for_fpr")?;
        reference.p_value_threshold(target_fpr, 2.0 / (reference.len() + 1) as f64)
    }

    fn fitted_state(&self) -> Option<FittedState> {
        self.reference.clone().map(FittedState::reference)
    }

    fn restore(&mut self, state: FittedState) -> Result<()> {
        self.reference = Some(state.into_reference(self.name())?);
        Ok(())
    }
}
