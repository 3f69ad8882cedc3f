//! DoSE, density of states estimation (Morningstar et al., "Density of States Estimation for
//! Out-of-Distribution Detection", AISTATS 2021): several statistics of each input under
//! the model, a density of each fitted on in-distribution images only, and an input scored
//! by how atypical its statistics are together.

use burn::tensor::Device;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;

use crate::detector::Fit;
use crate::input_complexity::{compressed_bits, input_complexity_score};
use crate::params::{ParamGuard, ScoringParams};
use crate::reference::ReferenceScores;
use crate::scoring::{RunningScorer, stream};
use crate::{DetectError, Detector, ProgressHook, Result, Scores};

/// Stream tag of the reference split (fit part / calibration part).
const TAG_SPLIT: u64 = 31;

/// The statistics of an input DoSE uses, each computed with the model's running statistics:
/// `−ln p(x)` (nats per image), `L(x)` (bits of a PNG of the image, as in
/// [`InputComplexity`](crate::InputComplexity)) and Serrà et al.'s
/// `S(x) = −log₂ p(x) − L(x)` (bits). `L` carries how complex the image is, `−ln p` how well
/// the model codes it, `S` the difference a generic compressor cannot explain.
pub const STATISTICS: [&str; 3] = [
    "neg_log_likelihood_nats",
    "png_bits",
    "input_complexity_bits",
];

/// A one-dimensional Gaussian kernel density estimate: its points and bandwidth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kde {
    /// The values it was fitted on.
    pub points: Vec<f64>,
    /// The kernel's standard deviation `h`.
    pub bandwidth: f64,
}

impl Kde {
    /// Fits on `points` with Silverman's rule of thumb,
    /// `h = 0.9 · min(σ̂, IQR / 1.34) · n^(−1/5)` (falling back to `σ̂`, then to 1, when the
    /// spread is zero).
    ///
    /// # Errors
    /// [`DetectError::ReferenceTooSmall`] for fewer than 2 points, NaN for a NaN value.
    pub fn fit(points: &[f64]) -> Result<Self> {
        let n = points.len();
        if n < 2 {
            return Err(DetectError::ReferenceTooSmall(format!(
                "a density needs at least 2 values, got {n}: fit DoSE on more reference images"
            )));
        }
        if let Some(i) = points.iter().position(|v| !v.is_finite()) {
            return Err(DetectError::InvalidParameter(format!(
                "DoSE statistic {} of a reference image is not finite: the model gives a non-finite likelihood",
                points[i]
            )));
        }
        let mean = points.iter().sum::<f64>() / n as f64;
        let sd = (points.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        let sorted = ReferenceScores::new(points);
        let iqr = sorted.quantile(0.75) - sorted.quantile(0.25);
        let spread = match (sd > 0.0, iqr > 0.0) {
            (true, true) => sd.min(iqr / 1.34),
            (true, false) => sd,
            _ => 1.0,
        };
        Ok(Self {
            points: points.to_vec(),
            bandwidth: 0.9 * spread * (n as f64).powf(-0.2),
        })
    }

    /// `ln f̂(x)`, the log-density at `x` (log-sum-exp over the points, so far tails stay
    /// finite and ordered).
    pub fn log_density(&self, x: f64) -> f64 {
        let h = self.bandwidth;
        let z: Vec<f64> = self
            .points
            .iter()
            .map(|&p| -0.5 * ((x - p) / h).powi(2))
            .collect();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
        max + sum.ln()
            - (self.points.len() as f64).ln()
            - h.ln()
            - 0.5 * (std::f64::consts::TAU).ln()
    }
}

/// DoSE over one model (Morningstar et al. 2021, "DoSE_KDE"): the [`STATISTICS`] of each
/// input, a [`Kde`] of each fitted on part of the reference set, and the score
/// `−Σ_k ln f̂_k(t_k(x))` (higher = more OoD). Its p-value ranks the score among those of
/// the other part of the reference set (held out from the densities), so flags at a target
/// false-positive rate are calibrated like T_perm's (a conformal p-value). A per-input
/// detector; no OoD image is used to fit or to choose anything.
#[derive(Debug, Clone)]
pub struct Dose<M> {
    model: M,
    scorer: RunningScorer,
    held_out_fraction: f64,
    seed: u64,
}

impl<M: LikelihoodModel> Dose<M> {
    /// DoSE over `model` (living on `device`): `held_out_fraction` of the reference set
    /// calibrates the score, the rest fits the densities; `seed` draws the split.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] for a fraction outside `(0, 1)` or invalid scoring
    /// parameters.
    pub fn new(
        model: M,
        device: &Device,
        scoring: ScoringParams,
        held_out_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        if !(held_out_fraction > 0.0 && held_out_fraction < 1.0) {
            return Err(DetectError::InvalidParameter(format!(
                "held_out_fraction = {held_out_fraction} must lie strictly between 0 and 1: DoSE fits its densities on one part of the reference set and calibrates on the other (0.5 is a good default)"
            )));
        }
        Ok(Self {
            model,
            scorer: RunningScorer::new(device, scoring.check()?),
            held_out_fraction,
            seed,
        })
    }

    /// The [`STATISTICS`] of every image of `set`: one row per statistic, one column per
    /// image.
    ///
    /// # Errors
    /// Model and shape errors.
    pub fn statistics(&self, set: &ImageSet) -> Result<[Vec<f64>; 3]> {
        let log_p = self.scorer.log_likelihoods(&self.model, set)?;
        let bits = compressed_bits(set)?;
        let complexity = log_p
            .iter()
            .zip(&bits)
            .map(|(&l, &b)| input_complexity_score(l, b))
            .collect();
        Ok([log_p.iter().map(|l| -l).collect(), bits, complexity])
    }
}

/// `−Σ_k ln f̂_k(t_k)` of each image under `densities`, from its statistics (`stats[k][i]`).
fn dose_scores(densities: &[Kde], stats: &[Vec<f64>; 3]) -> Vec<f64> {
    (0..stats[0].len())
        .map(|i| {
            -densities
                .iter()
                .zip(stats)
                .map(|(kde, t)| kde.log_density(t[i]))
                .sum::<f64>()
        })
        .collect()
}

/// DoSE fitted: the densities and the calibration part's scores.
#[derive(Debug, Clone)]
pub struct FittedDose<M> {
    dose: Dose<M>,
    densities: Vec<Kde>,
    calibration: ReferenceScores,
}

/// The state of a fitted [`Dose`] in a detector file: `{"type": "dose", "densities":
/// [{"points", "bandwidth"}, ...], "calibration": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DoseState {
    /// The fitted state.
    Dose {
        /// One density per statistic, in [`STATISTICS`] order.
        densities: Vec<Kde>,
        /// Scores of the calibration images.
        calibration: ReferenceScores,
    },
}

impl<M> FittedDose<M> {
    /// The densities, one per statistic of [`STATISTICS`].
    pub fn densities(&self) -> &[Kde] {
        &self.densities
    }

    /// The scores of the reference images held out from the densities, ascending.
    pub fn calibration_scores(&self) -> &[f64] {
        self.calibration.values()
    }
}

impl<M: LikelihoodModel + Clone> Fit for Dose<M> {
    type Fitted = FittedDose<M>;
    type State = DoseState;

    fn fit(&self, reference: &ImageSet) -> Result<FittedDose<M>> {
        let n = reference.len();
        let n_cal = (self.held_out_fraction * n as f64).round() as usize;
        if n_cal < 1 || n - n_cal < 2 {
            return Err(DetectError::ReferenceTooSmall(format!(
                "DoSE splits its {n} reference image(s) into {} for the densities and {n_cal} for calibration: it needs at least 2 and 1; fit on more reference images",
                n - n_cal
            )));
        }
        let stats = self.statistics(reference)?;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut stream(self.seed, &[TAG_SPLIT]));
        let (cal, fit) = order.split_at(n_cal);
        let densities = stats
            .iter()
            .map(|t| Kde::fit(&fit.iter().map(|&i| t[i]).collect::<Vec<_>>()))
            .collect::<Result<Vec<_>>>()?;
        let cal_stats: [Vec<f64>; 3] =
            std::array::from_fn(|k| cal.iter().map(|&i| stats[k][i]).collect());
        let scores = dose_scores(&densities, &cal_stats);
        if scores.iter().any(|s| s.is_nan()) {
            return Err(DetectError::InvalidParameter(
                "a DoSE score of a reference image is NaN: the model gives a non-finite likelihood"
                    .into(),
            ));
        }
        Ok(FittedDose {
            dose: self.clone(),
            densities,
            calibration: ReferenceScores::new(&scores),
        })
    }

    fn restore(&self, state: DoseState) -> Result<FittedDose<M>> {
        let DoseState::Dose {
            densities,
            calibration,
        } = state;
        if densities.len() != STATISTICS.len()
            || densities
                .iter()
                .any(|d| d.points.len() < 2 || !(d.bandwidth > 0.0 && d.bandwidth.is_finite()))
        {
            return Err(DetectError::InvalidParameter(format!(
                "the saved DoSE state holds {} densities (needs {}, each of 2 or more points and a positive bandwidth): fit the detector again",
                densities.len(),
                STATISTICS.len()
            )));
        }
        Ok(FittedDose {
            dose: self.clone(),
            densities,
            calibration,
        })
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.scorer.set_progress(progress);
    }
}

impl<M: LikelihoodModel + Clone> Detector for FittedDose<M> {
    fn name(&self) -> &str {
        "DoSE"
    }

    fn score(&self, test: &ImageSet) -> Result<Scores> {
        let scores = dose_scores(&self.densities, &self.dose.statistics(test)?);
        let n = self.calibration.len() as f64;
        let p_values = scores
            .iter()
            .map(|&s| {
                let (_, ge) = self.calibration.counts_le_ge(s);
                (1 + ge) as f64 / (n + 1.0)
            })
            .collect();
        Ok(Scores::new(scores, Some(p_values)))
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.dose.scorer.set_progress(progress);
    }

    fn threshold_for_fpr(&self, target_fpr: f64) -> Result<f64> {
        let calibration = &self.calibration;
        calibration.p_value_threshold(target_fpr, 1.0 / (calibration.len() + 1) as f64)
    }

    fn state(&self) -> Box<dyn erased_serde::Serialize + '_> {
        Box::new(DoseState::Dose {
            densities: self.densities.clone(),
            calibration: self.calibration.clone(),
        })
    }
}
