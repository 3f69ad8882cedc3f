//! The paper's evaluation protocol and its reports. Given trained likelihood models, an
//! in-distribution test set, a reference set and OoD sets, it runs the detectors of
//! `bnood-detect` as in Song, Song & Ermon's Table 2, Table 5 and Figure 3, plus a test-pool
//! contamination study, and writes the results as text and Markdown tables, JSON, and PNG
//! plots (ROC curves, bits/dim against the ratio `r`).
//!
//! The example `fmnist_vs_kmnist` and the `bnood eval` command are thin layers over
//! [`protocol`] and [`report`].

pub mod error;
pub mod job;
pub mod paper;
pub mod plot;
pub mod progress;
pub mod protocol;
pub mod report;

pub use error::{EvalError, Result};
pub use job::{ContaminationSpec, EvalJob, ModelEntry, Written, render, run};
pub use protocol::{
    ContaminationRow, DetectorKind, Protocol, Row, SweepSeries, contamination, ood_table, r2_table,
    ratio_sweep,
};
pub use report::Report;
