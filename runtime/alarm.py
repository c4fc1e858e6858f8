"""The anomaly likelihood of a stream: how unusual a reading is against the recent
distribution of the stream's own readings, in [0, 1], comparable across series and
models. Pure Python floats, state constant in size.

As numenta's anomaly likelihood (nupic `anomaly_likelihood.py`) does for HTM's raw scores:
each reading's loss (nats: its reconstruction loss as the last step of the window ending at
it) is put on a log scale, averaged over the last AVERAGE readings, and compared with a
normal distribution fitted to the same values over a sliding history; the upper tail
probability says how unusual it is. The history follows slow drift without retraining
the model; the log scale makes a loss twice its usual size equally unusual on every
model. The constants were chosen on the 29 public NAB series under NAB's scorer
(benchmarks/nab.py --designs, benchmarks/results/nab-designs.md).
"""

from __future__ import annotations

import math

# Readings averaged before the comparison: 1 (none) found NAB's anomalies earlier than
# HTM's 10, whose average delays a rise by several readings.
AVERAGE = 1
# Values the distribution is fitted to (a sliding history): HTM's 8,640, a month of hourly
# or a month of 5-minute readings' worth of drift; 2,016 did a little worse.
HISTORY = 8640
# Values that must be in the history before the likelihood speaks (0 until then).
LEARNING = 288
# A fitted spread below this (log units: 1%) is noise-free data, where any change would
# be infinitely unlikely; the floor keeps such a stream's likelihood finite and calm.
MIN_SPREAD = 0.01
# likelihood = 1 - tail ** (1 / TAIL_ROOT): 0.5 is a tail of 1 in 1,000, 0.68 1 in 100,000,
# 0.9 1 in 10 ** 10; it reaches 1.0 in float64 only past 1 in 10 ** 150, so it does not
# saturate where a plain 1 - tail does (at 1 in 10 ** 16).
TAIL_ROOT = 10
# The default alarm: a likelihood above 0.9 (a tail of 1 in 10 ** 10: a reading's loss is
# heavier-tailed than a normal's). On NAB its alarms scored 37.9 to 41.0 for any threshold
# from 0.8 to 0.92, raising them on 0.1% to 0.2% of the readings.
ALARM_THRESHOLD = 0.9


def likelihood_of_tail(tail: float) -> float:
    """The likelihood of an upper tail probability (TAIL_ROOT)."""
    return 1.0 - max(tail, 0.0) ** (1.0 / TAIL_ROOT)


class AnomalyLikelihood:
    """update(loss) -> likelihood in [0, 1] of each reading's loss, in order.

    State: the last `average` log-losses and the last `history` short-term means (two
    rings), their running sums (recomputed exactly once per `history` updates, so rounding
    does not drift over a long stream)."""

    def __init__(self, average: int = AVERAGE, history: int = HISTORY, learning: int = LEARNING):
        if not (average >= 1 and history >= 2 and 1 <= learning <= history):
            raise ValueError("need average >= 1, history >= 2, 1 <= learning <= history")
        self.average, self.history, self.learning = average, history, learning
        self._recent = [0.0] * average
        self._means = [0.0] * history
        self.count = 0  # scores seen
        self._recent_sum = 0.0
        self._sum = 0.0
        self._squares = 0.0

    def update(self, loss: float) -> float:
        """Take the next reading's loss (nats, >= 0 from the floor) and return its
        likelihood."""
        x = math.log1p(max(float(loss), 0.0))
        i = self.count % self.average
        self._recent_sum += x - self._recent[i]
        self._recent[i] = x
        self.count += 1
        mean = self._recent_sum / min(self.count, self.average)
        # The fit is of the history before this reading: an anomaly does not hide itself.
        n = min(self.count - 1, self.history)
        likelihood = 0.0
        if n >= self.learning:
            centre = self._sum / n
            spread = math.sqrt(max(self._squares / n - centre * centre, 0.0))
            z = (mean - centre) / max(spread, MIN_SPREAD)
            likelihood = likelihood_of_tail(0.5 * math.erfc(z / math.sqrt(2.0)))
        j = (self.count - 1) % self.history
        old = self._means[j]
        self._means[j] = mean
        self._sum += mean - old
        self._squares += mean * mean - old * old
        if j == self.history - 1:  # a full turn of the ring: exact sums again
            self._sum = math.fsum(self._means)
            self._squares = math.fsum(m * m for m in self._means)
        if self.count % self.average == 0:
            self._recent_sum = math.fsum(self._recent)
        return likelihood
