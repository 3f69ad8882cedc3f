//! Input complexity (Serrà et al., "Input complexity and out-of-distribution detection with
//! likelihood-based generative models", ICLR 2020).

use burn::tensor::Device;

use bnood_data::ImageSet;
use bnood_data::user_files::png_size;
use bnood_models::LikelihoodModel;

use crate::detector::Statistic;
use crate::params::{ParamGuard, ScoringParams};
use crate::scoring::RunningScorer;
use crate::{ProgressHook, Result};

/// Bits of a PNG file per byte.
const BITS_PER_BYTE: f64 = 8.0;

/// Scores an image by `S(x) = −log₂ p(x) − L(x)` in **bits per image**: the model's code
/// length of `x` (its negative log-likelihood with running statistics, nats ÷ ln 2) minus
/// `L(x)`, the length in bits of a lossless compression of `x` — the PNG file of the raw
/// pixels at zlib level 9 with adaptive filters ([`png_size`] × 8), as Serrà et al. used.
/// Higher = more OoD.
///
/// Likelihood models give simple images (MNIST digits on a black background) high
/// likelihood because they are simple, not because they are in-distribution; subtracting
/// a generic compressor's code length removes that complexity term, leaving how much
/// *better* than PNG the model compresses `x` (a likelihood ratio against a universal
/// model). A per-input detector: each image is scored on its own.
///
/// A [`Statistic`]: fitting ([`Fit::fit`](crate::Fit::fit)) only keeps the reference
/// scores for [`threshold_for_fpr`](crate::Detector::threshold_for_fpr).
#[derive(Debug, Clone)]
pub struct InputComplexity<M> {
    model: M,
    scorer: RunningScorer,
}

impl<M: LikelihoodModel> InputComplexity<M> {
    /// A detector over `model`, which lives on `device`, with explicit scoring parameters.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`](crate::DetectError::InvalidParameter) for invalid
    /// parameters.
    pub fn with_params(model: M, device: &Device, params: ScoringParams) -> Result<Self> {
        Ok(Self {
            model,
            scorer: RunningScorer::new(device, params.check()?),
        })
    }

    /// A detector with default [`ScoringParams`].
    pub fn new(model: M, device: &Device) -> Self {
        Self {
            model,
            scorer: RunningScorer::new(device, ScoringParams::default().0),
        }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }
}

/// `L(x)` of every image of `set`: bits of its PNG file ([`png_size`] × 8).
///
/// # Errors
/// [`DetectError::Data`](crate::DetectError::Data) for images PNG cannot hold (not 1 or 3
/// channels).
pub fn compressed_bits(set: &ImageSet) -> Result<Vec<f64>> {
    let shape = set.image_shape();
    (0..set.len())
        .map(|i| {
            let image = set.image(i).unwrap_or_default();
            Ok(png_size(image, shape)? as f64 * BITS_PER_BYTE)
        })
        .collect()
}

/// `S(x) = −ln p(x) / ln 2 − L(x)` (bits) from a log-likelihood in nats and a code length
/// in bits.
pub fn input_complexity_score(log_likelihood_nats: f64, compressed_bits: f64) -> f64 {
    -log_likelihood_nats / std::f64::consts::LN_2 - compressed_bits
}

impl<M: LikelihoodModel + Clone> Statistic for InputComplexity<M> {
    fn name(&self) -> &str {
        "input complexity"
    }

    /// `S(x)` in bits per image.
    fn statistic(&self, set: &ImageSet) -> Result<Vec<f64>> {
        let bits = compressed_bits(set)?;
        let log_p = self.scorer.log_likelihoods(&self.model, set)?;
        Ok(log_p
            .iter()
            .zip(&bits)
            .map(|(&l, &b)| input_complexity_score(l, b))
            .collect())
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.scorer.set_progress(progress);
    }
}
