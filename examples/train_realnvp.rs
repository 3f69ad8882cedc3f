//! Trains a RealNVP preset on Fashion-MNIST and reports throughput and Table 1's numbers
//! (bits/dim on FMNIST test and MNIST test, BatchNorm in Running vs Batch mode).
//!
//! ```sh
//! BNOOD_DATA_DIR=../shared/datasets BNOOD_DEVICE=flex cargo run --release --example train_realnvp -- \
//!     <preset: cpu|paper> <minutes> <eval images> [checkpoint path] [max steps]
//! ```
//!
//! The backend comes from `BNOOD_DEVICE` (`flex` by default; build with `--features wgpu`
//! for GPUs). Test images are scored with midpoint dequantisation (pixel + 0.5), in batches
//! of 64 drawn from one set (Table 1's protocol: no mixing).

use std::path::PathBuf;

use bnood::backend::device_from_env;
use bnood::data::{Dataset, ImageSet, Locator, Split};
use bnood::models::train::{TrainConfig, train};
use bnood::models::{LikelihoodModel, RealNvpConfig, StatsMode};
use burn::module::Module;
use burn::tensor::Device;

fn mean_bpd(
    model: &impl LikelihoodModel,
    set: &ImageSet,
    mode: &StatsMode,
    device: &Device,
) -> f64 {
    let mut total = 0.0;
    let mut n = 0usize;
    for batch in set.batches(64, device).expect("batch size > 0") {
        if batch.dims()[0] < 2 {
            continue;
        }
        let x = batch.add_scalar(0.5); // midpoint dequantisation: deterministic
        let bpd: Vec<f32> = model
            .bits_per_dim(x, mode)
            .expect("scores")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        total += bpd.iter().map(|&v| f64::from(v)).sum::<f64>();
        n += bpd.len();
    }
    total / n as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map(String::as_str).unwrap_or("cpu");
    let minutes: f64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1.0);
    let eval_n: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(640);
    let ckpt = args.get(4).filter(|s| !s.is_empty()).map(PathBuf::from);
    let max_steps: Option<usize> = args.get(5).map(|s| s.parse()).transpose()?;

    let locator = Locator::from_env();
    let train_set = Dataset::FashionMnist.load(Split::Train, &locator)?;
    let device = device_from_env()?;
    println!("device: {device:?}");
    let cfg = RealNvpConfig::preset(preset)?;
    let model = cfg.init(&device)?;
    println!("preset {preset}: {} parameters", model.num_params());
    let tc = TrainConfig {
        max_steps,
        epochs: None,
        time_budget: Some(std::time::Duration::from_secs_f64(minutes * 60.0)),
        checkpoint: ckpt,
        ..TrainConfig::default()
    };
    let (model, report) = train(model, &train_set, &tc, &device.clone().autodiff(), 0)?;
    println!(
        "trained {} steps in {:.1}s: {:.1} samples/s, final loss {:.3} bits/dim",
        report.steps, report.seconds, report.samples_per_second, report.final_loss_bits_per_dim
    );
    let model = model.valid();
    let fm = Dataset::FashionMnist
        .load(Split::Test, &locator)?
        .subset(eval_n, 1)?;
    let mn = Dataset::Mnist
        .load(Split::Test, &locator)?
        .subset(eval_n, 1)?;
    for (name, set) in [("FMNIST test", &fm), ("MNIST test", &mn)] {
        let t = std::time::Instant::now();
        let run = mean_bpd(&model, set, &StatsMode::Running, &device);
        let bat = mean_bpd(&model, set, &StatsMode::Batch, &device);
        println!(
            "{name}: running {run:.3} bits/dim, batch {bat:.3} bits/dim, delta {:.3} ({} images, {:.1}s)",
            bat - run,
            set.len(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
