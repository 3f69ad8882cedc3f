//! Reference-score bookkeeping, the one home of what every detector does with the values of
//! its reference set: keep them sorted, turn a target false-positive rate into a threshold,
//! rank a test value among them and give it a p-value.

use serde::{Deserialize, Serialize};

use crate::persist::FittedState;
use crate::{DetectError, Result};

/// Values of the reference (held-out in-distribution) set, ascending, with no NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<f64>", into = "Vec<f64>")]
pub(crate) struct ReferenceScores(Vec<f64>);

impl ReferenceScores {
    /// The values, sorted ascending (callers reject NaN first; [`TryFrom`] checks it for
    /// values read from a file).
    pub(crate) fn new(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Self(v)
    }

    /// The values, ascending.
    pub(crate) fn values(&self) -> &[f64] {
        &self.0
    }

    /// Number of reference values.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// `#{v : v ≤ x}` and `#{v : v ≥ x}`.
    pub(crate) fn counts_le_ge(&self, x: f64) -> (usize, usize) {
        let le = self.0.partition_point(|&v| v <= x);
        let lt = self.0.partition_point(|&v| v < x);
        (le, self.0.len() - lt)
    }

    /// The `(1 − target_fpr)` quantile with linear interpolation between order statistics
    /// (NumPy's default `method="linear"`: position `q·(n − 1)`): a score threshold that
    /// flags about `target_fpr` of in-distribution images (`score > threshold`).
    pub(crate) fn score_threshold(&self, target_fpr: f64) -> Result<f64> {
        check_fpr(target_fpr)?;
        let sorted = &self.0;
        if sorted.is_empty() {
            return Err(DetectError::EmptySet(
                "the detector was fitted on an empty reference set: fit it on held-out in-distribution images".into(),
            ));
        }
        let n = sorted.len();
        if ((n + 1) as f64) * target_fpr < 1.0 - 1e-9 {
            return Err(DetectError::ReferenceTooSmall(format!(
                "with {n} reference value(s) a threshold at false-positive rate {target_fpr} cannot be estimated (it needs at least {}, as a rank test would): fit on more reference images or raise the target",
                (1.0 / target_fpr - 1.0 - 1e-9).ceil() as usize
            )));
        }
        let pos = (1.0 - target_fpr) * (n - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        let frac = pos - lo as f64;
        Ok(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
    }

    /// The largest p-value `step·k ≤ target_fpr` (k ≥ 1), capped at 1: the threshold of a
    /// rank test whose p-values live on the grid `step·k` (`p ≤ threshold` is flagged).
    pub(crate) fn p_value_threshold(&self, target_fpr: f64, step: f64) -> Result<f64> {
        check_fpr(target_fpr)?;
        let k = (target_fpr / step + 1e-9).floor();
        if k < 1.0 {
            let n = self.len();
            return Err(DetectError::ReferenceTooSmall(format!(
                "with {n} reference values the smallest p-value is {step:.4}, above the target false-positive rate {target_fpr}: fit on more reference images (about {} or more) or raise the target",
                (step * (n + 1) as f64 / target_fpr - 1.0).ceil() as usize
            )));
        }
        Ok((k * step).min(1.0))
    }
}

impl TryFrom<Vec<f64>> for ReferenceScores {
    type Error = String;

    /// Accepts finite-or-infinite, non-NaN values (sorting them), as read from a file.
    fn try_from(values: Vec<f64>) -> std::result::Result<Self, String> {
        if values.is_empty() {
            return Err("the reference scores are empty".into());
        }
        if values.iter().any(|v| v.is_nan()) {
            return Err("the reference scores hold a NaN".into());
        }
        Ok(Self::new(&values))
    }
}

impl From<ReferenceScores> for Vec<f64> {
    fn from(r: ReferenceScores) -> Self {
        r.0
    }
}

/// What a detector thresholded on its own scores keeps from [`fit`](crate::Detector::fit):
/// the scores of its reference set (log p, WAIC, input complexity, the likelihood ratio).
/// One home for their fit, threshold, save and restore.
#[derive(Debug, Clone, Default)]
pub(crate) struct FittedScores(Option<ReferenceScores>);

impl FittedScores {
    /// Keeps `scores`, the detector's scores of its reference set.
    pub(crate) fn set(&mut self, scores: &[f64]) {
        self.0 = Some(ReferenceScores::new(scores));
    }

    /// The `(1 − target_fpr)` quantile of the reference scores
    /// ([`ReferenceScores::score_threshold`]).
    pub(crate) fn threshold(&self, detector: &str, target_fpr: f64) -> Result<f64> {
        fitted(self.0.as_ref(), detector, "threshold_for_fpr")?.score_threshold(target_fpr)
    }

    /// The state to save, `None` before fitting.
    pub(crate) fn state(&self) -> Option<FittedState> {
        self.0.clone().map(FittedState::reference)
    }

    /// The fit a saved state of `detector` holds.
    pub(crate) fn restored(detector: &str, state: FittedState) -> Result<Self> {
        Ok(Self(Some(state.into_reference(detector)?)))
    }
}

/// Checks a target false-positive rate: finite and in `(0, 1)`.
pub(crate) fn check_fpr(target_fpr: f64) -> Result<()> {
    if !(target_fpr > 0.0 && target_fpr < 1.0) {
        return Err(DetectError::InvalidParameter(format!(
            "target false-positive rate {target_fpr} must lie strictly between 0 and 1 (e.g. 0.05)"
        )));
    }
    Ok(())
}

/// The fitted state `state`, or [`DetectError::NotFitted`] for `detector` attempting `action`.
pub(crate) fn fitted<'a, T>(
    state: Option<&'a T>,
    detector: &str,
    action: &'static str,
) -> Result<&'a T> {
    state.ok_or_else(|| DetectError::NotFitted {
        detector: detector.to_string(),
        action,
    })
}
