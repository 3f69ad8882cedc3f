//! The WAIC baseline of Choi et al. (paper eq. 1) over an ensemble of models.

use burn::tensor::Device;

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;

use crate::detector::Statistic;
use crate::params::{ParamGuard, ScoringParams};
use crate::scoring::RunningScorer;
use crate::{DetectError, ProgressHook, Result};

/// Negative WAIC over an ensemble of K independently trained models (eq. 1):
///
/// `score(x) = −(E_θ[ln p_θ(x)] − Var_θ[ln p_θ(x)])`,
///
/// with `E_θ` the mean over the K models and `Var_θ` their **population** variance
/// (divided by K, not K − 1), log-likelihoods in nats with running statistics. With K = 1
/// the variance is 0 and the score equals [`crate::LogLikelihood`]'s exactly.
///
/// A [`Statistic`]: fitting ([`Fit::fit`](crate::Fit::fit)) only keeps the reference
/// scores for [`threshold_for_fpr`](crate::Detector::threshold_for_fpr).
#[derive(Debug, Clone)]
pub struct Waic<M> {
    models: Vec<M>,
    scorer: RunningScorer,
}

impl<M: LikelihoodModel> Waic<M> {
    /// A detector over the ensemble `models` (K ≥ 1, all of one image shape), which live
    /// on `device`, with default [`ScoringParams`].
    ///
    /// # Errors
    /// [`DetectError::EmptySet`] for an empty ensemble; [`DetectError::InvalidParameter`]
    /// if the models expect different image shapes.
    pub fn new(models: Vec<M>, device: &Device) -> Result<Self> {
        Self::with_params(models, device, ScoringParams::default())
    }

    /// A detector with explicit scoring parameters.
    ///
    /// # Errors
    /// As [`new`](Self::new), and [`DetectError::InvalidParameter`] for invalid parameters.
    pub fn with_params(models: Vec<M>, device: &Device, params: ScoringParams) -> Result<Self> {
        let first = models.first().ok_or_else(|| {
            DetectError::EmptySet(
                "WAIC got an ensemble of 0 models: pass at least one (several independently trained models for a useful variance term)".into(),
            )
        })?;
        let shape = first.image_shape();
        if let Some((k, m)) = models
            .iter()
            .enumerate()
            .find(|(_, m)| m.image_shape() != shape)
        {
            return Err(DetectError::InvalidParameter(format!(
                "WAIC ensemble member {k} expects images {:?} but member 0 expects {shape:?}: every member must model the same data",
                m.image_shape()
            )));
        }
        Ok(Self {
            models,
            scorer: RunningScorer::new(device, params.check()?),
        })
    }

    /// The ensemble.
    pub fn models(&self) -> &[M] {
        &self.models
    }
}

impl<M: LikelihoodModel + Clone> Statistic for Waic<M> {
    fn name(&self) -> &str {
        "WAIC"
    }

    /// `−(E_θ[ln p] − Var_θ[ln p])` in nats.
    fn statistic(&self, set: &ImageSet) -> Result<Vec<f64>> {
        let per_model = self
            .models
            .iter()
            .map(|m| self.scorer.log_likelihoods(m, set))
            .collect::<Result<Vec<_>>>()?;
        let k = per_model.len() as f64;
        Ok((0..set.len())
            .map(|i| {
                let mean = per_model.iter().map(|l| l[i]).sum::<f64>() / k;
                let var = per_model.iter().map(|l| (l[i] - mean).powi(2)).sum::<f64>() / k;
                -(mean - var) // eq. 1
            })
            .collect())
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.scorer.set_progress(progress);
    }
}
