//! Which files a run reads and where it writes: refusing an output that would overwrite an
//! input before any work is done, announcing how a set name was read, naming each scored
//! image's origin, and writing a text output.

use std::path::{Path, PathBuf};

use crate::commands::Notice;
use crate::data::is_catalogue_name;
use crate::detect::ImageOrigin;
use crate::error::{Error, Result};

/// Refuses an output path `out` that is one of `inputs` (or a `.png` inside an input
/// folder, which a PNG-folder input would read back), an existing folder, and a file whose
/// folder does not exist, so that a run fails before any work is done.
///
/// # Errors
/// [`Error::Invalid`] naming `--out` and what to do instead.
pub fn check_output(out: &Path, inputs: &[PathBuf]) -> Result<()> {
    let canonical_out = out.canonicalize().ok();
    let out_parent = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for input in inputs {
        let Ok(canonical_in) = input.canonicalize() else {
            continue;
        };
        let same = canonical_out.as_ref() == Some(&canonical_in);
        let inside = canonical_in.is_dir()
            && out_parent
                .canonicalize()
                .is_ok_and(|p| p.starts_with(&canonical_in));
        if same || (inside && canonical_out.is_none() && input.is_dir() && has_png_name(out)) {
            return Err(Error::Invalid(format!(
                "--out {} would overwrite the input {}: choose another output file",
                out.display(),
                input.display()
            )));
        }
    }
    if out.is_dir() {
        return Err(Error::Invalid(format!(
            "--out {} is a folder: give a file name",
            out.display()
        )));
    }
    if out.exists() && !out.is_file() {
        return Err(Error::Invalid(format!(
            "--out {} exists and is not a regular file (a device, FIFO or socket): give a file name",
            out.display()
        )));
    }
    if let Some(model) = checkpoint_owning(out) {
        return Err(Error::Invalid(format!(
            "--out {} would overwrite a file of the model checkpoint {}: choose another output file",
            out.display(),
            model.display()
        )));
    }
    if !out_parent.is_dir() {
        return Err(Error::Invalid(format!(
            "--out {}: its folder {} does not exist; create it first",
            out.display(),
            out_parent.display()
        )));
    }
    Ok(())
}

/// The checkpoint `path` belongs to, when it is one: a parameter file with its `.json`
/// sidecar beside it, or the sidecar, optimiser state or commit marker of an existing
/// parameter file. No output of bnood ever replaces one of them.
fn checkpoint_owning(path: &Path) -> Option<PathBuf> {
    use crate::models::checkpoint::meta_path;
    if path.is_file() && meta_path(path).is_file() {
        return Some(path.to_path_buf());
    }
    let name = path.file_name()?.to_str()?;
    [".json", ".optim", ".commit"].iter().find_map(|suffix| {
        let model = path.with_file_name(name.strip_suffix(suffix)?);
        (model.is_file() && meta_path(&model).is_file()).then_some(model)
    })
}

fn has_png_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// The note that `name` is read as the catalogue set of that name although a file or
/// folder of that name is in the working directory (the catalogue wins; `./name` picks the
/// folder); `None` when `name` is not ambiguous.
pub fn catalogue_name_notice(name: &str) -> Option<Notice> {
    (is_catalogue_name(name) && Path::new(name).exists()).then(|| {
        Notice::Note(format!(
            "`{name}` is read as the catalogue set of that name, not as the file or folder ./{name}; pass ./{name} to use that"
        ))
    })
}

/// Whether the set named `name` is a PNG folder (not a catalogue name), whose images have
/// file names.
pub fn is_png_folder(name: &str) -> bool {
    !is_catalogue_name(name) && Path::new(name).is_dir()
}

/// For each image of the set named `test` drawn at `indices` (its positions in the source),
/// its index and, for a PNG folder, its file name.
///
/// # Errors
/// The folder's file names cannot be listed.
pub fn image_origins(test: &str, indices: &[usize]) -> Result<Vec<ImageOrigin>> {
    let names = if is_png_folder(test) {
        Some(crate::data::user_files::png_file_names(Path::new(test))?)
    } else {
        None
    };
    Ok(indices
        .iter()
        .map(|&index| ImageOrigin {
            index,
            file: names.as_ref().and_then(|n| n.get(index).cloned()),
        })
        .collect())
}

/// Writes `text` to `path` (a run's output file).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bnood-paths-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temporary folder is writable");
        dir
    }

    fn refusal(out: &Path, inputs: &[PathBuf]) -> String {
        match check_output(out, inputs) {
            Err(Error::Invalid(text)) => text,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn an_output_that_is_an_input_or_a_png_in_an_input_folder_is_refused() {
        let dir = scratch("inputs");
        let input = dir.join("model.bpk");
        std::fs::write(&input, b"x").expect("writable");
        assert!(
            refusal(&input, std::slice::from_ref(&input)).contains("would overwrite the input")
        );
        let png = dir.join("new.png");
        assert!(refusal(&png, std::slice::from_ref(&dir)).contains("would overwrite the input"));
        assert!(check_output(&dir.join("scores.csv"), std::slice::from_ref(&dir)).is_ok());
        std::fs::remove_dir_all(dir).expect("removable");
    }

    #[test]
    fn an_output_folder_or_a_missing_parent_is_refused() {
        let dir = scratch("folders");
        assert!(refusal(&dir, &[]).contains("is a folder"));
        assert!(refusal(&dir.join("missing/out.csv"), &[]).contains("does not exist"));
        std::fs::remove_dir_all(dir).expect("removable");
    }

    /// Issue 27 item 3: `--out` never replaces a device, FIFO or socket, nor any file of a
    /// model checkpoint (parameters, sidecar, optimiser state), whether or not the run reads
    /// that model.
    #[test]
    fn an_output_that_is_a_special_file_or_a_checkpoints_file_is_refused() {
        if Path::new("/dev/null").exists() {
            assert!(refusal(Path::new("/dev/null"), &[]).contains("not a regular file"));
        }
        let dir = scratch("checkpoint-files");
        let model = dir.join("m.bpk");
        std::fs::write(&model, b"weights").expect("writable");
        std::fs::write(dir.join("m.bpk.json"), b"{}").expect("writable");
        std::fs::write(dir.join("m.bpk.optim"), b"adam").expect("writable");
        for out in ["m.bpk", "m.bpk.json", "m.bpk.optim", "m.bpk.commit"] {
            let text = refusal(&dir.join(out), &[]);
            assert!(text.contains("model checkpoint"), "{out}: {text}");
            assert!(text.contains("m.bpk"), "{out}: {text}");
        }
        // A JSON file that belongs to no checkpoint (a detector file) may be replaced.
        std::fs::write(dir.join("det.json"), b"{}").expect("writable");
        assert!(check_output(&dir.join("det.json"), &[]).is_ok());
        std::fs::remove_dir_all(dir).expect("removable");
    }

    #[test]
    fn notices_carry_their_prefix() {
        assert_eq!(Notice::Warning("w".into()).to_string(), "warning: w");
        assert_eq!(Notice::Note("n".into()).to_string(), "note: n");
        assert_eq!(Notice::Status("s".into()).to_string(), "s");
        assert_eq!(catalogue_name_notice("no-such-set-here"), None);
    }
}
