"""Finite data in, finite scores out, on models trained here: a sensor-array table whose
columns span six orders of magnitude (the table that scored NaN), near-constant and
constant columns, extreme training rows, and a Gaussian image model. The runtime-only
property tests on the committed bundles are in test_scoring.py."""

import itertools
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vae_edge.export.onnx_export import export_run
from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.anomaly import calibrate, write_threshold
from vae_edge.runtime.manifest import STANDARDIZED_LIMIT
from vae_edge.runtime.scoring import FLOAT32_MAX
from vae_edge.training.train import choose_likelihood, load_run, train

FLOAT32_LARGEST = np.finfo(np.float32).max
# Every score option of `vae-edge score`: (score_type, samples).
SCORE_OPTIONS = [("recon", 0), ("elbo", 0), ("recon", 5), ("elbo", 5), ("iwae", 1), ("iwae", 5)]


def sensor_table(rows: int, seed: int = 0) -> np.ndarray:
    """128 columns whose typical values span 1e-1 to 7e5, correlated through 4 factors."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(-1, np.log10(7e5), 128)
    factors = rng.standard_normal((rows, 4)) @ rng.standard_normal((4, 128))
    noise = 0.3 * rng.standard_normal((rows, 128))
    return (scales * (3 + factors + noise)).astype(np.float32)


def train_bundle(x: np.ndarray, folder, **options) -> EdgeVAE:
    np.save(folder / "train.npy", x)
    train(str(folder / "train.npy"), folder / "run", progress=False, **options)
    export_run(folder / "run", folder / "bundle")
    return EdgeVAE.load(folder / "bundle", threads=1)


@pytest.fixture(scope="module")
def sensor(tmp_path_factory):
    x = sensor_table(600)
    folder = tmp_path_factory.mktemp("sensor")
    return train_bundle(x, folder, epochs=20), x, folder / "bundle"


def far_row(x: np.ndarray, column: int, stds: float) -> np.ndarray:
    """The training mean with `column` moved `stds` training standard deviations up."""
    row = x.mean(axis=0, dtype=np.float64)
    row[column] += stds * x[:, column].std(dtype=np.float64)
    return row[None]


def all_scores(model: EdgeVAE, row: np.ndarray) -> dict:
    scores = {
        (t, k): model.score(row, score_type=t, samples=k, seed=0)[0] for t, k in SCORE_OPTIONS
    }
    scores["features"] = model.feature_scores(row, samples=0)
    scores["features, draws"] = model.feature_scores(row, samples=3)
    return scores


def test_sensor_table_row_far_out_scores_finite(sensor):
    """The reported failure: one test row 2e4 training standard deviations out in one
    column (and that value pushed to 1e30 and float32's largest) scored NaN with the
    default score, -ELBO at z = mu gave inf."""
    model, x, _ = sensor
    # the column whose far row the encoder gives the largest logvar
    column = max(range(128), key=lambda c: model.encode(far_row(x, c, 2e4))[1].max())
    row = far_row(x, column, 2e4)
    assert model.encode(row)[1].max() > 88  # exp(logvar) overflows float32: the trap is armed
    rows = [row]
    for value in (1e30, FLOAT32_LARGEST, -FLOAT32_LARGEST):
        r = row.astype(np.float32)
        r[0, column] = value
        rows.append(r)
    for r in rows:
        for option, score in all_scores(model, r).items():
            assert np.isfinite(score).all(), (option, r[0, column], score)
        assert np.isfinite(model.score(r)).all()  # the bundle's default


def test_sensor_table_far_out_is_monotone(sensor):
    """Further out along a column scores higher, never lower, for every score option, up
    to float32's largest value; each row scored alone so that all get row 0's noise."""
    model, x, _ = sensor
    std = x[:, 90].std(dtype=np.float64)
    mean = x[:, 90].mean(dtype=np.float64)
    distances = [STANDARDIZED_LIMIT * 10**e for e in range(0, 30, 3)]
    distances.append((FLOAT32_LARGEST - mean) / std)
    for option in SCORE_OPTIONS:
        scores = [model.score(far_row(x, 90, d), score_type=option[0], samples=option[1])[0]
                  for d in distances]  # fmt: skip
        assert all(np.isfinite(scores)), (option, scores)
        assert all(a <= b for a, b in itertools.pairwise(scores)), (option, scores)
        assert scores[0] < scores[-1] <= FLOAT32_MAX


def test_sensor_table_calibrate_and_predict(sensor, tmp_path):
    """A threshold from data holding far rows is finite, and the farthest rows are the
    ones flagged (a NaN score was never flagged: NaN > t is False)."""
    model, x, bundle = sensor
    far = np.concatenate([far_row(x, 7, 2e4), far_row(x, 7, 1e9)]).astype(np.float32)
    data = np.concatenate([x[:200], far])
    threshold = calibrate(model, data, contamination=0.01)
    assert np.isfinite(threshold.value)
    bundle = shutil.copytree(bundle, tmp_path / "bundle")
    write_threshold(bundle, threshold)
    flags = EdgeVAE.load(bundle).predict(data)
    assert flags[-2:].all()


def test_near_constant_and_constant_columns(tmp_path):
    """Training columns held constant or nearly so (spread far below float32's resolution
    of the mean): training gives finite weights, every score is finite, new values in
    those columns score far above the training rows."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 6))
    x[:, 1] = 7e5  # constant
    x[:, 2] = 3.0 + 1e-12 * rng.standard_normal(400)  # near-constant, below float32's ulp
    x[:, 3] = 1e-30 * rng.standard_normal(400)  # tiny scale
    x[:, 4] = 1e30 * rng.standard_normal(400)  # huge scale
    _, prep = choose_likelihood(x)
    assert np.isfinite(prep.apply(x)).all() and np.abs(prep.apply(x)).max() < 10
    model = train_bundle(x, tmp_path, epochs=5)
    weights = load_run(tmp_path / "run")[0].state_dict().values()
    assert all(torch.isfinite(w).all() for w in weights)
    base = model.score(x[:50].astype(np.float32))
    assert np.isfinite(base).all()
    for column, value in ((1, 8e5), (2, 3.1), (3, 1e-3), (4, 3e38)):
        row = x[:1].copy()
        row[0, column] = value
        for option, score in all_scores(model, row).items():
            assert np.isfinite(score).all(), (column, option, score)
        assert model.score(row)[0] > base.max(), column


def test_training_on_extreme_rows_stays_finite(tmp_path):
    """Rows at float32's largest value among the training data: the weights stay finite
    and so do the scores of the training data."""
    x = sensor_table(300).astype(np.float64)
    x[0, 3] = FLOAT32_LARGEST
    x[1, 9] = -1e30
    model = train_bundle(x, tmp_path, epochs=5)
    weights = load_run(tmp_path / "run")[0].state_dict().values()
    assert all(torch.isfinite(w).all() for w in weights)
    for option in SCORE_OPTIONS:
        scores = model.score(x, score_type=option[0], samples=option[1])
        assert np.isfinite(scores).all(), option


@pytest.fixture(scope="module")
def gaussian_images(tmp_path_factory):
    """Images with negative values (not grey levels): the Gaussian likelihood per pixel."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((300, 8, 8)) + np.linspace(-1, 1, 8)).astype(np.float32)
    model = train_bundle(x, tmp_path_factory.mktemp("gimages"), epochs=5)
    assert model.manifest.likelihood == "gaussian"
    return model, x


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pixel=st.tuples(st.integers(0, 7), st.integers(0, 7)),
    value=st.floats(-FLOAT32_LARGEST, FLOAT32_LARGEST, width=32),
    option=st.sampled_from(SCORE_OPTIONS),
)
def test_gaussian_image_model_any_finite_pixel(gaussian_images, pixel, value, option):
    model, x = gaussian_images
    image = x[:1].copy()
    image[0][pixel] = value
    score = model.score(image, score_type=option[0], samples=option[1])
    assert np.isfinite(score).all(), (pixel, value, option, score)
