//! VAE: the paper's layer table, shapes, a normalised 256-way likelihood, the
//! importance-weighted estimate against a hand computation, IWAE ≥ ELBO, seeding, training
//! on real Fashion-MNIST, checkpoints, errors.

mod common;

use bnood_data::{Dataset, Locator, Split};
use bnood_models::train::{TrainConfig, train};
use bnood_models::vae::LayerSpec;
use bnood_models::{LikelihoodModel, ModelError, StatsMode, Vae, VaeConfig};
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use common::{assert_checkpoint_round_trip, data_dir, host, pixels, train_steps};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn tiny(shape: [usize; 3], k: usize) -> VaeConfig {
    VaeConfig {
        image_shape: shape,
        encoder_channels: [4, 4, 4, 6, 6, 8],
        decoder_channels: [6, 6, 6, 4, 4, 4, 8],
        latent_dim: 3,
        iw_samples: k,
        seed: 5,
        eval_seed: 7,
        ..VaeConfig::paper_fmnist()
    }
}

fn spec(i: usize, o: usize, k: usize, s: usize, p: usize, op: usize, bn: bool) -> LayerSpec {
    LayerSpec {
        in_channels: i,
        out_channels: o,
        kernel: [k, k],
        stride: s,
        padding: p,
        output_padding: op,
        batch_norm: bn,
    }
}

#[test]
fn paper_preset_matches_table_3() {
    let cfg = VaeConfig::paper_fmnist();
    assert_eq!(cfg.image_shape, [1, 28, 28]);
    // Inference network: channels 32c,32c,32c,64c,64c,256; kernels 5,5,5,5,5,k; strides
    // 1,2,1,2,1,1; paddings 2,2,2,2,2,0; BatchNorm on all (c = 1, k = 28/4 = 7).
    let encoder = vec![
        spec(1, 32, 5, 1, 2, 0, true),
        spec(32, 32, 5, 2, 2, 0, true),
        spec(32, 32, 5, 1, 2, 0, true),
        spec(32, 64, 5, 2, 2, 0, true),
        spec(64, 64, 5, 1, 2, 0, true),
        spec(64, 256, 7, 1, 0, 0, true),
    ];
    // Generator: channels 64c,64c,64c,32c,32c,32c,256,256c; kernel 5 except the last (1);
    // strides 1,2,1,2,1,1,1,1; padding 2 except the last (0); no BatchNorm on the last two.
    let decoder = vec![
        spec(64, 64, 5, 1, 2, 0, true),
        spec(64, 64, 5, 2, 2, 1, true),
        spec(64, 64, 5, 1, 2, 0, true),
        spec(64, 32, 5, 2, 2, 1, true),
        spec(32, 32, 5, 1, 2, 0, true),
        spec(32, 32, 5, 1, 2, 0, true),
        spec(32, 256, 5, 1, 2, 0, false),
        spec(256, 256, 1, 1, 0, 0, false),
    ];
    assert_eq!(cfg.encoder_layers(), encoder);
    assert_eq!(cfg.decoder_layers(), decoder);
    assert_eq!(cfg.latent_dim, 64);
    assert!(cfg.iw_samples >= 1);
    assert_eq!(VaeConfig::preset("paper").expect("preset"), cfg);
    // That the built modules have exactly these layers is a unit test in src/vae.rs
    // (`built_modules_have_the_layers_of_the_table`): it reads the private modules.
    // Colour images scale the widths by c = 3 (CIFAR: k = 8); 256 and 256c as in the table.
    let rgb = VaeConfig::paper([3, 32, 32]);
    let enc: Vec<_> = rgb
        .encoder_layers()
        .iter()
        .map(|l| (l.out_channels, l.kernel[0]))
        .collect();
    assert_eq!(
        enc,
        [(96, 5), (96, 5), (96, 5), (192, 5), (192, 5), (256, 8)]
    );
    let dec: Vec<_> = rgb
        .decoder_layers()
        .iter()
        .map(|l| l.out_channels)
        .collect();
    assert_eq!(dec, [192, 192, 192, 96, 96, 96, 256, 768]);
}

#[test]
fn cpu_preset_keeps_the_layout_with_fewer_channels() {
    let cpu = VaeConfig::preset("cpu").expect("preset");
    let paper = VaeConfig::paper_fmnist();
    assert_eq!(cpu, VaeConfig::cpu_fmnist());
    for (a, b) in cpu.encoder_layers().iter().zip(paper.encoder_layers()) {
        assert_eq!(
            (a.kernel, a.stride, a.padding, a.batch_norm),
            (b.kernel, b.stride, b.padding, b.batch_norm)
        );
        assert!(a.out_channels < b.out_channels);
    }
    for (a, b) in cpu.decoder_layers().iter().zip(paper.decoder_layers()) {
        assert_eq!(
            (a.kernel, a.stride, a.padding, a.output_padding),
            (b.kernel, b.stride, b.padding, b.output_padding)
        );
    }
    assert_eq!(cpu.decoder_layers()[7].out_channels, 256);
    let device = Device::flex();
    assert!(
        cpu.init(&device).expect("valid").num_trainable() * 4
            < paper.init(&device).expect("valid").num_trainable()
    );
    assert!(matches!(
        VaeConfig::preset("huge"),
        Err(ModelError::InvalidConfig(_))
    ));
}

#[test]
fn outputs_have_the_documented_shapes() {
    let device = Device::flex();
    for shape in [[1, 8, 8], [2, 8, 12]] {
        let model = tiny(shape, 3).init(&device).expect("valid");
        let x = pixels(5, shape, 1, &device);
        for mode in [StatsMode::Running, StatsMode::Batch] {
            assert_eq!(
                model.log_prob(x.clone(), &mode).expect("log prob").dims(),
                [5]
            );
            assert_eq!(
                model.training_loss(x.clone(), &mode).expect("loss").dims(),
                [5]
            );
            let (mu, logvar) = model.encode(x.clone(), &mode).expect("encode");
            assert_eq!((mu.dims(), logvar.dims()), ([5, 3], [5, 3]));
            let logits = model.decoder_logits(mu, &mode).expect("decode");
            assert_eq!(logits.dims(), [5, 256, shape[0], shape[1], shape[2]]);
        }
        assert_eq!(model.eval_noise(&x, 3, 0).expect("noise").dims(), [5, 3, 3]);
        let bpd = host(model.bits_per_dim(x, &StatsMode::Running).expect("bpd"));
        assert!(bpd.iter().all(|b| b.is_finite() && *b > 0.0), "{bpd:?}");
    }
}

#[test]
fn the_256_way_pixel_likelihood_sums_to_one_for_a_fixed_latent() {
    let device = Device::flex();
    let model = tiny([1, 8, 8], 1).init(&device).expect("valid");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let z: Vec<f32> = (0..4 * 3).map(|_| rng.random_range(-2.0..2.0f32)).collect();
    let z = Tensor::<2>::from_data(TensorData::new(z, [4, 3]), &device);
    for mode in [StatsMode::Running, StatsMode::Batch] {
        let logits = model.decoder_logits(z.clone(), &mode).expect("logits");
        let raw = host(logits.clone());
        let probs = host(log_softmax(logits, 1).exp());
        let (per_pixel, levels) = (64, 256);
        for m in 0..4 {
            for p in 0..per_pixel {
                let idx = |v: usize| m * levels * per_pixel + v * per_pixel + p;
                let total: f64 = (0..levels).map(|v| probs[idx(v)]).sum();
                assert!(
                    (total - 1.0).abs() < 1e-4,
                    "{mode:?}: sample {m} pixel {p}: Σ p = {total}"
                );
                // The distribution is not trivially uniform.
                let spread = (0..levels)
                    .map(|v| raw[idx(v)])
                    .fold(f64::NEG_INFINITY, f64::max)
                    - (0..levels)
                        .map(|v| raw[idx(v)])
                        .fold(f64::INFINITY, f64::min);
                assert!(spread > 1e-3);
            }
        }
    }
}

/// ln p(x|z) + ln p(z) − ln q(z|x) for K = 1, computed on the host from the model's parts.
fn hand_iwae_k1(model: &Vae, x: &Tensor<4>, mode: &StatsMode, seed: u64) -> Vec<f64> {
    let [n, c, h, w] = x.dims();
    let (d, l) = (c * h * w, model.latent_dim());
    let (mu, logvar) = model.encode(x.clone(), mode).expect("encode");
    let (mu, logvar) = (host(mu), host(logvar));
    let eps = host(model.eval_noise(x, 1, seed).expect("noise"));
    let z: Vec<f64> = (0..n * l)
        .map(|i| mu[i] + (0.5 * logvar[i]).exp() * eps[i])
        .collect();
    let zt = Tensor::<2>::from_data(
        TensorData::new(z.iter().map(|&v| v as f32).collect(), [n, l]),
        &x.device(),
    );
    let logits = host(model.decoder_logits(zt, mode).expect("logits"));
    let xs = host(x.clone());
    let ln2pi = (2.0 * std::f64::consts::PI).ln();
    (0..n)
        .map(|i| {
            let mut log_px = 0.0;
            for p in 0..d {
                let at = |v: usize| logits[i * 256 * d + v * d + p];
                let max = (0..256).map(at).fold(f64::NEG_INFINITY, f64::max);
                let lse = max + (0..256).map(|v| (at(v) - max).exp()).sum::<f64>().ln();
                let pixel = xs[i * d + p].floor() as usize;
                log_px += at(pixel) - lse;
            }
            let mut log_pz = 0.0;
            let mut log_qz = 0.0;
            for j in 0..l {
                let (zj, m, lv) = (z[i * l + j], mu[i * l + j], logvar[i * l + j]);
                log_pz += -0.5 * zj * zj - 0.5 * ln2pi;
                log_qz += -0.5 * (zj - m).powi(2) / lv.exp() - 0.5 * lv - 0.5 * ln2pi;
            }
            log_px + log_pz - log_qz
        })
        .collect()
}

#[test]
fn the_estimate_with_one_sample_equals_the_hand_computed_elbo_terms() {
    let device = Device::flex();
    let model = tiny([1, 8, 8], 1).init(&device).expect("valid");
    let x = pixels(6, [1, 8, 8], 2, &device);
    for mode in [StatsMode::Running, StatsMode::Batch] {
        let expected = hand_iwae_k1(&model, &x, &mode, 7);
        let got = host(model.log_prob(x.clone(), &mode).expect("log prob"));
        assert_eq!(
            got,
            host(model.log_prob_iw(x.clone(), &mode, 1, 7).expect("iw"))
        );
        for (g, e) in got.iter().zip(&expected) {
            assert!(
                (g - e).abs() < 1e-3 * e.abs().max(1.0),
                "{mode:?}: model {g} vs hand {e}"
            );
        }
    }
}

#[test]
fn the_importance_weighted_bound_is_above_the_elbo_on_average() {
    let device = Device::flex();
    let model = tiny([1, 8, 8], 16).init(&device).expect("valid");
    let x = pixels(16, [1, 8, 8], 4, &device);
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let k16 = mean(host(
        model
            .log_prob(x.clone(), &StatsMode::Running)
            .expect("K=16"),
    ));
    let k1 = mean(host(
        model
            .log_prob_iw(x, &StatsMode::Running, 1, 7)
            .expect("K=1"),
    ));
    assert!(
        k16 > k1,
        "IWAE(K=16) {k16} should exceed ELBO(K=1) {k1} on average"
    );
}

#[test]
fn the_same_seed_gives_identical_numbers_and_another_eval_seed_different_ones() {
    let device = Device::flex();
    let x = pixels(6, [1, 8, 8], 9, &device);
    let a = tiny([1, 8, 8], 4).init(&device).expect("valid");
    let b = tiny([1, 8, 8], 4).init(&device).expect("valid");
    for mode in [StatsMode::Running, StatsMode::Batch] {
        let first = host(a.log_prob(x.clone(), &mode).expect("a"));
        assert_eq!(first, host(a.log_prob(x.clone(), &mode).expect("a again")));
        assert_eq!(first, host(b.log_prob(x.clone(), &mode).expect("b")));
        assert_eq!(
            host(a.training_loss(x.clone(), &mode).expect("loss")),
            host(b.training_loss(x.clone(), &mode).expect("loss"))
        );
    }
    let other = tiny([1, 8, 8], 4)
        .with_eval_seed(8)
        .init(&device)
        .expect("valid");
    let (p, q) = (
        host(a.log_prob(x.clone(), &StatsMode::Running).expect("a")),
        host(other.log_prob(x.clone(), &StatsMode::Running).expect("o")),
    );
    assert!(p.iter().zip(&q).all(|(u, v)| u != v), "{p:?} vs {q:?}");
    // The weights do not depend on eval_seed: only the noise changed.
    assert_eq!(
        host(a.encode(x.clone(), &StatsMode::Running).expect("enc").0),
        host(other.encode(x.clone(), &StatsMode::Running).expect("enc").0)
    );
    // Training noise follows the exact (dequantised) values: other dequantisation noise on
    // the same integer pixels gives another ε, so another loss.
    let shifted = x.clone().floor().add_scalar(0.25);
    let (l1, l2) = (
        host(
            a.training_loss(x.floor().add_scalar(0.75), &StatsMode::Running)
                .expect("l1"),
        ),
        host(a.training_loss(shifted, &StatsMode::Running).expect("l2")),
    );
    assert_ne!(l1, l2);
}

#[test]
fn in_running_mode_an_images_estimate_does_not_depend_on_the_rest_of_the_batch() {
    let device = Device::flex();
    let model = tiny([1, 8, 8], 4).init(&device).expect("valid");
    let x = pixels(6, [1, 8, 8], 10, &device);
    let all = host(model.log_prob(x.clone(), &StatsMode::Running).expect("all"));
    let last_two = host(
        model
            .log_prob(x.clone().narrow(0, 4, 2), &StatsMode::Running)
            .expect("tail"),
    );
    for (a, b) in all[4..].iter().zip(&last_two) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
    // Integer pixels decide: other dequantisation noise gives the same estimate.
    let requantised = host(
        model
            .log_prob(x.floor().add_scalar(0.5), &StatsMode::Running)
            .expect("floor"),
    );
    for (a, b) in all.iter().zip(&requantised) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

/// A small VAE for the 8×8 Fashion-MNIST of [`fmnist_8x8`].
fn small_fmnist() -> VaeConfig {
    VaeConfig {
        image_shape: [1, 8, 8],
        encoder_channels: [4, 4, 4, 8, 8, 16],
        decoder_channels: [8, 8, 8, 4, 4, 4, 8],
        latent_dim: 8,
        iw_samples: 2,
        ..VaeConfig::paper_fmnist()
    }
}

/// `n` real Fashion-MNIST images shrunk to 8×8 (central 24×24, 3×3 block means) so that a
/// debug build trains a few steps in seconds: the 256-way likelihood makes every pixel
/// cost 256 logits.
fn fmnist_8x8(split: Split, n: usize) -> bnood_data::ImageSet {
    let full = Dataset::FashionMnist
        .load(split, &Locator::only(data_dir()))
        .expect("FMNIST");
    let full = if split == Split::Train {
        full.subset(n, 0)
    } else {
        full.head(n)
    }
    .expect("subset");
    let mut pixels = Vec::with_capacity(n * 64);
    for i in 0..n {
        let image = full.image(i).expect("image");
        for r in 0..8 {
            for c in 0..8 {
                let sum: u32 = (0..9)
                    .map(|j| u32::from(image[(2 + 3 * r + j / 3) * 28 + 2 + 3 * c + j % 3]))
                    .sum();
                pixels.push(((sum + 4) / 9) as u8);
            }
        }
    }
    bnood_data::ImageSet::new("fashion-mnist-8x8", pixels, [n, 1, 8, 8], None).expect("valid set")
}

#[test]
fn a_few_training_steps_on_real_fmnist_lower_the_loss() {
    let data = fmnist_8x8(Split::Train, 1_000);
    let device = Device::flex();
    let model = small_fmnist().init(&device).expect("valid");
    let probe = data.tensor(0..16, &device).expect("tensor").add_scalar(0.5);
    let before = host(
        model
            .log_prob(probe.clone(), &StatsMode::Running)
            .expect("before"),
    );
    // A larger step than Adam's default 1e-3 so that 30 steps move the 256-way logits visibly.
    let cfg = TrainConfig {
        batch_size: 32,
        budget: bnood_models::train::TrainBudget::steps(30),
        learning_rate: 1e-2,
        progress: false,
        ..TrainConfig::default()
    };
    let (trained, report) =
        train(model, &data, &cfg, &device.clone().autodiff()).expect("training runs");
    assert_eq!(report.steps, 30);
    let first: f64 = report.history[..5].iter().map(|(_, l)| l).sum::<f64>() / 5.0;
    let last: f64 = report.history[25..].iter().map(|(_, l)| l).sum::<f64>() / 5.0;
    eprintln!("loss went from {first:.3} to {last:.3} bits/dim");
    assert!(
        last < first - 0.5,
        "loss went from {first:.3} to {last:.3} bits/dim"
    );
    let trained = trained.valid();
    let after = host(trained.log_prob(probe, &StatsMode::Running).expect("after"));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&after) > mean(&before),
        "log p went from {} to {}",
        mean(&before),
        mean(&after)
    );
}

#[test]
fn save_then_load_gives_identical_log_likelihoods_in_running_and_batch_mode() {
    let data = fmnist_8x8(Split::Test, 128);
    let (model, _) = train_steps(
        small_fmnist().init(&Device::flex()).expect("valid"),
        &data,
        32,
        2,
        1e-3,
    );
    let x = data
        .tensor(0..8, &Device::flex())
        .expect("tensor")
        .add_scalar(0.5);
    assert_checkpoint_round_trip(&model, x);
}

#[test]
fn bad_inputs_and_configurations_are_clear_errors() {
    let device = Device::flex();
    let model = tiny([1, 8, 8], 2).init(&device).expect("valid");
    let wrong = pixels(3, [1, 8, 12], 0, &device);
    for result in [
        model.log_prob(wrong.clone(), &StatsMode::Running),
        model.training_loss(wrong.clone(), &StatsMode::Running),
    ] {
        assert!(
            matches!(
                result,
                Err(ModelError::Shape {
                    expected: [1, 8, 8],
                    ..
                })
            ),
            "{result:?}"
        );
    }
    assert!(matches!(
        model.encode(wrong, &StatsMode::Running),
        Err(ModelError::Shape { .. })
    ));
    let x = pixels(3, [1, 8, 8], 0, &device);
    assert!(matches!(
        model.log_prob_iw(x.clone(), &StatsMode::Running, 0, 0),
        Err(ModelError::InvalidConfig(_))
    ));
    // One image has no batch statistics at the inference network's 1×1 layer 6.
    assert!(matches!(
        model.log_prob(x.narrow(0, 0, 1), &StatsMode::Batch),
        Err(ModelError::Norm(_))
    ));

    let err = tiny([1, 8, 8], 0).init(&device).expect_err("K = 0");
    assert!(
        matches!(&err, ModelError::InvalidConfig(m) if m.contains("iw_samples")),
        "{err}"
    );
    let err = tiny([1, 10, 8], 2).init(&device).expect_err("H = 10");
    assert!(
        matches!(&err, ModelError::InvalidConfig(m) if m.contains("divisible by 4")),
        "{err}"
    );
    let err = tiny([1, 8, 6], 2).init(&device).expect_err("W = 6");
    assert!(matches!(err, ModelError::InvalidConfig(_)));
    let err = VaeConfig {
        latent_dim: 0,
        ..tiny([1, 8, 8], 2)
    }
    .init(&device)
    .expect_err("latent 0");
    assert!(matches!(err, ModelError::InvalidConfig(_)));
}
