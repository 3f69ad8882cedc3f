//! The detectors on a tiny RealNVP trained for a few steps: the BN test is reproducible
//! (same seed, same scores; another seed, other scores; 1 or 2 rayon threads agree) and
//! detects a shifted pool that the likelihood baselines miss.

use std::sync::OnceLock;

use bnood_data::ImageSet;
use bnood_detect::{
    BnTest, BnTestParams, Detector, Fit, FittedBnTest, LogLikelihood, Statistic, TPerm,
};
use bnood_metrics::auroc;
use bnood_models::train::{TrainConfig, train};
use bnood_models::{RealNvp, RealNvpConfig};
use burn::module::Module;
use burn::tensor::Device;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Tolerance between 1 and 2 rayon threads, in nats, on `S_{b,r}` and Δ (f32 sums
/// regrouped across threads; the values are of order 10–100 nats).
const THREAD_TOLERANCE: f64 = 1e-5;

/// In-distribution images `[1, 4, 4]`: a horizontal ramp of random brightness and slope
/// plus pixel noise.
fn ramps(name: &str, n: usize, seed: u64) -> ImageSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(n * 16);
    for _ in 0..n {
        let base: f64 = rng.random_range(40.0..120.0);
        let slope: f64 = rng.random_range(10.0..30.0);
        for _row in 0..4 {
            for col in 0..4 {
                let v = base + slope * col as f64 + rng.random_range(-8.0..8.0);
                pixels.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    ImageSet::new(name, pixels, [n, 1, 4, 4], None).expect("valid image set")
}

/// Shifted images: flat patches of the ramps' mid brightness with little noise. The
/// model gives them likelihoods inside the range of in-distribution ones, so likelihood
/// baselines barely separate them (AUROC ≈ 0.6 for `−ln p`, below 0.5 for `T_perm`).
fn flats(name: &str, n: usize, seed: u64) -> ImageSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(n * 16);
    for _ in 0..n {
        let base: f64 = rng.random_range(80.0..100.0);
        for _ in 0..16 {
            pixels.push((base + rng.random_range(-3.0..3.0)).round() as u8);
        }
    }
    ImageSet::new(name, pixels, [n, 1, 4, 4], None).expect("valid image set")
}

/// The trained model, shared by the tests of this file (training runs once).
fn model() -> RealNvp {
    static MODEL: OnceLock<RealNvp> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let device = Device::flex();
            let config = RealNvpConfig {
                image_shape: [1, 4, 4],
                mid_channels: 4,
                num_blocks: 1,
                ..RealNvpConfig::paper_fmnist()
            };
            let model = config.init(&device).expect("valid config");
            let cfg = TrainConfig {
                batch_size: 32,
                budget: bnood_models::train::TrainBudget::steps(60),
                learning_rate: 3e-3,
                progress: false,
                ..TrainConfig::default()
            };
            let data = ramps("train", 512, 1);
            let (model, report) =
                train(model, &data, &cfg, &device.autodiff()).expect("training runs");
            println!(
                "trained: final loss {:.3} bits/dim",
                report.final_loss_bits_per_dim
            );
            model.valid()
        })
        .clone()
}

fn bn_test(seed: u64, reference: &ImageSet) -> FittedBnTest<RealNvp> {
    let device = Device::flex();
    let params = BnTestParams::new().batch_size(32).seed(seed);
    BnTest::new(model(), &device, params)
        .expect("valid parameters")
        .fit(reference)
        .expect("fit")
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn the_same_seed_gives_identical_scores_and_another_seed_other_scores() {
    let reference = ramps("reference", 128, 2);
    let pool = ramps("pool", 48, 3);
    let first = bn_test(7, &reference).score(&pool).expect("score");
    let again = bn_test(7, &reference).score(&pool).expect("score");
    let other = bn_test(8, &reference).score(&pool).expect("score");
    assert_eq!(first, again);
    let moved = max_abs_diff(&first.scores, &other.scores);
    assert!(moved > 1e-3, "seed 8 changed Δ by at most {moved}");
}

#[test]
fn scores_agree_between_one_and_two_rayon_threads() {
    let reference = ramps("reference", 128, 4);
    let pool = ramps("pool", 48, 5);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool")
            .install(|| {
                bn_test(11, &reference)
                    .score_detailed(&pool)
                    .expect("score")
            })
    };
    let (one, two) = (run(1), run(2));
    for (name, a, b) in [
        ("S_r1", &one.s_r1, &two.s_r1),
        ("S_r2", &one.s_r2, &two.s_r2),
        ("Δ", &one.delta, &two.delta),
    ] {
        let diff = max_abs_diff(a, b);
        println!("{name}: max |1 thread − 2 threads| = {diff:e}");
        assert!(diff <= THREAD_TOLERANCE, "{name} differs by {diff}");
    }
}

#[test]
fn bn_test_detects_low_variance_images_that_likelihood_baselines_miss() {
    let device = Device::flex();
    let reference = ramps("reference", 256, 6);
    let in_pool = ramps("in-distribution pool", 96, 7);
    let ood_pool = flats("flat pool", 96, 8);

    let detector = bn_test(12, &reference);
    let bn = auroc(
        &detector.score(&in_pool).expect("score").scores,
        &detector.score(&ood_pool).expect("score").scores,
    )
    .expect("auroc");
    let t_perm = TPerm::new(model(), &device).fit(&reference).expect("fit");
    let perm = auroc(
        &t_perm.score(&in_pool).expect("score").scores,
        &t_perm.score(&ood_pool).expect("score").scores,
    )
    .expect("auroc");
    let likelihood = LogLikelihood::new(model(), &device);
    let plain = auroc(
        &likelihood.statistic(&in_pool).expect("score"),
        &likelihood.statistic(&ood_pool).expect("score"),
    )
    .expect("auroc");
    println!("AUROC: BN test {bn:.3}, T_perm {perm:.3}, −ln p {plain:.3}");
    assert!(bn > 0.95, "BN test AUROC = {bn}");
    assert!(
        bn > plain.max(perm) + 0.2,
        "baselines: −ln p {plain}, T_perm {perm}"
    );
}
