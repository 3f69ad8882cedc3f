//! The building blocks of PixelCNN++ (Salimans et al. 2017; layout of the pclucas14
//! PyTorch code): causal (down- and down-right-shifted) convolutions and transposed
//! convolutions, each followed by a `bnood-norm` BatchNorm in place of weight normalisation,
//! network-in-network (1×1) layers, concat-ELU and the gated ResNet block.
//!
//! Causality: a *down-shifted* convolution with a `kh×kw` kernel is padded `kh − 1` rows on
//! top, `(kw − 1)/2` columns left and right and nothing below, so output `(r, c)` sees input
//! rows `r − kh + 1 ..= r` only; a *down-right-shifted* one is padded `kh − 1` on top and
//! `kw − 1` on the left, so it sees columns `c − kw + 1 ..= c` of those rows. Shifting the
//! *output* one row down (or one column right) turns "at or above" into "strictly above" (or
//! "strictly left"), which the first layers use so that no pixel sees itself.

use burn::module::Module;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};
use rand_chacha::ChaCha8Rng;

use bnood_norm::{BatchNorm, BatchNormConfig, StatsMode};

use crate::ModelError;
use crate::init::{conv_transpose2d_rect, conv2d, conv2d_padded};

/// Which past a causal convolution looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Causal {
    /// Rows above (and the current row), centred horizontally: the `u` stream.
    Down,
    /// Rows above and columns to the left (and the current pixel): the `ul` stream.
    DownRight,
}

/// What happens to a causal convolution's output before it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputShift {
    /// Used as is.
    None,
    /// Moved one row down (a zero row on top): output `(r, c)` then sees rows `< r` only.
    Down,
    /// Moved one column right (a zero column on the left): output `(r, c)` then sees
    /// columns `< c` only.
    Right,
}

/// The sizes a layer needs to be built: the shared BatchNorm settings, the device and the
/// seeded weight stream.
pub(crate) struct Builder<'a> {
    pub rng: &'a mut ChaCha8Rng,
    pub bn: &'a BatchNormConfig,
    pub device: &'a Device,
}

impl Builder<'_> {
    fn norm(&self, features: usize) -> Result<BatchNorm, ModelError> {
        Ok(BatchNormConfig {
            num_features: features,
            ..self.bn.clone()
        }
        .init(self.device)?)
    }
}

/// A causal convolution followed by BatchNorm (and an optional output shift).
#[derive(Module, Debug)]
pub struct ShiftedConv {
    conv: Conv2d,
    norm: BatchNorm,
    #[module(skip)]
    shift: OutputShift,
}

impl ShiftedConv {
    /// `channels = [in, out]`, kernel `[kh, kw]`, `stride` in both directions.
    pub(crate) fn new(
        b: &mut Builder<'_>,
        causal: Causal,
        channels: [usize; 2],
        kernel: [usize; 2],
        stride: usize,
        shift: OutputShift,
    ) -> Result<Self, ModelError> {
        let [kh, kw] = kernel;
        // [top, left, bottom, right]
        let padding = match causal {
            Causal::Down => [kh - 1, (kw - 1) / 2, 0, (kw - 1) / 2],
            Causal::DownRight => [kh - 1, kw - 1, 0, 0],
        };
        let conv = conv2d_padded(b.rng, channels, kernel, stride, padding, b.device);
        Ok(Self {
            conv,
            norm: b.norm(channels[1])?,
            shift,
        })
    }

    /// `[N, in, H, W]` → `[N, out, H/stride, W/stride]` (rounded up).
    pub(crate) fn forward(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<4>, ModelError> {
        let y = self.norm.forward(self.conv.forward(x), mode)?;
        Ok(match self.shift {
            OutputShift::None => y,
            OutputShift::Down => shift_down(y),
            OutputShift::Right => shift_right(y),
        })
    }
}

/// `[N, C, H, W]`: row `r` of the result is row `r − 1` of `x`, row 0 is zero.
fn shift_down(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let zeros = Tensor::zeros([n, c, 1, w], &x.device());
    Tensor::cat(vec![zeros, x.narrow(2, 0, h - 1)], 2)
}

/// `[N, C, H, W]`: column `c` of the result is column `c − 1` of `x`, column 0 is zero.
fn shift_right(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let zeros = Tensor::zeros([n, c, h, 1], &x.device());
    Tensor::cat(vec![zeros, x.narrow(3, 0, w - 1)], 3)
}

/// A causal stride-2 transposed convolution (upsampling by 2) followed by BatchNorm: the
/// full transposed convolution with output padding 1, cropped so that output `(r, c)` only
/// sees inputs at or above (and, for `DownRight`, at or left of) it.
#[derive(Module, Debug)]
pub struct ShiftedDeconv {
    deconv: ConvTranspose2d,
    norm: BatchNorm,
    #[module(skip)]
    causal: Causal,
}

impl ShiftedDeconv {
    /// `channels = [in, out]`; kernel `2×3` (`Down`) or `2×2` (`DownRight`), as in the
    /// reference.
    pub(crate) fn new(
        b: &mut Builder<'_>,
        causal: Causal,
        channels: [usize; 2],
    ) -> Result<Self, ModelError> {
        let kernel = match causal {
            Causal::Down => [2, 3],
            Causal::DownRight => [2, 2],
        };
        Ok(Self {
            deconv: conv_transpose2d_rect(b.rng, channels, kernel, 2, 1, b.device),
            norm: b.norm(channels[1])?,
            causal,
        })
    }

    /// `[N, in, H, W]` → `[N, out, 2H, 2W]`.
    pub(crate) fn forward(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<4>, ModelError> {
        let y = self.deconv.forward(x);
        let [_, _, h, w] = y.dims();
        let [kh, kw] = self.deconv.kernel_size;
        let y = y.narrow(2, 0, h - kh + 1);
        let y = match self.causal {
            Causal::Down => {
                let side = (kw - 1) / 2;
                y.narrow(3, side, w - 2 * side)
            }
            Causal::DownRight => y.narrow(3, 0, w - kw + 1),
        };
        Ok(self.norm.forward(y, mode)?)
    }
}

/// A network-in-network layer (a 1×1 convolution) followed by BatchNorm.
#[derive(Module, Debug)]
pub struct Nin {
    conv: Conv2d,
    norm: BatchNorm,
}

impl Nin {
    fn new(b: &mut Builder<'_>, channels: [usize; 2]) -> Result<Self, ModelError> {
        Ok(Self {
            conv: conv2d(b.rng, channels, 1, false, b.device),
            norm: b.norm(channels[1])?,
        })
    }

    fn forward(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<4>, ModelError> {
        Ok(self.norm.forward(self.conv.forward(x), mode)?)
    }
}

/// ELU with α = 1, `x` for `x > 0` and `eᵡ − 1` otherwise; written so that neither branch
/// overflows (burn's `elu` evaluates `eᵡ` everywhere, whose gradient is NaN-prone for large
/// `x`).
pub(crate) fn elu(x: Tensor<4>) -> Tensor<4> {
    relu(x.clone()) + x.clamp_max(0.0).exp().sub_scalar(1.0)
}

/// Concat-ELU: `elu([x, −x])` along the channels, `[N, C, H, W]` → `[N, 2C, H, W]`.
pub(crate) fn concat_elu(x: Tensor<4>) -> Tensor<4> {
    elu(Tensor::cat(vec![x.clone(), x.neg()], 1))
}

/// The gated ResNet block of PixelCNN++ on `F` filters:
///
/// `h = conv_in(concat_elu(x)) [+ nin(concat_elu(a))]`,
/// `h = conv_out(dropout(concat_elu(h)))` (`2F` channels, split into `h₁, h₂`),
/// `x + h₁ ⊙ σ(h₂)`,
///
/// where `a` is the skip input (absent, `F` or `2F` channels) and every convolution is
/// causal of the block's kind and followed by BatchNorm.
#[derive(Module, Debug)]
pub struct GatedResnet {
    conv_in: ShiftedConv,
    skip: Option<Nin>,
    conv_out: ShiftedConv,
}

impl GatedResnet {
    /// A block on `filters` channels whose skip input has `skip_streams · filters`
    /// channels (0: no skip input). Kernels `2×3` (`Down`) or `2×2` (`DownRight`).
    pub(crate) fn new(
        b: &mut Builder<'_>,
        causal: Causal,
        filters: usize,
        skip_streams: usize,
    ) -> Result<Self, ModelError> {
        let kernel = match causal {
            Causal::Down => [2, 3],
            Causal::DownRight => [2, 2],
        };
        let conv_in = ShiftedConv::new(
            b,
            causal,
            [2 * filters, filters],
            kernel,
            1,
            OutputShift::None,
        )?;
        let skip = if skip_streams == 0 {
            None
        } else {
            Some(Nin::new(b, [2 * skip_streams * filters, filters])?)
        };
        let conv_out = ShiftedConv::new(
            b,
            causal,
            [2 * filters, 2 * filters],
            kernel,
            1,
            OutputShift::None,
        )?;
        Ok(Self {
            conv_in,
            skip,
            conv_out,
        })
    }

    /// `x` `[N, F, H, W]`, skip input `a` `[N, s·F, H, W]` exactly when the block was built
    /// with one, `dropout`: a channel mask `[N, 2F, 1, 1]` already scaled by `1/(1 − p)`.
    pub(crate) fn forward(
        &self,
        x: Tensor<4>,
        a: Option<Tensor<4>>,
        dropout: Option<Tensor<4>>,
        mode: &StatsMode,
    ) -> Result<Tensor<4>, ModelError> {
        let mut h = self.conv_in.forward(concat_elu(x.clone()), mode)?;
        match (&self.skip, a) {
            (Some(nin), Some(a)) => h = h + nin.forward(concat_elu(a), mode)?,
            (None, None) => {}
            _ => unreachable!("the network passes a skip input exactly to blocks built for one"),
        }
        let mut h = concat_elu(h);
        if let Some(mask) = dropout {
            h = h * mask;
        }
        let h = self.conv_out.forward(h, mode)?;
        let f = h.dims()[1] / 2;
        let gate = sigmoid(h.clone().narrow(1, f, f));
        Ok(x + h.narrow(1, 0, f) * gate)
    }
}
