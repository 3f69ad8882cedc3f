//! `bnood fit` and `bnood score`: how models are resolved, loaded and checked for a
//! detector, which files a run reads, how a detector is fitted on a reference set or
//! loaded from a file, and how a test set is scored.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use clap::{Args, ValueEnum};

use crate::commands::paths::{catalogue_name_notice, check_output, image_origins, write_text};
use crate::commands::preprocess::{HELD_OUT_REFERENCE, held_out_reference};
use crate::commands::{Notice, Notify, RunContext, notify_some};
use crate::data::{Preprocess, load_named_prepared, seeds};
use crate::detect::{
    BnCalibration, DetectorArgs, DetectorKind, FittedDetector, LoadedDetector, ModelFile,
    PoolVerdict,
};
use crate::error::{Error, Result};
use crate::eval::progress::BarProgress;
use crate::models::zoo::ModelsDir;
use crate::models::{AnyModel, checkpoint};

/// The flags that say which detector to fit on which models and reference set (shared by
/// `bnood fit` and `bnood score`).
#[derive(Args, Debug, Clone)]
pub struct FitArgs {
    /// Trained model: a checkpoint file (`.bpk` with its `.json` sidecar) or a shipped model's name (`bnood models list`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Detector.
    #[arg(long, value_enum, default_value_t = DetectorKind::BnTest)]
    pub detector: DetectorKind,
    /// More independently trained models of the same data for WAIC (files or shipped names).
    #[arg(long, value_delimiter = ',')]
    pub ensemble: Vec<PathBuf>,
    /// Background model for --detector likelihood-ratio: trained with `bnood train --background-mutation` (file or shipped name).
    #[arg(long)]
    pub background: Option<PathBuf>,
    /// Reference set (in-distribution images the model did not train on): a catalogue name, an IDX file / image folder, or `held-out` (the part of the model's training set `bnood train --hold-out` kept out).
    #[arg(long, default_value = "fmnist-train")]
    pub reference: String,
    /// Reference images drawn at random (default 1000; all if fewer).
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
    pub reference_size: usize,
    /// Importance samples K of VAE scoring (default: the checkpoint's, 16).
    #[arg(long, allow_negative_numbers = true)]
    pub vae_samples: Option<usize>,
    #[command(flatten)]
    /// The detector's parameters.
    pub detector_args: DetectorArgs,
}

/// The flags of `bnood fit`.
#[derive(Args, Debug, Clone)]
pub struct FitCmd {
    /// The detector and what it is fitted on.
    #[command(flatten)]
    pub fit: FitArgs,
    /// The detector file to write (JSON; written atomically).
    #[arg(long)]
    pub out: PathBuf,
}

/// Output formats of `bnood score`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// One CSV row per image, after a header.
    Csv,
    /// One JSON document with the detector, the set and a row per image.
    Json,
}

// By hand, not derived: a derived `ValueEnum` would turn the variants' docs into a
// "Possible values" list and change `bnood score --help`.
impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &[Format::Csv, Format::Json]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }))
    }
}

/// The flags of `bnood score`.
#[derive(Args, Debug, Clone)]
pub struct ScoreArgs {
    /// The detector and what it is fitted on.
    #[command(flatten)]
    pub fit: FitArgs,
    /// A detector saved by `bnood fit`, used instead of fitting one (its models are checked).
    #[arg(long)]
    pub detector_file: Option<PathBuf>,
    /// Test set: a catalogue name (fmnist, mnist, kmnist, omniglot, rotation) or an IDX file / folder of PNG or JPEG images.
    #[arg(long)]
    pub test: String,
    /// Score only a random subset of this many test images.
    #[arg(long, allow_negative_numbers = true)]
    pub test_size: Option<usize>,
    /// Target false-positive rate of the decision column.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub fpr: f64,
    /// Level of the verdict on the whole test set as one pool (BN test, pool mode with in-pool calibration): the share of in-distribution pools declared OoD.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Output file (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The flags given on the command line (clap ids such as `r1`, `reference_size`), as
    /// the front end saw them: with `--detector-file`, a flag that would fit a detector is
    /// refused instead of silently ignored. Empty: nothing is checked.
    #[arg(skip)]
    pub given: Vec<String>,
}

/// Flags of `score` that choose or fit a detector, which a saved one (`--detector-file`)
/// has fixed, as `(clap id, --flag)`: every flag of [`FitArgs`] (detector parameters
/// included, so a new one is covered without being listed) but the model files, which are
/// checked against the saved detector's, and `--vae-samples`, refused with its own reason.
fn fitting_flags() -> Vec<(String, String)> {
    const CHECKED_ELSEWHERE: [&str; 4] = ["model", "ensemble", "background", "vae_samples"];
    <FitArgs as Args>::augment_args(clap::Command::new("score"))
        .get_arguments()
        .filter(|a| !CHECKED_ELSEWHERE.contains(&a.get_id().as_str()))
        .filter_map(|a| Some((a.get_id().to_string(), format!("--{}", a.get_long()?))))
        .collect()
}

/// What `bnood score` produced.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The scores as the `--format` asked (CSV or JSON text, one row per image).
    pub text: String,
    /// The file the text was written to (`--out`); `None`: the caller prints it.
    pub out: Option<PathBuf>,
    /// Images scored.
    pub images: usize,
    /// Images flagged OoD at the target false-positive rate.
    pub flagged: usize,
    /// The verdict on the test set as one pool, with the level `--alpha` it was decided at
    /// (BN test, pool mode).
    pub pool: Option<(PoolVerdict, f64)>,
}

impl Scored {
    /// The verdict on the test set as one pool in a line, when there is one.
    pub fn verdict_line(&self) -> Option<String> {
        let (v, alpha) = self.pool?;
        let ood = v.is_ood(alpha);
        Some(format!(
            "pool verdict: {} (p = {} {} α = {alpha}; BN window statistic of the {} test images in {} batch(es) of {}: {:.4} nats against {:.4} ± {:.4} per null batch of reference images, {} null batches from {} reference images: p = {}{})",
            if ood {
                "out of distribution"
            } else {
                "not shown to be out of distribution"
            },
            shown_p(v.p_value),
            if ood { "≤" } else { ">" },
            v.pool_size,
            v.batches,
            v.batch_size,
            v.statistic,
            v.null_mean,
            v.null_sd,
            v.null_batches,
            v.reference_size,
            shown_p(v.window_p_value),
            v.rank.map_or(String::new(), |(p, auroc)| format!(
                "; rank test of the pool's Δs against the held-out images' in the same batches: p = {}, AUROC {auroc:.3}; p of both, Bonferroni",
                shown_p(p)
            )),
        ))
    }
}

impl FitArgs {
    /// Replaces shipped model names in `--model`, `--ensemble` and `--background` by their
    /// files, found in `dirs` and MD5-verified; existing paths stay as given.
    ///
    /// # Errors
    /// A name is neither a file nor a shipped model, or its checkpoint fails its MD5.
    pub fn resolve_models(&mut self, dirs: &ModelsDir) -> Result<()> {
        if let Some(model) = &self.model {
            self.model = Some(dirs.resolve(&model.to_string_lossy())?);
        }
        for member in &mut self.ensemble {
            *member = dirs.resolve(&member.to_string_lossy())?;
        }
        if let Some(background) = &self.background {
            self.background = Some(dirs.resolve(&background.to_string_lossy())?);
        }
        Ok(())
    }

    /// The files a `fit` or `score` run reads: its models with their sidecars and
    /// optimiser state, a saved `detector_file`, a `test` set given as a path, and the
    /// reference set.
    pub fn inputs(&self, detector_file: Option<&Path>, test: Option<&str>) -> Vec<PathBuf> {
        let mut inputs = Vec::new();
        for m in self.model_paths() {
            inputs.push(m.clone());
            inputs.push(checkpoint::meta_path(m));
            inputs.push(checkpoint::optimizer_path(m));
        }
        inputs.extend(detector_file.map(Path::to_path_buf));
        inputs.extend(test.map(PathBuf::from));
        inputs.push(PathBuf::from(&self.reference));
        inputs
    }

    /// `--model`, then `--ensemble`, then `--background`: the order the registry builds
    /// detectors over.
    fn model_paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.model
            .iter()
            .chain(&self.ensemble)
            .chain(&self.background)
    }

    /// Refuses models the detector would not use, and a likelihood ratio without its
    /// background model; returns `--model`.
    fn check_models(&self) -> Result<&Path> {
        let Some(first) = &self.model else {
            return Err(Error::Invalid(
                "give the model: --model FILE or a shipped name such as realnvp-fmnist (or --detector-file to score with a saved detector)"
                    .into(),
            ));
        };
        if !self.ensemble.is_empty() && !self.detector.uses_ensemble() {
            return Err(Error::Invalid(format!(
                "--ensemble is used by the WAIC detector only, not by --detector {}: drop it, or pass --detector waic",
                self.detector.title()
            )));
        }
        match (&self.background, self.detector) {
            (Some(_), kind) if !kind.uses_background() => Err(Error::Invalid(format!(
                "--background is used by the likelihood-ratio detector only, not by --detector {}: drop it, or pass --detector likelihood-ratio",
                kind.id()
            ))),
            (None, kind) if kind.uses_background() => Err(Error::Invalid(
                "--detector likelihood-ratio needs --background MODEL: a model of the same data trained with `bnood train --background-mutation 0.2` (or a shipped background model, see `bnood models list`)".into(),
            )),
            _ => Ok(first),
        }
    }

    /// Loads the models (`--model`, `--ensemble`, `--background`, with `--vae-samples`) for
    /// scoring and checks that they form one ensemble; warns about a background model not
    /// trained with mutations and a `--vae-samples` no model uses.
    fn load_models(
        &self,
        dirs: &ModelsDir,
        device: &Device,
        notify: Notify<'_>,
    ) -> Result<(Vec<AnyModel>, Vec<ModelFile>)> {
        let loaded = self
            .model_paths()
            .map(|p| dirs.load(&p.to_string_lossy(), device, self.vae_samples))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if self.background.is_some()
            && let Some(background) = loaded.last()
            && background.meta.background_mutation.is_none()
        {
            notify(Notice::Warning(format!(
                "{} was not trained with --background-mutation: a likelihood ratio against an ordinary model of the same data carries little signal",
                background.path.display()
            )));
        }
        let files: Vec<ModelFile> = loaded.iter().map(ModelFile::from).collect();
        let paths: Vec<PathBuf> = loaded.iter().map(|l| l.path.clone()).collect();
        let models: Vec<AnyModel> = loaded.into_iter().map(|l| l.model).collect();
        let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        // The scored model and its ensemble members form one ensemble; a background model
        // is another kind of partner: only "not the scored model itself" applies to it.
        let members = models.len() - usize::from(self.background.is_some());
        AnyModel::check_ensemble(&paths[..members], &models[..members])?;
        if self.background.is_some() {
            AnyModel::check_background(&paths[..members], paths[members])?;
        }
        if self.vae_samples.is_some() && models.iter().all(|m| m.config().iw_samples().is_none()) {
            notify(Notice::Warning(format!(
                "--vae-samples has no effect: the model is a {}, not a VAE",
                models[0].display_name()
            )));
        }
        Ok((models, files))
    }

    /// Builds the detector of `--detector` over the loaded and checked models (its
    /// parameters checked before the reference set is read) and fits it on `--reference-size`
    /// images of `--reference`.
    ///
    /// # Errors
    /// A model is missing or does not fit the detector, a parameter is invalid, or the
    /// reference set cannot be read or does not match the model's image shape `[C, H, W]`.
    pub fn fit_detector(&self, ctx: RunContext<'_>, notify: Notify<'_>) -> Result<LoadedDetector> {
        self.check_models()?;
        let (models, files) = self.load_models(ctx.models_dir, ctx.device, notify)?;
        let shape = crate::models::LikelihoodModel::image_shape(&models[0]);
        // The reference goes through the scored model's preprocessing, as it was trained.
        let preprocess = files.first().map(|f| f.preprocess).unwrap_or_default();
        let mut detector = crate::detect::build(
            self.detector,
            models,
            ctx.device,
            &self
                .detector_args
                .params_calibrated_by_default(BnCalibration::InPool)?,
        )?;
        let seed = seeds::derive(self.detector_args.seed, seeds::REFERENCE_SUBSET);
        notify_some(notify, catalogue_name_notice(&self.reference));
        let reference = if self.reference == HELD_OUT_REFERENCE {
            let model = files.first().map(|f| f.path.clone()).unwrap_or_default();
            held_out_reference(&model, ctx.locator, Some(self.reference_size), seed)?
        } else {
            load_named_prepared(
                &self.reference,
                ctx.locator,
                Some(self.reference_size),
                seed,
                &preprocess,
                Some(shape),
            )?
            .0
        };
        detector.set_progress(BarProgress::hook(ctx.progress));
        Ok(LoadedDetector {
            detector: detector.fit(&reference)?,
            models: files,
        })
    }
}

impl FitCmd {
    /// Runs `bnood fit`: resolves shipped model names, refuses an `--out` that would
    /// overwrite an input, fits the detector and saves it to `--out`. Returns the fitted
    /// detector.
    ///
    /// # Errors
    /// As [`FitArgs::fit_detector`], or `--out` is refused or cannot be written.
    pub fn run(&self, ctx: RunContext<'_>, notify: Notify<'_>) -> Result<LoadedDetector> {
        let mut a = self.clone();
        a.fit.resolve_models(ctx.models_dir)?;
        check_output(&a.out, &a.fit.inputs(None, None))?;
        let fitted = a.fit.fit_detector(ctx, notify)?;
        crate::detect::save_detector(&fitted.detector, &fitted.models, &a.out)?;
        Ok(fitted)
    }
}

impl ScoreArgs {
    /// Checks every argument before any model is loaded or image scored; returns the flags
    /// with shipped model names resolved to their files.
    fn checked(&self, models_dir: &ModelsDir, notify: Notify<'_>) -> Result<Self> {
        if !(self.fpr > 0.0 && self.fpr < 1.0) {
            return Err(Error::Invalid(format!(
                "--fpr {} must lie strictly between 0 and 1 (e.g. 0.05)",
                self.fpr
            )));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(Error::Invalid(format!(
                "--alpha {} must lie strictly between 0 and 1 (e.g. 0.05)",
                self.alpha
            )));
        }
        notify_some(notify, catalogue_name_notice(&self.test));
        let mut a = self.clone();
        a.fit.resolve_models(models_dir)?;
        if let Some(out) = &a.out {
            let inputs = a.fit.inputs(a.detector_file.as_deref(), Some(&a.test));
            check_output(out, &inputs)?;
        }
        if a.detector_file.is_some() {
            for (id, flag) in fitting_flags() {
                // --seed also draws the --test-size subset: only then does it act.
                let acts = id == "seed" && a.test_size.is_some();
                if !acts && a.given.contains(&id) {
                    return Err(Error::Invalid(format!(
                        "{flag} has no effect with --detector-file: the saved detector's settings were fixed by `bnood fit`; drop {flag}, or fit a new detector with it"
                    )));
                }
            }
        }
        if a.detector_file.is_some() && a.fit.vae_samples.is_some() {
            return Err(Error::Invalid(
                "--vae-samples cannot change a saved detector (its K was fixed by `bnood fit`): drop it, or fit the detector again with it".into(),
            ));
        }
        Ok(a)
    }

    /// Loads `--detector-file`, checking it against the models given (if any).
    fn load_saved(&self, ctx: RunContext<'_>) -> Result<Option<LoadedDetector>> {
        let Some(file) = &self.detector_file else {
            return Ok(None);
        };
        let paths: Vec<PathBuf> = self.fit.model_paths().cloned().collect();
        let mut loaded = crate::detect::load_detector(
            file,
            (!paths.is_empty()).then_some(&paths[..]),
            ctx.device,
        )?;
        loaded
            .detector
            .set_progress(BarProgress::hook(ctx.progress));
        Ok(Some(loaded))
    }

    /// Runs `bnood score`: checks the arguments, loads the saved detector (cheap) or reads
    /// the model's image shape, reads the test set (headers first, so a wrong set fails
    /// before any fitting), fits the detector when none was saved, and scores every test
    /// image with its decision at `--fpr`. Writes `--out` when given.
    ///
    /// # Errors
    /// An argument is invalid, a file cannot be read or written, or a model, the detector
    /// or a set does not fit the others; each error says what to do.
    pub fn run(&self, ctx: RunContext<'_>, notify: Notify<'_>) -> Result<Scored> {
        let a = self.checked(ctx.models_dir, notify)?;
        let saved = a.load_saved(ctx)?;
        // The test set goes through the model's preprocessing (its sidecar's), as it was trained.
        let (shape, preprocess) = match (&saved, &a.fit.model) {
            (Some(loaded), _) => loaded
                .models
                .first()
                .map(|m| (Some(m.config.image_shape()), m.preprocess))
                .unwrap_or_default(),
            (None, Some(model)) => {
                let meta = checkpoint::read_meta(model)?;
                (Some(meta.model.image_shape()), meta.preprocess)
            }
            (None, None) => (None, Preprocess::default()),
        };
        let seed = seeds::derive(a.fit.detector_args.seed, seeds::TEST_SUBSET);
        let (test, indices) =
            load_named_prepared(&a.test, ctx.locator, a.test_size, seed, &preprocess, shape)?;
        let fitted = match saved {
            Some(loaded) => loaded,
            None => a.fit.fit_detector(ctx, notify)?,
        };
        let origins = image_origins(&a.test, &indices)?;
        let detector = &fitted.detector;
        let threshold = detector.threshold_for_fpr(a.fpr)?;
        notify_some(notify, pool_decisions_notice(detector));
        let scores = detector.score(&test)?;
        let text = match a.format {
            Format::Csv => scores.to_csv_traced(threshold, Some(&origins)),
            Format::Json => {
                let mut json =
                    scores.to_json_traced(detector.name(), test.name(), threshold, Some(&origins));
                if let Some(verdict) = &scores.pool {
                    json["pool"] = verdict.to_json(a.alpha);
                }
                format!("{json:#}\n")
            }
        };
        if let Some(path) = &a.out {
            write_text(path, &text)?;
        }
        Ok(Scored {
            text,
            out: a.out.clone(),
            images: scores.len(),
            flagged: scores.decisions(threshold).iter().filter(|f| **f).count(),
            pool: scores.pool.map(|v| (v, a.alpha)),
        })
    }
}

/// The note that the BN test's pool mode with the paper's calibration does not flag single
/// images at the target rate (`docs/results.md`, "Calibration"), and what does; `None` for
/// other detectors.
pub fn pool_decisions_notice(detector: &FittedDetector) -> Option<Notice> {
    (!detector.per_image_flags_calibrated()).then(|| {
        Notice::Note(
            "the BN test's pool mode with the paper's (held-out) calibration decides per pool: its per-image flags are correlated and exceed --fpr on average (8.3 % at 5 % on clean pools of 250); for per-image flags at --fpr pass --bn-calibration in-pool, --mode per-input or a per-input detector (docs/results.md, \"Calibration\")".into(),
        )
    })
}

/// A p-value in a sentence: three decimals, or two significant digits below 0.001.
fn shown_p(p: f64) -> String {
    if p >= 1e-3 {
        format!("{p:.3}")
    } else {
        format!("{p:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_a_saved_detector_fixed_are_every_detector_flag_but_the_models() {
        let flags: Vec<String> = fitting_flags().into_iter().map(|(_, f)| f).collect();
        for fixed in [
            "--detector",
            "--reference",
            "--reference-size",
            "--r1",
            "--bn-calibration",
            "--held-out-fraction",
            "--seed",
        ] {
            assert!(flags.iter().any(|f| f == fixed), "{fixed}: {flags:?}");
        }
        for checked in ["--model", "--ensemble", "--background", "--vae-samples"] {
            assert!(!flags.iter().any(|f| f == checked), "{checked}: {flags:?}");
        }
    }
}
