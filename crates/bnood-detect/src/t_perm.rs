//! The likelihood permutation test `T_perm` (paper eq. 2, after Song et al. 2017).

use burn::tensor::Device;

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;

use crate::detector::{Fit, ReferenceState, reference_values};
use crate::params::{ParamGuard, ScoringParams};
use crate::reference::ReferenceScores;
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
/// exchangeable; attainable values are multiples of `2/(N + 1)`. Fitting
/// ([`Fit::fit`]) keeps the reference log-likelihoods ([`FittedTPerm`]).
#[derive(Debug, Clone)]
pub struct TPerm<M> {
    model: M,
    scorer: RunningScorer,
}

/// A fitted [`TPerm`]: the detector and its reference log-likelihoods.
#[derive(Debug, Clone)]
pub struct FittedTPerm<M> {
    detector: TPerm<M>,
    /// Reference log-likelihoods (nats).
    reference: ReferenceScores,
}

impl<M: LikelihoodModel> TPerm<M> {
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
}

impl<M> FittedTPerm<M> {
    /// The unfitted detector.
    pub fn detector(&self) -> &TPerm<M> {
        &self.detector
    }

    /// The reference log-likelihoods in nats, ascending.
    pub fn reference_log_likelihoods(&self) -> &[f64] {
        self.reference.values()
    }
}

impl<M: LikelihoodModel + Clone> Fit for TPerm<M> {
    type Fitted = FittedTPerm<M>;
    type State = ReferenceState;

    fn fit(&self, reference: &ImageSet) -> Result<FittedTPerm<M>> {
        let values = self.scorer.log_likelihoods(&self.model, reference)?;
        Ok(FittedTPerm {
            detector: self.clone(),
            reference: reference_values(&values, "T_perm", reference)?,
        })
    }

    fn restore(&self, state: ReferenceState) -> Result<FittedTPerm<M>> {
        Ok(FittedTPerm {
            detector: self.clone(),
            reference: state.into_values(),
        })
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.scorer.set_progress(progress);
    }
}

impl<M: LikelihoodModel> Detector for FittedTPerm<M> {
    fn name(&self) -> &str {
        "T_perm"
    }

    fn score(&self, test: &ImageSet) -> Result<Scores> {
        let reference = &self.reference;
        let n = reference.len() as f64;
        let values = self
            .detector
            .scorer
            .log_likelihoods(&self.detector.model, test)?;
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
            pool: None,
        })
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.detector.scorer.set_progress(progress);
    }

    fn threshold_for_fpr(&self, target_fpr: f64) -> Result<f64> {
        let reference = &self.reference;
        reference.p_value_threshold(target_fpr, 2.0 / (reference.len() + 1) as f64)
    }

    fn state(&self) -> Box<dyn erased_serde::Serialize + '_> {
        Box::new(ReferenceState::of(&self.reference))
    }
}
