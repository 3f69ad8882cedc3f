//! Seeded, backend-independent parameter initialisation: weights are drawn on the host from
//! a ChaCha8 stream and uploaded, so the same seed gives the same model on every backend.

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Uniform(−bound, bound) values on the host.
fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..bound) as f32).collect()
}

/// A `k×k` convolution `in → out` with "same" padding (odd `k`), PyTorch's default
/// initialisation (Kaiming-uniform with a = √5: bound 1/√fan_in for weights and bias), or
/// zeros when `zero` is set (used for the last layer of coupling networks so that every
/// coupling starts as the identity).
pub(crate) fn conv2d(
    rng: &mut ChaCha8Rng,
    channels: [usize; 2],
    kernel: usize,
    zero: bool,
    device: &Device,
) -> Conv2d {
    let [cin, cout] = channels;
    let pad = kernel / 2;
    let mut conv = Conv2dConfig::new(channels, [kernel, kernel])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(device);
    let fan_in = cin * kernel * kernel;
    let bound = 1.0 / (fan_in as f64).sqrt();
    let n = cout * cin * kernel * kernel;
    let (w, b) = if zero {
        (vec![0.0; n], vec![0.0; cout])
    } else {
        (uniform(rng, n, bound), uniform(rng, cout, bound))
    };
    conv.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [cout, cin, kernel, kernel]), device));
    conv.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(b, [cout]), device)));
    conv
}
