//! The one error type of `bnood-data`.

use std::path::PathBuf;

/// Everything that can go wrong while finding, verifying, downloading or decoding a dataset,
/// or while transforming an image set. Every message says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its content is not what its format promises.
    #[error(
        "{path} is not a valid {format} file: {reason}. Delete it and fetch it again (see `bnood datasets`)"
    )]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// The format that was expected (e.g. "IDX", "gzip").
        format: &'static str,
        /// What exactly is wrong.
        reason: String,
    },

    /// A file decoded, but its checksum differs from the catalogue's.
    #[error(
        "{path} has MD5 {actual} but the catalogue expects {expected} for {what}: the file is damaged or a different version; delete it and fetch it again"
    )]
    ChecksumMismatch {
        /// The offending file.
        path: PathBuf,
        /// What was hashed ("decompressed content" or "file").
        what: &'static str,
        /// Expected MD5, lowercase hex.
        expected: String,
        /// Actual MD5, lowercase hex.
        actual: String,
    },

    /// Images and labels disagree, or a file holds something other than the catalogue says.
    #[error("{0}")]
    Mismatch(String),

    /// No place in the search order held the file, and downloading was impossible or failed.
    #[error("{file} of {dataset} was not found. Tried, in order:\n{tried}\nTo fix: {hint}")]
    NotFound {
        /// Human-readable dataset name.
        dataset: String,
        /// The file name looked for.
        file: String,
        /// One line per place tried, each with why it failed.
        tried: String,
        /// What the user should do.
        hint: String,
    },

    /// Downloading a file failed (network error, HTTP status, or checksum of the download).
    #[error("downloading {url} failed: {reason}")]
    Download {
        /// The URL that was fetched.
        url: String,
        /// Why it failed.
        reason: String,
    },

    /// A user's own IDX file or PNG folder (not a catalogue dataset) cannot be read as an
    /// image set: a labels file, a non-`u8` element type, no images, a corrupt or 16-bit PNG,
    /// transparent pixels, ... The reason says what to do.
    #[error("{path} cannot be used as an image set: {reason}")]
    UserImages {
        /// The offending file or folder.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// An image in a PNG folder has another shape than the folder's first image.
    #[error(
        "{path} has shape [C, H, W] = {shape:?} but {first} (the first image, by file name) has {expected:?}: every image in the folder must have the same size and channel count; resize or convert the odd ones out (or train with --resize H,W, which resizes every image, and --grayscale or --rgb)"
    )]
    ImageShapeMismatch {
        /// The first image whose shape differs.
        path: PathBuf,
        /// Its shape `[C, H, W]`.
        shape: [usize; 3],
        /// The shape `[C, H, W]` every image must have.
        expected: [usize; 3],
        /// The image that set the expected shape.
        first: PathBuf,
    },

    /// A caller passed an argument that cannot be honoured (empty subset, zero batch size, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// `Result` with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn user_images(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::UserImages {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        format: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        Self::Corrupt {
            path: path.into(),
            format,
            reason: reason.into(),
        }
    }
}
