//! The model catalogue: every model kind of the zoo, named once. A kind's name (`realnvp`,
//! `vae`, `pixelcnn`), its table title, its configuration type and its presets are known here and
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
    LikelihoodModel, ModelError, PixelCnn, PixelCnnConfig, RealNvp, RealNvpConfig, StatsMode,
    Trainable, Vae, VaeConfig,
};

/// A model family of the zoo. Its [`id`](Self::id) is the name used on the command line, in
/// checkpoint sidecars and in file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// RealNVP flow (Dinh et al. 2016; paper Appendix C.1).
    #[cfg_attr(feature = "cli", value(name = "realnvp"))]
    RealNvp,
    /// VAE scored with its importance-weighted bound (paper Table 3).
    #[cfg_attr(feature = "cli", value(name = "vae"))]
    Vae,
    /// PixelCNN++ with BatchNorm (Salimans et al. 2017; paper Appendix C).
    #[cfg_attr(feature = "cli", value(name = "pixelcnn"))]
    PixelCnn,
}

impl ModelKind {
    /// Every kind, in the paper's order.
    pub const ALL: [ModelKind; 3] = [ModelKind::RealNvp, ModelKind::Vae, ModelKind::PixelCnn];

    /// `realnvp`, `vae` or `pixelcnn`.
    pub fn id(self) -> &'static str {
        match self {
            Self::RealNvp => "realnvp",
            Self::Vae => "vae",
            Self::PixelCnn => "pixelcnn",
        }
    }

    /// The name used in tables: `RealNVP`, `VAE` or `PixelCNN++` (the paper's, so its
    /// numbers line up).
    pub fn display_name(self) -> &'static str {
        match self {
            Self::RealNvp => "RealNVP",
            Self::Vae => "VAE",
            Self::PixelCnn => "PixelCNN++",
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
    /// A PixelCNN++ configuration.
    PixelCnn(PixelCnnConfig),
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
            ModelKind::PixelCnn => Self::PixelCnn(PixelCnnConfig::preset(name)?),
        })
    }

    /// The preset `name` of `kind` for images of shape `[C, H, W]` (the training data's),
    /// checked. The layouts keep their depth and scale as the paper scales them:
    /// - RealNVP: the preset's blocks and channels at any shape (one downscale: `H` and `W`
    ///   even); `paper` on `[3, 32, 32]` is the paper's CIFAR-10 preset (8 blocks of 64
    ///   channels, App. C.1).
    /// - VAE: widths times `C` (Table 3's `c`), the last layers' kernels `H/4 × W/4` (`H`, `W`
    ///   multiples of 4) — [`VaeConfig::paper`], [`VaeConfig::cpu`].
    /// - PixelCNN++: the preset's filters and blocks (one channel; `H`, `W` multiples of 4).
    ///
    /// For `[1, 28, 28]` it is exactly [`preset`](Self::preset).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for an unknown preset, or a shape the layout cannot
    /// take (saying why).
    pub fn preset_for_shape(
        kind: ModelKind,
        name: &str,
        shape: [usize; 3],
    ) -> Result<Self, ModelError> {
        let config = match kind {
            ModelKind::RealNvp => {
                let paper = matches!(name, "paper" | "paper-fmnist");
                let base = if paper && shape == [3, 32, 32] {
                    RealNvpConfig::paper_cifar10()
                } else {
                    RealNvpConfig::preset(name)?
                };
                Self::RealNvp(RealNvpConfig {
                    image_shape: shape,
                    ..base
                })
            }
            ModelKind::Vae => Self::Vae(match VaeConfig::preset(name)? {
                v if v == VaeConfig::paper_fmnist() => VaeConfig::paper(shape),
                _ => VaeConfig::cpu(shape),
            }),
            ModelKind::PixelCnn => Self::PixelCnn(PixelCnnConfig {
                image_shape: shape,
                ..PixelCnnConfig::preset(name)?
            }),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the configuration (shape, sizes) without building the model.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] saying what is wrong.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Self::RealNvp(c) => c.validate(),
            Self::Vae(c) => c.validate(),
            Self::PixelCnn(c) => c.validate(),
        }
    }

    /// The same configuration with initialisation (and training-noise) seed `seed`.
    pub fn with_seed(self, seed: u64) -> Self {
        match self {
            Self::RealNvp(c) => Self::RealNvp(c.with_seed(seed)),
            Self::Vae(c) => Self::Vae(c.with_seed(seed)),
            Self::PixelCnn(c) => Self::PixelCnn(c.with_seed(seed)),
        }
    }

    /// The initialisation seed.
    pub fn seed(&self) -> u64 {
        match self {
            Self::RealNvp(c) => c.seed,
            Self::Vae(c) => c.seed,
            Self::PixelCnn(c) => c.seed,
        }
    }

    /// The kind.
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::RealNvp(_) => ModelKind::RealNvp,
            Self::Vae(_) => ModelKind::Vae,
            Self::PixelCnn(_) => ModelKind::PixelCnn,
        }
    }

    /// Whether `other` has the same kind and sizes, so that both models can be members of
    /// one ensemble: only the seeds and a VAE's scoring K may differ.
    pub fn same_architecture(&self, other: &ModelConfig) -> bool {
        let normalised = |c: &ModelConfig| match c.clone().with_seed(0) {
            Self::Vae(v) => Self::Vae(VaeConfig {
                eval_seed: 0,
                iw_samples: 1,
                ..v
            }),
            other => other,
        };
        normalised(self) == normalised(other)
    }

    /// Shape `[C, H, W]` of the images the model takes.
    pub fn image_shape(&self) -> [usize; 3] {
        match self {
            Self::RealNvp(c) => c.image_shape,
            Self::Vae(c) => c.image_shape,
            Self::PixelCnn(c) => c.image_shape,
        }
    }

    /// Importance samples of scoring, for kinds scored by an importance-weighted bound
    /// (VAE); `None` for the others.
    pub fn iw_samples(&self) -> Option<usize> {
        match self {
            Self::RealNvp(_) | Self::PixelCnn(_) => None,
            Self::Vae(c) => Some(c.iw_samples),
        }
    }

    /// The largest model bnood builds, in parameter values (weights, biases and BatchNorm's
    /// γ, β and running statistics): 250 million, 1 GB of `f32`. The paper's models have
    /// well under a million.
    pub const MAX_PARAMETERS: u128 = 250_000_000;

    /// The number of parameter values of a model of this configuration (what its checkpoint
    /// stores), computed from the configuration alone, without building the model. Exact for
    /// valid configurations; saturating, so absurd sizes give a huge number, not an overflow.
    pub fn parameter_count(&self) -> u128 {
        match self {
            Self::RealNvp(c) => c.parameter_count(),
            Self::Vae(c) => c.parameter_count(),
            Self::PixelCnn(c) => c.parameter_count(),
        }
    }

    /// Refuses a configuration too large to build ([`MAX_PARAMETERS`](Self::MAX_PARAMETERS)),
    /// before anything is allocated.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] stating the size and the limit.
    pub fn check_size(&self) -> Result<(), ModelError> {
        let count = self.parameter_count();
        if count > Self::MAX_PARAMETERS {
            return Err(ModelError::InvalidConfig(format!(
                "this {} would have {} parameter values ({:.1} GB), above bnood's limit of {} ({:.1} GB): reduce its sizes (channels, blocks, latent dimension) or check that the configuration (the checkpoint's .json sidecar) is not damaged",
                self.kind(),
                count,
                count as f64 * 4e-9,
                Self::MAX_PARAMETERS,
                Self::MAX_PARAMETERS as f64 * 4e-9
            )));
        }
        Ok(())
    }

    /// A fresh, untrained model on `device` (the parameters' device; `.autodiff()` devices
    /// build trainable models).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for an invalid configuration, or one too large to build
    /// ([`check_size`](Self::check_size)).
    pub fn init(&self, device: &Device) -> Result<AnyModel, ModelError> {
        self.check_size()?;
        Ok(match self {
            Self::RealNvp(c) => AnyModel::RealNvp(c.init(device)?),
            Self::Vae(c) => AnyModel::Vae(c.init(device)?),
            Self::PixelCnn(c) => AnyModel::PixelCnn(c.init(device)?),
        })
    }
}

/// A model kind and preset as command-line flags (a clap `Args` group): `--model`
/// (default `realnvp`) and `--preset` (default `cpu`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ModelPreset {
    /// Model family.
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = ModelKind::RealNvp))]
    pub model: ModelKind,
    /// Preset: cpu (small, trains on a CPU) or paper (the paper's architecture).
    #[cfg_attr(feature = "cli", arg(long, default_value = "cpu"))]
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

    /// The configuration of this preset for images of shape `[C, H, W]`
    /// ([`ModelConfig::preset_for_shape`]).
    ///
    /// # Errors
    /// As [`ModelConfig::preset_for_shape`].
    pub fn config_for_shape(&self, shape: [usize; 3]) -> Result<ModelConfig, ModelError> {
        ModelConfig::preset_for_shape(self.model, &self.preset, shape)
    }
}

/// Whether `a` and `b` name the same file (compared resolved when both exist).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
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
    /// A PixelCNN++.
    PixelCnn(PixelCnn),
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
            Self::PixelCnn(_) => ModelKind::PixelCnn,
        }
    }

    /// The name used in tables: `"RealNVP"`, `"VAE"` or `"PixelCNN++"`.
    pub fn display_name(&self) -> &'static str {
        self.kind().display_name()
    }

    /// The model's configuration.
    pub fn config(&self) -> ModelConfig {
        match self {
            Self::RealNvp(m) => m.model_config(),
            Self::Vae(m) => m.model_config(),
            Self::PixelCnn(m) => m.model_config(),
        }
    }

    /// Checks that `members`, loaded from `files` (same order), form an ensemble: no file
    /// twice (an ensemble of one model is log p in disguise) and one architecture (only the
    /// seeds may differ).
    ///
    /// # Errors
    /// [`ModelError::Ensemble`] naming the repeated file or the odd member.
    pub fn check_ensemble(files: &[&Path], members: &[AnyModel]) -> Result<(), ModelError> {
        for (i, (file, member)) in files.iter().zip(members).enumerate() {
            if let Some(other) = files[..i].iter().find(|o| same_file(file, o)) {
                return Err(ModelError::Ensemble(format!(
                    "{} is given twice as a model (as {} and {}): ensemble members must be independently trained models",
                    file.display(),
                    other.display(),
                    file.display()
                )));
            }
            if !member.config().same_architecture(&members[0].config()) {
                return Err(ModelError::Ensemble(format!(
                    "{} is a {} of another architecture than {} ({}): ensemble members must be the same model trained with different seeds",
                    file.display(),
                    member.display_name(),
                    files[0].display(),
                    members[0].display_name()
                )));
            }
        }
        Ok(())
    }

    /// Checks that the background model `background` of a likelihood ratio is none of the
    /// model files `members` (the scored model and its ensemble), compared as files (`m.bpk`
    /// and `./m.bpk` are the same).
    ///
    /// # Errors
    /// [`ModelError::Ensemble`] naming both paths and how to train a background model.
    pub fn check_background(members: &[&Path], background: &Path) -> Result<(), ModelError> {
        match members.iter().find(|m| same_file(m, background)) {
            Some(twin) => Err(ModelError::Ensemble(format!(
                "the background model {} is also one of the scored models ({}): train a background model with `bnood train --background-mutation 0.2` and pass that",
                background.display(),
                twin.display()
            ))),
            None => Ok(()),
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
            Self::PixelCnn(m) => m.image_shape(),
        }
    }

    fn log_prob(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        match self {
            Self::RealNvp(m) => m.log_prob(x, mode),
            Self::Vae(m) => m.log_prob(x, mode),
            Self::PixelCnn(m) => m.log_prob(x, mode),
        }
    }

    fn training_loss(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        match self {
            Self::RealNvp(m) => m.training_loss(x, mode),
            Self::Vae(m) => m.training_loss(x, mode),
            Self::PixelCnn(m) => m.training_loss(x, mode),
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
            Self::PixelCnn(m) => m.save_parameters(path),
        }
    }

    fn load_parameters(
        self,
        record: burn::store::ModuleRecord,
    ) -> Result<Self, burn::store::RecordError> {
        Ok(match self {
            Self::RealNvp(m) => Self::RealNvp(m.load_parameters(record)?),
            Self::Vae(m) => Self::Vae(m.load_parameters(record)?),
            Self::PixelCnn(m) => Self::PixelCnn(m.load_parameters(record)?),
        })
    }

    fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        match self {
            Self::RealNvp(m) => m.parameter_shapes(),
            Self::Vae(m) => m.parameter_shapes(),
            Self::PixelCnn(m) => m.parameter_shapes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RealNvpConfig, VaeConfig};

    #[test]
    fn parameter_count_is_what_the_built_model_holds() {
        let device = Device::flex();
        let mut configs = vec![
            ModelConfig::preset(ModelKind::RealNvp, "cpu").expect("preset"),
            ModelConfig::preset(ModelKind::RealNvp, "paper").expect("preset"),
            ModelConfig::preset(ModelKind::Vae, "cpu").expect("preset"),
            ModelConfig::preset(ModelKind::PixelCnn, "cpu").expect("preset"),
            ModelConfig::preset(ModelKind::PixelCnn, "paper").expect("preset"),
            ModelConfig::RealNvp(RealNvpConfig {
                image_shape: [3, 8, 8],
                mid_channels: 5,
                num_blocks: 2,
                downscales: 2,
                ..RealNvpConfig::paper_fmnist()
            }),
            ModelConfig::RealNvp(RealNvpConfig {
                downscales: 0,
                ..RealNvpConfig::paper_fmnist()
            }),
        ];
        if let Ok(c) = ModelConfig::preset(ModelKind::Vae, "paper") {
            configs.push(c);
        }
        configs.push(ModelConfig::Vae(VaeConfig {
            latent_dim: 7,
            ..VaeConfig::preset("cpu").expect("preset")
        }));
        for config in configs {
            let model = config.init(&device).expect("valid");
            assert_eq!(
                config.parameter_count(),
                model.num_params() as u128,
                "{config:?}"
            );
        }
    }

    #[test]
    fn a_configuration_too_large_to_build_is_refused_with_the_limit() {
        let huge = ModelConfig::RealNvp(RealNvpConfig {
            mid_channels: 100_000,
            ..RealNvpConfig::paper_fmnist()
        });
        let e = huge.init(&Device::flex()).expect_err("refused");
        assert!(e.to_string().contains("limit of 250000000"), "{e}");
        let latent = ModelConfig::Vae(VaeConfig {
            latent_dim: 100_000_000,
            ..VaeConfig::preset("cpu").expect("preset")
        });
        assert!(latent.check_size().is_err());
        let blocks = ModelConfig::RealNvp(RealNvpConfig {
            num_blocks: usize::MAX,
            mid_channels: usize::MAX,
            ..RealNvpConfig::paper_fmnist()
        });
        assert!(blocks.check_size().is_err(), "saturates, no overflow");
    }

    #[test]
    fn a_vae_refuses_more_importance_samples_than_fit_in_memory() {
        let model = ModelConfig::preset(ModelKind::Vae, "cpu")
            .expect("preset")
            .init(&Device::flex())
            .expect("valid");
        let e = model.with_iw_samples(100_000).expect_err("refused");
        assert!(e.to_string().contains("limit of 256"), "{e}");
    }

    #[test]
    fn too_many_realnvp_downscales_are_an_error_not_a_panic() {
        for downscales in [5, 64, 200, usize::MAX] {
            let config = RealNvpConfig {
                downscales,
                mid_channels: 1,
                num_blocks: 0,
                ..RealNvpConfig::paper_fmnist()
            };
            assert!(config.init(&Device::flex()).is_err(), "{downscales}");
        }
    }
}
