//! Checkpoints, all naming and I/O in one place: a model's parameters (burn's module
//! store, BatchNorm running statistics included) in `<file>`, a JSON sidecar with the
//! model's kind, configuration and training progress in `<file>.json`, and during training
//! Adam's state in `<file>.optim`. Loading reads the sidecar once and refuses a file made
//! for another architecture.
//!
//! The sidecar's layout (`{"kind", "config", "step", "samples_seen"}`) has not changed since
//! the first release, so every checkpoint written by bnood loads.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::catalogue::{AnyModel, ModelConfig, ModelKind};
use crate::{ModelError, Trainable};

/// The JSON sidecar written next to every checkpoint (`<file>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The model's kind and configuration (`"kind"` and `"config"` in the file).
    #[serde(flatten)]
    pub model: ModelConfig,
    /// Optimiser steps taken when the checkpoint was written.
    pub step: usize,
    /// Training samples seen when the checkpoint was written.
    pub samples_seen: usize,
}

/// The file name bnood gives the checkpoint of `config` trained from preset `preset`:
/// `<kind>-<preset>-seed<seed>.bpk`, e.g. `realnvp-cpu-seed0.bpk`.
pub fn file_name(config: &ModelConfig, preset: &str) -> String {
    format!("{}-{preset}-seed{}.bpk", config.kind().id(), config.seed())
}

/// Path of the sidecar of a checkpoint file: `<file>.json`.
pub fn meta_path(path: &Path) -> PathBuf {
    with_suffix(path, ".json")
}

/// Where the optimiser state of a checkpoint is kept: `<file>.optim`.
pub fn optimizer_path(path: &Path) -> PathBuf {
    with_suffix(path, ".optim")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn err(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Saves `model` to `path` and its sidecar (kind, configuration, progress) to `<path>.json`.
/// Writes to temporary names first and renames, so an interrupted save never leaves a
/// half-written checkpoint.
///
/// # Errors
/// [`ModelError::Checkpoint`] if a file cannot be written.
pub fn save<M: Trainable>(
    model: M,
    step: usize,
    samples_seen: usize,
    path: &Path,
) -> Result<(), ModelError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(path, format!("cannot create its directory: {e}")))?;
    }
    let meta = CheckpointMeta {
        model: model.model_config(),
        step,
        samples_seen,
    };
    let tmp_model = path.with_extension("tmp-model");
    model
        .save_parameters(&tmp_model)
        .map_err(|e| err(path, format!("cannot write the parameters: {e}")))?;
    // burn may add its own extension; find what it wrote.
    let written =
        find_written(&tmp_model).ok_or_else(|| err(path, "burn wrote no parameter file"))?;
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| err(path, e.to_string()))?;
    let meta_file = meta_path(path);
    let tmp_meta = meta_file.with_extension("tmp-json");
    std::fs::write(&tmp_meta, json)
        .map_err(|e| err(path, format!("cannot write the sidecar: {e}")))?;
    std::fs::rename(&written, path)
        .map_err(|e| err(path, format!("cannot move the parameters into place: {e}")))?;
    std::fs::rename(&tmp_meta, &meta_file)
        .map_err(|e| err(path, format!("cannot move the sidecar into place: {e}")))?;
    Ok(())
}

/// Saves the optimiser state of a training run beside the checkpoint `path`, then the
/// checkpoint itself (see [`save`]).
///
/// # Errors
/// [`ModelError::Checkpoint`] if a file cannot be written.
pub(crate) fn save_with_optimizer<M: Trainable>(
    model: &M,
    optim: &burn::optim::ModuleOptimizer,
    step: usize,
    samples_seen: usize,
    path: &Path,
) -> Result<(), ModelError> {
    let optim_path = optimizer_path(path);
    optim.save(&optim_path).map_err(|e| {
        err(
            &optim_path,
            format!("cannot write the optimiser state: {e}"),
        )
    })?;
    save(model.clone(), step, samples_seen, path)
}

/// Restores the optimiser state saved beside the checkpoint `path` into `optim`.
///
/// # Errors
/// [`ModelError::Checkpoint`] if it is missing or does not fit.
pub(crate) fn load_optimizer(
    optim: burn::optim::ModuleOptimizer,
    path: &Path,
) -> Result<burn::optim::ModuleOptimizer, ModelError> {
    let optim_path = optimizer_path(path);
    optim.load(&optim_path).map_err(|e| {
        err(
            &optim_path,
            format!("cannot restore the optimiser state ({e}); train without resume to start over"),
        )
    })
}

fn find_written(stem: &Path) -> Option<PathBuf> {
    if stem.is_file() {
        return Some(stem.to_path_buf());
    }
    let dir = stem
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = stem.file_name()?.to_string_lossy().into_owned();
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with(&prefix))
                .unwrap_or(false)
        })
}

/// Reads the sidecar of `path`.
///
/// # Errors
/// [`ModelError::Checkpoint`] if it is missing, not valid JSON, or names a kind this
/// version does not know.
pub fn read_meta(path: &Path) -> Result<CheckpointMeta, ModelError> {
    let meta_file = meta_path(path);
    let bytes = std::fs::read(&meta_file).map_err(|e| {
        err(
            path,
            format!(
                "cannot read its sidecar {}: {e}; was it written by bnood?",
                meta_file.display()
            ),
        )
    })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        err(
            path,
            format!("sidecar {} is not valid JSON: {e}", meta_file.display()),
        )
    })?;
    if let Some(kind) = value.get("kind").and_then(|k| k.as_str())
        && kind.parse::<ModelKind>().is_err()
    {
        return Err(err(
            path,
            format!(
                "it holds a `{kind}` model, which this version of bnood cannot load (known: {})",
                ModelKind::ALL.map(ModelKind::id).join(", ")
            ),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        err(
            path,
            format!("sidecar {} is not valid: {e}", meta_file.display()),
        )
    })
}

/// Loads parameters from `path` into `model`, after checking that the sidecar names the
/// same kind and exactly the same configuration as the model's own (seeds included: a VAE's
/// evaluation seed changes its scores).
///
/// # Errors
/// [`ModelError::Checkpoint`] naming the difference, or burn's reason when the parameter
/// file itself does not fit.
pub fn load_into<M: Trainable>(model: M, path: &Path) -> Result<M, ModelError> {
    let meta = read_meta(path)?;
    check_config(&meta, &model.model_config(), path)?;
    read_parameters(model, path)
}

/// Builds a model from the configuration stored with the checkpoint at `path` and loads its
/// parameters, on `device`. The sidecar is read once.
///
/// # Errors
/// As [`read_meta`] and [`load_into`], and the model's own configuration errors.
pub fn load(path: &Path, device: &Device) -> Result<AnyModel, ModelError> {
    let meta = read_meta(path)?;
    read_parameters(meta.model.init(device)?, path)
}

fn check_config(
    meta: &CheckpointMeta,
    expected: &ModelConfig,
    path: &Path,
) -> Result<(), ModelError> {
    if meta.model.kind() != expected.kind() {
        return Err(err(
            path,
            format!(
                "it holds a `{}` model, not a `{}` model",
                meta.model.kind(),
                expected.kind()
            ),
        ));
    }
    // Compared as JSON, exactly as stored (a float written and read back is the same number).
    let as_json = |c: &ModelConfig| serde_json::to_value(c).map_err(|e| err(path, e.to_string()));
    let (file, wanted) = (as_json(&meta.model)?, as_json(expected)?);
    if file != wanted {
        return Err(err(
            path,
            format!(
                "it was made with a different configuration:\n  file:     {}\n  expected: {}\nrebuild the model from the file's configuration (checkpoint::load) or train a new one",
                file["config"], wanted["config"]
            ),
        ));
    }
    Ok(())
}

fn read_parameters<M: Trainable>(model: M, path: &Path) -> Result<M, ModelError> {
    model
        .load_parameters(path)
        .map_err(|e| err(path, format!("the parameters do not fit the model: {e}")))
}
