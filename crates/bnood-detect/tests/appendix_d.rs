//! The paper's Appendix D example, built from the real `bnood_norm::BatchNorm`: its three
//! expected log-likelihoods, Figure 3's behaviour of `S_{b,r}`, and the BN test on it.

mod common;

use bnood_detect::{BnTest, BnTestParams, Detector, Fit};
use bnood_metrics::auroc;
use bnood_models::{LikelihoodModel, StatsMode};
use burn::tensor::Device;

use common::{AppendixDFlow, host, mean, p_set, q_set, raw_inputs, sample_p, sample_q};

const SIGMA: f64 = 0.01;

fn two_decimals(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Expected values of Appendix D (σ → 0, infinite batch), from `ln φ(x) = −½ln 2π − x²/2`:
/// E_p = −ln 2π − 1 (x1² = 1); E_q,running = −ln 2π − 1/12 (E x1² = 1/12);
/// E_q,batch = −ln 2π − (1 + 12)/24 (z2 = √12·x1).
const E_P: f64 = -2.837_877_066;
const E_Q_RUNNING: f64 = -1.921_210_399;
const E_Q_BATCH: f64 = -2.379_543_733;

#[test]
fn appendix_d_expected_log_likelihoods_match_the_paper_to_two_decimals() {
    let device = Device::flex();
    let flow = AppendixDFlow::raw(&device, SIGMA);

    let p = raw_inputs(&sample_p(20_000, SIGMA, 1), &device);
    let e_p = mean(&host(
        flow.log_prob(p, &StatsMode::Running).expect("log prob"),
    ));

    let q_small = raw_inputs(&sample_q(20_000, 2), &device);
    let e_q_running = mean(&host(
        flow.log_prob(q_small, &StatsMode::Running)
            .expect("log prob"),
    ));

    // One batch of 100,000 q samples: the batch statistics are those of q itself.
    let q_large = raw_inputs(&sample_q(100_000, 3), &device);
    let e_q_batch = mean(&host(
        flow.log_prob(q_large, &StatsMode::Batch).expect("log prob"),
    ));

    println!("E_p[ln p_f] = {e_p:.4} (running, 20,000 samples)");
    println!("E_q[ln p_f] = {e_q_running:.4} (running, 20,000 samples)");
    println!("E_q[ln p_f] = {e_q_batch:.4} (batch of 100,000 samples)");
    assert_eq!(two_decimals(e_p), -2.84, "E_p = {e_p}");
    assert_eq!(
        two_decimals(e_q_running),
        -1.92,
        "E_q running = {e_q_running}"
    );
    assert_eq!(two_decimals(e_q_batch), -2.38, "E_q batch = {e_q_batch}");
    assert!((e_p - E_P).abs() < 3e-3, "E_p = {e_p}, analytic {E_P}");
    assert!(
        (e_q_running - E_Q_RUNNING).abs() < 3e-3,
        "{e_q_running} vs {E_Q_RUNNING}"
    );
    assert!(
        (e_q_batch - E_Q_BATCH).abs() < 4e-3,
        "{e_q_batch} vs {E_Q_BATCH}"
    );
}

#[test]
fn raising_the_share_of_q_samples_lowers_their_likelihood_but_not_that_of_p_samples() {
    // Figure 3 on the Appendix D flow: mean S_{b,r} over a pool, r = 0.1 → 0.9.
    let device = Device::flex();
    let flow = AppendixDFlow::on_pixels(&device, SIGMA, 1);
    let detector = BnTest::new(flow, &device, BnTestParams::new().seed(5))
        .expect("valid")
        .fit(&p_set("p reference", 600, 1, SIGMA, 10))
        .expect("fit");

    let p_pool = p_set("p pool", 300, 1, SIGMA, 11);
    let q_pool = q_set("q pool", 300, 1, 12);
    let s = |pool, r| mean(&detector.statistic(pool, r).expect("statistic"));
    let (p_low, p_high) = (s(&p_pool, 0.1), s(&p_pool, 0.9));
    let (q_low, q_high) = (s(&q_pool, 0.1), s(&q_pool, 0.9));
    println!(
        "p: S_0.1 = {p_low:.3}, S_0.9 = {p_high:.3}; q: S_0.1 = {q_low:.3}, S_0.9 = {q_high:.3}"
    );
    // Densities here are per pixel unit: shift by 2·ln 100 to compare with the raw flow.
    let to_raw = 2.0 * 100f64.ln();
    assert!(
        (p_low + to_raw - E_P).abs() < 0.05,
        "p at r = 0.1: {}",
        p_low + to_raw
    );
    assert!(
        (p_high - p_low).abs() < 0.05,
        "p moved from {p_low} to {p_high}"
    );
    assert!(
        q_low - q_high > 0.15,
        "q only moved from {q_low} to {q_high}"
    );
}

#[test]
fn bn_test_separates_q_pools_from_p_pools_but_not_p_pools_from_each_other() {
    // One pair (x1, x2) carries too little signal per sample: Δ of a q sample scales with
    // x1², which vanishes near 0, while a p sample's Δ carries batch-mean noise of order
    // 1/√b. Sixteen independent copies of the flow (one BatchNorm over 16 channels) sum
    // the per-pair effects, as the thousands of dimensions of an image do.
    let pairs = 16;
    let device = Device::flex();
    let flow = AppendixDFlow::on_pixels(&device, SIGMA, pairs);
    let detector = BnTest::new(flow, &device, BnTestParams::new().seed(3))
        .expect("valid")
        .fit(&p_set("p reference", 600, pairs, SIGMA, 20))
        .expect("fit");

    let p_a = detector
        .score(&p_set("p pool A", 300, pairs, SIGMA, 21))
        .expect("score");
    let p_b = detector
        .score(&p_set("p pool B", 300, pairs, SIGMA, 22))
        .expect("score");
    let q = detector
        .score(&q_set("q pool", 300, pairs, 23))
        .expect("score");

    let shifted = auroc(&p_a.scores, &q.scores).expect("auroc");
    let same = auroc(&p_a.scores, &p_b.scores).expect("auroc");
    println!("AUROC p vs q = {shifted:.3}, p vs p = {same:.3}");
    assert!(shifted > 0.95, "AUROC p vs q = {shifted}");
    assert!((same - 0.5).abs() < 0.1, "AUROC p vs p = {same}");
}
