//! # bnood
//!
//! Unsupervised out-of-distribution (OoD) detection with deep generative models, built
//! around "Unsupervised Out-of-Distribution Detection with Batch Normalization" (Song, Song
//! & Ermon): a likelihood model trained with BatchNorm, evaluated with batch statistics over
//! a batch that mixes test and training samples, separates OoD batches that plain
//! likelihoods cannot.
//!
//! This root crate re-exports the member crates and owns the examples, benches and the
//! backend selection:
//!
//! | module | crate | job |
//! |---|---|---|
//! | [`data`] | `bnood-data` | verified datasets, image sets, transforms |
//! | [`norm`] | `bnood-norm` | BatchNorm with explicit statistics mode, mixed batches |
//! | [`models`] | `bnood-models` | RealNVP and VAE trained with BatchNorm, training loop |
//! | [`detect`] | `bnood-detect` | OoD detectors: log-likelihood, T_perm, WAIC, the BN test |
//! | [`metrics`] | `bnood-metrics` | AUROC, AP, AUPR-in/out, FPR@95TPR |
//! | [`eval`] | `bnood-eval` | the paper's protocol: Table 2, Table 5, Figure 3, contamination; reports and plots |
//! | [`backend`] | (here) | backend name → burn `Device` |
//! | [`commands`] | (here) | the `bnood` subcommands' flags and runs, returning what the binary prints |
//! | [`experiment`] | (here) | named test sets, presets, train-or-reuse, the main job |
//! | [`error`] | (here) | the error type of the `bnood` command and the examples |
//!
//! ## Cargo features
//! - `flex` (default): burn's pure-Rust CPU backend with SIMD and rayon.
//! - `ndarray`: burn's ndarray CPU backend (deprecated upstream, kept selectable).
//! - `wgpu`: GPUs through wgpu.
//! - `download` (default): let `bnood-data` fetch missing datasets, checksum-verified.
//!
//! ```
//! // Pick the backend from BNOOD_DEVICE (default: flex) — never Device::default().
//! let device = bnood::backend::device_from_env()?;
//! # let _ = device;
//! # Ok::<(), bnood::backend::BackendError>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod commands;
pub mod error;
pub mod experiment;

pub use bnood_data as data;
pub use bnood_detect as detect;
pub use bnood_eval as eval;
pub use bnood_metrics as metrics;
pub use bnood_models as models;
pub use bnood_norm as norm;
