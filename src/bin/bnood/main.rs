//! `bnood`: datasets, training, scoring and the paper's evaluation from the command line.
//!
//! ```text
//! bnood datasets list|verify|download
//! bnood train --model realnvp --preset cpu --minutes 20 --out runs/realnvp-cpu-seed0.bpk
//! bnood score --model runs/realnvp-cpu-seed0.bpk --detector bn --reference fmnist-train \
//!             --test my_images/ --format csv --out scores.csv
//! bnood eval  --model runs/realnvp-cpu-seed0.bpk,runs/realnvp-cpu-seed1.bpk --out runs/eval
//! ```
//! Every subcommand has `--help`. Errors are one sentence on stderr and exit status 1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use bnood::backend::backend_from_setting;
use bnood::data::{Dataset, ImageSet, Locator};
use bnood::detect::{
    BnTest, BnTestParams, Detector, LikelihoodModel, LogLikelihood, Scores, TPerm, Waic,
};
use bnood::eval::{ContaminationSpec, DetectorKind, EvalJob, ModelEntry, Protocol};
use bnood::experiment::{Error, ModelConfig, ModelKind, Result, named_set};
use bnood::models::AnyModel;
use burn::tensor::Device;

#[derive(Parser)]
#[command(
    name = "bnood",
    version,
    about = "Unsupervised out-of-distribution detection with generative models and batch normalization (Song, Song & Ermon)."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Compute backend: flex (default CPU), ndarray (CPU) or wgpu (GPU); default: $BNOOD_DEVICE or flex.
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Folder searched first for datasets (then $BNOOD_DATA_DIR, ./datasets, Debian's folder).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
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
    /// Train a RealNVP or VAE with BatchNorm and save it (checkpoint + JSON sidecar).
    Train(TrainArgs),
    /// Score a test set with one detector; one row per image: index, score, p-value, decision.
    Score(ScoreArgs),
    /// The paper's protocol (Table 2, optionally Table 5, Figure 3, contamination) for several OoD sets.
    Eval(EvalArgs),
    /// Re-render a JSON report of `bnood eval` (Markdown tables and PNG plots) without recomputing.
    Report {
        /// The JSON report.
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

#[derive(Args)]
struct TrainArgs {
    /// Model family.
    #[arg(long, default_value = "realnvp")]
    model: String,
    /// Preset: cpu (small, trains on this CPU) or paper (the paper's architecture).
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// Training set: fmnist-train, or a path to an IDX file / PNG folder.
    #[arg(long, default_value = "fmnist-train")]
    dataset: String,
    /// Wall-clock budget in minutes.
    #[arg(long)]
    minutes: Option<f64>,
    /// Passes over the training set.
    #[arg(long)]
    epochs: Option<usize>,
    /// Optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Initialisation seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output checkpoint (`.bpk`; a `.json` sidecar and `.optim` state are written beside it).
    #[arg(long)]
    out: PathBuf,
    /// Continue from the checkpoint at `--out` (same configuration) instead of refusing to overwrite it.
    #[arg(long)]
    resume: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Csv,
    Json,
}

#[derive(Args)]
struct DetectorArgs {
    /// Images per mixed batch b of the BN test.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// BN test ratio r1 (share of test images in a batch; 0 = running statistics).
    #[arg(long, default_value_t = 0.1)]
    r1: f64,
    /// BN test ratio r2.
    #[arg(long, default_value_t = 0.9)]
    r2: f64,
    /// Monte Carlo draws of the batch composition.
    #[arg(long, default_value_t = 1)]
    draws: usize,
    /// Seed of the BN test's batch composition and of subsets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Importance samples K of VAE scoring (default: the checkpoint's, 16).
    #[arg(long)]
    vae_samples: Option<usize>,
}

impl DetectorArgs {
    fn bn(&self) -> BnTestParams {
        BnTestParams::new()
            .batch_size(self.batch_size)
            .ratios(self.r1, self.r2)
            .draws(self.draws)
            .seed(self.seed)
    }
}

#[derive(Args)]
struct ScoreArgs {
    /// Trained model file (`.bpk` with its `.json` sidecar).
    #[arg(long)]
    model: PathBuf,
    /// Detector: logp, tperm, waic (needs --ensemble) or bn.
    #[arg(long, default_value = "bn")]
    detector: String,
    /// More independently trained models of the same data for WAIC.
    #[arg(long, value_delimiter = ',')]
    ensemble: Vec<PathBuf>,
    /// Reference set (held-out in-distribution images): a catalogue name or an IDX file / PNG folder.
    #[arg(long, default_value = "fmnist-train")]
    reference: String,
    /// Reference images drawn at random (default 1000; all if fewer).
    #[arg(long, default_value_t = 1000)]
    reference_size: usize,
    /// Test set: a catalogue name (fmnist, mnist, kmnist, omniglot, rotation) or an IDX file / PNG folder.
    #[arg(long)]
    test: String,
    /// Score only a random subset of this many test images.
    #[arg(long)]
    test_size: Option<usize>,
    /// Target false-positive rate of the decision column.
    #[arg(long, default_value_t = 0.05)]
    fpr: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// Output file (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    detector_args: DetectorArgs,
}

#[derive(Args)]
struct EvalArgs {
    /// A model to evaluate, repeatable: `FILE[,FILE…]` (the first is scored; all form the
    /// WAIC ensemble), optionally named `NAME=FILE,…` (default name: RealNVP or VAE).
    #[arg(long, required = true)]
    model: Vec<String>,
    /// OoD sets (catalogue names or paths).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rotation,mnist,omniglot,kmnist"
    )]
    ood: Vec<String>,
    /// In-distribution test set.
    #[arg(long = "in", default_value = "fmnist")]
    in_set: String,
    /// Reference set mixed into the BN test's batches.
    #[arg(long, default_value = "fmnist-train")]
    reference: String,
    /// Images per test pool.
    #[arg(long, default_value_t = 500)]
    subset: usize,
    /// Reference images.
    #[arg(long, default_value_t = 1000)]
    reference_size: usize,
    /// Detectors (logp, tperm, waic, bn).
    #[arg(long, value_delimiter = ',', default_value = "logp,tperm,waic,bn")]
    detectors: Vec<String>,
    /// Also run Table 5: the BN test with r1 = 0 and these r2 (e.g. 0.15,0.3,0.5,0.9).
    #[arg(long, value_delimiter = ',')]
    table5: Vec<f64>,
    /// Also run Figure 3: mean bits/dim at these ratios r (e.g. 0,0.1,…,1).
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<f64>,
    /// Images per pool in the sweep.
    #[arg(long, default_value_t = 200)]
    sweep_size: usize,
    /// Also run the contamination study with this OoD set mixed into in-distribution pools.
    #[arg(long)]
    contamination: Option<String>,
    /// OoD shares of the contamination pools.
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.1,0.5,1")]
    fractions: Vec<f64>,
    /// Images per contamination pool.
    #[arg(long, default_value_t = 1000)]
    pool_size: usize,
    /// Output folder of the report (JSON, Markdown, PNGs).
    #[arg(long, default_value = "runs/eval")]
    out: PathBuf,
    /// Report file stem.
    #[arg(long, default_value = "eval")]
    stem: String,
    #[command(flatten)]
    detector_args: DetectorArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    let mut locator = Locator::from_env();
    if let Some(d) = &g.data_dir {
        locator = locator.with_dir(d);
    }
    match cli.command {
        Command::Datasets { action, only } => datasets(action, &only, locator),
        Command::Train(a) => train_cmd(&a, &device(&g)?, &locator, !g.quiet),
        Command::Score(a) => score_cmd(&a, &device(&g)?, &locator, !g.quiet),
        Command::Eval(a) => eval_cmd(&a, &g, &locator),
        Command::Report { json, out } => report_cmd(&json, out.as_deref()),
    }
}

fn device(g: &Global) -> Result<Device> {
    let from_env = std::env::var("BNOOD_DEVICE").ok();
    let setting = g.backend.as_deref().or(from_env.as_deref());
    Ok(backend_from_setting(setting)?.device()?)
}

fn backend_name(g: &Global) -> String {
    let from_env = std::env::var("BNOOD_DEVICE").ok();
    let setting = g.backend.as_deref().or(from_env.as_deref());
    backend_from_setting(setting).map_or_else(|_| "?".into(), |b| b.name().to_string())
}

fn datasets(action: DatasetsAction, only: &[String], locator: Locator) -> Result<()> {
    let chosen: Vec<Dataset> = if only.is_empty() {
        Dataset::ALL.to_vec()
    } else {
        only.iter()
            .map(|n| Dataset::from_name(n))
            .collect::<std::result::Result<_, _>>()?
    };
    let finder = locator.clone().with_download(false);
    let mut failures = 0;
    for dataset in chosen {
        for split in dataset.splits() {
            let entry = dataset.entry(split)?;
            let label = format!("{} {:?}", dataset.id(), split).to_lowercase();
            match action {
                DatasetsAction::List => {
                    for file in entry.files {
                        match finder.find(dataset, file) {
                            Ok(p) => println!("{label:<22} {:<34} {}", file.name, p.display()),
                            Err(_) => println!("{label:<22} {:<34} missing", file.name),
                        }
                    }
                }
                DatasetsAction::Verify | DatasetsAction::Download => {
                    let loc = if matches!(action, DatasetsAction::Download) {
                        locator.clone().with_download(true)
                    } else {
                        finder.clone()
                    };
                    let missing = entry.files.iter().any(|f| finder.find(dataset, f).is_err());
                    if missing && matches!(action, DatasetsAction::Verify) {
                        println!("{label:<22} missing (bnood datasets download)");
                        continue;
                    }
                    match dataset.load(split, &loc) {
                        Ok(set) => {
                            println!("{label:<22} ok: {} images, checksums verified", set.len())
                        }
                        Err(e) => {
                            failures += 1;
                            println!("{label:<22} FAILED: {e}");
                        }
                    }
                }
            }
        }
    }
    if failures > 0 {
        return Err(Error::Invalid(format!(
            "{failures} dataset file(s) failed; see the lines marked FAILED above"
        )));
    }
    Ok(())
}

fn train_cmd(a: &TrainArgs, device: &Device, locator: &Locator, progress: bool) -> Result<()> {
    let kind = ModelKind::parse(&a.model)?;
    let config = ModelConfig::preset(kind, &a.preset)?.with_seed(a.seed);
    if a.minutes.is_none() && a.epochs.is_none() && a.steps.is_none() {
        return Err(Error::Invalid(
            "give a training budget: --minutes, --epochs or --steps".into(),
        ));
    }
    if a.out.exists() && !a.resume {
        return Err(Error::Invalid(format!(
            "{} exists: pass --resume to continue it, or choose another --out",
            a.out.display()
        )));
    }
    let data = named_set(&a.dataset, locator, None, a.seed)?;
    let tc = bnood::models::train::TrainConfig {
        epochs: a.epochs,
        max_steps: a.steps,
        time_budget: a
            .minutes
            .map(|m| std::time::Duration::from_secs_f64(m * 60.0)),
        checkpoint: Some(a.out.clone()),
        progress,
        resume: a.resume,
        seed: a.seed,
        ..Default::default()
    };
    let autodiff = device.clone().autodiff();
    let report = match config {
        ModelConfig::RealNvp(c) => {
            bnood::models::train::train(c.init(device)?, &data, &tc, &autodiff)?.1
        }
        ModelConfig::Vae(c) => {
            bnood::models::train::train(c.init(device)?, &data, &tc, &autodiff)?.1
        }
    };
    println!(
        "trained {} on {} ({} images): {} steps, {:.0} s, {:.1} samples/s, final loss {:.3} bits/dim\nsaved {}",
        kind.id(),
        data.name(),
        data.len(),
        report.steps,
        report.seconds,
        report.samples_per_second,
        report.final_loss_bits_per_dim,
        a.out.display()
    );
    Ok(())
}

fn load_model(path: &Path, device: &Device, vae_samples: Option<usize>) -> Result<AnyModel> {
    let model = AnyModel::load(path, device)?;
    Ok(match (model, vae_samples) {
        (AnyModel::Vae(v), Some(k)) => AnyModel::Vae(v.with_iw_samples(k)?),
        (m, _) => m,
    })
}

fn check_shape(set: &ImageSet, model: &AnyModel, path: &Path) -> Result<()> {
    if set.image_shape() != model.image_shape() {
        return Err(Error::Invalid(format!(
            "`{}` has images of shape {:?} but the model {} expects {:?}: give images of the model's size and channels",
            set.name(),
            set.image_shape(),
            path.display(),
            model.image_shape()
        )));
    }
    Ok(())
}

fn score_cmd(a: &ScoreArgs, device: &Device, locator: &Locator, progress: bool) -> Result<()> {
    let d = &a.detector_args;
    let model = load_model(&a.model, device, d.vae_samples)?;
    let reference = named_set(
        &a.reference,
        locator,
        Some(a.reference_size),
        d.seed ^ 0x2EF,
    )?;
    let test = named_set(&a.test, locator, a.test_size, d.seed ^ 0x7E57)?;
    check_shape(&reference, &model, &a.model)?;
    check_shape(&test, &model, &a.model)?;
    let kind = DetectorKind::parse(&a.detector)?;
    let mut detector: Box<dyn Detector> = match kind {
        DetectorKind::LogLikelihood => Box::new(LogLikelihood::new(model, device)),
        DetectorKind::TPerm => Box::new(TPerm::new(model, device)),
        DetectorKind::Waic => {
            if a.ensemble.is_empty() {
                return Err(Error::Invalid(
                    "WAIC needs independently trained models: pass --ensemble FILE,FILE".into(),
                ));
            }
            let mut members = vec![model];
            for p in &a.ensemble {
                members.push(load_model(p, device, d.vae_samples)?);
            }
            Box::new(Waic::new(members, device)?)
        }
        DetectorKind::BnTest => Box::new(BnTest::new(model, device, d.bn())?),
    };
    detector.set_progress(bnood::eval::protocol::progress_hook(progress));
    detector.fit(&reference)?;
    let scores = detector.score(&test)?;
    let threshold = detector.threshold_for_fpr(a.fpr)?;
    let flagged = scores.decisions(threshold);
    let text = render_scores(
        &scores,
        &flagged,
        a.format,
        detector.name(),
        &test,
        threshold,
    )?;
    match &a.out {
        Some(path) => {
            std::fs::write(path, text).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            eprintln!(
                "{} of {} images flagged OoD at target FPR {}; wrote {}",
                flagged.iter().filter(|f| **f).count(),
                flagged.len(),
                a.fpr,
                path.display()
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).map_err(|source| Error::Io {
                path: PathBuf::from("<stdout>"),
                source,
            })?;
        }
    }
    Ok(())
}

fn render_scores(
    scores: &Scores,
    flagged: &[bool],
    format: Format,
    detector: &str,
    test: &ImageSet,
    threshold: f64,
) -> Result<String> {
    let p = |i: usize| scores.p_values.as_ref().map(|p| p[i]);
    Ok(match format {
        Format::Csv => {
            let mut s = String::from("index,score,p_value,ood\n");
            for (i, (score, ood)) in scores.scores.iter().zip(flagged).enumerate() {
                s.push_str(&format!(
                    "{i},{score},{},{ood}\n",
                    p(i).map_or(String::new(), |v| v.to_string()),
                ));
            }
            s
        }
        Format::Json => {
            let rows: Vec<serde_json::Value> = (0..scores.len())
                .map(|i| {
                    serde_json::json!({"index": i, "score": scores.scores[i], "p_value": p(i), "ood": flagged[i]})
                })
                .collect();
            let doc = serde_json::json!({
                "detector": detector,
                "test_set": test.name(),
                "threshold": threshold,
                "threshold_applies_to": if scores.p_values.is_some() { "p_value (flag if ≤)" } else { "score (flag if >)" },
                "rows": rows,
            });
            serde_json::to_string_pretty(&doc).map_err(|e| Error::Invalid(e.to_string()))? + "\n"
        }
    })
}

fn eval_cmd(a: &EvalArgs, g: &Global, locator: &Locator) -> Result<()> {
    let device = device(g)?;
    let d = &a.detector_args;
    let mut models = Vec::new();
    let mut files = Vec::new();
    for spec in &a.model {
        let (name, list) = match spec.split_once('=') {
            Some((n, l)) => (Some(n.to_string()), l),
            None => (None, spec.as_str()),
        };
        let mut members = Vec::new();
        for p in list.split(',').filter(|p| !p.is_empty()) {
            members.push(load_model(Path::new(p), &device, d.vae_samples)?);
            files.push(p.to_string());
        }
        let Some(first) = members.first() else {
            return Err(Error::Invalid(format!("--model `{spec}` names no file")));
        };
        let name = name.unwrap_or_else(|| first.display_name().to_string());
        models.push(ModelEntry { name, members });
    }
    let reference = named_set(
        &a.reference,
        locator,
        Some(a.reference_size),
        d.seed ^ 0x2EF,
    )?;
    let test_in = named_set(&a.in_set, locator, Some(a.subset), d.seed ^ 0x7E57)?;
    let oods = a
        .ood
        .iter()
        .map(|n| named_set(n, locator, Some(a.subset), d.seed ^ 0x00D))
        .collect::<Result<Vec<_>>>()?;
    let detectors = a
        .detectors
        .iter()
        .map(|n| DetectorKind::parse(n))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let contamination = match &a.contamination {
        Some(name) => Some(ContaminationSpec {
            inliers: named_set(&a.in_set, locator, None, 0)?,
            outliers: named_set(name, locator, None, 0)?,
            fractions: a.fractions.clone(),
            pool_size: a.pool_size,
        }),
        None => None,
    };
    let mut settings = serde_json::Map::new();
    settings.insert("backend".into(), backend_name(g).into());
    settings.insert("model_files".into(), files.into());
    settings.insert("subset".into(), a.subset.into());
    settings.insert("reference_size".into(), a.reference_size.into());
    settings.insert("seed".into(), d.seed.into());
    settings.insert("vae_samples".into(), d.vae_samples.into());
    settings.insert(
        "command".into(),
        std::env::args().collect::<Vec<_>>().join(" ").into(),
    );
    let job = EvalJob {
        models,
        reference,
        test_in,
        oods,
        protocol: Protocol {
            detectors,
            bn: d.bn(),
            progress: !g.quiet,
        },
        table5_r2: a.table5.clone(),
        sweep_ratios: a.sweep.clone(),
        sweep_size: a.sweep_size,
        contamination,
        seed: d.seed,
        out_dir: a.out.clone(),
        stem: a.stem.clone(),
        settings,
    };
    let written = bnood::eval::run(&job, &device, false)?;
    println!(
        "\nreport: {}\ntables: {}\nplots:  {}\ntotal {:.0} s",
        written.json.display(),
        written.markdown.display(),
        written
            .plots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        written.report.total_seconds
    );
    Ok(())
}

fn report_cmd(json: &Path, out: Option<&Path>) -> Result<()> {
    let rep = bnood::eval::report::read_json(json)?;
    let dir = out
        .map(Path::to_path_buf)
        .or_else(|| json.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let stem = json.file_stem().map_or_else(
        || "report".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let (md, plots) = bnood::eval::render(&rep, &dir, &stem)?;
    print!("{}", bnood::eval::report::text_table(&rep.table2));
    println!("tables: {}", md.display());
    for p in plots {
        println!("plot:   {}", p.display());
    }
    Ok(())
}
