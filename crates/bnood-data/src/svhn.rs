//! Strict reader for SVHN, format 2 "cropped digits" (Netzer et al. 2011, "Reading Digits
//! in Natural Images with Unsupervised Feature Learning";
//! <http://ufldl.stanford.edu/housenumbers/>): `train_32x32.mat`, `test_32x32.mat`.
//!
//! These are MATLAB level-5 MAT-files (MathWorks, "MAT-File Format", R2024a): a 128-byte
//! header (descriptive text, a subsystem offset, version `0x0100` and the endian indicator
//! `IM` for little-endian files), then data elements. Each element starts with an 8-byte tag
//! (`u32` type, `u32` byte count) — or a 4-byte "small data element" tag packing both into one
//! `u32` when the data fit in 4 bytes — and sub-elements are padded to 8 bytes. A variable is
//! a `miMATRIX` (type 14) element holding array flags, dimensions, a name and the real part;
//! SVHN stores each variable zlib-compressed inside a `miCOMPRESSED` (type 15) element.
//!
//! The two variables used are `X`, `uint8` with dimensions `[32, 32, 3, N]` in MATLAB's
//! column-major order, and `y`, a `double` `N × 1` column of labels 1–10 where 10 is the
//! digit 0. [`decode_mat`] turns them into an [`ImageSet`] of shape `[N, 3, 32, 32]`,
//! row-major, with labels 0–9. The MAT parser here is deliberately small: little-endian
//! only, numeric arrays only, enough for these files and nothing more.

use std::borrow::Cow;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use flate2::read::ZlibDecoder;

use crate::error::{DataError, Result};
use crate::image_set::ImageSet;

const FORMAT: &str = "MATLAB level-5 MAT";
const HEADER_BYTES: usize = 128;
/// Bytes of one 32×32 colour plane.
const PLANE: usize = 32 * 32;

// Data types of MAT-file elements.
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

// Array classes (low byte of the array flags).
const MX_DOUBLE_CLASS: u8 = 6;
const MX_UINT64_CLASS: u8 = 15;
const MX_UINT8_CLASS: u8 = 9;
const COMPLEX_FLAG: u32 = 0x0800;

/// Decodes an SVHN cropped-digits MAT-file (`train_32x32.mat`, `test_32x32.mat` or
/// `extra_32x32.mat`) into an image set of shape `[N, 3, 32, 32]` with labels 0–9 (the
/// file's label 10, the digit 0, becomes 0). `path` is used only in error messages.
///
/// # Errors
/// [`DataError::Corrupt`] naming the file (and the variable, where one is involved) if the
/// bytes are not a little-endian level-5 MAT-file, an element is truncated or its zlib
/// stream is damaged, `X` or `y` is missing, `X` is not `uint8` `[32, 32, 3, N]`, `y` is
/// not an `N`-element vector, or a label is not an integer in 1–10.
pub fn decode_mat(bytes: &[u8], path: &Path) -> Result<ImageSet> {
    let vars = read_variables(bytes, path)?;
    let find = |name: &str| {
        vars.iter().find(|v| v.name == name).ok_or_else(|| {
            let present: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
            DataError::corrupt(
                path,
                FORMAT,
                format!(
                    "variable `{name}` is missing (the file holds {present:?}); an SVHN cropped-digits file has `X` (images) and `y` (labels)"
                ),
            )
        })
    };
    let x = find("X")?;
    let y = find("y")?;
    let bad_x =
        |reason: String| DataError::corrupt(path, FORMAT, format!("variable `X`: {reason}"));
    let bad_y =
        |reason: String| DataError::corrupt(path, FORMAT, format!("variable `y`: {reason}"));

    // X: uint8 [32, 32, 3, N]; MATLAB drops a trailing singleton, so [32, 32, 3] is N = 1.
    if x.class != MX_UINT8_CLASS || x.complex {
        return Err(bad_x(format!(
            "must be a real uint8 array but has class {}{}",
            class_name(x.class),
            if x.complex { ", complex" } else { "" }
        )));
    }
    let n = match x.dims.as_slice() {
        [32, 32, 3] => 1,
        &[32, 32, 3, n] if n > 0 => n,
        dims => {
            return Err(bad_x(format!(
                "dimensions are {dims:?}, expected [32, 32, 3, N] with N >= 1"
            )));
        }
    };
    let total = n
        .checked_mul(3 * PLANE)
        .ok_or_else(|| bad_x(format!("{n} images overflow the address space")))?;
    let x_bytes = x.as_u8().map_err(&bad_x)?;
    if x_bytes.len() != total {
        return Err(bad_x(format!(
            "dimensions {:?} promise {total} values but the data hold {}",
            x.dims,
            x_bytes.len()
        )));
    }

    // y: N × 1 or 1 × N, integer values 1..=10.
    if !matches!(y.dims.as_slice(), [a, 1] | [1, a] if *a == n) {
        return Err(bad_y(format!(
            "dimensions are {:?}, expected [{n}, 1] or [1, {n}] (one label per image of `X`; the counts must match)",
            y.dims
        )));
    }
    if y.complex || !(MX_DOUBLE_CLASS..=MX_UINT64_CLASS).contains(&y.class) {
        return Err(bad_y(format!(
            "must be a real numeric array but has class {}{}",
            class_name(y.class),
            if y.complex { ", complex" } else { "" }
        )));
    }
    let y_values = y.as_f64().map_err(&bad_y)?;
    if y_values.len() != n {
        return Err(bad_y(format!(
            "{n} labels expected but the data hold {}",
            y_values.len()
        )));
    }
    let mut labels = Vec::with_capacity(n);
    for (i, &v) in y_values.iter().enumerate() {
        if v.fract() != 0.0 || !(1.0..=10.0).contains(&v) {
            return Err(bad_y(format!(
                "label {i} is {v}, but SVHN labels are integers 1-10 (10 is the digit 0)"
            )));
        }
        // Exact: v is an integer in 1..=10.
        labels.push(v as u32 % 10);
    }

    let mut pixels = vec![0u8; total];
    to_row_major(&x_bytes, &mut pixels);
    ImageSet::new("svhn", pixels, [n, 3, 32, 32], Some(labels))
}

/// Reorders MATLAB's column-major `[32, 32, 3, N]` (element `(h, w, c, n)` at
/// `h + 32·(w + 32·(c + 3·n))`) into row-major `[N, 3, 32, 32]`. Each `(n, c)` plane is
/// contiguous in both layouts, so this transposes plane by plane.
fn to_row_major(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(PLANE).zip(dst.chunks_exact_mut(PLANE)) {
        for (h, row) in d.chunks_exact_mut(32).enumerate() {
            for (w, out) in row.iter_mut().enumerate() {
                *out = s.get(h + 32 * w).copied().unwrap_or(0);
            }
        }
    }
}

/// One variable of a MAT-file.
#[derive(Debug)]
struct MatVar {
    name: String,
    /// Array class (`mxDOUBLE_CLASS` = 6, `mxUINT8_CLASS` = 9, ...).
    class: u8,
    complex: bool,
    dims: Vec<usize>,
    /// Storage type of the real part (`miUINT8`, `miDOUBLE`, ...); 0 when there is none.
    data_type: u32,
    /// The real part's bytes, little-endian; empty for non-numeric arrays.
    data: Vec<u8>,
}

impl MatVar {
    /// The real part as bytes; every value must be an integer in 0..=255. Borrows when the
    /// data are stored as `miUINT8`.
    fn as_u8(&self) -> std::result::Result<Cow<'_, [u8]>, String> {
        if self.data_type == MI_UINT8 {
            return Ok(Cow::Borrowed(&self.data));
        }
        let values = self.as_f64()?;
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.into_iter().enumerate() {
            if v.fract() != 0.0 || !(0.0..=255.0).contains(&v) {
                return Err(format!("value {i} is {v}, not an integer in 0-255"));
            }
            out.push(v as u8);
        }
        Ok(Cow::Owned(out))
    }

    /// The real part converted to `f64` (exact for every storage type up to 32 bits).
    fn as_f64(&self) -> std::result::Result<Vec<f64>, String> {
        fn each<const K: usize>(data: &[u8], f: impl Fn([u8; K]) -> f64) -> Vec<f64> {
            data.chunks_exact(K)
                .map(|c| {
                    let mut a = [0u8; K];
                    a.copy_from_slice(c);
                    f(a)
                })
                .collect()
        }
        let d = &self.data;
        let width = match self.data_type {
            MI_INT8 | MI_UINT8 => 1,
            MI_INT16 | MI_UINT16 => 2,
            MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
            MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
            other => {
                return Err(format!(
                    "data are stored as MAT type {other}, which is not a numeric type"
                ));
            }
        };
        if !d.len().is_multiple_of(width) {
            return Err(format!(
                "{} data bytes are not a whole number of {width}-byte values",
                d.len()
            ));
        }
        Ok(match self.data_type {
            MI_INT8 => d.iter().map(|&b| f64::from(b as i8)).collect(),
            MI_UINT8 => d.iter().map(|&b| f64::from(b)).collect(),
            MI_INT16 => each(d, |a| f64::from(i16::from_le_bytes(a))),
            MI_UINT16 => each(d, |a| f64::from(u16::from_le_bytes(a))),
            MI_INT32 => each(d, |a| f64::from(i32::from_le_bytes(a))),
            MI_UINT32 => each(d, |a| f64::from(u32::from_le_bytes(a))),
            MI_SINGLE => each(d, |a| f64::from(f32::from_le_bytes(a))),
            MI_DOUBLE => each(d, f64::from_le_bytes),
            // Rounding only happens far outside any range accepted here.
            MI_INT64 => each(d, |a| i64::from_le_bytes(a) as f64),
            _ => each(d, |a| u64::from_le_bytes(a) as f64),
        })
    }
}

fn class_name(class: u8) -> String {
    let name = match class {
        1 => "cell",
        2 => "struct",
        3 => "object",
        4 => "char",
        5 => "sparse",
        6 => "double",
        7 => "single",
        8 => "int8",
        9 => "uint8",
        10 => "int16",
        11 => "uint16",
        12 => "int32",
        13 => "uint32",
        14 => "int64",
        15 => "uint64",
        _ => return format!("unknown ({class})"),
    };
    format!("{name} ({class})")
}

/// One element tag: its type, where its data lie, and where the next element starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tag {
    data_type: u32,
    data: Range<usize>,
    next: usize,
    /// The element runs past the end of the buffer (only with `allow_truncated`).
    truncated: bool,
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    Some(u32::from_le_bytes(a))
}

/// Reads the tag at `pos` of `buf`; the next element starts on the next multiple of 8
/// (sub-elements are padded; padding cut off at the very end of `buf` is tolerated).
///
/// With `allow_truncated`, an element whose data run past the end of `buf` is returned with
/// `data` cut at the end instead of being an error (used to name the variable of a
/// truncated element).
fn read_tag(
    buf: &[u8],
    pos: usize,
    what: &str,
    allow_truncated: bool,
) -> std::result::Result<Tag, String> {
    let first =
        u32_at(buf, pos).ok_or_else(|| format!("{what}: truncated element tag at byte {pos}"))?;
    if first >> 16 != 0 {
        // Small data element: type in the low half, byte count in the high half, data in the
        // following 4 bytes.
        let count = (first >> 16) as usize;
        if count > 4 {
            return Err(format!(
                "{what}: small data element at byte {pos} claims {count} bytes (at most 4)"
            ));
        }
        if buf.len().saturating_sub(pos) < 8 && !allow_truncated {
            return Err(format!(
                "{what}: truncated small data element at byte {pos}"
            ));
        }
        let start = pos + 4;
        let truncated = buf.len().saturating_sub(pos) < 8;
        return Ok(Tag {
            data_type: first & 0xffff,
            data: start..(start + count).min(buf.len()),
            next: pos + 8,
            truncated,
        });
    }
    let count = u32_at(buf, pos + 4)
        .ok_or_else(|| format!("{what}: truncated element tag at byte {pos}"))?
        as usize;
    let start = pos + 8;
    let end = start.saturating_add(count);
    if end > buf.len() {
        if !allow_truncated {
            return Err(format!(
                "{what}: element at byte {pos} claims {count} bytes but only {} remain (truncated)",
                buf.len() - start
            ));
        }
        return Ok(Tag {
            data_type: first,
            data: start..buf.len(),
            next: buf.len(),
            truncated: true,
        });
    }
    let next = end.div_ceil(8).saturating_mul(8).min(buf.len());
    Ok(Tag {
        data_type: first,
        data: start..end,
        next,
        truncated: false,
    })
}

/// Reads every top-level variable of a little-endian level-5 MAT-file. Arrays that are not
/// numeric (cells, structs, sparse, char, ...) are returned with empty data.
fn read_variables(bytes: &[u8], path: &Path) -> Result<Vec<MatVar>> {
    let bad = |reason: String| DataError::corrupt(path, FORMAT, reason);
    let header = bytes.get(..HEADER_BYTES).ok_or_else(|| {
        bad(format!("only {} bytes, shorter than the 128-byte MAT-file header (not a MAT-file, or truncated)", bytes.len()))
    })?;
    let text = header.get(..116).unwrap_or_default();
    let indicator = header.get(126..128).unwrap_or_default();
    if indicator == b"MI" {
        return Err(bad(
            "the file is big-endian (endian indicator `MI`); only little-endian MAT-files are supported".into(),
        ));
    }
    if indicator != b"IM" {
        let hint = if text.starts_with(b"MATLAB 7.3") {
            "; this looks like a MAT v7.3 (HDF5) file, but SVHN's official files are level 5"
        } else if !text.starts_with(b"MATLAB") {
            "; the header text does not start with `MATLAB`, so this is not a MAT-file"
        } else {
            ""
        };
        return Err(bad(format!(
            "header bytes 126-127 are {indicator:02x?}, not the endian indicator `IM`{hint}"
        )));
    }
    let version = header
        .get(124..126)
        .map(|v| u16::from_le_bytes([v[0], v[1]]))
        .unwrap_or_default();
    if version != 0x0100 {
        return Err(bad(format!(
            "header version is {version:#06x}, expected 0x0100 (level 5)"
        )));
    }

    let mut vars = Vec::new();
    let mut pos = HEADER_BYTES;
    let mut index = 0;
    while pos < bytes.len() {
        let where_ = format!("top-level element {index} (byte {pos})");
        let tag = read_tag(bytes, pos, &where_, true).map_err(&bad)?;
        let data = bytes.get(tag.data.clone()).unwrap_or_default();
        let truncated = tag.truncated;
        match tag.data_type {
            MI_COMPRESSED => {
                let mut inner = Vec::new();
                let inflated = ZlibDecoder::new(data).read_to_end(&mut inner);
                let who = || variable_label(&inflate_start(data), &where_);
                if truncated {
                    return Err(bad(format!(
                        "{}: the compressed element is truncated (the file ends after {} of its bytes)",
                        who(),
                        data.len()
                    )));
                }
                if let Err(e) = inflated {
                    return Err(bad(format!("{}: the zlib stream is damaged ({e})", who())));
                }
                if let Some(var) = read_matrix_element(inner, path, &where_)? {
                    vars.push(var);
                }
            }
            MI_MATRIX => {
                let element = bytes.get(pos..tag.data.end).unwrap_or_default();
                if truncated {
                    return Err(bad(format!(
                        "{}: the matrix element is truncated (the file ends after {} of its bytes)",
                        variable_label(element, &where_),
                        data.len()
                    )));
                }
                if let Some(var) = read_matrix_element(element.to_vec(), path, &where_)? {
                    vars.push(var);
                }
            }
            // Other top-level elements (e.g. subsystem data) hold no variables used here.
            _ => {}
        }
        // Uncompressed elements are padded to 8 bytes (miMATRIX counts normally are
        // multiples of 8 already); compressed elements follow each other directly.
        pos = if tag.data_type == MI_COMPRESSED {
            tag.data.end
        } else {
            tag.next.max(pos + 8)
        };
        index += 1;
    }
    Ok(vars)
}

/// Inflates just the start of a zlib stream, enough for a matrix's flags, dimensions and
/// name, even when the stream is damaged further on (the decoder reports an error without
/// returning the output of the failing call, so the start is decoded on its own).
fn inflate_start(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = ZlibDecoder::new(data.get(..512).unwrap_or(data))
        .take(4096)
        .read_to_end(&mut out);
    out
}

/// "variable `X`" if the name can be read from the (possibly partial) `miMATRIX` element
/// `element`, else `fallback`.
fn variable_label(element: &[u8], fallback: &str) -> String {
    element
        .get(8..)
        .and_then(|content| read_matrix_head(content, true).ok())
        .map(|head| format!("variable `{}`", head.name))
        .unwrap_or_else(|| fallback.to_owned())
}

/// The array flags, dimensions and name of a `miMATRIX`, and where its real part's tag is.
struct MatrixHead {
    name: String,
    class: u8,
    complex: bool,
    dims: Vec<usize>,
    /// Offset of the next sub-element (the real part) in the content.
    next: usize,
}

/// Parses the first three sub-elements of a `miMATRIX` content (the bytes after its tag).
fn read_matrix_head(
    content: &[u8],
    allow_truncated: bool,
) -> std::result::Result<MatrixHead, String> {
    let flags_tag = read_tag(content, 0, "array flags", allow_truncated)?;
    let flags = u32_at(content, flags_tag.data.start)
        .filter(|_| flags_tag.data_type == MI_UINT32 && flags_tag.data.len() >= 4)
        .ok_or("array flags are missing or not miUINT32")?;
    let dims_tag = read_tag(content, flags_tag.next, "dimensions", allow_truncated)?;
    if dims_tag.data_type != MI_INT32 || !dims_tag.data.len().is_multiple_of(4) {
        return Err(format!(
            "dimensions must be miINT32 but have type {}",
            dims_tag.data_type
        ));
    }
    let mut dims = Vec::new();
    for at in dims_tag.data.clone().step_by(4) {
        let d = u32_at(content, at).ok_or("truncated dimensions")? as i32;
        dims.push(usize::try_from(d).map_err(|_| format!("negative dimension {d}"))?);
    }
    let name_tag = read_tag(content, dims_tag.next, "array name", allow_truncated)?;
    if name_tag.data_type != MI_INT8 {
        return Err(format!(
            "the array name must be miINT8 but has type {}",
            name_tag.data_type
        ));
    }
    let name = String::from_utf8_lossy(content.get(name_tag.data.clone()).unwrap_or_default())
        .into_owned();
    Ok(MatrixHead {
        name,
        class: (flags & 0xff) as u8,
        complex: flags & COMPLEX_FLAG != 0,
        dims,
        next: name_tag.next,
    })
}

/// Parses a whole `miMATRIX` element (tag included), taking ownership so that the real part
/// can be cut out of it without copying. Returns `None` for an element of another type.
fn read_matrix_element(mut element: Vec<u8>, path: &Path, where_: &str) -> Result<Option<MatVar>> {
    let tag = read_tag(&element, 0, where_, false).map_err(|r| {
        DataError::corrupt(
            path,
            FORMAT,
            format!("{}: {r}", variable_label(&element, where_)),
        )
    })?;
    if tag.data_type != MI_MATRIX {
        return Ok(None);
    }
    let content = element.get(tag.data.clone()).unwrap_or_default();
    let head = read_matrix_head(content, false)
        .map_err(|r| DataError::corrupt(path, FORMAT, format!("{where_}: {r}")))?;
    let bad =
        |r: String| DataError::corrupt(path, FORMAT, format!("variable `{}`: {r}", head.name));
    // Only numeric arrays carry a plain real part next; empty and other arrays keep no data.
    let numeric = (MX_DOUBLE_CLASS..=MX_UINT64_CLASS).contains(&head.class);
    if !numeric || head.dims.contains(&0) {
        return Ok(Some(MatVar {
            data_type: 0,
            data: Vec::new(),
            ..head.into_var()
        }));
    }
    let real = read_tag(content, head.next, "real part", false).map_err(&bad)?;
    let start = tag.data.start + real.data.start;
    let end = tag.data.start + real.data.end;
    element.truncate(end);
    element.drain(..start.min(element.len()));
    Ok(Some(MatVar {
        data_type: real.data_type,
        data: element,
        ..head.into_var()
    }))
}

impl MatrixHead {
    fn into_var(self) -> MatVar {
        MatVar {
            name: self.name,
            class: self.class,
            complex: self.complex,
            dims: self.dims,
            data_type: 0,
            data: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_reorder_matches_the_matlab_formula() {
        let n = 2;
        // Column-major source holding each element's own (h, w, c, n) code.
        let code =
            |h: usize, w: usize, c: usize, i: usize| ((h * 7 + w * 3 + c * 11 + i * 5) % 251) as u8;
        let mut src = vec![0u8; n * 3 * PLANE];
        for i in 0..n {
            for c in 0..3 {
                for w in 0..32 {
                    for h in 0..32 {
                        src[h + 32 * (w + 32 * (c + 3 * i))] = code(h, w, c, i);
                    }
                }
            }
        }
        let mut dst = vec![0u8; src.len()];
        to_row_major(&src, &mut dst);
        for i in 0..n {
            for c in 0..3 {
                for h in 0..32 {
                    for w in 0..32 {
                        assert_eq!(dst[((i * 3 + c) * 32 + h) * 32 + w], code(h, w, c, i));
                    }
                }
            }
        }
    }

    #[test]
    fn small_and_normal_tags_are_read() {
        // Small element: type 1, 1 byte "X", padded to 8.
        let small = [1, 0, 1, 0, b'X', 0, 0, 0];
        let tag = read_tag(&small, 0, "t", false).expect("small tag");
        assert_eq!(
            tag,
            Tag {
                data_type: 1,
                data: 4..5,
                next: 8,
                truncated: false
            }
        );
        // Normal element: type 2, 3 bytes, padded to 16.
        let normal = [2, 0, 0, 0, 3, 0, 0, 0, 7, 8, 9, 0, 0, 0, 0, 0];
        let tag = read_tag(&normal, 0, "t", false).expect("normal tag");
        assert_eq!(
            tag,
            Tag {
                data_type: 2,
                data: 8..11,
                next: 16,
                truncated: false
            }
        );
        // Truncated.
        assert!(read_tag(&normal[..10], 0, "t", false).is_err());
        assert!(read_tag(&normal[..3], 0, "t", false).is_err());
        assert!(read_tag(&small[..6], 0, "t", false).is_err());
        let cut = read_tag(&normal[..10], 0, "t", true).expect("lenient");
        assert_eq!((cut.data, cut.truncated), (8..10, true));
    }
}
