//! `bnood eval`: how the paper's protocol is assembled from its flags — the models (with
//! their background models), the sets, the studies asked for and the run's settings — into
//! an [`EvalJob`] that [`crate::eval::run`] runs.

use std::path::PathBuf;

use clap::Args;

use crate::backend::Backend;
use crate::commands::{Notice, Notify, RunContext};
use crate::data::{Locator, Preprocess, load_named_prepared};
use crate::detect::{BnTestParams, DetectorArgs, DetectorKind};
use crate::error::{Error, Result};
use crate::eval::{
    CalibrationSpec, ContaminationSpec, EvalJob, EvalSets, ModelEntry, Protocol, RunSettings,
    SetNames,
};
use crate::models::AnyModel;

/// The flags of `bnood eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// A model to evaluate, repeatable: `FILE[,FILE…]` (the first is scored; all form the
    /// WAIC ensemble), optionally named `NAME=FILE,…` (default name: RealNVP, VAE or PixelCNN++); a FILE
    /// may be a shipped model's name (`bnood models list`).
    #[arg(long, required = true)]
    pub model: Vec<String>,
    #[command(flatten)]
    /// The sets: in-distribution, reference, OoD, and their sizes.
    pub sets: SetNames,
    /// Detectors.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "logp,tperm,waic,bn"
    )]
    pub detectors: Vec<DetectorKind>,
    /// Skip Table 2 (every detector against every OoD set) and run only the other studies asked for.
    #[arg(long)]
    pub skip_table2: bool,
    /// Also run Table 5: the BN test with r1 = 0 and these r2 (e.g. 0.15,0.3,0.5,0.9).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub table5: Vec<f64>,
    /// Also run Figure 3: mean bits/dim at these ratios r (e.g. 0,0.1,…,1).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub sweep: Vec<f64>,
    /// Images per pool in the sweep.
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    pub sweep_size: usize,
    /// Also run the contamination grid: every detector against each of these OoD sets mixed into in-distribution pools (e.g. mnist,omniglot,kmnist,rotation).
    #[arg(long, value_delimiter = ',')]
    pub contamination: Vec<String>,
    /// OoD shares of the contamination pools.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.01,0.05,0.1,0.25,0.5,1",
        allow_negative_numbers = true
    )]
    pub fractions: Vec<f64>,
    /// Also run the BN test in its per-input mode (one scored image per batch of --per-input-batch-size) as a second BN column.
    #[arg(long)]
    pub bn_per_input: bool,
    /// Batch size b of the per-input BN test.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    pub per_input_batch_size: usize,
    /// Background model of the likelihood ratio: `FILE` (for the first --model) or `NAME=FILE` (for the model named NAME); a shipped name works as FILE.
    #[arg(long)]
    pub background: Vec<String>,
    /// Also run the calibration study over this many seeds: share of in-distribution images flagged at each --calibration-fprs target (0 = off).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub calibration_seeds: usize,
    /// Pool sizes of the calibration study.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,500",
        allow_negative_numbers = true
    )]
    pub calibration_pools: Vec<usize>,
    /// Target false-positive rates of the calibration study.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.01,0.05,0.1",
        allow_negative_numbers = true
    )]
    pub calibration_fprs: Vec<f64>,
    /// Images per contamination pool.
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
    pub pool_size: usize,
    /// Output folder of the report (JSON, Markdown, PNGs).
    #[arg(long, default_value = "runs/eval")]
    pub out: PathBuf,
    /// Report file stem.
    #[arg(long, default_value = "eval")]
    pub stem: String,
    /// Replace the report of an earlier run in --out with the same --stem (its `<stem>*.png` plots are removed first, so none of them is left beside the new report).
    #[arg(long)]
    pub overwrite: bool,
    /// Importance samples K of VAE scoring (default: the checkpoint's, 16).
    #[arg(long, allow_negative_numbers = true)]
    pub vae_samples: Option<usize>,
    #[command(flatten)]
    /// The detectors' parameters.
    pub detector_args: DetectorArgs,
}

impl EvalArgs {
    /// Refuses study settings that could only fail later, after Table 2 has run: OoD shares
    /// outside `(0, 1]`, Table 5 ratios outside `(0, 1]`, sweep ratios outside `[0, 1]`,
    /// calibration targets outside `(0, 1)`, empty pools.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the flag and the value.
    pub fn check_studies(&self) -> Result<()> {
        self.check_out()?;
        let bad = |flag: &str, v: f64, range: &str| {
            Err(Error::Invalid(format!(
                "{flag} {v} must lie in {range}; nothing was run"
            )))
        };
        if !self.contamination.is_empty()
            && let Some(&f) = self.fractions.iter().find(|f| !(**f > 0.0 && **f <= 1.0))
        {
            return bad(
                "--fractions",
                f,
                "(0, 1] (a share of OoD images in the pool)",
            );
        }
        if let Some(&r) = self.table5.iter().find(|r| !(**r > 0.0 && **r <= 1.0)) {
            return bad("--table5", r, "(0, 1] (a ratio r2 of the BN test)");
        }
        if let Some(&r) = self.sweep.iter().find(|r| !(0.0..=1.0).contains(*r)) {
            return bad("--sweep", r, "[0, 1] (a share of test images in a batch)");
        }
        if self.calibration_seeds > 0 {
            if let Some(&f) = self
                .calibration_fprs
                .iter()
                .find(|f| !(**f > 0.0 && **f < 1.0))
            {
                return bad("--calibration-fprs", f, "(0, 1) (a false-positive rate)");
            }
            if self.calibration_pools.contains(&0) {
                return Err(Error::Invalid(
                    "--calibration-pools holds 0: every pool needs at least one image".into(),
                ));
            }
        }
        if !self.contamination.is_empty() && self.pool_size == 0 {
            return Err(Error::Invalid(
                "--pool-size 0: every contamination pool needs at least one image".into(),
            ));
        }
        Ok(())
    }

    /// Refuses an `--out` folder that already holds a report of this `--stem`, unless
    /// `--overwrite`: then that report's files (`<stem>.json`, `<stem>.md`, `<stem>*.png`)
    /// are removed, so that no plot of the earlier run is left beside the new report.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an earlier report without `--overwrite` or an `--out` that is
    /// not a folder; [`Error::Io`] when a file cannot be removed.
    pub fn check_out(&self) -> Result<()> {
        if self.out.exists() && !self.out.is_dir() {
            return Err(Error::Invalid(format!(
                "--out {} is not a folder: give the folder the report goes into",
                self.out.display()
            )));
        }
        let report = self.out.join(format!("{}.json", self.stem));
        if !report.exists() {
            return Ok(());
        }
        if !self.overwrite {
            return Err(Error::Invalid(format!(
                "{} holds the report of an earlier run: pass another --out or --stem, or --overwrite to replace it",
                report.display()
            )));
        }
        let entries = std::fs::read_dir(&self.out).map_err(|source| Error::Io {
            path: self.out.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let earlier = name == format!("{}.json", self.stem)
                || name == format!("{}.md", self.stem)
                || (name.starts_with(&self.stem) && name.ends_with(".png"));
            if earlier && entry.path().is_file() {
                std::fs::remove_file(entry.path()).map_err(|source| Error::Io {
                    path: entry.path(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Loads every `--model` (files or shipped names) and gives each its `--background`
    /// model; warns when the likelihood ratio is asked for and a model has none.
    fn models(&self, ctx: RunContext<'_>, notify: Notify<'_>) -> Result<Vec<ModelEntry<AnyModel>>> {
        let (device, models_dir) = (ctx.device, ctx.models_dir);
        let mut models = Vec::new();
        for spec in &self.model {
            models.push(ModelEntry::load(
                spec,
                models_dir,
                device,
                self.vae_samples,
            )?);
        }
        for spec in &self.background {
            let (name, file) = match spec.split_once('=') {
                Some((n, f)) => (Some(n), f),
                None => (None, spec.as_str()),
            };
            let entry = match name {
                Some(n) => models.iter_mut().find(|m| m.name == n).ok_or_else(|| {
                    Error::Invalid(format!(
                        "--background {spec}: no --model is named `{n}` (give NAME=FILE with a name from --model NAME=…)"
                    ))
                })?,
                None => &mut models[0],
            };
            *entry = entry.clone().with_background(file, models_dir, device)?;
        }
        if self.detectors.contains(&DetectorKind::LikelihoodRatio)
            && models.iter().any(|m| m.background.is_none())
        {
            notify(Notice::Warning(
                "the likelihood ratio runs only for models given a --background model".into(),
            ));
        }
        Ok(models)
    }

    /// The contamination grid of `--contamination` (whole sets), if asked for.
    fn contamination(
        &self,
        locator: &Locator,
        preprocess: &Preprocess,
    ) -> Result<Option<ContaminationSpec>> {
        if self.contamination.is_empty() {
            return Ok(None);
        }
        let load = |name: &str| load_named_prepared(name, locator, None, 0, preprocess, None);
        Ok(Some(ContaminationSpec {
            inliers: load(&self.sets.in_set)?.0,
            outliers: self
                .contamination
                .iter()
                .map(|name| load(name).map(|(set, _)| set))
                .collect::<std::result::Result<_, _>>()?,
            fractions: self.fractions.clone(),
            pool_size: self.pool_size,
        }))
    }

    /// The calibration study of `--calibration-seeds` (whole sets), if asked for.
    fn calibration(
        &self,
        locator: &Locator,
        preprocess: &Preprocess,
    ) -> Result<Option<CalibrationSpec>> {
        if self.calibration_seeds == 0 {
            return Ok(None);
        }
        let load = |name: &str| load_named_prepared(name, locator, None, 0, preprocess, None);
        Ok(Some(CalibrationSpec {
            reference_source: load(&self.sets.reference)?.0,
            inliers: load(&self.sets.in_set)?.0,
            pool_sizes: self.calibration_pools.clone(),
            seeds: self.calibration_seeds,
            fprs: self.calibration_fprs.clone(),
        }))
    }

    /// Assembles the evaluation: loads the models and their background models, the sets
    /// (with `--seed` for their subsets) and the studies asked for, and records the run's
    /// settings (`backend`, the model files, `command`: the command line that started it).
    /// [`crate::eval::run`] runs the job and writes the report to `--out`.
    ///
    /// # Errors
    /// A model or set cannot be read or verified, a `--background NAME=…` names no model,
    /// or a detector parameter is invalid; each error says what to do.
    pub fn job(
        &self,
        backend: Backend,
        ctx: RunContext<'_>,
        command: Option<String>,
        notify: Notify<'_>,
    ) -> Result<EvalJob<AnyModel>> {
        self.check_studies()?;
        let locator = ctx.locator;
        let d = &self.detector_args;
        let models = self.models(ctx, notify)?;
        let files: Vec<String> = models.iter().flat_map(|m| m.files.clone()).collect();
        let preprocess = shared_preprocess(&files)?;
        let names = SetNames {
            seed: d.seed,
            preprocess,
            ..self.sets.clone()
        };
        let contamination = self.contamination(locator, &preprocess)?;
        let calibration = self.calibration(locator, &preprocess)?;
        let params = d.params()?;
        Ok(EvalJob {
            models,
            sets: EvalSets::load(&names, locator)?,
            protocol: Protocol {
                detectors: self.detectors.clone(),
                bn: params.bn,
                bn_per_input: self.bn_per_input.then(|| {
                    BnTestParams::per_input()
                        .per_input_batch_size(self.per_input_batch_size)
                        .draws(d.draws)
                        .held_out_fraction(d.held_out_fraction)
                        .seed(d.seed)
                }),
                progress: ctx.progress,
            },
            table2: !self.skip_table2,
            table5_r2: self.table5.clone(),
            sweep_ratios: self.sweep.clone(),
            sweep_size: self.sweep_size,
            contamination,
            calibration,
            seed: d.seed,
            out_dir: self.out.clone(),
            stem: self.stem.clone(),
            settings: RunSettings {
                backend: backend.name().to_string(),
                model_files: files,
                subset: self.sets.subset,
                reference_size: self.sets.reference_size,
                seed: d.seed,
                vae_samples: self.vae_samples,
                command,
                preset: None,
            },
            started: None,
        })
    }
}

/// The preprocessing the checkpoints `files` record, which every set of the evaluation goes
/// through: one for all (the models compared must take the same images).
///
/// # Errors
/// A sidecar cannot be read, or two models record different preprocessing.
fn shared_preprocess(files: &[String]) -> Result<Preprocess> {
    let mut shared: Option<(Preprocess, &str)> = None;
    for file in files {
        let preprocess =
            crate::models::checkpoint::read_meta(std::path::Path::new(file))?.preprocess;
        match shared {
            None => shared = Some((preprocess, file)),
            Some((first, first_file)) if first != preprocess => {
                return Err(Error::Invalid(format!(
                    "{first_file} was trained on images preprocessed with `{first}` but {file} with `{preprocess}`: an evaluation scores one set of images for every model, so compare models trained on the same preprocessing"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(shared.map(|(p, _)| p).unwrap_or_default())
}
