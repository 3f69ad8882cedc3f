//! Held-out bits/dim: the paper's Table 1 quantity, and the held-out sets a training run
//! evaluates at every epoch for its learning curve ([`crate::train::train_observed`]).

use burn::tensor::Device;

use bnood_data::{Dataset, ImageSet, Locator, Split};
use bnood_norm::StatsMode;

use crate::{LikelihoodModel, ModelError};

/// The paper's Table 1 quantity: mean bits/dim of the images of `set` under `model` with
/// BatchNorm statistics from `mode`, in batches of `batch_size` drawn from the set in order
/// (no mixing), midpoint-dequantised (`pixel + 0.5`). A lone last image has no batch
/// statistics and is left out in every mode, so that modes average over the same images.
///
/// # Errors
/// [`ModelError::InvalidConfig`] for a batch size below 2 or a set that leaves no image;
/// model and data errors.
pub fn mean_bits_per_dim<M: LikelihoodModel>(
    model: &M,
    set: &ImageSet,
    mode: &StatsMode,
    batch_size: usize,
    device: &Device,
) -> Result<f64, ModelError> {
    if batch_size < 2 {
        return Err(ModelError::InvalidConfig(format!(
            "batch size {batch_size} leaves no batch statistics: use at least 2 (the paper uses 64)"
        )));
    }
    let (mut total, mut n) = (0.0, 0usize);
    for batch in set.batches(batch_size, device)? {
        if batch.dims()[0] < 2 {
            continue;
        }
        let bpd = model.bits_per_dim(batch.add_scalar(0.5), mode)?;
        let values = bpd.into_data().iter::<f64>().collect::<Vec<_>>();
        total += values.iter().sum::<f64>();
        n += values.len();
    }
    if n == 0 {
        return Err(ModelError::InvalidConfig(format!(
            "`{}` leaves no image to score in batches of {batch_size}",
            set.name()
        )));
    }
    Ok(total / n as f64)
}

/// One held-out measurement of a learning curve: mean bits/dim of `images` with BatchNorm
/// statistics from `mode`, in batches of 64 (as Table 1).
#[derive(Debug, Clone)]
pub struct HeldOutSet {
    /// Column name in the curve, e.g. `fmnist_test_running_bpd`.
    pub name: String,
    /// The images (a fixed subset, so every row measures the same images).
    pub images: ImageSet,
    /// `Running` or `Batch`.
    pub mode: StatsMode,
}

impl HeldOutSet {
    /// The held-out sets of a Fashion-MNIST model: `n` Fashion-MNIST-test images (the
    /// subset drawn with seed 1, as Table 1) in Running and in Batch mode, then `n`
    /// MNIST-test images in Batch mode. The first, Running-mode FMNIST, is the one the flat
    /// rule watches.
    ///
    /// # Errors
    /// Data errors: a dataset not found or fewer than `n` images.
    pub fn fmnist(locator: &Locator, n: usize) -> Result<Vec<Self>, ModelError> {
        let fmnist = Dataset::FashionMnist
            .load(Split::Test, locator)?
            .subset(n, 1)?;
        let mnist = Dataset::Mnist.load(Split::Test, locator)?.subset(n, 1)?;
        Ok(vec![
            Self {
                name: "fmnist_test_running_bpd".into(),
                images: fmnist.clone(),
                mode: StatsMode::Running,
            },
            Self {
                name: "fmnist_test_batch_bpd".into(),
                images: fmnist,
                mode: StatsMode::Batch,
            },
            Self {
                name: "mnist_test_batch_bpd".into(),
                images: mnist,
                mode: StatsMode::Batch,
            },
        ])
    }

    /// Mean bits/dim of every set under `model`, as `(name, bits/dim)`: what
    /// [`crate::train::Evaluator`] returns.
    ///
    /// # Errors
    /// As [`mean_bits_per_dim`].
    pub fn evaluate_all<M: LikelihoodModel>(
        sets: &[Self],
        model: &M,
        device: &Device,
    ) -> Result<Vec<(String, f64)>, ModelError> {
        sets.iter()
            .map(|s| {
                mean_bits_per_dim(model, &s.images, &s.mode, 64, device)
                    .map(|v| (s.name.clone(), v))
            })
            .collect()
    }
}
