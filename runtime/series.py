"""Sensor series: read them, put back missing steps, cut windows, and turn window scores
into one score per time step. NumPy only.

A series is T steps of C channels, float64, NaN where a reading is missing. A windowed
model's samples are windows of W consecutive steps, (W, C); window i holds steps
i .. i + W - 1 and is scored as row i of the scoring pass (its noise is keyed by i). The
manifest's `series` entry (manifest.SeriesSpec) says how a step's score is made from its
windows (STEP_RULES); StepScorer follows it, fed the whole series or one reading at a time,
with the same numbers.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae_edge.runtime.errors import InputError
from vae_edge.runtime.scoring import ScoredBatch, finite_float32

# A series with more missing steps than this share (NaN readings and steps put back from
# gaps in the timestamps) is refused: its windows would be mostly made up.
MOST_MISSING = 0.5
# --window auto: the series' dominant period within AUTO_WINDOW_BOUNDS (steps), at least
# MIN_AUTO_WINDOW; DEFAULT_WINDOW when it has none. On the 28 NAB series this rule won over
# fixed windows of 64 and 128 (mean VUS-PR 0.564 against 0.421 and 0.472); 256 for every
# series did a little better on NAB's wide labelled windows (0.586, 15 series to 13) but
# smooths a series with a short period and short anomalies over far more steps than the
# period (benchmarks/results/series-designs.md).
AUTO_WINDOW_BOUNDS = (8, 512)
MIN_AUTO_WINDOW = 64
DEFAULT_WINDOW = 128
TIMESTAMP_NAMES = ("timestamp", "time", "datetime", "date")  # a header's timestamp column
NO_TIMESTAMP = "none"  # --timestamp none: read no timestamps, even if a column looks like one


@dataclass(frozen=True)
class Series:
    """A series as read: values (T, C) float64, NaN = missing; timestamps datetime64[s]
    (T,) when the input has them (after missing steps were put back)."""

    values: np.ndarray
    channels: list[str]
    timestamps: np.ndarray | None = None
    timestamp_column: str | None = None
    step_seconds: int | None = None
    put_back: int = 0  # steps added where the timestamps had gaps

    @property
    def missing_share(self) -> float:
        return float(np.isnan(self.values).any(axis=1).mean()) if len(self.values) else 0.0


# -- reading ------------------------------------------------------------------------------


class SeriesReader:
    """Parses CSV lines of one series into values and timestamps, line by line or in
    chunks, with the same column choice and timestamp completion for a whole file and for
    a pipe. Built by `for_header`: which columns, which timestamp column, which step."""

    def __init__(self, where: str, value_index: list[int], channels: list[str],
                 timestamp_index: int | None, timestamp_column: str | None,
                 step_seconds: int | None):  # fmt: skip
        self.where = where
        self.value_index = value_index
        self.channels = channels
        self.timestamp_index = timestamp_index
        self.timestamp_column = timestamp_column
        self.step_seconds = step_seconds
        self._last = None  # the last timestamp read, datetime64[s]
        self._width = max([*value_index, timestamp_index or 0]) + 1

    @classmethod
    def for_header(cls, where: str, first_line: str, columns=None, timestamp=None,
                   step_seconds=None, model=None) -> tuple[SeriesReader, bool]:  # fmt: skip
        """The reader for a CSV whose first line is `first_line`, and whether that line is
        a header. columns: value columns by name (or 0-based position without a header);
        default a windowed model's channels where the header has them, else every column
        but the timestamp. timestamp: its column's name (position), or NO_TIMESTAMP;
        default the model's timestamp column where the header has it, else a column named
        like TIMESTAMP_NAMES, else a first column that is not a number. model: a windowed
        model's SeriesSpec, whose channel count the columns must match."""
        cells = _cells(first_line)
        header = not all(_is_number(c) or is_timestamp(c) or _is_missing(c) for c in cells)
        names = [c.strip() for c in cells] if header else [str(i) for i in range(len(cells))]
        if model is not None:
            if columns is None and set(model.channels) <= set(names):
                columns = model.channels
            if timestamp is None and model.timestamp in names:
                timestamp = model.timestamp
        if timestamp not in (None, NO_TIMESTAMP):
            t_index = _column(names, timestamp, where, "--timestamp")
        else:
            lowered = [n.lower() for n in names]
            t_index = next((lowered.index(n) for n in TIMESTAMP_NAMES if n in lowered), None)
            if t_index is None and not header and not _is_number(cells[0]):
                t_index = 0
        if columns:
            value_index = [_column(names, c, where, "--columns") for c in columns]
        else:
            value_index = [i for i in range(len(names)) if i != t_index]
        if timestamp == NO_TIMESTAMP:  # the timestamp column is neither read nor a value
            t_index = None
        if not value_index:
            raise InputError(f"{where}: no value columns (only a timestamp)")
        if t_index is not None and t_index in value_index:
            raise InputError(f"{where}: column {names[t_index]!r} is both a timestamp and a value")
        if model is not None and len(value_index) != len(model.channels):
            raise InputError(
                f"{where}: {len(value_index)} value column(s) "
                f"({', '.join(names[i] for i in value_index)}); the model reads "
                f"{len(model.channels)}: {', '.join(model.channels)} (choose with --columns)"
            )
        return cls(
            where,
            value_index,
            [names[i] for i in value_index],
            t_index,
            names[t_index] if t_index is not None else None,
            step_seconds,
        ), header

    def parse(self, lines: list[str], first_line_no: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Values (n, C) and timestamps (n,) of `lines`, with missing steps put back where
        the timestamps skip whole steps (needs step_seconds)."""
        values, stamps = [], []
        for number, line in enumerate(lines, first_line_no):
            if not line.strip():
                continue
            cells = _cells(line)
            if len(cells) < self._width:
                raise InputError(f"{self.where}: line {number} has {len(cells)} values, "
                                 f"not {self._width}")  # fmt: skip
            values.append([_reading(cells[i], self.where, number) for i in self.value_index])
            if self.timestamp_index is not None:
                stamps.append((_timestamp(cells[self.timestamp_index], self.where, number), number))
        x = np.array(values, np.float64).reshape(-1, len(self.value_index))
        if self.timestamp_index is None:
            return x, None
        return self._complete(x, stamps)

    def _complete(self, x: np.ndarray, stamps) -> tuple[np.ndarray, np.ndarray]:
        """Refuse timestamps that do not increase; then fill_gaps on step_seconds."""
        t = np.array([s for s, _ in stamps], "datetime64[s]")
        if not len(t):
            return x, t
        first = self._last is None
        before = np.concatenate([[t[0] if first else self._last], t[:-1]])
        back = np.flatnonzero(t <= before)
        back = back[back > 0] if first else back
        if len(back):
            i = int(back[0])
            raise InputError(
                f"{self.where}: line {stamps[i][1]}: timestamp {t[i]} is not after the one "
                f"before ({before[i]}); a series' timestamps must increase (--timestamp "
                "none reads the readings in file order)"
            )
        previous, self._last = self._last, t[-1]
        if not self.step_seconds:
            return x, t
        return fill_gaps(x, t, self.step_seconds, previous)


def fill_gaps(x: np.ndarray, t: np.ndarray, step_seconds: int, previous=None):
    """Donut's timestamp completion of readings x (n, C) at increasing timestamps t (n,): a
    gap of k steps gets k - 1 missing steps back. previous: the timestamp before t[0] (a
    stream's last), None at the start. Readings less than a step apart count as
    consecutive steps."""
    before = np.concatenate([[t[0] if previous is None else previous], t[:-1]])
    steps = np.maximum(np.rint((t - before).astype(np.int64) / step_seconds), 1)
    steps = steps.astype(np.int64)
    if previous is None:
        steps[0] = 1
    if (steps == 1).all():
        return x, t
    position = np.cumsum(steps) - 1
    out = np.full((position[-1] + 1, x.shape[1]), np.nan)
    out[position] = x
    step = np.timedelta64(step_seconds, "s")
    times = t[0] - (steps[0] - 1) * step + np.arange(len(out)) * step
    times[position] = t
    return out, times


def read_series(path: str | Path, columns=None, timestamp=None, model=None) -> Series:
    """Read a whole series: a CSV (see SeriesReader.for_header), or .npy (T,) / (T, C)
    (NaN = missing). Timestamps are completed on the step of `model` (a windowed model's
    SeriesSpec) when given, else on their most common difference."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        series = _npy_series(path, columns, timestamp)
    elif suffix == ".csv":
        series = _csv_series(path, columns, timestamp, model)
    else:
        raise InputError(f"{path}: a series must be .csv or .npy")
    if len(series.values) == 0:
        raise InputError(f"{path}: no readings")
    if model is not None and series.values.shape[1] != len(model.channels):
        raise InputError(f"{path}: {series.values.shape[1]} channel(s); the model reads "
                         f"{len(model.channels)}")  # fmt: skip
    if series.missing_share > MOST_MISSING:
        raise InputError(
            f"{path}: {series.missing_share:.0%} of the steps are missing "
            f"({series.put_back} put back from gaps in the timestamps); at most "
            f"{MOST_MISSING:.0%} may be"
        )
    return series


def _npy_series(path: Path, columns, timestamp) -> Series:
    if columns or timestamp not in (None, NO_TIMESTAMP):
        raise InputError(f"{path}: --columns and --timestamp are for CSV files")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a valid .npy file of numbers ({e})") from None
    if x.dtype.kind not in "uif" or x.ndim not in (1, 2):
        raise InputError(f"{path}: a series is (T,) or (T, C) numbers, got {x.dtype} {x.shape}")
    x = x.astype(np.float64).reshape(len(x), -1)
    return Series(x, [str(i) for i in range(x.shape[1])])


def _csv_series(path: Path, columns, timestamp, model) -> Series:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InputError(f"{path}: empty CSV file")
    reader, header = SeriesReader.for_header(str(path), lines[0], columns, timestamp,
                                             model=model)  # fmt: skip
    body = lines[1:] if header else lines
    reader.step_seconds = model.step_seconds if model is not None else None
    x, times = reader.parse(body, 1 + header)
    n_read = sum(1 for line in body if line.strip())
    step_seconds = reader.step_seconds
    if times is not None and step_seconds is None:  # the series' own step, from all of it
        step_seconds = common_step(times)
        if step_seconds:
            x, times = fill_gaps(x, times, step_seconds)
    return Series(x, reader.channels, times, reader.timestamp_column, step_seconds,
                  put_back=len(x) - n_read)  # fmt: skip


def common_step(timestamps: np.ndarray) -> int | None:
    """The most common positive difference between timestamps, in seconds."""
    d = np.diff(timestamps).astype(np.int64)
    d = d[d > 0]
    if not len(d):
        return None
    values, counts = np.unique(d, return_counts=True)
    return int(values[np.argmax(counts)])


def _cells(line: str) -> list[str]:
    return next(csv.reader(io.StringIO(line.rstrip("\r\n"))), [])


def _column(names: list[str], wanted: str, where: str, option: str) -> int:
    if wanted in names:
        return names.index(wanted)
    raise InputError(f"{where}: {option}: no column {wanted!r} (columns: {', '.join(names)})")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def is_timestamp(cell: str) -> bool:
    """A date and time as _timestamp reads them (not a number)."""
    try:
        _date_time(cell)
    except ValueError:
        return False
    return True


MISSING_CELLS = ("", "nan", "na", "null", "none")


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_CELLS


def _reading(cell: str, where: str, line: int) -> float:
    cell = cell.strip()
    if _is_missing(cell):
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{where}: line {line}: {cell!r} is not a number") from None
    if math.isinf(value):
        raise InputError(f"{where}: line {line}: infinite reading {cell!r}")
    return value


def _timestamp(cell: str, where: str, line: int) -> np.datetime64:
    cell = cell.strip()
    try:
        if _is_number(cell):  # seconds since the epoch
            return np.datetime64(int(float(cell)), "s")
        return _date_time(cell)
    except ValueError:
        raise InputError(f"{where}: line {line}: {cell!r} is not a timestamp") from None


def _date_time(cell: str) -> np.datetime64:
    """ISO 8601, `2014-04-10 07:15:00` or `2014-04-10T07:15:00Z`; ValueError otherwise
    (an empty cell or `NaT` too: NumPy reads them as not-a-time)."""
    t = np.datetime64(cell.strip().replace("T", " ").rstrip("Z"), "s")
    if np.isnat(t):
        raise ValueError(cell)
    return t


# -- windows ------------------------------------------------------------------------------


def sliding_windows(values: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """Windows (N, W, C) of values (T, C), a view: window i starts at step i * stride."""
    if len(values) < window:
        raise InputError(f"the series has {len(values)} steps, fewer than the window ({window})")
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # (N, C, W)
    return view[::stride].transpose(0, 2, 1)


def dominant_period(values: np.ndarray, bounds=AUTO_WINDOW_BOUNDS) -> int | None:
    """The lag, within bounds, of the highest local maximum of the autocorrelation of the
    series (its channels' mean after standardising; missing readings at the mean; the first
    20,000 steps), or None when it has no such peak clear of noise. As TSB-AD's
    find_length, from NumPy's FFT."""
    x = np.asarray(values, np.float64).reshape(len(values), -1)
    std = np.nanstd(x, axis=0)
    x = (x - np.nanmean(x, axis=0)) / np.where(std > 0, std, 1)
    x = np.nan_to_num(np.nanmean(x, axis=1) if x.shape[1] > 1 else x[:, 0])
    x = x[:20_000]
    low, high = bounds
    if len(x) < 2 * high or not x.any():
        high = len(x) // 2
    if high <= low:
        return None
    n = 1 << (2 * len(x) - 1).bit_length()
    spectrum = np.fft.rfft(x, n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), n)[: high + 2]
    acf /= acf[0] if acf[0] else 1
    lags = np.arange(low, high + 1)
    peaks = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] > acf[lags + 1])]
    if not len(peaks):
        return None
    best = peaks[np.argmax(acf[peaks])]
    # White noise's autocorrelations lie within +-2 / sqrt(n) (95%); a period must stand
    # above 3 / sqrt(n).
    return int(best) if acf[best] > 3 / math.sqrt(len(x)) else None


def auto_window(values: np.ndarray) -> int:
    """--window auto: the dominant period (dominant_period), at least MIN_AUTO_WINDOW, else
    DEFAULT_WINDOW."""
    period = dominant_period(values)
    return max(period, MIN_AUTO_WINDOW) if period else DEFAULT_WINDOW


# -- step scores --------------------------------------------------------------------------

# How a step's score is made from its windows (the manifest's series.step_score):
# "window_mean": the mean of the scores of the windows that hold the step, known once the
# window that starts at it is scored (W - 1 readings later); the last W - 1 steps of a
# series, which start no window, take the mean over the windows that hold them at its end.
# "window_end": the score of the window that ends at the step, known at once; the first
# W - 1 steps, which end no window, take the first window's.
# window_mean won on the NAB series (benchmarks/results/series-designs.md).
STEP_RULES = ("window_mean", "window_end")


class StepScorer:
    """Scores a series fed in pieces (one reading or many): push() returns the scores of
    the steps that became known, finish() those of the last steps once the series ends.
    It keeps the last W - 1 readings and window scores, so memory is constant however
    long the stream. Whatever the pieces, the scores are those of the whole series scored
    at once (a window's noise is keyed by its first step, and each step's mean is taken
    over the same window scores in the same order)."""

    def __init__(self, model, settings, per_feature: bool = False):
        spec = model.manifest.series
        if spec is None:
            raise InputError(f"{model.source}: not a windowed model (no series in vae.json)")
        self.model, self.settings, self.per_feature = model, settings, per_feature
        self.window = spec.window
        self.rule = spec.step_score
        self.channels = len(spec.channels)
        self._tail = np.zeros((0, self.channels), np.float64)
        self._tail_times = None
        # window_mean: the last W - 1 window scores (and per-channel losses) before the next
        self._scores = np.zeros(0, np.float64)
        self._features = np.zeros((0, self.channels), np.float64)
        self.steps = 0  # readings fed so far
        self.windows = 0  # windows scored so far

    def push(self, values, timestamps: np.ndarray | None = None) -> ScoredBatch | None:
        """Feed the next readings (n, C) (or (C,), one reading; (n,) for one channel) and
        their timestamps (n,) if any. Returns the scores of the steps that became known,
        or None."""
        try:
            x = np.asarray(values, np.float64)
        except (ValueError, TypeError):
            raise InputError("readings must be numbers (NaN for a missing one)") from None
        if x.ndim == 0 or (x.ndim == 1 and self.channels > 1 and len(x) == self.channels):
            x = x.reshape(1, -1)  # one reading
        elif x.ndim == 1 and self.channels == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise InputError(f"readings have shape {np.shape(values)}; this model takes "
                             f"{self.channels} channel(s) per step")  # fmt: skip
        if not len(x):
            return None
        first_step = self.steps - len(self._tail)  # the step of joined[0]
        joined = np.concatenate([self._tail, x]) if len(self._tail) else x
        times = timestamps
        if timestamps is not None and self._tail_times is not None:
            times = np.concatenate([self._tail_times, timestamps])
        self.steps += len(x)
        keep = max(len(joined) - (self.window - 1), 0)  # the first step kept
        # A view when joined is fresh (one reading: the tail stays W - 1 steps long).
        self._tail = joined[keep:] if len(self._tail) else joined[keep:].copy()
        if times is not None:
            self._tail_times = times[keep:].copy()
        if len(joined) < self.window:
            return None
        if len(joined) == self.window:  # one window: straight to the scoring pass's batch
            batches = [self.model._score_batch(joined[None], first_step, self.settings,
                                               self.per_feature)]  # fmt: skip
        else:
            windows = sliding_windows(joined, self.window)
            batches = list(self.model.score_batches([windows], self.settings, self.per_feature,
                                                    first_row=first_step))  # fmt: skip
        scores = _joined([b.scores for b in batches])
        features = None
        if self.per_feature:  # each channel's loss over the window
            features = _joined([finite_float32(b.feature_losses.sum(axis=1, dtype=np.float64))
                                for b in batches])  # fmt: skip
        self.windows += len(scores)
        if self.rule == "window_end":
            return self._window_end(scores, features, first_step, times)
        return self._window_mean(scores, features, first_step, times)

    def finish(self) -> ScoredBatch | None:
        """The series has ended: the scores of its steps not yet known (window_mean's last
        W - 1 steps), or None."""
        first = self.windows  # the first step that starts no window
        if self.rule == "window_end" or not self.windows or first >= self.steps:
            return None
        # Step t averages windows t - W + 1 .. first - 1: the last steps - t of the history.
        ends = [len(self._scores) - (self.steps - t) for t in range(first, self.steps)]
        scores = np.array([_mean(self._scores[max(0, e) :]) for e in ends], np.float32)
        features = None
        if self.per_feature:
            features = np.stack([_mean(self._features[max(0, e) :]) for e in ends])
            features = features.astype(np.float32)
        stamps = None if self._tail_times is None else self._tail_times[-len(scores) :]
        return self._batch(first, scores, features, stamps)

    def _window_end(self, scores, features, first_window: int, times) -> ScoredBatch:
        start = first_window + self.window - 1  # the step the first window ends at
        if first_window == 0:  # the first W - 1 steps take the first window's score
            lead = self.window - 1
            scores = np.concatenate([np.repeat(scores[:1], lead), scores])
            if features is not None:
                features = np.concatenate([np.repeat(features[:1], lead, axis=0), features])
            start = 0
        stamps = None if times is None else times[len(times) - len(scores) :]
        return self._batch(start, scores, features, stamps)

    def _window_mean(self, scores, features, first_window: int, times) -> ScoredBatch:
        """Step i (the first step of window i) averages the scores of windows
        max(0, i - W + 1) .. i, each step's mean over its own window scores in order."""
        w, n, k = self.window, len(scores), len(self._scores)
        history = np.concatenate([self._scores, scores], dtype=np.float64)  # from window
        steps = _step_means(history, k, n, w)  # first_window - k on
        # A view of the fresh history: memory stays W window scores.
        self._scores = history[max(0, len(history) - (w - 1)) :]
        step_features = None
        if features is not None:
            rows = np.concatenate([self._features, features], dtype=np.float64)
            step_features = _step_means(rows, k, n, w)
            self._features = rows[max(0, len(rows) - (w - 1)) :]
        stamps = None if times is None else times[:n]
        return self._batch(first_window, steps, step_features, stamps)

    def _batch(self, start, scores, features, stamps) -> ScoredBatch:
        t = self.settings.threshold
        flags = None if t is None else scores > t
        return ScoredBatch(start, scores, flags, features, stamps)


def _step_means(history: np.ndarray, k: int, n: int, w: int) -> np.ndarray:
    """For j < n, the mean of history[max(0, k + j + 1 - w) : k + j + 1] (float32): a run
    of up to w consecutive window scores (or per-channel losses) ending at the j-th new
    one. One at a time by _mean where the run is short or the steps few, else by _means:
    the same reduction, so the result does not depend on how the series was split."""
    first_full = max(0, w - 1 - k)  # runs from here on hold exactly w rows
    out = np.empty((n, *history.shape[1:]), np.float32)
    loop = n if n <= 16 else min(first_full, n)
    for j in range(loop):
        out[j] = _mean(history[max(0, k + j + 1 - w) : k + j + 1])
    if loop < n:
        out[loop:] = _means(history[k + loop + 1 - w :], w)
    return out


def _mean(a: np.ndarray) -> np.ndarray:
    """The mean of the rows of a (float64), by the same reduction as _means."""
    return np.add.reduce(a, axis=0) / len(a)


def _means(a: np.ndarray, w: int) -> np.ndarray:
    """The mean of each run of w consecutive rows of a (float64), each as _mean
    computes it: over a contiguous copy of the run."""
    runs = np.lib.stride_tricks.sliding_window_view(a, w, axis=0)  # (m, ..., w)
    runs = np.ascontiguousarray(np.moveaxis(runs, -1, 1))  # (m, w, ...)
    return np.add.reduce(runs, axis=1) / w


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def score_series(model, pieces: Iterable, settings, per_feature: bool = False,
                 where: str = "the series") -> Iterator[ScoredBatch]:  # fmt: skip
    """Step scores of a whole series given as pieces (readings (n, C), timestamps (n,) or
    None), through one StepScorer, its last steps (finish) included. `where` names the
    series in the error for one shorter than the window."""
    scorer = StepScorer(model, settings, per_feature)
    for values, timestamps in pieces:
        batch = scorer.push(values, timestamps)
        if batch is not None:
            yield batch
    if scorer.steps < scorer.window:
        raise InputError(f"{where}: {scorer.steps} steps, fewer than the model's window "
                         f"({scorer.window})")  # fmt: skip
    last = scorer.finish()
    if last is not None:
        yield last
