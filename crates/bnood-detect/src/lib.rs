//! # bnood-detect
//!
//! Out-of-distribution (OoD) detectors over a trained [`LikelihoodModel`], after Song, Song &
//! Ermon, "Unsupervised Out-of-Distribution Detection with Batch Normalization": the
//! paper's proposed test, the three baselines of its Table 2, and three per-input detectors
//! from the literature. Each has the shape of linfa's `Fit` / `Predict`: its parameters and
//! models [`fit`](Fit::fit) on held-out in-distribution images (the *reference* set) into a
//! fitted [`Detector`] that [`score`](Detector::score)s test images — higher score = more
//! likely OoD, the convention of `bnood-metrics` — and thresholds them at a target
//! false-positive rate. A detector that thresholds a per-image statistic implements only
//! [`Statistic`].
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
//! The [`Registry`] is one table of detectors (id, title, models needed, build) above
//! them: [`DetectorKind`] names the built-in ones (clap and serde included), [`build`]
//! makes one from a kind, models and [`DetectorParams`], and another crate registers its
//! own ([`Registry::register`]). A fitted detector of the registry ([`FittedDetector`]) can
//! be saved with [`save_detector`] and loaded with [`load_detector`] (or
//! [`load_detector_from`] with a registry of your own), which checks that the model files
//! are the ones it was fitted with.
//!
//! ## Layers
//! `error`, `params`, `progress`, `reference`, `scores`, `scoring` and `detector` (the
//! traits) know no detector; each detector module imports only them; `registry` imports
//! the detectors; `persist` (detector files) imports the registry. Nothing imports upward.
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
//! use bnood_detect::{BnTest, BnTestParams, Detector, Fit};
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
//! let test_params = BnTestParams::new().batch_size(16);
//! let detector = BnTest::new(model, &device, test_params)?.fit(&reference)?; // half of it is mixed into batches, half calibrates Δ
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
//!   detector is built, never later; only a fitted detector scores.
//! - Every random choice ([`BnTest`]'s split of the reference set and its batches) takes a
//!   seed; results do not depend on the number of threads beyond float rounding.
#![warn(missing_docs)]

mod bn_test;
mod detector;
mod dose;
mod error;
mod input_complexity;
mod likelihood_ratio;
mod log_likelihood;
mod params;
mod persist;
mod pool_verdict;
mod progress;
mod reference;
mod registry;
mod scores;
mod scoring;
mod t_perm;
mod two_sample;
mod typicality;
mod waic;
mod window;

pub use bn_test::{
    BnCalibration, BnTest, BnTestParams, BnTestScores, BnTestState, BnTestValidParams,
    DEFAULT_CALIBRATION_DRAWS, FittedBnTest, StoredImages,
};
pub use detector::{Detector, Fit, ReferenceState, Statistic, Thresholded};
pub use dose::{Dose, DoseState, FittedDose, Kde, STATISTICS as DOSE_STATISTICS};
pub use error::{DetectError, Result};
pub use input_complexity::{InputComplexity, compressed_bits, input_complexity_score};
pub use likelihood_ratio::LikelihoodRatio;
pub use log_likelihood::LogLikelihood;
pub use params::{Dequantization, ParamGuard, ScoringParams, ValidScoringParams};
pub use persist::{LoadedDetector, ModelFile, load_detector, load_detector_from, save_detector};
pub use pool_verdict::{DEFAULT_POOL_NULL_BATCHES, POOL_RESAMPLES};
pub use progress::{Progress, ProgressHook};
pub use reference::ReferenceScores;
pub use registry::{
    BnMode, DetectorArgs, DetectorEntry, DetectorKind, DetectorParams, FittedDetector, Registry,
    Unfitted, build,
};
pub use scores::{ImageOrigin, PoolVerdict, Scores, evaluate};
pub use t_perm::{FittedTPerm, TPerm};
pub use two_sample::{GaussianKernel, ks_p_value, ks_statistic, mmd2_unbiased};
pub use typicality::{FittedTypicality, Typicality};
pub use waic::Waic;
pub use window::{
    MAX_NULL_WINDOWS, WindowOutcome, WindowStatistic, WindowTest, WindowTestParams,
    WindowTestValidParams,
};

#[doc(no_inline)]
pub use bnood_models::LikelihoodModel;
