//! Checkpoints: a model's parameters (burn's module store, BatchNorm running statistics
//! included) plus a JSON sidecar with the model kind, its configuration and training
//! progress, so that loading can refuse a file made for another architecture.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::train::Trainable;

/// The JSON sidecar written next to every checkpoint (`<file>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Model kind, e.g. `"realnvp"` or `"vae"`.
    pub kind: String,
    /// The model's configuration as JSON.
    pub config: serde_json::Value,
    /// Optimiser steps taken when the checkpoint was written.
    pub step: usize,
    /// Training samples seen when the checkpoint was written.
    pub samples_seen: usize,
}

/// Path of the sidecar of a checkpoint file.
pub fn meta_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    path.with_file_name(name)
}

fn err(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Saves `model` to `path` and its sidecar (kind, configuration, progress) to `<path>.json`. Writes to temporary names
/// first and renames, so an interrupted save never leaves a half-written checkpoint.
///
/// # Errors
/// [`ModelError::Checkpoint`] if a file cannot be written.
pub fn save<M: Trainable>(
    model: M,
    step: usize,
    samples_seen: usize,
    path: &Path,
) -> Result<(), ModelError> {
    let (kind, config) = (M::KIND, model.config());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(path, format!("cannot create its directory: {e}")))?;
    }
    let config = serde_json::to_value(&config)
        .map_err(|e| err(path, format!("cannot serialise the config: {e}")))?;
    let meta = CheckpointMeta {
        kind: kind.to_string(),
        config,
        step,
        samples_seen,
    };
    let tmp_model = path.with_extension("tmp-model");
    model
        .save_file(&tmp_model)
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
/// [`ModelError::Checkpoint`] if it is missing or not valid JSON.
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
    serde_json::from_slice(&bytes).map_err(|e| {
        err(
            path,
            format!("sidecar {} is not valid: {e}", meta_file.display()),
        )
    })
}

/// Reads the configuration stored with a checkpoint of `kind`.
///
/// # Errors
/// [`ModelError::Checkpoint`] if the sidecar is missing, of another kind, or unreadable.
pub fn read_config<C: DeserializeOwned>(
    path: &Path,
    kind: &str,
) -> Result<(C, CheckpointMeta), ModelError> {
    let meta = read_meta(path)?;
    if meta.kind != kind {
        return Err(err(
            path,
            format!("it holds a `{}` model, not a `{kind}` model", meta.kind),
        ));
    }
    let config = serde_json::from_value(meta.config.clone()).map_err(|e| {
        err(
            path,
            format!("its `{kind}` configuration is unreadable: {e}"),
        )
    })?;
    Ok((config, meta))
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
    if meta.kind != M::KIND {
        return Err(err(
            path,
            format!(
                "it holds a `{}` model, not a `{}` model",
                meta.kind,
                M::KIND
            ),
        ));
    }
    let expected = serde_json::to_value(model.config()).map_err(|e| err(path, e.to_string()))?;
    if meta.config != expected {
        return Err(err(
            path,
            format!(
                "it was made with a different configuration:\n  file:     {}\n  expected: {}\nrebuild the model from the file's configuration (checkpoint::load) or train a new one",
                meta.config, expected
            ),
        ));
    }
    model
        .try_load_file(path)
        .map_err(|e| err(path, format!("the parameters do not fit the model: {e}")))
}

/// Builds a model from the configuration stored with the checkpoint at `path` and loads its
/// parameters, on `device`.
///
/// # Errors
/// As [`read_config`] and [`load_into`], and the model's own configuration errors.
pub fn load<M: Trainable>(
    path: &Path,
    device: &burn::tensor::Device,
    build: impl FnOnce(&M::Config, &burn::tensor::Device) -> Result<M, ModelError>,
) -> Result<M, ModelError>
where
    M::Config: DeserializeOwned,
{
    let (config, _) = read_config::<M::Config>(path, M::KIND)?;
    load_into(build(&config, device)?, path)
}
