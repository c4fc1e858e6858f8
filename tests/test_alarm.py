"""The anomaly likelihood of a stream (runtime/alarm.py): calibrated tails, drift, one
report per rise, bounded state."""

import math

import numpy as np

from vae_edge.runtime.alarm import LEARNING, AnomalyLikelihood, likelihood_of_tail


def feed(likelihood, losses):
    return np.array([likelihood.update(v) for v in losses])


def test_silent_while_learning_then_calibrated_tails():
    rng = np.random.default_rng(0)
    lik = AnomalyLikelihood()
    out = feed(lik, rng.exponential(5.0, 6000))
    assert (out[:LEARNING] == 0).all() and out[LEARNING:].max() > 0
    # A loss at the distribution's 1 - 1e-3 quantile has a tail of about 1e-3, however
    # far above the history's 98% quantile the fitted tail must reach.
    for p in (1e-2, 1e-3, 1e-4):
        x = math.log1p(-5.0 * math.log(p))
        assert p / 3 < lik._tail_probability(x) < p * 3
    assert lik._tail_probability(math.log1p(1e6)) < 1e-30  # far out: tiny, not NaN


def test_same_unusualness_same_likelihood_on_any_scale():
    """Two sensors whose losses differ by a factor of 100 raise the same likelihoods for
    the same rare reading (a tail, not a raw score)."""
    rng = np.random.default_rng(1)
    base = rng.gamma(2.0, 1.0, 3000)
    spiky = np.append(base, 40.0)
    a = feed(AnomalyLikelihood(), 3.0 * spiky)[-1]
    b = feed(AnomalyLikelihood(), 300.0 * spiky)[-1]
    assert a > 0.5 and b > 0.5 and abs(a - b) < 0.1


def test_follows_drift_without_retraining():
    rng = np.random.default_rng(2)
    lik = AnomalyLikelihood(quiet=1)
    feed(lik, rng.exponential(1.0, 2000))
    shifted = feed(lik, 10.0 + rng.exponential(1.0, 3000))  # the sensor moved for good
    assert shifted[:5].max() > 0.5  # the move is unusual ...
    assert (shifted[-1000:] > 0.5).mean() < 0.01  # ... and becomes the new normal


def test_a_rise_is_reported_once_per_quiet_span():
    lik = AnomalyLikelihood(quiet=10)
    feed(lik, np.random.default_rng(4).exponential(1.0, 2000))
    out = feed(lik, [30.0] * 15 + [300.0])
    assert out[0] > 0.5 and (out[1:15] == 0).all()  # the same level again: already reported
    assert out[-1] > out[0]  # it grows: reported at once


def test_state_is_constant_in_size():
    lik = AnomalyLikelihood(quiet=64, history=500)
    feed(lik, np.random.default_rng(3).exponential(1.0, 20_000))
    assert lik._ring.shape == (500,) and len(lik._sorted) == 500 and len(lik._recent) <= 65


def test_likelihood_reads_as_a_tail():
    assert likelihood_of_tail(1.0) == 0.0
    assert abs(likelihood_of_tail(1e-3) - 0.5) < 0.002 and likelihood_of_tail(0.0) == 1.0
    assert likelihood_of_tail(1e-100) < 1.0  # does not saturate where 1 - tail does


def test_a_tail_taken_to_end_or_not():
    """A few dozen light-tailed excesses fit a negative shape, whose tail ends just past
    them: a loss beyond gets likelihood 1 (the default, which NAB rewards). With
    bounded=False the tail is exponential: a positive tail, a likelihood below 1."""
    rng = np.random.default_rng(5)
    losses = rng.uniform(0.0, 1.0, 600)
    bounded = AnomalyLikelihood()
    unbounded = AnomalyLikelihood(bounded=False)
    feed(bounded, losses)
    feed(unbounded, losses)
    just_past = 1.05
    assert bounded.judge(just_past) == 1.0
    assert 0.0 < unbounded.judge(just_past) < 0.9
