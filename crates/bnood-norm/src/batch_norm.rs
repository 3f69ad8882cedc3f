//! [`BatchNorm`] with an explicit [`StatsMode`].

use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::module::{batch_norm, batch_norm_train};
use burn::tensor::{Device, Tensor, TensorData};

use crate::NormError;
use crate::share::BatchShare;

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

    fn record(&self, observation: Observation) {
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

/// Which rows of a channels-last input `[N, P, C]` to [`BatchNorm::forward_channels_last`]
/// hold values and which are padding (e.g. the zero border that RealNVP's rows layout keeps
/// around every image). The same pattern applies to each of the `N` blocks.
#[derive(Debug, Clone)]
pub struct ValidRows {
    /// `[1, 1, P]`: 1 on value rows, 0 on padding rows.
    weights: Tensor<3>,
    /// `[1, P, 1]`: the same, as a column.
    column: Tensor<3>,
    /// Value rows per block.
    count: usize,
}

impl ValidRows {
    /// The pattern of one block of `P` rows, `true` for value rows, on `device`.
    pub fn new(valid: &[bool], device: &Device) -> Self {
        let values: Vec<f32> = valid.iter().map(|&v| f32::from(u8::from(v))).collect();
        let p = values.len();
        let weights = Tensor::<1>::from_data(TensorData::new(values, [p]), device);
        Self {
            column: weights.clone().reshape([1, p, 1]),
            weights: weights.reshape([1, 1, p]),
            count: valid.iter().filter(|&&v| v).count(),
        }
    }

    /// Rows per block, `P`.
    pub fn rows(&self) -> usize {
        self.weights.dims()[2]
    }

    /// `Σ_p valid_p · x[n, p, c]` summed over `n` too: `[1, 1, C]`. A matrix product reads
    /// `x` once and sums each block's `P` rows in its own accumulator.
    fn sum(&self, x: Tensor<3>) -> Tensor<3> {
        self.weights.clone().matmul(x).sum_dim(0)
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
                    let n = values as f64;
                    tape.record(Observation {
                        mean_id: self.running_mean.id,
                        var_id: self.running_var.id,
                        momentum: self.momentum,
                        batch_mean: out.mean.detach(),
                        batch_var_unbiased: out.variance.detach().mul_scalar(n / (n - 1.0)),
                    });
                }
                Ok(out.output)
            }
        }
    }

    /// Normalises a **channels-last** input `[N, P, C]` (e.g. `N` images of `P` pixel rows)
    /// with the statistics `mode` names, where only the rows that `rows` marks as values
    /// count. Padding rows may hold any finite values: they are left out of the
    /// statistics and come out as exactly 0, so the value rows equal
    /// [`forward`](Self::forward) on the same values laid out `[N, C, H, W]`, up to float
    /// rounding.
    ///
    /// `offset` (`[C]`, optional) is a per-channel constant the caller left out of the
    /// input: the layer normalises `input + offset`, e.g. the bias of the convolution before
    /// it. With batch statistics the offset cancels (it only moves the batch mean, which
    /// [`StatsMode::Train`] records with the offset included); with running statistics it
    /// moves the shift. Leaving a convolution's bias to this layer saves a pass over the
    /// activations.
    ///
    /// This is the layout RealNVP's s/t networks use on CPUs (a 3×3 convolution as three
    /// matrix products over rows with a zero border around every image). Statistics are
    /// two-pass, as [`forward`](Self::forward)'s: `μ = Σ valid·x / n`, then
    /// `σ² = Σ valid·(x − μ)² / n`, `n` the number of value rows; each block's rows are
    /// summed separately, then the blocks, which keeps float sums short.
    ///
    /// With `share`, the input is one thread's share of the batch (see [`BatchShare`]).
    ///
    /// # Errors
    /// [`NormError::ChannelMismatch`] when the last dimension is not `C` or the input does
    /// not have `rows.rows()` rows per block; [`NormError::TooFewValues`] when batch
    /// statistics would be over fewer than 2 values per channel.
    pub fn forward_channels_last(
        &self,
        input: Tensor<3>,
        rows: &ValidRows,
        offset: Option<Tensor<1>>,
        mode: &StatsMode,
        share: Option<&BatchShare<'_>>,
    ) -> Result<Tensor<3>, NormError> {
        let (mut chunks, affine) =
            self.channels_last_chunks(vec![input], rows, offset, mode, share)?;
        let x = chunks.pop().expect("one chunk in, one chunk out");
        Ok(affine.apply(x))
    }

    /// [`forward_channels_last`](Self::forward_channels_last) on an input given in
    /// `chunks` (each `[N_i, P, C]`, the batch's blocks split along the first dimension),
    /// split into its two steps: the statistics over every chunk, then an affine map that
    /// the caller applies chunk by chunk — so that the map, a ReLU and the next layer can run
    /// on one chunk while it is still in the CPU's cache. Returns the chunks to apply the
    /// map to (centred on the batch mean with batch statistics, unchanged with running
    /// statistics) and the map: `affine.apply(chunk)` equals the corresponding part of
    /// `forward_channels_last` on the whole input.
    ///
    /// # Errors
    /// As [`forward_channels_last`](Self::forward_channels_last), for any chunk; and, with
    /// batch statistics, [`NormError::TooFewValues`] when `chunks` is empty.
    pub fn channels_last_chunks(
        &self,
        chunks: Vec<Tensor<3>>,
        rows: &ValidRows,
        offset: Option<Tensor<1>>,
        mode: &StatsMode,
        share: Option<&BatchShare<'_>>,
    ) -> Result<(Vec<Tensor<3>>, ChannelsLastAffine), NormError> {
        let c = self.num_features();
        let mut local_blocks = 0;
        for chunk in &chunks {
            let dims = chunk.dims();
            if dims[2] != c || dims[1] != rows.rows() {
                return Err(NormError::ChannelMismatch {
                    expected: c,
                    shape: dims.to_vec(),
                });
            }
            local_blocks += dims[0];
        }
        let gamma = self.gamma.val();
        // y = valid·(x·s + shift): padding rows come out as exactly 0.
        let affine = |scale: Tensor<1>, shift: Tensor<1>| {
            let column = rows.column.clone();
            ChannelsLastAffine {
                scale: column.clone() * scale.reshape([1, 1, c]),
                shift: column * shift.reshape([1, 1, c]),
            }
        };
        match mode {
            StatsMode::Running => {
                // s = γ / √(σ² + ε), shift = β − (μ − offset)·s.
                let scale = gamma.div(self.running_var.val().add_scalar(self.epsilon).sqrt());
                let mean = match offset {
                    Some(o) => self.running_mean.val() - o,
                    None => self.running_mean.val(),
                };
                let shift = self.beta.val() - mean * scale.clone();
                Ok((chunks, affine(scale, shift)))
            }
            StatsMode::Batch | StatsMode::Train(_) => {
                let blocks = share.map_or(local_blocks, |s| s.total_blocks);
                let values = blocks * rows.count;
                let shape = chunks
                    .first()
                    .map_or_else(|| vec![0, rows.rows(), c], |x| x.dims().to_vec());
                if values < 2 || chunks.is_empty() {
                    return Err(NormError::TooFewValues { values, shape });
                }
                let n = values as f64;
                let total = |partial: Tensor<3>| match share {
                    Some(share) => (share.all_sum)(partial),
                    None => partial,
                };
                let sum_all = |chunks: &[Tensor<3>], square: bool| {
                    chunks
                        .iter()
                        .map(|x| match square {
                            true => rows.sum(x.clone() * x.clone()),
                            false => rows.sum(x.clone()),
                        })
                        .reduce(|a, b| a + b)
                        .expect("at least one chunk")
                };
                let mean = total(sum_all(&chunks, false)).div_scalar(n); // [1, 1, C]
                let centred: Vec<Tensor<3>> =
                    chunks.into_iter().map(|x| x - mean.clone()).collect();
                let variance = total(sum_all(&centred, true)).div_scalar(n).reshape([c]); // biased
                let scale = gamma / variance.clone().add_scalar(self.epsilon).sqrt();
                let records = share.is_none_or(|s| s.records);
                if let (StatsMode::Train(tape), true) = (mode, records) {
                    let mean = mean.reshape([c]);
                    tape.record(Observation {
                        mean_id: self.running_mean.id,
                        var_id: self.running_var.id,
                        momentum: self.momentum,
                        batch_mean: match offset {
                            Some(o) => mean + o,
                            None => mean,
                        }
                        .detach(),
                        batch_var_unbiased: variance.detach().mul_scalar(n / (n - 1.0)),
                    });
                }
                Ok((centred, affine(scale, self.beta.val())))
            }
        }
    }
}

/// The per-channel affine map of a channels-last BatchNorm, `x·scale + shift` with both
/// zero on padding rows (see [`BatchNorm::channels_last_chunks`]).
#[derive(Debug, Clone)]
pub struct ChannelsLastAffine {
    /// `[1, P, C]`.
    scale: Tensor<3>,
    /// `[1, P, C]`.
    shift: Tensor<3>,
}

impl ChannelsLastAffine {
    /// The map applied to blocks `[N, P, C]`.
    pub fn apply(&self, x: Tensor<3>) -> Tensor<3> {
        x * self.scale.clone() + self.shift.clone()
    }
}

#[cfg(test)]
mod tests {
    //! `forward_channels_last` against `forward` on the same values laid out `[N, C, H, W]`.

    use burn::module::Param;
    use burn::tensor::ops::PadMode;
    use burn::tensor::{Device, Tensor, TensorData};

    use super::{BatchNorm, BatchNormConfig, StatsMode, ValidRows};
    use crate::NormError;

    const SHAPE: [usize; 4] = [4, 3, 5, 6];
    /// What the padding rows hold: large, so that counting them anywhere would show.
    const GARBAGE: f32 = 1.0e3;

    /// Channels with means 40, −3, 0.5 and spreads 2, 0.5, 8: a large mean against a small
    /// spread is where a one-pass variance would lose digits.
    fn input(device: &Device) -> Tensor<4> {
        let [n, c, h, w] = SHAPE;
        let (means, spreads) = ([40.0f32, -3.0, 0.5], [2.0f32, 0.5, 8.0]);
        let mut state = 7u64;
        let values: Vec<f32> = (0..n * c * h * w)
            .map(|i| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
                let k = (i / (h * w)) % c;
                means[k] + spreads[k] * (2.0 * unit - 1.0)
            })
            .collect();
        Tensor::from_data(TensorData::new(values, SHAPE), device)
    }

    fn layer(device: &Device) -> BatchNorm {
        let mut layer = BatchNormConfig::new(3).init(device).expect("valid");
        let vector = |v: [f32; 3]| {
            Param::from_tensor(Tensor::from_data(TensorData::new(v.to_vec(), [3]), device))
        };
        layer.gamma = vector([1.5, 0.5, 2.0]);
        layer.beta = vector([0.1, -0.2, 0.3]);
        layer.running_mean = vector([39.0, -2.0, 1.0]).set_require_grad(false);
        layer.running_var = vector([3.0, 0.4, 50.0]).set_require_grad(false);
        layer
    }

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    /// `x` as `[N, (H + 1)(W + 1), C]`, a padding row above and a padding column left of
    /// each image (as RealNVP's rows layout), the padding filled with [`GARBAGE`].
    fn padded(x: Tensor<4>) -> (Tensor<3>, ValidRows) {
        let [n, c, h, w] = x.dims();
        let p = (h + 1) * (w + 1);
        let rows = x
            .permute([0, 2, 3, 1])
            .pad([(0, 0), (1, 0), (1, 0), (0, 0)], PadMode::Constant(GARBAGE))
            .reshape([n, p, c]);
        let valid: Vec<bool> = (0..p).map(|r| r / (w + 1) > 0 && r % (w + 1) > 0).collect();
        (rows, ValidRows::new(&valid, &x_device()))
    }

    fn x_device() -> Device {
        Device::flex()
    }

    /// Value rows back to `[N, C, H, W]`; asserts the padding rows are exactly 0.
    fn unpadded(y: Tensor<3>) -> Tensor<4> {
        let [n, _, c] = y.dims();
        let [_, _, h, w] = SHAPE;
        let y = y.reshape([n, h + 1, w + 1, c]);
        let border = host(y.clone().slice([0..n, 0..1, 0..w + 1, 0..c]))
            .into_iter()
            .chain(host(y.clone().slice([0..n, 0..h + 1, 0..1, 0..c])));
        assert!(
            border.into_iter().all(|v| v == 0.0),
            "padding rows must come out as 0"
        );
        y.slice([0..n, 1..h + 1, 1..w + 1, 0..c])
            .permute([0, 3, 1, 2])
    }

    fn apply(mode: &StatsMode, layer: BatchNorm) -> BatchNorm {
        match mode {
            StatsMode::Train(tape) => tape.apply(layer),
            _ => layer,
        }
    }

    /// The same mode with a fresh tape (a tape records one layer's forward pass).
    fn fresh(mode: &StatsMode) -> StatsMode {
        match mode {
            StatsMode::Train(_) => StatsMode::train(),
            other => other.clone(),
        }
    }

    /// Running mean and variance of `state` equal `expected`'s within 1e-5 (relative above 1).
    fn assert_same_running_stats(mode: &StatsMode, state: &BatchNorm, expected: &BatchNorm) {
        for (a, b) in [
            (state.running_mean.val(), expected.running_mean.val()),
            (state.running_var.val(), expected.running_var.val()),
        ] {
            for (a, b) in host(a).iter().zip(&host(b)) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{mode:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn channels_last_equals_forward_in_every_mode_with_and_without_an_offset() {
        let device = x_device();
        let x = input(&device);
        let offset =
            Tensor::<1>::from_data(TensorData::new(vec![30.0f32, -1.0, 0.25], [3]), &device);
        for mode in [StatsMode::Running, StatsMode::Batch, StatsMode::train()] {
            let reference = layer(&device);
            let expected = host(reference.forward(x.clone(), &mode).expect("forward"));
            let expected_state = apply(&mode, reference);
            for use_offset in [false, true] {
                let mode = fresh(&mode);
                let shifted = if use_offset {
                    x.clone() - offset.clone().reshape([1, 3, 1, 1])
                } else {
                    x.clone()
                };
                let (rows, valid) = padded(shifted);
                let layer = layer(&device);
                let got = host(unpadded(
                    layer
                        .forward_channels_last(
                            rows,
                            &valid,
                            use_offset.then(|| offset.clone()),
                            &mode,
                            None,
                        )
                        .expect("channels last"),
                ));
                // Outputs are O(1); the 40 ± 2 channel alone rounds its input to ±2e-6 of
                // σ, and the two paths sum in other orders.
                for (a, b) in got.iter().zip(&expected) {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "{mode:?}, offset {use_offset}: {a} vs {b}"
                    );
                }
                let state = apply(&mode, layer);
                assert_same_running_stats(&mode, &state, &expected_state);
            }
        }
    }

    #[test]
    fn chunked_statistics_then_the_map_equal_the_whole_input_in_every_mode() {
        let device = x_device();
        let (rows, valid) = padded(input(&device));
        let offset = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, -2.0, 0.5], [3]), &device);
        for mode in [StatsMode::Running, StatsMode::Batch, StatsMode::train()] {
            let whole_layer = layer(&device);
            let whole = host(
                whole_layer
                    .forward_channels_last(rows.clone(), &valid, Some(offset.clone()), &mode, None)
                    .expect("whole"),
            );
            let whole_state = apply(&mode, whole_layer);
            let mode = fresh(&mode);
            let chunked_layer = layer(&device);
            let chunks = vec![rows.clone().narrow(0, 0, 1), rows.clone().narrow(0, 1, 3)];
            let (chunks, map) = chunked_layer
                .channels_last_chunks(chunks, &valid, Some(offset.clone()), &mode, None)
                .expect("chunked");
            let got: Vec<f32> = chunks
                .into_iter()
                .flat_map(|x| host(map.apply(x)))
                .collect();
            assert_eq!(got.len(), whole.len());
            for (a, b) in got.iter().zip(&whole) {
                assert!((a - b).abs() < 1e-5, "{mode:?}: {a} vs {b}");
            }
            let state = apply(&mode, chunked_layer);
            assert_same_running_stats(&mode, &state, &whole_state);
        }
        let err =
            layer(&device).channels_last_chunks(vec![], &valid, None, &StatsMode::Batch, None);
        assert!(matches!(
            err,
            Err(NormError::TooFewValues { values: 0, .. })
        ));
    }

    #[test]
    fn channels_last_rejects_a_wrong_shape_and_too_few_values() {
        let device = x_device();
        let layer = layer(&device);
        let valid = ValidRows::new(&[false, true, false, false, false], &device);
        // Blocks of 5 rows, one of them a value row, in batch-statistics mode.
        let run = |shape: [usize; 3]| {
            layer.forward_channels_last(
                Tensor::zeros(shape, &device),
                &valid,
                None,
                &StatsMode::Batch,
                None,
            )
        };
        assert!(matches!(
            run([1, 5, 4]),
            Err(NormError::ChannelMismatch { expected: 3, .. })
        ));
        assert!(matches!(
            run([1, 6, 3]),
            Err(NormError::ChannelMismatch { .. })
        ));
        assert!(matches!(
            run([1, 5, 3]),
            Err(NormError::TooFewValues { values: 1, .. })
        ));
        assert!(
            run([2, 5, 3]).is_ok(),
            "two blocks of one value row each are two values"
        );
    }
}
