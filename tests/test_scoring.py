"""The scoring pass, runtime only: no torch, no shared data. Uses the shipped MNIST model and
the tiny committed table bundle (tests/data/tiny_bundle, `make tiny-bundle`)."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from vae_edge.cli import cli
from vae_edge.runtime import BundleError, EdgeVAE, InputError, InputWarning, ScoreSettings
from vae_edge.runtime.anomaly import write_threshold
from vae_edge.runtime.bundle import default_model_dir
from vae_edge.runtime.likelihood import Bernoulli, Gaussian, bernoulli_entropy
from vae_edge.runtime.manifest import DefaultScore, Manifest, Preprocessing, Threshold

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny_bundle"  # the conftest's tiny_bundle, as a constant for parametrised CLI args


@pytest.fixture(scope="module")
def tiny() -> EdgeVAE:
    return EdgeVAE.load(TINY)


def tiny_rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 6)).astype(np.float32) * 2


def test_runtime_tests_run_without_torch():
    """This file is the runtime-only suite CI also runs in a `pip install .` environment."""
    code = "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n" + (
        "from vae_edge.runtime import EdgeVAE; m = EdgeVAE.load(sys.argv[1]); "
        "print(m.score(m.sample(3, seed=0)).shape)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(TINY)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "(3,)", r.stderr


# -- the same numbers as before the redesign ---------------------------------------------------
# tests/data/*_reference.npz were written by the runtime as it stood before the scoring pass
# was rewritten (commit "Reference scores from the runtime before the scoring redesign").
# Scores with draws were rewritten where they changed when noise became keyed by row
# position (row_noise): with L draws the first max(1, 64 // L) rows still match the old
# ones (block 0's generator is the old one). The iwae scores were rewritten when log q(z|x)
# began to take the eps that made z instead of recovering it from z (changes up to 3e-7
# relative; it overflowed for tiny posterior variances), and again when the sums of the
# losses, the KL and log q(z|x) moved to float64 (format 2, the score graphs: changes up to
# 1.3e-7 relative, 33 of the shipped model's 46 arrays and 8 of the tiny bundle's 14).


def test_shipped_model_scores_are_bit_identical_to_the_previous_runtime():
    ref = np.load(DATA / "shipped_model_reference.npz")
    m = EdgeVAE.load()
    x8 = ref["x_uint8"]
    xf = x8.astype(np.float32) * np.float32(0.99) + np.float32(1.0)
    checked = 0
    for name, x in (("uint8", x8), ("float", xf)):
        for score_type in ("recon", "elbo", "iwae"):
            for samples in (0, 1, 5):
                if score_type == "iwae" and samples == 0:
                    continue
                for seed in (0, 7):
                    got = m.score(x, samples=samples, seed=seed, score_type=score_type,
                                  complexity=False)  # fmt: skip
                    np.testing.assert_array_equal(got, ref[f"{name}_{score_type}_{samples}_{seed}"])
                    checked += 1
        np.testing.assert_array_equal(m.feature_scores(x[:8]), ref[f"{name}_features_0"])
        np.testing.assert_array_equal(m.feature_scores(x[:8], samples=3, seed=2),
                                      ref[f"{name}_features_3"])  # fmt: skip
        np.testing.assert_array_equal(m.nll_floor(x), ref[f"{name}_floor"])
        mu, logvar = m.encode(x)
        np.testing.assert_array_equal(mu, ref[f"{name}_mu"])
        np.testing.assert_array_equal(logvar, ref[f"{name}_logvar"])
    np.testing.assert_array_equal(m.reconstruct(x8[:4], seed=4), ref["reconstruct"])
    np.testing.assert_array_equal(m.sample(4, seed=5), ref["sample"])
    small = EdgeVAE.load(batch_size=16)
    chunks = small.score_chunks([x8[:40], x8[40:]], samples=3, seed=9, complexity=False)
    np.testing.assert_array_equal(np.concatenate(list(chunks)), ref["chunks_elbo_3"])
    assert checked == 32
    # The shipped model scores as a newly exported image model does: -ELBO per complexity bit.
    assert m.manifest.default_score == DefaultScore("elbo", 0, complexity=True)
    bits = m.likelihood.complexity_bits(m.likelihood.prepare(x8))
    np.testing.assert_array_equal(m.score(x8), ref["uint8_elbo_0_0"] / bits)


def test_tiny_bundle_scores_are_bit_identical_to_the_previous_runtime(tiny):
    ref = np.load(DATA / "tiny_bundle_reference.npz")
    x = ref["x"]
    for score_type in ("recon", "elbo", "iwae"):
        for samples in (0, 1, 5):
            if score_type == "iwae" and samples == 0:
                continue
            got = tiny.score(x, samples=samples, seed=3, score_type=score_type)
            np.testing.assert_array_equal(got, ref[f"{score_type}_{samples}"])
    np.testing.assert_array_equal(tiny.feature_scores(x, samples=0), ref["features_0"])
    np.testing.assert_array_equal(tiny.feature_scores(x, samples=2, seed=1), ref["features_2"])
    np.testing.assert_array_equal(tiny.nll_floor(x), ref["floor"])
    np.testing.assert_array_equal(tiny.sample(10, seed=1), ref["sample"])
    np.testing.assert_array_equal(tiny.reconstruct(x[:10], seed=2), ref["reconstruct"])


# -- noise keyed by row position -------------------------------------------------------------


def test_row_noise_depends_on_the_seed_and_the_row_only():
    from vae_edge.runtime.scoring import row_noise

    whole = row_noise(5, 0, 300, 3, 2)
    for first, n in ((0, 1), (63, 2), (64, 64), (100, 150), (299, 1)):
        np.testing.assert_array_equal(row_noise(5, first, n, 3, 2), whole[first : first + n])
    assert not np.array_equal(row_noise(6, 0, 300, 3, 2), whole)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 299), max_size=4, unique=True), st.sampled_from([1, 3, 8]))
def test_rows_scored_in_any_pieces_with_their_first_row_get_the_whole_inputs_scores(cuts, samples):
    tiny = EdgeVAE.load(TINY, batch_size=50)
    x = tiny_rows(300, seed=4)
    config = tiny.settings(samples=samples, seed=11)
    whole = np.concatenate([b.scores for b in tiny.score_batches([x], config)])
    edges = [0, *sorted(cuts), 300]
    pieces = [
        b.scores
        for a, z in zip(edges[:-1], edges[1:], strict=True)  # each piece on its own, as a worker
        for b in tiny.score_batches([x[a:z]], config, first_row=a)
    ]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


# -- one pass, typed results ------------------------------------------------------------------


def test_score_batches_yields_typed_batches_from_one_pass(tiny):
    x = tiny_rows(1000)
    settings = tiny.settings(samples=2, seed=4, threshold=3.0, batch_size=100)
    batches = list(tiny.score_batches([x[:300], x[300:]], settings, per_feature=True))
    assert [b.start for b in batches] == [0, 50, 100, 150, 200, 250] + list(range(300, 1000, 50))
    scores = np.concatenate([b.scores for b in batches])
    np.testing.assert_array_equal(scores, tiny.score(x, samples=2, seed=4))
    np.testing.assert_array_equal(np.concatenate([b.is_anomaly for b in batches]), scores > 3.0)
    features = np.concatenate([b.feature_losses for b in batches])
    np.testing.assert_array_equal(features, tiny.feature_scores(x, samples=2, seed=4))
    # elbo scores with per-feature recon losses: the losses sum to the recon score
    np.testing.assert_allclose(features.sum(1), tiny.score(x, 2, 4, "recon"), rtol=1e-5)


def test_settings_come_from_the_call_then_the_stored_threshold_then_defaults(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(TINY, bundle)
    # a table model's default: -L_5; asked for z = mu without a score type: -ELBO at z = mu
    assert EdgeVAE.load(bundle).settings() == ScoreSettings("iwae", 5, 0, None, 1024)
    assert EdgeVAE.load(bundle).settings(samples=0) == ScoreSettings("elbo", 0, 0, None, 1024)
    manifest = json.loads((bundle / "vae.json").read_text())
    del manifest["default_score"]  # a bundle exported before it was recorded
    del manifest["score_graphs"]  # ... and before the score graphs
    manifest["format_version"] = 1
    (tmp_path / "old").mkdir()
    shutil.copy(bundle / "encoder.onnx", tmp_path / "old")
    shutil.copy(bundle / "decoder.onnx", tmp_path / "old")
    (tmp_path / "old" / "vae.json").write_text(json.dumps(manifest))
    assert EdgeVAE.load(tmp_path / "old").settings() == ScoreSettings("elbo", 0, 0, None, 1024)
    write_threshold(bundle, Threshold(value=5.0, score_type="iwae", samples=4, seed=2))
    model = EdgeVAE.load(bundle, batch_size=64)
    assert model.settings() == ScoreSettings("iwae", 4, 2, 5.0, 64)
    assert model.settings(threshold=1.5, batch_size=8) == ScoreSettings("iwae", 4, 2, 1.5, 8)
    with pytest.warns(InputWarning, match="scoring differs from the threshold's settings"):
        assert model.settings(samples=6).threshold == 5.0
    x = tiny_rows(50)
    # score() and predict() use the threshold's settings, so their numbers agree
    np.testing.assert_array_equal(model.score(x), model.score(x, 4, 2, "iwae"))
    np.testing.assert_array_equal(model.predict(x), model.score(x) > 5.0)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"samples": -1}, "samples must be an integer >= 0, got -1"),
        ({"samples": 1.5}, "samples must be an integer >= 0, got 1.5"),
        ({"score_type": "nll"}, "score_type must be one of recon, elbo, iwae, got 'nll'"),
        ({"score_type": "iwae"}, "score_type iwae needs samples >= 1 (the k of L_k)"),
        ({"seed": -3}, "seed must be an integer >= 0, got -3"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"threshold": float("nan")}, "threshold must be a finite number, got nan"),
    ],
)
def test_bad_settings_are_refused_with_one_exact_line(fields, message):
    with pytest.raises(InputError) as info:
        ScoreSettings(**fields)
    assert str(info.value) == message


# -- each graph once per batch, whatever the options --------------------------------------------


@pytest.fixture
def graph_runs(monkeypatch):
    """Counts InferenceSession.run calls per graph (by its first input: x or z)."""
    counts = {"x": 0, "z": 0}
    run = onnxruntime.InferenceSession.run

    def counted(self, output_names, input_feed, *args, **kwargs):
        counts[self.get_inputs()[0].name] += 1
        return run(self, output_names, input_feed, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", counted)
    return counts


SCORE_OPTIONS = [
    (score_type, samples, per_feature, threshold, output)
    for score_type in ("recon", "elbo", "iwae")
    for samples in (0, 3)
    for per_feature in (False, True)
    for threshold in (None, "2.5")
    for output in (None, "s.csv", "s.jsonl", "s.npy")
    if not (score_type == "iwae" and samples == 0) and not (per_feature and output == "s.npy")
]


@pytest.mark.parametrize("score_type, samples, per_feature, threshold, output", SCORE_OPTIONS)
def test_cli_score_runs_each_graph_once_per_batch(
    tmp_path, graph_runs, score_type, samples, per_feature, threshold, output
):
    x = tiny_rows(1000)
    np.save(tmp_path / "x.npy", x)
    args = ["score", "--model", TINY, tmp_path / "x.npy", "--batch-size", "64",
            "--score-type", score_type, "--samples", samples]  # fmt: skip
    args += ["--per-feature"] * per_feature + (["--threshold", threshold] if threshold else [])
    args += ["-o", tmp_path / output] if output else []
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows_per_batch = 64 // max(samples, 1)
    batches = -(-1000 // rows_per_batch)
    assert graph_runs == {"x": batches, "z": batches}


def test_score_reads_chunks_once_and_each_graph_once_per_batch(tiny, graph_runs):
    x = tiny_rows(700)
    settings = tiny.settings(samples=0, batch_size=100)
    list(tiny.score_batches([x], settings, per_feature=True))
    assert graph_runs == {"x": 7, "z": 7}


# -- writers that stream ----------------------------------------------------------------------


def test_each_output_format_holds_the_library_numbers(tmp_path, tiny):
    x = tiny_rows(3000)
    np.save(tmp_path / "x.npy", x)
    base = ["score", "--model", str(TINY), str(tmp_path / "x.npy"), "--batch-size", "256",
            "--threshold", "4"]  # fmt: skip
    runner = CliRunner()
    scores, features = tiny.score(x), tiny.feature_scores(x).reshape(len(x), -1)
    for name in ("s.csv", "s.jsonl", "s.npy"):
        extra = [] if name == "s.npy" else ["--per-feature"]
        r = runner.invoke(cli, [*base, *extra, "-o", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), scores)
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "index,score,is_anomaly," + ",".join(f"feature_{j}" for j in range(6))
    assert lines[1] == (f"0,{float(scores[0]):.9g},{int(scores[0] > 4)},"
                        + ",".join(f"{float(v):.6g}" for v in features[0]))  # fmt: skip
    table = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(table[:, 0], np.arange(3000))
    np.testing.assert_allclose(table[:, 1], scores, rtol=1e-8)
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(3000))
    assert [r["score"] for r in rows] == scores.tolist()
    assert [r["is_anomaly"] for r in rows] == (scores > 4).tolist()
    assert [r["features"] for r in rows] == features.tolist()
    stdout = runner.invoke(cli, [*base, "--per-feature"]).stdout  # CSV on stdout
    assert stdout == (tmp_path / "s.csv").read_text()


def test_an_empty_input_leaves_no_output_file(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 6), np.float32))
    for name in ("s.csv", "s.jsonl", "s.npy"):
        r = CliRunner().invoke(cli, ["score", "--model", str(TINY), str(tmp_path / "empty.npy"),
                                     "-o", str(tmp_path / name)])  # fmt: skip
        assert r.exit_code != 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.npy"]


# -- the likelihoods ------------------------------------------------------------------------


def test_bernoulli_floor_table_equals_computing_it():
    lik = Bernoulli(Preprocessing(kind="scale", scale=1 / 255))
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)
    from_table = lik.prepare(x).floor
    computed = lik.prepare(x.astype(np.float32)).floor
    np.testing.assert_array_equal(from_table, computed)
    np.testing.assert_array_equal(computed, bernoulli_entropy(x * np.float32(1 / 255)))
    with pytest.raises(InputError, match=r"must lie in \[0, 255\]"):
        lik.prepare(np.full((1, 4), 256.0, np.float32))


def test_gaussian_likelihood_with_fixed_and_learned_variance():
    prep = Preprocessing(kind="standardize", mean=[0.0, 0.0], std=[1.0, 1.0])
    x = np.array([[1.0, -2.0]], np.float32)
    fixed, learned = Gaussian(prep, None, (2,)), Gaussian(prep, [0.0, np.log(4.0)], (2,))
    batch = fixed.prepare(x)
    np.testing.assert_allclose(fixed.nll(batch, np.zeros((1, 2), np.float32)), [[0.5, 2.0]])
    np.testing.assert_allclose(learned.nll(batch, np.zeros((1, 2), np.float32)), [[0.5, 0.5]])
    half_log_2pi = 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(fixed.floor(batch), [[half_log_2pi, half_log_2pi]], rtol=1e-6)
    np.testing.assert_allclose(learned.floor(batch)[0, 1], np.log(2.0) + half_log_2pi, rtol=1e-6)
    np.testing.assert_array_equal(fixed.mean(batch.xp), x)


# -- progress: a bar on a terminal, nothing when piped -------------------------------------------


def _run_in_terminal(*args) -> str:
    """Run `vae-edge ARGS` with stdout and stderr on a pseudo-terminal; what it showed."""
    import os
    import pty

    parent, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "vae_edge.cli", *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=child, stderr=child)  # fmt: skip
    os.close(child)
    shown = b""
    while True:
        try:
            data = os.read(parent, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        shown += data
    assert proc.wait(timeout=120) == 0, shown
    os.close(parent)
    return shown.decode(errors="replace")


@pytest.mark.parametrize(
    "args, label",
    [
        (["score", "--model", TINY, "{x}", "-o", "{d}/s.csv"], "scoring"),
        (["evaluate", "--model", TINY, "--data", "{xy}", "--iwae-k", "5"], "-L_k, k = 5"),
        (["bench", "--model", TINY, "--batch-sizes", "1", "--seconds", "0.1"], "timing"),
    ],
)
def test_long_commands_show_progress_on_a_terminal_and_nothing_when_piped(tmp_path, args, label):
    x = tiny_rows(5000)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xy.npz", x=x, y=(np.arange(5000) % 10 == 0).astype(int))
    fill = {"x": tmp_path / "x.npy", "xy": tmp_path / "xy.npz", "d": tmp_path}
    args = [str(a).format(**fill) for a in args]
    shown = _run_in_terminal(*args)
    assert label in shown and "100%" in shown, shown
    piped = subprocess.run([sys.executable, "-m", "vae_edge.cli", *args],
                           capture_output=True, text=True)  # fmt: skip
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr


def test_iwae_stays_finite_for_a_tiny_posterior_variance():
    from vae_edge.runtime.scoring import scores_over_draws

    mu = np.zeros((1, 2), np.float32)
    logvar = np.full((1, 2), -200.0, np.float32)  # exp(-logvar / 2) overflows float32
    eps = np.ones((1, 3, 2), np.float32)
    z = mu[:, None] + np.exp(0.5 * logvar)[:, None] * eps
    losses = np.ones((1, 3, 4), np.float32)
    score = scores_over_draws(losses, mu, logvar, z, eps, "iwae")
    # log w = -4 - 0.5 * sum(z^2 - eps^2 - logvar) = -4 + 1 - 200 for each draw
    np.testing.assert_allclose(score, [4 - 1 + 200], rtol=1e-6)


def test_iwae_saturates_not_nan_when_every_loss_overflowed():
    from vae_edge.runtime.scoring import FLOAT32_MAX, scores_over_draws

    mu, logvar = np.zeros((2, 1), np.float32), np.zeros((2, 1), np.float32)
    eps = np.zeros((2, 2, 1), np.float32)
    losses = np.array([[[np.inf], [np.inf]], [[1.0], [1.0]]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or invalid-value warning either
        score = scores_over_draws(losses, mu, logvar, eps, eps, "iwae")
    assert score[0] == np.float32(FLOAT32_MAX) and score[1] == pytest.approx(1.0)


# -- complexity: image scores per bit of the image's complexity --------------------------------


def complexity_bits(image: np.ndarray, spatial: tuple[int, int]) -> float:
    """Written independently of the runtime, one uint8 image at a time, in float64: a bit
    per level, plus log2(1 + |step|) per step between neighbours along the two spatial
    axes."""
    levels = image.astype(np.int64)
    bits = float(levels.size)
    for axis in spatial:
        bits += float(np.log2(1 + np.abs(np.diff(levels, axis=axis))).sum())
    return bits


@pytest.fixture
def image_bundle(tmp_path) -> Path:
    """The shipped MNIST model with the default_score an image export now writes."""
    bundle = tmp_path / "mnist"
    shutil.copytree(default_model_dir(), bundle)
    manifest = json.loads((bundle / "vae.json").read_text())
    manifest["default_score"] = {"score_type": "elbo", "samples": 0, "complexity": True}
    (bundle / "vae.json").write_text(json.dumps(manifest))
    return bundle


def test_complexity_divides_each_score_by_the_images_complexity(image_bundle):
    model = EdgeVAE.load(image_bundle)
    x8 = np.load(DATA / "shipped_model_reference.npz")["x_uint8"]
    bits = np.array([complexity_bits(x, (0, 1)) for x in x8])
    assert 784 < bits.min() and bits.max() < 784 * 9  # a bit per level, at most 8 per step
    for score_type, samples in (("elbo", 0), ("recon", 0), ("iwae", 5)):
        nats = model.score(x8, samples, 3, score_type, complexity=False)
        per_bit = model.score(x8, samples, 3, score_type, complexity=True)
        np.testing.assert_allclose(per_bit, nats / bits, rtol=1e-6)
    # the model's default, from its manifest; float grey levels count as their uint8 ones
    np.testing.assert_array_equal(model.score(x8), model.score(x8, 0, 0, "elbo", True))
    np.testing.assert_array_equal(model.score(x8.astype(np.float32)), model.score(x8))
    assert model.settings().complexity and EdgeVAE.load().settings().complexity
    manifest = json.loads((image_bundle / "vae.json").read_text())
    del manifest["default_score"]  # a bundle exported before default_score: -ELBO in nats
    (image_bundle / "vae.json").write_text(json.dumps(manifest))
    assert not EdgeVAE.load(image_bundle).settings().complexity
    # per-feature losses and the likelihood figures stay in nats
    np.testing.assert_allclose(model.feature_scores(x8).sum(axis=(1, 2)),
                               model.score(x8, 0, 0, "recon", False), rtol=1e-5)  # fmt: skip
    # a flat image costs a bit per level, not nothing: its score stays finite
    flat = model.score(np.zeros((1, 28, 28), np.uint8), 0, 0, "elbo", False)
    np.testing.assert_allclose(model.score(np.zeros((1, 28, 28), np.uint8)), flat / 784)


@pytest.mark.parametrize(
    "shape, spatial",
    [((5, 7), (0, 1)), ((3, 5, 7), (1, 2)), ((5, 7, 3), (0, 1)), ((1, 5, 7), (1, 2))],
)
def test_complexity_of_each_image_layout(shape, spatial):
    """Steps are counted within each channel, along its height and width."""
    levels = np.random.default_rng(0).integers(0, 256, (4, *shape), dtype=np.uint8)
    levels[:, ..., :2] = 0  # some flat area, so the images differ
    likelihood = Bernoulli(Preprocessing(kind="scale", scale=1 / 255))
    bits = likelihood.complexity_bits(likelihood.prepare(levels))
    expected = [complexity_bits(x, spatial) for x in levels]
    np.testing.assert_allclose(bits, expected, rtol=1e-6)


def test_a_threshold_keeps_the_complexity_it_was_calibrated_with(image_bundle):
    from vae_edge.runtime.anomaly import calibrate

    x8 = np.load(DATA / "shipped_model_reference.npz")["x_uint8"]
    model = EdgeVAE.load(image_bundle)
    per_bit, nats = calibrate(model, x8), calibrate(model, x8, complexity=False)
    assert per_bit.complexity and not nats.complexity and per_bit.value < 1 < nats.value
    write_threshold(image_bundle, nats)
    model = EdgeVAE.load(image_bundle)
    assert model.manifest.threshold == nats
    np.testing.assert_array_equal(model.score(x8), model.score(x8, complexity=False))
    np.testing.assert_array_equal(model.predict(x8), model.score(x8) > nats.value)
    with pytest.warns(InputWarning, match="complexity False"):
        model.settings(complexity=True)


def test_complexity_is_refused_where_there_are_no_grey_levels(tiny, tmp_path):
    with pytest.raises(InputError) as info:
        tiny.score(tiny_rows(2), complexity=True)
    assert str(info.value) == "complexity is only for image models with a bernoulli likelihood"
    with pytest.raises(InputError, match="complexity must be True or False, got 'yes'"):
        ScoreSettings(complexity="yes")
    for field, value, message in [
        ("default_score", {"complexity": True}, "complexity is only for images"),
        ("default_score", {"complexity": "yes"}, "default_score.complexity must be true or"),
        ("threshold", {"value": 1.0, "complexity": 1}, "threshold.complexity must be true or"),
    ]:
        manifest = json.loads((TINY / "vae.json").read_text()) | {field: value}
        with pytest.raises(BundleError, match=message):
            Manifest.from_dict(manifest)


# -- finite in, finite out: any finite input gets a finite score ------------------------------

SCORE_OPTIONS = [("recon", 0), ("elbo", 0), ("recon", 3), ("elbo", 3), ("iwae", 1), ("iwae", 3)]
FLOAT32_LARGEST = float(np.finfo(np.float32).max)
finite32 = st.floats(-FLOAT32_LARGEST, FLOAT32_LARGEST, width=32)
# huge, tiny and ordinary magnitudes, both signs
magnitudes = st.one_of(finite32, st.floats(-10, 10, width=32),
                       st.sampled_from([FLOAT32_LARGEST, -FLOAT32_LARGEST, 1e-38, 1e30, -1e20]))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(row=st.lists(magnitudes, min_size=6, max_size=6), option=st.sampled_from(SCORE_OPTIONS))
def test_any_finite_table_row_gets_a_finite_score(tiny, row, option):
    x = np.array([row], np.float32)
    score = tiny.score(x, score_type=option[0], samples=option[1])
    features = tiny.feature_scores(x, samples=option[1])
    assert np.isfinite(score).all() and np.isfinite(features).all(), (row, option, score)
    as_float64 = tiny.score(x.astype(np.float64), score_type=option[0], samples=option[1])
    np.testing.assert_array_equal(score, as_float64)


@settings(max_examples=40, deadline=None)
@given(
    base=st.lists(st.floats(-3, 3, width=32), min_size=6, max_size=6),
    column=st.integers(0, 5),
    sign=st.sampled_from([1, -1]),
    exponents=st.tuples(st.floats(4, 38.5), st.floats(4, 38.5)),
    option=st.sampled_from(SCORE_OPTIONS),
)
def test_a_row_further_out_scores_higher_never_lower(tiny, base, column, sign, exponents, option):
    """Beyond the encoder's clip (STANDARDIZED_LIMIT standard deviations) up to float32's
    largest raw value: monotone in the distance along any column, for every score option
    (each row scored alone, so both get row 0's noise)."""
    p = tiny.manifest.preprocessing
    near, far = sorted(10**e for e in exponents)
    scores = []
    for distance in (near, far):
        row = np.array([base], np.float64) * p.std + p.mean
        row[0, column] = np.clip(p.mean[column] + sign * distance * p.std[column],
                                 -FLOAT32_LARGEST, FLOAT32_LARGEST)  # fmt: skip
        scores.append(
            tiny.score(row.astype(np.float32), score_type=option[0], samples=option[1])[0]
        )
    assert np.isfinite(scores).all() and scores[0] <= scores[1], (near, far, option, scores)


@settings(max_examples=15, deadline=None)
@given(
    far=st.lists(st.floats(1e5, FLOAT32_LARGEST, width=32), min_size=3, max_size=3),
    signs=st.lists(st.sampled_from([1, -1]), min_size=3, max_size=3),
    columns=st.lists(st.integers(0, 5), min_size=3, max_size=3),
)
def test_calibrate_and_predict_on_rows_far_out(tiny, tmp_path_factory, far, signs, columns):
    """The threshold of data holding rows far out (1e5 to float32's largest, either sign,
    any column) is finite, and those rows are the ones flagged."""
    from vae_edge.runtime.anomaly import calibrate

    x = tiny_rows(300)
    for i, (value, sign, column) in enumerate(zip(far, signs, columns, strict=True)):
        x[-3 + i, column] = sign * value
    threshold = calibrate(tiny, x, contamination=0.01)
    assert np.isfinite(threshold.value)
    bundle = shutil.copytree(tiny.source, tmp_path_factory.mktemp("b") / "bundle")
    write_threshold(bundle, threshold)
    flags = EdgeVAE.load(bundle).predict(x)
    assert flags[-3:].all() and flags.sum() <= 6


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["black", "white", "noise", "stripes"]),
    dtype=st.sampled_from([np.uint8, np.float32, np.float64]),
    option=st.sampled_from(SCORE_OPTIONS),
    complexity=st.booleans(),
)
def test_any_valid_image_gets_a_finite_score(kind, dtype, option, complexity):
    """The shipped image model on extreme images (flat black, flat white, pure noise,
    one-pixel stripes), as uint8 or as float grey levels: finite, and the same scores
    whatever the dtype."""
    model = _shipped()
    rng = np.random.default_rng(0)
    image = {"black": np.zeros((28, 28)), "white": np.full((28, 28), 255),
             "noise": rng.integers(0, 256, (28, 28)),
             "stripes": np.tile([0, 255], (28, 14))}[kind]  # fmt: skip
    score = model.score(image.astype(dtype), score_type=option[0], samples=option[1],
                        complexity=complexity)  # fmt: skip
    assert np.isfinite(score).all(), (kind, option, score)
    as_uint8 = model.score(image.astype(np.uint8), score_type=option[0], samples=option[1],
                           complexity=complexity)  # fmt: skip
    np.testing.assert_array_equal(score, as_uint8)


_SHIPPED = []


def _shipped() -> EdgeVAE:
    if not _SHIPPED:
        _SHIPPED.append(EdgeVAE.load(threads=1))
    return _SHIPPED[0]


@pytest.mark.parametrize("bundle", [None, TINY])
def test_bench_floor_computes_the_default_score(bundle):
    """vae-edge bench's floor is the same quantity by hand: the shipped model's -ELBO per
    complexity bit, the tiny bundle's -L_5 over the same row noise."""
    from vae_edge.runtime.bench import data_like_samples, default_score_jobs

    model = EdgeVAE.load(bundle, threads=1)
    for n in (1, 70):
        jobs = default_score_jobs(model, data_like_samples(model, n))
        np.testing.assert_allclose(jobs["bare_ort"](), jobs["vae_edge"](), rtol=1e-4)
