//! Throughput of the BN test's mixed-batch scoring, of running-statistics scoring and of
//! one training step, for the paper's Fashion-MNIST RealNVP (Appendix C.1, ≈763k
//! parameters) and for the Fashion-MNIST VAE of the shipped checkpoint (`cpu` preset), on
//! every compiled backend.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 BNOOD_DATA_DIR=../shared/datasets cargo bench --bench mixed_batch
//! cargo bench --bench mixed_batch --features ndarray -- score_mixed   # one group only
//! cargo bench --bench mixed_batch -- vae                               # the VAE cases only
//! ```
//!
//! Groups (criterion ids `group/backend/case`), each reporting **samples per second**
//! through criterion's `Throughput::Elements`:
//! - `score_mixed/<backend>/r=0.1`, `r=0.9`: `BnTest::statistic(pool, r)` — the public
//!   per-ratio scoring path — on a pool of `2·m` test images, `m = round(r·b)`, `b = 64`:
//!   two mixed batches of `m` test and `b − m` reference rows per iteration, in `Batch`
//!   mode without autodiff, host batch assembly and read-back included. The throughput
//!   counts *test* samples (`2·m` per iteration): 12 at r = 0.1, 116 at r = 0.9.
//! - `score_running/<backend>/b=64`: `log_prob` of 64 images with running statistics
//!   (the paper's evaluation mode; the BN test's `r = 0`), read back to the host.
//! - `train_step/<backend>/b=64`: one Adam step on 64 images (loss, backward, gradient
//!   clipping, update, running-statistics update), the same operations as
//!   `bnood_models::train::train`.
//!
//! VAE groups, the same model as `models/vae-fmnist-cpu-seed0.bpk` (`VaeConfig::cpu_fmnist()`:
//! widths 8/16, 64 in inference layer 6 and generator layer 7, latent 64, K = 16; seed 0,
//! untrained: the cost does not depend on the weights):
//! - `vae_score_batch/<backend>/b=64`: `log_prob` of 64 images in `Batch` mode (the BN test's
//!   scoring mode: batch statistics, running averages untouched, no autodiff), K = 16
//!   importance samples, the generator running all 64·16 = 1024 latent samples as one
//!   batch; read back to the host. Throughput counts the 64 images.
//! - `vae_score_running/<backend>/b=64`: the same with running statistics.
//! - `vae_train_step/<backend>/b=64`: one Adam step on 64 images (negative ELBO with one
//!   latent sample per image), as `train_step`.
//!
//! PixelCNN++ groups, the same model as `models/pixelcnn-fmnist-cpu-seed0.bpk`
//! (`PixelCnnConfig::cpu_fmnist()`, seed 0, untrained): `pixelcnn_score_mixed/<backend>/r=…`
//! (as `score_mixed`), `pixelcnn_score_running/<backend>/b=64` and
//! `pixelcnn_train_step/<backend>/b=64` (as `score_running` and `train_step`).
//!
//! Images: Fashion-MNIST (test images as the pool, train images as reference) when
//! `BNOOD_DATA_DIR` points at the datasets, otherwise seeded random pixels (the cost does
//! not depend on the pixel values). The model is the paper preset with seed 0 and its last
//! layers drawn at random (`zero_init_last = false`), so every coupling does real work.
//!
//! Backends: `flex` and `ndarray` when their cargo features are on; `wgpu` only when the
//! feature is on *and* `BNOOD_BENCH_WGPU=1` (a software Vulkan driver would measure
//! nothing useful). The PyTorch references (`realnvp_torch.py`, `vae_torch.py`,
//! `pixelcnn_torch.py`) and the ratio: `benches/reference/` and `docs/performance.md`.

use std::cell::OnceCell;
use std::hint::black_box;
use std::time::Duration;

use bnood::data::{Dataset, ImageSet, Locator, Split};
use bnood::detect::{BnTest, BnTestParams, Fit};
use bnood::models::{
    LikelihoodModel, PixelCnn, PixelCnnConfig, RealNvp, RealNvpConfig, StatsMode, Vae, VaeConfig,
};
use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group};

/// Batch size of every benchmark (the paper's `b`).
const BATCH: usize = 64;
/// Ratios of test images per mixed batch (the paper's `r1`, `r2`).
const RATIOS: [f64; 2] = [0.1, 0.9];
/// Mixed batches per scored pool (one iteration of `score_mixed`).
const POOL_BATCHES: usize = 2;

/// The backends this build can bench, with their names.
#[allow(clippy::vec_init_then_push)] // each push depends on a cargo feature
fn backends() -> Vec<(&'static str, Device)> {
    let mut out = Vec::new();
    #[cfg(feature = "flex")]
    out.push(("flex", Device::flex()));
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // burn marks ndarray deprecated; the crate keeps it selectable
    out.push(("ndarray", Device::ndarray()));
    #[cfg(feature = "wgpu")]
    if std::env::var("BNOOD_BENCH_WGPU").is_ok_and(|v| v == "1") {
        out.push((
            "wgpu",
            Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        ));
    }
    out
}

/// The paper's FMNIST RealNVP, seed 0, with non-zero last layers.
fn paper_model(device: &Device) -> RealNvp {
    RealNvpConfig {
        zero_init_last: false,
        ..RealNvpConfig::paper_fmnist()
    }
    .init(device)
    .expect("the paper preset is a valid configuration")
}

/// The Fashion-MNIST VAE of the shipped checkpoint (`cpu` preset, K = 16), seed 0.
fn vae_model(device: &Device) -> Vae {
    VaeConfig::cpu_fmnist()
        .init(device)
        .expect("the cpu preset is a valid configuration")
}

/// The PixelCNN++ of the shipped `pixelcnn-fmnist` (`cpu` preset: 16 filters, ≈149k
/// parameters), seed 0, untrained (the cost does not depend on the weights).
fn pixelcnn_model(device: &Device) -> PixelCnn {
    PixelCnnConfig::cpu_fmnist()
        .init(device)
        .expect("the cpu preset is a valid configuration")
}

/// `(test pool source, reference set)`: Fashion-MNIST test/train when available, else
/// seeded random pixels.
fn image_sets() -> (ImageSet, ImageSet) {
    let locator = Locator::from_env();
    let load = |split| {
        Dataset::FashionMnist
            .load(split, &locator)
            .and_then(|s| s.head(512))
    };
    match (load(Split::Test), load(Split::Train)) {
        (Ok(test), Ok(train)) => {
            eprintln!("images: Fashion-MNIST (test pool, train reference)");
            (test, train)
        }
        _ => {
            eprintln!("images: seeded random pixels (set BNOOD_DATA_DIR for Fashion-MNIST)");
            (
                random_set("random-test", 512, 1),
                random_set("random-train", 512, 2),
            )
        }
    }
}

/// `n` images of pixels from a seeded xorshift stream (no RNG crate needed here).
fn random_set(name: &str, n: usize, seed: u64) -> ImageSet {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let pixels = (0..n * 784)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    ImageSet::new(name, pixels, [n, 1, 28, 28], None).expect("valid shape")
}

/// The first `n` images of `set`, dequantised (pixel + 0.5): `[n, 1, 28, 28]`.
fn batch(set: &ImageSet, n: usize, device: &Device) -> Tensor<4> {
    set.tensor(0..n, device)
        .expect("enough images")
        .add_scalar(0.5)
}

fn configure(
    c: &mut Criterion,
    name: String,
) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    // One iteration is a whole forward (or training) pass of 64 images, 0.1–2 s on a
    // 2-core CPU: flat sampling keeps the iteration count at the sample size.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    group
}

/// `score_mixed/<backend>/r=…`: one mixed batch per iteration through `BnTest::statistic`.
fn score_mixed(c: &mut Criterion) {
    bench_score_mixed(c, "score_mixed", paper_model);
}

/// `pixelcnn_score_mixed/<backend>/r=…`: the same for the PixelCNN++ `cpu` preset.
fn pixelcnn_score_mixed(c: &mut Criterion) {
    bench_score_mixed(c, "pixelcnn_score_mixed", pixelcnn_model);
}

/// `<group>/<backend>/r=…`: two mixed batches per iteration through `BnTest::statistic`,
/// for the model `init` builds.
fn bench_score_mixed<M: LikelihoodModel + Clone>(
    c: &mut Criterion,
    group_name: &str,
    init: fn(&Device) -> M,
) {
    let (test, reference) = image_sets();
    for (name, device) in backends() {
        // Built on first use, so that a filtered-out backend costs nothing.
        let detector = OnceCell::new();
        let fitted = || {
            let model = init(&device);
            let detector = BnTest::new(model, &device, BnTestParams::new().batch_size(BATCH))
                .expect("paper parameters are valid");
            // Fitting scores the held-out half of the reference set at both ratios; the
            // bench needs only the mixing half, so keep the set as small as the ratios
            // allow: 64 held out (≥ r2's 58 test rows) and 64 to mix (≥ r1's 58
            // reference rows).
            let fit_set = reference.head(128).expect("128 reference images");
            detector.fit(&fit_set).expect("fit runs")
        };
        let mut group = configure(c, format!("{group_name}/{name}"));
        for r in RATIOS {
            let m = (r * BATCH as f64).round() as usize;
            let pool = test.head(POOL_BATCHES * m).expect("enough test images");
            group.throughput(Throughput::Elements((POOL_BATCHES * m) as u64));
            group.bench_function(format!("r={r}"), |b| {
                let detector = detector.get_or_init(fitted);
                b.iter(|| black_box(detector.statistic(&pool, r).expect("scoring runs")))
            });
        }
        group.finish();
    }
}

/// `score_running/<backend>/b=64`: running-statistics `log_prob` of one batch.
fn score_running(c: &mut Criterion) {
    bench_score(c, "score_running", paper_model, StatsMode::Running);
}

/// `pixelcnn_score_running/<backend>/b=64`: the same for the PixelCNN++ `cpu` preset.
fn pixelcnn_score_running(c: &mut Criterion) {
    bench_score(
        c,
        "pixelcnn_score_running",
        pixelcnn_model,
        StatsMode::Running,
    );
}

/// `pixelcnn_train_step/<backend>/b=64`: one Adam step of the PixelCNN++ `cpu` preset.
fn pixelcnn_train_step(c: &mut Criterion) {
    bench_train_step(c, "pixelcnn_train_step", pixelcnn_model);
}

/// `train_step/<backend>/b=64`: one Adam step, as in `bnood_models::train::train`.
fn train_step(c: &mut Criterion) {
    bench_train_step(c, "train_step", paper_model);
}

/// `vae_train_step/<backend>/b=64`: one Adam step of the VAE (negative ELBO).
fn vae_train_step(c: &mut Criterion) {
    bench_train_step(c, "vae_train_step", vae_model);
}

/// `<group>/<backend>/b=64`: one Adam step (loss, backward, gradient clipping at norm 100,
/// update, running-statistics update) of the model `init` builds, on 64 reference images.
fn bench_train_step<M: Module + LikelihoodModel>(
    c: &mut Criterion,
    group_name: &str,
    init: fn(&Device) -> M,
) {
    let (_, reference) = image_sets();
    for (name, device) in backends() {
        let device = device.autodiff();
        let mut group = configure(c, format!("{group_name}/{name}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(format!("b={BATCH}"), |b| {
            let mut model = Some(init(&device).train());
            let x = batch(&reference, BATCH, &device);
            let mut optim = AdamConfig::new()
                .with_grad_clipping(Some(GradientClippingConfig::Norm(100.0)))
                .init();
            b.iter(|| {
                let m = model
                    .take()
                    .expect("the model is put back after every step");
                let mode = StatsMode::train();
                let loss = m
                    .training_loss(x.clone(), &mode)
                    .expect("the loss runs")
                    .mean();
                let value = loss.clone().into_scalar::<f32>();
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                let mut m = optim.step(1e-3, m, grads);
                if let StatsMode::Train(tape) = &mode {
                    m = tape.apply(m);
                }
                model = Some(m);
                black_box(value)
            })
        });
        group.finish();
    }
}

/// `vae_score_batch/<backend>/b=64`: VAE `log_prob` (K = 16) of one batch in `Batch` mode.
fn vae_score_batch(c: &mut Criterion) {
    bench_score(c, "vae_score_batch", vae_model, StatsMode::Batch);
}

/// `vae_score_running/<backend>/b=64`: VAE `log_prob` (K = 16) with running statistics.
fn vae_score_running(c: &mut Criterion) {
    bench_score(c, "vae_score_running", vae_model, StatsMode::Running);
}

/// `<group>/<backend>/b=64`: `log_prob` of 64 test images in `mode` (no autodiff) by the
/// model `init` builds, read back to the host.
fn bench_score<M: LikelihoodModel>(
    c: &mut Criterion,
    group_name: &str,
    init: fn(&Device) -> M,
    mode: StatsMode,
) {
    let (test, _) = image_sets();
    for (name, device) in backends() {
        let mut group = configure(c, format!("{group_name}/{name}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(format!("b={BATCH}"), |b| {
            let model = init(&device);
            let x = batch(&test, BATCH, &device);
            b.iter(|| {
                let lp = model.log_prob(x.clone(), &mode).expect("scoring runs");
                black_box(lp.into_data())
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // No plots: criterion's plotters backend needs system fonts that servers often lack.
    config = Criterion::default().without_plots();
    targets = score_mixed, score_running, train_step, vae_score_batch, vae_score_running,
        vae_train_step, pixelcnn_score_mixed, pixelcnn_score_running, pixelcnn_train_step
}
fn main() {
    // As the `bnood` binary does: glibc keeps freed tensor buffers for reuse
    // (bnood_models::allocator). Before criterion or any backend starts a thread.
    bnood::models::allocator::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
