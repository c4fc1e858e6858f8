"""Score with a bundle on Ray Data: the local scoring pass on many workers, the same numbers.

Needs the `ray` extra (ray[data], pyarrow). Workers import the runtime (NumPy, onnxruntime)
and Ray, never torch. Each actor loads EdgeVAE once, with onnxruntime's intra-op threads
set to the actor's CPU share (Ray does not limit them). A row's noise is keyed by its
position in the input, the INDEX column (vae_edge.runtime.scoring.row_noise), so scores
equal EdgeVAE.score on the same rows bit for bit, whichever worker and batch a row is in.
"""

from __future__ import annotations

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

INDEX = "index"  # a row's position in the input (file order, then row order), as in CSV output
RETRIES = 4  # actor restarts and task retries when a worker dies
# Rows per Ray batch; each is scored in graph calls of settings.batch_size rows. Ray's own
# cost per batch (a task, Arrow to NumPy and back) is amortized over many graph calls.
RAY_BATCH_ROWS = 16_384
# Parquet readers at a time. They claim no CPU (actors may hold them all, and a reader
# waiting for one would stall the run), so without a bound Ray starts a worker process per
# row group.
READERS = 2


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
    return cause or (InputError(found[-1]) if found else None)


def _unreadable(file, e: Exception) -> InputError:
    return InputError(f"{file}: not a readable Parquet file ({_first_line(e)})")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
