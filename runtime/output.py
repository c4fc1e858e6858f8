"""Scores written as they come, batch by batch: CSV, JSONL or .npy, to a file (atomically:
a temporary file beside it, renamed at the end) or CSV to a text stream.

CSV columns: index, timestamp (a series' readings', as given, when the input has them),
score, likelihood (a series' readings), hindsight (a series' file, when asked),
is_anomaly (0/1, when there is a threshold or a likelihood), in_alarm (0/1, a series'
readings: an alarm held), feature_0 ... (per-feature losses, when asked; a series' are per
channel, feature_<channel name>). JSONL: one object per row with the same fields,
"features" a list. .npy: the scores alone, float32 (N,).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import numpy as np

from vae_edge.runtime.data import atomic_output
from vae_edge.runtime.errors import InputError
from vae_edge.runtime.scoring import ScoredBatch

SCORE_FORMATS = (".csv", ".npy", ".jsonl")
NPY_HEADER_BYTES = 128  # room for any (N,) float32 header; rewritten once N is known


def write_scores(batches: Iterable[ScoredBatch], output: str | Path | None, stream: IO = None,
                 feature_names: list[str] | None = None, flush: bool = False):  # fmt: skip
    """Write every batch to `output` (its suffix picks the format) or, with output None, as
    CSV to `stream` (flushed after each batch with `flush`: a live stream). feature_names:
    the CSV's per-feature columns (default feature_0 ...). Returns the number of rows. No
    rows: InputError, and no file."""
    if output is None:
        return _write_text(batches, stream, _csv_rows, feature_names, flush)
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in SCORE_FORMATS:
        raise InputError(f"{output}: output must end in {' or '.join(SCORE_FORMATS)}")
    with atomic_output(output) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as f:
                return _write_npy(batches, f)
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            rows = _csv_rows if suffix == ".csv" else _jsonl_rows
            return _write_text(batches, f, rows, feature_names)


def _write_text(batches, f: IO, rows, feature_names=None, flush: bool = False) -> int:
    count = 0
    for batch in batches:
        if count == 0 and rows is _csv_rows:
            f.write(_csv_header(batch, feature_names))
        f.write(rows(batch))
        if flush:
            f.flush()
        count += len(batch.scores)
    return _nonzero(count)


def _csv_header(batch: ScoredBatch, feature_names=None) -> str:
    header = "index" + (",timestamp" if batch.timestamps is not None else "") + ",score"
    header += ",likelihood" if batch.likelihood is not None else ""
    header += ",hindsight" if batch.hindsight is not None else ""
    header += ",is_anomaly" if batch.is_anomaly is not None else ""
    header += ",in_alarm" if batch.in_alarm is not None else ""
    if batch.feature_losses is not None:
        n_features = batch.feature_losses[0].size if len(batch.scores) else 0
        names = feature_names or [str(j) for j in range(n_features)]
        header += "".join(f",feature_{name}" for name in names)
    return header + "\n"


def _columns(batch: ScoredBatch) -> tuple[list, str]:
    """The batch's columns as Python lists, and a %-format for one row of them."""
    n = len(batch.scores)
    columns = [range(batch.start, batch.start + n)]
    fmt = "%d"
    if batch.timestamps is not None:
        columns.append(_stamps(batch.timestamps))
        fmt += ",%s"
    columns.append(batch.scores.tolist())
    fmt += ",%.9g"
    if batch.likelihood is not None:
        columns.append(batch.likelihood.tolist())
        fmt += ",%.10g"
    if batch.hindsight is not None:
        columns.append(batch.hindsight.tolist())
        fmt += ",%.9g"
    if batch.is_anomaly is not None:
        columns.append(batch.is_anomaly.tolist())
        fmt += ",%d"
    if batch.in_alarm is not None:
        columns.append(batch.in_alarm.tolist())
        fmt += ",%d"
    if batch.feature_losses is not None:
        per_row = batch.feature_losses.reshape(n, -1)
        columns += per_row.T.tolist()
        fmt += ",%.6g" * per_row.shape[1]
    return columns, fmt


def _stamps(timestamps: np.ndarray) -> list[str]:
    """Timestamps as text: as given (strings; an unreadable or absent one is empty)."""
    if timestamps.dtype.kind == "M":
        return [s if s != "NaT" else "" for s in np.datetime_as_string(timestamps).tolist()]
    return ["" if s is None else str(s) for s in timestamps.tolist()]


def _csv_rows(batch: ScoredBatch) -> str:
    columns, fmt = _columns(batch)
    return "".join(fmt % row + "\n" for row in zip(*columns, strict=True))


def _jsonl_rows(batch: ScoredBatch) -> str:
    n = len(batch.scores)
    flags = None if batch.is_anomaly is None else batch.is_anomaly.tolist()
    features = None
    if batch.feature_losses is not None:
        features = batch.feature_losses.reshape(n, -1).tolist()
    stamps = None if batch.timestamps is None else _stamps(batch.timestamps)
    likelihood = None if batch.likelihood is None else batch.likelihood.tolist()
    hindsight = None if batch.hindsight is None else batch.hindsight.tolist()
    held = None if batch.in_alarm is None else batch.in_alarm.tolist()
    lines = []
    for i, score in enumerate(batch.scores.tolist()):
        row = {"index": batch.start + i}
        if stamps is not None:
            row["timestamp"] = stamps[i]
        row["score"] = score
        if likelihood is not None:
            row["likelihood"] = likelihood[i]
        if hindsight is not None:
            row["hindsight"] = hindsight[i]
        if flags is not None:
            row["is_anomaly"] = flags[i]
        if held is not None:
            row["in_alarm"] = held[i]
        if features is not None:
            row["features"] = features[i]
        lines.append(json.dumps(row) + "\n")
    return "".join(lines)


def _write_npy(batches, f: IO) -> int:
    """Scores as a float32 .npy: a placeholder header, the data, then the real header."""
    f.write(_npy_header(0))
    count = 0
    for batch in batches:
        f.write(np.ascontiguousarray(batch.scores, "<f4").tobytes())
        count += len(batch.scores)
    f.seek(0)
    f.write(_npy_header(_nonzero(count)))
    return count


def _npy_header(n: int) -> bytes:
    """A version 1.0 .npy header for float32 (n,), padded to NPY_HEADER_BYTES as the
    format allows (spaces before the final newline)."""
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (n,)})
    text = text.ljust(NPY_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


def _nonzero(count: int) -> int:
    if count == 0:
        raise InputError("holds no samples")
    return count
