//! # bnood-norm
//!
//! BatchNorm whose statistics come from where the caller says — the running averages, the
//! current batch, or the current batch while updating the running averages — and the
//! *mixed batch* that the paper's detector is built on (Song, Song & Ermon, sections 4–5).
//!
//! - [`BatchNorm`] (built with [`BatchNormConfig`]) takes a [`StatsMode`] on every call,
//!   like candle's `forward_t(xs, train)`: the mode is an argument, never inferred from
//!   whether autodiff is on, and [`StatsMode::Batch`] never touches running state.
//! - [`StatsMode::Train`] records each layer's batch statistics on a [`RunningStatsTape`];
//!   [`RunningStatsTape::apply`] then folds them into the module's running averages. The
//!   running averages are ordinary (non-trainable) parameters, so clones never share them
//!   and `Module::save_file` stores them. A layer normalised by a custom kernel records its
//!   batch statistics with [`RunningStatsTape::record`]; the layer's parameters (γ, β,
//!   running mean and variance, ε, momentum) are its public fields, as in PyTorch.
//! - [`mixed_batch`] assembles `[test rows; reference rows]`, runs a model over it once in
//!   [`StatsMode::Batch`], and hands back the rows of the test samples: every BatchNorm
//!   layer inside sees the statistics of the *combined* activations.
//!
//! ## Where BatchNorm lives
//! The workspace has one BatchNorm: this one. Its parameters, running state, modes and tape
//! are defined here and nowhere else. The RealNVP's CPU fast path (`bnood-models`,
//! `realnvp/cpu/batch_norm.rs`) evaluates *these* layers on its channels-last rows layout,
//! reading their public fields and recording batch statistics with
//! [`RunningStatsTape::record`]; its kernels are fused with that layout (padding rows left
//! out of the statistics, per-thread shares of the batch, the ReLU that follows and its
//! mask in the backward pass) and work on flex's buffers directly. They stay with the model
//! that owns the layout — moving them here would bring one model's layout and backend-
//! specific unsafe code into this backend-generic crate — and are tested equal to
//! [`BatchNorm::forward`] in every [`StatsMode`] on the same values
//! (`channels_last_equals_forward_in_every_mode_with_and_without_an_offset` and the chunked
//! statistics test there).
//!
//! ## Variance convention
//! As in PyTorch: activations are normalised with the **biased** batch variance
//! (`1/n`, n = values per channel = N·H·W), and the running variance is updated with the
//! **unbiased** estimate (`1/(n−1)`). The paper's Proposition 1 is written with `1/(b−1)`;
//! the two differ by the factor `n/(n−1)` in the normaliser (≈1.6% of the variance for a
//! dense layer at b = 64, much less for convolutions, where n = b·H·W). Batch statistics
//! over fewer than 2 values per channel are an error ([`NormError::TooFewValues`]).
//!
//! ## Features
//! Backends of burn, so that a program using this crate runs without naming burn's
//! features itself (the crates above forward theirs here):
//! - `flex` (default): burn's pure-Rust CPU backend, multi-threaded and SIMD (`burn/flex`,
//!   `simd`, `rayon`, `x86-v4`);
//! - `ndarray`: burn's ndarray CPU backend (deprecated upstream);
//! - `wgpu`: GPUs through wgpu.
#![warn(missing_docs)]

mod batch_norm;
mod mixed;

pub use batch_norm::{BatchNorm, BatchNormConfig, RunningStatsTape, StatsMode};
pub use mixed::{MixedBatch, mixed_batch};

/// Errors of `bnood-norm`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NormError {
    /// The input's channel dimension differs from the layer's.
    #[error(
        "BatchNorm over {expected} channels got an input of shape {shape:?}: the input must be [N, {expected}, ...]"
    )]
    ChannelMismatch {
        /// Channels the layer was built for.
        expected: usize,
        /// Shape of the offending input.
        shape: Vec<usize>,
    },
    /// Batch statistics need at least two values per channel.
    #[error(
        "batch statistics over {values} value(s) per channel (input shape {shape:?}) are undefined: use a batch of at least 2 samples, or StatsMode::Running"
    )]
    TooFewValues {
        /// Values per channel in the input (N·H·W).
        values: usize,
        /// Shape of the offending input.
        shape: Vec<usize>,
    },
    /// A configuration value is outside its valid range.
    #[error("invalid BatchNorm configuration: {0}")]
    InvalidConfig(String),
    /// A mixed batch was asked for with incompatible parts.
    #[error("invalid mixed batch: {0}")]
    InvalidMix(String),
    /// Batch statistics handed to [`RunningStatsTape::record`] do not fit the layer.
    #[error("invalid batch statistics for a BatchNorm over {channels} channels: {reason}")]
    InvalidStatistics {
        /// Channels of the layer.
        channels: usize,
        /// What is wrong with them.
        reason: String,
    },
}
