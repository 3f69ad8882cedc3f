//! Fitted detectors saved and loaded: every kind scores identically after a round trip
//! without its reference set, a file is refused for a model it was not fitted with, and
//! the factory builds each kind from the catalogue.

use std::path::{Path, PathBuf};

use bnood_data::ImageSet;
use bnood_detect::{
    BnCalibration, DetectError, DetectorKind, DetectorParams, ModelFile, build, load_detector,
    save_detector,
};
use bnood_models::{AnyModel, RealNvpConfig, checkpoint};
use burn::tensor::Device;

/// A tiny untrained RealNVP on 4×4 images, saved as a checkpoint with init seed `seed`.
fn model_file(dir: &Path, seed: u64, device: &Device) -> PathBuf {
    let path = dir.join(format!("tiny-seed{seed}.bpk"));
    let model = RealNvpConfig {
        image_shape: [1, 4, 4],
        mid_channels: 4,
        num_blocks: 1,
        ..RealNvpConfig::paper_fmnist()
    }
    .with_seed(seed)
    .init(device)
    .expect("valid config");
    checkpoint::save(model, 0, 0, &path).expect("checkpoint saved");
    path
}

fn images(name: &str, n: usize, salt: usize) -> ImageSet {
    let pixels = (0..n * 16)
        .map(|i| ((i * 37 + salt * 11) % 251) as u8)
        .collect();
    ImageSet::new(name, pixels, [n, 1, 4, 4], None).expect("valid set")
}

fn params() -> DetectorParams {
    DetectorParams {
        bn: bnood_detect::BnTestParams::new().batch_size(16).seed(5),
        ..DetectorParams::default()
    }
}

fn load_models(paths: &[PathBuf], device: &Device) -> (Vec<AnyModel>, Vec<ModelFile>) {
    let models: Vec<AnyModel> = paths
        .iter()
        .map(|p| AnyModel::load(p, device).expect("model loads"))
        .collect();
    let files = paths
        .iter()
        .zip(&models)
        .map(|(p, m)| ModelFile::new(p, m).expect("checksummed"))
        .collect();
    (models, files)
}

#[test]
fn every_detector_scores_bit_identically_after_save_and_load() {
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = [
        model_file(dir.path(), 0, &device),
        model_file(dir.path(), 1, &device),
    ];
    let (reference, test) = (images("reference", 200, 1), images("test", 40, 2));
    // Every detector, and the BN test once more with in-pool calibration (which keeps the
    // held-out images in the file).
    let in_pool = DetectorParams {
        bn: params().bn.calibration(BnCalibration::InPool),
        ..params()
    };
    let cases = DetectorKind::ALL
        .into_iter()
        .map(|kind| (kind, params()))
        .chain([(DetectorKind::BnTest, in_pool)]);
    for (kind, params) in cases {
        let (models, files) = load_models(&paths, &device);
        let fitted = build(kind, models, &device, &params)
            .expect("built")
            .fit(&reference)
            .expect("fitted");
        assert_eq!(fitted.id(), kind.id());
        let file = dir.path().join(format!("{}.json", kind.id()));
        save_detector(&fitted, &files, &file).expect("saved");

        let loaded = load_detector(&file, None, &device).expect("loaded");
        assert_eq!(loaded.models, files, "{kind:?}");
        let (a, b) = (
            fitted.score(&test).expect("scores"),
            loaded.detector.score(&test).expect("scores after loading"),
        );
        assert_eq!(a, b, "{kind:?}: the same scores and p-values, bit for bit");
        assert_eq!(
            fitted.threshold_for_fpr(0.1).expect("threshold"),
            loaded.detector.threshold_for_fpr(0.1).expect("threshold"),
            "{kind:?}"
        );
        assert_eq!(
            loaded.detector.params_json(),
            fitted.params_json(),
            "{kind:?}"
        );
        assert_eq!(loaded.detector.id(), kind.id());
    }
}

#[test]
fn a_detector_file_is_refused_for_a_model_it_was_not_fitted_with() {
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let a = model_file(dir.path(), 0, &device);
    let b = model_file(dir.path(), 1, &device);
    let (models, files) = load_models(std::slice::from_ref(&a), &device);
    let detector = build(DetectorKind::BnTest, models, &device, &params())
        .expect("built")
        .fit(&images("reference", 200, 1))
        .expect("fitted");
    let file = dir.path().join("bn.json");
    save_detector(&detector, &files, &file).expect("saved");

    // Another model file given in its place.
    let err =
        load_detector(&file, Some(std::slice::from_ref(&b)), &device).expect_err("another model");
    let msg = err.to_string();
    assert!(
        matches!(err, DetectError::DetectorFile { .. })
            && msg.contains("not the model the detector was fitted with")
            && msg.contains("fit the detector again"),
        "{msg}"
    );
    // The model file replaced on disk by another one.
    std::fs::copy(&b, &a).expect("overwrite parameters");
    std::fs::copy(checkpoint::meta_path(&b), checkpoint::meta_path(&a)).expect("sidecar");
    let err = load_detector(&file, None, &device).expect_err("changed on disk");
    assert!(err.to_string().contains("MD5"), "{err}");
    // A wrong number of model files.
    let err = load_detector(&file, Some(&[a.clone(), b]), &device).expect_err("two files");
    assert!(err.to_string().contains("1 model file(s) but 2"), "{err}");
}

#[test]
fn loading_a_foreign_file_is_a_clear_error() {
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("t.json");
    std::fs::write(&file, br#"{"rows": []}"#).expect("foreign JSON");
    let err = load_detector(&file, None, &device).expect_err("foreign");
    assert!(
        err.to_string().contains("not a bnood detector file"),
        "{err}"
    );
    std::fs::write(&file, b"\x00garbage").expect("garbage");
    let err = load_detector(&file, None, &device).expect_err("garbage");
    assert!(err.to_string().contains("not JSON"), "{err}");
    // Another layout version, or none, is named plainly (not `Some(2)`).
    for (text, shown) in [
        (
            r#"{"format": "bnood-detector", "version": 2}"#,
            "layout version 2,",
        ),
        (r#"{"format": "bnood-detector"}"#, "layout version (none),"),
    ] {
        std::fs::write(&file, text).expect("written");
        let err = load_detector(&file, None, &device).expect_err("version");
        assert!(err.to_string().contains(shown), "{err}");
    }
}

#[test]
fn waic_needs_two_models_and_names_parse_from_ids_and_titles() {
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let (models, _) = load_models(&[model_file(dir.path(), 0, &device)], &device);
    let err = build(DetectorKind::Waic, models, &device, &params())
        .expect_err("one model is not an ensemble");
    assert!(err.to_string().contains("at least 2"), "{err}");
    for kind in DetectorKind::ALL {
        assert_eq!(DetectorKind::parse(kind.id()).ok(), Some(kind));
        assert_eq!(DetectorKind::parse(kind.title()).ok(), Some(kind));
        let json = serde_json::to_string(&kind).expect("serialises");
        assert_eq!(json, format!("\"{}\"", kind.id()));
    }
}

/// The positions of `keys` in `text`, which must appear in this order.
fn in_order(text: &str, keys: &[&str]) {
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| {
            text.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("no `{k}` in {text}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "{keys:?} at {positions:?}"
    );
}

#[test]
fn detector_files_keep_the_layout_of_version_1_field_for_field() {
    // Each detector writes its own state now; the file must stay the one earlier builds
    // wrote and read (fields in this order, pretty-printed, the state tagged by `type`).
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = [model_file(dir.path(), 0, &device)];
    for (kind, state_keys) in [
        (DetectorKind::LogLikelihood, &["type", "values"][..]),
        (DetectorKind::BnTest, &["type", "deltas", "mixing"][..]),
    ] {
        let (models, files) = load_models(&paths, &device);
        let fitted = build(kind, models, &device, &params())
            .expect("built")
            .fit(&images("reference", 200, 1))
            .expect("fitted");
        let file = dir.path().join(format!("{}.json", kind.id()));
        save_detector(&fitted, &files, &file).expect("saved");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.starts_with("{\n  \"format\": \"bnood-detector\",\n  \"version\": 1,\n"));
        assert!(text.contains(&format!("\"detector\": \"{}\"", kind.id())));
        in_order(
            &text,
            &[
                "format", "version", "detector", "name", "params", "scoring", "bn", "models",
                "state",
            ],
        );
        let state = &text[text.find("\"state\":").expect("state")..];
        in_order(state, state_keys);
        let tag = if kind == DetectorKind::BnTest {
            "bn_test"
        } else {
            "reference"
        };
        assert!(state.contains(&format!("\"type\": \"{tag}\"")), "{state}");
        assert!(text.ends_with("}\n"));
    }
}
