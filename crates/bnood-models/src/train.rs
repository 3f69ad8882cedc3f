//! The training loop: Adam, seeded batches and dequantisation noise, gradient clipping,
//! BatchNorm running statistics updated through `StatsMode::Train`, a progress bar with
//! loss in bits/dim, periodic checkpoints and resume.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use bnood_data::{Dequantizer, ImageSet};
use bnood_norm::StatsMode;

pub use crate::Trainable;
use crate::{ModelError, checkpoint};

/// Training settings. Defaults follow the paper: Adam with default hyper-parameters
/// (lr 1e-3), batch 64.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Samples per step (paper: 64).
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// When to stop: the first limit reached of wall time, epochs and steps.
    pub budget: TrainBudget,
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
    /// Train a *background* model for the likelihood-ratio detector (Ren et al. 2019): each
    /// step's batch has every pixel replaced, with this probability, by a uniform random
    /// value (`bnood_data::mutate_pixels`, seeded by the run's seed and the step) before
    /// dequantisation. `None` (the default) trains on the images as they are. Recorded in
    /// the checkpoint's sidecar.
    pub background_mutation: Option<f64>,
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
            budget: TrainBudget::epochs(1),
            grad_clip_norm: Some(100.0),
            seed: 0,
            checkpoint_every: 500,
            checkpoint: None,
            progress: true,
            background_mutation: None,
            resume: false,
        }
    }
}

/// How long to train: the run stops at the first limit reached (after the step that crosses
/// a time limit). The one budget type of bnood: the training loop, the CLI and the main job
/// all take it.
/// As command-line flags (a clap `Args` group): `--minutes`, `--epochs`, `--steps`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, clap::Args)]
pub struct TrainBudget {
    /// Wall-clock budget in minutes.
    #[arg(long, allow_negative_numbers = true)]
    pub minutes: Option<f64>,
    /// Passes over the training set (counted from step 0, so a resumed run finishes the
    /// same epochs).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Optimiser steps in total (including steps before a resume).
    #[arg(long = "steps")]
    pub max_steps: Option<usize>,
}

impl TrainBudget {
    /// Train for `minutes` of wall-clock time.
    pub fn minutes(minutes: f64) -> Self {
        Self {
            minutes: Some(minutes),
            ..Self::default()
        }
    }

    /// Train for `epochs` passes over the data.
    pub fn epochs(epochs: usize) -> Self {
        Self {
            epochs: Some(epochs),
            ..Self::default()
        }
    }

    /// Train for `steps` optimiser steps.
    pub fn steps(steps: usize) -> Self {
        Self {
            max_steps: Some(steps),
            ..Self::default()
        }
    }

    /// Whether no limit is set (training would never stop).
    pub fn is_unlimited(&self) -> bool {
        self.minutes.is_none() && self.epochs.is_none() && self.max_steps.is_none()
    }

    /// Checks that every limit given is usable: minutes finite, above 0 and at most
    /// [`MAX_MINUTES`](Self::MAX_MINUTES); epochs and steps at least 1; and that at least
    /// one limit is given. A budget of zero would save an untrained model.
    ///
    /// # Errors
    /// [`ModelError::Training`] naming the flag and the valid range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Training(m));
        if self.is_unlimited() {
            return bad("no training budget: give --minutes, --epochs or --steps".into());
        }
        if let Some(m) = self.minutes
            && !(m > 0.0 && m <= Self::MAX_MINUTES)
        {
            return bad(format!(
                "--minutes {m:?} is not a usable budget: give a number of minutes above 0 and at most {} (one year)",
                Self::MAX_MINUTES
            ));
        }
        if self.epochs == Some(0) {
            return bad("--epochs 0 would save an untrained model: give at least 1".into());
        }
        if self.max_steps == Some(0) {
            return bad("--steps 0 would save an untrained model: give at least 1".into());
        }
        Ok(())
    }

    /// The largest wall-clock budget accepted, in minutes (one year).
    pub const MAX_MINUTES: f64 = 365.0 * 24.0 * 60.0;

    /// The wall-clock limit as a duration (a budget outside what
    /// [`validate`](Self::validate) accepts is clamped to `0..=MAX_MINUTES`, never a panic).
    pub fn time_limit(&self) -> Option<Duration> {
        self.minutes.map(|m| {
            let m = if m.is_nan() {
                0.0
            } else {
                m.clamp(0.0, Self::MAX_MINUTES)
            };
            Duration::from_secs_f64(m * 60.0)
        })
    }

    /// The budget in words, e.g. `"20 min"` or `"4 steps"`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.minutes {
            parts.push(format!("{m} min"));
        }
        if let Some(e) = self.epochs {
            parts.push(format!("{e} epoch(s)"));
        }
        if let Some(s) = self.max_steps {
            parts.push(format!("{s} steps"));
        }
        if parts.is_empty() {
            "no budget".into()
        } else {
            parts.join(" or ")
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
    if cfg.batch_size < 2 {
        return Err(ModelError::Training(format!(
            "batch size {} is below 2, but BatchNorm needs batch statistics: set TrainConfig::batch_size to 2 or more (64 is the paper's)",
            cfg.batch_size
        )));
    }
    if cfg.batch_size > data.len() {
        return Err(ModelError::Training(format!(
            "the training set `{}` has {} image(s), fewer than one batch of {}: train on at least {} images",
            data.name(),
            data.len(),
            cfg.batch_size,
            cfg.batch_size
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
    cfg.budget.validate()?;
    if let Some(rate) = cfg.background_mutation {
        bnood_data::check_mutation_rate(rate)?;
    }
    let mut end = cfg.budget.max_steps.unwrap_or(usize::MAX);
    if let Some(epochs) = cfg.budget.epochs {
        end = end.min(epochs.saturating_mul(steps_per_epoch));
    }
    let dims = model.dims() as f64;
    let to_bpd = |nats: f64| nats / (dims * std::f64::consts::LN_2);

    let mut adam = AdamConfig::new();
    if let Some(norm) = cfg.grad_clip_norm {
        adam = adam.with_grad_clipping(Some(GradientClippingConfig::Norm(norm)));
    }
    let mut optim = adam.init();
    // Before any work: the output folder must be writable, and no other run may write here.
    let _lock = match &cfg.checkpoint {
        Some(path) => {
            let lock = checkpoint::lock_for_writing(path)?;
            checkpoint::complete_or_discard(path)?;
            Some(lock)
        }
        None => None,
    };
    let mut model = model.fork(device).train();
    let mut start_step = 0;
    if let Some(path) = cfg
        .checkpoint
        .as_ref()
        .filter(|p| cfg.resume && p.is_file())
    {
        model = checkpoint::load_into(model, path)?.fork(device).train();
        start_step = checkpoint::read_meta(path)?.step;
        optim = checkpoint::load_optimizer(optim, path)?;
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

    // Checkpoint (model, optimiser state and progress) at `step`, when a path is set.
    let save = |model: &M, optim: &burn::optim::ModuleOptimizer, step: usize| match &cfg.checkpoint
    {
        Some(path) => checkpoint::save_with_optimizer(
            model,
            optim,
            (step, step * cfg.batch_size, cfg.background_mutation),
            path,
        ),
        None => Ok(()),
    };
    let time_limit = cfg.budget.time_limit();
    let started = Instant::now();
    let mut history = Vec::new();
    let mut step = start_step;
    while step < end {
        if time_limit.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
        let (epoch, in_epoch) = (step / steps_per_epoch, step % steps_per_epoch);
        let idx = batch_indices(data.len(), cfg.batch_size, cfg.seed, in_epoch, epoch);
        let mut batch = data.select(&idx)?;
        if let Some(rate) = cfg.background_mutation {
            batch = bnood_data::mutate_pixels(
                &batch,
                rate,
                cfg.seed.wrapping_add(3).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step as u64,
            )?;
        }
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

        if step.is_multiple_of(cfg.checkpoint_every.max(1)) {
            save(&model, &optim, step)?;
        }
    }
    bar.finish_and_clear();
    save(&model, &optim, step)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RealNvpConfig;

    fn tiny_data() -> ImageSet {
        let pixels = (0..8 * 16).map(|i| (i * 37 % 251) as u8).collect();
        ImageSet::new("tiny", pixels, [8, 1, 4, 4], None).expect("valid set")
    }

    fn tiny_model() -> crate::RealNvp {
        RealNvpConfig {
            image_shape: [1, 4, 4],
            mid_channels: 4,
            num_blocks: 1,
            ..RealNvpConfig::paper_fmnist()
        }
        .init(&Device::flex())
        .expect("valid")
    }

    fn train_with(
        budget: TrainBudget,
        checkpoint: Option<PathBuf>,
    ) -> Result<TrainReport, ModelError> {
        let cfg = TrainConfig {
            batch_size: 4,
            budget,
            checkpoint,
            progress: false,
            ..TrainConfig::default()
        };
        train(tiny_model(), &tiny_data(), &cfg, &Device::flex().autodiff()).map(|(_, r)| r)
    }

    #[test]
    fn train_refuses_a_negative_nan_infinite_huge_or_zero_budget() {
        for minutes in [-1.0, f64::NAN, f64::INFINITY, 1e300, 0.0, -0.0] {
            let e = train_with(TrainBudget::minutes(minutes), None).expect_err("refused");
            assert!(e.to_string().contains("--minutes"), "{minutes}: {e}");
        }
        let e = train_with(TrainBudget::steps(0), None).expect_err("refused");
        assert!(e.to_string().contains("--steps 0"), "{e}");
        let e = train_with(TrainBudget::epochs(0), None).expect_err("refused");
        assert!(e.to_string().contains("--epochs 0"), "{e}");
    }

    #[test]
    fn time_limit_never_panics_on_a_bad_number() {
        for minutes in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            let _ = TrainBudget::minutes(minutes).time_limit();
        }
        assert_eq!(
            TrainBudget::minutes(0.5).time_limit(),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn train_refuses_a_checkpoint_another_run_is_writing() {
        let dir = std::env::temp_dir().join(format!("bnood-train-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("m.bpk");
        let _held = checkpoint::lock_for_writing(&path).expect("lock");
        let e = train_with(TrainBudget::steps(1), Some(path.clone())).expect_err("refused");
        assert!(e.to_string().contains("another bnood process"), "{e}");
        assert!(!path.exists(), "nothing saved");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn training_on_fewer_images_than_a_batch_names_the_data_not_a_setting() {
        let cfg = TrainConfig {
            batch_size: 64,
            budget: TrainBudget::steps(1),
            progress: false,
            ..TrainConfig::default()
        };
        let e = train(tiny_model(), &tiny_data(), &cfg, &Device::flex().autodiff())
            .expect_err("refused");
        assert!(
            e.to_string()
                .contains("has 8 image(s), fewer than one batch of 64"),
            "{e}"
        );
    }
}
