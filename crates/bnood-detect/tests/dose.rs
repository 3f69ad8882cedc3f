//! DoSE (Morningstar et al. 2021) on the Appendix D flow: its score is the paper's
//! `−Σ_k ln f̂_k(t_k(x))` over Gaussian KDEs fitted on in-distribution images only, its
//! p-values rank that score among held-out reference images', and it scores an input alike
//! whatever else is in the set (per input).

mod common;

use bnood_detect::{Detector, Dose, Fit, Kde, ScoringParams};
use burn::tensor::Device;

use common::{AppendixDFlow, p_set, q_set};

const SIGMA: f64 = 0.05;
const PAIRS: usize = 4;

fn fitted(seed: u64) -> bnood_detect::FittedDose<AppendixDFlow> {
    let device = Device::flex();
    Dose::new(
        AppendixDFlow::on_pixels(&device, SIGMA, PAIRS),
        &device,
        ScoringParams::default(),
        0.5,
        seed,
    )
    .expect("valid")
    .fit(&p_set("p reference", 400, PAIRS, SIGMA, 10 + seed))
    .expect("fit")
}

#[test]
fn the_score_is_minus_the_sum_of_log_kde_densities_of_the_statistics() {
    let device = Device::flex();
    let dose = fitted(1);
    assert_eq!(dose.densities().len(), 3);
    // The reference is split in half: 200 points per density, 200 calibration scores.
    assert!(dose.densities().iter().all(|k| k.points.len() == 200));
    assert_eq!(dose.calibration_scores().len(), 200);
    let probes = p_set("probes", 5, PAIRS, SIGMA, 99);
    let scores = dose.score(&probes).expect("score");
    let stats = Dose::new(
        AppendixDFlow::on_pixels(&device, SIGMA, PAIRS),
        &device,
        ScoringParams::default(),
        0.5,
        1,
    )
    .expect("valid")
    .statistics(&probes)
    .expect("statistics");
    for i in 0..5 {
        let by_hand: f64 = dose
            .densities()
            .iter()
            .zip(&stats)
            .map(|(kde, t)| {
                // ln of (1/n) Σ φ((x − p)/h) / h, summed directly.
                let n = kde.points.len() as f64;
                let h = kde.bandwidth;
                let density = kde
                    .points
                    .iter()
                    .map(|p| (-0.5 * ((t[i] - p) / h).powi(2)).exp())
                    .sum::<f64>()
                    / (n * h * std::f64::consts::TAU.sqrt());
                density.ln()
            })
            .sum();
        assert!(
            (scores.scores[i] + by_hand).abs() < 1e-9 * by_hand.abs().max(1.0),
            "image {i}: {} vs {}",
            scores.scores[i],
            -by_hand
        );
        let p = scores.p_values.as_ref().expect("p-values")[i];
        let ge = dose
            .calibration_scores()
            .iter()
            .filter(|&&c| c >= scores.scores[i])
            .count();
        assert_eq!(p, (1 + ge) as f64 / 201.0);
    }
}

#[test]
fn silverman_bandwidth_and_the_log_density_of_a_kde() {
    // 1..=5: sd = 1.5811, IQR = 2 → min(sd, IQR/1.34 = 1.4925) = 1.4925; h = 0.9 · 1.4925 ·
    // 5^(−1/5) = 0.973585.
    let kde = Kde::fit(&[1.0, 2.0, 3.0, 4.0, 5.0]).expect("fit");
    assert!(
        (kde.bandwidth - 0.973_585).abs() < 1e-6,
        "{}",
        kde.bandwidth
    );
    let h = kde.bandwidth;
    let at_3: f64 = (1..=5)
        .map(|p| (-0.5 * ((3.0 - p as f64) / h).powi(2)).exp())
        .sum::<f64>()
        / (5.0 * h * std::f64::consts::TAU.sqrt());
    assert!((kde.log_density(3.0) - at_3.ln()).abs() < 1e-12);
    // Far in a tail the log-density stays finite and keeps falling.
    assert!(kde.log_density(1e3).is_finite());
    assert!(kde.log_density(1e3) < kde.log_density(10.0));
    assert!(Kde::fit(&[1.0]).is_err());
    assert!(Kde::fit(&[1.0, f64::NAN]).is_err());
}

#[test]
fn dose_flags_a_shifted_set_scores_per_input_and_keeps_its_p_values_calibrated() {
    let dose = fitted(2);
    let shifted = dose.score(&q_set("q", 100, PAIRS, 7)).expect("score");
    let same = dose
        .score(&p_set("p", 400, PAIRS, SIGMA, 7))
        .expect("score");
    let alpha = dose.threshold_for_fpr(0.1).expect("threshold");
    let flagged = |s: &bnood_detect::Scores| {
        s.decisions(alpha).iter().filter(|&&d| d).count() as f64 / s.len() as f64
    };
    println!(
        "flagged at 10 %: in-distribution {:.3}, shifted {:.3}",
        flagged(&same),
        flagged(&shifted)
    );
    // Conformal p-values over 200 calibration images: the share of 400 in-distribution
    // images flagged at 10 % has sd √(0.1·0.9/400) ≈ 0.015 plus the calibration's ≈ 0.02.
    assert!((flagged(&same) - 0.1).abs() < 0.1, "{}", flagged(&same));
    assert!(flagged(&shifted) > 0.9, "{}", flagged(&shifted));
    // Per input: an image's score does not depend on the other images scored with it.
    assert!(dose.is_per_input());
    let alone = dose
        .score(&p_set("p", 400, PAIRS, SIGMA, 7).head(3).expect("head"))
        .expect("score");
    assert_eq!(alone.scores, same.scores[..3]);
}
