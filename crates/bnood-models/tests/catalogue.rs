//! The model catalogue: kinds named once, configurations with the sidecar's layout, and
//! `AnyModel` trained, saved and loaded without the caller matching on the kind.

mod common;

use bnood_data::ImageSet;
use bnood_models::train::{TrainBudget, TrainConfig, Trainable, train};
use bnood_models::{
    AnyModel, LikelihoodModel, ModelConfig, ModelKind, RealNvpConfig, StatsMode, checkpoint,
};
use burn::module::Module;
use burn::tensor::Device;
use common::host;

#[test]
fn model_kinds_parse_and_serialise_by_their_ids() {
    for kind in ModelKind::ALL {
        assert_eq!(kind.id().parse::<ModelKind>().ok(), Some(kind));
        assert_eq!(
            kind.id().to_uppercase().parse::<ModelKind>().ok(),
            Some(kind)
        );
        let json = serde_json::to_string(&kind).expect("serialises");
        assert_eq!(json, format!("\"{}\"", kind.id()));
        let config = ModelConfig::preset(kind, "cpu").expect("every kind has a cpu preset");
        assert_eq!(config.kind(), kind);
        assert_eq!(config.clone().with_seed(7).seed(), 7);
    }
    let err = "glow".parse::<ModelKind>().expect_err("unknown");
    assert!(err.to_string().contains("realnvp, vae, pixelcnn"), "{err}");
    let err = ModelConfig::preset(ModelKind::Vae, "huge").expect_err("unknown preset");
    assert!(err.to_string().contains("paper or cpu"), "{err}");
}

#[test]
fn a_configuration_serialises_as_the_sidecar_kind_and_config() {
    let config = RealNvpConfig::cpu_fmnist().with_seed(4);
    let value = serde_json::to_value(ModelConfig::RealNvp(config.clone())).expect("json");
    assert_eq!(value["kind"], "realnvp");
    assert_eq!(
        value["config"],
        serde_json::to_value(&config).expect("config json")
    );
}

#[test]
fn a_sidecar_in_the_first_release_layout_still_loads() {
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("old.bpk");
    let config = RealNvpConfig {
        image_shape: [1, 4, 4],
        mid_channels: 4,
        num_blocks: 1,
        ..RealNvpConfig::paper_fmnist()
    };
    let model = config.init(&device).expect("valid");
    checkpoint::save(model.clone(), 0, 0, &path).expect("saved");
    // The sidecar exactly as bnood 0.1 wrote it, field by field.
    let old = serde_json::json!({
        "kind": "realnvp",
        "config": serde_json::to_value(&config).expect("config json"),
        "step": 12,
        "samples_seen": 768,
    });
    std::fs::write(checkpoint::meta_path(&path), old.to_string()).expect("sidecar");
    let meta = checkpoint::read_meta(&path).expect("old sidecar reads");
    assert_eq!((meta.step, meta.samples_seen), (12, 768));
    let loaded = AnyModel::load(&path, &device).expect("old checkpoint loads");
    let x = burn::tensor::Tensor::<4>::ones([3, 1, 4, 4], &device).mul_scalar(100.5);
    assert_eq!(
        host(
            loaded
                .log_prob(x.clone(), &StatsMode::Running)
                .expect("scores")
        ),
        host(model.log_prob(x, &StatsMode::Running).expect("scores"))
    );
    std::fs::write(
        checkpoint::meta_path(&path),
        r#"{"kind": "glow", "config": {}, "step": 0, "samples_seen": 0}"#,
    )
    .expect("sidecar");
    let err = AnyModel::load(&path, &device).expect_err("unknown kind");
    assert!(
        err.to_string().contains("`glow` model")
            && err.to_string().contains("realnvp, vae, pixelcnn"),
        "{err}"
    );
}

#[test]
fn any_model_of_every_kind_trains_saves_and_loads_without_a_match() {
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let pixels = (0..8 * 784).map(|i| ((i * 37) % 251) as u8).collect();
    let data = ImageSet::new("tiny", pixels, [8, 1, 28, 28], None).expect("set");
    for kind in ModelKind::ALL {
        let config = ModelConfig::preset(kind, "cpu").expect("preset");
        let cfg = TrainConfig {
            batch_size: 4,
            budget: TrainBudget::steps(2),
            progress: false,
            ..TrainConfig::default()
        };
        let model: AnyModel = config.init(&device).expect("valid");
        let (trained, report) =
            train(model, &data, &cfg, &device.clone().autodiff()).expect("trains");
        assert_eq!(report.steps, 2, "{kind:?}");
        let trained = trained.valid();
        assert_eq!(trained.kind(), kind);
        assert_eq!(trained.model_config(), config);
        let path = dir.path().join(checkpoint::file_name(&config, "cpu"));
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some(format!("{}-cpu-seed0.bpk", kind.id()).as_str())
        );
        checkpoint::save(trained.clone(), 2, 8, &path).expect("saved");
        let loaded = AnyModel::load(&path, &device).expect("loaded");
        let x = data.tensor(0..4, &device).expect("tensor").add_scalar(0.5);
        for mode in [StatsMode::Running, StatsMode::Batch] {
            assert_eq!(
                host(trained.log_prob(x.clone(), &mode).expect("scores")),
                host(loaded.log_prob(x.clone(), &mode).expect("scores")),
                "{kind:?} {mode:?}"
            );
        }
    }
}
