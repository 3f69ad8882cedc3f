//! Every model scores in all three statistics modes on every backend, with the same numbers
//! (within 1e-3 relative: different summation orders in f32 convolutions) — weights are
//! drawn on the host, so the same seed builds the same model everywhere. wgpu runs on a real
//! GPU or on Mesa's lavapipe (`VK_DRIVER_FILES`, see `.ci/run`).

mod common;

use bnood_models::{LikelihoodModel, PixelCnnConfig, RealNvpConfig, StatsMode, VaeConfig};
use burn::tensor::{Device, DeviceKind};
use common::{host, pixels};

#[allow(deprecated)] // ndarray is deprecated upstream; users asked to keep it.
fn devices() -> Vec<(&'static str, Device)> {
    vec![
        ("flex", Device::flex()),
        ("ndarray", Device::ndarray()),
        ("wgpu", Device::wgpu(DeviceKind::DefaultDevice)),
    ]
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (x - y).abs() <= 1e-3 * (1.0 + x.abs()))
}

fn check(build: impl Fn(&Device) -> Box<dyn LikelihoodModel>, shape: [usize; 3]) {
    let mut reference: Option<Vec<Vec<f64>>> = None;
    for (name, device) in devices() {
        let model = build(&device);
        let x = pixels(4, shape, 3, &device);
        let per_mode: Vec<Vec<f64>> = [StatsMode::Running, StatsMode::Batch, StatsMode::train()]
            .iter()
            .map(|mode| host(model.log_prob(x.clone(), mode).expect("scores")))
            .collect();
        assert_eq!(
            per_mode[1], per_mode[2],
            "{name}: Train mode scores like Batch mode"
        );
        match &reference {
            None => reference = Some(per_mode),
            Some(r) => {
                for (mode, (a, b)) in ["running", "batch", "train"]
                    .iter()
                    .zip(r.iter().zip(&per_mode))
                {
                    assert!(close(a, b), "{name} {mode}: {b:?} vs flex {a:?}");
                }
            }
        }
    }
}

#[test]
fn realnvp_scores_alike_in_every_mode_on_flex_ndarray_and_wgpu() {
    let cfg = RealNvpConfig {
        image_shape: [1, 4, 4],
        mid_channels: 4,
        num_blocks: 1,
        zero_init_last: false,
        ..RealNvpConfig::paper_fmnist()
    };
    check(|d| Box::new(cfg.init(d).expect("valid")), [1, 4, 4]);
}

#[test]
fn vae_scores_alike_in_every_mode_on_flex_ndarray_and_wgpu() {
    let cfg = VaeConfig {
        image_shape: [1, 8, 8],
        encoder_channels: [4, 4, 4, 6, 6, 8],
        decoder_channels: [6, 6, 6, 4, 4, 4, 8],
        latent_dim: 3,
        iw_samples: 2,
        ..VaeConfig::paper_fmnist()
    };
    check(|d| Box::new(cfg.init(d).expect("valid")), [1, 8, 8]);
}

#[test]
fn pixelcnn_scores_alike_in_every_mode_on_flex_ndarray_and_wgpu() {
    let cfg = PixelCnnConfig {
        image_shape: [1, 8, 8],
        filters: 4,
        blocks_per_stage: 1,
        mixtures: 2,
        ..PixelCnnConfig::paper_fmnist()
    };
    check(|d| Box::new(cfg.init(d).expect("valid")), [1, 8, 8]);
}
