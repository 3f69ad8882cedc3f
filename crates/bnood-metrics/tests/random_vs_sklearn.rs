//! Property tests: on random score sets (ties, one-element sets, duplicates, infinities),
//! the metrics equal scikit-learn's definitions written out naively here:
//! `roc_auc_score` as the Mann–Whitney probability with ties counted ½,
//! `average_precision_score` as `Σ (R_n − R_{n−1}) P_n` over distinct thresholds, and
//! FPR@TPR as `fpr[searchsorted(tpr, target, 'left')]` on `roc_curve(drop_intermediate=False)`.
//!
//! The inputs come from a fixed-seed generator (SplitMix64, written out so this crate keeps
//! no dependencies), so a failure names a case that reproduces.

use bnood_metrics::{aupr_in, auroc, average_precision, fpr_at_tpr};

/// SplitMix64: a small, well-mixed generator for test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A score: from a grid of 5 values (many ties), a wide range, or an infinity.
    fn score(&mut self, style: u64) -> f64 {
        match style {
            0 => self.below(5) as f64,
            1 => (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 200.0 - 100.0,
            _ => match self.below(10) {
                0 => f64::INFINITY,
                1 => f64::NEG_INFINITY,
                _ => self.below(3) as f64,
            },
        }
    }

    fn scores(&mut self, style: u64) -> Vec<f64> {
        let n = 1 + self.below(40) as usize;
        (0..n).map(|_| self.score(style)).collect()
    }
}

fn auroc_naive(inn: &[f64], ood: &[f64]) -> f64 {
    let mut wins = 0.0;
    for &o in ood {
        for &i in inn {
            wins += if o > i {
                1.0
            } else if o == i {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (inn.len() * ood.len()) as f64
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
        let (inn, ood) = (rng.scores(style), rng.scores(style));
        let what = format!("case {case}: in {inn:?}, ood {ood:?}");
        let negated = |v: &[f64]| v.iter().map(|s| -s).collect::<Vec<_>>();
        assert!(
            close(auroc(&inn, &ood).expect("auroc"), auroc_naive(&inn, &ood)),
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
        let mut inn = rng.scores(1);
        let ood = rng.scores(1);
        let at = rng.below(inn.len() as u64) as usize;
        inn[at] = f64::NAN;
        assert!(auroc(&inn, &ood).is_err());
        assert!(average_precision(&ood, &inn).is_err());
        assert!(auroc(&[], &ood).is_err());
        assert!(fpr_at_tpr(&ood, &ood, f64::NAN).is_err());
    }
}
