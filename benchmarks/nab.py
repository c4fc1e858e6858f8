"""Alarms as readings arrive, judged as NAB judges them: every public NAB series through the
CLI under NAB's online rule, scored by NAB's own scorer beside its published detectors.

Per series (shared/data/nab): train on the probationary rows (the first 15%, at most 750;
NAB ignores its detectors' outputs there) with `vae-edge train --window auto`, export,
`calibrate` on the same rows, then pipe every reading of the file through
`vae-edge score --model M - --stream`, one line in, one line out. Two detectors go to
shared/tools/nab/nab_score.py: vaeEdge (the likelihood column, NAB's optimiser picks the
threshold) and vaeEdgeAlarms (the is_anomaly column: the default alarms, no tuning). The
alarm share is measured on the normal readings after the probationary rows (outside every
labelled window). With --designs, the likelihood's constants are varied on the same raw
scores (how the defaults were chosen).

    python benchmarks/nab.py [--python PY_WITH_PANDAS_LT_2] [--series NAME ...] [--designs]

Writes benchmarks/results/nab.{json,md} (nab-designs.{json,md} with --designs).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from report import write_results  # noqa: E402

DETECTOR, ALARMS = "vaeEdge", "vaeEdgeAlarms"


def shared() -> Path:
    return Path(os.environ.get("VAE_EDGE_DATA", REPO.parent / "shared" / "data")).parent


def probationary(rows: int) -> int:
    """NAB's probationary period (nab/util.py getProbationPeriod, 15%)."""
    return int(min(math.floor(0.15 * rows), 0.15 * 5000))


def labelled(stamps: list[str], windows) -> np.ndarray:
    spans = [(s[:19], e[:19]) for s, e in windows]
    return np.array([any(s <= t[:19] <= e for s, e in spans) for t in stamps])


def run_series(name: str, data: Path, work: Path, cli: str, window: str = "auto",
               reuse: bool = False) -> dict:  # fmt: skip
    """Train, export, calibrate (unless `reuse` finds the model of an earlier run) and
    stream one series through the CLI; its outputs."""
    lines = (data / f"{name}.csv").read_text().splitlines()
    n_prob = probationary(len(lines) - 1)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probationary.csv").write_text("\n".join(lines[: n_prob + 1]) + "\n")
    trained = folder / "train_seconds.txt"
    if not (reuse and trained.exists() and (folder / "model" / "vae.json").exists()):
        t0 = time.perf_counter()
        train = [cli, "train", "--data", str(folder / "probationary.csv"), "--out",
                 str(folder / "run"), "--window", window, "-q"]  # fmt: skip
        subprocess.run(train, check=True, capture_output=True, text=True)
        trained.write_text(f"{time.perf_counter() - t0:.1f}\n")
        subprocess.run([cli, "export", str(folder / "run"), "--out", str(folder / "model"),
                        "--force"], check=True, capture_output=True)  # fmt: skip
        calibrate = [cli, "calibrate", "--model", str(folder / "model"), "--data",
                     str(folder / "probationary.csv")]  # fmt: skip
        subprocess.run(calibrate, check=True, capture_output=True)
    train_seconds = float(trained.read_text())
    t0 = time.perf_counter()
    with open(data / f"{name}.csv") as source, open(folder / "stream.csv", "w") as sink:
        command = [cli, "score", "--model", str(folder / "model"), "-", "--stream"]
        p = subprocess.run(command, stdin=source, stdout=sink, stderr=subprocess.PIPE, text=True)
    if p.returncode:
        raise SystemExit(f"{name}: score --stream failed: {p.stderr}")
    stream_seconds = time.perf_counter() - t0
    with open(folder / "stream.csv") as f:
        out = list(csv.DictReader(f))
    manifest = json.loads((folder / "model" / "vae.json").read_text())
    return {
        "name": name,
        "rows": len(lines) - 1,
        "probationary": n_prob,
        "window": manifest["series"]["window"],
        "train_seconds": round(train_seconds, 1),
        "stream_seconds": round(stream_seconds, 1),
        "report": p.stderr.strip().splitlines()[-1],
        "timestamps": [r["timestamp"] for r in out],
        "score": np.array([float(r["score"]) for r in out]),
        "likelihood": np.array([float(r["likelihood"]) for r in out]),
        "is_anomaly": np.array([int(r["is_anomaly"]) for r in out]),
    }


def nab_scores(detector: str, outputs: dict[str, tuple[list[str], np.ndarray]], python: str,
               tmp: Path) -> dict[str, dict[str, float]]:  # fmt: skip
    """NAB's scorer on one detector's anomaly_score per series; every row of its table
    (the reference detectors too), by detector: standard, low FP, low FN."""
    folder = tmp / detector
    folder.mkdir(parents=True, exist_ok=True)
    for name, (stamps, scores) in outputs.items():
        with open(folder / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["timestamp", "anomaly_score"])
            w.writerows(zip(stamps, (f"{s:.10g}" for s in scores), strict=True))
    tool = shared() / "tools" / "nab" / "nab_score.py"
    p = subprocess.run([sys.executable, str(tool), str(folder), "--name", detector,
                        "--python", python], capture_output=True, text=True)  # fmt: skip
    if p.returncode:
        raise SystemExit(f"nab_score.py failed for {detector}: {p.stdout}{p.stderr}")
    table = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^(\w+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)$", line)
        if m:
            table[m[1]] = {"standard": float(m[2]), "low_fp": float(m[3]), "low_fn": float(m[4])}
    return table


def alarm_shares(results: list[dict], windows: dict) -> dict:
    """Share of alarms among the normal readings after the probationary rows."""
    per_series, alarms, normal = {}, 0, 0
    for r in results:
        inside = labelled(r["timestamps"], windows[r["name"]])
        keep = ~inside
        keep[: r["probationary"]] = False
        a, n = int(r["is_anomaly"][keep].sum()), int(keep.sum())
        per_series[r["name"]] = a / max(n, 1)
        alarms += a
        normal += n
    shares = sorted(per_series.values())
    return {"pooled": alarms / normal, "median": float(np.median(shares)),
            "worst": shares[-1], "per_series": per_series}  # fmt: skip


def stream_outputs(name: str, model_dir: Path, data: Path, design: dict) -> dict:
    """One series streamed through its model under a design: StreamRules fields, plus
    `bounded` (whether the likelihood's tail may end), `threshold` (the alarm's) and `short` (the
    likelihood fed the mean of the last `short` readings' losses, a short window beside
    the long history)."""
    from vae_edge.runtime import EdgeVAE
    from vae_edge.runtime.alarm import AnomalyLikelihood
    from vae_edge.runtime.series import SeriesStream, StreamRules

    design = dict(design)
    bounded, threshold, short = (design.pop(k, None) for k in ("bounded", "threshold", "short"))

    class Short(SeriesStream):
        recent: list = []

        def _score(self, windows, first):
            scores, newest, features = super()._score(windows, first)
            smoothed = np.empty_like(newest)
            for i, v in enumerate(newest):
                self.recent = [*self.recent[-(short - 1) :], v]
                smoothed[i] = sum(self.recent) / len(self.recent)
            return scores, smoothed, features

    model = EdgeVAE.load(model_dir)
    stream = (Short if short else SeriesStream)(model, model.settings(), threshold=threshold,
                                                rules=StreamRules(**design))  # fmt: skip
    if bounded is not None:
        stream.likelihood = AnomalyLikelihood(quiet=stream.window, bounded=bounded)
    out = stream.push_lines((data / f"{name}.csv").read_text().splitlines())
    return {"likelihood": out.likelihood, "is_anomaly": out.is_anomaly.astype(float),
            "in_alarm": out.in_alarm.astype(float)}  # fmt: skip


# The designs of the stream compared on the same trained models (benchmarks/nab.py
# --designs): the default, then one part at a time changed or left out.
DESIGNS = {
    "default: spatial check, alarms held, level re-based on a lasting change": {},
    "as before this design: frozen, no spatial check, no hold": {
        "adapt": False, "spatial": None, "calm": 0},
    "no spatial check": {"spatial": None},
    "spatial margin 10%": {"spatial": 0.1},
    "frozen model (--frozen)": {"adapt": False},
    "level follows the normal readings, rate 0.125": {"level_rate": 0.125},
    "level follows the normal readings, rate 0.03125": {"level_rate": 1 / 32},
    "no alarm held": {"calm": 0},
    "held alarm ends after 0.25 W calm": {"calm": 0.25},
    "held alarm ends after 1 W calm": {"calm": 1.0},
    "accepted after 2 W": {"accept": 2.0},
    "accepted after 8 W": {"accept": 8.0},
    "tails never end (exponential)": {"bounded": False},
    "short window: mean of the last 5 losses": {"short": 5},
    "alarm threshold 0.4": {"threshold": 0.4},
    "alarm threshold 0.6": {"threshold": 0.6},
}  # fmt: skip


def designs(results: list[dict], work: Path, data: Path, python: str, windows: dict) -> dict:
    """NAB standard scores (nab_sweep.py) of each design's likelihood and alarm columns,
    with the alarm shares, every series streamed through its trained model."""
    from concurrent.futures import ProcessPoolExecutor

    candidates = {}
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for key, design in DESIGNS.items():
            jobs = {r["name"]: pool.submit(stream_outputs, r["name"], work / r["name"] / "model",
                                           data, design) for r in results}  # fmt: skip
            outs = {n: j.result() for n, j in jobs.items()}
            candidates[f"{key}: likelihood"] = {n: o["likelihood"] for n, o in outs.items()}
            candidates[f"{key}: alarms"] = {n: o["is_anomaly"] for n, o in outs.items()}
            print(f"streamed: {key}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="nab-designs-"))
    np.savez(tmp / "candidates.npz", **{f"{c}/{n}": v for c, d in candidates.items()
                                        for n, v in d.items()})  # fmt: skip
    nab = shared() / "tools" / "nab" / "code"
    p = subprocess.run([python, str(REPO / "benchmarks" / "nab_sweep.py"),
                        str(tmp / "candidates.npz"), str(data),
                        str(nab / "combined_windows_public.json")],
                       capture_output=True, text=True, check=True)  # fmt: skip
    scored = json.loads(p.stdout)
    for key, flags in candidates.items():
        if key.endswith("alarms"):
            fake = [dict(r, is_anomaly=flags[r["name"]]) for r in results]
            scored[key]["alarm_share"] = alarm_shares(fake, windows)["pooled"]
    return scored


def cli_path() -> str:
    return str(Path(sys.executable).parent / "vae-edge")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=str(REPO / ".venv-nab" / "bin" / "python"),
                    help="a python with pandas < 2 and numpy < 2 for NAB's scorer")  # fmt: skip
    ap.add_argument("--series", nargs="*")
    ap.add_argument("--work", default=str(REPO / "build" / "nab"))
    ap.add_argument("--designs", action="store_true")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="stream the models an earlier run trained in --work (no training)",
    )
    a = ap.parse_args()
    a.python = os.path.abspath(a.python)  # NAB's scorer runs it from its own folder
    data = shared() / "data" / "nab"
    windows = json.loads((data / "labels.json").read_text())
    names = a.series or sorted(p.stem for p in data.glob("*__*.csv"))
    cli = cli_path()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(lambda n: run_series(n, data, Path(a.work), cli, reuse=a.reuse),
                                names))  # fmt: skip
    for r in results:
        print(f"{r['name']}: W {r['window']}, trained in {r['train_seconds']} s; {r['report']}")
    if a.series:
        return  # NAB's scorer takes every public series
    tmp = Path(tempfile.mkdtemp(prefix="bench-nab-"))
    if a.designs:
        scored = designs(results, Path(a.work), data, a.python, windows)
        table = "| design | NAB standard | alarm share |\n| --- | --- | --- |\n"
        for key, v in sorted(scored.items(), key=lambda kv: -kv[1]["standard"]):
            share = f"{v['alarm_share']:.2%}" if "alarm_share" in v else ""
            table += f"| {key} | {v['standard']:.1f} | {share} |\n"
        write_results("nab-designs", scored, "# NAB: the parts of a stream that keeps learning, "
                      "one at a time\n\n"
                      f"{environment()}; {time.perf_counter() - started:.0f} s. "
                      "Written by benchmarks/nab.py --designs: NAB's standard profile (NAB's "
                      "Sweeper and threshold optimiser, benchmarks/nab_sweep.py) on the 29 "
                      "public series, the same trained models; the alarm share is of the normal "
                      "readings after the probationary rows.", table)  # fmt: skip
        return
    likelihood = {r["name"]: (r["timestamps"], r["likelihood"]) for r in results}
    flags = {r["name"]: (r["timestamps"], r["is_anomaly"].astype(float)) for r in results}
    table = nab_scores(DETECTOR, likelihood, a.python, tmp)
    table[ALARMS] = nab_scores(ALARMS, flags, a.python, tmp)[ALARMS]
    shares = alarm_shares(results, windows)
    seconds = [r["train_seconds"] for r in results]
    per_reading = sum(r["stream_seconds"] for r in results) / sum(r["rows"] for r in results)
    summary = {
        "series": len(results),
        "nab": table,
        "alarm_share": shares,
        "train_seconds": {"median": float(np.median(seconds)), "max": max(seconds)},
        "stream_ms_per_reading_with_startup": 1000 * per_reading,
        "per_series": [
            {
                k: r[k]
                for k in (
                    "name",
                    "rows",
                    "probationary",
                    "window",
                    "train_seconds",
                    "stream_seconds",
                    "report",
                )
            }
            for r in results
        ],
        "seconds": round(time.perf_counter() - started, 1),
    }
    md = "| detector | standard | reward low FP | reward low FN |\n| --- | --- | --- | --- |\n"
    for det, v in sorted(table.items(), key=lambda kv: -kv[1]["standard"]):
        bold = "**" if det in (DETECTOR, ALARMS) else ""
        md += (f"| {bold}{det}{bold} | {v['standard']:.1f} | {v['low_fp']:.1f} | "
               f"{v['low_fn']:.1f} |\n")  # fmt: skip
    md += (f"\nAlarms (is_anomaly) on the normal readings after the probationary rows: "
           f"{shares['pooled']:.2%} pooled, median series {shares['median']:.2%}, worst "
           f"{shares['worst']:.2%}.\nTraining on the probationary rows: median "
           f"{summary['train_seconds']['median']:.1f} s, at most {max(seconds):.1f} s per "
           f"series. Streaming through the CLI (one process per series, a line in and out "
           f"per reading): {summary['stream_ms_per_reading_with_startup']:.2f} ms per "
           "reading, start-up included.\n\n| series | rows | W | train s | stream report |\n"
           "| --- | --- | --- | --- | --- |\n")  # fmt: skip
    for r in results:
        md += (f"| {r['name'].split('__')[1]} | {r['rows']} | {r['window']} | "
               f"{r['train_seconds']} | {r['report']} |\n")  # fmt: skip
    header = (f"# NAB under its online rule: vae-edge beside NAB's published detectors\n\n"
              f"{environment()}; {summary['seconds']:.0f} s. Written by benchmarks/nab.py: "
              f"{len(results)} public series, NAB's scorer (shared/tools/nab), 100 = perfect, "
              "0 = never alarms.")  # fmt: skip
    write_results("nab", summary, header, md)


def environment() -> str:
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("vae-edge", "onnxruntime", "numpy"))
    return (f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; Python "
            f"{platform.python_version()}; {versions}")  # fmt: skip


if __name__ == "__main__":
    main()
