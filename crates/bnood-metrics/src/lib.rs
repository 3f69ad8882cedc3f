//! Out-of-distribution (OoD) detection metrics: AUROC, average precision,
//! AUPR-in, AUPR-out, FPR at a target TPR, and the full ROC and
//! precision-recall curves, all computed from one `O(n log n)` sort and
//! matching scikit-learn (`roc_auc_score`, `average_precision_score`,
//! `roc_curve(..., drop_intermediate=False)`, `precision_recall_curve`).
//!
//! # Convention (used by every function in this crate)
//!
//! **OoD is the positive class, and a higher score means more likely OoD.**
//! Every function takes two slices: `in_scores` (in-distribution samples,
//! the negatives) and `ood_scores` (OoD samples, the positives). If your
//! detector outputs a likelihood, where *higher* means more in-distribution,
//! negate it first.
//!
//! Both sets must be non-empty and must not contain NaN; `±infinity` is
//! allowed and orders like any other value (it behaves exactly like a finite
//! score larger/smaller than all others). Tied scores are handled as in
//! scikit-learn: all samples sharing a score form one threshold, so a tie
//! between an in-distribution and an OoD sample counts as half a correct
//! ordering in the AUROC.
//!
//! # Example
//!
//! ```
//! use bnood_metrics::{auroc, evaluate, fpr_at_95_tpr};
//!
//! let in_scores = [0.1, 0.4];
//! let ood_scores = [0.35, 0.8];
//! assert_eq!(auroc(&in_scores, &ood_scores)?, 0.75);
//! assert_eq!(fpr_at_95_tpr(&in_scores, &ood_scores)?, 0.5);
//!
//! let m = evaluate(&in_scores, &ood_scores)?;
//! assert!((m.average_precision - 5.0 / 6.0).abs() < 1e-12);
//! assert_eq!(m.aupr_out, m.average_precision);
//! # Ok::<(), bnood_metrics::MetricsError>(())
//! ```

#![warn(missing_docs)]

use std::cmp::Ordering;
use std::fmt;

/// Which of the two input sets a score came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScoreSet {
    /// The in-distribution scores (`in_scores`, the negative class).
    InDistribution,
    /// The out-of-distribution scores (`ood_scores`, the positive class).
    Ood,
}

impl fmt::Display for ScoreSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScoreSet::InDistribution => f.write_str("in-distribution"),
            ScoreSet::Ood => f.write_str("OoD"),
        }
    }
}

/// Why a metric could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// `in_scores` was empty, so there is no negative class.
    #[error(
        "in-distribution scores are empty: pass at least one score for each class \
         (in-distribution and OoD)"
    )]
    EmptyInDistribution,
    /// `ood_scores` was empty, so there is no positive class.
    #[error(
        "OoD scores are empty: pass at least one score for each class \
         (in-distribution and OoD)"
    )]
    EmptyOod,
    /// A score was NaN, which has no place in a ranking.
    #[error(
        "{set} score at index {index} is NaN: remove or replace NaN scores before \
         computing metrics (±infinity is allowed)"
    )]
    NanScore {
        /// The set that holds the NaN.
        set: ScoreSet,
        /// Index of the first NaN within that set.
        index: usize,
    },
    /// The TPR target given to [`fpr_at_tpr`] was not in `(0, 1]`.
    #[error("TPR target {target} is outside (0, 1]: pass a true-positive rate such as 0.95")]
    InvalidTprTarget {
        /// The rejected target.
        target: f64,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, MetricsError>;

/// The ROC curve, exactly as scikit-learn's
/// `roc_curve(y, s, drop_intermediate=False)`.
///
/// Points are ordered by decreasing threshold. The first point has threshold
/// `+inf` and `fpr = tpr = 0`; each following point corresponds to one
/// distinct score `t` and counts samples with score `>= t` as OoD. The last
/// point is `fpr = tpr = 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct RocCurve {
    /// False-positive rate (fraction of in-distribution scores `>=` threshold).
    pub fpr: Vec<f64>,
    /// True-positive rate (fraction of OoD scores `>=` threshold).
    pub tpr: Vec<f64>,
    /// Thresholds, decreasing; `thresholds[0]` is `+inf`.
    pub thresholds: Vec<f64>,
}

/// The precision-recall curve (OoD positive), exactly as scikit-learn's
/// `precision_recall_curve(y, s)` (scikit-learn >= 1.3, no truncation).
///
/// `thresholds` holds the distinct scores in *increasing* order;
/// `precision[i]` and `recall[i]` are measured at `thresholds[i]` (samples
/// with score `>= thresholds[i]` predicted OoD). `precision` and `recall` have
/// one extra final element, `precision = 1`, `recall = 0`, which has no
/// threshold. Recall is therefore non-increasing along the vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct PrCurve {
    /// Precision at each threshold, followed by a final `1.0`.
    pub precision: Vec<f64>,
    /// Recall at each threshold, followed by a final `0.0`.
    pub recall: Vec<f64>,
    /// Distinct scores, increasing.
    pub thresholds: Vec<f64>,
}

/// All scalar metrics of [`evaluate`], computed from one sort.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OodMetrics {
    /// Area under the ROC curve, see [`auroc`].
    pub auroc: f64,
    /// Average precision with OoD positive, see [`average_precision`].
    pub average_precision: f64,
    /// Average precision with in-distribution positive, see [`aupr_in`].
    pub aupr_in: f64,
    /// Average precision with OoD positive, see [`aupr_out`]; equals
    /// `average_precision`.
    pub aupr_out: f64,
    /// FPR at the first threshold reaching 95% TPR, see [`fpr_at_95_tpr`].
    pub fpr_at_95_tpr: f64,
}

/// Cumulative counts at each distinct threshold, thresholds decreasing.
///
/// `tps[k]` / `fps[k]` count OoD / in-distribution scores `>= thresholds[k]`.
struct Counts {
    thresholds: Vec<f64>,
    tps: Vec<u64>,
    fps: Vec<u64>,
    n_pos: u64,
    n_neg: u64,
}

fn validate(in_scores: &[f64], ood_scores: &[f64]) -> Result<()> {
    if in_scores.is_empty() {
        return Err(MetricsError::EmptyInDistribution);
    }
    if ood_scores.is_empty() {
        return Err(MetricsError::EmptyOod);
    }
    for (set, scores) in [
        (ScoreSet::InDistribution, in_scores),
        (ScoreSet::Ood, ood_scores),
    ] {
        if let Some(index) = scores.iter().position(|s| s.is_nan()) {
            return Err(MetricsError::NanScore { set, index });
        }
    }
    Ok(())
}

/// The one core routine: validate, sort `(score, is_ood)` pairs by decreasing
/// score, and accumulate TP/FP counts at each distinct score (scikit-learn's
/// `_binary_clf_curve`). `0.0` and `-0.0` compare equal and form one tie.
fn counts(in_scores: &[f64], ood_scores: &[f64]) -> Result<Counts> {
    validate(in_scores, ood_scores)?;
    let mut pairs: Vec<(f64, bool)> = Vec::with_capacity(in_scores.len() + ood_scores.len());
    pairs.extend(in_scores.iter().map(|&s| (s, false)));
    pairs.extend(ood_scores.iter().map(|&s| (s, true)));
    // No NaN after validation, so partial_cmp is total here.
    pairs.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal));

    let mut thresholds = Vec::new();
    let mut tps = Vec::new();
    let mut fps = Vec::new();
    let (mut tp, mut fp) = (0_u64, 0_u64);
    for (i, &(score, is_ood)) in pairs.iter().enumerate() {
        if is_ood {
            tp += 1;
        } else {
            fp += 1;
        }
        // Close a threshold at the end of each run of equal scores.
        let last_of_run = pairs.get(i + 1).is_none_or(|next| next.0 != score);
        if last_of_run {
            thresholds.push(score);
            tps.push(tp);
            fps.push(fp);
        }
    }
    Ok(Counts {
        thresholds,
        tps,
        fps,
        n_pos: tp,
        n_neg: fp,
    })
}

/// Compensated (Neumaier) summation of `f64` terms.
#[derive(Default)]
struct Sum {
    sum: f64,
    comp: f64,
}

impl Sum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(&self) -> f64 {
        self.sum + self.comp
    }
}

impl Counts {
    /// Trapezoid area under the ROC curve, in exact integer arithmetic:
    /// `sum_k (fp_k - fp_{k-1}) * (tp_k + tp_{k-1}) / (2 * P * N)`.
    fn auroc(&self) -> f64 {
        let (mut prev_tp, mut prev_fp) = (0_u128, 0_u128);
        let mut twice_area = 0_u128;
        for (&tp, &fp) in self.tps.iter().zip(&self.fps) {
            let (tp, fp) = (u128::from(tp), u128::from(fp));
            twice_area += (fp - prev_fp) * (tp + prev_tp);
            prev_tp = tp;
            prev_fp = fp;
        }
        let denom = 2 * u128::from(self.n_pos) * u128::from(self.n_neg);
        twice_area as f64 / denom as f64
    }

    /// `sum_n (R_n - R_{n-1}) P_n` over thresholds in decreasing order.
    fn average_precision(&self) -> f64 {
        let mut acc = Sum::default();
        let mut prev_tp = 0_u64;
        for (&tp, &fp) in self.tps.iter().zip(&self.fps) {
            if tp > prev_tp {
                let recall_step = (tp - prev_tp) as f64 / self.n_pos as f64;
                acc.add(recall_step * (tp as f64 / (tp + fp) as f64));
            }
            prev_tp = tp;
        }
        acc.value()
    }

    /// Average precision with in-distribution as the positive class and
    /// scores negated. Negation reverses the threshold order, so walk the
    /// same counts backwards: at the negated threshold `-t_j` the predicted
    /// positives are the samples with score `<= t_j`, i.e. everything not
    /// counted at the previous (larger) threshold `t_{j-1}`.
    fn aupr_in(&self) -> f64 {
        let mut acc = Sum::default();
        let mut prev_tp_in = 0_u64;
        for j in (0..self.thresholds.len()).rev() {
            let (above_tp, above_fp) = if j == 0 {
                (0, 0)
            } else {
                (self.tps[j - 1], self.fps[j - 1])
            };
            let tp_in = self.n_neg - above_fp; // in-distribution with score <= t_j
            let fp_in = self.n_pos - above_tp; // OoD with score <= t_j
            if tp_in > prev_tp_in {
                let recall_step = (tp_in - prev_tp_in) as f64 / self.n_neg as f64;
                acc.add(recall_step * (tp_in as f64 / (tp_in + fp_in) as f64));
            }
            prev_tp_in = tp_in;
        }
        acc.value()
    }

    /// FPR at the first ROC point (decreasing thresholds) with TPR >= target.
    fn fpr_at_tpr(&self, tpr_target: f64) -> f64 {
        let n_pos = self.n_pos as f64;
        // TPR is non-decreasing; the last point has TPR = 1 >= target.
        let k = self
            .tps
            .partition_point(|&tp| (tp as f64 / n_pos) < tpr_target);
        let fp = self.fps.get(k).copied().unwrap_or(self.n_neg);
        fp as f64 / self.n_neg as f64
    }

    fn roc_curve(&self) -> RocCurve {
        let (n_pos, n_neg) = (self.n_pos as f64, self.n_neg as f64);
        let mut fpr = Vec::with_capacity(self.thresholds.len() + 1);
        let mut tpr = Vec::with_capacity(self.thresholds.len() + 1);
        let mut thresholds = Vec::with_capacity(self.thresholds.len() + 1);
        fpr.push(0.0);
        tpr.push(0.0);
        thresholds.push(f64::INFINITY);
        fpr.extend(self.fps.iter().map(|&fp| fp as f64 / n_neg));
        tpr.extend(self.tps.iter().map(|&tp| tp as f64 / n_pos));
        thresholds.extend_from_slice(&self.thresholds);
        RocCurve {
            fpr,
            tpr,
            thresholds,
        }
    }

    fn precision_recall_curve(&self) -> PrCurve {
        let n_pos = self.n_pos as f64;
        let precision = self
            .tps
            .iter()
            .zip(&self.fps)
            .rev()
            .map(|(&tp, &fp)| tp as f64 / (tp + fp) as f64)
            .chain(std::iter::once(1.0))
            .collect();
        let recall = self
            .tps
            .iter()
            .rev()
            .map(|&tp| tp as f64 / n_pos)
            .chain(std::iter::once(0.0))
            .collect();
        let thresholds = self.thresholds.iter().rev().copied().collect();
        PrCurve {
            precision,
            recall,
            thresholds,
        }
    }
}

fn validate_tpr_target(tpr_target: f64) -> Result<()> {
    if tpr_target > 0.0 && tpr_target <= 1.0 {
        Ok(())
    } else {
        Err(MetricsError::InvalidTprTarget { target: tpr_target })
    }
}

/// Area under the ROC curve (OoD positive, higher score = more OoD).
///
/// Equals scikit-learn's `roc_auc_score`: the trapezoid rule over distinct
/// thresholds, so it is the probability that a random OoD score exceeds a
/// random in-distribution score, with ties counted as 1/2. `1.0` is perfect
/// detection, `0.5` chance, `0.0` perfectly inverted scores.
///
/// # Errors
/// [`MetricsError`] if either set is empty or contains NaN.
pub fn auroc(in_scores: &[f64], ood_scores: &[f64]) -> Result<f64> {
    Ok(counts(in_scores, ood_scores)?.auroc())
}

/// The Mann–Whitney U (Wilcoxon rank-sum) test that OoD scores tend to exceed
/// in-distribution scores (one-sided), or differ from them (two-sided): the rank test behind a verdict on a whole pool of inputs
/// ("these scores are larger than the reference's"), where AUROC measures the same ordering
/// as an effect size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankTest {
    /// `U = #{(i, j) : ood_j > in_i} + ½ #{(i, j) : ood_j = in_i}`.
    pub u: f64,
    /// `U / (n_in · n_ood)`, the [`auroc`].
    pub auroc: f64,
    /// `(U − n_in·n_ood/2 − ½) / σ_U` with the tie-corrected
    /// `σ_U² = n_in·n_ood/12 · (N + 1 − Σ(t³ − t) / (N(N − 1)))`, `N = n_in + n_ood`, `t` the
    /// size of each group of tied scores; `0` when every score ties.
    pub z: f64,
    /// `P(Z ≥ z)` for a standard normal `Z`: the large-sample p-value of "OoD scores are
    /// not larger" (scipy's `mannwhitneyu(ood, in, alternative="greater",
    /// method="asymptotic")`); `1` when every score ties.
    pub p_value: f64,
    /// The two-sided p-value of "the two sets are exchangeable" (scipy's
    /// `alternative="two-sided"`): `P(|Z| ≥ (|U − n_in·n_ood/2| − ½) / σ_U)`, at most 1. For
    /// a shift in either direction.
    pub p_value_two_sided: f64,
}

/// The Mann–Whitney U test of `ood_scores` against `in_scores` (see
/// [`RankTest`]). Exact in level only asymptotically: use it for sets of about 20 or more.
///
/// # Errors
/// [`MetricsError`] if either set is empty or contains NaN.
pub fn mann_whitney(in_scores: &[f64], ood_scores: &[f64]) -> Result<RankTest> {
    let c = counts(in_scores, ood_scores)?;
    let (n_in, n_ood) = (c.n_neg as f64, c.n_pos as f64);
    let auroc = c.auroc();
    let u = auroc * n_in * n_ood;
    let n = n_in + n_ood;
    let (mut prev_tp, mut prev_fp) = (0_u64, 0_u64);
    let mut ties = 0.0;
    for (&tp, &fp) in c.tps.iter().zip(&c.fps) {
        let t = ((tp - prev_tp) + (fp - prev_fp)) as f64;
        ties += t * t * t - t;
        (prev_tp, prev_fp) = (tp, fp);
    }
    let tie_term = if n > 1.0 { ties / (n * (n - 1.0)) } else { 0.0 };
    let variance = n_in * n_ood / 12.0 * ((n + 1.0) - tie_term);
    if variance <= 0.0 {
        return Ok(RankTest {
            u,
            auroc,
            z: 0.0,
            p_value: 1.0,
            p_value_two_sided: 1.0,
        });
    }
    let sd = variance.sqrt();
    let z = (u - n_in * n_ood / 2.0 - 0.5) / sd;
    let z_abs = ((u - n_in * n_ood / 2.0).abs() - 0.5) / sd;
    Ok(RankTest {
        u,
        auroc,
        z,
        p_value: 0.5 * libm::erfc(z / std::f64::consts::SQRT_2),
        p_value_two_sided: libm::erfc(z_abs / std::f64::consts::SQRT_2).min(1.0),
    })
}

/// Average precision with OoD as the positive class.
///
/// Equals scikit-learn's `average_precision_score`:
/// `AP = sum_n (R_n - R_{n-1}) P_n` over distinct thresholds in decreasing
/// order, without interpolation. Chance level is the OoD fraction
/// `|ood| / (|in| + |ood|)`.
///
/// # Errors
/// [`MetricsError`] if either set is empty or contains NaN.
pub fn average_precision(in_scores: &[f64], ood_scores: &[f64]) -> Result<f64> {
    Ok(counts(in_scores, ood_scores)?.average_precision())
}

/// AUPR-out: area under the precision-recall curve with **OoD as the
/// positive** class and higher score = more OoD.
///
/// Identical to [`average_precision`]; the name follows the OoD literature
/// (Hendrycks & Gimpel, 2017).
///
/// # Errors
/// [`MetricsError`] if either set is empty or contains NaN.
pub fn aupr_out(in_scores: &[f64], ood_scores: &[f64]) -> Result<f64> {
    average_precision(in_scores, ood_scores)
}

/// AUPR-in: average precision with **in-distribution as the positive** class
/// and the scores negated (so a lower OoD score means more in-distribution).
///
/// Equals scikit-learn's `average_precision_score(1 - y, -s)` where `y = 1`
/// marks OoD. Chance level is `|in| / (|in| + |ood|)`.
///
/// # Errors
/// [`MetricsError`] if either set is empty or contains NaN.
pub fn aupr_in(in_scores: &[f64], ood_scores: &[f64]) -> Result<f64> {
    Ok(counts(in_scores, ood_scores)?.aupr_in())
}

/// False-positive rate at the first ROC point, scanning thresholds in
/// decreasing order, whose true-positive rate is `>= tpr_target`.
///
/// Equals numpy's `fpr[np.searchsorted(tpr, tpr_target, side='left')]` on
/// scikit-learn's `roc_curve(y, s, drop_intermediate=False)`. Lower is
/// better. No interpolation between ROC points is done.
///
/// # Errors
/// [`MetricsError::InvalidTprTarget`] unless `0 < tpr_target <= 1`; other
/// [`MetricsError`] variants if either set is empty or contains NaN.
pub fn fpr_at_tpr(in_scores: &[f64], ood_scores: &[f64], tpr_target: f64) -> Result<f64> {
    validate_tpr_target(tpr_target)?;
    Ok(counts(in_scores, ood_scores)?.fpr_at_tpr(tpr_target))
}

/// FPR at 95% TPR: [`fpr_at_tpr`] with `tpr_target = 0.95`.
///
/// # Errors
/// [`MetricsError`] if either set is empty or contains NaN.
pub fn fpr_at_95_tpr(in_scores: &[f64], ood_scores: &[f64]) -> Result<f64> {
    fpr_at_tpr(in_scores, ood_scores, 0.95)
}

/// The full ROC curve; see [`RocCurve`] for its layout.
///
/// # Errors
/// [`MetricsError`] if either set is empty or contains NaN.
pub fn roc_curve(in_scores: &[f64], ood_scores: &[f64]) -> Result<RocCurve> {
    Ok(counts(in_scores, ood_scores)?.roc_curve())
}

/// The full precision-recall curve with OoD positive; see [`PrCurve`] for
/// its layout.
///
/// # Errors
/// [`MetricsError`] if either set is empty or contains NaN.
pub fn precision_recall_curve(in_scores: &[f64], ood_scores: &[f64]) -> Result<PrCurve> {
    Ok(counts(in_scores, ood_scores)?.precision_recall_curve())
}

/// All scalar metrics from one sort of the scores (`O(n log n)`).
///
/// Gives exactly the same values as calling [`auroc`], [`average_precision`],
/// [`aupr_in`], [`aupr_out`] and [`fpr_at_95_tpr`] one by one.
///
/// # Errors
/// [`MetricsError`] if either set is empty or contains NaN.
pub fn evaluate(in_scores: &[f64], ood_scores: &[f64]) -> Result<OodMetrics> {
    let c = counts(in_scores, ood_scores)?;
    let average_precision = c.average_precision();
    Ok(OodMetrics {
        auroc: c.auroc(),
        average_precision,
        aupr_in: c.aupr_in(),
        aupr_out: average_precision,
        fpr_at_95_tpr: c.fpr_at_tpr(0.95),
    })
}
