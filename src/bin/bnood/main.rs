//! `bnood`: datasets, training, fitting, scoring and the paper's evaluation from the command
//! line. A thin front end: every step is a library function of the `bnood-*` crates.
//!
//! ```text
//! bnood datasets list|verify|download
//! bnood models list
//! bnood train --model realnvp --preset cpu --minutes 20 --out runs/realnvp-cpu-seed0.bpk
//! bnood fit   --model realnvp-fmnist --detector bn --out detector.json
//! bnood score --detector-file detector.json --test my_images/ --format csv --out scores.csv
//! bnood monitor --model realnvp-fmnist --input incoming/ --follow --window 64
//! bnood eval  --model runs/realnvp-cpu-seed0.bpk,runs/realnvp-cpu-seed1.bpk --out runs/eval
//! ```
//! Every subcommand has `--help`. Errors are one sentence on stderr and exit status 1.

mod monitor;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use bnood::backend::{Backend, resolve};
use bnood::data::{
    Dataset, Locator, Survey, is_catalogue_name, load_named, load_named_indexed, seeds, survey,
};
use bnood::detect::{
    BnCalibration, BnTestParams, DetectorArgs, DetectorKind, DetectorParams, FittedDetector,
    ImageOrigin, LoadedDetector, ModelFile, ParamGuard,
};
use bnood::error::{Error, Result};
use bnood::eval::{
    CalibrationSpec, ContaminationSpec, EvalJob, EvalSets, ModelEntry, Protocol, RunSettings,
    SetNames,
};
use bnood::models::curve::{LearningCurve, curve_path};
use bnood::models::held_out::HeldOutSet;
use bnood::models::train::{Evaluator, FlatRule, TrainBudget, TrainConfig, train_observed};
use bnood::models::zoo::{self, Availability, ModelsDir};
use bnood::models::{AnyModel, ModelPreset, checkpoint};
use burn::tensor::Device;

#[derive(Parser)]
#[command(
    name = "bnood",
    version,
    about = "Unsupervised out-of-distribution detection with generative models and batch normalization (Song, Song & Ermon)."
)]
struct Cli {
    /// Compute backend: flex (CPU), ndarray (CPU) or wgpu (GPU) [default: $BNOOD_DEVICE, else flex].
    #[arg(long, global = true, value_enum, ignore_case = true)]
    backend: Option<Backend>,
    /// Folder searched first for datasets (then $BNOOD_DATA_DIR, ./datasets, Debian's folder).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Folder searched first for shipped checkpoints (then $BNOOD_MODELS_DIR, ./models, the source tree's models/).
    #[arg(long, global = true)]
    models_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List, locate, verify (checksums) or download the catalogue's datasets.
    Datasets {
        #[arg(value_enum, default_value_t = DatasetsAction::List)]
        action: DatasetsAction,
        /// Only these datasets (e.g. fmnist,kmnist); default: all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// The trained checkpoints shipped in models/: names for --model, how each was trained, whether it verifies here.
    Models {
        #[arg(value_enum, default_value_t = ModelsAction::List)]
        action: ModelsAction,
    },
    /// Train a RealNVP, VAE or PixelCNN++ with BatchNorm and save it (checkpoint + JSON sidecar).
    Train(TrainArgs),
    /// Fit a detector on a reference set and save it, to score new data without refitting.
    Fit(FitCmd),
    /// Score a test set with one detector; one row per image: index, score, p-value, decision.
    Score(ScoreArgs),
    /// Cut a stream of inputs into windows of M and give each window a p-value for "contains OoD inputs" (BN window test; KS and MMD baselines); --study measures its power.
    Monitor(monitor::MonitorArgs),
    /// The paper's protocol (Table 2, optionally Table 5, Figure 3, contamination) for several OoD sets.
    Eval(EvalArgs),
    /// Re-render a JSON report of `bnood eval` (Markdown tables and PNG plots), or draw a learning curve (`<checkpoint>.curve.csv` of `bnood train`), without recomputing.
    Report {
        /// The JSON report, or a `.curve.csv` learning curve.
        json: PathBuf,
        /// Output folder (default: the report's folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DatasetsAction {
    /// Where each file is found, or that it is missing.
    List,
    /// Load every file that is found, checking its MD5 and format.
    Verify,
    /// Download missing files from the official URLs (checksum-verified).
    Download,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelsAction {
    /// Each shipped checkpoint: name, training (steps, epochs, final bits/dim), file and MD5 check.
    List,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    model: ModelPreset,
    /// Training set: fmnist-train, or a path to an IDX file / PNG folder.
    #[arg(long, default_value = "fmnist-train")]
    dataset: String,
    #[command(flatten)]
    budget: TrainBudget,
    /// Initialisation seed (also of batch order and dequantisation noise).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output checkpoint (`.bpk`; a `.json` sidecar and `.optim` state are written beside it).
    #[arg(long)]
    out: PathBuf,
    /// Continue from the checkpoint at `--out` (same configuration) instead of refusing to overwrite it.
    #[arg(long)]
    resume: bool,
    /// Train a background model for `--detector likelihood-ratio` (Ren et al. 2019): replace each training pixel by a random value with this probability (0.1–0.3 is usual).
    #[arg(long, value_name = "RATE", allow_negative_numbers = true)]
    background_mutation: Option<f64>,
    /// Adam's learning rate (the paper: Adam's default, 1e-3).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Linear learning-rate warm-up over the first this many steps (0: none).
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    /// L2 regularisation coefficient λ (λ·θ added to each gradient), e.g. for a background model as Ren et al. train it.
    #[arg(long, value_name = "LAMBDA", allow_negative_numbers = true)]
    weight_decay: Option<f32>,
    /// Held-out evaluation for the learning curve (`<out>.curve.csv`, `<out>.curve.png`): this many Fashion-MNIST-test images in Running and Batch mode and MNIST-test images in Batch mode (Fashion-MNIST training only; 0: none).
    #[arg(long, default_value_t = 0)]
    eval_images: usize,
    /// Steps between held-out evaluations (default: one epoch); a checkpoint is written at each.
    #[arg(long)]
    eval_every: Option<usize>,
    /// Stop when held-out FMNIST-test bits/dim (Running) gains less than this per epoch over the last --flat-epochs epochs (e.g. 0.005); needs --eval-images.
    #[arg(long, value_name = "BITS_PER_DIM")]
    stop_when_flat: Option<f64>,
    /// Epochs over which --stop-when-flat measures the gain.
    #[arg(long, default_value_t = 3)]
    flat_epochs: usize,
    /// Halve the learning rate this many times at a flat stretch before --stop-when-flat stops.
    #[arg(long, default_value_t = 0)]
    lr_halvings: u32,
    /// Keep the parameters at every held-out evaluation in this folder (`<out stem>-step<N>.bpk`).
    #[arg(long)]
    snapshots: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct FitArgs {
    /// Trained model: a checkpoint file (`.bpk` with its `.json` sidecar) or a shipped model's name (`bnood models list`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Detector.
    #[arg(long, value_enum, default_value_t = DetectorKind::BnTest)]
    detector: DetectorKind,
    /// More independently trained models of the same data for WAIC (files or shipped names).
    #[arg(long, value_delimiter = ',')]
    ensemble: Vec<PathBuf>,
    /// Background model for --detector likelihood-ratio: trained with `bnood train --background-mutation` (file or shipped name).
    #[arg(long)]
    background: Option<PathBuf>,
    /// Reference set (held-out in-distribution images): a catalogue name or an IDX file / PNG folder.
    #[arg(long, default_value = "fmnist-train")]
    reference: String,
    /// Reference images drawn at random (default 1000; all if fewer).
    #[arg(long, default_value_t = 1000)]
    reference_size: usize,
    /// Importance samples K of VAE scoring (default: the checkpoint's, 16).
    #[arg(long)]
    vae_samples: Option<usize>,
    #[command(flatten)]
    detector_args: DetectorArgs,
}

#[derive(Args, Clone)]
struct FitCmd {
    #[command(flatten)]
    fit: FitArgs,
    /// The detector file to write (JSON; written atomically).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Csv,
    Json,
}

#[derive(Args, Clone)]
struct ScoreArgs {
    #[command(flatten)]
    fit: FitArgs,
    /// A detector saved by `bnood fit`, used instead of fitting one (its models are checked).
    #[arg(long)]
    detector_file: Option<PathBuf>,
    /// Test set: a catalogue name (fmnist, mnist, kmnist, omniglot, rotation) or an IDX file / PNG folder.
    #[arg(long)]
    test: String,
    /// Score only a random subset of this many test images.
    #[arg(long)]
    test_size: Option<usize>,
    /// Target false-positive rate of the decision column.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    fpr: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// Output file (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// A model to evaluate, repeatable: `FILE[,FILE…]` (the first is scored; all form the
    /// WAIC ensemble), optionally named `NAME=FILE,…` (default name: RealNVP, VAE or PixelCNN++); a FILE
    /// may be a shipped model's name (`bnood models list`).
    #[arg(long, required = true)]
    model: Vec<String>,
    #[command(flatten)]
    sets: SetNames,
    /// Detectors.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "logp,tperm,waic,bn"
    )]
    detectors: Vec<DetectorKind>,
    /// Skip Table 2 (every detector against every OoD set) and run only the other studies asked for.
    #[arg(long)]
    skip_table2: bool,
    /// Also run Table 5: the BN test with r1 = 0 and these r2 (e.g. 0.15,0.3,0.5,0.9).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    table5: Vec<f64>,
    /// Also run Figure 3: mean bits/dim at these ratios r (e.g. 0,0.1,…,1).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    sweep: Vec<f64>,
    /// Images per pool in the sweep.
    #[arg(long, default_value_t = 200)]
    sweep_size: usize,
    /// Also run the contamination grid: every detector against each of these OoD sets mixed into in-distribution pools (e.g. mnist,omniglot,kmnist,rotation).
    #[arg(long, value_delimiter = ',')]
    contamination: Vec<String>,
    /// OoD shares of the contamination pools.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.01,0.05,0.1,0.25,0.5,1",
        allow_negative_numbers = true
    )]
    fractions: Vec<f64>,
    /// Also run the BN test in its per-input mode (one scored image per batch of --per-input-batch-size) as a second BN column.
    #[arg(long)]
    bn_per_input: bool,
    /// Batch size b of the per-input BN test.
    #[arg(long, default_value_t = 64)]
    per_input_batch_size: usize,
    /// Background model of the likelihood ratio: `FILE` (for the first --model) or `NAME=FILE` (for the model named NAME); a shipped name works as FILE.
    #[arg(long)]
    background: Vec<String>,
    /// Also run the calibration study over this many seeds: share of in-distribution images flagged at each --calibration-fprs target (0 = off).
    #[arg(long, default_value_t = 0)]
    calibration_seeds: usize,
    /// Pool sizes of the calibration study.
    #[arg(long, value_delimiter = ',', default_value = "100,500")]
    calibration_pools: Vec<usize>,
    /// Target false-positive rates of the calibration study.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.01,0.05,0.1",
        allow_negative_numbers = true
    )]
    calibration_fprs: Vec<f64>,
    /// Images per contamination pool.
    #[arg(long, default_value_t = 1000)]
    pool_size: usize,
    /// Output folder of the report (JSON, Markdown, PNGs).
    #[arg(long, default_value = "runs/eval")]
    out: PathBuf,
    /// Report file stem.
    #[arg(long, default_value = "eval")]
    stem: String,
    /// Importance samples K of VAE scoring (default: the checkpoint's, 16).
    #[arg(long)]
    vae_samples: Option<usize>,
    #[command(flatten)]
    detector_args: DetectorArgs,
}

fn main() -> ExitCode {
    // Before any thread starts: glibc keeps freed tensor buffers for reuse (VAE scoring
    // +50 %, docs/performance.md); elsewhere this does nothing.
    bnood::models::allocator::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut locator = Locator::from_env();
    if let Some(d) = &cli.data_dir {
        // A folder the user names must exist: no silent fall-back to the other places.
        if !d.is_dir() {
            return Err(Error::Invalid(format!(
                "--data-dir {} is not a folder: give the folder that holds the datasets (e.g. fashion_mnist/ inside it)",
                d.display()
            )));
        }
        locator = locator.with_dir(d);
    }
    let mut models_dir = ModelsDir::from_env();
    if let Some(d) = &cli.models_dir {
        models_dir = models_dir.with_dir(d);
    }
    let backend = || resolve(cli.backend);
    let (progress, l) = (!cli.quiet, &locator);
    match &cli.command {
        Command::Datasets { action, only } => datasets(*action, only, locator.clone()),
        Command::Models {
            action: ModelsAction::List,
        } => models_list(&models_dir),
        Command::Train(a) => train_cmd(a, &backend()?.device()?, l, progress),
        Command::Fit(a) => fit_cmd(a, &backend()?.device()?, l, &models_dir, progress),
        Command::Score(a) => score_cmd(a, &backend()?.device()?, l, &models_dir, progress),
        Command::Monitor(a) => {
            monitor::monitor_cmd(a, &backend()?.device()?, l, &models_dir, progress)
        }
        Command::Eval(a) => eval_cmd(a, backend()?, l, &models_dir, progress),
        Command::Report { json, out } => report_cmd(json, out.as_deref()),
    }
}

/// Replaces shipped model names in `--model` and `--ensemble` by their files, found in
/// `dirs` and MD5-verified; existing paths stay as given.
fn resolve_models(a: &mut FitArgs, dirs: &ModelsDir) -> Result<()> {
    if let Some(model) = &a.model {
        a.model = Some(dirs.resolve(&model.to_string_lossy())?);
    }
    for member in &mut a.ensemble {
        *member = dirs.resolve(&member.to_string_lossy())?;
    }
    if let Some(background) = &a.background {
        a.background = Some(dirs.resolve(&background.to_string_lossy())?);
    }
    Ok(())
}

/// `bnood models list`: one block per shipped checkpoint; an error when any is missing or
/// damaged (the lines say which).
fn models_list(dirs: &ModelsDir) -> Result<()> {
    let mut failures = 0;
    for (s, status) in zoo::survey(dirs) {
        let state = match status {
            Availability::Verified(path) => format!("ok ({}, MD5 verified)", path.display()),
            Availability::Unavailable(reason) => {
                failures += 1;
                format!("FAILED: {reason}")
            }
        };
        println!(
            "{:<22} {} `{}` preset, seed {}: {}\n{:<22} {} steps of 64 = {:.2} epochs in {:.0} min, final training loss {:.3} bits/dim; {}\n{:<22} made by: {}\n{:<22} {state}",
            s.name,
            s.kind.display_name(),
            s.preset,
            s.seed,
            s.role,
            "",
            s.steps,
            s.epochs(),
            s.train_seconds / 60.0,
            s.final_bits_per_dim,
            s.machine,
            "",
            s.command,
            "",
        );
    }
    for t in dirs.in_training() {
        let progress = match (&t.last, t.metrics.first()) {
            (Some(row), Some(metric)) => format!(
                "; at epoch {:.2}: {metric} {:.3}",
                row.epoch,
                row.values.first().copied().unwrap_or(f64::NAN)
            ),
            _ => String::new(),
        };
        let state = match &t.finished {
            Some(why) => format!("finished ({})", why.lines().next().unwrap_or("").trim()),
            None => "still training".to_string(),
        };
        println!(
            "{:<22} in training, not shipped: {} steps{progress}; {state}\n{:<22} {}",
            t.name,
            t.step,
            "",
            t.path.display()
        );
    }
    match failures {
        0 => Ok(()),
        n => Err(Error::Invalid(format!(
            "{n} shipped checkpoint(s) unavailable; see the lines marked FAILED above"
        ))),
    }
}

fn datasets(action: DatasetsAction, only: &[String], locator: Locator) -> Result<()> {
    let chosen = match only {
        [] => Dataset::ALL.to_vec(),
        names => names
            .iter()
            .map(|n| Dataset::from_name(n))
            .collect::<std::result::Result<_, _>>()?,
    };
    let action = match action {
        DatasetsAction::List => Survey::List,
        DatasetsAction::Verify => Survey::Verify,
        DatasetsAction::Download => Survey::Download,
    };
    let (lines, failures) = survey(&chosen, &locator, action)?;
    println!("{}", lines.join("\n"));
    match failures {
        0 => Ok(()),
        n => Err(Error::Invalid(format!(
            "{n} dataset file(s) failed; see the lines marked FAILED above"
        ))),
    }
}

fn train_cmd(a: &TrainArgs, device: &Device, locator: &Locator, progress: bool) -> Result<()> {
    let config = a.model.config()?.with_seed(a.seed);
    a.budget.validate()?;
    if let Some(rate) = a.background_mutation {
        bnood::data::check_mutation_rate(rate)?;
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        return Err(Error::Invalid(format!(
            "--lr {} is not a learning rate: give a number above 0 (the paper's is 1e-3)",
            a.lr
        )));
    }
    if a.eval_images > 0 && a.dataset != "fmnist-train" {
        return Err(Error::Invalid(format!(
            "--eval-images evaluates on Fashion-MNIST test and MNIST test, which are held out only for a model of fmnist-train, not `{}`",
            a.dataset
        )));
    }
    if a.stop_when_flat.is_some() && a.eval_images == 0 {
        return Err(Error::Invalid(
            "--stop-when-flat watches the held-out curve: give --eval-images too (e.g. 2000)"
                .into(),
        ));
    }
    // A save that was interrupted (killed between its renames) is completed or discarded
    // first, so "exists" below means a whole checkpoint.
    checkpoint::prepare_folder(&a.out)?;
    checkpoint::finish_interrupted_save(&a.out)?;
    if a.out.exists() && !a.resume {
        return Err(Error::Invalid(format!(
            "{} exists: pass --resume to continue it, or choose another --out",
            a.out.display()
        )));
    }
    if a.resume && !a.out.exists() {
        eprintln!(
            "warning: --resume: {} does not exist yet, so training starts from scratch",
            a.out.display()
        );
    }
    note_catalogue_name(&a.dataset);
    let data = load_named(&a.dataset, locator, None, a.seed)?;
    let held_out = if a.eval_images > 0 {
        HeldOutSet::fmnist(locator, a.eval_images)?
    } else {
        Vec::new()
    };
    let batch_size = TrainConfig::default().batch_size;
    let steps_per_epoch = (data.len() / batch_size).max(1);
    let tc = TrainConfig {
        budget: a.budget,
        checkpoint: Some(a.out.clone()),
        progress,
        resume: a.resume,
        seed: config.seed(),
        background_mutation: a.background_mutation,
        learning_rate: a.lr,
        warmup_steps: a.warmup_steps,
        weight_decay: a.weight_decay,
        eval_every: if held_out.is_empty() {
            0
        } else {
            a.eval_every.unwrap_or(steps_per_epoch).max(1)
        },
        flat_rule: a.stop_when_flat.map(|gain| FlatRule {
            min_gain_per_epoch: gain,
            epochs: a.flat_epochs,
        }),
        lr_halvings: a.lr_halvings,
        snapshots: a.snapshots.clone(),
        ..TrainConfig::default()
    };
    let eval_device = device.clone();
    let mut evaluate = |m: &AnyModel| HeldOutSet::evaluate_all(&held_out, m, &eval_device);
    let (_, r) = train_observed(
        config.init(device)?,
        &data,
        &tc,
        &device.clone().autodiff(),
        (!held_out.is_empty()).then_some(&mut evaluate as &mut Evaluator<'_, AnyModel>),
    )?;
    println!(
        "trained {} on {} ({} images): {} steps, {:.0} s, {:.1} samples/s, final loss {:.3} bits/dim\nsaved {}",
        a.model.model,
        data.name(),
        data.len(),
        r.steps,
        r.seconds,
        r.samples_per_second,
        r.final_loss_bits_per_dim,
        a.out.display()
    );
    if let Some(curve) = &r.curve {
        if let Some(last) = curve.rows.last() {
            let cols: Vec<String> = curve
                .metrics
                .iter()
                .zip(&last.values)
                .map(|(n, v)| format!("{n} {v:.4}"))
                .collect();
            println!(
                "held-out at step {} (epoch {:.2}): {}",
                last.step,
                last.epoch,
                cols.join(", ")
            );
        }
        let png = curve_path(&a.out).with_extension("png");
        bnood::eval::plot::curve_png(&png, curve).map_err(bnood::eval::EvalError::from)?;
        println!(
            "learning curve: {} and {}",
            curve_path(&a.out).display(),
            png.display()
        );
    }
    if r.budget_spent {
        println!(
            "budget spent: {} steps = {:.2} epochs ({})",
            r.steps,
            r.steps as f64 / steps_per_epoch as f64,
            a.budget.describe()
        );
    }
    if r.stopped_flat {
        println!(
            "stopped: the held-out curve is flat (less than {} bits/dim per epoch over {} epochs, after {} learning-rate halving(s))",
            a.stop_when_flat.unwrap_or(f64::NAN),
            a.flat_epochs,
            a.lr_halvings
        );
    }
    Ok(())
}

/// Builds the detector of `a` over its model files and fits it on the reference set.
fn fit_detector(
    a: &FitArgs,
    device: &Device,
    locator: &Locator,
    progress: bool,
) -> Result<LoadedDetector> {
    let Some(first) = &a.model else {
        return Err(Error::Invalid(
            "give the model: --model FILE or a shipped name such as realnvp-fmnist (or --detector-file to score with a saved detector)"
                .into(),
        ));
    };
    if !a.ensemble.is_empty() && !a.detector.uses_ensemble() {
        return Err(Error::Invalid(format!(
            "--ensemble is used by the WAIC detector only, not by --detector {}: drop it, or pass --detector waic",
            a.detector.title()
        )));
    }
    match (&a.background, a.detector) {
        (Some(_), kind) if !kind.uses_background() => {
            return Err(Error::Invalid(format!(
                "--background is used by the likelihood-ratio detector only, not by --detector {}: drop it, or pass --detector likelihood-ratio",
                kind.id()
            )));
        }
        (None, kind) if kind.uses_background() => {
            return Err(Error::Invalid(
                "--detector likelihood-ratio needs --background MODEL: a model of the same data trained with `bnood train --background-mutation 0.2` (or a shipped background model, see `bnood models list`)".into(),
            ));
        }
        _ => {}
    }
    let paths: Vec<&Path> = std::iter::once(first)
        .chain(&a.ensemble)
        .chain(&a.background)
        .map(PathBuf::as_path)
        .collect();
    if let Some(background) = &a.background
        && checkpoint::read_meta(background)?
            .background_mutation
            .is_none()
    {
        eprintln!(
            "warning: {} was not trained with --background-mutation: a likelihood ratio against an ordinary model of the same data carries little signal",
            background.display()
        );
    }
    let models = paths
        .iter()
        .map(|p| AnyModel::load_for_scoring(p, device, a.vae_samples))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    AnyModel::check_ensemble(&paths, &models)?;
    if a.vae_samples.is_some() && models.iter().all(|m| m.config().iw_samples().is_none()) {
        eprintln!(
            "warning: --vae-samples has no effect: the model is a {}, not a VAE",
            models[0].display_name()
        );
    }
    let files = paths
        .iter()
        .zip(&models)
        .map(|(p, m)| ModelFile::new(p, m))
        .collect::<std::result::Result<_, _>>()?;
    let shape = bnood::models::LikelihoodModel::image_shape(&models[0]);
    // Built (its parameters checked) before the reference set is read.
    let mut detector =
        bnood::detect::build(a.detector, models, device, &a.detector_args.params()?)?;
    let seed = seeds::derive(a.detector_args.seed, seeds::REFERENCE_SUBSET);
    note_catalogue_name(&a.reference);
    let reference = bnood::data::load_named_expecting(
        &a.reference,
        locator,
        Some(a.reference_size),
        seed,
        Some(shape),
    )?;
    detector.set_progress(bnood::eval::progress::BarProgress::hook(progress));
    Ok(LoadedDetector {
        detector: detector.fit(&reference)?,
        models: files,
    })
}

fn fit_cmd(
    a: &FitCmd,
    device: &Device,
    locator: &Locator,
    models_dir: &ModelsDir,
    progress: bool,
) -> Result<()> {
    let mut resolved = a.clone();
    resolve_models(&mut resolved.fit, models_dir)?;
    let a = &resolved;
    check_output(&a.out, &fit_inputs(&a.fit, None, None))?;
    let fitted = fit_detector(&a.fit, device, locator, progress)?;
    bnood::detect::save_detector(&fitted.detector, &fitted.models, &a.out)?;
    println!(
        "fitted {} on `{}`; saved {}",
        fitted.detector.name(),
        a.fit.reference,
        a.out.display()
    );
    Ok(())
}

fn score_cmd(
    a: &ScoreArgs,
    device: &Device,
    locator: &Locator,
    models_dir: &ModelsDir,
    progress: bool,
) -> Result<()> {
    // Every argument is checked before any model is loaded or image scored.
    if !(a.fpr > 0.0 && a.fpr < 1.0) {
        return Err(Error::Invalid(format!(
            "--fpr {} must lie strictly between 0 and 1 (e.g. 0.05)",
            a.fpr
        )));
    }
    note_catalogue_name(&a.test);
    let mut resolved = a.clone();
    resolve_models(&mut resolved.fit, models_dir)?;
    let a = &resolved;
    if let Some(out) = &a.out {
        let inputs = fit_inputs(&a.fit, a.detector_file.as_deref(), Some(&a.test));
        check_output(out, &inputs)?;
    }
    if a.detector_file.is_some() && a.fit.vae_samples.is_some() {
        return Err(Error::Invalid(
            "--vae-samples cannot change a saved detector (its K was fixed by `bnood fit`): drop it, or fit the detector again with it".into(),
        ));
    }
    // A saved detector is loaded first (cheap); otherwise the model's sidecar gives the
    // image shape, so the test set is read (headers first) before any fitting.
    let saved = match &a.detector_file {
        Some(file) => {
            let paths: Vec<PathBuf> = a
                .fit
                .model
                .iter()
                .chain(&a.fit.ensemble)
                .chain(&a.fit.background)
                .cloned()
                .collect();
            let mut loaded = bnood::detect::load_detector(
                file,
                (!paths.is_empty()).then_some(&paths[..]),
                device,
            )?;
            loaded
                .detector
                .set_progress(bnood::eval::progress::BarProgress::hook(progress));
            Some(loaded)
        }
        None => None,
    };
    let shape = match (&saved, &a.fit.model) {
        (Some(loaded), _) => loaded.models.first().map(|m| m.config.image_shape()),
        (None, Some(model)) => Some(checkpoint::read_meta(model)?.model.image_shape()),
        (None, None) => None,
    };
    let seed = seeds::derive(a.fit.detector_args.seed, seeds::TEST_SUBSET);
    let (test, indices) = load_named_indexed(&a.test, locator, a.test_size, seed, shape)?;
    let fitted = match saved {
        Some(loaded) => loaded,
        None => fit_detector(&a.fit, device, locator, progress)?,
    };
    let origins = image_origins(&a.test, &indices)?;
    let detector = &fitted.detector;
    let threshold = detector.threshold_for_fpr(a.fpr)?;
    note_pool_decisions(detector);
    let scores = detector.score(&test)?;
    let text = match a.format {
        Format::Csv => scores.to_csv_traced(threshold, Some(&origins)),
        Format::Json => format!(
            "{:#}\n",
            scores.to_json_traced(detector.name(), test.name(), threshold, Some(&origins))
        ),
    };
    let Some(path) = &a.out else {
        print!("{text}");
        return Ok(());
    };
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let flagged = scores.decisions(threshold).iter().filter(|f| **f).count();
    eprintln!(
        "{flagged} of {} images flagged OoD at target FPR {}; wrote {}",
        scores.len(),
        a.fpr,
        path.display()
    );
    Ok(())
}

/// Says on stderr that the BN test's pool mode with the paper's calibration does not flag
/// single images at the target rate (`docs/results.md`, "Calibration"), and what does.
fn note_pool_decisions(detector: &FittedDetector) {
    let held_out =
        serde_json::from_value::<DetectorParams>(detector.params_json()).is_ok_and(|p| {
            p.bn.check_ref()
                .is_ok_and(|p| p.calibration() == BnCalibration::HeldOut)
        });
    if detector.id() == DetectorKind::BnTest.id() && !detector.is_per_input() && held_out {
        eprintln!(
            "note: the BN test's pool mode with the paper's (held-out) calibration decides per pool: its per-image flags are correlated and exceed --fpr on average (8.3 % at 5 % on clean pools of 250); for per-image flags at --fpr pass --bn-calibration in-pool, --mode per-input or a per-input detector (docs/results.md, \"Calibration\")"
        );
    }
}

/// Says on stderr which set is used when `name` is a catalogue name and also a file or
/// folder in the working directory (the catalogue wins; `./name` picks the folder).
fn note_catalogue_name(name: &str) {
    if is_catalogue_name(name) && Path::new(name).exists() {
        eprintln!(
            "note: `{name}` is read as the catalogue set of that name, not as the file or folder ./{name}; pass ./{name} to use that"
        );
    }
}

/// For each scored image, its index in the source and, for a PNG folder, its file name.
fn image_origins(test: &str, indices: &[usize]) -> Result<Vec<ImageOrigin>> {
    let path = Path::new(test);
    let names = if !is_catalogue_name(test) && path.is_dir() {
        Some(bnood::data::user_files::png_file_names(path)?)
    } else {
        None
    };
    Ok(indices
        .iter()
        .map(|&index| ImageOrigin {
            index,
            file: names.as_ref().and_then(|n| n.get(index).cloned()),
        })
        .collect())
}

/// The files a `fit` or `score` run reads: its models with their sidecars and optimiser
/// state, a saved detector, and a test set given as a path.
fn fit_inputs(a: &FitArgs, detector_file: Option<&Path>, test: Option<&str>) -> Vec<PathBuf> {
    let mut inputs = Vec::new();
    for m in a.model.iter().chain(&a.ensemble).chain(&a.background) {
        inputs.push(m.clone());
        inputs.push(checkpoint::meta_path(m));
        inputs.push(checkpoint::optimizer_path(m));
    }
    inputs.extend(detector_file.map(Path::to_path_buf));
    inputs.extend(test.map(PathBuf::from));
    inputs.push(PathBuf::from(&a.reference));
    inputs
}

/// Refuses an output path that is one of the inputs (or inside an input folder), and one
/// whose folder does not exist, before any work is done.
fn check_output(out: &Path, inputs: &[PathBuf]) -> Result<()> {
    let canonical_out = out.canonicalize().ok();
    let out_parent = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for input in inputs {
        let Ok(canonical_in) = input.canonicalize() else {
            continue;
        };
        let same = canonical_out.as_ref() == Some(&canonical_in);
        let inside = canonical_in.is_dir()
            && out_parent
                .canonicalize()
                .is_ok_and(|p| p.starts_with(&canonical_in));
        if same || (inside && canonical_out.is_none() && input.is_dir() && has_png_name(out)) {
            return Err(Error::Invalid(format!(
                "--out {} would overwrite the input {}: choose another output file",
                out.display(),
                input.display()
            )));
        }
    }
    if out.is_dir() {
        return Err(Error::Invalid(format!(
            "--out {} is a folder: give a file name",
            out.display()
        )));
    }
    if !out_parent.is_dir() {
        return Err(Error::Invalid(format!(
            "--out {}: its folder {} does not exist; create it first",
            out.display(),
            out_parent.display()
        )));
    }
    Ok(())
}

fn has_png_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

fn eval_cmd(
    a: &EvalArgs,
    backend: Backend,
    locator: &Locator,
    models_dir: &ModelsDir,
    progress: bool,
) -> Result<()> {
    let device = backend.device()?;
    let mut models = Vec::new();
    for spec in &a.model {
        models.push(ModelEntry::load(spec, models_dir, &device, a.vae_samples)?);
    }
    let files = models.iter().flat_map(|m| m.files.clone()).collect();
    let d = &a.detector_args;
    let names = SetNames {
        seed: d.seed,
        ..a.sets.clone()
    };
    for spec in &a.background {
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
        *entry = entry.clone().with_background(file, models_dir, &device)?;
    }
    if a.detectors.contains(&DetectorKind::LikelihoodRatio)
        && models.iter().any(|m| m.background.is_none())
    {
        eprintln!("warning: the likelihood ratio runs only for models given a --background model");
    }
    let contamination = if a.contamination.is_empty() {
        None
    } else {
        Some(ContaminationSpec {
            inliers: load_named(&a.sets.in_set, locator, None, 0)?,
            outliers: a
                .contamination
                .iter()
                .map(|name| load_named(name, locator, None, 0))
                .collect::<std::result::Result<_, _>>()?,
            fractions: a.fractions.clone(),
            pool_size: a.pool_size,
        })
    };
    let calibration = if a.calibration_seeds == 0 {
        None
    } else {
        Some(CalibrationSpec {
            reference_source: load_named(&a.sets.reference, locator, None, 0)?,
            inliers: load_named(&a.sets.in_set, locator, None, 0)?,
            pool_sizes: a.calibration_pools.clone(),
            seeds: a.calibration_seeds,
            fprs: a.calibration_fprs.clone(),
        })
    };
    let params = d.params()?;
    let job = EvalJob {
        models,
        sets: EvalSets::load(&names, locator)?,
        protocol: Protocol {
            detectors: a.detectors.clone(),
            bn: params.bn,
            bn_per_input: a.bn_per_input.then(|| {
                BnTestParams::per_input()
                    .per_input_batch_size(a.per_input_batch_size)
                    .draws(d.draws)
                    .held_out_fraction(d.held_out_fraction)
                    .seed(d.seed)
            }),
            progress,
        },
        table2: !a.skip_table2,
        table5_r2: a.table5.clone(),
        sweep_ratios: a.sweep.clone(),
        sweep_size: a.sweep_size,
        contamination,
        calibration,
        seed: d.seed,
        out_dir: a.out.clone(),
        stem: a.stem.clone(),
        settings: RunSettings {
            backend: backend.name().to_string(),
            model_files: files,
            subset: a.sets.subset,
            reference_size: a.sets.reference_size,
            seed: d.seed,
            vae_samples: a.vae_samples,
            command: Some(std::env::args().collect::<Vec<_>>().join(" ")),
            preset: None,
        },
        started: None,
    };
    let w = bnood::eval::run(&job, &device, false)?;
    let plots: Vec<String> = w.plots.iter().map(|p| p.display().to_string()).collect();
    println!(
        "\nreport: {}\ntables: {}\nplots:  {}\ntotal {:.0} s",
        w.json.display(),
        w.markdown.display(),
        plots.join(", "),
        w.report.total_seconds
    );
    Ok(())
}

fn report_cmd(json: &Path, out: Option<&Path>) -> Result<()> {
    if json.to_string_lossy().ends_with(".curve.csv") {
        let curve = LearningCurve::read(json)?;
        let png = match out {
            Some(dir) => dir.join(json.with_extension("png").file_name().unwrap_or_default()),
            None => json.with_extension("png"),
        };
        bnood::eval::plot::curve_png(&png, &curve).map_err(bnood::eval::EvalError::from)?;
        println!("plot:   {}", png.display());
        return Ok(());
    }
    let rep = bnood::eval::report::read_json(json)?;
    let dir = out
        .or_else(|| json.parent())
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let stem = json
        .file_stem()
        .map_or("report".into(), |s| s.to_string_lossy().into_owned());
    let (md, plots) = bnood::eval::render(&rep, &dir, &stem)?;
    print!("{}", bnood::eval::report::text_table(&rep.table2));
    println!("tables: {}", md.display());
    for p in plots {
        println!("plot:   {}", p.display());
    }
    Ok(())
}
