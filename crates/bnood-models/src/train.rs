//! The training loop: Adam, seeded batches and dequantisation noise, gradient clipping,
//! BatchNorm running statistics updated through `StatsMode::Train`, a progress bar with
//! loss in bits/dim, periodic checkpoints and resume.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use bnood_data::{Dequantizer, ImageSet};
use bnood_norm::StatsMode;

use crate::{LikelihoodModel, ModelError, checkpoint};

/// Training settings. Defaults follow the paper: Adam with default hyper-parameters
/// (lr 1e-3), batch 64.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Samples per step (paper: 64).
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Stop after this many passes over the data (`None`: no epoch limit).
    pub epochs: Option<usize>,
    /// Stop after this many optimiser steps in total (`None`: no step limit).
    pub max_steps: Option<usize>,
    /// Stop when this much wall time has passed in this run (`None`: no limit).
    pub time_budget: Option<Duration>,
    /// Clip the gradient's global L2 norm to this value (`None`: no clipping).
    pub grad_clip_norm: Option<f32>,
    /// Seed of the batch order and the dequantisation noise.
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at the end) when `checkpoint` is set.
    pub checkpoint_every: usize,
    /// Where to write checkpoints.
    pub checkpoint: Option<PathBuf>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Continue from `checkpoint` when it exists: parameters, BatchNorm running statistics,
    /// Adam's state and the step count are restored, and the batch order and noise carry on
    /// exactly where the checkpoint was written.
    pub resume: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            learning_rate: 1e-3,
            epochs: Some(1),
            max_steps: None,
            time_budget: None,
            grad_clip_norm: Some(100.0),
            seed: 0,
            checkpoint_every: 500,
            checkpoint: None,
            progress: true,
            resume: false,
        }
    }
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    /// Optimiser steps taken in total (including steps before a resume).
    pub steps: usize,
    /// Training samples seen in total.
    pub samples_seen: usize,
    /// Wall time of this run, seconds.
    pub seconds: f64,
    /// Samples per second in this run.
    pub samples_per_second: f64,
    /// Mean training loss of the last (up to) 50 steps, bits/dim.
    pub final_loss_bits_per_dim: f64,
    /// `(step, loss in bits/dim)` of every step of this run.
    pub history: Vec<(usize, f64)>,
}

/// A model the loop can train and checkpoint.
pub trait Trainable: Module + LikelihoodModel + Sized {
    /// Kind name stored in checkpoints (e.g. `"realnvp"`).
    const KIND: &'static str;
    /// The configuration type stored in checkpoints.
    type Config: Serialize;
    /// The model's configuration.
    fn config(&self) -> Self::Config;
}

/// Where the optimiser state of a checkpoint is kept: `<checkpoint>.optim`.
pub fn optimizer_path(checkpoint: &Path) -> PathBuf {
    let mut name = checkpoint.file_name().unwrap_or_default().to_os_string();
    name.push(".optim");
    checkpoint.with_file_name(name)
}

fn save_progress<M: Trainable>(
    model: &M,
    optim: &burn::optim::ModuleOptimizer,
    step: usize,
    batch_size: usize,
    path: &Path,
) -> Result<(), ModelError> {
    let optim_path = optimizer_path(path);
    optim
        .save(&optim_path)
        .map_err(|e| ModelError::Checkpoint {
            path: optim_path.display().to_string(),
            reason: format!("cannot write the optimiser state: {e}"),
        })?;
    checkpoint::save(model.clone(), step, step * batch_size, path)
}

/// Batch `step` of the epoch order: indices into the data.
fn batch_indices(
    n: usize,
    batch: usize,
    seed: u64,
    step_in_epoch: usize,
    epoch: usize,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
        seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    ));
    order[step_in_epoch * batch..((step_in_epoch + 1) * batch).min(n)].to_vec()
}

/// Trains `model` on `data` on the autodiff-enabled `device` (e.g. `Device::flex().autodiff()`),
/// from scratch or, with `cfg.resume`, from `cfg.checkpoint`. Returns the trained model
/// (still on `device`; call `.valid()` for inference) and a report. The last batch of an
/// epoch is dropped when smaller than the batch size, so every step has full batch statistics.
///
/// # Errors
/// [`ModelError::Training`] if the batch size is below 2 or larger than the data, the
/// device has no autodiff, or the loss becomes non-finite; checkpoint errors.
pub fn train<M: Trainable>(
    model: M,
    data: &ImageSet,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<(M, TrainReport), ModelError> {
    if cfg.batch_size < 2 || cfg.batch_size > data.len() {
        return Err(ModelError::Training(format!(
            "batch size {} must be between 2 (BatchNorm needs batch statistics) and the data size {}",
            cfg.batch_size,
            data.len()
        )));
    }
    if !device.is_autodiff() {
        return Err(ModelError::Training(
            "training needs an autodiff device: pass `device.autodiff()`".into(),
        ));
    }
    if data.image_shape() != model.image_shape() {
        return Err(ModelError::Shape {
            expected: model.image_shape(),
            got: data.shape().to_vec(),
        });
    }
    let steps_per_epoch = data.len() / cfg.batch_size;
    let mut end = cfg.max_steps.unwrap_or(usize::MAX);
    if let Some(epochs) = cfg.epochs {
        end = end.min(epochs.saturating_mul(steps_per_epoch));
    }
    let dims = model.dims() as f64;
    let to_bpd = |nats: f64| nats / (dims * std::f64::consts::LN_2);

    let mut adam = AdamConfig::new();
    if let Some(norm) = cfg.grad_clip_norm {
        adam = adam.with_grad_clipping(Some(GradientClippingConfig::Norm(norm)));
    }
    let mut optim = adam.init();
    let mut model = model.fork(device).train();
    let mut start_step = 0;
    if let Some(path) = cfg
        .checkpoint
        .as_ref()
        .filter(|p| cfg.resume && p.is_file())
    {
        model = checkpoint::load_into(model, path)?.fork(device).train();
        start_step = checkpoint::read_meta(path)?.step;
        let optim_path = optimizer_path(path);
        optim = optim
            .load(&optim_path)
            .map_err(|e| ModelError::Checkpoint {
                path: optim_path.display().to_string(),
                reason: format!(
                    "cannot restore the optimiser state ({e}); train without resume to start over"
                ),
            })?;
    }

    let bar = if cfg.progress && end != usize::MAX {
        let bar = ProgressBar::new((end.saturating_sub(start_step)) as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg} (eta {eta})",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let started = Instant::now();
    let mut history = Vec::new();
    let mut step = start_step;
    while step < end {
        if cfg.time_budget.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
        let (epoch, in_epoch) = (step / steps_per_epoch, step % steps_per_epoch);
        let idx = batch_indices(data.len(), cfg.batch_size, cfg.seed, in_epoch, epoch);
        let batch = data.select(&idx)?;
        let x = batch.tensor(0..batch.len(), device)?;
        let x = Dequantizer::new(
            cfg.seed.wrapping_add(1).wrapping_mul(0x2545_F491_4F6C_DD1D) ^ step as u64,
        )
        .apply(x);

        let mode = StatsMode::train();
        let loss = model.training_loss(x, &mode)?.mean();
        let loss_value = f64::from(loss.clone().into_scalar::<f32>());
        if !loss_value.is_finite() {
            return Err(ModelError::Training(format!(
                "the loss became {loss_value} at step {step}: lower the learning rate or enable gradient clipping"
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(cfg.learning_rate, model, grads);
        if let StatsMode::Train(tape) = &mode {
            model = tape.apply(model);
        }
        step += 1;
        history.push((step, to_bpd(loss_value)));
        bar.inc(1);
        bar.set_message(format!("loss {:.3} bits/dim", to_bpd(loss_value)));

        if let Some(path) = &cfg.checkpoint
            && step.is_multiple_of(cfg.checkpoint_every.max(1))
        {
            save_progress(&model, &optim, step, cfg.batch_size, path)?;
        }
    }
    bar.finish_and_clear();
    if let Some(path) = &cfg.checkpoint {
        save_progress(&model, &optim, step, cfg.batch_size, path)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let run_samples = (step - start_step) * cfg.batch_size;
    let tail: Vec<f64> = history.iter().rev().take(50).map(|(_, l)| *l).collect();
    let final_loss = if tail.is_empty() {
        f64::NAN
    } else {
        tail.iter().sum::<f64>() / tail.len() as f64
    };
    let report = TrainReport {
        steps: step,
        samples_seen: step * cfg.batch_size,
        seconds,
        samples_per_second: run_samples as f64 / seconds.max(1e-9),
        final_loss_bits_per_dim: final_loss,
        history,
    };
    Ok((model, report))
}
