//! Golden tests: every metric and curve must match scikit-learn to 1e-9.
//!
//! The fixture is produced by `tests/fixtures/make_fixtures.py`; see that
//! script for how to regenerate it and the versions used.

use bnood_metrics::{
    aupr_in, aupr_out, auroc, average_precision, evaluate, fpr_at_95_tpr, precision_recall_curve,
    roc_curve,
};
use serde::Deserialize;

const TOL: f64 = 1e-9;
const FIXTURE: &str = include_str!("fixtures/sklearn_golden.json");

/// A JSON number, or "inf" / "-inf" (JSON has no infinity).
#[derive(Deserialize)]
#[serde(untagged)]
enum Num {
    Finite(f64),
    Text(String),
}

impl Num {
    fn value(&self) -> f64 {
        match self {
            Num::Finite(v) => *v,
            Num::Text(s) if s == "inf" => f64::INFINITY,
            Num::Text(s) if s == "-inf" => f64::NEG_INFINITY,
            Num::Text(s) => panic!("unexpected number encoding {s:?}"),
        }
    }
}

#[derive(Deserialize)]
struct Roc {
    fpr: Vec<Num>,
    tpr: Vec<Num>,
    thresholds: Vec<Num>,
}

#[derive(Deserialize)]
struct Pr {
    precision: Vec<Num>,
    recall: Vec<Num>,
    thresholds: Vec<Num>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    in_scores: Vec<f64>,
    ood_scores: Vec<f64>,
    auroc: f64,
    average_precision: f64,
    aupr_in: f64,
    aupr_out: f64,
    fpr_at_95_tpr: f64,
    roc: Option<Roc>,
    pr: Option<Pr>,
}

#[derive(Deserialize)]
struct Fixture {
    sklearn_version: String,
    cases: Vec<Case>,
}

fn load() -> Fixture {
    serde_json::from_str(FIXTURE).expect("sklearn_golden.json parses")
}

fn assert_close(case: &str, what: &str, got: f64, want: f64) {
    let ok = if want.is_infinite() {
        got == want
    } else {
        (got - want).abs() <= TOL
    };
    assert!(ok, "{case}: {what}: got {got}, sklearn {want}");
}

fn assert_all_close(case: &str, what: &str, got: &[f64], want: &[Num]) {
    assert_eq!(got.len(), want.len(), "{case}: {what}: length differs");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_close(case, &format!("{what}[{i}]"), *g, w.value());
    }
}

#[test]
fn scalar_metrics_match_sklearn_on_every_golden_case() {
    let fixture = load();
    for c in &fixture.cases {
        let (i, o) = (&c.in_scores[..], &c.ood_scores[..]);
        let n = &c.name;
        assert_close(n, "auroc", auroc(i, o).expect("auroc"), c.auroc);
        assert_close(
            n,
            "average_precision",
            average_precision(i, o).expect("ap"),
            c.average_precision,
        );
        assert_close(n, "aupr_in", aupr_in(i, o).expect("aupr_in"), c.aupr_in);
        assert_close(n, "aupr_out", aupr_out(i, o).expect("aupr_out"), c.aupr_out);
        assert_close(
            n,
            "fpr_at_95_tpr",
            fpr_at_95_tpr(i, o).expect("fpr95"),
            c.fpr_at_95_tpr,
        );

        let m = evaluate(i, o).expect("evaluate");
        assert_close(n, "evaluate.auroc", m.auroc, c.auroc);
        assert_close(
            n,
            "evaluate.average_precision",
            m.average_precision,
            c.average_precision,
        );
        assert_close(n, "evaluate.aupr_in", m.aupr_in, c.aupr_in);
        assert_close(n, "evaluate.aupr_out", m.aupr_out, c.aupr_out);
        assert_close(
            n,
            "evaluate.fpr_at_95_tpr",
            m.fpr_at_95_tpr,
            c.fpr_at_95_tpr,
        );
    }
}

#[test]
fn roc_curves_match_sklearn_without_dropping_intermediate_points() {
    let fixture = load();
    let mut checked = 0;
    for c in &fixture.cases {
        let Some(want) = &c.roc else { continue };
        let got = roc_curve(&c.in_scores, &c.ood_scores).expect("roc_curve");
        assert_all_close(&c.name, "roc.fpr", &got.fpr, &want.fpr);
        assert_all_close(&c.name, "roc.tpr", &got.tpr, &want.tpr);
        assert_all_close(&c.name, "roc.thresholds", &got.thresholds, &want.thresholds);
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} cases carry a ROC curve");
}

#[test]
fn precision_recall_curves_match_sklearn() {
    let fixture = load();
    let mut checked = 0;
    for c in &fixture.cases {
        let Some(want) = &c.pr else { continue };
        let got = precision_recall_curve(&c.in_scores, &c.ood_scores).expect("pr curve");
        assert_all_close(&c.name, "pr.precision", &got.precision, &want.precision);
        assert_all_close(&c.name, "pr.recall", &got.recall, &want.recall);
        assert_all_close(&c.name, "pr.thresholds", &got.thresholds, &want.thresholds);
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} cases carry a PR curve");
}

#[test]
fn golden_fixture_covers_the_required_cases() {
    let fixture = load();
    assert!(!fixture.sklearn_version.is_empty());
    let names: Vec<&str> = fixture.cases.iter().map(|c| c.name.as_str()).collect();
    for required in [
        "sklearn_doc_example",
        "all_tied",
        "heavy_ties_integers_0_to_4",
        "perfectly_separated",
        "perfectly_inverted",
        "unbalanced_10_ood_vs_1000_in",
        "unbalanced_10_in_vs_1000_ood",
        "large_random_5000_in_3000_ood",
        "duplicates_mixed_with_unique",
    ] {
        assert!(names.contains(&required), "fixture lacks case {required}");
    }
}
