//! Property tests: on random score sets (ties, one-element sets, duplicates, infinities),
//! the metrics equal scikit-learn's definitions written out naively here:
//! `roc_auc_score` as the Mann–Whitney probability with ties counted ½,
//! `average_precision_score` as `Σ (R_n − R_{n−1}) P_n` over distinct thresholds, and
//! FPR@TPR as `fpr[searchsorted(tpr, target, 'left')]` on `roc_curve(drop_intermediate=False)`.
//!
//! The inputs come from a fixed-seed generator (SplitMix64, written out so this crate keeps
//! no dependencies), so a failure names a case that reproduces.

use bnood_metrics::{aupr_in, auroc, average_precision, fpr_at_tpr};

mod common;

use common::{Rng, pairwise_auroc};

/// A score: from a grid of 5 values (many ties), a wide range, or an infinity.
fn score(rng: &mut Rng, style: u64) -> f64 {
    match style {
        0 => rng.below(5) as f64,
        1 => (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 200.0 - 100.0,
        _ => match rng.below(10) {
            0 => f64::INFINITY,
            1 => f64::NEG_INFINITY,
            _ => rng.below(3) as f64,
        },
    }
}

/// 1 to 40 scores of one style.
fn scores(rng: &mut Rng, style: u64) -> Vec<f64> {
    let n = 1 + rng.below(40) as usize;
    (0..n).map(|_| score(rng, style)).collect()
}

/// Distinct thresholds, decreasing, with the positives and negatives scoring at least each.
fn curve(pos: &[f64], neg: &[f64]) -> Vec<(f64, f64)> {
    let mut t: Vec<f64> = pos.iter().chain(neg).copied().collect();
    t.sort_by(|a, b| b.total_cmp(a));
    t.dedup();
    t.iter()
        .map(|&t| {
            (
                pos.iter().filter(|&&s| s >= t).count() as f64,
                neg.iter().filter(|&&s| s >= t).count() as f64,
            )
        })
        .collect()
}

fn ap_naive(pos: &[f64], neg: &[f64]) -> f64 {
    let (mut ap, mut last_recall) = (0.0, 0.0);
    for (tp, fp) in curve(pos, neg) {
        let recall = tp / pos.len() as f64;
        ap += (recall - last_recall) * tp / (tp + fp);
        last_recall = recall;
    }
    ap
}

fn fpr_at_tpr_naive(inn: &[f64], ood: &[f64], target: f64) -> f64 {
    let mut points = vec![(0.0, 0.0)];
    points.extend(curve(ood, inn));
    let (_, fp) = points
        .iter()
        .find(|(tp, _)| tp / ood.len() as f64 >= target)
        .copied()
        .unwrap_or((0.0, inn.len() as f64));
    fp / inn.len() as f64
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(1.0)
}

#[test]
fn metrics_equal_the_sklearn_formulas_on_random_scores() {
    let mut rng = Rng(12);
    for case in 0..3000 {
        let style = rng.below(3);
        let (inn, ood) = (scores(&mut rng, style), scores(&mut rng, style));
        let what = format!("case {case}: in {inn:?}, ood {ood:?}");
        let negated = |v: &[f64]| v.iter().map(|s| -s).collect::<Vec<_>>();
        assert!(
            close(
                auroc(&inn, &ood).expect("auroc"),
                pairwise_auroc(&inn, &ood)
            ),
            "{what}"
        );
        assert!(
            close(
                average_precision(&inn, &ood).expect("ap"),
                ap_naive(&ood, &inn)
            ),
            "{what}"
        );
        assert!(
            close(
                aupr_in(&inn, &ood).expect("aupr in"),
                ap_naive(&negated(&inn), &negated(&ood))
            ),
            "{what}"
        );
        for target in [0.5, 0.95, 1.0] {
            assert!(
                close(
                    fpr_at_tpr(&inn, &ood, target).expect("fpr"),
                    fpr_at_tpr_naive(&inn, &ood, target)
                ),
                "{what} at {target}"
            );
        }
    }
}

#[test]
fn metrics_refuse_nan_and_empty_sets_on_random_inputs_without_panicking() {
    let mut rng = Rng(13);
    for _ in 0..500 {
        let mut inn = scores(&mut rng, 1);
        let ood = scores(&mut rng, 1);
        let at = rng.below(inn.len() as u64) as usize;
        inn[at] = f64::NAN;
        assert!(auroc(&inn, &ood).is_err());
        assert!(average_precision(&ood, &inn).is_err());
        assert!(auroc(&[], &ood).is_err());
        assert!(fpr_at_tpr(&ood, &ood, f64::NAN).is_err());
    }
}
