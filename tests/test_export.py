"""Export: two graphs, no random op, symbolic batch, parity with PyTorch, manifest contents."""

import hashlib
import json
import math

import numpy as np
import onnx
import pytest
import torch

from vae_edge.export.onnx_export import RANDOM_OPS, ExportError, check_parity, export_run
from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.errors import InputError
from vae_edge.runtime.manifest import DefaultScore
from vae_edge.training.train import load_run


def test_bundle_has_four_graphs_and_a_manifest_with_their_hashes(mnist_bundle):
    assert sorted(p.name for p in mnist_bundle.iterdir()) == [
        "decoder.onnx", "encoder.onnx", "loss.onnx", "prepare.onnx", "vae.json"
    ]  # fmt: skip
    m = json.loads((mnist_bundle / "vae.json").read_text())
    for name in ("encoder", "decoder"):
        digest = hashlib.sha256((mnist_bundle / f"{name}.onnx").read_bytes()).hexdigest()
        assert m[name]["sha256"] == digest
    for name in ("prepare", "loss"):
        digest = hashlib.sha256((mnist_bundle / f"{name}.onnx").read_bytes()).hexdigest()
        assert m["score_graphs"][name]["sha256"] == digest
    assert m["format_version"] == 2
    assert m["encoder"]["inputs"] == ["x"] and m["encoder"]["outputs"] == ["mu", "logvar"]
    assert m["decoder"]["inputs"] == ["z"] and m["decoder"]["outputs"] == ["x"]
    assert m["input_shape"] == [28, 28] and m["latent_dim"] == 8
    assert m["likelihood"] == "bernoulli" and m["decoder_output"] == "logits"
    assert m["preprocessing"] == {"kind": "scale", "scale": 1 / 255, "mean": None, "std": None}
    assert m["default_score"] == {"score_type": "elbo", "samples": 0, "complexity": True,
                                  "eps": None}  # fmt: skip
    assert "dynamo=True" in m["exporter"] and "version_converter" in m["exporter"]
    for name in ("encoder", "decoder"):
        graph = onnx.load(str(mnist_bundle / f"{name}.onnx"))
        assert (m[name]["ir_version"], m[name]["opset"]) == (7, 14)  # the floor measured
        assert graph.ir_version == 7 and [(o.domain, o.version) for o in graph.opset_import] == [
            ("", 14)
        ]
    assert {"torch", "onnx", "onnxruntime", "numpy"} <= m["versions"].keys()
    assert "test_loss" in m["training"]["summary"]


def test_graphs_have_no_random_op_and_a_symbolic_batch(mnist_bundle):
    for name in ("encoder", "decoder"):
        model = onnx.load(str(mnist_bundle / f"{name}.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert not {n.op_type for n in model.graph.node} & RANDOM_OPS
        for value in [*model.graph.input, *model.graph.output]:
            assert value.type.tensor_type.shape.dim[0].dim_param


def test_parity_figures_are_recorded_within_tolerance(mnist_bundle):
    parity = json.loads((mnist_bundle / "vae.json").read_text())["parity"]
    assert parity["batch_sizes"] == [1, 2, 3, 64]
    for key in ("mu", "logvar", "decoder", "score"):
        assert 0 <= parity[f"max_abs_diff_{key}"] < 1e-2


@pytest.mark.parametrize("batch", [1, 5, 130])
def test_onnx_matches_pytorch_on_real_digits(mnist_run, mnist_bundle, mnist_small, batch):
    vae, _ = load_run(mnist_run)
    edge = EdgeVAE.load(mnist_bundle)
    with np.load(mnist_small) as f:
        x = f["x_test"][:batch]
    xp = edge.preprocess(x)
    with torch.no_grad():
        mu_t, logvar_t = vae.encode(torch.from_numpy(xp))
        logits_t = vae.decode(mu_t)
    mu, logvar = edge.encode(x)
    np.testing.assert_allclose(mu, mu_t.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logvar, logvar_t.numpy(), rtol=1e-4, atol=1e-5)
    x_t = torch.from_numpy(xp)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits_t, x_t, reduction="none")
    floor = torch.nn.functional.binary_cross_entropy(x_t, x_t, reduction="none")  # BCE(x, x)
    expected = (bce - floor).sum((1, 2))
    np.testing.assert_allclose(
        edge.score(x, samples=0, score_type="recon", complexity=False), expected.numpy(), rtol=1e-4
    )
    kl = -0.5 * (1 + logvar_t - mu_t**2 - logvar_t.exp()).sum(1)
    elbo = edge.score(x, samples=0, score_type="elbo", complexity=False)
    np.testing.assert_allclose(elbo, (expected + kl).numpy(), rtol=1e-4)


def test_parity_gate_fails_loudly_when_the_graphs_differ(mnist_run, mnist_bundle):
    vae, _ = load_run(mnist_run)
    with torch.no_grad():
        vae.decoder[-1].bias += 1e-3
    with pytest.raises(ExportError, match="parity check failed: decoder"):
        check_parity(vae, EdgeVAE.load(mnist_bundle))


def test_gaussian_bundle_on_tabular_data(cardio, cardio_bundle):
    edge = EdgeVAE.load(cardio_bundle)
    m = edge.manifest
    assert m.likelihood == "gaussian" and m.decoder_output == "mean"
    assert m.preprocessing.kind == "standardize" and m.input_shape == (21,)
    assert m.default_score == DefaultScore("iwae", 5, False, m.default_score.eps)
    assert np.shape(m.default_score.eps) == (5, m.latent_dim)  # stored: the same for every row
    np.testing.assert_allclose(m.preprocessing.mean, cardio["x"].mean(0), rtol=1e-4, atol=1e-4)
    scores = edge.score(cardio["x"], samples=0)
    assert scores.shape == (len(cardio["x"]),) and np.isfinite(scores).all()
    # anomalies reconstruct worse on average, even after 3 epochs
    assert scores[cardio["y"] == 1].mean() > scores[cardio["y"] == 0].mean()
    assert edge.sample(4, seed=0).shape == (4, 21)


def test_export_refuses_to_overwrite_without_force(mnist_run, mnist_bundle, tmp_path):
    with pytest.raises(InputError, match="use --force"):
        export_run(mnist_run, mnist_bundle)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a model bundle"):
        export_run(mnist_run, tmp_path / "other")
    assert (tmp_path / "other" / "file.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="not a training run"):
        export_run(tmp_path, tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("shape", [(28, 28), (3, 10, 9)])
def test_conv_model_exports_and_passes_the_parity_gate(shape, tmp_path):
    from vae_edge.training.train import train

    x = np.random.default_rng(0).integers(0, 256, (64, *shape), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    train(str(tmp_path / "x.npy"), tmp_path / "run", arch="conv", epochs=1, progress=False)
    manifest = export_run(tmp_path / "run", tmp_path / "bundle")
    assert manifest.input_shape == shape and manifest.training["model"]["arch"] == "conv"
    assert manifest.parity["max_abs_diff_decoder"] <= 1e-4
    edge = EdgeVAE.load(tmp_path / "bundle")
    assert edge.sample(2, seed=0).shape == (2, *shape)  # the decoder crops odd sides back
    assert np.isfinite(edge.score(x)).all()
    assert (manifest.encoder.ir_version, manifest.encoder.opset) == (7, 14)
    assert (manifest.decoder.ir_version, manifest.decoder.opset) == (7, 14)


def test_conv_int8_keeps_convolutions_float_for_older_onnxruntimes(tmp_path):
    from vae_edge.training.train import train

    x = np.random.default_rng(0).integers(0, 256, (64, 12, 12), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    train(str(tmp_path / "x.npy"), tmp_path / "run", arch="conv", epochs=1, progress=False)
    manifest = export_run(tmp_path / "run", tmp_path / "int8", quantize="int8")
    ops = {n.op_type for n in onnx.load(tmp_path / "int8" / "encoder.onnx").graph.node}
    assert {"Conv", "MatMulInteger"} <= ops and "ConvInteger" not in ops  # ConvInteger: 1.24+
    assert (manifest.encoder.ir_version, manifest.encoder.opset) == (7, 14)


def test_int8_variant_has_int8_weights_and_scores_like_fp32(
    mnist_run, mnist_bundle, mnist_small, tmp_path
):
    manifest = export_run(mnist_run, tmp_path / "int8", quantize="int8")
    q = manifest.parity["int8"]
    assert q["score_correlation"] >= q["min_correlation"] == 0.99
    assert "quantize_dynamic" in manifest.exporter
    ops = {n.op_type for n in onnx.load(tmp_path / "int8" / "encoder.onnx").graph.node}
    assert "MatMulInteger" in ops
    fp32, int8 = EdgeVAE.load(mnist_bundle), EdgeVAE.load(tmp_path / "int8")
    with np.load(mnist_small) as f:
        x = f["x_test"][:200]
    assert np.corrcoef(fp32.score(x), int8.score(x))[0, 1] > 0.99  # on real digits too
    with pytest.raises(InputError, match="unknown quantization 'int4'"):
        export_run(mnist_run, tmp_path / "int4", quantize="int4")


def test_fp16_variant_has_fp16_weights_fp32_io_and_scores_like_fp32(
    mnist_run, mnist_bundle, mnist_small, tmp_path
):
    manifest = export_run(mnist_run, tmp_path / "fp16", quantize="fp16")
    q = manifest.parity["fp16"]
    assert q["score_correlation"] >= q["min_correlation"] == 0.999
    assert q["max_rel_diff_score"] < 1e-2
    graph = onnx.load(tmp_path / "fp16" / "decoder.onnx").graph
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    weights = {t.data_type for t in graph.initializer}
    assert float16 in weights and float32 not in weights
    assert [v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]] == [float32] * 2
    fp32, fp16 = EdgeVAE.load(mnist_bundle), EdgeVAE.load(tmp_path / "fp16")
    with np.load(mnist_small) as f:
        x = f["x_test"][:200]
    np.testing.assert_allclose(fp16.score(x), fp32.score(x), rtol=1e-2)  # on real digits too
    assert fp16.sample(3, seed=0).dtype == np.float32


@pytest.mark.parametrize("which", ["tiny_bundle", "tiny_series_bundle"])
def test_the_committed_tiny_bundle_is_what_its_script_builds(tmp_path, which):
    """tests/data/tiny_bundle and tiny_series_bundle come from seeded runs (`make
    tiny-bundle`): the same graphs and the same manifest, up to the last bits of float
    rounding (CPUs with other vector units round torch's sums differently, so the bytes and
    digests may differ), and the run's wall time."""
    import sys
    from pathlib import Path

    from onnx import numpy_helper

    sys.path.insert(0, str(Path(__file__).parent))
    import make_tiny_bundle

    committed_bundle = Path(__file__).parent / "data" / which
    build = make_tiny_bundle.build if which == "tiny_bundle" else make_tiny_bundle.build_series
    build(tmp_path / "tiny")
    for graph in ("encoder.onnx", "decoder.onnx"):
        built, committed = (
            onnx.load(folder / graph) for folder in (tmp_path / "tiny", committed_bundle)
        )
        assert [(n.op_type, n.input, n.output) for n in built.graph.node] == [
            (n.op_type, n.input, n.output) for n in committed.graph.node
        ]
        assert [t.name for t in built.graph.initializer] == [
            t.name for t in committed.graph.initializer
        ]
        for a, b in zip(built.graph.initializer, committed.graph.initializer, strict=True):
            np.testing.assert_allclose(numpy_helper.to_array(a), numpy_helper.to_array(b),
                                       rtol=1e-4, atol=1e-6)  # fmt: skip

    def manifest(folder):
        m = json.loads((folder / "vae.json").read_text())
        del m["training"]["summary"]["seconds"]
        for graph in ("encoder", "decoder"):
            del m[graph]["sha256"]
        for graph in m["score_graphs"].values():  # their constants come from the manifest
            del graph["sha256"]
        return m

    _assert_close(manifest(tmp_path / "tiny"), manifest(committed_bundle), "vae.json")


def _assert_close(built, committed, where: str) -> None:
    """The same JSON but for floats within rounding noise (parity figures are differences
    near 1e-7: noise themselves, hence the absolute 1e-5)."""
    if isinstance(committed, float):
        assert math.isclose(built, committed, rel_tol=1e-4, abs_tol=1e-5), where
    elif isinstance(committed, dict):
        assert built.keys() == committed.keys(), where
        for k in committed:
            _assert_close(built[k], committed[k], f"{where}.{k}")
    elif isinstance(committed, list):
        assert len(built) == len(committed), where
        for i, (x, y) in enumerate(zip(built, committed, strict=True)):
            _assert_close(x, y, f"{where}[{i}]")
    else:
        assert built == committed, where


def test_conv1d_series_model_exports_and_passes_the_parity_gate(tmp_path):
    """A series' default model: 1-D convolutions over time. Its size grows with neither
    the window times the channels (38 metrics, 100 steps, padded to 104 inside) nor the
    manifest (one variance per metric)."""
    import torch

    from vae_edge.training.train import fit_series

    t = np.arange(1200)[:, None]
    values = np.sin(2 * np.pi * t / 50 + np.arange(38)) + 0.1 * np.random.default_rng(0).standard_normal((1200, 38))  # fmt: skip
    model, config = fit_series(values, 100, epochs=1, progress=False)
    assert config.model.arch == "conv1d" and config.model.hidden == []
    run = tmp_path / "run"
    run.mkdir()
    torch.save(model.state_dict(), run / "checkpoint.pt")
    (run / "config.json").write_text(config.to_json())
    manifest = export_run(run, tmp_path / "bundle")
    assert manifest.input_shape == (100, 38) and len(manifest.observation_logvar) == 38
    assert manifest.parity["max_abs_diff_decoder"] <= 1e-4
    assert (manifest.encoder.ir_version, manifest.encoder.opset) == (7, 14)
    assert sum(f.stat().st_size for f in (tmp_path / "bundle").iterdir()) < 1_000_000
    edge = EdgeVAE.load(tmp_path / "bundle")
    batch = edge.stream().push(values[:300])
    assert np.isfinite(batch.scores).all() and batch.scores.shape == (300,)
    # the same windows through PyTorch: the reading's score is the window's -ELBO at z = mu
    from vae_edge.runtime.series import sliding_windows

    windows = sliding_windows(values[:300], 100)
    xp = torch.from_numpy(edge.manifest.preprocessing.apply(windows).astype(np.float32))
    with torch.no_grad():
        params, mu, logvar = model(xp)
        elbo = model.reconstruction_nll(xp, params) - model.nll_floor(xp)
        elbo += -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    np.testing.assert_allclose(batch.scores[99:], elbo.numpy(), rtol=1e-4, atol=1e-3)
