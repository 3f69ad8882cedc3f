//! The training loop: Adam, seeded batches and dequantisation noise, gradient clipping,
//! BatchNorm running statistics updated through `StatsMode::Train`, a progress bar with
//! loss in bits/dim, periodic checkpoints and exact resume, a held-out evaluation every
//! `eval_every` steps written to a learning curve beside the checkpoint
//! ([`crate::curve`]), and a learning rate that is halved, then training stopped, when that
//! curve goes flat.
//!
//! A run is a pure function of its configuration and the step: the batch order of epoch `e`
//! is a shuffle seeded by `(seed, e)`, the dequantisation noise and background mutation of
//! step `s` are seeded by `(seed, s)`, and the learning rate follows from the step and the
//! learning curve's rows. So a checkpoint (parameters, BatchNorm running statistics, Adam's
//! moments and step count, and the curve) is the whole training state: N steps in several
//! runs give the very same parameters as N steps in one run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use bnood_data::seeds::training;
use bnood_data::{Dequantizer, ImageSet};
use bnood_norm::StatsMode;

pub use crate::Trainable;
pub use crate::curve::FlatRule;
use crate::curve::{CurveRow, LearningCurve, curve_path};
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
    /// Show a progress bar on stderr (with the `cli` feature; without it, nothing is shown).
    pub progress: bool,
    /// Train a *background* model for the likelihood-ratio detector (Ren et al. 2019): each
    /// step's batch has every pixel replaced, with this probability, by a uniform random
    /// value (`bnood_data::mutate_pixels`, seeded by the run's seed and the step) before
    /// dequantisation. `None` (the default) trains on the images as they are. Recorded in
    /// the checkpoint's sidecar.
    pub background_mutation: Option<f64>,
    /// How the training images were brought to the model's shape (they arrive
    /// preprocessed; this is only recorded in the checkpoint's sidecar, and a resumed run
    /// must give the same).
    pub preprocess: bnood_data::Preprocess,
    /// The part of the training set held out from this run's data (recorded only; a
    /// resumed run must give the same).
    pub held_out: Option<checkpoint::HeldOutPart>,
    /// Continue from `checkpoint` when it exists: parameters, BatchNorm running statistics,
    /// Adam's state and the step count are restored, and the batch order and noise carry on
    /// exactly where the checkpoint was written.
    pub resume: bool,
    /// Run the held-out evaluation (the evaluator given to [`train_observed`]) every this
    /// many steps, write a checkpoint there and append a row to the learning curve
    /// (`<checkpoint>.curve.csv`); 0: never.
    pub eval_every: usize,
    /// Stop (or halve the learning rate, see `lr_halvings`) when the evaluator's first
    /// metric is flat. `None`: train to the budget.
    pub flat_rule: Option<FlatRule>,
    /// How many times a flat curve halves the learning rate before it stops training
    /// (reduce-on-plateau; 0: the first flat stretch stops training).
    pub lr_halvings: u32,
    /// Linear learning-rate warm-up over the first this many steps (0: none, the paper's).
    pub warmup_steps: usize,
    /// L2 regularisation: `λ·θ` added to every parameter's gradient before Adam (burn's
    /// `WeightDecayConfig`), as Ren et al. (2019) train their background models. `None`: none.
    pub weight_decay: Option<f32>,
    /// Also keep the parameters (no optimiser state) at every evaluation as
    /// `<dir>/<checkpoint stem>-step<step>.bpk`, e.g. to study a detector across training.
    pub snapshots: Option<PathBuf>,
}

impl TrainConfig {
    /// What the checkpoints of this run record about its data.
    fn data_record(&self) -> checkpoint::DataRecord {
        checkpoint::DataRecord {
            background_mutation: self.background_mutation,
            preprocess: self.preprocess,
            held_out: self.held_out.clone(),
        }
    }
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
            preprocess: bnood_data::Preprocess::default(),
            held_out: None,
            resume: false,
            eval_every: 0,
            flat_rule: None,
            lr_halvings: 0,
            warmup_steps: 0,
            weight_decay: None,
            snapshots: None,
        }
    }
}

/// How long to train: the run stops at the first limit reached (after the step that crosses
/// a time limit). The one budget type of bnood: the training loop, the CLI and the main job
/// all take it.
/// As command-line flags (a clap `Args` group): `--minutes`, `--epochs`, `--steps`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TrainBudget {
    /// Wall-clock budget in minutes.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub minutes: Option<f64>,
    /// Passes over the training set (counted from step 0, so a resumed run finishes the
    /// same epochs).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub epochs: Option<usize>,
    /// Optimiser steps in total (including steps before a resume).
    #[cfg_attr(feature = "cli", arg(long = "steps", allow_negative_numbers = true))]
    pub max_steps: Option<usize>,
}

impl TrainBudget {
    /// The step a run of `steps_per_epoch` steps per epoch stops at, from the step and
    /// epoch limits (`usize::MAX` when only the wall time limits it).
    pub fn last_step(&self, steps_per_epoch: usize) -> usize {
        let end = self.max_steps.unwrap_or(usize::MAX);
        self.epochs
            .map_or(end, |e| end.min(e.saturating_mul(steps_per_epoch)))
    }

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
    /// Training ended because the step or epoch budget is spent (not the time limit, nor
    /// the flat rule): a resumed run with the same budget would take no step.
    pub budget_spent: bool,
    /// Training ended because the held-out curve went flat with no halving left
    /// ([`TrainConfig::flat_rule`]), not because of the budget.
    pub stopped_flat: bool,
    /// The held-out evaluations written so far (the learning curve, all runs), when the
    /// run evaluates.
    pub curve: Option<LearningCurve>,
}

/// The held-out evaluation of [`train_observed`]: given the model in inference form, the
/// metrics to record, `(name, bits/dim)`, the first being the one the flat rule watches. The
/// names must be the same at every call.
pub type Evaluator<'a, M> = dyn FnMut(&M) -> Result<Vec<(String, f64)>, ModelError> + 'a;

/// The held-out evaluation of a training run and the learning curve it writes.
struct Observer<'e, 'a, M> {
    eval: &'e mut Evaluator<'a, M>,
    curve: LearningCurve,
    /// `<checkpoint>.curve.csv`.
    file: PathBuf,
}

impl<'e, 'a, M: Trainable> Observer<'e, 'a, M> {
    /// The held-out evaluation and its curve: present exactly when `eval_every > 0` (checked
    /// by [`check_run`] that the evaluator and the checkpoint path are given then). A resumed
    /// run keeps the curve's rows up to its step.
    fn open(
        evaluator: Option<&'e mut Evaluator<'a, M>>,
        cfg: &TrainConfig,
        start_step: usize,
    ) -> Result<Option<Self>, ModelError> {
        let (Some(eval), Some(path)) = (evaluator, &cfg.checkpoint) else {
            return Ok(None);
        };
        if cfg.eval_every == 0 {
            return Ok(None);
        }
        let file = curve_path(path);
        let mut curve = if start_step > 0 && file.is_file() {
            LearningCurve::read(&file)?
        } else {
            LearningCurve::default()
        };
        curve.rows.retain(|r| r.step <= start_step);
        Ok(Some(Self { eval, curve, file }))
    }

    /// Evaluates the model a run starts from when the curve has no row for it: the
    /// untrained model, or a resumed checkpoint whose row was lost (a run killed between the
    /// row and the checkpoint).
    fn record_start(
        &mut self,
        model: &M,
        (start_step, eval_every): (usize, usize),
        steps_per_epoch: usize,
        lr: f64,
        seconds: f64,
    ) -> Result<(), ModelError> {
        if self.curve.rows.last().map(|r| r.step) != Some(start_step)
            && (start_step == 0 || start_step.is_multiple_of(eval_every))
        {
            self.record(model, start_step, steps_per_epoch, lr, f64::NAN, seconds)?;
        }
        Ok(())
    }

    /// The training loss of a new row: the mean, in bits/dim, of this run's `history`
    /// `(step, loss)` after the last row's step (`NaN` when there is none).
    fn mean_loss_since_last_row(&self, history: &[(usize, f64)]) -> f64 {
        let since = self.curve.rows.last().map_or(0, |r| r.step);
        let losses: Vec<f64> = history
            .iter()
            .filter(|(s, _)| *s > since)
            .map(|(_, l)| *l)
            .collect();
        if losses.is_empty() {
            f64::NAN
        } else {
            losses.iter().sum::<f64>() / losses.len() as f64
        }
    }

    /// Evaluates `model` at `step`, appends the row (with the learning rate, training loss
    /// in bits/dim and training seconds given) and rewrites the curve file.
    fn record(
        &mut self,
        model: &M,
        step: usize,
        steps_per_epoch: usize,
        lr: f64,
        train_bpd: f64,
        seconds: f64,
    ) -> Result<(), ModelError> {
        let metrics = (self.eval)(&model.clone().valid())?;
        let names: Vec<String> = metrics.iter().map(|(n, _)| n.clone()).collect();
        if self.curve.rows.is_empty() && self.curve.metrics.is_empty() {
            self.curve.metrics = names;
        } else if self.curve.metrics != names {
            return Err(ModelError::Training(format!(
                "the learning curve has the metrics {:?} but this run evaluates {:?}: evaluate the same sets, or move the curve aside",
                self.curve.metrics, names
            )));
        }
        self.curve.rows.push(CurveRow {
            step,
            epoch: step as f64 / steps_per_epoch as f64,
            lr,
            train_bpd,
            seconds,
            values: metrics.into_iter().map(|(_, v)| v).collect(),
        });
        self.curve.write(&self.file)
    }
}

/// The learning rate of step `step` (counted from 0): `base · 0.5^halvings`, ramped up
/// linearly over the first `warmup` steps.
pub fn learning_rate(base: f64, warmup: usize, halvings: u32, step: usize) -> f64 {
    let ramp = if warmup == 0 {
        1.0
    } else {
        ((step + 1) as f64 / warmup as f64).min(1.0)
    };
    base * 0.5f64.powi(halvings as i32) * ramp
}

/// The training progress bar on stderr: steps, loss in bits/dim and time left (indicatif,
/// with the `cli` feature; nothing without it).
struct StepBar {
    #[cfg(feature = "cli")]
    bar: indicatif::ProgressBar,
}

impl StepBar {
    /// A bar over `total` steps, or a hidden one for `None`.
    fn new(total: Option<u64>) -> Self {
        #[cfg(feature = "cli")]
        {
            let bar = match total {
                Some(n) => {
                    let bar = indicatif::ProgressBar::new(n);
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg} (eta {eta})",
                    ) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar
                }
                None => indicatif::ProgressBar::hidden(),
            };
            Self { bar }
        }
        #[cfg(not(feature = "cli"))]
        {
            let _ = total;
            Self {}
        }
    }

    /// One step done, with its loss in bits/dim.
    fn step(&self, loss_bpd: f64) {
        #[cfg(feature = "cli")]
        {
            self.bar.inc(1);
            self.bar.set_message(format!("loss {loss_bpd:.3} bits/dim"));
        }
        #[cfg(not(feature = "cli"))]
        let _ = loss_bpd;
    }

    /// Removes the bar.
    fn finish(&self) {
        #[cfg(feature = "cli")]
        self.bar.finish_and_clear();
    }
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
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(training::epoch_order(
        seed,
        epoch as u64,
    )));
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
    train_observed(model, data, cfg, device, None)
}

/// [`train`] with a held-out evaluation every [`TrainConfig::eval_every`] steps (and at the
/// resumed step when the curve lacks it): the rows go to the learning curve
/// `<checkpoint>.curve.csv` (kept across resumes; rows past the resumed checkpoint, left by
/// a run killed between its row and its checkpoint, are dropped), and
/// [`TrainConfig::flat_rule`] reads them to halve the learning rate or stop. Evaluation
/// time is not counted in the curve's `seconds` nor in the wall-clock budget.
///
/// # Errors
/// As [`train`]; [`ModelError::Training`] when evaluation is asked for without a checkpoint
/// path or an evaluator, or the evaluator's metrics differ from the curve's columns;
/// the evaluator's errors.
pub fn train_observed<M: Trainable>(
    model: M,
    data: &ImageSet,
    cfg: &TrainConfig,
    device: &Device,
    evaluator: Option<&mut Evaluator<'_, M>>,
) -> Result<(M, TrainReport), ModelError> {
    check_run(&model, data, cfg, device, evaluator.is_some())?;
    let steps_per_epoch = data.len() / cfg.batch_size;
    let end = cfg.budget.last_step(steps_per_epoch);
    let dims = model.dims() as f64;
    let to_bpd = |nats: f64| nats / (dims * std::f64::consts::LN_2);

    let mut optim = optimizer(cfg)?;
    // Before any work: the output folder must be writable, and no other run may write here.
    let _lock = lock_checkpoint(cfg)?;
    let mut model = model.fork(device).train();
    let mut start_step = 0;
    if let Some(path) = cfg.checkpoint.as_ref().filter(|p| cfg.resume && p.exists()) {
        (model, optim, start_step) = resume(model, optim, path, cfg, end, device)?;
    }
    let mut observer = Observer::open(evaluator, cfg, start_step)?;
    let train_seconds = observer
        .as_ref()
        .and_then(|o| o.curve.rows.last())
        .map_or(0.0, |r| r.seconds);
    let mut schedule = observer
        .as_ref()
        .map(|o| o.curve.schedule(cfg.flat_rule, cfg.lr_halvings))
        .unwrap_or_default();
    if let Some(o) = observer.as_mut() {
        let lr = learning_rate(
            cfg.learning_rate,
            cfg.warmup_steps,
            schedule.halvings,
            start_step.saturating_sub(1),
        );
        o.record_start(
            &model,
            (start_step, cfg.eval_every),
            steps_per_epoch,
            lr,
            train_seconds,
        )?;
    }

    let bar = StepBar::new(
        (cfg.progress && end != usize::MAX).then(|| end.saturating_sub(start_step) as u64),
    );
    let time_limit = cfg.budget.time_limit();
    let mut history = Vec::new();
    let mut step = start_step;
    // Wall time of this run's steps (evaluations excluded), for the curve.
    let mut trained = Duration::ZERO;
    let started = Instant::now();
    while step < end && !schedule.stopped {
        if time_limit.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
        let step_started = Instant::now();
        let lr = learning_rate(cfg.learning_rate, cfg.warmup_steps, schedule.halvings, step);
        let loss;
        (model, loss) = train_step(model, &mut optim, data, cfg, device, step, lr)?;
        step += 1;
        history.push((step, to_bpd(loss)));
        trained += step_started.elapsed();
        bar.step(to_bpd(loss));

        if let Some(o) = observer.as_mut()
            && step.is_multiple_of(cfg.eval_every)
        {
            // Row first, then the checkpoint: a run killed between them resumes from the
            // previous checkpoint and drops the row (see above).
            let train_bpd = o.mean_loss_since_last_row(&history);
            let seconds = train_seconds + trained.as_secs_f64();
            o.record(&model, step, steps_per_epoch, lr, train_bpd, seconds)?;
            schedule = o.curve.schedule(cfg.flat_rule, cfg.lr_halvings);
            save_state(&model, &optim, step, cfg)?;
            save_snapshot(&model, step, cfg)?;
        } else if step.is_multiple_of(cfg.checkpoint_every.max(1)) {
            save_state(&model, &optim, step, cfg)?;
        }
    }
    bar.finish();
    if step == 0 {
        return Err(ModelError::Training(
            "the budget ended before the first step, so there is no trained model to save: give a longer budget (e.g. --minutes 1 or --steps 100)".into(),
        ));
    }
    if step > start_step {
        save_state(&model, &optim, step, cfg)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let report = TrainReport {
        steps: step,
        samples_seen: step * cfg.batch_size,
        seconds,
        samples_per_second: ((step - start_step) * cfg.batch_size) as f64 / seconds.max(1e-9),
        final_loss_bits_per_dim: mean_of_last(&history, 50),
        history,
        budget_spent: step >= end,
        stopped_flat: schedule.stopped,
        curve: observer.map(|o| o.curve),
    };
    Ok((model, report))
}

/// Before any work: the output folder must be writable, and no other run may write into
/// the checkpoint (its lock is held until the returned value is dropped); a save
/// interrupted earlier is completed or discarded.
fn lock_checkpoint(cfg: &TrainConfig) -> Result<Option<checkpoint::CheckpointLock>, ModelError> {
    cfg.checkpoint
        .as_deref()
        .map(|path| {
            let lock = checkpoint::lock_for_writing(path)?;
            checkpoint::complete_or_discard(path)?;
            Ok(lock)
        })
        .transpose()
}

/// Restores the training state saved at `path` (parameters, Adam's state, step) into
/// `model` and `optim`; returns them with the step to continue from.
///
/// # Errors
/// As [`checkpoint::CheckpointFile::read`]; [`ModelError::Training`] when the checkpoint is
/// past this run's last step `end` (at exactly `end` the run is finished: budget spent,
/// nothing written; past it the budget cannot be what was meant, as budgets count from
/// step 0, not from the checkpoint) or was trained with another background mutation rate.
fn resume<M: Trainable>(
    model: M,
    optim: burn::optim::ModuleOptimizer,
    path: &std::path::Path,
    cfg: &TrainConfig,
    end: usize,
    device: &Device,
) -> Result<(M, burn::optim::ModuleOptimizer, usize), ModelError> {
    let file = checkpoint::CheckpointFile::read(path)?;
    let step = file.meta().step;
    if step > end {
        return Err(ModelError::Training(format!(
            "{} is already at step {step}, past this run's last step {end} (budgets count from step 0, not from the checkpoint): nothing to train; raise the step or epoch budget above {step} to continue it",
            path.display()
        )));
    }
    let saved = file.meta().background_mutation;
    if saved != cfg.background_mutation {
        let rate = |r: Option<f64>| r.map_or("none (clean images)".to_string(), |r| r.to_string());
        return Err(ModelError::Training(format!(
            "{} was trained with background mutation rate {}, but this run asks for {}: resume with the same --background-mutation, or train a new model",
            path.display(),
            rate(saved),
            rate(cfg.background_mutation)
        )));
    }
    let saved = file.meta().preprocess;
    if saved != cfg.preprocess {
        return Err(ModelError::Training(format!(
            "{} was trained on images preprocessed with `{saved}`, but this run gives `{}`: resume with the same flags, or train a new model",
            path.display(),
            cfg.preprocess
        )));
    }
    if file.meta().held_out != cfg.held_out {
        return Err(ModelError::Training(format!(
            "{} was trained with {} held out of its training set, but this run gives {}: resume with the same --hold-out (and data), or train a new model",
            path.display(),
            held(&file.meta().held_out),
            held(&cfg.held_out)
        )));
    }
    let model = file.load_into(model)?.fork(device).train();
    Ok((model, checkpoint::load_optimizer(optim, path)?, step))
}

/// A held-out part in words.
fn held(part: &Option<checkpoint::HeldOutPart>) -> String {
    match part {
        None => "nothing".into(),
        Some(p) => format!(
            "a share {} of `{}` (seed {})",
            p.fraction, p.dataset, p.seed
        ),
    }
}

/// The mean loss of the last `n` steps of `history` (`NaN` when empty).
fn mean_of_last(history: &[(usize, f64)], n: usize) -> f64 {
    let tail: Vec<f64> = history.iter().rev().take(n).map(|(_, l)| *l).collect();
    if tail.is_empty() {
        f64::NAN
    } else {
        tail.iter().sum::<f64>() / tail.len() as f64
    }
}

/// Refuses a run that cannot work, before anything is written: held-out evaluation without
/// an evaluator or a checkpoint, a flat rule without evaluations, batches too small for
/// batch statistics or larger than the set, a device without autodiff, images of another
/// shape than the model's, an invalid budget or mutation rate.
fn check_run<M: Trainable>(
    model: &M,
    data: &ImageSet,
    cfg: &TrainConfig,
    device: &Device,
    has_evaluator: bool,
) -> Result<(), ModelError> {
    if cfg.eval_every > 0 && (!has_evaluator || cfg.checkpoint.is_none()) {
        return Err(ModelError::Training(
            "a held-out evaluation every `eval_every` steps needs an evaluator and a checkpoint path (the learning curve is written beside it)".into(),
        ));
    }
    if let Some(rule) = cfg.flat_rule
        && (cfg.eval_every == 0 || rule.epochs == 0 || !rule.min_gain_per_epoch.is_finite())
    {
        return Err(ModelError::Training(
            "the flat rule needs held-out evaluations (eval_every > 0), at least 1 epoch and a finite gain in bits/dim per epoch".into(),
        ));
    }
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
    cfg.budget.validate()?;
    if let Some(rate) = cfg.background_mutation {
        bnood_data::check_mutation_rate(rate)?;
    }
    Ok(())
}

/// Adam with the run's gradient clipping and weight decay.
fn optimizer(cfg: &TrainConfig) -> Result<burn::optim::ModuleOptimizer, ModelError> {
    let mut adam = AdamConfig::new();
    if let Some(norm) = cfg.grad_clip_norm {
        adam = adam.with_grad_clipping(Some(GradientClippingConfig::Norm(norm)));
    }
    if let Some(l2) = cfg.weight_decay {
        if !(l2.is_finite() && l2 >= 0.0) {
            return Err(ModelError::Training(format!(
                "weight decay {l2} is not an L2 coefficient: give a finite number ≥ 0 (e.g. 1e-4)"
            )));
        }
        adam = adam.with_weight_decay(Some(WeightDecayConfig::new(l2)));
    }
    Ok(adam.init())
}

/// One optimiser step at `step` with learning rate `lr`: the step's batch (seeded order,
/// background mutation, dequantisation noise), the loss in batch-statistics mode, Adam, and
/// the BatchNorm running statistics the forward pass recorded. Returns the updated model
/// and the loss in nats.
///
/// # Errors
/// A data error, or [`ModelError::Training`] when the loss is not finite.
fn train_step<M: Trainable>(
    mut model: M,
    optim: &mut burn::optim::ModuleOptimizer,
    data: &ImageSet,
    cfg: &TrainConfig,
    device: &Device,
    step: usize,
    lr: f64,
) -> Result<(M, f64), ModelError> {
    let steps_per_epoch = data.len() / cfg.batch_size;
    let (epoch, in_epoch) = (step / steps_per_epoch, step % steps_per_epoch);
    let idx = batch_indices(data.len(), cfg.batch_size, cfg.seed, in_epoch, epoch);
    let mut batch = data.select(&idx)?;
    if let Some(rate) = cfg.background_mutation {
        batch = bnood_data::mutate_pixels(
            &batch,
            rate,
            training::background_mutation(cfg.seed, step as u64),
        )?;
    }
    let x = batch.tensor(0..batch.len(), device)?;
    let x = Dequantizer::new(training::dequantisation(cfg.seed, step as u64)).apply(x);

    let mode = StatsMode::train();
    let loss = model.training_loss(x, &mode)?.mean();
    let loss_value = f64::from(loss.clone().into_scalar::<f32>());
    if !loss_value.is_finite() {
        return Err(ModelError::Training(format!(
            "the loss became {loss_value} at step {step}: lower the learning rate or enable gradient clipping"
        )));
    }
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    model = optim.step(lr, model, grads);
    if let StatsMode::Train(tape) = &mode {
        model = tape.apply(model);
    }
    Ok((model, loss_value))
}

/// Checkpoint (model, optimiser state and progress) at `step`, when a path is set.
fn save_state<M: Trainable>(
    model: &M,
    optim: &burn::optim::ModuleOptimizer,
    step: usize,
    cfg: &TrainConfig,
) -> Result<(), ModelError> {
    match &cfg.checkpoint {
        Some(path) => checkpoint::save_with_optimizer(
            model,
            optim,
            (step, step * cfg.batch_size, cfg.data_record()),
            path,
        ),
        None => Ok(()),
    }
}

/// The model alone at `step` in `cfg.snapshots` (`<stem>-step<step>.bpk`), when set.
fn save_snapshot<M: Trainable>(
    model: &M,
    step: usize,
    cfg: &TrainConfig,
) -> Result<(), ModelError> {
    let (Some(dir), Some(path)) = (&cfg.snapshots, &cfg.checkpoint) else {
        return Ok(());
    };
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Checkpoint {
        path: dir.display().to_string(),
        reason: format!("cannot create the snapshot folder: {e}"),
    })?;
    let file = dir.join(format!("{stem}-step{step}.bpk"));
    checkpoint::save_recording(
        model.clone().valid(),
        (step, step * cfg.batch_size),
        cfg.data_record(),
        &file,
    )
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
