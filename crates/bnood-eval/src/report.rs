//! Reports: aligned text tables for the terminal, Markdown tables for docs/results.md, a
//! JSON file with every number, and PNG plots (ROC curves, Figure 3).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plot::{Series, line_png, roc_png};
use crate::protocol::{CalibrationRow, ContaminationRow, DecisionUnit, Row, Setting, SweepSeries};
use crate::{EvalError, Result, paper};
use bnood_detect::DetectorKind;

/// What an evaluation run was run with, recorded in its report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    /// The backend (`flex`, `ndarray`, `wgpu`).
    pub backend: String,
    /// The model files evaluated, in order.
    pub model_files: Vec<String>,
    /// The preset the models were trained from, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Images per test pool.
    pub subset: usize,
    /// Reference images.
    pub reference_size: usize,
    /// The run's seed.
    pub seed: u64,
    /// Importance samples of VAE scoring, when overridden.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vae_samples: Option<usize>,
    /// The command line, when run from the `bnood` command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// Everything one evaluation run measured, as written to its JSON report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// What was run: backend, model files, sizes, seed, command line.
    pub settings: RunSettings,
    /// Table 2 cells.
    pub table2: Vec<Row>,
    /// Table 5 cells (BN test with `r1 = 0` and several `r2`).
    pub table5: Vec<Row>,
    /// Figure 3 curves, per model.
    pub sweep: Vec<(String, Vec<SweepSeries>)>,
    /// Contamination study lines, per model.
    pub contamination: Vec<(String, Vec<ContaminationRow>)>,
    /// Names of the contamination study's in-distribution and OoD sets.
    #[serde(default)]
    pub contamination_sets: Option<(String, String)>,
    /// Calibration study lines, per model.
    #[serde(default)]
    pub calibration: Vec<(String, Vec<CalibrationRow>)>,
    /// Wall-clock seconds of the whole run.
    pub total_seconds: f64,
}

fn fmt_pair(p: Option<(f64, f64)>) -> String {
    p.map_or_else(|| "–".to_string(), |(a, b)| format!("{a:.2} / {b:.2}"))
}

/// Table 2 cells as an aligned text table, one line per cell, with the paper's AUROC / AP.
pub fn text_table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<8} {:<9} {:<9} {:>6} {:>6} {:>7} {:>8}   {:<11} {}\n",
        "model", "OoD", "detector", "AUROC", "AP", "FPR@95", "time", "paper", "setting"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<8} {:<9} {:<9} {:>6.3} {:>6.3} {:>7.3} {:>7.1}s   {:<11} {}\n",
            r.model,
            r.ood,
            r.detector.title(),
            r.auroc,
            r.average_precision,
            r.fpr_at_95_tpr,
            r.seconds,
            fmt_pair(paper::table2(&r.model, &r.ood, r.detector.title())),
            r.setting
        ));
    }
    out
}

fn ordered<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    items.filter(|s| seen.insert(*s)).collect()
}

/// Table 2 in the paper's layout as Markdown: a line per (model, OoD set), a column per
/// detector, each cell `ours AUROC / AP (paper AUROC / AP)`.
pub fn markdown_table2(rows: &[Row]) -> String {
    let detectors = ordered(rows.iter().map(|r| r.detector.title()));
    let mut out = format!("| Model | OoD | {} |\n", detectors.join(" | "));
    out.push_str(&format!("|---|---|{}\n", "---|".repeat(detectors.len())));
    for model in ordered(rows.iter().map(|r| r.model.as_str())) {
        for ood in ordered(
            rows.iter()
                .filter(|r| r.model == model)
                .map(|r| r.ood.as_str()),
        ) {
            let cells: Vec<String> = detectors
                .iter()
                .map(|d| {
                    rows.iter()
                        .find(|r| r.model == model && r.ood == ood && r.detector.title() == *d)
                        .map_or_else(
                            || "–".to_string(),
                            |r| {
                                format!(
                                    "**{:.2} / {:.2}** ({})",
                                    r.auroc,
                                    r.average_precision,
                                    fmt_pair(paper::table2(model, ood, d))
                                )
                            },
                        )
                })
                .collect();
            out.push_str(&format!("| {model} | {ood} | {} |\n", cells.join(" | ")));
        }
    }
    out
}

/// Table 5 as Markdown: a line per (model, OoD set), a column per `r2`, each cell
/// `ours AUROC / AP (paper)`.
pub fn markdown_table5(rows: &[Row]) -> String {
    let mut settings: Vec<&Setting> = Vec::new();
    for r in rows {
        if !settings.contains(&&r.setting) {
            settings.push(&r.setting);
        }
    }
    let mut out = "| Model | OoD |".to_string();
    for s in &settings {
        out.push_str(&format!(
            " r2 = {} |",
            s.r2().map_or("?".into(), |r| format!("{r}"))
        ));
    }
    out.push_str(&format!("\n|---|---|{}\n", "---|".repeat(settings.len())));
    for model in ordered(rows.iter().map(|r| r.model.as_str())) {
        for ood in ordered(
            rows.iter()
                .filter(|r| r.model == model)
                .map(|r| r.ood.as_str()),
        ) {
            let cells: Vec<String> = settings
                .iter()
                .map(|s| {
                    rows.iter()
                        .find(|r| r.model == model && r.ood == ood && r.setting == **s)
                        .map_or_else(
                            || "–".to_string(),
                            |r| {
                                let p = s.r2().and_then(|r2| paper::table5(model, ood, r2));
                                format!(
                                    "**{:.2} / {:.2}** ({})",
                                    r.auroc,
                                    r.average_precision,
                                    fmt_pair(p)
                                )
                            },
                        )
                })
                .collect();
            out.push_str(&format!("| {model} | {ood} | {} |\n", cells.join(" | ")));
        }
    }
    out
}

/// The ratio sweep as Markdown: a line per test pool, a column per `r`, bits/dim.
pub fn markdown_sweep(model: &str, series: &[SweepSeries]) -> String {
    let Some(first) = series.first() else {
        return String::new();
    };
    let mut out = format!("| {model} | n |");
    for (r, _) in &first.points {
        out.push_str(&format!(" r = {r:.2} |"));
    }
    out.push_str(&format!(
        "\n|---|---|{}\n",
        "---|".repeat(first.points.len())
    ));
    for s in series {
        out.push_str(&format!("| {} | {} |", s.set, s.n));
        for (_, bpd) in &s.points {
            out.push_str(&format!(" {bpd:.3} |"));
        }
        out.push('\n');
    }
    out
}

/// A detector's label in tables and plots: its title, with the BN test's setting.
fn detector_label(kind: DetectorKind, setting: &Setting) -> String {
    match setting {
        Setting::BnTest { .. } => format!("{} ({setting})", kind.title()),
        _ => kind.title().to_string(),
    }
}

/// The contamination grid as Markdown: one row per detector and OoD set, one column per OoD
/// share; each cell is `AUROC / FPR@95` within the pool, then (a second table) the shares of
/// in-distribution and OoD images flagged at a 5 % target.
pub fn markdown_contamination(model: &str, rows: &[ContaminationRow]) -> String {
    let mut fractions: Vec<f64> = Vec::new();
    let mut keys: Vec<(String, &str)> = Vec::new();
    for r in rows {
        if !fractions.iter().any(|f| (f - r.ood_fraction).abs() < 1e-12) {
            fractions.push(r.ood_fraction);
        }
        let key = (detector_label(r.detector, &r.setting), r.ood.as_str());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    // One table: a row per (detector, OoD set), a column per share, `cell` of each row.
    let table = |cell: &dyn Fn(&ContaminationRow) -> Option<String>| {
        let mut out = format!("| {model}: detector | OoD set |");
        for f in &fractions {
            out.push_str(&format!(" {:.0} % |", f * 100.0));
        }
        out.push_str(&format!("\n|---|---|{}\n", "---|".repeat(fractions.len())));
        for (label, ood) in &keys {
            out.push_str(&format!("| {label} | {ood} |"));
            for f in &fractions {
                let text = rows
                    .iter()
                    .find(|r| {
                        r.ood == *ood
                            && (r.ood_fraction - f).abs() < 1e-12
                            && detector_label(r.detector, &r.setting) == *label
                    })
                    .and_then(cell);
                out.push_str(&format!(" {} |", text.as_deref().unwrap_or("—")));
            }
            out.push('\n');
        }
        out
    };
    let mut out = table(&|r| Some(format!("{:.3} / {:.3}", r.auroc, r.fpr_at_95_tpr)));
    out.push_str("\nCells: within-pool AUROC / FPR@95. Flagged at a 5 % target (in-distribution % / OoD %):\n\n");
    out.push_str(&table(&|r| {
        r.flagged_in_at_5
            .zip(r.flagged_ood_at_5)
            .map(|(i, o)| format!("{:.1} / {:.1}", i * 100.0, o * 100.0))
    }));
    if rows.iter().any(|r| r.pool_p_value.is_some()) {
        out.push_str("
The pool verdict's p-value (the BN window statistic of the pool against null batches of reference images, two-sided; with in-pool calibration combined by Bonferroni with the rank test of the pool's Δs against the held-out images' in the same batches; one pool per cell):

");
        out.push_str(&table(&|r| r.pool_p_value.map(|p| format!("{p:.2e}"))));
    }
    out
}

/// One PNG per OoD set of the contamination grid: within-pool AUROC against the OoD share,
/// one curve per detector, written as `<stem>-<ood>.png` beside `path`'s stem. Returns the
/// files written.
///
/// # Errors
/// Plot and I/O errors.
pub fn write_contamination_plots(
    model: &str,
    rows: &[ContaminationRow],
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let mut oods: Vec<&str> = Vec::new();
    for r in rows {
        if !oods.contains(&r.ood.as_str()) {
            oods.push(&r.ood);
        }
    }
    let mut written = Vec::new();
    for ood in oods {
        let mut curves: Vec<Series> = Vec::new();
        for r in rows.iter().filter(|r| r.ood == ood) {
            let label = detector_label(r.detector, &r.setting);
            let point = (r.ood_fraction * 100.0, r.auroc);
            match curves.iter_mut().find(|c| c.label == label) {
                Some(c) => c.points.push(point),
                None => curves.push(Series {
                    label,
                    points: vec![point],
                }),
            }
        }
        if curves.iter().all(|c| c.points.len() < 2) {
            continue;
        }
        let name = if ood.is_empty() { "ood" } else { ood };
        let path = dir.join(format!("contamination-{}-{}.png", slug(model), slug(name)));
        line_png(
            &path,
            &format!("{model}: within-pool AUROC, {name} mixed into the pool"),
            "OoD share of the pool (%)",
            "AUROC",
            &curves,
        )?;
        written.push(path);
    }
    Ok(written)
}

/// The calibration study as Markdown: per detector, pool size and target, what the detector
/// decides on (image or pool), the share of in-distribution images flagged over all seeds,
/// the two 95 % intervals (`bnood_eval::sampling_interval` for independent flags,
/// `bnood_eval::between_pool_interval` with the pool as the unit), whether the share lies
/// within the one that fits the detector (`CalibrationRow::yardstick`), and the per-seed
/// range; a closing line says which interval judges which detector, and why.
pub fn markdown_calibration(model: &str, rows: &[CalibrationRow]) -> String {
    let mut out = format!(
        "| {model}: detector | decides per | pool | seeds | target | flagged | 95 % interval, independent images | 95 % interval, between pools | within | per-seed range | pools declared OoD (α = target) |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let unit = match r.decisions {
            Some(DecisionUnit::Image) => "image",
            Some(DecisionUnit::Pool) => "pool",
            None => "–",
        };
        let verdicts = r.pool_verdicts.as_ref().map_or_else(
            || "–".to_string(),
            |v| {
                format!(
                    "{}/{} = {:.3} (95 % [{:.3}, {:.3}])",
                    v.rejected,
                    v.pools,
                    v.rate(),
                    v.interval.0,
                    v.interval.1
                )
            },
        );
        let between = r
            .between_pool_interval
            .map_or_else(|| "–".to_string(), |(a, b)| format!("[{a:.4}, {b:.4}]"));
        out.push_str(&format!(
            "| {} | {unit} | {} | {} | {:.2} | **{:.4}** ({}/{}) | [{:.4}, {:.4}] | {between} | {} | {:.3}–{:.3} | {verdicts} |\n",
            detector_label(r.detector, &r.setting),
            r.pool_size,
            r.seeds,
            r.target_fpr,
            r.share,
            r.flagged,
            r.total,
            r.interval.0,
            r.interval.1,
            if r.is_within() { "yes" } else { "**no**" },
            r.per_seed_range.0,
            r.per_seed_range.1
        ));
    }
    out.push_str(
        "\n*within*: judged by the binomial interval when the detector decides per image (its flags are independent); by the between-pool interval (target ± t·sd/√seeds of the per-pool shares) when it decides per pool, because a pool's images share its mixed batches and their flags are correlated, so the pool, not the image, is the independent unit. *pools declared OoD*: the pool verdict (`bnood_detect::PoolVerdict`: the BN window statistic against null batches of reference images; with in-pool calibration combined with the rank test of the pool's Δs against the held-out images' in the same batches) at level α = the target, over the in-distribution pools; a verdict of level α falls in the binomial interval 95 % of the time.\n",
    );
    out
}

/// Reads a report written by [`write_json`].
///
/// # Errors
/// [`EvalError::Io`] if the file cannot be read, [`EvalError::NotAReport`] if it is not a
/// report (not a regular file, far too large, or not a report's JSON).
pub fn read_json(path: &Path) -> Result<Report> {
    /// Far above any report (they are kilobytes), far below what would exhaust memory.
    const MAX_REPORT_BYTES: u64 = 256 << 20;
    let io = |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let not_a_report = |reason: String| EvalError::NotAReport {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_a_report("it is not a regular file".into()));
    }
    if meta.len() > MAX_REPORT_BYTES {
        return Err(not_a_report(format!(
            "it has {} bytes, more than a report ever has",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    serde_json::from_slice(&bytes).map_err(|e| not_a_report(e.to_string()))
}

/// Writes `report` as pretty JSON to `path` (atomically: a temporary file, then a rename).
///
/// # Errors
/// [`EvalError::Io`] if the file cannot be written.
pub fn write_json(report: &Report, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    bnood_data::atomic::write_atomically(path, |f| std::io::Write::write_all(f, text.as_bytes()))
        .map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A file-name-safe version of `s` (`a-z0-9` and `-`).
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Draws one ROC PNG per (model, OoD set) of `rows` into `dir`, a curve per detector, and
/// returns the files written (`roc-<model>-<ood>.png`).
///
/// # Errors
/// Plot and I/O errors.
pub fn write_roc_plots(rows: &[Row], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for model in ordered(rows.iter().map(|r| r.model.as_str())) {
        for ood in ordered(
            rows.iter()
                .filter(|r| r.model == model)
                .map(|r| r.ood.as_str()),
        ) {
            let curves: Vec<Series> = rows
                .iter()
                .filter(|r| r.model == model && r.ood == ood)
                .map(|r| Series {
                    label: format!("{} (AUROC {:.3})", r.detector, r.auroc),
                    points: r.roc.clone(),
                })
                .collect();
            let in_name = rows
                .iter()
                .find(|r| r.model == model)
                .map_or("", |r| r.in_distribution.as_str());
            let path = dir.join(format!("roc-{}-{}.png", slug(model), slug(ood)));
            roc_png(&path, &format!("{model}: {in_name} vs {ood}"), &curves)?;
            files.push(path);
        }
    }
    Ok(files)
}

/// Draws Figure 3 for one model into `path`: mean bits/dim against `r`, a curve per pool.
///
/// # Errors
/// Plot and I/O errors.
pub fn write_sweep_plot(model: &str, series: &[SweepSeries], path: &Path) -> Result<()> {
    let curves: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.set.clone(),
            points: s.points.clone(),
        })
        .collect();
    line_png(
        path,
        &format!("{model}: mean bits/dim vs ratio r"),
        "r (share of test images in each batch of b)",
        "mean bits/dim",
        &curves,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PoolVerdictCount;

    fn row(decisions: Option<DecisionUnit>) -> CalibrationRow {
        CalibrationRow {
            detector: DetectorKind::BnTest,
            setting: Setting::Default,
            decisions,
            pool_size: 250,
            seeds: 30,
            target_fpr: 0.05,
            flagged: 480,
            total: 7500,
            share: 0.064,
            calibration_images: 200,
            interval: (0.044, 0.056),
            between_pool_interval: Some((0.03, 0.07)),
            per_seed_shares: vec![0.064; 30],
            per_seed_range: (0.0, 0.2),
            pool_verdicts: None,
        }
    }

    #[test]
    fn calibration_table_counts_the_pools_a_pool_verdict_declared_ood() {
        let md = markdown_calibration("m", &[row(Some(DecisionUnit::Pool))]);
        assert!(md.contains("| 0.000–0.200 | – |"), "no verdict: {md}");
        let with = CalibrationRow {
            pool_verdicts: Some(PoolVerdictCount::new(2, 30, 0.05)),
            ..row(Some(DecisionUnit::Pool))
        };
        let md = markdown_calibration("m", &[with]);
        // 0.05 ± 1.96·√(0.05·0.95/30) = 0.05 ± 0.078, clipped at 0.
        assert!(
            md.contains("| 2/30 = 0.067 (95 % [0.000, 0.128]) |"),
            "{md}"
        );
    }

    #[test]
    fn calibration_table_names_the_decision_unit_and_judges_by_its_interval() {
        let md = markdown_calibration("m", &[row(Some(DecisionUnit::Pool))]);
        assert!(md.contains("| pool | 250 | 30 | 0.05 |"), "{md}");
        assert!(md.contains("[0.0300, 0.0700] | yes |"), "{md}");
        let md = markdown_calibration("m", &[row(Some(DecisionUnit::Image))]);
        assert!(md.contains("| image | 250 |"), "{md}");
        assert!(md.contains("[0.0300, 0.0700] | **no** |"), "{md}");
        assert!(md.contains("*within*: judged by"), "{md}");
    }
}
