"""Tabular anomaly detection: vae-edge with default settings against PyOD's VAE and
IForest (their defaults) and two plain baselines, on every ODDS set.

    python benchmarks/anomaly.py [DATA_DIR]     (default $VAE_EDGE_DATA/odds)

Protocol (../shared/data/README.md): seeds 0, 1, 2; stratified 60/40 split; each detector
is fitted on the training part without labels (anomalies included); AUROC and AUPRC on the
test part; mean over seeds. vae-edge runs its real pipeline: `train` on an .npy of the
training part, `export`, then EdgeVAE.score with its defaults (onnxruntime), through
VAEDetector, the same fit / decision_function interface as every other method. Baselines:
distance from the training mean in standardised units, and PCA reconstruction error with
half the components. Writes benchmarks/results/anomaly.{json,md}.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
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

from vae_edge.training import VAEDetector

SEEDS = (0, 1, 2)
METHODS = ("vae_edge", "pyod_vae", "pyod_iforest", "distance_from_mean", "pca_reconstruction")
# The same trained vae-edge model scored other ways: (score_type, samples); seed 0.
SCORE_VARIANTS = (("recon", 0), ("recon", 10), ("elbo", 0), ("elbo", 1), ("elbo", 10),
                  ("iwae", 10))  # fmt: skip


class DistanceFromMean:
    """Squared distance from the training mean in standardised units."""

    def fit(self, x):
        self.mean_, self.std_ = x.mean(0), x.std(0)
        self.std_[self.std_ == 0] = 1
        return self

    def decision_function(self, x):
        return np.square((x - self.mean_) / self.std_).sum(1)


class PCAReconstruction(DistanceFromMean):
    """Squared PCA reconstruction error with half the components, standardised units."""

    def __init__(self, seed: int):
        self.seed = seed

    def fit(self, x):
        super().fit(x)
        z = (x - self.mean_) / self.std_
        self.pca_ = PCA(n_components=max(1, x.shape[1] // 2), random_state=self.seed).fit(z)
        return self

    def decision_function(self, x):
        z = (x - self.mean_) / self.std_
        return np.square(z - self.pca_.inverse_transform(self.pca_.transform(z))).sum(1)


def detectors(seed: int) -> dict:
    """Every method behind one interface, fit(x_train) and decision_function(x_test), with
    its defaults; vae-edge's VAEDetector trains, exports and scores as the CLI does."""
    return {
        "vae_edge": VAEDetector(seed=seed),
        "pyod_vae": PyodVAE(verbose=0),
        "pyod_iforest": IForest(random_state=seed),
        "distance_from_mean": DistanceFromMean(),
        "pca_reconstruction": PCAReconstruction(seed),
    }


def scores_of(name: str, detector, x_train, x_test) -> dict[str, np.ndarray]:
    """The method's test scores; for vae-edge also the score variants of the same model."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        detector.fit(x_train)  # PyOD's VAE prints its epochs
    scores = {name: detector.decision_function(x_test)}
    if name == "vae_edge":
        for score_type, samples in SCORE_VARIANTS:
            scores[f"{score_type}_L{samples}"] = detector.model_.score(
                x_test, samples, 0, score_type
            )
    return scores


def main(data_dir: str | None = None) -> None:
    data_dir = Path(data_dir or Path(os.environ.get("VAE_EDGE_DATA", "../shared/data")) / "odds")
    files = sorted(data_dir.glob("*.npz"))
    if not files:
        sys.exit(f"no .npz files in {data_dir}")
    torch.set_num_threads(1)
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
            for name, detector in detectors(seed).items():
                for key, s in scores_of(name, detector, x_train, x_test).items():
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
