//! Reference-score bookkeeping, the one home of what every detector does with the values of
//! its reference set: keep them sorted, turn a target false-positive rate into a threshold,
//! rank a test value among them and give it a p-value.

use serde::{Deserialize, Serialize};

use crate::{DetectError, Result};

/// Values of a detector on its reference (held-out in-distribution) set, ascending, with
/// no NaN: what ranks, p-values and quantile thresholds are computed from. Read from a
/// file, it refuses NaN and empty lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<f64>", into = "Vec<f64>")]
pub struct ReferenceScores(Vec<f64>);

impl ReferenceScores {
    /// The values, sorted ascending (callers reject NaN first; [`TryFrom`] checks it for
    /// values read from a file).
    pub(crate) fn new(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Self(v)
    }

    /// The values, ascending.
    pub fn values(&self) -> &[f64] {
        &self.0
    }

    /// Number of reference values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (never, for values read from a file or fitted).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
                "with {n} reference value(s) a threshold at false-positive rate {} cannot be estimated (it needs at least {}, as a rank test would): fit on more reference images or raise the target",
                shown(target_fpr),
                needed_for(target_fpr)
            )));
        }
        Ok(self.quantile(1.0 - target_fpr))
    }

    /// The `q` quantile (`0 ≤ q ≤ 1`) with linear interpolation between order statistics
    /// (NumPy's default `method="linear"`: position `q·(n − 1)`). At least one value.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        let sorted = &self.0;
        let pos = q * (sorted.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    }

    /// The largest p-value `step·k ≤ target_fpr` (k ≥ 1), capped at 1: the threshold of a
    /// rank test whose p-values live on the grid `step·k` (`p ≤ threshold` is flagged).
    pub(crate) fn p_value_threshold(&self, target_fpr: f64, step: f64) -> Result<f64> {
        check_fpr(target_fpr)?;
        let k = (target_fpr / step + 1e-9).floor();
        if k < 1.0 {
            let n = self.len();
            return Err(DetectError::ReferenceTooSmall(format!(
                "with {n} reference values the smallest p-value is {step:.4}, above the target false-positive rate {}: fit on more reference images (about {} or more) or raise the target",
                shown(target_fpr),
                count(step * (n + 1) as f64 / target_fpr - 1.0)
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

/// `x` as typed when of ordinary size (`0.05`), in scientific notation otherwise (`1e-300`,
/// not 300 digits).
pub(crate) fn shown(x: f64) -> String {
    if x == 0.0 || (1e-4..1e6).contains(&x.abs()) {
        x.to_string()
    } else {
        format!("{x:e}")
    }
}

/// `x` rounded up as a count, saturating (`1/1e-300` images is "more than usize::MAX").
fn count(x: f64) -> String {
    if x < usize::MAX as f64 {
        (x.ceil() as usize).to_string()
    } else {
        format!("{x:e}")
    }
}

/// Reference values a threshold at `target_fpr` needs, as text.
fn needed_for(target_fpr: f64) -> String {
    count(1.0 / target_fpr - 1.0 - 1e-9)
}

/// Checks a target false-positive rate: finite and in `(0, 1)`.
pub(crate) fn check_fpr(target_fpr: f64) -> Result<()> {
    if !(target_fpr > 0.0 && target_fpr < 1.0) {
        return Err(DetectError::InvalidParameter(format!(
            "target false-positive rate {} must lie strictly between 0 and 1 (e.g. 0.05)",
            shown(target_fpr)
        )));
    }
    Ok(())
}

/// The fitted state `state`, or [`DetectError::NotFitted`] for `detector` attempting `action`
/// (the window test, which is fitted in place).
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
