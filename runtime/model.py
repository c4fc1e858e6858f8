"""EdgeVAE: a VAE bundle run with onnxruntime and NumPy only.

The scoring pass, one batch at a time (score_batches; score, feature_scores, predict and
score_chunks wrap it): raw rows -> checked (shape and dtype once per chunk, values per
batch) -> the likelihood's prepare (preprocessing from the manifest, range, floor) ->
encoder graph -> z = mu, or L draws z = mu + exp(logvar / 2) * eps with eps from seeded
NumPy Generators keyed by the row's position (row_noise) -> decoder graph -> per-feature
losses -> score per sample -> flags.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from vae_edge.runtime import bundle as bundles
from vae_edge.runtime.bundle import Bundle, default_model_dir
from vae_edge.runtime.errors import BundleError, InputError, InputWarning
from vae_edge.runtime.likelihood import Prepared, likelihood_of
from vae_edge.runtime.scoring import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SEED,
    ScoredBatch,
    ScoreSettings,
    check_seed,
    clamp_logvar,
    draw_latents,
    finite_float32,
    row_noise,
    scores_at_mean,
    scores_over_draws,
)
from vae_edge.runtime.series import SeriesStream, StreamRules

__all__ = ["EdgeVAE", "ScoreSettings", "ScoredBatch", "default_model_dir", "verify_bundle"]


class EdgeVAE:
    """A loaded bundle. Build it with `EdgeVAE.load`; the two sessions are made once."""

    def __init__(self, bundle: Bundle, batch_size: int = DEFAULT_BATCH_SIZE):
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.likelihood = likelihood_of(bundle.manifest)
        self.batch_size = batch_size

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
        verify: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> EdgeVAE:
        """Load a bundle directory (None = the default MNIST model shipped in the package).

        device: "cpu" or "cuda" (needs onnxruntime-gpu; refused loudly if CUDA is not active).
        threads: intra-op threads per session. None: one thread for graph calls of fewer
            than bundle.PARALLEL_MULTIPLY_ADDS multiply-adds (rows x weights; the shipped
            model: 23 rows), faster there; all cores for larger ones (a second session per
            graph, made on the first such call).
        verify: check each graph's sha256 against the manifest before onnxruntime reads it.
            Turn off only while developing: a bundle is trusted because of this check.
        batch_size: most rows per graph call (the default for every call's settings).
        """
        ScoreSettings(batch_size=batch_size)  # checked before the sessions are made
        return cls(bundles.load_bundle(path, device, threads, verify), batch_size)

    @property
    def source(self) -> str:
        return self.bundle.source

    @property
    def device(self) -> str:
        return self.bundle.device

    @property
    def threshold(self) -> float | None:
        """The anomaly threshold stored in the manifest, or None."""
        t = self.manifest.threshold
        return None if t is None else t.value

    def settings(
        self,
        score_type: str | None = None,
        samples: int | None = None,
        seed: int | None = None,
        threshold: float | None = None,
        batch_size: int | None = None,
        complexity: bool | None = None,
    ) -> ScoreSettings:
        """The settings of a scoring call: those given, else the ones stored with the
        model's threshold (so that scores compare with it), else the defaults. Warns when
        the stored threshold would flag scores computed another way."""
        return self._settings(score_type, samples, seed, threshold, batch_size, complexity,
                              flags=True)  # fmt: skip

    def _settings(self, score_type, samples, seed, threshold, batch_size, complexity, flags):
        t = self.manifest.threshold
        default = t or self.manifest.default_score
        samples = samples if samples is not None else default.samples
        if score_type is None:  # -L_k needs draws: asked for z = mu, such a model gives -ELBO
            iwae_without_draws = default.score_type == "iwae" and samples == 0
            score_type = "elbo" if iwae_without_draws else default.score_type
        settings = ScoreSettings(
            score_type=score_type,
            samples=samples,
            seed=seed if seed is not None else (t.seed if t else DEFAULT_SEED),
            threshold=(threshold if threshold is not None else self.threshold) if flags else None,
            batch_size=batch_size or self.batch_size,
            complexity=default.complexity if complexity is None else complexity,
        )
        if settings.complexity and not self.manifest.has_complexity:
            raise InputError("complexity is only for image models with a bernoulli likelihood")
        how = (settings.score_type, settings.samples, settings.seed, settings.complexity)
        stored_value = flags and threshold is None and t is not None
        if stored_value and how != (t.score_type, t.samples, t.seed, t.complexity):
            warnings.warn(
                "scoring differs from the threshold's settings "
                f"({t.score_type}, samples {t.samples}, seed {t.seed}, complexity "
                f"{t.complexity}); is_anomaly may mislead",
                InputWarning,
                stacklevel=3,
            )
        return settings

    # -- the scoring pass ------------------------------------------------------------------

    def score_batches(
        self,
        chunks: Iterable,
        settings: ScoreSettings | None = None,
        per_feature: bool = False,
        first_row: int = 0,
    ) -> Iterator[ScoredBatch]:
        """Score an iterable of arrays as one long input, one ScoredBatch per graph call
        (each graph runs once per batch, per_feature or not): scores, flags when the
        settings have a threshold, per-feature reconstruction losses when asked. Memory
        is bounded by one chunk and one batch. A row's noise is keyed by its position,
        first_row for the first row (row_noise), so the numbers are those of the
        concatenated input, and rows scored elsewhere with their own first_row (another
        process, another machine) get the same ones."""
        settings = settings or self.settings()
        start = first_row
        for chunk in chunks:
            x = self._as_samples(chunk)
            yield from self._chunk_batches(x, start, settings, per_feature)
            start += len(x)

    def score(
        self,
        x,
        samples: int | None = None,
        seed: int | None = None,
        score_type: str | None = None,
        complexity: bool | None = None,
    ) -> np.ndarray:
        """Anomaly score per sample, (N,) float32, in nats (higher = more anomalous), or
        with complexity in nats per bit of the image's complexity.

        Settings left out are the ones stored with the model's threshold, else the
        manifest's default_score (tables: iwae, samples 5; images: elbo at z = mu divided
        by the complexity), seed 0 (see ScoreSettings). Each loss is measured from the
        sample's floor, the loss of a perfect reconstruction (see nll_floor): without
        complexity, add nll_floor(x) to get the training loss's own units.
        """
        settings = self._settings(score_type, samples, seed, None, None, complexity, flags=False)
        if self._is_series(x):
            return self._steps(x, settings).scores
        x = self._as_samples(x)
        if 0 < len(x) <= settings.rows_per_batch:  # one batch: no generators (batch 1's cost)
            return self.score_batch(x, 0, settings, per_feature=False).scores
        parts = [b.scores for b in self.score_batches([x], settings)]
        return np.concatenate([np.zeros(0, np.float32), *parts])

    def feature_scores(self, x, samples: int | None = None, seed: int | None = None):
        """Reconstruction loss of each feature, (N, *input_shape): which features make a
        sample anomalous. Sums over features to score(..., score_type="recon",
        complexity=False)."""
        settings = self._settings("recon", samples, seed, None, None, False, flags=False)
        if self._is_series(x):
            return self._steps(x, settings, per_feature=True).feature_losses
        parts = [b.feature_losses for b in self.score_batches([x], settings, per_feature=True)]
        return parts[0] if len(parts) == 1 else np.concatenate([self._empty(), *parts])

    def predict(self, x, threshold: float | None = None) -> np.ndarray:
        """True where score > threshold. Scores are computed with the settings stored with
        the model's threshold (score type, samples, seed); `threshold` overrides its value.
        A windowed model's series: each reading's alarm (stream()), `threshold` the
        likelihood's."""
        if self._is_series(x):
            return self.stream(threshold=threshold).push(_as_array(x, "series")).is_anomaly
        settings = self.settings(threshold=threshold)
        if settings.threshold is None:
            raise BundleError(f"{self.source}: the model has no threshold; predict needs one")
        parts = [b.is_anomaly for b in self.score_batches([x], settings)]
        return np.concatenate([np.zeros(0, bool), *parts])

    def score_chunks(
        self,
        chunks: Iterable,
        samples: int | None = None,
        seed: int | None = None,
        score_type: str | None = None,
        per_feature: bool = False,
        complexity: bool | None = None,
    ) -> Iterator[np.ndarray]:
        """score() of an iterable of arrays as one long input, yielding each chunk's scores
        (per-feature losses with per_feature), with memory bounded by one chunk."""
        settings = self._settings(score_type, samples, seed, None, None, complexity, flags=False)
        start = 0
        for chunk in chunks:
            x = self._as_samples(chunk)
            parts = [
                b.feature_losses if per_feature else b.scores
                for b in self._chunk_batches(x, start, settings, per_feature)
            ]
            empty = self._empty() if per_feature else np.zeros(0, np.float32)
            yield parts[0] if len(parts) == 1 else np.concatenate([empty, *parts])
            start += len(x)

    # -- series ----------------------------------------------------------------------------

    def stream(
        self,
        columns: list[str] | None = None,
        timestamp: str | None = None,
        threshold: float | None = None,
        per_feature: bool = False,
        score_type: str | None = None,
        samples: int | None = None,
        seed: int | None = None,
        delimiter: str | None = None,
        adapt: bool = True,
    ) -> SeriesStream:
        """A windowed model on a stream (series.SeriesStream): push(readings) or
        push_line(csv_line), and each reading's score, likelihood and is_anomaly come back
        at once, from it and the readings before it only. columns, timestamp: a CSV
        stream's columns (default: the model's); delimiter: ',', ';' or 'tab' (default:
        recognised from its first line). threshold: the alarm's likelihood
        threshold (default: the model's series.alarm_threshold). adapt=False: a frozen
        model, shown the readings as they are (series.StreamRules). Scoring settings as for
        score()."""
        settings = self._settings(score_type, samples, seed, None, None, None, flags=False)
        return SeriesStream(self, settings, threshold=threshold, per_feature=per_feature,
                            columns=columns, timestamp=timestamp, delimiter=delimiter,
                            rules=StreamRules(adapt=adapt))  # fmt: skip

    def _is_series(self, x) -> bool:
        """A windowed model's input is a series, (T,) or (T, C): scored per reading; an
        array of its windows (N, W, C) is scored per window, as any model's samples."""
        return self.manifest.series is not None and np.ndim(x) < 3

    def _steps(self, x, settings: ScoreSettings, per_feature: bool = False) -> ScoredBatch:
        """A windowed model's results for a whole series x (T,) or (T, C): a stream's."""
        stream = SeriesStream(self, settings, per_feature=per_feature)
        batch = stream.push(_as_array(x, "series"))
        if batch is None:
            raise InputError("the series has no readings")
        return batch

    def _chunk_batches(self, x, start: int, settings: ScoreSettings, per_feature: bool):
        rows = settings.rows_per_batch
        for i in range(0, len(x), rows):
            yield self.score_batch(x[i : i + rows], start + i, settings, per_feature)

    def score_batch(self, x, start: int, settings: ScoreSettings, per_feature: bool):
        """One batch of rows x (n, *input_shape), the first being row `start` of the input."""
        batch = self._prepare(x, start)
        if settings.samples == 0:  # z = mu: images' default; one decoder row per sample
            mu, logvar, params = self.bundle.run_at_mean(batch.xp)
            logvar = clamp_logvar(logvar)
            losses = self.likelihood.nll(batch, params)  # (n, *input_shape)
            scores = scores_at_mean(losses, mu, logvar, settings.score_type)
            features = finite_float32(losses) if per_feature else None
        else:
            mu, logvar = self.bundle.run_encoder(batch.xp)
            logvar = clamp_logvar(logvar)
            n, k = mu.shape
            eps = self._noise(settings, start, n)
            z = draw_latents(mu, logvar, eps)  # (n, L, k)
            params = self.bundle.run_decoder(z.reshape(-1, k))
            params = params.reshape(n, settings.samples, *self.manifest.input_shape)
            losses = self.likelihood.nll(batch.with_draws_axis(), params)
            scores = scores_over_draws(losses, mu, logvar, z, eps, settings.score_type)
            features = finite_float32(losses.mean(axis=1)) if per_feature else None
        if settings.complexity:
            scores /= self.likelihood.complexity_bits(batch)
        flags = None if settings.threshold is None else scores > settings.threshold
        return ScoredBatch(start, scores, flags, features)

    def _noise(self, settings: ScoreSettings, start: int, n: int) -> np.ndarray:
        """eps (n, samples, k) of rows start .. start + n - 1: the manifest's stored noise,
        the same for every row, at the default seed and the default score's draws (so that
        the score graphs in any runtime reproduce the score); else row_noise."""
        stored = self._stored_eps
        if stored is not None and settings.seed == DEFAULT_SEED and len(stored) == settings.samples:
            return np.broadcast_to(stored, (n, *stored.shape))
        return row_noise(settings.seed, start, n, settings.samples, self.manifest.latent_dim)

    @functools.cached_property
    def _stored_eps(self) -> np.ndarray | None:
        eps = self.manifest.default_score.eps
        return None if eps is None else np.asarray(eps, np.float32)

    # -- the other jobs --------------------------------------------------------------------

    def encode(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Posterior parameters (mu, logvar), each (N, latent_dim)."""
        xp = self.preprocess(x)
        parts = [self.bundle.run_encoder(xp[i : i + self.batch_size]) for i in self._starts(xp)]
        if not parts:
            empty = np.zeros((0, self.manifest.latent_dim), np.float32)
            return empty, empty.copy()
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def decode(self, z) -> np.ndarray:
        """Decoder mean in the input's units, (N, *input_shape)."""
        z = _as_array(z, "z")
        if z.ndim != 2 or z.shape[1] != self.manifest.latent_dim:
            raise InputError(
                f"z must have shape (N, {self.manifest.latent_dim}), got {tuple(z.shape)}"
            )
        _require_finite(z, "z")
        z = np.ascontiguousarray(z, dtype=np.float32)
        out = [self.bundle.run_decoder(z[i : i + self.batch_size]) for i in self._starts(z)]
        return self.likelihood.mean(np.concatenate(out) if out else self._empty())

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """n new samples: z ~ N(0, I) drawn with NumPy, decoded to the input's units."""
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise InputError(f"n must be a positive integer, got {n!r}")
        rng = _rng(seed)
        return self.decode(rng.standard_normal((n, self.manifest.latent_dim), dtype=np.float32))

    def reconstruct(self, x, seed: int | None = None) -> np.ndarray:
        """Encode, draw one z per sample, decode: (N, *input_shape) in the input's units."""
        xp = self.preprocess(x)
        rng = _rng(seed)
        out = []
        for i in self._starts(xp):
            mu, logvar = self.bundle.run_encoder(xp[i : i + self.batch_size])
            logvar = clamp_logvar(logvar)
            eps = rng.standard_normal((len(mu), 1, mu.shape[1]), dtype=np.float32)
            out.append(self.bundle.run_decoder(draw_latents(mu, logvar, eps).reshape(mu.shape)))
        return self.likelihood.mean(np.concatenate(out) if out else self._empty())

    def preprocess(self, x) -> np.ndarray:
        """Validate raw input and preprocess it to the encoder's float32 input, exactly as
        training did."""
        return self._prepare(self._as_samples(x), 0).xp

    def nll_floor(self, x) -> np.ndarray:
        """Per sample, the reconstruction loss -log p(x | x) of a perfect reconstruction.

        Scores are measured from this floor, so a sample the model reconstructs exactly
        scores 0 whatever its content. Bernoulli: the entropy of the grey levels, 0 for
        0/1 data; with grey levels, images with more ink would otherwise score higher
        (measured on one-class MNIST: 1s scored as more normal than the 8s a model was
        trained on). Gaussian: a constant. score(score_type="elbo", complexity=False) +
        nll_floor(x) is the -ELBO (the training loss), likewise for "recon" and "iwae"."""
        batch = self._prepare(self._as_samples(x), 0)
        floor = self.likelihood.floor(batch)
        return floor.reshape(len(batch.xp), -1).sum(axis=1, dtype=np.float32)

    # -- input checks ----------------------------------------------------------------------

    def _as_samples(self, x) -> np.ndarray:
        """Check dtype and shape; return x as (N, *input_shape) without copying."""
        m = self.manifest
        x = _as_array(x, "input")
        shape = m.input_shape
        if x.shape == shape:
            x = x[None]  # one sample
        elif x.ndim == 2 and len(shape) > 1 and x.shape[1] == m.n_features:
            x = x.reshape(len(x), *shape)  # flat rows, e.g. from a CSV
        if x.shape[1:] != shape:
            flat = f" or (N, {m.n_features})" if len(shape) > 1 else ""
            raise InputError(
                f"input has shape {tuple(x.shape)}; this model takes samples of shape "
                f"{shape} (arrays (N, {', '.join(map(str, shape))}){flat})"
            )
        return x

    def _prepare(self, x: np.ndarray, start: int) -> Prepared:
        """Check values (finite) and hand rows to the likelihood; `start` is the index of
        x[0] in the whole input, for the error message."""
        if self.manifest.series is not None:
            batch = self.likelihood.prepare(x)
            if (batch.missing is not None or batch.target is not None) and np.isinf(x).any():
                i, position, channel = np.argwhere(np.isinf(x))[0]
                raise InputError(f"the reading of step {start + i + position}, channel "
                                 f"{channel}, is infinite")  # fmt: skip
            return batch
        _require_finite(x, "input", start)
        if self.manifest.grey_levels and start == 0 and x.size and 0 < x.max() <= 1:
            # e.g. MNIST as floats in [0, 1] given to a model trained on grey levels 0..255:
            # valid numbers, but scored as near-black images.
            warnings.warn(
                "input values are all within [0, 1] but this model was trained on uint8 data "
                "(0..255); if the data is scaled to [0, 1], multiply it by 255",
                InputWarning,
                stacklevel=4,
            )
        return self.likelihood.prepare(x)

    def _starts(self, x: np.ndarray) -> range:
        return range(0, len(x), self.batch_size)

    def _empty(self) -> np.ndarray:
        return np.zeros((0, *self.manifest.input_shape), np.float32)


def verify_bundle(path: str | Path | None = None) -> list[tuple[str, bool, str]]:
    """Every check on a bundle, (check, passed, detail) for each: the bundle's own checks
    (bundle.verify), then sampling and scoring with it. A bad bundle is reported, not
    raised."""
    report = bundles.verify(path)
    if not all(passed for _, passed, _ in report):
        return report
    model = EdgeVAE.load(path)
    x = model.sample(4, seed=0)
    scores = model.score(x, samples=2, seed=0)
    finite = bool(np.isfinite(x).all() and np.isfinite(scores).all())
    report.append(("sample and score give finite numbers", finite, f"scores {scores}"))
    same = np.array_equal(scores, model.score(x, samples=2, seed=0))
    report.append(("the same seed gives the same scores", same, "bit for bit" if same else ""))
    return report


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(check_seed(DEFAULT_SEED if seed is None else seed))


def _as_array(x, name: str) -> np.ndarray:
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise InputError(f"{name} is not a numeric array ({e})") from None
    if x.dtype.kind not in "uif":
        raise InputError(f"{name} has dtype {x.dtype}; numbers (int or float) are required")
    if x.ndim == 0:
        raise InputError(f"{name} is a scalar; an array of samples is required")
    return x


def _require_finite(x: np.ndarray, name: str, offset: int = 0) -> None:
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        first = np.argwhere(~np.isfinite(x))[0]
        where = f"sample {offset + int(first[0])}"
        if len(first) > 1:
            where += f", feature {tuple(int(i) for i in first[1:])}"
        raise InputError(f"{name} has NaN or infinite values (first in {where})")
