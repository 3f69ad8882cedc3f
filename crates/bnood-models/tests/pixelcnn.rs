//! PixelCNN++ with BatchNorm: causality in Running mode (by perturbation and by gradients),
//! the batch dependence of Batch mode, the normalisation of the discretized logistic
//! mixture, the likelihood as a sum over pixels, checkpoints, and training on real
//! Fashion-MNIST.

mod common;

use std::f64::consts::LN_2;

use bnood_data::{Dataset, Locator, Split};
use bnood_models::pixelcnn::LogisticMixture;
use bnood_models::train::{TrainConfig, train};
use bnood_models::{
    AnyModel, LikelihoodModel, ModelConfig, ModelError, ModelKind, PixelCnn, PixelCnnConfig,
    StatsMode, checkpoint,
};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use common::{data_dir, host};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIDE: usize = 8;
const PIXELS: usize = SIDE * SIDE;

/// A tiny PixelCNN++ on 8×8 images (resolutions 8, 4, 2), all three stages present.
fn tiny() -> PixelCnnConfig {
    PixelCnnConfig {
        image_shape: [1, SIDE, SIDE],
        filters: 4,
        blocks_per_stage: 1,
        mixtures: 2,
        dropout: 0.0,
        ..PixelCnnConfig::paper_fmnist()
    }
}

/// Random integer pixels, seeded, `n` images of 8×8.
fn integer_pixels(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * PIXELS)
        .map(|_| f32::from(rng.random_range(0u8..=255)))
        .collect()
}

/// Dequantised images (integer pixels + 0.5) `[n, 1, 8, 8]`.
fn images(values: Vec<f32>, device: &Device) -> Tensor<4> {
    let n = values.len() / PIXELS;
    Tensor::from_data(TensorData::new(values, [n, 1, SIDE, SIDE]), device).add_scalar(0.5)
}

/// The mixture's three parameter tensors on the host, each `[N][M·H·W]` flattened to
/// `values[image][part][component][pixel]`.
fn parameters(mixture: LogisticMixture) -> Vec<Vec<Vec<Vec<f32>>>> {
    let [n, m, h, w] = mixture.means.dims();
    let parts = [mixture.logit_weights, mixture.means, mixture.log_scales]
        .map(|t| t.into_data().try_to_vec::<f32>().expect("f32"));
    (0..n)
        .map(|i| {
            parts
                .iter()
                .map(|p| {
                    (0..m)
                        .map(|k| p[(i * m + k) * h * w..(i * m + k + 1) * h * w].to_vec())
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Whether pixel `pixel` has bit-identical mixture parameters in both images.
fn same_at(a: &[Vec<Vec<f32>>], b: &[Vec<Vec<f32>>], pixel: usize) -> bool {
    a.iter()
        .zip(b)
        .all(|(pa, pb)| pa.iter().zip(pb).all(|(ca, cb)| ca[pixel] == cb[pixel]))
}

#[test]
fn in_running_mode_a_pixels_mixture_does_not_change_when_that_pixel_or_a_later_one_changes() {
    let device = Device::flex();
    let model = tiny().init(&device).expect("valid");
    let base = integer_pixels(1, 1);
    let other = integer_pixels(1, 2);
    // Image p: the base with every pixel at raster index ≥ p replaced; image PIXELS + p:
    // the base with pixel p alone replaced. The last image is the base itself.
    let mut batch = Vec::new();
    for p in 0..PIXELS {
        let mut x = base.clone();
        x[p..].copy_from_slice(&other[p..]);
        batch.extend(x);
    }
    for p in 0..PIXELS {
        let mut x = base.clone();
        x[p] = other[p];
        batch.extend(x);
    }
    batch.extend(base.clone());
    let params = parameters(
        model
            .mixture(images(batch, &device), &StatsMode::Running)
            .expect("mixture"),
    );
    let reference = &params[2 * PIXELS];
    for p in 0..PIXELS {
        assert_ne!(base[p], other[p], "the perturbation changes pixel {p}");
        for i in 0..=p {
            assert!(
                same_at(&params[p], reference, i),
                "pixel {i}'s mixture changed when pixels {p}.. changed"
            );
        }
        // Not vacuous: some later pixel does see pixel p.
        if p + 1 < PIXELS {
            assert!(
                (p + 1..PIXELS).any(|i| !same_at(&params[PIXELS + p], reference, i)),
                "no pixel after {p} depends on it"
            );
        }
    }
}

#[test]
fn the_gradient_of_a_pixels_log_probability_with_respect_to_that_pixel_and_later_ones_is_exactly_zero()
 {
    let device = Device::flex().autodiff();
    let model = tiny().init(&device).expect("valid");
    let base = integer_pixels(1, 3);
    // PIXELS copies of the image; copy i's loss is the log-probability of its pixel i, so one
    // backward pass gives every pixel's gradient (images are independent in Running mode).
    let copies: Vec<f32> = (0..PIXELS).flat_map(|_| base.clone()).collect();
    let scaled = Tensor::<4>::from_data(TensorData::new(copies, [PIXELS, 1, SIDE, SIDE]), &device)
        .div_scalar(127.5)
        .sub_scalar(1.0)
        .require_grad();
    let mixture = model
        .mixture_of_scaled(scaled.clone(), &StatsMode::Running)
        .expect("mixture");
    let per_pixel = mixture.log_prob(scaled.clone().detach());
    let one_hot: Vec<f32> = (0..PIXELS * PIXELS)
        .map(|k| f32::from(u8::from(k / PIXELS == k % PIXELS)))
        .collect();
    let select = Tensor::<4>::from_data(TensorData::new(one_hot, [PIXELS, 1, SIDE, SIDE]), &device);
    let grads = (per_pixel * select).sum().backward();
    let grad = scaled
        .grad(&grads)
        .expect("input gradient")
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    for i in 0..PIXELS {
        let row = &grad[i * PIXELS..(i + 1) * PIXELS];
        for (j, g) in row.iter().enumerate().skip(i) {
            assert!(
                *g == 0.0,
                "d ln P(pixel {i}) / d pixel {j} = {g}, not exactly 0"
            );
        }
        if i > 0 {
            assert!(
                row[..i].iter().any(|g| *g != 0.0),
                "pixel {i} depends on no earlier pixel"
            );
        }
    }
}

#[test]
fn in_batch_mode_a_pixels_mixture_depends_on_other_images_and_on_its_own_later_pixels() {
    // Batch statistics are means over every pixel of every image of the batch: pixel 0 of
    // image A has no context at all in Running mode, yet in Batch mode its mixture moves when
    // image B changes or when A's own last pixel changes. This is what the BN test exploits,
    // and why Batch-mode values are not a normalised likelihood of one image.
    let device = Device::flex();
    let model = tiny().init(&device).expect("valid");
    let a = integer_pixels(1, 4);
    let b = integer_pixels(1, 5);
    let mut a_late = a.clone();
    a_late[PIXELS - 1] = 255.0 - a[PIXELS - 1];
    let b_other = integer_pixels(1, 6);
    let pair = |first: &[f32], second: &[f32]| {
        let mut v = first.to_vec();
        v.extend_from_slice(second);
        images(v, &device)
    };
    let first_image = |x: Tensor<4>, mode: &StatsMode| {
        parameters(model.mixture(x, mode).expect("mixture")).remove(0)
    };
    let running = StatsMode::Running;
    let batch = StatsMode::Batch;
    let base_running = first_image(pair(&a, &b), &running);
    let base_batch = first_image(pair(&a, &b), &batch);
    // Running mode: pixel 0 sees nothing, so neither change moves it.
    assert!(same_at(
        &first_image(pair(&a, &b_other), &running),
        &base_running,
        0
    ));
    assert!(same_at(
        &first_image(pair(&a_late, &b), &running),
        &base_running,
        0
    ));
    // Batch mode: both do.
    assert!(!same_at(
        &first_image(pair(&a, &b_other), &batch),
        &base_batch,
        0
    ));
    assert!(!same_at(
        &first_image(pair(&a_late, &b), &batch),
        &base_batch,
        0
    ));
}

/// Mixture parameters for one context, `[1, M, 1, 256]` (the same for all 256 pixel values).
fn mixture_for_all_values(weights: &[f32], means: &[f32], log_scales: &[f32]) -> LogisticMixture {
    let device = Device::flex();
    let m = weights.len();
    let part = |v: &[f32]| {
        Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, m, 1, 1]), &device)
            .repeat_dim(3, 256)
    };
    LogisticMixture {
        logit_weights: part(weights),
        means: part(means),
        log_scales: part(log_scales),
    }
}

/// The 256 pixel values on the `[−1, 1]` scale, `[1, 1, 1, 256]`.
fn all_values() -> Tensor<4> {
    let v: Vec<f32> = (0..256).map(|k| k as f32 / 127.5 - 1.0).collect();
    Tensor::from_data(TensorData::new(v, [1, 1, 1, 256]), &Device::flex())
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `P(pixel = k)` of one logistic in f64, the textbook formula (edges to ±∞).
fn logistic_bin(k: usize, mean: f64, log_scale: f64) -> f64 {
    let s = log_scale.max(-7.0).exp();
    let x = k as f64 / 127.5 - 1.0;
    let upper = if k == 255 {
        1.0
    } else {
        sigmoid((x + 1.0 / 255.0 - mean) / s)
    };
    let lower = if k == 0 {
        0.0
    } else {
        sigmoid((x - 1.0 / 255.0 - mean) / s)
    };
    upper - lower
}

#[test]
fn the_256_probabilities_of_a_pixel_sum_to_one_and_stay_finite_for_extreme_parameters() {
    #[allow(clippy::type_complexity)]
    let cases: [(&str, Vec<f32>, Vec<f32>, Vec<f32>); 9] = [
        (
            "ordinary",
            vec![0.3, -1.2, 2.0],
            vec![-0.5, 0.1, 0.7],
            vec![-3.0, -4.5, -2.0],
        ),
        ("mass at pixel 0", vec![0.0], vec![-1.0], vec![-6.0]),
        ("mass at pixel 255", vec![0.0], vec![1.0], vec![-6.0]),
        (
            "means far outside",
            vec![0.0, 0.0],
            vec![-30.0, 25.0],
            vec![-2.0, -5.0],
        ),
        (
            "extreme logits",
            vec![1e4, -1e4, 3e3],
            vec![0.2, -0.3, 0.9],
            vec![-2.0, -3.0, -1.0],
        ),
        (
            "saturated small scale",
            vec![0.0, 1.0],
            vec![0.0, 0.5],
            vec![-100.0, -7.5],
        ),
        (
            "huge scale",
            vec![0.0, 0.0],
            vec![0.0, 0.3],
            vec![60.0, 20.0],
        ),
        ("between bins", vec![0.0], vec![1.0 / 255.0], vec![-7.0]),
        (
            "one wide one sharp",
            vec![2.0, -2.0],
            vec![-0.9, 0.4],
            vec![3.0, -7.0],
        ),
    ];
    for (name, weights, means, log_scales) in cases {
        let mixture = mixture_for_all_values(&weights, &means, &log_scales);
        let log_p = host(mixture.log_prob(all_values()));
        assert_eq!(log_p.len(), 256);
        assert!(log_p.iter().all(|v| v.is_finite()), "{name}: {log_p:?}");
        let total: f64 = log_p.iter().map(|v| v.exp()).sum();
        assert!(
            (total - 1.0).abs() < 1e-5,
            "{name}: the 256 probabilities sum to {total}"
        );
        // Each value against the textbook mixture in f64.
        let max = weights.iter().copied().fold(f32::MIN, f32::max) as f64;
        let z: f64 = weights.iter().map(|w| (*w as f64 - max).exp()).sum();
        for (k, got) in log_p.iter().enumerate() {
            let want: f64 = weights
                .iter()
                .zip(&means)
                .zip(&log_scales)
                .map(|((w, m), s)| {
                    (*w as f64 - max).exp() / z * logistic_bin(k, *m as f64, *s as f64)
                })
                .sum();
            assert!(
                (got.exp() - want).abs() < 1e-5,
                "{name}, pixel {k}: {} vs {want}",
                got.exp()
            );
        }
    }
}

#[test]
fn gradients_of_the_mixture_stay_finite_for_extreme_parameters() {
    let device = Device::flex().autodiff();
    let m = 3;
    let part = |v: [f32; 3]| {
        Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, m, 1, 1]), &device)
            .repeat_dim(3, 256)
            .require_grad()
    };
    let (w, mu, s) = (
        part([1e4, -1e4, 0.0]),
        part([-40.0, 0.0, 1.0]),
        part([-100.0, 60.0, -7.0]),
    );
    let mixture = LogisticMixture {
        logit_weights: w.clone(),
        means: mu.clone(),
        log_scales: s.clone(),
    };
    let values: Vec<f32> = (0..256).map(|k| k as f32 / 127.5 - 1.0).collect();
    let x = Tensor::<4>::from_data(TensorData::new(values, [1, 1, 1, 256]), &device);
    let grads = mixture.log_prob(x).sum().backward();
    for (name, t) in [("weights", w), ("means", mu), ("log-scales", s)] {
        let g = host(t.grad(&grads).expect("gradient"));
        assert!(g.iter().all(|v| v.is_finite()), "{name}: {g:?}");
    }
}

#[test]
fn log_prob_is_the_sum_of_the_per_pixel_log_probabilities_of_the_mixture() {
    let device = Device::flex();
    let model = tiny().with_seed(7).init(&device).expect("valid");
    let values = integer_pixels(3, 8);
    let x = images(values.clone(), &device);
    for mode in [StatsMode::Running, StatsMode::Batch] {
        let log_p = host(model.log_prob(x.clone(), &mode).expect("log p"));
        let per_pixel = host(model.pixel_log_probs(x.clone(), &mode).expect("pixels"));
        let params = parameters(model.mixture(x.clone(), &mode).expect("mixture"));
        for (i, lp) in log_p.iter().enumerate() {
            let summed: f64 = per_pixel[i * PIXELS..(i + 1) * PIXELS].iter().sum();
            assert!((lp - summed).abs() < 1e-3, "{mode:?}: {lp} vs {summed}");
            // Each pixel against the textbook mixture in f64, from the network's parameters.
            let mut by_hand = 0.0;
            for p in 0..PIXELS {
                let [w, mu, s] = [0, 1, 2].map(|part| {
                    params[i][part]
                        .iter()
                        .map(|c| f64::from(c[p]))
                        .collect::<Vec<_>>()
                });
                let max = w.iter().copied().fold(f64::MIN, f64::max);
                let z: f64 = w.iter().map(|v| (v - max).exp()).sum();
                let k = values[i * PIXELS + p] as usize;
                let prob: f64 = (0..w.len())
                    .map(|c| (w[c] - max).exp() / z * logistic_bin(k, mu[c], s[c]))
                    .sum();
                by_hand += prob.ln();
            }
            assert!(
                (lp - by_hand).abs() < 1e-3 * (1.0 + by_hand.abs()),
                "{mode:?}: {lp} vs by hand {by_hand}"
            );
        }
        let bits = host(model.bits_per_dim(x.clone(), &mode).expect("bits"));
        for (b, lp) in bits.iter().zip(&log_p) {
            assert!((b + lp / (PIXELS as f64 * LN_2)).abs() < 1e-4);
        }
    }
    // The pixel is floor(x): any dequantisation of the same integers scores the same.
    let jittered = images(values, &device).add_scalar(0.49);
    assert_eq!(
        host(
            model
                .log_prob(jittered, &StatsMode::Running)
                .expect("log p")
        ),
        host(model.log_prob(x, &StatsMode::Running).expect("log p"))
    );
}

#[test]
fn dropout_acts_in_the_training_loss_only_and_is_seeded() {
    let device = Device::flex();
    let model = PixelCnnConfig {
        dropout: 0.5,
        ..tiny()
    }
    .init(&device)
    .expect("valid");
    let x = images(integer_pixels(4, 9), &device);
    let mode = StatsMode::Running;
    let log_p = host(model.log_prob(x.clone(), &mode).expect("log p"));
    assert_eq!(
        log_p,
        host(model.log_prob(x.clone(), &mode).expect("log p"))
    );
    let loss = host(model.training_loss(x.clone(), &mode).expect("loss"));
    assert_eq!(
        loss,
        host(model.training_loss(x.clone(), &mode).expect("loss"))
    );
    assert_ne!(loss, log_p.iter().map(|v| -v).collect::<Vec<_>>());
    let other_seed = host(
        model
            .log_prob_with_dropout(x.clone(), &mode, 1)
            .expect("log p"),
    );
    assert_ne!(
        other_seed,
        host(model.log_prob_with_dropout(x, &mode, 0).expect("log p"))
    );
}

#[test]
fn save_then_load_gives_identical_log_likelihoods_in_every_mode() {
    let device = Device::flex();
    // Non-trivial running statistics: a few Train-mode passes folded into the module.
    let mut model = tiny().with_seed(3).init(&device).expect("valid");
    for seed in 0..3 {
        let mode = StatsMode::train();
        model
            .log_prob(images(integer_pixels(4, 20 + seed), &device), &mode)
            .expect("train pass");
        if let StatsMode::Train(tape) = &mode {
            model = tape.apply(model);
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pixelcnn.bpk");
    checkpoint::save(model.clone(), 3, 12, &path).expect("save");
    let loaded = AnyModel::load(&path, &device).expect("load");
    assert_eq!(loaded.kind(), ModelKind::PixelCnn);
    assert_eq!(
        loaded.config(),
        ModelConfig::PixelCnn(model.config().clone())
    );
    let x = images(integer_pixels(4, 30), &device);
    for mode in [StatsMode::Running, StatsMode::Batch, StatsMode::train()] {
        assert_eq!(
            host(model.log_prob(x.clone(), &mode).expect("model")),
            host(loaded.log_prob(x.clone(), &mode).expect("loaded")),
            "{mode:?}"
        );
    }
    assert_ne!(
        host(
            model
                .log_prob(x.clone(), &StatsMode::Running)
                .expect("trained")
        ),
        host(
            tiny()
                .with_seed(3)
                .init(&device)
                .expect("valid")
                .log_prob(x, &StatsMode::Running)
                .expect("fresh")
        ),
        "the running statistics moved, so the round trip checks them"
    );
}

#[test]
fn a_few_training_steps_on_real_fmnist_lower_the_loss() {
    let data = Dataset::FashionMnist
        .load(Split::Train, &Locator::only(data_dir()))
        .expect("FMNIST")
        .subset(1_000, 0)
        .expect("subset");
    let device = Device::flex();
    let model = PixelCnnConfig {
        filters: 8,
        blocks_per_stage: 1,
        mixtures: 3,
        dropout: 0.0,
        ..PixelCnnConfig::paper_fmnist()
    }
    .init(&device)
    .expect("valid");
    let probe = data.tensor(0..16, &device).expect("tensor").add_scalar(0.5);
    let before = host(
        model
            .log_prob(probe.clone(), &StatsMode::Running)
            .expect("before"),
    );
    let cfg = TrainConfig {
        batch_size: 16,
        budget: bnood_models::train::TrainBudget::steps(30),
        learning_rate: 5e-3,
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
    let trained: PixelCnn = trained.valid();
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
fn presets_and_bad_configurations() {
    let paper = PixelCnnConfig::preset("paper").expect("paper");
    assert_eq!(
        (
            paper.image_shape,
            paper.filters,
            paper.blocks_per_stage,
            paper.mixtures
        ),
        ([1, 28, 28], 80, 5, 10)
    );
    assert_eq!(paper.dropout, 0.5);
    assert!(PixelCnnConfig::preset("cpu").is_ok());
    let err = PixelCnnConfig::preset("huge").expect_err("unknown");
    assert!(err.to_string().contains("paper or cpu"), "{err}");
    let device = Device::flex();
    for (config, needle) in [
        (
            PixelCnnConfig {
                image_shape: [3, 8, 8],
                ..tiny()
            },
            "one-channel",
        ),
        (
            PixelCnnConfig {
                image_shape: [1, 6, 8],
                ..tiny()
            },
            "multiple of 4",
        ),
        (
            PixelCnnConfig {
                filters: 0,
                ..tiny()
            },
            "filters",
        ),
        (
            PixelCnnConfig {
                mixtures: 0,
                ..tiny()
            },
            "mixtures",
        ),
        (
            PixelCnnConfig {
                dropout: 1.0,
                ..tiny()
            },
            "dropout",
        ),
    ] {
        let err = config.init(&device).expect_err("refused");
        assert!(err.to_string().contains(needle), "{err}");
    }
    let model = tiny().init(&device).expect("valid");
    let wrong = Tensor::<4>::zeros([2, 1, 8, 12], &device);
    assert!(matches!(
        model.log_prob(wrong, &StatsMode::Running),
        Err(ModelError::Shape { .. })
    ));
    // The smallest stage of a 4×4 image is 1×1: one image there gives one value per
    // channel, too few for batch statistics (a clear error, not a NaN).
    let small = PixelCnnConfig {
        image_shape: [1, 4, 4],
        ..tiny()
    }
    .init(&device)
    .expect("valid");
    let one = Tensor::<4>::zeros([1, 1, 4, 4], &device);
    assert!(matches!(
        small.log_prob(one.clone(), &StatsMode::Batch),
        Err(ModelError::Norm(_))
    ));
    assert!(small.log_prob(one, &StatsMode::Running).is_ok());
    assert_eq!(
        ModelConfig::PixelCnn(paper).parameter_count(),
        PixelCnnConfig::paper_fmnist()
            .init(&device)
            .expect("valid")
            .num_params() as u128
    );
}
