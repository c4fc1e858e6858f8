"""Tabular anomaly detection: vae-edge with default settings against PyOD's VAE and
IForest (their defaults) and two plain baselines, on every ODDS set.

    python benchmarks/anomaly.py [DATA_DIR]     (default $VAE_EDGE_DATA/odds)

Protocol (../shared/data/README.md): seeds 0, 1, 2; stratified 60/40 split; each detector
is fitted on the training part without labels (anomalies included); AUROC and AUPRC on the
test part; mean over seeds. vae-edge runs its real pipeline: `train` on an .npy of the
training part, `export`, then EdgeVAE.score with its defaults (onnxruntime). Baselines:
distance from the training mean in standardised units, and PCA reconstruction error with
half the components. Writes benchmarks/results/anomaly.{json,md}.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from pyod.models.iforest import IForest
from pyod.models.vae import VAE as PyodVAE
from report import write_results
from sklearn.decomposition import PCA
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from vae_edge.export.onnx_export import export_run
from vae_edge.runtime import EdgeVAE
from vae_edge.training.train import train

SEEDS = (0, 1, 2)
METHODS = ("vae_edge", "pyod_vae", "pyod_iforest", "distance_from_mean", "pca_reconstruction")
# The same trained vae-edge model scored other ways: (score_type, samples); seed 0.
SCORE_VARIANTS = (("recon", 0), ("recon", 10), ("elbo", 0), ("elbo", 1), ("elbo", 10),
                  ("iwae", 10))  # fmt: skip


def vae_edge(x_train, x_test, seed, tmp: Path) -> dict[str, np.ndarray]:
    """Default settings; the default score under "vae_edge", the variants beside it."""
    np.save(tmp / "train.npy", x_train)
    train(str(tmp / "train.npy"), tmp / "run", seed=seed, progress=False)
    export_run(tmp / "run", tmp / "bundle", force=True)
    model = EdgeVAE.load(tmp / "bundle")
    scores = {"vae_edge": model.score(x_test)}
    for score_type, samples in SCORE_VARIANTS:
        scores[f"{score_type}_L{samples}"] = model.score(x_test, samples, 0, score_type)
    return scores


def pyod_vae(x_train, x_test, seed, tmp) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return PyodVAE(verbose=0).fit(x_train).decision_function(x_test)


def pyod_iforest(x_train, x_test, seed, tmp) -> np.ndarray:
    return IForest(random_state=seed).fit(x_train).decision_function(x_test)


def _standardise(x_train, x_test):
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1
    return (x_train - mean) / std, (x_test - mean) / std


def distance_from_mean(x_train, x_test, seed, tmp) -> np.ndarray:
    return np.square(_standardise(x_train, x_test)[1]).sum(1)


def pca_reconstruction(x_train, x_test, seed, tmp) -> np.ndarray:
    z_train, z_test = _standardise(x_train, x_test)
    pca = PCA(n_components=max(1, x_train.shape[1] // 2), random_state=seed).fit(z_train)
    return np.square(z_test - pca.inverse_transform(pca.transform(z_test))).sum(1)


def main(data_dir: str | None = None) -> None:
    data_dir = Path(data_dir or Path(os.environ.get("VAE_EDGE_DATA", "../shared/data")) / "odds")
    files = sorted(data_dir.glob("*.npz"))
    if not files:
        sys.exit(f"no .npz files in {data_dir}")
    torch.set_num_threads(1)
    detectors = {name: globals()[name] for name in METHODS}
    results = {}
    started = time.perf_counter()
    for file in files:
        with np.load(file) as f:
            x, y = f["x"].astype(np.float32), f["y"]
        per_seed = {}
        for seed in SEEDS:
            x_train, x_test, _, y_test = train_test_split(
                x, y, test_size=0.4, stratify=y, random_state=seed
            )
            for name, detect in detectors.items():
                with tempfile.TemporaryDirectory() as tmp:
                    scores = detect(x_train, x_test, seed, Path(tmp))
                for key, s in scores.items() if isinstance(scores, dict) else [(name, scores)]:
                    m = per_seed.setdefault(key, {"auroc": [], "auprc": []})
                    m["auroc"].append(roc_auc_score(y_test, s))
                    m["auprc"].append(average_precision_score(y_test, s))
        results[file.stem] = {
            name: {k: float(np.mean(v)) for k, v in m.items()} for name, m in per_seed.items()
        }
        row = "  ".join(f"{n} {results[file.stem][n]['auroc']:.3f}" for n in METHODS)
        print(f"{file.stem:<12} {row}  ({time.perf_counter() - started:.0f} s)", flush=True)
    write(results, time.perf_counter() - started)


def write(results: dict, seconds: float) -> None:
    keys = next(iter(results.values())).keys()
    means = {
        n: {k: float(np.mean([r[n][k] for r in results.values()])) for k in ("auroc", "auprc")}
        for n in keys
    }
    wins = {n: sum(r["vae_edge"]["auroc"] > r[n]["auroc"] for r in results.values())
            for n in METHODS[1:]}  # fmt: skip
    versions = {p: metadata.version(p) for p in ("vae-edge", "torch", "onnxruntime", "pyod",
                                                 "scikit-learn", "numpy")}  # fmt: skip
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    out = {"protocol": __doc__.split("Protocol")[1].split("Writes")[0].strip(), "sets": results,
           "mean": means, "vae_edge_wins_auroc": wins, "versions": versions,
           "machine": machine, "seconds": round(seconds)}  # fmt: skip
    names = ["vae-edge", "PyOD VAE", "PyOD IForest", "distance from mean", "PCA reconstruction"]
    lines = ["| set | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for name, r in results.items():
        cells = [f"{r[n]['auroc']:.3f}" for n in METHODS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| **mean AUROC** | " + " | ".join(f"**{means[n]['auroc']:.3f}**" for n in METHODS) + " |"
    )
    lines.append("| mean AUPRC | " + " | ".join(f"{means[n]['auprc']:.3f}" for n in METHODS) + " |")
    lines.append(
        "| vae-edge better on | | "
        + " | ".join(f"{wins[n]} of {len(results)}" for n in METHODS[1:])
        + " |"
    )
    variants = [f"{t}_L{s}" for t, s in SCORE_VARIANTS]
    lines += [
        "",
        "vae-edge score types (same models; L = z draws, 0 = z = mu), AUROC:",
        "",
        "| set | " + " | ".join(variants) + " |",
        "| --- |" + " ---: |" * len(variants),
    ]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[v]['auroc']:.3f}" for v in variants) + " |")
    lines.append(
        "| **mean** | " + " | ".join(f"**{means[v]['auroc']:.3f}**" for v in variants) + " |"
    )
    table = "\n".join(lines)
    about = (f"AUROC, mean over seeds {', '.join(map(str, SEEDS))} (stratified 60/40, fitted "
             f"without labels). {machine}; " + ", ".join(f"{k} {v}" for k, v in versions.items())
             + f"; {round(seconds)} s.")  # fmt: skip
    write_results("anomaly", out, about, table)


if __name__ == "__main__":
    main(*sys.argv[1:])
