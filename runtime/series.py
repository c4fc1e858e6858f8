"""Sensor series: read them, put them on their step grid, cut windows, and score a stream
of readings one at a time (SeriesStream). NumPy only.

A series is T steps of C channels, float64, NaN where a reading is missing. A windowed
model's samples are windows of W consecutive steps, (W, C). A reading's score is that of
the window ending at it, so it is known at once; its likelihood and alarm come from the
scores before it (alarm.py). A whole file is scored as the same stream, with the same
numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae_edge.runtime.alarm import AnomalyLikelihood
from vae_edge.runtime.errors import InputError
from vae_edge.runtime.scoring import ScoredBatch, finite_float32

# A series whose readings are more often missing than this share is refused: its windows
# would be mostly made up. Gaps in the timestamps are not counted: a windowed model trains
# on the windows beside them.
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
# Several channels: a machine's metrics have periods of their own (or none), and its
# anomalies are short against a day; 64 steps beat the daily period (288) on each of four
# ASD servers tried (mean VUS-PR 0.38 against 0.29; benchmarks/multivariate.py).
MULTICHANNEL_WINDOW = MIN_AUTO_WINDOW
# ... and at most 1 / MOST_OF_SERIES of the series: 750 readings (NAB's probationary rows)
# get at most 187 steps and 563 windows, not a daily 288 and 462.
MOST_OF_SERIES = 4
TIMESTAMP_NAMES = ("timestamp", "time", "datetime", "date")  # a header's timestamp column
NO_TIMESTAMP = "none"  # --timestamp none: read no timestamps, even if a column looks like one
ROUND_SECONDS = (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600)
# Most steps put back for one gap in the timestamps: a gap this long leaves no reading in
# the windows beside it (the longest auto window), so a longer one changes nothing but
# the memory it would take (a year's gap on 5-minute steps: 100,000 steps).
MAX_GAP = AUTO_WINDOW_BOUNDS[1]
# A CSV's delimiters, recognised from its first line; "tab" names "\t" in options.
DELIMITERS = {",": ",", ";": ";", "tab": "\t", "\t": "\t"}


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
    out_of_order: int = 0  # readings whose timestamp was not after the one before

    @property
    def missing_share(self) -> float:
        return float(np.isnan(self.values).any(axis=1).mean()) if len(self.values) else 0.0


# -- reading ------------------------------------------------------------------------------


class SeriesReader:
    """Parses CSV lines of one series into values and timestamps: a whole file strictly
    (parse), a stream's lines one at a time without ever refusing one (reading). Built by
    `for_header`: which columns are values, which is the timestamp."""

    def __init__(self, where: str, value_index: list[int], channels: list[str],
                 timestamp_index: int | None, timestamp_column: str | None,
                 delimiter: str = ","):  # fmt: skip
        self.where = where
        self.delimiter = delimiter
        self.value_index = value_index
        self.channels = channels
        self.timestamp_index = timestamp_index
        self.timestamp_column = timestamp_column
        self._width = max([*value_index, timestamp_index or 0]) + 1

    @classmethod
    def for_header(cls, where: str, first_line: str, columns=None, timestamp=None,
                   model=None, delimiter=None) -> tuple[SeriesReader, bool]:  # fmt: skip
        """The reader for a CSV whose first line is `first_line`, and whether that line is
        a header. columns: value columns by name (or 0-based position without a header);
        default a windowed model's channels where the header has them, else every column
        but the timestamp. timestamp: its column's name (position), or NO_TIMESTAMP;
        default the model's timestamp column where the header has it, else a column named
        like TIMESTAMP_NAMES, else a first column that is not a number. model: a windowed
        model's SeriesSpec, whose channel count the columns must match. delimiter: a key
        of DELIMITERS, default the one that splits the first line into most cells
        (sniff_delimiter)."""
        delimiter = sniff_delimiter(first_line) if delimiter is None else _delimiter(delimiter)
        cells = _cells(first_line, delimiter)
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
                + delimiter_hint(first_line, delimiter)
            )
        return cls(
            where,
            value_index,
            [names[i] for i in value_index],
            t_index,
            names[t_index] if t_index is not None else None,
            delimiter,
        ), header

    def parse(self, lines: list[str], first_line_no: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Values (n, C) and timestamps (n,) (datetime64[s], or None without a timestamp
        column) of `lines`; a cell that is not a number or not a timestamp is refused."""
        values, stamps = [], []
        for number, line in enumerate(lines, first_line_no):
            if not line.strip():
                continue
            cells = self._row(line, number)
            try:
                values.append([_reading(cells[i], self.where, number) for i in self.value_index])
            except InputError as e:
                raise InputError(f"{e}{delimiter_hint(line, self.delimiter)}") from None
            if self.timestamp_index is not None:
                stamps.append(_timestamp(cells[self.timestamp_index], self.where, number))
        x = np.array(values, np.float64).reshape(-1, len(self.value_index))
        return x, (None if self.timestamp_index is None else np.array(stamps, "datetime64[s]"))

    def reading(self, line: str) -> tuple[np.ndarray, str | None, np.datetime64 | None, bool]:
        """One line of a stream, never refused: its values (C,) (NaN where a cell is
        missing, not a number or infinite), its timestamp as given and as read (None when
        unreadable or there is no column), and whether the line was whole and readable."""
        cells = _cells(line, self.delimiter)
        readable = len(cells) >= self._width
        values = np.full(len(self.value_index), np.nan)
        for j, i in enumerate(self.value_index):
            if i < len(cells):
                try:
                    values[j] = _reading(cells[i], self.where, 0)
                except InputError:
                    readable = False
        given = stamp = None
        if self.timestamp_index is not None and self.timestamp_index < len(cells):
            given = cells[self.timestamp_index].strip()
            try:
                stamp = _timestamp(given, self.where, 0)
            except InputError:
                readable = False
        return values, given, stamp, readable

    def _row(self, line: str, number: int) -> list[str]:
        cells = _cells(line, self.delimiter)
        if len(cells) < self._width:
            hint = delimiter_hint(line, self.delimiter)
            raise InputError(f"{self.where}: line {number} has {len(cells)} values, "
                             f"not {self._width}{hint}")  # fmt: skip
        return cells


def delimiter_hint(line: str, delimiter: str) -> str:
    """For an error about `line`: that another delimiter is in it (or '')."""
    others = [d for d in (",", ";", "\t") if d != delimiter and d in line]
    if not others:
        return ""
    named = {",": "','", ";": "';'", "\t": "tab"}
    return (f" (columns split at {named[delimiter]}, but the line also holds "
            f"{named[others[0]]}: name the delimiter with --delimiter)")  # fmt: skip


def steps_between(before, t, step_seconds: int) -> int:
    """Steps from a reading at `before` to the next at `t` on a grid of step_seconds: the
    time between them rounded to whole steps (jitter around the step vanishes), at least
    1 (a repeated or earlier timestamp is the next step, in the order read)."""
    seconds = int((t - before) / np.timedelta64(1, "s"))
    return max(1, round(seconds / step_seconds))


def fill_gaps(x: np.ndarray, t: np.ndarray, step_seconds: int, max_gap: int = MAX_GAP):
    """Readings x (n, C) at timestamps t (n,) on their step grid: each reading is
    steps_between the latest timestamp before it and its own, the steps between them put
    back as missing (at most max_gap per gap: a longer gap leaves no reading in any window
    beside it either). Returns the
    values, the timestamps of every step (put-back ones on the grid after the reading
    before) and how many readings came with a timestamp not after the one before."""
    if not len(t):
        return x, t, 0
    latest = np.maximum.accumulate(t)  # an earlier timestamp does not set the clock back
    seconds = (t[1:] - latest[:-1]).astype(np.int64)
    steps = np.minimum(np.maximum(np.rint(seconds / step_seconds), 1), max_gap + 1)
    position = np.concatenate([[0], np.cumsum(steps.astype(np.int64))])
    out = np.full((position[-1] + 1, x.shape[1]), np.nan)
    out[position] = x
    # a put-back step's time: the reading before it plus whole steps
    owner = np.cumsum(np.isin(np.arange(len(out)), position)) - 1
    times = t[owner] + (np.arange(len(out)) - position[owner]) * np.timedelta64(step_seconds, "s")
    return out, times, int((seconds <= 0).sum())


def read_series(path: str | Path, columns=None, timestamp=None, model=None,
                max_gap: int = MAX_GAP, delimiter: str | None = None) -> Series:  # fmt: skip
    """Read a whole series: a CSV (see SeriesReader.for_header), or .npy (T,) / (T, C)
    (NaN = missing). Timestamps put the readings on their step grid (fill_gaps): the step
    of `model` (a windowed model's SeriesSpec) when given, else the series' own
    (common_step). Refused when most readings are missing (MOST_MISSING; gaps do not count)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        series = _npy_series(path, columns, timestamp)
    elif suffix == ".csv":
        series = _csv_series(path, columns, timestamp, model, max_gap, delimiter)
    else:
        raise InputError(f"{path}: a series must be .csv or .npy")
    if len(series.values) == 0:
        raise InputError(f"{path}: no readings")
    if model is not None and series.values.shape[1] != len(model.channels):
        raise InputError(f"{path}: {series.values.shape[1]} channel(s); the model reads "
                         f"{len(model.channels)}")  # fmt: skip
    readings = len(series.values) - series.put_back
    missing = int(np.isnan(series.values).any(axis=1).sum()) - series.put_back
    if missing > MOST_MISSING * readings:
        raise InputError(f"{path}: {missing} of its {readings} readings have missing values; "
                         f"at most {MOST_MISSING:.0%} may")  # fmt: skip
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


def _csv_series(path: Path, columns, timestamp, model, max_gap: int, delimiter) -> Series:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InputError(f"{path}: empty CSV file")
    reader, header = SeriesReader.for_header(str(path), lines[0], columns, timestamp,
                                             model=model, delimiter=delimiter)  # fmt: skip
    x, times = reader.parse(lines[1:] if header else lines, 1 + header)
    step_seconds = model.step_seconds if model is not None else None
    return on_grid(x, reader.channels, times, reader.timestamp_column, step_seconds, max_gap)


def on_grid(x: np.ndarray, channels: list[str], times: np.ndarray | None = None,
            timestamp_column: str | None = None, step_seconds: int | None = None,
            max_gap: int = MAX_GAP) -> Series:  # fmt: skip
    """Readings x (n, C) in the order read, with their timestamps (n,) datetime64[s] or
    None, as a Series on its step grid: step_seconds, else the series' own (common_step),
    gaps put back (fill_gaps)."""
    n_read = len(x)
    if times is not None and step_seconds is None:
        step_seconds = common_step(times)
    out_of_order = 0
    if times is not None and step_seconds:
        x, times, out_of_order = fill_gaps(x, times, step_seconds, max_gap)
    return Series(x, channels, times, timestamp_column, step_seconds,
                  put_back=len(x) - n_read, out_of_order=out_of_order)  # fmt: skip


def common_step(timestamps: np.ndarray) -> int | None:
    """The series' step in seconds: the median of the positive differences between its
    timestamps (a sensor that reports about every 5 minutes with jitter has a step of
    about 5 minutes; the most common difference of jittered times can be anything)."""
    d = np.diff(timestamps).astype(np.int64)
    d = d[d > 0]
    if not len(d):
        return None
    median = float(np.median(d))
    # on a clock's round unit, within 5% (301 s of jittered readings is a 5-minute step)
    unit = max(u for u in ROUND_SECONDS if u <= max(median / 20, 1))
    return max(unit, int(round(median / unit)) * unit)


def _cells(line: str, delimiter: str = ",") -> list[str]:
    return next(csv.reader(io.StringIO(line.rstrip("\r\n")), delimiter=delimiter), [])


def sniff_delimiter(first_line: str) -> str:
    """The delimiter of a CSV from its first line (the header, as loggers write one):
    whichever of ',', ';' and tab splits it into most cells, quotes respected; a comma
    when none splits it (one column)."""
    counts = {d: len(_cells(first_line, d)) for d in (",", ";", "\t")}
    return max(counts, key=lambda d: counts[d])  # ties: the first, a comma


def _delimiter(name: str) -> str:
    if name not in DELIMITERS:
        raise InputError(f"unknown delimiter {name!r} (use ',', ';' or tab)")
    return DELIMITERS[name]


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
    present = (~np.isnan(x)).sum(axis=1)  # a step put back for a gap has no reading
    x = np.nansum(x, axis=1) / np.maximum(present, 1)
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
    """--window auto: one channel, the dominant period (dominant_period), at least
    MIN_AUTO_WINDOW, else DEFAULT_WINDOW; several, MULTICHANNEL_WINDOW; at most a quarter
    of the series' readings (MOST_OF_SERIES), so that a short series still gives three
    windows' worth of training windows."""
    values = np.asarray(values, np.float64).reshape(len(values), -1)
    if values.shape[1] > 1:
        window = MULTICHANNEL_WINDOW
    else:
        period = dominant_period(values)
        window = max(period, MIN_AUTO_WINDOW) if period else DEFAULT_WINDOW
    read = int((~np.isnan(values).all(axis=1)).sum())  # steps put back are not counted
    return max(2, min(window, read // MOST_OF_SERIES))


def hindsight_scores(scores: np.ndarray, window: int) -> np.ndarray:
    """A series' scores after the fact: each reading's mean over the scores of the
    `window` readings from it on (the windows that hold it; the last readings over those
    there are). It needs W - 1 readings after each one, so a stream's alarms never wait
    for it; after the fact it ranks anomalies better (NAB under TSB-AD's protocol, mean
    VUS-PR: benchmarks/results/series.md)."""
    s = np.asarray(scores, np.float64)
    total = np.concatenate([[0.0], np.cumsum(s)])
    start = np.arange(len(s))
    end = np.minimum(start + window, len(s))
    return ((total[end] - total[start]) / (end - start)).astype(np.float32)


def with_hindsight(batches: list[ScoredBatch], window: int) -> list[ScoredBatch]:
    """A stream's batches of a whole file joined into one, with its hindsight scores (no
    batch: none)."""
    if not batches:
        return []
    joined = {field.name: [getattr(b, field.name) for b in batches]
              for field in dataclasses.fields(ScoredBatch) if field.name != "start"}  # fmt: skip
    whole = ScoredBatch(batches[0].start, **{
        name: None if parts[0] is None else np.concatenate(parts)
        for name, parts in joined.items()})  # fmt: skip
    return [dataclasses.replace(whole, hindsight=hindsight_scores(whole.scores, window))]


# -- a stream ----------------------------------------------------------------------------

# How a stream keeps learning and holds its alarms (StreamRules). Chosen on the 29 public
# NAB series and SKAB's 34 runs (benchmarks/nab.py --designs, benchmarks/multivariate.py).
# numenta's spatial check: a reading beyond the readings seen so far by more than this
# share of their range is anomalous (likelihood 1) whatever the model says.
SPATIAL_MARGIN = 0.05
# The level the model is shown moves this share of the way towards the mean of each
# window's normal readings (0: it moves only when a held alarm is accepted as the new
# normal). On NAB, following the readings cost more than it gave (default alarms /
# likelihood: rate 1/8 53.7 / 50.1, 1/32 56.2 / 52.3, against 57.8 / 57.4 re-based only,
# benchmarks/results/nab-designs.md). A power of 2 (or 0): a port computes the same level
# to the bit.
LEVEL_RATE = 0.0
# A held alarm ends after this many windows of calm readings (the tail likelihood at or
# below the alarm threshold; NAB: 57.8 / 57.4 against 57.8 / 55.9 for a quarter window and
# 53.5 / 50.1 for a whole one, whose longer holds keep more of a change out of the
# history; SKAB's in_alarm F1: 0.57 against 0.44 and 0.58 with 69% false alarms) ...
CALM = 0.5
# ... or, held this many windows, is accepted as the new normal: the level is re-based on
# the last window's readings and the likelihood learns again.
ACCEPT = 4.0


@dataclass(frozen=True)
class StreamRules:
    """How a stream learns as it runs, beside its frozen graphs. adapt: the level the
    model is shown is re-based when a held alarm is accepted (and follows the normal
    readings at level_rate, per channel, when it is above 0); False: the model sees the
    readings as they are (the likelihood's history still learns). spatial:
    SPATIAL_MARGIN, None for no spatial check. level_rate: LEVEL_RATE. calm, accept: in
    windows of the model (calm 0: no alarm is held)."""

    adapt: bool = True
    spatial: float | None = SPATIAL_MARGIN
    level_rate: float = LEVEL_RATE
    calm: float = CALM
    accept: float = ACCEPT


@dataclass
class StreamReport:
    """What a stream did with its readings, for the user to see at the end."""

    readings: int = 0
    alarms: int = 0
    out_of_order: int = 0  # a timestamp not after the one before: taken as the next step
    put_back: int = 0  # missing steps put back for gaps in the timestamps
    missing: int = 0  # readings with a missing value (an unreadable cell is one)
    unreadable: int = 0  # lines with too few cells, a non-number or a bad timestamp

    def __str__(self) -> str:
        parts = [f"{self.readings} readings, {self.alarms} alarms"]
        if self.out_of_order:
            parts.append(f"{self.out_of_order} repeated or earlier timestamps (taken as the "
                         "next step)")  # fmt: skip
        if self.put_back:
            parts.append(f"{self.put_back} missing steps put back for gaps in the timestamps")
        if self.missing:
            parts.append(f"{self.missing} readings with missing values")
        if self.unreadable:
            parts.append(f"{self.unreadable} unreadable lines (their bad cells scored as "
                         "missing)")  # fmt: skip
        return "; ".join(parts)


class SeriesStream:
    """A windowed model on a stream: every reading gets its score, likelihood, alarm and
    in-alarm state at once, from that reading and the ones before it only. Lines of CSV
    (push_line, or push_lines for many: the same numbers) or arrays (push).

    For each reading: its timestamp puts it on the model's step grid (steps_between; a
    repeated or earlier timestamp is the next step, a gap puts missing steps back, at most
    W); the window of the last W steps, ending at it, less the stream's learnt level shift,
    is scored by the model (its noise keyed by the reading's index; before the W-th reading
    the steps before the first are missing): its -ELBO is the reading's score, and the
    reading's own reconstruction loss (the window's last step) updates the anomaly
    likelihood (alarm.AnomalyLikelihood) from the W-th reading on, which is at least 1
    for a reading beyond the range seen so far (the spatial check). is_anomaly is the
    likelihood above the alarm threshold, at most once in W readings and not while an
    alarm is held; in_alarm holds from an alarm until `calm` windows of readings whose
    tail likelihood is at or below the threshold, or until `accept` windows have passed:
    then the shift is re-based on the last window, as a new normal. A held alarm's
    readings are kept out of the likelihood's history and of the level (StreamRules).
    The level moves once per W readings (at readings W - 1, 2W - 1, ...), so that a file
    is scored W windows at a time and a reading's numbers never depend on how the stream
    was cut. State: the last W steps, the likelihood's rings and a few arrays of C
    values, whatever the stream's length."""

    def __init__(self, model, settings, *, threshold: float | None = None,
                 per_feature: bool = False, columns=None, timestamp=None,
                 delimiter: str | None = None, where: str = "the stream",
                 rules: StreamRules = StreamRules()):  # fmt: skip
        spec = model.manifest.series
        if spec is None:
            raise InputError(f"{model.source}: not a windowed model (no series in vae.json)")
        self.model, self.per_feature, self.where = model, per_feature, where
        self.settings = dataclasses.replace(settings, threshold=None)
        self.window, self.channels = spec.window, len(spec.channels)
        self.step_seconds = spec.step_seconds
        self.threshold = spec.alarm_threshold if threshold is None else float(threshold)
        self.rules = rules
        self.likelihood = AnomalyLikelihood(quiet=self.window)
        self.report = StreamReport()
        self.reader: SeriesReader | None = None  # from the first line, by push_line(s)
        self._columns, self._timestamp, self._delimiter = columns, timestamp, delimiter
        self._ring = np.full((2 * self.window, self.channels), np.nan)  # steps; [end - W, end)
        self._end = self.window
        self._last_time = None  # the latest timestamp so far
        self._since_alarm = self.window  # readings since the last alarm
        # What the stream learns: the range seen (the spatial check), the level of its
        # normal readings (the training mean to begin with) and the shift shown the model.
        seen = spec.low is not None and spec.high is not None
        self._low = np.array(spec.low, float) if seen else np.full(self.channels, np.inf)
        self._high = np.array(spec.high, float) if seen else np.full(self.channels, -np.inf)
        mean = model.manifest.preprocessing.mean
        self._trained_level = np.zeros(self.channels) if mean is None else np.array(mean, float)
        self._level = self._trained_level.copy()
        self._shift = np.zeros(self.channels)
        self._normal_sum = np.zeros(self.channels)  # this window's normal readings
        self._normal_count = np.zeros(self.channels)
        self._held_for = None  # readings since the held alarm (None: none held)
        self._calm = 0
        self._rebase = False

    # -- input ------------------------------------------------------------------------

    def push_line(self, line: str) -> ScoredBatch | None:
        """One line of CSV: the header (None), a blank line (None) or a reading."""
        return self.push_lines([line])

    def push_lines(self, lines: Iterable[str]) -> ScoredBatch | None:
        """Lines of CSV, the first line of the stream being its header or a first reading
        (SeriesReader.for_header: columns and timestamp as given to the stream, else the
        model's). A line is never refused: a cell that is not a number is a missing
        reading, an unreadable timestamp none (counted in the report)."""
        values, given, stamps = [], [], []
        for line in lines:
            if not line.strip():
                continue
            if self.reader is None:
                self.reader, header = SeriesReader.for_header(
                    self.where, line, self._columns, self._timestamp,
                    self.model.manifest.series, self._delimiter,
                )  # fmt: skip
                if header:
                    continue
            x, text, stamp, readable = self.reader.reading(line)
            self.report.unreadable += not readable
            values.append(x)
            given.append(text)
            stamps.append(stamp)
        if not values:
            return None
        has_time = self.reader.timestamp_index is not None
        return self._push(np.array(values), stamps if has_time else None,
                          np.array(given, object) if has_time else None)  # fmt: skip

    def push(self, values, timestamps=None) -> ScoredBatch | None:
        """Readings as numbers: (C,) or a scalar for one, (n, C) (or (n,) with one
        channel) for many, NaN where missing; timestamps (n,) datetime64 or None."""
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
        if np.isinf(x.min(initial=0.0)) or np.isinf(x.max(initial=0.0)):  # NaN-aware
            i, channel = np.argwhere(np.isinf(x))[0]
            raise InputError(f"the reading {self.report.readings + i}, channel {channel}, is "
                             "infinite")  # fmt: skip
        if not len(x):
            return None
        stamps = None
        if timestamps is not None:
            stamps = np.asarray(timestamps, "datetime64[s]").reshape(-1)
            if len(stamps) != len(x):
                raise InputError(f"{len(stamps)} timestamps for {len(x)} readings")
            stamps = [None if np.isnat(t) else t for t in stamps]
        return self._push(x, stamps, None if timestamps is None else np.asarray(timestamps))

    # -- the step rule, the score, the likelihood ----------------------------------------

    def _push(self, x: np.ndarray, stamps, given) -> ScoredBatch:
        first = self.report.readings
        w = self.window
        # One reading: its window is a view of the ring (the scoring pass copies it).
        windows = None if len(x) == 1 else np.empty((len(x), w, self.channels))
        for i, reading in enumerate(x):
            gap = self._steps_to(stamps[i]) - 1 if stamps is not None else 0
            if gap:
                self.report.put_back += gap
                for _ in range(min(gap, w)):
                    self._advance(np.nan)
            self._advance(reading)
            if windows is None:
                windows = self._ring[None, self._end - w : self._end]
            else:
                windows[i] = self._ring[self._end - w : self._end]
        self.report.readings += len(x)
        missing = np.isnan(x)
        if missing.any():  # NaN-aware sum: one pass where nothing is missing
            self.report.missing += int(missing.any(axis=1).sum())
        n = len(x)
        scores = np.empty(n, np.float32)
        likelihood = np.zeros(n)
        flags = np.zeros(n, bool)
        held = np.zeros(n, bool)
        features = np.empty((n, self.channels), np.float32) if self.per_feature else None
        start = 0
        while start < n:  # the readings up to the next move of the level, scored as one
            stop = min(n, start + w - (first + start) % w)
            part = windows[start:stop]
            if self._shift.any():
                part = part - self._shift
            s, losses, f = self._score(part, first + start)
            scores[start:stop] = s
            if features is not None:
                features[start:stop] = f
            beyond = self._beyond(x[start:stop])
            normal = np.zeros(stop - start, bool)
            for j, i in enumerate(range(start, stop)):
                likelihood[i], flags[i], held[i], normal[j] = self._judge(
                    first + i, losses[j], beyond[j])  # fmt: skip
            if self.rules.adapt:  # the window ending at the last of these readings
                self._learn_level(x[start:stop][normal], (first + stop) % w == 0,
                                  windows[stop - 1])  # fmt: skip
            start = stop
        self.report.alarms += int(flags.sum())
        return ScoredBatch(first, scores, flags, features, given, likelihood, in_alarm=held)

    def _beyond(self, readings: np.ndarray) -> np.ndarray:
        """Whether each reading lies beyond the range of the readings before it (the
        model's training data's to begin with) by more than the spatial margin, in any
        channel; the range then takes the readings in."""
        if len(readings) == 1:  # a live stream's reading: the same, in fewer NumPy calls
            reading, low, high = readings[0], self._low, self._high
            beyond = False
            if self.rules.spatial is not None:
                with np.errstate(invalid="ignore"):
                    margin = self.rules.spatial * (high - low)
                    out = (reading < low - margin) | (reading > high + margin)
                beyond = bool((out & (margin > 0)).any())
            np.fmin(low, reading, out=low)
            np.fmax(high, reading, out=high)
            return np.array([beyond])
        with np.errstate(invalid="ignore"):  # a channel with no reading yet: inf - inf
            lows = np.fmin.accumulate(np.vstack([self._low, readings]), axis=0)
            highs = np.fmax.accumulate(np.vstack([self._high, readings]), axis=0)
            self._low, self._high = lows[-1], highs[-1]
            if self.rules.spatial is None:
                return np.zeros(len(readings), bool)
            margin = self.rules.spatial * (highs[:-1] - lows[:-1])
            out = (readings < lows[:-1] - margin) | (readings > highs[:-1] + margin)
        return (out & (margin > 0)).any(axis=1)

    def _judge(self, index: int, loss: float, beyond: bool) -> tuple[float, bool, bool, bool]:
        """A reading's likelihood, alarm and in-alarm state, and whether it is normal (neither
        held nor alarming: the level learns from it)."""
        rules, w = self.rules, self.window
        held = self._held_for is not None
        likelihood = 0.0
        if index >= w - 1:  # a whole window: the likelihood learns
            likelihood = self.likelihood.update(loss, at_least=float(beyond), learn=not held)
        alarm = likelihood > self.threshold and self._since_alarm >= w and not held
        self._since_alarm = 0 if alarm else self._since_alarm + 1
        if alarm and rules.calm > 0:
            self._held_for, self._calm = 0, 0
        elif held:
            self._held_for += 1
            self._calm = self._calm + 1 if self.likelihood.raw <= self.threshold else 0
            if self._calm >= rules.calm * w:
                self._held_for = None
            elif self._held_for >= rules.accept * w:  # a new normal: held until re-based
                self._rebase = rules.adapt
                if not rules.adapt:
                    self._held_for = None
        return likelihood, alarm, self._held_for is not None, not (held or alarm)

    def _learn_level(self, normal: np.ndarray, window_end: bool, recent: np.ndarray) -> None:
        """Takes in normal readings; at a window's end, the level re-based on the window's
        readings (`recent`, the W steps ending there: an alarm accepted as a new normal) or
        moved towards the mean of its normal readings (when most of it was normal), and the
        shift shown the model with it."""
        if len(normal) and self.rules.level_rate:  # sums only a moving level uses
            present = ~np.isnan(normal)
            filled = np.where(present, normal, 0)  # a missing value adds 0
            if len(normal) == 1:
                self._normal_sum += filled[0]
            else:  # one reading after another (cumsum), as pushed a reading at a time
                self._normal_sum = np.cumsum([self._normal_sum, *filled], axis=0)[-1]
            self._normal_count += present.sum(axis=0)
        if not window_end:
            return
        if self._rebase:
            present = (~np.isnan(recent)).sum(axis=0)
            total = np.cumsum(np.nan_to_num(recent), axis=0)[-1]
            some = present > 0
            self._level[some] = total[some] / present[some]
            self._rebase, self._held_for = False, None
        elif self.rules.level_rate:
            enough = self._normal_count >= self.window / 2
            mean = self._normal_sum[enough] / self._normal_count[enough]
            self._level[enough] += self.rules.level_rate * (mean - self._level[enough])
        self._normal_sum[:] = 0
        self._normal_count[:] = 0
        self._shift = self._level - self._trained_level

    def _score(self, windows: np.ndarray, first: int):
        """Scores (n,), the newest reading's losses (n,) and the per-channel losses over
        the window (n, C; per_feature) of windows (n, W, C), the first being reading
        `first`'s. A batch holding a window beyond the standardisation's clip is scored in
        float64 (Gaussian.nll): then each window is scored alone, so that a reading's
        numbers never depend on the readings batched with it."""
        far = len(windows) > 1 and self.model.manifest.preprocessing.far_rows(windows).any()
        if len(windows) == 1 or far:  # one window per graph call, keyed by its reading
            batches = [self.model.score_batch(windows[i : i + 1], first + i, self.settings, True)
                       for i in range(len(windows))]  # fmt: skip
        else:
            batches = self.model.score_batches([windows], self.settings, True, first_row=first)
        batches = list(batches)
        scores = np.concatenate([b.scores for b in batches])
        losses = np.concatenate([b.feature_losses for b in batches])  # (n, W, C)
        newest = losses[:, -1].sum(axis=1, dtype=np.float64)
        features = None
        if self.per_feature:
            features = finite_float32(losses.sum(axis=1, dtype=np.float64))
        return scores, newest, features

    def _steps_to(self, t) -> int:
        """Steps from the reading before to one at timestamp t (None: 1, the clock moving
        on by a step, so that the next timestamp is not taken for a gap)."""
        if not self.step_seconds:
            return 1
        if t is None:
            if self._last_time is not None:
                self._last_time += np.timedelta64(self.step_seconds, "s")
            return 1
        last = self._last_time
        if last is None:
            self._last_time = t
            return 1
        self._last_time = max(last, t)  # an earlier timestamp does not set the clock back
        if t <= last:
            self.report.out_of_order += 1
        return steps_between(last, t, self.step_seconds)

    def _advance(self, reading) -> None:
        if self._end == len(self._ring):  # keep the last W - 1 steps, at the start
            self._ring[: self.window - 1] = self._ring[self._end - self.window + 1 :]
            self._end = self.window - 1
        self._ring[self._end] = reading
        self._end += 1

    def close(self, whole: bool = False) -> StreamReport:
        """The report; with whole (a file scored after the fact, not a live stream),
        InputError when most readings were missing or unreadable (MOST_MISSING)."""
        r = self.report
        if whole and r.missing > MOST_MISSING * max(r.readings, 1):
            share = r.missing / r.readings
            raise InputError(f"{self.where}: {share:.0%} of the readings are missing or "
                             f"unreadable; at most {MOST_MISSING:.0%} may be")  # fmt: skip
        if whole and not r.readings:
            raise InputError(f"{self.where}: no readings")
        return r
