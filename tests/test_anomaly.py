"""Anomaly scoring: score types, per-feature scores, thresholds, evaluation metrics."""

import json
import shutil

import numpy as np
import pytest
from conftest import run_cli

from vae_edge.runtime import BundleError, EdgeVAE, InputError
from vae_edge.runtime.anomaly import (
    average_precision,
    calibrate,
    evaluate,
    roc_auc,
    write_threshold,
)


@pytest.fixture
def cardio_copy(cardio_bundle, tmp_path):
    bundle = tmp_path / "cardio"
    shutil.copytree(cardio_bundle, bundle)
    return bundle


def test_tabular_defaults_learn_a_gaussian_variance_per_feature(cardio_bundle):
    from vae_edge.training.train import MIN_STEPS, TRIM

    m = EdgeVAE.load(cardio_bundle).manifest
    assert m.likelihood == "gaussian" and len(m.observation_logvar) == 21
    assert len(set(m.observation_logvar)) > 1  # learned, not all equal
    options, data = m.training["options"], m.training["data"]
    steps = options["epochs"] * -(-data["n_train"] // options["batch_size"])
    assert options["epochs"] >= 10 and steps >= MIN_STEPS and options["trim"] == TRIM


def test_elbo_is_reconstruction_plus_closed_form_kl(cardio, cardio_bundle):
    model = EdgeVAE.load(cardio_bundle)
    x = cardio["x"][:50]
    mu, logvar = model.encode(x)
    kl = -0.5 * np.sum(1 + logvar - mu**2 - np.exp(logvar), axis=1)
    for samples in (0, 4):
        recon = model.score(x, samples=samples, seed=3, score_type="recon")
        elbo = model.score(x, samples=samples, seed=3, score_type="elbo")
        np.testing.assert_allclose(elbo, recon + kl, rtol=1e-5, atol=1e-4)
    # the model's default score: -L_5 (a table), and asked for z = mu: -ELBO
    np.testing.assert_array_equal(model.score(x), model.score(x, 5, 0, "iwae"))
    np.testing.assert_array_equal(model.score(x, samples=0), model.score(x, 0, 0, "elbo"))


def test_iwae_bound_is_tighter_than_the_elbo_and_equals_it_for_one_draw(cardio, cardio_bundle):
    model = EdgeVAE.load(cardio_bundle)
    x = cardio["x"][:200]
    # -L_1 is -ELBO with the KL estimated from the one draw: equal in expectation
    one = model.score(x, samples=1, seed=5, score_type="iwae")
    assert one.mean() == pytest.approx(model.score(x, samples=1, seed=5).mean(), rel=0.02)
    iwae = model.score(x, samples=200, seed=5, score_type="iwae")
    elbo = model.score(x, samples=200, seed=5, score_type="elbo")
    assert iwae.mean() < elbo.mean() and np.mean(iwae <= elbo) > 0.9  # -L_k <= -ELBO
    with pytest.raises(InputError, match="iwae needs samples >= 1"):
        model.score(x, samples=0, score_type="iwae")
    with pytest.raises(InputError, match="score_type must be one of"):
        model.score(x, score_type="mahalanobis")


def test_feature_scores_sum_to_the_reconstruction_score(cardio, cardio_bundle):
    model = EdgeVAE.load(cardio_bundle)
    x = cardio["x"][:30]
    per_feature = model.feature_scores(x, samples=2, seed=1)
    assert per_feature.shape == (30, 21)
    np.testing.assert_allclose(
        per_feature.sum(1), model.score(x, samples=2, seed=1, score_type="recon"), rtol=1e-5
    )
    corrupted = x.copy()
    corrupted[:, 7] += 50 * x[:, 7].std() + 50  # one feature far off
    assert (model.feature_scores(corrupted).argmax(1) == 7).all()


def test_calibrate_stores_the_threshold_and_predict_agrees_with_score(cardio, cardio_copy):
    model = EdgeVAE.load(cardio_copy)
    normal = cardio["x"][cardio["y"] == 0]
    t = calibrate(model, normal, quantile=0.95)
    assert t.rule == "quantile 0.95" and t.count == len(normal) and len(t.data_sha256) == 64
    assert np.mean(model.score(normal) > t.value) == pytest.approx(0.05, abs=0.002)
    write_threshold(cardio_copy, t)
    model = EdgeVAE.load(cardio_copy)
    assert model.threshold == t.value and model.manifest.threshold == t
    np.testing.assert_array_equal(model.predict(cardio["x"]), model.score(cardio["x"]) > t.value)
    c = calibrate(model, cardio["x"], contamination=0.1)
    assert c.rule == "contamination 0.1"
    assert np.mean(model.score(cardio["x"]) > c.value) == pytest.approx(0.1, abs=0.002)
    with pytest.raises(InputError, match="not both"):
        calibrate(model, normal, quantile=0.9, contamination=0.1)


def test_threshold_settings_travel_with_it(cardio, cardio_copy):
    model = EdgeVAE.load(cardio_copy)
    t = calibrate(model, cardio["x"], quantile=0.9, score_type="iwae", samples=8, seed=4)
    write_threshold(cardio_copy, t)
    model = EdgeVAE.load(cardio_copy)
    expected = model.score(cardio["x"], samples=8, seed=4, score_type="iwae") > t.value
    np.testing.assert_array_equal(model.predict(cardio["x"]), expected)


def test_metrics_match_hand_computed_values():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    # pairs (anomaly, normal) ranked right: 0.35 beats 0.1, 0.2; 0.8, 0.9 beat all three
    assert roc_auc(y, s) == pytest.approx(8 / 9)
    # ranking: 0.9(1) 0.8(1) 0.4(0) 0.35(1): AP = (1 + 1 + 3/4) / 3
    assert average_precision(y, s) == pytest.approx((1 + 1 + 0.75) / 3)
    assert roc_auc(y, np.zeros(6)) == 0.5  # ties count half
    assert roc_auc(np.zeros(3), np.arange(3)) is None


def test_evaluate_reports_auroc_auprc_and_threshold_metrics(cardio, cardio_bundle):
    model = EdgeVAE.load(cardio_bundle)
    result = evaluate(model, cardio["x"], cardio["y"])
    assert result["auroc"] > 0.8 and result["precision"] is None
    result = evaluate(
        model, cardio["x"], cardio["y"], threshold=float(np.median(model.score(cardio["x"])))
    )
    assert result["recall"] > 0.8 and 0 < result["precision"] < 1
    assert result["f1"] == pytest.approx(
        2 * result["precision"] * result["recall"] / (result["precision"] + result["recall"])
    )
    with pytest.raises(InputError, match="labels must be 0"):
        evaluate(model, cardio["x"][:3], np.array([0, 2, 1]))


def test_cli_calibrate_evaluate_and_score_with_per_feature(cardio, cardio_copy, tmp_path):
    normal = tmp_path / "normal.npy"
    np.save(normal, cardio["x"][cardio["y"] == 0])
    r = run_cli("calibrate", "--model", cardio_copy, "--data", normal, "--quantile", "0.98")
    assert r.returncode == 0, r.stderr
    t = json.loads((cardio_copy / "vae.json").read_text())["threshold"]
    assert t["rule"] == "quantile 0.98" and (t["score_type"], t["samples"]) == ("iwae", 5)

    labeled = tmp_path / "labeled.npz"
    np.savez(labeled, x=cardio["x"], y=cardio["y"])
    r = run_cli(
        "evaluate", "--model", cardio_copy, "--data", labeled, "--json", tmp_path / "e.json"
    )
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert {"auroc", "auprc", "precision", "recall", "f1"} <= result.keys()
    assert result["auroc"] > 0.8 and result["precision"] is not None

    np.save(tmp_path / "x.npy", cardio["x"][:5])
    r = run_cli("score", "--model", cardio_copy, tmp_path / "x.npy", "--per-feature")
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0].split(",")
    assert header[:3] == ["index", "score", "is_anomaly"] and header[-1] == "feature_20"
    r = run_cli("score", "--model", cardio_copy, tmp_path / "x.npy", "--threshold", "-1e9")
    assert all(line.endswith(",1") for line in r.stdout.splitlines()[1:])
    r = run_cli(
        "score",
        "--model",
        cardio_copy,
        tmp_path / "x.npy",
        "--per-feature",
        "-o",
        tmp_path / "s.npy",
    )
    assert r.returncode == 2 and "--per-feature needs .csv or .jsonl" in r.stderr


def test_calibrate_refuses_both_rules_and_keeps_the_manifest(cardio_copy, tmp_path):
    before = (cardio_copy / "vae.json").read_text()
    np.save(tmp_path / "x.npy", np.zeros((3, 21)))
    r = run_cli("calibrate", "--model", cardio_copy, "--data", tmp_path / "x.npy",
                "--quantile", "0.9", "--contamination", "0.1")  # fmt: skip
    assert r.returncode == 2 and "not both" in r.stderr
    r = run_cli("calibrate", "--model", cardio_copy, "--data", tmp_path / "missing.npy")
    assert r.returncode == 2 and (cardio_copy / "vae.json").read_text() == before


def test_predict_without_threshold_is_refused(cardio_bundle):
    with pytest.raises(BundleError, match="no threshold"):
        EdgeVAE.load(cardio_bundle).predict(np.zeros((1, 21)))


def test_constant_columns_are_handled(tmp_path):
    from vae_edge.export.onnx_export import export_run
    from vae_edge.training.train import train

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=(400, 3)), np.full(400, 7.0)]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    train(str(tmp_path / "x.npy"), tmp_path / "run", progress=False)
    export_run(tmp_path / "run", tmp_path / "bundle")
    model = EdgeVAE.load(tmp_path / "bundle")
    assert model.manifest.preprocessing.std[3] == 1.0
    normal = model.score(x[:50])
    assert np.isfinite(normal).all()
    off = x[:50].copy()
    off[:, 3] = 9.0  # the constant column changes: every sample scores higher
    assert (model.score(off) > normal).all()
    off[:, 3] = 12.0  # by 5 (its std counts as 1): above every normal sample
    assert (model.score(off) > normal.max()).all()


def test_likelihood_figures_on_real_digits(mnist_small, tmp_path):
    from vae_edge.runtime.anomaly import likelihood_figures

    model = EdgeVAE.load()  # the shipped model
    with np.load(mnist_small) as f:
        digits = f["x_test"][:100]
    figures = likelihood_figures(model, digits, k=100, seed=0)
    assert 80 < figures["neg_iwae"] < figures["neg_elbo"] < 130  # -L_k <= -ELBO
    assert figures["iwae_k"] == 100 and 0 < figures["active_units"] <= figures["latent_dim"] == 32
    assert figures == likelihood_figures(model, digits, k=100, seed=0)  # seeded
    np.savez(tmp_path / "test.npz", x_test=digits, y_test=np.arange(100) % 10)
    r = run_cli(
        "evaluate",
        "--data",
        tmp_path / "test.npz",
        "--iwae-k",
        "100",
        "--json",
        tmp_path / "e.json",
    )
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["neg_elbo"] == pytest.approx(figures["neg_elbo"], rel=1e-6)
    assert "auroc" not in result and "labels are not 0/1" in r.stderr
