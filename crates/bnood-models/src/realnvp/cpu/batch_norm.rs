//! BatchNorm on a **channels-last** input `[N, P, C]` (e.g. `N` images of `P` rows), where
//! only some of each block's `P` rows hold values and the rest are padding (the zero border
//! that the rows layout keeps around every image). Same parameters and formulas as
//! [`BatchNorm::forward`], which this must equal on the same values laid out `[N, C, H, W]`
//! up to float rounding.
//!
//! Padding rows may hold any finite values: they are left out of the statistics and come
//! out as exactly 0. Statistics are two-pass, as `forward`'s: `μ = Σ valid·x / n`, then
//! `σ² = Σ valid·(x − μ)² / n`, `n` the number of value rows; each block's rows are summed
//! separately, then the blocks, then the shares of the batch (see [`ShareSet`]), which keeps
//! float sums short and independent of the thread count.

use bnood_norm::{BatchNorm, NormError, StatsMode};
use burn::tensor::{Device, Tensor, TensorData};

use super::share::ShareSet;

/// Which rows of each `[P, C]` block hold values and which are padding. The same pattern
/// applies to each of the `N` blocks.
#[derive(Debug, Clone)]
pub(crate) struct ValidRows {
    /// `[1, 1, P]`: 1 on value rows, 0 on padding rows.
    weights: Tensor<3>,
    /// `[1, P, 1]`: the same, as a column.
    column: Tensor<3>,
    /// Value rows per block.
    count: usize,
}

impl ValidRows {
    /// The pattern of one block of `P` rows, `true` for value rows, on `device`.
    pub(crate) fn new(valid: &[bool], device: &Device) -> Self {
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
    pub(crate) fn rows(&self) -> usize {
        self.weights.dims()[2]
    }

    /// `Σ_p valid_p · x[n, p, c]` summed over `n` too: `[1, 1, C]`. A matrix product reads
    /// `x` once and sums each block's `P` rows in its own accumulator.
    fn sum(&self, x: Tensor<3>) -> Tensor<3> {
        self.weights.clone().matmul(x).sum_dim(0)
    }
}

/// Where a channels-last BatchNorm takes its statistics from: the mode, the value rows of a
/// block, and the shares of the batch that this thread holds.
pub(crate) struct Statistics<'a> {
    /// Running or batch statistics (a `Train` tape records the latter).
    pub(crate) mode: &'a StatsMode,
    /// Value and padding rows of every block.
    pub(crate) rows: &'a ValidRows,
    /// This thread's shares of the batch.
    pub(crate) shares: &'a ShareSet<'a>,
}

/// The per-channel affine map of a channels-last BatchNorm, `x·scale + shift` with both
/// zero on padding rows (see [`normalise_chunks`]).
#[derive(Debug, Clone)]
pub(crate) struct ChannelsLastAffine {
    /// `[1, P, C]`.
    scale: Tensor<3>,
    /// `[1, P, C]`.
    shift: Tensor<3>,
}

impl ChannelsLastAffine {
    /// The map applied to blocks `[N, P, C]`.
    pub(crate) fn apply(&self, x: Tensor<3>) -> Tensor<3> {
        x * self.scale.clone() + self.shift.clone()
    }
}

/// What the backward pass needs of one channels-last BatchNorm besides its input chunks:
/// the normalised value of a chunk `x` is `x̂ = (x + shift)·inv_std` per channel.
#[derive(Debug, Clone)]
pub(crate) struct NormStats {
    /// `1/√(σ² + ε)` per channel `[C]`, σ² the batch (biased) or running variance.
    pub(crate) inv_std: Tensor<1>,
    /// `offset − μ_running` `[C]` with running statistics; `None` with batch statistics,
    /// whose chunks come back already centred.
    pub(crate) shift: Option<Tensor<1>>,
    /// Values per channel behind batch statistics (`N·H·W`); 0 with running statistics.
    pub(crate) values: usize,
}

/// The result of [`normalise_chunks`]: the chunks to apply the map to, the map, and the
/// statistics the backward pass needs.
pub(crate) type Normalised = (Vec<Tensor<3>>, ChannelsLastAffine, NormStats);

/// The statistics step of `norm` on an input given in `chunks` (each `[N_i, P, C]`, this
/// thread's blocks of the batch split along the first dimension, in share order), and the
/// affine map that the caller applies chunk by chunk — so that the map, a ReLU and the next
/// layer can run on one chunk while it is still in the CPU's cache. Returns the chunks to
/// apply the map to (centred on the batch mean with batch statistics, unchanged with
/// running statistics) and the map.
///
/// `offset` (`[C]`, optional) is a per-channel constant the caller left out of the input:
/// the layer normalises `input + offset`, e.g. the bias of the convolution before it. With
/// batch statistics the offset cancels (it only moves the batch mean, which
/// [`StatsMode::Train`] records with the offset included); with running statistics it moves
/// the shift. Leaving a convolution's bias to this layer saves a pass over the activations.
///
/// # Errors
/// [`NormError::ChannelMismatch`] when a chunk's last dimension is not `C` or it does not
/// have `P` rows per block; [`NormError::TooFewValues`] when batch statistics would be over
/// fewer than 2 values per channel or `chunks` is empty.
pub(crate) fn normalise_chunks(
    norm: &BatchNorm,
    chunks: Vec<Tensor<3>>,
    offset: Option<Tensor<1>>,
    stats: &Statistics<'_>,
) -> Result<Normalised, NormError> {
    let (rows, c) = (stats.rows, norm.num_features());
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
    let gamma = norm.gamma.val();
    // y = valid·(x·s + shift): padding rows come out as exactly 0.
    let affine = |scale: Tensor<1>, shift: Tensor<1>| {
        let column = rows.column.clone();
        ChannelsLastAffine {
            scale: column.clone() * scale.reshape([1, 1, c]),
            shift: column * shift.reshape([1, 1, c]),
        }
    };
    match stats.mode {
        StatsMode::Running => {
            // s = γ / √(σ² + ε), shift = β − (μ − offset)·s.
            let std = norm.running_var.val().add_scalar(norm.epsilon).sqrt();
            let scale = gamma.div(std.clone());
            let inv_std = std.recip();
            let mean = match offset {
                Some(o) => norm.running_mean.val() - o,
                None => norm.running_mean.val(),
            };
            let shift = norm.beta.val() - mean.clone() * scale.clone();
            let stats = NormStats {
                inv_std,
                shift: Some(mean.neg()),
                values: 0,
            };
            Ok((chunks, affine(scale, shift), stats))
        }
        StatsMode::Batch | StatsMode::Train(_) => {
            let values = stats.shares.total_blocks(local_blocks) * rows.count;
            let shape = chunks
                .first()
                .map_or_else(|| vec![0, rows.rows(), c], |x| x.dims().to_vec());
            if values < 2 || chunks.is_empty() {
                return Err(NormError::TooFewValues { values, shape });
            }
            let n = values as f64;
            let batch_sum = |chunks: &[Tensor<3>], square: bool| {
                let partials = chunks
                    .iter()
                    .map(|x| match square {
                        true => rows.sum(x.clone() * x.clone()),
                        false => rows.sum(x.clone()),
                    })
                    .collect();
                stats.shares.batch_sum(partials)
            };
            let mean = batch_sum(&chunks, false).div_scalar(n); // [1, 1, C]
            let centred: Vec<Tensor<3>> = chunks.into_iter().map(|x| x - mean.clone()).collect();
            let variance = batch_sum(&centred, true).div_scalar(n).reshape([c]); // biased
            let std = variance.clone().add_scalar(norm.epsilon).sqrt();
            let scale = gamma / std.clone();
            let inv_std = std.recip();
            if let (StatsMode::Train(tape), true) = (stats.mode, stats.shares.records()) {
                let mean = mean.reshape([c]);
                let mean = match offset {
                    Some(o) => mean + o,
                    None => mean,
                };
                tape.record(norm, mean, variance, values)?;
            }
            let stats = NormStats {
                inv_std,
                shift: None,
                values,
            };
            Ok((centred, affine(scale, norm.beta.val()), stats))
        }
    }
}

/// The backward pass of [`normalise_chunks`] followed by its map: from the gradient `g_y`
/// of the map's output (groups `[1, rows, C]` of this thread, 0 on padding rows) and the
/// chunks `input` the map was applied to, the gradients of the layer's input (groups, 0 on
/// padding rows), of γ and of β (`[C]` each, batch-wide).
///
/// With `x̂ = (x + shift)·inv_std`: `∂γ = Σ g_y·x̂`, `∂β = Σ g_y`, over the pixel rows of the
/// whole batch. With batch statistics the input's gradient runs through the mean and the
/// variance too: `∂x = γ·inv_std·(g_y − ∂β/n − x̂·∂γ/n)`; with running statistics it is
/// `γ·inv_std·g_y`.
pub(crate) fn norm_backward(
    rows: &ValidRows,
    input: &[Tensor<3>],
    gamma: &Tensor<1>,
    stats: &NormStats,
    g_y: Vec<Tensor<3>>,
    shares: &ShareSet<'_>,
) -> (Vec<Tensor<3>>, Tensor<1>, Tensor<1>) {
    let p = rows.rows();
    let c = gamma.dims()[0];
    let as_blocks = |g: Tensor<3>| {
        let [groups, r, c] = g.dims();
        g.reshape([groups * r / p, p, c])
    };
    let g_y: Vec<Tensor<3>> = g_y.into_iter().map(as_blocks).collect();
    // Σ g_y and Σ g_y·x per chunk, side by side, added over the batch in one round.
    let partials = g_y
        .iter()
        .zip(input)
        .map(|(g, x)| {
            Tensor::cat(
                vec![rows.sum(g.clone()), rows.sum(g.clone() * x.clone())],
                2,
            )
        })
        .collect();
    let sums = shares.batch_sum(partials).reshape([2 * c]);
    let sum_g = sums.clone().narrow(0, 0, c);
    let sum_gx = sums.narrow(0, c, c);
    let inv_std = stats.inv_std.clone();
    // ∂x = k1·g_y (− the statistics' terms with batch statistics), k1 = γ·inv_std.
    let k1 = gamma.clone() * inv_std.clone();
    let channel = |t: Tensor<1>| t.reshape([1, 1, c]);
    let back = |g: Tensor<3>| {
        let [blocks, p, c] = g.dims();
        g.reshape([1, blocks * p, c])
    };
    match &stats.shift {
        Some(shift) => {
            // Running statistics: x̂ = (x + shift)·inv_std.
            let d_gamma = inv_std * (sum_gx + shift.clone() * sum_g.clone());
            let k1 = channel(k1);
            let g_x = g_y.into_iter().map(|g| back(g * k1.clone())).collect();
            (g_x, d_gamma, sum_g)
        }
        None => {
            // Batch statistics, x centred: x̂ = x·inv_std.
            let n = stats.values as f64;
            let d_gamma = inv_std.clone() * sum_gx;
            let k2 = channel((k1.clone() * sum_g.clone()).div_scalar(n));
            let k3 = channel((k1.clone() * inv_std * d_gamma.clone()).div_scalar(n));
            let k1 = channel(k1);
            // Masked like the map, so that padding rows get exactly 0.
            let (a, b) = (rows.column.clone() * k3, rows.column.clone() * k2);
            let g_x = g_y
                .into_iter()
                .zip(input)
                .map(|(g, x)| back(g * k1.clone() - (x.clone() * a.clone() + b.clone())))
                .collect();
            (g_x, d_gamma, sum_g)
        }
    }
}

#[cfg(test)]
mod tests {
    //! The channels-last BatchNorm against `BatchNorm::forward` on the same values laid out
    //! `[N, C, H, W]`.

    use bnood_norm::{BatchNorm, BatchNormConfig, NormError, StatsMode};
    use burn::module::Param;
    use burn::tensor::ops::PadMode;
    use burn::tensor::{Device, Tensor, TensorData};

    use super::{ShareSet, Statistics, ValidRows, normalise_chunks};

    const SHAPE: [usize; 4] = [4, 3, 5, 6];
    /// What the padding rows hold: large, so that counting them anywhere would show.
    const GARBAGE: f32 = 1.0e3;

    /// The whole-input form: statistics over `input` `[N, P, C]` as one chunk and one
    /// share, then the map.
    fn forward_channels_last(
        layer: &BatchNorm,
        input: Tensor<3>,
        rows: &ValidRows,
        offset: Option<Tensor<1>>,
        mode: &StatsMode,
    ) -> Result<Tensor<3>, NormError> {
        let shares = ShareSet::all(vec![1]);
        let stats = Statistics {
            mode,
            rows,
            shares: &shares,
        };
        let (mut chunks, affine, _) = normalise_chunks(layer, vec![input], offset, &stats)?;
        let x = chunks.pop().expect("one chunk in, one chunk out");
        Ok(affine.apply(x))
    }

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
                    forward_channels_last(
                        &layer,
                        rows,
                        &valid,
                        use_offset.then(|| offset.clone()),
                        &mode,
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
                forward_channels_last(
                    &whole_layer,
                    rows.clone(),
                    &valid,
                    Some(offset.clone()),
                    &mode,
                )
                .expect("whole"),
            );
            let whole_state = apply(&mode, whole_layer);
            let mode = fresh(&mode);
            let chunked_layer = layer(&device);
            let chunks = vec![rows.clone().narrow(0, 0, 1), rows.clone().narrow(0, 1, 3)];
            let shares = ShareSet::all(vec![2]);
            let stats = Statistics {
                mode: &mode,
                rows: &valid,
                shares: &shares,
            };
            let (chunks, map, _) =
                normalise_chunks(&chunked_layer, chunks, Some(offset.clone()), &stats)
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
        let shares = ShareSet::all(vec![]);
        let stats = Statistics {
            mode: &StatsMode::Batch,
            rows: &valid,
            shares: &shares,
        };
        let err = normalise_chunks(&layer(&device), vec![], None, &stats);
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
            forward_channels_last(
                &layer,
                Tensor::zeros(shape, &device),
                &valid,
                None,
                &StatsMode::Batch,
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
