//! One evaluation run end to end: the tables and studies chosen, for one or more models,
//! printed as they finish and written to a folder as JSON, Markdown and PNG.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;

use bnood_data::{ImageSet, seeds};
use bnood_detect::{BnTest, Fit, LikelihoodModel};

use crate::protocol::{
    CalibrationRow, ContaminationRow, Protocol, Row, SweepSeries, build_spec, calibration,
    contamination, ood_table, r2_table, ratio_sweep,
};
use crate::report::{self, Report, slug};
use crate::{EvalError, Result};

/// A model to evaluate: its name in tables and its trained members.
#[derive(Debug, Clone)]
pub struct ModelEntry<M> {
    /// Name in tables, e.g. `"RealNVP"` (the paper's names give the paper's numbers).
    pub name: String,
    /// `members[0]` is scored by every detector; WAIC uses all members.
    pub members: Vec<M>,
    /// The files the members were loaded from, if any (recorded in reports).
    pub files: Vec<String>,
    /// The likelihood ratio's background model, if any.
    pub background: Option<M>,
}

impl ModelEntry<bnood_models::AnyModel> {
    /// Loads the entry `spec` names: `FILE[,FILE…]` (the first is scored; all form the WAIC
    /// ensemble), optionally named `NAME=FILE,…` (default name: the kind's, `RealNVP` or
    /// `VAE`), scored with `iw_samples` importance samples when given (VAE). Each `FILE` is a
    /// checkpoint path or the name of a shipped checkpoint (`realnvp-fmnist`, see
    /// [`bnood_models::zoo`]), found in `models_dir` and verified.
    ///
    /// # Errors
    /// [`EvalError::InvalidSetting`] for a spec without files; model loading errors
    /// (including unknown, missing or damaged shipped checkpoints).
    pub fn load(
        spec: &str,
        models_dir: &bnood_models::zoo::ModelsDir,
        device: &Device,
        iw_samples: Option<usize>,
    ) -> Result<Self> {
        let (name, list) = spec
            .split_once('=')
            .map_or((None, spec), |(n, l)| (Some(n), l));
        let loaded = list
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| models_dir.load(p, device, iw_samples))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let paths: Vec<PathBuf> = loaded.iter().map(|l| l.path.clone()).collect();
        let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let members: Vec<_> = loaded.into_iter().map(|l| l.model).collect();
        let Some(first) = members.first() else {
            return Err(EvalError::InvalidSetting(format!(
                "model `{spec}` names no file: give FILE[,FILE…] or NAME=FILE[,FILE…]"
            )));
        };
        let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        bnood_models::AnyModel::check_ensemble(&paths, &members)?;
        if iw_samples.is_some() && members.iter().all(|m| m.config().iw_samples().is_none()) {
            eprintln!(
                "warning: --vae-samples has no effect on model `{spec}`: it is a {}, not a VAE",
                first.display_name()
            );
        }
        Ok(Self {
            name: name.unwrap_or(first.display_name()).to_string(),
            members,
            files,
            background: None,
        })
    }

    /// Adds the background model (a checkpoint path or a shipped name, trained with
    /// `bnood train --background-mutation`) for the likelihood ratio.
    ///
    /// # Errors
    /// Model loading errors, and a model error when it is one of the members
    /// ([`AnyModel::check_background`](bnood_models::AnyModel::check_background)).
    pub fn with_background(
        mut self,
        spec: &str,
        models_dir: &bnood_models::zoo::ModelsDir,
        device: &Device,
    ) -> Result<Self> {
        let source = models_dir.source(spec)?;
        let members: Vec<&Path> = self.files.iter().map(Path::new).collect();
        bnood_models::AnyModel::check_background(&members, &source.path)?;
        self.background = Some(source.load(device, None)?.model);
        self.files.push(source.path.display().to_string());
        Ok(self)
    }
}

/// The contamination study's setting: every detector of the protocol against every OoD
/// set at every share.
#[derive(Debug, Clone)]
pub struct ContaminationSpec {
    /// In-distribution test images to draw from.
    pub inliers: ImageSet,
    /// OoD sets to draw from.
    pub outliers: Vec<ImageSet>,
    /// OoD shares of the pool, each in `(0, 1]`.
    pub fractions: Vec<f64>,
    /// Images per pool.
    pub pool_size: usize,
}

/// The calibration study's setting (see [`crate::protocol::calibration`]).
#[derive(Debug, Clone)]
pub struct CalibrationSpec {
    /// Where each seed's reference set is drawn from (e.g. all of Fashion-MNIST train).
    pub reference_source: ImageSet,
    /// In-distribution test images the pools are drawn from (e.g. all of Fashion-MNIST test).
    pub inliers: ImageSet,
    /// Pool sizes.
    pub pool_sizes: Vec<usize>,
    /// Number of seeds.
    pub seeds: usize,
    /// Target false-positive rates.
    pub fprs: Vec<f64>,
}

/// Which sets an evaluation loads, by name (see [`bnood_data::load_named`]), and how many
/// images of each; as command-line flags, a clap `Args` group.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct SetNames {
    /// Reference set (held-out in-distribution images) mixed into the BN test's batches.
    #[cfg_attr(feature = "cli", arg(long, default_value = "fmnist-train"))]
    pub reference: String,
    /// Reference images drawn at random.
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 1000, allow_negative_numbers = true)
    )]
    pub reference_size: usize,
    /// In-distribution test set.
    #[cfg_attr(feature = "cli", arg(long = "in", default_value = "fmnist"))]
    pub in_set: String,
    /// Images per test pool (in-distribution and each OoD set).
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = 500, allow_negative_numbers = true)
    )]
    pub subset: usize,
    /// OoD sets (catalogue names or paths).
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "ood",
            value_delimiter = ',',
            default_value = "rotation,mnist,omniglot,kmnist"
        )
    )]
    pub oods: Vec<String>,
    /// Seed of the subsets (each set draws from its own stream, [`bnood_data::seeds`]); on
    /// the command line, the detectors' `--seed`.
    #[cfg_attr(feature = "cli", arg(skip))]
    pub seed: u64,
    /// The preprocessing every set goes through: the models' (their checkpoints record
    /// it; `bnood train --resize` …); none for models of the catalogue's images.
    #[cfg_attr(feature = "cli", arg(skip))]
    pub preprocess: bnood_data::Preprocess,
}

/// The image sets of an evaluation.
#[derive(Debug, Clone)]
pub struct EvalSets {
    /// In-distribution images held out from scoring, mixed into the BN test's batches.
    pub reference: ImageSet,
    /// In-distribution test pool.
    pub test_in: ImageSet,
    /// OoD test pools (named as they should appear in tables: `"KMNIST"`, …).
    pub oods: Vec<ImageSet>,
}

impl EvalSets {
    /// Loads the sets `names` names, each subset drawn from its own seeded stream.
    ///
    /// # Errors
    /// [`EvalError::Data`] for sets that cannot be found or read, or unknown names.
    pub fn load(names: &SetNames, locator: &bnood_data::Locator) -> Result<Self> {
        let load = |name: &str, n: usize, stream: u64| {
            bnood_data::load_named_prepared(
                name,
                locator,
                Some(n),
                seeds::derive(names.seed, stream),
                &names.preprocess,
                None,
            )
            .map(|(set, _)| set)
        };
        Ok(Self {
            reference: load(
                &names.reference,
                names.reference_size,
                seeds::REFERENCE_SUBSET,
            )?,
            test_in: load(&names.in_set, names.subset, seeds::TEST_SUBSET)?,
            oods: names
                .oods
                .iter()
                .map(|name| load(name, names.subset, seeds::OOD_SUBSET))
                .collect::<std::result::Result<_, _>>()?,
        })
    }
}

/// What to run and where to write it.
#[derive(Debug, Clone)]
pub struct EvalJob<M> {
    /// Models.
    pub models: Vec<ModelEntry<M>>,
    /// The reference set, the in-distribution test pool and the OoD test pools.
    pub sets: EvalSets,
    /// Detectors and BN-test parameters of every study.
    pub protocol: Protocol,
    /// Run Table 2 (every detector against every OoD set); `false` runs only the other
    /// studies asked for.
    pub table2: bool,
    /// Table 5's `r2` values (`r1 = 0`); empty: no Table 5.
    pub table5_r2: Vec<f64>,
    /// Figure 3's ratios; empty: no sweep.
    pub sweep_ratios: Vec<f64>,
    /// Images per pool in the sweep (a subset of each test pool).
    pub sweep_size: usize,
    /// The contamination study, if wanted.
    pub contamination: Option<ContaminationSpec>,
    /// The calibration study, if wanted.
    pub calibration: Option<CalibrationSpec>,
    /// Seed of the subsets drawn here.
    pub seed: u64,
    /// Output folder (created if missing).
    pub out_dir: PathBuf,
    /// File-name stem of the report, e.g. `"fmnist_vs_kmnist"` → `fmnist_vs_kmnist.json`.
    pub stem: String,
    /// What to record in the report about the run (backend, model files, sizes…).
    pub settings: crate::report::RunSettings,
    /// When the run began, if before [`run`] (e.g. with training): the report's total time
    /// counts from here.
    pub started: Option<Instant>,
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
pub fn run<M: LikelihoodModel + Clone + 'static>(
    job: &EvalJob<M>,
    device: &Device,
    quiet: bool,
) -> Result<Written> {
    let started = job.started.unwrap_or_else(Instant::now);
    create_dir(&job.out_dir)?;
    let say = |s: String| {
        if !quiet {
            crate::say(format_args!("{s}"));
        }
    };
    let mut rep = Report {
        settings: job.settings.clone(),
        ..Report::default()
    };
    for entry in job.models.iter().filter(|_| job.table2) {
        rep.table2.extend(table2(job, entry, device, &say)?);
    }
    for entry in job.models.iter().filter(|_| !job.table5_r2.is_empty()) {
        rep.table5.extend(table5(job, entry, device, &say)?);
    }
    for entry in job.models.iter().filter(|_| !job.sweep_ratios.is_empty()) {
        rep.sweep.extend(sweep(job, entry, device, &say)?);
    }
    if let Some(spec) = &job.contamination {
        for entry in &job.models {
            let rows = contamination_study(job, spec, entry, device, &say)?;
            rep.contamination.push((entry.name.clone(), rows));
        }
        rep.contamination_sets = (!job.models.is_empty()).then(|| {
            (
                spec.inliers.name().to_string(),
                spec.outliers
                    .iter()
                    .map(|o| o.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        });
    }
    if let Some(spec) = &job.calibration {
        for entry in &job.models {
            let rows = calibration_study(job, spec, entry, device, &say)?;
            rep.calibration.push((entry.name.clone(), rows));
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

/// Table 2 of one model: every detector against every OoD set.
fn table2<M: LikelihoodModel + Clone + 'static>(
    job: &EvalJob<M>,
    entry: &ModelEntry<M>,
    device: &Device,
    say: &dyn Fn(String),
) -> Result<Vec<Row>> {
    let EvalSets {
        reference,
        test_in,
        oods,
    } = &job.sets;
    let rows = ood_table(
        &entry.members,
        entry.background.as_ref(),
        &entry.name,
        reference,
        test_in,
        oods,
        &job.protocol,
        device,
    )?;
    say(format!(
        "\n{} — {} ({}) vs OoD sets, reference {} images; paper = Song et al. Table 2\n{}",
        entry.name,
        test_in.name(),
        test_in.len(),
        reference.len(),
        report::text_table(&rows)
    ));
    Ok(rows)
}

/// Table 5 of one model: the BN test with `r1 = 0` and each `r2` of the job.
fn table5<M: LikelihoodModel + Clone + 'static>(
    job: &EvalJob<M>,
    entry: &ModelEntry<M>,
    device: &Device,
    say: &dyn Fn(String),
) -> Result<Vec<Row>> {
    let Some(model) = entry.members.first() else {
        return Ok(Vec::new());
    };
    let sets = &job.sets;
    let rows = r2_table(
        model,
        &entry.name,
        &sets.reference,
        &sets.test_in,
        &sets.oods,
        &job.table5_r2,
        &job.protocol,
        device,
    )?;
    say(format!(
        "\n{} — Table 5 (BN test, r1 = 0)\n{}",
        entry.name,
        report::text_table(&rows)
    ));
    Ok(rows)
}

/// Figure 3 of one model: mean bits/dim of each pool against the ratio `r`.
fn sweep<M: LikelihoodModel + Clone + 'static>(
    job: &EvalJob<M>,
    entry: &ModelEntry<M>,
    device: &Device,
    say: &dyn Fn(String),
) -> Result<Option<(String, Vec<SweepSeries>)>> {
    let Some(model) = entry.members.first() else {
        return Ok(None);
    };
    let sets = &job.sets;
    let mut bn = BnTest::new(model.clone(), device, job.protocol.bn.clone())?;
    Fit::set_progress(&mut bn, crate::bar_hook(job.protocol.progress));
    let bn = bn.fit(&sets.reference)?;
    let mut pools = vec![sweep_pool(&sets.test_in, job.sweep_size, job.seed)?];
    for ood in &sets.oods {
        pools.push(sweep_pool(ood, job.sweep_size, job.seed)?);
    }
    let series = ratio_sweep(&bn, &pools, &job.sweep_ratios)?;
    let table = report::markdown_sweep(&entry.name, &series);
    say(format!(
        "\n{} — Figure 3: mean bits/dim against r\n{table}",
        entry.name
    ));
    Ok(Some((entry.name.clone(), series)))
}

/// The contamination study of one model: every detector, fitted once, against every OoD
/// set at every share.
fn contamination_study<M: LikelihoodModel + Clone + 'static>(
    job: &EvalJob<M>,
    spec: &ContaminationSpec,
    entry: &ModelEntry<M>,
    device: &Device,
    say: &dyn Fn(String),
) -> Result<Vec<ContaminationRow>> {
    let mut rows = Vec::new();
    for det in job
        .protocol
        .specs(entry.members.len(), entry.background.is_some())?
    {
        let mut detector = build_spec(&det, &entry.members, entry.background.as_ref(), device)?;
        detector.set_progress(crate::bar_hook(job.protocol.progress));
        let detector = detector.fit(&job.sets.reference)?;
        for outliers in &spec.outliers {
            rows.extend(contamination(
                &detector,
                &det.setting,
                &spec.inliers,
                outliers,
                &spec.fractions,
                spec.pool_size,
                job.seed,
            )?);
        }
    }
    say(format!(
        "\n{} — contamination: {} pools of {} with a share of OoD images\n{}",
        entry.name,
        spec.inliers.name(),
        spec.pool_size,
        report::markdown_contamination(&entry.name, &rows)
    ));
    Ok(rows)
}

/// The calibration study of one model: every detector's flagged share of in-distribution
/// images at each target rate, pool size and seed.
fn calibration_study<M: LikelihoodModel + Clone + 'static>(
    job: &EvalJob<M>,
    spec: &CalibrationSpec,
    entry: &ModelEntry<M>,
    device: &Device,
    say: &dyn Fn(String),
) -> Result<Vec<CalibrationRow>> {
    let specs = job
        .protocol
        .specs(entry.members.len(), entry.background.is_some())?;
    let rows = calibration(
        &specs,
        &entry.members,
        entry.background.as_ref(),
        &spec.reference_source,
        job.sets.reference.len(),
        &spec.inliers,
        &spec.pool_sizes,
        spec.seeds,
        &spec.fprs,
        job.protocol.progress,
        device,
    )?;
    say(format!(
        "\n{} — calibration: share of in-distribution images flagged, {} seeds\n{}",
        entry.name,
        spec.seeds,
        report::markdown_calibration(&entry.name, &rows)
    ));
    Ok(rows)
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
        plots.extend(report::write_contamination_plots(model, rows, dir)?);
    }
    for (model, rows) in &rep.calibration {
        md.push_str(&format!(
            "\n### Calibration ({model}): share of in-distribution images flagged at each target\n\n{}",
            report::markdown_calibration(model, rows)
        ));
    }
    let markdown = dir.join(format!("{stem}.md"));
    std::fs::write(&markdown, md).map_err(|source| EvalError::Io {
        path: markdown.clone(),
        source,
    })?;
    Ok((markdown, plots))
}

fn sweep_pool(set: &ImageSet, n: usize, seed: u64) -> Result<ImageSet> {
    if n >= set.len() {
        Ok(set.clone())
    } else {
        Ok(set
            .subset(n, seeds::derive(seed, seeds::SWEEP_POOL))?
            .with_name(set.name()))
    }
}
