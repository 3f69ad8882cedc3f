//! `mixed_batch`: test rows evaluated together with reference rows, in Batch mode.

mod common;

use std::cell::Cell;

use bnood_norm::{BatchNorm, MixedBatch, NormError, StatsMode, mixed_batch};
use burn::tensor::{Device, Tensor};
use common::*;

const C: usize = 3;
const HW: [usize; 2] = [2, 2];

fn rows(seed: u64, n: usize, offsets: [f32; 3]) -> Vec<f32> {
    nchw_input(seed, [n, C, HW[0], HW[1]], &offsets, &[1.0, 0.5, 2.0])
}

fn batch(values: &[f32], n: usize, device: &Device) -> Tensor<4> {
    tensor4(values, [n, C, HW[0], HW[1]], device)
}

/// The model: one BatchNorm, then the sum of each row's outputs → `[N]`.
fn row_sums(layer: &BatchNorm, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, NormError> {
    let y = layer.forward(x, mode)?;
    let [n, c, h, w] = y.dims();
    Ok(y.reshape([n, c * h * w]).sum_dim(1).reshape([n]))
}

/// Host reference: per-row sums of a weighted output, so that row sums are not trivially β·C·H·W.
fn weighted_row_sums(
    layer: &BatchNorm,
    x: Tensor<4>,
    mode: &StatsMode,
) -> Result<Tensor<1>, NormError> {
    let y = layer.forward(x, mode)?;
    let [n, c, h, w] = y.dims();
    let weights: Vec<f32> = (0..c * h * w).map(|i| 1.0 + 0.5 * i as f32).collect();
    let weights = Tensor::<1>::from_data(
        burn::tensor::TensorData::new(weights, [c * h * w]),
        &y.device(),
    )
    .reshape([1, c * h * w]);
    Ok((y.reshape([n, c * h * w]) * weights)
        .sum_dim(1)
        .reshape([n]))
}

fn host_weighted_row_sums(y: &[f64], n: usize) -> Vec<f64> {
    let per = y.len() / n;
    (0..n)
        .map(|b| {
            (0..per)
                .map(|i| y[b * per + i] * (1.0 + 0.5 * i as f64))
                .sum()
        })
        .collect()
}

fn layer(device: &Device) -> BatchNorm {
    layer_with(device, 1e-5, 0.1, &LayerValues::three_channels())
}

#[test]
fn mixed_batch_returns_the_test_rows_of_a_batch_mode_pass_over_the_concatenation() {
    let device = Device::flex();
    let bn = layer(&device);
    let (n_test, n_ref) = (3, 5);
    // Test rows are shifted away from the reference rows, as an OoD batch would be.
    let test = rows(31, n_test, [4.0, 2.0, -3.0]);
    let reference = rows(32, n_ref, [0.0, 0.0, 0.0]);
    let running_before = (
        bits(&host_param(&bn.running_mean)),
        bits(&host_param(&bn.running_var)),
    );

    let saw_batch_mode = Cell::new(false);
    let (out, mix) = mixed_batch(
        batch(&test, n_test, &device),
        Some(batch(&reference, n_ref, &device)),
        |x, mode| {
            saw_batch_mode.set(matches!(mode, StatsMode::Batch));
            assert_eq!(
                x.dims()[0],
                n_test + n_ref,
                "the model sees the whole batch"
            );
            weighted_row_sums(&bn, x, mode)
        },
    )
    .expect("mixed batch");
    assert!(saw_batch_mode.get(), "the model runs in StatsMode::Batch");
    assert_eq!(out.dims(), [n_test]);
    assert_eq!(
        mix,
        MixedBatch {
            n_test,
            n_reference: n_ref
        }
    );
    let out = host(out);

    // Same as running the layer in Batch mode on [test; reference] and keeping the first
    // n_test rows (same ops on the same data: equal up to float rounding, 1e-6 relative).
    let mut combined = test.clone();
    combined.extend_from_slice(&reference);
    let full = host(
        weighted_row_sums(
            &bn,
            batch(&combined, n_test + n_ref, &device),
            &StatsMode::Batch,
        )
        .expect("batch pass"),
    );
    assert_close(&out, &to_f64(&full[..n_test]), 1e-6, "mixed vs full batch");

    // And both equal the host formula with the *combined* statistics.
    let v = LayerValues::three_channels();
    let y = host_batch_norm(
        &combined,
        [n_test + n_ref, C, 2, 2],
        1e-5,
        &v.gamma,
        &v.beta,
    );
    let expected = host_weighted_row_sums(&y, n_test + n_ref);
    assert_close(
        &out,
        &expected[..n_test],
        1e-4,
        "mixed vs host combined stats",
    );

    // The combined statistics really are used: test rows alone give something else.
    let alone = host(
        weighted_row_sums(&bn, batch(&test, n_test, &device), &StatsMode::Batch)
            .expect("test rows alone"),
    );
    let gap = out
        .iter()
        .zip(&alone)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        gap > 1.0,
        "test-only statistics should differ: max gap {gap}"
    );

    // Batch mode: running state untouched.
    assert_eq!(
        (
            bits(&host_param(&bn.running_mean)),
            bits(&host_param(&bn.running_var)),
        ),
        running_before
    );
}

#[test]
fn mixed_batch_with_plain_row_sums_matches_the_full_pass() {
    // The closure from the brief: a BatchNorm in the given mode, per-row sums.
    let device = Device::flex();
    let bn = layer(&device);
    let test = rows(33, 2, [1.0, -1.0, 5.0]);
    let reference = rows(34, 6, [0.0, 0.0, 0.0]);
    let (out, mix) = mixed_batch(
        batch(&test, 2, &device),
        Some(batch(&reference, 6, &device)),
        |x, mode| row_sums(&bn, x, mode),
    )
    .expect("mixed batch");
    let mut combined = test.clone();
    combined.extend_from_slice(&reference);
    let full = host(row_sums(&bn, batch(&combined, 8, &device), &StatsMode::Batch).expect("full"));
    assert_close(&host(out), &to_f64(&full[..2]), 1e-6, "row sums");
    assert_eq!(mix.len(), 8);
}

#[test]
fn mixed_batch_composition_and_test_fraction() {
    let mix = MixedBatch {
        n_test: 3,
        n_reference: 5,
    };
    assert_eq!(mix.len(), 8);
    assert!(!mix.is_empty());
    assert_eq!(mix.test_fraction(), 0.375);

    let only_test = MixedBatch {
        n_test: 4,
        n_reference: 0,
    };
    assert_eq!(only_test.len(), 4);
    assert_eq!(only_test.test_fraction(), 1.0);

    let one_in_sixty_four = MixedBatch {
        n_test: 1,
        n_reference: 63,
    };
    assert_eq!(one_in_sixty_four.test_fraction(), 1.0 / 64.0);
}

#[test]
fn mixed_batch_without_reference_is_a_batch_of_test_rows() {
    let device = Device::flex();
    let bn = layer(&device);
    let test = rows(35, 2, [1.0, 2.0, 3.0]);
    let (out, mix) = mixed_batch(batch(&test, 2, &device), None, |x, mode| {
        row_sums(&bn, x, mode)
    })
    .expect("two test rows, no reference");
    assert_eq!(
        mix,
        MixedBatch {
            n_test: 2,
            n_reference: 0
        }
    );
    assert_eq!(mix.test_fraction(), 1.0);
    let direct = host(row_sums(&bn, batch(&test, 2, &device), &StatsMode::Batch).expect("direct"));
    assert_close(&host(out), &to_f64(&direct), 1e-6, "no reference");
}

#[test]
fn one_test_row_with_one_reference_row_is_enough() {
    let device = Device::flex();
    let bn = layer(&device);
    let (out, mix) = mixed_batch(
        batch(&rows(36, 1, [0.0; 3]), 1, &device),
        Some(batch(&rows(37, 1, [0.0; 3]), 1, &device)),
        |x, mode| row_sums(&bn, x, mode),
    )
    .expect("1 + 1 rows");
    assert_eq!(out.dims(), [1]);
    assert_eq!(mix.test_fraction(), 0.5);
}

#[test]
fn one_test_row_without_reference_is_an_invalid_mix() {
    let device = Device::flex();
    let bn = layer(&device);
    let called = Cell::new(false);
    let err = mixed_batch(
        batch(&rows(38, 1, [0.0; 3]), 1, &device),
        None,
        |x, mode| {
            called.set(true);
            row_sums(&bn, x, mode)
        },
    )
    .expect_err("one row in all");
    assert!(!called.get(), "the model is not run");
    assert!(matches!(err, NormError::InvalidMix(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("invalid mixed batch: "), "{msg}");
    assert!(
        msg.contains("1 test row(s) and 0 reference row(s)"),
        "{msg}"
    );
    assert!(msg.contains("2 rows in all"), "{msg}");
}

#[test]
fn no_test_rows_is_an_invalid_mix() {
    let device = Device::flex();
    let bn = layer(&device);
    let empty: Tensor<4> = Tensor::zeros([0, C, 2, 2], &device);
    let err = mixed_batch(
        empty,
        Some(batch(&rows(39, 4, [0.0; 3]), 4, &device)),
        |x, mode| row_sums(&bn, x, mode),
    )
    .expect_err("zero test rows");
    assert!(matches!(err, NormError::InvalidMix(_)), "{err:?}");
    assert!(err.to_string().contains("at least one test row"), "{err}");
}

#[test]
fn mismatched_row_shapes_are_an_invalid_mix() {
    let device = Device::flex();
    let bn = layer(&device);
    let called = Cell::new(false);
    let reference: Tensor<4> = Tensor::zeros([3, C, 1, 1], &device);
    let err = mixed_batch(
        batch(&rows(40, 2, [0.0; 3]), 2, &device),
        Some(reference),
        |x, mode| {
            called.set(true);
            row_sums(&bn, x, mode)
        },
    )
    .expect_err("row shapes differ");
    assert!(!called.get(), "the model is not run");
    assert!(matches!(err, NormError::InvalidMix(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("test rows have shape [3, 2, 2] but reference rows have shape [3, 1, 1]"),
        "{msg}"
    );
}

#[test]
fn a_model_returning_the_wrong_number_of_rows_is_an_invalid_mix() {
    let device = Device::flex();
    let bn = layer(&device);
    let err = mixed_batch(
        batch(&rows(41, 2, [0.0; 3]), 2, &device),
        Some(batch(&rows(42, 2, [0.0; 3]), 2, &device)),
        |x, mode| Ok::<_, NormError>(row_sums(&bn, x, mode)?.narrow(0, 0, 1)),
    )
    .expect_err("model drops rows");
    assert!(matches!(err, NormError::InvalidMix(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("the model returned 1 rows for a batch of 4"),
        "{msg}"
    );

    // Too many rows, too.
    let err = mixed_batch(
        batch(&rows(43, 2, [0.0; 3]), 2, &device),
        Some(batch(&rows(44, 2, [0.0; 3]), 2, &device)),
        |x, mode| {
            let s = row_sums(&bn, x, mode)?;
            Ok::<_, NormError>(Tensor::cat(vec![s.clone(), s], 0))
        },
    )
    .expect_err("model duplicates rows");
    assert!(
        err.to_string().contains("returned 8 rows for a batch of 4"),
        "{err}"
    );
}

#[test]
fn errors_of_the_model_are_passed_through() {
    let device = Device::flex();
    let wide = layer_with(
        &device,
        1e-5,
        0.1,
        &LayerValues {
            gamma: vec![1.0; 4],
            beta: vec![0.0; 4],
            running_mean: vec![0.0; 4],
            running_var: vec![1.0; 4],
        },
    );
    let err = mixed_batch(
        batch(&rows(45, 2, [0.0; 3]), 2, &device),
        Some(batch(&rows(46, 2, [0.0; 3]), 2, &device)),
        |x, mode| row_sums(&wide, x, mode),
    )
    .expect_err("4-channel layer on 3-channel rows");
    assert_eq!(
        err,
        NormError::ChannelMismatch {
            expected: 4,
            shape: vec![4, 3, 2, 2]
        }
    );
}
