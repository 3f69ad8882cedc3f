//! Table 2 (every detector against every OoD set) and Table 5 (`r1 = 0`, several `r2`).

use super::*;

/// The paper's Table 2 for one model: every detector of `protocol` on `test_in` against
/// every set of `oods`, fitted on `reference`.
///
/// `models[0]` is the model scored by every detector; WAIC uses all of `models`
/// (independently trained members; with one model WAIC is skipped, since its variance term
/// would be zero and it would equal log p — the report says so by the absence of its rows);
/// the likelihood ratio uses `background` (skipped without one).
///
/// # Errors
/// [`EvalError::InvalidSetting`] for an empty model list, OoD list or set; detector and
/// metric errors (shape mismatches, pools too small for the BN test's `r·b`, NaNs).
#[allow(clippy::too_many_arguments)]
pub fn ood_table<M: LikelihoodModel + Clone + 'static>(
    models: &[M],
    background: Option<&M>,
    model_name: &str,
    reference: &ImageSet,
    test_in: &ImageSet,
    oods: &[ImageSet],
    protocol: &Protocol,
    device: &Device,
) -> Result<Vec<Row>> {
    if models.is_empty() {
        return Err(EvalError::InvalidSetting(
            "no model given: pass at least one trained model".into(),
        ));
    }
    check_sets(test_in, oods, reference)?;
    let mut rows = Vec::new();
    for mut spec in protocol.specs(models.len(), background.is_some())? {
        // Table 2 ranks images; the BN test's verdict on each pool would cost null batches
        // and appear nowhere (the contamination and calibration studies report it).
        spec.params.bn = spec.params.bn.clone().pool_null_batches(0);
        let mut detector = build_spec(&spec, models, background, device)?;
        detector.set_progress(crate::bar_hook(protocol.progress));
        rows.extend(run_detector(
            &detector,
            &spec.setting,
            model_name,
            reference,
            test_in,
            oods,
        )?);
    }
    Ok(rows)
}

/// The paper's Table 5: the BN test with `r1 = 0` (running statistics, the paper's
/// "r1 → 0") and each `r2` of `r2s`, other parameters from `protocol.bn`.
///
/// # Errors
/// As [`ood_table`]; [`EvalError::InvalidSetting`] for an empty `r2s`.
#[allow(clippy::too_many_arguments)]
pub fn r2_table<M: LikelihoodModel + Clone + 'static>(
    model: &M,
    model_name: &str,
    reference: &ImageSet,
    test_in: &ImageSet,
    oods: &[ImageSet],
    r2s: &[f64],
    protocol: &Protocol,
    device: &Device,
) -> Result<Vec<Row>> {
    if r2s.is_empty() {
        return Err(EvalError::InvalidSetting(
            "no r2 given: pass at least one ratio in (0, 1], e.g. 0.15,0.3,0.5,0.9".into(),
        ));
    }
    check_sets(test_in, oods, reference)?;
    let mut rows = Vec::new();
    for &r2 in r2s {
        let params = protocol.bn.clone().ratios(0.0, r2).pool_null_batches(0);
        let mut bn = bnood_detect::build(
            DetectorKind::BnTest,
            vec![model.clone()],
            device,
            &DetectorParams {
                bn: params.clone(),
                ..DetectorParams::default()
            },
        )?;
        bn.set_progress(crate::bar_hook(protocol.progress));
        rows.extend(run_detector(
            &bn,
            &Setting::bn_test(&params)?,
            model_name,
            reference,
            test_in,
            oods,
        )?);
    }
    Ok(rows)
}
