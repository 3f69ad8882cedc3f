//! Downloads against a small HTTP server on 127.0.0.1 started by the test: a good file lands
//! and verifies; a corrupted, missing or cut-off one is rejected and leaves nothing behind.
#![cfg(feature = "download")]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::thread;

use bnood_data::download::download_verified;
use bnood_data::idx::md5_hex;
use bnood_data::{DataError, Dataset, FileSpec, Locator, Split};

/// What the server sends for a request.
#[derive(Clone)]
enum Reply {
    Ok(Vec<u8>),
    NotFound,
    /// Announces the full length, sends only the first half, then closes.
    CutOff(Vec<u8>),
}

/// Serves `routes` (path → reply) on an ephemeral loopback port for `max_requests`
/// connections, then stops. Returns the base URL.
fn serve(routes: Vec<(&'static str, Reply)>, max_requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming().take(max_requests) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let reply = routes
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, r)| r.clone())
                .unwrap_or(Reply::NotFound);
            let _ = match reply {
                Reply::Ok(body) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    stream
                        .write_all(head.as_bytes())
                        .and_then(|_| stream.write_all(&body))
                }
                Reply::NotFound => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
                Reply::CutOff(body) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    stream
                        .write_all(head.as_bytes())
                        .and_then(|_| stream.write_all(&body[..body.len() / 2]))
                }
            };
        }
    });
    format!("http://{addr}")
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn payload() -> (Vec<u8>, FileSpec) {
    let raw = common::idx_bytes(&[3, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    let gz = common::gzip(&raw);
    let spec = FileSpec {
        name: "tiny-idx3-ubyte.gz",
        md5_content: Some(leak(md5_hex(&raw))),
        md5_file: None,
        urls: &[],
    };
    (gz, spec)
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir);
    names.sort();
    names
}

fn walk(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    rd.flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                vec![
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                ]
            }
        })
        .collect()
}

#[test]
fn a_good_download_lands_verified_at_its_destination() {
    let (gz, spec) = payload();
    let base = serve(vec![("/tiny.gz", Reply::Ok(gz.clone()))], 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("sub").join("tiny-idx3-ubyte.gz");
    download_verified(&format!("{base}/tiny.gz"), &dest, &spec).expect("download succeeds");
    assert_eq!(std::fs::read(&dest).expect("landed"), gz);
    assert_eq!(
        dir_entries(dir.path()),
        vec!["tiny-idx3-ubyte.gz"],
        "no .part file remains"
    );
}

#[test]
fn a_corrupted_download_is_rejected_and_leaves_no_file() {
    let (_, spec) = payload();
    let bad = common::gzip(&common::idx_bytes(&[3, 2, 2], &[0; 12]));
    let base = serve(vec![("/tiny.gz", Reply::Ok(bad))], 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("tiny-idx3-ubyte.gz");
    let err = download_verified(&format!("{base}/tiny.gz"), &dest, &spec)
        .expect_err("checksum must fail");
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("decompressed content"), "{err}");
    assert!(
        dir_entries(dir.path()).is_empty(),
        "left behind: {:?}",
        dir_entries(dir.path())
    );
}

#[test]
fn a_cut_off_transfer_is_rejected_and_leaves_no_file() {
    let (gz, spec) = payload();
    let base = serve(vec![("/tiny.gz", Reply::CutOff(gz))], 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("tiny-idx3-ubyte.gz");
    let err = download_verified(&format!("{base}/tiny.gz"), &dest, &spec).expect_err("cut off");
    assert!(
        err.to_string().contains(&format!("{base}/tiny.gz")),
        "names the URL: {err}"
    );
    assert!(
        dir_entries(dir.path()).is_empty(),
        "left behind: {:?}",
        dir_entries(dir.path())
    );
}

#[test]
fn an_http_error_is_reported_with_the_url_and_leaves_no_file() {
    let (_, spec) = payload();
    let base = serve(vec![], 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("tiny-idx3-ubyte.gz");
    let err = download_verified(&format!("{base}/missing.gz"), &dest, &spec).expect_err("404");
    let msg = err.to_string();
    assert!(matches!(err, DataError::Download { .. }), "{msg}");
    assert!(msg.contains("404"), "{msg}");
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn the_locator_downloads_a_missing_catalogue_file_from_a_mirror_into_the_local_dir() {
    // Serve the real KMNIST test files under the mirror layout `<base>/kmnist/<file>`.
    let real = common::real_data_dir().join("kmnist");
    let images = std::fs::read(real.join("t10k-images-idx3-ubyte.gz")).expect("real file");
    let labels = std::fs::read(real.join("t10k-labels-idx1-ubyte.gz")).expect("real file");
    let base = serve(
        vec![
            ("/kmnist/t10k-images-idx3-ubyte.gz", Reply::Ok(images)),
            ("/kmnist/t10k-labels-idx1-ubyte.gz", Reply::Ok(labels)),
        ],
        2,
    );
    let empty = tempfile::tempdir().expect("temp dir");
    let local = tempfile::tempdir().expect("temp dir");
    let locator = Locator::only(empty.path())
        .with_local_dir(local.path())
        .with_mirror(&base)
        .with_download(true);
    let set = Dataset::Kmnist
        .load(Split::Test, &locator)
        .expect("downloaded and verified");
    assert_eq!(set.len(), 10_000);
    assert!(
        local
            .path()
            .join("kmnist/t10k-images-idx3-ubyte.gz")
            .is_file()
    );
    // A second load finds the files locally: the server has stopped after two requests.
    let again = Dataset::Kmnist
        .load(Split::Test, &locator)
        .expect("found locally");
    assert_eq!(again.pixels(), set.pixels());
}

#[test]
fn the_locator_reports_every_failed_url_when_no_download_works() {
    let base = serve(vec![], 1);
    let empty = tempfile::tempdir().expect("temp dir");
    let locator = Locator::only(empty.path())
        .with_local_dir(empty.path())
        .with_mirror(&base)
        .with_download(true);
    let err = Dataset::Omniglot
        .load(Split::Test, &locator)
        .expect_err("omniglot has no URL; mirror 404s");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "download {base}/omniglot/omniglot-eval-images-idx3-ubyte.gz"
        )),
        "{msg}"
    );
    assert!(msg.contains("404"), "{msg}");
    assert!(dir_entries(empty.path()).is_empty());
}

#[test]
fn a_failed_download_does_not_advise_enabling_downloads() {
    let base = serve(vec![], 1);
    let empty = tempfile::tempdir().expect("temp dir");
    let locator = Locator::only(empty.path())
        .with_local_dir(empty.path())
        .with_mirror(&base)
        .with_download(true);
    let msg = Dataset::Omniglot
        .load(Split::Test, &locator)
        .expect_err("the mirror 404s")
        .to_string();
    assert!(!msg.contains("enable downloading"), "{msg}");
    assert!(msg.contains("the download failed"), "{msg}");
    assert!(
        dir_entries(empty.path()).is_empty(),
        "no empty dataset folder"
    );
    // Without a download tried, the advice stays.
    let msg = Dataset::Omniglot
        .load(Split::Test, &Locator::only(empty.path()))
        .expect_err("nothing there")
        .to_string();
    assert!(msg.contains("enable downloading"), "{msg}");
}
