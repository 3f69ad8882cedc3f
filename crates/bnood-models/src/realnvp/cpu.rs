//! The CPU fast path of RealNVP's s/t networks, in one place: on the CPU backends (flex,
//! ndarray) without autodiff, a [`ResNet`] runs from its input convolution on in the
//! *rows layout* ([`rows`]): the same parameters and formulas, the convolutions as matrix
//! products, BatchNorm on channels-last activations ([`batch_norm`]), and the batch split
//! into shares run by several threads that add up their BatchNorm sums ([`share`]).
//!
//! Which devices take it is a real query ([`takes_rows_layout`]): the CPU devices of the
//! backends this crate was built with (features `flex`, `ndarray`), compared with the
//! input's device. GPUs keep burn's convolutions. On the autodiff forms of the CPU devices
//! (training) the whole network is one operation of burn's autodiff graph
//! ([`autodiff`]) whose gradient is computed in the rows layout too ([`backward`]):
//! burn's own gradient of the layout's sliding windows adds one window at a time.
//!
//! Scores do not depend on the number of threads: the batch is always cut into the same
//! shares, whose BatchNorm sums are added in share order; the threads (one per core, at
//! most one per share) only decide who computes which share.

mod autodiff;
mod backward;
mod batch_norm;
mod rows;
mod share;

use std::ops::Range;
use std::sync::OnceLock;

use crate::available_threads;
use bnood_norm::{BatchNorm, StatsMode};
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

pub(super) use self::autodiff::forward_differentiable;
use self::backward::{NormTape, ShareTape};
use self::batch_norm::Statistics;
use self::rows::{RowGrid, add_offsets};
use self::share::{ShareExchange, ShareSet, runs};
use super::ResNet;
use crate::ModelError;

/// Whether the s/t networks run on `x` in the rows layout: `x` holds at least one image
/// and lies on a CPU device of a backend this crate was built for (features `flex`,
/// `ndarray`), without autodiff.
pub(super) fn takes_rows_layout(x: &Tensor<4>) -> bool {
    let device = x.device();
    // Device equality ignores autodiff, so ask first.
    x.dims()[0] > 0 && !device.is_autodiff() && cpu_devices().contains(&device)
}

/// Whether `x` lies on the autodiff form of a CPU device of a backend this crate was built
/// for and holds at least one image: then [`forward_differentiable`] runs the network.
fn takes_differentiable_rows_layout(x: &Tensor<4>) -> bool {
    #[cfg(test)]
    if backward::tests::burn_layers_forced() {
        return false;
    }
    let device = x.device();
    x.dims()[0] > 0 && device.is_autodiff() && cpu_devices().contains(&device)
}

/// The network's convolutions in parameter order: input, each block's two, output.
fn convs(net: &ResNet) -> Vec<&Conv2d> {
    std::iter::once(&net.in_conv)
        .chain(net.blocks.iter().flat_map(|b| [&b.conv1, &b.conv2]))
        .chain(std::iter::once(&net.out_conv))
        .collect()
}

/// The network's BatchNorms after the input convolution, in forward order.
fn norms(net: &ResNet) -> Vec<&BatchNorm> {
    net.blocks
        .iter()
        .flat_map(|b| [&b.norm1, &b.norm2])
        .chain(std::iter::once(&net.out_norm))
        .collect()
}

/// Where each convolution's gradients go among the parameters of [`parameters`]: the
/// weight's slot (its bias, when it has one, is the next).
struct ConvSlots {
    in_conv: usize,
    /// `(conv1, conv2)` of each block.
    blocks: Vec<(usize, usize)>,
    out_conv: usize,
    /// Convolution parameters in all.
    total: usize,
    /// `[C_out, C]` of the 3×3 weight at each slot whose gradient comes in the layout of
    /// [`RowGrid::conv3x3_weight_grad`]; `None` for the others.
    taps: Vec<Option<[usize; 2]>>,
}

fn conv_slots(net: &ResNet) -> ConvSlots {
    let mut next = 0;
    let mut taps = Vec::new();
    let mut slot = |conv: &Conv2d| {
        let at = next;
        let [c_out, c, kh, _] = conv.weight.dims();
        taps.push((kh == 3).then_some([c_out, c]));
        if conv.bias.is_some() {
            taps.push(None);
        }
        next += 1 + usize::from(conv.bias.is_some());
        at
    };
    let in_conv = slot(&net.in_conv);
    let blocks = net
        .blocks
        .iter()
        .map(|b| (slot(&b.conv1), slot(&b.conv2)))
        .collect();
    let out_conv = slot(&net.out_conv);
    ConvSlots {
        in_conv,
        blocks,
        out_conv,
        total: next,
        taps,
    }
}

/// The parameters of the network after its input BatchNorm, each flattened: every
/// convolution's weight and bias ([`convs`] order), then every BatchNorm's γ and β
/// ([`norms`] order). The gradient of [`backward`] comes in this order.
fn parameters(net: &ResNet) -> Vec<Tensor<1>> {
    let mut out = Vec::new();
    for conv in convs(net) {
        out.push(flat(conv.weight.val()));
        if let Some(bias) = &conv.bias {
            out.push(bias.val());
        }
    }
    for norm in norms(net) {
        out.push(norm.gamma.val());
        out.push(norm.beta.val());
    }
    out
}

/// A tensor flattened to `[len]`.
fn flat<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let len: usize = t.dims().iter().product();
    t.reshape([len])
}

/// The devices of the CPU backends compiled in, listed once.
#[allow(clippy::vec_init_then_push)] // the pushes are under `cfg`
fn cpu_devices() -> &'static [Device] {
    static DEVICES: OnceLock<Vec<Device>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        // Each backend's variant exists only with its feature, hence pushes under `cfg`;
        // without a CPU backend feature nothing is pushed.
        #[allow(unused_mut)]
        let mut types: Vec<burn::tensor::DeviceType> = Vec::new();
        #[cfg(feature = "flex")]
        types.push(burn::tensor::DeviceType::Flex);
        #[cfg(feature = "ndarray")]
        types.push(burn::tensor::DeviceType::NdArray);
        if types.is_empty() {
            return Vec::new();
        }
        Device::enumerate(types).into_vec()
    })
}

/// `net` from the input convolution on, for its input `x` `[N, 2·C_in, H, W]` (after the
/// input BatchNorm and CReLU), on up to one thread per core.
///
/// # Errors
/// BatchNorm errors.
pub(super) fn forward(
    net: &ResNet,
    x: Tensor<4>,
    mode: &StatsMode,
) -> Result<Tensor<4>, ModelError> {
    forward_on_threads(net, x, mode, available_threads())
}

/// [`forward`] on at most `threads` threads (at least 1); the result does not depend on it.
fn forward_on_threads(
    net: &ResNet,
    x: Tensor<4>,
    mode: &StatsMode,
    threads: usize,
) -> Result<Tensor<4>, ModelError> {
    let [n, _, h, w] = x.dims();
    let grid = RowGrid::new(n, h, w, &x.device());
    let rows = grid.to_rows(x);
    let parts = on_shares(&grid, threads, |_, groups, set| {
        let rows = rows.clone().narrow(0, groups.start, groups.len());
        body(net, &grid, rows, mode, set, None)
    })?;
    Ok(grid.to_nchw(Tensor::cat(parts, 0)))
}

/// Runs `work` on the runs of shares of `grid`'s batch, one run per thread (at most
/// `threads`, at least 1): `work(run, groups, shares)` gets the run's index, the image
/// groups it holds and its [`ShareSet`]. Returns the runs' results in run order.
///
/// # Errors
/// The first error of a run, in run order.
fn on_shares<T: Send>(
    grid: &RowGrid,
    threads: usize,
    work: impl Fn(usize, Range<usize>, &ShareSet<'_>) -> Result<T, ModelError> + Sync,
) -> Result<Vec<T>, ModelError> {
    let shares = grid.shares();
    let groups_per_share =
        |run: Range<usize>| -> Vec<usize> { shares[run].iter().map(Range::len).collect() };
    let threads = threads.min(shares.len()).max(1);
    if threads == 1 {
        let set = ShareSet::all(groups_per_share(0..shares.len()));
        let groups = shares[0].start..shares[shares.len() - 1].end;
        return Ok(vec![work(0, groups, &set)?]);
    }
    // Every thread sees the same shapes and batch size, so a BatchNorm error (checked
    // before its first rendezvous) stops all threads alike; none is left waiting.
    let exchange = ShareExchange::new(shares.len());
    let outputs = std::thread::scope(|scope| {
        let handles: Vec<_> = runs(shares.len(), threads)
            .into_iter()
            .enumerate()
            .map(|(index, run)| {
                let groups = shares[run.start].start..shares[run.end - 1].end;
                let set =
                    ShareSet::part(&exchange, run.start, groups_per_share(run), grid.images());
                let (exchange, work) = (&exchange, &work);
                scope.spawn(move || {
                    let guard = exchange.guard();
                    let out = work(index, groups, &set);
                    if out.is_ok() {
                        guard.finish();
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join()).collect::<Vec<_>>()
    });
    // A thread's error makes the others panic (they stop waiting for it): report it.
    let mut parts = Vec::with_capacity(outputs.len());
    let mut panic = None;
    for output in outputs {
        match output {
            Ok(Ok(part)) => parts.push(part),
            Ok(Err(e)) => return Err(e),
            Err(payload) => panic = Some(payload),
        }
    }
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
    Ok(parts)
}

/// The network from the input convolution to the output convolution on `rows`
/// (`[groups, rows, 2·C_in]`, the groups of this thread's `shares`). Between the
/// BatchNorms' statistics it runs one group at a time — map, ReLU, convolution (and the
/// residual sum) on a group while it is still in the CPU's cache — which measured about
/// twice as fast on these layers as whole-tensor passes (docs/performance.md).
///
/// With a `tape`, keeps what [`backward::body_backward`] needs: the input groups, and for
/// every BatchNorm its input chunks, statistics and activations (they are computed anyway;
/// keeping them costs memory, not time).
fn body(
    net: &ResNet,
    grid: &RowGrid,
    rows: Tensor<3>,
    mode: &StatsMode,
    shares: &ShareSet<'_>,
    mut tape: Option<&mut ShareTape>,
) -> Result<Tensor<3>, ModelError> {
    let stats = Statistics {
        mode,
        rows: grid.valid(),
        shares,
    };
    let groups = rows.dims()[0];
    let input: Vec<Tensor<3>> = (0..groups).map(|g| rows.clone().narrow(0, g, 1)).collect();
    let in_conv = grid.kernel3x3(&net.in_conv);
    let mut offset = in_conv.bias();
    let mut h: Vec<Tensor<3>> = input
        .iter()
        .map(|x| grid.conv3x3(x.clone(), &in_conv))
        .collect();
    if let Some(tape) = tape.as_deref_mut() {
        tape.input = input;
    }
    // BatchNorm → ReLU → `then(chunk index, activation)` chunk by chunk; the activations
    // are kept on the tape when there is one.
    let mut norm_relu = |norm: &BatchNorm,
                         chunks: Vec<Tensor<3>>,
                         offset: Option<Tensor<1>>,
                         then: &dyn Fn(usize, Tensor<3>) -> Tensor<3>|
     -> Result<Vec<Tensor<3>>, ModelError> {
        let (blocks, map, norm_stats) = grid.batch_norm_chunks(norm, chunks, offset, &stats)?;
        let Some(tape) = tape.as_deref_mut() else {
            return Ok(blocks
                .into_iter()
                .enumerate()
                .map(|(i, x)| then(i, grid.activate(&map, x)))
                .collect());
        };
        let mut acts = Vec::with_capacity(blocks.len());
        let out = blocks
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let act = grid.activate(&map, x.clone());
                acts.push(act.clone());
                then(i, act)
            })
            .collect();
        tape.norms.push(NormTape {
            input: blocks,
            stats: norm_stats,
            acts,
        });
        Ok(out)
    };
    for block in &net.blocks {
        let (conv1, conv2) = (grid.kernel3x3(&block.conv1), grid.kernel3x3(&block.conv2));
        let a = norm_relu(&block.norm1, h.clone(), offset.clone(), &|_, x| {
            grid.conv3x3(x, &conv1)
        })?;
        h = norm_relu(&block.norm2, a, conv1.bias(), &|i, x| {
            h[i].clone() + grid.conv3x3(x, &conv2)
        })?;
        offset = add_offsets(offset, conv2.bias());
    }
    let out_conv = RowGrid::kernel1x1(&net.out_conv);
    let out = norm_relu(&net.out_norm, h, offset, &|_, x| {
        RowGrid::conv1x1(grid.interior(x), &out_conv)
    })?;
    Ok(Tensor::cat(out, 0))
}

#[cfg(test)]
pub(crate) mod tests {
    //! The rows layout against burn's convolutions: the same network and model values up to
    //! float rounding. The model test runs the same weights once on a plain CPU device (rows
    //! layout) and once on its autodiff form (burn's `conv2d`).

    use burn::module::Module;
    use burn::tensor::{Device, Tensor, TensorData};
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::backward::tests::with_burn_layers;
    use super::{forward_on_threads, takes_rows_layout};
    use crate::{LikelihoodModel, RealNvpConfig, StatsMode};

    /// Scores may differ by this relative amount (plus [`SCORE_ABS`] nats) between the
    /// layouts: sums run in another order and biases are left to the BatchNorms. Measured
    /// on the paper model (64 Fashion-MNIST images, random last layers): ≤ 1.5e-5 relative
    /// in Batch mode, ≤ 3e-7 in Running mode; flex and ndarray differ by up to 8.3e-5 on the
    /// same model with burn's convolutions.
    const SCORE_REL: f64 = 2e-5;
    const SCORE_ABS: f64 = 1e-3;

    /// `shape` values uniform in `range`, seeded (shared with the kernels' tests).
    pub(crate) fn uniform(
        shape: [usize; 4],
        range: std::ops::Range<f32>,
        seed: u64,
        device: &Device,
    ) -> Tensor<4> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let values: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(range.clone()))
            .collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// A tensor's values on the host.
    pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        t.into_data().iter::<f64>().collect()
    }

    fn config() -> RealNvpConfig {
        RealNvpConfig {
            zero_init_last: false,
            mid_channels: 8,
            num_blocks: 2,
            ..RealNvpConfig::paper_fmnist()
        }
    }

    /// The paper-shaped model with random last layers (so every coupling does work) on
    /// `n` images, rows layout vs burn's convolutions (on the autodiff form of the device,
    /// told to keep burn's layers), in both statistics modes.
    fn assert_layouts_agree(device: &Device, n: usize) {
        let model = config().init(device).expect("valid config");
        let reference = model.clone().fork(&device.clone().autodiff());
        let x = uniform([n, 1, 28, 28], 0.0..256.0, 11, device);
        for mode in [StatsMode::Running, StatsMode::Batch] {
            let fast = host(model.log_prob(x.clone(), &mode).expect("rows layout"));
            let slow = host(with_burn_layers(|| {
                reference
                    .log_prob(x.clone().autodiff(), &mode)
                    .expect("burn convolutions")
            }));
            for (a, b) in fast.iter().zip(&slow) {
                assert!(
                    (a - b).abs() <= SCORE_REL * b.abs() + SCORE_ABS,
                    "{mode:?}, {n} images on {device:?}: {a} vs {b} nats"
                );
            }
        }
    }

    /// The layout is chosen by comparing the device with the CPU devices burn enumerates:
    /// pin that the CPU backends are recognised, so that a change in burn cannot silently
    /// fall back to the slow path, and that autodiff forms and empty batches are not.
    #[test]
    #[allow(deprecated)]
    fn cpu_devices_take_the_rows_layout_and_their_autodiff_forms_do_not() {
        let x = |device: &Device| Tensor::<4>::zeros([1, 1, 2, 2], device);
        assert!(takes_rows_layout(&x(&Device::flex())));
        assert!(!takes_rows_layout(&x(&Device::flex().autodiff())));
        assert!(!takes_rows_layout(&Tensor::<4>::zeros(
            [0, 1, 2, 2],
            &Device::flex()
        )));
        #[cfg(feature = "ndarray")]
        {
            assert!(takes_rows_layout(&x(&Device::ndarray())));
            assert!(!takes_rows_layout(&x(&Device::ndarray().autodiff())));
        }
    }

    #[test]
    fn rows_layout_scores_equal_burn_convolutions_on_flex() {
        assert_layouts_agree(&Device::flex(), 16); // 8 groups of 2 images
        assert_layouts_agree(&Device::flex(), 7); // a prime batch: 7 groups of 1
    }

    #[test]
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    fn rows_layout_scores_equal_burn_convolutions_on_ndarray() {
        assert_layouts_agree(&Device::ndarray(), 6);
    }

    /// The same s/t network on 1, 2 and 3 threads gives the same bits in every mode: the
    /// shares are the same, only who computes them changes.
    #[test]
    fn scores_do_not_depend_on_the_thread_count() {
        let device = Device::flex();
        let model = config().init(&device).expect("valid config");
        // The first coupling's network on 6 images of 28×28 after CReLU: 3 groups of 2
        // images, in 2 shares of 1 and 2 groups.
        let net = &model.scales[0].checkerboard[0].net;
        let x = uniform([6, 2, 28, 28], -1.0..3.0, 5, &device);
        for mode in [StatsMode::Running, StatsMode::Batch, StatsMode::train()] {
            let bits = |threads: usize| -> Vec<u32> {
                forward_on_threads(net, x.clone(), &mode, threads)
                    .expect("forward")
                    .into_data()
                    .iter::<f32>()
                    .map(f32::to_bits)
                    .collect()
            };
            let one = bits(1);
            assert_eq!(bits(2), one, "{mode:?}: 2 threads");
            assert_eq!(bits(3), one, "{mode:?}: 3 threads");
        }
    }
}
