//! The power study of the window test (issue 13, part 3): the share of windows flagged
//! against the share of OoD inputs in a window, for several window sizes `M`, OoD sets and
//! statistics (the BN window statistic, KS on `ln p`, MMD on pixels), with the false-alarm
//! rate at 0 % OoD and its exact binomial interval.
//!
//! `bnood monitor --study` is the command line of [`window_power`]; `docs/results.md`
//! ("Window test") holds the measured table and its command.

use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use bnood_data::{ImageSet, seeds};
use bnood_detect::{
    LikelihoodModel, ParamGuard, ProgressHook, WindowStatistic, WindowTest, WindowTestParams,
    ks_p_value,
};

use crate::{EvalError, Result};

/// What to measure. Every window is drawn afresh: its in-distribution part without
/// replacement from the inlier pool, its OoD part without replacement from the OoD pool,
/// in a seeded random order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowPowerSpec {
    /// Window sizes `M`.
    pub windows: Vec<usize>,
    /// OoD shares of a window in `[0, 1]`; a window holds `round(share·M)` OoD inputs, at
    /// least one when the share is positive (the rows report the actual number).
    pub shares: Vec<f64>,
    /// Windows per (M, OoD set, positive share) cell.
    pub windows_per_cell: usize,
    /// Windows of the 0 % cell (one per `M`, shared by all OoD sets), which measures the
    /// false-alarm rate.
    pub false_alarm_windows: usize,
    /// Monte Carlo null windows `K` of each fitted test.
    pub null_windows: usize,
    /// Level of the decisions.
    pub alpha: f64,
    /// Comparison sample of KS and MMD, taken from the reference set.
    pub comparison_size: usize,
    /// Most rows per batch-statistics forward pass.
    pub batch_size: usize,
    /// Seed of every draw (the tests' splits and null windows, the windows).
    pub seed: u64,
}

/// One cell of the study: a test at one window size, OoD set and share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowPowerRow {
    /// Window size `M`.
    pub window: usize,
    /// The OoD set (`"-"` for the 0 % cell).
    pub ood_set: String,
    /// The share asked for.
    pub share: f64,
    /// OoD inputs per window, `round(share·M)` (at least 1 for a positive share).
    pub ood_per_window: usize,
    /// The test: a [`WindowStatistic`] id, or `ks-asymptotic` (KS with the classical
    /// asymptotic p-value instead of the Monte Carlo null).
    pub test: String,
    /// Windows tested.
    pub windows: usize,
    /// Windows flagged at `alpha`.
    pub flagged: usize,
    /// `flagged / windows`.
    pub rate: f64,
    /// Clopper–Pearson 95 % interval of the rate.
    pub interval: (f64, f64),
    /// Wall-clock seconds of the cell (all tests of the cell together).
    pub seconds: f64,
}

/// Everything [`window_power`] measured, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowPowerReport {
    /// The settings.
    pub spec: WindowPowerSpec,
    /// The reference, inlier and OoD sets' names and sizes.
    pub sets: Vec<(String, usize)>,
    /// One row per cell and test.
    pub rows: Vec<WindowPowerRow>,
    /// Seconds of fitting (`S₀` of the reference and the null windows), per `M`.
    pub fit_seconds: Vec<(usize, f64)>,
    /// Total wall-clock seconds.
    pub total_seconds: f64,
}

/// The tests of each cell, in row order: the three statistics, then KS with its asymptotic
/// p-value.
const KS_ASYMPTOTIC: &str = "ks-asymptotic";

/// Measures the window test's power (see the module): for each `M`, fits a
/// [`WindowTest`] with all three statistics on `reference` (`S₀` of the reference computed
/// once for all `M`), then tests `false_alarm_windows` windows of `inliers` and, for each
/// OoD set and positive share, `windows_per_cell` windows mixing `inliers` and that set.
///
/// # Errors
/// [`EvalError::InvalidSetting`] for shares outside `[0, 1]`, no window size, no window per
/// cell, or pools too small for a window; window-test errors.
pub fn window_power<M: LikelihoodModel + Clone>(
    model: &M,
    device: &Device,
    reference: &ImageSet,
    inliers: &ImageSet,
    oods: &[ImageSet],
    spec: &WindowPowerSpec,
    progress: ProgressHook,
) -> Result<WindowPowerReport> {
    let started = Instant::now();
    check_spec(spec, inliers, oods)?;
    let params = |m: usize| {
        WindowTestParams::new()
            .window(m)
            .statistics(&WindowStatistic::ALL)
            .null_windows(spec.null_windows)
            .alpha(spec.alpha)
            .comparison_size(spec.comparison_size)
            .batch_size(spec.batch_size)
            .seed(spec.seed)
    };
    for &m in &spec.windows {
        params(m).check_ref()?; // every M checked before any work
    }
    let mut first = WindowTest::new(model.clone(), device, params(spec.windows[0]))?;
    first.set_progress(progress.clone());
    let reference_log_p = first.running_log_p(reference)?;
    let inlier_log_p = first.running_log_p(inliers)?;
    let ood_log_p = oods
        .iter()
        .map(|o| first.running_log_p(o))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut rows = Vec::new();
    let mut fit_seconds = Vec::new();
    for &m in &spec.windows {
        let t = Instant::now();
        let mut test = WindowTest::new(model.clone(), device, params(m))?;
        test.set_progress(progress.clone());
        test.fit_with_log_p(reference, &reference_log_p)?;
        fit_seconds.push((m, t.elapsed().as_secs_f64()));
        let cell = Cell {
            test: &test,
            inliers: (inliers, &inlier_log_p),
            spec,
        };
        for (s, &share) in spec.shares.iter().enumerate() {
            if share == 0.0 {
                rows.extend(cell.run(None, share, s, spec.false_alarm_windows)?);
                continue;
            }
            for (o, ood) in oods.iter().enumerate() {
                rows.extend(cell.run(
                    Some((o, ood, &ood_log_p[o])),
                    share,
                    s,
                    spec.windows_per_cell,
                )?);
            }
        }
    }
    let mut sets = vec![
        (reference.name().to_string(), reference.len()),
        (inliers.name().to_string(), inliers.len()),
    ];
    sets.extend(oods.iter().map(|o| (o.name().to_string(), o.len())));
    Ok(WindowPowerReport {
        spec: spec.clone(),
        sets,
        rows,
        fit_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// OoD inputs per window of `m` at `share`: `round(share·m)`, at least 1 for a positive
/// share.
pub fn ood_per_window(share: f64, m: usize) -> usize {
    let k = (share * m as f64).round() as usize;
    if share > 0.0 { k.max(1) } else { 0 }
}

fn check_spec(spec: &WindowPowerSpec, inliers: &ImageSet, oods: &[ImageSet]) -> Result<()> {
    let bad = |m: String| Err(EvalError::InvalidSetting(m));
    if spec.windows.is_empty() {
        return bad("no window size given: pass at least one M (e.g. --window 16,64,256)".into());
    }
    if let Some(s) = spec.shares.iter().find(|s| !(0.0..=1.0).contains(*s)) {
        return bad(format!("OoD share {s} must lie in [0, 1]"));
    }
    if spec.windows_per_cell == 0 || spec.false_alarm_windows == 0 {
        return bad("the study needs at least one window per cell (--windows-per-cell, --false-alarm-windows)".into());
    }
    if spec.shares.iter().any(|&s| s > 0.0) && oods.is_empty() {
        return bad("positive OoD shares need an OoD set (--study mnist,kmnist)".into());
    }
    let largest = spec.windows.iter().copied().max().unwrap_or(0);
    if inliers.len() < largest {
        return bad(format!(
            "the inlier pool `{}` holds {} images, fewer than the largest window M = {largest}: pass more (--input-size)",
            inliers.name(),
            inliers.len()
        ));
    }
    for o in oods {
        let need = spec
            .windows
            .iter()
            .flat_map(|&m| spec.shares.iter().map(move |&s| ood_per_window(s, m)))
            .max()
            .unwrap_or(0);
        if o.len() < need {
            return bad(format!(
                "the OoD pool `{}` holds {} images but a window needs {need}: pass more (--ood-size)",
                o.name(),
                o.len()
            ));
        }
    }
    Ok(())
}

/// What the cells of one window size share.
struct Cell<'a, M> {
    test: &'a WindowTest<M>,
    inliers: (&'a ImageSet, &'a [f64]),
    spec: &'a WindowPowerSpec,
}

impl<M: LikelihoodModel> Cell<'_, M> {
    /// Tests `windows` windows at `share` (the `s`-th share) with OoD inputs from `ood`
    /// (its index, set and `S₀`), and returns one row per test.
    fn run(
        &self,
        ood: Option<(usize, &ImageSet, &Vec<f64>)>,
        share: f64,
        s: usize,
        windows: usize,
    ) -> Result<Vec<WindowPowerRow>> {
        let t = Instant::now();
        let p = self.test.params();
        let m = p.window();
        let k = ood_per_window(share, m);
        let (inliers, inlier_log_p) = self.inliers;
        let mut flagged = vec![0usize; p.statistics().len() + 1];
        for w in 0..windows {
            // One stream per (M, share, OoD set, window): cells never share draws.
            let key = [
                m as u64,
                s as u64,
                ood.map_or(u64::MAX, |o| o.0 as u64),
                w as u64,
            ]
            .iter()
            .fold(
                seeds::derive(self.spec.seed, seeds::WINDOW_POWER),
                |acc, &t| seeds::splitmix64(acc ^ seeds::splitmix64(t)),
            );
            let in_rows = &inliers.permutation(key)[..m - k];
            let mut parts = Vec::with_capacity(2);
            if !in_rows.is_empty() {
                parts.push(inliers.select(in_rows)?); // none at 100 % OoD
            }
            let mut log_p: Vec<f64> = in_rows.iter().map(|&i| inlier_log_p[i]).collect();
            if let Some((_, set, set_log_p)) = ood {
                let ood_rows = &set.permutation(seeds::splitmix64(key))[..k];
                parts.push(set.select(ood_rows)?);
                log_p.extend(ood_rows.iter().map(|&i| set_log_p[i]));
            }
            let joined = ImageSet::concat("window", &parts.iter().collect::<Vec<_>>())?;
            let order = joined.permutation(seeds::splitmix64(key ^ 1));
            let window = joined.select(&order)?;
            let log_p: Vec<f64> = order.iter().map(|&i| log_p[i]).collect();
            let outcomes = self.test.test_with_log_p(&window, &log_p)?;
            for (f, o) in flagged.iter_mut().zip(&outcomes) {
                *f += usize::from(o.flagged);
            }
            if let Some(ks) = outcomes
                .iter()
                .find(|o| o.statistic == WindowStatistic::KsLogP)
            {
                let asymptotic = ks_p_value(ks.value, m, p.comparison_size())?;
                flagged[p.statistics().len()] += usize::from(asymptotic <= p.alpha());
            }
        }
        let seconds = t.elapsed().as_secs_f64();
        let ood_set = ood.map_or("-".to_string(), |o| o.1.name().to_string());
        let names = p
            .statistics()
            .iter()
            .map(|s| s.id().to_string())
            .chain(std::iter::once(KS_ASYMPTOTIC.to_string()));
        Ok(names
            .zip(flagged)
            .map(|(test, flagged)| WindowPowerRow {
                window: m,
                ood_set: ood_set.clone(),
                share,
                ood_per_window: k,
                test,
                windows,
                flagged,
                rate: flagged as f64 / windows as f64,
                interval: clopper_pearson(flagged, windows, 0.05),
                seconds,
            })
            .collect())
    }
}

/// The Clopper–Pearson (exact) two-sided `1 − level` interval of a binomial proportion
/// after `successes` of `trials`: the `p` at which `P(X ≥ successes) = level/2` and
/// `P(X ≤ successes) = level/2` (0 and 1 at the ends), by bisection on the binomial tail.
///
/// `trials = 0` gives `(0, 1)`.
pub fn clopper_pearson(successes: usize, trials: usize, level: f64) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let half = level / 2.0;
    let lower = if successes == 0 {
        0.0
    } else {
        // P(X ≥ x | p) grows with p.
        bisect(|p| 1.0 - binomial_cdf(successes - 1, trials, p) - half)
    };
    let upper = if successes == trials {
        1.0
    } else {
        // P(X ≤ x | p) falls with p.
        bisect(|p| half - binomial_cdf(successes, trials, p))
    };
    (lower, upper)
}

/// The root in `(0, 1)` of an increasing function, to 1e-12.
fn bisect(f: impl Fn(f64) -> f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while hi - lo > 1e-12 {
        let mid = 0.5 * (lo + hi);
        if f(mid) < 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// `P(X ≤ x)` for `X ~ Binomial(n, p)`, summed in log space.
fn binomial_cdf(x: usize, n: usize, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if x >= n { 1.0 } else { 0.0 };
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_choose = 0.0; // ln C(n, 0)
    let mut total = 0.0;
    for k in 0..=x.min(n) {
        if k > 0 {
            log_choose += ((n - k + 1) as f64).ln() - (k as f64).ln();
        }
        total += (log_choose + k as f64 * lp + (n - k) as f64 * lq).exp();
    }
    total.min(1.0)
}

impl WindowPowerReport {
    /// The rows as CSV (`window,ood_set,share,ood_per_window,test,windows,flagged,rate,ci_low,ci_high,seconds`).
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "window,ood_set,share,ood_per_window,test,windows,flagged,rate,ci_low,ci_high,seconds\n",
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{:.4},{:.4},{:.4},{:.1}\n",
                r.window,
                r.ood_set,
                r.share,
                r.ood_per_window,
                r.test,
                r.windows,
                r.flagged,
                r.rate,
                r.interval.0,
                r.interval.1,
                r.seconds
            ));
        }
        s
    }

    /// Markdown tables, one per OoD set: a row per (M, test), the false-alarm rate at 0 %
    /// with its 95 % interval, then the share of windows flagged at each positive share.
    pub fn to_markdown(&self) -> String {
        let mut sets: Vec<&str> = Vec::new();
        for r in self.rows.iter().filter(|r| r.ood_set != "-") {
            if !sets.contains(&r.ood_set.as_str()) {
                sets.push(&r.ood_set);
            }
        }
        let shares: Vec<f64> = self
            .spec
            .shares
            .iter()
            .copied()
            .filter(|&s| s > 0.0)
            .collect();
        if sets.is_empty() {
            sets.push("-"); // a study of false alarms only
        }
        let mut out = String::new();
        for set in sets {
            out.push_str(&format!(
                "\n**OoD = {}** — share of windows flagged at α = {} (false alarms: {} in-distribution windows, 95 % Clopper–Pearson interval; other cells: {} windows each, OoD inputs per window in parentheses)\n\n| M | test | false alarms (0 %) |",
                if set == "-" { "none" } else { set },
                self.spec.alpha,
                self.spec.false_alarm_windows,
                self.spec.windows_per_cell
            ));
            for s in &shares {
                out.push_str(&format!(" {:.0} % |", s * 100.0));
            }
            out.push_str("\n|---|---|---|");
            out.push_str(&"---|".repeat(shares.len()));
            out.push('\n');
            for &m in &self.spec.windows {
                let tests: Vec<&str> = {
                    let mut t: Vec<&str> = Vec::new();
                    for r in self.rows.iter().filter(|r| r.window == m) {
                        if !t.contains(&r.test.as_str()) {
                            t.push(&r.test);
                        }
                    }
                    t
                };
                for test in tests {
                    let find = |set: &str, share: f64| {
                        self.rows.iter().find(|r| {
                            r.window == m && r.test == test && r.ood_set == set && r.share == share
                        })
                    };
                    let zero = find("-", 0.0).map_or("—".to_string(), |r| {
                        format!("{:.3} [{:.3}, {:.3}]", r.rate, r.interval.0, r.interval.1)
                    });
                    out.push_str(&format!("| {m} | {} | {zero} |", test_title(test)));
                    for &s in &shares {
                        let cell = find(set, s).map_or("—".to_string(), |r| {
                            format!("{:.2} ({})", r.rate, r.ood_per_window)
                        });
                        out.push_str(&format!(" {cell} |"));
                    }
                    out.push('\n');
                }
            }
        }
        let fits: Vec<String> = self
            .fit_seconds
            .iter()
            .map(|(m, s)| format!("M = {m}: {s:.0} s"))
            .collect();
        out.push_str(&format!(
            "\nReference `{}` ({} images: {} comparison, the rest calibration), K = {} null windows; fits {}; total {:.0} s.\n",
            self.sets.first().map_or("", |s| s.0.as_str()),
            self.sets.first().map_or(0, |s| s.1),
            self.spec.comparison_size,
            self.spec.null_windows,
            fits.join(", "),
            self.total_seconds
        ));
        out
    }
}

/// A test id's title for tables.
fn test_title(id: &str) -> String {
    if id == KS_ASYMPTOTIC {
        return "KS on log p, asymptotic p".into();
    }
    WindowStatistic::ALL
        .iter()
        .find(|s| s.id() == id)
        .map_or(id.to_string(), |s| s.title().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopper_pearson_matches_the_beta_quantiles() {
        // 10 of 200, golden values from exact binomial sums in Python (equal to
        // scipy.stats.beta.ppf(0.025, 10, 191) and beta.ppf(0.975, 11, 190)):
        //   cdf = lambda x, n, p: sum(comb(n, k) * p**k * (1 - p)**(n - k) for k in range(x + 1))
        //   then bisection on 1 − cdf(9, 200, p) = 0.025 and cdf(10, 200, p) = 0.025.
        let (lo, hi) = clopper_pearson(10, 200, 0.05);
        assert!((lo - 0.024_234_165_472_108_604).abs() < 1e-9, "{lo}");
        assert!((hi - 0.090_027_537_701_351_36).abs() < 1e-9, "{hi}");
        // 0 of n: upper = 1 − 0.025^(1/n).
        let (lo, hi) = clopper_pearson(0, 50, 0.05);
        assert_eq!(lo, 0.0);
        assert!(
            (hi - (1.0 - 0.025f64.powf(1.0 / 50.0))).abs() < 1e-9,
            "{hi}"
        );
        let (lo, hi) = clopper_pearson(50, 50, 0.05);
        assert!((lo - 0.025f64.powf(1.0 / 50.0)).abs() < 1e-9, "{lo}");
        assert_eq!(hi, 1.0);
    }

    #[test]
    fn a_positive_share_puts_at_least_one_ood_input_in_a_window() {
        assert_eq!(ood_per_window(0.0, 16), 0);
        assert_eq!(ood_per_window(0.05, 16), 1); // 0.8 rounds to 1
        assert_eq!(ood_per_window(0.01, 16), 1); // 0.16 would round to 0
        assert_eq!(ood_per_window(0.25, 64), 16);
        assert_eq!(ood_per_window(1.0, 256), 256);
    }
}
