//! Trains a model preset on Fashion-MNIST and reports training throughput and the paper's
//! Table 1 analogue: bits/dim on FMNIST test and MNIST test with BatchNorm in Running
//! ("evaluation") vs Batch ("training") mode, and their difference Δ.
//!
//! ```sh
//! BNOOD_DATA_DIR=../shared/datasets cargo run --release --example train_model -- \
//!     --model realnvp --preset cpu --minutes 20 --eval-images 640 --checkpoint runs/m.bpk
//! ```
//!
//! With `--minutes 0` and an existing checkpoint, the checkpoint is evaluated as it is.
//! Test images are scored with midpoint dequantisation (pixel + 0.5), in batches of 64
//! drawn from one set, as in Table 1 (no mixing); the subset of `--eval-images` per set is
//! drawn with seed 1.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use bnood::backend::BackendArg;
use bnood::data::{Dataset, Locator, Split};
use bnood::eval::mean_bits_per_dim;
use bnood::experiment::train_model;
use bnood::models::train::TrainBudget;
use bnood::models::{AnyModel, ModelPreset, StatsMode, checkpoint};
use burn::module::Module;
use burn::tensor::Device;

#[derive(Parser)]
#[command(about = "Train a preset on Fashion-MNIST and report the paper's Table 1 analogue.")]
struct Options {
    #[command(flatten)]
    backend: BackendArg,
    #[command(flatten)]
    model: ModelPreset,
    /// Training budget in minutes (0 with an existing --checkpoint: evaluate it as it is).
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Test images per set for Table 1.
    #[arg(long, default_value_t = 640)]
    eval_images: usize,
    /// Checkpoint to write (or, with --minutes 0, to evaluate).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
}

fn evaluate(
    model: &AnyModel,
    eval_n: usize,
    device: &Device,
) -> Result<(), bnood::experiment::Error> {
    let locator = Locator::from_env();
    for (name, dataset) in [
        ("FMNIST test", Dataset::FashionMnist),
        ("MNIST test", Dataset::Mnist),
    ] {
        let set = dataset.load(Split::Test, &locator)?.subset(eval_n, 1)?;
        let t = Instant::now();
        let running = mean_bits_per_dim(model, &set, &StatsMode::Running, 64, device)?;
        let batch = mean_bits_per_dim(model, &set, &StatsMode::Batch, 64, device)?;
        println!(
            "{name}: running {running:.3} bits/dim, batch {batch:.3} bits/dim, delta {:.3} ({} images, {:.1}s for both modes)",
            batch - running,
            set.len(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<(), bnood::experiment::Error> {
    // Before any thread starts: glibc keeps freed tensor buffers for reuse (VAE scoring
    // +50 %, docs/performance.md); elsewhere this does nothing.
    bnood::models::allocator::keep_freed_memory();
    let o = Options::parse();
    let device = o.backend.resolve()?.device()?;
    println!("{} preset {} on {device:?}", o.model.model, o.model.preset);
    let config = o.model.config()?;
    if let Some(path) = o
        .checkpoint
        .as_deref()
        .filter(|p| o.minutes == 0.0 && p.is_file())
    {
        let model = checkpoint::load_into(config.init(&device)?, path)?;
        let meta = checkpoint::read_meta(path)?;
        println!(
            "evaluating {} ({} steps, {} samples seen)",
            path.display(),
            meta.step,
            meta.samples_seen
        );
        return evaluate(&model, o.eval_images, &device);
    }
    let train_set = Dataset::FashionMnist.load(Split::Train, &Locator::from_env())?;
    println!(
        "{} parameters (including BatchNorm running statistics)",
        config.init(&device)?.num_params()
    );
    let (model, report) = train_model(
        &config,
        &train_set,
        TrainBudget::minutes(o.minutes),
        o.checkpoint.as_deref(),
        false,
        &device,
        true,
    )?;
    println!(
        "trained {} steps ({} samples, {:.2} epochs) in {:.1}s: {:.1} samples/s, loss over the last 50 steps {:.3} bits/dim",
        report.steps,
        report.samples_seen,
        report.samples_seen as f64 / train_set.len() as f64,
        report.seconds,
        report.samples_per_second,
        report.final_loss_bits_per_dim
    );
    evaluate(&model, o.eval_images, &device)
}
