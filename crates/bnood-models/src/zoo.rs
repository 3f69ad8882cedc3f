//! The model zoo: trained checkpoints shipped in the repository's `models/` folder, found by
//! name (`realnvp-fmnist`, `vae-fmnist-seed1`, …) and verified by MD5 like the datasets.
//!
//! Each entry records how it was made (the `bnood train` command, steps, epochs, final
//! training loss in bits/dim and the machine), so a user can tell what a name means and
//! retrain it. The folder is searched, in order:
//! 1. a directory the caller gives ([`ModelsDir::with_dir`]; it must exist);
//! 2. the directory in the environment variable `BNOOD_MODELS_DIR`;
//! 3. `models/` in the working directory;
//! 4. the `models/` folder of the source tree this crate was built from, when it is still
//!    there (a `cargo run` from a checkout finds the shipped models from any directory).
//!
//! A name that is also an existing file path is the file: `--model runs/x.bpk` never
//! reaches the zoo.

use std::path::{Path, PathBuf};

use bnood_data::idx::md5_hex;

use burn::tensor::Device;

use crate::ModelError;
use crate::catalogue::{AnyModel, ModelKind};
use crate::checkpoint::{self, CheckpointFile};

/// A training in progress ([`ModelsDir::in_training`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InTraining {
    /// The checkpoint's file stem, e.g. `realnvp-fmnist-paper-seed0`.
    pub name: String,
    /// The checkpoint (`.bpk`).
    pub path: PathBuf,
    /// Optimiser steps taken.
    pub step: usize,
    /// Names of the learning curve's held-out metrics (bits/dim).
    pub metrics: Vec<String>,
    /// The last held-out evaluation, when there is a learning curve.
    pub last: Option<crate::curve::CurveRow>,
    /// Why the campaign finished the job (`<name>.done`), if it did.
    pub finished: Option<String>,
}

/// Environment variable naming the folder of shipped checkpoints.
pub const MODELS_DIR_ENV: &str = "BNOOD_MODELS_DIR";

/// One shipped checkpoint: `<file>` (parameters) and `<file>.json` (its sidecar).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shipped {
    /// The name users give (`--model realnvp-fmnist`).
    pub name: &'static str,
    /// Model family.
    pub kind: ModelKind,
    /// Preset the model was built from (`cpu` or `paper`).
    pub preset: &'static str,
    /// Initialisation (and training) seed.
    pub seed: u64,
    /// The catalogue set it was trained on (`fmnist-train`, or `mnist-train` for the model
    /// of the paper's Appendix B); its file name says `fmnist` or `mnist` accordingly.
    pub trained_on: &'static str,
    /// File name inside the models folder (the sidecar is `<file>.json`).
    pub file: &'static str,
    /// MD5 of the parameters file, lowercase hex.
    pub md5: &'static str,
    /// MD5 of the sidecar, lowercase hex.
    pub md5_sidecar: &'static str,
    /// Optimiser steps of 64 images.
    pub steps: usize,
    /// Training loss of the last steps, bits/dim (dequantised training batches, Train-mode
    /// BatchNorm), as `bnood train` printed it.
    pub final_bits_per_dim: f64,
    /// Wall time of the training run, seconds.
    pub train_seconds: f64,
    /// The command that made it (run from the repository root).
    pub command: &'static str,
    /// Where it was trained.
    pub machine: &'static str,
    /// What it is for, in a few words.
    pub role: &'static str,
    /// For a likelihood-ratio background model: the pixel mutation rate it was trained
    /// with (`bnood train --background-mutation`); `None` for ordinary models.
    pub background_mutation: Option<f64>,
}

impl Shipped {
    /// Passes over Fashion-MNIST train (60,000 images) that [`Shipped::steps`] batches of
    /// 64 make.
    pub fn epochs(&self) -> f64 {
        (self.steps * 64) as f64 / 60_000.0
    }
}

/// The project machine every shipped model was trained on.
const CPU_MACHINE: &str =
    "project CPU machine: 2-core Xeon, 24 GiB, flex backend, shared with builds";

/// Every shipped checkpoint, the main model of each family first.
pub const SHIPPED: &[Shipped] = &[
    Shipped {
        name: "realnvp-fmnist",
        kind: ModelKind::RealNvp,
        preset: "cpu",
        seed: 0,
        trained_on: "fmnist-train",
        file: "realnvp-fmnist-cpu-seed0.bpk",
        md5: "39340e88670cc39bcb6dc8fc1faf6b05",
        md5_sidecar: "d4563b673b2d6af87507d49e3c4c858e",
        steps: 937,
        final_bits_per_dim: 3.936,
        train_seconds: 2812.0,
        command: "bnood train --model realnvp --preset cpu --epochs 1 --seed 0 --out models/realnvp-fmnist-cpu-seed0.bpk",
        machine: CPU_MACHINE,
        background_mutation: None,
        role: "main RealNVP: scored by every detector, the main job and the docs",
    },
    Shipped {
        name: "realnvp-fmnist-seed1",
        kind: ModelKind::RealNvp,
        preset: "cpu",
        seed: 1,
        trained_on: "fmnist-train",
        file: "realnvp-fmnist-cpu-seed1.bpk",
        md5: "83f0d179b13f0361fe9b8a51bada6460",
        md5_sidecar: "29479d129cf9e0544e6b78ab9c7a8eed",
        steps: 200,
        final_bits_per_dim: 4.757,
        train_seconds: 396.0,
        command: "bnood train --model realnvp --preset cpu --steps 200 --seed 1 --out models/realnvp-fmnist-cpu-seed1.bpk",
        machine: CPU_MACHINE,
        background_mutation: None,
        role: "RealNVP WAIC ensemble member",
    },
    Shipped {
        name: "realnvp-fmnist-seed2",
        kind: ModelKind::RealNvp,
        preset: "cpu",
        seed: 2,
        trained_on: "fmnist-train",
        file: "realnvp-fmnist-cpu-seed2.bpk",
        md5: "0664ee5cf2ae6263853f8ff8b6e7bf6f",
        md5_sidecar: "af59e23aeef88c7eeda50c9fc02ece4e",
        steps: 200,
        final_bits_per_dim: 4.831,
        train_seconds: 376.0,
        command: "bnood train --model realnvp --preset cpu --steps 200 --seed 2 --out models/realnvp-fmnist-cpu-seed2.bpk",
        machine: CPU_MACHINE,
        background_mutation: None,
        role: "RealNVP WAIC ensemble member",
    },
    Shipped {
        name: "realnvp-fmnist-background",
        kind: ModelKind::RealNvp,
        preset: "cpu",
        seed: 0,
        trained_on: "fmnist-train",
        file: "realnvp-fmnist-background-cpu-seed0.bpk",
        md5: "442e09ba05ec4e753e783a4fceb76127",
        md5_sidecar: "7fa95e2b5583af025d667dd8d42e3596",
        steps: 520,
        // On training batches with 20 % of pixels replaced, so not comparable with the others.
        final_bits_per_dim: 5.812,
        // 3,484 s to the step-500 checkpoint (process start to stop), then 139 s resumed.
        train_seconds: 3623.0,
        command: "bnood train --model realnvp --preset cpu --epochs 1 --seed 0 --background-mutation 0.2 --out models/realnvp-fmnist-background-cpu-seed0.bpk, stopped after its step-500 checkpoint, then the same with --steps 520 --resume",
        machine: CPU_MACHINE,
        background_mutation: Some(0.2),
        role: "background model of the likelihood ratio (--background) for realnvp-fmnist",
    },
    Shipped {
        name: "realnvp-fmnist-paper",
        kind: ModelKind::RealNvp,
        preset: "paper",
        seed: 0,
        trained_on: "fmnist-train",
        file: "realnvp-fmnist-paper-seed0.bpk",
        md5: "b8463113d9e8f0b5eda8a0d9d66f5329",
        md5_sidecar: "8a608b7597c8c76b9c67f38413e7914f",
        steps: 8433,
        final_bits_per_dim: 3.181,
        // Wall time of the campaign's chunks up to step 8433, evaluations included: six
        // 20-minute chunks to step 7615, then 818 of chunk 7's 1,653 steps (runs/campaign.log).
        train_seconds: 7794.0,
        command: "models/training/campaign.sh (job realnvp-fmnist-paper-seed0: bnood train --model realnvp --preset paper --seed 0 --epochs 100 --eval-images 2000 --stop-when-flat 0.005 --flat-epochs 3 --lr-halvings 1 --snapshots runs/snapshots, in 20-minute chunks with --resume); the parameters of its epoch-9 snapshot runs/snapshots/realnvp-fmnist-paper-seed0-step8433.bpk copied to models/realnvp-fmnist-paper-seed0.bpk",
        machine: CPU_MACHINE,
        background_mutation: None,
        role: "paper-size RealNVP (App. C.1) after 9 epochs: 2.949 bits/dim on FMNIST test (paper 2.92)",
    },
    Shipped {
        name: "pixelcnn-fmnist",
        kind: ModelKind::PixelCnn,
        preset: "cpu",
        seed: 0,
        trained_on: "fmnist-train",
        file: "pixelcnn-fmnist-cpu-seed0.bpk",
        md5: "4436b9eb7c07ffaa7c3550f6352bf173",
        md5_sidecar: "0c6667c31479dd92d0af15332cfc7a0e",
        steps: 1874,
        final_bits_per_dim: 3.181,
        // Wall time of the campaign's three chunks, evaluations included (runs/campaign.log:
        // 1,212 + 1,200 + 765 s).
        train_seconds: 3177.0,
        command: "models/training/campaign.sh (job pixelcnn-fmnist-cpu-seed0: bnood train --model pixelcnn --preset cpu --seed 0 --epochs 2 --eval-images 1000, in 20-minute chunks with --resume), copied to models/pixelcnn-fmnist-cpu-seed0.bpk",
        machine: CPU_MACHINE,
        background_mutation: None,
        role: "PixelCNN++ (cpu preset) after 2 epochs: 3.081 bits/dim on FMNIST test",
    },
    Shipped {
        name: "pixelcnn-mnist",
        kind: ModelKind::PixelCnn,
        preset: "cpu",
        seed: 0,
        trained_on: "mnist-train",
        file: "pixelcnn-mnist-cpu-seed0.bpk",
        md5: "913ee484a03abdcae7e0d5167465b0ee",
        md5_sidecar: "0c6667c31479dd92d0af15332cfc7a0e",
        steps: 1874,
        // The last run's mean training loss (its 11 steps; the chunk before ended at 1.192).
        final_bits_per_dim: 1.215,
        // Wall time of the campaign's three chunks (runs/campaign.log: 1,201 + 1,200 + 12 s).
        train_seconds: 2413.0,
        command: "models/training/campaign.sh (job pixelcnn-mnist-cpu-seed0: bnood train --model pixelcnn --preset cpu --seed 0 --epochs 2 --dataset mnist-train, in 20-minute chunks with --resume), moved to models/pixelcnn-mnist-cpu-seed0.bpk",
        machine: CPU_MACHINE,
        background_mutation: None,
        role: "PixelCNN++ (cpu preset) on MNIST, the paper's Appendix B model whose samples fool T_perm: 1.195 bits/dim on MNIST test, 4.788 on FMNIST test",
    },
    Shipped {
        name: "vae-fmnist",
        kind: ModelKind::Vae,
        preset: "cpu",
        seed: 0,
        trained_on: "fmnist-train",
        file: "vae-fmnist-cpu-seed0.bpk",
        md5: "099e38fbc4eaab11366d24cafa48f8bb",
        md5_sidecar: "2e0a8b9fc0700cd9bb59acf82636a268",
        steps: 937,
        final_bits_per_dim: 3.792,
        train_seconds: 2931.0,
        command: "bnood train --model vae --preset cpu --epochs 1 --seed 0 --out models/vae-fmnist-cpu-seed0.bpk",
        machine: CPU_MACHINE,
        background_mutation: None,
        role: "main VAE: scored by log p, T_perm and the BN test in the docs",
    },
];

/// Where shipped checkpoints are looked for (see the module docs for the order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelsDir {
    dir: Option<PathBuf>,
    env_dir: Option<PathBuf>,
    local_dir: PathBuf,
    source_dir: Option<PathBuf>,
}

impl Default for ModelsDir {
    fn default() -> Self {
        Self::from_env()
    }
}

impl ModelsDir {
    /// The default search order, reading `BNOOD_MODELS_DIR` now.
    pub fn from_env() -> Self {
        Self {
            dir: None,
            env_dir: std::env::var_os(MODELS_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            local_dir: PathBuf::from("models"),
            source_dir: Some(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join("..")
                    .join("models"),
            ),
        }
    }

    /// Only `dir`: no environment, no working directory, no source tree.
    pub fn only(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
            env_dir: None,
            local_dir: PathBuf::new(),
            source_dir: None,
        }
    }

    /// Searches `dir` first (it must exist when a model is looked up).
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The folders searched, in order (those that do not exist included).
    pub fn candidates(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.dir.iter().chain(&self.env_dir).cloned().collect();
        if !self.local_dir.as_os_str().is_empty() {
            out.push(self.local_dir.clone());
        }
        out.extend(self.source_dir.iter().cloned());
        out.dedup();
        out
    }

    /// The trainings in progress kept beside the shipped models: every checkpoint in the
    /// `training/` subfolder of the first searched folder that has one (the paper-quality
    /// campaign, `models/training/`), with its step and the last row of its learning curve.
    /// They are not shipped models: no name resolves to them.
    pub fn in_training(&self) -> Vec<InTraining> {
        let Some(dir) = self
            .candidates()
            .into_iter()
            .map(|d| d.join("training"))
            .find(|d| d.is_dir())
        else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<InTraining> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "bpk"))
            .filter_map(|path| {
                let meta = checkpoint::read_meta(&path).ok()?;
                let curve =
                    crate::curve::LearningCurve::read(&crate::curve::curve_path(&path)).ok();
                let name = path.file_stem()?.to_string_lossy().into_owned();
                // The campaign's record of why the job is finished: `<name>.done`.
                let finished = std::fs::read_to_string(path.with_extension("done")).ok();
                Some(InTraining {
                    name,
                    step: meta.step,
                    metrics: curve
                        .as_ref()
                        .map(|c| c.metrics.clone())
                        .unwrap_or_default(),
                    last: curve.and_then(|c| c.rows.last().cloned()),
                    finished,
                    path,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Finds `entry`'s file in the searched folders (nothing is read).
    ///
    /// # Errors
    /// [`ModelError::Shipped`] when a directory given explicitly does not exist or when no
    /// folder holds the file (naming the folders searched).
    fn find_file(&self, entry: &'static Shipped) -> Result<PathBuf, ModelError> {
        let fail = |reason: String| ModelError::Shipped {
            name: entry.name.to_string(),
            reason,
        };
        if let Some(dir) = &self.dir
            && !dir.is_dir()
        {
            return Err(fail(format!(
                "the models folder {} does not exist",
                dir.display()
            )));
        }
        let searched = self.candidates();
        searched
            .iter()
            .map(|d| d.join(entry.file))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                let list: Vec<_> = searched.iter().map(|d| d.display().to_string()).collect();
                fail(format!(
                    "{} is in none of the folders searched ({}); point {MODELS_DIR_ENV} at the repository's models/ folder",
                    entry.file,
                    list.join(", ")
                ))
            })
    }

    /// Finds `entry`'s files, reads them and checks both MD5s.
    ///
    /// # Errors
    /// As [`find_file`](Self::find_file), and [`ModelError::Shipped`] when a checksum
    /// differs (naming both: the file was changed or damaged; restore it with
    /// `git checkout models/`).
    pub fn locate(&self, entry: &'static Shipped) -> Result<PathBuf, ModelError> {
        let source = self.shipped(entry)?;
        source.read()?;
        Ok(source.path)
    }

    /// The shipped checkpoint `entry` as a source to read (found, not yet read).
    ///
    /// # Errors
    /// As [`find_file`](Self::find_file).
    pub fn shipped(&self, entry: &'static Shipped) -> Result<ModelSource, ModelError> {
        Ok(ModelSource {
            path: self.find_file(entry)?,
            shipped: Some(entry),
        })
    }

    /// What a `--model` value names: an existing path as given, else the shipped checkpoint
    /// of that name. A value that looks like a path (a `/` or an extension) and does not
    /// exist is "no such file". An existing path that *is* a shipped file (its name, in one
    /// of the searched folders) is verified like the name when read. Nothing is read here.
    ///
    /// # Errors
    /// [`ModelError::Shipped`] when the value is neither an existing file nor a shipped
    /// name (listing the names), or when the shipped file is in no searched folder.
    pub fn source(&self, spec: &str) -> Result<ModelSource, ModelError> {
        let as_path = Path::new(spec);
        if as_path.exists() {
            return Ok(ModelSource {
                path: as_path.to_path_buf(),
                shipped: self.shipped_at(as_path),
            });
        }
        let looks_like_a_path = spec.contains(std::path::MAIN_SEPARATOR)
            || spec.contains('/')
            || as_path.extension().is_some();
        match find(spec) {
            Some(entry) => self.shipped(entry),
            None if looks_like_a_path => Err(ModelError::Shipped {
                name: shown(spec),
                reason: "no such file".into(),
            }),
            None => Err(ModelError::Shipped {
                name: shown(spec),
                reason: format!(
                    "no such file, and no shipped model has that name (shipped: {}; `bnood models list` describes them)",
                    names().join(", ")
                ),
            }),
        }
    }

    /// The file a `--model` value names ([`source`](Self::source)'s path).
    ///
    /// # Errors
    /// As [`source`](Self::source).
    pub fn resolve(&self, spec: &str) -> Result<PathBuf, ModelError> {
        self.source(spec).map(|s| s.path)
    }

    /// The one way a front end loads a model: a `--model` value (a checkpoint path or a
    /// shipped name) → the checkpoint read once, MD5-verified when shipped, its tensors
    /// checked by name and shape, built on `device`; a VAE with `iw_samples` importance
    /// samples when given.
    ///
    /// # Errors
    /// As [`source`](Self::source) and [`ModelSource::load`].
    pub fn load(
        &self,
        spec: &str,
        device: &Device,
        iw_samples: Option<usize>,
    ) -> Result<LoadedModel, ModelError> {
        self.source(spec)?.load(device, iw_samples)
    }

    /// The shipped entry whose file `path` is, in one of the searched folders.
    fn shipped_at(&self, path: &Path) -> Option<&'static Shipped> {
        let name = path.file_name()?.to_str()?;
        let entry = SHIPPED.iter().find(|s| s.file == name)?;
        let here = path.canonicalize().ok()?;
        self.candidates()
            .iter()
            .any(|d| d.join(entry.file).canonicalize().ok().as_ref() == Some(&here))
            .then_some(entry)
    }
}

/// `spec` as an error shows it: at most 120 characters (a pasted file is not echoed back).
fn shown(spec: &str) -> String {
    const MAX: usize = 120;
    match spec.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} characters)", &spec[..cut], spec.chars().count()),
        None => spec.to_string(),
    }
}

/// A checkpoint a `--model` value names ([`ModelsDir::source`]), not yet read.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSource {
    /// The checkpoint file (`.bpk`; its `.json` sidecar beside it).
    pub path: PathBuf,
    /// The shipped entry it is, whose MD5s the files must have.
    pub shipped: Option<&'static Shipped>,
}

impl ModelSource {
    /// Reads the checkpoint once, checking a shipped one's MD5s on the bytes read.
    ///
    /// # Errors
    /// [`ModelError::Checkpoint`] for unreadable files; [`ModelError::Shipped`] naming both
    /// checksums when a shipped file was changed or damaged.
    pub fn read(&self) -> Result<CheckpointFile, ModelError> {
        let Some(entry) = self.shipped else {
            return CheckpointFile::read(&self.path);
        };
        let damaged = |file: &Path, found: String, expected: &str| ModelError::Shipped {
            name: entry.name.to_string(),
            reason: format!(
                "{} has MD5 {found}, expected {expected}: the file was changed or damaged (restore it with `git checkout models/`)",
                file.display()
            ),
        };
        CheckpointFile::read_checked(&self.path, |parameters, sidecar| {
            let found = md5_hex(parameters);
            if found != entry.md5 {
                return Err(damaged(&self.path, found, entry.md5));
            }
            let found = md5_hex(sidecar);
            if found != entry.md5_sidecar {
                return Err(damaged(
                    &checkpoint::meta_path(&self.path),
                    found,
                    entry.md5_sidecar,
                ));
            }
            Ok(())
        })
    }

    /// [`read`](Self::read), then builds the model on `device` (a VAE with `iw_samples`
    /// importance samples when given).
    ///
    /// # Errors
    /// As [`read`](Self::read) and [`CheckpointFile::into_model`];
    /// [`ModelError::InvalidConfig`] for `iw_samples = Some(0)`.
    pub fn load(
        &self,
        device: &Device,
        iw_samples: Option<usize>,
    ) -> Result<LoadedModel, ModelError> {
        let file = self.read()?;
        let md5 = file.md5();
        let meta = file.meta().clone();
        let mut model = file.into_model(device)?;
        if let Some(k) = iw_samples {
            model = model.with_iw_samples(k)?;
        }
        Ok(LoadedModel {
            path: self.path.clone(),
            md5,
            meta,
            model,
        })
    }
}

/// A model loaded by [`ModelsDir::load`], with what identifies its files.
#[derive(Debug)]
pub struct LoadedModel {
    /// The checkpoint it was read from.
    pub path: PathBuf,
    /// MD5 (hex) of its parameter file followed by its sidecar, as read
    /// ([`CheckpointFile::md5`]).
    pub md5: String,
    /// Its sidecar as read (training progress, background mutation rate).
    pub meta: checkpoint::CheckpointMeta,
    /// The model.
    pub model: AnyModel,
}

/// The names of every shipped checkpoint, in [`SHIPPED`] order.
pub fn names() -> Vec<&'static str> {
    SHIPPED.iter().map(|s| s.name).collect()
}

/// The shipped checkpoint called `name` (case-insensitive).
pub fn find(name: &str) -> Option<&'static Shipped> {
    SHIPPED
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(name.trim()))
}

/// The shipped Fashion-MNIST checkpoint of `kind` built from `preset` with `seed`, if there
/// is one (never a likelihood-ratio background model, never the MNIST one).
pub fn find_for(kind: ModelKind, preset: &str, seed: u64) -> Option<&'static Shipped> {
    SHIPPED.iter().find(|s| {
        s.kind == kind
            && s.preset == preset
            && s.seed == seed
            && s.background_mutation.is_none()
            && s.trained_on == "fmnist-train"
    })
}

/// Whether a shipped checkpoint is usable here, for `bnood models list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Found and both checksums match.
    Verified(PathBuf),
    /// Missing or damaged, with the reason.
    Unavailable(String),
}

/// Every shipped checkpoint with its availability in `dirs`.
pub fn survey(dirs: &ModelsDir) -> Vec<(&'static Shipped, Availability)> {
    SHIPPED
        .iter()
        .map(|s| {
            let status = match dirs.locate(s) {
                Ok(path) => Availability::Verified(path),
                Err(e) => Availability::Unavailable(e.to_string()),
            };
            (s, status)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn trainings_in_progress_are_listed_with_their_last_held_out_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let training = dir.path().join("training");
        std::fs::create_dir_all(&training).expect("mkdir");
        let model = crate::RealNvpConfig {
            mid_channels: 4,
            num_blocks: 1,
            ..crate::RealNvpConfig::paper_fmnist()
        }
        .init(&burn::tensor::Device::flex())
        .expect("model");
        let path = training.join("realnvp-x-seed0.bpk");
        checkpoint::save(model, 937, 937 * 64, &path).expect("save");
        let curve = crate::curve::LearningCurve {
            metrics: vec!["fmnist_test_running_bpd".into()],
            rows: vec![crate::curve::CurveRow {
                step: 937,
                epoch: 1.0,
                lr: 1e-3,
                train_bpd: 3.8,
                seconds: 600.0,
                values: vec![3.675],
            }],
        };
        curve
            .write(&crate::curve::curve_path(&path))
            .expect("curve");
        let found = ModelsDir::only(dir.path()).in_training();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "realnvp-x-seed0");
        assert_eq!(found[0].step, 937);
        assert_eq!(found[0].last.as_ref().map(|r| r.values[0]), Some(3.675));
        assert_eq!(found[0].finished, None);
        std::fs::write(training.join("realnvp-x-seed0.done"), "stopped: flat").expect("done");
        let found = ModelsDir::only(dir.path()).in_training();
        assert_eq!(found[0].finished.as_deref(), Some("stopped: flat"));
        assert!(ModelsDir::only(training).in_training().is_empty());
    }

    use super::*;

    #[test]
    fn shipped_names_are_unique_and_files_follow_the_checkpoint_naming() {
        let mut names = names();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate shipped names");
        for s in SHIPPED {
            let role = if s.background_mutation.is_some() {
                "-background"
            } else {
                ""
            };
            let data = s.trained_on.strip_suffix("-train").unwrap_or(s.trained_on);
            assert_eq!(
                s.file,
                format!(
                    "{}-{data}{role}-{}-seed{}.bpk",
                    s.kind.id(),
                    s.preset,
                    s.seed
                ),
                "{}",
                s.name
            );
            assert_eq!(s.md5.len(), 32, "{}", s.name);
            assert_eq!(s.md5_sidecar.len(), 32, "{}", s.name);
            assert!(s.command.contains(s.file), "{}: {}", s.name, s.command);
            assert!(s.final_bits_per_dim.is_finite(), "{}", s.name);
        }
    }

    #[test]
    fn a_very_long_model_name_is_shortened_in_its_error() {
        let long = "x".repeat(100_000);
        let err = ModelsDir::only("/nonexistent")
            .source(&long)
            .expect_err("unknown");
        let text = err.to_string();
        assert!(text.len() < 2_000, "{} bytes", text.len());
        assert!(text.contains("(100000 characters)"), "{text}");
    }

    #[test]
    fn an_unknown_name_is_an_error_listing_the_shipped_ones() {
        let err = ModelsDir::only("/nonexistent")
            .resolve("no-such-model")
            .expect_err("unknown");
        let text = err.to_string();
        assert!(text.contains("realnvp-fmnist"), "{text}");
        assert!(text.contains("bnood models list"), "{text}");
    }

    #[test]
    fn an_existing_path_is_used_as_given_without_a_lookup() {
        let dir = std::env::temp_dir().join(format!("bnood-zoo-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("realnvp-fmnist");
        std::fs::write(&file, b"x").expect("write");
        let got = ModelsDir::only("/nonexistent")
            .resolve(file.to_str().expect("utf-8"))
            .expect("a path");
        assert_eq!(got, file);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_explicit_folder_is_an_error_naming_it() {
        let err = ModelsDir::only("/no/such/models/dir")
            .resolve("realnvp-fmnist")
            .expect_err("missing folder");
        assert!(err.to_string().contains("/no/such/models/dir"), "{err}");
    }

    #[test]
    fn a_damaged_shipped_file_is_refused_with_both_checksums() {
        let entry = &SHIPPED[0];
        let dir = std::env::temp_dir().join(format!("bnood-zoo-damaged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join(entry.file), b"not the shipped weights").expect("write");
        std::fs::write(dir.join(format!("{}.json", entry.file)), b"{}").expect("write");
        let err = ModelsDir::only(&dir).locate(entry).expect_err("damaged");
        let text = err.to_string();
        assert!(text.contains(entry.md5), "{text}");
        assert!(
            text.contains(&md5_hex(b"not the shipped weights")),
            "{text}"
        );
        assert!(text.contains("git checkout models/"), "{text}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The shipped files in the repository's `models/` folder match their checksums and
    /// load as the configuration their entry names.
    #[cfg(feature = "flex")]
    #[test]
    fn every_shipped_checkpoint_in_the_repository_verifies_and_loads() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let dirs = ModelsDir::only(&repo);
        let device = burn::tensor::Device::flex();
        for s in SHIPPED {
            let file = dirs
                .shipped(s)
                .and_then(|source| source.read())
                .expect("shipped checkpoint verifies");
            let meta = file.meta().clone();
            let model = file.into_model(&device).expect("loads");
            let config = crate::Trainable::model_config(&model);
            assert_eq!(config.kind(), s.kind, "{}", s.name);
            assert_eq!(config.seed(), s.seed, "{}", s.name);
            assert_eq!(meta.step, s.steps, "{}", s.name);
            assert_eq!(
                meta.background_mutation, s.background_mutation,
                "{}",
                s.name
            );
        }
    }
}
