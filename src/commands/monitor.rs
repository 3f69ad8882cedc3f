//! `bnood monitor`: the window test over a stream of inputs (a whole set, or a folder
//! watched for new PNG files), writing one row per window and statistic as each window
//! completes, and (`--study`) its power study.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::commands::paths::{catalogue_name_notice, check_output, is_png_folder, write_text};
use crate::commands::preprocess::{HELD_OUT_REFERENCE, ModelImages, held_out_reference};
use crate::commands::{Notice, Notify, RunContext, notify_some};
use crate::data::{ImageSet, Locator, is_catalogue_name, seeds};
use crate::detect::{
    ParamGuard, Progress, WindowOutcome, WindowStatistic, WindowTest, WindowTestParams,
};
use crate::error::{Error, Result};
use crate::eval::progress::BarProgress;
use crate::eval::{WindowPowerSpec, window_power};
use crate::models::AnyModel;

/// Output formats of `bnood monitor`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Debug)]
pub enum MonitorFormat {
    /// One CSV row per window and statistic, after a header.
    Csv,
    /// One JSON object per window and statistic, one per line (JSON Lines).
    Json,
    /// Markdown tables (`--study` only).
    Markdown,
}

/// The flags of `bnood monitor`.
#[derive(Args, Clone, Debug)]
pub struct MonitorArgs {
    /// Trained model: a checkpoint file (`.bpk` with its `.json` sidecar) or a shipped model's name (`bnood models list`).
    #[arg(long)]
    pub model: PathBuf,
    /// The stream: a catalogue name (fmnist, mnist, kmnist, omniglot, rotation), an IDX file or a folder of PNG or JPEG images; with --follow a folder that receives image files. With --study: the in-distribution pool.
    #[arg(long)]
    pub input: String,
    /// Inputs per window M (with --study: several, e.g. 16,64,256).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "64",
        allow_negative_numbers = true
    )]
    pub window: Vec<usize>,
    /// Window statistics, each with its own p-value: bn (BatchNorm), ks (Kolmogorov–Smirnov on log p), mmd (kernel MMD on pixels).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bn")]
    pub statistic: Vec<WindowStatistic>,
    /// Level α: a window is flagged when its p-value is at most α.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Monte Carlo null windows K drawn from the reference set (p-values are multiples of 1/(K+1)).
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    pub null_windows: usize,
    /// Reference set (in-distribution images the model did not train on): a catalogue name, an IDX file / image folder, or `held-out` (the part of the model's training set `bnood train --hold-out` kept out).
    #[arg(long, default_value = "fmnist-train")]
    pub reference: String,
    /// Reference images drawn at random (all if fewer); keep the calibration part (this minus --comparison-size) at 10·M or more.
    #[arg(long, default_value_t = 5000, allow_negative_numbers = true)]
    pub reference_size: usize,
    /// Reference images set aside as the comparison sample of ks and mmd.
    #[arg(long, default_value_t = 500, allow_negative_numbers = true)]
    pub comparison_size: usize,
    /// Most rows per batch-statistics forward pass; longer windows are cut into chunks.
    #[arg(long, default_value_t = 256, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Seed of the reference subset, the null windows and (--study) the windows.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = MonitorFormat::Csv)]
    pub format: MonitorFormat,
    /// Output file (default: stdout); rows are written as windows complete.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Watch the --input folder for new PNG files (write each as NAME.png.tmp, then rename it) and test each window as it fills.
    #[arg(long)]
    pub follow: bool,
    /// Milliseconds between two looks at the --follow folder.
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
    pub poll_ms: u64,
    /// Stop after this many windows (default: at the end of the input; never with --follow).
    #[arg(long, allow_negative_numbers = true)]
    pub max_windows: Option<usize>,
    /// Importance samples K of VAE scoring (default: the checkpoint's, 16).
    #[arg(long, allow_negative_numbers = true)]
    pub vae_samples: Option<usize>,
    /// Power study instead of a stream: mix these OoD sets (e.g. mnist,kmnist) into windows of --input and report the share of windows flagged by every statistic.
    #[arg(long, value_delimiter = ',')]
    pub study: Vec<String>,
    /// --study: OoD shares of a window [default: 0,0.05,0.1,0.25,0.5,1].
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub shares: Option<Vec<f64>>,
    /// --study: windows per (M, OoD set, positive share) cell [default: 100].
    #[arg(long, allow_negative_numbers = true)]
    pub windows_per_cell: Option<usize>,
    /// --study: windows at 0 % OoD per M, for the false-alarm rate [default: 200].
    #[arg(long, allow_negative_numbers = true)]
    pub false_alarm_windows: Option<usize>,
    /// --study: in-distribution images drawn from --input [default: all].
    #[arg(long, allow_negative_numbers = true)]
    pub input_size: Option<usize>,
    /// --study: images drawn from each OoD set [default: 2000].
    #[arg(long, allow_negative_numbers = true)]
    pub ood_size: Option<usize>,
}

impl MonitorArgs {
    fn params(&self, window: usize) -> WindowTestParams {
        WindowTestParams::new()
            .window(window)
            .statistics(&self.statistic)
            .null_windows(self.null_windows)
            .alpha(self.alpha)
            .comparison_size(self.comparison_size)
            .batch_size(self.batch_size)
            .seed(self.seed)
    }

    /// Refuses flags of the other mode, naming them.
    fn check_mode(&self) -> Result<()> {
        let study = !self.study.is_empty();
        let study_only = [
            ("--shares", self.shares.is_some()),
            ("--windows-per-cell", self.windows_per_cell.is_some()),
            ("--false-alarm-windows", self.false_alarm_windows.is_some()),
            ("--input-size", self.input_size.is_some()),
            ("--ood-size", self.ood_size.is_some()),
        ];
        if !study {
            if let Some((flag, _)) = study_only.iter().find(|(_, given)| *given) {
                return Err(Error::Invalid(format!(
                    "{flag} belongs to the power study: add --study OOD[,OOD…] (e.g. --study mnist,kmnist), or drop {flag}"
                )));
            }
            if self.window.len() != 1 {
                return Err(Error::Invalid(format!(
                    "--window takes one size when monitoring a stream (got {}); several sizes are for --study",
                    self.window.len()
                )));
            }
            if self.format == MonitorFormat::Markdown {
                return Err(Error::Invalid(
                    "--format markdown is for --study tables; a stream gives csv or json rows"
                        .into(),
                ));
            }
        } else {
            if self.follow {
                return Err(Error::Invalid(
                    "--follow watches a stream; --study measures power on catalogue sets: drop one of them".into(),
                ));
            }
            if self.max_windows.is_some() {
                return Err(Error::Invalid(
                    "--max-windows limits a stream; in --study set --windows-per-cell and --false-alarm-windows".into(),
                ));
            }
        }
        if self.max_windows == Some(0) {
            return Err(Error::Invalid(
                "--max-windows 0 would test nothing: give 1 or more, or drop it to test every window".into(),
            ));
        }
        if self.follow && (is_catalogue_name(&self.input) || !Path::new(&self.input).is_dir()) {
            return Err(Error::Invalid(format!(
                "--follow watches a folder, but --input {} is not one: pass the folder that receives the PNG files",
                self.input
            )));
        }
        if self.poll_ms == 0 {
            return Err(Error::Invalid(
                "--poll-ms 0 would spin: give at least 1 millisecond".into(),
            ));
        }
        Ok(())
    }
}

impl MonitorArgs {
    /// Runs `bnood monitor`: checks every flag and `--out` before any work, loads the
    /// model (a file or a shipped name), then either runs the power study (`--study`) or
    /// fits the window test on the reference set and tests the stream window by window,
    /// writing each window's rows (or the study's tables) to `--out`, or else to `stdout`,
    /// as it completes. With
    /// `--follow` it returns only after `--max-windows` windows or on an error.
    ///
    /// # Errors
    /// A flag of the other mode or an invalid value (named, with what to do), a model or
    /// set that cannot be read or does not fit, too few inputs for one window, or an
    /// output that cannot be written.
    pub fn run(
        &self,
        ctx: RunContext<'_>,
        stdout: &mut dyn Write,
        notify: Notify<'_>,
    ) -> Result<()> {
        let a = self;
        a.check_mode()?;
        for &m in &a.window {
            if a.study.is_empty() {
                a.params(m).check_ref()?;
            }
        }
        if let Some(out) = &a.out {
            let mut inputs = vec![PathBuf::from(&a.input), PathBuf::from(&a.reference)];
            inputs.push(a.model.clone());
            check_output(out, &inputs)?;
        }
        let loaded = ctx
            .models_dir
            .load(&a.model.to_string_lossy(), ctx.device, a.vae_samples)?;
        let images = ModelImages::of(&loaded);
        let checkpoint = loaded.path.clone();
        let model = loaded.model;
        if !a.study.is_empty() {
            return study(a, (model, &checkpoint), images, ctx, stdout, notify);
        }
        let mut test = WindowTest::new(model, ctx.device, a.params(a.window[0]))?;
        test.set_progress(BarProgress::hook(ctx.progress));
        let reference = load_reference(a, ctx.locator, (images, &checkpoint), notify)?;
        let calibration = reference.len()
            - if a.statistic.iter().any(|s| *s != WindowStatistic::Bn) {
                a.comparison_size.min(reference.len())
            } else {
                0
            };
        if calibration < 10 * a.window[0] {
            notify(Notice::Note(format!(
                "the null windows are drawn from {calibration} reference images, fewer than 10·M = {}: windows overlap and the null is too narrow, so more windows than α may be flagged; raise --reference-size",
                10 * a.window[0]
            )));
        }
        // A whole input is read (and refused when shorter than a window) before the fit.
        let stream = if a.follow {
            None
        } else {
            Some(load_stream(a, test.params().window(), ctx, images, notify)?)
        };
        test.fit(&reference)?;
        match stream {
            None => {
                let state = FollowState::open(a)?;
                // Rows of a resumed run go after the earlier runs' rows in --out.
                let resume = state.windows > 0 && a.out.as_ref().is_some_and(|o| o.is_file());
                let mut sink = Sink::open(a, stdout, resume)?;
                follow(a, &test, images, state, &mut sink, ctx.progress, notify)
            }
            Some(input) => {
                let mut sink = Sink::open(a, stdout, false)?;
                stream_file(a, &test, input, ctx.progress, &mut sink, notify)
            }
        }
    }
}

fn load_reference(
    a: &MonitorArgs,
    locator: &Locator,
    (images, checkpoint): (ModelImages, &Path),
    notify: Notify<'_>,
) -> Result<ImageSet> {
    let seed = seeds::derive(a.seed, seeds::REFERENCE_SUBSET);
    if a.reference == HELD_OUT_REFERENCE {
        return held_out_reference(checkpoint, locator, Some(a.reference_size), seed);
    }
    notify_some(notify, catalogue_name_notice(&a.reference));
    images.load(
        &a.reference,
        locator,
        Some(a.reference_size),
        seeds::derive(a.seed, seeds::REFERENCE_SUBSET),
    )
}

/// Where rows go: the caller's stdout or `--out`, flushed after every window.
struct Sink<'w> {
    out: Box<dyn Write + 'w>,
    format: MonitorFormat,
    path: Option<PathBuf>,
    with_files: bool,
    header_written: bool,
    flagged: usize,
    windows: usize,
}

impl<'w> Sink<'w> {
    /// Opens `--out` (appending after an earlier run's rows when `resume`; the header is
    /// then already there), or else takes `stdout`.
    fn open(a: &MonitorArgs, stdout: &'w mut dyn Write, resume: bool) -> Result<Self> {
        let out: Box<dyn Write + 'w> = match &a.out {
            Some(path) => {
                let file = if resume {
                    std::fs::OpenOptions::new().append(true).open(path)
                } else {
                    std::fs::File::create(path)
                };
                Box::new(file.map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?)
            }
            None => Box::new(stdout),
        };
        Ok(Self {
            out,
            format: a.format,
            path: a.out.clone(),
            with_files: is_png_folder(&a.input),
            header_written: resume,
            flagged: 0,
            windows: 0,
        })
    }

    /// The rows of window `index`, whose inputs run from `first` to `last` (indices in the
    /// input and, for PNG folders, file names).
    fn window(
        &mut self,
        index: usize,
        first: (usize, Option<&str>),
        last: (usize, Option<&str>),
        size: usize,
        outcomes: &[WindowOutcome],
    ) -> Result<()> {
        let mut text = String::new();
        if self.format == MonitorFormat::Csv && !self.header_written {
            text.push_str(if self.with_files {
                "window,first,last,first_file,last_file,size,statistic,value,p_value,flagged\n"
            } else {
                "window,first,last,size,statistic,value,p_value,flagged\n"
            });
            self.header_written = true;
        }
        for o in outcomes {
            match self.format {
                MonitorFormat::Json => {
                    let mut row = serde_json::json!({
                        "window": index, "first": first.0, "last": last.0, "size": size,
                        "statistic": o.statistic.id(), "value": o.value,
                        "p_value": o.p_value, "flagged": o.flagged,
                    });
                    if self.with_files {
                        row["first_file"] = first.1.unwrap_or("").into();
                        row["last_file"] = last.1.unwrap_or("").into();
                    }
                    text.push_str(&format!("{row}\n"));
                }
                _ => {
                    let files = if self.with_files {
                        format!(
                            "{},{},",
                            csv_field(first.1.unwrap_or("")),
                            csv_field(last.1.unwrap_or(""))
                        )
                    } else {
                        String::new()
                    };
                    text.push_str(&format!(
                        "{index},{},{},{files}{size},{},{},{},{}\n",
                        first.0,
                        last.0,
                        o.statistic.id(),
                        o.value,
                        o.p_value,
                        o.flagged
                    ));
                }
            }
        }
        self.windows += 1;
        self.flagged += usize::from(outcomes.first().is_some_and(|o| o.flagged));
        let io = |source| Error::Io {
            path: self
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("<stdout>")),
            source,
        };
        self.out.write_all(text.as_bytes()).map_err(io)?;
        self.out.flush().map_err(io)
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// A whole input to test window by window: its images, their file names (PNG folder, when
/// rows name files) and the number of windows to test.
struct Stream {
    input: ImageSet,
    names: Option<Vec<String>>,
    windows: usize,
}

/// Reads the whole input (catalogue set, IDX file, PNG folder) of `a` for windows of `m`.
///
/// # Errors
/// The input cannot be read or does not have the model's shape, or holds fewer images than
/// one window.
fn load_stream(
    a: &MonitorArgs,
    m: usize,
    ctx: RunContext<'_>,
    images: ModelImages,
    notify: Notify<'_>,
) -> Result<Stream> {
    notify_some(notify, catalogue_name_notice(&a.input));
    let input = images.load(&a.input, ctx.locator, None, 0)?;
    let names = if is_png_folder(&a.input) {
        Some(crate::data::user_files::png_file_names(Path::new(
            &a.input,
        ))?)
    } else {
        None
    };
    let mut windows = input.len() / m;
    if let Some(max) = a.max_windows {
        windows = windows.min(max);
    }
    if windows == 0 {
        return Err(Error::Invalid(format!(
            "--input {} holds {} image(s), fewer than one window of --window {m}: pass more images or a smaller --window",
            a.input,
            input.len()
        )));
    }
    Ok(Stream {
        input,
        names,
        windows,
    })
}

/// Tests consecutive windows of a whole input.
fn stream_file(
    a: &MonitorArgs,
    test: &WindowTest<AnyModel>,
    stream: Stream,
    progress: bool,
    sink: &mut Sink<'_>,
    notify: Notify<'_>,
) -> Result<()> {
    let Stream {
        input,
        names,
        windows,
    } = stream;
    let names = names.filter(|_| sink.with_files);
    let m = test.params().window();
    let bar = progress.then(BarProgress::new);
    if let Some(bar) = &bar {
        bar.start(
            &format!("windows of {m} on {}", input.name()),
            windows as u64,
        );
    }
    let name = |i: usize| names.as_ref().and_then(|n| n.get(i)).map(String::as_str);
    for w in 0..windows {
        let rows: Vec<usize> = (w * m..(w + 1) * m).collect();
        let window = input.select(&rows)?.with_name(format!("window {w}"));
        let outcomes = test.test(&window)?;
        let (first, last) = (w * m, (w + 1) * m - 1);
        sink.window(w, (first, name(first)), (last, name(last)), m, &outcomes)?;
        if let Some(bar) = &bar {
            bar.advance(1);
        }
    }
    let left = input.len() - windows * m;
    if progress {
        notify(Notice::Status(format!(
            "{} of {windows} windows of {m} flagged by {} at α = {}",
            sink.flagged,
            a.statistic[0].id(),
            a.alpha
        )));
    }
    if left > 0 && a.max_windows.is_none() {
        notify(Notice::Note(format!(
            "the last {left} image(s) do not fill a window of {m} and were not tested"
        )));
    }
    Ok(())
}

/// Watches a folder and tests each window of new PNG files as it fills (in file-name order
/// within each look; files already there when it starts are the first inputs).
///
/// A file that cannot be read as an image of the model's shape (garbage, deleted, another
/// shape) is skipped with a warning and the stream goes on; one modified in the last two
/// seconds is retried first, as it may still be being written. With `--out`, every file
/// taken (tested or skipped) is appended to `<out>.follow`, so that a restart with the same
/// `--out` resumes after the last file taken and appends to `--out` instead of testing the
/// folder from window 0 again.
fn follow(
    a: &MonitorArgs,
    test: &WindowTest<AnyModel>,
    images: ModelImages,
    state: FollowState,
    sink: &mut Sink<'_>,
    progress: bool,
    notify: Notify<'_>,
) -> Result<()> {
    let dir = Path::new(&a.input);
    let m = test.params().window();
    let mut seen: BTreeSet<String> = state.taken.iter().cloned().collect();
    let mut pending: Vec<String> = Vec::new();
    // Decoded images waiting for their window: (file name, pixels).
    let mut ready: Vec<(String, ImageSet)> = Vec::new();
    let mut next_index = state.inputs;
    let mut window_index = state.windows;
    if progress {
        notify(Notice::Status(format!(
            "watching {} for PNG files; a window of {m} is tested as soon as it fills (Ctrl-C to stop){}",
            dir.display(),
            if window_index > 0 {
                format!(
                    "; resuming after window {} ({} files taken)",
                    window_index - 1,
                    seen.len()
                )
            } else {
                String::new()
            }
        )));
    }
    loop {
        let names = crate::data::user_files::png_file_names(dir)?;
        pending.extend(names.into_iter().filter(|n| seen.insert(n.clone())));
        let mut retry = Vec::new();
        for name in pending.drain(..) {
            let file = dir.join(&name);
            match images.load_files(std::slice::from_ref(&file), name.clone()) {
                Ok(image) => ready.push((name, image)),
                Err(_) if recently_modified(&file) => retry.push(name),
                Err(e) => {
                    notify(Notice::Warning(format!("skipped {name}: {e}")));
                    state.skipped(&name)?;
                }
            }
        }
        pending = retry;
        while ready.len() >= m {
            let batch: Vec<(String, ImageSet)> = ready.drain(..m).collect();
            let sets: Vec<&ImageSet> = batch.iter().map(|(_, s)| s).collect();
            let window = ImageSet::concat(format!("window {window_index}"), &sets)?;
            let outcomes = test.test(&window)?;
            let (first, last) = (&batch[0].0, &batch[m - 1].0);
            sink.window(
                window_index,
                (next_index, Some(first.as_str())),
                (next_index + m - 1, Some(last.as_str())),
                m,
                &outcomes,
            )?;
            if progress {
                notify(Notice::Status(format!(
                    "window {window_index} ({first} … {last}): p = {:.4}{}",
                    outcomes[0].p_value,
                    if outcomes[0].flagged { ", flagged" } else { "" }
                )));
            }
            next_index += m;
            window_index += 1;
            let names: Vec<&str> = batch.iter().map(|(n, _)| n.as_str()).collect();
            state.tested(&names, window_index, next_index)?;
            if a.max_windows.is_some_and(|max| window_index >= max) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(a.poll_ms));
    }
}

/// Whether `file` was modified in the last two seconds (or has vanished mid-look): it may
/// still be being written, so a failed read is retried rather than skipped.
fn recently_modified(file: &Path) -> bool {
    std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(2))
}

/// `<out>.follow`: where `monitor --follow --out <out>` records the files it has taken.
fn follow_state_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".follow");
    out.with_file_name(name)
}

/// What `monitor --follow --out FILE` has taken so far, kept in `FILE.follow`: one line
/// per file taken (tested in a window, or skipped), `name`, or `name\t<windows>\t<inputs>`
/// for the last file of a tested window. Files of a window not completed when the monitor
/// stopped are not recorded, so a restart takes them again.
struct FollowState {
    path: Option<PathBuf>,
    taken: Vec<String>,
    /// Windows tested, and inputs in them, by the runs so far.
    windows: usize,
    inputs: usize,
}

impl FollowState {
    fn open(a: &MonitorArgs) -> Result<Self> {
        let mut state = Self {
            path: None,
            taken: Vec::new(),
            windows: 0,
            inputs: 0,
        };
        let Some(out) = &a.out else {
            return Ok(state);
        };
        let path = follow_state_path(out);
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines().filter(|l| !l.is_empty()) {
                let mut fields = line.split('\t');
                state
                    .taken
                    .push(fields.next().unwrap_or_default().to_string());
                if let (Some(w), Some(i)) = (fields.next(), fields.next()) {
                    state.windows = w.parse().unwrap_or(state.windows);
                    state.inputs = i.parse().unwrap_or(state.inputs);
                }
            }
        }
        state.path = Some(path);
        Ok(state)
    }

    /// Records a skipped file.
    fn skipped(&self, name: &str) -> Result<()> {
        self.append(&format!("{name}\n"))
    }

    /// Records the files of a tested window, the totals `windows` and `inputs` after it on
    /// the last one.
    fn tested(&self, names: &[&str], windows: usize, inputs: usize) -> Result<()> {
        let mut text = String::new();
        for (k, n) in names.iter().enumerate() {
            if k + 1 == names.len() {
                text.push_str(&format!("{n}\t{windows}\t{inputs}\n"));
            } else {
                text.push_str(&format!("{n}\n"));
            }
        }
        self.append(&text)
    }

    fn append(&self, text: &str) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })
    }
}

/// `bnood monitor --study`: the power table.
fn study(
    a: &MonitorArgs,
    (model, checkpoint): (AnyModel, &Path),
    images: ModelImages,
    ctx: RunContext<'_>,
    stdout: &mut dyn Write,
    notify: Notify<'_>,
) -> Result<()> {
    let (device, locator) = (ctx.device, ctx.locator);
    let spec = WindowPowerSpec {
        windows: a.window.clone(),
        shares: a
            .shares
            .clone()
            .unwrap_or_else(|| vec![0.0, 0.05, 0.1, 0.25, 0.5, 1.0]),
        windows_per_cell: a.windows_per_cell.unwrap_or(100),
        false_alarm_windows: a.false_alarm_windows.unwrap_or(200),
        null_windows: a.null_windows,
        alpha: a.alpha,
        comparison_size: a.comparison_size,
        batch_size: a.batch_size,
        seed: a.seed,
    };
    if a.statistic != [WindowStatistic::Bn] {
        notify(Notice::Note(
            "--study measures every statistic (bn, ks, mmd); --statistic is ignored".into(),
        ));
    }
    let reference = load_reference(a, locator, (images, checkpoint), notify)?;
    notify_some(notify, catalogue_name_notice(&a.input));
    let inliers = images.load(
        &a.input,
        locator,
        a.input_size,
        seeds::derive(a.seed, seeds::TEST_SUBSET),
    )?;
    let oods = a
        .study
        .iter()
        .map(|name| {
            images.load(
                name,
                locator,
                Some(a.ood_size.unwrap_or(2000)),
                seeds::derive(a.seed, seeds::OOD_SUBSET),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let report = window_power(
        &model,
        device,
        &reference,
        &inliers,
        &oods,
        &spec,
        BarProgress::hook(ctx.progress),
    )?;
    let text = match a.format {
        MonitorFormat::Csv => report.to_csv(),
        MonitorFormat::Json => format!(
            "{:#}\n",
            serde_json::to_value(&report)
                .map_err(|e| Error::Invalid(format!("cannot serialise the study: {e}")))?
        ),
        MonitorFormat::Markdown => report.to_markdown(),
    };
    match &a.out {
        Some(path) => write_text(path, &text)?,
        None => stdout
            .write_all(text.as_bytes())
            .map_err(|source| Error::Io {
                path: PathBuf::from("<stdout>"),
                source,
            })?,
    }
    let fits: Vec<String> = report
        .fit_seconds
        .iter()
        .map(|(m, s)| format!("M = {m}: {s:.0} s"))
        .collect();
    notify(Notice::Status(format!(
        "study done in {:.0} s (fits: {})",
        report.total_seconds,
        fits.join(", ")
    )));
    Ok(())
}
