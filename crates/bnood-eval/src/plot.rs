//! PNG plots of the evaluation: ROC curves ([`roc_png`]) and line charts such as mean
//! bits/dim against the ratio `r` of test samples in the mixed batch ([`line_png`]).
//!
//! Plots are [`WIDTH_PX`] × [`HEIGHT_PX`] RGB PNGs on a white background, one colour per
//! series, with a legend placed where it hides the least of the curves. They render the
//! same everywhere, fonts included: text is rasterised with `ab_glyph` from a DejaVu Sans
//! subset embedded in the crate (`assets/`), so no system font, fontconfig or freetype is
//! needed. The same input gives the same bytes, and a plot is written atomically: a
//! reader never sees half a file.
//!
//! ```no_run
//! use bnood_eval::plot::{Series, line_png};
//! # fn main() -> Result<(), bnood_eval::plot::PlotError> {
//! let sweep = Series::new("CIFAR-10 → SVHN", vec![(0.0, 3.4), (0.5, 3.9), (1.0, 4.6)]);
//! line_png("figure3.png".as_ref(), "Ratio sweep", "ratio r", "mean bits/dim", &[sweep])?;
//! # Ok(())
//! # }
//! ```

use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::FontRef;
use plotters::backend::{BitMapBackend, DrawingBackend, RGBPixel};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontDesc, FontFamily, FontStyle, register_font};

use Third::{End, Middle, Start};
use text_backend::TextBackend;

mod text_backend;

/// Width of every plot, in pixels.
pub const WIDTH_PX: u32 = 800;
/// Height of every plot, in pixels.
pub const HEIGHT_PX: u32 = 600;

/// One named curve of a plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Name shown in the legend.
    pub label: String,
    /// Points `(x, y)`, drawn joined in this order.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series named `label` through `points`.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
        }
    }
}

/// Why a plot could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The list of series is empty.
    #[error("nothing to plot: pass at least one series")]
    NoSeries,
    /// A series has no points.
    #[error("series \"{label}\" has no points: drop it or give it at least one (x, y) point")]
    EmptySeries {
        /// Label of the series.
        label: String,
    },
    /// A point has a NaN or infinite coordinate.
    #[error(
        "series \"{label}\" has a non-finite point #{index} ({x}, {y}): remove or replace NaN and infinite values before plotting"
    )]
    NonFinite {
        /// Label of the series.
        label: String,
        /// Position of the point in the series.
        index: usize,
        /// Its x coordinate.
        x: f64,
        /// Its y coordinate.
        y: f64,
    },
    /// A ROC point lies outside `[0, 1] × [0, 1]`.
    #[error(
        "series \"{label}\" has point #{index} ({x}, {y}) outside [0, 1] × [0, 1]: a ROC curve plots rates (false-positive rate, true-positive rate)"
    )]
    OutsideUnitSquare {
        /// Label of the series.
        label: String,
        /// Position of the point in the series.
        index: usize,
        /// Its x coordinate.
        x: f64,
        /// Its y coordinate.
        y: f64,
    },
    /// The values of an axis span more than `f64` can represent with a margin.
    #[error("the {axis} values span {min} to {max}, too wide to plot: rescale them")]
    RangeTooWide {
        /// `"x"` or `"y"`.
        axis: &'static str,
        /// Smallest value on that axis.
        min: f64,
        /// Largest value on that axis.
        max: f64,
    },
    /// Drawing or PNG encoding failed; nothing was written.
    #[error("could not draw the plot for {path}: {message}; nothing was written")]
    Draw {
        /// Where the plot was to be written.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Writing the PNG failed; no partial file is left at `path`.
    #[error(
        "could not write the plot to {path}: {source}; check that its directory exists and is writable"
    )]
    Write {
        /// Where the plot was to be written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Writes ROC curves to the PNG at `path`: x is the false-positive rate, y the
/// true-positive rate, both on `[0, 1]`, with the chance diagonal (dashed) and a legend.
/// The legend goes where it hides the least of the curves: a corner if one is as good
/// as anywhere (lower right first here, upper right first in [`line_png`]), else the
/// middle of a side.
///
/// # Errors
/// [`PlotError`] when `curves` is empty, a curve has no points, a point is not finite or
/// lies outside `[0, 1] × [0, 1]`, or the file cannot be drawn or written.
pub fn roc_png(path: &Path, title: &str, curves: &[Series]) -> Result<(), PlotError> {
    check_series(curves)?;
    check_unit_square(curves)?;
    render_png(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, font(28.0))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(70)
            // A little room so that curves along the edges (TPR = 1) stay visible.
            .build_cartesian_2d(-0.01..1.01, -0.01..1.01)?;
        chart
            .configure_mesh()
            .x_desc("false-positive rate")
            .y_desc("true-positive rate")
            .axis_desc_style(font(20.0))
            .label_style(font(16.0))
            .bold_line_style(GRID_BOLD)
            .light_line_style(GRID_LIGHT)
            .x_label_formatter(&|v| format!("{v:.1}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()?;
        let chance = RGBColor(150, 150, 150).stroke_width(1);
        let diagonal = [(0.0, 0.0), (1.0, 1.0)];
        chart
            .draw_series(DashedLineSeries::new(diagonal, 6, 6, chance))?
            .label("chance")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], chance));
        for (i, curve) in curves.iter().enumerate() {
            let style = series_colour(i).stroke_width(2);
            chart
                .draw_series(LineSeries::new(curve.points.iter().copied(), style))?
                .label(curve.label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
        }
        let labels: Vec<_> = ["chance"]
            .into_iter()
            .chain(curves.iter().map(|c| c.label.as_str()))
            .collect();
        let lines: Vec<_> = [&diagonal[..]]
            .into_iter()
            .chain(curves.iter().map(|c| &c.points[..]))
            .collect();
        draw_legend(&mut chart, &labels, &lines, ROC_SPOTS)
    })
}

/// Writes a line chart with markers to the PNG at `path`, e.g. mean bits/dim (y) against
/// the ratio `r` of test samples in the batch (x). Axis ranges cover the data with a 5 %
/// margin; the legend is placed as in [`roc_png`].
///
/// # Errors
/// [`PlotError`] when `series` is empty, a series has no points, a point is not finite,
/// an axis spans too wide a range, or the file cannot be drawn or written.
pub fn line_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), PlotError> {
    check_series(series)?;
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let x_range = padded_range("x", points().map(|(x, _)| x))?;
    let y_range = padded_range("y", points().map(|(_, y)| y))?;
    render_png(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, font(28.0))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(80)
            .build_cartesian_2d(x_range.clone(), y_range.clone())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .axis_desc_style(font(20.0))
            .label_style(font(16.0))
            .bold_line_style(GRID_BOLD)
            .light_line_style(GRID_LIGHT)
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let colour = series_colour(i);
            let line = colour.stroke_width(2);
            let markers = s.points.iter().map(|&p| Circle::new(p, 4, colour.filled()));
            chart.draw_series(markers)?;
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), line))?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new([(0, 0), (24, 0)], line)
                        + Circle::new((12, 0), 4, colour.filled())
                });
        }
        let labels: Vec<_> = series.iter().map(|s| s.label.as_str()).collect();
        let lines: Vec<_> = series.iter().map(|s| &s.points[..]).collect();
        draw_legend(&mut chart, &labels, &lines, LINE_SPOTS)
    })
}

/// Draws a learning curve of `bnood train` ([`bnood_models::curve::LearningCurve`]) to the
/// PNG at `path`: bits/dim (y) against epochs (x), one series for the training loss and one
/// per held-out metric. Points on another scale than the first metric's last value (outside
/// half to twice it: the untrained model's row, or MNIST in Batch mode beside Fashion-MNIST)
/// would flatten the rest, so they are left to the CSV; a series with no point on the scale
/// is named in the title.
///
/// # Errors
/// As [`line_png`]; [`PlotError::NoSeries`] for a curve without rows.
pub fn curve_png(path: &Path, curve: &bnood_models::curve::LearningCurve) -> Result<(), PlotError> {
    let (series, left_out) = curve_series(curve);
    let title = if left_out.is_empty() {
        "Learning curve".to_string()
    } else {
        format!("Learning curve (off scale: {})", left_out.join(", "))
    };
    line_png(path, &title, "epoch", "bits/dim", &series)
}

/// The series [`curve_png`] draws, and the metrics it leaves out as off scale.
fn curve_series(curve: &bnood_models::curve::LearningCurve) -> (Vec<Series>, Vec<&str>) {
    let reference = curve
        .rows
        .iter()
        .rev()
        .filter_map(|r| r.values.first().copied())
        .find(|v| v.is_finite());
    let on_scale = |y: f64| match reference {
        Some(r) => y >= 0.5 * r && y <= 2.0 * r,
        None => true,
    };
    let keep = |pts: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        pts.into_iter()
            .filter(|&(x, y)| x.is_finite() && y.is_finite() && on_scale(y))
            .collect()
    };
    let mut series = Vec::new();
    let mut left_out = Vec::new();
    let train = keep(curve.rows.iter().map(|r| (r.epoch, r.train_bpd)).collect());
    if !train.is_empty() {
        series.push(Series::new(
            "training loss (dequantised, Train mode)",
            train,
        ));
    }
    for (i, name) in curve.metrics.iter().enumerate() {
        let pts = keep(
            curve
                .rows
                .iter()
                .filter_map(|r| r.values.get(i).map(|&v| (r.epoch, v)))
                .collect(),
        );
        if pts.is_empty() {
            left_out.push(name.as_str());
        } else {
            series.push(Series::new(name.as_str(), pts));
        }
    }
    (series, left_out)
}

const GRID_BOLD: RGBColor = RGBColor(210, 210, 210);
const GRID_LIGHT: RGBColor = RGBColor(240, 240, 240);

/// Family name the embedded font is registered under; unique so that it never replaces
/// a font another user of plotters registered in the same process.
const FONT_FAMILY: &str = "bnood-eval DejaVu Sans";

/// DejaVu Sans 2.37, subset to Latin, Greek and common symbols (see `assets/README.md`).
static FONT_TTF: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");

type DrawError = DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;
type Chart<'a, 'b> = ChartContext<'a, TextBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn font(size_px: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FONT_FAMILY), size_px, FontStyle::Normal)
}

/// The embedded font, parsed and registered with plotters (whose legends measure text
/// with it) once per process; `None` if it is invalid.
fn embedded_font() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| {
        let font = FontRef::try_from_slice(FONT_TTF).ok()?;
        register_font(FONT_FAMILY, FontStyle::Normal, FONT_TTF).ok()?;
        Some(font)
    })
    .as_ref()
}

/// Size of the legend's text, in pixels.
const LEGEND_FONT_PX: f64 = 16.0;
/// Padding inside the legend box, in pixels.
const LEGEND_PADDING_PX: i32 = 8;
/// Width plotters reserves for each legend's line sample, in pixels (its default).
const LEGEND_SAMPLE_PX: i32 = 30;
/// Gap plotters leaves between the legend and the edges of the plot, in pixels.
const LEGEND_INSET_PX: i32 = 5;

/// Where the legend may go: thirds of the plot, horizontally and vertically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Third {
    /// Left or upper.
    Start,
    Middle,
    /// Right or lower.
    End,
}

/// A place for the legend, `(horizontal, vertical)`.
type Spot = (Third, Third);

/// Places in the order tried when several hide equally little of the curves: corners
/// first, and for ROC curves the lower right, which a curve above the diagonal leaves
/// empty.
const ROC_SPOTS: [Spot; 8] = [
    (End, End),
    (Start, Start),
    (Start, End),
    (End, Start),
    (End, Middle),
    (Middle, End),
    (Start, Middle),
    (Middle, Start),
];
const LINE_SPOTS: [Spot; 8] = [
    (End, Start),
    (Start, Start),
    (End, End),
    (Start, End),
    (Middle, Start),
    (Middle, End),
    (End, Middle),
    (Start, Middle),
];

fn label_position(spot: Spot) -> SeriesLabelPosition {
    match spot {
        (Start, Start) => SeriesLabelPosition::UpperLeft,
        (Middle, Start) => SeriesLabelPosition::UpperMiddle,
        (End, Start) => SeriesLabelPosition::UpperRight,
        (Start, Middle) => SeriesLabelPosition::MiddleLeft,
        (Middle, Middle) => SeriesLabelPosition::MiddleMiddle,
        (End, Middle) => SeriesLabelPosition::MiddleRight,
        (Start, End) => SeriesLabelPosition::LowerLeft,
        (Middle, End) => SeriesLabelPosition::LowerMiddle,
        (End, End) => SeriesLabelPosition::LowerRight,
    }
}

/// Draws the legend of `labels` at the place among `spots` where it covers the fewest
/// pixels of the polylines `lines` (the first such place on ties).
fn draw_legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    labels: &[&str],
    lines: &[&[(f64, f64)]],
    spots: [Spot; 8],
) -> Result<(), DrawError> {
    let spot = quietest_spot(chart, labels, lines, spots);
    chart
        .configure_series_labels()
        .position(label_position(spot))
        .margin(LEGEND_PADDING_PX)
        .label_font(font(LEGEND_FONT_PX))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// The place among `spots` where a legend of `labels` covers the fewest pixels of the
/// polylines `lines`.
fn quietest_spot(
    chart: &Chart<'_, '_>,
    labels: &[&str],
    lines: &[&[(f64, f64)]],
    spots: [Spot; 8],
) -> Spot {
    // The legend's size, measured as plotters measures it.
    let style = TextStyle::from(font(LEGEND_FONT_PX));
    let mut text = MultiLineText::<_, &str>::new((0, 0), &style);
    for &label in labels {
        text.push_line(label);
    }
    let Ok((text_w, text_h)) = text.estimate_dimension() else {
        return spots[0];
    };
    let (w, h) = (
        text_w + LEGEND_SAMPLE_PX + 2 * LEGEND_PADDING_PX,
        text_h + 2 * LEGEND_PADDING_PX,
    );
    // Where plotters puts a box of `size` px along an axis spanning `range` px.
    let start = |third: Third, range: &Range<i32>, size: i32| match third {
        Start => range.start + LEGEND_INSET_PX,
        Middle => range.start + (range.end - range.start - size) / 2,
        End => range.end - size - LEGEND_INSET_PX,
    };
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let box_of = |(h_third, v_third): Spot| {
        let (x0, y0) = (start(h_third, &xs, w), start(v_third, &ys, h));
        (x0..=x0 + w, y0..=y0 + h)
    };
    let boxes = spots.map(box_of);
    let mut covered = [0usize; 8];
    for line in lines {
        let pixels: Vec<_> = line.iter().map(|p| chart.backend_coord(p)).collect();
        for_each_pixel_along(&pixels, |(x, y)| {
            for (count, (bx, by)) in covered.iter_mut().zip(&boxes) {
                *count += usize::from(bx.contains(&x) && by.contains(&y));
            }
        });
    }
    // `min_by_key` keeps the first of equal minima, hence the order of `spots`.
    (0..spots.len())
        .min_by_key(|&i| covered[i])
        .map_or(spots[0], |i| spots[i])
}

/// Calls `visit` on points every two pixels or so along the polyline through `pixels`.
fn for_each_pixel_along(pixels: &[(i32, i32)], mut visit: impl FnMut((i32, i32))) {
    if let [only] = pixels {
        visit(*only);
    }
    for pair in pixels.windows(2) {
        let [(x0, y0), (x1, y1)] = [pair[0], pair[1]].map(|(x, y)| (f64::from(x), f64::from(y)));
        // Every point lies inside the plot; the cap only guards against the unforeseen.
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()) / 2.0)
            .ceil()
            .clamp(1.0, 4096.0);
        for k in 0..=(steps as u32) {
            let t = f64::from(k) / steps;
            visit(((x0 + t * (x1 - x0)) as i32, (y0 + t * (y1 - y0)) as i32));
        }
    }
}

/// Draws on a white [`WIDTH_PX`] × [`HEIGHT_PX`] canvas, then writes it as PNG to `path`.
fn render_png(
    path: &Path,
    draw: impl FnOnce(&DrawingArea<TextBackend<'_>, Shift>) -> Result<(), DrawError>,
) -> Result<(), PlotError> {
    let draw_failed = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    let Some(font) = embedded_font() else {
        return Err(draw_failed(
            "the embedded font could not be loaded; this is a bug of bnood-eval, please report it"
                .into(),
        ));
    };
    let mut rgb = vec![0u8; WIDTH_PX as usize * HEIGHT_PX as usize * 3];
    {
        let backend =
            BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut rgb, (WIDTH_PX, HEIGHT_PX))
                .map_err(|e| draw_failed(e.to_string()))?;
        let root = TextBackend::new(backend, font).into_drawing_area();
        root.fill(&WHITE)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present())
            .map_err(|e| draw_failed(e.to_string()))?;
    }
    let png = encode_png(&rgb).map_err(|e| draw_failed(format!("PNG encoding failed: {e}")))?;
    write_atomically(path, &png)
}

fn encode_png(rgb: &[u8]) -> Result<Vec<u8>, png::EncodingError> {
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, WIDTH_PX, HEIGHT_PX);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(png)
}

/// Writes `bytes` to a fresh temporary file beside `path`, then renames it over `path`,
/// so that `path` holds either its old content or the whole plot, never part of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PlotError> {
    bnood_data::atomic::write_atomically(path, |f| f.write_all(bytes)).map_err(|source| {
        PlotError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn check_series(series: &[Series]) -> Result<(), PlotError> {
    if series.is_empty() {
        return Err(PlotError::NoSeries);
    }
    for s in series {
        if s.points.is_empty() {
            return Err(PlotError::EmptySeries {
                label: s.label.clone(),
            });
        }
        if let Some((index, &(x, y))) = s
            .points
            .iter()
            .enumerate()
            .find(|(_, (x, y))| !(x.is_finite() && y.is_finite()))
        {
            return Err(PlotError::NonFinite {
                label: s.label.clone(),
                index,
                x,
                y,
            });
        }
    }
    Ok(())
}

fn check_unit_square(curves: &[Series]) -> Result<(), PlotError> {
    let unit = 0.0..=1.0;
    for c in curves {
        if let Some((index, &(x, y))) = c
            .points
            .iter()
            .enumerate()
            .find(|(_, (x, y))| !(unit.contains(x) && unit.contains(y)))
        {
            return Err(PlotError::OutsideUnitSquare {
                label: c.label.clone(),
                index,
                x,
                y,
            });
        }
    }
    Ok(())
}

/// The range of finite `values` widened by 5 % of its span on each side (or by 5 % of
/// the value, or 0.5 around zero, when all values are equal).
fn padded_range(
    axis: &'static str,
    values: impl Iterator<Item = f64>,
) -> Result<Range<f64>, PlotError> {
    let (min, max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let span = max - min;
    let margin = if span > 0.0 {
        0.05 * span
    } else if min != 0.0 {
        0.05 * min.abs()
    } else {
        0.5
    };
    let (lo, hi) = (min - margin, max + margin);
    if lo.is_finite() && hi.is_finite() && lo < hi {
        Ok(lo..hi)
    } else {
        Err(PlotError::RangeTooWide { axis, min, max })
    }
}

/// Colour of the `index`-th series: matplotlib's ten "tab10" colours, then hues spread by
/// the golden angle so that further series stay distinct.
fn series_colour(index: usize) -> RGBColor {
    const TAB10: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    TAB10.get(index).copied().unwrap_or_else(|| {
        let hue = (index as f64 * 0.618_033_988_749_895).fract();
        let (r, g, b) = HSLColor(hue, 0.65, 0.45).rgb();
        RGBColor(r, g, b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learning_curve_plot_leaves_off_scale_points_and_metrics_to_the_csv() {
        use bnood_models::curve::{CurveRow, LearningCurve};
        let row = |epoch: f64, train: f64, values: Vec<f64>| CurveRow {
            step: (epoch * 937.0) as usize,
            epoch,
            lr: 1e-3,
            train_bpd: train,
            seconds: 0.0,
            values,
        };
        let curve = LearningCurve {
            metrics: vec!["fmnist".into(), "mnist".into()],
            rows: vec![
                row(0.0, f64::NAN, vec![9.7, 10.9]),
                row(1.0, 3.8, vec![3.7, 11.9]),
                row(2.0, 3.6, vec![3.5, 12.2]),
            ],
        };
        let (series, left_out) = curve_series(&curve);
        let labels: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            ["training loss (dequantised, Train mode)", "fmnist"]
        );
        assert_eq!(
            series[1].points,
            [(1.0, 3.7), (2.0, 3.5)],
            "the untrained row is off scale"
        );
        assert_eq!(left_out, ["mnist"]);
    }
}
