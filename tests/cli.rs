//! The `bnood` binary: help on every subcommand, one-sentence errors with exit status 1,
//! and `train` → `score` on a user's IDX file and PNG folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BNOOD_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets")
}

fn bnood(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bnood"))
        .args(args)
        .env("BNOOD_DATA_DIR", data_dir())
        .env_remove("BNOOD_DEVICE")
        .output()
        .expect("bnood runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bnood-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes `images` (each `h·w` gray pixels) as an uncompressed IDX3 file.
fn write_idx(path: &Path, images: &[Vec<u8>], h: usize, w: usize) {
    let mut bytes = vec![0, 0, 0x08, 3];
    for d in [images.len(), h, w] {
        bytes.extend((d as u32).to_be_bytes());
    }
    for im in images {
        bytes.extend(im);
    }
    std::fs::write(path, bytes).expect("idx written");
}

fn write_png(path: &Path, pixels: &[u8], h: u32, w: u32) {
    write_png_as(path, pixels, h, w, png::ColorType::Grayscale);
}

fn write_png_as(path: &Path, pixels: &[u8], h: u32, w: u32, color: png::ColorType) {
    let file = std::fs::File::create(path).expect("png file");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .expect("header")
        .write_image_data(pixels)
        .expect("pixels");
}

/// A RealNVP trained for one step (`dir/m.bpk`) and an IDX file of `n` user images
/// (`dir/mine-idx3-ubyte`), the fixture of the `score` tests.
fn one_step_model_and_idx(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let model = dir.join("m.bpk");
    let out = bnood(&[
        "train",
        "--steps",
        "1",
        "--out",
        model.to_str().expect("utf8"),
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let idx = dir.join("mine-idx3-ubyte");
    write_idx(&idx, &images(n, 784, 3), 28, 28);
    (model, idx)
}

fn images(n: usize, len: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            (0..len)
                .map(|j| ((i * 31 + j * 7) as u8).wrapping_mul(seed))
                .collect()
        })
        .collect()
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        vec!["--help"],
        vec!["datasets", "--help"],
        vec!["train", "--help"],
        vec!["fit", "--help"],
        vec!["score", "--help"],
        vec!["eval", "--help"],
        vec!["models", "--help"],
        vec!["monitor", "--help"],
    ] {
        let out = bnood(&sub);
        assert!(out.status.success(), "{sub:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("Usage"), "{sub:?}");
    }
}

#[test]
fn a_missing_model_file_is_a_one_line_error_with_exit_status_1() {
    let out = bnood(&[
        "score",
        "--model",
        "/nonexistent/model.bpk",
        "--test",
        "kmnist",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("/nonexistent/model.bpk"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn train_refuses_to_overwrite_and_needs_a_budget() {
    let dir = scratch("train-refuse");
    let out_file = dir.join("m.bpk");
    let out = bnood(&["train", "--out", out_file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--minutes, --epochs or --steps"));
    std::fs::write(&out_file, b"x").expect("file");
    let out = bnood(&[
        "train",
        "--steps",
        "1",
        "--out",
        out_file.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--resume"),
        "{}",
        text(&out.stderr)
    );
    // Issue 27: a folder (or a name ending in `/`) as --out is refused before any work.
    let folder = format!("{}/", dir.display());
    let out = bnood(&["train", "--steps", "1", "--out", &folder]);
    assert_refused(&out, "names a folder");
    if Path::new("/dev/null").exists() {
        let out = bnood(&["train", "--steps", "1", "--resume", "--out", "/dev/null"]);
        assert_refused(&out, "not a regular file");
    }
}

#[test]
fn datasets_list_shows_where_each_file_is() {
    let out = bnood(&["datasets", "list", "--only", "fmnist,kmnist"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("t10k-images-idx3-ubyte.gz"), "{stdout}");
    assert!(
        stdout.contains(&data_dir().display().to_string()),
        "{stdout}"
    );
}

#[test]
fn train_then_score_a_users_idx_file_and_png_folder() {
    let dir = scratch("train-score");
    let model = dir.join("realnvp.bpk");
    let m = model.to_str().expect("utf8");
    let out = bnood(&[
        "train", "--model", "realnvp", "--preset", "cpu", "--steps", "2", "--out", m, "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 steps"),
        "{}",
        text(&out.stdout)
    );

    // An IDX file of 20 images: CSV with one row per image, p-values for T_perm.
    let idx = dir.join("mine-idx3-ubyte");
    write_idx(&idx, &images(20, 784, 3), 28, 28);
    let csv_path = dir.join("scores.csv");
    let out = bnood(&[
        "score",
        "--model",
        m,
        "--detector",
        "tperm",
        "--test",
        idx.to_str().expect("utf8"),
        "--reference-size",
        "100",
        "--out",
        csv_path.to_str().expect("utf8"),
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = std::fs::read_to_string(&csv_path).expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "index,score,p_value,ood");
    assert_eq!(lines.len(), 21);
    for (i, line) in lines[1..].iter().enumerate() {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols[0], i.to_string());
        assert!(cols[1].parse::<f64>().is_ok_and(f64::is_finite), "{line}");
        assert!(
            cols[2]
                .parse::<f64>()
                .is_ok_and(|p| (0.0..=1.0).contains(&p)),
            "{line}"
        );
        assert!(cols[3] == "true" || cols[3] == "false", "{line}");
    }

    // The same detector fitted once, saved, and loaded to score: the very same CSV.
    let detector = dir.join("tperm.json");
    let d = detector.to_str().expect("utf8");
    let out = bnood(&[
        "fit",
        "--model",
        m,
        "--detector",
        "tperm",
        "--reference-size",
        "100",
        "--out",
        d,
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let idx_arg = idx.to_str().expect("utf8");
    let out = bnood(&["score", "--detector-file", d, "--test", idx_arg, "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), csv, "scores from the saved detector");
    // Issue 27: flags that would fit a detector are refused next to a saved one, not
    // ignored; the stored model path is relative to the detector file, so it loads from
    // any working directory.
    for (flag, value) in [
        ("--detector", "logp"),
        ("--r1", "0.2"),
        ("--reference", "mnist"),
        ("--seed", "3"),
    ] {
        let out = bnood(&[
            "score",
            "--detector-file",
            d,
            "--test",
            idx_arg,
            flag,
            value,
        ]);
        assert_refused(&out, &format!("{flag} has no effect with --detector-file"));
    }
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&detector).expect("detector file"))
            .expect("JSON");
    assert_eq!(stored["models"][0]["path"], "realnvp.bpk", "{stored}");
    let elsewhere = Command::new(env!("CARGO_BIN_EXE_bnood"))
        .args(["score", "--detector-file", d, "--test", idx_arg, "-q"])
        .env("BNOOD_DATA_DIR", data_dir())
        .current_dir(std::env::temp_dir())
        .output()
        .expect("bnood runs");
    assert!(elsewhere.status.success(), "{}", text(&elsewhere.stderr));
    assert_eq!(
        text(&elsewhere.stdout),
        csv,
        "from another working directory"
    );
    // Another model in place of the one it was fitted with is refused.
    let other = dir.join("other.bpk");
    let o = other.to_str().expect("utf8");
    let out = bnood(&["train", "--steps", "1", "--seed", "9", "--out", o, "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = bnood(&[
        "score",
        "--detector-file",
        d,
        "--model",
        o,
        "--test",
        idx_arg,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not the model the detector was fitted with"),
        "{}",
        text(&out.stderr)
    );

    // A PNG folder, BN test, JSON on stdout.
    let pngs = dir.join("pngs");
    std::fs::create_dir_all(&pngs).expect("dir");
    for (i, im) in images(16, 784, 5).iter().enumerate() {
        write_png(&pngs.join(format!("{i:02}.png")), im, 28, 28);
    }
    let out = bnood(&[
        "score",
        "--model",
        m,
        "--detector",
        "bn",
        "--test",
        pngs.to_str().expect("utf8"),
        "--reference-size",
        "200",
        "--batch-size",
        "16",
        "--format",
        "json",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["rows"].as_array().map(Vec::len), Some(16));
    assert_eq!(doc["test_set"], "pngs");

    // Images of another size are refused with the shapes named.
    let wrong = dir.join("wrong");
    std::fs::create_dir_all(&wrong).expect("dir");
    write_png(&wrong.join("a.png"), &[0; 32 * 32], 32, 32);
    let out = bnood(&[
        "score",
        "--model",
        m,
        "--detector",
        "logp",
        "--test",
        wrong.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("[1, 32, 32]") && err.contains("[1, 28, 28]"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_bnood_device_is_a_one_line_error_and_a_blank_one_means_the_default() {
    let run = |value: &str| {
        Command::new(env!("CARGO_BIN_EXE_bnood"))
            .args(["train", "--out", "/nonexistent/dir/m.bpk"])
            .env("BNOOD_DATA_DIR", data_dir())
            .env("BNOOD_DEVICE", value)
            .output()
            .expect("bnood runs")
    };
    let out = run("tpu");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("unknown backend `tpu`"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // Blank: the default backend is chosen, and the next check (no budget) speaks.
    let err = text(&run(" ").stderr);
    assert!(err.contains("--minutes, --epochs or --steps"), "{err}");
}

/// Exit status 1, one `error:` line, and no panic (issue 12: no input makes bnood panic).
fn assert_refused(out: &Output, needle: &str) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "wanted `{needle}` in: {err}");
    err
}

#[test]
fn train_refuses_a_negative_nan_infinite_huge_or_zero_budget() {
    let dir = scratch("bad-budget");
    let m = dir.join("m.bpk");
    let m = m.to_str().expect("utf8");
    for minutes in ["-1", "NaN", "inf", "1e300", "0"] {
        let out = bnood(&["train", "--minutes", minutes, "--out", m]);
        assert_refused(&out, "--minutes");
        let flag = format!("--minutes={minutes}");
        assert_refused(&bnood(&["train", &flag, "--out", m]), "--minutes");
    }
    assert_refused(&bnood(&["train", "--steps", "0", "--out", m]), "--steps 0");
    assert!(!Path::new(m).exists(), "no untrained model saved");
}

#[test]
fn train_refuses_learning_curve_flags_that_cannot_work_before_any_work() {
    let dir = scratch("curve-flags");
    let m = dir.join("m.bpk");
    let m = m.to_str().expect("utf8");
    let idx = dir.join("mine-idx3-ubyte");
    write_idx(&idx, &images(70, 28 * 28, 3), 28, 28);
    let idx = idx.to_str().expect("utf8");
    assert_refused(
        &bnood(&[
            "train",
            "--steps",
            "1",
            "--stop-when-flat",
            "0.005",
            "--out",
            m,
        ]),
        "give --eval-images too",
    );
    assert_refused(
        &bnood(&[
            "train",
            "--steps",
            "1",
            "--eval-images",
            "64",
            "--dataset",
            idx,
            "--out",
            m,
        ]),
        "held out only for a model of fmnist-train",
    );
    for lr in ["0", "-1", "NaN"] {
        let flag = format!("--lr={lr}");
        assert_refused(
            &bnood(&["train", "--steps", "1", &flag, "--out", m]),
            "--lr",
        );
    }
    assert!(!Path::new(m).exists(), "nothing trained");
}

#[test]
fn train_writes_and_report_redraws_the_learning_curve() {
    let dir = scratch("curve");
    let m = dir.join("m.bpk");
    let ms = m.to_str().expect("utf8");
    let out = bnood(&[
        "-q",
        "train",
        "--model",
        "realnvp",
        "--preset",
        "cpu",
        "--steps",
        "2",
        "--eval-images",
        "64",
        "--eval-every",
        "1",
        "--out",
        ms,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("held-out at step 2 (epoch 0.00): fmnist_test_running_bpd"),
        "{stdout}"
    );
    assert!(stdout.contains("budget spent: 2 steps"), "{stdout}");
    let csv = std::fs::read_to_string(dir.join("m.bpk.curve.csv")).expect("curve");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "step,epoch,lr,train_bpd,seconds,fmnist_test_running_bpd,fmnist_test_batch_bpd,mnist_test_batch_bpd"
    );
    assert_eq!(lines.len(), 4, "rows at steps 0, 1, 2: {csv}");
    let png = dir.join("m.bpk.curve.png");
    assert!(png.is_file());
    std::fs::remove_file(&png).expect("rm");
    let csv_path = dir.join("m.bpk.curve.csv");
    let out = bnood(&["report", csv_path.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.join("m.bpk.curve.png").is_file(), "report redraws it");
}

#[test]
fn train_refuses_an_output_folder_it_cannot_create_before_training() {
    let dir = scratch("bad-out");
    std::fs::write(dir.join("a-file"), b"x").expect("file");
    let out_file = dir.join("a-file/m.bpk");
    let started = std::time::Instant::now();
    let out = bnood(&[
        "train",
        "--minutes",
        "2",
        "--out",
        out_file.to_str().expect("utf8"),
    ]);
    assert_refused(&out, "cannot create its folder");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "refused before the 2-minute budget ran"
    );
}

#[test]
fn a_data_dir_that_does_not_exist_is_an_error_not_a_fall_back() {
    let out = bnood(&["--data-dir", "/nonexistent/typo", "datasets", "list"]);
    assert_refused(&out, "--data-dir /nonexistent/typo is not a folder");
}

#[test]
fn a_catalogue_name_that_is_also_a_local_folder_is_announced() {
    let dir = scratch("shadow");
    std::fs::create_dir_all(dir.join("kmnist")).expect("folder");
    let out = Command::new(env!("CARGO_BIN_EXE_bnood"))
        .args(["score", "--model", "/nonexistent/m.bpk", "--test", "kmnist"])
        .current_dir(&dir)
        .env("BNOOD_DATA_DIR", data_dir())
        .output()
        .expect("bnood runs");
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .next()
            .is_some_and(|l| l.contains("catalogue set") && l.contains("./kmnist")),
        "{err}"
    );
}

#[test]
fn a_json_file_that_is_not_a_report_is_called_that() {
    let dir = scratch("not-report");
    let bad = dir.join("x.json");
    std::fs::write(&bad, b"{\"hello\": 1}").expect("file");
    let err = assert_refused(
        &bnood(&["report", bad.to_str().expect("utf8")]),
        "is not a report of `bnood eval`",
    );
    assert!(!err.contains("serialise"), "{err}");
    assert_refused(&bnood(&["report", "/dev/zero"]), "not a regular file");
}

#[test]
fn bad_inputs_to_score_and_fit_are_refused_before_any_work() {
    let dir = scratch("bad-score");
    let (model, idx) = one_step_model_and_idx(&dir, 20);
    let m = model.to_str().expect("utf8");
    let t = idx.to_str().expect("utf8");
    // `--detector logp --test t` unless the arguments name others.
    let score = |extra: &[&str]| {
        let mut args = vec!["score", "--model", m, "-q"];
        if !extra.contains(&"--detector") {
            args.extend(["--detector", "logp"]);
        }
        if !extra.contains(&"--test") {
            args.extend(["--test", t]);
        }
        args.extend(extra);
        bnood(&args)
    };
    // Item 11: values that look negative are values, refused as out of range.
    let out = bnood(&[
        "score",
        "--model",
        m,
        "--detector",
        "bn",
        "--test",
        t,
        "--r1",
        "-0.1",
    ]);
    assert_refused(&out, "-0.1");
    assert_refused(&score(&["--fpr", "-0.5"]), "--fpr -0.5");
    assert_refused(&score(&["--fpr", "1.5"]), "--fpr 1.5");
    // Item 6: no input is overwritten (the model, its sidecar, the test file).
    let sidecar = format!("{m}.json");
    for victim in [m, sidecar.as_str(), t] {
        let before = std::fs::read(victim).expect("input");
        assert_refused(&score(&["--out", victim]), "would overwrite the input");
        assert_eq!(std::fs::read(victim).expect("input"), before, "{victim}");
    }
    assert_refused(
        &score(&["--out", "/nonexistent/dir/s.csv"]),
        "does not exist",
    );
    // Item 9: options that do not apply, and one-model "ensembles".
    assert_refused(&score(&["--ensemble", m]), "--ensemble is used by the WAIC");
    let same = format!("{}/./m.bpk", dir.display());
    assert_refused(
        &score(&["--detector", "waic", "--ensemble", &same]),
        "given twice",
    );
    let vae = dir.join("vae.bpk");
    let v = vae.to_str().expect("utf8");
    let out = bnood(&["train", "--model", "vae", "--steps", "1", "--out", v, "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_refused(
        &score(&["--detector", "waic", "--ensemble", v]),
        "another architecture",
    );
    let out = score(&["--vae-samples", "4"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning: --vae-samples has no effect"));
    let out = bnood(&[
        "score",
        "--model",
        v,
        "--detector",
        "logp",
        "--test",
        t,
        "--vae-samples",
        "100000",
    ]);
    assert_refused(&out, "limit of 256");
    // Item 3: a device, a FIFO and huge images are refused without reading them.
    assert_refused(&score(&["--test", "/dev/zero"]), "neither a regular file");
    let out = bnood(&["score", "--detector-file", "/dev/zero", "--test", t]);
    assert_refused(&out, "not a regular file");
    let fifo = dir.join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    assert_refused(&score(&["--test", fifo.to_str().expect("utf8")]), "a FIFO");
    let big = dir.join("big");
    std::fs::create_dir_all(&big).expect("dir");
    write_png(&big.join("a.png"), &vec![0; 300 * 200], 200, 300);
    assert_refused(
        &score(&["--test", big.to_str().expect("utf8")]),
        "[1, 200, 300]",
    );
    // Item 2: a sidecar whose configuration does not fit the weights, or cannot be built.
    let meta = dir.join("m.bpk.json");
    let original = std::fs::read_to_string(&meta).expect("sidecar");
    let mut json: serde_json::Value = serde_json::from_str(&original).expect("json");
    json["config"]["mid_channels"] = 100_000.into();
    std::fs::write(&meta, json.to_string()).expect("edited");
    assert_refused(&score(&[]), "limit of 250000000");
    json["config"]["mid_channels"] = 33.into();
    std::fs::write(&meta, json.to_string()).expect("edited");
    let err = assert_refused(&score(&[]), "do not belong together");
    assert!(err.len() < 500, "{err}");
    std::fs::write(&meta, original).expect("restored");
}

#[test]
fn score_rows_carry_the_index_in_the_file_and_png_file_names() {
    let dir = scratch("origins");
    let (model, idx) = one_step_model_and_idx(&dir, 30);
    let m = model.to_str().expect("utf8");
    let t = idx.to_str().expect("utf8");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "score",
            "--model",
            m,
            "--detector",
            "logp",
            "--test",
            t,
            "--reference-size",
            "100",
            "-q",
        ];
        args.extend(extra);
        let out = bnood(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let all = run(&[]);
    let score_of = |csv: &str| -> Vec<(usize, String)> {
        csv.lines()
            .skip(1)
            .map(|l| {
                let cols: Vec<&str> = l.split(',').collect();
                (cols[0].parse().expect("index"), cols[1].to_string())
            })
            .collect()
    };
    let full = score_of(&all);
    let subset = score_of(&run(&["--test-size", "6"]));
    assert_eq!(subset.len(), 6);
    assert_ne!(
        subset.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    for (index, score) in &subset {
        assert_eq!(
            &full[*index].1, score,
            "row {index} traces back to its image"
        );
    }
    // PNG folders: a file column.
    let pngs = dir.join("pngs");
    std::fs::create_dir_all(&pngs).expect("dir");
    for (i, im) in images(3, 784, 5).iter().enumerate() {
        write_png(&pngs.join(format!("img{i}.png")), im, 28, 28);
    }
    let out = bnood(&[
        "score",
        "--model",
        m,
        "--detector",
        "logp",
        "--test",
        pngs.to_str().expect("utf8"),
        "--reference-size",
        "100",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "index,file,score,p_value,ood");
    assert!(lines[2].starts_with("1,img1.png,"), "{csv}");
}

#[test]
fn resume_without_a_checkpoint_warns_and_an_interrupted_save_is_finished() {
    let dir = scratch("resume");
    let model = dir.join("m.bpk");
    let m = model.to_str().expect("utf8");
    let out = bnood(&["train", "--steps", "1", "--resume", "--out", m, "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("warning: --resume"),
        "{}",
        text(&out.stderr)
    );
    // A save killed after its commit point: the sidecar is still pending.
    let sidecar = dir.join("m.bpk.json");
    std::fs::rename(&sidecar, dir.join("m.bpk.json.pending")).expect("pending");
    std::fs::write(
        dir.join("m.bpk.commit"),
        br#"{"step":1,"with_optimizer":true}"#,
    )
    .expect("marker");
    let out = bnood(&["train", "--steps", "2", "--resume", "--out", m, "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 steps"),
        "{}",
        text(&out.stdout)
    );
    assert!(!dir.join("m.bpk.commit").exists());
}

#[test]
fn models_list_names_every_shipped_checkpoint_and_verifies_it() {
    let out = bnood(&["models", "list"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", text(&out.stderr));
    for s in bnood::models::zoo::SHIPPED {
        assert!(stdout.contains(s.name), "{} missing:\n{stdout}", s.name);
        assert!(stdout.contains(s.command), "{} command missing", s.name);
    }
    assert_eq!(
        stdout.matches("MD5 verified").count(),
        bnood::models::zoo::SHIPPED.len(),
        "{stdout}"
    );
}

#[test]
fn score_takes_a_shipped_model_by_name() {
    let out = bnood(&[
        "-q",
        "score",
        "--model",
        "realnvp-fmnist",
        "--detector",
        "logp",
        "--reference-size",
        "32",
        "--test",
        "kmnist",
        "--test-size",
        "8",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A header and one row per image.
    assert_eq!(
        text(&out.stdout).lines().count(),
        9,
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_changed_shipped_checkpoint_is_refused_with_its_checksums() {
    let dir = scratch("damaged-models");
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let entry = bnood::models::zoo::find("realnvp-fmnist").expect("shipped");
    let mut weights = std::fs::read(shipped.join(entry.file)).expect("shipped file");
    let last = weights.len() - 1;
    weights[last] ^= 1;
    std::fs::write(dir.join(entry.file), weights).expect("copy");
    let sidecar = format!("{}.json", entry.file);
    std::fs::copy(shipped.join(&sidecar), dir.join(&sidecar)).expect("copy");
    let out = bnood(&[
        "--models-dir",
        dir.to_str().expect("utf-8"),
        "score",
        "--model",
        "realnvp-fmnist",
        "--test",
        "kmnist",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(entry.md5), "{err}");
    assert!(err.contains("git checkout models/"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_model_name_lists_the_shipped_ones() {
    let out = bnood(&["score", "--model", "realnvp-mnist", "--test", "kmnist"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("realnvp-fmnist"), "{err}");
    assert!(err.contains("bnood models list"), "{err}");
}

/// `bnood monitor` rows of a run on `input` with a one-step model: windows of 8, K = 19.
fn monitor(model: &str, input: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "monitor",
        "--model",
        model,
        "--input",
        input,
        "--window",
        "8",
        "--null-windows",
        "19",
        "--reference-size",
        "300",
        "--comparison-size",
        "100",
        "-q",
    ];
    args.extend(extra);
    bnood(&args)
}

#[test]
fn monitor_gives_one_row_per_window_and_statistic_with_p_values() {
    let dir = scratch("monitor");
    let (model, idx) = one_step_model_and_idx(&dir, 43);
    let (m, t) = (model.to_str().expect("utf8"), idx.to_str().expect("utf8"));
    let out = monitor(m, t, &["--statistic", "bn,ks,mmd"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "window,first,last,size,statistic,value,p_value,flagged"
    );
    assert_eq!(lines.len(), 1 + 5 * 3, "{csv}"); // 43 images: 5 windows of 8
    assert!(lines[1].starts_with("0,0,7,8,bn,"), "{csv}");
    assert!(lines[15].starts_with("4,32,39,8,mmd,"), "{csv}");
    for line in &lines[1..] {
        let cols: Vec<&str> = line.split(',').collect();
        let p: f64 = cols[6].parse().expect("p-value");
        assert!((1.0 / 20.0 - 1e-12..=1.0).contains(&p), "{line}");
        assert_eq!(cols[7] == "true", p <= 0.05, "{line}");
    }
    // The 3 images that do not fill a window are named on stderr.
    assert!(
        text(&out.stderr).contains("last 3 image(s)"),
        "{}",
        text(&out.stderr)
    );
    // JSON Lines: one object per row.
    let out = monitor(m, t, &["--format", "json", "--max-windows", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["first"], 8);
    assert_eq!(rows[1]["statistic"], "bn");
    // Issue 27: an input shorter than one window is refused (before the fit), and the BN
    // test's Monte Carlo draws are capped.
    let short = dir.join("short-idx3-ubyte");
    write_idx(&short, &images(3, 784, 5), 28, 28);
    assert_refused(
        &monitor(m, short.to_str().expect("utf8"), &[]),
        "fewer than one window",
    );
    let det = dir.join("det.json");
    let out = bnood(&[
        "fit",
        "--model",
        m,
        "--detector",
        "bn",
        "--draws",
        "1000000000",
        "--out",
        det.to_str().expect("utf8"),
        "-q",
    ]);
    assert_refused(&out, "must lie in 1..=1000");
    assert!(!det.exists());
}

#[test]
fn monitor_refuses_bad_flags_naming_them_before_any_work() {
    let dir = scratch("monitor-bad");
    let model = dir.join("absent.bpk");
    let (m, t) = (model.to_str().expect("utf8"), "fmnist");
    for (extra, needle) in [
        (vec!["--window", "1"], "at least 2"),
        (vec!["--alpha", "1.5"], "strictly between 0 and 1"),
        (vec!["--null-windows", "5"], "at least 19 null windows"),
        (
            vec!["--shares", "0,0.5"],
            "--shares belongs to the power study",
        ),
        (vec!["--window", "8,16"], "several sizes are for --study"),
        (vec!["--follow"], "--follow watches a folder"),
        (
            vec!["--format", "markdown"],
            "--format markdown is for --study",
        ),
        (vec!["--study", "mnist", "--follow"], "drop one of them"),
        (
            vec!["--max-windows", "0"],
            "--max-windows 0 would test nothing",
        ),
        (
            vec!["--null-windows", "4000000000"],
            "above the limit of 100000",
        ),
    ] {
        let mut args = vec!["monitor", "--model", m, "--input", t];
        args.extend(&extra);
        let out = bnood(&args);
        assert_refused(&out, needle);
    }
}

#[test]
fn monitor_follow_tests_each_window_as_png_files_arrive() {
    let dir = scratch("monitor-follow");
    let (model, _) = one_step_model_and_idx(&dir, 1);
    let incoming = dir.join("incoming");
    std::fs::create_dir_all(&incoming).expect("dir");
    let pixels = images(24, 784, 9);
    for (i, im) in pixels[..8].iter().enumerate() {
        write_png(&incoming.join(format!("img{i:02}.png")), im, 28, 28);
    }
    let child = Command::new(env!("CARGO_BIN_EXE_bnood"))
        .args([
            "monitor",
            "--model",
            model.to_str().expect("utf8"),
            "--input",
            incoming.to_str().expect("utf8"),
            "--follow",
            "--poll-ms",
            "50",
            "--max-windows",
            "3",
            "--window",
            "8",
            "--null-windows",
            "19",
            "--reference-size",
            "300",
            "-q",
        ])
        .env("BNOOD_DATA_DIR", data_dir())
        .env_remove("BNOOD_DEVICE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bnood runs");
    // New files arrive while it runs, written under another name and renamed.
    for (i, im) in pixels[8..].iter().enumerate() {
        let tmp = incoming.join(format!("img{:02}.png.tmp", i + 8));
        write_png(&tmp, im, 28, 28);
        std::fs::rename(&tmp, incoming.join(format!("img{:02}.png", i + 8))).expect("rename");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .expect("bnood exits after 3 windows");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "window,first,last,first_file,last_file,size,statistic,value,p_value,flagged"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[1].starts_with("0,0,7,img00.png,img07.png,8,bn,"),
        "{csv}"
    );
    assert!(
        lines[3].starts_with("2,16,23,img16.png,img23.png,8,bn,"),
        "{csv}"
    );
}

/// Issue 27 item 3: a failed write to stdout is an error (exit 1, one line), not a panic
/// (exit 101); a reader that closes the pipe early (`| head -1`) ends the run quietly.
#[test]
fn a_failed_write_to_stdout_is_an_error_and_a_closed_pipe_ends_the_run_quietly() {
    use std::io::Read as _;
    use std::process::Stdio;
    if Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = Command::new(env!("CARGO_BIN_EXE_bnood"))
            .args(["datasets", "list"])
            .env("BNOOD_DATA_DIR", data_dir())
            .stdout(full)
            .output()
            .expect("bnood runs");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("cannot write standard output"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_bnood"))
        .args(["datasets", "list"])
        .env("BNOOD_DATA_DIR", data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bnood runs");
    drop(child.stdout.take()); // the reader is gone before the first line
    let status = child.wait().expect("exits");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr read");
    assert!(status.success(), "{status:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Issue 27 item 1: `score --detector bn` calibrates per-image flags in-pool by default and
/// gives a verdict on the whole test set as one pool (stderr line, `pool` in the JSON), at
/// `--alpha`.
#[test]
fn score_with_the_bn_test_gives_a_pool_verdict_and_in_pool_calibration_by_default() {
    let dir = scratch("pool-verdict");
    let (model, idx) = one_step_model_and_idx(&dir, 60);
    let out = bnood(&[
        "score",
        "--model",
        model.to_str().expect("utf8"),
        "--detector",
        "bn",
        "--test",
        idx.to_str().expect("utf8"),
        "--reference-size",
        "300",
        "--format",
        "json",
        "--alpha",
        "0.01",
        "-q",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("pool verdict: "), "{err}");
    assert!(
        !err.contains("exceed --fpr"),
        "no miscalibration note: {err}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        json["detector"]
            .as_str()
            .is_some_and(|d| d.contains("in-pool calibration")),
        "{json}"
    );
    let pool = &json["pool"];
    assert_eq!(pool["pool_size"], 60, "{pool}");
    // One batch of the 60 images against null batches of 60 of the 300 reference images
    // the fitted test keeps (150 mixing, 150 held out).
    assert_eq!(
        (pool["batches"].as_u64(), pool["batch_size"].as_u64()),
        (Some(1), Some(60)),
        "{pool}"
    );
    assert_eq!(pool["reference_size"], 300, "{pool}");
    assert_eq!(pool["null_batches"], 200, "{pool}");
    assert!(
        pool["rank_p_value"].is_f64(),
        "in-pool: the rank test too: {pool}"
    );
    assert_eq!(pool["alpha"], 0.01, "{pool}");
    let p = pool["p_value"].as_f64().expect("p-value");
    assert_eq!(pool["ood"], p <= 0.01, "{pool}");
    // The paper's calibration stays selectable, with a verdict from the mixing images.
    let out = bnood(&[
        "score",
        "--model",
        model.to_str().expect("utf8"),
        "--detector",
        "bn",
        "--bn-calibration",
        "held-out",
        "--pool-null-batches",
        "20",
        "--test",
        idx.to_str().expect("utf8"),
        "--reference-size",
        "300",
        "--format",
        "json",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["pool"]["reference_size"], 150, "{json}");
    assert_refused(
        &bnood(&[
            "score", "--model", "x.bpk", "--test", "mnist", "--alpha", "0",
        ]),
        "--alpha 0 must lie strictly between 0 and 1",
    );
    // Issue 27: a tiny target is printed as typed, not as 300 digits.
    let m = model.to_str().expect("utf8");
    let i = idx.to_str().expect("utf8");
    let out = bnood(&[
        "score",
        "--model",
        m,
        "--test",
        i,
        "--detector",
        "logp",
        "--reference-size",
        "100",
        "--fpr",
        "1e-300",
    ]);
    let err = assert_refused(&out, "false-positive rate 1e-300 cannot be estimated");
    assert!(err.len() < 600, "{err}");
    // A background model that is the scored model itself gets its own error.
    let out = bnood(&[
        "score",
        "--model",
        m,
        "--background",
        m,
        "--detector",
        "likelihood-ratio",
        "--test",
        i,
        "--reference-size",
        "100",
    ]);
    let err = assert_refused(&out, "the background model");
    assert!(!err.contains("ensemble"), "{err}");
}

/// Issue 27 item 3: clap's own errors exit 1 like every refusal; a data or models folder
/// named in the environment must exist; eval's study settings are checked before Table 2.
#[test]
fn parse_errors_exit_1_and_folders_in_the_environment_must_exist() {
    let out = bnood(&["score", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = bnood(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    // A negative count is read as a value and refused as one, not as an unknown flag `-5`.
    let out = bnood(&[
        "score",
        "--model",
        "m.bpk",
        "--test",
        "mnist",
        "--test-size",
        "-5",
    ]);
    assert_refused(&out, "invalid value '-5' for '--test-size");
    for var in ["BNOOD_DATA_DIR", "BNOOD_MODELS_DIR"] {
        let out = Command::new(env!("CARGO_BIN_EXE_bnood"))
            .args(["models", "list"])
            .env(var, "/no/such/folder")
            .output()
            .expect("bnood runs");
        assert_refused(&out, &format!("{var}=/no/such/folder is not a folder"));
    }
    for (flag, value, needle) in [
        ("--table5", "2", "--table5 2 must lie in (0, 1]"),
        ("--sweep", "1.5", "--sweep 1.5 must lie in [0, 1]"),
    ] {
        let out = bnood(&["eval", "--model", "no-such.bpk", flag, value]);
        assert_refused(&out, needle);
    }
    let out = bnood(&[
        "eval",
        "--model",
        "no-such.bpk",
        "--contamination",
        "mnist",
        "--fractions",
        "0.1,1.5",
    ]);
    assert_refused(&out, "--fractions 1.5 must lie in (0, 1]");
    // An earlier report in --out is not overwritten silently; with --overwrite its plots
    // go too, so none is left beside the new report.
    let dir = scratch("eval-out");
    std::fs::write(dir.join("eval.json"), "{}").expect("earlier report");
    std::fs::write(dir.join("eval-roc-mnist.png"), "png").expect("earlier plot");
    std::fs::write(dir.join("notes.txt"), "mine").expect("a user's file");
    let d = dir.to_str().expect("utf8");
    let out = bnood(&["eval", "--model", "no-such.bpk", "--out", d]);
    assert_refused(&out, "holds the report of an earlier run");
    assert!(dir.join("eval-roc-mnist.png").exists());
    let out = bnood(&["eval", "--model", "no-such.bpk", "--out", d, "--overwrite"]);
    assert_refused(&out, "no-such.bpk");
    assert!(!dir.join("eval.json").exists() && !dir.join("eval-roc-mnist.png").exists());
    assert!(
        dir.join("notes.txt").exists(),
        "only the report's own files are removed"
    );
}

/// Issue 27 item 3: `monitor --follow` skips a garbage or wrong-shape PNG with a warning and
/// goes on; with `--out`, a restart resumes after the last window tested and appends its
/// rows, instead of testing the folder from window 0 again.
#[test]
fn monitor_follow_skips_bad_files_and_resumes_where_it_stopped() {
    let dir = scratch("monitor-resume");
    let (model, _) = one_step_model_and_idx(&dir, 1);
    let incoming = dir.join("incoming");
    std::fs::create_dir_all(&incoming).expect("dir");
    let pixels = images(16, 784, 7);
    for (i, im) in pixels[..9].iter().enumerate() {
        write_png(&incoming.join(format!("img{i:02}.png")), im, 28, 28);
    }
    std::fs::write(incoming.join("img04x.png"), b"not a png").expect("garbage");
    write_png(&incoming.join("img06x.png"), &vec![0; 64 * 64], 64, 64);
    // Written a minute ago: not a file still being written, so skipped at the first look.
    for bad in ["img04x.png", "img06x.png"] {
        std::fs::File::options()
            .write(true)
            .open(incoming.join(bad))
            .and_then(|f| {
                f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            })
            .expect("mtime");
    }
    let rows = dir.join("rows.csv");
    let run = |max_windows: &str| {
        Command::new(env!("CARGO_BIN_EXE_bnood"))
            .args([
                "monitor",
                "--model",
                model.to_str().expect("utf8"),
                "--input",
                incoming.to_str().expect("utf8"),
                "--follow",
                "--poll-ms",
                "50",
                "--max-windows",
                max_windows,
                "--window",
                "8",
                "--null-windows",
                "19",
                "--reference-size",
                "300",
                "--out",
                rows.to_str().expect("utf8"),
                "-q",
            ])
            .env("BNOOD_DATA_DIR", data_dir())
            .env_remove("BNOOD_DEVICE")
            .output()
            .expect("bnood runs")
    };
    let out = run("1");
    let first = text(&out.stderr);
    assert!(out.status.success(), "{first}");
    for (i, im) in pixels[9..].iter().enumerate() {
        write_png(&incoming.join(format!("img{:02}.png", i + 9)), im, 28, 28);
    }
    let out = run("2");
    let second = text(&out.stderr);
    assert!(out.status.success(), "{second}");
    // Each bad file is reported once, in the first run, and the stream goes on.
    for bad in ["skipped img04x.png", "skipped img06x.png"] {
        assert!(first.contains(bad), "{first}");
        assert!(!second.contains(bad), "not taken again: {second}");
    }
    let csv = std::fs::read_to_string(&rows).expect("rows");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "one header, a row per window over both runs: {csv}"
    );
    assert!(lines[0].starts_with("window,"), "{csv}");
    assert!(
        lines[1].starts_with("0,0,7,img00.png,img07.png,8,bn,"),
        "{csv}"
    );
    assert!(
        lines[2].starts_with("1,8,15,img08.png,img15.png,8,bn,"),
        "{csv}"
    );
}

/// Issue 25: `bnood sample` writes seeded samples as an IDX file that `score --test` reads,
/// and a PNG grid; it never writes over a model's files.
#[test]
fn sample_writes_images_that_score_reads_and_a_png_grid() {
    let dir = scratch("sample");
    let (model, _) = one_step_model_and_idx(&dir, 1);
    let m = model.to_str().expect("utf8");
    let idx = dir.join("samples-idx3-ubyte");
    let grid = dir.join("samples.png");
    let run = |out: &Path| {
        bnood(&[
            "sample",
            "--model",
            m,
            "--n",
            "6",
            "--temperature",
            "0.8",
            "--seed",
            "5",
            "--out",
            out.to_str().expect("utf8"),
            "--grid",
            grid.to_str().expect("utf8"),
            "--columns",
            "3",
            "-q",
        ])
    };
    let out = run(&idx);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("drew 6 images"),
        "{}",
        text(&out.stdout)
    );
    let bytes = std::fs::read(&idx).expect("IDX");
    assert_eq!(bytes[..4], [0, 0, 0x08, 3]);
    assert_eq!(bytes.len(), 4 + 3 * 4 + 6 * 784);
    let png = std::fs::read(&grid).expect("grid");
    assert_eq!(png[..8], *b"\x89PNG\r\n\x1a\n");
    // The same seed draws the same images.
    let again = dir.join("again-idx3-ubyte");
    assert!(run(&again).status.success());
    assert_eq!(std::fs::read(&again).expect("IDX"), bytes);
    let out = bnood(&[
        "score",
        "--model",
        m,
        "--test",
        idx.to_str().expect("utf8"),
        "--detector",
        "logp",
        "--reference-size",
        "100",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 7, "a header and 6 rows");
    assert_refused(&run(&dir.join("m.bpk.json")), "would overwrite");
    assert_refused(
        &bnood(&[
            "sample",
            "--model",
            m,
            "--temperature",
            "0",
            "--out",
            "x.idx",
        ]),
        "temperature 0 must lie in (0, 100]",
    );
}

/// A folder `dir/name` of `n` generated PNG images of `h × w` pixels, RGB or gray.
fn png_folder(dir: &Path, name: &str, n: usize, (h, w): (u32, u32), rgb: bool) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).expect("dir");
    let (channels, color) = if rgb {
        (3, png::ColorType::Rgb)
    } else {
        (1, png::ColorType::Grayscale)
    };
    let len = channels * (h * w) as usize;
    for (i, im) in images(n, len, 5).iter().enumerate() {
        write_png_as(&folder.join(format!("{i:03}.png")), im, h, w, color);
    }
    folder
}

/// Trains a default RealNVP for one step on `dataset` into `out`; returns the image shape
/// its sidecar records.
fn train_one_step(dataset: &Path, out: &Path) -> serde_json::Value {
    let (d, o) = (dataset.to_str().expect("utf8"), out.to_str().expect("utf8"));
    let out_run = bnood(&["train", "--dataset", d, "--steps", "1", "--out", o, "-q"]);
    assert!(out_run.status.success(), "{}", text(&out_run.stderr));
    sidecar(out)["config"]["image_shape"].clone()
}

fn sidecar(model: &Path) -> serde_json::Value {
    let mut path = model.as_os_str().to_owned();
    path.push(".json");
    serde_json::from_slice(&std::fs::read(path).expect("sidecar")).expect("JSON sidecar")
}

/// Issue 31: a model takes its shape from the training images (32×32 RGB here), a folder of
/// mixed sizes is refused naming the odd file unless `--resize` is given, the preprocessing
/// is recorded in the checkpoint and applied to every set the model scores, a shape the
/// model cannot take is refused with the flag that fixes it, and a resume must repeat it.
#[test]
fn models_take_the_shape_of_the_training_images_and_keep_their_preprocessing() {
    let dir = scratch("own-shapes");
    let rgb = png_folder(&dir, "rgb", 90, (32, 32), true);
    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).expect("dir");
    for i in 0..64usize {
        let side = [20u32, 24, 20, 28][i % 4];
        let n = (side * side) as usize;
        write_png(
            &mixed.join(format!("{i:03}.png")),
            &images(1, n, i as u8)[0],
            side,
            side,
        );
    }
    let s = |p: &Path| p.to_str().expect("utf8").to_string();
    let model = dir.join("rgb.bpk");
    assert_eq!(train_one_step(&rgb, &model), serde_json::json!([3, 32, 32]));
    let out = bnood(&[
        "score",
        "--model",
        &s(&model),
        "--detector",
        "logp",
        "--reference",
        &s(&rgb),
        "--reference-size",
        "60",
        "--test",
        &s(&rgb),
        "--test-size",
        "10",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        11,
        "a header and 10 rows"
    );

    // Mixed sizes: refused with the first odd file, then trained with --resize.
    let m2 = dir.join("gray.bpk");
    let train_mixed = |extra: &[&str]| {
        let mut args = vec!["train", "--model", "vae"];
        let (d, m) = (s(&mixed), s(&m2));
        let mut tail = vec!["--dataset", &d, "--steps", "1", "--out", &m, "-q"];
        args.append(&mut tail);
        args.extend_from_slice(extra);
        bnood(&args)
    };
    let err = assert_refused(&train_mixed(&[]), "001.png has shape");
    assert!(err.contains("--resize"), "{err}");
    // 18×18 is not a multiple of 4, which the VAE needs: the error names the fix.
    let err = assert_refused(&train_mixed(&["--resize", "18,18"]), "cannot take them");
    assert!(err.contains("--resize 20,20"), "{err}");
    let out = train_mixed(&["--resize", "16,16"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let meta = sidecar(&m2);
    assert_eq!(
        meta["config"]["image_shape"],
        serde_json::json!([1, 16, 16])
    );
    assert_eq!(meta["preprocess"]["resize"], serde_json::json!([16, 16]));
    // Scoring the 32×32 RGB folder goes through the model's resize; its colour is refused,
    // as the model records no --grayscale.
    let out = bnood(&[
        "score",
        "--model",
        &s(&m2),
        "--detector",
        "logp",
        "--reference",
        &s(&mixed),
        "--reference-size",
        "10",
        "--test",
        &s(&rgb),
        "-q",
    ]);
    assert_refused(&out, "[3, 16, 16]");
    let out = bnood(&[
        "score",
        "--model",
        &s(&m2),
        "--detector",
        "logp",
        "--reference",
        &s(&mixed),
        "--reference-size",
        "40",
        "--test",
        &s(&mixed),
        "--test-size",
        "4",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 5, "a header and 4 rows");
    // A resume must repeat the preprocessing.
    let err = assert_refused(
        &train_mixed(&["--resize", "20,20", "--resume"]),
        "preprocessed with `--resize 16,16`",
    );
    assert!(err.contains("--resize 20,20"), "{err}");

    // --hold-out keeps a seeded share of the training set out of training and records it;
    // `--reference held-out` reads that part back (22 of 90 images here).
    let m3 = dir.join("held.bpk");
    let train_held = |share: &str, resume: bool| {
        let (d, m) = (s(&rgb), s(&m3));
        let mut args = vec![
            "train",
            "--dataset",
            &d,
            "--hold-out",
            share,
            "--steps",
            "1",
        ];
        args.extend_from_slice(&["--out", &m, "-q"]);
        if resume {
            args.push("--resume");
        }
        bnood(&args)
    };
    let out = train_held("0.25", false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sidecar(&m3)["held_out"]["fraction"], 0.25);
    let out = bnood(&[
        "score",
        "--model",
        &s(&m3),
        "--detector",
        "logp",
        "--reference",
        "held-out",
        "--test",
        &s(&rgb),
        "--test-size",
        "5",
        "--format",
        "json",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_refused(
        &bnood(&[
            "score",
            "--model",
            &s(&model),
            "--detector",
            "logp",
            "--reference",
            "held-out",
            "--test",
            &s(&rgb),
            "-q",
        ]),
        "was trained without --hold-out",
    );
    assert_refused(&train_held("0.2", true), "held out of its training set");
    assert_refused(&train_held("1.5", false), "--hold-out 1.5");
}

/// Issue 31, done-when: a non-square gray size trains and `monitor` uses the model; the
/// CIFAR-10 test set is read by name (a full-size fixture batch in `--data-dir`) and scored
/// by a model of 3×32×32 images.
#[test]
fn a_non_square_gray_model_monitors_and_a_rgb_model_scores_cifar10_by_name() {
    let dir = scratch("non-square");
    let gray = png_folder(&dir, "gray", 80, (12, 8), false);
    let s = |p: &Path| p.to_str().expect("utf8").to_string();
    let model = dir.join("gray.bpk");
    assert_eq!(train_one_step(&gray, &model), serde_json::json!([1, 12, 8]));
    let out = bnood(&[
        "monitor",
        "--model",
        &s(&model),
        "--input",
        &s(&gray),
        "--reference",
        &s(&gray),
        "--reference-size",
        "80",
        "--window",
        "16",
        "--null-windows",
        "20",
        "--format",
        "csv",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).lines().count() > 1,
        "{}",
        text(&out.stdout)
    );

    // CIFAR-10 by name: a test batch of 10,000 records (what the catalogue counts).
    let data = dir.join("data");
    let batches = data.join("cifar10").join("cifar-10-batches-bin");
    std::fs::create_dir_all(&batches).expect("dir");
    let records: Vec<u8> = (0..10_000u32)
        .flat_map(|i| {
            let mut r = vec![(i % 10) as u8];
            r.extend((0..3072u32).map(|j| ((i * 7 + j * 13) % 251) as u8));
            r
        })
        .collect();
    std::fs::write(batches.join("test_batch.bin"), records).expect("batch");
    let rgb = png_folder(&dir, "rgb", 70, (32, 32), true);
    let rgb_model = dir.join("rgb.bpk");
    assert_eq!(
        train_one_step(&rgb, &rgb_model),
        serde_json::json!([3, 32, 32])
    );
    let out = bnood(&[
        "--data-dir",
        &s(&data),
        "score",
        "--model",
        &s(&rgb_model),
        "--detector",
        "logp",
        "--reference",
        &s(&rgb),
        "--reference-size",
        "60",
        "--test",
        "cifar10",
        "--test-size",
        "5",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 6, "a header and 5 rows");
}
