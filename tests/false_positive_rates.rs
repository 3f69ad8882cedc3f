//! Honest false-positive rates on real data: with the shipped Fashion-MNIST RealNVP, the
//! per-input detectors flag in-distribution images (Fashion-MNIST *test*, never seen in
//! training or in the reference set) at the rate asked for, over independent seeds (each
//! seed: its own reference set of Fashion-MNIST train images, detector seed and pool).
//!
//! Sampling error: over 10 seeds × 500 images = 5,000 in-distribution images, each seed's
//! threshold estimated from 1,000 reference images, a calibrated detector's flagged share at
//! a 5 % target falls in 0.05 ± 0.0078 with probability 95 %
//! (`bnood_eval::sampling_interval`: binomial error of the images plus the error of the
//! thresholds). The test allows the 99.9 % half-width (× 3.29 / 1.96), so that a calibrated
//! detector fails it once in a thousand runs. `docs/results.md` ("Calibration") has every
//! detector, including the BN test's pool and per-input modes, from `bnood eval
//! --calibration-seeds`.
//!
//! The BN test's pool mode with in-pool calibration flags correlated images (a pool's images
//! share its mixed batches), so its test judges the mean share over pools by the spread
//! between them (`bnood_eval::between_pool_interval`), not by a binomial interval.

use std::path::PathBuf;

use bnood::data::{Locator, load_named};
use bnood::detect::{BnCalibration, BnTestParams, DetectorKind};
use bnood::eval::{CalibrationRow, Protocol, calibration};
use bnood::models::AnyModel;
use bnood::models::zoo::ModelsDir;
use burn::tensor::Device;

fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BNOOD_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets")
}

/// The calibration rows of `protocol`'s detectors on the flex device with the shipped
/// `realnvp-fmnist`: `seeds` seeds, each with `reference` Fashion-MNIST train images and one
/// pool of `pool` Fashion-MNIST test images, flagged at `target`.
fn flagged_shares(
    protocol: Protocol,
    reference: usize,
    pool: usize,
    seeds: usize,
    target: f64,
) -> Vec<CalibrationRow> {
    let device = Device::flex();
    let locator = Locator::only(data_dir());
    let models = ModelsDir::only(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    let path = models.resolve("realnvp-fmnist").expect("shipped model");
    let model = AnyModel::load_for_scoring(&path, &device, None).expect("loads");
    let train = load_named("fmnist-train", &locator, None, 0).expect("Fashion-MNIST train");
    let test = load_named("fmnist", &locator, None, 0).expect("Fashion-MNIST test");
    let protocol = Protocol {
        progress: false,
        ..protocol
    };
    let specs = protocol.specs(1, false).expect("valid");
    calibration(
        &specs,
        &[model],
        None,
        &train,
        reference,
        &test,
        &[pool],
        seeds,
        &[target],
        false,
        &device,
    )
    .expect("study")
}

#[test]
fn per_input_detectors_flag_the_requested_share_of_real_in_distribution_images() {
    let protocol = Protocol {
        detectors: vec![
            DetectorKind::LogLikelihood,
            DetectorKind::Typicality,
            DetectorKind::Dose,
        ],
        ..Protocol::default()
    };
    let (seeds, pool, target) = (10, 500, 0.05);
    for r in &flagged_shares(protocol, 1000, pool, seeds, target) {
        assert_share_within(r, r.interval, "sampling", seeds * pool, target);
    }
}

/// Asserts that `r`'s flagged share lies within the 99.9 % widening (× 3.29 / 1.96) of its
/// 95 % interval `interval` (`which` names it) around `target`, over `total` images.
fn assert_share_within(
    r: &CalibrationRow,
    interval: (f64, f64),
    which: &str,
    total: usize,
    target: f64,
) {
    let (lo, hi) = interval;
    let slack = (hi - lo) / 2.0 * 3.29 / 1.96;
    println!(
        "{} ({}): flagged {}/{} = {:.4}; 95 % {which} interval [{lo:.4}, {hi:.4}]; per seed {:.3}–{:.3}",
        r.detector.title(),
        r.setting,
        r.flagged,
        r.total,
        r.share,
        r.per_seed_range.0,
        r.per_seed_range.1
    );
    assert_eq!(r.total, total);
    assert!(
        (r.share - target).abs() <= slack,
        "{}: flagged {:.4} of in-distribution images at a {target} target (allowed {:.4}–{:.4})",
        r.detector.title(),
        r.share,
        target - slack,
        target + slack
    );
}

#[test]
fn the_bn_pool_mode_with_in_pool_calibration_flags_the_requested_share_of_real_in_distribution_images()
 {
    // Sampling error: 10 seeds, each its own reference set (400 Fashion-MNIST train images,
    // 200 held out and shuffled into the pool), detector seed and pool of 250 Fashion-MNIST
    // test images. A calibrated detector's mean share falls in 0.05 ± t₀.₉₇₅,₉ · sd / √10
    // with probability 95 %, sd the spread of the 10 per-pool shares; the test allows the
    // 99.9 % half-width (× 3.29 / 1.96, about × 1.9 with 9 degrees of freedom: it is lenient).
    let protocol = Protocol {
        detectors: vec![DetectorKind::BnTest],
        bn: BnTestParams::new().calibration(BnCalibration::InPool),
        ..Protocol::default()
    };
    let (seeds, pool, target) = (10, 250, 0.05);
    let rows = flagged_shares(protocol, 400, pool, seeds, target);
    let r = &rows[0];
    let interval = r.between_pool_interval.expect("10 pools");
    assert_share_within(r, interval, "between-pool", seeds * pool, target);
    // The pool verdict at α = 5 % on the same 10 clean pools: a verdict of level α rejects
    // Binomial(10, 0.05) of them, 4 or more with probability 0.001.
    let verdicts = r
        .pool_verdicts
        .as_ref()
        .expect("in-pool calibration gives verdicts");
    println!(
        "pool verdict: {}/{} clean pools declared OoD",
        verdicts.rejected, verdicts.pools
    );
    assert_eq!(verdicts.pools, seeds);
    assert!(verdicts.rejected <= 3, "{verdicts:?}");
}
