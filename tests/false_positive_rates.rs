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

use std::path::PathBuf;

use bnood::data::{Locator, load_named};
use bnood::detect::DetectorKind;
use bnood::eval::{Protocol, calibration};
use bnood::models::AnyModel;
use bnood::models::zoo::ModelsDir;
use burn::tensor::Device;

fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BNOOD_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets")
}

#[test]
fn per_input_detectors_flag_the_requested_share_of_real_in_distribution_images() {
    let device = Device::flex();
    let locator = Locator::only(data_dir());
    let models = ModelsDir::only(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    let path = models.resolve("realnvp-fmnist").expect("shipped model");
    let model = AnyModel::load_for_scoring(&path, &device, None).expect("loads");
    let train = load_named("fmnist-train", &locator, None, 0).expect("Fashion-MNIST train");
    let test = load_named("fmnist", &locator, None, 0).expect("Fashion-MNIST test");
    let protocol = Protocol {
        detectors: vec![DetectorKind::LogLikelihood, DetectorKind::Typicality],
        progress: false,
        ..Protocol::default()
    };
    let specs = protocol.specs(1, false).expect("valid");
    let (seeds, pool, target) = (10, 500, 0.05);
    let rows = calibration(
        &specs,
        &[model],
        None,
        &train,
        1000,
        &test,
        &[pool],
        seeds,
        &[target],
        false,
        &device,
    )
    .expect("study");
    for r in &rows {
        let (lo, hi) = r.interval;
        let slack = (hi - lo) / 2.0 * 3.29 / 1.96;
        println!(
            "{}: flagged {}/{} = {:.4}; 95 % sampling interval [{lo:.4}, {hi:.4}]; per seed {:.3}–{:.3}",
            r.detector.title(),
            r.flagged,
            r.total,
            r.share,
            r.per_seed_range.0,
            r.per_seed_range.1
        );
        assert_eq!(r.total, seeds * pool);
        assert!(
            (r.share - target).abs() <= slack,
            "{}: flagged {:.4} of in-distribution images at a {target} target (allowed {:.4}–{:.4})",
            r.detector.title(),
            r.share,
            target - slack,
            target + slack
        );
    }
}
