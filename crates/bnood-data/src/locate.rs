//! Where dataset files are looked for, in order, and the download fallback.
//!
//! For a file `F` of dataset `D` (folder name [`Dataset::id`], e.g. `fashion_mnist`), each
//! root `R` is tried as `R/D/F` then `R/F`, and for gzip names also without `.gz`
//! (already-decompressed files are accepted; checksums are of the content). Roots, in order:
//! 1. a directory the caller gives ([`Locator::with_dir`]);
//! 2. the directory in the environment variable `BNOOD_DATA_DIR`;
//! 3. `datasets/` in the working directory ([`Locator::with_local_dir`] changes it);
//! 4. for Fashion-MNIST only, Debian's `/usr/share/datasets/fashion-mnist/` (package
//!    `dataset-fashion-mnist`);
//! 5. with the `download` feature (on by default), a download from a mirror given with
//!    [`Locator::with_mirror`], then from the catalogue's official URLs, into
//!    `<local dir>/D/F`, checksum-verified and renamed into place only when complete.

use std::path::{Path, PathBuf};

use crate::catalogue::{Dataset, FileSpec};
use crate::error::{DataError, Result};

/// Environment variable naming a data directory.
pub const DATA_DIR_ENV: &str = "BNOOD_DATA_DIR";

/// Debian's Fashion-MNIST directory (package `dataset-fashion-mnist`).
pub const DEBIAN_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Finds catalogue files on disk, downloading them when allowed. Cheap to build and clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    dir: Option<PathBuf>,
    env_dir: Option<PathBuf>,
    local_dir: PathBuf,
    system_dirs: bool,
    download: bool,
    mirror: Option<String>,
}

impl Default for Locator {
    fn default() -> Self {
        Self::from_env()
    }
}

impl Locator {
    /// The default search order, reading `BNOOD_DATA_DIR` now; download is on when the
    /// `download` feature is compiled in.
    pub fn from_env() -> Self {
        Self {
            dir: None,
            env_dir: std::env::var_os(DATA_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            local_dir: PathBuf::from("datasets"),
            system_dirs: true,
            download: cfg!(feature = "download"),
            mirror: None,
        }
    }

    /// Only the given directory: no environment, no system directories, no download.
    /// Useful in tests and for fully explicit set-ups.
    pub fn only(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
            env_dir: None,
            local_dir: PathBuf::from("datasets"),
            system_dirs: false,
            download: false,
            mirror: None,
        }
        .without_local_dir()
    }

    /// Looks in `dir` before anything else.
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Uses `dir` instead of `./datasets` as the local directory (searched, and the
    /// destination of downloads).
    pub fn with_local_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.local_dir = dir.into();
        self
    }

    fn without_local_dir(mut self) -> Self {
        self.local_dir = PathBuf::new();
        self
    }

    /// Tries `{base}/{dataset id}/{file name}` before the official URLs when downloading.
    pub fn with_mirror(mut self, base_url: impl Into<String>) -> Self {
        self.mirror = Some(base_url.into().trim_end_matches('/').to_string());
        self
    }

    /// Turns downloading on or off (it can only be on with the `download` feature).
    pub fn with_download(mut self, allowed: bool) -> Self {
        self.download = allowed;
        self
    }

    /// The directory downloads go to (`./datasets` unless changed).
    pub fn local_dir(&self) -> &Path {
        &self.local_dir
    }

    /// Returns the path of `file` of `dataset`, downloading it if allowed and needed.
    ///
    /// # Errors
    /// [`DataError::NotFound`] listing every place tried and how to fix it.
    pub fn find(&self, dataset: Dataset, file: &FileSpec) -> Result<PathBuf> {
        let mut tried = Vec::new();
        let mut roots: Vec<(String, PathBuf)> = Vec::new();
        if let Some(d) = &self.dir {
            roots.push(("given directory".into(), d.clone()));
        }
        match &self.env_dir {
            Some(d) => roots.push((format!("${DATA_DIR_ENV}"), d.clone())),
            None if self.system_dirs => tried.push(format!("  - ${DATA_DIR_ENV}: not set")),
            None => {}
        }
        if !self.local_dir.as_os_str().is_empty() {
            roots.push(("local directory".into(), self.local_dir.clone()));
        }
        if self.system_dirs && dataset == Dataset::FashionMnist {
            roots.push((
                "Debian package dataset-fashion-mnist".into(),
                PathBuf::from(DEBIAN_FASHION_MNIST_DIR),
            ));
        }
        for (label, root) in &roots {
            for candidate in candidates(root, dataset, file.name) {
                if candidate.is_file() {
                    return Ok(candidate);
                }
                tried.push(format!("  - {} ({label}): not found", candidate.display()));
            }
        }
        self.download_or_explain(dataset, file, tried)
    }

    #[cfg(feature = "download")]
    fn download_or_explain(
        &self,
        dataset: Dataset,
        file: &FileSpec,
        mut tried: Vec<String>,
    ) -> Result<PathBuf> {
        let dest = self.local_dir.join(dataset.id()).join(file.name);
        if !self.download {
            tried.push("  - download: turned off for this locator".into());
            return Err(not_found(dataset, file, tried));
        }
        if dataset == Dataset::Cifar10 {
            return crate::download::fetch_cifar10(
                &self.local_dir,
                self.mirror.as_deref(),
                file,
                tried,
            );
        }
        let urls = crate::download::urls_to_try(self.mirror.as_deref(), dataset, file);
        if urls.is_empty() {
            tried.push("  - download: this file has no official URL".into());
            return Err(not_found(dataset, file, tried));
        }
        for url in urls {
            match crate::download::download_verified(&url, &dest, file) {
                Ok(()) => return Ok(dest),
                Err(e) => tried.push(format!("  - download {url}: {e}")),
            }
        }
        // Leave no empty dataset folder behind (remove_dir removes empty folders only).
        if let Some(dir) = dest.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Err(not_found(dataset, file, tried))
    }

    #[cfg(not(feature = "download"))]
    fn download_or_explain(
        &self,
        dataset: Dataset,
        file: &FileSpec,
        mut tried: Vec<String>,
    ) -> Result<PathBuf> {
        tried.push("  - download: bnood-data was built without the `download` feature".into());
        Err(not_found(dataset, file, tried))
    }
}

/// Candidate paths for `name` under `root`, in the order they are tried.
fn candidates(root: &Path, dataset: Dataset, name: &str) -> Vec<PathBuf> {
    let mut names = vec![name.to_string()];
    if let Some(plain) = name.strip_suffix(".gz") {
        names.push(plain.to_string());
    }
    let mut out = Vec::new();
    for n in &names {
        out.push(root.join(dataset.id()).join(n));
        out.push(root.join(n));
    }
    out
}

pub(crate) fn not_found(dataset: Dataset, file: &FileSpec, tried: Vec<String>) -> DataError {
    // Advice to enable downloading only where no download was tried.
    // (attempts read "  - download <url>: <error>", notes "  - download: <why not>").
    let downloaded = tried.iter().any(|t| t.starts_with("  - download "));
    let tail = if downloaded {
        "; the download failed (see above): check the network connection, or fetch the file by hand"
    } else {
        ", or enable downloading"
    };
    DataError::NotFound {
        dataset: dataset.to_string(),
        file: file.name.to_string(),
        tried: tried.join("\n"),
        hint: format!(
            "put {} in <dir>/{}/ and set {DATA_DIR_ENV}=<dir> (or pass the directory){tail}",
            file.name,
            dataset.id()
        ),
    }
}

/// What [`survey`] does with each split of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survey {
    /// Say where each file is found, or that it is missing.
    List,
    /// Load every split whose files are all found, checking checksums and format.
    Verify,
    /// Download missing files (checksum-verified), then load every split as in `Verify`.
    Download,
}

/// The `bnood datasets` report: for every split of `datasets`, one line per file (`List`)
/// or one line per split (`Verify`, `Download`), as `locator` finds them. Returns the
/// lines and the number of splits that failed to load.
///
/// # Errors
/// [`DataError::InvalidArgument`] only for a split the catalogue lacks (never for a file
/// that is missing or damaged: that is a line of the report).
pub fn survey(
    datasets: &[Dataset],
    locator: &Locator,
    action: Survey,
) -> Result<(Vec<String>, usize)> {
    let finder = locator.clone().with_download(false);
    let loader = locator.clone().with_download(action == Survey::Download);
    let (mut lines, mut failures) = (Vec::new(), 0);
    for &dataset in datasets {
        for split in dataset.splits() {
            let files = dataset.entry(split)?.files;
            let label = format!("{} {:?}", dataset.id(), split).to_lowercase();
            let missing = files.iter().any(|f| finder.find(dataset, f).is_err());
            match action {
                Survey::List => lines.extend(files.iter().map(|file| {
                    let place = finder.find(dataset, file).map(|p| p.display().to_string());
                    format!(
                        "{label:<22} {:<34} {}",
                        file.name,
                        place.unwrap_or("missing".into())
                    )
                })),
                Survey::Verify if missing => {
                    lines.push(format!("{label:<22} missing (bnood datasets download)"));
                }
                Survey::Verify | Survey::Download => match dataset.load(split, &loader) {
                    Ok(set) => lines.push(format!(
                        "{label:<22} ok: {} images, checksums verified",
                        set.len()
                    )),
                    Err(e) => {
                        failures += 1;
                        lines.push(format!("{label:<22} FAILED: {e}"));
                    }
                },
            }
        }
    }
    Ok((lines, failures))
}
