//! Experiments end to end, shared by the `bnood` command and the examples: "train, or
//! reuse a checkpoint that matches", and the main job (the shipped Fashion-MNIST models, or
//! ones trained now, evaluated against OoD sets with the detectors of the paper's Table 2).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;

use bnood_data::{Dataset, ImageSet, Locator, Split};
use bnood_models::train::{TrainBudget, TrainConfig, TrainReport, train};
use bnood_models::zoo::{self, ModelsDir};
use bnood_models::{AnyModel, ModelConfig, checkpoint};

use crate::{EvalError, EvalJob, EvalSets, ModelEntry, Protocol, Result, RunSettings, SetNames};

/// Trains a fresh model of `config` on `train_set` within `budget`, checkpointing to `out`
/// when given (from step 0, or continuing `out` when `resume` is set and it exists). The training
/// noise and batch order are seeded by `config`'s seed. Returns the model in inference form.
///
/// # Errors
/// [`EvalError::Model`] for training and checkpoint failures (including an empty budget).
pub fn train_model(
    config: &ModelConfig,
    train_set: &ImageSet,
    budget: TrainBudget,
    out: Option<&Path>,
    resume: bool,
    device: &Device,
    progress: bool,
) -> Result<(AnyModel, TrainReport)> {
    let tc = TrainConfig {
        budget,
        checkpoint: out.map(Path::to_path_buf),
        progress,
        resume,
        seed: config.seed(),
        ..TrainConfig::default()
    };
    train_fresh(config, train_set, &tc, device)
}

/// A fresh model of `config` trained with `tc` on the autodiff form of `device`, returned
/// in inference form — [`train_model`] with every training setting exposed (e.g.
/// `TrainConfig::background_mutation` for a likelihood-ratio background model).
///
/// # Errors
/// As [`train_model`].
pub fn train_fresh(
    config: &ModelConfig,
    train_set: &ImageSet,
    tc: &TrainConfig,
    device: &Device,
) -> Result<(AnyModel, TrainReport)> {
    let (model, report) = train(
        config.init(device)?,
        train_set,
        tc,
        &device.clone().autodiff(),
    )?;
    Ok((model.valid(), report))
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
/// [`EvalError::Model`] for training failures, an empty budget or a mismatching checkpoint.
pub fn train_or_reuse(
    config: &ModelConfig,
    path: &Path,
    budget: TrainBudget,
    train_set: &ImageSet,
    device: &Device,
    progress: bool,
) -> Result<(AnyModel, Option<TrainReport>)> {
    if path.is_file() {
        return Ok((checkpoint::load_into(config.init(device)?, path)?, None));
    }
    // The main job's training seed stays 0 whatever the model seed (as it always was), so
    // that existing checkpoints keep their meaning.
    let tc = TrainConfig {
        budget,
        checkpoint: Some(path.to_path_buf()),
        progress,
        ..TrainConfig::default()
    };
    let (model, report) = train_fresh(config, train_set, &tc, device)?;
    Ok((model, Some(report)))
}

/// Where the main job's models come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoints {
    /// The checkpoints shipped in `models/` ([`bnood_models::zoo`]), found in this folder
    /// list and MD5-verified: no training. An error names `--train` when the job's model
    /// (kind, preset, seed) was not shipped.
    Shipped(ModelsDir),
    /// Train into [`MainJob::runs`] within the job's budgets, reusing a checkpoint there
    /// only when it was made with exactly the job's configuration.
    Train,
}

/// Settings of the main job: a model trained on Fashion-MNIST scored on Fashion-MNIST test
/// against OoD sets with the four detectors of the paper's Table 2.
#[derive(Debug, Clone)]
pub struct MainJob {
    /// Shipped checkpoints or training.
    pub checkpoints: Checkpoints,
    /// The model to train or reuse (seed of member `k` = `model`'s seed + `k`).
    pub model: ModelConfig,
    /// The preset's name, used in checkpoint file names ([`checkpoint::file_name`]).
    pub preset: String,
    /// OoD sets by name (see [`bnood_data::load_named`]).
    pub oods: Vec<String>,
    /// Images per test pool (in-distribution and each OoD set).
    pub subset: usize,
    /// Reference images (Fashion-MNIST train) mixed into the BN test's batches.
    pub reference_size: usize,
    /// Seed of subsets and the BN test.
    pub seed: u64,
    /// Training budget of the main model.
    pub budget: TrainBudget,
    /// WAIC ensemble size (1 = no WAIC).
    pub waic_models: usize,
    /// Training budget of each extra WAIC member.
    pub waic_budget: TrainBudget,
    /// The BN test's parameters.
    pub bn: bnood_detect::BnTestParams,
    /// Folder of reports, and of checkpoints when training.
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
pub fn main_job(job: &MainJob, device: &Device) -> Result<crate::Written> {
    let started = std::time::Instant::now();
    if job.oods.is_empty() {
        return Err(EvalError::InvalidSetting(
            "no OoD set given: name at least one, e.g. kmnist".into(),
        ));
    }
    let names = SetNames {
        reference: "fmnist-train".into(),
        reference_size: job.reference_size,
        in_set: "fmnist".into(),
        subset: job.subset,
        oods: job.oods.clone(),
        seed: job.seed,
        preprocess: bnood_data::Preprocess::default(),
    };
    let sets = EvalSets::load(&names, &job.locator)?;
    let train_set = Dataset::FashionMnist.load(Split::Train, &job.locator)?;

    let mut members = Vec::new();
    let mut files = Vec::new();
    for k in 0..job.waic_models.max(1) {
        let config = job.model.clone().with_seed(job.model.seed() + k as u64);
        if let Checkpoints::Shipped(dirs) = &job.checkpoints {
            let entry = zoo::find_for(config.kind(), &job.preset, config.seed()).ok_or_else(|| {
                EvalError::InvalidSetting(format!(
                    "no shipped {} checkpoint of the `{}` preset with seed {} (shipped: {}); pass --train to train it",
                    config.kind().display_name(),
                    job.preset,
                    config.seed(),
                    zoo::names().join(", ")
                ))
            })?;
            let source = dirs.shipped(entry)?;
            let path = source.path.clone();
            let model = source.read()?.load_into(config.init(device)?)?;
            crate::say(format_args!(
                "using shipped {} ({}, {} steps, MD5 verified)",
                entry.name,
                path.display(),
                entry.steps
            ));
            files.push(path.display().to_string());
            members.push(model);
            continue;
        }
        let path = job.runs.join(checkpoint::file_name(&config, &job.preset));
        let budget = if k == 0 { job.budget } else { job.waic_budget };
        if !path.is_file() {
            crate::say(format_args!(
                "training {} ({})",
                path.display(),
                budget.describe()
            ));
        }
        let (model, report) =
            train_or_reuse(&config, &path, budget, &train_set, device, job.progress)?;
        match report {
            Some(r) => crate::say(format_args!(
                "  trained {} steps in {:.0} s ({:.1} samples/s), final loss {:.3} bits/dim",
                r.steps, r.seconds, r.samples_per_second, r.final_loss_bits_per_dim
            )),
            None => crate::say(format_args!(
                "reusing {} (configuration verified)",
                path.display()
            )),
        }
        files.push(path.display().to_string());
        members.push(model);
    }
    let eval = EvalJob {
        models: vec![ModelEntry {
            name: job.model.kind().display_name().to_string(),
            members,
            files: files.clone(),
            background: None,
        }],
        sets,
        protocol: Protocol {
            bn: job.bn.clone(),
            progress: job.progress,
            ..Protocol::default()
        },
        table2: true,
        table5_r2: Vec::new(),
        sweep_ratios: Vec::new(),
        sweep_size: 0,
        contamination: None,
        calibration: None,
        seed: job.seed,
        out_dir: job.runs.clone(),
        stem: job.stem.clone(),
        settings: RunSettings {
            backend: job.backend.clone(),
            model_files: files,
            preset: Some(job.preset.clone()),
            subset: job.subset,
            reference_size: job.reference_size,
            seed: job.seed,
            ..RunSettings::default()
        },
        started: Some(started),
    };
    crate::run(&eval, device, false)
}
