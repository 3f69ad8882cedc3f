//! Gradients through `Train` mode on an autodiff device, checked against central
//! differences of the same loss computed in f64 on the host.

mod common;

use bnood_norm::{RunningStatsTape, StatsMode};
use burn::tensor::Device;
use common::*;

const SHAPE: [usize; 4] = [3, 2, 2, 1];
const EPS: f64 = 1e-3;

/// loss = Σ (y · w)², y = BN(x) with batch statistics, all in f64.
fn host_loss(x: &[f64], gamma: &[f64], beta: &[f64], w: &[f64]) -> f64 {
    let [n, c, h, ww] = SHAPE;
    let hw = h * ww;
    let count = (n * hw) as f64;
    let mut loss = 0.0;
    for k in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|b| (0..hw).map(move |s| (b * c + k) * hw + s))
            .collect();
        let mean = idx.iter().map(|&i| x[i]).sum::<f64>() / count;
        let var = idx.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / count;
        for &i in &idx {
            let y = (x[i] - mean) / (var + EPS).sqrt() * gamma[k] + beta[k];
            loss += (y * w[i]).powi(2);
        }
    }
    loss
}

/// Central difference of `f` with respect to each coordinate of `at`.
fn central_diff(at: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-5;
    (0..at.len())
        .map(|i| {
            let mut plus = at.to_vec();
            let mut minus = at.to_vec();
            plus[i] += h;
            minus[i] -= h;
            (f(&plus) - f(&minus)) / (2.0 * h)
        })
        .collect()
}

#[test]
fn train_mode_gradients_match_central_differences() {
    let device = Device::flex().autodiff();
    let values = LayerValues {
        gamma: vec![1.5, -0.75],
        beta: vec![0.5, -1.25],
        running_mean: vec![0.0, 0.0],
        running_var: vec![1.0, 1.0],
    };
    let layer = layer_with(&device, EPS, 0.1, &values);
    let n = SHAPE.iter().product::<usize>();
    let x_host = nchw_input(21, SHAPE, &[1.0, -2.0], &[1.5, 0.75]);
    // Non-uniform weights: with w = 1 the loss would be (almost) constant in x.
    let w_host: Vec<f32> = (0..n).map(|i| 0.5 + 0.25 * i as f32).collect();

    let x = tensor4(&x_host, SHAPE, &device).require_grad();
    let w = tensor4(&w_host, SHAPE, &device);
    let tape = RunningStatsTape::default();
    let y = layer
        .forward(x.clone(), &StatsMode::Train(tape.clone()))
        .expect("train forward");
    let loss = (y * w).powi_scalar(2).sum();
    let loss_value = host(loss.clone())[0] as f64;
    let grads = loss.backward();

    let gx = host(x.grad(&grads).expect("gradient w.r.t. the input"));
    let gg = host(layer.gamma.grad(&grads).expect("gradient w.r.t. gamma"));
    let gb = host(layer.beta.grad(&grads).expect("gradient w.r.t. beta"));
    assert!(
        layer.running_mean.grad(&grads).is_none() && layer.running_var.grad(&grads).is_none(),
        "running stats are not trainable"
    );
    for (name, g) in [("x", &gx), ("gamma", &gg), ("beta", &gb)] {
        assert!(
            g.iter().any(|v| v.abs() > 1e-3),
            "gradient of {name} is zero: {g:?}"
        );
    }

    let xs = to_f64(&x_host);
    let gs = to_f64(&values.gamma);
    let bs = to_f64(&values.beta);
    let ws = to_f64(&w_host);
    assert!(
        (loss_value - host_loss(&xs, &gs, &bs, &ws)).abs() < 1e-4 * loss_value.abs().max(1.0),
        "loss value"
    );

    // The input gradient includes the dependence of the batch mean and variance on x: the
    // "frozen statistics" gradient (γ·2·y·w²/√(σ²+ε)) would fail this.
    let fd_x = central_diff(&xs, |x| host_loss(x, &gs, &bs, &ws));
    assert_close(&gx, &fd_x, 2e-3, "dL/dx");
    let fd_gamma = central_diff(&gs, |g| host_loss(&xs, g, &bs, &ws));
    assert_close(&gg, &fd_gamma, 2e-3, "dL/dgamma");
    let fd_beta = central_diff(&bs, |b| host_loss(&xs, &gs, b, &ws));
    assert_close(&gb, &fd_beta, 2e-3, "dL/dbeta");

    // Train recorded its statistics (without gradients) and apply still works after backward.
    assert_eq!(tape.len(), 1);
    let layer = tape.apply(layer);
    assert!(tape.is_empty());
    let (mean, _) = host_batch_stats(&x_host, SHAPE);
    assert_close(
        &host_param(&layer.running_mean),
        &mean.iter().map(|m| 0.1 * m).collect::<Vec<_>>(),
        1e-5,
        "running mean after backward + apply",
    );
}

#[test]
fn frozen_statistics_gradient_differs_from_the_true_one() {
    // Guards the test above: the finite-difference check can tell the true gradient from
    // one that treats the batch statistics as constants.
    let gamma = [1.5f64, -0.75];
    let beta = [0.5f64, -1.25];
    let n = SHAPE.iter().product::<usize>();
    let x = to_f64(&nchw_input(21, SHAPE, &[1.0, -2.0], &[1.5, 0.75]));
    let w: Vec<f64> = (0..n).map(|i| 0.5 + 0.25 * i as f64).collect();
    let fd = central_diff(&x, |xx| host_loss(xx, &gamma, &beta, &w));

    let (mean, var) = host_batch_stats(&x.iter().map(|&v| v as f32).collect::<Vec<_>>(), SHAPE);
    let [_, c, h, ww] = SHAPE;
    let frozen: Vec<f64> = (0..n)
        .map(|i| {
            let k = (i / (h * ww)) % c;
            let inv = 1.0 / (var[k] + EPS).sqrt();
            let y = (x[i] - mean[k]) * inv * gamma[k] + beta[k];
            2.0 * y * w[i] * w[i] * gamma[k] * inv
        })
        .collect();
    let gap = frozen
        .iter()
        .zip(&fd)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(gap > 0.1, "frozen-statistics gradient should differ: {gap}");
}

#[test]
fn batch_mode_gradients_flow_too() {
    // Batch mode (used for scoring, e.g. input gradients) is differentiable in the same way.
    let device = Device::flex().autodiff();
    let values = LayerValues {
        gamma: vec![1.5, -0.75],
        beta: vec![0.5, -1.25],
        running_mean: vec![0.0, 0.0],
        running_var: vec![1.0, 1.0],
    };
    let layer = layer_with(&device, EPS, 0.1, &values);
    let n = SHAPE.iter().product::<usize>();
    let x_host = nchw_input(22, SHAPE, &[1.0, -2.0], &[1.5, 0.75]);
    let w_host: Vec<f32> = (0..n).map(|i| 1.0 - 0.1 * i as f32).collect();
    let x = tensor4(&x_host, SHAPE, &device).require_grad();
    let y = layer
        .forward(x.clone(), &StatsMode::Batch)
        .expect("batch forward");
    let grads = (y * tensor4(&w_host, SHAPE, &device))
        .powi_scalar(2)
        .sum()
        .backward();
    let gx = host(x.grad(&grads).expect("input gradient"));
    let fd = central_diff(&to_f64(&x_host), |xx| {
        host_loss(
            xx,
            &to_f64(&values.gamma),
            &to_f64(&values.beta),
            &to_f64(&w_host),
        )
    });
    assert_close(&gx, &fd, 2e-3, "dL/dx in Batch mode");
}
