//! Trains a model preset on Fashion-MNIST and reports training throughput and the paper's
//! Table 1 analogue: bits/dim on FMNIST test and MNIST test with BatchNorm in Running
//! ("evaluation") vs Batch ("training") mode, and their difference Δ.
//!
//! ```sh
//! BNOOD_DATA_DIR=../shared/datasets cargo run --release --example train_model -- \
//!     <realnvp|vae> <preset: cpu|paper> <minutes> <eval images> [checkpoint path]
//! ```
//!
//! With `0` minutes and an existing checkpoint, the checkpoint is evaluated as it is.
//!
//! The backend comes from `BNOOD_DEVICE` (`flex` by default; build with `--features wgpu`
//! for GPUs). Test images are scored with midpoint dequantisation (pixel + 0.5), in batches
//! of 64 drawn from one set, as in Table 1 (no mixing); the subset of `eval images` per set
//! is drawn with seed 1.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bnood::backend::device_from_env;
use bnood::data::{Dataset, ImageSet, Locator, Split};
use bnood::models::train::{TrainConfig, Trainable, train};
use bnood::models::{LikelihoodModel, ModelError, RealNvpConfig, StatsMode, VaeConfig};
use burn::tensor::Device;

fn mean_bpd(
    model: &impl LikelihoodModel,
    set: &ImageSet,
    mode: &StatsMode,
    device: &Device,
) -> Result<f64, ModelError> {
    let (mut total, mut n) = (0.0, 0usize);
    for batch in set.batches(64, device)? {
        if batch.dims()[0] < 2 {
            continue; // a lone last image has no batch statistics
        }
        let bpd: Vec<f32> = model
            .bits_per_dim(batch.add_scalar(0.5), mode)?
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| ModelError::Training(format!("{e:?}")))?;
        total += bpd.iter().map(|&v| f64::from(v)).sum::<f64>();
        n += bpd.len();
    }
    Ok(total / n as f64)
}

fn run<M: Trainable>(
    model: M,
    minutes: f64,
    eval_n: usize,
    ckpt: Option<PathBuf>,
    device: &Device,
) -> Result<(), Box<dyn std::error::Error>> {
    let locator = Locator::from_env();
    let train_set = Dataset::FashionMnist.load(Split::Train, &locator)?;
    println!(
        "{} parameters (including BatchNorm running statistics)",
        model.num_params()
    );
    let cfg = TrainConfig {
        epochs: None,
        time_budget: Some(Duration::from_secs_f64(minutes * 60.0)),
        checkpoint: ckpt,
        ..TrainConfig::default()
    };
    let model = match cfg
        .checkpoint
        .as_deref()
        .filter(|p| minutes == 0.0 && p.is_file())
    {
        // `0` minutes with an existing checkpoint: evaluate it as it is.
        Some(path) => {
            let model = bnood::models::checkpoint::load_into(model, path)?;
            let meta = bnood::models::checkpoint::read_meta(path)?;
            println!(
                "evaluating {} ({} steps, {} samples seen)",
                path.display(),
                meta.step,
                meta.samples_seen
            );
            return evaluate(&model, eval_n, device);
        }
        None => model,
    };
    let (model, report) = train(model, &train_set, &cfg, &device.clone().autodiff())?;
    println!(
        "trained {} steps ({} samples, {:.2} epochs) in {:.1}s: {:.1} samples/s, loss over the last 50 steps {:.3} bits/dim",
        report.steps,
        report.samples_seen,
        report.samples_seen as f64 / train_set.len() as f64,
        report.seconds,
        report.samples_per_second,
        report.final_loss_bits_per_dim
    );
    evaluate(&model.valid(), eval_n, device)
}

fn evaluate(
    model: &impl LikelihoodModel,
    eval_n: usize,
    device: &Device,
) -> Result<(), Box<dyn std::error::Error>> {
    let locator = Locator::from_env();
    for (name, dataset) in [
        ("FMNIST test", Dataset::FashionMnist),
        ("MNIST test", Dataset::Mnist),
    ] {
        let set = dataset.load(Split::Test, &locator)?.subset(eval_n, 1)?;
        let t = Instant::now();
        let running = mean_bpd(model, &set, &StatsMode::Running, device)?;
        let batch = mean_bpd(model, &set, &StatsMode::Batch, device)?;
        println!(
            "{name}: running {running:.3} bits/dim, batch {batch:.3} bits/dim, delta {:.3} ({} images, {:.1}s for both modes)",
            batch - running,
            set.len(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: train_model <realnvp|vae> <cpu|paper> <minutes> <eval images> [checkpoint path]";
    let kind = args.get(1).ok_or(usage)?;
    let preset = args.get(2).map(String::as_str).unwrap_or("cpu");
    let minutes: f64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1.0);
    let eval_n: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(640);
    let ckpt = args.get(5).filter(|s| !s.is_empty()).map(PathBuf::from);
    let device = device_from_env()?;
    println!("{kind} preset {preset} on {device:?}");
    match kind.as_str() {
        "realnvp" => run(
            RealNvpConfig::preset(preset)?.init(&device)?,
            minutes,
            eval_n,
            ckpt,
            &device,
        ),
        "vae" => run(
            VaeConfig::preset(preset)?.init(&device)?,
            minutes,
            eval_n,
            ckpt,
            &device,
        ),
        _ => Err(usage.into()),
    }
}
