//! The per-input detectors from the literature (input complexity, likelihood ratio,
//! typicality) pinned to their papers' formulas, and the BN test's per-input mode and
//! calibration draws.

mod common;

use bnood_data::ImageSet;
use bnood_data::user_files::png_size;
use bnood_detect::{
    BnCalibration, BnMode, BnTest, BnTestParams, Detector, DetectorArgs, Fit, InputComplexity,
    LikelihoodRatio, LogLikelihood, ScoringParams, Typicality, compressed_bits,
    input_complexity_score,
};
use burn::tensor::Device;
use clap::Parser;

use common::{AppendixDFlow, p_set, q_set};

const SIGMA: f64 = 0.05;

fn flow(device: &Device, sigma: f64) -> AppendixDFlow {
    AppendixDFlow::on_pixels(device, sigma, 1)
}

#[test]
fn png_size_grows_with_image_complexity_and_takes_grey_and_rgb() {
    let flat = vec![0u8; 28 * 28];
    let noise: Vec<u8> = (0..28 * 28u64)
        .map(|i| (bnood_data::seeds::splitmix64(i) >> 56) as u8)
        .collect();
    let flat_size = png_size(&flat, [1, 28, 28]).expect("grey");
    let noise_size = png_size(&noise, [1, 28, 28]).expect("grey");
    // A black image compresses to little more than PNG's fixed chunks; noise barely at all.
    assert!(flat_size < 100, "flat image: {flat_size} bytes");
    assert!(noise_size > 700, "noise: {noise_size} bytes");
    let rgb = [flat.clone(), flat.clone(), flat].concat();
    assert!(png_size(&rgb, [3, 28, 28]).expect("rgb") < 120);
    assert!(png_size(&noise, [2, 14, 28]).is_err(), "two channels");
    assert!(png_size(&noise[..10], [1, 28, 28]).is_err(), "short");
}

#[test]
fn input_complexity_is_minus_log2_likelihood_minus_png_bits() {
    let device = Device::flex();
    let set = q_set("q", 30, 1, 3);
    let ic = InputComplexity::new(flow(&device, SIGMA), &device)
        .fit(&p_set("ref", 100, 1, SIGMA, 1))
        .expect("fit");
    let scores = ic.score(&set).expect("score");
    let log_p = LogLikelihood::new(flow(&device, SIGMA), &device)
        .log_likelihoods(&set)
        .expect("log p");
    let bits = compressed_bits(&set).expect("bits");
    for i in 0..set.len() {
        let png_bits =
            png_size(set.image(i).expect("image"), set.image_shape()).expect("png") as f64 * 8.0;
        assert_eq!(bits[i], png_bits);
        let expected = -log_p[i] / std::f64::consts::LN_2 - png_bits;
        assert!((scores.scores[i] - expected).abs() < 1e-9, "image {i}");
        assert_eq!(scores.scores[i], input_complexity_score(log_p[i], png_bits));
    }
    assert!(scores.p_values.is_none());
}

#[test]
fn likelihood_ratio_is_background_minus_model_log_likelihood() {
    let device = Device::flex();
    let set = q_set("q", 20, 1, 4);
    let lr = LikelihoodRatio::with_params(
        flow(&device, SIGMA),
        flow(&device, 0.5),
        &device,
        ScoringParams::new(),
    )
    .expect("same shapes")
    .fit(&p_set("ref", 100, 1, SIGMA, 1))
    .expect("fit");
    let scores = lr.score(&set).expect("score");
    let log_model = LogLikelihood::new(flow(&device, SIGMA), &device)
        .log_likelihoods(&set)
        .expect("model");
    let log_bg = LogLikelihood::new(flow(&device, 0.5), &device)
        .log_likelihoods(&set)
        .expect("bg");
    for i in 0..set.len() {
        assert!(
            (scores.scores[i] - (log_bg[i] - log_model[i])).abs() < 1e-9,
            "image {i}"
        );
    }
    assert!(lr.threshold_for_fpr(0.05).is_ok());
}

#[test]
fn likelihood_ratio_refuses_a_background_model_of_another_image_shape() {
    let device = Device::flex();
    let other = AppendixDFlow::on_pixels(&device, SIGMA, 2);
    let err =
        LikelihoodRatio::with_params(flow(&device, SIGMA), other, &device, ScoringParams::new())
            .expect_err("shapes differ")
            .to_string();
    assert!(err.contains("background-mutation"), "{err}");
}

#[test]
fn typicality_scores_the_distance_of_the_nll_from_the_reference_entropy() {
    let device = Device::flex();
    let reference = p_set("ref", 400, 1, SIGMA, 1);
    let t = Typicality::with_params(flow(&device, SIGMA), &device, ScoringParams::new())
        .expect("valid")
        .fit(&reference)
        .expect("fit");
    let nll_ref = t
        .detector()
        .negative_log_likelihoods(&reference)
        .expect("nll");
    let h = nll_ref.iter().sum::<f64>() / nll_ref.len() as f64;
    assert!((t.entropy() - h).abs() < 1e-9);
    let set = q_set("q", 20, 1, 5);
    let nll = t.detector().negative_log_likelihoods(&set).expect("nll");
    let scores = t.score(&set).expect("score");
    for (score, v) in scores.scores.iter().zip(&nll) {
        assert!((score - (v - h).abs()).abs() < 1e-9);
    }
    // The window statistic of M inputs is |mean nll − Ĥ|; a window of typical inputs has a
    // smaller threshold the larger M is (the mean concentrates).
    let window = t.window_statistic(&nll[..5]).expect("window");
    let mean5 = nll[..5].iter().sum::<f64>() / 5.0;
    assert!((window - (mean5 - h).abs()).abs() < 1e-9);
    let t1 = t.window_threshold(1, 0.05, 2000, 0).expect("M = 1");
    let t16 = t.window_threshold(16, 0.05, 2000, 0).expect("M = 16");
    assert!(t16 < t1, "thresholds: M=1 {t1}, M=16 {t16}");
    assert_eq!(t16, t.window_threshold(16, 0.05, 2000, 0).expect("seeded"));
    assert!(t.window_statistic(&[]).is_err());
    assert!(t.window_threshold(0, 0.05, 100, 0).is_err());
}

#[test]
fn typicality_flags_inputs_with_unusually_high_likelihood_too() {
    let device = Device::flex();
    let t = Typicality::with_params(flow(&device, SIGMA), &device, ScoringParams::new())
        .expect("valid")
        .fit(&p_set("ref", 400, 1, SIGMA, 1))
        .expect("fit");
    // x1 = 0 is far *more* likely than any p sample: log p misses it, typicality does not.
    let probes = common::pixel_set("probes", &[0.0, 1.0], 1);
    let s = t.score(&probes).expect("score");
    let threshold = t.threshold_for_fpr(0.05).expect("threshold");
    assert_eq!(
        s.decisions(threshold),
        [true, false],
        "{:?} vs {threshold}",
        s.scores
    );
}

#[test]
fn per_input_bn_scores_an_image_the_same_whatever_else_is_scored_with_it() {
    let device = Device::flex();
    let params = BnTestParams::per_input_batch_size(BnTestParams::new(), 8);
    assert!(params.is_per_input());
    let bn = BnTest::new(flow(&device, SIGMA), &device, params)
        .expect("valid")
        .fit(&p_set("ref", 200, 1, SIGMA, 1))
        .expect("fit");
    let a = p_set("a", 12, 1, SIGMA, 2);
    let b = q_set("b", 30, 1, 3);
    let alone = bn.score(&a).expect("alone");
    let mixed_set = ImageSet::concat("b+a", &[&b, &a]).expect("concat");
    let mixed = bn.score(&mixed_set).expect("mixed");
    assert_eq!(&mixed.scores[30..], &alone.scores[..]);
    assert_eq!(
        bn.score(&a.head(1).expect("one"))
            .expect("one image")
            .scores[0],
        alone.scores[0]
    );
    assert!(Detector::is_per_input(&bn));
}

#[test]
fn calibration_draws_score_the_held_out_images_in_that_many_batch_compositions() {
    let device = Device::flex();
    let reference = p_set("ref", 200, 1, SIGMA, 1);
    let params = |k| BnTestParams::new().batch_size(10).calibration_draws(k);
    let one = BnTest::new(flow(&device, SIGMA), &device, params(1))
        .expect("valid")
        .fit(&reference)
        .expect("fit");
    let three = BnTest::new(flow(&device, SIGMA), &device, params(3))
        .expect("valid")
        .fit(&reference)
        .expect("fit");
    let (d1, d3) = (one.reference_deltas(), three.reference_deltas());
    assert_eq!(d3.len(), 3 * d1.len());
    // Draw 0 is the single-draw calibration; the others are new batch compositions.
    assert_eq!(&d3[..d1.len()], d1);
    assert_ne!(&d3[d1.len()..2 * d1.len()], d1);
    for bad in [0, 1001] {
        let err = BnTest::new(flow(&device, SIGMA), &device, params(bad)).expect_err("refused");
        assert!(err.to_string().contains("calibration_draws"), "{err}");
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: DetectorArgs,
}

#[test]
fn mode_per_input_on_the_command_line_sets_both_ratios_and_refuses_r1_r2() {
    let cli = Cli::parse_from(["x", "--mode", "per-input", "--batch-size", "32"]);
    assert_eq!(cli.args.mode, BnMode::PerInput);
    let params = cli.args.params().expect("valid");
    assert!(params.bn.is_per_input());
    let err = Cli::parse_from(["x", "--mode", "per-input", "--r2", "0.5"])
        .args
        .params()
        .expect_err("conflict")
        .to_string();
    assert!(err.contains("drop --r1/--r2"), "{err}");
    let pool = Cli::parse_from(["x", "--r1", "0.2"])
        .args
        .params()
        .expect("valid");
    assert!(!pool.bn.is_per_input());
}

#[test]
fn only_the_pool_mode_with_held_out_calibration_says_its_per_image_flags_are_not_calibrated() {
    let device = Device::flex();
    let reference = p_set("ref", 200, 1, SIGMA, 1);
    let bn = |params: BnTestParams| {
        BnTest::new(flow(&device, SIGMA), &device, params)
            .expect("valid")
            .fit(&reference)
            .expect("fit")
            .per_image_flags_calibrated()
    };
    let pool = BnTestParams::new().batch_size(10);
    assert!(!bn(pool.clone()), "pool mode, held-out calibration");
    assert!(bn(pool.calibration(BnCalibration::InPool)));
    assert!(bn(BnTestParams::new().per_input_batch_size(10)));
    let ll = LogLikelihood::new(flow(&device, SIGMA), &device)
        .fit(&reference)
        .expect("fit");
    assert!(ll.per_image_flags_calibrated());
}
