//! Test sets by name, as the command line and the experiments name them: the catalogue's
//! sets under the names of the paper's tables, the paper's "Rotation" set, or any path to a
//! user's IDX file or PNG folder.

use std::path::Path;

use crate::{DataError, Dataset, ImageSet, Locator, Preprocess, Result, Split, seeds, transform};

/// The sets known by name, with the names used in tables.
pub const NAMED_SETS: [(&str, &str); 11] = [
    ("fmnist", "FMNIST"),
    ("rotation", "Rotation"),
    ("mnist", "MNIST"),
    ("omniglot", "Omniglot"),
    ("kmnist", "KMNIST"),
    ("fmnist-train", "FMNIST-train"),
    ("mnist-train", "MNIST-train"),
    ("cifar10", "CIFAR-10"),
    ("cifar10-train", "CIFAR-10-train"),
    ("svhn", "SVHN"),
    ("svhn-train", "SVHN-train"),
];

/// A set by name — `fmnist`, `mnist`, `kmnist`, `omniglot`, `cifar10`, `svhn` (their test
/// splits; for Omniglot the evaluation set), `fmnist-train`, `mnist-train`,
/// `cifar10-train`, `svhn-train` (the training splits; MNIST's trains the PixelCNN++ of the
/// paper's Appendix B; CIFAR-10 and SVHN are `[3, 32, 32]`, the paper's CIFAR rows), `rotation` (Fashion-MNIST test images each
/// rotated by a uniform angle in (90°, 270°), the paper's "Rotation") — or a path to an IDX
/// file or a folder of PNG images. `n` draws a seeded random subset (`None`: all images).
/// The set is named as in the paper's tables (`"KMNIST"`, `"Rotation"`, or the file name).
///
/// # Errors
/// [`DataError`] if the data cannot be found or read, or `n` exceeds the set;
/// [`DataError::InvalidArgument`] for an unknown name that is not a path either.
pub fn load_named(name: &str, locator: &Locator, n: Option<usize>, seed: u64) -> Result<ImageSet> {
    load_named_expecting(name, locator, n, seed, None)
}

/// Whether `name` is one of the catalogue's set names (or an alias), which
/// [`load_named`] loads from the catalogue even when a file or folder of that name exists.
pub fn is_catalogue_name(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "fmnist"
            | "fashion-mnist"
            | "fashion_mnist"
            | "fmnist-train"
            | "mnist-train"
            | "mnist"
            | "kmnist"
            | "cifar10"
            | "cifar10-train"
            | "svhn"
            | "svhn-train"
            | "omniglot"
            | "rotation"
    )
}

/// [`load_named`] for a model of images `[C, H, W]` = `expected`: a user's file or folder
/// whose header promises another image shape is refused before its pixels are read.
///
/// # Errors
/// As [`load_named`], and [`DataError::UserImages`] for a shape other than `expected`.
pub fn load_named_expecting(
    name: &str,
    locator: &Locator,
    n: Option<usize>,
    seed: u64,
    expected: Option<[usize; 3]>,
) -> Result<ImageSet> {
    Ok(load_named_indexed(name, locator, n, seed, expected)?.0)
}

/// [`load_named_expecting`], also returning for each image of the set its index in the
/// file, folder or catalogue split it was read from (for `rotation`, in Fashion-MNIST test),
/// so that results on a random subset can be traced back.
///
/// # Errors
/// As [`load_named_expecting`].
pub fn load_named_indexed(
    name: &str,
    locator: &Locator,
    n: Option<usize>,
    seed: u64,
    expected: Option<[usize; 3]>,
) -> Result<(ImageSet, Vec<usize>)> {
    load_named_prepared(name, locator, n, seed, &Preprocess::default(), expected)
}

/// [`load_named_indexed`] with every image preprocessed ([`Preprocess`]: a model's recorded
/// `--grayscale` / `--crop` / `--resize`), `expected` being the shape after it. A user's
/// folder is preprocessed image by image as it is read
/// ([`ImageSet::from_path_prepared`]); a catalogue set after its subset is drawn.
///
/// # Errors
/// As [`load_named_indexed`], and the preprocessing's errors.
pub fn load_named_prepared(
    name: &str,
    locator: &Locator,
    n: Option<usize>,
    seed: u64,
    preprocess: &Preprocess,
    expected: Option<[usize; 3]>,
) -> Result<(ImageSet, Vec<usize>)> {
    // A catalogue set is preprocessed after its subset is drawn (a user's files as read).
    let prepared = |(set, indices): (ImageSet, Vec<usize>)| -> Result<(ImageSet, Vec<usize>)> {
        if preprocess.is_identity() {
            return Ok((set, indices));
        }
        Ok((preprocess.apply(&set)?, indices))
    };
    // The same draw as `ImageSet::subset`, keeping the indices.
    let sub = |set: ImageSet, title: &str, seed: u64| -> Result<(ImageSet, Vec<usize>)> {
        match n {
            // `subset` words the refusal.
            Some(0) => set.subset(0, seed).map(|s| (s, Vec::new())),
            Some(n) if n < set.len() => {
                let order = set.permutation(seed);
                let picked = order[..n].to_vec();
                Ok((set.select(&picked)?.with_name(title), picked))
            }
            _ => {
                let all = (0..set.len()).collect();
                Ok((set.with_name(title), all))
            }
        }
    };
    let (dataset, split, title) = match name.to_ascii_lowercase().as_str() {
        "fmnist" | "fashion-mnist" | "fashion_mnist" => {
            (Dataset::FashionMnist, Split::Test, "FMNIST")
        }
        "fmnist-train" => (Dataset::FashionMnist, Split::Train, "FMNIST-train"),
        "mnist" => (Dataset::Mnist, Split::Test, "MNIST"),
        "mnist-train" => (Dataset::Mnist, Split::Train, "MNIST-train"),
        "kmnist" => (Dataset::Kmnist, Split::Test, "KMNIST"),
        "cifar10" => (Dataset::Cifar10, Split::Test, "CIFAR-10"),
        "cifar10-train" => (Dataset::Cifar10, Split::Train, "CIFAR-10-train"),
        "svhn" => (Dataset::Svhn, Split::Test, "SVHN"),
        "svhn-train" => (Dataset::Svhn, Split::Train, "SVHN-train"),
        "omniglot" => (Dataset::Omniglot, Split::Test, "Omniglot"),
        "rotation" => {
            let base = Dataset::FashionMnist.load(Split::Test, locator)?;
            let (base, picked) = sub(base, "FMNIST", seeds::derive(seed, seeds::ROTATION_BASE))?;
            let rotated =
                transform::rotate_randomly(&base, transform::PAPER_ROTATION_DEGREES, seed)?;
            return prepared((rotated.with_name("Rotation"), picked));
        }
        _ => {
            let path = Path::new(name);
            if path.exists() {
                let title = path
                    .file_name()
                    .map_or_else(|| name.to_string(), |f| f.to_string_lossy().into_owned());
                let set = ImageSet::from_path_prepared(path, title.clone(), preprocess, expected)?;
                return sub(set, &title, seed);
            }
            return Err(DataError::InvalidArgument(format!(
                "unknown set `{name}`: use one of {} or a path to an IDX file or PNG folder",
                NAMED_SETS.map(|(id, _)| id).join(", ")
            )));
        }
    };
    prepared(sub(dataset.load(split, locator)?, title, seed)?)
}
