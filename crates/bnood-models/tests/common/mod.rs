//! Helpers shared by the model tests.
#![allow(dead_code)]

use std::path::PathBuf;

use bnood_data::ImageSet;
use bnood_models::train::{TrainConfig, Trainable, train};
use burn::tensor::{Device, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `BNOOD_DATA_DIR`, else the project's sibling `shared/datasets`; fails loudly otherwise,
/// because the tests that use it pin down real data.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BNOOD_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let sibling = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets");
    assert!(
        sibling.is_dir(),
        "set BNOOD_DATA_DIR to the datasets directory (see README.md)"
    );
    sibling
}

/// A float tensor's values on the host, as f64.
pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .try_to_vec::<f32>()
        .expect("f32")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Dequantised pixels: uniform in [0, 256), seeded.
pub fn pixels(n: usize, shape: [usize; 3], seed: u64, device: &Device) -> Tensor<4> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len = n * shape.iter().product::<usize>();
    let v: Vec<f32> = (0..len).map(|_| rng.random_range(0.0..256.0f32)).collect();
    Tensor::from_data(
        TensorData::new(v, [n, shape[0], shape[1], shape[2]]),
        device,
    )
}

/// The first `n` images of Fashion-MNIST `split`, from [`data_dir`].
pub fn fmnist(split: bnood_data::Split, n: usize) -> ImageSet {
    bnood_data::Dataset::FashionMnist
        .load(split, &bnood_data::Locator::only(data_dir()))
        .expect("Fashion-MNIST loads")
        .head(n)
        .expect("enough images")
}

/// Saves `model` as a checkpoint, loads it back through the configuration stored with it
/// (as `AnyModel`, the way every front end loads a model file), and asserts that both give
/// bit-identical log-likelihoods on `x` in Running and Batch mode.
pub fn assert_checkpoint_round_trip<M: Trainable>(model: &M, x: Tensor<4>) {
    use bnood_models::{LikelihoodModel, StatsMode, checkpoint};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.bpk");
    checkpoint::save(model.clone(), 3, 96, &path).expect("save");
    let meta = checkpoint::read_meta(&path).expect("config");
    assert_eq!(
        (meta.model, meta.step),
        (model.model_config(), 3),
        "the sidecar holds the model's configuration"
    );
    let loaded = checkpoint::load(&path, &x.device()).expect("load");
    for mode in [StatsMode::Running, StatsMode::Batch] {
        let a = host(model.log_prob(x.clone(), &mode).expect("model scores"));
        let b = host(
            loaded
                .log_prob(x.clone(), &mode)
                .expect("loaded model scores"),
        );
        assert_eq!(a, b, "{mode:?}");
    }
}

/// Trains `model` for `steps` steps of `batch` images on flex and returns it ready for
/// inference, with the per-step losses (bits/dim).
pub fn train_steps<M: Trainable>(
    model: M,
    data: &ImageSet,
    batch: usize,
    steps: usize,
    lr: f64,
) -> (M, Vec<f64>) {
    let device = Device::flex();
    let cfg = TrainConfig {
        batch_size: batch,
        budget: bnood_models::train::TrainBudget::steps(steps),
        learning_rate: lr,
        progress: false,
        ..TrainConfig::default()
    };
    let (model, report) = train(model, data, &cfg, &device.autodiff()).expect("training runs");
    (
        model.valid(),
        report.history.into_iter().map(|(_, l)| l).collect(),
    )
}
