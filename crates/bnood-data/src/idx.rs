//! Strict reader for the IDX format of MNIST-style datasets (raw or gzip-compressed).
//!
//! Layout: two zero bytes, a type byte (only `0x08`, unsigned byte, is used by these
//! datasets), a byte with the number of dimensions, one big-endian `u32` per dimension,
//! then the payload in row-major order. Images are `0x00000803` (`N × H × W`), labels
//! `0x00000801` (`N`). Anything else — wrong magic, zero dimensions, a payload shorter or
//! longer than the header promises, a truncated gzip stream — is an error naming the file.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;
use md5::{Digest, Md5};

use crate::error::{DataError, Result};

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions from the header, outermost first (e.g. `[N, 28, 28]`).
    pub dims: Vec<usize>,
    /// Payload, row-major, exactly `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

/// Reads a file whole, transparently decompressing gzip (detected by its magic bytes).
///
/// # Errors
/// [`DataError::Io`] if the file cannot be read, [`DataError::Corrupt`] if a gzip stream is
/// truncated or fails its CRC.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::with_capacity(bytes.len() * 4);
        GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut raw)
            .map_err(|e| DataError::corrupt(path, "gzip", gzip_failure(&e)))?;
        Ok(raw)
    } else {
        Ok(bytes)
    }
}

/// Why a gzip stream could not be decompressed, and what to do.
pub(crate) fn gzip_failure(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        format!("gzip decompression failed ({e}): the file is truncated; copy or download it again")
    } else {
        format!(
            "gzip decompression failed ({e}): the file is damaged (it fails gzip's own checks); copy or download it again"
        )
    }
}

/// MD5 of `bytes` as 32 lowercase hex digits.
pub fn md5_hex(bytes: &[u8]) -> String {
    md5_hex_of_parts(&[bytes])
}

/// [`md5_hex`] of `parts` one after the other, without joining them in memory.
pub fn md5_hex_of_parts(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Decodes IDX bytes. `path` is used only in error messages.
///
/// # Errors
/// [`DataError::Corrupt`] on a bad magic number, an unsupported element type, a zero
/// dimension, or a payload length that disagrees with the header.
pub fn decode_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let bad = |reason: String| DataError::corrupt(path, "IDX", reason);
    if bytes.len() < 4 {
        return Err(bad(format!(
            "only {} bytes, shorter than the 4-byte magic number",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "magic number starts with {:#04x} {:#04x}, expected two zero bytes",
            bytes[0], bytes[1]
        )));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "element type {:#04x} is not supported; only unsigned bytes (0x08) are",
            bytes[2]
        )));
    }
    let ndim = usize::from(bytes[3]);
    if ndim == 0 {
        return Err(bad("the header declares 0 dimensions".into()));
    }
    let header_len = 4 + 4 * ndim;
    if bytes.len() < header_len {
        return Err(bad(format!(
            "header declares {ndim} dimensions ({header_len} header bytes) but the file has only {} bytes",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    if let Some(axis) = dims.iter().position(|&d| d == 0) {
        return Err(bad(format!(
            "dimension {axis} is 0 (dims {dims:?}); an empty set is not usable"
        )));
    }
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dims {dims:?} overflow the address space")))?;
    let actual = bytes.len() - header_len;
    if actual != expected {
        let what = if actual < expected {
            "truncated"
        } else {
            "has trailing bytes"
        };
        return Err(bad(format!(
            "header dims {dims:?} promise {expected} payload bytes but the file holds {actual} ({what})"
        )));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
}

/// Checks that an IDX array has exactly `ndim` dimensions (3 for images, 1 for labels).
pub(crate) fn expect_ndim(array: &IdxArray, ndim: usize, what: &str, path: &Path) -> Result<()> {
    if array.dims.len() != ndim {
        return Err(DataError::corrupt(
            path,
            "IDX",
            format!(
                "an {what} file must have {ndim} dimension(s) but this one has dims {:?}",
                array.dims
            ),
        ));
    }
    Ok(())
}
