"""The torch-free runtime: loading, sampling, scoring, noise, validation, bundle trust."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vae_edge.runtime import BundleError, EdgeVAE, InputError
from vae_edge.runtime.scoring import draw_latents


@pytest.fixture(scope="module")
def default_model() -> EdgeVAE:
    return EdgeVAE.load()


def test_runtime_loads_samples_and_scores_with_torch_and_onnx_blocked():
    code = """
import sys
sys.modules["torch"] = None
sys.modules["onnx"] = None
sys.modules["onnxscript"] = None
from vae_edge.runtime import EdgeVAE
m = EdgeVAE.load()
x = m.sample(5, seed=3)
s = m.score(x, samples=2, seed=1)
assert x.shape == (5, 28, 28) and s.shape == (5,) and (s > 0).all()
from vae_edge.runtime import bench
assert len(bench.run(m, (1, 2), seconds=0.1)) == 4
loaded = [k for k in sys.modules if k.split(".")[0] in ("torch", "onnx", "onnxscript")]
assert all(sys.modules[k] is None for k in loaded), loaded
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_runtime_sources_import_neither_torch_nor_onnx_nor_ray():
    from pathlib import Path

    import vae_edge.runtime

    for file in Path(vae_edge.runtime.__file__).parent.glob("*.py"):
        text = file.read_text()
        for banned in ("import torch", "import onnx\n", "from onnx", "vae_edge.training",
                       "vae_edge.export", "import ray", "import pyarrow",
                       "vae_edge.ray_data"):  # fmt: skip
            assert banned not in text, f"{file.name} contains {banned!r}"


def test_default_model_shapes(default_model):
    m = default_model
    assert m.manifest.input_shape == (28, 28)
    x = m.sample(7, seed=0)
    assert x.shape == (7, 28, 28) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (7, m.manifest.latent_dim)
    assert m.decode(mu).shape == (7, 28, 28)
    assert m.reconstruct(x, seed=0).shape == (7, 28, 28)
    assert m.score(x).shape == (7,)


def test_default_model_scores_real_digits_below_corrupted_ones(default_model, data_dir):
    with np.load(data_dir / "mnist.npz") as f:
        digits = f["x_test"][:200]
    normal = default_model.score(digits, samples=0)
    noise = default_model.score(np.random.default_rng(0).uniform(0, 255, (50, 28, 28)), samples=0)
    inverted = default_model.score(255 - digits[:50], samples=0)
    assert np.median(normal) < 120  # the shipped model reconstructs digits (~80 nats)
    assert noise.min() > normal.max()
    assert inverted.min() > np.percentile(normal, 99)


def test_same_seed_gives_bit_identical_output(default_model):
    x = default_model.sample(20, seed=5)
    assert np.array_equal(x, default_model.sample(20, seed=5))
    assert not np.array_equal(x, default_model.sample(20, seed=6))
    s = default_model.score(x, samples=3, seed=9)
    assert np.array_equal(s, default_model.score(x, samples=3, seed=9))
    assert not np.array_equal(s, default_model.score(x, samples=3, seed=10))
    r = default_model.reconstruct(x, seed=2)
    assert np.array_equal(r, default_model.reconstruct(x, seed=2))


def test_seed_none_is_the_fixed_default_so_repeated_calls_agree(default_model):
    x = default_model.sample(4)
    assert np.array_equal(x, default_model.sample(4, seed=0))
    assert np.array_equal(default_model.score(x), default_model.score(x, seed=0))


def test_samples_zero_scores_deterministically_with_z_equal_mu(default_model):
    x = default_model.sample(10, seed=1)
    s0 = default_model.score(x, samples=0, seed=1, score_type="recon", complexity=False)
    again = default_model.score(x, samples=0, seed=99, score_type="recon", complexity=False)
    assert np.array_equal(s0, again)
    mu, _ = default_model.encode(x)
    xp, logits = (
        default_model.preprocess(x).astype(np.float64),
        default_model.bundle.run_decoder(mu),
    )
    bce = (np.logaddexp(0, logits) - xp * logits).sum(axis=(1, 2))  # BCE with logits
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nan_to_num(xp * np.log(xp) + (1 - xp) * np.log(1 - xp)).sum(axis=(1, 2))
    np.testing.assert_allclose(s0, bce - entropy, rtol=1e-5)  # measured from the floor
    np.testing.assert_allclose(default_model.nll_floor(x), entropy, rtol=1e-5)


def test_scores_are_measured_from_the_floor_of_a_perfect_reconstruction(default_model):
    x = default_model.sample(6, seed=2)
    assert (default_model.feature_scores(x) > -1e-5).all()  # BCE(x, p) >= BCE(x, x)
    binary = (x > 127).astype(np.uint8) * 255
    assert np.array_equal(default_model.nll_floor(binary), np.zeros(6, np.float32))


def test_noise_per_row_does_not_depend_on_batch_size(default_model):
    x = default_model.sample(37, seed=4)
    whole = default_model.score(x, samples=4, seed=7)
    default_model.batch_size = 8  # 2 rows per decoder call with 4 draws each
    try:
        chunked = default_model.score(x, samples=4, seed=7)
    finally:
        default_model.batch_size = 1024
    np.testing.assert_allclose(chunked, whole, rtol=1e-5)


def test_reparameterization_statistics_match_mu_and_variance():
    rng = np.random.default_rng(0)
    mu = np.array([[0.0, 2.0, -1.5]], np.float32)
    logvar = np.array([[0.0, np.log(0.25), np.log(4.0)]], np.float32)
    z = draw_latents(mu, logvar, rng.standard_normal((1, 200_000, 3), dtype=np.float32))[0]
    np.testing.assert_allclose(z.mean(axis=0), mu[0], atol=0.02)
    np.testing.assert_allclose(z.var(axis=0), np.exp(logvar[0]), rtol=0.02)


def test_score_with_many_samples_converges(default_model):
    x = default_model.sample(5, seed=2)
    a = default_model.score(x, samples=400, seed=1)
    b = default_model.score(x, samples=400, seed=2)
    np.testing.assert_allclose(a, b, rtol=0.02)


def test_flat_rows_and_single_samples_are_accepted(default_model):
    x = default_model.sample(3, seed=0)
    s = default_model.score(x, samples=0)
    np.testing.assert_allclose(default_model.score(x.reshape(3, 784), samples=0), s, rtol=1e-6)
    np.testing.assert_allclose(default_model.score(x[0], samples=0), s[:1], rtol=1e-6)
    assert default_model.score(np.zeros((0, 28, 28)), samples=0).shape == (0,)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((2, 27, 28)), "this model takes samples of shape (28, 28)"),
        (np.zeros((2, 10)), "this model takes samples of shape (28, 28)"),
        (np.full((1, 28, 28), np.nan), "NaN or infinite"),
        (np.full((1, 28, 28), np.inf), "NaN or infinite"),
        (np.full((1, 28, 28), 300.0), "must lie in [0, 255]"),
        (np.full((1, 28, 28), -1), "must lie in [0, 255]"),
        (np.array([["a"] * 784]), "dtype"),
        (np.zeros((1, 28, 28), complex), "dtype"),
        (np.float32(3), "scalar"),
    ],
)
def test_bad_input_is_refused_with_a_message_that_names_it(default_model, x, message):
    with pytest.raises(InputError) as e:
        default_model.score(x)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs", [{"samples": -1}, {"seed": -3}, {"samples": 1.5}])
def test_bad_score_options_are_refused(default_model, kwargs):
    with pytest.raises(InputError):
        default_model.score(np.zeros((1, 28, 28)), **kwargs)


def test_bad_sample_count_and_latents_are_refused(default_model):
    for n in (0, -2, 2.5):
        with pytest.raises(InputError, match="n must be a positive integer"):
            default_model.sample(n)
    with pytest.raises(InputError, match="z must have shape"):
        default_model.decode(np.zeros((2, 3)))


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=30),
    )
)
def test_score_gives_a_score_per_row_or_the_documented_error(default_model, x):
    try:
        s = default_model.score(x, samples=1)
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert s.ndim == 1 and np.isfinite(s).all()
    assert len(s) == (1 if x.shape == (28, 28) else len(x))


def test_predict_agrees_with_score_and_the_stored_threshold(tiny_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    model = EdgeVAE.load(bundle)
    x = model.sample(40, seed=0)
    with pytest.raises(BundleError, match="no threshold"):
        model.predict(x)
    scores = model.score(x, samples=0)
    manifest = json.loads((bundle / "vae.json").read_text())
    manifest["threshold"] = {"value": float(np.median(scores)), "samples": 0, "seed": 0}
    (bundle / "vae.json").write_text(json.dumps(manifest))
    model = EdgeVAE.load(bundle)
    assert model.threshold == pytest.approx(float(np.median(scores)))
    assert np.array_equal(model.predict(x), scores > model.threshold)
    assert 0 < model.predict(x).sum() < 40


def _edit_manifest(bundle, change):
    data = json.loads((bundle / "vae.json").read_text())
    change(data)
    (bundle / "vae.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("latent_dim"), "missing field 'latent_dim'"),
        (lambda d: d.update(format_version=99), "format_version 99 is not supported"),
        (lambda d: d.update(latent_dim="8"), "field 'latent_dim' must be of type int"),
        (lambda d: d.update(likelihood="poisson"), "unknown likelihood"),
        (lambda d: d["encoder"].update(file="../x.onnx"), "plain .onnx file name"),
        (lambda d: d["decoder"].update(sha256="0" * 64), "does not match the sha256"),
        (
            lambda d: (d.update(latent_dim=9), d["default_score"].update(eps=None)),
            "graphs from a different model",
        ),
        (lambda d: d["encoder"].update(outputs=["a", "b"]), "the manifest says"),
        (lambda d: d.update(threshold={"value": "high"}), "threshold"),
        (lambda d: d.update(default_score={"score_type": "best"}), "default_score.score_type"),
        (
            lambda d: d.update(default_score={"score_type": "iwae", "samples": 0}),
            "default_score: iwae needs samples >= 1",
        ),  # fmt: skip
        (lambda d: d.update(default_score={"samples": -1}), "default_score.samples"),
    ],
)
def test_a_bad_manifest_is_refused(tiny_bundle, tmp_path, change, message):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    _edit_manifest(bundle, change)
    with pytest.raises(BundleError) as e:
        EdgeVAE.load(bundle)
    assert message in str(e.value)


def test_tampered_graph_and_foreign_graph_are_refused(tiny_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    data = bytearray((bundle / "decoder.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="decoder.onnx does not match the sha256"):
        EdgeVAE.load(bundle)
    # A decoder from another model, with the hash updated to match: the shapes give it away.
    from vae_edge.runtime.model import default_model_dir

    foreign = (default_model_dir() / "decoder.onnx").read_bytes()
    (bundle / "decoder.onnx").write_bytes(foreign)
    import hashlib

    _edit_manifest(
        bundle, lambda d: d["decoder"].update(sha256=hashlib.sha256(foreign).hexdigest())
    )
    with pytest.raises(BundleError, match="different model"):
        EdgeVAE.load(bundle)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a model bundle"):
        EdgeVAE.load(tmp_path)
    with pytest.raises(BundleError, match="not a model bundle"):
        EdgeVAE.load(tmp_path / "missing")
    (tmp_path / "vae.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        EdgeVAE.load(tmp_path)


def test_cuda_request_without_cuda_is_loud():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BundleError, match="device 'cuda' needs onnxruntime-gpu"):
        EdgeVAE.load(device="cuda")
    with pytest.raises(InputError, match="device must be"):
        EdgeVAE.load(device="tpu")


def test_device_path_passing_mu_between_graphs_gives_the_same_scores(default_model):
    # On a GPU, score at z = mu keeps mu on the device between the graphs (IOBinding);
    # forced here on the CPU, where the bindings are CPU memory: the same numbers.
    bound = EdgeVAE.load()
    bound.bundle.bind = True
    x = default_model.sample(37, seed=5)
    for score_type in ("recon", "elbo"):
        expected = EdgeVAE.load().score(x, score_type=score_type)
        assert np.array_equal(bound.score(x, score_type=score_type), expected)
    np.testing.assert_array_equal(bound.feature_scores(x), EdgeVAE.load().feature_scores(x))


def _cuda_available() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


cuda = pytest.mark.skipif(not _cuda_available(), reason="no CUDA provider in onnxruntime")


@cuda
def test_cuda_runs_on_the_gpu_and_matches_the_cpu(default_model):
    gpu = EdgeVAE.load(device="cuda")
    assert gpu.bundle.encoder.get_providers()[0] == "CUDAExecutionProvider"
    assert gpu.bundle.decoder.get_providers()[0] == "CUDAExecutionProvider"
    x = default_model.sample(300, seed=1)
    np.testing.assert_allclose(gpu.score(x), default_model.score(x), rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(
        gpu.score(x, samples=3, seed=2), default_model.score(x, samples=3, seed=2), rtol=1e-3
    )
    np.testing.assert_allclose(gpu.sample(5, seed=0), default_model.sample(5, seed=0), atol=1e-2)


@cuda
def test_cuda_cli_score_runs(tmp_path):
    x = EdgeVAE.load().sample(4, seed=0)
    np.save(tmp_path / "x.npy", x)
    command = ["score", "--device", "cuda", str(tmp_path / "x.npy")]
    out = subprocess.run(
        [sys.executable, "-m", "vae_edge.cli", *command], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == 5


def test_graph_ir_version_and_opset_are_read_without_onnx_and_match_the_manifest(tiny_bundle):
    from vae_edge.runtime.protobuf import ir_version_and_opset

    manifest = json.loads((tiny_bundle / "vae.json").read_text())
    for name in ("encoder", "decoder"):
        found = ir_version_and_opset((tiny_bundle / f"{name}.onnx").read_bytes())
        assert found == (manifest[name]["ir_version"], manifest[name]["opset"]) == (7, 14)


@pytest.mark.parametrize(
    "ir_version, opset, release",
    [(7, 14, (1, 15)), (9, 19, (1, 15)), (9, 20, (1, 17)), (10, 18, (1, 18)), (10, 22, (1, 21)),
     (11, 23, (1, 23)), (13, 26, (1, 25)), (14, 14, None), (7, 27, None)],
)  # fmt: skip
def test_the_onnxruntime_a_graph_needs(ir_version, opset, release):
    from vae_edge.runtime.bundle import required_onnxruntime

    assert required_onnxruntime(ir_version, opset) == release


def _with_ir_version(bundle, ir_version: int) -> None:
    """Restamp the bundle's encoder with another IR version (its first protobuf field, a
    one-byte varint here) and update the manifest's hash, as an exporter at that IR would."""
    import hashlib

    data = bytearray((bundle / "encoder.onnx").read_bytes())
    assert data[:2] == b"\x08\x07"
    data[1] = ir_version
    (bundle / "encoder.onnx").write_bytes(bytes(data))
    digest = hashlib.sha256(bytes(data)).hexdigest()
    _edit_manifest(bundle, lambda d: d["encoder"].update(sha256=digest, ir_version=ir_version))


def test_a_graph_too_new_for_the_installed_onnxruntime_says_what_to_install(
    tiny_bundle, tmp_path, monkeypatch
):
    import onnxruntime

    import vae_edge.runtime.bundle as loader

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    _with_ir_version(bundle, 10)  # the exporter's own IR version, before lowering
    expected = (
        f"{bundle}: encoder.onnx (ONNX IR version 10, opset 14) needs onnxruntime >= 1.18, "
        "this is {}: pip install 'onnxruntime>=1.18', or export the bundle again "
        "(vae-edge export lowers the graphs for older onnxruntimes)"
    )
    # The installed onnxruntime, really: an old one (CI's runtime-only run has 1.15) refuses
    # with the message, a recent one loads the graph and scores as before.
    installed = tuple(int(n) for n in onnxruntime.__version__.split(".")[:2])
    if installed < (1, 18):
        with pytest.raises(BundleError) as e:
            EdgeVAE.load(bundle)
        assert str(e.value) == expected.format(onnxruntime.__version__)
    else:
        x = EdgeVAE.load(tiny_bundle).sample(20, seed=0)
        assert np.array_equal(EdgeVAE.load(bundle).score(x), EdgeVAE.load(tiny_bundle).score(x))
    # Releases the table says are too old, whichever is installed: refused before a session.
    for version in ("1.16.3", "1.17.3", "1.14.1"):
        monkeypatch.setattr(loader.ort, "__version__", version)
        with pytest.raises(BundleError) as e:
            EdgeVAE.load(bundle)
        assert str(e.value) == expected.format(version)


def test_releases_older_than_the_table_are_not_refused_a_graph_they_may_load(
    tiny_bundle, monkeypatch
):
    import vae_edge.runtime.bundle as loader

    # IR 7 / opset 14 needs no more than the oldest release measured (1.15); what 1.14 and
    # older load is not known, so the loader lets onnxruntime decide.
    monkeypatch.setattr(loader.ort, "__version__", "1.14.1")
    x = EdgeVAE.load(tiny_bundle).sample(3, seed=0)
    assert EdgeVAE.load(tiny_bundle).score(x).shape == (3,)


def test_default_threads_use_one_thread_for_small_calls_and_all_cores_for_large(monkeypatch):
    """threads=None: a call below PARALLEL_MULTIPLY_ADDS runs on the one-thread sessions, a
    larger one on sessions with all cores (made then); the scores are the same either way."""
    import os

    from vae_edge.runtime import bundle as bundles

    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # several cores, on any machine
    model = EdgeVAE.load()
    one = EdgeVAE.load(threads=1)
    x = np.round(one.sample(40, seed=3)).astype(np.uint8)
    weights = len(model.bundle.graphs_for_parallel[0]) / 4
    rows = int(np.ceil(bundles.PARALLEL_MULTIPLY_ADDS / weights))
    assert 1 < rows < 40
    np.testing.assert_array_equal(model.score(x[: rows - 1]), one.score(x[: rows - 1]))
    assert model.bundle._parallel == [None, None]
    np.testing.assert_array_equal(model.score(x), one.score(x))
    assert all(s is not None for s in model.bundle._parallel)
    options = model.bundle._parallel[0].get_session_options()
    assert options.intra_op_num_threads == 0  # onnxruntime's default: all cores
    assert model.bundle.encoder.get_session_options().intra_op_num_threads == 1
    assert EdgeVAE.load(threads=2).bundle.graphs_for_parallel is None  # as asked


# -- a windowed model (tests/data/tiny_series_bundle: 8 steps x 2 channels) ---------------

TINY_SERIES = Path(__file__).parent / "data" / "tiny_series_bundle"


def two_channels(steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]
    cycle = np.sin(2 * np.pi * t / 12 + np.array([[0.0, 1.0]]))
    return cycle * np.array([1.0, 20.0]) + 0.1 * rng.standard_normal((steps, 2))


def test_series_stream_equals_the_whole_series_without_torch():
    code = f"""
import sys
sys.modules["torch"] = None
sys.modules["onnx"] = None
import numpy as np
from vae_edge.runtime import EdgeVAE
m = EdgeVAE.load({str(TINY_SERIES)!r})
rng = np.random.default_rng(0)
x = np.sin(np.arange(400)[:, None] / 2 + np.array([[0.0, 1.0]])) * [1.0, 20.0]
x[100:104, 1] = np.nan
x[350, 0] = 9.0
whole = m.stream(samples=2).push(x)
scorer = m.stream(samples=2)
parts = list(map(scorer.push, x))
for name in ("scores", "likelihood", "is_anomaly"):
    assert np.array_equal(np.concatenate([getattr(b, name) for b in parts]), getattr(whole, name))
assert np.isfinite(whole.scores).all() and whole.likelihood.max() > 0
assert np.array_equal(m.score(x, samples=2), whole.scores)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@given(
    values=hnp.arrays(
        np.float64, (40, 2),
        elements=st.floats(allow_nan=True, allow_infinity=False, width=64)),
)  # fmt: skip
@settings(max_examples=60, deadline=None)
def test_series_any_finite_or_missing_readings_score_finite(values):
    model = EdgeVAE.load(TINY_SERIES)
    if np.isnan(values).all():
        values[0, 0] = 1.0
    scores = model.score(values)
    assert scores.shape == (40,) and np.isfinite(scores).all()
    assert np.isfinite(model.feature_scores(values)).all()


def test_series_cli_scores_a_csv_with_timestamps_per_step(tmp_path):
    x = two_channels(60, seed=1)
    t0 = np.datetime64("2024-03-01 00:00:00")
    lines = ["time,a,b"] + [
        f"{t0 + np.timedelta64(60 * i, 's')},{a},{b}" for i, (a, b) in enumerate(x) if i != 30
    ]
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    from conftest import run_cli

    r = run_cli("score", "--model", TINY_SERIES, tmp_path / "s.csv", "--timestamp", "time",
                "--columns", "a,b", "--per-feature", "-o", tmp_path / "out.jsonl")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    # The model was trained without timestamps: it knows no step, so puts no gap back.
    assert len(rows) == 59 and rows[30]["timestamp"] == "2024-03-01T00:31:00"
    assert [r["index"] for r in rows] == list(range(59)) and len(rows[0]["features"]) == 2
    r = run_cli("score", "--model", TINY_SERIES, tmp_path / "s.csv", "--columns", "a")
    assert r.returncode == 2 and "the model reads 2: 0, 1" in r.stderr
