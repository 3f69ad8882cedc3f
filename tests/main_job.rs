//! The main job (`examples/fmnist_vs_kmnist.rs`) end to end on a tiny model and subset:
//! it trains, scores with all four detectors, writes the JSON / Markdown / PNG report, and
//! a second run reuses the checkpoints and reproduces the same numbers.

use std::path::PathBuf;

use bnood::data::Locator;
use bnood::detect::BnTestParams;
use bnood::experiment::{Checkpoints, MainJob, main_job};
use bnood::models::train::TrainBudget;
use bnood::models::{ModelConfig, RealNvpConfig};

fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BNOOD_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let sibling = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets");
    assert!(
        sibling.is_dir(),
        "set BNOOD_DATA_DIR to the datasets directory (see README.md)"
    );
    sibling
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bnood-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn tiny_job(runs: PathBuf) -> MainJob {
    let tiny = RealNvpConfig {
        mid_channels: 4,
        num_blocks: 1,
        seed: 3,
        ..RealNvpConfig::cpu_fmnist()
    };
    let steps = TrainBudget::steps;
    MainJob {
        checkpoints: Checkpoints::Train,
        model: ModelConfig::RealNvp(tiny),
        preset: "tiny".into(),
        oods: vec!["kmnist".into()],
        subset: 48,
        reference_size: 64,
        seed: 3,
        budget: steps(4),
        waic_models: 2,
        waic_budget: steps(2),
        bn: BnTestParams::new().batch_size(16).seed(3),
        runs,
        stem: "report".into(),
        locator: Locator::only(data_dir()),
        progress: false,
        backend: "flex".into(),
    }
}

#[test]
fn the_main_job_writes_a_full_report_and_a_rerun_reuses_checkpoints_with_identical_numbers() {
    let runs = scratch("main-job");
    let device = burn::tensor::Device::flex();
    let job = tiny_job(runs.clone());
    let first = main_job(&job, &device).expect("main job runs");

    // One row per detector, in the paper's order, with sane metrics.
    let detectors: Vec<&str> = first
        .report
        .table2
        .iter()
        .map(|r| r.detector.title())
        .collect();
    assert_eq!(detectors, ["log p(x)", "T_perm", "WAIC", "BN test"]);
    for row in &first.report.table2 {
        assert_eq!((row.n_in, row.n_ood), (48, 48), "{row:?}");
        assert_eq!(row.ood, "KMNIST");
        assert!((0.0..=1.0).contains(&row.auroc), "{row:?}");
        assert!((0.0..=1.0).contains(&row.average_precision), "{row:?}");
        assert!(
            row.roc.len() >= 2 && row.roc.last() == Some(&(1.0, 1.0)),
            "{row:?}"
        );
    }
    // Checkpoints of both WAIC members, and every report file.
    for seed in [3, 4] {
        assert!(runs.join(format!("realnvp-tiny-seed{seed}.bpk")).is_file());
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&first.json).expect("json written"))
            .expect("valid JSON");
    assert_eq!(json["table2"].as_array().map(Vec::len), Some(4));
    assert!(json["total_seconds"].as_f64().is_some_and(|s| s > 0.0));
    let md = std::fs::read_to_string(&first.markdown).expect("markdown written");
    assert!(
        md.contains("| RealNVP | KMNIST |") && md.contains("(1.00 / 1.00)"),
        "{md}"
    );
    assert_eq!(first.plots.len(), 1);
    let png = std::fs::read(&first.plots[0]).expect("png written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // A second run trains nothing and reproduces every number.
    let second = main_job(&job, &device).expect("second run");
    let strip = |rows: &[bnood::eval::Row]| -> Vec<(String, f64, f64, f64)> {
        rows.iter()
            .map(|r| {
                (
                    r.detector.title().to_string(),
                    r.auroc,
                    r.average_precision,
                    r.fpr_at_95_tpr,
                )
            })
            .collect()
    };
    assert_eq!(strip(&first.report.table2), strip(&second.report.table2));
    let _ = std::fs::remove_dir_all(&runs);
}

#[test]
fn a_checkpoint_of_another_configuration_is_refused_not_overwritten() {
    let runs = scratch("main-job-mismatch");
    let device = burn::tensor::Device::flex();
    let job = tiny_job(runs.clone());
    let mut other = tiny_job(runs.clone());
    other.oods = vec!["mnist".into()];
    other.waic_models = 1;
    main_job(&other, &device).expect("first run trains seed 3");
    let path = runs.join("realnvp-tiny-seed3.bpk");
    let before = std::fs::read(&path).expect("checkpoint");

    let mut changed = job;
    if let ModelConfig::RealNvp(c) = &mut changed.model {
        c.mid_channels = 6;
    }
    let err = main_job(&changed, &device).expect_err("configuration differs");
    assert!(err.to_string().contains("different configuration"), "{err}");
    assert_eq!(std::fs::read(&path).expect("still there"), before);
    let _ = std::fs::remove_dir_all(&runs);
}

#[test]
fn the_main_job_without_ood_sets_is_a_clear_error() {
    let mut job = tiny_job(scratch("main-job-empty"));
    job.oods.clear();
    let err = main_job(&job, &burn::tensor::Device::flex()).expect_err("no OoD set");
    assert!(err.to_string().contains("no OoD set"), "{err}");
}

/// The default main job trains nothing: it loads the shipped `cpu` RealNVPs (seed 0 scored,
/// seeds 0–1 as the WAIC ensemble) from the repository's `models/`, verified, and writes no
/// checkpoint.
#[test]
fn the_main_job_uses_the_shipped_checkpoints_without_training() {
    let runs = scratch("main-job-shipped");
    let job = MainJob {
        checkpoints: shipped(),
        model: ModelConfig::preset(bnood::models::ModelKind::RealNvp, "cpu")
            .expect("cpu preset")
            .with_seed(0),
        preset: "cpu".into(),
        subset: 32,
        reference_size: 64,
        ..tiny_job(runs.clone())
    };
    let written =
        main_job(&job, &burn::tensor::Device::flex()).expect("main job with shipped models");
    assert!(written.json.is_file());
    let report = std::fs::read_to_string(&written.json).expect("report");
    assert!(
        report.contains("realnvp-fmnist-cpu-seed0.bpk"),
        "report names the shipped file"
    );
    let bpk: Vec<_> = std::fs::read_dir(&runs)
        .expect("runs")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "bpk"))
        .collect();
    assert!(bpk.is_empty(), "no checkpoint written: {bpk:?}");
    let _ = std::fs::remove_dir_all(&runs);
}

#[test]
fn the_main_job_asks_for_train_when_its_model_was_not_shipped() {
    let runs = scratch("main-job-not-shipped");
    let job = MainJob {
        checkpoints: shipped(),
        ..tiny_job(runs.clone())
    };
    let err =
        main_job(&job, &burn::tensor::Device::flex()).expect_err("tiny preset is not shipped");
    let text = err.to_string();
    assert!(text.contains("pass --train"), "{text}");
    assert!(
        text.contains("realnvp-fmnist"),
        "lists the shipped names: {text}"
    );
    let _ = std::fs::remove_dir_all(&runs);
}

/// The checkpoints shipped in the repository's `models/`, and only those.
fn shipped() -> Checkpoints {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    Checkpoints::Shipped(bnood::models::zoo::ModelsDir::only(models))
}
