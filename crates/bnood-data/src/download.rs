//! Checksum-verified, atomic downloads (feature `download`).
//!
//! A file is streamed to `<dest>.part`, verified against the catalogue's MD5, and only then
//! renamed to `<dest>`. A failed, interrupted or corrupted download removes the partial
//! file, so a later run never mistakes it for data.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::catalogue::{FileSpec, verify};
use crate::error::{DataError, Result};
use crate::idx::read_maybe_gzip;

/// Removes the partial file unless the download was committed.
struct PartialFile {
    path: PathBuf,
    committed: bool,
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Downloads `url` to `dest`, verifying it against `spec` (content MD5 where the catalogue
/// has one, file MD5 otherwise) before renaming it into place. Creates parent directories.
///
/// # Errors
/// [`DataError::Download`] on a network or HTTP error, [`DataError::ChecksumMismatch`] or
/// [`DataError::Corrupt`] when the downloaded bytes are wrong; in every case no file is left
/// at `dest` or at the temporary path.
pub fn download_verified(url: &str, dest: &Path, spec: &FileSpec) -> Result<()> {
    let part = fetch_to_part(url, dest)?;
    let content = read_maybe_gzip(&part.path)?;
    verify(&part.path, spec, &content)?;
    commit(part, dest)
}

fn fetch_to_part(url: &str, dest: &Path) -> Result<PartialFile> {
    let err = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    let mut part_name = dest.file_name().unwrap_or_default().to_os_string();
    part_name.push(".part");
    let part = PartialFile {
        path: dest.with_file_name(part_name),
        committed: false,
    };

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| err(e.to_string()))?;
    let mut body = response.into_body().into_reader();
    let file = File::create(&part.path).map_err(|e| DataError::io(&part.path, e))?;
    let mut out = BufWriter::new(file);
    std::io::copy(&mut body, &mut out).map_err(|e| err(format!("transfer interrupted: {e}")))?;
    out.flush().map_err(|e| DataError::io(&part.path, e))?;
    Ok(part)
}

fn commit(mut part: PartialFile, dest: &Path) -> Result<()> {
    std::fs::rename(&part.path, dest).map_err(|e| DataError::io(dest, e))?;
    part.committed = true;
    Ok(())
}

/// The URLs tried for `spec`, in order: `{mirror}/{dataset id}/{file name}` when a mirror
/// is set, then the catalogue's official URLs.
pub(crate) fn urls_to_try(
    mirror: Option<&str>,
    dataset: crate::catalogue::Dataset,
    spec: &FileSpec,
) -> Vec<String> {
    mirror
        .map(|base| format!("{base}/{}/{}", dataset.id(), spec.name))
        .into_iter()
        .chain(spec.urls.iter().map(|u| u.to_string()))
        .collect()
}

/// Downloads the CIFAR-10 binary archive into `<local_dir>/cifar10/`, verifies it, extracts
/// its batches there, and returns the path of `file` (one of the batches).
pub(crate) fn fetch_cifar10(
    local_dir: &Path,
    mirror: Option<&str>,
    file: &FileSpec,
    mut tried: Vec<String>,
) -> Result<PathBuf> {
    use crate::catalogue::{CIFAR10_ARCHIVE, Dataset};
    let dir = local_dir.join(Dataset::Cifar10.id());
    let archive = dir.join(CIFAR10_ARCHIVE.name);
    let urls = urls_to_try(mirror, Dataset::Cifar10, &CIFAR10_ARCHIVE);
    let have_archive = archive.is_file() && verify(&archive, &CIFAR10_ARCHIVE, &[]).is_ok();
    if !have_archive {
        let mut fetched = false;
        for url in &urls {
            match fetch_to_part(url, &archive).and_then(|part| {
                verify(&part.path, &CIFAR10_ARCHIVE, &[])?;
                commit(part, &archive)
            }) {
                Ok(()) => {
                    fetched = true;
                    break;
                }
                Err(e) => tried.push(format!("  - download {url}: {e}")),
            }
        }
        if !fetched {
            return Err(crate::locate::not_found(Dataset::Cifar10, file, tried));
        }
    }
    crate::cifar::extract_archive(&archive, &dir)?;
    let path = dir.join(file.name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(DataError::Mismatch(format!(
            "{} was verified and extracted but holds no {}: report this as a bug",
            archive.display(),
            file.name
        )))
    }
}
