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
    /// Set for a *background* model of the likelihood-ratio detector: the rate at which
    /// training pixels were replaced by random values (`bnood train --background-mutation`,
    /// `bnood_data::mutate_pixels`). Absent (`None`) for ordinary models and every file
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_mutation: Option<f64>,
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

/// `path` with `suffix` appended to its file name (`m.bpk` → `m.bpk<suffix>`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
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

/// Path of the commit marker of a save in progress: `<file>.commit`. Its presence means
/// that every file of the new checkpoint is complete under its pending name
/// ([`pending_path`]) and only has to be moved into place.
pub fn commit_path(path: &Path) -> PathBuf {
    with_suffix(path, ".commit")
}

/// Where a save writes `file` (the parameters, the sidecar or the optimiser state) before
/// its commit point: `<file>.pending`.
pub fn pending_path(file: &Path) -> PathBuf {
    with_suffix(file, ".pending")
}

/// Path of the lock file a training run holds on its checkpoint: `<file>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    with_suffix(path, ".lock")
}

/// What the commit marker records: whether the unit includes the optimiser state (a unit
/// without it removes a stale `.optim` left by an earlier save).
#[derive(Serialize, Deserialize)]
struct Commit {
    step: usize,
    with_optimizer: bool,
}

/// The files of a checkpoint unit, in the order they are moved into place (sidecar last,
/// so a reader that finds the sidecar finds the parameters it describes).
fn unit_files(path: &Path) -> [PathBuf; 3] {
    [optimizer_path(path), path.to_path_buf(), meta_path(path)]
}

/// The steps of a save, in order; a save interrupted after any of them leaves a checkpoint
/// that [`finish_interrupted_save`] turns into the old or the new one, never a mixture.
const SAVE_STEPS: usize = 8;

/// Saves `model` to `path` and its sidecar (kind, configuration, progress) to `<path>.json`,
/// as one unit: every file is first written under a pending name, then a commit marker
/// (`<path>.commit`) is written, then the files are moved into place (sidecar last) and the
/// marker removed. A save interrupted before the marker leaves the previous checkpoint
/// untouched; one interrupted after it is read by loads from where it stopped (they write
/// nothing) and completed by the next save ([`finish_interrupted_save`]). A `.optim` of an earlier training run is removed, since it
/// no longer belongs to these parameters.
///
/// # Errors
/// [`ModelError::Checkpoint`] if a file cannot be written.
pub fn save<M: Trainable>(
    model: M,
    step: usize,
    samples_seen: usize,
    path: &Path,
) -> Result<(), ModelError> {
    save_unit(model, None, (step, samples_seen, None), path, SAVE_STEPS)
}

/// Saves the optimiser state of a training run beside the checkpoint `path`, in the same
/// unit as the parameters and sidecar (see [`save`]).
///
/// # Errors
/// [`ModelError::Checkpoint`] if a file cannot be written.
pub(crate) fn save_with_optimizer<M: Trainable>(
    model: &M,
    optim: &burn::optim::ModuleOptimizer,
    progress: (usize, usize, Option<f64>),
    path: &Path,
) -> Result<(), ModelError> {
    save_unit(model.clone(), Some(optim), progress, path, SAVE_STEPS)
}

/// The save of [`save`], stopping after `steps` of its [`SAVE_STEPS`] steps (tests simulate
/// a process killed between two steps with it).
fn save_unit<M: Trainable>(
    model: M,
    optim: Option<&burn::optim::ModuleOptimizer>,
    (step, samples_seen, background_mutation): (usize, usize, Option<f64>),
    path: &Path,
    steps: usize,
) -> Result<(), ModelError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(path, format!("cannot create its directory: {e}")))?;
    }
    complete_or_discard(path)?;
    let meta = CheckpointMeta {
        model: model.model_config(),
        step,
        samples_seen,
        background_mutation,
    };
    let [optim_file, model_file, meta_file] = unit_files(path);
    let mut done = 0;
    let mut next = || {
        done += 1;
        done <= steps
    };
    // 1. The optimiser state.
    if !next() {
        return Ok(());
    }
    if let Some(optim) = optim {
        let pending = pending_path(&optim_file);
        optim.save(&pending).map_err(|e| {
            err(
                &optim_file,
                format!("cannot write the optimiser state: {e}"),
            )
        })?;
        sync_file(&find_written(&pending).unwrap_or(pending), path)?;
    }
    // 2. The parameters (burn may add its own extension; find what it wrote).
    if !next() {
        return Ok(());
    }
    let pending_model = pending_path(&model_file);
    model
        .save_parameters(&pending_model)
        .map_err(|e| err(path, format!("cannot write the parameters: {e}")))?;
    let written =
        find_written(&pending_model).ok_or_else(|| err(path, "burn wrote no parameter file"))?;
    if written != pending_model {
        rename(&written, &pending_model, path)?;
    }
    sync_file(&pending_model, path)?;
    // 3. The sidecar.
    if !next() {
        return Ok(());
    }
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| err(path, e.to_string()))?;
    write_synced(&pending_path(&meta_file), &json, path)?;
    // 4. The commit point: from here on the new checkpoint wins.
    if !next() {
        return Ok(());
    }
    let commit = serde_json::to_vec(&Commit {
        step,
        with_optimizer: optim.is_some(),
    })
    .map_err(|e| err(path, e.to_string()))?;
    let commit_tmp = with_suffix(&commit_path(path), ".tmp");
    write_synced(&commit_tmp, &commit, path)?;
    rename(&commit_tmp, &commit_path(path), path)?;
    // 5–8. Move the files into place, then drop the marker.
    for file in [&optim_file, &model_file, &meta_file] {
        if !next() {
            return Ok(());
        }
        move_pending(file, optim.is_some() || file != &optim_file, path)?;
    }
    if !next() {
        return Ok(());
    }
    remove_if_present(&commit_path(path), path)
}

/// Completes or discards a save of the checkpoint `path` that was interrupted (the process
/// killed, the machine stopped): with its commit marker present the pending files are moved
/// into place; without it they are removed and the previous checkpoint stays as it was.
/// Returns whether anything was left to clean up. Saving calls it first, as does `bnood
/// train` on its output before a run; loading never does (it reads the last committed
/// save where it lies), so a read never writes.
///
/// # Errors
/// [`ModelError::Checkpoint`] if a file cannot be moved or removed (e.g. a read-only folder).
pub fn finish_interrupted_save(path: &Path) -> Result<bool, ModelError> {
    if writer_active(path) {
        return Ok(false);
    }
    complete_or_discard(path)
}

/// Whether a training run holds the lock of `path` now (its pending files are its own).
fn writer_active(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(lock_path(path)) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// [`finish_interrupted_save`] without the check for a running writer (the writer itself
/// calls it before saving).
pub(crate) fn complete_or_discard(path: &Path) -> Result<bool, ModelError> {
    let marker = commit_path(path);
    let mut found = false;
    if marker.is_file() {
        let commit: Commit = std::fs::read(&marker)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                err(
                    path,
                    format!(
                        "its commit marker {} is unreadable; remove it and the *.pending files beside it, then check the checkpoint",
                        marker.display()
                    ),
                )
            })?;
        for file in unit_files(path) {
            let belongs = commit.with_optimizer || file != optimizer_path(path);
            move_pending(&file, belongs, path)?;
        }
        remove_if_present(&marker, path)?;
        found = true;
    } else {
        for file in unit_files(path) {
            let pending = pending_path(&file);
            if std::fs::symlink_metadata(&pending).is_ok() {
                remove_if_present(&pending, path)?;
                found = true;
            }
        }
    }
    remove_if_present(&with_suffix(&marker, ".tmp"), path)?;
    // burn's own temporary files (`<pending>.<pid>-<n>.tmp`) of a write that was killed.
    for file in unit_files(path) {
        for stray in burn_temporaries(&pending_path(&file)) {
            remove_if_present(&stray, path)?;
            found = true;
        }
    }
    Ok(found)
}

/// The temporary files burn's atomic writer leaves for `file` when killed mid-write:
/// `<file>.<pid>-<n>.tmp` beside it.
fn burn_temporaries(file: &Path) -> Vec<PathBuf> {
    let Some(name) = file.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{name}.");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".tmp"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Moves `<file>.pending` into place if it is there; a file that does not belong to the
/// unit (`.optim` of a save without optimiser state) is removed instead.
fn move_pending(file: &Path, belongs: bool, path: &Path) -> Result<(), ModelError> {
    let pending = pending_path(file);
    if std::fs::symlink_metadata(&pending).is_ok() {
        rename(&pending, file, path)
    } else if belongs {
        Ok(())
    } else {
        remove_if_present(file, path)
    }
}

fn rename(from: &Path, to: &Path, path: &Path) -> Result<(), ModelError> {
    std::fs::rename(from, to).map_err(|e| {
        err(
            path,
            format!("cannot move {} to {}: {e}", from.display(), to.display()),
        )
    })
}

fn remove_if_present(file: &Path, path: &Path) -> Result<(), ModelError> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        // Absent, or its folder is not one (the lock reports an unusable folder better).
        Err(_) if std::fs::symlink_metadata(file).is_err() => Ok(()),
        Err(e) => Err(err(path, format!("cannot remove {}: {e}", file.display()))),
    }
}

/// Writes `bytes` to `file` and flushes them to the disk.
fn write_synced(file: &Path, bytes: &[u8], path: &Path) -> Result<(), ModelError> {
    use std::io::Write;
    let cannot = |e: std::io::Error| err(path, format!("cannot write {}: {e}", file.display()));
    let mut f = std::fs::File::create(file).map_err(cannot)?;
    f.write_all(bytes).map_err(cannot)?;
    f.sync_all().map_err(cannot)
}

/// Flushes a written file to the disk, so the commit marker never outlives its data.
fn sync_file(file: &Path, path: &Path) -> Result<(), ModelError> {
    std::fs::File::open(file)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(path, format!("cannot flush {}: {e}", file.display())))
}

/// A training run's exclusive hold on its checkpoint path: the lock file `<path>.lock`,
/// locked by the operating system (released when the process ends, even when killed).
/// Dropping it unlocks and removes the lock file.
#[derive(Debug)]
pub struct CheckpointLock {
    file: std::fs::File,
    path: PathBuf,
}

impl Drop for CheckpointLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Creates the folder of the checkpoint `path` if needed, so that a training run can learn
/// before any work that it could not save there.
///
/// # Errors
/// [`ModelError::Checkpoint`] naming the folder.
pub fn prepare_folder(path: &Path) -> Result<(), ModelError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            err(
                path,
                format!(
                    "cannot create its folder {} ({e}): choose an output path in a folder you can write",
                    dir.display()
                ),
            )
        })?;
    }
    Ok(())
}

/// Takes the lock of the checkpoint `path` for a training run, creating its folder: fails
/// at once, before any training, when the folder cannot be written or another run holds it.
///
/// # Errors
/// [`ModelError::Checkpoint`] naming the folder or the other run.
pub fn lock_for_writing(path: &Path) -> Result<CheckpointLock, ModelError> {
    prepare_folder(path)?;
    let lock = lock_path(path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| {
            err(
                path,
                format!(
                    "cannot create the lock file {} ({e}): choose an output path in a folder you can write",
                    lock.display()
                ),
            )
        })?;
    match file.try_lock() {
        Ok(()) => Ok(CheckpointLock { file, path: lock }),
        Err(std::fs::TryLockError::WouldBlock) => Err(err(
            path,
            "another bnood process is training into this checkpoint right now: wait for it to finish or choose another --out",
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(err(path, format!("cannot lock {} ({e})", lock.display())))
        }
    }
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
    let meta_file = Committed::of(path).sidecar;
    // Sidecars are a few hundred bytes; never read a device or FIFO in their place.
    const MAX_SIDECAR_BYTES: u64 = 1 << 20;
    if let Ok(m) = std::fs::metadata(&meta_file)
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
    let parameters = Committed::of(path).parameters;
    check_weights(&parameters, path, &meta.model)?;
    read_parameters(model, &parameters, path)
}

/// Builds a model from the configuration stored with the checkpoint at `path` and loads its
/// parameters, on `device`. The sidecar is read once.
///
/// # Errors
/// As [`read_meta`] and [`load_into`], and the model's own configuration errors.
pub fn load(path: &Path, device: &Device) -> Result<AnyModel, ModelError> {
    let meta = read_meta(path)?;
    meta.model.check_size()?;
    let parameters = Committed::of(path).parameters;
    check_weights(&parameters, path, &meta.model)?;
    read_parameters(meta.model.init(device)?, &parameters, path)
}

/// The files a reader of the checkpoint `path` reads: those of its last committed save,
/// found without moving or removing anything (loading never writes). A save interrupted
/// after its commit point (marker present, no training run holding the lock) left the new
/// files under their pending names, where they are read; without the marker, pending files
/// belong to an unfinished save and are ignored. The next save of `path` (or
/// [`finish_interrupted_save`]) puts the files in place.
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

/// At most this many items of a long list are quoted in an error.
const QUOTED_ITEMS: usize = 3;

/// A long error text (burn lists every mismatching tensor) as its first sentence plus the
/// first few items of its list: `Missing tensors: 412 in all, the first: a, b, c`.
pub(crate) fn summarise(text: &str) -> String {
    const SHORT: usize = 300;
    if text.len() <= SHORT {
        return text.to_string();
    }
    if let (Some(open), Some(close)) = (text.find('['), text.rfind(']'))
        && open < close
    {
        let items = split_top_level(&text[open + 1..close]);
        let first: Vec<String> = items
            .iter()
            .take(QUOTED_ITEMS)
            .map(|i| shorten(i.trim(), 120))
            .collect();
        return format!(
            "{} {} in all, the first: {}",
            text[..open].trim_end(),
            items.len(),
            first.join("; ")
        );
    }
    shorten(text, SHORT)
}

/// Splits `list` at the commas outside brackets, braces and parentheses.
fn split_top_level(list: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0i32, 0, Vec::new());
    for (i, ch) in list.char_indices() {
        match ch {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !list[start..].trim().is_empty() {
        items.push(&list[start..]);
    }
    items
}

/// `text` cut to at most `max` bytes (at a character boundary), marked when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} characters in all)",
        &text[..end],
        text.chars().count()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LikelihoodModel, RealNvp, RealNvpConfig, StatsMode};
    use burn::module::Module;
    use burn::tensor::{Tensor, TensorData};

    fn tiny(seed: u64) -> RealNvp {
        RealNvpConfig {
            image_shape: [1, 4, 4],
            mid_channels: 4,
            num_blocks: 1,
            zero_init_last: false,
            ..RealNvpConfig::paper_fmnist()
        }
        .with_seed(seed)
        .init(&Device::flex())
        .expect("a valid configuration")
    }

    /// The model's log p of a fixed batch: equal outputs mean equal parameters.
    fn fingerprint(model: &AnyModel) -> Vec<f32> {
        let pixels: Vec<f32> = (0..32).map(|i| (i * 37 % 251) as f32 + 0.5).collect();
        let x = Tensor::<4>::from_data(TensorData::new(pixels, [2, 1, 4, 4]), &Device::flex());
        model
            .log_prob(x, &StatsMode::Running)
            .expect("scores")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32")
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bnood-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_save_interrupted_after_any_step_loads_as_the_old_or_the_new_checkpoint_without_writing() {
        let (old, new) = (tiny(1), tiny(2));
        let old_print = fingerprint(&AnyModel::RealNvp(old.clone()));
        let new_print = fingerprint(&AnyModel::RealNvp(new.clone()));
        assert_ne!(old_print, new_print);
        for steps in 0..=SAVE_STEPS {
            let dir = scratch(&format!("interrupt-{steps}"));
            let path = dir.join("m.bpk");
            save(old.clone(), 1, 64, &path).expect("first save");
            // A process killed after `steps` steps of the next save.
            save_unit(new.clone(), None, (2, 128, None), &path, steps).expect("partial save");
            let left = files_in(&dir);
            let expected = if steps >= 4 {
                (2, &new_print)
            } else {
                (1, &old_print)
            };
            let loaded = load(&path, &Device::flex()).expect("loads after any interruption");
            let meta = read_meta(&path).expect("sidecar");
            assert_eq!(meta.step, expected.0, "interrupted after {steps} steps");
            assert_eq!(&fingerprint(&loaded), expected.1, "after {steps} steps");
            assert_eq!(
                files_in(&dir),
                left,
                "loading wrote nothing after {steps} steps"
            );
            // The explicit step (which every save takes first) puts the files in place.
            finish_interrupted_save(&path).expect("finished");
            assert_eq!(
                files_in(&dir),
                ["m.bpk", "m.bpk.json"],
                "nothing pending is left after {steps} steps"
            );
            let again = load(&path, &Device::flex()).expect("loads");
            assert_eq!(
                &fingerprint(&again),
                expected.1,
                "after {steps} steps, finished"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_first_save_interrupted_before_its_commit_leaves_no_checkpoint() {
        let dir = scratch("first-save");
        let path = dir.join("m.bpk");
        save_unit(tiny(1), None, (1, 64, None), &path, 3).expect("partial save");
        // What burn's atomic writer leaves when killed mid-write.
        std::fs::write(dir.join("m.bpk.pending.4242-0.tmp"), b"half").expect("stray");
        assert!(finish_interrupted_save(&path).expect("cleaned"));
        assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_checkpoint_of_the_old_layout_loads_with_or_without_optimizer_state() {
        let dir = scratch("old-layout");
        let path = dir.join("m.bpk");
        let model = tiny(3);
        let print = fingerprint(&AnyModel::RealNvp(model.clone()));
        // The old layout: `.bpk` and `.bpk.json` written by burn and serde directly.
        model.clone().save_file(&path).expect("parameters");
        let meta = CheckpointMeta {
            model: model.model_config(),
            step: 5,
            samples_seen: 320,
            background_mutation: None,
        };
        std::fs::write(
            meta_path(&path),
            serde_json::to_vec_pretty(&meta).expect("json"),
        )
        .expect("sidecar");
        assert_eq!(
            fingerprint(&load(&path, &Device::flex()).expect("loads")),
            print
        );
        // A stale `.optim` beside it changes nothing.
        std::fs::write(optimizer_path(&path), b"old optimiser state").expect("optim");
        assert_eq!(
            fingerprint(&load(&path, &Device::flex()).expect("loads")),
            print
        );
        assert_eq!(read_meta(&path).expect("meta").step, 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn with_sidecar_edit(name: &str, edit: impl Fn(&mut serde_json::Value)) -> (PathBuf, String) {
        let dir = scratch(name);
        let path = dir.join("m.bpk");
        save(tiny(4), 1, 64, &path).expect("saved");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(meta_path(&path)).expect("read")).expect("json");
        edit(&mut json);
        std::fs::write(meta_path(&path), json.to_string()).expect("written");
        let e = load(&path, &Device::flex()).expect_err("refused");
        (dir, e.to_string())
    }

    #[test]
    fn a_sidecar_claiming_a_huge_model_is_refused_before_anything_is_allocated() {
        for (field, value) in [
            ("mid_channels", 100_000u64),
            ("num_blocks", 100_000_000),
            ("downscales", 200),
        ] {
            let (dir, e) = with_sidecar_edit(&format!("huge-{field}"), |j| {
                j["config"][field] = value.into();
            });
            assert!(
                e.contains("limit") || e.contains("downscales"),
                "{field}: {e}"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_sidecar_of_another_size_than_its_weights_file_is_refused_from_the_header() {
        let (dir, e) = with_sidecar_edit("mismatch", |j| {
            j["config"]["mid_channels"] = 8.into();
        });
        assert!(e.contains("do not belong together"), "{e}");
        assert!(e.len() < 400, "one sentence, not a list: {e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_long_list_of_mismatches_is_one_sentence_and_the_first_three() {
        let names: Vec<String> = (0..500).map(|i| format!("\"layer{i}.weight\"")).collect();
        let text = format!("Missing tensors: [{}]", names.join(", "));
        let short = summarise(&text);
        assert_eq!(
            short,
            "Missing tensors: 500 in all, the first: \"layer0.weight\"; \"layer1.weight\"; \"layer2.weight\""
        );
        assert_eq!(summarise("short"), "short");
        assert!(summarise(&"é".repeat(1000)).len() < 400);
    }

    #[test]
    fn a_checkpoint_locked_by_a_training_run_cannot_be_locked_again() {
        let dir = scratch("lock");
        let path = dir.join("m.bpk");
        let held = lock_for_writing(&path).expect("first lock");
        let e = lock_for_writing(&path).expect_err("second lock refused");
        assert!(e.to_string().contains("another bnood process"), "{e}");
        drop(held);
        lock_for_writing(&path).expect("free again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_checkpoint_in_a_folder_that_cannot_be_created_is_refused_at_once() {
        let dir = scratch("no-folder");
        let file = dir.join("a-file");
        std::fs::write(&file, b"x").expect("file");
        let e = lock_for_writing(&file.join("m.bpk")).expect_err("refused");
        assert!(e.to_string().contains("cannot create its folder"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
