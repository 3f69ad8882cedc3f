//! The main job: a RealNVP trained with BatchNorm on Fashion-MNIST, scored on Fashion-MNIST
//! test (in-distribution) against KMNIST test (OoD) with the four detectors of the paper's
//! Table 2 — log-likelihood, T_perm, WAIC and the BN test — printed beside the paper's
//! numbers, with a JSON report, a Markdown table and a ROC-curve PNG.
//!
//! ```sh
//! BNOOD_DATA_DIR=../shared/datasets cargo run --release --example fmnist_vs_kmnist
//! cargo run --release --example fmnist_vs_kmnist -- --help
//! ```
//!
//! By default the job trains nothing: it scores with the checkpoints shipped in `models/`
//! (`bnood models list`; MD5-verified), and says so in its first line. `--train` trains
//! instead, into `--runs` (`realnvp-<preset>-seed<k>.bpk`): a checkpoint there that was made
//! with exactly this configuration is reused, one with another configuration is an error
//! (move it or use another `--runs`), otherwise the model is trained for `--minutes` (the
//! WAIC ensemble's extra members for `--waic-minutes`).

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use bnood::backend::BackendArg;
use bnood::data::Locator;
use bnood::detect::BnTestParams;
use bnood::experiment::{Checkpoints, MainJob, main_job};
use bnood::models::ModelPreset;
use bnood::models::train::TrainBudget;
use bnood::models::zoo::ModelsDir;

#[derive(Parser)]
#[command(
    about = "Fashion-MNIST vs KMNIST with the four detectors of Song, Song & Ermon's Table 2."
)]
struct Options {
    #[command(flatten)]
    backend: BackendArg,
    #[command(flatten)]
    model: ModelPreset,
    /// Images per test pool (Fashion-MNIST test and KMNIST test).
    #[arg(long, default_value_t = 500)]
    subset: usize,
    /// Reference images (Fashion-MNIST train) mixed into the BN test's batches.
    #[arg(long, default_value_t = 1000)]
    reference: usize,
    /// Seed of model initialisation, subsets and batch composition.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train the models (into --runs) instead of using the shipped checkpoints.
    #[arg(long)]
    train: bool,
    /// Folder searched first for the shipped checkpoints (then $BNOOD_MODELS_DIR, ./models).
    #[arg(long)]
    models_dir: Option<std::path::PathBuf>,
    /// Training budget of the main model, minutes (with --train).
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    /// WAIC ensemble size (1 disables WAIC).
    #[arg(long, default_value_t = 3)]
    waic_models: usize,
    /// Training budget of each extra WAIC member, minutes (with --train).
    #[arg(long, default_value_t = 6.0)]
    waic_minutes: f64,
    /// Monte Carlo draws of the BN test's batch composition.
    #[arg(long, default_value_t = 1)]
    draws: usize,
    /// OoD sets (catalogue names or paths), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "kmnist")]
    ood: Vec<String>,
    /// Folder of reports (and of checkpoints, with --train).
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    // Before any thread starts: glibc keeps freed tensor buffers for reuse (VAE scoring
    // +50 %, docs/performance.md); elsewhere this does nothing.
    bnood::models::allocator::keep_freed_memory();
    match run(Options::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(o: Options) -> Result<(), bnood::experiment::Error> {
    let started = Instant::now();
    let backend = o.backend.resolve()?;
    let device = backend.device()?;
    let checkpoints = if o.train {
        Checkpoints::Train
    } else {
        let dirs = ModelsDir::from_env();
        Checkpoints::Shipped(match &o.models_dir {
            Some(d) => dirs.with_dir(d),
            None => dirs,
        })
    };
    let source = match &checkpoints {
        Checkpoints::Shipped(_) => {
            "shipped checkpoints from models/ (no training; --train retrains)".to_string()
        }
        Checkpoints::Train => format!("training into {} (--train)", o.runs.display()),
    };
    let job = MainJob {
        checkpoints,
        model: o.model.config()?.with_seed(o.seed),
        preset: o.model.preset.clone(),
        oods: o.ood.clone(),
        subset: o.subset,
        reference_size: o.reference,
        seed: o.seed,
        budget: TrainBudget::minutes(o.minutes),
        waic_models: o.waic_models,
        waic_budget: TrainBudget::minutes(o.waic_minutes),
        bn: BnTestParams::new().draws(o.draws).seed(o.seed),
        runs: o.runs.clone(),
        stem: format!("fmnist_vs_{}", o.ood.join("_").to_lowercase()),
        locator: Locator::from_env(),
        progress: !o.quiet,
        backend: backend.name().to_string(),
    };
    println!(
        "bnood main job: {} ({} preset) on Fashion-MNIST with {source}, backend {}, {} test images per pool, seed {}",
        o.model.model,
        o.model.preset,
        backend.name(),
        o.subset,
        o.seed
    );
    let written = main_job(&job, &device)?;
    println!("report:    {}", written.json.display());
    println!("table:     {}", written.markdown.display());
    for p in &written.plots {
        println!("ROC curve: {}", p.display());
    }
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
