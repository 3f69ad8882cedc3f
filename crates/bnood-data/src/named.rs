//! Test sets by name, as the command line and the experiments name them: the catalogue's
//! sets under the names of the paper's tables, the paper's "Rotation" set, or any path to a
//! user's IDX file or PNG folder.

use std::path::Path;

use crate::{DataError, Dataset, ImageSet, Locator, Result, Split, seeds, transform};

/// The sets known by name, with the names used in tables.
pub const NAMED_SETS: [(&str, &str); 6] = [
    ("fmnist", "FMNIST"),
    ("rotation", "Rotation"),
    ("mnist", "MNIST"),
    ("omniglot", "Omniglot"),
    ("kmnist", "KMNIST"),
    ("fmnist-train", "FMNIST-train"),
];

/// A set by name — `fmnist`, `mnist`, `kmnist`, `omniglot` (their test splits; for
/// Omniglot the evaluation set), `fmnist-train`, `rotation` (Fashion-MNIST test images each
/// rotated by a uniform angle in (90°, 270°), the paper's "Rotation") — or a path to an IDX
/// file or a folder of PNG images. `n` draws a seeded random subset (`None`: all images).
/// The set is named as in the paper's tables (`"KMNIST"`, `"Rotation"`, or the file name).
///
/// # Errors
/// [`DataError`] if the data cannot be found or read, or `n` exceeds the set;
/// [`DataError::InvalidArgument`] for an unknown name that is not a path either.
pub fn load_named(name: &str, locator: &Locator, n: Option<usize>, seed: u64) -> Result<ImageSet> {
    let sub = |set: ImageSet, title: &str, seed: u64| -> Result<ImageSet> {
        let set = match n {
            Some(n) if n < set.len() => set.subset(n, seed)?,
            _ => set,
        };
        Ok(set.with_name(title))
    };
    let (dataset, split, title) = match name.to_ascii_lowercase().as_str() {
        "fmnist" | "fashion-mnist" | "fashion_mnist" => {
            (Dataset::FashionMnist, Split::Test, "FMNIST")
        }
        "fmnist-train" => (Dataset::FashionMnist, Split::Train, "FMNIST-train"),
        "mnist" => (Dataset::Mnist, Split::Test, "MNIST"),
        "kmnist" => (Dataset::Kmnist, Split::Test, "KMNIST"),
        "omniglot" => (Dataset::Omniglot, Split::Test, "Omniglot"),
        "rotation" => {
            let base = Dataset::FashionMnist.load(Split::Test, locator)?;
            let base = sub(base, "FMNIST", seeds::derive(seed, seeds::ROTATION_BASE))?;
            let rotated =
                transform::rotate_randomly(&base, transform::PAPER_ROTATION_DEGREES, seed)?;
            return Ok(rotated.with_name("Rotation"));
        }
        _ => {
            let path = Path::new(name);
            if path.exists() {
                let title = path
                    .file_name()
                    .map_or_else(|| name.to_string(), |f| f.to_string_lossy().into_owned());
                let set = ImageSet::from_path(path, title.clone())?;
                return sub(set, &title, seed);
            }
            return Err(DataError::InvalidArgument(format!(
                "unknown set `{name}`: use one of {} or a path to an IDX file or PNG folder",
                NAMED_SETS.map(|(id, _)| id).join(", ")
            )));
        }
    };
    sub(dataset.load(split, locator)?, title, seed)
}
