//! The s/t network as one operation of burn's autodiff graph on the CPU backends: its
//! forward pass runs in the rows layout on the inner (plain) device, keeping what its
//! backward pass needs, and its backward pass ([`super::backward`]) hands burn the gradients
//! of the network's input and of all its parameters (after the input BatchNorm), which
//! enter the graph as one flat tensor (a concatenation, whose own gradient burn splits back
//! to the parameters).
//!
//! burn 0.22 lets a program add an operation to its autodiff graph through the primitives
//! of its `extension` feature: `Tensor::try_into_primitive::<Autodiff<B>>` gives the graph
//! node, [`Backward`] the step that burn runs in its backward pass.

use std::sync::Arc;

use bnood_norm::StatsMode;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor};
use burn::module::Module;
use burn::tensor::Tensor;

use super::backward::{ShareTape, body_backward};
use super::rows::RowGrid;
use super::{ResNet, body, conv_slots, on_shares, parameters};
use crate::ModelError;
use crate::available_threads;

/// `net` from its input convolution on, for `x` `[N, 2·C_in, H, W]` on the autodiff form of
/// a CPU device, as one differentiable operation (see the module's documentation); `None`
/// when `x` is elsewhere (or its graph uses gradient checkpointing), for burn's own layers
/// to run it.
///
/// # Errors
/// BatchNorm errors.
pub(crate) fn forward_differentiable(
    net: &ResNet,
    x: &Tensor<4>,
    mode: &StatsMode,
) -> Option<Result<Tensor<4>, ModelError>> {
    if !super::takes_differentiable_rows_layout(x) {
        return None;
    }
    #[cfg(feature = "flex")]
    if let Some(out) = attach::<burn::backend::Flex>(net, x, mode, available_threads()) {
        return Some(out);
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if let Some(out) = attach::<burn::backend::NdArray>(net, x, mode, available_threads()) {
        return Some(out);
    }
    None
}

/// What the backward step keeps of the forward pass.
#[derive(Clone)]
struct Saved {
    /// The network on the plain device (same parameter values).
    net: Arc<ResNet>,
    grid: RowGrid,
    /// One tape per run of shares (thread), in run order.
    tapes: Vec<ShareTape>,
    threads: usize,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("grid", &self.grid)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// The backward step of the operation.
#[derive(Debug)]
struct RowsBackward;

impl<B: Backend> Backward<B, 2> for RowsBackward
where
    DispatchTensor: DispatchKindConversion<B>,
{
    type State = Saved;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_theta] = ops.parents;
        let g_out = Tensor::<4>::from_primitive::<B>(grads.consume::<B>(&ops.node));
        let (g_x, g_theta) = backward(&ops.state, g_out);
        let on_device = "gradients are on the forward pass's device";
        if let Some(node) = node_x {
            grads.register::<B>(node.id, g_x.try_into_primitive::<B>().expect(on_device));
        }
        if let Some(node) = node_theta {
            grads.register::<B>(node.id, g_theta.try_into_primitive::<B>().expect(on_device));
        }
    }
}

/// [`forward_differentiable`] on the autodiff form of backend `B`, forward and backward
/// passes on at most `threads` threads (at least 1; the results do not depend on it);
/// `None` when `x` is not on that backend's autodiff form (with the default checkpointing).
pub(crate) fn attach<B: Backend>(
    net: &ResNet,
    x: &Tensor<4>,
    mode: &StatsMode,
    threads: usize,
) -> Option<Result<Tensor<4>, ModelError>>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    let x_node = x.clone().try_into_primitive::<Autodiff<B>>().ok()?;
    // Parameters on the plain device (a module built there and not moved) are constants.
    let theta_node = Tensor::cat(parameters(net), 0)
        .autodiff()
        .try_into_primitive::<Autodiff<B>>()
        .ok()?;
    Some(attach_nodes::<B>(
        net,
        x,
        x_node,
        theta_node,
        mode,
        threads.max(1),
    ))
}

/// [`attach`] once the graph nodes of the input and of the flat parameters are known.
fn attach_nodes<B: Backend>(
    net: &ResNet,
    x: &Tensor<4>,
    x_node: FloatTensor<Autodiff<B>>,
    theta_node: FloatTensor<Autodiff<B>>,
    mode: &StatsMode,
    threads: usize,
) -> Result<Tensor<4>, ModelError>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    let inner = Arc::new(net.valid());
    let x_inner = x.clone().inner();
    let [n, _, h, w] = x_inner.dims();
    let grid = RowGrid::new(n, h, w, &x_inner.device());
    let rows = grid.to_rows(x_inner);
    let run = |taped: bool| -> Result<(Tensor<4>, Vec<ShareTape>), ModelError> {
        let parts = on_shares(&grid, threads, |_, groups, set| {
            let rows = rows.clone().narrow(0, groups.start, groups.len());
            let mut tape = ShareTape::default();
            let out = body(&inner, &grid, rows, mode, set, taped.then_some(&mut tape))?;
            Ok((out, tape))
        })?;
        let (outs, tapes): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        Ok((grid.to_nchw(Tensor::cat(outs, 0)), tapes))
    };
    let output = |out: Tensor<4>| out.try_into_primitive::<B>().expect("on the plain device");
    let node = match RowsBackward
        .prepare::<NoCheckpointing>([x_node.node(), theta_node.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, tapes) = run(true)?;
            let saved = Saved {
                net: Arc::clone(&inner),
                grid: grid.clone(),
                tapes,
                threads,
            };
            prep.finish(saved, output(out))
        }
        OpsKind::UnTracked(prep) => prep.finish(output(run(false)?.0)),
    };
    Ok(Tensor::from_primitive::<Autodiff<B>>(node))
}

/// The gradients of the network's input `[N, 2·C_in, H, W]` and of its flat parameters
/// ([`parameters`] order) from the gradient `g_out` of its output, on the threads and shares
/// of the forward pass.
fn backward(saved: &Saved, g_out: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
    let grid = &saved.grid;
    let g_rows = grid.to_rows(g_out);
    let parts = on_shares(grid, saved.threads, |run, groups, set| {
        let g = g_rows.clone().narrow(0, groups.start, groups.len());
        Ok(body_backward(
            &saved.net,
            grid,
            saved.tapes[run].clone(),
            g,
            set,
        ))
    })
    .expect("the backward pass returns no errors");
    // Convolution gradients: the groups' partials in group order (runs hold consecutive
    // groups), added in one reduction; BatchNorm gradients are batch-wide on every run.
    let taps = conv_slots(&saved.net).taps;
    let mut flat: Vec<Tensor<1>> = taps
        .iter()
        .enumerate()
        .map(|(slot, taps)| {
            let partials: Vec<Tensor<1>> = parts
                .iter()
                .flat_map(|p| p.convs[slot].iter().cloned())
                .collect();
            let len = partials[0].dims()[0];
            let sum = Tensor::stack::<2>(partials, 0).sum_dim(0).reshape([len]);
            match taps {
                Some([c_out, c]) => {
                    let weight = RowGrid::weight_from_taps(sum, *c_out, *c);
                    weight.reshape([len])
                }
                None => sum,
            }
        })
        .collect();
    flat.extend(parts[0].norms.iter().cloned());
    let g_in = grid.to_nchw(Tensor::cat(parts.into_iter().map(|p| p.input).collect(), 0));
    (g_in, Tensor::cat(flat, 0))
}
