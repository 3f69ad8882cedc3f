//! The VAE generator's likelihood of integer pixels under its 256-way categorical outputs:
//! for logits `[M, L, D]` (L levels, D values per sample, the levels axis strided by D) and
//! pixels `x`, `Σ_d (logits[m, x_d, d] − logsumexp_c logits[m, c, d])` `[M]`, in nats.
//!
//! On flex (plain or autodiff) it is one fused computation on the tensor's buffer, one
//! sample at a time on up to one thread per core: a pass for the maximum over the levels and
//! a pass for the sum of exponentials (each reading rows of D contiguous values; the
//! exponential is a polynomial the compiler vectorises, [`exp_poly`]); its gradient
//! `g_m · (1{c = x_d} − softmax_c)` is one more pass. burn's tensor operations take six
//! passes over the model's largest tensor forward (a strided maximum, a subtraction, `exp`,
//! a strided sum, `log`, `gather`) and about as many backward; on 2 threads they were over
//! half of VAE scoring time (docs/performance.md). On other devices burn's operations run,
//! with the same formula. Results do not depend on the thread count.

use burn::tensor::{Tensor, TensorData};

/// Integer pixels of N images `[N, D]`, each used by `repeats` consecutive samples (an
/// image's importance samples): sample `m` belongs to image `m / repeats`.
#[derive(Debug, Clone)]
pub(crate) struct Pixels {
    values: Vec<u8>,
    dims: usize,
    repeats: usize,
}

impl Pixels {
    /// `values` `[N, D]` row-major, each image used by `repeats ≥ 1` samples.
    pub(crate) fn new(values: Vec<u8>, dims: usize, repeats: usize) -> Self {
        debug_assert!(dims > 0 && repeats > 0 && values.len().is_multiple_of(dims));
        Self {
            values,
            dims,
            repeats,
        }
    }

    /// The pixels of sample `m` `[D]`.
    fn row(&self, m: usize) -> &[u8] {
        let image = m / self.repeats;
        &self.values[image * self.dims..(image + 1) * self.dims]
    }

    /// Number of samples (images × repeats).
    fn samples(&self) -> usize {
        self.values.len() / self.dims * self.repeats
    }
}

/// `ln p(x | logits)` `[M]` (nats) for `logits` `[M, L, D]` of samples `first..first + M` of
/// `pixels` (see the module's documentation). Differentiable on autodiff devices.
pub(crate) fn log_likelihood(logits: Tensor<3>, pixels: &Pixels, first: usize) -> Tensor<1> {
    let [m, levels, dims] = logits.dims();
    debug_assert!(dims == pixels.dims && first + m <= pixels.samples() && levels >= 256);
    #[cfg(feature = "flex")]
    if let Some(out) = flex::log_likelihood(&logits, pixels, first) {
        return out;
    }
    let device = logits.device();
    let index: Vec<f32> = (first..first + m)
        .flat_map(|s| pixels.row(s).iter().map(|&v| f32::from(v)))
        .collect();
    let index = Tensor::<3>::from_data(TensorData::new(index, [m, 1, dims]), &device).int();
    let max = logits.clone().detach().max_dim(1);
    let lse = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max;
    (logits.gather(1, index) - lse).sum_dim(2).reshape([m])
}

#[cfg(feature = "flex")]
/// `e^x` for `x ≤ 0` (Cephes' `expf`: `x = n·ln 2 + r`, a degree-6 polynomial in `r`, times
/// `2^n`), written so that the compiler vectorises it; relative error ≤ 2·10⁻⁷ (tested).
/// Arguments below −87 give `e^−87`; NaN stays NaN; small positive arguments (rounding) are
/// exact too.
#[inline(always)]
fn exp_poly(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding it rounds to an integer, held in the low bits of the mantissa.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    f32::from_bits((n_int.wrapping_add(127) as u32).wrapping_shl(23)) * p
}

#[cfg(feature = "flex")]
/// One sample: returns `Σ_d ln softmax(l)[x_d]` and writes `lse` `[D]`, the
/// log-normaliser of every value. `l` `[L, D]`, `x` `[D]` (each `< L`), `sum` scratch `[D]`.
#[inline(always)]
fn sample_forward(l: &[f32], x: &[u8], lse: &mut [f32], sum: &mut [f32]) -> f32 {
    let dims = lse.len();
    lse.copy_from_slice(&l[..dims]);
    for row in l.chunks_exact(dims).skip(1) {
        for (m, &v) in lse.iter_mut().zip(row) {
            // Not `f32::max`, which would drop a NaN; a NaN reaches the sum below either way.
            *m = if v > *m { v } else { *m };
        }
    }
    sum.fill(0.0);
    for row in l.chunks_exact(dims) {
        for ((s, &m), &v) in sum.iter_mut().zip(lse.iter()).zip(row) {
            *s += exp_poly(v - m);
        }
    }
    let mut total = 0.0_f64;
    for (d, (z, &s)) in lse.iter_mut().zip(sum.iter()).enumerate() {
        *z += s.ln();
        total += f64::from(l[usize::from(x[d]) * dims + d] - *z);
    }
    total as f32
}

#[cfg(feature = "flex")]
/// One sample's gradient: `out[c, d] = g · (1{c = x_d} − e^{l[c, d] − lse_d})`.
#[inline(always)]
fn sample_backward(l: &[f32], x: &[u8], lse: &[f32], g: f32, out: &mut [f32]) {
    let dims = lse.len();
    for (o_row, row) in out.chunks_exact_mut(dims).zip(l.chunks_exact(dims)) {
        for ((o, &v), &z) in o_row.iter_mut().zip(row).zip(lse) {
            *o = -g * exp_poly(v - z);
        }
    }
    for (d, &p) in x.iter().enumerate() {
        out[usize::from(p) * dims + d] += g;
    }
}

/// `f(range, part)` on consecutive ranges of the `samples` samples, one per thread (at most
/// `threads`), each with its part of `out` (`per_sample` values a sample); the results in
/// range order.
#[cfg(feature = "flex")]
fn on_threads<F, R>(
    samples: usize,
    threads: usize,
    out: &mut [f32],
    per_sample: usize,
    f: F,
) -> Vec<R>
where
    F: Fn(std::ops::Range<usize>, &mut [f32]) -> R + Sync,
    R: Send,
{
    let per = samples.div_ceil(threads.clamp(1, samples.max(1))).max(1);
    let range = |i: usize| i * per..(i * per + per).min(samples);
    std::thread::scope(|scope| {
        let mut parts = out.chunks_mut(per * per_sample).enumerate();
        let Some((_, first)) = parts.next() else {
            return Vec::new();
        };
        let f = &f;
        let others: Vec<_> = parts
            .map(|(i, part)| scope.spawn(move || f(range(i), part)))
            .collect();
        let mut results = vec![f(range(0), first)];
        results.extend(
            others
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
        );
        results
    })
}

/// Forward pass over all samples of `l` `[M, L, D]` (samples `first..` of `pixels`):
/// `(ln p(x|·) [M], lse [M, D])`.
#[cfg(feature = "flex")]
fn forward(l: &[f32], levels: usize, pixels: &Pixels, first: usize) -> (Vec<f32>, Vec<f32>) {
    let dims = pixels.dims;
    let m = l.len() / (levels * dims);
    let mut lse = vec![0.0_f32; m * dims];
    let parts = on_threads(
        m,
        crate::available_threads(),
        &mut lse,
        dims,
        |range, lse| {
            let mut sum = vec![0.0_f32; dims];
            let mut out = vec![0.0_f32; range.len()];
            let samples = Samples {
                l,
                levels,
                pixels,
                first,
                range,
            };
            pulp::Arch::new().dispatch(Forward {
                samples,
                lse,
                sum: &mut sum,
                out: &mut out,
            });
            out
        },
    );
    (parts.concat(), lse)
}

/// The samples one thread computes: their logits `[·, L, D]` and pixels.
#[cfg(feature = "flex")]
struct Samples<'a> {
    l: &'a [f32],
    levels: usize,
    pixels: &'a Pixels,
    first: usize,
    range: std::ops::Range<usize>,
}

#[cfg(feature = "flex")]
impl<'a> Samples<'a> {
    /// Sample `m`'s logits `[L, D]` and pixels `[D]`.
    #[inline(always)]
    fn sample(&self, m: usize) -> (&'a [f32], &'a [u8]) {
        let size = self.levels * self.pixels.dims;
        (
            &self.l[m * size..(m + 1) * size],
            self.pixels.row(self.first + m),
        )
    }
}

/// [`sample_forward`] over a range of samples, compiled for the CPU's vector width.
#[cfg(feature = "flex")]
struct Forward<'a> {
    samples: Samples<'a>,
    lse: &'a mut [f32],
    sum: &'a mut [f32],
    out: &'a mut [f32],
}

#[cfg(feature = "flex")]
impl pulp::WithSimd for Forward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let dims = self.samples.pixels.dims;
        let rows = self.lse.chunks_exact_mut(dims).zip(self.out.iter_mut());
        for (m, (lse, out)) in self.samples.range.clone().zip(rows) {
            let (l, x) = self.samples.sample(m);
            *out = sample_forward(l, x, lse, self.sum);
        }
    }
}

/// Gradient of the logits `[M, L, D]` from the gradient `g` `[M]` of the output.
#[cfg(feature = "flex")]
fn backward(
    l: &[f32],
    levels: usize,
    pixels: &Pixels,
    first: usize,
    lse: &[f32],
    g: &[f32],
) -> Vec<f32> {
    let mut out = vec![0.0_f32; l.len()];
    on_threads(
        g.len(),
        crate::available_threads(),
        &mut out,
        levels * pixels.dims,
        |range, out| {
            let samples = Samples {
                l,
                levels,
                pixels,
                first,
                range,
            };
            pulp::Arch::new().dispatch(Backward {
                samples,
                lse,
                g,
                out,
            });
        },
    );
    out
}

/// [`sample_backward`] over a range of samples, compiled for the CPU's vector width.
#[cfg(feature = "flex")]
struct Backward<'a> {
    samples: Samples<'a>,
    lse: &'a [f32],
    g: &'a [f32],
    out: &'a mut [f32],
}

#[cfg(feature = "flex")]
impl pulp::WithSimd for Backward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let dims = self.samples.pixels.dims;
        let size = self.samples.levels * dims;
        for (m, out) in self
            .samples
            .range
            .clone()
            .zip(self.out.chunks_exact_mut(size))
        {
            let (l, x) = self.samples.sample(m);
            sample_backward(l, x, &self.lse[m * dims..(m + 1) * dims], self.g[m], out);
        }
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Tensor, TensorData};

    use super::Pixels;

    /// What the backward step keeps: the logits on the plain device, the log-normalisers
    /// and the chunk's pixels.
    #[derive(Debug, Clone)]
    struct Saved {
        logits: Tensor<3>,
        lse: Vec<f32>,
        pixels: Pixels,
        first: usize,
    }

    #[derive(Debug)]
    struct CategoricalBackward;

    impl Backward<Flex, 1> for CategoricalBackward {
        type State = Saved;

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [parent] = ops.parents;
            let Some(parent) = parent else { return };
            let g = Tensor::<1>::from_primitive::<Flex>(grads.consume::<Flex>(&ops.node));
            let s = &ops.state;
            let dims = s.logits.dims();
            let logits = s
                .logits
                .clone()
                .try_into_primitive::<Flex>()
                .expect("saved on flex");
            let l = logits
                .as_slice::<f32>()
                .expect("saved contiguous f32 logits");
            let g: Vec<f32> = g
                .into_data()
                .try_into_vec::<f32>()
                .expect("an f32 gradient of the likelihood");
            let grad = super::backward(l, dims[1], &s.pixels, s.first, &s.lse, &g);
            let grad = Tensor::<3>::from_data(TensorData::new(grad, dims), &s.logits.device());
            grads.register::<Flex>(
                parent.id,
                grad.try_into_primitive::<Flex>().expect("made on flex"),
            );
        }
    }

    /// [`super::log_likelihood`] on flex or its autodiff form; `None` elsewhere (or for
    /// logits that are not contiguous f32 values, or with fewer than 256 levels).
    pub(super) fn log_likelihood(
        logits: &Tensor<3>,
        pixels: &Pixels,
        first: usize,
    ) -> Option<Tensor<1>> {
        let [m, levels, _] = logits.dims();
        if levels < 256 {
            return None;
        }
        let node = logits.clone().try_into_primitive::<Autodiff<Flex>>().ok();
        let plain = if node.is_some() {
            logits.clone().inner()
        } else {
            logits.clone()
        };
        let primitive = plain.clone().try_into_primitive::<Flex>().ok()?;
        let l = primitive.as_slice::<f32>()?;
        let (ll, lse) = super::forward(l, levels, pixels, first);
        let out = Tensor::<1>::from_data(TensorData::new(ll, [m]), &plain.device());
        let Some(node) = node else {
            return Some(out);
        };
        let out = out.try_into_primitive::<Flex>().ok()?;
        let node = match CategoricalBackward
            .prepare::<NoCheckpointing>([node.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // The chunk's pixels only: the state outlives this call.
                let rows: Vec<u8> = (first..first + m)
                    .flat_map(|s| pixels.row(s).iter().copied())
                    .collect();
                let saved = Saved {
                    logits: plain,
                    lse,
                    pixels: Pixels::new(rows, pixels.dims, 1),
                    first: 0,
                };
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        Some(Tensor::from_primitive::<Autodiff<Flex>>(node))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn exp_poly_is_within_two_tenths_of_a_millionth_of_exp() {
        let mut worst = 0.0_f64;
        for i in 0..=200_000 {
            let x = (-87.0 + 87.5 * f64::from(i) / 200_000.0) as f32;
            let want = f64::from(x).exp();
            worst = worst.max((f64::from(exp_poly(x)) - want).abs() / want);
        }
        assert!(worst <= 2e-7, "worst relative error {worst:e}");
        assert!(exp_poly(f32::NAN).is_nan());
        assert!(exp_poly(f32::NEG_INFINITY) > 0.0);
    }

    /// Logits `[m, 256, dims]` (normal, σ = 3) and pixels for samples `0..first + m`.
    fn case(
        device: &Device,
        [first, m]: [usize; 2],
        dims: usize,
        repeats: usize,
    ) -> (Tensor<3>, Pixels) {
        let logits = Tensor::<3>::random([m, 256, dims], Distribution::Normal(0.0, 3.0), device);
        let values = (0..(first + m).div_ceil(repeats) * dims)
            .map(|i| ((i * 97 + 13) % 256) as u8)
            .collect();
        (logits, Pixels::new(values, dims, repeats))
    }

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().expect("f32 values")
    }

    /// The formula in f64, sample by sample.
    fn reference(l: &[f32], dims: usize, pixels: &Pixels, first: usize) -> Vec<f64> {
        l.chunks_exact(256 * dims)
            .enumerate()
            .map(|(s, l)| {
                let x = pixels.row(first + s);
                (0..dims)
                    .map(|d| {
                        let col: Vec<f64> = (0..256).map(|c| f64::from(l[c * dims + d])).collect();
                        let max = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let lse = max + col.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                        col[usize::from(x[d])] - lse
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn log_likelihood_equals_the_formula_on_flex_and_on_burns_operations() {
        // flex takes the fused path, ndarray burn's operations; samples 2..7 of 3 images
        // used 3 times each.
        #[allow(deprecated)]
        let devices = [Device::flex(), Device::ndarray()];
        for device in devices {
            let (logits, pixels) = case(&device, [2, 5], 13, 3);
            let want = reference(&values(logits.clone()), 13, &pixels, 2);
            let got = log_likelihood(logits, &pixels, 2)
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (f64::from(*g) - w).abs() <= 1e-5 * w.abs(),
                    "{device:?}: {got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn fused_gradient_equals_burn_autodiff() {
        let (logits, pixels) = case(&Device::flex(), [0, 4], 10, 2);
        let weights = [0.5_f32, -1.0, 2.0, 0.25];
        // d(Σ_m w_m · ln p(x_m))/d logits on `device`'s autodiff form.
        let gradient = |device: Device| {
            let device = device.autodiff();
            let x = Tensor::<3>::from_data(logits.clone().into_data(), &device).require_grad();
            let w = Tensor::<1>::from_data(TensorData::new(weights.to_vec(), [4]), &device);
            let grads = (log_likelihood(x.clone(), &pixels, 0) * w).sum().backward();
            values(x.grad(&grads).expect("a gradient"))
        };
        let fused = gradient(Device::flex());
        #[allow(deprecated)]
        let burn = gradient(Device::ndarray());
        let scale = burn.iter().fold(0.0_f32, |a, v| a.max(v.abs()));
        assert!(scale > 0.1);
        for (f, b) in fused.iter().zip(&burn) {
            assert!((f - b).abs() <= 1e-5 * scale, "{f} vs {b}");
        }
    }

    #[test]
    fn fused_log_likelihood_does_not_depend_on_the_thread_count() {
        let (logits, pixels) = case(&Device::flex(), [0, 9], 11, 1);
        let l = values(logits);
        let run = |threads: usize| {
            let mut lse = vec![0.0_f32; 9 * 11];
            let parts = on_threads(9, threads, &mut lse, 11, |range, lse| {
                let mut sum = vec![0.0; 11];
                range
                    .zip(lse.chunks_exact_mut(11))
                    .map(|(m, lse)| {
                        sample_forward(&l[m * 256 * 11..][..256 * 11], pixels.row(m), lse, &mut sum)
                    })
                    .collect::<Vec<f32>>()
            });
            (parts.concat(), lse)
        };
        let one = run(1);
        assert_eq!(one.0.len(), 9);
        for threads in [2, 3, 16] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
    }

    #[test]
    fn a_nan_logit_gives_a_nan_likelihood() {
        let device = Device::flex();
        let (logits, pixels) = case(&device, [0, 2], 5, 1);
        let mut l = values(logits);
        l[256 * 5 + 3 * 5 + 1] = f32::NAN; // sample 1, level 3, value 1
        let logits = Tensor::<3>::from_data(TensorData::new(l, [2, 256, 5]), &device);
        let got = log_likelihood(logits, &pixels, 0)
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32");
        assert!(got[0].is_finite() && got[1].is_nan(), "{got:?}");
    }
}
