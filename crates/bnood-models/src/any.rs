//! A model of any kind in the zoo, loaded from a checkpoint by the kind its sidecar names:
//! what tools that take "a model file" (the `bnood` CLI, reports) work with.

use std::path::Path;

use burn::tensor::{Device, Tensor};

use crate::checkpoint::{self, read_meta};
use crate::{LikelihoodModel, ModelError, RealNvp, StatsMode, Vae};

/// A trained RealNVP or VAE. (The variants differ in size, but a program holds a handful
/// of models at most, so boxing would buy nothing.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum AnyModel {
    /// A RealNVP flow.
    RealNvp(RealNvp),
    /// A VAE (scored with its importance-weighted bound).
    Vae(Vae),
}

impl AnyModel {
    /// Loads the checkpoint at `path` (and its `.json` sidecar) onto `device`, building the
    /// model from the configuration stored with it.
    ///
    /// # Errors
    /// [`ModelError::Checkpoint`] for a missing or unreadable file or sidecar, or a kind
    /// this version does not know.
    pub fn load(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let meta = read_meta(path)?;
        match meta.kind.as_str() {
            "realnvp" => Ok(Self::RealNvp(checkpoint::load::<RealNvp>(
                path,
                device,
                |c, d| c.init(d),
            )?)),
            "vae" => Ok(Self::Vae(checkpoint::load::<Vae>(path, device, |c, d| {
                c.init(d)
            })?)),
            other => Err(ModelError::Checkpoint {
                path: path.display().to_string(),
                reason: format!(
                    "it holds a `{other}` model, which this version of bnood cannot load (known: realnvp, vae)"
                ),
            }),
        }
    }

    /// The kind stored in checkpoints: `"realnvp"` or `"vae"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RealNvp(_) => "realnvp",
            Self::Vae(_) => "vae",
        }
    }

    /// The name used in tables: `"RealNVP"` or `"VAE"`.
    pub fn display_name(&self) -> &'static str {
        match self {
            Self::RealNvp(_) => "RealNVP",
            Self::Vae(_) => "VAE",
        }
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
