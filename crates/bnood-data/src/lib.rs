//! # bnood-data
//!
//! Verified loading of the image datasets used to evaluate out-of-distribution (OoD)
//! detectors, and the seeded transforms the experiments need. This crate is the first link
//! of bnood's chain (`bnood-data → bnood-norm → bnood-models → bnood-detect`).
//!
//! - [`Dataset`] / [`Split`]: the catalogue — Fashion-MNIST, MNIST, KMNIST, Omniglot
//!   (evaluation set, 28×28), CIFAR-10 (binary) and SVHN (cropped digits) — with file names,
//!   official URLs and MD5 checksums. [`Dataset::load`] finds the files (see [`Locator`] for
//!   the search order: a given path, `BNOOD_DATA_DIR`, `./datasets`, Debian's
//!   `dataset-fashion-mnist`, then a verified download), checks them, and decodes them.
//! - [`ImageSet`]: a non-empty in-memory set of `u8` images `[N, C, H, W]` with optional
//!   labels, seeded shuffling and subsetting, and batching into burn `Tensor<4>` on any
//!   [`burn::tensor::Device`].
//! - [`user_files`]: a user's own images as an [`ImageSet`] — any IDX file
//!   ([`ImageSet::from_idx_file`]) or folder of PNG files ([`ImageSet::from_png_dir`]), or
//!   either by what the path is ([`ImageSet::from_path`]).
//! - [`named`]: sets by the names of the command line and the paper's tables (`kmnist`,
//!   `rotation`, …) or by path; [`seeds`]: every derived random stream, named.
//! - [`idx`]: a strict IDX reader (raw or gzip); [`cifar`] and [`svhn`] readers.
//! - [`transform`]: the paper's random rotation by (90°, 270°), Ren et al.'s pixel mutation
//!   for background models, uniform dequantisation,
//!   the logit transform (α = 0.05) with its log-determinant, nats ↔ bits/dim.
//!
//! Every error is a [`DataError`] that names the file and says what to do; nothing here
//! panics on user input or returns a partial set.
//!
//! ```no_run
//! use bnood_data::{Dataset, Locator, Split};
//!
//! let test = Dataset::FashionMnist.load(Split::Test, &Locator::from_env())?;
//! assert_eq!(test.shape(), [10_000, 1, 28, 28]);
//! let reference = test.subset(500, 7)?; // 500 images, seeded
//! # Ok::<(), bnood_data::DataError>(())
//! ```
#![warn(missing_docs)]

pub mod atomic;
pub mod catalogue;
pub mod cifar;
#[cfg(feature = "download")]
pub mod download;
pub mod error;
pub mod idx;
pub mod image_set;
pub mod locate;
pub mod named;
pub mod preprocess;
pub mod seeds;
pub mod svhn;
pub mod transform;
pub mod user_files;

pub use catalogue::{Dataset, Entry, FileSpec, Format, Split};
pub use error::{DataError, Result};
pub use image_set::ImageSet;
pub use locate::{DATA_DIR_ENV, Locator, Survey, survey};
pub use named::{
    NAMED_SETS, is_catalogue_name, load_named, load_named_expecting, load_named_indexed,
    load_named_prepared,
};
pub use preprocess::{Channels, Preprocess};
pub use transform::{
    Dequantizer, LogitTransform, bits_per_dim, check_mutation_rate, mutate_pixels, rotate_randomly,
};
