"""Tabular anomaly detection: vae-edge with default settings against PyOD's VAE, IForest,
KNN, LOF and ECOD (their defaults) and two plain baselines, on every set in the data folder; the
design choices behind vae-edge's defaults side by side; a leave-one-set-out check of them.

    python benchmarks/anomaly.py [DATA_DIR]     (default $VAE_EDGE_DATA/odds)

Protocol (../shared/data/README.md): seeds 0, 1, 2; stratified 60/40 split; each detector
is fitted on the training part without labels (anomalies included); AUROC and AUPRC on the
test part; mean over seeds. vae-edge runs its real pipeline: `train` on an .npy of the
training part, `export`, then EdgeVAE.score with its defaults (onnxruntime; a table
model's default score is -L_5), through VAEDetector, the same fit / decision_function
interface as every other method. KNN, LOF and ECOD see features standardised with the
training part's mean and std (distances need comparable units). Baselines:
distance from the training mean in standardised units, and PCA reconstruction error with
half the components. Design choices: pairs of trimmed share (--trim) and training length
(at least this many optimizer steps) in CHOICES, each a full train, export and score.
Score types: the default model scored other ways. Leave-one-set-out: for each set, the
design choice or score type that beats IForest on the most of the other sets (ties: higher
mean AUROC there) is scored on the set left out.
Writes benchmarks/results/anomaly.{json,md}.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
import time
from importlib import metadata
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from report import write_results

SEEDS = (0, 1, 2)
PEERS = (
    "pyod_vae",
    "pyod_iforest",
    "pyod_knn",
    "pyod_lof",
    "pyod_ecod",
    "distance_from_mean",
    "pca_reconstruction",
)
METHODS = ("vae_edge", *PEERS)
NAMES = (
    "vae-edge",
    "PyOD VAE",
    "PyOD IForest",
    "PyOD KNN",
    "PyOD LOF",
    "PyOD ECOD",
    "distance from mean",
    "PCA reconstruction",
)
# (trim, least optimizer steps): each trimmed share at three lengths, the chosen one at four.
CHOICES = ((0.0, 500), (0.1, 500), (0.25, 500), (0.4, 500), (0.25, 1000),
           (0.0, 2000), (0.1, 2000), (0.25, 2000), (0.4, 2000),
           (0.0, 4000), (0.1, 4000), (0.25, 4000), (0.4, 4000))  # fmt: skip
BEFORE = "trim 0, 500 steps"  # the defaults before this benchmark chose new ones
# Levers measured beside the defaults and not kept (each a column of its own):
ENSEMBLE = 3  # the default model and two more seeds, scores standardised and averaged
SKEW = 1.0  # log1p of the columns >= 0 whose skewness on the training part is above this
QUANTILES = 1000  # knots of the quantile-normal map of each column
LEVERS = (f"ensemble of {ENSEMBLE}", "log1p of skewed columns", "quantile-normal columns")
# The default model scored other ways: (score_type, samples); seed 0. elbo_L0 (-ELBO at
# z = mu) was the default before.
BEFORE_SCORE = "elbo_L0"
SCORE_VARIANTS = (("elbo", 0), ("recon", 0), ("elbo", 5), ("iwae", 3), ("iwae", 10),
                  ("iwae", 20))  # fmt: skip


# The default as format 1 bundles scored it: -L_5 with NumPy noise keyed by row position
# (format 2 stores five draws in the manifest, the same for every row).
ROW_NOISE = "iwae_L5 row noise"


def format_1_default(model, x):
    """The model's default score with the noise of a bundle without stored draws."""
    stored = model.manifest.default_score.eps
    model.__dict__["_stored_eps"] = None  # EdgeVAE._stored_eps, a cached property
    try:
        return model.score(x)
    finally:
        model.__dict__["_stored_eps"] = None if stored is None else np.asarray(stored, np.float32)


def choice(trim: float, min_steps: int) -> str:
    return f"trim {trim:g}, {min_steps} steps"


def default_choice() -> str:
    """The design choice that vae-edge's defaults make (imported late: it loads torch)."""
    from vae_edge.training.train import MIN_STEPS, TRIM

    return choice(TRIM, MIN_STEPS)


class DistanceFromMean:
    """Squared distance from the training mean in standardised units."""

    def fit(self, x):
        self.mean_, self.std_ = x.mean(0), x.std(0)
        self.std_[self.std_ == 0] = 1
        return self

    def decision_function(self, x):
        return np.square((x - self.mean_) / self.std_).sum(1)


class Standardised:
    """A detector fitted and scored on features standardised with the training statistics."""

    def __init__(self, detector):
        self.detector = detector

    def fit(self, x):
        self.mean_, self.std_ = x.mean(0), x.std(0)
        self.std_[self.std_ == 0] = 1
        self.detector.fit((x - self.mean_) / self.std_)
        return self

    def decision_function(self, x):
        return self.detector.decision_function((x - self.mean_) / self.std_)


class PCAReconstruction(DistanceFromMean):
    """Squared PCA reconstruction error with half the components, standardised units."""

    def __init__(self, seed: int):
        self.seed = seed

    def fit(self, x):
        from sklearn.decomposition import PCA

        super().fit(x)
        z = (x - self.mean_) / self.std_
        self.pca_ = PCA(n_components=max(1, x.shape[1] // 2), random_state=self.seed).fit(z)
        return self

    def decision_function(self, x):
        z = (x - self.mean_) / self.std_
        return np.square(z - self.pca_.inverse_transform(self.pca_.transform(z))).sum(1)


def detectors(seed: int, n_train: int) -> dict:
    """Every method behind one interface, fit(x_train) and decision_function(x_test): the
    peers with their defaults, vae-edge with its defaults ("vae_edge") and with each design
    choice (the default one is the same model)."""
    from pyod.models.ecod import ECOD
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.lof import LOF
    from pyod.models.vae import VAE as PyodVAE

    from vae_edge.training import VAEDetector
    from vae_edge.training.train import TrainOptions, default_epochs

    n_fit = n_train - round(n_train * TrainOptions().val_fraction)
    batch_size = TrainOptions().batch_size
    found = {
        "vae_edge": VAEDetector(seed=seed),
        "pyod_vae": PyodVAE(verbose=0),
        "pyod_iforest": IForest(random_state=seed),
        "pyod_knn": Standardised(KNN()),
        "pyod_lof": Standardised(LOF()),
        "pyod_ecod": Standardised(ECOD()),
        "distance_from_mean": DistanceFromMean(),
        "pca_reconstruction": PCAReconstruction(seed),
    }
    for trim, steps in CHOICES:
        if choice(trim, steps) != default_choice():
            epochs = default_epochs(n_fit, batch_size, min_steps=steps)
            found[choice(trim, steps)] = VAEDetector(seed=seed, trim=trim, epochs=epochs)
    return found


def standardised(train_scores: np.ndarray, test_scores: np.ndarray) -> np.ndarray:
    """Test scores in units of the training scores' spread: (s - median) / IQR."""
    q1, median, q3 = np.percentile(train_scores, [25, 50, 75])
    return (test_scores - median) / (q3 - q1 or 1.0)


def log_skewed_columns(x_train: np.ndarray, x_test: np.ndarray):
    """log1p of the columns that are >= 0 with skewness above SKEW on the training part."""
    centred = x_train - x_train.mean(0)
    std = x_train.std(0)
    skew = np.divide((centred**3).mean(0), std**3, out=np.zeros_like(std), where=std > 0)
    columns = (x_train.min(0) >= 0) & (skew > SKEW)
    return (np.where(columns, np.log1p(np.maximum(x, 0)), x) for x in (x_train, x_test))


def default_score_key() -> str:
    from vae_edge.training.train import TABLE_SCORE

    return score_key(TABLE_SCORE.score_type, TABLE_SCORE.samples)


def score_key(score_type: str, samples: int) -> str:
    return f"{score_type}_L{samples}"


def quantile_normal_columns(x_train: np.ndarray, x_test: np.ndarray):
    """Each column through its training quantiles to normal scores (QUANTILES knots, tied
    knots merged), linear beyond the training range with the slope of its outer 1%."""
    from statistics import NormalDist

    n = len(x_train)
    q = np.linspace(0, 1, min(QUANTILES, n))
    knots = np.quantile(x_train, q, axis=0)
    normal = np.vectorize(NormalDist().inv_cdf)(np.clip(q, 0.5 / n, 1 - 0.5 / n))
    std = np.where(x_train.std(0) > 0, x_train.std(0), 1.0)
    maps = []
    for j in range(x_train.shape[1]):
        xs, where = np.unique(knots[:, j], return_inverse=True)
        zs = np.array([normal[where == i].mean() for i in range(len(xs))])
        if len(xs) == 1:
            maps.append((xs, zs, 1 / std[j], 1 / std[j]))
            continue
        i = max(1, round(0.01 * (len(xs) - 1)))
        low = (zs[i] - zs[0]) / (xs[i] - xs[0])
        high = (zs[-1] - zs[-1 - i]) / (xs[-1] - xs[-1 - i])
        maps.append((xs, zs, low, high))

    def transform(x):
        out = np.empty(x.shape, np.float64)
        for j, (xs, zs, low, high) in enumerate(maps):
            col = x[:, j].astype(np.float64)
            y = np.interp(col, xs, zs)
            y = np.where(col < xs[0], zs[0] + (col - xs[0]) * low, y)
            out[:, j] = np.where(col > xs[-1], zs[-1] + (col - xs[-1]) * high, y)
        return out.astype(np.float32)

    return transform(x_train), transform(x_test)


def levers(seed: int, default, x_train, x_test) -> dict[str, np.ndarray]:
    """Test scores of the levers that were measured and not kept."""
    from vae_edge.training import VAEDetector

    members = [standardised(default.decision_scores_, default.decision_function(x_test))]
    for m in range(1, ENSEMBLE):
        member = VAEDetector(seed=seed * 100 + m).fit(x_train)
        members.append(standardised(member.decision_scores_, member.decision_function(x_test)))
    logged_train, logged_test = log_skewed_columns(x_train, x_test)
    logged = VAEDetector(seed=seed).fit(logged_train).decision_function(logged_test)
    mapped_train, mapped_test = quantile_normal_columns(x_train, x_test)
    mapped = VAEDetector(seed=seed).fit(mapped_train).decision_function(mapped_test)
    return dict(zip(LEVERS, (np.mean(members, axis=0), logged, mapped), strict=True))


def run_split(job) -> tuple[str, int, dict]:
    """AUROC and AUPRC of every method and variant on one set and seed."""
    file, seed = job
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    torch.set_num_threads(1)  # two splits run at once on two cores
    with np.load(file) as f:
        x, y = f["x"].astype(np.float32), f["y"]
    x_train, x_test, _, y_test = train_test_split(
        x, y, test_size=0.4, stratify=y, random_state=seed
    )
    scores = {}
    for name, detector in detectors(seed, len(x_train)).items():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            detector.fit(x_train)  # PyOD's VAE prints its epochs
        scores[name] = detector.decision_function(x_test)
        if name == "vae_edge":
            scores[default_choice()] = scores[name]
            scores |= levers(seed, detector, x_train, x_test)
            scores[default_score_key()] = scores[name]
            for score_type, samples in SCORE_VARIANTS:
                key = score_key(score_type, samples)
                scores[key] = detector.model_.score(x_test, samples, 0, score_type)
            scores[ROW_NOISE] = format_1_default(detector.model_, x_test)
    # vae-edge's scores of every kind that are NaN or infinite (none may be)
    nonfinite = sum(int((~np.isfinite(s)).sum()) for k, s in scores.items() if k not in PEERS)
    metrics = {
        k: {"auroc": roc_auc_score(y_test, s), "auprc": average_precision_score(y_test, s)}
        for k, s in scores.items()
        if np.isfinite(s).all()
    }
    return file.stem, seed, metrics, nonfinite


def main(data_dir: str | None = None) -> None:
    data_dir = Path(data_dir or Path(os.environ.get("VAE_EDGE_DATA", "../shared/data")) / "odds")
    files = sorted(data_dir.glob("*.npz"))
    if not files:
        sys.exit(f"no .npz files in {data_dir}")
    started = time.perf_counter()
    jobs = sorted(((f, s) for f in files for s in SEEDS), key=lambda j: -j[0].stat().st_size)
    per_seed: dict[str, list[dict]] = {}
    nonfinite: dict[str, int] = {}
    with Pool(min(2, os.cpu_count() or 1)) as pool:
        for name, _, metrics, bad in pool.imap_unordered(run_split, jobs):
            per_seed.setdefault(name, []).append(metrics)
            nonfinite[name] = nonfinite.get(name, 0) + bad
            if len(per_seed[name]) == len(SEEDS):
                done = sum(len(v) == len(SEEDS) for v in per_seed.values())
                print(f"{name:<12} done ({done} of {len(files)} sets, "
                      f"{time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    results = {
        name: {k: {m: float(np.mean([r[k][m] for r in runs])) for m in ("auroc", "auprc")}
               for k in runs[0]}
        for name, runs in sorted(per_seed.items())
    }  # fmt: skip
    write(results, nonfinite, time.perf_counter() - started)


def wins(results: dict, a: str, b: str, sets=None) -> int:
    """Sets on which a's AUROC is above b's."""
    return sum(results[s][a]["auroc"] > results[s][b]["auroc"] for s in sets or results)


def leave_one_set_out(results: dict) -> dict:
    """For each set: the design choice chosen on the other sets, and its AUROC there."""
    choices = [choice(t, s) for t, s in CHOICES] + [score_key(*v) for v in SCORE_VARIANTS]
    choices.append(ROW_NOISE)
    out = {}
    for held_out in results:
        others = [s for s in results if s != held_out]
        best = max(
            choices,
            key=lambda c: (wins(results, c, "pyod_iforest", others),
                           np.mean([results[s][c]["auroc"] for s in others])),
        )  # fmt: skip
        out[held_out] = {"chosen": best, "auroc": results[held_out][best]["auroc"]}
    return out


def mean_ranks(results: dict) -> dict[str, float]:
    """Each method's rank among METHODS by AUROC on each set (1 = best, ties averaged),
    averaged over the sets."""
    ranks = {m: [] for m in METHODS}
    for s in results:
        aurocs = {m: results[s][m]["auroc"] for m in METHODS}
        for m in METHODS:
            above = sum(a > aurocs[m] for a in aurocs.values())
            tied = sum(a == aurocs[m] for a in aurocs.values())
            ranks[m].append(above + (tied + 1) / 2)
    return {m: float(np.mean(r)) for m, r in ranks.items()}


def write(results: dict, nonfinite: dict, seconds: float) -> None:
    sets = list(results)
    n = len(sets)

    def mean(key, metric="auroc"):
        return float(np.mean([results[s][key][metric] for s in sets]))

    keys = results[sets[0]].keys()
    means = {k: {m: mean(k, m) for m in ("auroc", "auprc")} for k in keys}
    best_on = {m: sum(max(METHODS, key=lambda k: results[s][k]["auroc"]) == m for s in sets)
               for m in METHODS}  # fmt: skip
    vae_wins = {m: wins(results, "vae_edge", m) for m in PEERS}
    ranks = mean_ranks(results)
    wins_over_all = {m: sum(wins(results, m, o) for o in METHODS if o != m) for m in METHODS}
    loso = leave_one_set_out(results)
    loso_wins = sum(loso[s]["auroc"] > results[s]["pyod_iforest"]["auroc"] for s in sets)
    versions = {p: metadata.version(p) for p in ("vae-edge", "torch", "onnxruntime", "pyod",
                                                 "scikit-learn", "numpy")}  # fmt: skip
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    out = {"protocol": __doc__.split("Protocol")[1].split("Writes")[0].strip(), "sets": results,
           "mean": means, "vae_edge_wins_auroc": vae_wins, "best_of_methods": best_on,
           "mean_rank": ranks, "wins_over_the_others": wins_over_all,
           "vae_edge_nonfinite_scores": nonfinite,
           "leave_one_set_out": loso, "leave_one_set_out_wins_vs_iforest": loso_wins,
           "versions": versions, "machine": machine, "seconds": round(seconds)}  # fmt: skip

    def row(label, cells):
        return f"| {label} | " + " | ".join(cells) + " |"

    def header(names):
        return [row("set", names), "| --- |" + " ---: |" * len(names)]

    lines = header(NAMES)
    for s in sets:
        lines.append(row(s, [f"{results[s][m]['auroc']:.3f}" for m in METHODS]))
    lines.append(row("**mean AUROC**", [f"**{means[m]['auroc']:.3f}**" for m in METHODS]))
    lines.append(row("mean AUPRC", [f"{means[m]['auprc']:.3f}" for m in METHODS]))
    lines.append(row("mean rank (1 = best)", [f"{ranks[m]:.2f}" for m in METHODS]))
    lines.append(row(f"best of the {len(METHODS)} on", [f"{best_on[m]} of {n}" for m in METHODS]))
    lines.append(row("vae-edge better on", ["", *(f"{vae_wins[m]} of {n}" for m in PEERS)]))
    lines.append(row(f"wins over the other {len(METHODS) - 1} (set-method pairs)",
                     [str(wins_over_all[m]) for m in METHODS]))  # fmt: skip
    lines += [
        "",
        "vae-edge scores that were NaN or infinite (every score type and variant, "
        f"every seed): {sum(nonfinite.values())}"
        + "".join(f"; {s}: {c}" for s, c in sorted(nonfinite.items()) if c),
    ]

    lines += ["", "AUPRC:", "", *header(NAMES)]
    for s in sets:
        lines.append(row(s, [f"{results[s][m]['auprc']:.3f}" for m in METHODS]))

    grid = [choice(t, s) for t, s in CHOICES]
    default = default_choice()

    def auroc_table(title, names, keys, baseline=None, baseline_name=""):
        """Per-set AUROC of the keys, their mean, wins over IForest (and over baseline)."""
        table = ["", title, "", *header(names)]
        for s in sets:
            table.append(row(s, [f"{results[s][k]['auroc']:.3f}" for k in keys]))
        table.append(row("**mean**", [f"**{means[k]['auroc']:.3f}**" for k in keys]))
        table.append(row("better than IForest on", [str(wins(results, k, "pyod_iforest"))
                                                    for k in keys]))  # fmt: skip
        if baseline:
            table.append(row(f"better than {baseline_name} on",
                             ["" if k == baseline else str(wins(results, k, baseline))
                              for k in keys]))  # fmt: skip
        return table

    lines += auroc_table(
        "Design choices (vae-edge, AUROC; trimmed share of each batch's loss, least optimizer "
        "steps; each scored with the default score; the default is in bold):",
        [f"**{c}**" if c == default else c for c in grid], grid, BEFORE, BEFORE,
    )  # fmt: skip
    lines += auroc_table("Levers measured and not kept (each on top of the defaults), AUROC:",
                         ["defaults", *LEVERS], ["vae_edge", *LEVERS], "vae_edge",
                         "the defaults")  # fmt: skip
    variants = [score_key(*v) for v in SCORE_VARIANTS] + [ROW_NOISE]
    lines += auroc_table("Score types (the default models; L = z draws, 0 = z = mu; "
                         f"{BEFORE_SCORE} was the default before; {ROW_NOISE}: the default "
                         "with NumPy's noise keyed by row position, as format 1 bundles drew "
                         "it; the default draws the manifest's five stored draws), AUROC:",
                         [f"**{default_score_key()}** (default)", *variants],
                         ["vae_edge", *variants], BEFORE_SCORE, BEFORE_SCORE)  # fmt: skip

    lines += ["", "Leave one set out (the design choice or score type with the most wins over "
              "IForest on the other sets, scored on the set left out), AUROC:", "",
              *header(["chosen on the other sets", "its AUROC", "IForest"])]  # fmt: skip
    for s in sets:
        cells = [loso[s]["chosen"], f"{loso[s]['auroc']:.3f}",
                 f"{results[s]['pyod_iforest']['auroc']:.3f}"]  # fmt: skip
        lines.append(row(s, cells))
    loso_mean = float(np.mean([loso[s]["auroc"] for s in sets]))
    lines.append(row("**mean**", ["", f"**{loso_mean:.3f}**",
                                  f"**{means['pyod_iforest']['auroc']:.3f}**"]))  # fmt: skip
    lines.append(row("better than IForest on", ["", f"{loso_wins} of {n}", ""]))
    out["leave_one_set_out_mean"] = loso_mean

    about = (
        f"AUROC, mean over seeds {', '.join(map(str, SEEDS))} (stratified 60/40, fitted "
        f"without labels), {n} sets. {machine}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; {round(seconds)} s."
    )
    write_results("anomaly", out, about, "\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])
