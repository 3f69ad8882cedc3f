//! The IDX reader rejects every malformed file with an error naming the file and the
//! problem, and never returns a partial set.

mod common;

use std::path::Path;

use bnood_data::DataError;
use bnood_data::catalogue::idx_images_with_labels;
use bnood_data::idx::{decode_idx, read_maybe_gzip};

fn p() -> &'static Path {
    Path::new("fixture-images.idx")
}

fn corrupt_message(bytes: &[u8]) -> String {
    let err = decode_idx(bytes, p()).expect_err("must be rejected");
    assert!(matches!(err, DataError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("fixture-images.idx"),
        "message names the file: {msg}"
    );
    msg
}

#[test]
fn a_valid_idx3_decodes_dims_and_payload() {
    let bytes = common::idx_bytes(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    let arr = decode_idx(&bytes, p()).expect("valid");
    assert_eq!(arr.dims, vec![2, 2, 3]);
    assert_eq!(arr.data, (1..=12).collect::<Vec<u8>>());
}

#[test]
fn wrong_magic_is_rejected() {
    let mut bytes = common::idx_bytes(&[1, 1, 1], &[0]);
    bytes[0] = 0x1f;
    let msg = corrupt_message(&bytes);
    assert!(msg.contains("expected two zero bytes"), "{msg}");
}

#[test]
fn non_byte_element_type_is_rejected() {
    let mut bytes = common::idx_bytes(&[1], &[0, 0, 0, 0]);
    bytes[2] = 0x0d; // float
    assert!(corrupt_message(&bytes).contains("only unsigned bytes (0x08)"));
}

#[test]
fn truncated_payload_is_rejected_with_both_lengths() {
    let bytes = common::idx_bytes(&[3, 28, 28], &vec![0; 3 * 784 - 10]);
    let msg = corrupt_message(&bytes);
    assert!(
        msg.contains("promise 2352 payload bytes but the file holds 2342 (truncated)"),
        "{msg}"
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let bytes = common::idx_bytes(&[2], &[1, 2, 3]);
    assert!(corrupt_message(&bytes).contains("has trailing bytes"));
}

#[test]
fn truncated_header_is_rejected() {
    let bytes = common::idx_bytes(&[10, 28, 28], &[]);
    assert!(corrupt_message(&bytes[..9]).contains("header declares 3 dimensions"));
    assert!(corrupt_message(&[0, 0]).contains("shorter than the 4-byte magic number"));
}

#[test]
fn zero_dimension_is_rejected() {
    let bytes = common::idx_bytes(&[0, 28, 28], &[]);
    assert!(corrupt_message(&bytes).contains("dimension 0 is 0"));
}

#[test]
fn truncated_gzip_is_an_error_not_a_partial_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gz = common::gzip(&common::idx_bytes(&[100, 28, 28], &vec![7; 100 * 784]));
    let path = dir.path().join("cut.gz");
    std::fs::write(&path, &gz[..gz.len() / 2]).expect("write");
    let err = read_maybe_gzip(&path).expect_err("truncated gzip");
    let msg = err.to_string();
    assert!(
        msg.contains("cut.gz") && msg.contains("not a valid gzip file"),
        "{msg}"
    );
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = read_maybe_gzip(Path::new("/nonexistent/bnood.idx")).expect_err("missing");
    assert!(
        err.to_string()
            .contains("cannot read /nonexistent/bnood.idx"),
        "{err}"
    );
}

#[test]
fn images_and_labels_with_different_counts_are_rejected() {
    let images = common::idx_bytes(&[3, 2, 2], &[0; 12]);
    let labels = common::idx_bytes(&[2], &[1, 2]);
    let err = idx_images_with_labels(&images, Path::new("img"), &labels, Path::new("lab"))
        .expect_err("mismatch");
    assert!(
        err.to_string()
            .contains("img holds 3 images but lab holds 2 labels"),
        "{err}"
    );
}

#[test]
fn a_labels_file_in_place_of_images_is_rejected() {
    let labels = common::idx_bytes(&[2], &[1, 2]);
    let err = idx_images_with_labels(&labels, Path::new("img"), &labels, Path::new("lab"))
        .expect_err("wrong ndim");
    assert!(
        err.to_string()
            .contains("an images file must have 3 dimension(s)"),
        "{err}"
    );
}
