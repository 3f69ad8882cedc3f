//! Behaviour of the CIFAR-10 binary and SVHN MAT-file readers.
//!
//! CIFAR-10 batches and archives are built in the tests; the SVHN fixtures in
//! `tests/fixtures/` were written by scipy (see `make_svhn_fixtures.py`), and a few more
//! MAT-files are assembled here byte by byte for cases scipy cannot produce.

use std::io::Write;
use std::path::{Path, PathBuf};

use bnood_data::DataError;
use bnood_data::cifar::{decode_batches, extract_archive};
use bnood_data::svhn::decode_mat;
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A CIFAR-10 record: label byte, then R, G, B planes with recognisable values.
fn cifar_record(label: u8, seed: u8) -> Vec<u8> {
    let mut record = vec![label];
    for c in 0..3u32 {
        for i in 0..1024u32 {
            record.push(((i * 7 + c * 85 + u32::from(seed) * 13) % 256) as u8);
        }
    }
    record
}

fn message(err: &DataError) -> String {
    err.to_string()
}

/// A fresh, empty scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bnood-cifar-svhn-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// All file names under `dir`, recursively, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A tar header for a regular file with `name` written raw (bypassing the `tar` crate's
/// own refusal of `..`, to build hostile archives).
fn raw_header(name: &str, size: usize) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    let bytes = name.as_bytes();
    header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    header
}

/// `cifar-10-binary.tar.gz`-like bytes holding `entries` (name, content) in order.
fn tar_gz(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, content) in entries {
        builder
            .append(&raw_header(name, content.len()), content.as_slice())
            .expect("append entry");
    }
    builder
        .into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip")
}

fn fixture(name: &str) -> (PathBuf, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("read fixture {}: {e}", path.display()));
    (path, bytes)
}

/// The integers of the JSON array after `"key":` in `json` (enough JSON for the fixture).
fn json_ints(json: &str, key: &str) -> Vec<u32> {
    let start = json
        .find(&format!("\"{key}\":["))
        .unwrap_or_else(|| panic!("key {key} in expected json"))
        + key.len()
        + 4;
    let end = start + json[start..].find(']').expect("closing bracket");
    json[start..end]
        .split(',')
        .map(|v| v.trim().parse().expect("integer"))
        .collect()
}

struct Expected {
    shape: [usize; 4],
    labels: Vec<u32>,
    pixels: Vec<u8>,
}

fn expected_svhn() -> Expected {
    let (_, bytes) = fixture("svhn_tiny_expected.json");
    let json = String::from_utf8(bytes).expect("utf-8 json");
    let shape = json_ints(&json, "shape");
    Expected {
        shape: [
            shape[0] as usize,
            shape[1] as usize,
            shape[2] as usize,
            shape[3] as usize,
        ],
        labels: json_ints(&json, "labels"),
        pixels: json_ints(&json, "pixels")
            .into_iter()
            .map(|p| u8::try_from(p).expect("pixel byte"))
            .collect(),
    }
}

/// One variable for [`mat_file`]: name, array class, dims, storage type, little-endian data.
struct Var<'a> {
    name: &'a str,
    class: u32,
    dims: &'a [i32],
    data_type: u32,
    data: Vec<u8>,
}

fn pad8(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(8) {
        v.push(0);
    }
}

fn element(data_type: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&data_type.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    pad8(&mut out);
    out
}

fn matrix(var: &Var) -> Vec<u8> {
    let mut content = Vec::new();
    let mut flags = var.class.to_le_bytes().to_vec();
    flags.extend_from_slice(&[0; 4]);
    content.extend(element(6, &flags));
    let dims: Vec<u8> = var.dims.iter().flat_map(|d| d.to_le_bytes()).collect();
    content.extend(element(5, &dims));
    // Names longer than 4 bytes use a normal element, shorter ones the packed small form.
    if var.name.len() <= 4 {
        let mut small = (1u32 | (var.name.len() as u32) << 16)
            .to_le_bytes()
            .to_vec();
        small.extend_from_slice(var.name.as_bytes());
        pad8(&mut small);
        content.extend(small);
    } else {
        content.extend(element(1, var.name.as_bytes()));
    }
    content.extend(element(var.data_type, &var.data));
    element(14, &content)
}

/// A little-endian level-5 MAT-file holding `vars`, each zlib-compressed if `compress`.
fn mat_file(vars: &[Var], compress: bool) -> Vec<u8> {
    let mut out = b"MATLAB 5.0 MAT-file, written by bnood tests".to_vec();
    out.resize(116, b' ');
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    for var in vars {
        let m = matrix(var);
        if compress {
            let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
            z.write_all(&m).expect("zlib");
            let z = z.finish().expect("zlib finish");
            out.extend_from_slice(&15u32.to_le_bytes());
            out.extend_from_slice(&(z.len() as u32).to_le_bytes());
            out.extend_from_slice(&z);
        } else {
            out.extend(m);
        }
    }
    out
}

/// `X` as uint8 [32, 32, 3, n], value of MATLAB element k being `k % 251`.
fn x_var(n: usize) -> Var<'static> {
    let dims: &'static [i32] = Box::leak(vec![32, 32, 3, n as i32].into_boxed_slice());
    Var {
        name: "X",
        class: 9,
        dims,
        data_type: 2,
        data: (0..n * 3072).map(|k| (k % 251) as u8).collect(),
    }
}

/// `y` as class double, `n × 1`, stored as `data_type` with `data`.
fn y_var(dims: &'static [i32], data_type: u32, data: Vec<u8>) -> Var<'static> {
    Var {
        name: "y",
        class: 6,
        dims,
        data_type,
        data,
    }
}

fn doubles(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn mat_path() -> PathBuf {
    PathBuf::from("built/test_32x32.mat")
}

// ---------------------------------------------------------------------------------------
// CIFAR-10
// ---------------------------------------------------------------------------------------

#[test]
fn cifar_two_record_batch_decodes_to_planar_pixels_and_labels() {
    let (a, b) = (cifar_record(3, 1), cifar_record(9, 2));
    let batch = [a.clone(), b.clone()].concat();
    let set = decode_batches(&[(PathBuf::from("data_batch_1.bin"), batch)]).expect("decode");
    assert_eq!(set.shape(), [2, 3, 32, 32]);
    assert_eq!(set.labels(), Some(&[3, 9][..]));
    assert_eq!(set.image(0), Some(&a[1..]));
    assert_eq!(set.image(1), Some(&b[1..]));
    // Channel planes: pixel (c=1, h=2, w=5) of image 0 is byte 1 + 1024 + 2·32 + 5 of its record.
    assert_eq!(set.pixels()[1024 + 2 * 32 + 5], a[1 + 1024 + 2 * 32 + 5]);
}

#[test]
fn cifar_batches_are_concatenated_in_order() {
    let batches = vec![
        (PathBuf::from("data_batch_1.bin"), cifar_record(1, 1)),
        (
            PathBuf::from("data_batch_2.bin"),
            [cifar_record(2, 2), cifar_record(0, 3)].concat(),
        ),
    ];
    let set = decode_batches(&batches).expect("decode");
    assert_eq!(set.shape(), [3, 3, 32, 32]);
    assert_eq!(set.labels(), Some(&[1, 2, 0][..]));
    assert_eq!(set.image(2), Some(&cifar_record(0, 3)[1..]));
}

#[test]
fn cifar_truncated_batch_is_an_error_naming_the_file() {
    let mut batch = [cifar_record(1, 1), cifar_record(2, 2)].concat();
    batch.truncate(batch.len() - 100);
    let err = decode_batches(&[(PathBuf::from("some/dir/data_batch_3.bin"), batch)])
        .expect_err("truncated");
    let msg = message(&err);
    assert!(matches!(err, DataError::Corrupt { .. }), "{msg}");
    assert!(msg.contains("data_batch_3.bin"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
    assert!(msg.contains("30,730,000"), "{msg}");
}

#[test]
fn cifar_empty_batch_file_and_empty_list_are_errors() {
    let err =
        decode_batches(&[(PathBuf::from("test_batch.bin"), Vec::new())]).expect_err("empty file");
    assert!(
        message(&err).contains("test_batch.bin") && message(&err).contains("empty"),
        "{err}"
    );
    let err = decode_batches(&[]).expect_err("no batches");
    assert!(message(&err).contains("no CIFAR-10 batch files"), "{err}");
}

#[test]
fn cifar_label_10_is_an_error_naming_file_and_record() {
    let batch = [cifar_record(4, 1), cifar_record(10, 2)].concat();
    let err = decode_batches(&[(PathBuf::from("test_batch.bin"), batch)]).expect_err("label 10");
    let msg = message(&err);
    assert!(msg.contains("test_batch.bin"), "{msg}");
    assert!(msg.contains("record 1 has label 10"), "{msg}");
}

#[test]
fn cifar_archive_extraction_writes_only_batch_files_and_no_temp_files() {
    let dir = scratch("extract");
    let archive = dir.join("cifar-10-binary.tar.gz");
    let batch1 = [cifar_record(1, 1), cifar_record(2, 2)].concat();
    let test = cifar_record(7, 9);
    std::fs::write(
        &archive,
        tar_gz(&[
            (
                "cifar-10-batches-bin/batches.meta.txt",
                b"airplane\nautomobile\n".to_vec(),
            ),
            ("cifar-10-batches-bin/data_batch_1.bin", batch1.clone()),
            (
                "cifar-10-batches-bin/readme.html",
                b"<html></html>".to_vec(),
            ),
            ("cifar-10-batches-bin/test_batch.bin", test.clone()),
            ("elsewhere/data_batch_9.bin", test.clone()),
        ]),
    )
    .expect("write archive");
    let dest = dir.join("datasets");
    let written = extract_archive(&archive, &dest).expect("extract");
    let out = dest.join("cifar-10-batches-bin");
    assert_eq!(
        written,
        vec![
            out.join("batches.meta.txt"),
            out.join("data_batch_1.bin"),
            out.join("test_batch.bin")
        ]
    );
    assert_eq!(
        files_under(&dest),
        [
            "cifar-10-batches-bin/batches.meta.txt",
            "cifar-10-batches-bin/data_batch_1.bin",
            "cifar-10-batches-bin/test_batch.bin"
        ]
    );
    assert_eq!(
        std::fs::read(out.join("data_batch_1.bin")).expect("read"),
        batch1
    );
    // The extracted files decode.
    let set = decode_batches(&[(
        out.join("test_batch.bin"),
        std::fs::read(out.join("test_batch.bin")).expect("read"),
    )])
    .expect("decode extracted");
    assert_eq!(set.labels(), Some(&[7][..]));
    // Extracting again replaces the files in place.
    extract_archive(&archive, &dest).expect("extract again");
    assert_eq!(files_under(&dest).len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cifar_archive_with_parent_dir_entry_is_refused_and_writes_nothing_outside() {
    let dir = scratch("evil");
    let archive = dir.join("cifar-10-binary.tar.gz");
    std::fs::write(
        &archive,
        tar_gz(&[
            ("cifar-10-batches-bin/data_batch_1.bin", cifar_record(1, 1)),
            ("../evil.bin", b"evil".to_vec()),
            ("cifar-10-batches-bin/../../evil.bin", b"evil".to_vec()),
        ]),
    )
    .expect("write archive");
    let dest = dir.join("datasets");
    let err = extract_archive(&archive, &dest).expect_err("hostile archive");
    let msg = message(&err);
    assert!(matches!(err, DataError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("../evil.bin") && msg.contains("refusing"),
        "{msg}"
    );
    assert!(msg.contains("cifar-10-binary.tar.gz"), "{msg}");
    // Nothing escaped: the only file anywhere under the scratch folder besides the archive is
    // the complete batch extracted before the hostile entry.
    assert_eq!(
        files_under(&dir),
        [
            "cifar-10-binary.tar.gz",
            "datasets/cifar-10-batches-bin/data_batch_1.bin"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cifar_archive_absolute_path_entry_is_refused() {
    let dir = scratch("absolute");
    let archive = dir.join("cifar-10-binary.tar.gz");
    std::fs::write(
        &archive,
        tar_gz(&[("/tmp/cifar-10-batches-bin/evil.bin", b"evil".to_vec())]),
    )
    .expect("write archive");
    let err = extract_archive(&archive, &dir.join("datasets")).expect_err("absolute path");
    assert!(message(&err).contains("absolute path"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cifar_truncated_archive_is_corrupt_and_leaves_no_partial_bin() {
    let dir = scratch("truncated");
    let archive = dir.join("cifar-10-binary.tar.gz");
    // Incompressible content so that truncating the gzip cuts into the batch's data.
    let mut state = 0x1234_5678u32;
    let noise: Vec<u8> = (0..3073 * 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect();
    let full = tar_gz(&[("cifar-10-batches-bin/data_batch_1.bin", noise)]);
    std::fs::write(&archive, &full[..full.len() / 2]).expect("write archive");
    let dest = dir.join("datasets");
    let err = extract_archive(&archive, &dest).expect_err("truncated archive");
    let msg = message(&err);
    assert!(matches!(err, DataError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("cifar-10-binary.tar.gz") && msg.contains("truncated"),
        "{msg}"
    );
    assert_eq!(
        files_under(&dest),
        Vec::<String>::new(),
        "no partial .bin and no temporary file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cifar_non_gzip_archive_is_corrupt() {
    let dir = scratch("notgz");
    let archive = dir.join("cifar-10-binary.tar.gz");
    std::fs::write(&archive, b"this is not a gzip file at all").expect("write");
    let err = extract_archive(&archive, &dir.join("datasets")).expect_err("not gzip");
    assert!(matches!(err, DataError::Corrupt { .. }), "{err}");
    assert!(message(&err).contains("cifar-10-binary.tar.gz"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// SVHN
// ---------------------------------------------------------------------------------------

#[test]
fn svhn_compressed_fixture_decodes_to_expected_pixels_and_labels() {
    let expected = expected_svhn();
    let (path, bytes) = fixture("svhn_tiny_compressed.mat");
    let set = decode_mat(&bytes, &path).expect("decode compressed fixture");
    assert_eq!(set.shape(), expected.shape);
    assert_eq!(set.labels(), Some(expected.labels.as_slice()));
    assert_eq!(
        set.labels(),
        Some(&[0, 1, 5, 0, 9][..]),
        "10 is the digit 0"
    );
    assert!(
        set.pixels() == expected.pixels.as_slice(),
        "pixels differ from scipy's"
    );
}

#[test]
fn svhn_uncompressed_fixture_decodes_to_expected_pixels_and_labels() {
    let expected = expected_svhn();
    let (path, bytes) = fixture("svhn_tiny_uncompressed.mat");
    let set = decode_mat(&bytes, &path).expect("decode uncompressed fixture");
    assert_eq!(set.shape(), expected.shape);
    assert_eq!(set.labels(), Some(expected.labels.as_slice()));
    assert!(
        set.pixels() == expected.pixels.as_slice(),
        "pixels differ from scipy's"
    );
}

#[test]
fn svhn_truncated_copies_are_errors_naming_the_variable() {
    for name in ["svhn_tiny_compressed.mat", "svhn_tiny_uncompressed.mat"] {
        let (path, bytes) = fixture(name);
        let err = decode_mat(&bytes[..300], &path).expect_err("300-byte prefix");
        let msg = message(&err);
        assert!(msg.contains(name), "{msg}");
        assert!(
            msg.contains("truncated") && msg.contains("variable `X`"),
            "{msg}"
        );
        // A cut inside `y` names `y`.
        let err = decode_mat(&bytes[..bytes.len() - 10], &path).expect_err("cut in y");
        assert!(
            message(&err).contains("variable `y`") && message(&err).contains("truncated"),
            "{err}"
        );
    }
}

#[test]
fn svhn_every_prefix_and_damaged_copy_is_an_error_not_a_panic() {
    for name in ["svhn_tiny_compressed.mat", "svhn_tiny_uncompressed.mat"] {
        let (path, bytes) = fixture(name);
        for len in (0..bytes.len())
            .step_by(7)
            .chain(bytes.len() - 8..bytes.len())
        {
            assert!(
                decode_mat(&bytes[..len], &path).is_err(),
                "{name} cut at {len} decoded"
            );
        }
        // Overwrite single bytes across the file (tags, sizes, dims, data): may decode (a pixel
        // changed) or fail, but must never panic.
        let mut state = 0x9e37_79b9u32;
        for _ in 0..400 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let mut damaged = bytes.clone();
            let at = 128 + (state as usize) % (bytes.len() - 128);
            damaged[at] = (state >> 8) as u8;
            let _ = decode_mat(&damaged, &path);
        }
    }
}

#[test]
fn svhn_damaged_zlib_stream_is_an_error_naming_zlib_and_the_variable() {
    let (path, mut bytes) = fixture("svhn_tiny_compressed.mat");
    for b in &mut bytes[2000..2040] {
        *b ^= 0x5a;
    }
    let err = decode_mat(&bytes, &path).expect_err("damaged zlib");
    let msg = message(&err);
    assert!(
        msg.contains("zlib") && msg.contains("variable `X`"),
        "{msg}"
    );
}

#[test]
fn svhn_file_without_y_is_an_error_naming_y() {
    let (path, bytes) = fixture("svhn_tiny_only_x.mat");
    let err = decode_mat(&bytes, &path).expect_err("no y");
    let msg = message(&err);
    assert!(msg.contains("svhn_tiny_only_x.mat"), "{msg}");
    assert!(msg.contains("variable `y` is missing"), "{msg}");
}

#[test]
fn svhn_non_mat_files_are_clear_errors() {
    let path = Path::new("downloads/test_32x32.mat");
    let html = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n".repeat(3);
    let err = decode_mat(&html, path).expect_err("html");
    assert!(
        message(&err).contains("not a MAT-file") && message(&err).contains("test_32x32.mat"),
        "{err}"
    );
    let err = decode_mat(b"tiny", path).expect_err("short");
    assert!(
        message(&err).contains("shorter than the 128-byte MAT-file header"),
        "{err}"
    );
    let err = decode_mat(&[], path).expect_err("empty");
    assert!(message(&err).contains("shorter than the 128-byte"), "{err}");
}

#[test]
fn svhn_big_endian_and_v73_files_are_rejected_with_a_reason() {
    let (path, mut bytes) = fixture("svhn_tiny_uncompressed.mat");
    bytes[126..128].copy_from_slice(b"MI");
    let err = decode_mat(&bytes, &path).expect_err("big-endian");
    assert!(message(&err).contains("big-endian"), "{err}");
    let mut v73 = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00".to_vec();
    v73.resize(512, 0);
    let err = decode_mat(&v73, &path).expect_err("v7.3");
    assert!(message(&err).contains("v7.3"), "{err}");
}

#[test]
fn svhn_labels_stored_as_small_integer_types_are_accepted() {
    // MATLAB stores a double array in the smallest type that holds its values.
    for (data_type, data) in [
        (2u32, vec![10u8, 3]),
        (4, [10u16, 3].iter().flat_map(|v| v.to_le_bytes()).collect()),
        (5, [10i32, 3].iter().flat_map(|v| v.to_le_bytes()).collect()),
        (9, doubles(&[10.0, 3.0])),
    ] {
        for compress in [false, true] {
            let bytes = mat_file(
                &[x_var(2), y_var(&[1, 2], data_type, data.clone())],
                compress,
            );
            let set =
                decode_mat(&bytes, &mat_path()).unwrap_or_else(|e| panic!("type {data_type}: {e}"));
            assert_eq!(set.labels(), Some(&[0, 3][..]));
            assert_eq!(set.shape(), [2, 3, 32, 32]);
            // Row-major (n=1, c=2, h=3, w=4) is MATLAB element 3 + 32·(4 + 32·(2 + 3·1)).
            assert_eq!(
                set.pixels()[3072 + 2 * 1024 + 3 * 32 + 4],
                ((3 + 32 * (4 + 32 * 5)) % 251) as u8
            );
        }
    }
}

#[test]
fn svhn_bad_labels_are_errors_naming_y() {
    let cases: [(Var, &str); 4] = [
        (y_var(&[2, 1], 9, doubles(&[1.0, 2.5])), "label 1 is 2.5"),
        (y_var(&[2, 1], 9, doubles(&[11.0, 2.0])), "label 0 is 11"),
        (y_var(&[2, 1], 2, vec![0, 2]), "label 0 is 0"),
        (
            y_var(&[3, 1], 9, doubles(&[1.0, 2.0, 3.0])),
            "expected [2, 1] or [1, 2]",
        ),
    ];
    for (y, phrase) in cases {
        let bytes = mat_file(&[x_var(2), y], true);
        let err = decode_mat(&bytes, &mat_path()).expect_err(phrase);
        let msg = message(&err);
        assert!(
            msg.contains("variable `y`") && msg.contains(phrase),
            "{msg}"
        );
    }
}

#[test]
fn svhn_wrong_x_dims_or_class_are_errors_naming_x() {
    let mut wrong_dims = x_var(2);
    wrong_dims.dims = &[32, 32, 1, 6];
    let bytes = mat_file(
        &[wrong_dims, y_var(&[2, 1], 9, doubles(&[1.0, 2.0]))],
        false,
    );
    let err = decode_mat(&bytes, &mat_path()).expect_err("wrong dims");
    assert!(
        message(&err).contains("variable `X`") && message(&err).contains("[32, 32, 3, N]"),
        "{err}"
    );

    let mut wrong_class = x_var(2);
    wrong_class.class = 6;
    let bytes = mat_file(
        &[wrong_class, y_var(&[2, 1], 9, doubles(&[1.0, 2.0]))],
        false,
    );
    let err = decode_mat(&bytes, &mat_path()).expect_err("wrong class");
    assert!(
        message(&err).contains("variable `X`") && message(&err).contains("uint8"),
        "{err}"
    );

    let mut short = x_var(2);
    short.data.truncate(3072);
    let bytes = mat_file(&[short, y_var(&[2, 1], 9, doubles(&[1.0, 2.0]))], true);
    let err = decode_mat(&bytes, &mat_path()).expect_err("count mismatch");
    assert!(
        message(&err).contains("variable `X`") && message(&err).contains("promise 6144 values"),
        "{err}"
    );
}

#[test]
fn svhn_extra_variables_and_long_names_are_ignored() {
    let other = Var {
        name: "__header_info",
        class: 6,
        dims: &[1, 1],
        data_type: 9,
        data: doubles(&[1.5]),
    };
    let bytes = mat_file(&[other, x_var(1), y_var(&[1, 1], 2, vec![7])], false);
    let set = decode_mat(&bytes, &mat_path()).expect("decode");
    assert_eq!(set.labels(), Some(&[7][..]));
}

/// Issue 31: CIFAR-10 is a named set like the MNIST family (`cifar10`, `cifar10-train`;
/// `svhn`, `svhn-train`), so `train`, `score` and `eval` take it by name; a full-size test
/// batch (10,000 records, as the catalogue counts) is read through `load_named` and
/// subsetted with the seed like any other set.
#[test]
fn cifar10_is_a_named_set_that_load_named_reads_and_subsets() {
    let dir = scratch("named");
    let batches = dir.join("cifar10").join("cifar-10-batches-bin");
    std::fs::create_dir_all(&batches).expect("dir");
    let records: Vec<u8> = (0..10_000u32)
        .flat_map(|i| cifar_record((i % 10) as u8, (i % 251) as u8))
        .collect();
    std::fs::write(batches.join("test_batch.bin"), records).expect("batch");
    let locator = bnood_data::Locator::only(&dir);
    for name in ["cifar10", "cifar10-train", "svhn", "svhn-train"] {
        assert!(bnood_data::is_catalogue_name(name), "{name}");
    }
    let set = bnood_data::load_named("cifar10", &locator, Some(5), 7).expect("cifar10 by name");
    assert_eq!((set.name(), set.shape()), ("CIFAR-10", [5, 3, 32, 32]));
    let again = bnood_data::load_named("cifar10", &locator, Some(5), 7).expect("again");
    assert_eq!(set.pixels(), again.pixels(), "same seed, same subset");
    // The training split's files are not there: the error lists where they were looked for.
    let err = bnood_data::load_named("cifar10-train", &locator, None, 0).expect_err("missing");
    assert!(message(&err).contains("data_batch_1.bin"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
