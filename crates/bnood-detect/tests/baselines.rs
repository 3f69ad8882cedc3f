//! The baselines (log-likelihood, T_perm, WAIC), thresholds, and the BN test's limiting
//! cases, on the Appendix D flow.

mod common;

use bnood_data::ImageSet;
use bnood_detect::{
    BnTest, BnTestParams, DetectError, Detector, Fit, LogLikelihood, Scores, Statistic, TPerm, Waic,
};
use bnood_models::{LikelihoodModel, StatsMode};
use burn::tensor::Device;

use common::{AppendixDFlow, host, p_set, pixel_set, q_set};

/// A wider p than Appendix D's, so that reference likelihoods take many distinct values
/// (x1 stays within the pixel range: 1 + 5σ maps to pixel 252).
const SIGMA: f64 = 0.05;

#[test]
fn t_perm_flags_both_unusually_high_and_unusually_low_likelihoods() {
    let device = Device::flex();
    let reference = p_set("p reference", 500, 1, SIGMA, 1);
    // ln p_f falls with |x1|: x1 = 0 is far *more* likely than any p sample, |x1| = 1.27
    // far less, |x1| = 1 is typical.
    let probes = pixel_set("probes", &[0.0, 1.27, -1.0, 1.0], 1);

    let t_perm = TPerm::new(AppendixDFlow::on_pixels(&device, SIGMA, 1), &device)
        .fit(&reference)
        .expect("fit");
    let t = t_perm.score(&probes).expect("score");
    let p = t.p_values.as_ref().expect("T_perm gives p-values");
    println!("T_perm = {:?}, p = {p:?}", t.scores);
    let half = 250.0;
    assert!(
        t.scores[0] >= 0.95 * half,
        "high likelihood: T = {}",
        t.scores[0]
    );
    assert!(
        t.scores[1] >= 0.95 * half,
        "low likelihood: T = {}",
        t.scores[1]
    );
    assert!(
        t.scores[2] <= 0.2 * half && t.scores[3] <= 0.2 * half,
        "typical: {:?}",
        t.scores
    );
    assert!(p[0] < 0.03 && p[1] < 0.03, "extremes: p = {p:?}");
    assert!(p[2] > 0.5 && p[3] > 0.5, "typical: p = {p:?}");

    // The plain likelihood flags only the low-likelihood probe; the high-likelihood one
    // looks the *least* OoD of all.
    let ll = LogLikelihood::new(AppendixDFlow::on_pixels(&device, SIGMA, 1), &device)
        .statistic(&probes)
        .expect("score");
    let lowest = ll.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(ll[0], lowest, "−ln p = {ll:?}");
    assert!(ll[1] > ll[2].max(ll[3]));
}

#[test]
fn t_perm_p_values_live_on_a_grid_of_two_over_n_plus_one() {
    let device = Device::flex();
    let t_perm = TPerm::new(AppendixDFlow::on_pixels(&device, SIGMA, 1), &device)
        .fit(&p_set("p reference", 500, 1, SIGMA, 2))
        .expect("fit");
    // ⌊0.05·501/2⌋ = 12 → 24/501.
    let alpha = t_perm.threshold_for_fpr(0.05).expect("threshold");
    assert!((alpha - 24.0 / 501.0).abs() < 1e-12, "α = {alpha}");
    let err = t_perm
        .threshold_for_fpr(0.001)
        .expect_err("no p-value is that small");
    assert!(matches!(err, DetectError::ReferenceTooSmall(_)), "{err}");
    assert!(
        err.to_string().contains("smallest p-value is 0.0040"),
        "{err}"
    );

    let fresh = t_perm
        .score(&p_set("p test", 1000, 1, SIGMA, 3))
        .expect("score");
    let flagged = fresh.decisions(alpha).iter().filter(|&&d| d).count() as f64 / 1000.0;
    assert!(
        flagged <= 0.05 + 0.02,
        "{flagged} of in-distribution images flagged at α = {alpha}"
    );
}

#[test]
fn waic_of_one_model_equals_the_log_likelihood_score_exactly() {
    let device = Device::flex();
    let set = pixel_set("mixed", &[0.3, -0.9, 1.1, 0.0, 0.45], 1);
    let waic =
        Waic::new(vec![AppendixDFlow::on_pixels(&device, SIGMA, 1)], &device).expect("one model");
    let ll = LogLikelihood::new(AppendixDFlow::on_pixels(&device, SIGMA, 1), &device);
    let a = waic.statistic(&set).expect("score");
    let b = ll.statistic(&set).expect("score");
    assert_eq!(a, b);
}

#[test]
fn waic_subtracts_the_population_variance_of_the_ensemble() {
    let device = Device::flex();
    let set = q_set("q", 50, 1, 4);
    // Two members that differ in their running variance (1.0001 and 1.25).
    let members = || {
        vec![
            AppendixDFlow::on_pixels(&device, 0.01, 1),
            AppendixDFlow::on_pixels(&device, 0.5, 1),
        ]
    };
    let waic = Waic::new(members(), &device).expect("two models");
    let lls: Vec<Vec<f64>> = members()
        .into_iter()
        .map(|m| {
            LogLikelihood::new(m, &device)
                .log_likelihoods(&set)
                .expect("ll")
        })
        .collect();
    let scores = waic.statistic(&set).expect("score");
    for (i, &s) in scores.iter().enumerate() {
        let (a, b) = (lls[0][i], lls[1][i]);
        let mean = (a + b) / 2.0;
        let var = ((a - mean).powi(2) + (b - mean).powi(2)) / 2.0;
        assert!(
            (s + mean - var).abs() < 1e-12,
            "image {i}: {s} vs {}",
            -(mean - var)
        );
    }
    assert!(
        lls[0] != lls[1],
        "the members must disagree for the test to mean anything"
    );
}

#[test]
fn log_likelihood_threshold_flags_about_the_target_share_of_in_distribution_images() {
    let device = Device::flex();
    // Pixels quantise x1 to steps of 0.01, and p's x1 clusters tightly at ±1, so its
    // likelihoods tie in bins of a few percent. The uniform q spreads x1 over 101 pixel
    // values; summed over four pairs, ties between images are rare. Here q plays the
    // in-distribution data: the threshold only needs a reference distribution.
    let ll = LogLikelihood::new(AppendixDFlow::on_pixels(&device, SIGMA, 4), &device)
        .fit(&q_set("reference", 2000, 4, 5))
        .expect("fit");
    let threshold = ll.threshold_for_fpr(0.1).expect("threshold");
    let fresh = ll.score(&q_set("fresh", 2000, 4, 6)).expect("score");
    let flagged = fresh.decisions(threshold).iter().filter(|&&d| d).count() as f64 / 2000.0;
    println!("{flagged} of 2000 fresh in-distribution images flagged at FPR 0.1");
    // Binomial sampling of the fresh set and of the reference quantile: σ ≈ 0.01.
    assert!((flagged - 0.1).abs() < 0.03, "{flagged} flagged");
}

#[test]
fn decisions_compare_p_values_when_present_and_scores_otherwise() {
    let by_score = Scores {
        scores: vec![0.5, 2.0, 1.0],
        p_values: None,
        pool: None,
    };
    assert_eq!(by_score.decisions(1.0), vec![false, true, false]);
    let by_p = Scores {
        scores: vec![0.5, 2.0, 1.0],
        p_values: Some(vec![0.5, 0.01, 0.05]),
        pool: None,
    };
    assert_eq!(by_p.decisions(0.05), vec![false, true, true]);
}

#[test]
fn ratio_zero_is_the_running_log_likelihood() {
    let device = Device::flex();
    let pool = q_set("q", 40, 4, 7);
    let bn = BnTest::new(
        AppendixDFlow::on_pixels(&device, SIGMA, 4),
        &device,
        BnTestParams::new().ratios(0.0, 0.5).batch_size(16),
    )
    .expect("valid")
    .fit(&p_set("p reference", 100, 4, SIGMA, 8))
    .expect("fit");
    let s0 = bn.statistic(&pool, 0.0).expect("statistic");
    let ll = LogLikelihood::new(AppendixDFlow::on_pixels(&device, SIGMA, 4), &device)
        .log_likelihoods(&pool)
        .expect("ll");
    assert_eq!(s0, ll);
    let detailed = bn.score_detailed(&pool).expect("score");
    assert_eq!(detailed.s_r1, ll);
}

#[test]
fn a_ratio_of_one_with_b_equal_to_the_pool_scores_the_pool_as_one_batch() {
    let device = Device::flex();
    let pool = q_set("q", 32, 4, 9);
    // Neither ratio mixes in reference images, so the whole reference set is held out.
    let bn = BnTest::new(
        AppendixDFlow::on_pixels(&device, SIGMA, 4),
        &device,
        BnTestParams::new().ratios(0.0, 1.0).batch_size(32),
    )
    .expect("valid")
    .fit(&p_set("p reference", 40, 4, SIGMA, 10))
    .expect("fit");
    assert_eq!(bn.reference_deltas().len(), 40);
    let s1 = bn.statistic(&pool, 1.0).expect("statistic");
    let flow = AppendixDFlow::on_pixels(&device, SIGMA, 4);
    let x = pool.tensor(0..32, &device).expect("tensor").add_scalar(0.5);
    let whole = host(flow.log_prob(x, &StatsMode::Batch).expect("log prob"));
    for (i, (a, b)) in s1.iter().zip(&whole).enumerate() {
        assert!((a - b).abs() < 1e-4, "image {i}: {a} vs {b}");
    }
    assert_eq!(bn.score_detailed(&pool).expect("score").s_r2, s1);
    // Swap half of the pool for p images: the other half's scores change although those
    // images did not. The BN test is a test on batches.
    let kept: Vec<usize> = (16..32).collect();
    let swapped = ImageSet::concat(
        "half p, half q",
        &[
            &p_set("p", 16, 4, SIGMA, 11),
            &pool.select(&kept).expect("select"),
        ],
    )
    .expect("concat");
    let s1_swapped = bn.statistic(&swapped, 1.0).expect("statistic");
    let moved = (0..16)
        .map(|k| (s1_swapped[16 + k] - s1[16 + k]).abs())
        .sum::<f64>()
        / 16.0;
    assert!(
        moved > 0.5,
        "the kept images' scores moved by only {moved} nats on average"
    );
}

#[test]
fn a_log_likelihood_threshold_needs_as_many_reference_images_as_a_rank_test() {
    let device = Device::flex();
    for n in [1, 2, 18] {
        let ll = LogLikelihood::new(AppendixDFlow::on_pixels(&device, SIGMA, 4), &device)
            .fit(&q_set("few", n, 4, 5))
            .expect("fit");
        let err = ll
            .threshold_for_fpr(0.05)
            .expect_err("too few to resolve 5 %");
        assert!(
            matches!(err, DetectError::ReferenceTooSmall(_)),
            "{n}: {err}"
        );
        assert!(err.to_string().contains("at least 19"), "{err}");
    }
    let ll = LogLikelihood::new(AppendixDFlow::on_pixels(&device, SIGMA, 4), &device)
        .fit(&q_set("enough", 19, 4, 5))
        .expect("fit");
    ll.threshold_for_fpr(0.05)
        .expect("19 reference images resolve 5 %");
}
