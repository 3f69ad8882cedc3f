//! Building blocks shared by the `bnood` command and the examples: test sets by name (or
//! from a user's IDX file / PNG folder), model configurations by kind and preset, and
//! "train, or reuse a checkpoint that matches".

use std::path::{Path, PathBuf};
use std::time::Duration;

use burn::module::Module;
use burn::tensor::Device;

use bnood_data::{Dataset, ImageSet, Locator, Split, transform};
use bnood_models::train::{TrainConfig, TrainReport, train};
use bnood_models::{AnyModel, ModelError, RealNvpConfig, VaeConfig, checkpoint};

/// Errors of the command-line tools and examples, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dataset could not be found, verified or read.
    #[error(transparent)]
    Data(#[from] bnood_data::DataError),
    /// A model could not be built, trained, saved or loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A detector failed.
    #[error(transparent)]
    Detect(#[from] bnood_detect::DetectError),
    /// The evaluation failed or could not write its report.
    #[error(transparent)]
    Eval(#[from] bnood_eval::EvalError),
    /// The backend is not compiled in or unknown.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An invalid argument.
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Which model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// RealNVP (Appendix C.1).
    RealNvp,
    /// VAE (Table 3).
    Vae,
}

impl ModelKind {
    /// Parses `realnvp` or `vae`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the choices.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "realnvp" => Ok(Self::RealNvp),
            "vae" => Ok(Self::Vae),
            other => Err(Error::Invalid(format!(
                "unknown model `{other}`: choose realnvp or vae"
            ))),
        }
    }

    /// `realnvp` or `vae`.
    pub fn id(self) -> &'static str {
        match self {
            Self::RealNvp => "realnvp",
            Self::Vae => "vae",
        }
    }
}

/// A model configuration of either family.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// A RealNVP configuration.
    RealNvp(RealNvpConfig),
    /// A VAE configuration.
    Vae(VaeConfig),
}

impl ModelConfig {
    /// The configuration of `preset` (`cpu` or `paper`) for `kind`.
    ///
    /// # Errors
    /// [`Error::Model`] for an unknown preset.
    pub fn preset(kind: ModelKind, preset: &str) -> Result<Self> {
        Ok(match kind {
            ModelKind::RealNvp => Self::RealNvp(RealNvpConfig::preset(preset)?),
            ModelKind::Vae => Self::Vae(VaeConfig::preset(preset)?),
        })
    }

    /// The same configuration with initialisation seed `seed`.
    pub fn with_seed(self, seed: u64) -> Self {
        match self {
            Self::RealNvp(c) => Self::RealNvp(c.with_seed(seed)),
            Self::Vae(c) => Self::Vae(c.with_seed(seed)),
        }
    }

    /// The family.
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::RealNvp(_) => ModelKind::RealNvp,
            Self::Vae(_) => ModelKind::Vae,
        }
    }

    /// A fresh, untrained model on `device`.
    ///
    /// # Errors
    /// [`Error::Model`] for an invalid configuration.
    pub fn init(&self, device: &Device) -> Result<AnyModel> {
        Ok(match self {
            Self::RealNvp(c) => AnyModel::RealNvp(c.init(device)?),
            Self::Vae(c) => AnyModel::Vae(c.init(device)?),
        })
    }
}

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainBudget {
    /// Wall-clock minutes (stops after the step that crosses it).
    pub minutes: Option<f64>,
    /// Passes over the training set.
    pub epochs: Option<usize>,
    /// Optimiser steps.
    pub max_steps: Option<usize>,
}

impl TrainBudget {
    /// The budget in words, e.g. `"20 min"` or `"4 steps"`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.minutes {
            parts.push(format!("{m} min"));
        }
        if let Some(e) = self.epochs {
            parts.push(format!("{e} epoch(s)"));
        }
        if let Some(s) = self.max_steps {
            parts.push(format!("{s} steps"));
        }
        if parts.is_empty() {
            "no budget".into()
        } else {
            parts.join(" or ")
        }
    }

    /// Train for `minutes` of wall-clock time.
    pub fn minutes(minutes: f64) -> Self {
        Self {
            minutes: Some(minutes),
            epochs: None,
            max_steps: None,
        }
    }
}

/// Loads `path` if it holds a model of exactly `config` (kind, architecture and seeds
/// checked against the checkpoint's sidecar); otherwise trains one on `train_set` within
/// `budget`, saving it (and checkpoints along the way) to `path`. Returns the model in
/// inference form and, if it trained, the training report.
///
/// A file that exists but holds another configuration is not overwritten: that is an error
/// telling the user to move it or pick another path.
///
/// # Errors
/// [`Error::Model`] for training failures or a mismatching checkpoint; [`Error::Invalid`]
/// for an empty budget.
pub fn train_or_reuse(
    config: &ModelConfig,
    path: &Path,
    budget: &TrainBudget,
    train_set: &ImageSet,
    device: &Device,
    progress: bool,
) -> Result<(AnyModel, Option<TrainReport>)> {
    if path.is_file() {
        let model = match config {
            ModelConfig::RealNvp(c) => {
                AnyModel::RealNvp(checkpoint::load_into(c.init(device)?, path)?)
            }
            ModelConfig::Vae(c) => AnyModel::Vae(checkpoint::load_into(c.init(device)?, path)?),
        };
        return Ok((model, None));
    }
    if budget.minutes.is_none() && budget.epochs.is_none() && budget.max_steps.is_none() {
        return Err(Error::Invalid(
            "no training budget: give minutes, epochs or steps".into(),
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let tc = TrainConfig {
        epochs: budget.epochs,
        max_steps: budget.max_steps,
        time_budget: budget.minutes.map(|m| Duration::from_secs_f64(m * 60.0)),
        checkpoint: Some(path.to_path_buf()),
        progress,
        ..TrainConfig::default()
    };
    let autodiff = device.clone().autodiff();
    Ok(match config {
        ModelConfig::RealNvp(c) => {
            let (m, r) = train(c.init(device)?, train_set, &tc, &autodiff)?;
            (AnyModel::RealNvp(m.valid()), Some(r))
        }
        ModelConfig::Vae(c) => {
            let (m, r) = train(c.init(device)?, train_set, &tc, &autodiff)?;
            (AnyModel::Vae(m.valid()), Some(r))
        }
    })
}

/// The test sets known by name, with the names used in tables.
pub const NAMED_SETS: [(&str, &str); 6] = [
    ("fmnist", "FMNIST"),
    ("rotation", "Rotation"),
    ("mnist", "MNIST"),
    ("omniglot", "Omniglot"),
    ("kmnist", "KMNIST"),
    ("fmnist-train", "FMNIST-train"),
];

/// A test set by name — `fmnist`, `mnist`, `kmnist`, `omniglot` (their test splits; for
/// Omniglot the evaluation set), `fmnist-train`, `rotation` (Fashion-MNIST test images each
/// rotated by a uniform angle in (90°, 270°), the paper's "Rotation") — or a path to an IDX
/// file or a folder of PNG images. `n` draws a seeded random subset (`None`: all images).
/// The set is named as in the paper's tables (`"KMNIST"`, `"Rotation"`, or the file name).
///
/// # Errors
/// [`Error::Data`] if the data cannot be found or read, or `n` exceeds the set;
/// [`Error::Invalid`] for an unknown name that is not a path either.
pub fn named_set(name: &str, locator: &Locator, n: Option<usize>, seed: u64) -> Result<ImageSet> {
    let lower = name.to_ascii_lowercase();
    let sub = |set: ImageSet, title: &str, seed: u64| -> Result<ImageSet> {
        let set = match n {
            Some(n) if n < set.len() => set.subset(n, seed)?,
            _ => set,
        };
        Ok(set.with_name(title))
    };
    let (dataset, split, title) = match lower.as_str() {
        "fmnist" | "fashion-mnist" | "fashion_mnist" => {
            (Dataset::FashionMnist, Split::Test, "FMNIST")
        }
        "fmnist-train" => (Dataset::FashionMnist, Split::Train, "FMNIST-train"),
        "mnist" => (Dataset::Mnist, Split::Test, "MNIST"),
        "kmnist" => (Dataset::Kmnist, Split::Test, "KMNIST"),
        "omniglot" => (Dataset::Omniglot, Split::Test, "Omniglot"),
        "rotation" => {
            let base = Dataset::FashionMnist.load(Split::Test, locator)?;
            let base = sub(base, "FMNIST", seed ^ 0x0A7E)?;
            let rotated =
                transform::rotate_randomly(&base, transform::PAPER_ROTATION_DEGREES, seed)?;
            return Ok(rotated.with_name("Rotation"));
        }
        _ => {
            let path = Path::new(name);
            if path.exists() {
                let title = path
                    .file_name()
                    .map_or_else(|| name.to_string(), |f| f.to_string_lossy().into_owned());
                let set = ImageSet::from_path(path, title.clone())?;
                return sub(set, &title, seed);
            }
            return Err(Error::Invalid(format!(
                "unknown set `{name}`: use one of {} or a path to an IDX file or PNG folder",
                NAMED_SETS.map(|(id, _)| id).join(", ")
            )));
        }
    };
    sub(dataset.load(split, locator)?, title, seed)
}

/// Settings of the main job: a model trained on Fashion-MNIST scored on Fashion-MNIST test
/// against OoD sets with the four detectors of the paper's Table 2.
#[derive(Debug, Clone)]
pub struct MainJob {
    /// The model to train or reuse (seed of member `k` = `model`'s seed + `k`).
    pub model: ModelConfig,
    /// The preset's name, used in checkpoint file names (`<kind>-<preset>-seed<k>.bpk`).
    pub preset: String,
    /// OoD sets by name (see [`named_set`]).
    pub oods: Vec<String>,
    /// Images per test pool (in-distribution and each OoD set).
    pub subset: usize,
    /// Reference images (Fashion-MNIST train) mixed into the BN test's batches.
    pub reference_size: usize,
    /// Seed of subsets, model initialisation and the BN test.
    pub seed: u64,
    /// Training budget of the main model.
    pub budget: TrainBudget,
    /// WAIC ensemble size (1 = no WAIC).
    pub waic_models: usize,
    /// Training budget of each extra WAIC member.
    pub waic_budget: TrainBudget,
    /// The BN test's parameters.
    pub bn: bnood_detect::BnTestParams,
    /// Folder of checkpoints and reports.
    pub runs: PathBuf,
    /// Report file stem.
    pub stem: String,
    /// Where to find the data.
    pub locator: Locator,
    /// Progress bars.
    pub progress: bool,
    /// Backend name for the report.
    pub backend: String,
}

/// Runs the main job: trains (or reuses) the models, scores, prints the table, writes
/// `<runs>/<stem>.json`, `.md` and ROC PNGs.
///
/// # Errors
/// Data, model, detector and report errors, each saying what to do.
pub fn main_job(job: &MainJob, device: &Device) -> Result<bnood_eval::Written> {
    let started = std::time::Instant::now();
    if job.oods.is_empty() {
        return Err(Error::Invalid(
            "no OoD set given: name at least one, e.g. kmnist".into(),
        ));
    }
    let train_set = Dataset::FashionMnist.load(Split::Train, &job.locator)?;
    let reference = train_set
        .subset(job.reference_size, job.seed ^ 0x2EF)?
        .with_name("FMNIST-train");
    let test_in = named_set("fmnist", &job.locator, Some(job.subset), job.seed ^ 0x7E57)?;
    let oods = job
        .oods
        .iter()
        .map(|name| named_set(name, &job.locator, Some(job.subset), job.seed ^ 0x00D))
        .collect::<Result<Vec<_>>>()?;

    let mut members = Vec::new();
    let mut files = Vec::new();
    for k in 0..job.waic_models.max(1) {
        let seed = job.model_seed() + k as u64;
        let config = job.model.clone().with_seed(seed);
        let path = job.runs.join(format!(
            "{}-{}-seed{seed}.bpk",
            config.kind().id(),
            job.preset
        ));
        let budget = if k == 0 { job.budget } else { job.waic_budget };
        let reused = path.is_file();
        if !reused {
            println!("training {} ({})", path.display(), budget.describe());
        }
        let (model, report) =
            train_or_reuse(&config, &path, &budget, &train_set, device, job.progress)?;
        match report {
            Some(r) => println!(
                "  trained {} steps in {:.0} s ({:.1} samples/s), final loss {:.3} bits/dim",
                r.steps, r.seconds, r.samples_per_second, r.final_loss_bits_per_dim
            ),
            None => println!("reusing {} (configuration verified)", path.display()),
        }
        files.push(path.display().to_string());
        members.push(model);
    }
    let name = members
        .first()
        .map_or("model", |m: &AnyModel| m.display_name())
        .to_string();
    let mut settings = serde_json::Map::new();
    settings.insert("backend".into(), job.backend.clone().into());
    settings.insert("model_files".into(), files.into());
    settings.insert("preset".into(), job.preset.clone().into());
    settings.insert("subset".into(), job.subset.into());
    settings.insert("reference_size".into(), job.reference_size.into());
    settings.insert("seed".into(), job.seed.into());
    let eval = bnood_eval::EvalJob {
        models: vec![bnood_eval::ModelEntry { name, members }],
        reference,
        test_in,
        oods,
        protocol: bnood_eval::Protocol {
            bn: job.bn.clone(),
            progress: job.progress,
            ..bnood_eval::Protocol::default()
        },
        table5_r2: Vec::new(),
        sweep_ratios: Vec::new(),
        sweep_size: 0,
        contamination: None,
        seed: job.seed,
        out_dir: job.runs.clone(),
        stem: job.stem.clone(),
        settings,
    };
    let mut written = bnood_eval::run(&eval, device, false)?;
    written.report.total_seconds = started.elapsed().as_secs_f64();
    bnood_eval::report::write_json(&written.report, &written.json)?;
    Ok(written)
}

impl MainJob {
    fn model_seed(&self) -> u64 {
        match &self.model {
            ModelConfig::RealNvp(c) => c.seed,
            ModelConfig::Vae(c) => c.seed,
        }
    }
}
