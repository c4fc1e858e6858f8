"""The decoder's likelihood p(x|z) in NumPy, chosen once from the manifest.

Each likelihood knows, for the encoder's input xp (preprocessed as in training) and the
decoder's output: the negative log-likelihood of each feature measured from its floor
-log p(x | x), the floor itself, and the decoder mean in the data's units. The torch side
mirrors it in the training package (VAE.reconstruction_nll, VAE.nll_floor).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from vae_edge.runtime.errors import InputError
from vae_edge.runtime.manifest import Manifest, Preprocessing, is_channels_first

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class Prepared(NamedTuple):
    """A batch ready for the graphs: the encoder's input, the floor of each feature (None
    where the floor is a constant the loss leaves out) and, where the encoder's input was
    clipped, the unclipped values in float64 that the loss measures (else None)."""

    xp: np.ndarray
    floor: np.ndarray | None
    target: np.ndarray | None = None
    levels: np.ndarray | None = None  # uint8 grey levels as given, for complexity_bits
    missing: np.ndarray | None = None  # bool, a series' missing readings (left out of the loss)

    def with_draws_axis(self) -> Prepared:
        """The same batch with an axis of length 1 after the rows, to meet L draws."""
        return Prepared(*(None if a is None else a[:, None] for a in self))


class Bernoulli:
    """Features in [0, 1] (grey levels scaled), decoder output = logits."""

    name = "bernoulli"

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing
        # uint8 input has 256 possible values: a table of their floors gives the same
        # numbers as computing them, 8x faster (the logs were a third of a batch-1024 score).
        levels = preprocessing.apply(np.arange(256, dtype=np.uint8))
        self._uint8_floor = bernoulli_entropy(levels)
        self._uint8_in_range = bool(levels.min() >= 0 and levels.max() <= 1)

    def prepare(self, x: np.ndarray) -> Prepared:
        """Raw samples -> encoder input and floor; values outside [0, 1] after scaling are
        refused (uint8 input that scales into [0, 1] is not scanned)."""
        xp = np.ascontiguousarray(self.preprocessing.apply(x), dtype=np.float32)
        uint8 = x.dtype == np.uint8
        if not (uint8 and self._uint8_in_range) and xp.size and (xp.min() < 0 or xp.max() > 1):
            high = float(self.preprocessing.invert(np.ones(1, np.float32))[0])
            raise InputError(
                f"input values must lie in [0, {high:g}] for this model "
                f"(found {float(x.min()):g} to {float(x.max()):g})"
            )
        if not uint8:
            return Prepared(xp, bernoulli_entropy(xp))
        levels = x if self.preprocessing.grey_levels else None
        return Prepared(xp, self._uint8_floor[x], levels=levels)

    def nll(self, batch: Prepared, logits: np.ndarray) -> np.ndarray:
        """BCE with logits minus the floor, per feature: softplus(l) - x * l - H(x).
        In place with np.exp/np.log, which are SIMD-vectorised for float32; np.logaddexp
        is not and took 4x longer at batch 1024. `logits` may carry a draws axis after the
        batch axis, and then batch.xp and batch.floor must have it too (length 1)."""
        t = np.abs(logits)
        np.negative(t, out=t)
        np.exp(t, out=t)
        t += 1
        np.log(t, out=t)
        t += np.maximum(logits, 0)
        t -= batch.xp * logits
        t -= batch.floor
        return t

    def floor(self, batch: Prepared) -> np.ndarray:
        """-log p(x | x) per feature: the entropy of the grey levels, 0 for 0/1 data."""
        return batch.floor

    def mean(self, logits: np.ndarray) -> np.ndarray:
        """The decoder mean in the data's units."""
        with np.errstate(over="ignore"):  # exp(-l) = inf for l << 0 gives mean 0, rightly
            return self.preprocessing.invert(1 / (1 + np.exp(-logits)))

    def complexity_bits(self, batch: Prepared) -> np.ndarray:
        """Each image's complexity in bits: the length of a simple lossless code of its
        8-bit levels, one bit per level plus log2(1 + |step|) for each step between
        neighbouring levels, across and down, in each channel. A likelihood finds simple
        images (flat areas, few strokes) likely whatever their class; dividing by a code
        length takes that out (after Serra et al., "Input complexity and out-of-distribution
        detection with likelihood-based generative models", 2020, who use a compressor's).
        NumPy on the whole batch: unlike a compressor, it costs little and gives the same
        bits on every machine."""
        levels = batch.levels if batch.levels is not None else np.rint(batch.xp * 255)
        n = len(levels)
        if levels.ndim == 4 and not is_channels_first(levels.shape[1:]):
            levels = np.moveaxis(levels, 3, 1)  # (N, H, W, C) -> (N, C, H, W)
        h, w = levels.shape[-2:]
        # Each channel's levels as one row, int16 for signed steps; the steps across and
        # down are differences of the row with itself shifted by 1 and by w, written side
        # by side into one array so that every later pass is one NumPy call.
        rows = levels.reshape(-1, h * w).astype(np.int16)
        steps = np.empty((len(rows), 2 * h * w - 1 - w), np.int16)
        across = steps[:, : h * w - 1]
        np.subtract(rows[:, 1:], rows[:, :-1], out=across)
        across[:, w - 1 :: w] = 0  # a row's last level and the next row's first: log2(1) = 0
        np.subtract(rows[:, w:], rows[:, :-w], out=steps[:, h * w - 1 :])
        np.abs(steps, out=steps)
        code = steps.astype(np.float32)
        code += 1
        np.log2(code, out=code)
        bits = np.add.reduce(code, axis=1).reshape(n, -1)
        return np.add.reduce(bits, axis=1) + np.float32(levels[0].size)

    def example_inputs(self, rng: np.random.Generator, shape) -> np.ndarray:
        """Valid encoder inputs for checks: uniform in [0, 1]."""
        return rng.random(shape, dtype=np.float32)


class Gaussian:
    """Standardised features, decoder output = means; variance learned per feature (the
    manifest's observation_logvar; for a series possibly per channel, the same at every
    step) or fixed at 1."""

    name = "gaussian"

    def __init__(self, preprocessing: Preprocessing, observation_logvar, input_shape):
        self.preprocessing = preprocessing
        self.logvar = None
        if observation_logvar is not None:
            self.logvar = np.asarray(observation_logvar, np.float32)
            if self.logvar.size != input_shape[-1]:
                self.logvar = self.logvar.reshape(input_shape)
            self._precision = np.exp(-self.logvar)

    def prepare(self, x: np.ndarray) -> Prepared:
        """A series' missing readings (NaN) enter the encoder at the channel's mean (0) and
        are left out of the loss, as Donut's modified ELBO does."""
        xp, clipped, missing = self.preprocessing.apply_and_clip(x)
        xp = np.ascontiguousarray(xp, dtype=np.float32)
        target = self.preprocessing.standardized_float64(x) if clipped else None
        if missing is not None:
            xp[missing] = 0
            if target is not None:
                target[missing] = 0
        return Prepared(xp, None, target, missing=missing)

    def nll(self, batch: Prepared, means: np.ndarray) -> np.ndarray:
        """0.5 (x - mean)^2 / variance per feature: -log p(x|z) less its floor. float64
        where the batch has rows beyond the encoder's clip (batch.target), so that their
        distance, up to float32's largest value over a tiny std, is measured, not inf."""
        if batch.target is not None:
            with np.errstate(over="ignore"):  # beyond float64: inf, saturated in the score
                t = np.square(batch.target - means)
        else:
            t = np.square(batch.xp - means)
        if self.logvar is not None:
            t *= self._precision
        t *= 0.5
        if batch.missing is not None:
            np.copyto(t, 0, where=np.broadcast_to(batch.missing, t.shape))
        return t

    def floor(self, batch: Prepared) -> np.ndarray:
        """-log p(x | x) per feature: 0.5 log variance + 0.5 log(2 pi), the same for all x."""
        logvar = 0 if self.logvar is None else self.logvar
        return np.broadcast_to(0.5 * logvar + np.float32(HALF_LOG_2PI), batch.xp.shape)

    def mean(self, means: np.ndarray) -> np.ndarray:
        return self.preprocessing.invert(means)

    def example_inputs(self, rng: np.random.Generator, shape) -> np.ndarray:
        """Valid encoder inputs for checks: standard normal."""
        return rng.standard_normal(shape, dtype=np.float32)


Likelihood = Bernoulli | Gaussian


def likelihood_of(manifest: Manifest) -> Likelihood:
    """The bundle's likelihood (the manifest has checked the name and its preprocessing)."""
    if manifest.likelihood == "bernoulli":
        return Bernoulli(manifest.preprocessing)
    return Gaussian(manifest.preprocessing, manifest.observation_logvar, manifest.input_shape)


def bernoulli_entropy(xp: np.ndarray) -> np.ndarray:
    """-(x log x + (1 - x) log(1 - x)) elementwise; 0 at x = 0 and x = 1. Computed only
    where 0 < x < 1: most pixels of an image are 0 or 1, and the logs dominate the cost.
    log(1 - x), not log1p(-x): NumPy vectorises log for float32, not log1p (9x slower)."""
    h = np.zeros_like(xp)
    inside = (xp > 0) & (xp < 1)
    v = xp[inside]
    h[inside] = -(v * np.log(v) + (1 - v) * np.log(1 - v))
    return h
