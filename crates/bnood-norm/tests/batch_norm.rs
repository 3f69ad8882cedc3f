//! `BatchNorm` and `StatsMode`: the Batch/Running/Train formulas against host math and
//! against burn's own BatchNorm, the running-average bookkeeping of the tape, errors,
//! clones, save/load, determinism.

mod common;

use bnood_norm::{BatchNorm, BatchNormConfig, NormError, RunningStatsTape, StatsMode};
use burn::module::{Module, Param, RunningState};
use burn::tensor::{Device, Tensor};
use common::*;

const SHAPE: [usize; 4] = [4, 3, 2, 2];
const OFFSETS: [f32; 3] = [3.0, -1.5, 0.25];
const SCALES: [f32; 3] = [2.0, 0.5, 4.0];

fn input(seed: u64) -> Vec<f32> {
    nchw_input(seed, SHAPE, &OFFSETS, &SCALES)
}

fn running_state(layer: &BatchNorm) -> (Vec<f32>, Vec<f32>) {
    (
        host_param(&layer.running_mean),
        host_param(&layer.running_var),
    )
}

fn running_bits(layer: &BatchNorm) -> (Vec<u32>, Vec<u32>) {
    let (m, v) = running_state(layer);
    (bits(&m), bits(&v))
}

/// `running ← (1 − m)·running + m·batch` per channel.
fn ema(running: &[f64], batch: &[f64], momentum: f64) -> Vec<f64> {
    running
        .iter()
        .zip(batch)
        .map(|(r, b)| (1.0 - momentum) * r + momentum * b)
        .collect()
}

fn unbiased(var: &[f64], n: usize) -> Vec<f64> {
    let n = n as f64;
    var.iter().map(|v| v * n / (n - 1.0)).collect()
}

// ---------------------------------------------------------------------------------------
// 1. Batch mode formula
// ---------------------------------------------------------------------------------------

#[test]
fn batch_mode_equals_the_formula_computed_by_hand() {
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let eps = 1e-3; // large enough that dropping or misplacing ε would show at 1e-5
    let layer = layer_with(&device, eps, 0.1, &values);
    let x = input(1);

    let y = host(
        layer
            .forward(tensor4(&x, SHAPE, &device), &StatsMode::Batch)
            .expect("batch forward"),
    );

    let expected = host_batch_norm(&x, SHAPE, eps, &values.gamma, &values.beta);
    assert_close(&y, &expected, 1e-5, "Batch output");

    // The same formula with the *unbiased* variance (or with the running stats) would be a
    // different answer: make sure the reference discriminates.
    let (mean, var) = host_batch_stats(&x, SHAPE);
    let wrong = host_normalise(
        &to_f64(&x),
        SHAPE,
        &mean,
        &unbiased(&var, 16),
        eps,
        &to_f64(&values.gamma),
        &to_f64(&values.beta),
    );
    let max_gap = wrong
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        max_gap > 1e-3,
        "the unbiased-variance variant should differ visibly"
    );
}

#[test]
fn batch_mode_per_channel_output_has_mean_beta_and_std_gamma() {
    // Independent of the host formula: after Batch normalisation channel k has mean β_k and
    // (biased) standard deviation |γ_k|·√(σ²/(σ²+ε)).
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let eps = 1e-5;
    let layer = layer_with(&device, eps, 0.1, &values);
    let x = input(2);
    let y = host(
        layer
            .forward(tensor4(&x, SHAPE, &device), &StatsMode::Batch)
            .expect("batch forward"),
    );
    let (_, in_var) = host_batch_stats(&x, SHAPE);
    let (out_mean, out_var) = host_batch_stats(&y, SHAPE);
    for k in 0..3 {
        let g = values.gamma[k] as f64;
        assert!(
            (out_mean[k] - values.beta[k] as f64).abs() < 1e-5,
            "channel {k} mean"
        );
        let expected_sd = g.abs() * (in_var[k] / (in_var[k] + eps)).sqrt();
        assert!(
            (out_var[k].sqrt() - expected_sd).abs() < 1e-5,
            "channel {k} sd: {} vs {expected_sd}",
            out_var[k].sqrt()
        );
    }
}

#[test]
fn batch_mode_works_on_rank_2_and_rank_3_inputs() {
    // [N, C] (dense layer) and [N, C, L]: statistics over every dim but 1.
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let layer = layer_with(&device, 1e-5, 0.1, &values);
    let x = input(3); // 48 values = [4, 3, 4] = [16, 3] reinterpreted
    // [N, C, L] = [4, 3, 4] is laid out exactly like [4, 3, 2, 2].
    let y3 = host(
        layer
            .forward(
                tensor4(&x, SHAPE, &device).reshape([4, 3, 4]),
                &StatsMode::Batch,
            )
            .expect("rank 3"),
    );
    assert_close(
        &y3,
        &host_batch_norm(&x, SHAPE, 1e-5, &values.gamma, &values.beta),
        1e-5,
        "rank 3",
    );
    // [16, 3] is [16, 3, 1, 1].
    let y2 = host(
        layer
            .forward(
                tensor4(&x, [16, 3, 1, 1], &device).reshape([16, 3]),
                &StatsMode::Batch,
            )
            .expect("rank 2"),
    );
    assert_close(
        &y2,
        &host_batch_norm(&x, [16, 3, 1, 1], 1e-5, &values.gamma, &values.beta),
        1e-5,
        "rank 2",
    );
}

// ---------------------------------------------------------------------------------------
// 2. Batch leaves running state alone
// ---------------------------------------------------------------------------------------

#[test]
fn batch_mode_leaves_running_state_bit_identical() {
    let device = Device::flex();
    let layer = layer_with(&device, 1e-5, 0.1, &LayerValues::three_channels());
    let before = running_bits(&layer);
    let gamma_before = bits(&host_param(&layer.gamma));

    layer
        .forward(tensor4(&input(4), SHAPE, &device), &StatsMode::Batch)
        .expect("batch forward");
    assert_eq!(running_bits(&layer), before, "after one Batch call");

    for seed in 0..50 {
        layer
            .forward(
                tensor4(&input(100 + seed), SHAPE, &device),
                &StatsMode::Batch,
            )
            .expect("batch forward");
    }
    assert_eq!(running_bits(&layer), before, "after many Batch calls");
    assert_eq!(bits(&host_param(&layer.gamma)), gamma_before);

    // And Running mode still uses the untouched stats.
    let x = input(5);
    let y = host(
        layer
            .forward(tensor4(&x, SHAPE, &device), &StatsMode::Running)
            .expect("running"),
    );
    let v = LayerValues::three_channels();
    let expected = host_normalise(
        &to_f64(&x),
        SHAPE,
        &to_f64(&v.running_mean),
        &to_f64(&v.running_var),
        1e-5,
        &to_f64(&v.gamma),
        &to_f64(&v.beta),
    );
    assert_close(&y, &expected, 1e-5, "Running after Batch calls");
}

// ---------------------------------------------------------------------------------------
// 3. Train + tape
// ---------------------------------------------------------------------------------------

#[test]
fn train_then_apply_updates_running_stats_with_momentum_and_unbiased_variance() {
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let momentum = 0.3;
    let layer = layer_with(&device, 1e-5, momentum, &values);
    let x = input(6);

    let tape = RunningStatsTape::default();
    let mode = StatsMode::Train(tape.clone());
    let y_train = host(
        layer
            .forward(tensor4(&x, SHAPE, &device), &mode)
            .expect("train forward"),
    );
    assert_eq!(tape.len(), 1, "one observation recorded");
    // Recording alone changes nothing.
    let (m0, v0) = running_state(&layer);
    assert_eq!(bits(&m0), bits(&values.running_mean));
    assert_eq!(bits(&v0), bits(&values.running_var));

    // Train normalises exactly like Batch.
    let y_batch = host(
        layer
            .forward(tensor4(&x, SHAPE, &device), &StatsMode::Batch)
            .expect("batch"),
    );
    assert_eq!(
        bits(&y_train),
        bits(&y_batch),
        "Train output == Batch output"
    );

    let layer = tape.apply(layer);
    assert!(tape.is_empty(), "apply empties the tape");
    assert_eq!(tape.len(), 0);

    let (mean, var) = host_batch_stats(&x, SHAPE);
    let exp_mean = ema(&to_f64(&values.running_mean), &mean, momentum);
    let exp_var = ema(&to_f64(&values.running_var), &unbiased(&var, 16), momentum);
    let (m1, v1) = running_state(&layer);
    assert_close(&m1, &exp_mean, 1e-5, "running mean");
    assert_close(&v1, &exp_var, 1e-5, "running var (unbiased)");

    // The biased-variance update would be a different number: the check can fail.
    let biased_var = ema(&to_f64(&values.running_var), &var, momentum);
    assert!(
        v1.iter()
            .zip(&biased_var)
            .any(|(a, b)| (*a as f64 - b).abs() > 1e-3),
        "unbiased and biased updates should be distinguishable here"
    );
    // γ and β are untouched by apply.
    assert_eq!(bits(&host_param(&layer.gamma)), bits(&values.gamma));
    assert_eq!(bits(&host_param(&layer.beta)), bits(&values.beta));

    // Applying the (now empty) tape again does not update twice.
    let before = running_bits(&layer);
    let layer = tape.apply(layer);
    assert_eq!(running_bits(&layer), before, "second apply is a no-op");
}

/// A kernel that normalises outside `forward` (RealNVP's channels-last one) records its batch
/// statistics with `RunningStatsTape::record`: the running averages move exactly as after a
/// `Train` forward pass over the same batch.
#[test]
fn recorded_batch_statistics_update_running_stats_as_a_train_forward_does() {
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let x = input(8);
    let by_forward = layer_with(&device, 1e-5, 0.3, &values);
    let mode = StatsMode::train();
    by_forward
        .forward(tensor4(&x, SHAPE, &device), &mode)
        .expect("train forward");
    let StatsMode::Train(forward_tape) = mode else {
        unreachable!("StatsMode::train() is Train")
    };
    let by_forward = forward_tape.apply(by_forward);

    let by_record = layer_with(&device, 1e-5, 0.3, &values);
    // The batch's mean and biased variance per channel, as a kernel would compute them.
    let (mean, var) = host_batch_stats(&x, SHAPE);
    let statistic = |v: &[f64]| tensor1(&v.iter().map(|&v| v as f32).collect::<Vec<_>>(), &device);
    let tape = RunningStatsTape::default();
    tape.record(&by_record, statistic(&mean), statistic(&var), 16)
        .expect("statistics of the layer's 3 channels over 16 values");
    assert_eq!(tape.len(), 1);
    let by_record = tape.apply(by_record);
    let (m, v) = running_state(&by_record);
    assert_close(
        &m,
        &ema(&to_f64(&values.running_mean), &mean, 0.3),
        1e-5,
        "mean",
    );
    assert_close(
        &v,
        &ema(&to_f64(&values.running_var), &unbiased(&var, 16), 0.3),
        1e-5,
        "var",
    );
    let (fm, fv) = running_state(&by_forward);
    assert_close(&m, &to_f64(&fm), 1e-6, "mean as forward");
    assert_close(&v, &to_f64(&fv), 1e-6, "var as forward");

    // Statistics of another width, or over fewer than 2 values, are refused.
    let three = || Tensor::<1>::zeros([3], &device);
    let err = tape.record(&by_record, Tensor::zeros([2], &device), three(), 16);
    assert!(matches!(
        err,
        Err(NormError::InvalidStatistics { channels: 3, .. })
    ));
    let err = tape.record(&by_record, three(), three(), 1);
    assert!(matches!(err, Err(NormError::InvalidStatistics { .. })));
    assert!(tape.is_empty(), "nothing recorded on an error");
}

#[test]
fn train_mode_helper_starts_with_an_empty_tape_and_uses_batch_statistics() {
    let mode = StatsMode::train();
    match &mode {
        StatsMode::Train(tape) => assert!(tape.is_empty()),
        other => panic!("expected Train, got {other:?}"),
    }
    assert!(mode.uses_batch_statistics());
    assert!(StatsMode::Batch.uses_batch_statistics());
    assert!(!StatsMode::Running.uses_batch_statistics());
    assert!(matches!(StatsMode::default(), StatsMode::Running));
}

#[test]
fn two_train_calls_on_one_tape_apply_in_order() {
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let momentum = 0.4;
    let layer = layer_with(&device, 1e-5, momentum, &values);
    let x1 = input(7);
    // The second batch has very different statistics so that the order matters.
    let x2 = nchw_input(8, SHAPE, &[-4.0, 6.0, 10.0], &[0.25, 3.0, 1.0]);

    let tape = RunningStatsTape::default();
    let mode = StatsMode::Train(tape.clone());
    layer
        .forward(tensor4(&x1, SHAPE, &device), &mode)
        .expect("first");
    layer
        .forward(tensor4(&x2, SHAPE, &device), &mode)
        .expect("second");
    assert_eq!(tape.len(), 2);
    let layer = tape.apply(layer);
    assert!(tape.is_empty());

    let (mean1, var1) = host_batch_stats(&x1, SHAPE);
    let (mean2, var2) = host_batch_stats(&x2, SHAPE);
    let rm0 = to_f64(&values.running_mean);
    let rv0 = to_f64(&values.running_var);
    let exp_mean = ema(&ema(&rm0, &mean1, momentum), &mean2, momentum);
    let exp_var = ema(
        &ema(&rv0, &unbiased(&var1, 16), momentum),
        &unbiased(&var2, 16),
        momentum,
    );
    let (m, v) = running_state(&layer);
    assert_close(&m, &exp_mean, 1e-5, "running mean after two calls");
    assert_close(&v, &exp_var, 1e-5, "running var after two calls");

    // Reverse order gives a different result, so the assertion above pins the order.
    let rev_mean = ema(&ema(&rm0, &mean2, momentum), &mean1, momentum);
    assert!(
        rev_mean
            .iter()
            .zip(&exp_mean)
            .any(|(a, b)| (a - b).abs() > 0.1)
    );

    // Same as two separate steps (fresh tape each time).
    let layer2 = layer_with(&device, 1e-5, momentum, &values);
    let t1 = RunningStatsTape::default();
    layer2
        .forward(tensor4(&x1, SHAPE, &device), &StatsMode::Train(t1.clone()))
        .expect("step 1");
    let layer2 = t1.apply(layer2);
    let t2 = RunningStatsTape::default();
    layer2
        .forward(tensor4(&x2, SHAPE, &device), &StatsMode::Train(t2.clone()))
        .expect("step 2");
    let layer2 = t2.apply(layer2);
    let (m2, v2) = running_state(&layer2);
    assert_close(&m2, &to_f64(&m), 1e-6, "one tape vs two steps (mean)");
    assert_close(&v2, &to_f64(&v), 1e-6, "one tape vs two steps (var)");
}

#[test]
fn empty_tape_leaves_the_module_unchanged() {
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let layer = layer_with(&device, 1e-5, 0.5, &values);
    let before = running_bits(&layer);
    let ids = (layer.running_mean.id, layer.running_var.id, layer.gamma.id);

    let tape = RunningStatsTape::default();
    assert!(tape.is_empty());
    let layer = tape.apply(layer);
    assert_eq!(running_bits(&layer), before);
    assert_eq!(bits(&host_param(&layer.gamma)), bits(&values.gamma));
    assert_eq!(bits(&host_param(&layer.beta)), bits(&values.beta));
    assert_eq!(
        (layer.running_mean.id, layer.running_var.id, layer.gamma.id),
        ids
    );

    // Batch and Running calls record nothing on a tape someone holds.
    let tape = RunningStatsTape::default();
    layer
        .forward(tensor4(&input(9), SHAPE, &device), &StatsMode::Batch)
        .expect("batch");
    layer
        .forward(tensor4(&input(9), SHAPE, &device), &StatsMode::Running)
        .expect("running");
    assert!(tape.is_empty());
}

#[test]
fn tape_only_updates_the_layer_it_observed() {
    // Two layers in one module-like pair; a tape recorded on `a` must leave `b` alone.
    #[derive(Module, Debug)]
    struct Pair {
        a: BatchNorm,
        b: BatchNorm,
    }
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let pair = Pair {
        a: layer_with(&device, 1e-5, 0.5, &values),
        b: layer_with(&device, 1e-5, 0.5, &values),
    };
    let b_before = running_bits(&pair.b);
    let tape = RunningStatsTape::default();
    pair.a
        .forward(
            tensor4(&input(10), SHAPE, &device),
            &StatsMode::Train(tape.clone()),
        )
        .expect("train a");
    let pair = tape.apply(pair);
    assert_eq!(running_bits(&pair.b), b_before, "b untouched");
    assert_ne!(running_bits(&pair.a), b_before, "a updated");
}

#[test]
fn momentum_zero_keeps_and_momentum_one_replaces_running_stats() {
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let x = input(11);
    let (mean, var) = host_batch_stats(&x, SHAPE);

    let keep = layer_with(&device, 1e-5, 0.0, &values);
    let tape = RunningStatsTape::default();
    keep.forward(tensor4(&x, SHAPE, &device), &StatsMode::Train(tape.clone()))
        .expect("train");
    let keep = tape.apply(keep);
    let (m, v) = running_state(&keep);
    assert_eq!(bits(&m), bits(&values.running_mean));
    assert_eq!(bits(&v), bits(&values.running_var));

    let replace = layer_with(&device, 1e-5, 1.0, &values);
    let tape = RunningStatsTape::default();
    replace
        .forward(tensor4(&x, SHAPE, &device), &StatsMode::Train(tape.clone()))
        .expect("train");
    let replace = tape.apply(replace);
    let (m, v) = running_state(&replace);
    assert_close(&m, &mean, 1e-5, "mean replaced");
    assert_close(&v, &unbiased(&var, 16), 1e-5, "var replaced (unbiased)");
}

// ---------------------------------------------------------------------------------------
// 4. Running mode vs burn's inference BatchNorm
// ---------------------------------------------------------------------------------------

fn burn_batch_norm(
    device: &Device,
    eps: f64,
    momentum: f64,
    v: &LayerValues,
) -> burn::nn::BatchNorm {
    let mut bn = burn::nn::BatchNormConfig::new(v.gamma.len())
        .with_epsilon(eps)
        .with_momentum(momentum)
        .init(device);
    bn.gamma = Param::from_tensor(tensor1(&v.gamma, device));
    bn.beta = Param::from_tensor(tensor1(&v.beta, device));
    bn.running_mean = RunningState::new(tensor1(&v.running_mean, device));
    bn.running_var = RunningState::new(tensor1(&v.running_var, device));
    bn
}

#[test]
fn running_mode_matches_burns_inference_batch_norm() {
    let device = Device::flex(); // not autodiff: burn's BatchNorm takes its inference path
    let values = LayerValues::three_channels();
    let eps = 1e-4;
    let ours = layer_with(&device, eps, 0.1, &values);
    let theirs = burn_batch_norm(&device, eps, 0.1, &values);
    let x = input(12);

    let y_ours = host(
        ours.forward(tensor4(&x, SHAPE, &device), &StatsMode::Running)
            .expect("running"),
    );
    let y_burn = host(theirs.forward(tensor4(&x, SHAPE, &device)));
    assert_close(
        &y_ours,
        &to_f64(&y_burn),
        1e-5,
        "ours vs burn::nn::BatchNorm",
    );

    // Both equal the host formula with the running statistics…
    let expected = host_normalise(
        &to_f64(&x),
        SHAPE,
        &to_f64(&values.running_mean),
        &to_f64(&values.running_var),
        eps,
        &to_f64(&values.gamma),
        &to_f64(&values.beta),
    );
    assert_close(&y_ours, &expected, 1e-5, "Running vs host formula");
    // …and not the batch-statistics one.
    let batch = host_batch_norm(&x, SHAPE, eps, &values.gamma, &values.beta);
    assert!(
        y_ours
            .iter()
            .zip(&batch)
            .any(|(a, b)| (*a as f64 - b).abs() > 0.1)
    );
}

#[test]
fn running_mode_output_of_each_sample_is_independent_of_the_batch() {
    let device = Device::flex();
    let layer = layer_with(&device, 1e-5, 0.1, &LayerValues::three_channels());
    let x = input(13);
    let full = host(
        layer
            .forward(tensor4(&x, SHAPE, &device), &StatsMode::Running)
            .expect("running"),
    );
    let per_sample = 3 * 2 * 2;
    let first = host(
        layer
            .forward(
                tensor4(&x[..per_sample], [1, 3, 2, 2], &device),
                &StatsMode::Running,
            )
            .expect("running, one sample"),
    );
    assert_close(&first, &to_f64(&full[..per_sample]), 1e-6, "sample 0");
    // In Batch mode it is not.
    let batch_full = host(
        layer
            .forward(tensor4(&x, SHAPE, &device), &StatsMode::Batch)
            .expect("batch"),
    );
    let batch_two = host(
        layer
            .forward(
                tensor4(&x[..2 * per_sample], [2, 3, 2, 2], &device),
                &StatsMode::Batch,
            )
            .expect("batch, two samples"),
    );
    assert!(
        batch_two
            .iter()
            .zip(&batch_full[..2 * per_sample])
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
}

#[test]
fn batch_mode_matches_burns_training_forward_and_running_mean_update() {
    // burn's BatchNorm takes its training path on an autodiff device: its output uses batch
    // statistics like our Batch/Train mode. Its running *mean* update uses the same EMA;
    // its running variance uses the biased variance (ours: unbiased, PyTorch's convention).
    let device = Device::flex().autodiff();
    let values = LayerValues::three_channels();
    let momentum = 0.25;
    let ours = layer_with(&device, 1e-5, momentum, &values);
    let theirs = burn_batch_norm(&device, 1e-5, momentum, &values);
    let x = input(14);

    let tape = RunningStatsTape::default();
    let y_ours = host(
        ours.forward(tensor4(&x, SHAPE, &device), &StatsMode::Train(tape.clone()))
            .expect("train"),
    );
    let y_burn = host(theirs.forward(tensor4(&x, SHAPE, &device)));
    assert_close(
        &y_ours,
        &to_f64(&y_burn),
        1e-5,
        "Train output vs burn training output",
    );

    let ours = tape.apply(ours);
    let burn_mean = host(theirs.running_mean.value_sync());
    let burn_var = host(theirs.running_var.value_sync());
    assert_close(
        &host_param(&ours.running_mean),
        &to_f64(&burn_mean),
        1e-5,
        "running mean vs burn",
    );
    // Ours = burn's with the batch variance scaled by n/(n−1).
    let (_, var) = host_batch_stats(&x, SHAPE);
    let rv0 = to_f64(&values.running_var);
    let burn_expected = ema(&rv0, &var, momentum);
    assert_close(
        &burn_var,
        &burn_expected,
        1e-5,
        "burn's (biased) running var",
    );
    assert_close(
        &host_param(&ours.running_var),
        &ema(&rv0, &unbiased(&var, 16), momentum),
        1e-5,
        "our (unbiased) running var",
    );
}

// ---------------------------------------------------------------------------------------
// 6. Errors
// ---------------------------------------------------------------------------------------

#[test]
fn batch_statistics_over_one_value_per_channel_are_an_error() {
    let device = Device::flex();
    let layer = layer_with(&device, 1e-5, 0.1, &LayerValues::three_channels());
    let x = [0.5f32, -1.0, 2.0];

    for mode in [StatsMode::Batch, StatsMode::train()] {
        let err = layer
            .forward(tensor4(&x, [1, 3, 1, 1], &device), &mode)
            .expect_err("one value per channel");
        assert_eq!(
            err,
            NormError::TooFewValues {
                values: 1,
                shape: vec![1, 3, 1, 1]
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("use a batch of at least 2 samples"),
            "message: {msg}"
        );
        assert!(msg.contains("1 value(s) per channel"), "message: {msg}");
        assert!(msg.contains("[1, 3, 1, 1]"), "message: {msg}");
        if let StatsMode::Train(tape) = &mode {
            assert!(tape.is_empty(), "a failed Train call records nothing");
        }
    }

    // Rank 2 with one row, and an empty batch, too.
    let err = layer
        .forward(
            tensor4(&x, [1, 3, 1, 1], &device).reshape([1, 3]),
            &StatsMode::Batch,
        )
        .expect_err("[1, 3]");
    assert!(matches!(err, NormError::TooFewValues { values: 1, .. }));
    let empty: Tensor<4> = Tensor::zeros([0, 3, 2, 2], &device);
    let err = layer
        .forward(empty, &StatsMode::Batch)
        .expect_err("empty batch");
    assert!(matches!(err, NormError::TooFewValues { values: 0, .. }));

    // One sample with 2 spatial positions is enough.
    layer
        .forward(
            tensor4(&[1.0, 2.0, 3.0, 4.0, 5.0, 7.0], [1, 3, 2, 1], &device),
            &StatsMode::Batch,
        )
        .expect("two values per channel");
}

#[test]
fn one_sample_in_running_mode_is_fine() {
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let layer = layer_with(&device, 1e-5, 0.1, &values);
    let x = [0.5f32, -1.0, 2.0];
    let y = host(
        layer
            .forward(tensor4(&x, [1, 3, 1, 1], &device), &StatsMode::Running)
            .expect("running mode, one sample"),
    );
    let expected = host_normalise(
        &to_f64(&x),
        [1, 3, 1, 1],
        &to_f64(&values.running_mean),
        &to_f64(&values.running_var),
        1e-5,
        &to_f64(&values.gamma),
        &to_f64(&values.beta),
    );
    assert_close(&y, &expected, 1e-5, "one sample, Running");
}

#[test]
fn wrong_channel_count_is_a_channel_mismatch() {
    let device = Device::flex();
    let layer = layer_with(&device, 1e-5, 0.1, &LayerValues::three_channels());
    for mode in [StatsMode::Running, StatsMode::Batch, StatsMode::train()] {
        let x: Tensor<4> = Tensor::ones([2, 4, 2, 2], &device);
        let err = layer.forward(x, &mode).expect_err("4 channels into 3");
        assert_eq!(
            err,
            NormError::ChannelMismatch {
                expected: 3,
                shape: vec![2, 4, 2, 2]
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("BatchNorm over 3 channels"), "message: {msg}");
        assert!(msg.contains("[2, 4, 2, 2]"), "message: {msg}");
        assert!(msg.contains("[N, 3, ...]"), "message: {msg}");
    }
    // Channels-last by mistake: [N, H, W, C].
    let err = layer
        .forward(Tensor::<4>::ones([2, 2, 2, 3], &device), &StatsMode::Batch)
        .expect_err("channels last");
    assert!(matches!(
        err,
        NormError::ChannelMismatch { expected: 3, .. }
    ));
    // Rank 1 has no channel dimension.
    let err = layer
        .forward(Tensor::<1>::ones([3], &device), &StatsMode::Running)
        .expect_err("rank 1");
    assert_eq!(
        err,
        NormError::ChannelMismatch {
            expected: 3,
            shape: vec![3]
        }
    );
}

#[test]
fn invalid_configs_are_rejected_with_a_message() {
    let device = Device::flex();
    let invalid = |cfg: BatchNormConfig| -> String {
        match cfg.init(&device) {
            Err(e @ NormError::InvalidConfig(_)) => e.to_string(),
            Err(other) => panic!("{cfg:?}: expected InvalidConfig, got {other:?}"),
            Ok(_) => panic!("{cfg:?}: expected InvalidConfig, got a layer"),
        }
    };

    let msg = invalid(BatchNormConfig::new(0));
    assert!(
        msg.starts_with("invalid BatchNorm configuration: "),
        "{msg}"
    );
    assert!(msg.contains("num_features is 0"), "{msg}");

    for eps in [0.0, -1e-5, f64::NAN, f64::INFINITY] {
        let msg = invalid(BatchNormConfig::new(3).with_epsilon(eps));
        assert!(msg.contains("epsilon"), "{msg}");
        assert!(msg.contains("must be finite and positive"), "{msg}");
    }
    let msg = invalid(BatchNormConfig::new(3).with_epsilon(0.0));
    assert!(
        msg.contains("epsilon 0 must be finite and positive"),
        "{msg}"
    );

    for momentum in [1.5, -0.1, f64::NAN, f64::INFINITY] {
        let msg = invalid(BatchNormConfig::new(3).with_momentum(momentum));
        assert!(msg.contains("must lie in [0, 1]"), "{msg}");
    }
    let msg = invalid(BatchNormConfig::new(3).with_momentum(1.5));
    assert!(msg.contains("momentum 1.5 must lie in [0, 1]"), "{msg}");

    // The boundaries are valid, and defaults are PyTorch's.
    for momentum in [0.0, 1.0] {
        BatchNormConfig::new(3)
            .with_momentum(momentum)
            .init(&device)
            .expect("momentum at the boundary");
    }
    let cfg = BatchNormConfig::new(5);
    assert_eq!((cfg.epsilon, cfg.momentum), (1e-5, 0.1));
    let layer = cfg.init(&device).expect("defaults");
    assert_eq!(layer.num_features(), 5);
    assert_eq!((layer.epsilon, layer.momentum), (1e-5, 0.1));
    assert_eq!(host_param(&layer.gamma), vec![1.0; 5]);
    assert_eq!(host_param(&layer.beta), vec![0.0; 5]);
    assert_eq!(host_param(&layer.running_mean), vec![0.0; 5]);
    assert_eq!(host_param(&layer.running_var), vec![1.0; 5]);
}

// ---------------------------------------------------------------------------------------
// 7. Clones
// ---------------------------------------------------------------------------------------

#[test]
fn clones_do_not_share_running_state() {
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let original = layer_with(&device, 1e-5, 0.5, &values);
    let before = running_bits(&original);

    let clone = original.clone();
    let tape = RunningStatsTape::default();
    clone
        .forward(
            tensor4(&input(15), SHAPE, &device),
            &StatsMode::Train(tape.clone()),
        )
        .expect("train on clone");
    let clone = tape.apply(clone);

    assert_ne!(running_bits(&clone), before, "the clone was updated");
    assert_eq!(running_bits(&original), before, "the original was not");
    // And the original still normalises with its own stats.
    let x = input(16);
    let y = host(
        original
            .forward(tensor4(&x, SHAPE, &device), &StatsMode::Running)
            .expect("running"),
    );
    let expected = host_normalise(
        &to_f64(&x),
        SHAPE,
        &to_f64(&values.running_mean),
        &to_f64(&values.running_var),
        1e-5,
        &to_f64(&values.gamma),
        &to_f64(&values.beta),
    );
    assert_close(&y, &expected, 1e-5, "original after clone's update");
}

// ---------------------------------------------------------------------------------------
// 8. Save / load
// ---------------------------------------------------------------------------------------

#[test]
fn save_and_load_round_trip_keeps_running_stats_exactly() {
    let device = Device::flex();
    let values = LayerValues::three_channels();
    let layer = layer_with(&device, 1e-5, 0.3, &values);
    let tape = RunningStatsTape::default();
    layer
        .forward(
            tensor4(&input(17), SHAPE, &device),
            &StatsMode::Train(tape.clone()),
        )
        .expect("train");
    let trained = tape.apply(layer);
    let trained_bits = running_bits(&trained);
    assert_ne!(
        trained_bits,
        (bits(&values.running_mean), bits(&values.running_var)),
        "the update happened"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bn.bpk");
    trained.clone().save_file(&path).expect("save");

    let fresh = BatchNormConfig::new(3)
        .with_momentum(0.3)
        .init(&device)
        .expect("fresh layer");
    assert_ne!(running_bits(&fresh), trained_bits);
    let loaded = fresh.load_file(&path);

    assert_eq!(running_bits(&loaded), trained_bits, "running stats survive");
    assert_eq!(
        bits(&host_param(&loaded.gamma)),
        bits(&host_param(&trained.gamma))
    );
    assert_eq!(
        bits(&host_param(&loaded.beta)),
        bits(&host_param(&trained.beta))
    );

    // The loaded layer behaves identically in Running mode…
    let x = input(18);
    let y_trained = host(
        trained
            .forward(tensor4(&x, SHAPE, &device), &StatsMode::Running)
            .expect("running"),
    );
    let y_loaded = host(
        loaded
            .forward(tensor4(&x, SHAPE, &device), &StatsMode::Running)
            .expect("running"),
    );
    assert_eq!(bits(&y_loaded), bits(&y_trained));

    // …and keeps training: a further Train + apply updates the loaded running stats.
    let tape = RunningStatsTape::default();
    loaded
        .forward(tensor4(&x, SHAPE, &device), &StatsMode::Train(tape.clone()))
        .expect("train loaded");
    let loaded = tape.apply(loaded);
    let (mean, var) = host_batch_stats(&x, SHAPE);
    let (m, v) = running_state(&trained);
    assert_close(
        &host_param(&loaded.running_mean),
        &ema(&to_f64(&m), &mean, 0.3),
        1e-5,
        "loaded layer, next update (mean)",
    );
    assert_close(
        &host_param(&loaded.running_var),
        &ema(&to_f64(&v), &unbiased(&var, 16), 0.3),
        1e-5,
        "loaded layer, next update (var)",
    );
}

// ---------------------------------------------------------------------------------------
// 11. Determinism
// ---------------------------------------------------------------------------------------

#[test]
fn batch_output_is_bit_identical_across_runs_on_flex() {
    let run = || {
        let device = Device::flex();
        let layer = layer_with(&device, 1e-5, 0.1, &LayerValues::three_channels());
        let x = nchw_input(19, [8, 3, 4, 4], &OFFSETS, &SCALES);
        host(
            layer
                .forward(tensor4(&x, [8, 3, 4, 4], &device), &StatsMode::Batch)
                .expect("batch"),
        )
    };
    let a = run();
    let b = run();
    assert_eq!(bits(&a), bits(&b));
}
