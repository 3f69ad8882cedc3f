//! The shape of every detector, after linfa's `Fit` / `Predict`: a detector's parameters
//! and models ([`Fit`]) are *fitted* on held-out in-distribution images into a value that
//! scores, thresholds and hands out its own state ([`Detector`]), so an unfitted detector
//! cannot score. Detectors that threshold a per-image statistic at a quantile of its
//! reference values implement only [`Statistic`] and get their [`Fit`] from it
//! ([`Thresholded`]).
//!
//! This module knows no detector: every detector (built in or defined in another crate)
//! imports it, and the registry above the detectors imports them.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use bnood_data::ImageSet;

use crate::reference::ReferenceScores;
use crate::{DetectError, ProgressHook, Result, Scores};

/// A fitted OoD detector: scores test images (higher = more likely OoD) and turns a target
/// false-positive rate into a threshold, both from what [`Fit::fit`] computed on the
/// reference set.
pub trait Detector {
    /// A short human-readable name for reports (e.g. `"T_perm"`).
    fn name(&self) -> &str;

    /// Scores every image of `test`; see each detector for what the score means.
    ///
    /// # Errors
    /// Shape mismatches; model errors (e.g. a NaN log-likelihood).
    fn score(&self, test: &ImageSet) -> Result<Scores>;

    /// A threshold that flags about `target_fpr` of in-distribution images, for
    /// [`Scores::decisions`], from the reference set's scores (like alibi-detect's
    /// `infer_threshold`):
    /// - detectors without p-values return the `(1 − target_fpr)` quantile of the
    ///   reference scores (linear interpolation, NumPy's default), to be compared with
    ///   scores (`score > threshold` is flagged);
    /// - rank-based detectors (`TPerm`, `BnTest`) return the largest attainable p-value
    ///   `≤ target_fpr`, to be compared with p-values (`p ≤ threshold` is flagged).
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] unless `0 < target_fpr < 1`;
    /// [`DetectError::ReferenceTooSmall`] if no threshold at that rate can be had from this
    /// reference set.
    fn threshold_for_fpr(&self, target_fpr: f64) -> Result<f64>;

    /// Reports the progress of later [`score`](Self::score) calls to `progress`
    /// ([`ProgressHook::none`] to stop). Scores do not depend on it.
    fn set_progress(&mut self, progress: ProgressHook);

    /// Whether an image's score depends on that image and the fitted reference only, so
    /// that scoring a set image by image or all at once gives the same scores. True for
    /// every detector but the BN test's pool mode.
    fn is_per_input(&self) -> bool {
        true
    }

    /// Whether its per-image decisions ([`Scores::decisions`] at
    /// [`threshold_for_fpr`](Self::threshold_for_fpr)) flag about the target share of
    /// in-distribution images. False for the BN test's pool mode with the paper's held-out
    /// calibration, whose flags are correlated within a pool and exceed the target on
    /// average: its decision unit is the pool.
    fn per_image_flags_calibrated(&self) -> bool {
        true
    }

    /// What fitting computed, as the `state` of a detector file: [`Fit::restore`] of the
    /// same parameters and models rebuilds this detector from it (deserialised as
    /// [`Fit::State`]).
    fn state(&self) -> Box<dyn erased_serde::Serialize + '_>;
}

/// A detector's parameters and models, not yet fitted (linfa's `Fit`).
pub trait Fit {
    /// The fitted detector.
    type Fitted: Detector;

    /// What [`Detector::state`] of the fitted detector writes, read back for
    /// [`restore`](Self::restore).
    type State: DeserializeOwned;

    /// Fits on `reference`, held-out in-distribution images (not the images the model was
    /// trained on, so that their scores look like those of new in-distribution data).
    ///
    /// # Errors
    /// Shape mismatches, a reference set that is empty or too small for the parameters,
    /// model errors.
    fn fit(&self, reference: &ImageSet) -> Result<Self::Fitted>;

    /// The fitted detector a saved state gives back, instead of fitting again.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] when the state does not fit these parameters.
    fn restore(&self, state: Self::State) -> Result<Self::Fitted>;

    /// Reports the progress of [`fit`](Self::fit) (and of the fitted detector's scoring) to
    /// `progress`. Scores do not depend on it.
    fn set_progress(&mut self, progress: ProgressHook);
}

/// A per-image statistic, higher = more likely OoD, thresholded at a quantile of its values
/// on the reference set. Implementing it is all a detector of that kind needs: its [`Fit`]
/// keeps the reference values ([`Thresholded`]).
pub trait Statistic: Clone {
    /// A short human-readable name for reports.
    fn name(&self) -> &str;

    /// The statistic of every image of `set`, in its order.
    ///
    /// # Errors
    /// Shape mismatches and model errors.
    fn statistic(&self, set: &ImageSet) -> Result<Vec<f64>>;

    /// Reports the progress of later [`statistic`](Self::statistic) calls.
    fn set_progress(&mut self, progress: ProgressHook);
}

/// A fitted [`Statistic`]: the statistic and its values on the reference set, ascending.
#[derive(Debug, Clone)]
pub struct Thresholded<S> {
    statistic: S,
    reference: ReferenceScores,
}

impl<S: Statistic> Thresholded<S> {
    /// The statistic.
    pub fn statistic(&self) -> &S {
        &self.statistic
    }

    /// The reference set's values of the statistic, ascending.
    pub fn reference_scores(&self) -> &[f64] {
        self.reference.values()
    }
}

/// The state of a detector that keeps sorted reference values: `{"type": "reference",
/// "values": [...]}` in a detector file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReferenceState {
    /// Sorted reference values (scores, or log-likelihoods for `T_perm`), no NaN.
    Reference {
        /// The values.
        values: ReferenceScores,
    },
}

impl ReferenceState {
    pub(crate) fn of(values: &ReferenceScores) -> Self {
        Self::Reference {
            values: values.clone(),
        }
    }

    pub(crate) fn into_values(self) -> ReferenceScores {
        match self {
            Self::Reference { values } => values,
        }
    }
}

impl<S: Statistic> Fit for S {
    type Fitted = Thresholded<S>;
    type State = ReferenceState;

    fn fit(&self, reference: &ImageSet) -> Result<Thresholded<S>> {
        let values = self.statistic(reference)?;
        Ok(Thresholded {
            statistic: self.clone(),
            reference: reference_values(&values, self.name(), reference)?,
        })
    }

    fn restore(&self, state: ReferenceState) -> Result<Thresholded<S>> {
        Ok(Thresholded {
            statistic: self.clone(),
            reference: state.into_values(),
        })
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        Statistic::set_progress(self, progress);
    }
}

impl<S: Statistic> Detector for Thresholded<S> {
    fn name(&self) -> &str {
        self.statistic.name()
    }

    fn score(&self, test: &ImageSet) -> Result<Scores> {
        Ok(Scores {
            scores: self.statistic.statistic(test)?,
            p_values: None,
            pool: None,
        })
    }

    fn threshold_for_fpr(&self, target_fpr: f64) -> Result<f64> {
        self.reference.score_threshold(target_fpr)
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.statistic.set_progress(progress);
    }

    fn state(&self) -> Box<dyn erased_serde::Serialize + '_> {
        Box::new(ReferenceState::of(&self.reference))
    }
}

/// `values`, a detector's values on its reference set `set`, sorted for ranks and
/// quantiles.
///
/// # Errors
/// [`DetectError::EmptySet`] for an empty reference set.
pub(crate) fn reference_values(
    values: &[f64],
    detector: &str,
    set: &ImageSet,
) -> Result<ReferenceScores> {
    if values.is_empty() {
        return Err(DetectError::EmptySet(format!(
            "the {detector} detector got the empty reference set `{}`: fit it on held-out in-distribution images",
            set.name()
        )));
    }
    Ok(ReferenceScores::new(values))
}
