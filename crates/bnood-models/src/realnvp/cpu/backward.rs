//! The gradient of an s/t network in the rows layout: what burn's autodiff would compute
//! through the network's convolutions, BatchNorms and ReLUs, written out layer by layer so
//! that it runs on the same channels-last matrices as the forward pass (burn's gradient of
//! the layout's sliding windows adds one window at a time).
//!
//! Per layer, in reverse (`g` the gradient of the loss with respect to a layer's output):
//! - 1×1 convolution `y = a·M + b`: `∂M = aᵀg`, `∂b = Σ g`, `∂a = g·Mᵀ`;
//! - 3×3 convolution: `∂W` from the input's windows transposed times `g` (three products,
//!   [`RowGrid::conv3x3_weight_grad`]), `∂b = Σ g`, and the input's gradient is the
//!   convolution of `g` with the flipped, transposed kernel
//!   ([`RowGrid::kernel3x3_transposed`]);
//! - ReLU and the BatchNorm before it, together: [`norm_backward`] (`g` where the
//!   activation is positive, 0 elsewhere; then with batch statistics the usual closed
//!   form, which runs through the statistics; with running statistics a per-channel
//!   scale), on flex in two passes over the buffers;
//! - residual sums add their branches' gradients.
//!
//! Padding rows carry zero gradient throughout: the ReLU's mask is 0 there (the forward
//! pass wrote exact zeros) and the BatchNorm's gradient is masked like its map.
//!
//! Parameter gradients of the convolutions are taken per image group and added in group
//! order after the threads finish; those of the BatchNorms come from batch-wide sums taken
//! in share order ([`ShareSet::batch_sum`]): the gradients do not depend on the number of
//! threads.

use bnood_norm::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use super::batch_norm::{self, NormStats};
use super::flat;
use super::rows::RowGrid;
use super::share::ShareSet;
use crate::realnvp::ResNet;

/// One BatchNorm → ReLU of the forward pass, as the backward pass needs it.
#[derive(Debug, Clone)]
pub(crate) struct NormTape {
    /// The chunks the map was applied to (`[images, P, C]` blocks, as the layer got them:
    /// the map adds the statistics' centre itself).
    pub(crate) input: Vec<Tensor<3>>,
    /// The statistics behind the map.
    pub(crate) stats: NormStats,
    /// `ReLU(map(input))` per chunk, as guarded groups (see [`RowGrid::activate`]; the next
    /// layer's input).
    pub(crate) acts: Vec<Tensor<3>>,
}

/// One thread's part of a forward pass of an s/t network, kept for its backward pass.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShareTape {
    /// The network's input (after the input BatchNorm and CReLU) per group `[1, rows, C]`.
    pub(crate) input: Vec<Tensor<3>>,
    /// Every BatchNorm in forward order: `norm1`, `norm2` of each block, then `out_norm`.
    pub(crate) norms: Vec<NormTape>,
}

/// Gradients of one thread's part of the batch.
pub(crate) struct ShareGrads {
    /// The gradient of the network's input, `[groups, rows, C_in]` (garbage on padding rows).
    pub(crate) input: Tensor<3>,
    /// Per convolution parameter, in [`super::parameters`] order of the convolutions (weight,
    /// then bias), one partial gradient per group of this thread, flattened.
    pub(crate) convs: Vec<Vec<Tensor<1>>>,
    /// γ, β of every BatchNorm (in forward order), flattened: batch-wide sums, the same on
    /// every thread.
    pub(crate) norms: Vec<Tensor<1>>,
}

/// [`batch_norm::norm_relu_backward`] of the BatchNorm `layer` and the ReLU after it,
/// taped as `tape`: the gradients of its input (as groups `[1, rows, C]`), γ and β, from
/// those of the ReLU's output `g_a` (groups).
fn norm_backward(
    grid: &RowGrid,
    tape: &NormTape,
    layer: &BatchNorm,
    g_a: Vec<Tensor<3>>,
    shares: &ShareSet<'_>,
) -> (Vec<Tensor<3>>, Tensor<1>, Tensor<1>) {
    let gamma = layer.gamma.val();
    let acts: Vec<Tensor<3>> = tape.acts.iter().map(|a| grid.interior(a.clone())).collect();
    batch_norm::norm_relu_backward(
        grid.valid(),
        &tape.input,
        &acts,
        &gamma,
        &tape.stats,
        g_a,
        shares,
    )
}

/// Per convolution parameter, the partial gradients of each group.
struct ConvGrads {
    partials: Vec<Vec<Tensor<1>>>,
}

impl ConvGrads {
    /// Records the weight gradient `weight` (flat, in the layout its product gave it) and
    /// the bias gradient of the convolution at parameter slots `slot` (weight) and
    /// `slot + 1` (bias, when it has one) for one group.
    fn push(&mut self, slot: usize, weight: Tensor<1>, g: &Tensor<3>, has_bias: bool) {
        self.partials[slot].push(weight);
        if has_bias {
            self.partials[slot + 1].push(flat(g.clone().sum_dim(1)));
        }
    }

    /// The backward pass of the 3×3 convolution `conv` (parameter slot `slot`) group by
    /// group: records its weight and bias gradients from its input groups `inputs` and
    /// output gradients `g` (0 on padding rows), and returns its input's gradients
    /// (garbage on padding rows).
    fn conv3x3(
        &mut self,
        grid: &RowGrid,
        slot: usize,
        conv: &Conv2d,
        inputs: &[Tensor<3>],
        g: &[Tensor<3>],
    ) -> Vec<Tensor<3>> {
        let transposed = grid.kernel3x3_transposed(conv);
        inputs
            .iter()
            .zip(g)
            .map(|(x, g)| {
                let weight = grid.conv3x3_weight_grad(x.clone(), g.clone());
                self.push(slot, weight, g, conv.bias.is_some());
                grid.conv3x3(g.clone(), &transposed)
            })
            .collect()
    }
}

/// The backward pass of [`super::body`] over one thread's groups: `g_out`
/// `[groups, rows, C_out]` is the gradient of the network's output (0 on padding rows).
pub(crate) fn body_backward(
    net: &ResNet,
    grid: &RowGrid,
    tape: ShareTape,
    g_out: Tensor<3>,
    shares: &ShareSet<'_>,
) -> ShareGrads {
    let slots = super::conv_slots(net);
    let mut grads = ConvGrads {
        partials: vec![Vec::new(); slots.total],
    };
    let groups = g_out.dims()[0];
    let mut norms = tape.norms;
    let mut take_norm = || norms.pop().expect("one tape entry per BatchNorm");

    // Output: 1×1 convolution, then ReLU and out_norm.
    let out_norm = take_norm();
    let (matrix, bias) = RowGrid::kernel1x1(&net.out_conv);
    let matrix_t = matrix.swap_dims(1, 2);
    let g_a: Vec<Tensor<3>> = (0..groups)
        .map(|i| {
            let g = g_out.clone().narrow(0, i, 1);
            let act = &grid.interior(out_norm.acts[i].clone());
            grads.push(
                slots.out_conv,
                flat(RowGrid::conv1x1_weight_grad(act.clone(), g.clone())),
                &g,
                bias.is_some(),
            );
            g.matmul(matrix_t.clone())
        })
        .collect();
    let (mut g_h, gamma, beta) = norm_backward(grid, &out_norm, &net.out_norm, g_a, shares);
    // γ and β of every BatchNorm, gathered backwards (β first, last BatchNorm first).
    let mut tail = vec![beta, gamma];

    for (j, block) in net.blocks.iter().enumerate().rev() {
        let (norm2, norm1) = (take_norm(), take_norm());
        let (slot1, slot2) = slots.blocks[j];
        let g_a2 = grads.conv3x3(grid, slot2, &block.conv2, &norm2.acts, &g_h);
        let (g_c1, gamma2, beta2) = norm_backward(grid, &norm2, &block.norm2, g_a2, shares);
        let g_a1 = grads.conv3x3(grid, slot1, &block.conv1, &norm1.acts, &g_c1);
        let (g_z1, gamma1, beta1) = norm_backward(grid, &norm1, &block.norm1, g_a1, shares);
        g_h = g_h.into_iter().zip(g_z1).map(|(a, b)| a + b).collect();
        tail.extend([beta2, gamma2, beta1, gamma1]);
    }

    // Input convolution.
    let g_in = grads.conv3x3(grid, slots.in_conv, &net.in_conv, &tape.input, &g_h);
    ShareGrads {
        input: Tensor::cat(g_in, 0),
        convs: grads.partials,
        norms: tail.into_iter().rev().collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The rows layout's gradient against burn's autodiff through burn's own layers, on the
    //! same model and batch: every parameter's gradient, the input's, and the running
    //! statistics a training step records.

    use std::cell::Cell;

    use burn::module::{Module, ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    use burn::tensor::{Device, Tensor};

    use crate::realnvp::cpu::tests::{host, uniform};
    use crate::{LikelihoodModel, RealNvp, RealNvpConfig, StatsMode};

    thread_local! {
        /// Set by [`with_burn_layers`]: the s/t networks run on burn's layers on this thread.
        static BURN_LAYERS: Cell<bool> = const { Cell::new(false) };
    }

    /// Whether a test asked for burn's layers instead of the rows layout on this thread.
    pub(crate) fn burn_layers_forced() -> bool {
        BURN_LAYERS.with(Cell::get)
    }

    /// `f` with the s/t networks on burn's layers (autodiff through burn's convolutions).
    pub(crate) fn with_burn_layers<T>(f: impl FnOnce() -> T) -> T {
        BURN_LAYERS.with(|flag| flag.set(true));
        let out = f();
        BURN_LAYERS.with(|flag| flag.set(false));
        out
    }

    /// Every float parameter's values (or gradient), flattened, in visiting order.
    struct Collect<'a> {
        grads: Option<&'a GradientsParams>,
        out: Vec<(String, Vec<f64>)>,
    }

    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = match self.grads {
                Some(grads) => grads.get::<D>(param.id).map(host),
                None => Some(host(param.val())),
            };
            let dims = format!("{:?}", param.val().dims());
            self.out.push((dims, values.unwrap_or_default()));
        }
    }

    /// Named (by shape) flattened tensors, in visiting order.
    type Tensors = Vec<(String, Vec<f64>)>;

    fn collect(model: &RealNvp, grads: Option<&GradientsParams>) -> Tensors {
        let mut visitor = Collect {
            grads,
            out: Vec::new(),
        };
        model.visit(&mut visitor);
        visitor.out
    }

    /// The gradients of `Σ log p(x)` with respect to every parameter and to `x`, the model's
    /// running statistics after the step's update (Train mode), and the loss.
    fn step(model: &RealNvp, x: &Tensor<4>, mode: &StatsMode) -> (Tensors, Vec<f64>, Tensors, f64) {
        let x = x.clone().require_grad();
        let loss = model.log_prob(x.clone(), mode).expect("forward").sum();
        let value = host(loss.clone())[0];
        let mut grads = loss.backward();
        let g_x = host(x.grad_remove(&mut grads).expect("x requires grad"));
        let params = GradientsParams::from_grads(grads, model);
        let after = match mode {
            StatsMode::Train(tape) => tape.apply(model.clone()),
            _ => model.clone(),
        };
        (
            collect(model, Some(&params)),
            g_x,
            collect(&after, None),
            value,
        )
    }

    /// `a` equals `b` within `rel` of `b`'s largest magnitude (gradients of one tensor
    /// share a scale; small entries carry the absolute rounding of the large ones) plus
    /// `abs` (the gradient of a convolution's bias before a BatchNorm with batch statistics
    /// is 0 up to the rounding of the whole model's gradients), except for at most
    /// `outliers` entries, which must still be within 5 % of the scale.
    ///
    /// Outliers: a ReLU whose input is within rounding of 0 can be on in one layout and off
    /// in the other (the forward passes differ by float rounding), which changes a few
    /// entries of the gradients below it by up to a few percent of their scale; among the
    /// ≈ 3·10⁶ ReLU units of a paper-sized network on 16 images, a handful are that close
    /// (measured: 13 of the input gradient's 12,544 entries moved by up to 4 % of its scale).
    /// The tests allow 1 % of a tensor's entries; a wrong gradient changes most of them.
    fn assert_close(what: &str, a: &[f64], b: &[f64], rel: f64, abs: f64, outliers: usize) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = b.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        let mut off = 0;
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let err = (x - y).abs();
            if err > rel * scale + abs {
                off += 1;
                assert!(
                    off <= outliers && err <= 0.05 * scale + abs,
                    "{what}[{i}]: {x} vs {y} (scale {scale}, rel {rel}, abs {abs}; {off} off)"
                );
            }
        }
    }

    /// The largest gradient entry of all.
    fn largest(grads: &[(String, Vec<f64>)]) -> f64 {
        grads
            .iter()
            .flat_map(|(_, g)| g.iter())
            .fold(0.0_f64, |m, v| m.max(v.abs()))
    }

    /// Train mode gets a fresh tape per run; the others are reused.
    fn fresh(mode: &StatsMode) -> StatsMode {
        match mode {
            StatsMode::Train(_) => StatsMode::train(),
            other => other.clone(),
        }
    }

    /// The whole model's gradients (of `Σ log p(x)`) and running-statistics update, rows
    /// layout against burn's layers, within `rel` per tensor.
    fn assert_gradients_agree(config: RealNvpConfig, n: usize, device: &Device, rel: f64) {
        let model = config
            .init(&device.clone().autodiff())
            .expect("valid config");
        let [c, h, w] = model.image_shape();
        let x = uniform([n, c, h, w], 0.0..256.0, 3, &device.clone().autodiff());
        for mode in [StatsMode::Batch, StatsMode::train(), StatsMode::Running] {
            let (fast, fast_x, fast_after, fast_loss) = step(&model, &x, &fresh(&mode));
            let (slow, slow_x, slow_after, slow_loss) =
                with_burn_layers(|| step(&model, &x, &fresh(&mode)));
            assert!(
                (fast_loss - slow_loss).abs() <= 1e-5 * slow_loss.abs() + 1e-3,
                "{mode:?}: loss {fast_loss} vs {slow_loss}"
            );
            let abs = 1e-6 * largest(&slow);
            let outliers = fast_x.len() / 100;
            assert_close(
                &format!("{mode:?}: ∂x"),
                &fast_x,
                &slow_x,
                rel,
                0.0,
                outliers,
            );
            assert_eq!(fast.len(), slow.len());
            for (k, ((dims, a), (_, b))) in fast.iter().zip(&slow).enumerate() {
                assert_eq!(a.is_empty(), b.is_empty(), "{mode:?}: parameter {k} {dims}");
                let outliers = a.len() / 100;
                assert_close(
                    &format!("{mode:?}: parameter {k} {dims}"),
                    a,
                    b,
                    rel,
                    abs,
                    outliers,
                );
            }
            for (k, ((dims, a), (_, b))) in fast_after.iter().zip(&slow_after).enumerate() {
                let what = format!("{mode:?}: state {k} {dims} after");
                assert_close(&what, a, b, 1e-5, 1e-6, 0);
            }
        }
    }

    fn small() -> RealNvpConfig {
        RealNvpConfig {
            zero_init_last: false,
            mid_channels: 8,
            num_blocks: 2,
            ..RealNvpConfig::paper_fmnist()
        }
    }

    #[test]
    fn rows_layout_gradients_equal_burn_autodiff_on_a_small_model() {
        assert_gradients_agree(small(), 6, &Device::flex(), 1e-4); // 3 groups in 2 shares
        assert_gradients_agree(small(), 5, &Device::flex(), 1e-4); // a prime batch
    }

    /// The paper model with random last layers: ten couplings amplify the forward passes'
    /// rounding differences (scores differ by ≈ 1.5·10⁻⁵ relative, see `cpu::tests`) and
    /// the ReLUs they flip (see [`assert_close`]), so the first couplings' gradients differ
    /// by up to ≈ 5·10⁻³ of their scale (measured), the last ones' by ≈ 10⁻⁵. The network
    /// alone is held to 10⁻⁴ in `paper_network_gradients_equal_burn_autodiff`.
    #[test]
    fn rows_layout_gradients_equal_burn_autodiff_on_the_paper_model() {
        let config = RealNvpConfig {
            zero_init_last: false,
            ..RealNvpConfig::paper_fmnist()
        };
        assert_gradients_agree(config, 16, &Device::flex(), 1e-2);
    }

    /// One s/t network of the paper model (32 channels, 4 blocks) on 28×28 inputs: the
    /// gradients of a fixed random projection of its output with respect to its input and
    /// every parameter, in every mode.
    #[test]
    fn paper_network_gradients_equal_burn_autodiff() {
        let device = Device::flex().autodiff();
        let config = RealNvpConfig {
            zero_init_last: false,
            ..RealNvpConfig::paper_fmnist()
        };
        let model = config.init(&device).expect("valid config");
        let net = &model.scales[0].checkerboard[0].net;
        // 4 images: 2 groups in 2 shares, and ≈ 8·10⁵ ReLU units, few enough that none
        // flips between the layouts here.
        let u = uniform([4, 1, 28, 28], -2.0..2.0, 7, &device);
        let projection = uniform([4, 2, 28, 28], -1.0..1.0, 8, &device);
        let run = |mode: &StatsMode| {
            let u = u.clone().require_grad();
            let out = net.forward(u.clone(), mode).expect("forward");
            let loss = (out * projection.clone()).sum();
            let mut grads = loss.backward();
            let g_u = host(u.grad_remove(&mut grads).expect("u requires grad"));
            let params = GradientsParams::from_grads(grads, net);
            let mut visitor = Collect {
                grads: Some(&params),
                out: Vec::new(),
            };
            net.visit(&mut visitor);
            (visitor.out, g_u)
        };
        for mode in [StatsMode::Batch, StatsMode::train(), StatsMode::Running] {
            let (fast, fast_u) = run(&fresh(&mode));
            let (slow, slow_u) = with_burn_layers(|| run(&fresh(&mode)));
            let abs = 1e-6 * largest(&slow);
            let outliers = fast_u.len() / 100;
            assert_close(
                &format!("{mode:?}: ∂u"),
                &fast_u,
                &slow_u,
                1e-4,
                0.0,
                outliers,
            );
            for (k, ((dims, a), (_, b))) in fast.iter().zip(&slow).enumerate() {
                assert_eq!(a.is_empty(), b.is_empty(), "{mode:?}: parameter {k} {dims}");
                let outliers = a.len() / 100;
                assert_close(
                    &format!("{mode:?}: parameter {k} {dims}"),
                    a,
                    b,
                    1e-4,
                    abs,
                    outliers,
                );
            }
        }
    }

    /// The same network's gradients on 1, 2 and 3 threads are the same bits: the shares,
    /// the order of the BatchNorm sums and of the groups' partial gradients are fixed.
    #[test]
    #[cfg(feature = "flex")]
    fn gradients_do_not_depend_on_the_thread_count() {
        use crate::realnvp::cpu::autodiff::attach;
        let device = Device::flex().autodiff();
        let model = small().init(&device).expect("valid config");
        let net = &model.scales[0].checkerboard[0].net;
        // After CReLU: 6 images in 3 groups of 2, 2 shares of 1 and 2 groups.
        let u = uniform([6, 2, 28, 28], -1.0..3.0, 5, &device);
        let projection = uniform([6, 2, 28, 28], -1.0..1.0, 6, &device);
        for mode in [StatsMode::Batch, StatsMode::Running] {
            let bits = |threads: usize| -> Vec<u32> {
                let u = u.clone().require_grad();
                let out = attach::<burn::backend::Flex>(net, &u, &mode, threads)
                    .expect("u is on flex's autodiff device")
                    .expect("forward");
                let mut grads = (out * projection.clone()).sum().backward();
                let g_u = u.grad_remove(&mut grads).expect("u requires grad");
                let params = GradientsParams::from_grads(grads, net);
                let mut visitor = Collect {
                    grads: Some(&params),
                    out: Vec::new(),
                };
                net.visit(&mut visitor);
                host(g_u)
                    .into_iter()
                    .chain(visitor.out.into_iter().flat_map(|(_, g)| g))
                    .map(|v| (v as f32).to_bits())
                    .collect()
            };
            let one = bits(1);
            assert_eq!(bits(2), one, "{mode:?}: 2 threads");
            assert_eq!(bits(3), one, "{mode:?}: 3 threads");
        }
    }

    #[test]
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    fn rows_layout_gradients_equal_burn_autodiff_on_ndarray() {
        assert_gradients_agree(small(), 4, &Device::ndarray(), 1e-4);
    }
}
