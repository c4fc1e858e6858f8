"""Sensor series: vae-edge's windowed models against TSB-AD's own peers on the NAB series.

Protocol (shared/data/README.md, nab/): vae-edge and Donut train on the first 30% of
each series' steps (unlabelled: it may hold anomalies); TSB-AD's statistical methods
(Sub-PCA and Sub-IForest: PCA and IForest on sliding windows of the series' period) fit
the whole series, as that package runs them; a rolling z-score needs no fitting; every
step is scored and the last 70% evaluated with TSB-AD's metrics (AUROC, AUPRC, VUS-PR)
at the sliding window TSB-AD picks from the training part (find_length_rank). Series whose
last 70% holds no anomaly are left out. Values are read in file order, without their
timestamps, as TSB-AD reads them.

Runs in a throwaway environment (`make bench-series` builds it): tsb-ad 1.5 installed
with --no-deps beside what its modules import, torch pinned, and vae-edge itself.

    python benchmarks/series.py [--series NAME ...] [--designs window|architecture] [--skip-donut]

--designs scores design choices against each other instead of the peers: the window rule,
step-score rule and score type (window: series-designs.{json,md}), or the MLP's sizes at
the default window and rule (architecture: series-architectures.{json,md}); how the
defaults were chosen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # Donut's per-batch progress bars
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
TRAIN_SHARE = 0.3
PEERS = ("Sub-PCA", "Sub-IForest", "Donut", "rolling z-score")
DEFAULT = "vae-edge"  # the file after the fact: `score --hindsight`
STREAM = "vae-edge stream score"  # each reading's score as it arrives
LIKELIHOOD = "vae-edge likelihood"  # each reading's likelihood as it arrives


def data_dir() -> Path:
    return Path(os.environ.get("VAE_EDGE_DATA", REPO.parent / "shared" / "data")) / "nab"


def load(name: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Values in file order (T,) and labels (T,): 1 inside a labelled window, ends included."""
    import csv

    with open(folder / f"{name}.csv") as f:
        rows = list(csv.reader(f))[1:]
    stamps = np.array([np.datetime64(r[0]) for r in rows], "datetime64[s]")
    values = np.array([float(r[1]) for r in rows])
    windows = json.loads((folder / "labels.json").read_text())[name]
    labels = np.zeros(len(values), np.int64)
    for start, end in windows:
        labels[(stamps >= np.datetime64(start)) & (stamps <= np.datetime64(end))] = 1
    return values, labels


# -- vae-edge -------------------------------------------------------------------------------


def vae_edge_window_scores(values: np.ndarray, split: int, window, work: Path, **options):
    """Train on the first `split` steps (the product's defaults but the window and any
    TrainOptions given), export, and return the bundle's model."""
    from vae_edge.export.onnx_export import export_run
    from vae_edge.runtime import EdgeVAE
    from vae_edge.training.train import fit_series

    model, config = fit_series(values[:split], window, **options)
    run = work / "run"
    run.mkdir(parents=True, exist_ok=True)
    import torch

    torch.save(model.state_dict(), run / "checkpoint.pt")
    (run / "config.json").write_text(config.to_json())
    export_run(run, work / "bundle", force=True)
    return EdgeVAE.load(work / "bundle")


def step_scores(model, values: np.ndarray, score_type: str) -> np.ndarray:
    """The product's whole-file score after the fact (`score --hindsight`)."""
    return product_scores(model, values, score_type)[DEFAULT]


def product_scores(model, values: np.ndarray, score_type: str) -> dict[str, np.ndarray]:
    """What the product gives each step: the stream's score and likelihood (known at
    once, from the readings so far) and the file's hindsight score."""
    from vae_edge.runtime.series import hindsight_scores

    batch = model.stream(score_type=score_type).push(values[:, None])
    return {DEFAULT: hindsight_scores(batch.scores, model.manifest.series.window),
            STREAM: batch.scores, LIKELIHOOD: batch.likelihood}  # fmt: skip


def step_rules(model, values: np.ndarray, score_type: str) -> dict[str, np.ndarray]:
    """Step-score rules considered, from the same window scores s[i] (window i holds steps
    i .. i + W - 1): "end", the window that ends at the step (immediate); "trailing", the
    mean over the windows that end in the last W steps (immediate); "mean", the mean over
    the windows that hold the step (known W - 1 steps later); "centre", the window centred
    on it (known W / 2 steps later). The first and last steps take the nearest window's."""
    from vae_edge.runtime.series import sliding_windows

    w = model.manifest.series.window
    s = model.score(sliding_windows(values[:, None], w), score_type=score_type)
    s = s.astype(np.float64)
    t = len(values)
    end = np.concatenate([np.repeat(s[:1], w - 1), s])
    ones = np.ones(w)
    covering = np.convolve(s, ones)[:t] / np.convolve(np.ones(len(s)), ones)[:t]
    trailing = np.convolve(end, ones)[:t] / np.convolve(np.ones(t), ones)[:t]
    lead = (w - 1) // 2
    centre = np.concatenate([np.repeat(s[:1], lead), s, np.repeat(s[-1:], w - 1 - lead)])
    return {"end": end, "trailing": trailing, "mean": covering, "centre": centre}


def period_window(values: np.ndarray, low: int, fallback: int) -> int:
    """A window rule considered: the dominant period within 8..512 steps, at least `low`,
    else `fallback`."""
    from vae_edge.runtime.series import dominant_period

    period = dominant_period(values[:, None], (8, 512))
    return max(period, low) if period else fallback


# (window, score type, step rules) of the designs compared by --designs; "auto": the
# product's rule (series.auto_window), "period": period_window(64, 128).
DESIGNS = (
    (64, "elbo", ("mean",)),
    (128, "elbo", ("end", "trailing", "mean", "centre")),
    (128, "recon", ("mean",)),
    (256, "elbo", ("mean", "trailing")),
    ("period", "elbo", ("mean", "trailing")),
)
# (hidden, latent) of the MLPs compared by --designs architecture; the default is (128,), 8.
ARCHITECTURES = (((64,), 8), ((256,), 8), ((128,), 4), ((128,), 16), ((128, 128), 8))


# -- peers ----------------------------------------------------------------------------------


def peer_scores(values: np.ndarray, split: int, skip_donut: bool) -> dict[str, np.ndarray]:
    from TSB_AD.model_wrapper import run_Donut, run_Sub_IForest, run_Sub_PCA
    from TSB_AD.utils.slidingWindows import find_length_rank

    data = values[:, None]
    out = {
        "Sub-PCA": run_Sub_PCA(data, periodicity=1, n_components=None),
        "Sub-IForest": run_Sub_IForest(data, periodicity=1, n_estimators=150),
        "rolling z-score": rolling_z(values, find_length_rank(values[:split], rank=1)),
    }
    if not skip_donut:
        out["Donut"] = run_Donut(data[:split], data, win_size=60, lr=1e-4)
    return out


def rolling_z(values: np.ndarray, window: int) -> np.ndarray:
    """|x_t - mean| / std over the `window` steps before t (the first steps: those before)."""
    x = np.asarray(values, np.float64)
    c1, c2 = np.cumsum(np.r_[0, x]), np.cumsum(np.r_[0, x * x])
    t = np.arange(len(x))
    lo = np.maximum(t - window, 0)
    n = np.maximum(t - lo, 1)
    mean = (c1[t] - c1[lo]) / n
    var = np.maximum((c2[t] - c2[lo]) / n - mean**2, 0)
    z = np.abs(x - mean) / np.sqrt(var + 1e-12)
    z[0] = 0
    return np.minimum(z, 1e6)


# -- metrics --------------------------------------------------------------------------------


def metrics(scores: np.ndarray, labels: np.ndarray, split: int, sliding: int) -> dict:
    """TSB-AD's AUROC, AUPRC and VUS-PR: the calls its get_metrics makes for them, without
    the threshold-dependent measures it also computes (most of its time)."""
    from TSB_AD.evaluation.basic_metrics import basic_metricor, generate_curve

    s, y = np.asarray(scores, np.float64)[split:], labels[split:]
    if not np.isfinite(s).all():
        return {"auroc": math.nan, "auprc": math.nan, "vus_pr": math.nan, "nonfinite": True}
    grader = basic_metricor()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vus_pr = generate_curve(y.astype(int), s, sliding, "opt", 250)[-1]
        return {"auroc": grader.metric_ROC(y, s), "auprc": grader.metric_PR(y, s),
                "vus_pr": vus_pr}  # fmt: skip


def run_series(name: str, folder: Path, designs: bool, skip_donut: bool) -> dict:
    from TSB_AD.utils.slidingWindows import find_length_rank

    values, labels = load(name, folder)
    split = int(len(values) * TRAIN_SHARE)
    if not labels[split:].any():
        return {}
    sliding = find_length_rank(values[:split], rank=1)
    scores, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = vae_edge_window_scores(values, split, "auto", Path(tmp) / "auto")
        scores |= product_scores(model, values, None)
        seconds[DEFAULT] = time.perf_counter() - t0
        window = model.manifest.series.window
        if designs == "architecture":
            for hidden, latent in ARCHITECTURES:
                other = vae_edge_window_scores(values, split, "auto", Path(tmp) / "arch",
                                               hidden=hidden, latent_dim=latent)  # fmt: skip
                scores[f"hidden {hidden} latent {latent}"] = step_scores(other, values, None)
        elif designs:
            for window, score_type, rules in DESIGNS:
                size = period_window(values[:split], 64, 128) if window == "period" else window
                if size != model.manifest.series.window:
                    model = vae_edge_window_scores(values, split, size, Path(tmp) / str(size))
                by_rule = step_rules(model, values, score_type)
                for rule in rules:
                    scores[f"{window} {score_type} {rule}"] = by_rule[rule]
    if not designs:  # the designs are compared with each other; the peers, in the full run
        scores |= peer_scores_timed(values, split, skip_donut, seconds)
    result = {k: metrics(s, labels, split, sliding) for k, s in scores.items()}
    return {"steps": len(values), "train_steps": split, "tsb_window": int(sliding),
            "vae_edge_window": window, "seconds": seconds, "metrics": result}  # fmt: skip


def peer_scores_timed(values, split, skip_donut, seconds):
    t0 = time.perf_counter()
    out = peer_scores(values, split, skip_donut)
    seconds["peers"] = time.perf_counter() - t0
    return out


# -- streaming latency ----------------------------------------------------------------------


def streaming_latency(bundle: Path, values: np.ndarray, readings: int = 5000) -> dict:
    """Per new reading: SeriesStream.push of one reading (p50/p99), learning as it runs
    (the default), against the same numbers computed by hand with onnxruntime at batch 1
    (the bare floor: the window ending at the reading less the learnt shift, standardised,
    both graphs at z = mu, the Gaussian loss and KL in NumPy: the window's score; the
    spatial check, the last step's loss into the same alarm.AnomalyLikelihood, the alarm,
    the held alarm and the level, as docs/stream-spec.md writes them). One thread; the two
    take turns reading by reading, so load from other processes falls on both alike."""
    import onnxruntime as ort

    from vae_edge.runtime import EdgeVAE
    from vae_edge.runtime.alarm import ALARM_THRESHOLD, AnomalyLikelihood
    from vae_edge.runtime.series import ACCEPT, CALM, LEVEL_RATE, SPATIAL_MARGIN

    model = EdgeVAE.load(bundle, threads=1)
    m = model.manifest
    w = m.series.window
    x = values[: w + readings, None]
    scorer = model.stream()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    enc = ort.InferenceSession(str(bundle / "encoder.onnx"), options, ["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(bundle / "decoder.onnx"), options, ["CPUExecutionProvider"])
    mean = np.float32(m.preprocessing.mean[0])
    std = np.float32(m.preprocessing.std[0])
    logvar = np.asarray(m.observation_logvar, np.float32)
    precision = np.exp(-logvar).reshape(-1 if logvar.size == w else 1, 1)  # per step, or one

    likelihood = AnomalyLikelihood(quiet=w)
    trained = float(m.preprocessing.mean[0])
    state = {"since": w, "held": None, "calm": 0, "rebase": False, "low": m.series.low[0],
             "high": m.series.high[0], "level": trained, "sum": 0.0, "count": 0}  # fmt: skip
    ring = np.full(w, np.nan)

    def floor(i, v):
        ring[:-1] = ring[1:]
        ring[-1] = v
        xp = (((ring - (state["level"] - trained)).astype(np.float32) - mean) / std)[None, :, None]
        missing = np.isnan(xp)
        mu, logvar = enc.run(None, {"x": np.where(missing, np.float32(0), xp)})
        logvar = np.minimum(logvar, np.float32(30))
        means = dec.run(None, {"z": mu})[0]
        losses = np.where(missing, 0, 0.5 * np.square(xp - means) * precision)
        score = losses.sum() - 0.5 * (1 + logvar - mu * mu - np.exp(logvar)).sum()
        margin = SPATIAL_MARGIN * (state["high"] - state["low"])
        beyond = v < state["low"] - margin or v > state["high"] + margin
        state["low"], state["high"] = min(state["low"], v), max(state["high"], v)
        held = state["held"] is not None
        lik = 0.0
        if i >= w - 1:
            lik = likelihood.update(float(losses[0, -1].sum()), float(beyond), not held)
        alarm = lik > ALARM_THRESHOLD and state["since"] >= w and not held
        state["since"] = 0 if alarm else state["since"] + 1
        if alarm:
            state["held"], state["calm"] = 0, 0
        elif held:
            state["held"] += 1
            state["calm"] = state["calm"] + 1 if likelihood.raw <= ALARM_THRESHOLD else 0
            if state["calm"] >= CALM * w:
                state["held"] = None
            elif state["held"] >= ACCEPT * w:
                state["rebase"] = True
        if not (held or alarm):
            state["sum"] += v
            state["count"] += 1
        if (i + 1) % w == 0:
            if state["rebase"]:
                total = float(np.cumsum(ring)[-1]) / w  # summed in order, as the stream
                state["level"], state["rebase"], state["held"] = total, False, None
            elif state["count"] >= w / 2:
                state["level"] += LEVEL_RATE * (state["sum"] / state["count"] - state["level"])
            state["sum"], state["count"] = 0.0, 0
        return score, lik

    push_times, floor_times, same = [], [], True
    for i, row in enumerate(x):
        t0 = time.perf_counter_ns()
        got = scorer.push(row)
        push_times.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        score, lik = floor(i, float(row[0]))
        floor_times.append(time.perf_counter_ns() - t0)
        same &= bool(np.isclose(score, got.scores[0], rtol=1e-5) and lik == got.likelihood[0])
    push_times, floor_times = push_times[w - 1 :], floor_times[w - 1 :]

    def pct(a, q):
        return float(np.percentile(np.asarray(a[100:]) / 1000, q))  # after a warm-up

    return {
        "window": w,
        "readings": len(push_times) - 100,
        "push_p50_us": pct(push_times, 50),
        "push_p99_us": pct(push_times, 99),
        "floor_p50_us": pct(floor_times, 50),
        "floor_p99_us": pct(floor_times, 99),
        "ratio_p50": pct(push_times, 50) / pct(floor_times, 50),
        "floor_equals_stream": same,
        "bundle_bytes": sum(f.stat().st_size for f in bundle.iterdir()),
    }


# -- report ---------------------------------------------------------------------------------


def summary(results: dict, methods: list[str]) -> dict:
    out = {}
    for method in methods:
        rows = [r["metrics"][method] for r in results.values() if method in r["metrics"]]
        out[method] = {k: statistics.fmean(row[k] for row in rows)
                       for k in ("auroc", "auprc", "vus_pr")}  # fmt: skip
        out[method]["series"] = len(rows)
    return out


def wins(results: dict, a: str, b: str, metric: str = "vus_pr") -> int:
    return sum(
        r["metrics"][a][metric] > r["metrics"][b][metric]
        for r in results.values()
        if a in r["metrics"] and b in r["metrics"]
    )


def write(results: dict, latency: dict | None, seconds: float, designs: bool) -> None:
    methods = [DEFAULT, STREAM, LIKELIHOOD,
               *[p for p in PEERS if any(p in r["metrics"] for r in results.values())]]  # fmt: skip
    env = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "versions": {d: metadata.version(d) for d in
                     ("vae-edge", "tsb-ad", "onnxruntime", "numpy", "torch", "scikit-learn")},
        "seconds": round(seconds, 1),
    }  # fmt: skip
    means = summary(results, methods)
    table = {"environment": env, "mean": means, "series": results, "streaming": latency}
    table["wins_vus_pr"] = {m: wins(results, DEFAULT, m) for m in methods[1:]}
    table["wins_auroc"] = {m: wins(results, DEFAULT, m, "auroc") for m in methods[1:]}
    name = {"window": "series-designs", "architecture": "series-architectures"}.get(
        designs, "series"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(
        json.dumps(table, indent=1, default=lambda o: o.item()) + "\n"
    )
    lines = [f"# NAB series: vae-edge against TSB-AD's peers ({len(results)} series)", "",
             f"{env['machine']}; Python {env['python']}; "
             + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
             + f"; {env['seconds']} s. Written by benchmarks/series.py.", ""]  # fmt: skip
    if designs:
        lines += _designs_table(results)
    lines += ["| method | mean VUS-PR | mean AUROC | mean AUPRC | vae-edge wins (VUS-PR) | "
              "vae-edge wins (AUROC) |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for m in methods:
        s = means[m]
        w = "" if m == DEFAULT else f"{table['wins_vus_pr'][m]}/{s['series']}"
        wa = "" if m == DEFAULT else f"{table['wins_auroc'][m]}/{s['series']}"
        lines.append(f"| {m} | {s['vus_pr']:.3f} | {s['auroc']:.3f} | {s['auprc']:.3f} | "
                     f"{w} | {wa} |")  # fmt: skip
    best = {n: max(methods, key=lambda m: r["metrics"].get(m, {}).get("vus_pr", -1))
            for n, r in results.items()}  # fmt: skip
    lines += [
        "",
        "Series won (best VUS-PR): "
        + ", ".join(f"{m} {sum(b == m for b in best.values())}" for m in methods),
        "",
    ]
    lines += ["## Per series (VUS-PR / AUROC)", "",
              "| series | steps | window (vae-edge, TSB-AD) | " + " | ".join(methods) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in methods) + " |"]  # fmt: skip
    for n, r in results.items():
        cells = [f"{r['metrics'][m]['vus_pr']:.3f} / {r['metrics'][m]['auroc']:.3f}"
                 if m in r["metrics"] else "" for m in methods]  # fmt: skip
        lines.append(f"| {n.split('__')[1]} | {r['steps']} | {r['vae_edge_window']}, "
                     f"{r['tsb_window']} | " + " | ".join(cells) + " |")  # fmt: skip
    if latency:
        lines += ["", "## Streaming, one reading at a time (one thread)", "",
                  f"Window {latency['window']}, {latency['readings']} readings: "
                  f"SeriesStream.push p50 {latency['push_p50_us']:.1f} us, p99 "
                  f"{latency['push_p99_us']:.1f} us; bare floor (the same score, likelihood "
                  "and alarm by hand, onnxruntime at batch 1) p50 "
                  f"{latency['floor_p50_us']:.1f} us, p99 "
                  f"{latency['floor_p99_us']:.1f} us: **{latency['ratio_p50']:.2f}x** at p50. "
                  f"Bundle {latency['bundle_bytes'] / 1000:.0f} kB."]  # fmt: skip
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _designs_table(results: dict) -> list[str]:
    keys = [k for k in next(iter(results.values()))["metrics"] if k not in PEERS]
    means = summary(results, keys)
    best = max(keys, key=lambda k: means[k]["vus_pr"])
    lines = ["## Design choices", "",
             "| design | mean VUS-PR | mean AUROC | wins over the best (VUS-PR) |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for k in sorted(keys, key=lambda k: -means[k]["vus_pr"]):
        lines.append(f"| {k} | {means[k]['vus_pr']:.3f} | {means[k]['auroc']:.3f} | "
                     f"{wins(results, k, best)}/{means[k]['series']} |")  # fmt: skip
    return [*lines, ""]


def plot(name: str, folder: Path, results_png: Path) -> None:
    """One series, its labelled windows and vae-edge's per-step scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values, labels = load(name, folder)
    split = int(len(values) * TRAIN_SHARE)
    with tempfile.TemporaryDirectory() as tmp:
        model = vae_edge_window_scores(values, split, "auto", Path(tmp))
        scores = step_scores(model, values, None)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
    top.plot(values, lw=0.6, color="black")
    bottom.plot(scores, lw=0.6, color="tab:blue")
    for ax in (top, bottom):
        ax.fill_between(np.arange(len(values)), 0, 1, where=labels > 0, color="tab:red",
                        alpha=0.2, transform=ax.get_xaxis_transform(),
                        label="labelled anomaly")  # fmt: skip
        ax.axvline(split, color="grey", ls="--", lw=0.8)
    top.set_ylabel("value")
    bottom.set_ylabel("vae-edge score")
    bottom.set_xlabel(f"step (training: the first {TRAIN_SHARE:.0%}, left of the dashed line)")
    top.set_title(f"NAB {name.split('__')[1]}: the series, its labelled windows, and the score "
                  "of each step")  # fmt: skip
    top.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(results_png, dpi=110)


LATENCY_SERIES = "realKnownCause__machine_temperature_system_failure"


def latency_of(folder: Path) -> dict:
    """streaming_latency of a model trained on the first part of LATENCY_SERIES."""
    values, _ = load(LATENCY_SERIES, folder)
    with tempfile.TemporaryDirectory() as tmp:
        vae_edge_window_scores(values, int(len(values) * TRAIN_SHARE), "auto", Path(tmp))
        latency_of.last = streaming_latency(Path(tmp) / "bundle", values)
    return latency_of.last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", nargs="*")
    parser.add_argument("--designs", choices=("window", "architecture"))
    parser.add_argument("--skip-donut", action="store_true")
    parser.add_argument(
        "--latency",
        action="store_true",
        help="only the streaming latency against its floor (stream-latency.*)",
    )
    args = parser.parse_args()
    folder = data_dir()
    if not (folder / "labels.json").is_file():
        sys.exit(f"no NAB data in {folder} (set VAE_EDGE_DATA)")
    if args.latency:
        result = latency_of(folder) | {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "versions": {d: metadata.version(d) for d in ("vae-edge", "onnxruntime", "numpy")},
        }
        (RESULTS / "stream-latency.json").write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
        return
    names = args.series or sorted(json.loads((folder / "labels.json").read_text()))
    started = time.perf_counter()
    results = {}
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        r = run_series(name, folder, args.designs, args.skip_donut)
        if r:
            results[name] = r
            m = r["metrics"]
            shown = [k for k in m if k in (DEFAULT, STREAM, LIKELIHOOD) or k in PEERS]
            print(f"[{i}/{len(names)}] {name}: "
                  + ", ".join(f"{k} {m[k]['vus_pr']:.3f}" for k in shown)
                  + f" ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
        else:
            print(f"[{i}/{len(names)}] {name}: no anomaly in the evaluated part, left out")
    latency = None
    if not args.designs:
        latency = latency_of(folder)
        plot(LATENCY_SERIES, folder, RESULTS / "series.png")
    write(results, latency, time.perf_counter() - started, args.designs)


if __name__ == "__main__":
    main()
