//! `bnood report`: re-renders a JSON report of `bnood eval` (Markdown tables and PNG
//! plots), or draws a learning curve (`<checkpoint>.curve.csv` of `bnood train`), without
//! recomputing anything.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::eval::report::Report;
use crate::models::curve::LearningCurve;

/// What [`rerender`] wrote.
#[derive(Debug, Clone)]
pub enum Rendered {
    /// A learning curve drawn as this PNG file.
    Curve(PathBuf),
    /// A report re-rendered.
    Report {
        /// The report read back (its `table2` is what a front end shows as text).
        report: Box<Report>,
        /// The Markdown file written.
        markdown: PathBuf,
        /// The PNG plots written.
        plots: Vec<PathBuf>,
    },
}

/// Re-renders `json` (a report of `bnood eval`, or a file ending in `.curve.csv`) into the
/// folder `out`, default: the input's folder. A report's files are named after its stem;
/// a curve's PNG after the CSV (`x.curve.csv` → `x.curve.png`).
///
/// # Errors
/// The file cannot be read or is neither a report nor a curve, or an output cannot be
/// written; the error says which file and why.
pub fn rerender(json: &Path, out: Option<&Path>) -> Result<Rendered> {
    if json.to_string_lossy().ends_with(".curve.csv") {
        let curve = LearningCurve::read(json)?;
        let png = match out {
            Some(dir) => dir.join(json.with_extension("png").file_name().unwrap_or_default()),
            None => json.with_extension("png"),
        };
        crate::eval::plot::curve_png(&png, &curve).map_err(crate::eval::EvalError::from)?;
        return Ok(Rendered::Curve(png));
    }
    let report = crate::eval::report::read_json(json)?;
    let dir = out
        .or_else(|| json.parent())
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let stem = json
        .file_stem()
        .map_or("report".into(), |s| s.to_string_lossy().into_owned());
    let (markdown, plots) = crate::eval::render(&report, &dir, &stem)?;
    Ok(Rendered::Report {
        report: Box::new(report),
        markdown,
        plots,
    })
}
