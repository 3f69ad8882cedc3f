//! The typicality test of Nalisnick, Matsukawa, Teh & Lakshminarayanan ("Detecting
//! Out-of-Distribution Inputs to Deep Generative Models Using Typicality", 2019).

use burn::tensor::Device;
use rand::RngExt;

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;

use crate::detector::{Fit, ReferenceState, reference_values};
use crate::params::{ParamGuard, ScoringParams};
use crate::reference::{ReferenceScores, check_fpr};
use crate::scoring::{RunningScorer, stream};
use crate::{DetectError, Detector, ProgressHook, Result, Scores};

/// Tests whether inputs lie in the model's *typical set*: with `Ĥ` the entropy estimate —
/// the mean negative log-likelihood `−ln p` (nats, running statistics) of the reference
/// set — a window of M inputs gets
/// `ε̂(x₁..x_M) = |−(1/M) Σ ln p(xₘ) − Ĥ|`, and is flagged when `ε̂` exceeds the
/// `(1 − α)` quantile of the same statistic over windows of reference inputs.
///
/// As a [`Detector`] it is the per-input test (M = 1): `score(x) = |−ln p(x) − Ĥ|`, higher
/// = more OoD, with the threshold from the reference scores. OoD inputs with *higher*
/// likelihood than typical in-distribution inputs (MNIST under a Fashion-MNIST model) are
/// flagged too, which log p alone misses. [`window_statistic`](Self::window_statistic)
/// and [`window_threshold`](Self::window_threshold) give the M > 1 test, whose threshold
/// Nalisnick et al. estimate by bootstrap over reference windows. Fitting ([`Fit::fit`])
/// keeps the reference images' `−ln p` ([`FittedTypicality`]).
#[derive(Debug, Clone)]
pub struct Typicality<M> {
    model: M,
    scorer: RunningScorer,
}

/// A fitted [`Typicality`] test: the detector and the `−ln p` (nats) of its reference
/// images.
#[derive(Debug, Clone)]
pub struct FittedTypicality<M> {
    detector: Typicality<M>,
    /// `−ln p` of the reference images, ascending.
    reference: ReferenceScores,
}

impl<M: LikelihoodModel> Typicality<M> {
    /// A detector over `model`, which lives on `device`.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] for invalid parameters.
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

    /// `−ln p(x)` (nats) of every image of `set`, running statistics.
    ///
    /// # Errors
    /// Shape mismatches and model errors.
    pub fn negative_log_likelihoods(&self, set: &ImageSet) -> Result<Vec<f64>> {
        Ok(self
            .scorer
            .log_likelihoods(&self.model, set)?
            .into_iter()
            .map(|l| -l)
            .collect())
    }
}

impl<M: LikelihoodModel> FittedTypicality<M> {
    /// The unfitted detector.
    pub fn detector(&self) -> &Typicality<M> {
        &self.detector
    }

    /// `Ĥ`, the mean negative log-likelihood (nats) of the reference set.
    pub fn entropy(&self) -> f64 {
        mean(self.reference.values())
    }

    /// `ε̂ = |mean(nll) − Ĥ|` of a window whose negative log-likelihoods (nats) are `nll`.
    ///
    /// # Errors
    /// [`DetectError::EmptySet`] for an empty window.
    pub fn window_statistic(&self, nll: &[f64]) -> Result<f64> {
        let h = self.entropy();
        if nll.is_empty() {
            return Err(DetectError::EmptySet(
                "a typicality window needs at least one input".into(),
            ));
        }
        Ok((mean(nll) - h).abs())
    }

    /// The threshold `ε_α^M` of windows of `window` inputs: the `(1 − target_fpr)` quantile
    /// of `ε̂` over `resamples` windows drawn with replacement from the reference set
    /// (Nalisnick et al.'s bootstrap; seeded).
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] for a target outside
    /// (0, 1), `window = 0`, or fewer than `1/target_fpr − 1` resamples.
    pub fn window_threshold(
        &self,
        window: usize,
        target_fpr: f64,
        resamples: usize,
        seed: u64,
    ) -> Result<f64> {
        check_fpr(target_fpr)?;
        let reference = &self.reference;
        if window == 0 {
            return Err(DetectError::InvalidParameter(
                "window size M = 0: a window holds at least one input".into(),
            ));
        }
        let values = reference.values();
        let h = mean(values);
        let mut rng = stream(seed, &[window as u64]);
        let stats: Vec<f64> = (0..resamples)
            .map(|_| {
                let sum: f64 = (0..window)
                    .map(|_| values[rng.random_range(0..values.len())])
                    .sum();
                (sum / window as f64 - h).abs()
            })
            .collect();
        ReferenceScores::new(&stats).score_threshold(target_fpr)
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

impl<M: LikelihoodModel + Clone> Fit for Typicality<M> {
    type Fitted = FittedTypicality<M>;
    type State = ReferenceState;

    fn fit(&self, reference: &ImageSet) -> Result<FittedTypicality<M>> {
        let nll = self.negative_log_likelihoods(reference)?;
        Ok(FittedTypicality {
            detector: self.clone(),
            reference: reference_values(&nll, "typicality", reference)?,
        })
    }

    fn restore(&self, state: ReferenceState) -> Result<FittedTypicality<M>> {
        Ok(FittedTypicality {
            detector: self.clone(),
            reference: state.into_values(),
        })
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.scorer.set_progress(progress);
    }
}

impl<M: LikelihoodModel> Detector for FittedTypicality<M> {
    fn name(&self) -> &str {
        "typicality"
    }

    fn score(&self, test: &ImageSet) -> Result<Scores> {
        let h = self.entropy();
        Ok(Scores {
            scores: self
                .detector
                .negative_log_likelihoods(test)?
                .into_iter()
                .map(|v| (v - h).abs())
                .collect(),
            p_values: None,
            pool: None,
        })
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.detector.scorer.set_progress(progress);
    }

    fn threshold_for_fpr(&self, target_fpr: f64) -> Result<f64> {
        let h = self.entropy();
        let scores: Vec<f64> = self
            .reference
            .values()
            .iter()
            .map(|v| (v - h).abs())
            .collect();
        ReferenceScores::new(&scores).score_threshold(target_fpr)
    }

    fn state(&self) -> Box<dyn erased_serde::Serialize + '_> {
        Box::new(ReferenceState::of(&self.reference))
    }
}
