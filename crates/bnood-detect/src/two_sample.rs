//! Classical two-sample statistics, the baselines of the window test ([`crate::WindowTest`])
//! as drift detectors (alibi-detect's `KSDrift`, `MMDDrift`) use them: the
//! Kolmogorov–Smirnov statistic with its asymptotic p-value, and the unbiased kernel maximum
//! mean discrepancy with a Gaussian kernel whose bandwidth comes from the median heuristic.

use crate::{DetectError, Result};

/// The two-sample Kolmogorov–Smirnov statistic `D = sup_t |F_a(t) − F_b(t)|`, with `F_a`,
/// `F_b` the empirical distribution functions of `a` and `b` (ties handled: both functions
/// are evaluated at every distinct value, after all equal values are counted).
///
/// # Errors
/// [`DetectError::EmptySet`] if a sample is empty; [`DetectError::InvalidParameter`] for a
/// NaN.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> Result<f64> {
    let (a, b) = (sorted_sample("a", a)?, sorted_sample("b", b)?);
    Ok(ks_statistic_sorted(&a, &b))
}

/// [`ks_statistic`] of two samples already sorted ascending, without NaN.
pub(crate) fn ks_statistic_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let t = a[i].min(b[j]);
        while i < a.len() && a[i] <= t {
            i += 1;
        }
        while j < b.len() && b[j] <= t {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    // Past the end of one sample the other's remaining steps only shrink the gap.
    d
}

/// The asymptotic p-value of a two-sample KS statistic `d` between samples of sizes `n` and
/// `m`: `Q_KS(λ)` with `λ = (√nₑ + 0.12 + 0.11/√nₑ)·d`, `nₑ = n·m/(n + m)` (Stephens'
/// small-sample correction, as in *Numerical Recipes* §14.3), where
/// `Q_KS(λ) = 2 Σ_{k≥1} (−1)^{k−1} e^{−2k²λ²}` is the Kolmogorov survival function
/// (`scipy.special.kolmogorov`). Clamped to `[0, 1]`.
///
/// # Errors
/// [`DetectError::InvalidParameter`] for `d` outside `[0, 1]` or an empty sample size.
pub fn ks_p_value(d: f64, n: usize, m: usize) -> Result<f64> {
    if !(0.0..=1.0).contains(&d) {
        return Err(DetectError::InvalidParameter(format!(
            "KS statistic {d} must lie in [0, 1]"
        )));
    }
    if n == 0 || m == 0 {
        return Err(DetectError::InvalidParameter(format!(
            "KS sample sizes {n} and {m} must both be at least 1"
        )));
    }
    let ne = (n * m) as f64 / (n + m) as f64;
    let lambda = (ne.sqrt() + 0.12 + 0.11 / ne.sqrt()) * d;
    Ok(kolmogorov_survival(lambda).clamp(0.0, 1.0))
}

/// `Q_KS(λ) = P(K > λ)` of the Kolmogorov distribution.
pub(crate) fn kolmogorov_survival(lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return 1.0;
    }
    if lambda < 1.18 {
        // The alternating series converges slowly here; use the Jacobi-theta form
        // P(K ≤ λ) = √(2π)/λ · Σ_{k≥1} e^{−(2k−1)²π²/(8λ²)}.
        let c = -std::f64::consts::PI.powi(2) / (8.0 * lambda * lambda);
        let cdf: f64 = (1..=20)
            .map(|k| ((2 * k - 1) as f64).powi(2) * c)
            .map(f64::exp)
            .sum::<f64>()
            * (2.0 * std::f64::consts::PI).sqrt()
            / lambda;
        1.0 - cdf
    } else {
        let c = -2.0 * lambda * lambda;
        2.0 * (1..=100)
            .map(|k| {
                let sign = if k % 2 == 1 { 1.0 } else { -1.0 };
                sign * ((k * k) as f64 * c).exp()
            })
            .sum::<f64>()
    }
}

/// A Gaussian kernel `k(x, y) = exp(−‖x − y‖² / (2σ²))` on flattened images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianKernel {
    sigma_sq: f64,
}

impl GaussianKernel {
    /// A kernel of bandwidth `σ` (`σ > 0`, finite).
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] otherwise.
    pub fn new(sigma: f64) -> Result<Self> {
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(DetectError::InvalidParameter(format!(
                "kernel bandwidth σ = {sigma} must be positive and finite"
            )));
        }
        Ok(Self {
            sigma_sq: sigma * sigma,
        })
    }

    /// The median heuristic (alibi-detect's `sigma_median`): `σ² = median(‖xᵢ − xⱼ‖²) / 2`
    /// over all pairs `i < j` of the rows of `rows` (`dims` values each), so that
    /// `k = exp(−d² / median(d²))`. The median of an even number of pairs is the mean of the
    /// two middle values.
    ///
    /// # Errors
    /// [`DetectError::EmptySet`] for fewer than 2 rows; [`DetectError::InvalidParameter`]
    /// when `rows` is not a whole number of rows or all rows are equal (no positive
    /// distance).
    pub fn median_heuristic(rows: &[f32], dims: usize) -> Result<Self> {
        let n = row_count(rows, dims)?;
        if n < 2 {
            return Err(DetectError::EmptySet(format!(
                "the median heuristic needs at least 2 rows, got {n}"
            )));
        }
        let mut d2: Vec<f64> = Vec::with_capacity(n * (n - 1) / 2);
        for i in 0..n {
            for j in i + 1..n {
                d2.push(squared_distance(row(rows, dims, i), row(rows, dims, j)));
            }
        }
        d2.sort_by(f64::total_cmp);
        let k = d2.len();
        let median = if k % 2 == 1 {
            d2[k / 2]
        } else {
            0.5 * (d2[k / 2 - 1] + d2[k / 2])
        };
        if median <= 0.0 {
            return Err(DetectError::InvalidParameter(
                "the median squared distance between the reference rows is 0 (at least half of the pairs are identical): the median heuristic needs varied reference images".into(),
            ));
        }
        Self::new((median / 2.0).sqrt())
    }

    /// The bandwidth `σ`.
    pub fn sigma(&self) -> f64 {
        self.sigma_sq.sqrt()
    }

    /// `k(x, y)`.
    pub fn eval(&self, x: &[f32], y: &[f32]) -> f64 {
        self.of_squared_distance(squared_distance(x, y))
    }

    fn of_squared_distance(&self, d2: f64) -> f64 {
        (-d2 / (2.0 * self.sigma_sq)).exp()
    }
}

/// The unbiased estimate of the squared maximum mean discrepancy between samples `x` (`m`
/// rows) and `y` (`n` rows) of `dims` values each (Gretton et al., JMLR 2012, eq. 3):
///
/// `MMD²ᵤ = 1/(m(m−1)) Σ_{i≠j} k(xᵢ,xⱼ) + 1/(n(n−1)) Σ_{i≠j} k(yᵢ,yⱼ) − 2/(mn) Σ_{i,j} k(xᵢ,yⱼ)`.
///
/// It can be negative when the samples are alike.
///
/// # Errors
/// [`DetectError::EmptySet`] for a sample of fewer than 2 rows;
/// [`DetectError::InvalidParameter`] when a slice is not a whole number of rows.
pub fn mmd2_unbiased(x: &[f32], y: &[f32], dims: usize, kernel: &GaussianKernel) -> Result<f64> {
    MmdReference::new(y.to_vec(), dims, *kernel)?.mmd2(x)
}

/// A fixed comparison sample `y` for [`mmd2_unbiased`], with its within-sample term
/// computed once (the window test compares many windows with one reference sample).
#[derive(Debug, Clone)]
pub(crate) struct MmdReference {
    rows: Vec<f32>,
    dims: usize,
    n: usize,
    kernel: GaussianKernel,
    /// `1/(n(n−1)) Σ_{i≠j} k(yᵢ,yⱼ)`.
    within: f64,
}

impl MmdReference {
    pub(crate) fn new(rows: Vec<f32>, dims: usize, kernel: GaussianKernel) -> Result<Self> {
        let n = row_count(&rows, dims)?;
        if n < 2 {
            return Err(DetectError::EmptySet(format!(
                "the MMD needs at least 2 comparison rows, got {n}"
            )));
        }
        let within = mean_off_diagonal(&rows, dims, n, &kernel);
        Ok(Self {
            rows,
            dims,
            n,
            kernel,
            within,
        })
    }

    pub(crate) fn kernel(&self) -> &GaussianKernel {
        &self.kernel
    }

    /// `MMD²ᵤ(x, y)` for the window rows `x`.
    pub(crate) fn mmd2(&self, x: &[f32]) -> Result<f64> {
        let m = row_count(x, self.dims)?;
        if m < 2 {
            return Err(DetectError::EmptySet(format!(
                "the MMD needs at least 2 rows per sample, got {m}"
            )));
        }
        let xx = mean_off_diagonal(x, self.dims, m, &self.kernel);
        let mut cross = 0.0;
        for i in 0..m {
            let xi = row(x, self.dims, i);
            for j in 0..self.n {
                cross += self.kernel.eval(xi, row(&self.rows, self.dims, j));
            }
        }
        Ok(xx + self.within - 2.0 * cross / (m * self.n) as f64)
    }
}

/// `1/(n(n−1)) Σ_{i≠j} k(rᵢ, rⱼ)`.
fn mean_off_diagonal(rows: &[f32], dims: usize, n: usize, kernel: &GaussianKernel) -> f64 {
    let mut sum = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            sum += kernel.eval(row(rows, dims, i), row(rows, dims, j));
        }
    }
    2.0 * sum / (n * (n - 1)) as f64
}

fn row(rows: &[f32], dims: usize, i: usize) -> &[f32] {
    &rows[i * dims..(i + 1) * dims]
}

fn row_count(rows: &[f32], dims: usize) -> Result<usize> {
    if dims == 0 || !rows.len().is_multiple_of(dims) {
        return Err(DetectError::InvalidParameter(format!(
            "{} values are not a whole number of rows of {dims} values",
            rows.len()
        )));
    }
    Ok(rows.len() / dims)
}

/// `‖x − y‖²`, accumulated in eight f32 lanes (so the compiler can vectorise it) and summed
/// in f64.
fn squared_distance(x: &[f32], y: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for k in 0..8 {
            let d = a[k] - b[k];
            lanes[k] += d * d;
        }
    }
    let tail: f64 = xr
        .iter()
        .zip(yr)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    lanes.iter().map(|&v| f64::from(v)).sum::<f64>() + tail
}

/// `values` sorted ascending, refusing an empty sample or a NaN.
pub(crate) fn sorted_sample(name: &str, values: &[f64]) -> Result<Vec<f64>> {
    if values.is_empty() {
        return Err(DetectError::EmptySet(format!(
            "KS sample `{name}` is empty"
        )));
    }
    if values.iter().any(|v| v.is_nan()) {
        return Err(DetectError::InvalidParameter(format!(
            "KS sample `{name}` holds a NaN"
        )));
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_statistic_is_the_largest_gap_between_empirical_distribution_functions() {
        // F_a − F_b at 1, 2, 2.5, 3, 4: 1/3, 2/3, 1/6, 1/2, 0.
        let d = ks_statistic(&[3.0, 1.0, 2.0], &[4.0, 2.5]).expect("valid samples");
        assert!((d - 2.0 / 3.0).abs() < 1e-12, "{d}");
    }

    #[test]
    fn ks_statistic_counts_tied_values_in_both_samples_before_comparing() {
        // At t = 2 both functions include the 2: F_a = 1, F_b = 1/2 (not 1 − 0).
        let d = ks_statistic(&[1.0, 2.0], &[2.0, 3.0]).expect("valid samples");
        assert!((d - 0.5).abs() < 1e-12, "{d}");
        assert_eq!(ks_statistic(&[1.0, 2.0], &[2.0, 1.0]).expect("valid"), 0.0);
    }

    #[test]
    fn kolmogorov_survival_matches_the_alternating_series() {
        // Golden values (what scipy.special.kolmogorov gives), from Python floats:
        //   q = lambda l: 2 * sum((-1)**(k - 1) * math.exp(-2 * k * k * l * l) for k in range(1, 200))
        // Both branches of `kolmogorov_survival` are covered (λ < 1.18 and λ ≥ 1.18).
        for (lambda, q) in [
            (0.5, 0.963_945_243_664_875_1),
            (1.0, 0.269_999_671_677_354_56),
            (1.36, 0.049_485_876_755_377_876),
            (2.0, 0.000_670_925_255_779_695_3),
        ] {
            let got = kolmogorov_survival(lambda);
            assert!((got - q).abs() < 1e-9, "Q({lambda}) = {got}, scipy {q}");
        }
    }

    #[test]
    fn ks_p_value_applies_stephens_correction_to_the_effective_sample_size() {
        // n = m = 8: nₑ = 4, λ = (2 + 0.12 + 0.055)·0.5 = 1.0875.
        let p = ks_p_value(0.5, 8, 8).expect("valid");
        assert!((p - kolmogorov_survival(1.0875)).abs() < 1e-15);
        assert!(ks_p_value(1.5, 8, 8).is_err());
        assert!(ks_p_value(0.5, 0, 8).is_err());
        assert!(ks_statistic(&[], &[1.0]).is_err());
        assert!(ks_statistic(&[f64::NAN], &[1.0]).is_err());
    }

    #[test]
    fn median_heuristic_halves_the_median_squared_distance() {
        // 1-d points 0, 1, 3: squared distances 1, 9, 4 → median 4 → σ² = 2.
        let k = GaussianKernel::median_heuristic(&[0.0, 1.0, 3.0], 1).expect("valid");
        assert!((k.sigma() - 2f64.sqrt()).abs() < 1e-12);
        assert!((k.eval(&[0.0], &[2.0]) - (-1.0f64).exp()).abs() < 1e-12);
        assert!(GaussianKernel::median_heuristic(&[1.0, 1.0, 1.0], 1).is_err());
        assert!(GaussianKernel::median_heuristic(&[1.0], 1).is_err());
    }

    #[test]
    fn unbiased_mmd_matches_the_hand_computed_value() {
        // x = {0, 1}, y = {0, 2}, σ² = 1/2 so k = exp(−d²):
        // xx = e⁻¹, yy = e⁻⁴, xy = (1 + e⁻⁴ + e⁻¹ + e⁻¹)/4 → MMD² = e⁻⁴/2 − 1/2.
        let k = GaussianKernel::new(0.5f64.sqrt()).expect("valid");
        let mmd = mmd2_unbiased(&[0.0, 1.0], &[0.0, 2.0], 1, &k).expect("valid");
        let expected = 0.5 * (-4.0f64).exp() - 0.5;
        assert!((mmd - expected).abs() < 1e-12, "{mmd} vs {expected}");
        // Far-apart samples: the cross term vanishes, leaving the two within terms.
        let far = mmd2_unbiased(&[0.0, 0.5], &[100.0, 100.5], 1, &k).expect("valid");
        assert!((far - 2.0 * (-0.25f64).exp()).abs() < 1e-12, "{far}");
        assert!(mmd2_unbiased(&[0.0], &[0.0, 2.0], 1, &k).is_err());
        assert!(mmd2_unbiased(&[0.0, 1.0, 2.0], &[0.0, 2.0], 2, &k).is_err());
    }
}
