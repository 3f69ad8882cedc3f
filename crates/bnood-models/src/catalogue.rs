//! The model catalogue: every model kind of the zoo, named once. A kind's name (`realnvp`,
//! `vae`), its table title, its configuration type and its presets are known here and
//! nowhere else; everything that takes "a model" (the training loop, checkpoints, the CLI,
//! reports) goes through [`ModelKind`], [`ModelConfig`] and [`AnyModel`].
//!
//! Adding a model kind means: its own module (the model, its `…Config` with `preset`,
//! `with_seed`, `init`, and `impl LikelihoodModel`), plus one variant in each of the three
//! enums below ([`ModelKind`], [`ModelConfig`], [`AnyModel`]) and their one-line `match`
//! arms in this file.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{
    LikelihoodModel, ModelError, RealNvp, RealNvpConfig, StatsMode, Trainable, Vae, VaeConfig,
};

/// A model family of the zoo. Its [`id`](Self::id) is the name used on the command line, in
/// checkpoint sidecars and in file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// RealNVP flow (Dinh et al. 2016; paper Appendix C.1).
    #[value(name = "realnvp")]
    RealNvp,
    /// VAE scored with its importance-weighted bound (paper Table 3).
    #[value(name = "vae")]
    Vae,
}

impl ModelKind {
    /// Every kind, in the paper's order.
    pub const ALL: [ModelKind; 2] = [ModelKind::RealNvp, ModelKind::Vae];

    /// `realnvp` or `vae`.
    pub fn id(self) -> &'static str {
        match self {
            Self::RealNvp => "realnvp",
            Self::Vae => "vae",
        }
    }

    /// The name used in tables: `RealNVP` or `VAE` (the paper's, so its numbers line up).
    pub fn display_name(self) -> &'static str {
        match self {
            Self::RealNvp => "RealNVP",
            Self::Vae => "VAE",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for ModelKind {
    type Err = ModelError;

    /// Parses an [`id`](ModelKind::id), case-insensitively.
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let lower = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.id() == lower)
            .ok_or_else(|| {
                ModelError::InvalidConfig(format!(
                    "unknown model `{s}`: choose one of {}",
                    Self::ALL.map(ModelKind::id).join(", ")
                ))
            })
    }
}

/// The configuration of a model of any kind. Serialised as `{"kind": "realnvp", "config":
/// {…}}`, the layout of checkpoint sidecars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "config", rename_all = "lowercase")]
pub enum ModelConfig {
    /// A RealNVP configuration.
    RealNvp(RealNvpConfig),
    /// A VAE configuration.
    Vae(VaeConfig),
}

impl ModelConfig {
    /// The configuration of the preset `name` of `kind` (e.g. `cpu`, `paper`; each kind
    /// lists its own presets).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the kind's presets.
    pub fn preset(kind: ModelKind, name: &str) -> Result<Self, ModelError> {
        Ok(match kind {
            ModelKind::RealNvp => Self::RealNvp(RealNvpConfig::preset(name)?),
            ModelKind::Vae => Self::Vae(VaeConfig::preset(name)?),
        })
    }

    /// The same configuration with initialisation (and training-noise) seed `seed`.
    pub fn with_seed(self, seed: u64) -> Self {
        match self {
            Self::RealNvp(c) => Self::RealNvp(c.with_seed(seed)),
            Self::Vae(c) => Self::Vae(c.with_seed(seed)),
        }
    }

    /// The initialisation seed.
    pub fn seed(&self) -> u64 {
        match self {
            Self::RealNvp(c) => c.seed,
            Self::Vae(c) => c.seed,
        }
    }

    /// The kind.
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::RealNvp(_) => ModelKind::RealNvp,
            Self::Vae(_) => ModelKind::Vae,
        }
    }

    /// Importance samples of scoring, for kinds scored by an importance-weighted bound
    /// (VAE); `None` for the others.
    pub fn iw_samples(&self) -> Option<usize> {
        match self {
            Self::RealNvp(_) => None,
            Self::Vae(c) => Some(c.iw_samples),
        }
    }

    /// A fresh, untrained model on `device` (the parameters' device; `.autodiff()` devices
    /// build trainable models).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for an invalid configuration.
    pub fn init(&self, device: &Device) -> Result<AnyModel, ModelError> {
        Ok(match self {
            Self::RealNvp(c) => AnyModel::RealNvp(c.init(device)?),
            Self::Vae(c) => AnyModel::Vae(c.init(device)?),
        })
    }
}

/// A model kind and preset as command-line flags (a clap `Args` group): `--model`
/// (default `realnvp`) and `--preset` (default `cpu`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ModelPreset {
    /// Model family.
    #[arg(long, value_enum, default_value_t = ModelKind::RealNvp)]
    pub model: ModelKind,
    /// Preset: cpu (small, trains on a CPU) or paper (the paper's architecture).
    #[arg(long, default_value = "cpu")]
    pub preset: String,
}

impl ModelPreset {
    /// The configuration of this preset ([`ModelConfig::preset`]).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for an unknown preset.
    pub fn config(&self) -> Result<ModelConfig, ModelError> {
        ModelConfig::preset(self.model, &self.preset)
    }
}

/// A model of any kind of the zoo. It is a burn [`Module`] and implements
/// [`LikelihoodModel`] and [`Trainable`](crate::Trainable) itself, so callers
/// train, save, load and score it without matching on the kind.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // a program holds a handful of models at most
pub enum AnyModel {
    /// A RealNVP flow.
    RealNvp(RealNvp),
    /// A VAE (scored with its importance-weighted bound).
    Vae(Vae),
}

impl AnyModel {
    /// Loads the checkpoint at `path` onto `device`, building the model from the
    /// configuration stored with it (see [`crate::checkpoint::load`]).
    ///
    /// # Errors
    /// [`ModelError::Checkpoint`] for a missing or unreadable file or sidecar, or a kind
    /// this version does not know.
    pub fn load(path: &Path, device: &Device) -> Result<Self, ModelError> {
        crate::checkpoint::load(path, device)
    }

    /// [`load`](Self::load), then with `iw_samples` importance samples when given (see
    /// [`with_iw_samples`](Self::with_iw_samples)).
    ///
    /// # Errors
    /// As [`load`](Self::load); [`ModelError::InvalidConfig`] for `iw_samples = Some(0)`.
    pub fn load_for_scoring(
        path: &Path,
        device: &Device,
        iw_samples: Option<usize>,
    ) -> Result<Self, ModelError> {
        let model = Self::load(path, device)?;
        match iw_samples {
            Some(k) => model.with_iw_samples(k),
            None => Ok(model),
        }
    }

    /// The kind.
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::RealNvp(_) => ModelKind::RealNvp,
            Self::Vae(_) => ModelKind::Vae,
        }
    }

    /// The name used in tables: `"RealNVP"` or `"VAE"`.
    pub fn display_name(&self) -> &'static str {
        self.kind().display_name()
    }

    /// The model's configuration.
    pub fn config(&self) -> ModelConfig {
        match self {
            Self::RealNvp(m) => m.model_config(),
            Self::Vae(m) => m.model_config(),
        }
    }

    /// The same trained model with `k` importance samples when scoring, for kinds scored
    /// by an importance-weighted bound (VAE); other kinds are returned unchanged.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for `k = 0`.
    pub fn with_iw_samples(self, k: usize) -> Result<Self, ModelError> {
        Ok(match self {
            Self::Vae(v) => Self::Vae(v.with_iw_samples(k)?),
            other => other,
        })
    }
}

impl LikelihoodModel for AnyModel {
    fn image_shape(&self) -> [usize; 3] {
        match self {
            Self::RealNvp(m) => m.image_shape(),
            Self::Vae(m) => m.image_shape(),
        }
    }

    fn log_prob(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        match self {
            Self::RealNvp(m) => m.log_prob(x, mode),
            Self::Vae(m) => m.log_prob(x, mode),
        }
    }

    fn training_loss(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        match self {
            Self::RealNvp(m) => m.training_loss(x, mode),
            Self::Vae(m) => m.training_loss(x, mode),
        }
    }
}

impl Trainable for AnyModel {
    fn model_config(&self) -> ModelConfig {
        self.config()
    }

    // The inner model's parameters, without the variant's name in their paths: a file is
    // the same whether a `RealNvp` or an `AnyModel` wrote it.
    fn save_parameters(self, path: &Path) -> Result<(), burn::store::RecordError> {
        match self {
            Self::RealNvp(m) => m.save_parameters(path),
            Self::Vae(m) => m.save_parameters(path),
        }
    }

    fn load_parameters(self, path: &Path) -> Result<Self, burn::store::RecordError> {
        Ok(match self {
            Self::RealNvp(m) => Self::RealNvp(m.load_parameters(path)?),
            Self::Vae(m) => Self::Vae(m.load_parameters(path)?),
        })
    }
}
