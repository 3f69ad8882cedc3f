//! # bnood-models
//!
//! Likelihood models trained with BatchNorm, whose per-sample log-likelihood can be
//! evaluated under any [`StatsMode`]: running averages (the paper's *evaluation mode*), the
//! statistics of the batch (its *training mode*), or a mixed batch of test and reference
//! samples (see `bnood_norm::mixed_batch`).
//!
//! - [`LikelihoodModel`]: the one trait detectors use — `log_prob` in **nats** on the
//!   0–256 pixel scale for a batch `[N, C, H, W]`, preprocessing log-determinants included,
//!   so [`bits_per_dim`](LikelihoodModel::bits_per_dim) is comparable with the paper's Table 1.
//! - [`RealNvp`] (Dinh et al. 2016, paper Appendix C.1): multi-scale, one downscale,
//!   checkerboard and channel-wise affine couplings with pre-activation BatchNorm residual
//!   s/t networks; presets [`RealNvpConfig::paper_fmnist`], [`RealNvpConfig::cpu_fmnist`].
//! - [`PixelCnn`] (Salimans et al. 2017, paper Appendix C): PixelCNN++ with BatchNorm after
//!   each convolution instead of weight normalisation, a discretized logistic mixture per
//!   pixel; presets [`PixelCnnConfig::paper_fmnist`], [`PixelCnnConfig::cpu_fmnist`].
//! - [`catalogue`]: every kind of the zoo named once — [`ModelKind`], [`ModelConfig`]
//!   (`preset`, `with_seed`, `init`) and [`AnyModel`], which trains, saves, loads and
//!   scores without the caller matching on the kind.
//! - [`train`]: the training loop (Adam, batch 64, seeded, gradient clipping, progress bar,
//!   checkpoints, resume) and [`checkpoint`]: save/load with architecture checks.
//! - [`zoo`]: the trained checkpoints shipped in the repository's `models/` folder, by name
//!   (`realnvp-fmnist`, `vae-fmnist`, …), MD5-verified, with how each was trained.
//!
//! - [`allocator`]: [`keep_freed_memory`](allocator::keep_freed_memory), for a binary's
//!   `main`: glibc keeps freed memory for reuse instead of page-faulting it in anew.
//!
//! Inputs are *dequantised* pixels, continuous values in `[0, 256)`: integer pixels plus
//! uniform noise (`bnood_data::Dequantizer`) or plus 0.5. A density on that scale equals the
//! probability of the integer pixel vector under the matching discrete model, so bits per
//! dimension need no further correction.
#![warn(missing_docs)]

pub mod allocator;
pub mod catalogue;
mod categorical;
pub mod checkpoint;
pub mod curve;
pub mod held_out;
mod init;
pub mod pixelcnn;
pub mod realnvp;
pub mod sample;
pub mod train;
pub mod vae;
pub mod zoo;

use burn::tensor::Tensor;

pub use bnood_norm::StatsMode;
pub use catalogue::{AnyModel, ModelConfig, ModelKind, ModelPreset};
pub use pixelcnn::{PixelCnn, PixelCnnConfig};
pub use realnvp::{RealNvp, RealNvpConfig};
pub use vae::{Vae, VaeConfig};

/// Threads of one CPU computation at most: the cores this process may use
/// (`std::thread::available_parallelism`, which follows `taskset`), read once. Results never
/// depend on it.
pub(crate) fn available_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS
        .get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

/// Errors of `bnood-models`.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A BatchNorm layer refused its input.
    #[error(transparent)]
    Norm(#[from] bnood_norm::NormError),
    /// The input does not have the shape the model was built for.
    #[error(
        "the model expects images of shape [N, {expected:?}] but got {got:?}: resize or pick the model trained on this data"
    )]
    Shape {
        /// `[C, H, W]` the model was built for.
        expected: [usize; 3],
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// A configuration value is outside its valid range.
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    /// A checkpoint could not be written or read, or does not match the architecture.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// Training diverged or was given unusable data.
    #[error("training failed: {0}")]
    Training(String),
    /// Models given as an ensemble do not form one (a file twice, mixed architectures).
    #[error("{0}")]
    Ensemble(String),
    /// A shipped checkpoint (see [`zoo`]) is unknown, missing or damaged.
    #[error("model `{name}`: {reason}")]
    Shipped {
        /// The name or path the user gave.
        name: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// Data loading or preprocessing failed.
    #[error(transparent)]
    Data(#[from] bnood_data::DataError),
}

/// A model of images that assigns each sample a log-likelihood.
pub trait LikelihoodModel {
    /// Shape of one image, `[C, H, W]`.
    fn image_shape(&self) -> [usize; 3];

    /// `ln p(x)` in nats for each sample of `x` `[N, C, H, W]`, `x` dequantised on the
    /// `[0, 256)` scale, with BatchNorm statistics taken from `mode`. In `Batch` and
    /// `Train` mode a sample's value depends on the whole batch.
    ///
    /// # Errors
    /// [`ModelError::Shape`] for a wrong image shape, [`ModelError::Norm`] for a batch too
    /// small for batch statistics.
    fn log_prob(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError>;

    /// The per-sample training objective in nats to *minimise* (for flows `−ln p(x)`,
    /// for a VAE the negative ELBO). Defaults to `−log_prob`.
    ///
    /// # Errors
    /// As [`log_prob`](Self::log_prob).
    fn training_loss(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        Ok(self.log_prob(x, mode)?.neg())
    }

    /// Number of dimensions of one image, `C·H·W`.
    fn dims(&self) -> usize {
        self.image_shape().iter().product()
    }

    /// Bits per dimension of each sample: `−ln p(x) / (C·H·W · ln 2)`.
    ///
    /// # Errors
    /// As [`log_prob`](Self::log_prob).
    fn bits_per_dim(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        let dims = self.dims();
        Ok(bnood_data::transform::bits_per_dim_tensor(
            self.log_prob(x, mode)?,
            dims,
        ))
    }
}

/// A model the loop ([`train`]) can train and [`checkpoint`] can save: a burn
/// [`Module`](burn::module::Module) with a likelihood that
/// knows its own catalogue configuration (stored in checkpoint sidecars). Every model of
/// the zoo implements it, and so does [`crate::AnyModel`].
pub trait Trainable: burn::module::Module + LikelihoodModel + Sized {
    /// The model's kind and configuration.
    fn model_config(&self) -> crate::ModelConfig;

    /// Writes the parameters (BatchNorm running statistics included) to `path` in burn's
    /// module store. A wrapper such as [`crate::AnyModel`] writes its inner model's, so a
    /// file has the same layout whoever saved it.
    ///
    /// # Errors
    /// burn's reason when the file cannot be written.
    fn save_parameters(self, path: &std::path::Path) -> Result<(), burn::store::RecordError> {
        self.save_file(path)
    }

    /// Applies `record` (parameters read back from a file written by
    /// [`save_parameters`](Self::save_parameters)) to this model.
    ///
    /// # Errors
    /// burn's reason when the record does not fit the model.
    fn load_parameters(
        self,
        record: burn::store::ModuleRecord,
    ) -> Result<Self, burn::store::RecordError> {
        self.try_load_record(record)
    }

    /// Every parameter tensor the saved file holds, as (name, shape) in the model's order:
    /// the names [`save_parameters`](Self::save_parameters) writes (`"couplings.0.s.weight"`).
    /// Read from the modules' declared shapes; lazily initialised parameters stay
    /// uninitialised.
    fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        checkpoint::parameter_shapes(self)
    }
}

/// Checks that `x` is `[N, C, H, W]` with `[C, H, W] == expected` and `N ≥ 1`.
pub(crate) fn check_shape(x: &Tensor<4>, expected: [usize; 3]) -> Result<(), ModelError> {
    let d = x.dims();
    if d[0] == 0 || d[1..] != expected {
        return Err(ModelError::Shape {
            expected,
            got: d.to_vec(),
        });
    }
    Ok(())
}
