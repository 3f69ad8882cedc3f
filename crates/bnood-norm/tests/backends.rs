//! The same tiny input through flex, ndarray and wgpu: Batch-mode and Running-mode outputs
//! and the Train + apply update agree across backends.
//!
//! Tolerance: 1e-4 (relative to max(1, |value|)). All backends compute in f32 but may
//! reduce in different orders and use different rsqrt/division kernels (wgpu shaders on
//! lavapipe in CI); the outputs here are O(1–10), so a few ulps of f32 (~1e-6) per op is
//! far below 1e-4, while any formula difference (biased vs unbiased variance, ε misplaced)
//! is far above it.
//!
//! The wgpu test needs a Vulkan driver; on a machine without a GPU, use Mesa's lavapipe:
//! `VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json cargo test -p bnood-norm`.

mod common;

use bnood_norm::{RunningStatsTape, StatsMode};
use burn::tensor::{Device, DeviceKind};
use common::*;

const SHAPE: [usize; 4] = [3, 2, 2, 1];
const TOL: f64 = 1e-4;

fn values() -> LayerValues {
    LayerValues {
        gamma: vec![1.25, -0.5],
        beta: vec![0.75, 2.0],
        running_mean: vec![0.5, -1.0],
        running_var: vec![1.5, 0.25],
    }
}

fn input() -> Vec<f32> {
    nchw_input(51, SHAPE, &[2.0, -3.0], &[1.0, 0.5])
}

/// Batch output, Running output, and running mean/var after one Train + apply, on `device`.
/// The layer is built on `device` from the same host values each time.
fn outputs(device: &Device) -> [Vec<f32>; 4] {
    let layer = layer_with(device, 1e-3, 0.2, &values());
    let x = input();
    let batch = host(
        layer
            .forward(tensor4(&x, SHAPE, device), &StatsMode::Batch)
            .expect("batch"),
    );
    let running = host(
        layer
            .forward(tensor4(&x, SHAPE, device), &StatsMode::Running)
            .expect("running"),
    );
    let tape = RunningStatsTape::default();
    layer
        .forward(tensor4(&x, SHAPE, device), &StatsMode::Train(tape.clone()))
        .expect("train");
    let layer = tape.apply(layer);
    [
        batch,
        running,
        host_param(&layer.running_mean),
        host_param(&layer.running_var),
    ]
}

fn reference() -> [Vec<f64>; 4] {
    let v = values();
    let x = input();
    let batch = host_batch_norm(&x, SHAPE, 1e-3, &v.gamma, &v.beta);
    let running = host_normalise(
        &to_f64(&x),
        SHAPE,
        &to_f64(&v.running_mean),
        &to_f64(&v.running_var),
        1e-3,
        &to_f64(&v.gamma),
        &to_f64(&v.beta),
    );
    let (mean, var) = host_batch_stats(&x, SHAPE);
    let n = 6.0;
    let rm = v
        .running_mean
        .iter()
        .zip(&mean)
        .map(|(&r, m)| 0.8 * r as f64 + 0.2 * m)
        .collect();
    let rv = v
        .running_var
        .iter()
        .zip(&var)
        .map(|(&r, s)| 0.8 * r as f64 + 0.2 * s * n / (n - 1.0))
        .collect();
    [batch, running, rm, rv]
}

fn assert_agree(name: &str, got: &[Vec<f32>; 4], want: &[Vec<f64>; 4]) {
    for (what, (g, w)) in [
        "Batch output",
        "Running output",
        "running mean",
        "running var",
    ]
    .iter()
    .zip(got.iter().zip(want))
    {
        assert_close(g, w, TOL, &format!("{name}: {what}"));
    }
}

#[test]
fn flex_and_ndarray_agree_on_batch_running_and_train_within_1e_4() {
    let flex = outputs(&Device::flex());
    #[allow(deprecated)]
    let ndarray = outputs(&Device::ndarray());
    let host_ref = reference();
    assert_agree("flex vs host", &flex, &host_ref);
    assert_agree("ndarray vs host", &ndarray, &host_ref);
    let flex64: [Vec<f64>; 4] = flex.clone().map(|v| to_f64(&v));
    assert_agree("ndarray vs flex", &ndarray, &flex64);
}

#[test]
fn wgpu_agrees_with_flex_on_batch_running_and_train_within_1e_4() {
    let flex = outputs(&Device::flex());
    let wgpu = outputs(&Device::wgpu(DeviceKind::DefaultDevice));
    let flex64: [Vec<f64>; 4] = flex.map(|v| to_f64(&v));
    assert_agree("wgpu vs flex", &wgpu, &flex64);
    assert_agree("wgpu vs host", &wgpu, &reference());
}

#[test]
fn mixed_batch_agrees_between_flex_and_ndarray() {
    let run = |device: &Device| {
        let layer = layer_with(device, 1e-3, 0.2, &values());
        let x = input();
        let per = 2 * 2;
        let (out, _) = bnood_norm::mixed_batch(
            tensor4(&x[..per], [1, 2, 2, 1], device),
            Some(tensor4(&x[per..], [2, 2, 2, 1], device)),
            |t, mode| {
                let y = layer.forward(t, mode)?;
                let [n, c, h, w] = y.dims();
                Ok::<_, bnood_norm::NormError>(y.reshape([n, c * h * w]).sum_dim(1).reshape([n]))
            },
        )
        .expect("mixed batch");
        host(out)
    };
    let flex = run(&Device::flex());
    #[allow(deprecated)]
    let ndarray = run(&Device::ndarray());
    assert_close(
        &ndarray,
        &to_f64(&flex),
        TOL,
        "mixed batch, ndarray vs flex",
    );
}
