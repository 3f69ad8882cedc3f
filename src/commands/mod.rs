//! The subcommands of the `bnood` binary as library functions: each module holds one
//! subcommand's flags (a clap `Args` struct, so `--help` is generated from the same
//! field docs) beside the run it configures, and the run returns values that a front end
//! prints. The `bnood` binary only parses, calls these and prints; another front end (a
//! Python package, a service) reuses the same checks and flows instead of copying them.
//!
//! Why here and not in the member crates: a run crosses crates (a training run reads
//! datasets, trains a model and draws its learning curve with `bnood-eval`; a score run
//! resolves shipped models, reads sets and fits detectors), and its errors are this
//! crate's [`Error`](crate::error::Error). Flag groups that belong to one crate stay there
//! behind its `cli` feature and are flattened in: [`ModelPreset`](crate::models::ModelPreset)
//! and [`TrainBudget`](crate::models::train::TrainBudget) (`bnood-models`),
//! [`DetectorArgs`](crate::detect::DetectorArgs) (`bnood-detect`),
//! [`SetNames`](crate::eval::SetNames) (`bnood-eval`).
//!
//! | module | subcommand | entry point |
//! |---|---|---|
//! | [`train`] | `bnood train` | [`TrainArgs::run`](train::TrainArgs::run) |
//! | [`fit`] | `bnood fit`, `bnood score` | [`FitCmd::run`](fit::FitCmd::run), [`ScoreArgs::run`](fit::ScoreArgs::run) |
//! | [`monitor`] | `bnood monitor` | [`MonitorArgs::run`](monitor::MonitorArgs::run) |
//! | [`eval`] | `bnood eval` | [`EvalArgs::job`](eval::EvalArgs::job) |
//! | [`report`] | `bnood report` | [`rerender`](report::rerender) |
//! | [`sample`] | `bnood sample` | [`SampleArgs::run`](sample::SampleArgs::run) |
//! | [`paths`] | (all) | [`check_output`](paths::check_output), [`catalogue_name_notice`](paths::catalogue_name_notice) |
//!
//! Warnings and notes that a run gives while it works reach the caller through a
//! [`Notify`] callback as they arise (the binary writes each to stderr at once), so a
//! warning still comes before a long fit, not after it.

pub mod eval;
pub mod fit;
pub mod monitor;
pub mod paths;
pub mod preprocess;
pub mod report;
pub mod sample;
pub mod train;

use std::fmt;

use burn::tensor::Device;

use crate::data::Locator;
use crate::models::zoo::ModelsDir;

/// A message a run gives its user while it works, besides its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Something the user asked for that will not work as they may think
    /// (`warning: …`).
    Warning(String),
    /// Information on how an argument was read or what a result means (`note: …`).
    Note(String),
    /// A progress or summary line of a long or endless run (a monitor window, a study's
    /// time), shown as the line itself; the run gives the progress lines only when asked
    /// for progress.
    Status(String),
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Warning(text) => write!(f, "warning: {text}"),
            Notice::Note(text) => write!(f, "note: {text}"),
            Notice::Status(text) => f.write_str(text),
        }
    }
}

/// Receives a run's [`Notice`]s in the order they arise.
pub type Notify<'a> = &'a mut dyn FnMut(Notice);

/// Passes `notice` on when there is one.
pub(crate) fn notify_some(notify: Notify<'_>, notice: Option<Notice>) {
    if let Some(notice) = notice {
        notify(notice);
    }
}

/// Where a run's inputs and its components are: the pieces a front end needs besides the
/// flags.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    /// The device models run on.
    pub device: &'a Device,
    /// Where datasets are found.
    pub locator: &'a Locator,
    /// Where shipped checkpoints are found.
    pub models_dir: &'a ModelsDir,
    /// Show progress bars (on stderr).
    pub progress: bool,
}
