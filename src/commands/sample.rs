//! `bnood sample`: images drawn from a trained model with a temperature and a seed
//! (`bnood_models::sample`), written as an IDX file that `score --test` and `monitor
//! --input` read, and optionally as a PNG grid.

use std::path::PathBuf;

use clap::Args;

use crate::commands::RunContext;
use crate::commands::paths::check_output;
use crate::error::Result;
use crate::models::checkpoint;
use crate::models::sample::{SampleParams, sample};

/// The flags of `bnood sample`.
#[derive(Args, Debug, Clone)]
pub struct SampleArgs {
    /// Trained model: a checkpoint file or a shipped model's name (`bnood models list`).
    #[arg(long)]
    pub model: PathBuf,
    /// Images to draw.
    #[arg(long, default_value_t = 16, allow_negative_numbers = true)]
    pub n: usize,
    /// Temperature T: pre-softmax outputs divided by T, continuous spreads (logistic scales, RealNVP's latent) multiplied by it; 1 = the model's distribution (the paper's Appendix B: 1.17).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub temperature: f64,
    /// Seed of every draw (same seed, same images).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Output IDX file of the images (`[N, H, W]` for gray images, `[N, C, H, W]` otherwise).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the images as one PNG grid here.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// Columns of the PNG grid.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true)]
    pub columns: usize,
}

/// What `bnood sample` wrote.
#[derive(Debug, Clone)]
pub struct Sampled {
    /// Images drawn.
    pub n: usize,
    /// The IDX file.
    pub out: PathBuf,
    /// The PNG grid, when asked for.
    pub grid: Option<PathBuf>,
}

impl SampleArgs {
    /// Checks the outputs (never a model's files, never an existing folder), loads the model
    /// (a file or a shipped name, verified), draws the images and writes them.
    ///
    /// # Errors
    /// An output is refused, the model cannot be loaded, the count or temperature is out of
    /// range, or a file cannot be written.
    pub fn run(&self, ctx: RunContext<'_>) -> Result<Sampled> {
        let model_files = |p: &PathBuf| {
            vec![
                p.clone(),
                checkpoint::meta_path(p),
                checkpoint::optimizer_path(p),
            ]
        };
        let source = ctx.models_dir.source(&self.model.to_string_lossy())?;
        let inputs = model_files(&source.path);
        check_output(&self.out, &inputs)?;
        if let Some(grid) = &self.grid {
            check_output(grid, &inputs)?;
        }
        let params = SampleParams {
            n: self.n,
            temperature: self.temperature,
            seed: self.seed,
        };
        let model = source.load(ctx.device, None)?.model;
        let name = format!(
            "samples of {} (T = {})",
            source.path.display(),
            self.temperature
        );
        let images = sample(&model, &params, &name, ctx.device)?;
        images.write_idx(&self.out)?;
        if let Some(grid) = &self.grid {
            images.write_png_grid(grid, self.columns)?;
        }
        Ok(Sampled {
            n: images.len(),
            out: self.out.clone(),
            grid: self.grid.clone(),
        })
    }
}
