//! Errors of the evaluation protocol.

use std::path::PathBuf;

/// What went wrong while running an evaluation or writing its report.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A detector failed (shape mismatch, too small a pool or reference set, NaN…).
    #[error(transparent)]
    Detect(#[from] bnood_detect::DetectError),
    /// Metrics could not be computed (e.g. an empty class).
    #[error(transparent)]
    Metrics(#[from] bnood_metrics::MetricsError),
    /// A model could not be built, trained, saved or loaded.
    #[error(transparent)]
    Model(#[from] bnood_models::ModelError),
    /// Building an image set failed.
    #[error(transparent)]
    Data(#[from] bnood_data::DataError),
    /// A plot could not be drawn or written.
    #[error(transparent)]
    Plot(#[from] crate::plot::PlotError),
    /// A report file could not be read or written.
    #[error("cannot read or write {path}: {source}; check that the path exists and is accessible")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file given as a report is not one.
    #[error(
        "{path} is not a report of `bnood eval` ({reason}): pass the .json file that `bnood eval` wrote"
    )]
    NotAReport {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A report could not be serialised.
    #[error("cannot serialise the report: {0}")]
    Json(#[from] serde_json::Error),
    /// An invalid protocol setting.
    #[error("{0}")]
    InvalidSetting(String),
}

/// `Result` with [`EvalError`].
pub type Result<T> = std::result::Result<T, EvalError>;
