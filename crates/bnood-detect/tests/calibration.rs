//! BN-test calibration: p-values are close to uniform when the test pool and the reference
//! set share a distribution, and small under a clear shift.

mod common;

use bnood_data::ImageSet;
use bnood_detect::{BnCalibration, BnTest, BnTestParams, Detector, Fit, FittedBnTest, Scores};
use bnood_metrics::auroc;
use burn::tensor::Device;

use common::{AppendixDFlow, p_set, q_set};

const SIGMA: f64 = 0.01;
const PAIRS: usize = 16;

fn fitted_detector(seed: u64) -> FittedBnTest<AppendixDFlow> {
    fitted_with(BnTestParams::new().seed(seed), seed)
}

fn fitted_with(params: BnTestParams, seed: u64) -> FittedBnTest<AppendixDFlow> {
    let device = Device::flex();
    let flow = AppendixDFlow::on_pixels(&device, SIGMA, PAIRS);
    // 800 reference images: 400 mixed into batches, 400 held out to calibrate Δ.
    BnTest::new(flow, &device, params)
        .expect("valid parameters")
        .fit(&p_set("p reference", 800, PAIRS, SIGMA, 100 + seed))
        .expect("fit")
}

fn fraction_at_most(scores: &Scores, alpha: f64) -> f64 {
    let p = scores
        .p_values
        .as_ref()
        .expect("the BN test gives p-values");
    p.iter().filter(|&&p| p <= alpha).count() as f64 / p.len() as f64
}

#[test]
fn p_values_are_close_to_uniform_when_test_and_reference_share_a_distribution() {
    // The BN test scores pools, so the p-values of one pool share that pool's batches and
    // spread more than independent draws would: over 12 seeds the fraction below 0.1 of a
    // 400-image pool ranged from 0.045 to 0.168 (mean 0.097). Average over independent
    // repetitions (new seed, new reference set, new pool) and bound each one loosely.
    let reps: Vec<(f64, f64, f64)> = (1..=6u64)
        .map(|seed| {
            let detector = fitted_detector(seed);
            let pool: ImageSet = p_set("p pool", 400, PAIRS, SIGMA, 1000 * seed + 7);
            let scores = detector.score(&pool).expect("score");
            let reference = detector.reference_deltas();
            let same = auroc(reference, &scores.scores).expect("auroc");
            let rep = (
                fraction_at_most(&scores, 0.1),
                fraction_at_most(&scores, 0.5),
                same,
            );
            println!(
                "seed {seed}: P(p ≤ 0.1) = {:.3}, P(p ≤ 0.5) = {:.3}, AUROC = {:.3}",
                rep.0, rep.1, rep.2
            );
            rep
        })
        .collect();
    let n = reps.len() as f64;
    let below_10 = reps.iter().map(|r| r.0).sum::<f64>() / n;
    let below_50 = reps.iter().map(|r| r.1).sum::<f64>() / n;
    let same = reps.iter().map(|r| r.2).sum::<f64>() / n;
    println!("mean: P(p ≤ 0.1) = {below_10:.3}, P(p ≤ 0.5) = {below_50:.3}, AUROC = {same:.3}");
    assert!(
        (below_10 - 0.1).abs() < 0.04,
        "mean P(p ≤ 0.1) = {below_10}"
    );
    assert!(
        (below_50 - 0.5).abs() < 0.05,
        "mean P(p ≤ 0.5) = {below_50}"
    );
    assert!((same - 0.5).abs() < 0.05, "mean AUROC = {same}");
    for (k, &(b10, _, a)) in reps.iter().enumerate() {
        assert!(
            (b10 - 0.1).abs() < 0.1,
            "repetition {k}: P(p ≤ 0.1) = {b10}"
        );
        assert!((a - 0.5).abs() < 0.1, "repetition {k}: AUROC = {a}");
    }
}

#[test]
fn a_clearly_shifted_pool_gets_small_p_values_and_an_auroc_near_one() {
    let detector = fitted_detector(2);
    let alpha = detector.threshold_for_fpr(0.05).expect("threshold");
    // 400 held-out values: p-values are multiples of 1/401, so α = 20/401.
    assert!((alpha - 20.0 / 401.0).abs() < 1e-12, "α = {alpha}");

    let shifted = detector
        .score(&q_set("q pool", 400, PAIRS, 8))
        .expect("score");
    let in_dist = detector
        .score(&p_set("p pool", 400, PAIRS, SIGMA, 9))
        .expect("score");
    let reference = detector.reference_deltas();
    let separation = auroc(reference, &shifted.scores).expect("auroc");
    let flagged_ood = fraction_at_most(&shifted, alpha);
    let flagged_in = fraction_at_most(&in_dist, alpha);
    println!(
        "AUROC = {separation:.3}, flagged: OoD {flagged_ood:.3}, in-distribution {flagged_in:.3}"
    );
    assert!(separation > 0.95, "AUROC = {separation}");
    assert!(
        flagged_ood > 0.8,
        "only {flagged_ood} of the shifted pool flagged"
    );
    assert!(
        flagged_in < 0.1,
        "{flagged_in} of an in-distribution pool flagged at 5% FPR"
    );
    assert_eq!(
        in_dist.decisions(alpha).iter().filter(|&&d| d).count() as f64 / 400.0,
        flagged_in
    );
}

#[test]
fn in_pool_calibration_ranks_each_image_against_held_out_images_scored_in_the_same_batches() {
    // 800 reference images: 400 mixed into batches, 400 held out and shuffled into every
    // scored pool, so p-values live on the grid k/401 and α(5 %) = 20/401, as with the
    // paper's calibration.
    let detector = fitted_with(
        BnTestParams::new()
            .seed(3)
            .calibration(BnCalibration::InPool),
        3,
    );
    let alpha = detector.threshold_for_fpr(0.05).expect("threshold");
    assert!((alpha - 20.0 / 401.0).abs() < 1e-12, "α = {alpha}");
    let pool = p_set("p pool", 400, PAIRS, SIGMA, 3007);
    let scores = detector.score_detailed(&pool).expect("score");
    assert_eq!(
        scores.delta.len(),
        400,
        "one Δ per test image, none for held-out ones"
    );
    for &p in &scores.p_values {
        let k = p * 401.0;
        assert!(
            (k - k.round()).abs() < 1e-9 && (1.0..=401.0).contains(&k.round()),
            "p = {p}"
        );
    }
    // The test images' Δs come from batches shared with the held-out images: they differ
    // from those of the paper's calibration, where the pool is scored alone.
    let alone = fitted_detector(3).score_detailed(&pool).expect("score");
    assert_ne!(scores.delta, alone.delta);
    // Same seed, same numbers.
    assert_eq!(detector.score_detailed(&pool).expect("score"), scores);
}

#[test]
fn in_pool_p_values_are_close_to_uniform_for_in_distribution_pools() {
    // Over independent repetitions (seed, reference set, pool), the share of p ≤ 0.1 of a
    // pool of 400 in-distribution images averages 0.1: conformal validity, P(p ≤ α) ≤ α
    // with equality on the p-value grid. Sampling error: the per-repetition shares are
    // correlated within a pool; the bound on the mean (±0.04) is ±2.5 standard errors of
    // the 6-repetition mean at the spread measured for the paper's calibration above.
    let reps: Vec<f64> = (1..=6u64)
        .map(|seed| {
            let detector = fitted_with(
                BnTestParams::new()
                    .seed(seed)
                    .calibration(BnCalibration::InPool),
                seed,
            );
            let pool = p_set("p pool", 400, PAIRS, SIGMA, 1000 * seed + 7);
            let share = fraction_at_most(&detector.score(&pool).expect("score"), 0.1);
            println!("seed {seed}: P(p ≤ 0.1) = {share:.3}");
            share
        })
        .collect();
    let mean = reps.iter().sum::<f64>() / reps.len() as f64;
    println!("mean: P(p ≤ 0.1) = {mean:.3}");
    assert!((mean - 0.1).abs() < 0.04, "mean P(p ≤ 0.1) = {mean}");
}

/// Issue 27 item 1: a scored pool gets one verdict, the window statistic of the pool cut
/// into batches against null batches of the reference images the fitted test keeps: an
/// in-distribution pool is not rejected, a shifted pool is with a tiny p-value; both
/// calibrations give it (it does not use the Δs), and `pool_null_batches(0)` turns it off.
#[test]
fn a_scored_pool_gets_a_window_statistic_verdict_that_rejects_a_shifted_pool() {
    let detector = fitted_with(
        BnTestParams::new()
            .seed(5)
            .calibration(BnCalibration::InPool),
        5,
    );
    let same = detector
        .score(&p_set("p pool", 200, PAIRS, SIGMA, 5007))
        .expect("score");
    let verdict = same.pool.expect("a verdict in the pool mode");
    // 200 images in 4 batches of 50 (b = 64); null batches from the 400 mixing and 400
    // held-out images.
    assert_eq!(
        (verdict.pool_size, verdict.batches, verdict.batch_size),
        (200, 4, 50)
    );
    assert_eq!((verdict.reference_size, verdict.null_batches), (800, 200));
    // In-pool calibration adds the rank test of the Δs, combined by Bonferroni.
    let (p_rank, _) = verdict.rank.expect("a rank test with in-pool calibration");
    assert_eq!(
        verdict.p_value,
        (2.0 * verdict.window_p_value.min(p_rank)).min(1.0)
    );
    println!("in-distribution pool: {verdict:?}");
    // p is uniform here: it falls below 0.001 once in a thousand seeds.
    assert!(verdict.p_value > 0.001, "{verdict:?}");
    let shifted = detector
        .score(&q_set("q pool", 200, PAIRS, 5008))
        .expect("score")
        .pool
        .expect("verdict");
    println!("shifted pool: {shifted:?}");
    assert!(shifted.is_ood(1e-3), "{shifted:?}");
    assert!(shifted.statistic > shifted.null_mean, "{shifted:?}");
    let paper = fitted_detector(5)
        .score(&p_set("p pool", 200, PAIRS, SIGMA, 5007))
        .expect("score");
    let paper_verdict = paper
        .pool
        .expect("the paper's calibration gets a verdict too");
    assert_eq!(paper_verdict.reference_size, 400, "the mixing images only");
    assert_eq!(
        paper_verdict.rank, None,
        "no held-out Δs from the same batches"
    );
    assert_eq!(paper_verdict.p_value, paper_verdict.window_p_value);
    let off = fitted_with(BnTestParams::new().seed(5).pool_null_batches(0), 5)
        .score(&p_set("p pool", 200, PAIRS, SIGMA, 5007))
        .expect("score");
    assert_eq!(off.pool, None);
    assert_eq!(
        off.scores, paper.scores,
        "the verdict does not touch the scores"
    );
    // A pool smaller than r·b = 58 test rows is scored: the held-out images fill the
    // batches' test rows with it. Alone (the paper's calibration) it is refused.
    let small = p_set("small pool", 20, PAIRS, SIGMA, 5009);
    let scores = detector.score(&small).expect("20 images with 400 held out");
    assert_eq!(scores.len(), 20);
    assert_eq!(
        scores.pool.map(|v| (v.pool_size, v.batches, v.batch_size)),
        Some((20, 1, 20))
    );
    let refused = fitted_detector(5).score(&small).expect_err("20 < 58");
    assert!(refused.to_string().contains("58"), "{refused}");
}
