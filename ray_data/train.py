"""Train a fleet on Ray Data: a windowed model per series id, each trained as `vae-edge
train` trains one series alone (the same numbers, same seed), written as the folder of
bundles that score_fleet reads (OUT/<id>/).

The fleet's rows (Parquet, read_parquet) are gathered per series id; a task per series,
one CPU and one torch thread each, trains, exports and checks the bundle. A series that
fails (too short, mostly missing, a bad id) is named with its reason, and the others are
kept. Needs the `ray` and `train` extras: the workers import torch, as training does.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from vae_edge.ray_data import INDEX, _features, per_series
from vae_edge.runtime import InputError, VAEEdgeError
from vae_edge.runtime.series import TIMESTAMP_NAMES, _timestamp, on_grid

# A series id becomes a folder name: letters, digits and . _ - (not a leading dot).
SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def train_fleet(dataset: ray.data.Dataset, out: str | Path, series_id: str, *,
                window: int | str = "auto", columns: list[str] | None = None,
                timestamp: str | None = None, force: bool = False, tasks: int | None = None,
                **options) -> list[dict]:  # fmt: skip
    """A bundle per series id of `dataset` (rows with the id in `series_id` and their
    position in INDEX) into out/<id>/, trained by train_series_group. columns: the value
    columns (default: all but the id, INDEX and the timestamp); timestamp: its column
    (default: one named like TIMESTAMP_NAMES); options: TrainOptions fields (epochs,
    seed, ...). Returns a row per series: id, error (None when trained), seconds."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = per_series(dataset, series_id, train_series_group, tasks, str(out), series_id,
                         window, columns, timestamp, force, options)  # fmt: skip
    rows = [{"id": r["id"], "error": r["error"] or None, "seconds": float(r["seconds"])}
            for r in results.iter_rows()]  # fmt: skip
    return sorted(rows, key=lambda r: r["id"])


def train_series_group(group: dict[str, np.ndarray], out: str, series_id: str, window,
                       columns, timestamp, force: bool, options: dict) -> dict:  # fmt: skip
    """Ray Data group function: one series' rows, in input order (INDEX), trained and
    exported to out/<id>/; a row saying what came of it. Errors a user can act on are
    caught and returned; anything else fails the task (Ray retries it)."""
    sid = str(group[series_id][0])
    started = time.perf_counter()
    try:
        train_series(group, Path(out), series_id, window, columns, timestamp, force, options)
        error = ""
    except VAEEdgeError as e:
        error = str(e)
    return {"id": np.array([sid]), "error": np.array([error]),
            "seconds": np.array([time.perf_counter() - started])}  # fmt: skip


def train_series(group, out: Path, series_id: str, window, columns, timestamp, force,
                 options) -> Path:  # fmt: skip
    """Train, export and check one series' bundle (the body of train_series_group)."""
    from vae_edge.export.onnx_export import export_run
    from vae_edge.training.train import TrainOptions, fit_series, save_run

    sid = str(group[series_id][0])
    if not SAFE_ID.match(sid) or sid in (".", ".."):
        raise InputError(f"series id {sid!r} cannot name a folder (letters, digits, . _ -)")
    target = out / sid
    if (target / "vae.json").exists() and not force:
        raise InputError(f"{target}: a bundle is already there (use --force to replace it)")
    order = np.argsort(group[INDEX], kind="stable")
    if timestamp is None:  # a column named like one, else the first column of times
        named = [c for c in group if c.lower() in TIMESTAMP_NAMES]
        timed = [c for c in group if group[c].dtype.kind == "M"]
        timestamp = next(iter(named + timed), None)
    not_values = {series_id, INDEX, timestamp}
    names = columns or [c for c in group if c not in not_values]
    bad = [c for c in names if c in group and group[c].dtype.kind not in "uifb"]
    if bad:
        raise InputError(f"series {sid!r}: column {bad[0]!r} is not numbers ({group[bad[0]].dtype}"
                         "); name the value columns with --columns")  # fmt: skip
    values = _features(group, names, not_values)[order]
    times = None if timestamp is None else _stamps(group[timestamp][order], sid)
    series = on_grid(values.astype(np.float64).reshape(len(values), -1), list(names), times,
                     timestamp)  # fmt: skip
    if len(series.values) < 4:
        raise InputError(f"series {sid!r}: {len(series.values)} readings are too few to train on")
    model, config = fit_series(series.values, window, 1, TrainOptions(**options),
                               channels=series.channels, timestamp=series.timestamp_column,
                               step_seconds=series.step_seconds, threads=1)  # fmt: skip
    config.data.update(source=f"series {sid!r}", normal_class=None)
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{sid}.run-") as run:
        save_run(model, config, run)
        export_run(run, target, force=force)
    return target


def _stamps(column: np.ndarray, sid: str) -> np.ndarray:
    """A timestamp column as datetime64[s]: Arrow timestamps, or text as CSVs hold it."""
    if column.dtype.kind == "M":
        return column.astype("datetime64[s]")
    return np.array([_timestamp(str(t), f"series {sid!r}", i + 1) for i, t in enumerate(column)],
                    "datetime64[s]")  # fmt: skip
