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
    let file = std::fs::File::create(path).expect("png file");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .expect("header")
        .write_image_data(pixels)
        .expect("pixels");
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
        "16",
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
