//! Training on real Fashion-MNIST lowers the loss and updates BatchNorm running statistics;
//! checkpoints round-trip exactly and refuse other architectures.

mod common;

use bnood_data::{Dataset, Locator, Split};
use bnood_models::checkpoint;
use bnood_models::train::{TrainConfig, train};
use bnood_models::{LikelihoodModel, RealNvp, RealNvpConfig, StatsMode};
use burn::module::Module;
use burn::tensor::Device;
use common::{assert_checkpoint_round_trip, data_dir, fmnist, train_steps};

fn small() -> RealNvpConfig {
    RealNvpConfig {
        mid_channels: 8,
        num_blocks: 1,
        ..RealNvpConfig::paper_fmnist()
    }
}

fn scores(model: &RealNvp, x: burn::tensor::Tensor<4>, mode: &StatsMode) -> Vec<f32> {
    model
        .log_prob(x, mode)
        .expect("log prob")
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32")
}

#[test]
fn a_few_training_steps_on_real_fmnist_lower_the_loss_and_move_running_statistics() {
    let data = Dataset::FashionMnist
        .load(Split::Train, &Locator::only(data_dir()))
        .expect("FMNIST")
        .subset(2_000, 0)
        .expect("subset");
    let device = Device::flex();
    let model = small().init(&device).expect("valid");
    let probe = data.tensor(0..32, &device).expect("tensor").add_scalar(0.5);
    let before_running = scores(&model, probe.clone(), &StatsMode::Running);
    let cfg = TrainConfig {
        batch_size: 32,
        budget: bnood_models::train::TrainBudget::steps(40),
        progress: false,
        ..TrainConfig::default()
    };
    let (trained, report) =
        train(model, &data, &cfg, &device.clone().autodiff()).expect("training runs");
    assert_eq!(report.steps, 40);
    let first: f64 = report.history[..5].iter().map(|(_, l)| l).sum::<f64>() / 5.0;
    let last: f64 = report.history[35..].iter().map(|(_, l)| l).sum::<f64>() / 5.0;
    assert!(
        last < first - 0.2,
        "loss went from {first:.3} to {last:.3} bits/dim"
    );
    let trained = trained.valid();
    let after_running = scores(&trained, probe, &StatsMode::Running);
    assert_ne!(before_running, after_running);
}

#[test]
fn save_then_load_gives_identical_log_likelihoods_in_every_mode() {
    let data = fmnist(Split::Test, 256);
    let (model, _) = train_steps(
        small().init(&Device::flex()).expect("valid"),
        &data,
        32,
        3,
        1e-3,
    );
    let x = data
        .tensor(0..16, &Device::flex())
        .expect("tensor")
        .add_scalar(0.5);
    assert_checkpoint_round_trip(&model, x);
}

#[test]
fn loading_a_checkpoint_into_another_architecture_is_a_clear_error() {
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("m.bpk");
    checkpoint::save(small().init(&device).expect("valid"), 0, 0, &path).expect("save");
    let other = RealNvpConfig {
        mid_channels: 16,
        ..small()
    };
    let err =
        checkpoint::load_into(other.init(&device).expect("valid"), &path).expect_err("mismatch");
    assert!(
        err.to_string()
            .contains("made with a different configuration"),
        "{err}"
    );
    let err = checkpoint::load_into(small().with_seed(5).init(&device).expect("valid"), &path)
        .expect_err("seed");
    assert!(
        err.to_string().contains("\"seed\":5"),
        "the difference is shown: {err}"
    );
    let vae = bnood_models::VaeConfig::cpu_fmnist()
        .init(&device)
        .expect("valid");
    let err = checkpoint::load_into(vae, &path).expect_err("kind");
    assert!(
        err.to_string()
            .contains("holds a `realnvp` model, not a `vae` model"),
        "{err}"
    );
    let err = checkpoint::read_meta(&dir.path().join("absent.bpk")).expect_err("missing");
    assert!(err.to_string().contains("cannot read its sidecar"), "{err}");
}

#[test]
fn training_rejects_a_batch_too_small_for_batch_statistics_and_a_plain_device() {
    let data = Dataset::FashionMnist
        .load(Split::Test, &Locator::only(data_dir()))
        .expect("FMNIST")
        .head(64)
        .expect("head");
    let device = Device::flex();
    let cfg = TrainConfig {
        batch_size: 1,
        progress: false,
        ..TrainConfig::default()
    };
    let err = train(
        small().init(&device).expect("valid"),
        &data,
        &cfg,
        &device.clone().autodiff(),
    )
    .expect_err("b=1");
    assert!(
        err.to_string().contains("BatchNorm needs batch statistics"),
        "{err}"
    );
    let cfg = TrainConfig {
        batch_size: 8,
        progress: false,
        ..TrainConfig::default()
    };
    let err = train(small().init(&device).expect("valid"), &data, &cfg, &device)
        .expect_err("no autodiff");
    assert!(
        err.to_string().contains("needs an autodiff device"),
        "{err}"
    );
}

#[test]
fn resuming_from_a_checkpoint_continues_exactly_like_an_uninterrupted_run() {
    let data = Dataset::FashionMnist
        .load(Split::Test, &Locator::only(data_dir()))
        .expect("FMNIST")
        .head(256)
        .expect("head");
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("run.bpk");
    let cfg = |steps, checkpoint: Option<std::path::PathBuf>, resume| TrainConfig {
        batch_size: 16,
        budget: bnood_models::train::TrainBudget::steps(steps),
        progress: false,
        checkpoint,
        resume,
        ..TrainConfig::default()
    };
    let ad = device.clone().autodiff();
    let (straight, full) = train(
        small().init(&device).expect("valid"),
        &data,
        &cfg(10, None, false),
        &ad,
    )
    .expect("train");
    let (_, first) = train(
        small().init(&device).expect("valid"),
        &data,
        &cfg(6, Some(path.clone()), false),
        &ad,
    )
    .expect("train");
    assert_eq!(first.steps, 6);
    let (resumed, second) = train(
        small().init(&device).expect("valid"),
        &data,
        &cfg(10, Some(path.clone()), true),
        &ad,
    )
    .expect("resume");
    assert_eq!(second.steps, 10);
    assert_eq!(
        second.history.first().map(|h| h.0),
        Some(7),
        "resumed at step 7"
    );
    for ((s1, l1), (s2, l2)) in full.history[6..].iter().zip(&second.history) {
        assert_eq!(s1, s2);
        assert!((l1 - l2).abs() < 1e-4, "step {s1}: {l1} vs {l2}");
    }
    let x = data.tensor(0..16, &device).expect("tensor").add_scalar(0.5);
    let (a, b) = (
        scores(&straight.valid(), x.clone(), &StatsMode::Running),
        scores(&resumed.valid(), x, &StatsMode::Running),
    );
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() < 1e-2, "{p} vs {q}");
    }
}
