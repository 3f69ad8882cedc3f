//! The bnood-detect crate-level quick start (crates/bnood-detect/src/lib.rs) as a program
//! of its own: it must build with the library crates' default features only, and run on a
//! tiny generated set. Keep the body in step with that doc example.

use bnood_data::ImageSet;
use bnood_detect::{BnTest, BnTestParams, Detector};
use bnood_models::RealNvpConfig;
use burn::tensor::Device;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the `bnood` binary does: glibc keeps freed tensor buffers for reuse.
    bnood_models::allocator::keep_freed_memory();
    let device = Device::flex();
    let model = RealNvpConfig {
        image_shape: [1, 4, 4],
        mid_channels: 4,
        num_blocks: 1,
        ..RealNvpConfig::paper_fmnist()
    }
    .init(&device)?; // in practice: a model trained with bnood_models::train

    // Held-out in-distribution images, and a pool of test images scored together.
    let pixels = (0..200 * 16).map(|i| (i * 37 % 251) as u8).collect();
    let reference = ImageSet::new("held-out", pixels, [200, 1, 4, 4], None)?;
    let test = reference.subset(40, 7)?.with_name("test pool");

    let mut detector = BnTest::new(model, &device, BnTestParams::new().batch_size(16))?;
    detector.fit(&reference)?; // half of it is mixed into batches, half calibrates Δ
    let scores = detector.score(&test)?; // Δ per image, higher = more OoD
    let alpha = detector.threshold_for_fpr(0.05)?; // a p-value threshold for 5% FPR
    let flagged: Vec<bool> = scores.decisions(alpha);
    assert_eq!(flagged.len(), 40);

    let count = flagged.iter().filter(|&&f| f).count();
    println!("bnood downstream quick start: {count} of 40 test images flagged at α = {alpha}");
    Ok(())
}
