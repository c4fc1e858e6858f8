"""What a score is: its settings, its result per batch, and the arithmetic from per-feature
losses and the posterior (mu, logvar) to one number per sample. NumPy only."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from vae_edge.runtime.errors import InputError

SCORE_TYPES = ("recon", "elbo", "iwae")
DEFAULT_SCORE_TYPE = "elbo"  # a bundle's own default is its manifest's default_score
DEFAULT_SEED = 0  # the seed when none is given, so score() and predict() agree call after call
DEFAULT_BATCH_SIZE = 1024
_LOWEST = float(np.finfo(np.float64).min)  # where every importance weight is 0, see iwae
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The posterior log-variance is clamped at this where the noise is drawn and in the KL (the
# torch side mirrors it, training.model.VAE.forward): the encoder maps rows far outside the
# training data to a huge logvar (558 seen on a sensor table), whose exp overflows float32
# and turned scores into inf - inf = NaN. A variance of e^30 is far beyond any posterior of
# ordinary data (the prior's is 1), so ordinary scores are unchanged.
LOGVAR_MAX = 30.0


@dataclass(frozen=True)
class ScoreSettings:
    """How to score, checked on construction. EdgeVAE.settings() fills what a call leaves
    out from the threshold stored with the model, else from these defaults.

    score_type "recon": the reconstruction loss -log p(x|z); "elbo": -ELBO = recon +
    KL(q(z|x) || p(z)); "iwae": -L_k, the importance-weighted bound with k = samples.
    samples 0 decodes z = mu (deterministic); samples L averages over L draws
    z = mu + exp(logvar / 2) * eps, eps from row_noise(seed, ...): keyed by row position.
    threshold: scores above it are anomalies (None: no flags).
    batch_size: most rows of one graph call (samples > 0: batch_size // samples rows).
    complexity: each score divided by the image's complexity in bits (image models with the
    Bernoulli likelihood only; see Bernoulli.complexity_bits): nats per bit."""

    score_type: str = DEFAULT_SCORE_TYPE
    samples: int = 0
    seed: int = DEFAULT_SEED
    threshold: float | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    complexity: bool = False

    def __post_init__(self):
        if not _is_count(self.samples):
            raise InputError(f"samples must be an integer >= 0, got {self.samples!r}")
        if self.score_type not in SCORE_TYPES:
            raise InputError(
                f"score_type must be one of {', '.join(SCORE_TYPES)}, got {self.score_type!r}"
            )
        if self.score_type == "iwae" and self.samples < 1:
            raise InputError("score_type iwae needs samples >= 1 (the k of L_k)")
        check_seed(self.seed)
        if not isinstance(self.complexity, (bool, np.bool_)):
            raise InputError(f"complexity must be True or False, got {self.complexity!r}")
        if not _is_count(self.batch_size) or self.batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.threshold is not None and not (
            isinstance(self.threshold, (int, float, np.floating))
            and not isinstance(self.threshold, bool)
            and math.isfinite(self.threshold)
        ):
            raise InputError(f"threshold must be a finite number, got {self.threshold!r}")

    @property
    def rows_per_batch(self) -> int:
        return max(1, self.batch_size // max(self.samples, 1))


@dataclass(frozen=True)
class ScoredBatch:
    """The result for rows start .. start + len(scores) - 1 of the input."""

    start: int
    scores: np.ndarray  # (n,) float32, nats from the floor (per bit with complexity)
    is_anomaly: np.ndarray | None = None  # (n,) bool, where the settings have a threshold
    feature_losses: np.ndarray | None = None  # (n, *input_shape) float32, when asked
    timestamps: np.ndarray | None = None  # (n,) a series' readings' timestamps, as given
    likelihood: np.ndarray | None = None  # (n,) float64 in [0, 1], a series' readings
    hindsight: np.ndarray | None = None  # (n,) float32, a series' readings after the fact
    in_alarm: np.ndarray | None = None  # (n,) bool, a series' readings: an alarm held


def scores_at_mean(losses, mu, logvar, score_type: str) -> np.ndarray:
    """Scores from per-feature losses (n, *shape) of z = mu, logvar clamped."""
    recon = np.add.reduce(losses.reshape(len(losses), -1), axis=1, dtype=np.float64)
    if score_type == "recon":
        return finite_float32(recon)
    return finite_float32(recon + kl_divergence(mu, logvar))


def scores_over_draws(losses, mu, logvar, z, eps, score_type: str) -> np.ndarray:
    """Scores from per-feature losses (n, L, *shape) of L draws z (n, L, k) made with noise
    eps (n, L, k), logvar clamped."""
    n, draws = losses.shape[:2]
    recon = np.add.reduce(losses.reshape(n, draws, -1), axis=2, dtype=np.float64)  # (n, L)
    if score_type == "recon":
        return finite_float32(recon.mean(axis=1))
    if score_type == "elbo":
        return finite_float32(recon.mean(axis=1) + kl_divergence(mu, logvar))
    # iwae: log w = log p(x|z) + log p(z) - log q(z|x); the log(2 pi) terms cancel, and
    # log q(z|x) takes the eps that made z (recovering it from z overflows for tiny
    # variances). The ufuncs' own reductions: np.sum's, np.max's and np.mean's arithmetic
    # without their Python overhead, most of the cost of a batch-1 call.
    z, eps, logvar = (np.asarray(a, np.float64) for a in (z, eps, logvar))
    log_w = -recon - 0.5 * np.add.reduce(np.square(z) - np.square(eps) - logvar[:, None], axis=2)
    # initial: a finite top where every weight is 0 (a loss overflowed), so the score is
    # +inf there, not NaN; elsewhere it changes nothing.
    top = np.maximum.reduce(log_w, axis=1, keepdims=True, initial=_LOWEST)
    with np.errstate(divide="ignore"):  # log(0) where every weight is 0: score +inf, saturated
        log_mean_w = top[:, 0] + np.log(np.add.reduce(np.exp(log_w - top), axis=1) / draws)
    return finite_float32(-log_mean_w)


def kl_divergence(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, closed form, for a clamped logvar. In
    float64, as the sums of the losses: its terms cancel (1 + logvar - exp(logvar) is
    about -logvar^2 / 2), and in float32 one ulp of exp(logvar) was 1e-5 of a series'
    score, which put the score graphs' numbers (another exp) that far from NumPy's."""
    mu, logvar = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
    # np.add.reduce is np.sum's arithmetic without its Python overhead
    return -0.5 * np.add.reduce(1 + logvar - np.square(mu) - np.exp(logvar), axis=1)


def clamp_logvar(logvar: np.ndarray) -> np.ndarray:
    """The encoder's logvar at most LOGVAR_MAX, in place (a fresh array from the graph)."""
    return np.minimum(logvar, np.float32(LOGVAR_MAX), out=logvar)


def finite_float32(a: np.ndarray) -> np.ndarray:
    """Scores as float32, a loss beyond float32's range saturated at its largest value:
    a row too far out to measure in float32 is as anomalous as any, never inf."""
    return np.minimum(a, FLOAT32_MAX).astype(np.float32, copy=False)


NOISE_ROWS = 64  # rows of one draw that share a noise generator (fewer with more draws)


def row_noise(seed: int, first_row: int, n: int, samples: int, k: int) -> np.ndarray:
    """eps ~ N(0, I), (n, samples, k), for rows first_row .. first_row + n - 1 of an input.

    With R = max(1, NOISE_ROWS // samples), row r takes row r % R of
    numpy.random.default_rng([seed, r // R]).standard_normal((R, samples, k), float32):
    its eps depends on the seed and its position in the input only, never on the batch,
    chunk or worker that scores it. Only the rows of a block up to the last one needed
    are drawn, so a batch of one row with 1,000 draws draws no more than that row's.
    """
    per = max(1, NOISE_ROWS // samples)
    end = first_row + n
    parts = []
    for block in range(first_row // per, (end - 1) // per + 1):
        start = block * per
        upto = min(end, start + per) - start  # rows of the block drawn, in order
        parts.append(_noise_block(seed, block, upto, samples, k)[max(first_row - start, 0) :])
    return np.concatenate(parts)


@functools.lru_cache(maxsize=8)
def _noise_block(seed: int, block: int, rows: int, samples: int, k: int) -> np.ndarray:
    """Kept: a stream of one-row calls scores row 0 each time, and seeding a generator costs
    more than the rest of such a call's NumPy work."""
    eps = np.random.default_rng([seed, block]).standard_normal((rows, samples, k), np.float32)
    eps.flags.writeable = False
    return eps


def draw_latents(mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """z = mu + exp(logvar / 2) * eps for eps (N, samples, k): shape (N, samples, k);
    logvar clamped (clamp_logvar)."""
    return mu[:, None, :] + np.exp(0.5 * logvar)[:, None, :] * eps


def check_seed(seed) -> int:
    if not _is_count(seed):
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _is_count(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0
