//! One evaluation run end to end: the tables and studies chosen, for one or more models,
//! printed as they finish and written to a folder as JSON, Markdown and PNG.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;

use bnood_data::ImageSet;
use bnood_detect::{BnTest, Detector, LikelihoodModel};

use crate::progress::BarProgress;
use crate::protocol::{Protocol, contamination, ood_table, r2_table, ratio_sweep};
use crate::report::{self, Report, slug};
use crate::{EvalError, Result};

/// A model to evaluate: its name in tables and its trained members.
#[derive(Debug, Clone)]
pub struct ModelEntry<M> {
    /// Name in tables, e.g. `"RealNVP"` (the paper's names give the paper's numbers).
    pub name: String,
    /// `members[0]` is scored by every detector; WAIC uses all members.
    pub members: Vec<M>,
}

/// The contamination study's setting.
#[derive(Debug, Clone)]
pub struct ContaminationSpec {
    /// In-distribution test images to draw from.
    pub inliers: ImageSet,
    /// OoD images to draw from.
    pub outliers: ImageSet,
    /// OoD shares of the pool, each in `(0, 1]`.
    pub fractions: Vec<f64>,
    /// Images per pool.
    pub pool_size: usize,
}

/// What to run and where to write it.
#[derive(Debug, Clone)]
pub struct EvalJob<M> {
    /// Models.
    pub models: Vec<ModelEntry<M>>,
    /// In-distribution images held out from scoring, mixed into the BN test's batches.
    pub reference: ImageSet,
    /// In-distribution test pool.
    pub test_in: ImageSet,
    /// OoD test pools (named as they should appear in tables: `"KMNIST"`, …).
    pub oods: Vec<ImageSet>,
    /// Detectors and BN-test parameters of Table 2.
    pub protocol: Protocol,
    /// Table 5's `r2` values (`r1 = 0`); empty: no Table 5.
    pub table5_r2: Vec<f64>,
    /// Figure 3's ratios; empty: no sweep.
    pub sweep_ratios: Vec<f64>,
    /// Images per pool in the sweep (a subset of each test pool).
    pub sweep_size: usize,
    /// The contamination study, if wanted.
    pub contamination: Option<ContaminationSpec>,
    /// Seed of the subsets drawn here.
    pub seed: u64,
    /// Output folder (created if missing).
    pub out_dir: PathBuf,
    /// File-name stem of the report, e.g. `"fmnist_vs_kmnist"` → `fmnist_vs_kmnist.json`.
    pub stem: String,
    /// Extra settings to record in the report (backend, model files, subset sizes…).
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// What a run wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The report.
    pub report: Report,
    /// The JSON report.
    pub json: PathBuf,
    /// The Markdown tables.
    pub markdown: PathBuf,
    /// PNG plots.
    pub plots: Vec<PathBuf>,
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| EvalError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Runs `job`: Table 2 for every model, then (if asked) Table 5, Figure 3 and the
/// contamination study; prints each table to stdout as it finishes (`quiet = false`) and
/// writes `<stem>.json`, `<stem>.md` and the PNGs into `job.out_dir`.
///
/// # Errors
/// Protocol errors ([`crate::ood_table`] and friends), plot and I/O errors.
pub fn run<M: LikelihoodModel + Clone>(
    job: &EvalJob<M>,
    device: &Device,
    quiet: bool,
) -> Result<Written> {
    let started = Instant::now();
    create_dir(&job.out_dir)?;
    let say = |s: &str| {
        if !quiet {
            println!("{s}");
        }
    };
    let mut rep = Report {
        settings: job.settings.clone(),
        ..Report::default()
    };
    for entry in &job.models {
        let rows = ood_table(
            &entry.members,
            &entry.name,
            &job.reference,
            &job.test_in,
            &job.oods,
            &job.protocol,
            device,
        )?;
        say(&format!(
            "\n{} — {} ({}) vs OoD sets, reference {} images; paper = Song et al. Table 2\n{}",
            entry.name,
            job.test_in.name(),
            job.test_in.len(),
            job.reference.len(),
            report::text_table(&rows)
        ));
        rep.table2.extend(rows);
    }

    if !job.table5_r2.is_empty() {
        for entry in &job.models {
            let Some(model) = entry.members.first() else {
                continue;
            };
            let rows = r2_table(
                model,
                &entry.name,
                &job.reference,
                &job.test_in,
                &job.oods,
                &job.table5_r2,
                &job.protocol,
                device,
            )?;
            say(&format!(
                "\n{} — Table 5 (BN test, r1 = 0)\n{}",
                entry.name,
                report::text_table(&rows)
            ));
            rep.table5.extend(rows);
        }
    }

    let needs_fitted_bn = !job.sweep_ratios.is_empty() || job.contamination.is_some();
    if needs_fitted_bn {
        for entry in &job.models {
            let Some(model) = entry.members.first() else {
                continue;
            };
            let mut bn = BnTest::new(model.clone(), device, job.protocol.bn.clone())?;
            bn.set_progress(BarProgress::hook(job.protocol.progress));
            bn.fit(&job.reference)?;
            if !job.sweep_ratios.is_empty() {
                let mut pools = vec![sweep_pool(&job.test_in, job.sweep_size, job.seed)?];
                for ood in &job.oods {
                    pools.push(sweep_pool(ood, job.sweep_size, job.seed)?);
                }
                let series = ratio_sweep(&bn, &pools, &job.sweep_ratios)?;
                let table = report::markdown_sweep(&entry.name, &series);
                say(&format!(
                    "\n{} — Figure 3: mean bits/dim against r\n{table}",
                    entry.name
                ));
                rep.sweep.push((entry.name.clone(), series));
            }
            if let Some(spec) = &job.contamination {
                let rows = contamination(
                    &bn,
                    &spec.inliers,
                    &spec.outliers,
                    &spec.fractions,
                    spec.pool_size,
                    job.seed,
                )?;
                let table = report::markdown_contamination(&entry.name, &rows);
                say(&format!(
                    "\n{} — contamination: {} pools with {} mixed in ({})\n{table}",
                    entry.name,
                    spec.inliers.name(),
                    spec.outliers.name(),
                    bnood_detect_setting(&job.protocol)?
                ));
                rep.contamination_sets = Some((
                    spec.inliers.name().to_string(),
                    spec.outliers.name().to_string(),
                ));
                rep.contamination.push((entry.name.clone(), rows));
            }
        }
    }
    rep.total_seconds = started.elapsed().as_secs_f64();
    let json = job.out_dir.join(format!("{}.json", job.stem));
    report::write_json(&rep, &json)?;
    let (markdown, plots) = render(&rep, &job.out_dir, &job.stem)?;
    Ok(Written {
        report: rep,
        json,
        markdown,
        plots,
    })
}

/// Writes the Markdown tables (`<stem>.md`) and every PNG of `rep` into `dir`: ROC curves
/// per (model, OoD set) and Figure 3 per model. Used by [`run`], and to re-render a saved
/// JSON report without recomputing it.
///
/// # Errors
/// Plot and I/O errors.
pub fn render(rep: &Report, dir: &Path, stem: &str) -> Result<(PathBuf, Vec<PathBuf>)> {
    create_dir(dir)?;
    let mut md = String::new();
    let mut plots = Vec::new();
    if !rep.table2.is_empty() {
        md.push_str("### Table 2 (ours in bold, paper in parentheses): AUROC / AP\n\n");
        md.push_str(&report::markdown_table2(&rep.table2));
        plots.extend(report::write_roc_plots(&rep.table2, dir)?);
    }
    if !rep.table5.is_empty() {
        md.push_str("\n### Table 5: BN test with r1 = 0 (running statistics) and several r2 (ours in bold, paper in parentheses)\n\n");
        md.push_str(&report::markdown_table5(&rep.table5));
    }
    for (model, series) in &rep.sweep {
        let path = dir.join(format!("figure3-{}.png", slug(model)));
        report::write_sweep_plot(model, series, &path)?;
        plots.push(path);
        md.push_str(&format!(
            "\n### Figure 3 ({model}): mean bits/dim of test images against r\n\n{}",
            report::markdown_sweep(model, series)
        ));
    }
    for (model, rows) in &rep.contamination {
        let (inl, outl) = rep
            .contamination_sets
            .clone()
            .unwrap_or_else(|| ("in-distribution".into(), "OoD".into()));
        md.push_str(&format!(
            "\n### Contamination ({model}): {inl} test pools with a share of {outl}\n\n{}",
            report::markdown_contamination(model, rows)
        ));
    }
    let markdown = dir.join(format!("{stem}.md"));
    std::fs::write(&markdown, md).map_err(|source| EvalError::Io {
        path: markdown.clone(),
        source,
    })?;
    Ok((markdown, plots))
}

fn bnood_detect_setting(protocol: &Protocol) -> Result<String> {
    crate::protocol::bn_setting(&protocol.bn)
}

fn sweep_pool(set: &ImageSet, n: usize, seed: u64) -> Result<ImageSet> {
    if n >= set.len() {
        Ok(set.clone())
    } else {
        Ok(set.subset(n, seed ^ 0x5EE9)?.with_name(set.name()))
    }
}
