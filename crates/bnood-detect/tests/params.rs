//! Invalid parameters and misuse are errors whose messages say what to do.

mod common;

use bnood_data::ImageSet;
use bnood_detect::{
    BnCalibration, BnTest, BnTestParams, DetectError, Detector, Fit, LogLikelihood, ParamGuard,
    ScoringParams, Statistic, Waic,
};
use burn::tensor::Device;

use common::{AppendixDFlow, p_set};

const SIGMA: f64 = 0.01;

fn flow() -> AppendixDFlow {
    AppendixDFlow::on_pixels(&Device::flex(), SIGMA, 2)
}

fn build(params: BnTestParams) -> Result<BnTest<AppendixDFlow>, DetectError> {
    BnTest::new(flow(), &Device::flex(), params)
}

/// The error of building a BN test with `params`, which must be an invalid parameter.
fn invalid(params: BnTestParams) -> String {
    match build(params) {
        Err(e @ DetectError::InvalidParameter(_)) => e.to_string(),
        Err(e) => panic!("expected InvalidParameter, got {e:?}"),
        Ok(_) => panic!("the parameters were accepted"),
    }
}

#[test]
fn ratios_outside_zero_to_one_are_rejected_at_construction() {
    let msg = invalid(BnTestParams::new().ratios(-0.1, 0.9));
    assert!(msg.contains("r1 = -0.1 must lie in [0, 1]"), "{msg}");
    let msg = invalid(BnTestParams::new().ratios(0.1, 1.5));
    assert!(msg.contains("r2 = 1.5 must lie in [0, 1]"), "{msg}");
    let msg = invalid(BnTestParams::new().ratios(f64::NAN, 0.9));
    assert!(msg.contains("r1 = NaN must lie in [0, 1]"), "{msg}");
}

#[test]
fn batch_sizes_below_two_are_rejected() {
    for b in [0, 1] {
        let msg = invalid(BnTestParams::new().batch_size(b));
        assert!(
            msg.contains(&format!("batch size b = {b} must be at least 2")),
            "{msg}"
        );
    }
}

#[test]
fn zero_draws_and_more_than_the_cap_are_rejected() {
    let msg = invalid(BnTestParams::new().draws(0));
    assert!(msg.contains("draws = 0"), "{msg}");
    assert!(msg.contains("must lie in 1..=1000"), "{msg}");
    let msg = invalid(BnTestParams::new().draws(1_000_000_000));
    assert!(msg.contains("draws = 1000000000"), "{msg}");
    let msg = invalid(BnTestParams::new().calibration_draws(1001));
    assert!(
        msg.contains("calibration_draws = 1001") && msg.contains("(1 is the default)"),
        "{msg}"
    );
    BnTestParams::new()
        .draws(1000)
        .check()
        .expect("the cap itself is allowed");
}

#[test]
fn a_positive_ratio_with_no_test_row_per_batch_is_rejected() {
    let msg = invalid(BnTestParams::new().ratios(0.005, 0.9));
    assert!(
        msg.contains("round(r·b) = 0 test images per batch"),
        "{msg}"
    );
    assert!(msg.contains("use r1 = 0 for running statistics"), "{msg}");
}

#[test]
fn ratios_giving_identical_batches_are_rejected() {
    let msg = invalid(BnTestParams::new().ratios(0.5, 0.501));
    assert!(msg.contains("give the same batches"), "{msg}");
}

#[test]
fn held_out_fractions_must_leave_both_parts() {
    for f in [0.0, 1.0] {
        let msg = invalid(BnTestParams::new().held_out_fraction(f));
        assert!(msg.contains("held_out_fraction"), "{msg}");
        assert!(msg.contains("strictly between 0 and 1"), "{msg}");
    }
}

#[test]
fn a_scoring_batch_size_of_zero_is_rejected() {
    let err = ScoringParams::new()
        .batch_size(0)
        .check()
        .expect_err("invalid");
    assert!(err.to_string().contains("scoring batch size is 0"), "{err}");
    let err =
        LogLikelihood::with_params(flow(), &Device::flex(), ScoringParams::new().batch_size(0))
            .expect_err("invalid");
    assert!(matches!(err, DetectError::InvalidParameter(_)), "{err}");
    let msg = invalid(BnTestParams::new().scoring(ScoringParams::new().batch_size(0)));
    assert!(msg.contains("scoring batch size is 0"), "{msg}");
}

#[test]
fn valid_parameters_check_to_the_values_that_were_set() {
    let params = BnTestParams::new()
        .batch_size(32)
        .ratios(0.0, 0.75)
        .draws(3)
        .seed(9)
        .held_out_fraction(0.25);
    let checked = params.check_ref().expect("valid");
    assert_eq!(checked.batch_size(), 32);
    assert_eq!((checked.r1(), checked.r2()), (0.0, 0.75));
    assert_eq!((checked.draws(), checked.seed()), (3, 9));
    assert_eq!(checked.test_rows(0.75), 24);
    assert_eq!(checked.test_rows(0.0), 0);
}

#[test]
fn a_reference_set_of_one_image_cannot_be_split() {
    let detector = build(BnTestParams::new()).expect("valid");
    let err = detector
        .fit(&p_set("tiny", 1, 2, SIGMA, 1))
        .expect_err("one image");
    assert!(matches!(err, DetectError::EmptySet(_)), "{err:?}");
    assert!(err.to_string().contains("leaves an empty part"), "{err}");
}

#[test]
fn a_reference_set_too_small_for_the_reference_rows_is_rejected_at_fit() {
    // b = 64, r1 = 0.1: 58 reference rows per batch, but 40 images leave 20 for mixing.
    let detector = build(BnTestParams::new()).expect("valid");
    let err = detector
        .fit(&p_set("small", 40, 2, SIGMA, 1))
        .expect_err("too small");
    assert!(matches!(err, DetectError::ReferenceTooSmall(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("needs 58 reference images per mixed batch but only 20"),
        "{err}"
    );
}

#[test]
fn a_held_out_part_smaller_than_one_batch_of_test_rows_is_rejected_at_fit() {
    // r2 = 0.9: 58 test rows per batch, but only 40 of 200 images are held out.
    let detector = build(BnTestParams::new().held_out_fraction(0.2)).expect("valid");
    let err = detector
        .fit(&p_set("reference", 200, 2, SIGMA, 1))
        .expect_err("held-out part too small");
    assert!(
        err.to_string().contains(
            "puts 58 test images in every mixed batch but only 40 reference images are held out"
        ),
        "{err}"
    );
}

#[test]
fn a_test_pool_smaller_than_round_r_b_is_rejected_at_score() {
    let detector = build(BnTestParams::new())
        .expect("valid")
        .fit(&p_set("reference", 300, 2, SIGMA, 1))
        .expect("fit");
    let err = detector
        .score(&p_set("pool", 20, 2, SIGMA, 2))
        .expect_err("pool too small");
    assert!(
        matches!(
            err,
            DetectError::TestPoolTooSmall {
                pool: 20,
                needed: 58,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(
            "the test pool holds 20 image(s), but r = 0.9 with b = 64 puts 58 test images"
        ),
        "{err}"
    );
}

#[test]
fn the_log_likelihood_statistic_needs_no_reference_data() {
    // Detectors that need reference data score only once fitted (their fitted type is
    // another type); the statistic itself needs none.
    let device = Device::flex();
    let pool = p_set("pool", 100, 2, SIGMA, 3);
    let ll = LogLikelihood::new(flow(), &device);
    let minus_log_p: Vec<f64> = ll
        .log_likelihoods(&pool)
        .expect("log p")
        .into_iter()
        .map(|l| -l)
        .collect();
    assert_eq!(ll.statistic(&pool).expect("statistic"), minus_log_p);
}

#[test]
fn an_empty_ensemble_is_rejected() {
    let err = Waic::<AppendixDFlow>::new(Vec::new(), &Device::flex()).expect_err("empty");
    assert!(matches!(err, DetectError::EmptySet(_)), "{err:?}");
    assert!(err.to_string().contains("ensemble of 0 models"), "{err}");
}

#[test]
fn images_of_another_shape_are_rejected() {
    let wrong = ImageSet::new("wrong", vec![0; 2 * 16], [2, 1, 4, 4], None).expect("valid set");
    let err = LogLikelihood::new(flow(), &Device::flex())
        .statistic(&wrong)
        .expect_err("wrong shape");
    assert!(matches!(err, DetectError::ShapeMismatch { .. }), "{err:?}");
    assert!(
        err.to_string().contains("the model expects [1, 1, 4]"),
        "{err}"
    );
}

#[test]
fn target_false_positive_rates_outside_zero_to_one_are_rejected() {
    let device = Device::flex();
    let ll = LogLikelihood::new(flow(), &device)
        .fit(&p_set("reference", 50, 2, SIGMA, 4))
        .expect("fit");
    for fpr in [0.0, 1.0, -0.5, f64::NAN] {
        let err = ll.threshold_for_fpr(fpr).expect_err("invalid target");
        assert!(
            err.to_string().contains("strictly between 0 and 1"),
            "{err}"
        );
    }
}

#[test]
fn in_pool_calibration_is_refused_with_the_per_input_mode_and_with_calibration_draws() {
    let per_input = invalid(BnTestParams::per_input().calibration(BnCalibration::InPool));
    assert!(per_input.contains("pool mode"), "{per_input}");
    let draws = invalid(
        BnTestParams::new()
            .calibration(BnCalibration::InPool)
            .calibration_draws(3),
    );
    assert!(draws.contains("calibration_draws = 3"), "{draws}");
    let ok = build(BnTestParams::new().calibration(BnCalibration::InPool)).expect("valid");
    assert_eq!(ok.params().calibration(), BnCalibration::InPool);
    assert!(ok.name().contains("in-pool"), "{}", ok.name());
}
