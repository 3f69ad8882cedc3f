//! The error type of the `bnood` command and the examples: every lower crate's error, plus
//! invalid arguments and unwritable outputs, each saying what to do.

use std::path::PathBuf;

use bnood_models::ModelError;

/// Errors of the command-line tools and examples, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dataset could not be found, verified or read.
    #[error(transparent)]
    Data(#[from] bnood_data::DataError),
    /// A model could not be built, trained, saved or loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A detector failed.
    #[error(transparent)]
    Detect(#[from] bnood_detect::DetectError),
    /// The evaluation failed or could not write its report.
    #[error(transparent)]
    Eval(#[from] bnood_eval::EvalError),
    /// The backend is not compiled in or unknown.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An invalid argument.
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
