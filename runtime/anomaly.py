"""Thresholds and evaluation for anomaly scores, NumPy only.

calibrate() turns scores of normal data into a threshold (with how it was obtained),
write_threshold() stores it in a bundle's manifest atomically, evaluate() measures a model
on labeled data (1 = anomaly), likelihood_figures() gives -ELBO, -L_k and active units.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from vae_edge.runtime.data import atomic_output
from vae_edge.runtime.errors import InputError
from vae_edge.runtime.manifest import MANIFEST_FILE, Threshold, read_manifest
from vae_edge.runtime.model import EdgeVAE
from vae_edge.runtime.scoring import ScoreSettings
from vae_edge.runtime.series import SeriesStream


def calibrate(
    model: EdgeVAE,
    x,
    quantile: float | None = None,
    contamination: float | None = None,
    score_type: str | None = None,
    samples: int | None = None,
    seed: int | None = None,
    complexity: bool | None = None,
) -> Threshold:
    """Threshold from data: the `quantile` of its scores (x normal), or the 1 - contamination
    quantile (x holding that fraction of anomalies). Default: quantile 0.99. Scores as the
    model does by default (score type, samples, seed, complexity) where not given."""
    if quantile is not None and contamination is not None:
        raise InputError("give either quantile or contamination, not both")
    if contamination is not None:
        if not 0 < contamination < 1:
            raise InputError(f"contamination must be in (0, 1), got {contamination}")
        q, rule = 1 - contamination, f"contamination {contamination:g}"
    else:
        q = 0.99 if quantile is None else quantile
        if not 0 < q < 1:
            raise InputError(f"quantile must be in (0, 1), got {q}")
        rule = f"quantile {q:g}"
    x = np.asarray(x)
    how = model._settings(score_type, samples, seed, None, None, complexity, flags=False)
    scores = model.score(x, how.samples, how.seed, how.score_type, how.complexity)
    if len(scores) == 0:
        raise InputError("no samples to calibrate on")
    value = float(np.quantile(scores.astype(np.float64), q))
    if not np.isfinite(value):
        raise InputError(f"the {rule} of the scores is {value}: too many samples score as "
                         "infinite (far outside the training data)")  # fmt: skip
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
    return Threshold(
        value=value,
        score_type=how.score_type,
        samples=how.samples,
        seed=how.seed,
        complexity=how.complexity,
        rule=rule,
        data_sha256=digest,
        count=len(scores),
    )


def calibrate_alarm(
    model: EdgeVAE, values=None, quantile: float | None = None,
    contamination: float | None = None, *, lines: list[str] | None = None, columns=None,
    timestamp=None, delimiter=None, where: str = "the series",
) -> tuple[float, str, np.ndarray]:  # fmt: skip
    """A windowed model's alarm threshold on the likelihood, from a series of normal
    readings streamed through it, as `score` streams them: `values` (T,) or (T, C), or
    the `lines` of a CSV (with `columns`, `timestamp`, `delimiter` as for model.stream(); `where`
    names it in errors). The
    `quantile` of the likelihoods it gets once it speaks (or 1 - contamination), else the
    model's current threshold (the default keeps false alarms rare on any series: a
    quantile of a short normal stretch would make some alarms certain). Returns the
    threshold, how it was set, and the alarms that series raises under it."""
    if quantile is not None and contamination is not None:
        raise InputError("give either quantile or contamination, not both")

    def streamed(threshold=None):
        settings = model._settings(None, None, None, None, None, None, flags=False)
        stream = SeriesStream(model, settings, threshold=threshold, columns=columns,
                              timestamp=timestamp, delimiter=delimiter, where=where)  # fmt: skip
        batch = stream.push(values) if lines is None else stream.push_lines(lines)
        if batch is None:
            raise InputError("no readings to calibrate on")
        return batch

    spec = model.manifest.series
    value, rule = spec.alarm_threshold, "unchanged"
    likelihood = streamed().likelihood
    spoken = likelihood[spec.window - 1 :][likelihood[spec.window - 1 :] > 0]
    q = 1 - contamination if contamination is not None else quantile
    if q is not None:
        if not 0 < q < 1:
            raise InputError(f"quantile must be in (0, 1), got {q}")
        if not len(spoken):
            raise InputError(f"{len(likelihood)} readings leave the likelihood no time to "
                             "learn: give a longer series")  # fmt: skip
        value = float(np.quantile(spoken, q))
        rule = f"quantile {q:g} of {len(spoken)} likelihoods"
    return value, rule, streamed(value).is_anomaly


def write_alarm_threshold(bundle: str | Path, value: float) -> None:
    """Store a windowed model's alarm threshold (series.alarm_threshold), atomically."""
    path = Path(bundle) / MANIFEST_FILE
    manifest = read_manifest(path.read_text(encoding="utf-8"), str(bundle))
    series = dataclasses.replace(manifest.series, alarm_threshold=float(value))
    with atomic_output(path) as tmp:
        tmp.write_text(dataclasses.replace(manifest, series=series).to_json(), encoding="utf-8")


def write_threshold(bundle: str | Path, threshold: Threshold | None) -> None:
    """Store (or with None, remove) the threshold in the bundle's vae.json, atomically."""
    path = Path(bundle) / MANIFEST_FILE
    manifest = read_manifest(path.read_text(encoding="utf-8"), str(bundle))
    updated = dataclasses.replace(manifest, threshold=threshold)
    with atomic_output(path) as tmp:
        tmp.write_text(updated.to_json(), encoding="utf-8")


def evaluate(model: EdgeVAE, x, y, threshold: float | None = None, **score_options) -> dict:
    """AUROC and AUPRC of the scores against labels y (1 = anomaly), and precision, recall
    and F1 at the threshold (the model's unless given; None when there is none)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(np.asarray(x)):
        raise InputError(f"labels have shape {y.shape}; one label per sample is needed")
    # A series' steps without a label (NaN: e.g. put back from a gap) are left out.
    labelled = ~np.isnan(y) if y.dtype.kind == "f" else np.ones(len(y), bool)
    if not np.isin(y[labelled], (0, 1)).all():
        raise InputError("labels must be 0 (normal) or 1 (anomaly)")
    scores = model.score(x, **score_options)[labelled]
    y = y[labelled].astype(bool)
    result = {
        "n": int(len(y)),
        "n_anomalies": int(y.sum()),
        "auroc": roc_auc(y, scores),
        "auprc": average_precision(y, scores),
        "threshold": model.threshold if threshold is None else threshold,
        "precision": None,
        "recall": None,
        "f1": None,
    }
    if result["threshold"] is not None:
        flagged = scores > result["threshold"]
        tp = int((flagged & y).sum())
        precision = tp / max(int(flagged.sum()), 1)
        recall = tp / max(int(y.sum()), 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result.update(precision=precision, recall=recall, f1=f1)
    return result


def likelihood_figures(model: EdgeVAE, x, k: int = 1000, seed: int = 0, on_batch=None) -> dict:
    """The figures the VAE literature reports, per sample in nats, averaged over x:
    neg_elbo: -ELBO with one z draw (for MNIST grey levels: the "test set loss" of the
    classic PyTorch example); neg_iwae: -L_k, the importance-weighted bound with k draws
    (Burda et al.), tighter than -ELBO; active_units: latent units u with
    Var_x(E[z_u | x]) > 0.01 (few = posterior collapse). Noise from NumPy, seeded.
    on_batch(rows) is called as -L_k, the long part (minutes at k = 1000), advances."""
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    floor = model.nll_floor(x)  # scores are measured from it; the figures are not
    if len(floor) == 0:
        raise InputError("no samples to evaluate")
    neg_elbo = model.score(x, samples=1, seed=seed, score_type="elbo", complexity=False) + floor
    iwae = ScoreSettings("iwae", k, seed, batch_size=model.batch_size)
    parts = []
    for batch in model.score_batches([x], iwae):
        parts.append(batch.scores)
        if on_batch:
            on_batch(len(batch.scores))
    neg_iwae = np.concatenate(parts) + floor
    mu, _ = model.encode(x)
    return {
        "neg_elbo": float(neg_elbo.mean(dtype=np.float64)),
        "neg_iwae": float(neg_iwae.mean(dtype=np.float64)),
        "iwae_k": k,
        "active_units": int((mu.var(axis=0, dtype=np.float64) > 0.01).sum()),
        "latent_dim": model.manifest.latent_dim,
    }


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half). None if y is one class."""
    y = np.asarray(y, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = np.asarray(scores)[order]
    # average rank for tied scores
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2
    ranks[order] = np.repeat(average, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the precision-recall curve as average precision (the step-wise sum, as
    scikit-learn computes it). None without anomalies."""
    y = np.asarray(y, bool)
    if not y.any():
        return None
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    s, hits = np.asarray(scores)[order], y[order]
    # one point per distinct score (ties move together)
    last_of_group = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(hits)[last_of_group]
    predicted = (np.arange(1, len(s) + 1))[last_of_group]
    precision, recall = tp / predicted, tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
