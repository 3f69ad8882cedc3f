//! The paper's evaluation protocol and its reports. Given trained likelihood models, an
//! in-distribution test set, a reference set and OoD sets, it runs the detectors of
//! `bnood-detect` as in Song, Song & Ermon's Table 2, Table 5 and Figure 3, plus studies of
//! the job most users have — flagging single OoD inputs among normal ones: a contamination
//! grid (detectors × OoD sets × OoD shares of the pool), a calibration study (share of
//! in-distribution images flagged at a target false-positive rate over many seeds) and the
//! window test's power ([`window_power`]); it writes the results as text and Markdown
//! tables, JSON, and PNG plots (ROC curves, bits/dim against the ratio `r`, AUROC against
//! the OoD share).
//!
//! [`experiment`] runs it end to end from model configurations (train, or reuse a matching
//! checkpoint, then evaluate): the example `fmnist_vs_kmnist` and the `bnood` command are
//! thin layers over [`experiment`], [`protocol`] and [`report`].

pub mod error;
pub mod experiment;
pub mod job;
pub mod paper;
pub mod plot;
#[cfg(feature = "cli")]
pub mod progress;
pub mod protocol;
pub mod report;
pub mod window_power;

/// The progress hook of the protocol's scoring passes: a terminal bar with the `cli`
/// feature when `show`, none otherwise.
pub(crate) fn bar_hook(show: bool) -> bnood_detect::ProgressHook {
    #[cfg(feature = "cli")]
    {
        progress::BarProgress::hook(show)
    }
    #[cfg(not(feature = "cli"))]
    {
        let _ = show;
        bnood_detect::ProgressHook::none()
    }
}

/// Prints a progress line of a run to stdout. A failed write (a closed pipe, a full disk)
/// is ignored: the line is information, the run's results are its files.
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

pub use bnood_detect::DetectorKind;
pub use error::{EvalError, Result};
pub use job::{
    CalibrationSpec, ContaminationSpec, EvalJob, EvalSets, ModelEntry, SetNames, Written, render,
    run,
};
pub use protocol::{
    CalibrationRow, ContaminationRow, DecisionUnit, DetectorSpec, PoolVerdictCount, Protocol, Row,
    Setting, SweepSeries, between_pool_interval, build_spec, calibration, contamination,
    mean_bits_per_dim, ood_table, r2_table, ratio_sweep, sampling_interval,
};
pub use report::{Report, RunSettings};
pub use window_power::{WindowPowerReport, WindowPowerRow, WindowPowerSpec, window_power};
