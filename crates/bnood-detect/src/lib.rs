//! # bnood-detect
//!
//! Out-of-distribution (OoD) detectors over a trained [`LikelihoodModel`], after Song, Song &
//! Ermon, "Unsupervised Out-of-Distribution Detection with Batch Normalization": the
//! paper's proposed test, the three baselines of its Table 2, and three per-input detectors
//! from the literature. Each is a [`Detector`]:
//! [`fit`](Detector::fit) it on held-out in-distribution images (the *reference* set),
//! then [`score`](Detector::score) test images — higher score = more likely OoD, the
//! convention of `bnood-metrics`.
//!
//! | detector | score | p-value | paper |
//! |---|---|---|---|
//! | [`LogLikelihood`] | `−ln p(x)` (nats, running statistics) | — | Table 2, `log p_θ(x)` |
//! | [`TPerm`] | `\|#{i : p(xᵢ) ≤ p(x')} − N/2\|` over N reference images | two-sided rank | eq. 2 |
//! | [`Waic`] | `−(E_θ[ln p] − Var_θ[ln p])` over an ensemble | — | eq. 1 |
//! | [`BnTest`] | `Δ(x) = \|S_{b,r1}(x) − S_{b,r2}(x)\|` | rank among reference Δ | eqs. 5–8 |
//! | [`InputComplexity`] | `−log₂ p(x) − L(x)` (bits; `L` = PNG code length) | — | Serrà et al. 2020 |
//! | [`LikelihoodRatio`] | `ln p_bg(x) − ln p_θ(x)` (nats; background model) | — | Ren et al. 2019 |
//! | [`Typicality`] | `\|−ln p(x) − Ĥ\|` (nats; `Ĥ` = reference mean) | — | Nalisnick et al. 2019 |
//!
//! [`WindowTest`] is the BN test's natural habitat: it tests whole *windows* of `M` inputs
//! (a stream cut into windows) and gives each window one p-value for "this window contains
//! OoD inputs", from the window's own batch statistics, with a Kolmogorov–Smirnov test on
//! `ln p` ([`ks_statistic`]) and a kernel MMD on pixels ([`mmd2_unbiased`]) as baselines
//! on the same windows.
//!
//! [`DetectorKind`] names each of them once (clap and serde included) and [`build`] makes
//! one from a kind, models and [`DetectorParams`]. A fitted detector can be saved with
//! [`save_detector`] and loaded with [`load_detector`], which checks that the model files
//! are the ones it was fitted with.
//!
//! ## The BN test is a test on *batches*
//! [`BnTest`] scores a test image by its log-likelihood inside *mixed batches* that hold a
//! fraction `r` of test images and `1 − r` of reference images, evaluated with the batch's
//! own BatchNorm statistics (`bnood_norm::mixed_batch`). The test images that share a batch
//! are drawn from the set passed to [`score`](Detector::score) — the **test pool** — so a
//! sample's score depends on which other test samples share its batch, and scoring the
//! same image inside another pool gives another score. The method works when the pool is
//! mostly OoD or mostly in-distribution (a dataset, a stream of recent inputs); *you*
//! choose the pool. The other detectors score each image on its own.
//!
//! ## Quick start
//! ```
//! use bnood_data::ImageSet;
//! use bnood_detect::{BnTest, BnTestParams, Detector};
//! use bnood_models::RealNvpConfig;
//! use burn::tensor::Device;
//!
//! let device = Device::flex();
//! let model = RealNvpConfig {
//!     image_shape: [1, 4, 4],
//!     mid_channels: 4,
//!     num_blocks: 1,
//!     ..RealNvpConfig::paper_fmnist()
//! }
//! .init(&device)?; // in practice: a model trained with bnood_models::train
//!
//! // Held-out in-distribution images, and a pool of test images scored together.
//! let pixels = (0..200 * 16).map(|i| (i * 37 % 251) as u8).collect();
//! let reference = ImageSet::new("held-out", pixels, [200, 1, 4, 4], None)?;
//! let test = reference.subset(40, 7)?.with_name("test pool");
//!
//! let mut detector = BnTest::new(model, &device, BnTestParams::new().batch_size(16))?;
//! detector.fit(&reference)?; // half of it is mixed into batches, half calibrates Δ
//! let scores = detector.score(&test)?; // Δ per image, higher = more OoD
//! let alpha = detector.threshold_for_fpr(0.05)?; // a p-value threshold for 5% FPR
//! let flagged: Vec<bool> = scores.decisions(alpha);
//! assert_eq!(flagged.len(), 40);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Conventions
//! - Images are `u8` [`ImageSet`]s; before scoring they are dequantised to `[0, 256)` by
//!   [`Dequantization::Midpoint`] (`pixel + 0.5`) unless [`ScoringParams`] says otherwise,
//!   so scores are deterministic.
//! - Detectors hold a clone of the [`Device`](burn::tensor::Device) the model lives on; the
//!   same code runs on every burn backend.
//! - Parameters are checked once ([`ParamGuard`]): an invalid value is an error when the
//!   detector is built, never later.
//! - Every random choice ([`BnTest`]'s split of the reference set and its batches) takes a
//!   seed; results do not depend on the number of threads beyond float rounding.
#![warn(missing_docs)]

mod bn_test;
mod error;
mod factory;
mod input_complexity;
mod likelihood_ratio;
mod log_likelihood;
mod params;
mod persist;
mod progress;
mod reference;
mod scoring;
mod t_perm;
mod two_sample;
mod typicality;
mod waic;
mod window;

use bnood_data::ImageSet;

pub use bn_test::{
    BnCalibration, BnTest, BnTestParams, BnTestScores, BnTestValidParams, DEFAULT_CALIBRATION_DRAWS,
};
pub use error::{DetectError, Result};
pub use factory::{BnMode, DetectorArgs, DetectorKind, DetectorParams, build};
pub use input_complexity::{InputComplexity, compressed_bits, input_complexity_score};
pub use likelihood_ratio::LikelihoodRatio;
pub use log_likelihood::LogLikelihood;
pub use params::{Dequantization, ParamGuard, ScoringParams, ValidScoringParams};
pub use persist::{FittedState, LoadedDetector, ModelFile, load_detector, save_detector};
pub use progress::{Progress, ProgressHook};
pub use t_perm::TPerm;
pub use two_sample::{GaussianKernel, ks_p_value, ks_statistic, mmd2_unbiased};
pub use typicality::Typicality;
pub use waic::Waic;
pub use window::{
    WindowOutcome, WindowStatistic, WindowTest, WindowTestParams, WindowTestValidParams,
};

#[doc(no_inline)]
pub use bnood_models::LikelihoodModel;

/// An OoD detector: fitted on held-out in-distribution images, then scoring test images
/// (higher = more likely OoD).
pub trait Detector {
    /// A short human-readable name for reports (e.g. `"T_perm"`).
    fn name(&self) -> &str;

    /// Fits the detector on `reference`, held-out in-distribution images (not the images
    /// the model was trained on, so that their scores look like those of new
    /// in-distribution data). Fitting again replaces the previous fit.
    ///
    /// # Errors
    /// Shape mismatches, a reference set too small for the parameters, model errors.
    fn fit(&mut self, reference: &ImageSet) -> Result<()>;

    /// Scores every image of `test`; see each detector for what the score means.
    ///
    /// # Errors
    /// [`DetectError::NotFitted`] for detectors that need reference data; shape mismatches;
    /// model errors.
    fn score(&self, test: &ImageSet) -> Result<Scores>;

    /// A threshold that flags about `target_fpr` of in-distribution images, for
    /// [`Scores::decisions`]. Computed from the reference scores saved by
    /// [`fit`](Self::fit), like alibi-detect's `infer_threshold`:
    /// - detectors without p-values return the `(1 − target_fpr)` quantile of the
    ///   reference scores (linear interpolation, NumPy's default), to be compared with
    ///   scores (`score > threshold` is flagged);
    /// - rank-based detectors ([`TPerm`], [`BnTest`]) return the largest attainable p-value
    ///   `≤ target_fpr`, to be compared with p-values (`p ≤ threshold` is flagged).
    ///
    /// # Errors
    /// [`DetectError::NotFitted`]; [`DetectError::InvalidParameter`] unless
    /// `0 < target_fpr < 1`; [`DetectError::ReferenceTooSmall`] if no p-value attainable
    /// with this reference set is that small.
    fn threshold_for_fpr(&self, target_fpr: f64) -> Result<f64>;

    /// Reports the progress of later [`fit`](Self::fit) and [`score`](Self::score) calls
    /// to `progress` ([`ProgressHook::none`] to stop). Scores do not depend on it. This is
    /// the one way to attach progress.
    fn set_progress(&mut self, progress: ProgressHook);

    /// Which detector of the catalogue this is.
    fn kind(&self) -> DetectorKind;

    /// Whether an image's score depends on that image and the fitted reference only, so
    /// that scoring a set image by image or all at once gives the same scores. True for
    /// every detector but the BN test's pool mode.
    fn is_per_input(&self) -> bool {
        true
    }

    /// The detector's parameters, such that [`build`] with them rebuilds it.
    fn params(&self) -> DetectorParams;

    /// What [`fit`](Self::fit) computed, to be saved ([`save_detector`]); `None` before
    /// fitting.
    fn fitted_state(&self) -> Option<FittedState>;

    /// Restores a state from [`fitted_state`](Self::fitted_state) of a detector of the same
    /// kind, parameters and model, instead of fitting again.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] when the state belongs to another kind of detector
    /// or does not fit this one.
    fn restore(&mut self, state: FittedState) -> Result<()>;
}

/// What a detector says about each test image, in the order of the scored set.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// One score per image; higher = more likely OoD.
    pub scores: Vec<f64>,
    /// One p-value per image for rank-based detectors (small = unlikely under the
    /// in-distribution reference), `None` otherwise.
    pub p_values: Option<Vec<f64>>,
}

impl Scores {
    /// Number of scored images.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether no image was scored.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The scores (and p-values) of the images in `range` of the scored set.
    ///
    /// # Panics
    /// If `range` reaches past [`len`](Self::len).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Scores {
        Scores {
            scores: self.scores[range.clone()].to_vec(),
            p_values: self.p_values.as_ref().map(|p| p[range].to_vec()),
        }
    }

    /// Which images are flagged as OoD at `threshold`, a value from
    /// [`Detector::threshold_for_fpr`] of the same detector: with p-values, `p ≤ threshold`;
    /// without, `score > threshold`.
    pub fn decisions(&self, threshold: f64) -> Vec<bool> {
        match &self.p_values {
            Some(p) => p.iter().map(|&p| p <= threshold).collect(),
            None => self.scores.iter().map(|&s| s > threshold).collect(),
        }
    }
}

/// Where a scored image came from, so that an output row can be traced back to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOrigin {
    /// Index of the image in the file, folder or catalogue set it was read from (not its
    /// position in a random subset).
    pub index: usize,
    /// Its file name, for images read from a folder of PNG files.
    pub file: Option<String>,
}

impl Scores {
    /// The scores as CSV, one line per image after a header: `index,score,p_value,ood`,
    /// with `ood` the decision at `threshold` ([`decisions`](Self::decisions)) and an
    /// empty p-value for detectors without p-values. `index` is the position in the scored
    /// set; [`to_csv_traced`](Self::to_csv_traced) gives the images' origins instead.
    pub fn to_csv(&self, threshold: f64) -> String {
        self.to_csv_traced(threshold, None)
    }

    /// [`to_csv`](Self::to_csv) with `index` taken from `origins` (one per image, in the
    /// order scored) and, when they carry file names, a `file` column after it.
    pub fn to_csv_traced(&self, threshold: f64, origins: Option<&[ImageOrigin]>) -> String {
        let with_files = origins.is_some_and(|o| o.iter().any(|o| o.file.is_some()));
        let mut s = String::from(if with_files {
            "index,file,score,p_value,ood\n"
        } else {
            "index,score,p_value,ood\n"
        });
        for (i, (score, ood)) in self
            .scores
            .iter()
            .zip(self.decisions(threshold))
            .enumerate()
        {
            let p = self
                .p_values
                .as_ref()
                .map_or(String::new(), |p| p[i].to_string());
            let origin = origins.and_then(|o| o.get(i));
            let index = origin.map_or(i, |o| o.index);
            if with_files {
                let file = origin.and_then(|o| o.file.as_deref()).unwrap_or("");
                s.push_str(&format!("{index},{},{score},{p},{ood}\n", csv_field(file)));
            } else {
                s.push_str(&format!("{index},{score},{p},{ood}\n"));
            }
        }
        s
    }

    /// The scores as a JSON document: the detector's and the test set's names, the
    /// threshold and what it applies to, and a row per image (`index`, `score`, `p_value`,
    /// `ood`).
    pub fn to_json(&self, detector: &str, test_set: &str, threshold: f64) -> serde_json::Value {
        self.to_json_traced(detector, test_set, threshold, None)
    }

    /// [`to_json`](Self::to_json) with each row's `index` (and `file`, when known) taken from
    /// `origins`.
    pub fn to_json_traced(
        &self,
        detector: &str,
        test_set: &str,
        threshold: f64,
        origins: Option<&[ImageOrigin]>,
    ) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .decisions(threshold)
            .into_iter()
            .enumerate()
            .map(|(i, ood)| {
                let p = self.p_values.as_ref().map(|p| p[i]);
                let origin = origins.and_then(|o| o.get(i));
                let index = origin.map_or(i, |o| o.index);
                let mut row = serde_json::json!({"index": index, "score": self.scores[i], "p_value": p, "ood": ood});
                if let Some(file) = origin.and_then(|o| o.file.as_deref()) {
                    row["file"] = serde_json::Value::from(file);
                }
                row
            })
            .collect();
        serde_json::json!({
            "detector": detector,
            "test_set": test_set,
            "threshold": threshold,
            "threshold_applies_to": if self.p_values.is_some() { "p_value (flag if ≤)" } else { "score (flag if >)" },
            "rows": rows,
        })
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// AUROC, average precision, AUPR-in/out and FPR@95%TPR of a detector from the scores of
/// an in-distribution test set and an OoD test set (scored separately: each is its own
/// test pool).
///
/// # Errors
/// [`DetectError::Metrics`] for empty sets or NaN scores.
pub fn evaluate(in_distribution: &Scores, ood: &Scores) -> Result<bnood_metrics::OodMetrics> {
    Ok(bnood_metrics::evaluate(
        &in_distribution.scores,
        &ood.scores,
    )?)
}
