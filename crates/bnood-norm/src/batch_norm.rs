//! [`BatchNorm`] with an explicit [`StatsMode`].

use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::module::{batch_norm, batch_norm_train};
use burn::tensor::{Device, Tensor};

use crate::NormError;

/// Where a [`BatchNorm`] takes its mean and variance from.
#[derive(Debug, Clone, Default)]
pub enum StatsMode {
    /// The running averages accumulated in training: the paper's *evaluation mode*.
    /// Each sample's output is independent of the rest of the batch.
    #[default]
    Running,
    /// The statistics of this batch; running state is left bit-identical: the paper's
    /// *training mode* as used for scoring.
    Batch,
    /// The statistics of this batch, recorded on the tape so that
    /// [`RunningStatsTape::apply`] can update the running averages after the step. Used only
    /// by training.
    Train(RunningStatsTape),
}

impl StatsMode {
    /// A fresh `Train` mode with an empty tape.
    pub fn train() -> Self {
        StatsMode::Train(RunningStatsTape::default())
    }

    /// Whether this mode normalises with the statistics of the current batch.
    pub fn uses_batch_statistics(&self) -> bool {
        !matches!(self, StatsMode::Running)
    }
}

/// One layer's observation during a `Train` forward pass.
#[derive(Debug, Clone)]
struct Observation {
    mean_id: ParamId,
    var_id: ParamId,
    momentum: f64,
    batch_mean: Tensor<1>,
    batch_var_unbiased: Tensor<1>,
}

/// Collects batch statistics during [`StatsMode::Train`] forward passes. Cloning shares
/// the tape (it is passed down through a model inside the mode); each training step should
/// use a fresh one.
#[derive(Debug, Clone, Default)]
pub struct RunningStatsTape {
    observations: Arc<Mutex<Vec<Observation>>>,
}

impl RunningStatsTape {
    /// Number of BatchNorm calls recorded so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Folds every recorded observation into the running averages of the layers of
    /// `module` it came from: `running ← (1 − momentum)·running + momentum·batch` (with the
    /// unbiased batch variance), and empties the tape. A layer called several times in one
    /// pass is updated once per call, in call order, as PyTorch does.
    pub fn apply<M: Module>(&self, module: M) -> M {
        let observations = std::mem::take(&mut *self.lock());
        if observations.is_empty() {
            return module;
        }
        module.map(&mut RunningUpdate { observations })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Observation>> {
        // A poisoned tape only means another thread panicked mid-push; the data is still a
        // list of complete observations.
        self.observations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the statistics of one batch that `layer` normalised with outside
    /// [`BatchNorm::forward`] — a custom kernel, e.g. a fused or channels-last one — exactly
    /// as `forward` records them in [`StatsMode::Train`]: [`apply`](Self::apply) then moves
    /// `layer`'s running averages towards `batch_mean` and the unbiased form of
    /// `batch_variance`.
    ///
    /// `batch_mean` and `batch_variance` are `[C]`; `batch_variance` is the **biased**
    /// variance the batch was normalised with (`1/n`, module docs: variance convention), and
    /// `values` is `n`, the number of values per channel behind them (N·H·W).
    ///
    /// # Errors
    /// [`NormError::InvalidStatistics`] when a statistic is not `[C]` or `values` < 2 (no
    /// unbiased variance).
    pub fn record(
        &self,
        layer: &BatchNorm,
        batch_mean: Tensor<1>,
        batch_variance: Tensor<1>,
        values: usize,
    ) -> Result<(), NormError> {
        let c = layer.num_features();
        let invalid = |reason: String| NormError::InvalidStatistics {
            channels: c,
            reason,
        };
        for (name, statistic) in [("mean", &batch_mean), ("variance", &batch_variance)] {
            let shape = statistic.dims();
            if shape[0] != c {
                return Err(invalid(format!(
                    "the batch {name} has shape {shape:?}, not [{c}]"
                )));
            }
        }
        if values < 2 {
            return Err(invalid(format!(
                "{values} value(s) per channel: an unbiased variance needs at least 2"
            )));
        }
        self.push(layer.observation(batch_mean, batch_variance, values));
        Ok(())
    }

    fn push(&self, observation: Observation) {
        self.lock().push(observation);
    }
}

struct RunningUpdate {
    observations: Vec<Observation>,
}

impl ModuleMapper for RunningUpdate {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = param.id;
        let updates: Vec<(f64, Tensor<1>)> = self
            .observations
            .iter()
            .filter_map(|o| {
                if o.mean_id == id {
                    Some((o.momentum, o.batch_mean.clone()))
                } else if o.var_id == id {
                    Some((o.momentum, o.batch_var_unbiased.clone()))
                } else {
                    None
                }
            })
            .collect();
        if updates.is_empty() {
            return param;
        }
        param.map(|running| {
            let shape = running.shape();
            let device = running.device();
            let mut value = running.detach();
            for (momentum, batch) in updates {
                let batch: Tensor<D> = batch.to_device(&device).reshape(shape.clone());
                value = value.mul_scalar(1.0 - momentum) + batch.mul_scalar(momentum);
            }
            value.set_require_grad(false)
        })
    }
}

/// Configuration of a [`BatchNorm`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormConfig {
    /// Number of channels (dimension 1 of the input).
    pub num_features: usize,
    /// Added to the variance before the square root (default 1e-5, as PyTorch).
    pub epsilon: f64,
    /// Weight of the new batch in the running-average update (default 0.1, as PyTorch).
    pub momentum: f64,
}

impl BatchNormConfig {
    /// Defaults: ε = 1e-5, momentum = 0.1.
    pub fn new(num_features: usize) -> Self {
        Self {
            num_features,
            epsilon: 1e-5,
            momentum: 0.1,
        }
    }

    /// Sets ε.
    pub fn with_epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Sets the momentum.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Builds the layer on `device`: γ = 1, β = 0, running mean 0, running variance 1.
    ///
    /// # Errors
    /// [`NormError::InvalidConfig`] for zero channels, ε not finite and positive, or a
    /// momentum outside [0, 1].
    pub fn init(&self, device: &Device) -> Result<BatchNorm, NormError> {
        if self.num_features == 0 {
            return Err(NormError::InvalidConfig(
                "num_features is 0: a BatchNorm needs at least one channel".into(),
            ));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(NormError::InvalidConfig(format!(
                "epsilon {} must be finite and positive",
                self.epsilon
            )));
        }
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(NormError::InvalidConfig(format!(
                "momentum {} must lie in [0, 1]",
                self.momentum
            )));
        }
        let c = self.num_features;
        Ok(BatchNorm {
            gamma: Param::from_tensor(Tensor::ones([c], device)),
            beta: Param::from_tensor(Tensor::zeros([c], device)),
            running_mean: Param::from_tensor(Tensor::zeros([c], device)).set_require_grad(false),
            running_var: Param::from_tensor(Tensor::ones([c], device)).set_require_grad(false),
            epsilon: self.epsilon,
            momentum: self.momentum,
        })
    }
}

/// Batch normalisation over dimension 1 of an input `[N, C, ...]`:
/// `y = (x − μ) / √(σ² + ε) · γ + β`, with `μ, σ²` per channel from the source the
/// [`StatsMode`] names (module docs: variance convention).
#[derive(Module, Debug)]
pub struct BatchNorm {
    /// Scale γ, `[C]`.
    pub gamma: Param<Tensor<1>>,
    /// Shift β, `[C]`.
    pub beta: Param<Tensor<1>>,
    /// Running mean, `[C]` (not trainable).
    pub running_mean: Param<Tensor<1>>,
    /// Running (unbiased) variance, `[C]` (not trainable).
    pub running_var: Param<Tensor<1>>,
    /// ε added to the variance.
    pub epsilon: f64,
    /// Momentum of the running-average update.
    pub momentum: f64,
}

impl BatchNorm {
    /// What a [`StatsMode::Train`] tape keeps of one batch: its mean and its biased variance
    /// over `values` values per channel, turned into the unbiased estimate (`· n/(n − 1)`).
    fn observation(
        &self,
        batch_mean: Tensor<1>,
        batch_variance: Tensor<1>,
        values: usize,
    ) -> Observation {
        let n = values as f64;
        Observation {
            mean_id: self.running_mean.id,
            var_id: self.running_var.id,
            momentum: self.momentum,
            batch_mean: batch_mean.detach(),
            batch_var_unbiased: batch_variance.detach().mul_scalar(n / (n - 1.0)),
        }
    }

    /// Number of channels.
    pub fn num_features(&self) -> usize {
        self.gamma.dims()[0]
    }

    /// Normalises `input` `[N, C, ...]` with the statistics `mode` names.
    ///
    /// # Errors
    /// [`NormError::ChannelMismatch`] for a wrong channel count, and
    /// [`NormError::TooFewValues`] when batch statistics would be over fewer than 2 values
    /// per channel.
    pub fn forward<const D: usize>(
        &self,
        input: Tensor<D>,
        mode: &StatsMode,
    ) -> Result<Tensor<D>, NormError> {
        let dims = input.dims();
        let c = self.num_features();
        if D < 2 || dims[1] != c {
            return Err(NormError::ChannelMismatch {
                expected: c,
                shape: dims.to_vec(),
            });
        }
        let values = dims.iter().product::<usize>() / c;
        match mode {
            StatsMode::Running => Ok(batch_norm(
                input,
                self.gamma.val(),
                self.beta.val(),
                self.running_mean.val(),
                self.running_var.val(),
                self.epsilon,
            )),
            StatsMode::Batch | StatsMode::Train(_) => {
                if values < 2 {
                    return Err(NormError::TooFewValues {
                        values,
                        shape: dims.to_vec(),
                    });
                }
                let out = batch_norm_train(input, self.gamma.val(), self.beta.val(), self.epsilon);
                if let StatsMode::Train(tape) = mode {
                    tape.push(self.observation(out.mean, out.variance, values));
                }
                Ok(out.output)
            }
        }
    }
}
