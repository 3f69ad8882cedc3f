//! The main job (first version): a RealNVP trained with BatchNorm on Fashion-MNIST, scored
//! on Fashion-MNIST test (in-distribution) against KMNIST test (OoD) with the four
//! detectors of the paper's Table 2, printed beside the paper's numbers.
//!
//! ```sh
//! BNOOD_DATA_DIR=../shared/datasets cargo run --release --example fmnist_vs_kmnist -- \
//!     [--subset 500] [--minutes 20] [--waic-models 3] [--waic-minutes 5] [--draws 1] [--runs runs]
//! ```
//!
//! Checkpoints live in `--runs` (`realnvp-cpu-seed<k>.bpk`); one that exists and matches
//! the architecture is reused, otherwise the model is trained for `--minutes` (the WAIC
//! ensemble's extra members for `--waic-minutes`). The test pools are pure: each of
//! `--subset` FMNIST-test and KMNIST-test images is scored within its own set. The reference
//! set is 2·subset FMNIST-train images. A JSON report is written to `<runs>/fmnist_vs_kmnist.json`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bnood::backend::device_from_env;
use bnood::data::{Dataset, ImageSet, Locator, Split};
use bnood::detect::{BnTest, BnTestParams, Detector, LogLikelihood, TPerm, Waic};
use bnood::models::train::{TrainConfig, train};
use bnood::models::{RealNvp, RealNvpConfig, checkpoint};
use burn::tensor::Device;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{name} needs a value")),
        None => Ok(default),
    }
}

/// Loads `path` if it holds a model of `cfg`, else trains one for `minutes` and saves it.
fn model(
    cfg: &RealNvpConfig,
    path: &Path,
    minutes: f64,
    train_set: &ImageSet,
    device: &Device,
) -> Result<RealNvp, Box<dyn std::error::Error>> {
    if path.is_file() {
        if let Ok(m) = checkpoint::load_into(cfg.init(device)?, path) {
            println!("reusing {}", path.display());
            return Ok(m);
        }
        println!(
            "{} does not match the architecture: training anew",
            path.display()
        );
    }
    println!(
        "training {} for {minutes} min (seed {})",
        path.display(),
        cfg.seed
    );
    let tc = TrainConfig {
        epochs: None,
        time_budget: Some(Duration::from_secs_f64(minutes * 60.0)),
        checkpoint: Some(path.to_path_buf()),
        ..TrainConfig::default()
    };
    let (m, report) = train(
        cfg.init(device)?,
        train_set,
        &tc,
        &device.clone().autodiff(),
    )?;
    println!(
        "  {} steps, {:.1} samples/s, loss {:.3} bits/dim",
        report.steps, report.samples_per_second, report.final_loss_bits_per_dim
    );
    Ok(burn::module::Module::valid(&m))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let subset: usize = arg(&args, "--subset", 500)?;
    let minutes: f64 = arg(&args, "--minutes", 20.0)?;
    let waic_models: usize = arg(&args, "--waic-models", 3)?;
    let waic_minutes: f64 = arg(&args, "--waic-minutes", 5.0)?;
    let draws: usize = arg(&args, "--draws", 1)?;
    let runs = PathBuf::from(arg(&args, "--runs", "runs".to_string())?);
    let device = device_from_env()?;
    let started = Instant::now();

    let locator = Locator::from_env();
    let train_set = Dataset::FashionMnist.load(Split::Train, &locator)?;
    let test_in = Dataset::FashionMnist
        .load(Split::Test, &locator)?
        .subset(subset, 1)?;
    let test_ood = Dataset::Kmnist
        .load(Split::Test, &locator)?
        .subset(subset, 2)?;
    let reference = train_set.subset(2 * subset, 3)?;

    let mut ensemble = Vec::new();
    for k in 0..waic_models.max(1) {
        let cfg = RealNvpConfig::cpu_fmnist().with_seed(k as u64);
        let budget = if k == 0 { minutes } else { waic_minutes };
        ensemble.push(model(
            &cfg,
            &runs.join(format!("realnvp-cpu-seed{k}.bpk")),
            budget,
            &train_set,
            &device,
        )?);
    }
    let main_model = ensemble[0].clone();

    // Paper Table 2, Fashion-MNIST / RealNVP / KMNIST: AUROC, AP.
    let paper = [(0.47, 0.46), (0.45, 0.45), (0.63, 0.65), (1.00, 1.00)];
    let mut detectors: Vec<Box<dyn Detector>> = vec![
        Box::new(LogLikelihood::new(main_model.clone(), &device)),
        Box::new(TPerm::new(main_model.clone(), &device)),
        Box::new(Waic::new(ensemble, &device)?),
        Box::new(BnTest::new(
            main_model,
            &device,
            BnTestParams::new().draws(draws),
        )?),
    ];
    println!(
        "\nFMNIST test ({subset}) vs KMNIST test ({subset}); reference: {} FMNIST-train images; BN test b=64, r1=0.1, r2=0.9, {draws} draw(s); WAIC over {} model(s)",
        reference.len(),
        waic_models.max(1)
    );
    println!(
        "{:<36} {:>6} {:>6} {:>9} {:>8}   paper AUROC/AP",
        "detector", "AUROC", "AP", "FPR@95", "time"
    );
    let mut rows = Vec::new();
    for (detector, (pa, pp)) in detectors.iter_mut().zip(paper) {
        let t = Instant::now();
        detector.fit(&reference)?;
        let s_in = detector.score(&test_in)?;
        let s_ood = detector.score(&test_ood)?;
        let m = bnood::detect::evaluate(&s_in, &s_ood)?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{:<36} {:>6.3} {:>6.3} {:>9.3} {:>7.1}s   {pa:.2} / {pp:.2}",
            detector.name(),
            m.auroc,
            m.average_precision,
            m.fpr_at_95_tpr,
            secs
        );
        rows.push(serde_json::json!({"detector": detector.name(), "auroc": m.auroc, "ap": m.average_precision, "fpr_at_95_tpr": m.fpr_at_95_tpr, "seconds": secs, "paper_auroc": pa, "paper_ap": pp}));
    }
    let report = serde_json::json!({"subset": subset, "draws": draws, "waic_models": waic_models.max(1), "device": format!("{device:?}"), "rows": rows, "total_seconds": started.elapsed().as_secs_f64()});
    std::fs::create_dir_all(&runs)?;
    let out = runs.join("fmnist_vs_kmnist.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!(
        "\nreport: {} (total {:.0}s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
