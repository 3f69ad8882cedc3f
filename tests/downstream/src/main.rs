//! The bnood-detect crate-level quick start (crates/bnood-detect/src/lib.rs) as a program
//! of its own, and a detector defined here, outside the workspace, that is registered,
//! fitted, scored, saved and loaded through the public API only. It must build with the
//! library crates' default features only, and run on a tiny generated set. Keep the quick
//! start in step with that doc example.

use std::sync::Arc;

use bnood_data::ImageSet;
use bnood_detect::{
    BnTest, BnTestParams, Detector, DetectorEntry, Fit, LogLikelihood, ModelFile, ProgressHook,
    Registry, Statistic, Unfitted, load_detector_from, save_detector,
};
use bnood_models::{AnyModel, LikelihoodModel, RealNvpConfig, checkpoint};
use burn::tensor::Device;

/// A detector of our own: `−log₂ p(x) / D`, bits per dimension, thresholded at its
/// reference quantile. It composes the library's log-likelihood and is a [`Statistic`], so
/// fitting, thresholds and its detector-file state come with it.
#[derive(Clone)]
struct BitsPerDim<M> {
    likelihood: LogLikelihood<M>,
    dims: f64,
}

impl<M: LikelihoodModel + Clone> BitsPerDim<M> {
    fn new(model: M, device: &Device) -> Self {
        let dims = model.image_shape().iter().product::<usize>() as f64;
        Self {
            likelihood: LogLikelihood::new(model, device),
            dims,
        }
    }
}

impl<M: LikelihoodModel + Clone> Statistic for BitsPerDim<M> {
    fn name(&self) -> &str {
        "bits/dim"
    }

    fn statistic(&self, set: &ImageSet) -> bnood_detect::Result<Vec<f64>> {
        let scale = self.dims * std::f64::consts::LN_2;
        Ok(self
            .likelihood
            .log_likelihoods(set)?
            .into_iter()
            .map(|l| -l / scale)
            .collect())
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        Statistic::set_progress(&mut self.likelihood, progress);
    }
}

/// The registry row of [`BitsPerDim`]: no parameters of its own (`{}`), one model.
fn bits_per_dim_entry() -> DetectorEntry {
    DetectorEntry {
        id: "bits-per-dim".into(),
        title: "bits/dim".into(),
        min_models: 1,
        models: "a model".into(),
        build: Arc::new(|models: Vec<AnyModel>, device: &Device, params| {
            let model = models.into_iter().next().ok_or_else(|| {
                bnood_detect::DetectError::EmptySet("bits/dim needs a model".into())
            })?;
            Ok(Unfitted::new(
                "bits-per-dim",
                params.clone(),
                BitsPerDim::new(model, device),
            ))
        }),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the `bnood` binary does: glibc keeps freed tensor buffers for reuse.
    bnood_models::allocator::keep_freed_memory();
    let device = Device::flex();
    let config = RealNvpConfig {
        image_shape: [1, 4, 4],
        mid_channels: 4,
        num_blocks: 1,
        ..RealNvpConfig::paper_fmnist()
    };
    let model = config.init(&device)?; // in practice: a model trained with bnood_models::train

    // Held-out in-distribution images, and a pool of test images scored together.
    let pixels = (0..200 * 16).map(|i| (i * 37 % 251) as u8).collect();
    let reference = ImageSet::new("held-out", pixels, [200, 1, 4, 4], None)?;
    let test = reference.subset(40, 7)?.with_name("test pool");

    let detector = BnTest::new(model, &device, BnTestParams::new().batch_size(16))?;
    let detector = detector.fit(&reference)?; // half of it is mixed into batches, half calibrates Δ
    let scores = detector.score(&test)?; // Δ per image, higher = more OoD
    let alpha = detector.threshold_for_fpr(0.05)?; // a p-value threshold for 5% FPR
    let flagged: Vec<bool> = scores.decisions(alpha);
    assert_eq!(flagged.len(), 40);
    let count = flagged.iter().filter(|&&f| f).count();
    println!("bnood downstream quick start: {count} of 40 test images flagged at α = {alpha}");

    // A detector defined here, through a registry of our own: fit, score, save, load.
    let dir = std::env::temp_dir().join(format!("bnood-downstream-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model_path = dir.join("tiny.bpk");
    checkpoint::save(config.init(&device)?, 0, 0, &model_path)?;
    let model = AnyModel::load(&model_path, &device)?;
    let files = [ModelFile::new(&model_path, &model)?];
    let registry = Registry::builtin().register(bits_per_dim_entry())?;
    let fitted = registry
        .build("bits-per-dim", vec![model], &device, &serde_json::json!({}))?
        .fit(&reference)?;
    let scores = fitted.score(&test)?;
    let threshold = fitted.threshold_for_fpr(0.05)?;
    let file = dir.join("bits-per-dim.json");
    save_detector(&fitted, &files, &file)?;
    let loaded = load_detector_from(&registry, &file, None, &device)?;
    assert_eq!(loaded.detector.id(), "bits-per-dim");
    assert_eq!(
        loaded.detector.score(&test)?,
        scores,
        "same scores after loading"
    );
    assert_eq!(loaded.detector.threshold_for_fpr(0.05)?, threshold);
    // bnood's own registry does not know it, and says so.
    let err = bnood_detect::load_detector(&file, None, &device).expect_err("unknown id");
    assert!(
        err.to_string().contains("unknown detector `bits-per-dim`"),
        "{err}"
    );
    let flagged = scores.decisions(threshold).iter().filter(|&&f| f).count();
    println!(
        "outside detector `{}`: fitted, {flagged} of 40 flagged at 5 %, saved and loaded with the same scores",
        fitted.name()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
