//! The window test on the Appendix D flow, whose in-distribution p and OoD q are known:
//! false alarms at the chosen level on in-distribution windows, power on windows holding
//! q inputs, p-values as defined, and every refusal of bad input.

mod common;

use bnood_data::ImageSet;
use bnood_detect::{DetectError, WindowStatistic, WindowTest, WindowTestParams, ks_p_value};
use burn::tensor::Device;

use common::{AppendixDFlow, p_set, q_set};

const SIGMA: f64 = 0.01;
const PAIRS: usize = 16;
const M: usize = 16;

fn fitted(params: WindowTestParams, reference_seed: u64) -> WindowTest<AppendixDFlow> {
    let device = Device::flex();
    let flow = AppendixDFlow::on_pixels(&device, SIGMA, PAIRS);
    let mut test = WindowTest::new(flow, &device, params).expect("valid parameters");
    test.fit(&p_set("p reference", 1200, PAIRS, SIGMA, reference_seed))
        .expect("fit");
    test
}

fn all_statistics() -> WindowTestParams {
    WindowTestParams::new()
        .window(M)
        .statistics(&WindowStatistic::ALL)
        .null_windows(199)
        .alpha(0.1)
        .comparison_size(200)
}

/// Share of `windows` flagged by each statistic, in parameter order.
fn flagged_share(test: &WindowTest<AppendixDFlow>, windows: &[ImageSet]) -> Vec<f64> {
    let n = test.params().statistics().len();
    let mut flagged = vec![0usize; n];
    for w in windows {
        for (f, o) in flagged.iter_mut().zip(test.test(w).expect("test")) {
            *f += usize::from(o.flagged);
        }
    }
    flagged
        .into_iter()
        .map(|f| f as f64 / windows.len() as f64)
        .collect()
}

#[test]
fn in_distribution_windows_are_flagged_at_about_the_chosen_level() {
    // Under exchangeability P(p ≤ α) = α over reference draws (K = 199, α = 0.1: 20/200).
    // Given one fitted null the rate is itself random: its (1 − α) quantile comes from
    // K + 1 windows, so the conditional rate spreads by about √(α(1 − α)/(K + 1)) ≈ 0.02
    // (measured over 6 reference draws, 300 windows each: 0.077–0.153 for bn). So average
    // over 6 independent fits, 200 fresh windows each: 1,200 windows, standard error
    // √(0.09/1200 + 0.02²/6) ≈ 0.012; the bound is 3 standard errors.
    let mut total = vec![0.0; 3];
    for seed in 0..6u64 {
        let test = fitted(all_statistics(), 100 + seed);
        let windows: Vec<ImageSet> = (0..200)
            .map(|w| p_set("p window", M, PAIRS, SIGMA, 50_000 + 1000 * seed + w))
            .collect();
        let shares = flagged_share(&test, &windows);
        println!("fit {seed}: false alarms (bn, ks, mmd) {shares:?}");
        for ((t, s), statistic) in total.iter_mut().zip(&shares).zip(WindowStatistic::ALL) {
            assert!(
                (0.02..=0.2).contains(s),
                "fit {seed}, {}: {s} of in-distribution windows flagged at α = 0.1",
                statistic.id()
            );
            *t += s / 6.0;
        }
    }
    println!("mean false alarms (bn, ks, mmd): {total:?}");
    for (statistic, rate) in WindowStatistic::ALL.iter().zip(&total) {
        assert!(
            (0.064..=0.136).contains(rate),
            "{}: mean false-alarm rate {rate} at α = 0.1",
            statistic.id()
        );
    }
}

#[test]
fn windows_holding_ood_inputs_are_flagged_by_the_bn_statistic() {
    let test = fitted(all_statistics(), 12);
    // 4 of 16 inputs from q, the rest from p.
    let windows: Vec<ImageSet> = (0..40)
        .map(|w| {
            let p = p_set("p part", M - 4, PAIRS, SIGMA, 7000 + w);
            let q = q_set("q part", 4, PAIRS, 9000 + w);
            ImageSet::concat("mixed window", &[&p, &q]).expect("same shapes")
        })
        .collect();
    let shares = flagged_share(&test, &windows);
    println!("power at 25 % q (bn, ks, mmd): {shares:?}");
    assert!(shares[0] >= 0.9, "BN window test flagged {}", shares[0]);
}

#[test]
fn p_value_is_one_plus_the_null_windows_at_or_above_over_one_plus_k() {
    let test = fitted(all_statistics(), 13);
    let window = p_set("p window", M, PAIRS, SIGMA, 77);
    for o in test.test(&window).expect("test") {
        let null = test.null(o.statistic).expect("fitted with every statistic");
        assert_eq!(null.len(), 199);
        let at_or_above = null.iter().filter(|&&v| v >= o.value).count();
        assert_eq!(o.p_value, (1 + at_or_above) as f64 / 200.0);
        assert_eq!(o.flagged, o.p_value <= 0.1);
    }
    // The KS statistic is the one `ks_p_value` reads.
    let ks = test.test(&window).expect("test")[1];
    assert!(ks_p_value(ks.value, M, 200).is_ok());
}

#[test]
fn the_same_seed_gives_the_same_null_and_p_values() {
    let params = || WindowTestParams::new().window(8).null_windows(39).seed(5);
    let (a, b) = (fitted(params(), 14), fitted(params(), 14));
    assert_eq!(a.null(WindowStatistic::Bn), b.null(WindowStatistic::Bn));
    let window = p_set("p window", 8, PAIRS, SIGMA, 78);
    assert_eq!(
        a.test(&window).expect("test"),
        b.test(&window).expect("test")
    );
    let c = fitted(params().seed(6), 14);
    assert_ne!(a.null(WindowStatistic::Bn), c.null(WindowStatistic::Bn));
}

#[test]
fn long_windows_are_cut_into_near_equal_chunks_of_at_most_b_rows() {
    let p = WindowTestParams::new().window(10).batch_size(4);
    let p = bnood_detect::ParamGuard::check(p).expect("valid");
    assert_eq!(p.chunks(), vec![0..3, 3..6, 6..10]);
    let p = bnood_detect::ParamGuard::check(WindowTestParams::new().window(5).batch_size(4))
        .expect("valid");
    assert_eq!(p.chunks(), vec![0..2, 2..5]);
    // A chunked window still gets a valid test.
    let test = fitted(
        WindowTestParams::new()
            .window(10)
            .batch_size(4)
            .null_windows(19),
        15,
    );
    let o = test
        .test(&p_set("p window", 10, PAIRS, SIGMA, 79))
        .expect("test");
    assert!(o[0].p_value > 0.0 && o[0].p_value <= 1.0);
}

fn invalid(params: WindowTestParams) -> String {
    let device = Device::flex();
    let flow = AppendixDFlow::on_pixels(&device, SIGMA, PAIRS);
    match WindowTest::new(flow, &device, params) {
        Err(DetectError::InvalidParameter(m)) => m,
        other => panic!("expected an invalid parameter, got {other:?}"),
    }
}

#[test]
fn invalid_parameters_are_refused_with_what_to_do() {
    assert!(invalid(WindowTestParams::new().window(1)).contains("at least 2"));
    for alpha in [0.0, 1.0, -0.5, f64::NAN] {
        assert!(invalid(WindowTestParams::new().alpha(alpha)).contains("strictly between 0 and 1"));
    }
    let m = invalid(WindowTestParams::new().null_windows(10).alpha(0.05));
    assert!(m.contains("at least 19 null windows"), "{m}");
    assert!(invalid(WindowTestParams::new().statistics(&[])).contains("at least one"));
    assert!(
        invalid(WindowTestParams::new().statistics(&[WindowStatistic::Bn, WindowStatistic::Bn]))
            .contains("twice")
    );
    assert!(invalid(WindowTestParams::new().batch_size(3)).contains("at least 4"));
    assert!(
        invalid(
            WindowTestParams::new()
                .statistics(&[WindowStatistic::KsLogP])
                .comparison_size(1)
        )
        .contains("comparison size")
    );
}

#[test]
fn bad_windows_and_small_reference_sets_are_errors_not_panics() {
    let device = Device::flex();
    let flow = AppendixDFlow::on_pixels(&device, SIGMA, PAIRS);
    let mut test = WindowTest::new(
        flow,
        &device,
        WindowTestParams::new()
            .window(M)
            .statistics(&WindowStatistic::ALL)
            .comparison_size(100)
            .null_windows(19),
    )
    .expect("valid");
    let window = p_set("p window", M, PAIRS, SIGMA, 80);
    assert!(matches!(
        test.test(&window),
        Err(DetectError::NotFitted { .. })
    ));
    // 100 comparison images + 16 for one window: 110 images are too few.
    let err = test
        .fit(&p_set("small reference", 110, PAIRS, SIGMA, 81))
        .expect_err("too small");
    assert!(err.to_string().contains("--reference-size"), "{err}");
    test.fit(&p_set("reference", 300, PAIRS, SIGMA, 82))
        .expect("fit");
    let short = p_set("short window", M - 1, PAIRS, SIGMA, 83);
    let err = test.test(&short).expect_err("wrong size");
    assert!(err.to_string().contains("M = 16"), "{err}");
    let err = test
        .test_with_log_p(&window, &[0.0; 3])
        .expect_err("wrong log p length");
    assert!(err.to_string().contains("one per image"), "{err}");
    let wrong_shape = ImageSet::new("wrong", vec![0; 2 * 16], [2, 1, 4, 4], None).expect("set");
    assert!(matches!(
        test.test(&wrong_shape),
        Err(DetectError::ShapeMismatch { .. })
    ));
}
