//! Mixed batches: test rows and reference rows evaluated together in `Batch` mode.

use burn::tensor::Tensor;

use crate::{NormError, StatsMode};

/// How a mixed batch was put together: rows `0..n_test` are test samples, the rest are
/// reference (in-distribution) samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixedBatch {
    /// Number of test rows (first in the batch).
    pub n_test: usize,
    /// Number of reference rows (after the test rows).
    pub n_reference: usize,
}

impl MixedBatch {
    /// Total batch size `b`.
    pub fn len(&self) -> usize {
        self.n_test + self.n_reference
    }

    /// Always false: a mixed batch has at least one test row.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Fraction of test rows, the paper's `r` (section 5).
    pub fn test_fraction(&self) -> f64 {
        self.n_test as f64 / self.len() as f64
    }
}

/// Concatenates `test` `[n_test, ...]` and `reference` `[n_ref, ...]` along dimension 0,
/// runs `model` on the combined batch once with [`StatsMode::Batch`] — so every BatchNorm
/// layer inside normalises with the statistics of the combined activations — and returns
/// the model's outputs for the test rows only (`[n_test, ...]`), with the composition.
///
/// `reference` may be `None` (a batch of test rows only, `r = 1`). The model must map a
/// batch of `b` rows to `b` output rows.
///
/// # Errors
/// [`NormError::InvalidMix`] if the total is below 2 rows, the row shapes differ, or the
/// model returns a different number of rows; any error of `model` itself.
pub fn mixed_batch<const D: usize, const O: usize, E>(
    test: Tensor<D>,
    reference: Option<Tensor<D>>,
    model: impl FnOnce(Tensor<D>, &StatsMode) -> Result<Tensor<O>, E>,
) -> Result<(Tensor<O>, MixedBatch), E>
where
    E: From<NormError>,
{
    let n_test = test.dims()[0];
    let (batch, n_reference) = match reference {
        Some(reference) => {
            let (t, r) = (test.dims(), reference.dims());
            if t[1..] != r[1..] {
                return Err(NormError::InvalidMix(format!(
                    "test rows have shape {:?} but reference rows have shape {:?}: each row must have the same shape",
                    &t[1..],
                    &r[1..]
                ))
                .into());
            }
            let n_reference = r[0];
            (Tensor::cat(vec![test, reference], 0), n_reference)
        }
        None => (test, 0),
    };
    let mix = MixedBatch {
        n_test,
        n_reference,
    };
    if n_test == 0 || mix.len() < 2 {
        return Err(NormError::InvalidMix(format!(
            "{n_test} test row(s) and {n_reference} reference row(s): a mixed batch needs at least one test row and 2 rows in all"
        ))
        .into());
    }
    let out = model(batch, &StatsMode::Batch)?;
    let rows = out.dims()[0];
    if rows != mix.len() {
        return Err(NormError::InvalidMix(format!(
            "the model returned {rows} rows for a batch of {}: it must return one row per input row",
            mix.len()
        ))
        .into());
    }
    Ok((out.narrow(0, 0, n_test), mix))
}
