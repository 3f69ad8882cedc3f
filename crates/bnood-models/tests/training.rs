//! Training on real Fashion-MNIST lowers the loss and updates BatchNorm running statistics;
//! checkpoints round-trip exactly and refuse other architectures.

mod common;

use bnood_data::{Dataset, Locator, Split};
use bnood_models::checkpoint;
use bnood_models::train::{TrainConfig, train};
use bnood_models::{LikelihoodModel, RealNvp, RealNvpConfig, StatsMode};
use burn::module::Module;
use burn::tensor::Device;
use common::{assert_checkpoint_round_trip, data_dir, fmnist, train_steps};

fn small() -> RealNvpConfig {
    RealNvpConfig {
        mid_channels: 8,
        num_blocks: 1,
        ..RealNvpConfig::paper_fmnist()
    }
}

fn scores(model: &RealNvp, x: burn::tensor::Tensor<4>, mode: &StatsMode) -> Vec<f32> {
    model
        .log_prob(x, mode)
        .expect("log prob")
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32")
}

#[test]
fn a_few_training_steps_on_real_fmnist_lower_the_loss_and_move_running_statistics() {
    let data = Dataset::FashionMnist
        .load(Split::Train, &Locator::only(data_dir()))
        .expect("FMNIST")
        .subset(2_000, 0)
        .expect("subset");
    let device = Device::flex();
    let model = small().init(&device).expect("valid");
    let probe = data.tensor(0..32, &device).expect("tensor").add_scalar(0.5);
    let before_running = scores(&model, probe.clone(), &StatsMode::Running);
    let cfg = TrainConfig {
        batch_size: 32,
        budget: bnood_models::train::TrainBudget::steps(40),
        progress: false,
        ..TrainConfig::default()
    };
    let (trained, report) =
        train(model, &data, &cfg, &device.clone().autodiff()).expect("training runs");
    assert_eq!(report.steps, 40);
    let first: f64 = report.history[..5].iter().map(|(_, l)| l).sum::<f64>() / 5.0;
    let last: f64 = report.history[35..].iter().map(|(_, l)| l).sum::<f64>() / 5.0;
    assert!(
        last < first - 0.2,
        "loss went from {first:.3} to {last:.3} bits/dim"
    );
    let trained = trained.valid();
    let after_running = scores(&trained, probe, &StatsMode::Running);
    assert_ne!(before_running, after_running);
}

#[test]
fn save_then_load_gives_identical_log_likelihoods_in_every_mode() {
    let data = fmnist(Split::Test, 256);
    let (model, _) = train_steps(
        small().init(&Device::flex()).expect("valid"),
        &data,
        32,
        3,
        1e-3,
    );
    let x = data
        .tensor(0..16, &Device::flex())
        .expect("tensor")
        .add_scalar(0.5);
    assert_checkpoint_round_trip(&model, x);
}

#[test]
fn loading_a_checkpoint_into_another_architecture_is_a_clear_error() {
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("m.bpk");
    checkpoint::save(small().init(&device).expect("valid"), 0, 0, &path).expect("save");
    let other = RealNvpConfig {
        mid_channels: 16,
        ..small()
    };
    let err =
        checkpoint::load_into(other.init(&device).expect("valid"), &path).expect_err("mismatch");
    assert!(
        err.to_string()
            .contains("made with a different configuration"),
        "{err}"
    );
    let err = checkpoint::load_into(small().with_seed(5).init(&device).expect("valid"), &path)
        .expect_err("seed");
    assert!(
        err.to_string().contains("\"seed\":5"),
        "the difference is shown: {err}"
    );
    let vae = bnood_models::VaeConfig::cpu_fmnist()
        .init(&device)
        .expect("valid");
    let err = checkpoint::load_into(vae, &path).expect_err("kind");
    assert!(
        err.to_string()
            .contains("holds a `realnvp` model, not a `vae` model"),
        "{err}"
    );
    let err = checkpoint::read_meta(&dir.path().join("absent.bpk")).expect_err("missing");
    assert!(err.to_string().contains("cannot read its sidecar"), "{err}");
}

#[test]
fn training_rejects_a_batch_too_small_for_batch_statistics_and_a_plain_device() {
    let data = Dataset::FashionMnist
        .load(Split::Test, &Locator::only(data_dir()))
        .expect("FMNIST")
        .head(64)
        .expect("head");
    let device = Device::flex();
    let cfg = TrainConfig {
        batch_size: 1,
        progress: false,
        ..TrainConfig::default()
    };
    let err = train(
        small().init(&device).expect("valid"),
        &data,
        &cfg,
        &device.clone().autodiff(),
    )
    .expect_err("b=1");
    assert!(
        err.to_string().contains("BatchNorm needs batch statistics"),
        "{err}"
    );
    let cfg = TrainConfig {
        batch_size: 8,
        progress: false,
        ..TrainConfig::default()
    };
    let err = train(small().init(&device).expect("valid"), &data, &cfg, &device)
        .expect_err("no autodiff");
    assert!(
        err.to_string().contains("needs an autodiff device"),
        "{err}"
    );
}

type EvalResult = Result<Vec<(String, f64)>, bnood_models::ModelError>;

/// Trains a fresh [`small`] RealNVP on `data` with `cfg` on flex (autodiff), with the
/// held-out evaluation `eval`.
fn observed(
    data: &bnood_data::ImageSet,
    cfg: &TrainConfig,
    eval: Option<&mut bnood_models::train::Evaluator<'_, RealNvp>>,
) -> Result<(RealNvp, bnood_models::train::TrainReport), bnood_models::ModelError> {
    let device = Device::flex();
    bnood_models::train::train_observed(
        small().init(&device).expect("valid"),
        data,
        cfg,
        &device.autodiff(),
        eval,
    )
}

/// 256 Fashion-MNIST-test images: 16 steps of 16 per epoch.
fn fmnist_256() -> bnood_data::ImageSet {
    Dataset::FashionMnist
        .load(Split::Test, &Locator::only(data_dir()))
        .expect("FMNIST")
        .head(256)
        .expect("head")
}

fn resume_cfg(steps: usize, checkpoint: Option<std::path::PathBuf>, resume: bool) -> TrainConfig {
    TrainConfig {
        batch_size: 16,
        budget: bnood_models::train::TrainBudget::steps(steps),
        progress: false,
        checkpoint,
        resume,
        ..TrainConfig::default()
    }
}

/// The parameters of a model as the exact bits of its outputs in every mode (the same
/// parameters and running statistics give the same bits; any difference shows).
fn output_bits(model: &RealNvp, x: &burn::tensor::Tensor<4>) -> Vec<u32> {
    [StatsMode::Running, StatsMode::Batch]
        .iter()
        .flat_map(|m| scores(model, x.clone(), m))
        .map(f32::to_bits)
        .collect()
}

#[test]
fn resuming_from_a_checkpoint_continues_exactly_like_an_uninterrupted_run() {
    // Same bits, not merely close: the batch order, the noise and the learning rate are
    // functions of (seed, step), and the checkpoint holds every other part of the state
    // (parameters, running statistics, Adam's moments and step count) in f32 as trained.
    let data = fmnist_256();
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("run.bpk");
    let ad = device.clone().autodiff();
    let (straight, full) = train(
        small().init(&device).expect("valid"),
        &data,
        &resume_cfg(20, None, false),
        &ad,
    )
    .expect("train");
    // Three pieces crossing an epoch boundary (16 steps per epoch): 6, 6 → 12, 12 → 20.
    for (steps, resume) in [(6, false), (12, true), (20, true)] {
        let (_, r) = train(
            small().init(&device).expect("valid"),
            &data,
            &resume_cfg(steps, Some(path.clone()), resume),
            &ad,
        )
        .expect("train");
        assert_eq!(r.steps, steps);
    }
    let resumed = bnood_models::checkpoint::load_into(small().init(&device).expect("valid"), &path)
        .expect("load");
    let (_, last) = train(
        small().init(&device).expect("valid"),
        &data,
        &resume_cfg(20, Some(path.clone()), true),
        &ad,
    )
    .expect("nothing left to train");
    assert_eq!(last.steps, 20);
    assert!(last.history.is_empty(), "a finished budget takes no step");
    assert!(last.budget_spent);
    // Issue 27: a budget below the checkpoint's step is refused, and the file is untouched.
    let before = std::fs::read(&path).expect("checkpoint");
    let err = train(
        small().init(&device).expect("valid"),
        &data,
        &resume_cfg(1, Some(path.clone()), true),
        &ad,
    )
    .expect_err("a budget below the checkpoint's step");
    assert!(err.to_string().contains("already at step 20"), "{err}");
    assert_eq!(std::fs::read(&path).expect("checkpoint"), before);
    let x = data.tensor(0..16, &device).expect("tensor").add_scalar(0.5);
    assert_eq!(
        output_bits(&straight.valid(), &x),
        output_bits(&resumed, &x),
        "the resumed model differs from the uninterrupted one"
    );
    assert_eq!(full.steps, 20);
}

#[test]
fn the_learning_curve_is_the_same_whether_training_ran_in_one_piece_or_resumed() {
    use bnood_models::curve::{LearningCurve, curve_path};
    use bnood_models::held_out::mean_bits_per_dim;
    let data = fmnist_256();
    let held_out = Dataset::Mnist
        .load(Split::Test, &Locator::only(data_dir()))
        .expect("MNIST")
        .head(64)
        .expect("head");
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = |steps, path: &std::path::Path, resume| TrainConfig {
        eval_every: 4,
        ..resume_cfg(steps, Some(path.to_path_buf()), resume)
    };
    let mut eval = |m: &RealNvp| -> EvalResult {
        Ok(vec![
            (
                "running".to_string(),
                mean_bits_per_dim(m, &held_out, &StatsMode::Running, 32, &device)?,
            ),
            (
                "batch".to_string(),
                mean_bits_per_dim(m, &held_out, &StatsMode::Batch, 32, &device)?,
            ),
        ])
    };
    let one = dir.path().join("one.bpk");
    let (_, r) = observed(&data, &cfg(12, &one, false), Some(&mut eval)).expect("train");
    let whole = r.curve.expect("a curve");
    assert_eq!(
        whole.rows.iter().map(|r| r.step).collect::<Vec<_>>(),
        [0, 4, 8, 12],
        "a row for the untrained model and one every 4 steps"
    );
    let pieces = dir.path().join("pieces.bpk");
    for (steps, resume) in [(6, false), (12, true)] {
        observed(&data, &cfg(steps, &pieces, resume), Some(&mut eval)).expect("train");
    }
    let resumed = LearningCurve::read(&curve_path(&pieces)).expect("curve file");
    assert_eq!(resumed.metrics, ["running", "batch"]);
    assert_eq!(resumed.rows.len(), whole.rows.len());
    for (a, b) in whole.rows.iter().zip(&resumed.rows) {
        assert_eq!((a.step, a.lr), (b.step, b.lr));
        // Written with 5 decimals; the values themselves are the same bits.
        assert_eq!(a.values.len(), b.values.len());
        for (p, q) in a.values.iter().zip(&b.values) {
            assert!((p - q).abs() < 1e-5, "step {}: {p} vs {q}", a.step);
        }
    }
    // The 6-step piece's training loss covers steps 5–6 and the resumed one 7–8: the
    // step-8 row of the pieces averages only the resumed run's steps.
    assert!(whole.rows[2].train_bpd.is_finite() && resumed.rows[2].train_bpd.is_finite());
}

#[test]
fn a_row_written_after_the_last_checkpoint_is_dropped_on_resume() {
    use bnood_models::curve::{CurveRow, LearningCurve, curve_path};
    let data = fmnist_256();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("m.bpk");
    let mut eval = |_: &RealNvp| -> EvalResult { Ok(vec![("m".to_string(), 1.0)]) };
    let cfg = |steps, resume| TrainConfig {
        eval_every: 4,
        ..resume_cfg(steps, Some(path.clone()), resume)
    };
    observed(&data, &cfg(4, false), Some(&mut eval)).expect("train");
    // A run killed after writing its step-8 row but before its step-8 checkpoint.
    let mut c = LearningCurve::read(&curve_path(&path)).expect("curve");
    let mut orphan: CurveRow = c.rows.last().expect("row").clone();
    orphan.step = 8;
    orphan.values = vec![123.0];
    c.rows.push(orphan);
    c.write(&curve_path(&path)).expect("write");
    let (_, r) = observed(&data, &cfg(8, true), Some(&mut eval)).expect("resume");
    let c = r.curve.expect("curve");
    assert_eq!(c.rows.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 4, 8]);
    assert_eq!(c.rows[2].values, [1.0], "the orphan row was replaced");
}

#[test]
fn a_flat_held_out_curve_halves_the_learning_rate_then_stops_training() {
    use bnood_models::curve::FlatRule;
    let data = fmnist_256();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("m.bpk");
    // A metric that never improves: flat as soon as one epoch (16 steps) of rows exists.
    let mut eval = |_: &RealNvp| -> EvalResult { Ok(vec![("m".to_string(), 3.0)]) };
    let cfg = TrainConfig {
        eval_every: 8,
        flat_rule: Some(FlatRule {
            min_gain_per_epoch: 0.005,
            epochs: 1,
        }),
        lr_halvings: 1,
        learning_rate: 1e-3,
        ..resume_cfg(200, Some(path.clone()), false)
    };
    let (_, r) = observed(&data, &cfg, Some(&mut eval)).expect("train");
    assert!(r.stopped_flat);
    assert!(!r.budget_spent, "the flat rule stopped it, not the budget");
    let c = r.curve.expect("curve");
    // Rows at 0, 8, 16: flat at 16 (epoch 0 → 1): halve. Rows 24, 32: flat again at 32
    // (one epoch at the halved rate): stop.
    assert_eq!(r.steps, 32);
    let lrs: Vec<(usize, f64)> = c.rows.iter().map(|r| (r.step, r.lr)).collect();
    assert_eq!(
        lrs,
        [(0, 1e-3), (8, 1e-3), (16, 1e-3), (24, 5e-4), (32, 5e-4)]
    );
    // A stopped run stays stopped when resumed with more budget.
    let again = TrainConfig {
        resume: true,
        ..cfg
    };
    let (_, r) = observed(&data, &again, Some(&mut eval)).expect("resume");
    assert!(r.stopped_flat);
    assert_eq!(r.steps, 32);
    assert!(r.history.is_empty());
}

#[test]
fn evaluation_without_an_evaluator_or_a_checkpoint_is_refused_before_training() {
    let data = fmnist_256();
    let cfg = TrainConfig {
        eval_every: 4,
        ..resume_cfg(4, None, false)
    };
    let e = observed(&data, &cfg, None).expect_err("refused");
    assert!(
        e.to_string()
            .contains("needs an evaluator and a checkpoint"),
        "{e}"
    );
}

/// Issue 27: a run whose budget ends before its first step saves nothing (an untrained model
/// would score every image alike), and a background model resumed without its mutation rate
/// (or an ordinary one resumed with one) is refused instead of training on other data.
#[test]
fn a_zero_step_run_saves_nothing_and_a_resume_must_keep_the_mutation_rate() {
    let data = fmnist_256();
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bg.bpk");
    let no_time = TrainConfig {
        budget: bnood_models::train::TrainBudget::minutes(1e-9),
        ..resume_cfg(10, Some(path.clone()), false)
    };
    let err = train(small().init(&device).expect("valid"), &data, &no_time, &ad)
        .expect_err("no step taken");
    assert!(err.to_string().contains("before the first step"), "{err}");
    assert!(!path.exists(), "nothing saved");
    let background = TrainConfig {
        background_mutation: Some(0.2),
        ..resume_cfg(2, Some(path.clone()), false)
    };
    train(
        small().init(&device).expect("valid"),
        &data,
        &background,
        &ad,
    )
    .expect("trains");
    let err = train(
        small().init(&device).expect("valid"),
        &data,
        &resume_cfg(4, Some(path.clone()), true),
        &ad,
    )
    .expect_err("clean resume of a background model");
    assert!(
        err.to_string().contains("background mutation rate 0.2"),
        "{err}"
    );
    assert_eq!(
        checkpoint::read_meta(&path).expect("sidecar").step,
        2,
        "the checkpoint is untouched"
    );
}
