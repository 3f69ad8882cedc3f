//! The protocol's experiments on a tiny untrained RealNVP and synthetic images: shapes of
//! every result, the contamination study's pool composition, Table 5's `r1 = 0`, report
//! rendering from JSON, and the paper's numbers.

use bnood_data::ImageSet;
use bnood_detect::{BnTest, BnTestParams, DetectorParams, Fit, build};
use bnood_eval::{
    DetectorKind, Protocol, Report, Setting, contamination, ood_table, paper, r2_table,
    ratio_sweep, render, report,
};
use bnood_models::{RealNvp, RealNvpConfig};
use burn::tensor::Device;

fn tiny_model(device: &Device) -> RealNvp {
    RealNvpConfig {
        mid_channels: 4,
        num_blocks: 1,
        ..RealNvpConfig::cpu_fmnist()
    }
    .init(device)
    .expect("tiny RealNVP")
}

/// `n` 28×28 images: smooth blobs (`bright = false`) or bright noise (`true`).
fn images(name: &str, n: usize, bright: bool, seed: u32) -> ImageSet {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut pixels = Vec::with_capacity(n * 784);
    for _ in 0..n {
        for i in 0..28i32 {
            for j in 0..28i32 {
                let v = if bright {
                    128 + (next() % 128) as i32
                } else {
                    let d = (i - 14).pow(2) + (j - 14).pow(2);
                    (200 - d * 2).max(0) + (next() % 8) as i32
                };
                pixels.push(v.clamp(0, 255) as u8);
            }
        }
    }
    ImageSet::new(name, pixels, [n, 1, 28, 28], None).expect("images")
}

fn protocol() -> Protocol {
    Protocol {
        detectors: DetectorKind::PAPER.to_vec(),
        bn: BnTestParams::new().batch_size(10).seed(1),
        bn_per_input: None,
        progress: false,
    }
}

#[test]
fn table2_has_a_row_per_detector_and_ood_set_and_skips_waic_with_one_model() {
    let device = Device::flex();
    let model = tiny_model(&device);
    let reference = images("ref", 40, false, 1);
    let test_in = images("in", 20, false, 2);
    let oods = [images("A", 20, true, 3), images("B", 20, true, 4)];
    let rows = ood_table(
        &[model],
        None,
        "RealNVP",
        &reference,
        &test_in,
        &oods,
        &protocol(),
        &device,
    )
    .expect("table");
    let cells: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.detector.title(), r.ood.as_str()))
        .collect();
    assert_eq!(
        cells,
        [
            ("log p(x)", "A"),
            ("log p(x)", "B"),
            ("T_perm", "A"),
            ("T_perm", "B"),
            ("BN test", "A"),
            ("BN test", "B"),
        ]
    );
    assert!(rows.iter().all(|r| r.n_in == 20 && r.n_ood == 20));
    assert!(rows.iter().all(|r| r.roc.first() == Some(&(0.0, 0.0))));
}

#[test]
fn table5_uses_running_statistics_for_r1_and_each_r2() {
    let device = Device::flex();
    let model = tiny_model(&device);
    let rows = r2_table(
        &model,
        "RealNVP",
        &images("ref", 40, false, 1),
        &images("in", 20, false, 2),
        &[images("A", 20, true, 3)],
        &[0.3, 0.9],
        &protocol(),
        &device,
    )
    .expect("table 5");
    let settings: Vec<String> = rows.iter().map(|r| r.setting.to_string()).collect();
    assert_eq!(
        settings,
        [
            "b=10 r1=0.00 r2=0.30 draws=1",
            "b=10 r1=0.00 r2=0.90 draws=1"
        ]
    );
    let md = report::markdown_table5(&rows);
    assert!(md.contains("| r2 = 0.3 | r2 = 0.9 |"), "{md}");
}

#[test]
fn the_sweep_gives_one_point_per_ratio_and_equals_the_statistic_in_bits_per_dim() {
    let device = Device::flex();
    let bn = BnTest::new(tiny_model(&device), &device, protocol().bn)
        .expect("bn")
        .fit(&images("ref", 40, false, 1))
        .expect("fit");
    let pool = images("in", 20, false, 2);
    let series = ratio_sweep(&bn, std::slice::from_ref(&pool), &[0.0, 0.5, 1.0]).expect("sweep");
    assert_eq!(series.len(), 1);
    let xs: Vec<f64> = series[0].points.iter().map(|p| p.0).collect();
    assert_eq!(xs, [0.0, 0.5, 1.0]);
    let s = bn.statistic(&pool, 0.5).expect("statistic");
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    let bpd = -mean / (784.0 * std::f64::consts::LN_2);
    assert!((series[0].points[1].1 - bpd).abs() < 1e-9);
}

#[test]
fn contamination_pools_hold_the_requested_ood_share() {
    let device = Device::flex();
    let params = DetectorParams {
        bn: protocol().bn,
        ..DetectorParams::default()
    };
    let bn = build(
        DetectorKind::BnTest,
        vec![tiny_model(&device)],
        &device,
        &params,
    )
    .expect("bn")
    .fit(&images("ref", 40, false, 1))
    .expect("fit");
    let inliers = images("in", 60, false, 2);
    let outliers = images("out", 60, true, 3);
    let setting = Setting::bn_test(&protocol().bn).expect("valid");
    let study =
        |fractions: &[f64]| contamination(&bn, &setting, &inliers, &outliers, fractions, 40, 7);
    let rows = study(&[0.1, 0.5, 1.0]).expect("study");
    let counts: Vec<(usize, usize)> = rows.iter().map(|r| (r.n_in, r.n_ood)).collect();
    // 100 %: the pure OoD pool is compared with a pure in-distribution pool of 40.
    assert_eq!(counts, [(36, 4), (20, 20), (40, 40)]);
    for bad in [0.0, 1.5, f64::NAN] {
        let err = study(&[bad]).expect_err("invalid");
        assert!(err.to_string().contains("must lie in (0, 1]"), "{err}");
    }
    let err = study(&[0.01]).expect_err("no OoD");
    assert!(err.to_string().contains("holds no OoD image"), "{err}");
}

#[test]
fn a_report_round_trips_through_json_and_renders_tables_and_plots() {
    let device = Device::flex();
    let model = tiny_model(&device);
    let rows = ood_table(
        &[model],
        None,
        "RealNVP",
        &images("ref", 40, false, 1),
        &images("FMNIST", 20, false, 2),
        &[images("KMNIST", 20, true, 3)],
        &Protocol {
            detectors: vec![DetectorKind::LogLikelihood, DetectorKind::BnTest],
            ..protocol()
        },
        &device,
    )
    .expect("table");
    let rep = Report {
        table2: rows,
        ..Report::default()
    };
    let dir = std::env::temp_dir().join(format!("bnood-eval-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let json = dir.join("r.json");
    report::write_json(&rep, &json).expect("json");
    let back = report::read_json(&json).expect("read back");
    assert_eq!(back, rep);
    let (md, plots) = render(&back, &dir, "r").expect("render");
    let text = std::fs::read_to_string(md).expect("md");
    assert!(text.contains("| RealNVP | KMNIST |"), "{text}");
    assert!(
        text.contains("(0.47 / 0.46)") && text.contains("(1.00 / 1.00)"),
        "{text}"
    );
    assert_eq!(plots, [dir.join("roc-realnvp-kmnist.png")]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn paper_numbers_are_looked_up_by_model_set_and_detector() {
    assert_eq!(
        paper::table2("RealNVP", "MNIST", "log p(x)"),
        Some((0.10, 0.32))
    );
    assert_eq!(
        paper::table2("vae", "omniglot", "T_perm"),
        Some((0.99, 0.96))
    );
    assert_eq!(paper::table2("RealNVP", "SVHN", "WAIC"), None);
    assert_eq!(paper::table5("RealNVP", "KMNIST", 0.15), Some((0.86, 0.88)));
    assert_eq!(paper::table5("VAE", "Rotation", 0.9), Some((0.97, 0.98)));
    assert_eq!(paper::table5("VAE", "Rotation", 0.7), None);
}

#[test]
fn detector_names_parse_and_unknown_ones_list_the_choices() {
    assert_eq!(DetectorKind::parse("bn").ok(), Some(DetectorKind::BnTest));
    assert_eq!(
        DetectorKind::parse("T_perm").ok(),
        Some(DetectorKind::TPerm)
    );
    let err = DetectorKind::parse("ssim").expect_err("unknown");
    assert!(err.to_string().contains("logp, tperm, waic, bn"), "{err}");
}

#[test]
fn reports_written_before_detectors_and_settings_were_typed_still_load() {
    let cell = |detector: &str, setting: &str| {
        format!(
            r#"{{"model": "RealNVP", "in_distribution": "FMNIST", "ood": "KMNIST", "detector": "{detector}", "setting": "{setting}", "n_in": 2, "n_ood": 2, "auroc": 1.0, "average_precision": 1.0, "fpr_at_95_tpr": 0.0, "seconds": 1.5, "roc": [[0.0, 0.0], [1.0, 1.0]]}}"#
        )
    };
    let old = format!(
        r#"{{"settings": {{"backend": "flex", "model_files": ["a.bpk", "b.bpk"], "subset": 500, "reference_size": 1000, "seed": 0, "command": "bnood eval"}}, "table2": [{}, {}, {}], "table5": [], "sweep": [], "contamination": [], "total_seconds": 3.0}}"#,
        cell("log p(x)", ""),
        cell("WAIC", "2 models"),
        cell("BN test", "b=64 r1=0.10 r2=0.90 draws=1"),
    );
    let rep: Report = serde_json::from_str(&old).expect("an old report reads");
    let cells: Vec<(DetectorKind, String)> = rep
        .table2
        .iter()
        .map(|r| (r.detector, r.setting.to_string()))
        .collect();
    assert_eq!(
        cells,
        [
            (DetectorKind::LogLikelihood, String::new()),
            (DetectorKind::Waic, "2 models".to_string()),
            (
                DetectorKind::BnTest,
                "b=64 r1=0.10 r2=0.90 draws=1".to_string()
            ),
        ]
    );
    assert_eq!(rep.table2[2].setting.r2(), Some(0.9));
    assert_eq!(rep.settings.model_files, ["a.bpk", "b.bpk"]);
    // Written again, it is typed, and reads back equal.
    let again: Report =
        serde_json::from_str(&serde_json::to_string(&rep).expect("json")).expect("reads");
    assert_eq!(again, rep);
}

#[test]
fn window_power_has_a_row_per_cell_and_test_and_renders_every_table() {
    use bnood_eval::{WindowPowerSpec, window_power};
    let device = Device::flex();
    let model = tiny_model(&device);
    let spec = WindowPowerSpec {
        windows: vec![4, 8],
        shares: vec![0.0, 0.25, 1.0],
        windows_per_cell: 3,
        false_alarm_windows: 5,
        null_windows: 19,
        alpha: 0.05,
        comparison_size: 10,
        batch_size: 4,
        seed: 2,
    };
    let reference = images("reference", 100, false, 1);
    let inliers = images("inliers", 30, false, 2);
    let oods = [images("bright", 20, true, 3)];
    let report = window_power(
        &model,
        &device,
        &reference,
        &inliers,
        &oods,
        &spec,
        bnood_detect::ProgressHook::none(),
    )
    .expect("study");
    // Per M: one 0 % cell and two OoD cells, 4 tests each (bn, ks, mmd, ks-asymptotic).
    assert_eq!(report.rows.len(), 2 * 3 * 4);
    let cell = |m: usize, share: f64| {
        report
            .rows
            .iter()
            .filter(move |r| r.window == m && r.share == share)
    };
    assert!(cell(8, 0.0).all(|r| r.windows == 5 && r.ood_set == "-" && r.ood_per_window == 0));
    assert!(
        cell(8, 0.25).all(|r| r.windows == 3 && r.ood_set == "bright" && r.ood_per_window == 2)
    );
    assert!(cell(4, 1.0).all(|r| r.ood_per_window == 4));
    for r in &report.rows {
        assert_eq!(r.rate, r.flagged as f64 / r.windows as f64);
        assert!(r.interval.0 <= r.rate && r.rate <= r.interval.1, "{r:?}");
    }
    let md = report.to_markdown();
    assert!(md.contains("**OoD = bright**"), "{md}");
    assert!(md.contains("| 8 | BN window test |"), "{md}");
    assert_eq!(report.to_csv().lines().count(), 1 + report.rows.len());
    // Bad settings are refused before any work.
    let bad = WindowPowerSpec {
        shares: vec![1.5],
        ..spec.clone()
    };
    let err = window_power(
        &model,
        &device,
        &reference,
        &inliers,
        &oods,
        &bad,
        bnood_detect::ProgressHook::none(),
    )
    .expect_err("share above 1");
    assert!(err.to_string().contains("[0, 1]"), "{err}");
    let too_big = WindowPowerSpec {
        windows: vec![64],
        ..spec
    };
    let err = window_power(
        &model,
        &device,
        &reference,
        &inliers,
        &oods,
        &too_big,
        bnood_detect::ProgressHook::none(),
    )
    .expect_err("window above the inlier pool");
    assert!(err.to_string().contains("--input-size"), "{err}");
}
