//! Behavioural tests of the public API: convention, ties, errors (with their
//! exact messages), consistency between entry points, and scale.

use bnood_metrics::{
    MetricsError, ScoreSet, aupr_in, aupr_out, auroc, average_precision, evaluate, fpr_at_95_tpr,
    fpr_at_tpr, mann_whitney, precision_recall_curve, roc_curve,
};

mod common;

use common::{Rng, pairwise_auroc};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12
}

#[test]
fn higher_ood_scores_give_auroc_one() {
    let in_scores = [0.1, 0.2, 0.3];
    let ood_scores = [0.7, 0.8];
    assert_eq!(auroc(&in_scores, &ood_scores), Ok(1.0));
    assert_eq!(average_precision(&in_scores, &ood_scores), Ok(1.0));
    assert_eq!(aupr_in(&in_scores, &ood_scores), Ok(1.0));
    assert_eq!(fpr_at_95_tpr(&in_scores, &ood_scores), Ok(0.0));
}

#[test]
fn lower_ood_scores_give_auroc_zero() {
    let in_scores = [0.7, 0.8];
    let ood_scores = [0.1, 0.2, 0.3];
    assert_eq!(auroc(&in_scores, &ood_scores), Ok(0.0));
    assert_eq!(fpr_at_95_tpr(&in_scores, &ood_scores), Ok(1.0));
}

#[test]
fn auroc_counts_ties_as_half() {
    assert_eq!(auroc(&[1.0], &[1.0]), Ok(0.5));
    assert_eq!(auroc(&[2.0; 4], &[2.0; 7]), Ok(0.5));
    // One win (1 > 0) and one tie (1 == 1): (1 + 0.5) / 2.
    assert_eq!(auroc(&[0.0, 1.0], &[1.0]), Ok(0.75));
}

#[test]
fn auroc_equals_pairwise_mann_whitney_probability() {
    let mut rng = Rng(7);
    for round in 0..50 {
        let n_in = 1 + rng.below(40) as usize;
        let n_ood = 1 + rng.below(40) as usize;
        // Few distinct values, so ties across and within classes are common.
        let in_scores: Vec<f64> = (0..n_in).map(|_| rng.below(8) as f64).collect();
        let ood_scores: Vec<f64> = (0..n_ood).map(|_| rng.below(8) as f64 + 1.0).collect();
        let got = auroc(&in_scores, &ood_scores).expect("valid input");
        let want = pairwise_auroc(&in_scores, &ood_scores);
        assert!(close(got, want), "round {round}: {got} vs {want}");
    }
}

#[test]
fn average_precision_matches_the_sklearn_docstring_example() {
    // sklearn: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333...
    let ap = average_precision(&[0.1, 0.4], &[0.35, 0.8]).expect("valid input");
    assert!(close(ap, 5.0 / 6.0), "{ap}");
}

#[test]
fn average_precision_of_all_tied_scores_is_the_ood_fraction() {
    let ap = average_precision(&[3.0; 5], &[3.0; 3]).expect("valid input");
    assert!(close(ap, 3.0 / 8.0), "{ap}");
}

#[test]
fn aupr_out_is_average_precision() {
    let (i, o) = ([0.3, 0.1, 0.9, 0.5, 0.5], [0.5, 0.8, 0.2]);
    assert_eq!(aupr_out(&i, &o), average_precision(&i, &o));
}

#[test]
fn aupr_in_is_average_precision_with_classes_swapped_and_scores_negated() {
    let mut rng = Rng(11);
    for _ in 0..20 {
        let in_scores: Vec<f64> = (0..30).map(|_| rng.below(10) as f64).collect();
        let ood_scores: Vec<f64> = (0..17).map(|_| rng.below(10) as f64 + 2.0).collect();
        let neg = |v: &[f64]| v.iter().map(|s| -s).collect::<Vec<_>>();
        let swapped = average_precision(&neg(&ood_scores), &neg(&in_scores)).expect("valid");
        let got = aupr_in(&in_scores, &ood_scores).expect("valid");
        assert!(close(got, swapped), "{got} vs {swapped}");
    }
}

#[test]
fn fpr_at_95_tpr_uses_first_threshold_reaching_target() {
    // 20 OoD scores 1..=20 and in scores 0.5, 1.5, ..., 9.5 (10 of them).
    // TPR reaches 19/20 = 0.95 at threshold 2 (scores >= 2): FP = in >= 2 = 8.
    let ood_scores: Vec<f64> = (1..=20).map(f64::from).collect();
    let in_scores: Vec<f64> = (0..10).map(|k| f64::from(k) + 0.5).collect();
    assert_eq!(fpr_at_95_tpr(&in_scores, &ood_scores), Ok(0.8));
    // A 0.951 target needs all 20 OoD scores (threshold 1): FP = 9.
    assert_eq!(fpr_at_tpr(&in_scores, &ood_scores, 0.951), Ok(0.9));
}

#[test]
fn fpr_at_tpr_one_is_fpr_needed_to_catch_every_ood_sample() {
    // The lowest OoD score is 0.4; in scores >= 0.4 are 0.4 (tie) and 0.6.
    let got = fpr_at_tpr(&[0.0, 0.2, 0.4, 0.6], &[0.4, 0.9], 1.0);
    assert_eq!(got, Ok(0.5));
}

#[test]
fn fpr_at_95_tpr_rejects_target_outside_unit_interval() {
    for target in [0.0, -0.1, 1.0 + 1e-12, 1.5, f64::NAN, f64::INFINITY] {
        let err = fpr_at_tpr(&[0.0], &[1.0], target).expect_err("invalid target");
        assert!(matches!(err, MetricsError::InvalidTprTarget { .. }));
    }
    let err = fpr_at_tpr(&[0.0], &[1.0], 1.5).expect_err("invalid target");
    assert_eq!(
        err.to_string(),
        "TPR target 1.5 is outside (0, 1]: pass a true-positive rate such as 0.95"
    );
}

#[test]
fn roc_curve_starts_at_infinite_threshold_with_origin() {
    let roc = roc_curve(&[0.1, 0.4], &[0.35, 0.8]).expect("valid input");
    assert_eq!(roc.thresholds, vec![f64::INFINITY, 0.8, 0.4, 0.35, 0.1]);
    assert_eq!(roc.fpr, vec![0.0, 0.0, 0.5, 0.5, 1.0]);
    assert_eq!(roc.tpr, vec![0.0, 0.5, 0.5, 1.0, 1.0]);
}

#[test]
fn precision_recall_curve_has_increasing_thresholds_and_ends_at_precision_one_recall_zero() {
    let pr = precision_recall_curve(&[0.1, 0.4], &[0.35, 0.8]).expect("valid input");
    assert_eq!(pr.thresholds, vec![0.1, 0.35, 0.4, 0.8]);
    assert_eq!(pr.recall, vec![1.0, 1.0, 0.5, 0.5, 0.0]);
    assert_eq!(pr.precision, vec![0.5, 2.0 / 3.0, 0.5, 1.0, 1.0]);
}

#[test]
fn empty_in_distribution_set_is_an_error_that_says_what_to_do() {
    let err = auroc(&[], &[1.0]).expect_err("empty in set");
    assert_eq!(err, MetricsError::EmptyInDistribution);
    assert_eq!(
        err.to_string(),
        "in-distribution scores are empty: pass at least one score for each class \
         (in-distribution and OoD)"
    );
}

#[test]
fn empty_ood_set_is_an_error_that_says_what_to_do() {
    let err = auroc(&[1.0], &[]).expect_err("empty OoD set");
    assert_eq!(err, MetricsError::EmptyOod);
    assert_eq!(
        err.to_string(),
        "OoD scores are empty: pass at least one score for each class (in-distribution and OoD)"
    );
}

#[test]
fn nan_score_is_rejected_with_its_index() {
    let err = auroc(&[0.0, 1.0, f64::NAN, f64::NAN], &[1.0]).expect_err("NaN");
    assert_eq!(
        err,
        MetricsError::NanScore {
            set: ScoreSet::InDistribution,
            index: 2
        }
    );
    assert_eq!(
        err.to_string(),
        "in-distribution score at index 2 is NaN: remove or replace NaN scores before \
         computing metrics (±infinity is allowed)"
    );

    let err = auroc(&[0.0], &[f64::NAN]).expect_err("NaN");
    assert_eq!(
        err,
        MetricsError::NanScore {
            set: ScoreSet::Ood,
            index: 0
        }
    );
    assert_eq!(
        err.to_string(),
        "OoD score at index 0 is NaN: remove or replace NaN scores before computing metrics \
         (±infinity is allowed)"
    );
}

#[test]
fn every_entry_point_rejects_invalid_input() {
    let cases: [(&[f64], &[f64], MetricsError); 3] = [
        (&[], &[1.0], MetricsError::EmptyInDistribution),
        (&[1.0], &[], MetricsError::EmptyOod),
        (
            &[1.0],
            &[0.0, f64::NAN],
            MetricsError::NanScore {
                set: ScoreSet::Ood,
                index: 1,
            },
        ),
    ];
    for (i, o, want) in cases {
        assert_eq!(auroc(i, o).expect_err("auroc"), want);
        assert_eq!(average_precision(i, o).expect_err("ap"), want);
        assert_eq!(aupr_in(i, o).expect_err("aupr_in"), want);
        assert_eq!(aupr_out(i, o).expect_err("aupr_out"), want);
        assert_eq!(fpr_at_95_tpr(i, o).expect_err("fpr95"), want);
        assert_eq!(fpr_at_tpr(i, o, 0.5).expect_err("fpr"), want);
        assert_eq!(roc_curve(i, o).expect_err("roc"), want);
        assert_eq!(precision_recall_curve(i, o).expect_err("pr"), want);
        assert_eq!(evaluate(i, o).expect_err("evaluate"), want);
    }
}

#[test]
fn infinite_scores_are_ordered_like_extreme_finite_scores() {
    let with_inf = evaluate(
        &[f64::NEG_INFINITY, 0.5, 1.0, f64::INFINITY],
        &[f64::INFINITY, 2.0, 0.7],
    )
    .expect("infinities are allowed");
    let finite = evaluate(&[-1e300, 0.5, 1.0, 1e300], &[1e300, 2.0, 0.7]).expect("valid");
    assert_eq!(with_inf, finite);
    let roc = roc_curve(&[f64::NEG_INFINITY], &[f64::INFINITY]).expect("valid");
    assert_eq!(
        roc.thresholds,
        vec![f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY]
    );
    assert_eq!(roc.tpr, vec![0.0, 1.0, 1.0]);
}

#[test]
fn positive_and_negative_zero_are_one_tie() {
    assert_eq!(auroc(&[-0.0], &[0.0]), Ok(0.5));
    let roc = roc_curve(&[-0.0, 0.0], &[0.0]).expect("valid");
    assert_eq!(roc.thresholds.len(), 2);
}

#[test]
fn metrics_do_not_depend_on_input_order() {
    let mut rng = Rng(3);
    let mut in_scores: Vec<f64> = (0..200).map(|_| rng.below(50) as f64 / 7.0).collect();
    let mut ood_scores: Vec<f64> = (0..150).map(|_| rng.below(60) as f64 / 7.0).collect();
    let before = evaluate(&in_scores, &ood_scores).expect("valid");
    rng.shuffle(&mut in_scores);
    rng.shuffle(&mut ood_scores);
    assert_eq!(evaluate(&in_scores, &ood_scores), Ok(before));
}

#[test]
fn evaluate_matches_individual_metrics() {
    let mut rng = Rng(5);
    let in_scores: Vec<f64> = (0..500).map(|_| rng.below(1000) as f64 / 100.0).collect();
    let ood_scores: Vec<f64> = (0..300).map(|_| rng.below(1000) as f64 / 80.0).collect();
    let (i, o) = (&in_scores[..], &ood_scores[..]);
    let m = evaluate(i, o).expect("valid");
    assert_eq!(m.auroc, auroc(i, o).expect("valid"));
    assert_eq!(m.average_precision, average_precision(i, o).expect("valid"));
    assert_eq!(m.aupr_in, aupr_in(i, o).expect("valid"));
    assert_eq!(m.aupr_out, aupr_out(i, o).expect("valid"));
    assert_eq!(m.fpr_at_95_tpr, fpr_at_95_tpr(i, o).expect("valid"));
}

#[test]
fn evaluate_handles_a_million_scores() {
    // in = {0, ..., n-1}, ood = {n/2, ..., 3n/2 - 1}, shuffled. With m = n/2
    // overlapping values, AUROC = 1 - (m/n)^2 / 2 = 0.875 exactly (ties = 1/2).
    let n = 500_000_u32;
    let mut rng = Rng(1);
    let mut in_scores: Vec<f64> = (0..n).map(f64::from).collect();
    let mut ood_scores: Vec<f64> = (0..n).map(|k| f64::from(k + n / 2)).collect();
    rng.shuffle(&mut in_scores);
    rng.shuffle(&mut ood_scores);
    let start = std::time::Instant::now();
    let m = evaluate(&in_scores, &ood_scores).expect("valid");
    let elapsed = start.elapsed();
    assert_eq!(m.auroc, 0.875);
    // TPR 0.95 is first reached at threshold n/2 + n/20: FP = n/2 - n/20 = 0.45 n.
    assert!(close(m.fpr_at_95_tpr, 0.45), "{}", m.fpr_at_95_tpr);
    assert!((0.0..=1.0).contains(&m.average_precision));
    assert!((0.0..=1.0).contains(&m.aupr_in));
    // Generous bound for unoptimised builds; a quadratic algorithm would take hours.
    assert!(elapsed.as_secs() < 30, "evaluate took {elapsed:?}");
}

/// Golden values from scipy 1.17.1:
/// `mannwhitneyu(ood, in, alternative="greater" | "two-sided", method="asymptotic",
/// use_continuity=True)`.
#[test]
fn mann_whitney_matches_scipy_with_ties_and_without() {
    /// in-distribution scores, OoD scores, U, one-sided p, two-sided p
    type Case<'a> = (&'a [f64], &'a [f64], f64, f64, f64);
    let cases: [Case<'_>; 4] = [
        (
            &[0.1, 0.4, 0.2, 0.9, 0.3],
            &[0.35, 0.8, 0.95, 0.5],
            16.0,
            0.088_954_797_493_491_22,
            0.177_909_594_986_982_44,
        ),
        (
            &[1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0],
            &[2.0, 3.0, 3.0, 4.0, 4.0, 5.0],
            31.0,
            0.078_892_705_258_982_51,
            0.157_785_410_517_965_02,
        ),
        (&[0.5; 4], &[0.5; 3], 6.0, 1.0, 1.0),
        (
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            &[9.0, 10.0, 11.0],
            24.0,
            0.009_451_771_505_560_67,
            0.018_903_543_011_121_34,
        ),
    ];
    for (x_in, x_ood, u, p, p2) in cases {
        let t = mann_whitney(x_in, x_ood).expect("valid");
        assert!((t.u - u).abs() < 1e-12, "U {} vs {u}", t.u);
        assert!((t.p_value - p).abs() < 1e-12, "p {} vs {p}", t.p_value);
        assert!(
            (t.p_value_two_sided - p2).abs() < 1e-12,
            "two-sided p {} vs {p2}",
            t.p_value_two_sided
        );
        // Swapping the sets mirrors U; the two-sided p-value is the same.
        let swapped = mann_whitney(x_ood, x_in).expect("valid");
        assert!((swapped.p_value_two_sided - p2).abs() < 1e-12);
        assert_eq!(t.auroc, auroc(x_in, x_ood).expect("valid"));
    }
    assert_eq!(
        mann_whitney(&[], &[1.0]),
        Err(MetricsError::EmptyInDistribution)
    );
}
