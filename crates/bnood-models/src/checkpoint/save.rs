//! Writing a checkpoint as one unit (parameters, sidecar, optimiser state: pending files, a
//! commit marker, then renames), completing or discarding a save that was interrupted, and
//! the lock a training run holds on its checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    CheckpointMeta, DataRecord, commit_path, err, lock_path, meta_path, optimizer_path,
    pending_path, with_suffix,
};
use crate::{ModelError, Trainable};

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
pub(super) const SAVE_STEPS: usize = 8;

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
    save_unit(
        model,
        None,
        (step, samples_seen, DataRecord::default()),
        path,
        SAVE_STEPS,
    )
}

/// [`save`] recording what the model was trained on ([`DataRecord`]: a background model's
/// mutation rate, the images' preprocessing) in the sidecar.
///
/// # Errors
/// [`ModelError::Checkpoint`] if a file cannot be written.
pub fn save_recording<M: Trainable>(
    model: M,
    (step, samples_seen): (usize, usize),
    data: DataRecord,
    path: &Path,
) -> Result<(), ModelError> {
    save_unit(model, None, (step, samples_seen, data), path, SAVE_STEPS)
}

/// Saves the optimiser state of a training run beside the checkpoint `path`, in the same
/// unit as the parameters and sidecar (see [`save`]).
///
/// # Errors
/// [`ModelError::Checkpoint`] if a file cannot be written.
pub(crate) fn save_with_optimizer<M: Trainable>(
    model: &M,
    optim: &burn::optim::ModuleOptimizer,
    progress: (usize, usize, DataRecord),
    path: &Path,
) -> Result<(), ModelError> {
    save_unit(model.clone(), Some(optim), progress, path, SAVE_STEPS)
}

/// The save of [`save`], stopping after `steps` of its [`SAVE_STEPS`] steps (tests simulate
/// a process killed between two steps with it).
pub(super) fn save_unit<M: Trainable>(
    model: M,
    optim: Option<&burn::optim::ModuleOptimizer>,
    (step, samples_seen, data): (usize, usize, DataRecord),
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
        background_mutation: data.background_mutation,
        preprocess: data.preprocess,
        held_out: data.held_out,
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
pub(super) fn writer_active(path: &Path) -> bool {
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

/// Creates the folder of the checkpoint `path` if needed and checks that a file can be
/// written into it, so that a training run learns before any work that it could not save
/// there.
///
/// # Errors
/// [`ModelError::Checkpoint`] naming the folder.
pub fn prepare_folder(path: &Path) -> Result<(), ModelError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| {
        err(
            path,
            format!(
                "cannot create its folder {} ({e}): choose an output path in a folder you can write",
                dir.display()
            ),
        )
    })?;
    // Writable now, not after the work: create and remove a probe file.
    let probe = dir.join(format!(".bnood-write-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&probe)
        .map_err(|e| {
            err(
                path,
                format!(
                    "cannot write into its folder {} ({e}): choose an output path in a folder you can write",
                    dir.display()
                ),
            )
        })?;
    let _ = std::fs::remove_file(&probe);
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
