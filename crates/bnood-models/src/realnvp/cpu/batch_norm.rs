//! Kernels that evaluate `bnood-norm`'s [`BatchNorm`] layers (not a BatchNorm of their own:
//! the parameters, running state and modes are that crate's; see its "Where BatchNorm
//! lives") on a **channels-last** input `[N, P, C]` (e.g. `N` images of `P` rows), where
//! only some of each block's `P` rows hold values and the rest are padding (the zero border
//! that the rows layout keeps around every image). Same parameters and formulas as
//! [`BatchNorm::forward`], which this must equal on the same values laid out `[N, C, H, W]`
//! up to float rounding.
//!
//! Padding rows may hold any finite values: they are left out of the statistics and come
//! out as exactly 0. Statistics are two-pass, as `forward`'s: `μ = Σ valid·x / n`, then
//! `σ² = Σ valid·(x − μ)² / n`, `n` the number of value rows; each block's rows are summed
//! separately, then the blocks, then the shares of the batch (see [`ShareSet`]), which keeps
//! float sums short and independent of the thread count. Sums are f32 like burn's own
//! BatchNorm: f64 sums moved the results further from it, not closer (docs/performance.md).
//!
//! On flex every pass over the activations — the statistics' sums, the map with its ReLU,
//! and the backward pass with the ReLU's mask — is one loop over the tensors' buffers
//! ([`kernels`]), compiled for the CPU's vector width; other CPU backends (ndarray) run the
//! same formulas as burn operations.

use bnood_norm::{BatchNorm, NormError, StatsMode};
use burn::tensor::activation::relu;
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
    /// The same on the host, `P` entries.
    valid: Vec<bool>,
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
            valid: valid.to_vec(),
            count: valid.iter().filter(|&&v| v).count(),
        }
    }

    /// Rows per block, `P`.
    pub(crate) fn rows(&self) -> usize {
        self.valid.len()
    }

    /// `Σ_p valid_p · x[n, p, c]` summed over `n` too: `[1, 1, C]`. A matrix product reads
    /// `x` once and sums each block's `P` rows in its own accumulator.
    fn sum(&self, x: Tensor<3>) -> Tensor<3> {
        self.weights.clone().matmul(x).sum_dim(0)
    }

    /// `Σ valid·(x + centre)` (or its square) per channel over the blocks `x` `[N, P, C]`:
    /// `[1, 1, C]`.
    fn centred_sum(&self, x: &Tensor<3>, centre: &[f32], square: bool) -> Tensor<3> {
        let c = centre.len();
        #[cfg(feature = "flex")]
        if let Some(sums) =
            kernels::with_values(x, |x| kernels::centred_sums(x, &self.valid, centre, square))
                .flatten()
        {
            return host_tensor(sums, [1, 1, c], x);
        }
        let d = x.clone() + host_tensor(centre.to_vec(), [1, 1, c], x);
        match square {
            true => self.sum(d.clone() * d),
            false => self.sum(d),
        }
    }
}

/// `values` as a tensor of `shape` on `like`'s device.
fn host_tensor<const D: usize, const E: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    like: &Tensor<E>,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), &like.device())
}

/// A `[C]` tensor's values on the host.
fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
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

/// The per-channel affine map of a channels-last BatchNorm,
/// `y = valid·((x + centre)·scale + shift)`: exactly 0 on padding rows (see
/// [`normalise_chunks`]). Each vector holds `C` values.
#[derive(Debug, Clone)]
pub(crate) struct ChannelsLastAffine {
    centre: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    rows: ValidRows,
}

impl ChannelsLastAffine {
    /// The map applied to blocks `[N, P, C]`.
    #[cfg(test)]
    pub(crate) fn apply(&self, x: Tensor<3>) -> Tensor<3> {
        self.apply_ops(x)
    }

    /// The map as burn operations.
    fn apply_ops(&self, x: Tensor<3>) -> Tensor<3> {
        let c = self.centre.len();
        let channel = |v: &[f32]| host_tensor(v.to_vec(), [1, 1, c], &x);
        let column = self.rows.column.clone();
        let (centre, scale, shift) = (
            channel(&self.centre),
            column.clone() * channel(&self.scale),
            column * channel(&self.shift),
        );
        (x + centre) * scale + shift
    }

    /// `ReLU(map(x))` on blocks `[N, P, C]`, as groups of `group` rows (a whole number of
    /// blocks) with `guard` zero rows before and after each: `[G, guard + group + guard, C]`.
    /// One pass on flex.
    pub(crate) fn activate_guarded(&self, x: Tensor<3>, group: usize, guard: usize) -> Tensor<3> {
        let [n, p, c] = x.dims();
        let groups = n * p / group.max(1);
        #[cfg(feature = "flex")]
        {
            let map = [&self.centre[..], &self.scale, &self.shift];
            if let Some(y) = kernels::with_values(&x, |v| {
                kernels::activate(v, &self.rows.valid, map, [group, guard])
            })
            .flatten()
            {
                return host_tensor(y, [groups, group + 2 * guard, c], &x);
            }
        }
        let y = relu(self.apply_ops(x)).reshape([groups, group, c]);
        let zeros = Tensor::<3>::zeros([groups, guard, c], &y.device());
        Tensor::cat(vec![zeros.clone(), y, zeros], 1)
    }
}

/// What the backward pass needs of one channels-last BatchNorm besides its input chunks:
/// the normalised value of a chunk `x` is `x̂ = (x + centre)·inv_std` per channel.
///
/// With batch statistics the map adds the centre to `x` first (`x − μ`, as a two-pass
/// variance does) and the backward pass takes its sums of the same `x + centre`; with
/// running statistics the map is `x·scale + shift` and the backward pass sums `x` and adds
/// the centre's part afterwards: the same arithmetic as burn operations on the centred
/// (batch) or raw (running) input.
#[derive(Debug, Clone)]
pub(crate) struct NormStats {
    /// `1/√(σ² + ε)` per channel `[C]`, σ² the batch (biased) or running variance.
    pub(crate) inv_std: Vec<f32>,
    /// `−μ` `[C]` with batch statistics (μ the batch mean of the input as given, without
    /// the offset), `offset − μ_running` with running statistics.
    pub(crate) centre: Vec<f32>,
    /// Values per channel behind batch statistics (`N·H·W`); `None` with running
    /// statistics.
    pub(crate) values: Option<usize>,
}

/// The result of [`normalise_chunks`]: the map to apply to the chunks, and the statistics
/// the backward pass needs.
pub(crate) type Normalised = (ChannelsLastAffine, NormStats);

/// The statistics step of `norm` on an input given in `chunks` (each `[N_i, P, C]`, this
/// thread's blocks of the batch split along the first dimension, in share order), and the
/// affine map that the caller applies chunk by chunk
/// ([`ChannelsLastAffine::activate_guarded`]), so that the map, a ReLU and the next layer
/// can run on one chunk while it is still in the CPU's cache.
///
/// `offset` (`[C]`, optional) is a per-channel constant the caller left out of the input:
/// the layer normalises `input + offset`, e.g. the bias of the convolution before it. With
/// batch statistics the offset cancels (it only moves the batch mean, which
/// [`StatsMode::Train`] records with the offset included); with running statistics it moves
/// the centre. Leaving a convolution's bias to this layer saves a pass over the activations.
///
/// # Errors
/// [`NormError::ChannelMismatch`] when a chunk's last dimension is not `C` or it does not
/// have `P` rows per block; [`NormError::TooFewValues`] when batch statistics would be over
/// fewer than 2 values per channel or `chunks` is empty.
pub(crate) fn normalise_chunks(
    norm: &BatchNorm,
    chunks: &[Tensor<3>],
    offset: Option<Tensor<1>>,
    stats: &Statistics<'_>,
) -> Result<Normalised, NormError> {
    let (rows, c) = (stats.rows, norm.num_features());
    let mut local_blocks = 0;
    for chunk in chunks {
        let dims = chunk.dims();
        if dims[2] != c || dims[1] != rows.rows() {
            return Err(NormError::ChannelMismatch {
                expected: c,
                shape: dims.to_vec(),
            });
        }
        local_blocks += dims[0];
    }
    let gamma = host(norm.gamma.val());
    let offset = offset.map(host);
    let map = |centre: Vec<f32>, scale: Vec<f32>, shift: Vec<f32>| ChannelsLastAffine {
        centre,
        scale,
        shift,
        rows: rows.clone(),
    };
    // std = √(σ² + ε); scale = γ / std; inv_std = 1 / std.
    let scales = |variance: &[f32]| -> (Vec<f32>, Vec<f32>) {
        let eps = norm.epsilon as f32;
        let std: Vec<f32> = variance.iter().map(|v| (v + eps).sqrt()).collect();
        let scale = gamma.iter().zip(&std).map(|(g, s)| g / s).collect();
        (scale, std.iter().map(|s| s.recip()).collect())
    };
    match stats.mode {
        StatsMode::Running => {
            // shift = β − (μ − offset)·scale.
            let (scale, inv_std) = scales(&host(norm.running_var.val()));
            let mean: Vec<f32> = match &offset {
                Some(o) => host(norm.running_mean.val())
                    .iter()
                    .zip(o)
                    .map(|(m, o)| m - o)
                    .collect(),
                None => host(norm.running_mean.val()),
            };
            let shift = host(norm.beta.val())
                .iter()
                .zip(&mean)
                .zip(&scale)
                .map(|((b, m), s)| b - m * s)
                .collect();
            let stats = NormStats {
                inv_std,
                centre: mean.iter().map(|m| -m).collect(),
                values: None,
            };
            Ok((map(vec![0.0; c], scale, shift), stats))
        }
        StatsMode::Batch | StatsMode::Train(_) => {
            let values = stats.shares.total_blocks(local_blocks) * rows.count;
            if values < 2 || chunks.is_empty() {
                let shape = chunks
                    .first()
                    .map_or_else(|| vec![0, rows.rows(), c], |x| x.dims().to_vec());
                return Err(NormError::TooFewValues { values, shape });
            }
            let n = values as f32;
            let batch_sum = |centre: &[f32], square: bool| -> Vec<f32> {
                let partials = chunks
                    .iter()
                    .map(|x| rows.centred_sum(x, centre, square))
                    .collect();
                let sum = stats.shares.batch_sum(partials).reshape([c]);
                host(sum).into_iter().map(|s| s / n).collect()
            };
            let mean = batch_sum(&vec![0.0; c], false);
            let centre: Vec<f32> = mean.iter().map(|m| -m).collect();
            let variance = batch_sum(&centre, true); // biased
            let (scale, inv_std) = scales(&variance);
            if let (StatsMode::Train(tape), true) = (stats.mode, stats.shares.records()) {
                let mean: Vec<f32> = match &offset {
                    Some(o) => mean.iter().zip(o).map(|(m, o)| m + o).collect(),
                    None => mean,
                };
                let like = norm.gamma.val();
                let (mean, variance) = (
                    host_tensor(mean, [c], &like),
                    host_tensor(variance, [c], &like),
                );
                tape.record(norm, mean, variance, values)?;
            }
            let stats = NormStats {
                inv_std,
                centre: centre.clone(),
                values: Some(values),
            };
            Ok((map(centre, scale, host(norm.beta.val())), stats))
        }
    }
}

/// The backward pass of a ReLU after [`normalise_chunks`]' map: from the gradient `g_a`
/// of the ReLU's output (groups `[1, rows, C]` of this thread), the activations `acts` it
/// produced (the same groups) and the chunks `input` the map was applied to, the gradients
/// of the layer's input (groups, 0 on padding rows), of γ and of β (`[C]` each,
/// batch-wide).
///
/// With `g_y = g_a·1{act > 0}` and `x̂ = (x + centre)·inv_std`: `∂γ = Σ g_y·x̂`,
/// `∂β = Σ g_y`, over the value rows of the whole batch. With batch statistics the input's
/// gradient runs through the mean and the variance too:
/// `∂x = γ·inv_std·(g_y − ∂β/n − x̂·∂γ/n)`; with running statistics it is `γ·inv_std·g_y`.
pub(crate) fn norm_relu_backward(
    rows: &ValidRows,
    input: &[Tensor<3>],
    acts: &[Tensor<3>],
    gamma: &Tensor<1>,
    stats: &NormStats,
    g_a: Vec<Tensor<3>>,
    shares: &ShareSet<'_>,
) -> (Vec<Tensor<3>>, Tensor<1>, Tensor<1>) {
    let c = stats.centre.len();
    // What the sums add to x (see `NormStats`): the centre with batch statistics.
    let zeros = vec![0.0; c];
    let inner = match stats.values {
        Some(_) => &stats.centre,
        None => &zeros,
    };
    // Σ g_y and Σ g_y·(x + inner) per chunk, side by side, added over the batch in one round.
    let partials = g_a
        .iter()
        .zip(acts)
        .zip(input)
        .map(|((g, act), x)| gradient_sums(rows, g, act, x, inner))
        .collect();
    let sums = host(shares.batch_sum(partials).reshape([2 * c]));
    let (sum_g, sum_gx) = sums.split_at(c);
    let inv_std = &stats.inv_std;
    // ∂x = k1·g_y (− (x + centre)·k3 − k2 with batch statistics), k1 = γ·inv_std.
    let k1: Vec<f32> = host(gamma.clone())
        .iter()
        .zip(inv_std)
        .map(|(g, s)| g * s)
        .collect();
    let d_gamma: Vec<f32> = match stats.values {
        Some(_) => (0..c).map(|i| inv_std[i] * sum_gx[i]).collect(),
        None => (0..c)
            .map(|i| inv_std[i] * (sum_gx[i] + stats.centre[i] * sum_g[i]))
            .collect(),
    };
    let terms = stats.values.map(|n| {
        let n = n as f32;
        let k2: Vec<f32> = k1.iter().zip(sum_g).map(|(k, s)| k * s / n).collect();
        let k3: Vec<f32> = (0..c)
            .map(|i| k1[i] * inv_std[i] * d_gamma[i] / n)
            .collect();
        (k3, k2)
    });
    let g_x = g_a
        .into_iter()
        .zip(acts)
        .zip(input)
        .map(|((g, act), x)| input_gradient(rows, g, act, x, &stats.centre, &k1, terms.as_ref()))
        .collect();
    (
        g_x,
        host_tensor(d_gamma, [c], gamma),
        host_tensor(sum_g.to_vec(), [c], gamma),
    )
}

/// One chunk's `[Σ g_y, Σ g_y·(x + centre)]` over its value rows, `[1, 1, 2·C]`
/// (see [`norm_relu_backward`]).
fn gradient_sums(
    rows: &ValidRows,
    g_a: &Tensor<3>,
    act: &Tensor<3>,
    x: &Tensor<3>,
    centre: &[f32],
) -> Tensor<3> {
    let c = centre.len();
    #[cfg(feature = "flex")]
    if let Some(sums) = kernels::with_three_values([g_a, act, x], |[g, a, x]| {
        kernels::gradient_sums(g, a, x, &rows.valid, centre)
    }) {
        return host_tensor(sums, [1, 1, 2 * c], x);
    }
    let p = rows.rows();
    let g = as_blocks(relu_backward(g_a.clone(), act), p);
    let d = x.clone() + host_tensor(centre.to_vec(), [1, 1, c], x);
    Tensor::cat(vec![rows.sum(g.clone()), rows.sum(g * d)], 2)
}

/// One chunk's input gradient (see [`norm_relu_backward`]) as a group `[1, rows, C]`:
/// `k1·g_y`, minus `(x + centre)·k3 + k2` on value rows when `terms` = `(k3, k2)` is given
/// (batch statistics); exactly 0 on padding rows.
fn input_gradient(
    rows: &ValidRows,
    g_a: Tensor<3>,
    act: &Tensor<3>,
    x: &Tensor<3>,
    centre: &[f32],
    k1: &[f32],
    terms: Option<&(Vec<f32>, Vec<f32>)>,
) -> Tensor<3> {
    let c = centre.len();
    let [_, total, _] = g_a.dims();
    #[cfg(feature = "flex")]
    if let Some(out) = kernels::with_three_values([&g_a, act, x], |[g, a, x]| {
        let terms = terms.map(|(k3, k2)| [k3.as_slice(), k2.as_slice()]);
        kernels::input_gradient(g, a, x, &rows.valid, [centre, k1], terms)
    }) {
        return host_tensor(out, [1, total, c], x);
    }
    let p = rows.rows();
    let channel = |v: &[f32]| host_tensor(v.to_vec(), [1, 1, c], x);
    let g = as_blocks(relu_backward(g_a, act), p) * channel(k1);
    let g = match terms {
        // Masked like the map, so that padding rows get exactly 0.
        Some((k3, k2)) => {
            let d = x.clone() + channel(centre);
            let column = rows.column.clone();
            g - (d * (column.clone() * channel(k3)) + column * channel(k2))
        }
        None => g,
    };
    g.reshape([1, total, c])
}

/// Groups `[G, rows, C]` as blocks `[·, P, C]`.
fn as_blocks(g: Tensor<3>, p: usize) -> Tensor<3> {
    let [groups, r, c] = g.dims();
    g.reshape([groups * r / p, p, c])
}

/// ReLU's gradient: `g` where `act > 0`, 0 elsewhere (the backend's fused operation).
fn relu_backward(g: Tensor<3>, act: &Tensor<3>) -> Tensor<3> {
    use burn::backend::Dispatch;
    use burn::backend::ops::ActivationOps;
    Tensor::from_dispatch(<Dispatch as ActivationOps<Dispatch>>::relu_backward(
        act.clone().into_dispatch(),
        g.into_dispatch(),
    ))
}

/// The passes of this module as loops over flex buffers, compiled for the CPU's vector
/// width ([`pulp`]). Channels-last values: `x[r·C + c]`, row `r` a value row when
/// `valid[r mod P]`.
#[cfg(feature = "flex")]
mod kernels {
    use burn::backend::Flex;
    use burn::tensor::Tensor;

    /// `f` on a flex tensor's contiguous `f32` values; `None` for other backends and
    /// strided views.
    pub(super) fn with_values<const D: usize, R>(
        t: &Tensor<D>,
        f: impl FnOnce(&[f32]) -> R,
    ) -> Option<R> {
        let primitive = t.clone().try_into_primitive::<Flex>().ok()?;
        let values: &[f32] = primitive.as_slice()?;
        Some(f(values))
    }

    /// `f` on three flex tensors' contiguous `f32` values (see [`with_values`]); `None`
    /// when one of them has none or `f` gives none.
    pub(super) fn with_three_values<R>(
        [a, b, c]: [&Tensor<3>; 3],
        f: impl FnOnce([&[f32]; 3]) -> Option<R>,
    ) -> Option<R> {
        with_values(a, |a| with_values(b, |b| with_values(c, |c| f([a, b, c]))))
            .flatten()
            .flatten()
            .flatten()
    }

    /// `(value row?, row)` for every row of `x` (rows of `c` values).
    #[inline(always)]
    fn rows<'a>(
        x: &'a [f32],
        valid: &'a [bool],
        c: usize,
    ) -> impl Iterator<Item = (bool, &'a [f32])> + 'a {
        valid.iter().copied().cycle().zip(x.chunks_exact(c))
    }

    /// Whether the three buffers are the same number of whole blocks of `p` rows of `c`
    /// values.
    fn same_blocks(buffers: [&[f32]; 3], p: usize, c: usize) -> bool {
        let len = buffers[0].len();
        c > 0 && len.is_multiple_of(p * c) && buffers.iter().all(|b| b.len() == len)
    }

    /// Whether the ReLU whose output is `act` blocks its gradient: `act ≤ 0`, so that a NaN
    /// output passes it (as burn's `relu_backward`).
    #[inline(always)]
    fn shut(act: f32) -> bool {
        act <= 0.0
    }

    /// `total += part`, element-wise.
    #[inline(always)]
    fn add(total: &mut [f32], part: &[f32]) {
        for (t, p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }

    // Each kernel below checks its buffers, then runs its loop (an `#[inline(always)]`
    // function) from the `with_simd` of a `WithSimd` type, which pulp compiles per CPU
    // kind: a closure given to pulp is not inlined there, and its loops ran on 4-wide SSE
    // vectors only.

    /// [`centred_sums_loop`]'s arguments.
    struct CentredSums<'a>(&'a [f32], &'a [bool], &'a [f32], bool);

    impl pulp::WithSimd for CentredSums<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<f32> {
            centred_sums_loop(self.0, self.1, self.2, self.3)
        }
    }

    /// [`activate_loop`]'s arguments.
    struct Activate<'a>(&'a [f32], &'a [bool], [&'a [f32]; 3], [usize; 2]);

    impl pulp::WithSimd for Activate<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<f32> {
            activate_loop(self.0, self.1, self.2, self.3)
        }
    }

    /// [`gradient_sums_loop`]'s arguments.
    struct GradientSums<'a>([&'a [f32]; 3], &'a [bool], &'a [f32]);

    impl pulp::WithSimd for GradientSums<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<f32> {
            gradient_sums_loop(self.0, self.1, self.2)
        }
    }

    /// [`input_gradient_loop`]'s arguments.
    struct InputGradient<'a>(
        [&'a [f32]; 3],
        &'a [bool],
        [&'a [f32]; 2],
        Option<[&'a [f32]; 2]>,
    );

    impl pulp::WithSimd for InputGradient<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<f32> {
            input_gradient_loop(self.0, self.1, self.2, self.3)
        }
    }

    /// `Σ valid·(x + centre)` per channel, or of its square; `None` when `x` is not whole
    /// blocks. Each block's rows are added in order, then the blocks (in f32, as a matrix
    /// product over the rows would).
    pub(super) fn centred_sums(
        x: &[f32],
        valid: &[bool],
        centre: &[f32],
        square: bool,
    ) -> Option<Vec<f32>> {
        same_blocks([x, x, x], valid.len(), centre.len())
            .then(|| pulp::Arch::new().dispatch(CentredSums(x, valid, centre, square)))
    }

    #[inline(always)]
    fn centred_sums_loop(x: &[f32], valid: &[bool], centre: &[f32], square: bool) -> Vec<f32> {
        let c = centre.len();
        let mut total = vec![0.0_f32; c];
        let mut sum = vec![0.0_f32; c];
        for block in x.chunks_exact(valid.len() * c) {
            sum.fill(0.0);
            for (_, row) in rows(block, valid, c).filter(|(v, _)| *v) {
                for ((s, &x), &m) in sum.iter_mut().zip(row).zip(centre) {
                    let d = x + m;
                    *s += if square { d * d } else { d };
                }
            }
            add(&mut total, &sum);
        }
        total
    }

    /// `valid·max(0, (x + centre)·scale + shift)`, `map = [centre, scale, shift]`, in
    /// groups of `layout = [group, guard]` rows with `guard` zero rows before and after
    /// each; `None` unless `x` is whole groups of whole blocks.
    pub(super) fn activate(
        x: &[f32],
        valid: &[bool],
        map: [&[f32]; 3],
        layout: [usize; 2],
    ) -> Option<Vec<f32>> {
        let c = map[0].len();
        let group = layout[0];
        let fits = same_blocks([x, x, x], valid.len(), c)
            && map.iter().all(|m| m.len() == c)
            && group > 0
            && group.is_multiple_of(valid.len())
            && x.len().is_multiple_of(group * c);
        fits.then(|| pulp::Arch::new().dispatch(Activate(x, valid, map, layout)))
    }

    /// `ReLU((x + centre)·scale + shift)` of one value row into `out`.
    #[inline(always)]
    fn activate_row(x: &[f32], map: [&[f32]; 3], out: &mut [f32]) {
        let [centre, scale, shift] = map;
        let map = centre.iter().zip(scale).zip(shift);
        for ((o, &x), ((&m, &s), &t)) in out.iter_mut().zip(x).zip(map) {
            let y = (x + m) * s + t;
            // A NaN stays NaN, as burn's ReLU keeps it (one comparison, which vectorises).
            *o = if y <= 0.0 { 0.0 } else { y };
        }
    }

    #[inline(always)]
    fn activate_loop(x: &[f32], valid: &[bool], map: [&[f32]; 3], layout: [usize; 2]) -> Vec<f32> {
        let c = map[0].len();
        let [group, guard] = layout;
        let groups = x.len() / (group * c);
        // Row by row into a buffer that is not zero-filled first.
        let mut out = Vec::with_capacity(x.len() + 2 * groups * guard * c);
        let (mut row, blank) = (vec![0.0_f32; c], vec![0.0_f32; c]);
        let guard_rows = vec![0.0_f32; guard * c];
        for x in x.chunks_exact(group * c) {
            out.extend_from_slice(&guard_rows);
            for (v, x) in rows(x, valid, c) {
                if v {
                    activate_row(x, map, &mut row);
                    out.extend_from_slice(&row);
                } else {
                    out.extend_from_slice(&blank);
                }
            }
            out.extend_from_slice(&guard_rows);
        }
        out
    }

    /// `[Σ g_y, Σ g_y·(x + centre)]` over value rows, `g_y = g·1{act > 0}`, summed as in
    /// [`centred_sums`]; `None` unless the three are the same whole blocks.
    pub(super) fn gradient_sums(
        g: &[f32],
        act: &[f32],
        x: &[f32],
        valid: &[bool],
        centre: &[f32],
    ) -> Option<Vec<f32>> {
        same_blocks([g, act, x], valid.len(), centre.len())
            .then(|| pulp::Arch::new().dispatch(GradientSums([g, act, x], valid, centre)))
    }

    #[inline(always)]
    fn gradient_sums_loop(buffers: [&[f32]; 3], valid: &[bool], centre: &[f32]) -> Vec<f32> {
        let [g, act, x] = buffers;
        let c = centre.len();
        let block = valid.len() * c;
        let mut total = vec![0.0_f32; 2 * c];
        let (mut sum_g, mut sum_gx) = (vec![0.0_f32; c], vec![0.0_f32; c]);
        let blocks = x.chunks_exact(block).zip(g.chunks_exact(block));
        for ((x, g), act) in blocks.zip(act.chunks_exact(block)) {
            sum_g.fill(0.0);
            sum_gx.fill(0.0);
            let lines = rows(x, valid, c)
                .zip(g.chunks_exact(c))
                .zip(act.chunks_exact(c));
            for (((v, x), g), a) in lines {
                if !v {
                    continue;
                }
                let sums = sum_g.iter_mut().zip(sum_gx.iter_mut());
                let values = x.iter().zip(g).zip(a).zip(centre);
                for ((sg, sgx), (((&x, &g), &a), &m)) in sums.zip(values) {
                    let g = if shut(a) { 0.0 } else { g };
                    *sg += g;
                    *sgx += g * (x + m);
                }
            }
            let (total_g, total_gx) = total.split_at_mut(c);
            add(total_g, &sum_g);
            add(total_gx, &sum_gx);
        }
        total
    }

    /// `valid·(k1·g_y − ((x + centre)·k3 + k2))` (the bracket only with `terms` =
    /// `[k3, k2]`), `g_y = g·1{act > 0}`, `coefficients = [centre, k1]`; `None` unless the
    /// three are the same whole blocks.
    pub(super) fn input_gradient(
        g: &[f32],
        act: &[f32],
        x: &[f32],
        valid: &[bool],
        coefficients: [&[f32]; 2],
        terms: Option<[&[f32]; 2]>,
    ) -> Option<Vec<f32>> {
        let c = coefficients[0].len();
        let fits = same_blocks([g, act, x], valid.len(), c)
            && coefficients[1].len() == c
            && terms.is_none_or(|t| t.iter().all(|k| k.len() == c));
        fits.then(|| {
            pulp::Arch::new().dispatch(InputGradient([g, act, x], valid, coefficients, terms))
        })
    }

    #[inline(always)]
    fn input_gradient_loop(
        buffers: [&[f32]; 3],
        valid: &[bool],
        coefficients: [&[f32]; 2],
        terms: Option<[&[f32]; 2]>,
    ) -> Vec<f32> {
        let [g, act, x] = buffers;
        let [centre, k1] = coefficients;
        let c = centre.len();
        let mut out = vec![0.0_f32; x.len()];
        let lines = rows(x, valid, c)
            .zip(g.chunks_exact(c))
            .zip(act.chunks_exact(c));
        for ((((v, x), g), a), o) in lines.zip(out.chunks_exact_mut(c)) {
            if !v {
                continue;
            }
            let values = x.iter().zip(g).zip(a);
            match terms {
                Some([k3, k2]) => {
                    let k = centre.iter().zip(k1).zip(k3).zip(k2);
                    for ((o, ((&x, &g), &a)), (((&m, &k1), &k3), &k2)) in
                        o.iter_mut().zip(values).zip(k)
                    {
                        let g = if shut(a) { 0.0 } else { g };
                        *o = k1 * g - ((x + m) * k3 + k2);
                    }
                }
                None => {
                    for ((o, ((_, &g), &a)), &k1) in o.iter_mut().zip(values).zip(k1) {
                        *o = if shut(a) { 0.0 } else { k1 * g };
                    }
                }
            }
        }
        out
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
        let (affine, _) = normalise_chunks(layer, std::slice::from_ref(&input), offset, &stats)?;
        Ok(affine.apply(input))
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
        let device = x.device();
        let rows = x
            .permute([0, 2, 3, 1])
            .pad([(0, 0), (1, 0), (1, 0), (0, 0)], PadMode::Constant(GARBAGE))
            .reshape([n, p, c]);
        let valid: Vec<bool> = (0..p).map(|r| r / (w + 1) > 0 && r % (w + 1) > 0).collect();
        (rows, ValidRows::new(&valid, &device))
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

    /// The CPU devices: flex runs the passes as loops over its buffers, ndarray as burn
    /// operations.
    fn devices() -> Vec<Device> {
        #[allow(unused_mut)]
        let mut devices = vec![Device::flex()];
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        devices.push(Device::ndarray());
        devices
    }

    #[test]
    fn channels_last_equals_forward_in_every_mode_with_and_without_an_offset() {
        for device in devices() {
            equals_forward_in_every_mode(&device);
        }
    }

    fn equals_forward_in_every_mode(device: &Device) {
        let device = device.clone();
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
        for device in devices() {
            chunked_equals_whole(&device);
        }
    }

    /// `layer`'s map for the blocks `rows` as one chunk and one share, in `mode`.
    fn map_of(
        layer: &BatchNorm,
        rows: &Tensor<3>,
        valid: &ValidRows,
        mode: &StatsMode,
    ) -> super::ChannelsLastAffine {
        let shares = ShareSet::all(vec![1]);
        let stats = Statistics {
            mode,
            rows: valid,
            shares: &shares,
        };
        let (map, _) =
            normalise_chunks(layer, std::slice::from_ref(rows), None, &stats).expect("statistics");
        map
    }

    /// The map followed by a ReLU in one pass (flex) equals the two steps, with zero guard
    /// rows around every group.
    #[test]
    fn activate_guarded_equals_relu_of_the_map_between_zero_guards() {
        for device in devices() {
            let (rows, valid) = padded(input(&device));
            for mode in [StatsMode::Running, StatsMode::Batch] {
                let map = map_of(&layer(&device), &rows, &valid, &mode);
                let [n, p, c] = rows.dims();
                let guarded = map.activate_guarded(rows.clone(), p, 2);
                assert_eq!(guarded.dims(), [n, p + 4, c]);
                let guards = [
                    guarded.clone().narrow(1, 0, 2),
                    guarded.clone().narrow(1, p + 2, 2),
                ];
                assert!(
                    guards
                        .into_iter()
                        .all(|g| host(g).iter().all(|&v| v == 0.0))
                );
                let fused = host(guarded.narrow(1, 2, p));
                let steps = host(burn::tensor::activation::relu(map.apply(rows.clone())));
                assert_eq!(fused.len(), steps.len());
                assert!(fused.iter().any(|&v| v > 0.0) && steps.contains(&0.0));
                for (a, b) in fused.iter().zip(&steps) {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                        "{device:?}, {mode:?}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// A NaN input comes out of the map and its ReLU as NaN on every backend, as it does
    /// from burn's ReLU, instead of being clipped to 0.
    #[test]
    fn activate_guarded_keeps_a_nan() {
        for device in devices() {
            let (rows, valid) = padded(input(&device));
            let map = map_of(&layer(&device), &rows, &valid, &StatsMode::Running);
            let [n, p, c] = rows.dims();
            let mut values = host(rows.clone());
            // Image 0, pixel (0, 0) (row W + 2 of its block), channel 1.
            let at = (SHAPE[3] + 2) * c + 1;
            values[at] = f32::NAN;
            let x = Tensor::<3>::from_data(TensorData::new(values, [n, p, c]), &device);
            let y = host(map.activate_guarded(x, p, 1).narrow(1, 1, p));
            assert!(y[at].is_nan(), "{device:?}: {}", y[at]);
            assert_eq!(y.iter().filter(|v| v.is_nan()).count(), 1, "{device:?}");
        }
    }

    fn chunked_equals_whole(device: &Device) {
        let device = device.clone();
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
            let (map, _) = normalise_chunks(&chunked_layer, &chunks, Some(offset.clone()), &stats)
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
        let err = normalise_chunks(&layer(&device), &[], None, &stats);
        assert!(matches!(
            err,
            Err(NormError::TooFewValues { values: 0, .. })
        ));
    }

    #[test]
    fn channels_last_rejects_a_wrong_shape_and_too_few_values() {
        let device = Device::flex();
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
