//! Drawing images from a trained model, with a temperature and a seed: raster-order
//! ancestral sampling for PixelCNN++, latent sampling for RealNVP, prior sampling for the
//! VAE. Every network runs with its BatchNorm running statistics ([`StatsMode::Running`]),
//! so a sample does not depend on the others drawn with it.
//!
//! Temperature `T` (the paper's Appendix B samples a PixelCNN++ at `T = 1.17`): every
//! pre-softmax output is divided by `T` — the PixelCNN++ mixture logits and the VAE's
//! per-pixel logits — and every continuous spread is multiplied by `T` — the logistic
//! components' scales, RealNVP's latent standard deviation. `T = 1` samples the model's own
//! distribution, `T > 1` flattens it, `T → 0` approaches its modes.

use burn::tensor::{Device, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use bnood_data::ImageSet;
use bnood_norm::StatsMode;

use crate::catalogue::AnyModel;
use crate::{LikelihoodModel, ModelError, PixelCnn, RealNvp, Vae};

/// Images drawn per forward pass.
const BATCH: usize = 16;

/// How many images to draw, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleParams {
    /// Images to draw (at least 1).
    pub n: usize,
    /// Temperature `T > 0` (see the module docs); 1 = the model's distribution.
    pub temperature: f64,
    /// Seed of every random draw: same seed, same images.
    pub seed: u64,
}

impl SampleParams {
    fn check(&self) -> Result<(), ModelError> {
        if self.n == 0 || self.n > 100_000 {
            return Err(ModelError::InvalidConfig(format!(
                "cannot draw {} images: ask for 1 to 100000",
                self.n
            )));
        }
        if !(self.temperature > 0.0 && self.temperature <= 100.0) {
            return Err(ModelError::InvalidConfig(format!(
                "temperature {} must lie in (0, 100] (1 samples the model's own distribution; the paper's Appendix B uses 1.17)",
                self.temperature
            )));
        }
        Ok(())
    }
}

/// Draws `params.n` images from `model` on `device`, as an [`ImageSet`] named `name`.
///
/// # Errors
/// [`ModelError::InvalidConfig`] for a count or temperature out of range; model errors.
pub fn sample(
    model: &AnyModel,
    params: &SampleParams,
    name: &str,
    device: &Device,
) -> Result<ImageSet, ModelError> {
    params.check()?;
    let [c, h, w] = model.image_shape();
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut pixels = Vec::with_capacity(params.n * c * h * w);
    let mut left = params.n;
    while left > 0 {
        let m = left.min(BATCH);
        let t = params.temperature;
        pixels.extend(match model {
            AnyModel::PixelCnn(p) => sample_pixelcnn(p, m, t, &mut rng, device)?,
            AnyModel::RealNvp(r) => sample_realnvp(r, m, t, &mut rng, device)?,
            AnyModel::Vae(v) => sample_vae(v, m, t, &mut rng, device)?,
        });
        left -= m;
    }
    ImageSet::new(name, pixels, [params.n, c, h, w], None).map_err(ModelError::from)
}

/// Ancestral sampling in raster order: pixel `i` from its mixture given pixels `< i` (the
/// network is causal, so the rest of the canvas does not matter), one forward pass per
/// pixel.
fn sample_pixelcnn(
    model: &PixelCnn,
    m: usize,
    temperature: f64,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Vec<u8>, ModelError> {
    let [c, h, w] = model.image_shape();
    // The canvas on the `[−1, 1]` scale the network reads (pixel k at k/127.5 − 1).
    let mut canvas = vec![-1.0f32; m * c * h * w];
    let mut out = vec![0u8; m * c * h * w];
    for y in 0..h {
        for x in 0..w {
            let input =
                Tensor::<4>::from_data(TensorData::new(canvas.clone(), [m, c, h, w]), device);
            let mixture = model.mixture_of_scaled(input, &StatsMode::Running)?;
            // [m, K, H, W] → the K values of every image at (y, x), image-major.
            let at = |t: Tensor<4>| -> Vec<f64> {
                let k = t.dims()[1];
                t.narrow(2, y, 1)
                    .narrow(3, x, 1)
                    .reshape([m * k])
                    .into_data()
                    .iter::<f64>()
                    .collect()
            };
            let logits = at(mixture.logit_weights);
            let means = at(mixture.means);
            let log_scales = at(mixture.log_scales);
            let k = logits.len() / m;
            for i in 0..m {
                let r = i * k..(i + 1) * k;
                let pixel = sample_logistic_mixture(
                    &logits[r.clone()],
                    &means[r.clone()],
                    &log_scales[r],
                    temperature,
                    rng,
                );
                let at = i * c * h * w + y * w + x;
                out[at] = pixel;
                canvas[at] = pixel as f32 / 127.5 - 1.0;
            }
        }
    }
    Ok(out)
}

/// One pixel `0..=255` from a discretized logistic mixture (Salimans et al. 2017) given
/// per component its logit, mean and log-scale on the `[−1, 1]` scale: a component from
/// `softmax(logits / T)`, a value from its logistic with scale `T·e^{log_scale}` (log-scale
/// at least [`MIN_LOG_SCALE`](crate::pixelcnn::mixture::MIN_LOG_SCALE)), rounded to the
/// nearest bin and clamped to the edge bins (which extend to ±∞).
pub fn sample_logistic_mixture(
    logits: &[f64],
    means: &[f64],
    log_scales: &[f64],
    temperature: f64,
    rng: &mut ChaCha8Rng,
) -> u8 {
    let k = categorical(logits, temperature, rng);
    let scale = log_scales[k]
        .max(crate::pixelcnn::mixture::MIN_LOG_SCALE)
        .exp()
        * temperature;
    let u: f64 = rng.random_range(1e-5..1.0 - 1e-5);
    let value = means[k] + scale * (u.ln() - (1.0 - u).ln());
    ((value + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// An index from `softmax(logits / T)`.
fn categorical(logits: &[f64], temperature: f64, rng: &mut ChaCha8Rng) -> usize {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|l| ((l - max) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, wt) in weights.iter().enumerate() {
        if u < *wt {
            return i;
        }
        u -= wt;
    }
    weights.len() - 1
}

/// RealNVP: latent parts `z ~ N(0, T²·I)` through the inverse flow, then the pixels'
/// integer part (the flow models dequantised pixels on `[0, 256)`).
fn sample_realnvp(
    model: &RealNvp,
    m: usize,
    temperature: f64,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Vec<u8>, ModelError> {
    let [c, h, w] = model.image_shape();
    // The latent parts' shapes, from one encoded image.
    let probe = Tensor::<4>::full([1, c, h, w], 128.0, device);
    let shapes: Vec<[usize; 4]> = model
        .encode(probe, &StatsMode::Running)?
        .iter()
        .map(|p| p.dims())
        .collect();
    let parts: Vec<Tensor<4>> = shapes
        .iter()
        .map(|&[_, pc, ph, pw]| {
            let values: Vec<f32> = crate::init::standard_normals(rng, m * pc * ph * pw)
                .into_iter()
                .map(|v| v * temperature as f32)
                .collect();
            Tensor::<4>::from_data(TensorData::new(values, [m, pc, ph, pw]), device)
        })
        .collect();
    let x = model.decode(&parts, &StatsMode::Running)?;
    Ok(to_pixels(x))
}

/// VAE: `z ~ N(0, I)` from the prior, then each pixel from the generator's
/// `softmax(logits / T)` over its 256 values.
fn sample_vae(
    model: &Vae,
    m: usize,
    temperature: f64,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Vec<u8>, ModelError> {
    let [c, h, w] = model.image_shape();
    let d = model.config().latent_dim;
    let z = crate::init::standard_normals(rng, m * d);
    let z = Tensor::<2>::from_data(TensorData::new(z, [m, d]), device);
    // [m, 256, C, H, W] → host, then one categorical draw per pixel.
    let logits: Vec<f64> = model
        .decoder_logits(z, &StatsMode::Running)?
        .into_data()
        .iter::<f64>()
        .collect();
    let plane = c * h * w;
    let mut out = Vec::with_capacity(m * plane);
    let mut values = vec![0.0; 256];
    for i in 0..m {
        for p in 0..plane {
            for (v, slot) in values.iter_mut().enumerate() {
                *slot = logits[(i * 256 + v) * plane + p];
            }
            out.push(categorical(&values, temperature, rng) as u8);
        }
    }
    Ok(out)
}

/// Dequantised pixels on `[0, 256)` → their integer part, clamped to `0..=255`.
fn to_pixels(x: Tensor<4>) -> Vec<u8> {
    x.into_data()
        .iter::<f64>()
        .map(|v| v.floor().clamp(0.0, 255.0) as u8)
        .collect()
}
