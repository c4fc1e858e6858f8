"""The anomaly likelihood of a stream: how unusual a reading is against the recent
distribution of the stream's own readings, in [0, 1], comparable across series and
models. NumPy and Python floats, state constant in size.

As numenta's anomaly likelihood (nupic `anomaly_likelihood.py`) does for HTM's raw scores,
each reading's loss (nats: its reconstruction loss as the last step of the window ending at
it) is judged against a sliding history of the stream's own losses, so the likelihood
follows slow drift without retraining the model. Where numenta fits a normal distribution
to the whole history, the tail is fitted here as extreme value theory fits tails (SPOT,
Siffer et al., KDD 2017): a generalised Pareto distribution over the losses above the
history's TAIL_LEVEL quantile, so that a reading's tail probability means the same on a
calm series and on a spiky one (a normal fit to log-losses left NAB's series on scales so
different that no one threshold served them: 27.8 against 35.9 on NAB's standard profile).
The tail probability p becomes likelihood 1 - p ** (1 / TAIL_ROOT).

A stream reports a reading's likelihood when it is higher than at each of the `quiet`
readings before it (the model's window), and 0 otherwise: the rise of an anomaly is
reported once, when it starts or grows, not again at every reading that still holds it
(NAB: 54.3 against 35.9 ungated). The constants were chosen on the 29 public NAB series
under NAB's scorer (benchmarks/nab.py --designs, benchmarks/results/nab-designs.md).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

# Losses the tail is fitted to (a sliding history): HTM's 8,640, a month of 5-minute
# readings' worth of drift; 2,016 did worse on NAB (50.5 against 54.3).
HISTORY = 8640
# Losses that must be in the history before the likelihood speaks (0 until then).
LEARNING = 288
# The tail: the losses above this quantile of the history (0.97: 50.2, 0.99: 53.6).
TAIL_LEVEL = 0.98
# The tail is fitted again every this many readings (a sort of the history: about 0.5 ms
# at HISTORY), not at every one.
REFIT = 50
# Fewer excesses than this over the tail's threshold fit an exponential tail instead.
MIN_EXCESSES = 5
# Whether a fit may give the tail an end (a negative shape): a loss just past it has tail
# 0 and likelihood 1. That raises some normal readings (NAB: alarms on 0.076% of its
# normal readings, against 0.059% with such tails taken as exponential, never bounded),
# and raises anomalies early: NAB 59.6 against 51.9 (benchmarks/results/nab-designs.md).
BOUNDED = True
# likelihood = 1 - tail ** (1 / TAIL_ROOT): 0.5 is a tail of 1 in 1,000, 0.68 1 in 100,000,
# 0.9 1 in 10 ** 10; it reaches 1.0 in float64 only past 1 in 10 ** 150, so it does not
# saturate where a plain 1 - tail does (at 1 in 10 ** 16).
TAIL_ROOT = 10
# The default alarm: a likelihood above 0.5 (a tail of 1 in 1,000 beyond the stream's
# recent losses). On NAB the default alarms scored 52.6 to 55.1 for any threshold from
# 0.45 to 0.55, raising them on 0.08% to 0.2% of the normal readings.
ALARM_THRESHOLD = 0.5


def likelihood_of_tail(tail: float) -> float:
    """The likelihood of an upper tail probability (TAIL_ROOT)."""
    return 1.0 - max(tail, 0.0) ** (1.0 / TAIL_ROOT)


class AnomalyLikelihood:
    """update(loss) -> likelihood in [0, 1] of each reading's loss, in order.

    State: a ring of the last `history` log-losses, the tail fitted at the last refit (a
    sorted copy of the ring, its threshold and generalised Pareto parameters), and the
    highest of the last `quiet` tail likelihoods (a monotonic queue)."""

    def __init__(self, quiet: int = 1, history: int = HISTORY, learning: int = LEARNING,
                 level: float = TAIL_LEVEL, refit: int = REFIT,
                 bounded: bool = BOUNDED):  # fmt: skip
        if not (quiet >= 1 and history >= 2 and 1 <= learning <= history and 0 < level < 1
                and refit >= 1):  # fmt: skip
            raise ValueError("need quiet >= 1, history >= 2, 1 <= learning <= history, "
                             "0 < level < 1, refit >= 1")  # fmt: skip
        self.quiet, self.history, self.learning = quiet, history, learning
        self.level, self.refit, self.bounded = level, refit, bounded
        self._ring = np.zeros(history)
        self.count = 0  # losses seen
        self._sorted = None  # the history at the last fit, sorted
        self._fitted_at = -1  # the count of losses at the last fit
        self._tail = (0.0, 0.0, 1.0, 0.0)  # threshold, shape, scale, share above
        self._recent = deque()  # (index, tail likelihood), decreasing: the last `quiet`
        self.readings = 0  # losses judged, learnt or not
        self.raw = 0.0  # the last reading's tail likelihood, before the gate

    @property
    def speaking(self) -> bool:
        """Whether the history holds enough losses to judge one (LEARNING)."""
        return min(self.count, self.history) >= self.learning

    def update(self, loss: float, at_least: float = 0.0, learn: bool = True) -> float:
        """Take the next reading's loss (nats, >= 0 from the floor) and return its
        likelihood: its tail likelihood (at least `at_least` once the likelihood speaks:
        the stream's spatial check) if higher than at each of the `quiet` readings before
        it, else 0. learn=False judges the loss without taking it into the history (a
        held alarm's readings are kept out, so that an anomaly is not learnt as normal)."""
        x = math.log1p(max(float(loss), 0.0))
        n = min(self.count, self.history)  # the fit is of the losses before this one
        raw = 0.0
        if n >= self.learning:
            due = self.count % self.refit == 0 and self._fitted_at != self.count
            if self._sorted is None or due:
                self._fit(n)
            raw = max(likelihood_of_tail(self._tail_probability(x)), at_least)
        self.raw = raw
        if learn:
            self._ring[self.count % self.history] = x
            self.count += 1
        i = self.readings
        self.readings += 1
        recent = self._recent
        while recent and recent[0][0] <= i - self.quiet - 1:  # older than `quiet` readings
            recent.popleft()
        novel = not recent or raw > recent[0][1]
        while recent and recent[-1][1] <= raw:
            recent.pop()
        recent.append((i, raw))
        return raw if novel else 0.0

    def judge(self, loss: float) -> float:
        """The tail likelihood of a loss against the history so far (ungated), without
        taking it in: a stream frozen after its normal part, so that every later reading
        is judged against that part alone (0 before LEARNING losses)."""
        n = min(self.count, self.history)
        if n < self.learning:
            return 0.0
        if self._fitted_at != self.count:
            self._fit(n)
        return likelihood_of_tail(self._tail_probability(math.log1p(max(float(loss), 0.0))))

    def _fit(self, n: int) -> None:
        """The generalised Pareto tail of the history above its `level` quantile, by the
        method of moments (Hosking & Wallis 1987): shape 0.5 (1 - m^2 / v), scale
        0.5 m (m^2 / v + 1) for excesses of mean m and variance v."""
        history = np.sort(self._ring[:n])
        threshold = float(history[int(self.level * n)])
        excesses = history[history > threshold] - threshold
        share = len(excesses) / n
        shape, scale = 0.0, 1e-3
        if len(excesses) >= MIN_EXCESSES:
            m, v = float(excesses.mean()), float(excesses.var())
            if v > 0:
                shape, scale = 0.5 * (1 - m * m / v), 0.5 * m * (m * m / v + 1)
            if v <= 0 or (self.bounded is False and shape < 0):
                shape, scale = 0.0, max(m, 1e-3)  # exponential: the mean excess
        elif len(excesses):
            scale = max(float(excesses.mean()), scale)
        self._sorted = history
        self._fitted_at = self.count
        self._tail = (threshold, shape, scale, share)

    def _tail_probability(self, x: float) -> float:
        """P(loss >= x) under the fit: the history's share at or above x within it, the
        generalised Pareto tail beyond its threshold."""
        threshold, shape, scale, share = self._tail
        if x <= threshold:
            n = len(self._sorted)
            return (n - int(np.searchsorted(self._sorted, x, side="left"))) / n
        y = (x - threshold) / scale
        if abs(shape) < 1e-9:
            return share * math.exp(-y)
        base = 1.0 + shape * y
        return share * base ** (-1.0 / shape) if base > 0 else 0.0
