"""Score with a bundle on Ray Data: the local scoring pass on many workers, the same numbers.

A table's rows are scored in batches anywhere (score_dataset). A fleet's series are scored
each in order, a series per task, through the same SeriesStream as locally (score_fleet).

Needs the `ray` extra (ray[data], pyarrow). Workers import the runtime (NumPy, onnxruntime)
and Ray, never torch. Each actor loads EdgeVAE once, with onnxruntime's intra-op threads
set to the actor's CPU share (Ray does not limit them). A row's noise is keyed by its
position in the input, the INDEX column (vae_edge.runtime.scoring.row_noise), so scores
equal EdgeVAE.score on the same rows bit for bit, whichever worker and batch a row is in.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from vae_edge.runtime import EdgeVAE, InputError, ScoreSettings, VAEEdgeError
from vae_edge.runtime.manifest import MANIFEST_FILE
from vae_edge.runtime.series import SeriesStream

INDEX = "index"  # a row's position in the input (file order, then row order), as in CSV output
RETRIES = 4  # actor restarts and task retries when a worker dies
# Rows per Ray batch; each is scored in graph calls of settings.batch_size rows. Ray's own
# cost per batch (a task, Arrow to NumPy and back) is amortized over many graph calls.
RAY_BATCH_ROWS = 16_384
# Parquet readers at a time. They claim no CPU (actors may hold them all, and a reader
# waiting for one would stall the run), so without a bound Ray starts a worker process per
# row group.
READERS = 2
# A series' readings go through its stream this many at a time (the same numbers as all at
# once): its windows take CHUNK x W x C floats, whatever the series' length.
CHUNK = 4096
# A fleet's rows are gathered per series into this many shuffle partitions per task.
PARTITIONS_PER_TASK = 4
# Bundles a worker process keeps loaded when each series has its own.
MODELS_KEPT = 64


class BundleScorer:
    """Ray Data batch function (a callable class: Ray makes one per actor). Adds `score`,
    `is_anomaly` when the settings have a threshold and feature_0 ... with per_feature; keeps
    INDEX and the `keep` columns; the features are `columns`, else all the others in order."""

    def __init__(self, model, settings: ScoreSettings, columns=None, keep=(), per_feature=False):
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        self.model = EdgeVAE.load(model, threads=max(1, int(cpus)))
        self.settings = settings
        self.columns, self.keep, self.per_feature = columns, tuple(keep), per_feature

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = _features(batch, self.columns, {*self.keep, INDEX})
        index = batch.get(INDEX)
        n = len(x)
        scores = np.empty(n, np.float32)
        flags = np.empty(n, bool) if self.settings.threshold is not None else None
        losses = None
        for lo, hi in _consecutive_runs(index, n):
            first = 0 if index is None else int(index[lo])
            for b in self.model.score_batches([x[lo:hi]], self.settings, self.per_feature, first):
                at = slice(lo + b.start - first, lo + b.start - first + len(b.scores))
                scores[at] = b.scores
                if flags is not None:
                    flags[at] = b.is_anomaly
                if self.per_feature:
                    if losses is None:
                        losses = np.empty((n, b.feature_losses[0].size), np.float32)
                    losses[at] = b.feature_losses.reshape(len(b.scores), -1)
        out = {name: batch[name] for name in (INDEX, *self.keep) if name in batch}
        out["score"] = scores
        if flags is not None:
            out["is_anomaly"] = flags
        for j in range(0 if losses is None else losses.shape[1]):
            out[f"feature_{j}"] = losses[:, j]
        return out


def score_dataset(
    dataset: ray.data.Dataset,
    model: str | Path | None = None,
    settings: ScoreSettings | None = None,
    *,
    columns: list[str] | None = None,
    keep: tuple[str, ...] = (),
    per_feature: bool = False,
    actors: int | None = None,
    cpus_per_actor: int = 1,
) -> ray.data.Dataset:
    """`dataset` with the scores of `model` (a bundle directory; None = the shipped one),
    computed with `settings` (None: the model's own, as EdgeVAE.settings()). With draws
    (settings.samples > 0) each row needs its position in an INDEX column (read_parquet
    adds it), which keys its noise. actors: the size of the actor pool (default: the
    cluster's CPUs // cpus_per_actor)."""
    loaded = EdgeVAE.load(model)
    if loaded.manifest.series is not None:
        raise InputError(f"{loaded.source}: a windowed model scores a series in order, not "
                         "rows on Ray; score it locally")  # fmt: skip
    settings = settings or loaded.settings()
    if settings.samples and INDEX not in dataset.columns():
        raise InputError(
            f"scoring with draws needs each row's position in an {INDEX!r} column "
            "(it keys the row's noise); read_parquet adds it"
        )
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_actor)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates remote arguments passed through map_batches but offers no
        # other way to bound the restarts of an actor pool (its default is unbounded).
        warnings.simplefilter("ignore", DeprecationWarning)
        return dataset.map_batches(
            BundleScorer,
            fn_constructor_args=(
                None if model is None else str(model),
                settings,
                columns,
                keep,
                per_feature,
            ),  # fmt: skip
            batch_size=RAY_BATCH_ROWS,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor,
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
        )


def score_series_group(group: dict[str, np.ndarray], model: str, settings, series_id: str,
                       columns=None, timestamp=None, per_feature=False,
                       threshold=None):  # fmt: skip
    """Ray Data group function: every row of one series id, in input order (INDEX),
    through a SeriesStream of its model, a row per reading as locally: the series id,
    INDEX (the reading's position in its series), the timestamp column when there is one,
    score, likelihood, is_anomaly, in_alarm, feature_<channel> with per_feature. model: one windowed
    bundle for every series, or a folder holding a bundle per series id (model/<id>)."""
    for name in (series_id, INDEX):
        if name not in group:
            raise InputError(f"no column {name!r} in the input (it has "
                             f"{', '.join(c for c in group if c != INDEX)})")  # fmt: skip
    order = np.argsort(group[INDEX], kind="stable")
    sid = group[series_id][0]
    path = Path(model)
    if not (path / MANIFEST_FILE).is_file():
        path = path / str(sid)
        if not (path / MANIFEST_FILE).is_file():
            raise InputError(f"series {sid!r}: no bundle {path} in the model folder")
    m = _windowed_model(path)
    spec = m.manifest.series
    values = _features(group, columns or spec.channels, set())[order]
    if values.dtype.kind not in "uif":
        raise InputError(f"series {sid!r}: its value columns are not numbers")
    timestamp = timestamp or (spec.timestamp if spec.timestamp in group else None)
    stamps = None if timestamp is None else group[timestamp][order]
    stream = SeriesStream(m, settings or m.settings(), threshold=threshold,
                          per_feature=per_feature, where=f"series {sid!r}")  # fmt: skip
    batches = []
    for i in range(0, len(values), CHUNK):
        chunk = None if stamps is None else stamps[i : i + CHUNK]
        batches.append(stream.push(values[i : i + CHUNK].astype(np.float64), chunk))
    out = {series_id: group[series_id][order], INDEX: np.arange(len(values))}
    if stamps is not None:
        out[timestamp] = stamps
    out["score"] = np.concatenate([b.scores for b in batches])
    out["likelihood"] = np.concatenate([b.likelihood for b in batches])
    out["is_anomaly"] = np.concatenate([b.is_anomaly for b in batches])
    out["in_alarm"] = np.concatenate([b.in_alarm for b in batches])
    if per_feature:
        losses = np.concatenate([b.feature_losses for b in batches])
        for j, name in enumerate(spec.channels):
            out[f"feature_{name}"] = losses[:, j]
    return out


@functools.lru_cache(maxsize=MODELS_KEPT)
def _windowed_model(path: Path) -> EdgeVAE:
    """A bundle, loaded once per worker process (Ray reuses them across tasks), with one
    onnxruntime thread: a task per series, as many tasks as CPUs."""
    model = EdgeVAE.load(path, threads=1)
    if model.manifest.series is None:
        raise InputError(f"{path}: not a windowed model (no series in vae.json)")
    return model


def score_fleet(
    dataset: ray.data.Dataset,
    model: str | Path,
    series_id: str,
    settings: ScoreSettings | None = None,
    *,
    columns: list[str] | None = None,
    timestamp: str | None = None,
    per_feature: bool = False,
    threshold: float | None = None,
    tasks: int | None = None,
) -> ray.data.Dataset:
    """The readings of many series (rows of `dataset`, each with its series id in the
    column `series_id` and its position in the input in INDEX, as read_parquet adds it),
    each series scored in order by its windowed model (score_series_group): the numbers
    of EdgeVAE.stream() on that series alone. settings: None = each model's own;
    threshold: the alarm's (default: each model's). tasks: series scored at a time
    (default: the cluster's CPUs). Tasks, not actors: actors holding every CPU would
    starve the shuffle that gathers each series' rows."""
    schema = dataset.schema(fetch_if_missing=False)  # known without reading, or None
    names = [] if schema is None else schema.names
    for name in (series_id, INDEX) if names else ():
        if name not in names:
            raise InputError(f"no column {name!r} in the input (it has "
                             f"{', '.join(c for c in names if c != INDEX)})")  # fmt: skip
    model = Path(model)
    first = first_bundle(model)
    if EdgeVAE.load(first).manifest.series is None:
        raise InputError(f"{first}: not a windowed model; score a table's rows with "
                         "score_dataset")  # fmt: skip
    return per_series(dataset, series_id, score_series_group, tasks, str(model), settings,
                      series_id, columns, timestamp, per_feature, threshold)  # fmt: skip


def per_series(dataset: ray.data.Dataset, series_id: str, fn, tasks: int | None, *fn_args):
    """fn(group, *fn_args) on every series' rows, a task with one CPU per series, `tasks`
    at a time (default: the cluster's CPUs)."""
    if tasks is None:
        tasks = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # Ray's default of 200 shuffle partitions is 200 tasks of overhead on a small cluster.
    return dataset.groupby(series_id, num_partitions=PARTITIONS_PER_TASK * tasks).map_groups(
        fn,
        fn_args=fn_args,
        batch_format="numpy",
        compute=ray.data.TaskPoolStrategy(size=tasks),
        num_cpus=1,
        max_retries=RETRIES,
    )


def first_bundle(model: Path) -> Path:
    """`model` when it is a bundle, else the first bundle in the folder `model` (one per
    series id); InputError when there is none."""
    if (model / MANIFEST_FILE).is_file():
        return model
    bundles = (
        sorted(p for p in model.iterdir() if (p / MANIFEST_FILE).is_file())
        if model.is_dir()
        else []
    )
    if not bundles:
        raise InputError(f"{model}: neither a bundle nor a folder of bundles (one per series id)")
    return bundles[0]


def read_parquet(source: str | Path | list[dict]) -> ray.data.Dataset:
    """A Parquet file, a folder of part files or a glob (or its parquet_pieces), as one
    Dataset with an INDEX column: the row's position when the files are read in sorted
    order."""
    pieces = parquet_pieces(source) if isinstance(source, (str, Path)) else source
    return ray.data.from_items(pieces, override_num_blocks=len(pieces)).map_batches(
        _read_row_group,
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=READERS),
    )


def parquet_pieces(source: str | Path) -> list[dict]:
    """The row groups of the input with the position of each one's first row. Every
    file's footer is read here, without Ray, so an unreadable file is named before any
    work starts."""
    pieces, first = [], 0
    for file in parquet_files(source):
        try:
            meta = pq.ParquetFile(file).metadata
        except (OSError, pa.ArrowException) as e:
            raise _unreadable(file, e) from None
        if INDEX in meta.schema.names:
            raise InputError(f"{file}: has a column {INDEX!r}, which vae-edge adds itself")
        for group in range(meta.num_row_groups):
            pieces.append({"file": str(file), "row_group": group, "first": first})
            first += meta.row_group(group).num_rows
    if not first:
        raise InputError(f"{source}: no rows")
    return pieces


def parquet_files(source: str | Path) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(str(source)) if Path(p).is_file())
    if not files:
        raise InputError(
            f"{source}: no Parquet file there (a file, a folder of *.parquet or a glob)"
        )
    return files


def write_parquet(scored: ray.data.Dataset, out_dir: str | Path) -> int:
    """Write `scored` as part files into out_dir, which must not exist: into a temporary
    folder beside it, renamed to out_dir only when every part is written. Returns the rows."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InputError(f"{out_dir}: already exists; choose a new output folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    try:
        scored.write_parquet(str(staging))
        rows = pq.ParquetDataset(staging).read(columns=["score"]).num_rows
        os.replace(staging, out_dir)
    except ray.exceptions.RayError as e:
        raise _user_error(e) or InputError(f"scoring failed: {_first_line(e)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rows


def _read_row_group(piece: pa.Table) -> pa.Table:
    file, group, first = (piece.column(c)[0].as_py() for c in ("file", "row_group", "first"))
    try:
        table = pq.ParquetFile(file).read_row_group(group)
    except (OSError, pa.ArrowException) as e:
        raise _unreadable(file, e) from None
    index = pa.array(np.arange(first, first + table.num_rows, dtype=np.int64))
    return table.append_column(INDEX, index)


def _features(batch: dict[str, np.ndarray], columns, not_features: set) -> np.ndarray:
    names = columns or [c for c in batch if c not in not_features]
    missing = [c for c in names if c not in batch]
    if missing:
        raise InputError(f"no column {missing[0]!r} in the input (it has {', '.join(batch)})")
    if len(names) == 1 and batch[names[0]].ndim > 1:  # a tensor column: images, vectors
        return batch[names[0]]
    return np.stack([batch[c] for c in names], axis=1)


def _consecutive_runs(index: np.ndarray | None, n: int) -> list[tuple[int, int]]:
    """[lo, hi) stretches of the batch whose positions follow one another."""
    if index is None or n == 0:
        return [(0, n)] if n else []
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    edges = [0, *breaks.tolist(), n]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _user_error(e: BaseException) -> VAEEdgeError | None:
    """The vae-edge error a worker raised, from inside Ray's wrappers of it. Ray Data
    passes a worker's exception on as text only, so its last line is read there."""
    found = re.findall(r"^vae_edge\.runtime\.errors\.\w+: (.+)$", str(e), re.MULTILINE)
    cause = e
    while cause is not None and not isinstance(cause, VAEEdgeError):
        cause = getattr(cause, "cause", None) or cause.__cause__
    if found and (cause is None or "\n" in str(cause).strip()):  # Ray's copy: a traceback
        return InputError(found[-1])
    return cause


def _unreadable(file, e: Exception) -> InputError:
    return InputError(f"{file}: not a readable Parquet file ({_first_line(e)})")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
