"""Machines with many sensors: vae-edge's windowed model on ASD's 12 servers against
TSB-AD's multivariate peers, the metrics it blames against the experts', and SKAB under
its leaderboard protocol.

ASD (shared/data/README.md, asd/): vae-edge trains with its defaults on `train` (window
auto) and streams train then test, a score per step; the test part is evaluated with
TSB-AD's AUROC, AUPRC and VUS-PR at the sliding window TSB-AD picks from the first metric
of the training part. Peers with TSB-AD's Optimal_Multi_algo_HP_dict settings: PCA,
KMeansAD, IForest and KNN fitted on train + test (as the package runs them), AutoEncoder,
CNN and OmniAnomaly fitted on train and scoring train + test; the test part is kept.
Blame: for every test step inside a labelled anomaly, the k = floor(P |G|) channels with
the highest per-channel loss (what `score --per-feature` writes) against the experts' set
G: HitRate@P% = |top-k & G| / |G|, averaged over the steps of a server.

SKAB (skab/): per run, train on its first 400 rows with the defaults, stream every row;
a row is flagged when its likelihood against the 400 training rows alone (the stream's
likelihood frozen after them: AnomalyLikelihood.judge) is above the default alarm
threshold (0.5); F1, false-alarm and missed-alarm rates over the test rows of the 34 runs
pooled, beside SKAB's published board. The alarms the stream raises as it runs
(is_anomaly: one per rise, at most one per window) are counted too.

Runs in the environment `make bench-multivariate` builds (tsb-ad 1.5 with --no-deps, as
bench-series). Peer results are cached in build/multivariate-peers.json (per server and
peer), so that a rerun after a change to vae-edge computes only vae-edge again; --fresh
ignores the cache.

    python benchmarks/multivariate.py [--servers omi-1 ...] [--skip-peers] [--fresh]
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
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PEER_CACHE = REPO / "build" / "multivariate-peers.json"
HINDSIGHT, STREAM = "vae-edge hindsight", "vae-edge stream"
PEERS = ("PCA", "KMeansAD", "IForest", "KNN", "AutoEncoder", "CNN", "OmniAnomaly")
SEMI_SUPERVISED = ("AutoEncoder", "CNN", "OmniAnomaly")
SKAB_SENSORS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure",
                "Temperature", "Thermocouple", "Voltage", "Volume Flow RateRMS"]  # fmt: skip
SKAB_TRAIN = 400
# SKAB's README, outlier detection (F1, false-alarm rate %, missed-alarm rate %).
SKAB_BOARD = [("Conv-AE", 0.78, 13.55, 28.02), ("MSET", 0.78, 39.73, 14.13),
              ("T-squared+Q (PCA)", 0.76, 26.62, 24.25), ("LSTM-AE", 0.74, 21.51, 33.67),
              ("T-squared", 0.66, 19.0, 43.0), ("LSTM-VAE", 0.56, 9.13, 55.03),
              ("Vanilla LSTM", 0.54, 12.54, 55.68), ("Vanilla AE", 0.39, 3.45, 75.22),
              ("MSCRED", 0.36, 49.94, 69.88), ("Isolation forest", 0.29, 2.56, 82.89)]  # fmt: skip


def data_dir() -> Path:
    return Path(os.environ.get("VAE_EDGE_DATA", REPO.parent / "shared" / "data"))


def train_bundle(values: np.ndarray, work: Path, **options):
    """vae-edge with its defaults on `values` (window auto): the exported bundle's model,
    the training seconds and the bundle's bytes."""
    import torch

    from vae_edge.export.onnx_export import export_run
    from vae_edge.runtime import EdgeVAE
    from vae_edge.training.train import fit_series

    losses = []
    t0 = time.perf_counter()
    model, config = fit_series(values, "auto", on_epoch=lambda e, _: losses.append(e["val_loss"]),
                               **options)  # fmt: skip
    seconds = time.perf_counter() - t0
    # stability: the largest jump of an epoch's validation loss above the best before it
    config.summary["worst_jump"] = max((b / min(losses[:i]) for i, b in enumerate(losses) if i),
                                       default=1.0)  # fmt: skip
    run = work / "run"
    run.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), run / "checkpoint.pt")
    (run / "config.json").write_text(config.to_json())
    export_run(run, work / "bundle", force=True)
    size = sum(f.stat().st_size for f in (work / "bundle").iterdir())
    return EdgeVAE.load(work / "bundle"), seconds, size, config


def metrics(scores: np.ndarray, labels: np.ndarray, sliding: int) -> dict:
    """TSB-AD's AUROC, AUPRC and VUS-PR of every step (bench-series' own calls)."""
    from series import metrics as series_metrics  # benchmarks/series.py, beside this file

    return series_metrics(scores, labels, 0, sliding)


def interpretation(path: Path) -> list[tuple[int, int, list[int]]]:
    """(first, last, blamed channels), 0-based test rows (inclusive) and channels."""
    spans = []
    for line in path.read_text().split():
        rows, blamed = line.split(":")
        first, last = (int(r) - 1 for r in rows.split("-"))
        spans.append((first, last, [int(m) - 1 for m in blamed.split(",")]))
    return spans


def hit_rates(per_channel: np.ndarray, spans, shares=(1.0, 1.5)) -> dict:
    """HitRate@P% over every step inside a labelled span (module docstring)."""
    hits = {p: [] for p in shares}
    for first, last, blamed in spans:
        g = set(blamed)
        for step in range(first, min(last, len(per_channel) - 1) + 1):
            order = np.argsort(-per_channel[step], kind="stable")
            for p in shares:
                k = math.floor(p * len(g))
                hits[p].append(len(g.intersection(order[:k].tolist())) / len(g))
    return {f"hitrate@{int(p * 100)}": statistics.fmean(h) for p, h in hits.items()}


def peer_scores(name: str, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    from TSB_AD import model_wrapper as w
    from TSB_AD.HP_list import Optimal_Multi_algo_HP_dict as hp

    both = np.vstack([train, test])
    run = getattr(w, f"run_{name}")
    if name in SEMI_SUPERVISED:
        scores = run(train, both, **hp[name])
    else:
        scores = run(both, **hp[name])
    return np.asarray(scores, np.float64).ravel()[-len(test) :]


def run_server(name: str, folder: Path, peers: dict, skip_peers: bool) -> dict:
    from TSB_AD.utils.slidingWindows import find_length_rank

    from vae_edge.runtime.series import hindsight_scores

    d = np.load(folder / f"{name}.npz")
    train, test, label = d["train"].astype(np.float64), d["test"].astype(np.float64), d["label"]
    sliding = find_length_rank(train[:, :1], rank=1)
    with tempfile.TemporaryDirectory() as tmp:
        model, seconds, size, config = train_bundle(train, Path(tmp))
    w = model.manifest.series.window
    t0 = time.perf_counter()
    batch = model.stream(per_feature=True).push(np.vstack([train, test]))
    score_seconds = time.perf_counter() - t0
    n = len(test)
    spans = interpretation(folder / f"{name}.interpretation.txt")
    stream, hind = batch.scores[-n:], hindsight_scores(batch.scores, w)[-n:]
    result = {
        "window": w, "sliding": int(sliding), "train_seconds": round(seconds, 1),
        "epochs": config.summary["epochs_run"], "bundle_bytes": size,
        "score_seconds": round(score_seconds, 1),
        "val_loss": config.summary.get("val_loss"),
        "worst_jump": round(config.summary["worst_jump"], 3),
        "metrics": {HINDSIGHT: metrics(hind, label, sliding),
                    STREAM: metrics(stream, label, sliding)},
        "blame": hit_rates(batch.feature_losses[-n:], spans),
        "alarms_in_test": int(batch.is_anomaly[-n:].sum()),
    }  # fmt: skip
    for peer in () if skip_peers else PEERS:
        key = f"{name}/{peer}"
        if key not in peers:
            t0 = time.perf_counter()
            s = peer_scores(peer, train, test)
            peers[key] = {"metrics": metrics(s, label, sliding),
                          "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            PEER_CACHE.parent.mkdir(exist_ok=True)
            PEER_CACHE.write_text(json.dumps(peers, indent=1))
        result["metrics"][peer] = peers[key]["metrics"]
        result.setdefault("peer_seconds", {})[peer] = peers[key]["seconds"]
    return result


def skab_runs(folder: Path) -> list[Path]:
    return sorted(p for sub in ("valve1", "valve2", "other") for p in (folder / sub).glob("*.csv"))


def run_skab(path: Path, reuse: bool = False) -> dict:
    """One SKAB run: trained on its first rows (or, with reuse, the bundle an earlier run
    left in build/skab), streamed; its labels and flags."""
    from vae_edge.runtime import EdgeVAE
    from vae_edge.runtime.alarm import ALARM_THRESHOLD, AnomalyLikelihood
    from vae_edge.runtime.series import read_series

    values = read_series(path, SKAB_SENSORS, "none").values
    labels = read_series(path, ["anomaly"], "none").values[:, 0].astype(int)
    # kept in build/skab, so that the stream's rules can be compared on the same models
    work = REPO / "build" / "skab" / f"{path.parent.name}-{path.stem}"
    if reuse and (work / "bundle" / "vae.json").is_file():
        model, seconds = EdgeVAE.load(work / "bundle"), None
        size = sum(f.stat().st_size for f in (work / "bundle").iterdir())
    else:
        model, seconds, size, _ = train_bundle(values[:SKAB_TRAIN], work)
    streamed = model.stream().push(values)
    raised, held = streamed.is_anomaly[SKAB_TRAIN:], streamed.in_alarm[SKAB_TRAIN:]
    losses = newest_losses(model, values)
    w = model.manifest.series.window
    frozen = AnomalyLikelihood()
    for loss in losses[w - 1 : SKAB_TRAIN]:  # as the stream learns: from the W-th reading
        frozen.update(loss)
    flags = [frozen.judge(loss) > ALARM_THRESHOLD for loss in losses[SKAB_TRAIN:]]
    return {"labels": labels[SKAB_TRAIN:].tolist(), "flags": flags, "raised": raised.tolist(),
            "held": held.tolist(),
            "window": w, "train_seconds": None if seconds is None else round(seconds, 1),
            "bundle_bytes": size}  # fmt: skip


def newest_losses(model, values: np.ndarray) -> np.ndarray:
    """Each reading's own loss (the last step of the window ending at it), as the stream
    feeds its likelihood: steps before the first count as missing."""
    from vae_edge.runtime.series import sliding_windows

    w = model.manifest.series.window
    padded = np.vstack([np.full((w - 1, values.shape[1]), np.nan), values])
    settings = model._settings(None, None, None, None, None, None, flags=False)
    batch = model.score_batch(sliding_windows(padded, w), 0, settings, True)
    return batch.feature_losses[:, -1].sum(axis=1, dtype=np.float64)


def pooled(runs: list[dict], key: str) -> dict:
    y = np.concatenate([r["labels"] for r in runs]).astype(bool)
    f = np.concatenate([r[key] for r in runs]).astype(bool)
    tp, fp, fn = int((f & y).sum()), int((f & ~y).sum()), int((~f & y).sum())
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    return {"f1": f1, "far": 100 * fp / max((~y).sum(), 1), "mar": 100 * fn / max(y.sum(), 1),
            "rows": len(y), "anomalous": int(y.sum())}  # fmt: skip


def write(asd: dict, skab: dict | None, seconds: float) -> None:
    import torch

    env = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "versions": {d: metadata.version(d) for d in
                     ("vae-edge", "tsb-ad", "onnxruntime", "numpy", "torch", "scikit-learn")},
        "torch_threads": torch.get_num_threads(),
        "seconds": round(seconds, 1),
    }  # fmt: skip
    methods = [
        HINDSIGHT,
        STREAM,
        *[p for p in PEERS if any(p in r["metrics"] for r in asd.values())],
    ]
    means = {m: {k: statistics.fmean(r["metrics"][m][k] for r in asd.values() if m in r["metrics"])
                 for k in ("vus_pr", "auroc", "auprc")} for m in methods}  # fmt: skip
    peers = [m for m in methods if m in PEERS]
    best_peer = max(peers, key=lambda m: means[m]["vus_pr"]) if peers else None
    won = {m: sum(bool(r["metrics"][m]["vus_pr"] > max(r["metrics"][p]["vus_pr"] for p in peers))
                  for r in asd.values()) for m in (HINDSIGHT, STREAM)} if peers else {}  # fmt: skip
    blame = {k: statistics.fmean(r["blame"][k] for r in asd.values())
             for k in ("hitrate@100", "hitrate@150")}  # fmt: skip
    table = {"environment": env, "asd": {"servers": asd, "mean": means, "best_peer": best_peer,
             "servers_won": won, "blame": blame}, "skab": skab}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    plain = lambda o: o.item() if isinstance(o, np.generic) else str(o)  # noqa: E731
    (RESULTS / "multivariate.json").write_text(json.dumps(table, indent=1, default=plain) + "\n")
    lines = [
        "# Machines with many sensors: ASD against TSB-AD's multivariate peers, blame, SKAB",
        "",
        f"{env['machine']}; Python {env['python']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f"; {env['seconds']} s. Written by benchmarks/multivariate.py.",
        "",
        "## ASD: 12 servers x 19 metrics (mean over servers)",
        "",
        "| method | VUS-PR | AUROC | AUPRC | servers won (VUS-PR, against every peer) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for m in sorted(methods, key=lambda m: -means[m]["vus_pr"]):
        wins = f"{won[m]}/{len(asd)}" if m in won else ""
        lines.append(f"| {m} | {means[m]['vus_pr']:.3f} | {means[m]['auroc']:.3f} | "
                     f"{means[m]['auprc']:.3f} | {wins} |")  # fmt: skip
    t = [r["train_seconds"] for r in asd.values()]
    b = [r["bundle_bytes"] for r in asd.values()]
    lines += [
        "",
        f"vae-edge training (defaults, window auto): median {statistics.median(t):.1f} s, "
        f"max {max(t):.1f} s; bundle {max(b) / 1e3:.0f} kB at most; no epoch's validation "
        f"loss above {max(r['worst_jump'] for r in asd.values()):.2f}x the best before it. "
        "Blame against the "
        f"experts' metrics: HitRate@100% {blame['hitrate@100']:.3f}, HitRate@150% "
        f"{blame['hitrate@150']:.3f}.",
        "",
        "| server | window | train s | bundle kB | " + " | ".join(methods)
        + " | HitRate@100 / @150 |",
        "| --- " * (5 + len(methods)) + "|",
    ]  # fmt: skip
    for name, r in asd.items():
        cells = [f"{r['metrics'][m]['vus_pr']:.3f}" if m in r["metrics"] else "" for m in methods]
        hit = r["blame"]
        cells.append(f"{hit['hitrate@100']:.3f} / {hit['hitrate@150']:.3f}")
        lines.append(f"| {name} | {r['window']} | {r['train_seconds']} | "
                     f"{r['bundle_bytes'] / 1e3:.0f} | " + " | ".join(cells) + " |")  # fmt: skip
    if peers:
        ps = {p: statistics.fmean(r["peer_seconds"][p] for r in asd.values()) for p in peers}
        lines += ["", "Peer seconds per server (mean): "
                  + ", ".join(f"{p} {s:.1f}" for p, s in ps.items()) + "."]  # fmt: skip
    if skab:
        lines += skab_lines(skab)
    (RESULTS / "multivariate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def skab_lines(skab: dict) -> list[str]:
    """SKAB's table: vae-edge's rows beside the published board."""
    lines = []
    f, raised, held = skab["flagged"], skab["raised"], skab["held"]
    lines += [
        "",
        "## SKAB: 34 runs, trained on each run's first 400 rows (leaderboard protocol)",
        "",
        f"{f['rows']} test rows pooled, {f['anomalous']} in a fault; windows "
        f"{skab['windows']}; "
        + (
            f"training median {skab['train_seconds']:.1f} s."
            if skab["train_seconds"]
            else "the bundles of an earlier run of this script, streamed again (--reuse)."
        ),
        "",
        "| detector | F1 | false alarms % | missed % |",
        "| --- | --- | --- | --- |",
        f"| **vae-edge in_alarm** (the alarm held as it streams, the default) | "
        f"**{held['f1']:.2f}** | {held['far']:.2f} | {held['mar']:.2f} |",
        f"| vae-edge, likelihood against the 400 training rows > 0.5 (judge) | "
        f"{f['f1']:.2f} | {f['far']:.2f} | {f['mar']:.2f} |",
        f"| vae-edge alarms raised as it streams (is_anomaly) | {raised['f1']:.2f} | "
        f"{raised['far']:.2f} | {raised['mar']:.2f} |",
    ]
    lines += [f"| {n} (published) | {a:.2f} | {b_:.2f} | {c:.2f} |" for n, a, b_, c in SKAB_BOARD]
    return lines


def plot(name: str, folder: Path, out: Path) -> None:
    """One ASD alarm: the metrics around the first labelled anomaly, its span, the metrics
    the experts blamed and the ones vae-edge ranks highest there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.load(folder / f"{name}.npz")
    train, test = d["train"].astype(np.float64), d["test"].astype(np.float64)
    first, last, blamed = max(interpretation(folder / f"{name}.interpretation.txt"),
                              key=lambda s: s[1] - s[0])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        model, *_ = train_bundle(train, Path(tmp))
    batch = model.stream(per_feature=True).push(np.vstack([train, test]))
    losses = batch.feature_losses[-len(test) :]
    lo, hi = max(first - 150, 0), min(last + 150, len(test))
    top = np.argsort(-losses[first : last + 1].mean(axis=0))[: len(blamed)]
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True, layout="constrained")
    steps = np.arange(lo, hi)
    for c in range(test.shape[1]):
        axes[0].plot(steps, test[lo:hi, c], lw=0.8, color="C3" if c in blamed else "0.7")
    axes[0].set_ylabel("metrics (red: blamed)")
    im = axes[1].imshow(np.log1p(losses[lo:hi].T), aspect="auto", cmap="magma",
                        extent=(lo, hi, test.shape[1] + 0.5, 0.5))  # fmt: skip
    axes[1].set_ylabel("metric")
    fig.colorbar(im, ax=list(axes), label="log(1 + loss) per metric", pad=0.01)
    axes[1].set_yticks(range(1, test.shape[1] + 1, 2))
    for c in blamed:
        axes[1].plot([lo], [c + 1], ">", color="C3", ms=5, clip_on=False)
    axes[2].plot(steps, batch.scores[-len(test) :][lo:hi], lw=0.8, color="0.2")
    axes[2].set_ylabel("score (-ELBO)")
    for ax in axes[[0, 2]]:
        ax.axvspan(first, last, color="C1", alpha=0.2, lw=0)
    hits = len(set(top.tolist()) & set(blamed))
    axes[0].set_title(f"ASD {name}: test steps {first + 1}-{last + 1} labelled; experts "
                      f"blamed {len(blamed)} metrics, vae-edge's top {len(blamed)} hold "
                      f"{hits} of them")  # fmt: skip
    axes[2].set_xlabel("test step (5 minutes)")
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", nargs="*")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-skab", action="store_true")
    parser.add_argument("--skip-asd", action="store_true")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="SKAB: stream the bundles an earlier run left in build/skab",
    )
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    folder = data_dir()
    if not (folder / "asd").is_dir():
        sys.exit(f"no ASD data in {folder} (set VAE_EDGE_DATA)")
    peers = {} if args.fresh or not PEER_CACHE.is_file() else json.loads(PEER_CACHE.read_text())
    names = [] if args.skip_asd else args.servers or [f"omi-{i}" for i in range(1, 13)]
    started = time.perf_counter()
    asd = {}
    for name in names:
        t0 = time.perf_counter()
        r = asd[name] = run_server(name, folder / "asd", peers, args.skip_peers)
        print(f"{name}: " + ", ".join(f"{k} {v['vus_pr']:.3f}" for k, v in r["metrics"].items())
              + f"; blame {r['blame']['hitrate@150']:.3f}; train {r['train_seconds']} s "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    skab = None
    if not args.skip_skab:
        runs = []
        for i, path in enumerate(skab_runs(folder / "skab"), 1):
            runs.append(run_skab(path, args.reuse))
            print(f"SKAB [{i}] {path.parent.name}/{path.name}", flush=True)
        skab = {
            "flagged": pooled(runs, "flags"),
            "raised": pooled(runs, "raised"),
            "held": pooled(runs, "held"),
            "windows": sorted({r["window"] for r in runs}),
            "train_seconds": statistics.median(
                [r["train_seconds"] for r in runs if r["train_seconds"] is not None] or [0]
            ),
        }
    if not names:  # SKAB alone
        (RESULTS / "skab.json").write_text(json.dumps(skab, indent=1) + "\n")
        env = (f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; Python "
               f"{platform.python_version()}; vae-edge {metadata.version('vae-edge')}, "
               f"onnxruntime {metadata.version('onnxruntime')}. Written by "
               "benchmarks/multivariate.py --skip-asd.")  # fmt: skip
        (RESULTS / "skab.md").write_text(f"# SKAB\n\n{env}\n" + "\n".join(skab_lines(skab))
                                         + "\n")  # fmt: skip
        print("\n".join(skab_lines(skab)))
        return
    write(asd, skab, time.perf_counter() - started)
    plot(names[0], folder / "asd", RESULTS / "multivariate.png")


if __name__ == "__main__":
    main()
