//! Strict reader for the binary version of CIFAR-10 (Krizhevsky 2009, "Learning Multiple
//! Layers of Features from Tiny Images"; <https://www.cs.toronto.edu/~kriz/cifar.html>).
//!
//! The dataset ships as `cifar-10-binary.tar.gz`, holding `cifar-10-batches-bin/` with five
//! training batches (`data_batch_1.bin` … `data_batch_5.bin`), one test batch
//! (`test_batch.bin`) and `batches.meta.txt` (the ten class names, one per line).
//!
//! Each batch file is a plain concatenation of 10,000 records of 3,073 bytes (30,730,000
//! bytes in all): one label byte (0–9), then 1,024 red, 1,024 green and 1,024 blue bytes,
//! each plane a row-major 32×32 image. A record is therefore already channel-planar
//! `[C, H, W]`, so it is copied straight into an [`ImageSet`] of shape `[N, 3, 32, 32]`.
//! A file whose length is zero or not a whole number of records, or a label above 9, is an
//! error naming the file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use crate::error::{DataError, Result};
use crate::image_set::ImageSet;

/// Bytes of one record: 1 label byte + 3·32·32 pixel bytes.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Bytes of one image: 3 planes of 32×32.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Records in one official batch file.
pub const RECORDS_PER_BATCH: usize = 10_000;
/// The folder inside `cifar-10-binary.tar.gz` that holds the batches.
pub const BATCH_DIR: &str = "cifar-10-batches-bin";

const FORMAT: &str = "CIFAR-10 binary batch";

/// Decodes one or more CIFAR-10 binary batch files, in the order given, into one image set
/// of shape `[N, 3, 32, 32]` with labels 0–9. Each path is used only in error messages.
///
/// # Errors
/// [`DataError::InvalidArgument`] if `batches` is empty; [`DataError::Corrupt`] naming the
/// file if a batch is empty, is not a whole number of 3,073-byte records, or holds a label
/// above 9.
pub fn decode_batches(batches: &[(PathBuf, Vec<u8>)]) -> Result<ImageSet> {
    if batches.is_empty() {
        return Err(DataError::InvalidArgument(
            "no CIFAR-10 batch files were given: pass at least one `*.bin` batch".into(),
        ));
    }
    for (path, bytes) in batches {
        check_length(path, bytes.len())?;
    }
    let n: usize = batches.iter().map(|(_, b)| b.len() / RECORD_BYTES).sum();
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (path, bytes) in batches {
        for (index, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            let (&label, image) = record.split_first().ok_or_else(|| {
                DataError::corrupt(path, FORMAT, format!("record {index} is empty"))
            })?;
            if label > 9 {
                return Err(DataError::corrupt(
                    path,
                    FORMAT,
                    format!("record {index} has label {label}, but CIFAR-10 labels are 0-9"),
                ));
            }
            labels.push(u32::from(label));
            pixels.extend_from_slice(image);
        }
    }
    ImageSet::new("cifar10", pixels, [n, 3, 32, 32], Some(labels))
}

fn check_length(path: &Path, len: usize) -> Result<()> {
    let full = RECORDS_PER_BATCH * RECORD_BYTES;
    if len == 0 {
        return Err(DataError::corrupt(
            path,
            FORMAT,
            format!(
                "the file is empty; a full batch is {} bytes",
                thousands(full)
            ),
        ));
    }
    if !len.is_multiple_of(RECORD_BYTES) {
        let what = if len < full { "truncated" } else { "too long" };
        return Err(DataError::corrupt(
            path,
            FORMAT,
            format!(
                "{} bytes is not a whole number of {RECORD_BYTES}-byte records ({what}; expected {} bytes for a full batch)",
                thousands(len),
                thousands(full)
            ),
        ));
    }
    Ok(())
}

/// `30730000` → `"30,730,000"`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Extracts the batch files (`cifar-10-batches-bin/*.bin`, plus `batches.meta.txt`) from
/// `cifar-10-binary.tar.gz` into `dest_dir/cifar-10-batches-bin/`, and returns the paths
/// written, in archive order. Other entries are ignored.
///
/// Each file is written under a temporary name in the same folder and renamed into place
/// once complete, so an interrupted extraction never leaves a partial `.bin`; an existing
/// file of the same name is replaced.
///
/// # Errors
/// [`DataError::Corrupt`] naming the archive if the gzip or tar stream is damaged or
/// truncated, or if an entry has an absolute path or a `..` component (such an archive is
/// refused outright); [`DataError::Io`] if the archive cannot be read or the destination
/// cannot be written.
pub fn extract_archive(archive: &Path, dest_dir: &Path) -> Result<Vec<PathBuf>> {
    let file = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let corrupt = |reason: String| DataError::corrupt(archive, "CIFAR-10 tar.gz archive", reason);
    let mut tar = tar::Archive::new(GzDecoder::new(io::BufReader::new(file)));
    let entries = tar
        .entries()
        .map_err(|e| corrupt(format!("cannot read the tar stream ({e})")))?;
    let out_dir = dest_dir.join(BATCH_DIR);
    let mut written = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            corrupt(format!(
                "cannot read the next tar entry ({e}); the archive is damaged or truncated"
            ))
        })?;
        let entry_path = entry
            .path()
            .map_err(|e| corrupt(format!("an entry has an unreadable path ({e})")))?
            .into_owned();
        if entry_path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(corrupt(format!(
                "entry `{}` has an absolute path or a `..` component and would be written outside the destination; refusing the archive",
                entry_path.display()
            )));
        }
        let Some(name) = batch_file_name(&entry_path) else {
            continue;
        };
        if !entry.header().entry_type().is_file() {
            return Err(corrupt(format!(
                "entry `{}` is not a regular file",
                entry_path.display()
            )));
        }
        let size = entry.header().size().map_err(|e| {
            corrupt(format!(
                "entry `{}` has a bad size field ({e})",
                entry_path.display()
            ))
        })?;
        std::fs::create_dir_all(&out_dir).map_err(|e| DataError::io(&out_dir, e))?;
        let target = out_dir.join(&name);
        // A damaged entry is a `DataError` of its own, kept aside while the atomic write
        // fails and removes its temporary file.
        let mut damaged = None;
        let written_whole = crate::atomic::write_atomically(&target, |out| {
            copy_to(&mut entry, out, &target, size, archive, &entry_path).map_err(|e| {
                damaged = Some(e);
                io::Error::other("the archive entry could not be copied")
            })
        });
        match (written_whole, damaged) {
            (_, Some(e)) => return Err(e),
            (Err(e), None) => return Err(DataError::io(&target, e)),
            (Ok(()), None) => {}
        }
        written.push(target);
    }
    Ok(written)
}

/// `cifar-10-batches-bin/<name>.bin` or `cifar-10-batches-bin/batches.meta.txt` → `<name>`.
fn batch_file_name(entry_path: &Path) -> Option<String> {
    let parts: Vec<&std::ffi::OsStr> = entry_path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect();
    let [dir, name] = parts.as_slice() else {
        return None;
    };
    if *dir != BATCH_DIR {
        return None;
    }
    let name = name.to_str()?;
    let wanted = (name.ends_with(".bin") && name.len() > 4) || name == "batches.meta.txt";
    (wanted && !name.starts_with('.')).then(|| name.to_owned())
}

/// Copies an entry's `size` bytes into `out` (the temporary file of `target`). Read failures
/// are the archive's fault ([`DataError::Corrupt`]), write failures the destination's.
fn copy_to(
    entry: &mut impl Read,
    out: &mut File,
    target: &Path,
    size: u64,
    archive: &Path,
    entry_path: &Path,
) -> Result<()> {
    let corrupt = |reason: String| DataError::corrupt(archive, "CIFAR-10 tar.gz archive", reason);
    let mut buf = vec![0u8; 1 << 16];
    let mut copied = 0u64;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(corrupt(format!(
                    "reading entry `{}` failed after {copied} bytes ({e}); the archive is damaged or truncated",
                    entry_path.display()
                )));
            }
        };
        out.write_all(buf.get(..n).unwrap_or_default())
            .map_err(|e| DataError::io(target, e))?;
        copied += n as u64;
    }
    if copied != size {
        return Err(corrupt(format!(
            "entry `{}` should hold {size} bytes but only {copied} could be read (truncated)",
            entry_path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(30_730_000), "30,730,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(0), "0");
    }

    #[test]
    fn only_batch_files_are_selected() {
        assert_eq!(
            batch_file_name(Path::new("cifar-10-batches-bin/data_batch_1.bin")).as_deref(),
            Some("data_batch_1.bin")
        );
        assert_eq!(
            batch_file_name(Path::new("cifar-10-batches-bin/batches.meta.txt")).as_deref(),
            Some("batches.meta.txt")
        );
        assert_eq!(
            batch_file_name(Path::new("cifar-10-batches-bin/readme.html")),
            None
        );
        assert_eq!(batch_file_name(Path::new("other/data_batch_1.bin")), None);
        assert_eq!(batch_file_name(Path::new("cifar-10-batches-bin/")), None);
    }
}
