//! Writing a file so that readers see its old content or all of its new content, never a
//! part: the one write-then-rename of the workspace (datasets extracted from archives,
//! detector files, reports, plots, learning curves). Checkpoints, which are several files
//! committed as a unit, have their own protocol in `bnood_models::checkpoint`, and a
//! download's `.part` file is kept across attempts on purpose (`download.rs`).

use std::fs::File;
use std::io;
use std::path::Path;

/// Writes `path` through `write`: into a new temporary file in the same folder (so the
/// rename cannot cross file systems), flushed to disk (`sync_all`), then renamed over
/// `path`. If `write`, the flush or the rename fails, the temporary file is removed and
/// `path` is left as it was. The folder must exist.
///
/// # Errors
/// The first I/O error: creating the temporary file, `write`'s own, the flush or the rename.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        ));
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix(".bnood-").suffix(".tmp");
    // tempfile makes private (0600) files; the result should have the permissions
    // `File::create` would give it (0666 less the umask), or keep those of the file replaced.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_or(0o666, |m| m.permissions().mode() & 0o7777);
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    // Dropping the temporary file on an error path deletes it (tempfile's guarantee).
    let mut tmp = builder.tempfile_in(dir)?;
    write(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one_and_no_temporary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.txt");
        write_atomically(&path, |f| f.write_all(b"first")).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"first");
        let e = write_atomically(&path, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .expect_err("fails");
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"first",
            "old content kept"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["out.txt"], "no temporary file left");
    }

    #[cfg(unix)]
    #[test]
    fn a_new_file_gets_the_permissions_file_create_gives_and_a_replaced_one_keeps_its_own() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = dir.path().join("plain.txt");
        File::create(&plain).expect("create");
        let path = dir.path().join("out.txt");
        write_atomically(&path, |f| f.write_all(b"x")).expect("write");
        assert_eq!(mode(&path), mode(&plain));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        write_atomically(&path, |f| f.write_all(b"y")).expect("write");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_missing_folder_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("no/such/folder/out.txt");
        assert!(write_atomically(&path, |f| f.write_all(b"x")).is_err());
        assert!(!path.exists());
    }
}
