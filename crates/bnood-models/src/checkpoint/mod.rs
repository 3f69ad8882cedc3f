//! Checkpoints, all naming and I/O in one place: a model's parameters (burn's module
//! store, BatchNorm running statistics included) in `<file>`, a JSON sidecar with the
//! model's kind, configuration and training progress in `<file>.json`, and during training
//! Adam's state in `<file>.optim`. Loading reads the sidecar once and refuses a file made
//! for another architecture.
//!
//! One module a job: this one names the files and holds the sidecar's format; `load` reads
//! a checkpoint (never writing: an interrupted save is read where it stopped); `save` writes
//! one as a unit and owns recovery and locking; `summary` shortens burn's long error lists.
//!
//! The sidecar's layout (`{"kind", "config", "step", "samples_seen"}`) has not changed since
//! the first release, so every checkpoint written by bnood loads.

mod load;
mod save;
mod summary;

use std::path::{Path, PathBuf};

use bnood_data::Preprocess;
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::catalogue::ModelConfig;

pub(crate) use load::load_optimizer;
pub(crate) use load::parameter_shapes;
pub use load::{CheckpointFile, load, load_into, read_meta};
pub use save::{
    CheckpointLock, finish_interrupted_save, lock_for_writing, prepare_folder, save, save_recording,
};
pub(crate) use save::{complete_or_discard, save_with_optimizer};

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
    /// How the training images were brought to the model's shape (`bnood train --resize`,
    /// `--crop`, `--grayscale`, `--rgb`); every set the model scores goes through the same.
    /// Absent when none (and in every file written before it existed).
    #[serde(default, skip_serializing_if = "Preprocess::is_identity")]
    pub preprocess: Preprocess,
    /// The part of the training set held out from training (`bnood train --hold-out`), which
    /// `--reference held-out` reads back. Absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOutPart>,
}

/// Which images of its training set a model did not train on: the set as named (a catalogue
/// name, or an absolute path), the share held out and the seed of the split
/// (`bnood_data::ImageSet::split_held_out`), after the checkpoint's preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutPart {
    /// The training set's name or absolute path.
    pub dataset: String,
    /// The share held out.
    pub fraction: f64,
    /// The split's seed.
    pub seed: u64,
}

/// What a checkpoint records about its training data beside the model: the background
/// model's mutation rate and the preprocessing of the images.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataRecord {
    /// See [`CheckpointMeta::background_mutation`].
    pub background_mutation: Option<f64>,
    /// See [`CheckpointMeta::preprocess`].
    pub preprocess: Preprocess,
    /// See [`CheckpointMeta::held_out`].
    pub held_out: Option<HeldOutPart>,
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

#[cfg(test)]
mod tests {
    use super::load::*;
    use super::save::{SAVE_STEPS, save_unit};
    use super::summary::summarise;
    use super::*;
    use crate::Trainable;
    use crate::catalogue::AnyModel;
    use crate::{LikelihoodModel, RealNvp, RealNvpConfig, StatsMode};
    use burn::module::Module;
    use burn::tensor::Device;
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
            save_unit(
                new.clone(),
                None,
                (2, 128, DataRecord::default()),
                &path,
                steps,
            )
            .expect("partial save");
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
        save_unit(tiny(1), None, (1, 64, DataRecord::default()), &path, 3).expect("partial save");
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
            preprocess: Preprocess::default(),
            held_out: None,
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
    fn a_sidecar_of_another_width_than_its_weights_file_is_refused_naming_the_first_tensor_and_both_shapes()
     {
        let (dir, e) = with_sidecar_edit("mismatch", |j| {
            j["config"]["mid_channels"] = 8.into();
        });
        assert!(e.contains("do not belong together"), "{e}");
        assert!(e.contains("its tensor `"), "names the tensor: {e}");
        assert!(
            e.contains("has shape [4") && e.contains("the model's has [8"),
            "both shapes, file's first: {e}"
        );
        assert!(e.len() < 400, "one sentence, not a list: {e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_sidecar_of_a_deeper_model_than_its_weights_file_is_refused_naming_a_missing_tensor() {
        let (dir, e) = with_sidecar_edit("deeper", |j| {
            let blocks = j["config"]["num_blocks"].as_u64().expect("num_blocks");
            j["config"]["num_blocks"] = (blocks + 1).into();
        });
        assert!(e.contains("it has no tensor `"), "{e}");
        assert!(e.contains("do not belong together"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 27: a FIFO (or a device) in place of a parameter file is refused without
    /// being read: a FIFO would block, `/dev/zero` would fill memory.
    #[test]
    fn a_fifo_as_a_parameter_file_is_refused_without_waiting_for_a_writer() {
        let dir = scratch("fifo");
        let path = dir.join("m.bpk");
        save(tiny(4), 1, 64, &path).expect("saved");
        std::fs::remove_file(&path).expect("removed");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let e = load(&path, &Device::flex())
            .expect_err("refused")
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_checkpoint_is_read_once_and_its_checksum_is_of_the_bytes_loaded() {
        let dir = scratch("read-once");
        let path = dir.join("m.bpk");
        save(tiny(4), 1, 64, &path).expect("saved");
        let file = CheckpointFile::read(&path).expect("read");
        let mut both = std::fs::read(&path).expect("params");
        both.extend(std::fs::read(meta_path(&path)).expect("sidecar"));
        assert_eq!(file.md5(), bnood_data::idx::md5_hex(&both));
        // Files changed after the read do not change what is loaded.
        std::fs::write(&path, b"damaged later").expect("overwrite");
        let model = file
            .into_model(&Device::flex())
            .expect("loads what was read");
        assert_eq!(
            crate::Trainable::model_config(&model).kind(),
            crate::ModelKind::RealNvp
        );
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
