//! Reading a checkpoint: its sidecar, then its parameters into a model built from the
//! sidecar's configuration (or a given model of the same configuration), after checking the
//! parameter file's header against that configuration. Reads only: a save interrupted after
//! its commit point is read from where it stopped.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::save::writer_active;
use super::summary::summarise;
use super::{CheckpointMeta, commit_path, err, meta_path, optimizer_path, pending_path};
use crate::catalogue::{AnyModel, ModelConfig, ModelKind};
use crate::{ModelError, Trainable};

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
/// Reads the sidecar of `path`.
///
/// # Errors
/// [`ModelError::Checkpoint`] if it is missing, not valid JSON, or names a kind this
/// version does not know.
pub fn read_meta(path: &Path) -> Result<CheckpointMeta, ModelError> {
    read_sidecar(path, &Committed::of(path).sidecar)
}

/// [`read_meta`] from the sidecar file `meta_file` of the checkpoint `path`.
fn read_sidecar(path: &Path, meta_file: &Path) -> Result<CheckpointMeta, ModelError> {
    // Sidecars are a few hundred bytes; never read a device or FIFO in their place.
    const MAX_SIDECAR_BYTES: u64 = 1 << 20;
    if let Ok(m) = std::fs::metadata(meta_file)
        && (!m.is_file() || m.len() > MAX_SIDECAR_BYTES)
    {
        return Err(err(
            path,
            format!(
                "its sidecar {} is not a regular file of at most {MAX_SIDECAR_BYTES} bytes; restore the .json that bnood wrote",
                meta_file.display()
            ),
        ));
    }
    let bytes = std::fs::read(meta_file).map_err(|e| {
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
    let files = Committed::of(path);
    let meta = read_sidecar(path, &files.sidecar)?;
    check_config(&meta, &model.model_config(), path)?;
    check_weights(&files.parameters, path, &meta.model)?;
    read_parameters(model, &files.parameters, path)
}

/// Builds a model from the configuration stored with the checkpoint at `path` and loads its
/// parameters, on `device`. The sidecar is read once.
///
/// # Errors
/// As [`read_meta`] and [`load_into`], and the model's own configuration errors.
pub fn load(path: &Path, device: &Device) -> Result<AnyModel, ModelError> {
    let files = Committed::of(path);
    let meta = read_sidecar(path, &files.sidecar)?;
    meta.model.check_size()?;
    check_weights(&files.parameters, path, &meta.model)?;
    read_parameters(meta.model.init(device)?, &files.parameters, path)
}

/// The files a reader of the checkpoint `path` reads: those of its last committed save,
/// found without moving or removing anything (loading never writes). A save interrupted
/// after its commit point (marker present, no training run holding the lock) left the new
/// files under their pending names, where they are read; without the marker, pending files
/// belong to an unfinished save and are ignored. The next save of `path` (or
/// [`finish_interrupted_save`](super::finish_interrupted_save)) puts the files in place.
struct Committed {
    parameters: PathBuf,
    sidecar: PathBuf,
}

impl Committed {
    fn of(path: &Path) -> Self {
        let committed = commit_path(path).is_file() && !writer_active(path);
        let pick = |file: PathBuf| {
            let pending = pending_path(&file);
            if committed && pending.is_file() {
                pending
            } else {
                file
            }
        };
        Self {
            parameters: pick(path.to_path_buf()),
            sidecar: pick(meta_path(path)),
        }
    }
}

/// Checks the parameter file `path` against `config` before any model is built: it must be
/// a burn module file whose tensors hold exactly the number of values the configuration
/// needs ([`ModelConfig::parameter_count`]). Only the file's header is read.
///
/// # Errors
/// [`ModelError::Checkpoint`] when the file is unreadable or belongs to another
/// configuration.
pub fn check_weights_file(path: &Path, config: &ModelConfig) -> Result<(), ModelError> {
    check_weights(&Committed::of(path).parameters, path, config)
}

/// [`check_weights_file`] of the parameter file `file` of the checkpoint `path`.
fn check_weights(file: &Path, path: &Path, config: &ModelConfig) -> Result<(), ModelError> {
    let reader = burn_pack::Reader::from_file_exact(file).map_err(|e| {
        err(
            path,
            format!("it is not a readable bnood parameter file ({e}); pass the .bpk that `bnood train` wrote"),
        )
    })?;
    let tensors = reader.into_tensors().map_err(|e| {
        err(
            path,
            format!("its list of tensors is unreadable ({e}); the file is damaged: copy it again or retrain"),
        )
    })?;
    let held: u128 = tensors
        .iter()
        .map(|t| t.shape.iter().map(|&d| d as u128).product::<u128>())
        .sum();
    let needed = config.parameter_count();
    if held != needed {
        return Err(err(
            path,
            format!(
                "it holds {held} parameter values in {} tensors, but the {} configuration in its sidecar {} needs {needed}: the two files do not belong together; restore the pair that was written together, or train again",
                tensors.len(),
                config.kind(),
                meta_path(path).display()
            ),
        ));
    }
    Ok(())
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

fn read_parameters<M: Trainable>(model: M, file: &Path, path: &Path) -> Result<M, ModelError> {
    model.load_parameters(file).map_err(|e| {
        err(
            path,
            format!(
                "the parameters do not fit the model: {}",
                summarise(&e.to_string())
            ),
        )
    })
}
