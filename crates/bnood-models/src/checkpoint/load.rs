//! Reading a checkpoint: both files read once into a [`CheckpointFile`] (checksums are taken
//! on those bytes), then its parameters into a model built from the sidecar's configuration
//! (or a given model of the same configuration), after checking the parameter file's tensors
//! one by one, by name and shape, against the model's. Reads only: a save interrupted after
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
    let file = Committed::of(path).sidecar;
    parse_sidecar(path, &file, &read_sidecar_bytes(path, &file)?)
}

/// A checkpoint read into memory, each of its two files once: the parameter file's bytes
/// and the parsed sidecar (with its bytes, for checksums). Everything a front end does with
/// a checkpoint (verify a shipped file's MD5, record a checksum in a detector file, build
/// the model) works on these bytes, so what was checked is what is loaded.
///
/// What is read is the last committed save of the path (see [`Committed`]): loading never
/// writes.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
    meta: CheckpointMeta,
    parameters: Vec<u8>,
    sidecar: Vec<u8>,
}

impl CheckpointFile {
    /// Reads the checkpoint `path` (its parameter file and its `.json` sidecar).
    ///
    /// # Errors
    /// [`ModelError::Checkpoint`] if either file is missing or unreadable, or the sidecar
    /// is not bnood's (invalid JSON, unknown kind).
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        Self::read_checked(path, |_, _| Ok(()))
    }

    /// [`read`](Self::read), with `check` run on the raw bytes (parameter file, sidecar)
    /// before anything is parsed: a shipped checkpoint's MD5s are checked on what is then
    /// loaded.
    ///
    /// # Errors
    /// As [`read`](Self::read), and `check`'s error.
    pub fn read_checked(
        path: &Path,
        check: impl FnOnce(&[u8], &[u8]) -> Result<(), ModelError>,
    ) -> Result<Self, ModelError> {
        let files = Committed::of(path);
        let sidecar = read_sidecar_bytes(path, &files.sidecar)?;
        let parameters = read_parameter_bytes(path, &files.parameters)?;
        check(&parameters, &sidecar)?;
        let meta = parse_sidecar(path, &files.sidecar, &sidecar)?;
        Ok(Self {
            path: path.to_path_buf(),
            meta,
            parameters,
            sidecar,
        })
    }

    /// The path it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its sidecar: kind, configuration, training progress.
    pub fn meta(&self) -> &CheckpointMeta {
        &self.meta
    }

    /// MD5 (hex) of the parameter file as read.
    pub fn parameters_md5(&self) -> String {
        bnood_data::idx::md5_hex(&self.parameters)
    }

    /// MD5 (hex) of the sidecar as read.
    pub fn sidecar_md5(&self) -> String {
        bnood_data::idx::md5_hex(&self.sidecar)
    }

    /// MD5 (hex) of the parameter file followed by the sidecar: one checksum of the pair
    /// (what a detector file records for each of its models).
    pub fn md5(&self) -> String {
        bnood_data::idx::md5_hex_of_parts(&[&self.parameters, &self.sidecar])
    }

    /// Builds the model its sidecar describes on `device` and loads the parameters into it.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for a configuration too large to build;
    /// [`ModelError::Checkpoint`] when the parameter file is not a burn module file or its
    /// tensors (each by name and shape) are not the configuration's.
    pub fn into_model(self, device: &Device) -> Result<AnyModel, ModelError> {
        self.meta.model.check_size()?;
        let model = self.meta.model.init(device)?;
        self.apply(model)
    }

    /// Loads the parameters into `model`, after checking that the sidecar names the same
    /// kind and exactly the same configuration as the model's own (seeds included: a VAE's
    /// evaluation seed changes its scores).
    ///
    /// # Errors
    /// [`ModelError::Checkpoint`] naming the difference: configuration, or the first tensor
    /// whose name or shape differs.
    pub fn load_into<M: Trainable>(self, model: M) -> Result<M, ModelError> {
        check_config(&self.meta, &model.model_config(), &self.path)?;
        self.apply(model)
    }

    /// Checks the file's tensors against `model`'s, one by one, then loads them.
    fn apply<M: Trainable>(self, model: M) -> Result<M, ModelError> {
        let path = self.path;
        let bytes = |v: Vec<u8>| burn::tensor::Bytes::from_bytes_vec(v);
        let reader = burn_pack::Reader::from_bytes(bytes(self.parameters.clone())).map_err(|e| {
            err(
                &path,
                format!("it is not a readable bnood parameter file ({e}); pass the .bpk that `bnood train` wrote"),
            )
        })?;
        let held = reader.into_tensors().map_err(|e| {
            err(
                &path,
                format!("its list of tensors is unreadable ({e}); the file is damaged: copy it again or retrain"),
            )
        })?;
        let held: Vec<(String, Vec<usize>)> = held
            .iter()
            .map(|t| (t.name.clone(), t.shape.iter().copied().collect()))
            .collect();
        check_tensors(&held, &model.parameter_shapes(), &self.meta.model, &path)?;
        let record = burn::store::ModuleRecord::from_bytes(bytes(self.parameters))
            .map_err(|e| err(&path, format!("its tensors are unreadable ({e}); the file is damaged: copy it again or retrain")))?;
        model.load_parameters(record).map_err(|e| {
            err(
                &path,
                format!(
                    "the parameters do not fit the model: {}",
                    summarise(&e.to_string())
                ),
            )
        })
    }
}

/// Reads the parameter file `file` of the checkpoint `path`, refusing anything that is not
/// a regular file (a FIFO would block, `/dev/zero` would fill memory) or is larger than the
/// largest model bnood builds ([`ModelConfig::MAX_PARAMETERS`] values of 4 bytes, plus its
/// header).
fn read_parameter_bytes(path: &Path, file: &Path) -> Result<Vec<u8>, ModelError> {
    let max_bytes = (ModelConfig::MAX_PARAMETERS * 4) as u64 + (64 << 20);
    let cannot = |e: std::io::Error| {
        err(
            path,
            format!("cannot read the parameter file: {e}; pass the .bpk that `bnood train` wrote"),
        )
    };
    let meta = std::fs::metadata(file).map_err(cannot)?;
    if !meta.is_file() || meta.len() > max_bytes {
        return Err(err(
            path,
            format!(
                "the parameter file {} is not a regular file of at most {max_bytes} bytes; pass the .bpk that `bnood train` wrote",
                file.display()
            ),
        ));
    }
    std::fs::read(file).map_err(cannot)
}

/// Reads the sidecar file `meta_file` of the checkpoint `path`, refusing anything that is
/// not a small regular file.
fn read_sidecar_bytes(path: &Path, meta_file: &Path) -> Result<Vec<u8>, ModelError> {
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
    std::fs::read(meta_file).map_err(|e| {
        err(
            path,
            format!(
                "cannot read its sidecar {}: {e}; was it written by bnood?",
                meta_file.display()
            ),
        )
    })
}

/// Parses the sidecar `bytes` (read from `meta_file`) of the checkpoint `path`.
fn parse_sidecar(
    path: &Path,
    meta_file: &Path,
    bytes: &[u8],
) -> Result<CheckpointMeta, ModelError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
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

/// Loads parameters from `path` into `model` ([`CheckpointFile::load_into`]).
///
/// # Errors
/// As [`CheckpointFile::read`] and [`CheckpointFile::load_into`].
pub fn load_into<M: Trainable>(model: M, path: &Path) -> Result<M, ModelError> {
    CheckpointFile::read(path)?.load_into(model)
}

/// Builds a model from the configuration stored with the checkpoint at `path` and loads its
/// parameters, on `device` ([`CheckpointFile::into_model`]).
///
/// # Errors
/// As [`CheckpointFile::read`] and [`CheckpointFile::into_model`].
pub fn load(path: &Path, device: &Device) -> Result<AnyModel, ModelError> {
    CheckpointFile::read(path)?.into_model(device)
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

/// Every parameter tensor of `model` as (name, shape), named as burn's module store names
/// them (submodule names joined by `.`), from the declared shapes: nothing is initialised.
pub(crate) fn parameter_shapes<M: burn::module::Module>(model: &M) -> Vec<(String, Vec<usize>)> {
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::{Bool, Int, Tensor};

    #[derive(Default)]
    struct Shapes {
        path: Vec<String>,
        found: Vec<(String, Vec<usize>)>,
    }
    impl Shapes {
        fn push(&mut self, shape: burn::tensor::Shape) {
            self.found
                .push((self.path.join("."), shape.iter().copied().collect()));
        }
    }
    impl ModuleVisitor for Shapes {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.push(param.lazy_shape());
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<D, Int>>) {
            self.push(param.lazy_shape());
        }
        fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<D, Bool>>) {
            self.push(param.lazy_shape());
        }
    }
    let mut shapes = Shapes::default();
    model.visit(&mut shapes);
    shapes.found
}

/// Compares the tensors a parameter file holds with those the model needs, by name and
/// shape (as candle's `VarBuilder` does), and names the first difference.
fn check_tensors(
    held: &[(String, Vec<usize>)],
    needed: &[(String, Vec<usize>)],
    config: &ModelConfig,
    path: &Path,
) -> Result<(), ModelError> {
    let not_theirs = |what: String| {
        err(
            path,
            format!(
                "{what}: the parameter file and the {} configuration in its sidecar {} do not belong together; restore the pair that was written together, or train again",
                config.kind(),
                meta_path(path).display()
            ),
        )
    };
    let in_file: std::collections::HashMap<&str, &Vec<usize>> =
        held.iter().map(|(n, s)| (n.as_str(), s)).collect();
    for (name, shape) in needed {
        match in_file.get(name.as_str()) {
            None => {
                return Err(not_theirs(format!(
                    "it has no tensor `{name}` (shape {shape:?}), which the model needs ({} tensors in the file, {} needed)",
                    held.len(),
                    needed.len()
                )));
            }
            Some(s) if *s != shape => {
                return Err(not_theirs(format!(
                    "its tensor `{name}` has shape {s:?}, the model's has {shape:?}"
                )));
            }
            Some(_) => {}
        }
    }
    let wanted: std::collections::HashSet<&str> = needed.iter().map(|(n, _)| n.as_str()).collect();
    if let Some((name, shape)) = held.iter().find(|(n, _)| !wanted.contains(n.as_str())) {
        return Err(not_theirs(format!(
            "it holds a tensor `{name}` (shape {shape:?}) that the model does not have"
        )));
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
