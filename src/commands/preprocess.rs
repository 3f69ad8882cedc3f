//! The preprocessing flags of `bnood train` (`--resize`, `--crop`, `--grayscale`, `--rgb`):
//! what they give, recorded in the checkpoint and applied to every set the model scores.

use clap::Args;

use crate::data::preprocess::{Channels, Preprocess, parse_size};
use crate::error::Result;

/// How training images are brought to the model's shape: a channel conversion, a centre
/// crop, a resize, in that order (`bnood_data::Preprocess`). The checkpoint records them, and
/// `score`, `fit`, `monitor` and `eval` apply the same to every set the model scores.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct PreprocessArgs {
    /// Resize every image to H,W pixels (last; e.g. 32,32, or 32 for a square): lets a folder hold images of different sizes.
    #[arg(long, value_name = "H,W", value_parser = size)]
    pub resize: Option<[usize; 2]>,
    /// Crop the centre H,W pixels of every image (after --grayscale/--rgb, before --resize).
    #[arg(long, value_name = "H,W", value_parser = size)]
    pub crop: Option<[usize; 2]>,
    /// Convert colour images to one gray channel (ITU-R BT.601 luma); gray images stay.
    #[arg(long, conflicts_with = "rgb")]
    pub grayscale: bool,
    /// Convert gray images to three channels (R = G = B); colour images stay.
    #[arg(long)]
    pub rgb: bool,
}

fn size(text: &str) -> std::result::Result<[usize; 2], String> {
    parse_size(text).map_err(|e| e.to_string())
}

impl PreprocessArgs {
    /// The preprocessing these flags give, checked.
    ///
    /// # Errors
    /// A size outside 1..=4096.
    pub fn get(&self) -> Result<Preprocess> {
        let channels = match (self.grayscale, self.rgb) {
            (true, _) => Some(Channels::Gray),
            (_, true) => Some(Channels::Rgb),
            _ => None,
        };
        let p = Preprocess {
            crop: self.crop,
            resize: self.resize,
            channels,
        };
        p.check()?;
        Ok(p)
    }
}

/// The images a model takes: their shape `[C, H, W]` and the preprocessing its checkpoint
/// records. Every set a front end loads for the model goes through [`load`](Self::load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelImages {
    /// `[C, H, W]` after preprocessing.
    pub shape: [usize; 3],
    /// The checkpoint's preprocessing.
    pub preprocess: Preprocess,
}

impl ModelImages {
    /// The images of a loaded model.
    pub fn of(loaded: &crate::models::zoo::LoadedModel) -> Self {
        Self {
            shape: crate::models::LikelihoodModel::image_shape(&loaded.model),
            preprocess: loaded.meta.preprocess,
        }
    }

    /// The set `name` (catalogue name or path; `n` images drawn with `seed`, all when
    /// `None`), preprocessed and checked against the shape.
    ///
    /// # Errors
    /// The set cannot be read, or does not have the model's shape after preprocessing.
    pub fn load(
        &self,
        name: &str,
        locator: &crate::data::Locator,
        n: Option<usize>,
        seed: u64,
    ) -> Result<crate::data::ImageSet> {
        Ok(crate::data::load_named_prepared(
            name,
            locator,
            n,
            seed,
            &self.preprocess,
            Some(self.shape),
        )?
        .0)
    }

    /// The image files `files` as one set named `name`, preprocessed and checked.
    ///
    /// # Errors
    /// As [`crate::data::ImageSet::from_image_files`].
    pub fn load_files(
        &self,
        files: &[std::path::PathBuf],
        name: String,
    ) -> Result<crate::data::ImageSet> {
        Ok(crate::data::ImageSet::from_image_files(
            files,
            name,
            &self.preprocess,
            Some(self.shape),
        )?)
    }
}

/// The name `--reference held-out`: the part of the model's training set held out from
/// training (`bnood train --hold-out`).
pub const HELD_OUT_REFERENCE: &str = "held-out";

/// The reference images of `--reference held-out` for the model whose checkpoint is
/// `model`: its training set, preprocessed as it was, split as it was, the held-out part;
/// `n` of them drawn with `seed` (all when fewer).
///
/// # Errors
/// The checkpoint records no held-out part (trained without `--hold-out`), or its
/// training set cannot be read.
pub fn held_out_reference(
    model: &std::path::Path,
    locator: &crate::data::Locator,
    n: Option<usize>,
    seed: u64,
) -> Result<crate::data::ImageSet> {
    let meta = crate::models::checkpoint::read_meta(model)?;
    let Some(part) = meta.held_out else {
        return Err(crate::error::Error::Invalid(format!(
            "--reference held-out: {} was trained without --hold-out, so no part of its training set is held out; name a reference set (images of the same distribution the model did not train on), or train with --hold-out 0.2",
            model.display()
        )));
    };
    let (set, _) = crate::data::load_named_prepared(
        &part.dataset,
        locator,
        None,
        0,
        &meta.preprocess,
        Some(meta.model.image_shape()),
    )?;
    let (_, held) = set.split_held_out(part.fraction, part.seed)?;
    let held = held.with_name(format!("{} (held out)", set.name()));
    Ok(match n {
        Some(n) if n < held.len() => held.subset(n, seed)?,
        _ => held,
    })
}
