"""The manifest `vae.json`: the one contract between export (which writes it) and runtime.

A bundle is a directory holding `vae.json`, `encoder.onnx` and `decoder.onnx`. The manifest
says how raw input becomes the encoder's float32 input (preprocessing), what the decoder
emits (likelihood and output kind), the sha256 of both graphs and how the export was
checked. `Manifest.from_dict` validates every field; a bundle that fails is refused whole.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from vae_edge.runtime.alarm import ALARM_THRESHOLD
from vae_edge.runtime.errors import BundleError
from vae_edge.runtime.scoring import DEFAULT_SCORE_TYPE, SCORE_TYPES

# 2: the score graphs (score_graphs: prepare.onnx, loss.onnx) and the default score's stored
# noise (default_score.eps); format 1 bundles, without them, still load.
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)
MANIFEST_FILE = "vae.json"
LIKELIHOODS = {"bernoulli": "logits", "gaussian": "mean"}  # likelihood -> decoder output


# Standardised values are clipped to this many standard deviations on their way into the
# encoder (training and runtime alike): a row 2e4 standard deviations out, or a float32's
# largest value over a small std, drove the graphs to inf. Ordinary data stays far inside
# (at most 184 on the 18 tabular sets); the Gaussian loss still measures the unclipped
# distance (Gaussian.prepare), so a row further out scores higher.
STANDARDIZED_LIMIT = 1e4


@dataclass(frozen=True)
class Preprocessing:
    """How raw input maps to the encoder's input: x * scale, or (x - mean) / std per feature
    (clipped to +-STANDARDIZED_LIMIT). A windowed model's mean and std are per channel: the
    last axis of its samples (W, C)."""

    kind: str  # "scale" | "standardize"
    scale: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Raw samples (N, ...) -> the encoder's float32 input, same shape."""
        return self.apply_and_clip(x)[0]

    def apply_and_clip(self, x: np.ndarray) -> tuple[np.ndarray, bool, np.ndarray | None]:
        """apply(x), whether a standardised value was clipped, and where x is NaN (a
        series' missing readings, left NaN; None where there are none)."""
        if self.kind == "scale":
            return np.asarray(x, np.float32) * np.float32(self.scale), False, None
        # float64 beyond float32's range becomes inf, then is clipped like any far value
        with np.errstate(over="ignore", invalid="ignore"):
            xp = (self._grouped(np.asarray(x, np.float32)) - self._mean) / self._std
        shape = np.shape(x)
        # One pass over the batch in the usual case (no NaN, nothing far): its min and max.
        if not xp.size or (
            -STANDARDIZED_LIMIT < xp.min() and xp.max() < STANDARDIZED_LIMIT
        ):  # fmt: skip
            return xp.reshape(shape), False, None
        missing = np.isnan(xp)
        if missing.all():
            return xp.reshape(shape), False, missing.reshape(shape)
        present = xp[~missing] if missing.any() else xp
        clipped = not (-STANDARDIZED_LIMIT < present.min() and present.max() < STANDARDIZED_LIMIT)
        if clipped:  # in place, and only where needed: a pass that changes nothing costs
            np.clip(xp, -STANDARDIZED_LIMIT, STANDARDIZED_LIMIT, out=xp)
        return xp.reshape(shape), clipped, missing.reshape(shape) if missing.any() else None

    @property
    def grey_levels(self) -> bool:
        """Grey levels 0..255 scaled by 1/255 (training.train.choose_likelihood)."""
        return self.kind == "scale" and math.isclose(self.scale, 1 / 255)

    def standardized_float64(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / std in float64, unclipped: the distances a Gaussian loss measures
        for rows beyond the clip (standardize only)."""
        grouped = self._grouped(np.asarray(x, np.float64))
        with np.errstate(over="ignore"):  # beyond float64: inf, a loss saturated later
            return ((grouped - np.asarray(self.mean)) / np.asarray(self.std)).reshape(x.shape)

    def far_rows(self, x: np.ndarray) -> np.ndarray:
        """(N,) bool: the samples with a standardised value beyond the clip, as
        apply_and_clip finds them (a batch holding one is scored in float64)."""
        if self.kind == "scale":
            return np.zeros(len(x), bool)
        with np.errstate(over="ignore", invalid="ignore"):
            xp = np.abs(self._grouped(np.asarray(x, np.float32)) - self._mean) / self._std
        return (xp >= STANDARDIZED_LIMIT).reshape(len(x), -1).any(axis=1)

    def invert(self, xp: np.ndarray) -> np.ndarray:
        """The encoder's units -> raw units."""
        if self.kind == "scale":
            return (xp / np.float32(self.scale)).astype(np.float32)
        return (self._grouped(xp) * self._std + self._mean).reshape(xp.shape).astype(np.float32)

    def _grouped(self, x: np.ndarray) -> np.ndarray:
        """x (N, ...) as (N, -1, len(mean)): one mean and std per feature, or per channel."""
        return x.reshape(len(x), -1, len(self.mean))

    @cached_property
    def _mean(self) -> np.ndarray:
        return np.asarray(self.mean, np.float32)

    @cached_property
    def _std(self) -> np.ndarray:  # a std below float32's range would divide by 0
        return np.maximum(np.asarray(self.std, np.float32), np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class Graph:
    """One graph file. ir_version and opset (of the default ONNX domain) say which
    onnxruntime loads it; bundles exported before they were recorded have None."""

    file: str
    sha256: str
    inputs: list[str]
    outputs: list[str]
    ir_version: int | None = None
    opset: int | None = None


@dataclass(frozen=True)
class DefaultScore:
    """How the model scores when a call does not say (see ScoreSettings). Export chooses
    it per kind of data; bundles exported before it was recorded score -ELBO at z = mu."""

    score_type: str = DEFAULT_SCORE_TYPE
    samples: int = 0
    complexity: bool = False
    # (samples, latent_dim): the noise of the draws at seed 0, the same for every row, so
    # that every runtime reproduces the score (format 2); None: NumPy's row_noise.
    eps: list[list[float]] | None = None


@dataclass(frozen=True)
class Threshold:
    """A score above `value` is an anomaly; scores are computed with `score_type`,
    `samples` and `seed`. The rest records how the value was obtained."""

    value: float
    score_type: str = "elbo"
    samples: int = 0
    seed: int = 0
    complexity: bool = False
    rule: str = ""  # e.g. "quantile 0.99" or "contamination 0.05"
    data_sha256: str = ""
    count: int = 0


@dataclass(frozen=True)
class SeriesSpec:
    """A windowed model's series. Its samples (input_shape) are windows (window, C) of
    consecutive steps of the channels, in this order; stride: the step between training
    windows (a stream scores the window ending at each reading). timestamp: the CSV column
    the timestamps came from and step_seconds the step they had (the grid readings are put
    on); None for a series without timestamps. alarm_threshold: a reading alarms when its
    anomaly likelihood is above it (alarm.py; `calibrate` sets it)."""

    window: int
    stride: int
    channels: list[str]
    timestamp: str | None = None
    step_seconds: int | None = None
    alarm_threshold: float = ALARM_THRESHOLD
    low: list[float] | None = None  # each channel's lowest and highest training reading,
    high: list[float] | None = None  # where a stream's spatial check starts (None: unknown)


@dataclass(frozen=True)
class Manifest:
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    data_dtype: str  # dtype of the training data as read (e.g. uint8), for information
    preprocessing: Preprocessing
    likelihood: str
    latent_dim: int
    encoder: Graph
    decoder: Graph
    exporter: str
    versions: dict[str, str] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    default_score: DefaultScore = DefaultScore()
    threshold: Threshold | None = None
    observation_logvar: list[float] | None = None  # Gaussian variance learned per feature
    format_version: int = FORMAT_VERSION
    input_dtype: str = "float32"  # what the encoder graph takes, after preprocessing
    binary: bool = False  # trained on 0/1 data (Bernoulli on x itself); absent = false
    series: SeriesSpec | None = None  # a windowed model's series; absent = not windowed
    # "prepare" and "loss": the score as graphs (export/score_graphs.py); absent in format 1
    score_graphs: dict[str, Graph] | None = None

    @property
    def decoder_output(self) -> str:
        return LIKELIHOODS[self.likelihood]

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def has_complexity(self) -> bool:
        """Samples with a complexity (ScoreSettings.complexity): images whose values are
        grey levels in [0, 1], the Bernoulli likelihood's."""
        return self.is_image_like and self.likelihood == "bernoulli"

    @property
    def grey_levels(self) -> bool:
        """A Bernoulli model trained on grey levels 0..255 (Preprocessing.grey_levels)."""
        return self.likelihood == "bernoulli" and self.preprocessing.grey_levels

    @property
    def is_image(self) -> bool:
        """An image that PNG can hold: (H, W), or (H, W, C) / (C, H, W) with 1 or 3
        channels."""
        shape = self.input_shape
        channels = len(shape) == 2 or shape[0] in (1, 3) or shape[-1] in (1, 3)
        return self.is_image_like and channels

    @property
    def is_image_like(self) -> bool:
        """Samples of two or three axes that are not a series' windows."""
        return is_image_shape(self.input_shape) and self.series is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["decoder_output"] = self.decoder_output
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        _check(isinstance(d, dict), "the manifest is not a JSON object")
        version = _get(d, "format_version", int)
        _check(
            version in FORMAT_VERSIONS,
            f"format_version {version} is not supported (this runtime reads "
            f"{' and '.join(map(str, FORMAT_VERSIONS))})",
        )
        likelihood = _get(d, "likelihood", str)
        _check(likelihood in LIKELIHOODS, f"unknown likelihood {likelihood!r}")
        _check(
            d.get("decoder_output", LIKELIHOODS[likelihood]) == LIKELIHOODS[likelihood],
            f"decoder_output must be {LIKELIHOODS[likelihood]!r} for a {likelihood} likelihood",
        )
        _check(_get(d, "input_dtype", str) == "float32", "input_dtype must be 'float32'")
        shape = _get(d, "input_shape", list)
        _check(
            len(shape) >= 1 and all(_is_int(n) and n > 0 for n in shape),
            "input_shape must be a list of positive integers",
        )
        latent_dim = _get(d, "latent_dim", int)
        _check(latent_dim > 0, "latent_dim must be positive")
        series = _series(d.get("series"), shape)
        manifest = cls(
            format_version=version,
            input_shape=tuple(shape),
            input_dtype="float32",
            data_dtype=_get(d, "data_dtype", str),
            preprocessing=_preprocessing(
                _get(d, "preprocessing", dict), shape[-1] if series else math.prod(shape)
            ),
            likelihood=likelihood,
            latent_dim=latent_dim,
            encoder=_graph(_get(d, "encoder", dict), "encoder"),
            decoder=_graph(_get(d, "decoder", dict), "decoder"),
            exporter=_get(d, "exporter", str),
            versions=_get(d, "versions", dict),
            parity=_get(d, "parity", dict),
            training=_get(d, "training", dict),
            default_score=_default_score(d.get("default_score", {}), latent_dim),
            threshold=_threshold(d.get("threshold")),
            observation_logvar=_observation_logvar(
                d.get("observation_logvar"), math.prod(shape), shape[-1] if series else None
            ),
            binary=d.get("binary", False),
            series=series,
            score_graphs=_score_graphs(d.get("score_graphs")),
        )
        _check(isinstance(manifest.binary, bool), "binary must be true or false")
        _check(
            not manifest.binary
            or (likelihood == "bernoulli" and manifest.preprocessing.scale == 1.0),
            "binary is only for a bernoulli likelihood with scale 1",
        )
        _check(
            manifest.observation_logvar is None or likelihood == "gaussian",
            "observation_logvar is only for a gaussian likelihood",
        )
        _check(
            likelihood != "bernoulli" or manifest.preprocessing.kind == "scale",
            "a bernoulli likelihood needs 'scale' preprocessing",
        )
        t = manifest.threshold
        divides = manifest.default_score.complexity or (t is not None and t.complexity)
        _check(
            manifest.has_complexity or not divides,
            "complexity is only for images with a bernoulli likelihood",
        )
        _check(
            manifest.encoder.file != manifest.decoder.file,
            "encoder and decoder must be different files",
        )
        return manifest


def is_image_shape(shape) -> bool:
    """Samples with two or three axes, (H, W) or (C, H, W) / (H, W, C), are images; one
    axis is a table row. Training's defaults and the runtime's pictures both ask this."""
    return len(shape) in (2, 3)


def is_channels_first(shape) -> bool:
    """An image of three axes is (C, H, W) when its first axis, and not its last, could be
    a channel count (1 or 3); else (H, W, C)."""
    return shape[0] in (1, 3) and shape[-1] not in (1, 3)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise BundleError(f"invalid manifest: {message}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _get(d: dict, key: str, kind: type, parent: str = "") -> Any:
    name = f"{parent}.{key}" if parent else key
    _check(key in d, f"missing field {name!r}")
    value = d[key]
    ok = _is_int(value) if kind is int else isinstance(value, kind)
    if kind is float:
        ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    _check(ok, f"field {name!r} must be of type {kind.__name__}, got {type(value).__name__}")
    return value


def _numbers(d: dict, key: str, n: int, section: str = "preprocessing") -> list[float]:
    values = _get(d, key, list, section)
    _check(
        len(values) == n
        and all((_is_int(v) or isinstance(v, float)) and math.isfinite(v) for v in values),
        f"{section}.{key} must be a list of {n} finite numbers",
    )
    return [float(v) for v in values]


def _preprocessing(d: dict, n_features: int) -> Preprocessing:
    kind = _get(d, "kind", str, "preprocessing")
    if kind == "scale":
        scale = float(_get(d, "scale", float, "preprocessing"))
        _check(scale > 0, "preprocessing.scale must be positive")
        return Preprocessing(kind="scale", scale=scale)
    if kind == "standardize":
        std = _numbers(d, "std", n_features)
        _check(all(s > 0 for s in std), "preprocessing.std must be positive")
        return Preprocessing(kind="standardize", mean=_numbers(d, "mean", n_features), std=std)
    raise BundleError(f"invalid manifest: unknown preprocessing kind {kind!r}")


def _series(d: Any, shape: list[int]) -> SeriesSpec | None:
    if d is None:
        return None
    _check(isinstance(d, dict), "series must be an object or null")
    window, stride = _get(d, "window", int, "series"), _get(d, "stride", int, "series")
    channels = _get(d, "channels", list, "series")
    _check(window > 0 and stride > 0, "series.window and series.stride must be positive")
    _check(
        len(channels) > 0 and all(isinstance(c, str) for c in channels),
        "series.channels must be a list of names",
    )
    _check(
        shape == [window, len(channels)],
        f"input_shape must be [window, channels] = [{window}, {len(channels)}] for a series",
    )
    # series.step_score, in bundles exported before streams scored causally, is ignored.
    timestamp, step = d.get("timestamp"), d.get("step_seconds")
    _check(timestamp is None or isinstance(timestamp, str), "series.timestamp: a name or null")
    _check(step is None or (_is_int(step) and step > 0), "series.step_seconds: positive or null")
    alarm = d.get("alarm_threshold", ALARM_THRESHOLD)
    _check(isinstance(alarm, (int, float)) and not isinstance(alarm, bool) and 0 <= alarm <= 1,
           "series.alarm_threshold must be a number in [0, 1]")  # fmt: skip
    low, high = d.get("low"), d.get("high")
    _check((low is None) == (high is None), "series.low and series.high: both or neither")
    if low is not None:
        low, high = (_numbers(d, k, len(channels), "series") for k in ("low", "high"))
        _check(all(a <= b for a, b in zip(low, high, strict=True)),
               "series.low must not be above series.high")  # fmt: skip
    return SeriesSpec(window, stride, list(channels), timestamp, step, float(alarm), low, high)


def _graph(d: dict, name: str) -> Graph:
    file = _get(d, "file", str, name)
    _check(
        file.endswith(".onnx") and "/" not in file and "\\" not in file and file[0] != ".",
        f"{name}.file must be a plain .onnx file name inside the bundle",
    )
    sha = _get(d, "sha256", str, name)
    _check(
        len(sha) == 64 and all(c in "0123456789abcdef" for c in sha),
        f"{name}.sha256 is not a sha256 hex digest",
    )
    inputs, outputs = _get(d, "inputs", list, name), _get(d, "outputs", list, name)
    _check(
        all(isinstance(s, str) for s in inputs + outputs),
        f"{name}.inputs and {name}.outputs must be lists of names",
    )
    versions = [d.get(key) for key in ("ir_version", "opset")]
    _check(
        all(v is None or (_is_int(v) and v > 0) for v in versions),
        f"{name}.ir_version and {name}.opset must be positive integers",
    )
    return Graph(file, sha, inputs, outputs, *versions)


def _score_graphs(d: Any) -> dict[str, Graph] | None:
    if d is None:
        return None
    _check(isinstance(d, dict) and set(d) == {"prepare", "loss"},
           "score_graphs must be null or an object with prepare and loss")  # fmt: skip
    return {name: _graph(_get(d, name, dict, "score_graphs"), name) for name in ("prepare", "loss")}


def _default_score(d: Any, latent_dim: int) -> DefaultScore:
    _check(isinstance(d, dict), "default_score must be an object")
    before = DefaultScore()  # what bundles exported before the field was recorded score
    score_type = d.get("score_type", before.score_type)
    samples = d.get("samples", before.samples)
    _check(score_type in SCORE_TYPES, f"unknown default_score.score_type {score_type!r}")
    _check(_is_int(samples) and samples >= 0, "default_score.samples must be an integer >= 0")
    _check(score_type != "iwae" or samples >= 1, "default_score: iwae needs samples >= 1")
    complexity = d.get("complexity", before.complexity)
    _check(isinstance(complexity, bool), "default_score.complexity must be true or false")
    eps = d.get("eps")
    _check(
        eps is None
        or (isinstance(eps, list) and len(eps) == samples > 0
            and all(isinstance(row, list) and len(row) == latent_dim for row in eps)
            and all((_is_int(v) or isinstance(v, float)) and math.isfinite(v)
                    for row in eps for v in row)),
        f"default_score.eps must be null or {samples} lists of {latent_dim} finite numbers",
    )  # fmt: skip
    return DefaultScore(score_type, samples, complexity,
                        None if eps is None else [[float(v) for v in r] for r in eps])  # fmt: skip


def _threshold(d: Any) -> Threshold | None:
    if d is None:
        return None
    _check(isinstance(d, dict), "threshold must be an object or null")
    samples, seed, count = d.get("samples", 0), d.get("seed", 0), d.get("count", 0)
    for name, value in (("samples", samples), ("seed", seed), ("count", count)):
        _check(_is_int(value) and value >= 0, f"threshold.{name} must be an integer >= 0")
    score_type = d.get("score_type", "elbo")
    _check(score_type in SCORE_TYPES, f"unknown threshold.score_type {score_type!r}")
    complexity = d.get("complexity", False)
    _check(isinstance(complexity, bool), "threshold.complexity must be true or false")
    return Threshold(
        value=float(_get(d, "value", float, "threshold")),
        score_type=score_type,
        samples=samples,
        seed=seed,
        complexity=complexity,
        rule=str(d.get("rule", "")),
        data_sha256=str(d.get("data_sha256", "")),
        count=count,
    )


def _observation_logvar(values: Any, n_features: int, channels: int | None) -> list[float] | None:
    """One log-variance per feature, or for a series one per channel (the same at every
    step of the window)."""
    if values is None:
        return None
    sizes = (n_features,) if channels is None else (n_features, channels)
    _check(
        isinstance(values, list)
        and len(values) in sizes
        and all((_is_int(v) or isinstance(v, float)) and math.isfinite(v) for v in values),
        "observation_logvar must be null or a list of "
        + " or ".join(str(n) for n in sizes)
        + " finite numbers",
    )
    return [float(v) for v in values]


def read_manifest(text: str, where: str) -> Manifest:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BundleError(f"{where}: not valid JSON ({e})") from None
    try:
        return Manifest.from_dict(data)
    except BundleError as e:
        raise BundleError(f"{where}: {e}") from None
