//! The "rows" layout of the s/t networks on CPUs: 3×3 convolutions as matrix products
//! over zero-copy sliding windows, instead of burn's im2col convolution.
//!
//! An activation `[N, C, H, W]` is stored channels-last as `[groups, rows, C]`: the images
//! are split into equal groups of at most [`MAX_GROUP_ROWS`] rows (one matrix product
//! each), and every image is `(H + 1)·(W + 1)` rows — a padding row above it and a padding
//! column to its left, so that the padding row (column) of the next image (row) is also
//! the border below (to the right). Pixel `(i, j)` of image `k` of a group is row
//! `k·(H + 1)(W + 1) + (i + 1)(W + 1) + (j + 1)`.
//!
//! A 3×3 convolution reads, for output row `r`, the input rows `r + (kh − 1)(W + 1) +
//! (kw − 1)`. With `W + 2` guard rows of zeros before and after each group, the taps
//! `kw = 0, 1, 2` of kernel row `kh` are three *consecutive* rows: one `unfold` of the flat
//! group gives every window of `3·C` values as a strided view (no copy), and the
//! convolution is `Σ_kh windows[kh·(W + 1) ..] · W_kh`, `W_kh` the `[3·C, C_out]` slice of
//! the kernel. burn's own convolution copies every input value nine times (im2col) and
//! converts to channels-last and back around every layer.
//!
//! **Padding rows.** The convolutions need zeros on the padding rows of their *input*;
//! their output's padding rows hold garbage (finite: sums of neighbouring values). Every
//! convolution output in the s/t network goes through a channels-last BatchNorm
//! ([`normalise_chunks`]), which leaves padding rows out of its statistics and writes
//! exactly 0 there, so after the ReLU the next convolution's input is clean again, without
//! a masking pass. The final 1×1 convolution's padding rows are dropped.
//!
//! **One group at a time.** A BatchNorm needs the whole batch only for its statistics.
//! The network therefore holds its activations as a list of one-group chunks: each
//! BatchNorm first computes its statistics over all chunks ([`normalise_chunks`]), then
//! its map, the ReLU and the next convolution run on one group (≈ 200 KB) while it is
//! still in the core's cache — about twice as fast on these layers as passing whole
//! tensors from op to op.
//!
//! **Biases.** Every 3×3 convolution of the network is followed (directly or through the
//! residual sum) by a BatchNorm, so its bias is handed to that layer as an `offset`
//! instead of being added: with batch statistics it cancels exactly, with running
//! statistics it moves the shift. That saves a pass per convolution.
//!
//! The windows are views, whose gradient burn computes one window at a time: burn's
//! autodiff never sees this layout. Training differentiates it by hand
//! ([`super::backward`]): the input gradient of a 3×3 convolution is the convolution of the
//! output gradient with [`RowGrid::kernel3x3_transposed`], its weight gradient
//! [`RowGrid::conv3x3_weight_grad`].

use std::ops::Range;

use bnood_norm::{BatchNorm, NormError};
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::batch_norm::{ChannelsLastAffine, NormStats, Statistics, ValidRows, normalise_chunks};

/// Most rows per group. The images are split into groups of at most this many rows, one
/// matrix product and one cache-resident chunk per group: gemm slows down more than twofold
/// on the skinny `[rows, 3·C] × [3·C, C_out]` products once they grow past a few thousand
/// rows (measured with burn-flex 0.22 on a 2-core AVX-512 machine: 8 groups of 6,728 rows
/// took 22 ms for the three products of one 28×28 layer, 32 groups of 1,682 rows 7.9 ms),
/// and a group of 32 channels stays within a core's L2 cache.
const MAX_GROUP_ROWS: usize = 2048;

/// Shares of the image groups of one forward pass (see [`RowGrid::shares`]), run by up to
/// as many threads. Fixed rather than one per core, so that scores do not depend on the
/// machine: BatchNorm sums are taken per share and the shares' sums added in share order.
/// Changing it changes the last bits of scores.
const SHARES: usize = 2;

/// Geometry of one batch in the rows layout.
#[derive(Debug, Clone)]
pub(crate) struct RowGrid {
    n: usize,
    h: usize,
    w: usize,
    groups: usize,
    /// Which of an image's `(H + 1)(W + 1)` rows are pixels.
    valid: ValidRows,
}

impl RowGrid {
    /// The layout of `n` images of `h × w`.
    pub(crate) fn new(n: usize, h: usize, w: usize, device: &Device) -> Self {
        let per_image = (h + 1) * (w + 1);
        // The largest whole number of images per group within MAX_GROUP_ROWS (at least 1).
        let per_group = (1..=n)
            .rev()
            .find(|k| n.is_multiple_of(*k) && k * per_image <= MAX_GROUP_ROWS)
            .unwrap_or(1);
        let valid: Vec<bool> = (0..per_image)
            .map(|r| r / (w + 1) > 0 && r % (w + 1) > 0)
            .collect();
        Self {
            n,
            h,
            w,
            groups: n / per_group,
            valid: ValidRows::new(&valid, device),
        }
    }

    /// The image groups of each share of a forward pass: [`SHARES`] ranges as equal as
    /// possible, or one when there is a single group. burn-flex runs element-wise operations
    /// on one thread; the groups never interact except through BatchNorm statistics, so
    /// giving the shares to threads of their own puts several cores to work on everything.
    pub(crate) fn shares(&self) -> Vec<Range<usize>> {
        let shares = SHARES.min(self.groups);
        (0..shares)
            .map(|s| s * self.groups / shares..(s + 1) * self.groups / shares)
            .collect()
    }

    /// Images in the whole batch.
    pub(crate) fn images(&self) -> usize {
        self.n
    }

    /// Rows per group (pixels and padding).
    fn rows(&self) -> usize {
        self.n / self.groups * (self.h + 1) * (self.w + 1)
    }

    /// `[N, C, H, W]` → `[groups, rows, C]` with zero padding rows.
    #[allow(clippy::wrong_self_convention)] // converts a tensor into this layout
    pub(crate) fn to_rows(&self, x: Tensor<4>) -> Tensor<3> {
        let c = x.dims()[1];
        let device = x.device();
        let zeros = |dims: [usize; 4]| Tensor::<4>::zeros(dims, &device);
        let x = x.permute([0, 2, 3, 1]);
        let (n, h, w) = (self.n, self.h, self.w);
        let x = Tensor::cat(vec![zeros([n, h, 1, c]), x], 2);
        Tensor::cat(vec![zeros([n, 1, w + 1, c]), x], 1).reshape([self.groups, self.rows(), c])
    }

    /// `[groups, rows, C]` → `[N, C, H, W]` (padding rows dropped).
    pub(crate) fn to_nchw(&self, x: Tensor<3>) -> Tensor<4> {
        let c = x.dims()[2];
        let (h, w) = (self.h, self.w);
        x.reshape([self.n, h + 1, w + 1, c])
            .slice([0..self.n, 1..h + 1, 1..w + 1, 0..c])
            .permute([0, 3, 1, 2])
    }

    /// Which of an image's `(H + 1)(W + 1)` rows are pixels.
    pub(crate) fn valid(&self) -> &ValidRows {
        &self.valid
    }

    /// The statistics step of `norm` on `x + offset`, `x` given as one-group chunks
    /// `[1, rows, C]` (all groups or one thread's shares of them), statistics over the
    /// pixel rows only. Returns the chunks (as `[images, P, C]` blocks) to pass through
    /// [`activate`](Self::activate) with the returned map, one at a time.
    pub(crate) fn batch_norm_chunks(
        &self,
        norm: &BatchNorm,
        chunks: Vec<Tensor<3>>,
        offset: Option<Tensor<1>>,
        stats: &Statistics<'_>,
    ) -> Result<(Vec<Tensor<3>>, ChannelsLastAffine, NormStats), NormError> {
        let p = self.valid.rows();
        let blocks: Vec<Tensor<3>> = chunks
            .into_iter()
            .map(|x| {
                let [groups, rows, c] = x.dims();
                x.reshape([groups * rows / p, p, c])
            })
            .collect();
        let (map, norm_stats) = normalise_chunks(norm, &blocks, offset, stats)?;
        Ok((blocks, map, norm_stats))
    }

    /// `ReLU(map(x))` for a chunk from [`batch_norm_chunks`](Self::batch_norm_chunks), back
    /// as groups in the *guarded* form `[groups, guard + rows + guard, C]` (padding and guard
    /// rows 0): what [`conv3x3`](Self::conv3x3) and
    /// [`conv3x3_weight_grad`](Self::conv3x3_weight_grad) read, without a copy into a
    /// guarded buffer (such copies took 2–4 % of a step). [`interior`](Self::interior) gives the
    /// groups themselves.
    pub(crate) fn activate(&self, map: &ChannelsLastAffine, x: Tensor<3>) -> Tensor<3> {
        map.activate_guarded(x, self.rows(), self.guard())
    }

    /// Zero rows before and after each group in the guarded form: one image row and one
    /// more, so that every 3×3 window of the group lies inside.
    fn guard(&self) -> usize {
        self.w + 2
    }

    /// `x` `[groups, rows, C]` in the guarded form `[groups, rows + 2·guard, C]`; unchanged
    /// when it is guarded already.
    fn guarded(&self, x: Tensor<3>) -> Tensor<3> {
        let [groups, rows, c] = x.dims();
        let guard = self.guard();
        if rows == self.rows() + 2 * guard {
            return x;
        }
        let zeros = Tensor::<3>::zeros([groups, guard, c], &x.device());
        Tensor::cat(vec![zeros.clone(), x, zeros], 1)
    }

    /// The groups `[groups, rows, C]` of `x` in either form (a view of a guarded one).
    pub(crate) fn interior(&self, x: Tensor<3>) -> Tensor<3> {
        let guard = self.guard();
        match x.dims()[1] == self.rows() + 2 * guard {
            true => x.narrow(1, guard, self.rows()),
            false => x,
        }
    }

    /// `conv`'s weights as matrices for [`conv3x3`](Self::conv3x3): prepared once per layer
    /// and used for every group (rearranging them per group cost ≈ 7 % of scoring time).
    pub(crate) fn kernel3x3(&self, conv: &Conv2d) -> Kernel3x3 {
        self.kernel3x3_of(conv.weight.val(), conv.bias.as_ref().map(|b| b.val()))
    }

    /// The kernel of [`conv3x3`](Self::conv3x3)'s input gradient for `conv`: the
    /// convolution's transpose, which for a "same" 3×3 convolution is the convolution with
    /// the kernel flipped in both spatial directions and its channel axes swapped
    /// (`W'[c, o, i, j] = W[o, c, 2 − i, 2 − j]`), without a bias.
    pub(crate) fn kernel3x3_transposed(&self, conv: &Conv2d) -> Kernel3x3 {
        self.kernel3x3_of(conv.weight.val().flip([2, 3]).swap_dims(0, 1), None)
    }

    /// [`kernel3x3`](Self::kernel3x3) of a weight `[C_out, C, 3, 3]` and bias `[C_out]`.
    fn kernel3x3_of(&self, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Kernel3x3 {
        let [c_out, c, kh, kw] = weight.dims();
        debug_assert_eq!([kh, kw], [3, 3], "a 3×3 kernel");
        // [C_out, C, kh, kw] → [kh, (kw, C), C_out]: one [3·C, C_out] matrix per kernel row.
        let taps = weight.permute([2, 3, 1, 0]).reshape([3, 3 * c, c_out]);
        let tap = |k: usize| taps.clone().narrow(0, k, 1).reshape([1, 3 * c, c_out]);
        let row = self.w + 1;
        let spanning = 3 * c < c_out && self.w >= 2;
        let matrices = if spanning {
            // Few input channels (the network's first layer): the products would be
            // dominated by writing three outputs, so take one window spanning all three
            // kernel rows, `(2(W + 1) + 3)·C` values, against a kernel matrix that is zero
            // between the taps.
            let gap = Tensor::<3>::zeros([1, (row - 3) * c, c_out], &taps.device());
            vec![Tensor::cat(
                vec![tap(0), gap.clone(), tap(1), gap, tap(2)],
                1,
            )]
        } else {
            (0..3).map(tap).collect()
        };
        Kernel3x3 {
            matrices,
            spanning,
            channels: c,
            bias,
        }
    }

    /// The gradient of a 3×3 convolution's weight from its input `x` `[groups, rows, C]`
    /// (padding rows 0, as [`conv3x3`](Self::conv3x3) read it) and the gradient `g`
    /// `[groups, rows, C_out]` of its output (0 on padding rows), summed over the groups, in
    /// the products' own layout `[kh, C_out, (kw, C)]` flattened (turn it into the weight's
    /// with [`weight_from_taps`](Self::weight_from_taps) once all partials are added): per
    /// kernel row, `g` transposed times the windows of `x`, `[C_out, rows] × [rows, 3·C]`.
    pub(crate) fn conv3x3_weight_grad(&self, x: Tensor<3>, g: Tensor<3>) -> Tensor<1> {
        let padded = self.guarded(x);
        let [groups, _, c] = padded.dims();
        let (rows, c_out) = (self.rows(), g.dims()[2]);
        let row = self.w + 1;
        let flat = padded.reshape([groups, (rows + 2 * self.guard()) * c]);
        #[cfg(feature = "flex")]
        if let Some(taps) = flex::conv3x3_weight_grad_rows(&flat, &g, rows, row) {
            return taps;
        }
        let windows: Tensor<3> = flat.unfold(1, 3 * c, c);
        let g_t = g.swap_dims(1, 2); // [groups, C_out, rows]
        let taps: Vec<Tensor<3>> = (0..3)
            .map(|k| {
                g_t.clone()
                    .matmul(windows.clone().narrow(1, k * row, rows))
                    .sum_dim(0)
            })
            .collect();
        Tensor::cat(taps, 0).reshape([9 * c_out * c])
    }

    /// A 3×3 weight `[C_out, C, 3, 3]` from the layout of
    /// [`conv3x3_weight_grad`](Self::conv3x3_weight_grad).
    pub(crate) fn weight_from_taps(taps: Tensor<1>, c_out: usize, c: usize) -> Tensor<4> {
        // [kh, C_out, kw, C] → [C_out, C, kh, kw].
        taps.reshape([3, c_out, 3, c]).permute([1, 3, 0, 2])
    }

    /// The gradient of a 1×1 convolution's weight `[C_out, C, 1, 1]` from its input `x`
    /// `[groups, rows, C]` and output gradient `g` `[groups, rows, C_out]`, summed over the
    /// groups.
    pub(crate) fn conv1x1_weight_grad(x: Tensor<3>, g: Tensor<3>) -> Tensor<4> {
        let (c, c_out) = (x.dims()[2], g.dims()[2]);
        g.swap_dims(1, 2)
            .matmul(x)
            .sum_dim(0)
            .reshape([c_out, c, 1, 1])
    }

    /// A 3×3 "same" convolution (stride 1, padding 1) of `x` `[groups, rows, C]`, whose
    /// padding rows must be 0, without its bias (see [`Kernel3x3::bias`]); garbage on the
    /// output's padding rows.
    pub(crate) fn conv3x3(&self, x: Tensor<3>, kernel: &Kernel3x3) -> Tensor<3> {
        let padded = self.guarded(x);
        let [groups, _, c] = padded.dims();
        debug_assert_eq!(c, kernel.channels, "the kernel's input channels");
        let rows = self.rows();
        let row = self.w + 1;
        let flat = padded.reshape([groups, (rows + 2 * self.guard()) * c]);
        if kernel.spanning {
            let windows: Tensor<3> = flat.unfold(1, (2 * row + 3) * c, c);
            windows
                .narrow(1, 0, rows)
                .matmul(kernel.matrices[0].clone())
        } else {
            #[cfg(feature = "flex")]
            if let Some(out) = flex::conv3x3_rows(&flat, kernel, rows, row) {
                return out;
            }
            let windows: Tensor<3> = flat.unfold(1, 3 * c, c);
            kernel
                .matrices
                .iter()
                .enumerate()
                .map(|(k, m)| windows.clone().narrow(1, k * row, rows).matmul(m.clone()))
                .reduce(|sum, product| sum + product)
                .expect("three kernel rows")
        }
    }

    /// `conv`'s (1×1) weights as a `[1, C_in, C_out]` matrix, and its bias, for
    /// [`conv1x1`](Self::conv1x1).
    pub(crate) fn kernel1x1(conv: &Conv2d) -> (Tensor<3>, Option<Tensor<1>>) {
        let weight = conv.weight.val();
        let [c_out, c_in, _, _] = weight.dims();
        let matrix = weight
            .reshape([c_out, c_in])
            .transpose()
            .reshape([1, c_in, c_out]);
        (matrix, conv.bias.as_ref().map(|b| b.val()))
    }

    /// A 1×1 convolution of `x` `[groups, rows, C]` with a kernel from
    /// [`kernel1x1`](Self::kernel1x1), bias included.
    pub(crate) fn conv1x1(x: Tensor<3>, kernel: &(Tensor<3>, Option<Tensor<1>>)) -> Tensor<3> {
        let (matrix, bias) = kernel;
        let c_out = matrix.dims()[2];
        let out = x.matmul(matrix.clone());
        match bias {
            Some(bias) => out + bias.clone().reshape([1, 1, c_out]),
            None => out,
        }
    }
}

/// The flex backend's buffers under the convolutions: gemm called directly.
///
/// One of the workspace's two `unsafe` modules (the other is `allocator.rs`'s `mallopt`; the
/// workspace denies `unsafe` everywhere else). `gemm::gemm`
/// is an `unsafe fn` over raw pointers and strides, the call burn-flex itself makes for every
/// matrix product; here it also *adds* into its destination, which burn's tensor API cannot
/// ask for. Measured on a 2-core AMD EPYC machine (criterion, 2 threads): training step
/// 102 → 115 samples/s, mixed scoring +9–12 %, running scoring +15 %. Each call's extents are
/// checked against the buffers' lengths before it (falling back to burn's products when
/// anything differs), and the results are pinned by `conv3x3_in_rows_equals_burn_conv2d`
/// and the gradient-equality tests of `backward.rs`.
#[cfg(feature = "flex")]
#[allow(unsafe_code)]
mod flex {
    use burn::backend::Flex;
    use burn::tensor::{Tensor, TensorData};

    use super::Kernel3x3;

    /// `dst ← [dst +] lhs · rhs` for `[m, n] = [m, k] · [k, n]` (`dims = [m, n, k]`), the
    /// destination `(pointer, row stride)` with unit column stride, each operand
    /// `(pointer, column stride, row stride)`; `accumulate` adds to what `dst` holds. One
    /// thread (the callers run on share threads already).
    ///
    /// # Safety
    /// Every element the strides address lies inside its buffer, and `dst` is initialised
    /// when `accumulate` is set (gemm reads it then, not otherwise).
    unsafe fn gemm_add(
        [m, n, k]: [usize; 3],
        (dst, dst_rs): (*mut f32, usize),
        accumulate: bool,
        (lhs, lhs_cs, lhs_rs): (*const f32, usize, usize),
        (rhs, rhs_cs, rhs_rs): (*const f32, usize, usize),
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst,
                1,
                dst_rs as isize,
                accumulate,
                lhs,
                lhs_cs as isize,
                lhs_rs as isize,
                rhs,
                rhs_cs as isize,
                rhs_rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }

    /// [`RowGrid::conv3x3`](super::RowGrid::conv3x3) with three kernel-row matrices on
    /// flex: per group, the three products `windows_kh · W_kh` are added into one output by
    /// gemm itself (it reads and adds to its destination), instead of three products, each
    /// into a fresh tensor, and two additions. `padded` is `[groups, (rows + 2·guard)·C]`,
    /// the group's rows between `guard = W + 2` zero rows, `row = W + 1`. `None` when the
    /// tensors are not contiguous f32 flex tensors (then burn's products run).
    pub(super) fn conv3x3_rows(
        padded: &Tensor<2>,
        kernel: &Kernel3x3,
        rows: usize,
        row: usize,
    ) -> Option<Tensor<3>> {
        let device = padded.device();
        let [groups, len] = padded.dims();
        let x = padded.clone().try_into_primitive::<Flex>().ok()?;
        let x: &[f32] = x.as_slice()?;
        let c = kernel.channels;
        let matrices = kernel
            .matrices
            .iter()
            .map(|m| m.clone().try_into_primitive::<Flex>().ok())
            .collect::<Option<Vec<_>>>()?;
        let slices = matrices
            .iter()
            .map(|m| m.as_slice::<f32>())
            .collect::<Option<Vec<_>>>()?;
        let c_out = kernel.matrices[0].dims()[2];
        // The extents every call below reads and writes within (see the SAFETY notes).
        if groups == 0
            || slices.len() != 3
            || slices.iter().any(|m| m.len() != 3 * c * c_out)
            || len != (rows + 2 * (row + 1)) * c
            || x.len() != groups * len
        {
            return None;
        }
        let mut out: Vec<f32> = Vec::with_capacity(groups * rows * c_out);
        let dst = out.as_mut_ptr();
        for g in 0..groups {
            for (k, m) in slices.iter().enumerate() {
                let lhs = &x[g * len + k * row * c..];
                debug_assert!(lhs.len() >= (rows - 1) * c + 3 * c);
                // SAFETY: the window matrix `[rows, 3·C]` (row stride C) lies inside the
                // group's padded rows (checked above: `len = (rows + 2·guard)·C` and
                // `k·row + rows + 2 ≤ rows + 2·guard`); `m` is `[3·C, C_out]` contiguous;
                // the destination block `[rows, C_out]` of group `g` lies inside `out`'s
                // capacity, and the first product writes it before the others read it.
                unsafe {
                    gemm_add(
                        [rows, c_out, 3 * c],
                        (dst.add(g * rows * c_out), c_out),
                        k > 0,
                        (lhs.as_ptr(), 1, c),
                        (m.as_ptr(), 1, c_out),
                    );
                }
            }
        }
        // SAFETY: every element was written by the first product of its group.
        unsafe { out.set_len(groups * rows * c_out) };
        Some(Tensor::from_data(
            TensorData::new(out, [groups, rows, c_out]),
            &device,
        ))
    }

    /// [`RowGrid::conv3x3_weight_grad`](super::RowGrid::conv3x3_weight_grad) on flex: per
    /// kernel row, `Σ_groups gᵀ · windows` accumulated by gemm in its destination, instead
    /// of one product per group and a sum. `padded` as for [`conv3x3_rows`]; `g`
    /// `[groups, rows, C_out]`. `None` when the tensors are not contiguous f32 flex tensors.
    pub(super) fn conv3x3_weight_grad_rows(
        padded: &Tensor<2>,
        g: &Tensor<3>,
        rows: usize,
        row: usize,
    ) -> Option<Tensor<1>> {
        let device = padded.device();
        let [groups, len] = padded.dims();
        let c_out = g.dims()[2];
        let c = len / (rows + 2 * (row + 1));
        let x = padded.clone().try_into_primitive::<Flex>().ok()?;
        let x: &[f32] = x.as_slice()?;
        let g = g.clone().try_into_primitive::<Flex>().ok()?;
        let g: &[f32] = g.as_slice()?;
        // The extents every call below reads and writes within (see the SAFETY notes).
        if groups == 0
            || len != (rows + 2 * (row + 1)) * c
            || x.len() != groups * len
            || g.len() != groups * rows * c_out
        {
            return None;
        }
        // [kh, C_out, (kw, C)], every element written by the first group's product.
        let mut out: Vec<f32> = Vec::with_capacity(9 * c_out * c);
        let dst = out.as_mut_ptr();
        for k in 0..3 {
            for b in 0..groups {
                let lhs = &g[b * rows * c_out..];
                let rhs = &x[b * len + k * row * c..];
                // SAFETY: `gᵀ` of group `b` is `[C_out, rows]` with row stride 1 and column
                // stride C_out inside `g`; the windows `[rows, 3·C]` (row stride C) lie in
                // the group's padded rows (as in `conv3x3_rows`); the destination block
                // `[C_out, 3·C]` of kernel row `k` lies in `out`'s capacity and is written
                // by group 0 before later groups add to it.
                unsafe {
                    gemm_add(
                        [c_out, 3 * c, rows],
                        (dst.add(k * c_out * 3 * c), 3 * c),
                        b > 0,
                        (lhs.as_ptr(), c_out, 1),
                        (rhs.as_ptr(), 1, c),
                    );
                }
            }
        }
        // SAFETY: see above.
        unsafe { out.set_len(9 * c_out * c) };
        Some(Tensor::from_data(
            TensorData::new(out, [9 * c_out * c]),
            &device,
        ))
    }
}

/// A 3×3 convolution's weights prepared by [`RowGrid::kernel3x3`].
pub(crate) struct Kernel3x3 {
    /// One `[1, 3·C, C_out]` matrix per kernel row, or one spanning matrix.
    matrices: Vec<Tensor<3>>,
    /// Whether `matrices` is the one spanning matrix.
    spanning: bool,
    /// Input channels `C`.
    channels: usize,
    bias: Option<Tensor<1>>,
}

impl Kernel3x3 {
    /// The convolution's bias `[C_out]`, left to the next BatchNorm.
    pub(crate) fn bias(&self) -> Option<Tensor<1>> {
        self.bias.clone()
    }
}

/// `a + b` for optional per-channel offsets.
pub(crate) fn add_offsets(a: Option<Tensor<1>>, b: Option<Tensor<1>>) -> Option<Tensor<1>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    //! A convolution in the rows layout against burn's `conv2d`.

    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Device;

    use super::RowGrid;
    use crate::realnvp::cpu::tests::{host, uniform};

    #[test]
    fn conv3x3_in_rows_equals_burn_conv2d() {
        let device = Device::flex();
        // 3·C ≥ C_out: three windows; 3·C < C_out: one window over all kernel rows.
        for (n, c, h, w) in [(6, 3, 5, 4), (7, 8, 6, 6), (1, 2, 3, 3), (4, 1, 6, 5)] {
            let conv = Conv2dConfig::new([c, 9], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&device);
            let x = uniform([n, c, h, w], -2.0..2.0, n as u64, &device);
            let expected = host(conv.forward(x.clone()));
            let grid = RowGrid::new(n, h, w, &device);
            let kernel = grid.kernel3x3(&conv);
            let out = grid.conv3x3(grid.to_rows(x), &kernel);
            let bias = kernel.bias().expect("a bias").reshape([1, 1, 9]);
            let got = host(grid.to_nchw(out + bias));
            for (a, b) in got.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-5, "[{n}, {c}, {h}, {w}]: {a} vs {b}");
            }
        }
    }
}
