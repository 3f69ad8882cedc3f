//! Seeded, backend-independent randomness: parameter initialisation (weights are drawn on
//! the host from a ChaCha8 stream and uploaded, so the same seed gives the same model on
//! every backend), and the seed mixing and normal draws of the models' noise.

use std::f64::consts::PI;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d};
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Uniform(−bound, bound) values on the host.
fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect()
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
    conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(w, [cout, cin, kernel, kernel]),
        device,
    ));
    conv.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(b, [cout]),
        device,
    )));
    conv
}

/// A convolution `in → out` with a `kh×kw` kernel, equal `stride` in both directions and
/// symmetric zero `padding`, PyTorch's default initialisation (weights and bias uniform in
/// ±1/√fan_in, fan_in = in·kh·kw). Weights are drawn first, then the bias.
pub(crate) fn conv2d_strided(
    rng: &mut ChaCha8Rng,
    channels: [usize; 2],
    kernel: [usize; 2],
    stride: usize,
    padding: usize,
    device: &Device,
) -> Conv2d {
    let [cin, cout] = channels;
    let [kh, kw] = kernel;
    let mut conv = Conv2dConfig::new(channels, kernel)
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .init(device);
    let bound = 1.0 / ((cin * kh * kw) as f64).sqrt();
    let w = uniform(rng, cout * cin * kh * kw, bound);
    let b = uniform(rng, cout, bound);
    conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(w, [cout, cin, kh, kw]),
        device,
    ));
    conv.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(b, [cout]),
        device,
    )));
    conv
}

/// A convolution `in → out` with a `kh×kw` kernel, equal `stride` in both directions and
/// the zero padding `[top, left, bottom, right]` (asymmetric, for the causal convolutions of
/// PixelCNN++), PyTorch's default initialisation (weights and bias uniform in ±1/√fan_in,
/// fan_in = in·kh·kw). Weights are drawn first, then the bias.
pub(crate) fn conv2d_padded(
    rng: &mut ChaCha8Rng,
    channels: [usize; 2],
    kernel: [usize; 2],
    stride: usize,
    padding: [usize; 4],
    device: &Device,
) -> Conv2d {
    let [top, left, bottom, right] = padding;
    let mut conv = conv2d_strided(rng, channels, kernel, stride, 0, device);
    conv.padding = PaddingConfig2d::Explicit(top, left, bottom, right);
    conv
}

/// A transposed convolution `in → out` with a `kh×kw` kernel, equal `stride`, no padding
/// and `padding_out` extra rows/columns at the bottom/right. PyTorch's default
/// initialisation (bound 1/√(out·kh·kw), PyTorch's fan_in of the `[in, out, kh, kw]`
/// weight). Weights are drawn first, then the bias.
pub(crate) fn conv_transpose2d_rect(
    rng: &mut ChaCha8Rng,
    channels: [usize; 2],
    kernel: [usize; 2],
    stride: usize,
    padding_out: usize,
    device: &Device,
) -> ConvTranspose2d {
    let [cin, cout] = channels;
    let [kh, kw] = kernel;
    let bound = 1.0 / ((cout * kh * kw) as f64).sqrt();
    let w = uniform(rng, cin * cout * kh * kw, bound);
    let b = uniform(rng, cout, bound);
    ConvTranspose2d {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(w, [cin, cout, kh, kw]),
            device,
        )),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [cout]),
            device,
        ))),
        stride: [stride, stride],
        kernel_size: kernel,
        dilation: [1, 1],
        groups: 1,
        padding: [0, 0],
        padding_out: [padding_out, padding_out],
        channels,
    }
}

/// A `k×k` transposed convolution `in → out` with equal `stride`, symmetric `padding` and
/// `padding_out` (extra rows/columns at the bottom/right; 1 makes a stride-2, `k = 5`,
/// padding-2 layer double the size exactly). PyTorch's default initialisation: PyTorch
/// takes fan_in from dimension 1 of the `[in, out, k, k]` weight, so the bound is
/// 1/√(out·k·k) for weights and bias. Weights are drawn first, then the bias.
pub(crate) fn conv_transpose2d(
    rng: &mut ChaCha8Rng,
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    padding_out: usize,
    device: &Device,
) -> ConvTranspose2d {
    let [cin, cout] = channels;
    let bound = 1.0 / ((cout * kernel * kernel) as f64).sqrt();
    let w = uniform(rng, cin * cout * kernel * kernel, bound);
    let b = uniform(rng, cout, bound);
    ConvTranspose2d {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(w, [cin, cout, kernel, kernel]),
            device,
        )),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [cout]),
            device,
        ))),
        stride: [stride, stride],
        kernel_size: [kernel, kernel],
        dilation: [1, 1],
        groups: 1,
        padding: [padding, padding],
        padding_out: [padding_out, padding_out],
        channels,
    }
}

/// A fully connected layer `d_in → d_out` (burn's row layout: weight `[d_in, d_out]`),
/// PyTorch's default initialisation (uniform in ±1/√d_in). Weights are drawn first (in
/// `[d_in, d_out]` order), then the bias.
pub(crate) fn linear(rng: &mut ChaCha8Rng, d_in: usize, d_out: usize, device: &Device) -> Linear {
    let bound = 1.0 / (d_in as f64).sqrt();
    let w = uniform(rng, d_in * d_out, bound);
    let b = uniform(rng, d_out, bound);
    Linear {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(w, [d_in, d_out]), device)),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [d_out]),
            device,
        ))),
    }
}

/// SplitMix64 (the one copy, in `bnood_data::seeds`), to derive stream seeds.
pub(crate) use bnood_data::seeds::splitmix64;

/// `n` standard normal values (Box–Muller on ChaCha8 uniforms, both values of each pair).
pub(crate) fn standard_normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * PI * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    //! Pinned values: the models' noise and weights are part of their scores, so these
    //! streams must never change.

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::{splitmix64, standard_normals, uniform};

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // The first two outputs of Vigna's splitmix64.c seeded with 0.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn seeded_draws_are_pinned() {
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        let normals = standard_normals(&mut ChaCha8Rng::seed_from_u64(3), 3);
        let uniforms = uniform(&mut ChaCha8Rng::seed_from_u64(3), 3, 0.5);
        println!(
            "{:08X?} {:08X?}",
            bits(normals.clone()),
            bits(uniforms.clone())
        );
        assert_eq!(bits(normals), PINNED_NORMALS);
        assert_eq!(bits(uniforms), PINNED_UNIFORMS);
    }

    /// `standard_normals(seed 3, 3)` and `uniform(seed 3, 3, 0.5)` as f32 bits (≈ 1.218,
    /// 0.683, 0.764 and 0.123, −0.419, −0.177), taken from the code as it was before it
    /// moved here from vae.rs.
    const PINNED_NORMALS: [u32; 3] = [0x3F9B_F51A, 0x3F2E_D057, 0x3F43_88EC];
    const PINNED_UNIFORMS: [u32; 3] = [0x3DFB_D65E, 0xBED6_5FA0, 0xBE35_726F];
}
