//! Shared by the metrics' test files: a seeded generator (so the crate keeps no
//! dependencies, and a failing case reproduces from its seed) and the quadratic AUROC
//! reference.
#![allow(dead_code)] // each test file uses part of it

/// SplitMix64 (Vigna), a small well-mixed generator for test inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// scikit-learn's `roc_auc_score` written out: P(ood > in) + P(ood == in) / 2, quadratic.
pub fn pairwise_auroc(in_scores: &[f64], ood_scores: &[f64]) -> f64 {
    let mut wins = 0.0;
    for &o in ood_scores {
        for &i in in_scores {
            if o > i {
                wins += 1.0;
            } else if o == i {
                wins += 0.5;
            }
        }
    }
    wins / (in_scores.len() * ood_scores.len()) as f64
}
