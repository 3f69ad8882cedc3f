//! Behaviour of the PNG plots: valid images of the stated size, curves drawn, determinism,
//! and errors (not panics, not partial files) for bad input and unwritable paths.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use bnood_eval::plot::{HEIGHT_PX, PlotError, Series, WIDTH_PX, line_png, roc_png};

/// A fresh, empty directory for one test, under the target directory.
fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bnood-eval-plot")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Decoded image: width, height and RGB pixels.
fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let bytes = fs::read(path).unwrap();
    let mut reader = png::Decoder::new(Cursor::new(bytes)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

fn count(pixels: &[[u8; 3]], colour: [u8; 3]) -> usize {
    pixels.iter().filter(|&&p| p == colour).count()
}

const WHITE: [u8; 3] = [255, 255, 255];
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];

fn roc_curves() -> Vec<Series> {
    vec![
        Series::new(
            "batch norm, r = 1 (AUROC 0.98)",
            vec![
                (0.0, 0.0),
                (0.02, 0.6),
                (0.05, 0.9),
                (0.2, 0.98),
                (1.0, 1.0),
            ],
        ),
        Series::new(
            "likelihood (AUROC 0.08)",
            vec![(0.0, 0.0), (0.5, 0.02), (0.9, 0.1), (1.0, 1.0)],
        ),
    ]
}

fn sweep() -> Vec<Series> {
    let ratios = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0];
    vec![
        Series::new(
            "CIFAR-10 (in-distribution)",
            ratios.iter().map(|&r| (r, 3.38 + 0.02 * r)).collect(),
        ),
        Series::new(
            "SVHN (OoD)",
            ratios.iter().map(|&r| (r, 2.2 + 2.3 * r * r)).collect(),
        ),
    ]
}

#[test]
fn roc_png_is_a_png_of_the_stated_size_with_curves_drawn() {
    let path = test_dir("roc_size").join("roc.png");
    roc_png(&path, "ROC: CIFAR-10 vs SVHN", &roc_curves()).unwrap();
    let (w, h, pixels) = decode(&path);
    assert_eq!((w, h), (WIDTH_PX, HEIGHT_PX));
    assert_eq!((w, h), (800, 600));
    assert_eq!(pixels[0], WHITE, "white background");
    let background = count(&pixels, WHITE);
    assert!(background < pixels.len(), "the image is not uniform");
    assert!(background > pixels.len() / 2, "mostly background");
    assert!(
        count(&pixels, BLUE) > 300,
        "first curve drawn in its colour"
    );
    assert!(
        count(&pixels, ORANGE) > 300,
        "second curve drawn in its colour"
    );
}

#[test]
fn line_png_is_a_png_of_the_stated_size_with_curves_drawn() {
    let path = test_dir("line_size").join("sweep.png");
    line_png(
        &path,
        "Mean bits/dim against the ratio r",
        "ratio r of test samples in the batch",
        "mean bits/dim",
        &sweep(),
    )
    .unwrap();
    let (w, h, pixels) = decode(&path);
    assert_eq!((w, h), (WIDTH_PX, HEIGHT_PX));
    assert_eq!(pixels[0], WHITE);
    assert!(count(&pixels, WHITE) < pixels.len());
    assert!(count(&pixels, BLUE) > 300);
    assert!(count(&pixels, ORANGE) > 300);
}

#[test]
fn same_input_gives_identical_bytes() {
    let dir = test_dir("determinism");
    let (a, b) = (dir.join("a.png"), dir.join("b.png"));
    roc_png(&a, "ROC", &roc_curves()).unwrap();
    roc_png(&b, "ROC", &roc_curves()).unwrap();
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    line_png(&a, "sweep", "r", "bpd", &sweep()).unwrap();
    line_png(&b, "sweep", "r", "bpd", &sweep()).unwrap();
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
}

#[test]
fn a_plot_replaces_an_existing_file_and_leaves_no_temporary_file() {
    let dir = test_dir("replace");
    let path = dir.join("roc.png");
    fs::write(&path, b"old").unwrap();
    roc_png(&path, "ROC", &roc_curves()).unwrap();
    assert_eq!(decode(&path).0, WIDTH_PX);
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["roc.png"]);
}

#[test]
fn an_empty_series_list_is_an_error() {
    let path = test_dir("no_series").join("p.png");
    assert!(matches!(roc_png(&path, "t", &[]), Err(PlotError::NoSeries)));
    assert!(matches!(
        line_png(&path, "t", "x", "y", &[]),
        Err(PlotError::NoSeries)
    ));
    assert!(!path.exists());
}

#[test]
fn a_series_without_points_is_an_error_naming_it() {
    let path = test_dir("empty_series").join("p.png");
    let series = [sweep()[0].clone(), Series::new("hollow", vec![])];
    let err = line_png(&path, "t", "x", "y", &series).unwrap_err();
    assert!(matches!(err, PlotError::EmptySeries { .. }));
    assert!(err.to_string().contains("\"hollow\""), "{err}");
    assert!(roc_png(&path, "t", &series).is_err());
    assert!(!path.exists());
}

#[test]
fn non_finite_points_are_an_error_naming_the_series() {
    let path = test_dir("non_finite").join("p.png");
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let series = [
            sweep()[0].clone(),
            Series::new("SVHN", vec![(0.0, 1.0), (0.5, bad)]),
        ];
        let err = line_png(&path, "t", "x", "y", &series).unwrap_err();
        assert!(
            matches!(err, PlotError::NonFinite { index: 1, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"SVHN\""), "{err}");
        let curves = [Series::new("roc", vec![(bad, 0.5)])];
        let err = roc_png(&path, "t", &curves).unwrap_err();
        assert!(err.to_string().contains("\"roc\""), "{err}");
    }
    assert!(!path.exists());
}

#[test]
fn roc_points_outside_the_unit_square_are_an_error() {
    let path = test_dir("outside").join("p.png");
    let curves = [Series::new("scores", vec![(0.0, 0.0), (0.5, 1.5)])];
    let err = roc_png(&path, "t", &curves).unwrap_err();
    assert!(
        matches!(err, PlotError::OutsideUnitSquare { index: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"scores\""), "{err}");
}

#[test]
fn an_unwritable_path_is_an_error_and_leaves_no_partial_file() {
    let dir = test_dir("unwritable");
    // The directory does not exist.
    let missing = dir.join("missing").join("p.png");
    let err = roc_png(&missing, "t", &roc_curves()).unwrap_err();
    assert!(matches!(err, PlotError::Write { .. }), "{err:?}");
    assert!(err.to_string().contains("p.png"), "{err}");
    assert!(!dir.join("missing").exists());
    // The path is a directory: the temporary file is written, then cannot replace it.
    let occupied = dir.join("occupied.png");
    fs::create_dir(&occupied).unwrap();
    let err = line_png(&occupied, "t", "x", "y", &sweep()).unwrap_err();
    assert!(matches!(err, PlotError::Write { .. }), "{err:?}");
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["occupied.png"], "no temporary file left behind");
    assert_eq!(fs::read_dir(&occupied).unwrap().count(), 0);
    // A path that names no file.
    assert!(matches!(
        roc_png(Path::new(""), "t", &roc_curves()),
        Err(PlotError::Write { .. })
    ));
}

#[test]
fn degenerate_and_extreme_data_plot_or_fail_without_panicking() {
    let dir = test_dir("degenerate");
    let path = dir.join("p.png");
    let cases = [
        vec![Series::new("one point", vec![(0.5, 3.0)])],
        vec![Series::new("constant", vec![(0.0, 0.0), (1.0, 0.0)])],
        vec![Series::new("vertical", vec![(2.0, -1.0), (2.0, 1.0)])],
        vec![Series::new("negative", vec![(-5.0, -1e-9), (-4.0, -3e-9)])],
        vec![Series::new(
            "tiny span",
            vec![(1e16, 1.0), (1e16 + 2.0, 1.0 + 1e-15)],
        )],
        vec![Series::new("huge", vec![(0.0, 1e300), (1.0, -1e300)])],
        vec![Series::new("", vec![(0.0, 1.0), (1.0, 2.0)])],
        vec![Series::new(
            "ünïcødé σ → ∞ 漢字",
            vec![(0.0, 1.0), (1.0, 2.0)],
        )],
    ];
    for (i, series) in cases.iter().enumerate() {
        let case = dir.join(format!("case{i}.png"));
        line_png(&case, &series[0].label, "x", "y", series).unwrap();
        assert_eq!(decode(&case).0, WIDTH_PX, "{}", series[0].label);
    }
    let too_wide = [Series::new("wide", vec![(0.0, f64::MAX), (1.0, -f64::MAX)])];
    let err = line_png(&path, "t", "x", "y", &too_wide).unwrap_err();
    assert!(
        matches!(err, PlotError::RangeTooWide { axis: "y", .. }),
        "{err:?}"
    );
    roc_png(&path, "t", &[Series::new("point", vec![(0.3, 0.7)])]).unwrap();
}

#[test]
fn many_series_get_distinct_colours() {
    let path = test_dir("many").join("many.png");
    let series: Vec<_> = (0..14)
        .map(|i| {
            let level = f64::from(i);
            Series::new(
                format!("series {i}"),
                vec![(0.0, level), (1.0, level + 0.5)],
            )
        })
        .collect();
    line_png(&path, "14 series", "x", "y", &series).unwrap();
    let (_, _, pixels) = decode(&path);
    let mut colours: Vec<_> = pixels.clone();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 14);
}

/// Pure black pixels inside the rectangle `[x0, x1) × [y0, y1)`: the legend's border
/// and text (curves use the palette, the grid is grey).
fn black_in(pixels: &[[u8; 3]], (x0, x1): (usize, usize), (y0, y1): (usize, usize)) -> usize {
    (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| y * WIDTH_PX as usize + x))
        .filter(|&i| pixels[i] == [0, 0, 0])
        .count()
}

#[test]
fn the_legend_goes_where_it_hides_no_curve() {
    let dir = test_dir("legend");
    // Inner quarters of the plot area, away from axes and tick labels.
    let (left, right) = ((130, 430), (460, 760));
    let (upper, lower) = ((70, 280), (300, 500));

    // A good detector's ROC curve leaves the lower right free.
    let roc = dir.join("roc.png");
    roc_png(&roc, "t", &roc_curves()[..1]).unwrap();
    let (_, _, pixels) = decode(&roc);
    assert!(
        black_in(&pixels, right, lower) > 50,
        "legend at the lower right"
    );
    assert_eq!(black_in(&pixels, left, upper), 0);

    // A rising curve fills the upper right, where a line chart's legend goes by default.
    let rising = dir.join("rising.png");
    let series = [Series::new(
        "rising",
        vec![(0.0, 0.0), (0.5, 0.2), (1.0, 1.0)],
    )];
    line_png(&rising, "t", "x", "y", &series).unwrap();
    let (_, _, pixels) = decode(&rising);
    assert_eq!(
        black_in(&pixels, right, upper),
        0,
        "legend not on the curve"
    );
    assert!(
        black_in(&pixels, left, upper) > 50,
        "legend at the upper left"
    );
}

/// Not a check: writes the sample plots the docs and reviews look at.
#[test]
fn sample_plots_are_written_for_inspection() {
    let dir = test_dir("samples");
    roc_png(
        &dir.join("roc.png"),
        "ROC: CIFAR-10 (in) vs SVHN (out)",
        &roc_curves(),
    )
    .unwrap();
    line_png(
        &dir.join("sweep.png"),
        "Figure 3: mean bits/dim against the ratio r",
        "ratio r of test samples in the batch",
        "mean bits/dim",
        &sweep(),
    )
    .unwrap();
}
