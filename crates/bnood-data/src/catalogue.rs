//! The catalogue: every dataset the paper's experiments use, with file names, official
//! download URLs and MD5 checksums, and the loader that finds, verifies and decodes them.

use std::fmt;
use std::path::Path;

use crate::error::{DataError, Result};
use crate::idx::{decode_idx, expect_ndim, md5_hex, read_maybe_gzip};
use crate::image_set::ImageSet;
use crate::locate::Locator;

/// A dataset of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataset {
    /// Fashion-MNIST (Xiao et al. 2017): 28×28 grey clothing images, 10 classes.
    FashionMnist,
    /// MNIST (LeCun et al.): 28×28 grey handwritten digits.
    Mnist,
    /// Kuzushiji-MNIST (Clanuwat et al. 2018): 28×28 grey cursive Japanese characters.
    Kmnist,
    /// Omniglot evaluation set (Lake et al. 2015) at 28×28, white strokes on black; labels
    /// are character ids (965–1623). Only [`Split::Test`] exists: it is the evaluation set.
    Omniglot,
    /// CIFAR-10 binary version (Krizhevsky 2009): 32×32 RGB, 10 classes.
    Cifar10,
    /// SVHN cropped digits (Netzer et al. 2011): 32×32 RGB, labels 0–9 (the file's 10 is 0).
    Svhn,
}

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// The training split.
    Train,
    /// The test split (for Omniglot: the evaluation set).
    Test,
}

/// One file of the catalogue and how to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec {
    /// File name as distributed (e.g. `train-images-idx3-ubyte.gz`).
    pub name: &'static str,
    /// MD5 of the decompressed content, lowercase hex, where known. Preferred: it does not
    /// depend on gzip headers (Debian's Fashion-MNIST files differ only there).
    pub md5_content: Option<&'static str>,
    /// MD5 of the file exactly as distributed, where known.
    pub md5_file: Option<&'static str>,
    /// Official download URLs, tried in order (mirrors after the original).
    pub urls: &'static [&'static str],
}

/// How the files of an entry are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An IDX images file (`N × H × W`) and an IDX labels file (`N`).
    IdxPair,
    /// An IDX images file and a CSV `index,character_id,alphabet,alphabet_index`.
    IdxWithCsvLabels,
    /// CIFAR-10 binary batches: 3073-byte records (label, 1024 R, 1024 G, 1024 B).
    Cifar10Binary,
    /// SVHN MATLAB v5 file with `X` (`32×32×3×N`, uint8) and `y` (`N×1`).
    SvhnMat,
}

/// One (dataset, split) entry: its files in decoding order and their format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The dataset.
    pub dataset: Dataset,
    /// The split.
    pub split: Split,
    /// Decoding format.
    pub format: Format,
    /// Files, in the order the format expects (images before labels).
    pub files: &'static [FileSpec],
    /// Number of images the entry holds when complete.
    pub count: usize,
}

const FMNIST_URLS_TRAIN_IMAGES: &[&str] =
    &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz"];
const FMNIST_URLS_TRAIN_LABELS: &[&str] =
    &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz"];
const FMNIST_URLS_TEST_IMAGES: &[&str] =
    &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz"];
const FMNIST_URLS_TEST_LABELS: &[&str] =
    &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz"];

const MNIST_URLS_TRAIN_IMAGES: &[&str] = &[
    "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz",
    "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
];
const MNIST_URLS_TRAIN_LABELS: &[&str] = &[
    "http://yann.lecun.com/exdb/mnist/train-labels-idx1-ubyte.gz",
    "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
];
const MNIST_URLS_TEST_IMAGES: &[&str] = &[
    "http://yann.lecun.com/exdb/mnist/t10k-images-idx3-ubyte.gz",
    "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
];
const MNIST_URLS_TEST_LABELS: &[&str] = &[
    "http://yann.lecun.com/exdb/mnist/t10k-labels-idx1-ubyte.gz",
    "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
];

const KMNIST_URLS_TRAIN_IMAGES: &[&str] =
    &["http://codh.rois.ac.jp/kmnist/dataset/kmnist/train-images-idx3-ubyte.gz"];
const KMNIST_URLS_TRAIN_LABELS: &[&str] =
    &["http://codh.rois.ac.jp/kmnist/dataset/kmnist/train-labels-idx1-ubyte.gz"];
const KMNIST_URLS_TEST_IMAGES: &[&str] =
    &["http://codh.rois.ac.jp/kmnist/dataset/kmnist/t10k-images-idx3-ubyte.gz"];
const KMNIST_URLS_TEST_LABELS: &[&str] =
    &["http://codh.rois.ac.jp/kmnist/dataset/kmnist/t10k-labels-idx1-ubyte.gz"];

const CIFAR10_URLS: &[&str] = &["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"];

const fn spec(
    name: &'static str,
    md5_content: Option<&'static str>,
    md5_file: Option<&'static str>,
    urls: &'static [&'static str],
) -> FileSpec {
    FileSpec {
        name,
        md5_content,
        md5_file,
        urls,
    }
}

/// The CIFAR-10 binary archive; its batches are extracted next to it on download.
pub const CIFAR10_ARCHIVE: FileSpec = spec(
    "cifar-10-binary.tar.gz",
    None,
    Some("c32a1d4ab5d03f1284b67883e8d87530"),
    CIFAR10_URLS,
);

static ENTRIES: &[Entry] = &[
    Entry {
        dataset: Dataset::FashionMnist,
        split: Split::Train,
        format: Format::IdxPair,
        count: 60_000,
        files: &[
            spec(
                "train-images-idx3-ubyte.gz",
                Some("f4a8712d7a061bf5bd6d2ca38dc4d50a"),
                Some("8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                FMNIST_URLS_TRAIN_IMAGES,
            ),
            spec(
                "train-labels-idx1-ubyte.gz",
                Some("9018921c3c673c538a1fc5bad174d6f9"),
                Some("25c81989df183df01b3e8a0aad5dffbe"),
                FMNIST_URLS_TRAIN_LABELS,
            ),
        ],
    },
    Entry {
        dataset: Dataset::FashionMnist,
        split: Split::Test,
        format: Format::IdxPair,
        count: 10_000,
        files: &[
            spec(
                "t10k-images-idx3-ubyte.gz",
                Some("8181f5470baa50b63fa0f6fddb340f0a"),
                Some("bef4ecab320f06d8554ea6380940ec79"),
                FMNIST_URLS_TEST_IMAGES,
            ),
            spec(
                "t10k-labels-idx1-ubyte.gz",
                Some("15d484375f8d13e6eb1aabb0c3f46965"),
                Some("bb300cfdad3c16e7a12a480ee83cd310"),
                FMNIST_URLS_TEST_LABELS,
            ),
        ],
    },
    Entry {
        dataset: Dataset::Mnist,
        split: Split::Train,
        format: Format::IdxPair,
        count: 60_000,
        files: &[
            spec(
                "train-images-idx3-ubyte.gz",
                Some("6bbc9ace898e44ae57da46a324031adb"),
                Some("f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                MNIST_URLS_TRAIN_IMAGES,
            ),
            spec(
                "train-labels-idx1-ubyte.gz",
                Some("a25bea736e30d166cdddb491f175f624"),
                Some("d53e105ee54ea40749a09fcbcd1e9432"),
                MNIST_URLS_TRAIN_LABELS,
            ),
        ],
    },
    Entry {
        dataset: Dataset::Mnist,
        split: Split::Test,
        format: Format::IdxPair,
        count: 10_000,
        files: &[
            spec(
                "t10k-images-idx3-ubyte.gz",
                Some("2646ac647ad5339dbf082846283269ea"),
                Some("9fb629c4189551a2d022fa330f9573f3"),
                MNIST_URLS_TEST_IMAGES,
            ),
            spec(
                "t10k-labels-idx1-ubyte.gz",
                Some("27ae3e4e09519cfbb04c329615203637"),
                Some("ec29112dd5afa0611ce80d1b7f02629c"),
                MNIST_URLS_TEST_LABELS,
            ),
        ],
    },
    Entry {
        dataset: Dataset::Kmnist,
        split: Split::Train,
        format: Format::IdxPair,
        count: 60_000,
        files: &[
            // Only the distributed files' MD5s are published for KMNIST train.
            spec(
                "train-images-idx3-ubyte.gz",
                None,
                Some("bdb82020997e1d708af4cf47b453dcf7"),
                KMNIST_URLS_TRAIN_IMAGES,
            ),
            spec(
                "train-labels-idx1-ubyte.gz",
                None,
                Some("e144d726b3acfaa3e44228e80efcd344"),
                KMNIST_URLS_TRAIN_LABELS,
            ),
        ],
    },
    Entry {
        dataset: Dataset::Kmnist,
        split: Split::Test,
        format: Format::IdxPair,
        count: 10_000,
        files: &[
            spec(
                "t10k-images-idx3-ubyte.gz",
                Some("bf305b8cd328700fbc17f5acbc2856d2"),
                Some("5c965bf0a639b31b8f53240b1b52f4d7"),
                KMNIST_URLS_TEST_IMAGES,
            ),
            spec(
                "t10k-labels-idx1-ubyte.gz",
                Some("9f55f451c0988b028eccdf7d5cc265ab"),
                Some("7320c461ea6c1c855c0b718fb2a4b134"),
                KMNIST_URLS_TEST_LABELS,
            ),
        ],
    },
    Entry {
        dataset: Dataset::Omniglot,
        split: Split::Test,
        format: Format::IdxWithCsvLabels,
        count: 13_180,
        // A 28×28 rendering of the evaluation set (see datasets/README.md); it has no
        // official URL, so it cannot be downloaded.
        files: &[
            spec(
                "omniglot-eval-images-idx3-ubyte.gz",
                Some("b8dd9153c214335abb46f71febd60562"),
                Some("7ef3228eb2a346d51e8dc34dbd749a51"),
                &[],
            ),
            spec(
                "omniglot-eval-labels.csv",
                None,
                Some("920ac4f43d06025c3a4b101208a51fbe"),
                &[],
            ),
        ],
    },
    Entry {
        dataset: Dataset::Cifar10,
        split: Split::Train,
        format: Format::Cifar10Binary,
        count: 50_000,
        // Per-batch checksums are not published; the archive's is (CIFAR10_ARCHIVE), and
        // each batch is checked for its exact size and label range when decoded.
        files: &[
            spec("cifar-10-batches-bin/data_batch_1.bin", None, None, &[]),
            spec("cifar-10-batches-bin/data_batch_2.bin", None, None, &[]),
            spec("cifar-10-batches-bin/data_batch_3.bin", None, None, &[]),
            spec("cifar-10-batches-bin/data_batch_4.bin", None, None, &[]),
            spec("cifar-10-batches-bin/data_batch_5.bin", None, None, &[]),
        ],
    },
    Entry {
        dataset: Dataset::Cifar10,
        split: Split::Test,
        format: Format::Cifar10Binary,
        count: 10_000,
        files: &[spec("cifar-10-batches-bin/test_batch.bin", None, None, &[])],
    },
    Entry {
        dataset: Dataset::Svhn,
        split: Split::Train,
        format: Format::SvhnMat,
        count: 73_257,
        files: &[spec(
            "train_32x32.mat",
            None,
            Some("e26dedcc434d2e4c54c9b2d4a06d8373"),
            &["http://ufldl.stanford.edu/housenumbers/train_32x32.mat"],
        )],
    },
    Entry {
        dataset: Dataset::Svhn,
        split: Split::Test,
        format: Format::SvhnMat,
        count: 26_032,
        files: &[spec(
            "test_32x32.mat",
            None,
            Some("eb5a983be6a315427106f1b164d9cef3"),
            &["http://ufldl.stanford.edu/housenumbers/test_32x32.mat"],
        )],
    },
];

impl Dataset {
    /// Every dataset of the catalogue.
    pub const ALL: [Dataset; 6] = [
        Dataset::FashionMnist,
        Dataset::Mnist,
        Dataset::Kmnist,
        Dataset::Omniglot,
        Dataset::Cifar10,
        Dataset::Svhn,
    ];

    /// Short stable identifier, also the folder name under a data directory
    /// (`fashion_mnist`, `mnist`, `kmnist`, `omniglot`, `cifar10`, `svhn`).
    pub fn id(self) -> &'static str {
        match self {
            Dataset::FashionMnist => "fashion_mnist",
            Dataset::Mnist => "mnist",
            Dataset::Kmnist => "kmnist",
            Dataset::Omniglot => "omniglot",
            Dataset::Cifar10 => "cifar10",
            Dataset::Svhn => "svhn",
        }
    }

    /// Parses an identifier as printed by [`Dataset::id`]; also accepts `fmnist`,
    /// `fashion-mnist`, `cifar-10` and `cifar`, case-insensitively.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] listing the known names.
    pub fn from_name(name: &str) -> Result<Self> {
        let lower = name.to_ascii_lowercase().replace('-', "_");
        let found = match lower.as_str() {
            "fashion_mnist" | "fmnist" | "fashionmnist" => Dataset::FashionMnist,
            "mnist" => Dataset::Mnist,
            "kmnist" => Dataset::Kmnist,
            "omniglot" => Dataset::Omniglot,
            "cifar10" | "cifar_10" | "cifar" => Dataset::Cifar10,
            "svhn" => Dataset::Svhn,
            _ => {
                let known: Vec<_> = Dataset::ALL.iter().map(|d| d.id()).collect();
                return Err(DataError::InvalidArgument(format!(
                    "unknown dataset `{name}`; known datasets: {}",
                    known.join(", ")
                )));
            }
        };
        Ok(found)
    }

    /// The splits the catalogue has for this dataset.
    pub fn splits(self) -> Vec<Split> {
        ENTRIES
            .iter()
            .filter(|e| e.dataset == self)
            .map(|e| e.split)
            .collect()
    }

    /// The catalogue entry for `split`.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] if the dataset has no such split (Omniglot train).
    pub fn entry(self, split: Split) -> Result<&'static Entry> {
        ENTRIES
            .iter()
            .find(|e| e.dataset == self && e.split == split)
            .ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "{self} has no {split} split in the catalogue; available: {:?}",
                    self.splits()
                ))
            })
    }

    /// Finds, verifies and decodes `split` of this dataset (see [`Locator`] for where it
    /// looks). Every file with a catalogue checksum is verified on every load.
    ///
    /// # Errors
    /// [`DataError::NotFound`] listing every place tried, [`DataError::ChecksumMismatch`],
    /// [`DataError::Corrupt`], or [`DataError::Mismatch`] if the files disagree.
    pub fn load(self, split: Split, locator: &Locator) -> Result<ImageSet> {
        let entry = self.entry(split)?;
        let paths = entry
            .files
            .iter()
            .map(|f| locator.find(self, f))
            .collect::<Result<Vec<_>>>()?;
        let set = match entry.format {
            Format::IdxPair => {
                let images = read_verified(&paths[0], &entry.files[0])?;
                let labels = read_verified(&paths[1], &entry.files[1])?;
                idx_images_with_labels(&images, &paths[0], &labels, &paths[1])?
            }
            Format::IdxWithCsvLabels => {
                let images = read_verified(&paths[0], &entry.files[0])?;
                let csv = read_verified(&paths[1], &entry.files[1])?;
                idx_images_with_csv_labels(&images, &paths[0], &csv, &paths[1])?
            }
            Format::Cifar10Binary => {
                let batches = paths
                    .iter()
                    .map(|p| read_maybe_gzip(p).map(|b| (p.clone(), b)))
                    .collect::<Result<Vec<_>>>()?;
                crate::cifar::decode_batches(&batches)?
            }
            Format::SvhnMat => {
                let bytes = read_verified(&paths[0], &entry.files[0])?;
                crate::svhn::decode_mat(&bytes, &paths[0])?
            }
        };
        if set.len() != entry.count {
            return Err(DataError::Mismatch(format!(
                "{self} {split} should hold {} images but the files hold {}: a file is from another release",
                entry.count,
                set.len()
            )));
        }
        Ok(set.with_name(format!("{}/{}", self.id(), split)))
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dataset::FashionMnist => "Fashion-MNIST",
            Dataset::Mnist => "MNIST",
            Dataset::Kmnist => "KMNIST",
            Dataset::Omniglot => "Omniglot",
            Dataset::Cifar10 => "CIFAR-10",
            Dataset::Svhn => "SVHN",
        })
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Reads a file (decompressing gzip) and checks it against the spec's checksums: the
/// content MD5 when the catalogue has one, otherwise the file MD5. Returns the content.
///
/// # Errors
/// [`DataError::ChecksumMismatch`] naming the file and both digests.
pub fn read_verified(path: &Path, spec: &FileSpec) -> Result<Vec<u8>> {
    let content = read_maybe_gzip(path)?;
    verify(path, spec, &content)?;
    Ok(content)
}

/// Checks already-read `content` of `path` against `spec` (see [`read_verified`]).
pub(crate) fn verify(path: &Path, spec: &FileSpec, content: &[u8]) -> Result<()> {
    if let Some(expected) = spec.md5_content {
        let actual = md5_hex(content);
        if actual != expected {
            return Err(DataError::ChecksumMismatch {
                path: path.to_path_buf(),
                what: "decompressed content",
                expected: expected.into(),
                actual,
            });
        }
    } else if let Some(expected) = spec.md5_file {
        let actual = md5_hex(&std::fs::read(path).map_err(|e| DataError::io(path, e))?);
        if actual != expected {
            return Err(DataError::ChecksumMismatch {
                path: path.to_path_buf(),
                what: "file",
                expected: expected.into(),
                actual,
            });
        }
    }
    Ok(())
}

/// Decodes an IDX images array (`N × H × W`) and an IDX labels array (`N`) into a set.
///
/// # Errors
/// [`DataError::Corrupt`] for malformed IDX, [`DataError::Mismatch`] if the counts differ.
pub fn idx_images_with_labels(
    images: &[u8],
    images_path: &Path,
    labels: &[u8],
    labels_path: &Path,
) -> Result<ImageSet> {
    let images_arr = decode_idx(images, images_path)?;
    expect_ndim(&images_arr, 3, "images", images_path)?;
    let labels_arr = decode_idx(labels, labels_path)?;
    expect_ndim(&labels_arr, 1, "labels", labels_path)?;
    let n = images_arr.dims[0];
    if labels_arr.dims[0] != n {
        return Err(DataError::Mismatch(format!(
            "{} holds {n} images but {} holds {} labels: use the images and labels of the same split",
            images_path.display(),
            labels_path.display(),
            labels_arr.dims[0]
        )));
    }
    let labels = labels_arr.data.iter().map(|&l| u32::from(l)).collect();
    ImageSet::new(
        images_path.display().to_string(),
        images_arr.data,
        [n, 1, images_arr.dims[1], images_arr.dims[2]],
        Some(labels),
    )
}

/// Decodes an IDX images array and a CSV of `index,character_id,alphabet,alphabet_index`
/// rows (with a header line) into a set labelled by `character_id`.
///
/// # Errors
/// [`DataError::Corrupt`] for malformed rows or out-of-order indices, and
/// [`DataError::Mismatch`] if the row count differs from the image count.
pub fn idx_images_with_csv_labels(
    images: &[u8],
    images_path: &Path,
    csv: &[u8],
    csv_path: &Path,
) -> Result<ImageSet> {
    let images_arr = decode_idx(images, images_path)?;
    expect_ndim(&images_arr, 3, "images", images_path)?;
    let text = std::str::from_utf8(csv)
        .map_err(|e| DataError::corrupt(csv_path, "CSV", format!("not UTF-8: {e}")))?;
    let mut labels = Vec::new();
    for (line_no, line) in text
        .lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |why: &str| {
            DataError::corrupt(
                csv_path,
                "CSV",
                format!("line {}: {why}: `{line}`", line_no + 1),
            )
        };
        let mut fields = line.split(',');
        let index: usize = fields
            .next()
            .and_then(|f| f.trim().parse().ok())
            .ok_or_else(|| bad("no integer index"))?;
        if index != labels.len() {
            return Err(bad(&format!(
                "index {index} where {} was expected",
                labels.len()
            )));
        }
        let character: u32 = fields
            .next()
            .and_then(|f| f.trim().parse().ok())
            .ok_or_else(|| bad("no integer character_id"))?;
        labels.push(character);
    }
    let n = images_arr.dims[0];
    if labels.len() != n {
        return Err(DataError::Mismatch(format!(
            "{} holds {n} images but {} labels {} rows: use the files of the same release",
            images_path.display(),
            csv_path.display(),
            labels.len()
        )));
    }
    ImageSet::new(
        images_path.display().to_string(),
        images_arr.data,
        [n, 1, images_arr.dims[1], images_arr.dims[2]],
        Some(labels),
    )
}
