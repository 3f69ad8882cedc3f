//! The one error type of `bnood-detect`.

use bnood_data::DataError;
use bnood_metrics::MetricsError;
use bnood_models::ModelError;

/// Everything that can go wrong while configuring, fitting or applying a detector. Every
/// message says what is wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The likelihood model failed (wrong image shape, batch too small for batch statistics…).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Building tensors from an image set failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A metric over detector scores could not be computed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A parameter is outside its valid range; the message names it and the range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The detector needs reference (held-out in-distribution) data first.
    #[error(
        "the {detector} detector is not fitted: call `fit` with held-out in-distribution images before `{action}`"
    )]
    NotFitted {
        /// The detector's name.
        detector: String,
        /// What was attempted (`score`, `threshold_for_fpr`).
        action: &'static str,
    },
    /// A set that must hold images would be empty.
    #[error("empty set: {0}")]
    EmptySet(String),
    /// The reference set is too small for the chosen parameters.
    #[error("reference set too small: {0}")]
    ReferenceTooSmall(String),
    /// The test pool is smaller than the number of test rows of one mixed batch.
    #[error(
        "the test pool holds {pool} image(s), but r = {ratio} with b = {batch_size} puts {needed} test images in every mixed batch: score at least {needed} images together, or lower r or b"
    )]
    TestPoolTooSmall {
        /// Images in the pool that was passed.
        pool: usize,
        /// Test rows per mixed batch, `round(r·b)`.
        needed: usize,
        /// The ratio `r`.
        ratio: f64,
        /// The batch size `b`.
        batch_size: usize,
    },
    /// The images do not have the shape the model was built for.
    #[error(
        "`{set}` holds images of shape {got:?} but the model expects {expected:?}: use data of the model's shape or the model trained on this data"
    )]
    ShapeMismatch {
        /// Name of the offending set.
        set: String,
        /// `[C, H, W]` the model expects.
        expected: [usize; 3],
        /// `[C, H, W]` of the set.
        got: [usize; 3],
    },
    /// The model returned NaN for an image, which no ranking can place.
    #[error(
        "the model returned a NaN log-likelihood for image {index} of `{set}`: check the model (diverged training?) and the input scale (dequantised pixels in [0, 256))"
    )]
    NanLogLikelihood {
        /// Name of the set.
        set: String,
        /// Index of the image in the set.
        index: usize,
    },
    /// A detector file could not be written or read, or does not match its models.
    #[error("detector file {path}: {reason}")]
    DetectorFile {
        /// The file (the detector file, or a model file it names).
        path: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// Reading a tensor back from the device failed.
    #[error("reading results back from the device failed: {0}")]
    Backend(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, DetectError>;
