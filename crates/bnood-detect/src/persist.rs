//! Fitted detectors saved to and loaded from a JSON file (like alibi-detect's
//! `save_detector` / `load_detector`), so a deployment fits once on its reference set and
//! then scores new data without it.
//!
//! A detector file holds the detector's kind and parameters, its fitted state (reference
//! scores; for the BN test the held-out Δs and the reference images mixed into batches),
//! and which model files it was fitted with, each with a checksum of its parameters and
//! sidecar. Loading refuses a model file whose checksum differs. Saving writes a temporary
//! file beside the target and renames it, so an interrupted save leaves the old file.

use std::io::Write;
use std::path::{Path, PathBuf};

use bnood_data::Preprocess;
use bnood_models::checkpoint::CheckpointFile;
use bnood_models::zoo::LoadedModel;
use bnood_models::{AnyModel, ModelConfig};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::registry::{FittedDetector, Registry};
use crate::{DetectError, Result};

/// What identifies a detector file (the first field of the JSON).
const FORMAT: &str = "bnood-detector";
/// The layout version this build writes and reads.
const VERSION: u32 = 1;

/// A model file a detector was fitted with: its path as given, a checksum of its contents,
/// and the importance samples it was scored with (VAE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// The checkpoint (`.bpk`; its `.json` sidecar is beside it).
    pub path: PathBuf,
    /// MD5 (hex) of the parameter file followed by its sidecar.
    pub md5: String,
    /// The configuration the model was scored with (a VAE's `iw_samples` may differ from
    /// the file's).
    pub config: ModelConfig,
    /// The preprocessing the model was trained with (its sidecar's), which every set it
    /// scores goes through. Absent when none, and in files written before it existed.
    #[serde(default, skip_serializing_if = "Preprocess::is_identity")]
    pub preprocess: Preprocess,
}

impl ModelFile {
    /// Describes `model`, loaded from the checkpoint at `path`, checksumming the
    /// checkpoint's committed files now.
    ///
    /// # Errors
    /// [`DetectError::Model`] if the files cannot be read.
    pub fn new(path: &Path, model: &AnyModel) -> Result<Self> {
        let file = CheckpointFile::read(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            md5: file.md5(),
            config: model.config(),
            preprocess: file.meta().preprocess,
        })
    }

    /// Loads the model onto `device` from `path` (or from the stored path when `None`),
    /// after checking that the file is the one the detector was fitted with. The
    /// checkpoint is read once: the checksum is taken on the bytes that are loaded.
    ///
    /// # Errors
    /// [`DetectError::DetectorFile`] naming both checksums when the file differs; model
    /// loading errors.
    pub fn load(&self, path: Option<&Path>, device: &Device) -> Result<AnyModel> {
        let path = path.unwrap_or(&self.path);
        let file = CheckpointFile::read(path)?;
        let found = file.md5();
        if found != self.md5 {
            return Err(DetectError::DetectorFile {
                path: path.display().to_string(),
                reason: format!(
                    "this is not the model the detector was fitted with (fitted with {} of MD5 {}, this file has MD5 {found}): pass that model file, or fit the detector again on this model (bnood fit)",
                    self.path.display(),
                    self.md5
                ),
            });
        }
        // The MD5 covers the sidecar, so only what scoring overrides (a VAE's K) is restored.
        let model = file.into_model(device)?;
        Ok(match self.config.iw_samples() {
            Some(k) => model.with_iw_samples(k)?,
            None => model,
        })
    }
}

impl From<&LoadedModel> for ModelFile {
    /// Describes a model loaded by [`ModelsDir::load`](bnood_models::zoo::ModelsDir::load),
    /// with the checksum of the bytes it was loaded from.
    fn from(loaded: &LoadedModel) -> Self {
        Self {
            path: loaded.path.clone(),
            md5: loaded.md5.clone(),
            config: loaded.model.config(),
            preprocess: loaded.meta.preprocess,
        }
    }
}

/// The JSON layout of a detector file, as written.
#[derive(Serialize)]
struct DetectorFileOut<'a> {
    format: &'a str,
    version: u32,
    detector: &'a str,
    name: &'a str,
    params: &'a (dyn erased_serde::Serialize + Send + Sync),
    models: &'a [ModelFile],
    state: Box<dyn erased_serde::Serialize + 'a>,
}

/// The JSON layout of a detector file, as read, but the state (the detector reads it
/// straight into its own type: [`Unfitted::restore_from_file`]).
#[derive(Deserialize)]
struct DetectorFileIn {
    detector: String,
    params: serde_json::Value,
    models: Vec<ModelFile>,
}

/// What identifies a detector file, read before anything else (every other field skipped).
#[derive(Deserialize)]
struct DetectorFileTag {
    #[serde(default)]
    format: Option<serde_json::Value>,
    #[serde(default)]
    version: Option<serde_json::Value>,
}

/// A detector read back by [`load_detector`], ready to score.
#[derive(Debug)]
pub struct LoadedDetector {
    /// The fitted detector.
    pub detector: FittedDetector,
    /// The model files it was fitted with, each with the path it was loaded from.
    pub models: Vec<ModelFile>,
}

/// Saves the fitted `detector`, built over the models of `models` (in the order given to
/// the registry's build), to `path` as JSON: its id, name, parameters, those model files
/// with checksums, and its state ([`Detector::state`](crate::Detector::state)). The file is
/// written under a temporary name beside `path` and renamed into place, so an interrupted
/// save leaves any previous file untouched.
///
/// # Errors
/// [`DetectError::DetectorFile`] when the file cannot be written.
pub fn save_detector(detector: &FittedDetector, models: &[ModelFile], path: &Path) -> Result<()> {
    // Model paths are stored relative to the detector file's folder, so the file works
    // from any working directory and when moved together with its models.
    let models: Vec<ModelFile> = models
        .iter()
        .map(|m| ModelFile {
            path: relative_to_folder_of(path, &m.path),
            ..m.clone()
        })
        .collect();
    let models = models.as_slice();
    let file = DetectorFileOut {
        format: FORMAT,
        version: VERSION,
        detector: detector.id(),
        name: detector.name(),
        params: detector.params(),
        models,
        state: detector.state(),
    };
    write_atomically(path, |w| {
        serde_json::to_writer_pretty(&mut *w, &file).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    })
}

/// [`load_detector_from`] with bnood's own detectors ([`Registry::builtin`]).
///
/// # Errors
/// As [`load_detector_from`].
pub fn load_detector(
    path: &Path,
    model_paths: Option<&[PathBuf]>,
    device: &Device,
) -> Result<LoadedDetector> {
    load_detector_from(&Registry::builtin(), path, model_paths, device)
}

/// Loads a detector saved by [`save_detector`] onto `device`, built through `registry`
/// (which must know its id). Its models are read from `model_paths` when given (one per
/// stored model, in order), else from the stored paths; each must have the checksum
/// recorded at fitting time.
///
/// # Errors
/// [`DetectError::DetectorFile`] for an unreadable or foreign file, a wrong number of
/// model paths, or a model file that is not the one the detector was fitted with; model and
/// parameter errors.
pub fn load_detector_from(
    registry: &Registry,
    path: &Path,
    model_paths: Option<&[PathBuf]>,
    device: &Device,
) -> Result<LoadedDetector> {
    let bad = |reason: String| DetectError::DetectorFile {
        path: path.display().to_string(),
        reason,
    };
    // A regular file of bounded size: never read a device or FIFO until memory runs out.
    // The largest real one, a BN test fitted on all 60,000 Fashion-MNIST training images
    // with in-pool calibration, holds about 63 MB of base64 pixels.
    const MAX_DETECTOR_BYTES: u64 = 256 << 20;
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    if !meta.is_file() || meta.len() > MAX_DETECTOR_BYTES {
        return Err(bad(format!(
            "it is not a regular file of at most {MAX_DETECTOR_BYTES} bytes: pass the JSON file `bnood fit` wrote"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    // Three passes over the text, none building the state as a `serde_json::Value`.
    let tag: DetectorFileTag = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "it is not JSON ({e}): was it written by `bnood fit`?"
        ))
    })?;
    if tag.format.as_ref().and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(bad(format!(
            "it is not a bnood detector file (no `\"format\": \"{FORMAT}\"`): write one with `bnood fit`"
        )));
    }
    let version = tag.version.as_ref().and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        return Err(bad(format!(
            "it has layout version {}, this build reads version {VERSION}: fit the detector again with this version",
            version.map_or_else(|| "(none)".to_string(), |v| v.to_string())
        )));
    }
    let file: DetectorFileIn = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("it is damaged ({e}): fit the detector again")))?;
    if let Some(paths) = model_paths
        && paths.len() != file.models.len()
    {
        return Err(bad(format!(
            "it was fitted with {} model file(s) but {} were given: pass the same number, in the same order",
            file.models.len(),
            paths.len()
        )));
    }
    // Where each model is read from: the paths given, or the stored ones (relative to the
    // detector file's folder).
    let sources: Vec<PathBuf> = file
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| match model_paths {
            Some(p) => p[i].clone(),
            None => stored_model_path(path, &m.path),
        })
        .collect();
    let models = file
        .models
        .iter()
        .zip(&sources)
        .map(|(m, source)| m.load(Some(source), device))
        .collect::<Result<Vec<_>>>()?;
    let detector = registry
        .build(&file.detector, models, device, &file.params)?
        .restore_from_file(&bytes)?;
    Ok(LoadedDetector {
        detector,
        models: file
            .models
            .into_iter()
            .zip(sources)
            .map(|(m, path)| ModelFile { path, ..m })
            .collect(),
    })
}

/// `model` as seen from the folder of the detector file `detector`: a relative path from
/// there when both can be resolved (`m.bpk`, `../models/m.bpk`), else `model` as given.
fn relative_to_folder_of(detector: &Path, model: &Path) -> PathBuf {
    let folder = detector
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (Ok(from), Ok(to)) = (folder.canonicalize(), model.canonicalize()) else {
        return model.to_path_buf();
    };
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return model.to_path_buf();
    }
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// Where a model path stored in the detector file `detector` points: relative to the
/// detector file's folder (how this version stores it), or, for a file written before, as
/// stored (relative to the working directory the detector was fitted in) when only that
/// exists. The checksum decides whether it is the right file.
fn stored_model_path(detector: &Path, stored: &Path) -> PathBuf {
    if stored.is_absolute() {
        return stored.to_path_buf();
    }
    let folder = detector
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let beside = folder.join(stored);
    if beside.exists() || !stored.exists() {
        beside
    } else {
        stored.to_path_buf()
    }
}

/// Writes `path` through `write` into a temporary file in the same folder, flushed to disk,
/// then renames it over `path`. On any failure the temporary file is removed and `path` is
/// left as it was.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let fail = |reason: String| DetectError::DetectorFile {
        path: path.display().to_string(),
        reason,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create its folder: {e}")))?;
    bnood_data::atomic::write_atomically(path, write)
        .map_err(|e| fail(format!("cannot write it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_paths_are_stored_relative_to_the_detector_files_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let models = dir.path().join("models");
        let fits = dir.path().join("fits");
        std::fs::create_dir_all(&models).expect("mkdir");
        std::fs::create_dir_all(&fits).expect("mkdir");
        let model = models.join("m.bpk");
        std::fs::write(&model, b"x").expect("write");
        let detector = fits.join("det.json");
        assert_eq!(
            relative_to_folder_of(&detector, &model),
            Path::new("../models/m.bpk")
        );
        assert_eq!(
            relative_to_folder_of(&models.join("det.json"), &model),
            Path::new("m.bpk")
        );
        // Read back from the detector file's folder, whatever the working directory.
        assert_eq!(
            stored_model_path(&detector, Path::new("../models/m.bpk")),
            fits.join("../models/m.bpk")
        );
        // A file that does not exist (yet) is stored as given.
        let missing = dir.path().join("nowhere/m.bpk");
        assert_eq!(relative_to_folder_of(&detector, &missing), missing);
    }

    #[test]
    fn an_interrupted_save_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("detector.json");
        write_atomically(&path, |w| w.write_all(b"old")).expect("first save");
        let err = write_atomically(&path, |w| {
            w.write_all(b"half of the new fi")?;
            Err(std::io::Error::other("interrupted"))
        })
        .expect_err("the second save fails");
        assert!(err.to_string().contains("interrupted"), "{err}");
        assert_eq!(std::fs::read(&path).expect("old file"), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("detector.json")]);
    }
}
