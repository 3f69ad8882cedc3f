"""Runs the criterion bench `benches/mixed_batch.rs` and the PyTorch references
`realnvp_torch.py` (groups `score_mixed`, `score_running`, `train_step`), `vae_torch.py`
(groups `vae_score_batch`, `vae_score_running`, `vae_train_step`) and `pixelcnn_torch.py`
(groups `pixelcnn_score_mixed`, `pixelcnn_score_running`, `pixelcnn_train_step`) back to
back on this machine with the same thread count, and prints samples per second of each and
the ratio bnood / PyTorch.

    python3 benches/reference/compare.py --threads 2 --features ndarray
    python3 benches/reference/compare.py --torch-python ~/venv/bin/python --filter score_mixed
    python3 benches/reference/compare.py --torch-python ~/venv/bin/python --filter vae
    python3 benches/reference/compare.py --torch-python ~/venv/bin/python --filter pixelcnn

`--filter` is criterion's (a regular expression on the ids `group/backend/case`); the
PyTorch side then runs exactly the groups the bench ran (a reference script is skipped
when none of its groups ran), and rows pair by group and case.

The bench runs through `cargo bench` (so `CARGO_TARGET_DIR` and the cargo features apply);
criterion writes its estimates to a fresh `CRITERION_HOME`, which this script reads. The
PyTorch reference runs with `--torch-python` (a Python that has `torch`). Both get
`RAYON_NUM_THREADS` / `torch.set_num_threads` = `--threads`. The load average is printed
before and after: other processes on the machine slow both sides, not necessarily alike.
With `--markdown FILE` the table is also written as Markdown (docs/performance.md's form).
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_bnood(args, env):
    """samples/s per (group, backend, case) from criterion's estimates."""
    home = Path(tempfile.mkdtemp(prefix="bnood-criterion-"))
    cmd = ["cargo", "bench", "--bench", "mixed_batch"]
    if args.features:
        cmd += ["--features", args.features]
    cmd += ["--", args.filter] if args.filter else []
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env={**env, "CRITERION_HOME": str(home)}, check=True)
    out = {}
    for bench in home.rglob("new/benchmark.json"):
        meta = json.loads(bench.read_text())
        mean_ns = json.loads((bench.parent / "estimates.json").read_text())["mean"]["point_estimate"]
        group, backend = meta["group_id"].split("/")
        elements = meta["throughput"]["Elements"]
        out[(group, backend, meta["function_id"])] = elements / (mean_ns / 1e9)
    return out


# The groups each PyTorch reference script measures.
TORCH_SCRIPTS = {
    "realnvp_torch.py": ("score_mixed", "score_running", "train_step"),
    "vae_torch.py": ("vae_score_batch", "vae_score_running", "vae_train_step"),
    "pixelcnn_torch.py": ("pixelcnn_score_mixed", "pixelcnn_score_running",
                          "pixelcnn_train_step"),
}


def run_torch(args, env, groups):
    """samples/s per (group, case) of the reference scripts for `groups` (the groups the
    bench ran), and the JSON header of the last script run."""
    out, report = {}, {}
    for script, known in TORCH_SCRIPTS.items():
        cases = [g for g in known if g in groups]
        if not cases:
            continue
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            path = f.name
        cmd = [args.torch_python, str(ROOT / "benches/reference" / script),
               "--threads", str(args.threads), "--json", path, "--cases", ",".join(cases)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
        report = json.loads(Path(path).read_text())
        out.update({(r["group"], r["case"]): r["samples_per_s"] for r in report["results"]})
    return out, report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--features", default="", help="cargo features, e.g. ndarray")
    ap.add_argument("--filter", default="", help="criterion filter, e.g. score_mixed")
    ap.add_argument("--torch-python", default=sys.executable)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--markdown", help="also write the table here")
    args = ap.parse_args()

    env = {**os.environ, "RAYON_NUM_THREADS": str(args.threads)}
    env.setdefault("BNOOD_DATA_DIR", str(ROOT.parent / "shared/datasets"))
    started = datetime.datetime.now().astimezone()
    load_before = load()
    bnood = run_bnood(args, env)
    load_mid = load()
    groups = {group for group, _, _ in bnood}
    torch, header = ({}, {}) if args.skip_torch else run_torch(args, env, groups)
    load_after = load()

    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; {args.threads} threads on both sides.",
        f"Date: {started:%Y-%m-%d %H:%M %Z}. Load average (1/5/15 min) before bnood {load_before}, "
        f"before PyTorch {load_mid}, after {load_after}.",
        f"bnood: burn 0.22.1, {rustc}, cargo features `{args.features or 'default'}`. "
        f"PyTorch: {header.get('torch', 'not run')} (Python {header.get('python', '?')}).",
        "",
        "| case | backend | bnood samples/s | PyTorch samples/s | bnood / PyTorch |",
        "|---|---|---:|---:|---:|",
    ]
    for (group, backend, case), rate in sorted(bnood.items()):
        ref = torch.get((group, case))
        ratio = f"{rate / ref:.2f}" if ref else "–"
        ref_s = f"{ref:.1f}" if ref else "–"
        lines.append(f"| {group} {case} | {backend} | {rate:.1f} | {ref_s} | {ratio} |")
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
