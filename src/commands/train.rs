//! `bnood train`: how a training run is configured from its flags, checked before any
//! work, run, and its learning curve drawn.

use std::path::PathBuf;

use burn::tensor::Device;
use clap::Args;

use crate::commands::paths::catalogue_name_notice;
use crate::commands::preprocess::PreprocessArgs;
use crate::commands::{Notice, Notify, notify_some};
use crate::data::{ImageSet, Locator, Preprocess, load_named_prepared};
use crate::error::{Error, Result};
use crate::models::curve::curve_path;
use crate::models::held_out::HeldOutSet;
use crate::models::train::{
    Evaluator, FlatRule, TrainBudget, TrainConfig, TrainReport, train_observed,
};
use crate::models::{AnyModel, ModelConfig, ModelPreset, checkpoint};

/// The flags of `bnood train`: the model and its preset, the training set, the budget, the
/// checkpoint to write and the optional held-out learning curve.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    /// The model kind and its preset.
    pub model: ModelPreset,
    /// Training set: fmnist-train, mnist-train, cifar10-train, svhn-train, or a path to an IDX file / folder of PNG or JPEG images. The model is built for its image shape (after the preprocessing flags; `--preset paper` on 3×32×32 is the paper's CIFAR-10 RealNVP).
    #[arg(long, default_value = "fmnist-train")]
    pub dataset: String,
    #[command(flatten)]
    /// How the training images are brought to the model's shape (recorded in the checkpoint).
    pub preprocess: PreprocessArgs,
    /// Hold this share of the training set out of training (seeded by --seed, recorded in the checkpoint): `score`, `fit` and `monitor` take it with `--reference held-out`, images in-distribution that the model never saw.
    #[arg(long, value_name = "SHARE", allow_negative_numbers = true)]
    pub hold_out: Option<f64>,
    #[command(flatten)]
    /// The training budget (minutes, epochs or steps).
    pub budget: TrainBudget,
    /// Initialisation seed (also of batch order and dequantisation noise).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Output checkpoint (`.bpk`; a `.json` sidecar and `.optim` state are written beside it).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the checkpoint at `--out` (same configuration) instead of refusing to overwrite it.
    #[arg(long)]
    pub resume: bool,
    /// Train a background model for `--detector likelihood-ratio` (Ren et al. 2019): replace each training pixel by a random value with this probability (0.1–0.3 is usual).
    #[arg(long, value_name = "RATE", allow_negative_numbers = true)]
    pub background_mutation: Option<f64>,
    /// Adam's learning rate (the paper: Adam's default, 1e-3).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lr: f64,
    /// Linear learning-rate warm-up over the first this many steps (0: none).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub warmup_steps: usize,
    /// L2 regularisation coefficient λ (λ·θ added to each gradient), e.g. for a background model as Ren et al. train it.
    #[arg(long, value_name = "LAMBDA", allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Held-out evaluation for the learning curve (`<out>.curve.csv`, `<out>.curve.png`): this many Fashion-MNIST-test images in Running and Batch mode and MNIST-test images in Batch mode (Fashion-MNIST training only; 0: none).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub eval_images: usize,
    /// Steps between held-out evaluations (default: one epoch); a checkpoint is written at each.
    #[arg(long, allow_negative_numbers = true)]
    pub eval_every: Option<usize>,
    /// Stop when held-out FMNIST-test bits/dim (Running) gains less than this per epoch over the last --flat-epochs epochs (e.g. 0.005); needs --eval-images.
    #[arg(long, value_name = "BITS_PER_DIM", allow_negative_numbers = true)]
    pub stop_when_flat: Option<f64>,
    /// Epochs over which --stop-when-flat measures the gain.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub flat_epochs: usize,
    /// Halve the learning rate this many times at a flat stretch before --stop-when-flat stops.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub lr_halvings: u32,
    /// Keep the parameters at every held-out evaluation in this folder (`<out stem>-step<N>.bpk`).
    #[arg(long)]
    pub snapshots: Option<PathBuf>,
}

/// What a finished `bnood train` run reports.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The training set's name.
    pub data_name: String,
    /// Images in the training set.
    pub data_len: usize,
    /// Optimiser steps per epoch (batches of [`TrainConfig::default`]'s size, at least 1).
    pub steps_per_epoch: usize,
    /// The training loop's report (steps, seconds, loss in bits/dim, the curve).
    pub report: TrainReport,
    /// The learning curve's CSV file and the PNG drawn from it, when the run evaluates.
    pub curve_files: Option<(PathBuf, PathBuf)>,
}

impl TrainArgs {
    /// Checks every flag before any work: the preset, budget, mutation rate and learning
    /// rate are valid, and the held-out flags can work. Returns the model configuration
    /// with the seed applied.
    ///
    /// # Errors
    /// [`Error::Invalid`] or the model crate's error, naming the flag and a valid value.
    pub fn check(&self) -> Result<ModelConfig> {
        let config = self.model.config()?.with_seed(self.seed);
        self.preprocess.get()?;
        if let Some(share) = self.hold_out
            && !(share > 0.0 && share < 1.0)
        {
            return Err(Error::Invalid(format!(
                "--hold-out {share} is not a share of the training set: give a number strictly between 0 and 1 (e.g. 0.2)"
            )));
        }
        self.budget.validate()?;
        if let Some(rate) = self.background_mutation {
            crate::data::check_mutation_rate(rate)?;
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Invalid(format!(
                "--lr {} is not a learning rate: give a number above 0 (the paper's is 1e-3)",
                self.lr
            )));
        }
        if self.eval_images > 0 && self.dataset != "fmnist-train" {
            return Err(Error::Invalid(format!(
                "--eval-images evaluates on Fashion-MNIST test and MNIST test, which are held out only for a model of fmnist-train, not `{}`",
                self.dataset
            )));
        }
        if self.eval_images > 0 && !self.preprocess.get()?.is_identity() {
            return Err(Error::Invalid(
                "--eval-images evaluates on Fashion-MNIST images as they are, so it cannot be combined with --resize, --crop, --grayscale or --rgb".into(),
            ));
        }
        if self.stop_when_flat.is_some() && self.eval_images == 0 {
            return Err(Error::Invalid(
                "--stop-when-flat watches the held-out curve: give --eval-images too (e.g. 2000)"
                    .into(),
            ));
        }
        Ok(config)
    }

    /// The preset built for the shape of the (preprocessed) training images, with the seed;
    /// a shape the model cannot take is refused with the flags that fix it.
    fn config_for(&self, data: &ImageSet, preprocess: &Preprocess) -> Result<ModelConfig> {
        let [c, h, w] = data.image_shape();
        let config = self
            .model
            .config_for_shape([c, h, w])
            .map_err(|e| {
                let applied = if preprocess.is_identity() {
                    String::new()
                } else {
                    format!(" after `{preprocess}`")
                };
                Error::Invalid(format!(
                    "the training images of `{}` are [{c}, {h}, {w}] ([C, H, W]){applied}, and {} `{}` cannot take them: {e}. Bring them to a shape it takes with --resize H,W (e.g. --resize {},{}), --crop H,W, --grayscale or --rgb",
                    self.dataset,
                    self.model.model,
                    self.model.preset,
                    h.next_multiple_of(4),
                    w.next_multiple_of(4),
                ))
            })?
            .with_seed(self.seed);
        Ok(config)
    }

    /// Prepares `--out`: creates its folder, completes or discards a save that was
    /// interrupted (so that "exists" means a whole checkpoint), and refuses to overwrite a
    /// checkpoint without `--resume`.
    ///
    /// # Errors
    /// The folder cannot be created, or `--out` exists and `--resume` is not given.
    fn prepare_out(&self, notify: Notify<'_>) -> Result<()> {
        let text = self.out.to_string_lossy();
        if text.ends_with('/') || text.ends_with(std::path::MAIN_SEPARATOR) || self.out.is_dir() {
            return Err(Error::Invalid(format!(
                "--out {} names a folder: give the checkpoint's file name, e.g. {}",
                self.out.display(),
                self.out.join("model.bpk").display()
            )));
        }
        if self.out.exists() && !self.out.is_file() {
            return Err(Error::Invalid(format!(
                "--out {} exists and is not a regular file (a device, FIFO or socket): give the checkpoint's file name",
                self.out.display()
            )));
        }
        checkpoint::prepare_folder(&self.out)?;
        checkpoint::finish_interrupted_save(&self.out)?;
        if self.out.exists() && !self.resume {
            return Err(Error::Invalid(format!(
                "{} exists: pass --resume to continue it, or choose another --out",
                self.out.display()
            )));
        }
        if self.resume && !self.out.exists() {
            notify(Notice::Warning(format!(
                "--resume: {} does not exist yet, so training starts from scratch",
                self.out.display()
            )));
        }
        Ok(())
    }

    /// The training loop's configuration for a set of `data_len` images, evaluating on a
    /// held-out set when `evaluates`.
    fn train_config(
        &self,
        seed: u64,
        steps_per_epoch: usize,
        evaluates: bool,
        progress: bool,
    ) -> TrainConfig {
        TrainConfig {
            budget: self.budget,
            checkpoint: Some(self.out.clone()),
            progress,
            resume: self.resume,
            seed,
            background_mutation: self.background_mutation,
            learning_rate: self.lr,
            warmup_steps: self.warmup_steps,
            weight_decay: self.weight_decay,
            eval_every: if evaluates {
                self.eval_every.unwrap_or(steps_per_epoch).max(1)
            } else {
                0
            },
            flat_rule: self.stop_when_flat.map(|gain| FlatRule {
                min_gain_per_epoch: gain,
                epochs: self.flat_epochs,
            }),
            lr_halvings: self.lr_halvings,
            snapshots: self.snapshots.clone(),
            ..TrainConfig::default()
        }
    }

    /// Runs `bnood train` on `device`: checks the flags and `--out`, reads the training set
    /// (and the held-out sets of `--eval-images`) through `locator`, trains with a progress
    /// bar when `progress`, writes the checkpoint and, when evaluating, the learning curve
    /// (`<out>.curve.csv` and `.png`).
    ///
    /// # Errors
    /// A flag is invalid, `--out` exists without `--resume`, a set cannot be read, or
    /// training, saving or drawing fails; each error says what to do.
    pub fn run(
        &self,
        device: &Device,
        locator: &Locator,
        progress: bool,
        notify: Notify<'_>,
    ) -> Result<Trained> {
        self.check()?;
        let preprocess = self.preprocess.get()?;
        self.prepare_out(notify)?;
        notify_some(notify, catalogue_name_notice(&self.dataset));
        let (data, _) =
            load_named_prepared(&self.dataset, locator, None, self.seed, &preprocess, None)?;
        let (data, held_out_part) = match self.hold_out {
            None => (data, None),
            Some(fraction) => {
                let seed = crate::data::seeds::derive(self.seed, crate::data::seeds::HOLD_OUT);
                let (kept, _) = data.split_held_out(fraction, seed)?;
                let dataset = if crate::data::is_catalogue_name(&self.dataset) {
                    self.dataset.clone()
                } else {
                    std::path::Path::new(&self.dataset)
                        .canonicalize()
                        .map_err(|e| Error::Invalid(format!("{}: {e}", self.dataset)))?
                        .to_string_lossy()
                        .into_owned()
                };
                let part = crate::models::checkpoint::HeldOutPart {
                    dataset,
                    fraction,
                    seed,
                };
                (kept.with_name(data.name().to_string()), Some(part))
            }
        };
        let config = self.config_for(&data, &preprocess)?;
        let held_out = if self.eval_images > 0 {
            HeldOutSet::fmnist(locator, self.eval_images)?
        } else {
            Vec::new()
        };
        let steps_per_epoch = (data.len() / TrainConfig::default().batch_size).max(1);
        let tc = TrainConfig {
            preprocess,
            held_out: held_out_part,
            ..self.train_config(
                config.seed(),
                steps_per_epoch,
                !held_out.is_empty(),
                progress,
            )
        };
        let eval_device = device.clone();
        let mut evaluate = |m: &AnyModel| HeldOutSet::evaluate_all(&held_out, m, &eval_device);
        let (_, report) = train_observed(
            config.init(device)?,
            &data,
            &tc,
            &device.clone().autodiff(),
            (!held_out.is_empty()).then_some(&mut evaluate as &mut Evaluator<'_, AnyModel>),
        )?;
        let curve_files = match &report.curve {
            Some(curve) => {
                let csv = curve_path(&self.out);
                let png = csv.with_extension("png");
                crate::eval::plot::curve_png(&png, curve).map_err(crate::eval::EvalError::from)?;
                Some((csv, png))
            }
            None => None,
        };
        Ok(Trained {
            data_name: data.name().to_string(),
            data_len: data.len(),
            steps_per_epoch,
            report,
            curve_files,
        })
    }
}
