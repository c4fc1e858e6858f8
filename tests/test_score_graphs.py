"""The score as graphs (format 2): prepare.onnx and loss.onnx give the runtime's numbers on
every kind of bundle, are plain opset-14 arithmetic, are checked like the model's graphs,
and an older bundle is upgraded in place; the golden vectors the JavaScript runtime is held
to are still Python's numbers."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli

from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.bundle import default_model_dir
from vae_edge.runtime.errors import BundleError
from vae_edge.runtime.manifest import MANIFEST_FILE
from vae_edge.runtime.score_graphs import GRAPH_RTOL, GraphScorer, check_graphs
from vae_edge.runtime.scoring import row_noise

HERE = Path(__file__).parent
GOLDEN = HERE.parent / "js" / "test" / "golden"
BUNDLES = {
    "shipped": None,
    "table": HERE / "data" / "tiny_bundle",
    "series": HERE / "data" / "tiny_series_bundle",
    "conv1d series": GOLDEN / "series_model",
}
STANDARD_OPS = {"Mul", "Sub", "Div", "Add", "Neg", "Abs", "Exp", "Log", "Relu", "Clip", "Where",
                "IsNaN", "Cast", "Min", "Max", "Greater", "GreaterOrEqual", "Less", "And",
                "ReduceSum", "ReduceMax", "ReduceMean", "Reshape", "Unsqueeze", "Squeeze",
                "Slice", "Gather", "Round", "Transpose", "Identity"}  # fmt: skip


@pytest.mark.parametrize("name", BUNDLES)
def test_the_graphs_give_the_runtimes_scores(name):
    model = EdgeVAE.load(BUNDLES[name])
    report = check_graphs(model)  # drawn samples, a row beyond the clip, a missing reading
    assert report["max_rel_diff_score"] <= GRAPH_RTOL
    assert report["max_rel_diff_features"] <= GRAPH_RTOL


def test_far_rows_and_flags_through_the_graphs():
    model = EdgeVAE.load(BUNDLES["table"])
    x = np.zeros((4, 6), np.float32)
    x[1, 2] = 1e5
    x[2] = np.finfo(np.float32).max
    x[3] = -3e38
    out = GraphScorer(model).run(x, threshold=100.0)
    want = np.array([model.score(x[i : i + 1])[0] for i in range(4)])
    np.testing.assert_allclose(out["score"], want, rtol=1e-6)
    assert np.isfinite(out["score"]).all() and out["score"][0] < out["score"][1] < out["score"][2]
    np.testing.assert_array_equal(out["is_anomaly"], want > 100)


@pytest.mark.parametrize("name", BUNDLES)
def test_the_graphs_are_plain_arithmetic_at_the_bundles_opset(name):
    model = EdgeVAE.load(BUNDLES[name])
    folder = Path(BUNDLES[name] or default_model_dir())
    for graph in model.manifest.score_graphs.values():
        proto = onnx.load(folder / graph.file)
        onnx.checker.check_model(proto, full_check=True)
        assert (proto.ir_version, proto.opset_import[0].version) == (7, 14)
        assert {n.op_type for n in proto.graph.node} <= STANDARD_OPS
        assert {o.domain for o in proto.opset_import} == {""}
        # no weights: the largest constant is a per-feature vector
        largest = max((int(np.prod(t.dims)) for t in proto.graph.initializer), default=0)
        assert largest <= model.manifest.n_features
    files = [folder / g.file for g in model.manifest.score_graphs.values()]
    assert sum(f.stat().st_size for f in files) < 20_000


def test_the_shipped_bundle_carries_the_graphs():
    m = EdgeVAE.load().manifest
    assert m.format_version == 2 and set(m.score_graphs) == {"prepare", "loss"}
    assert m.score_graphs["loss"].outputs == ["score", "features", "is_anomaly"]


def _format_1(src: Path, dst: Path) -> Path:
    """The bundle as `vae-edge export` wrote it before the score graphs."""
    shutil.copytree(src, dst)
    d = json.loads((dst / MANIFEST_FILE).read_text())
    for graph in d.pop("score_graphs").values():
        (dst / graph["file"]).unlink()
    d["default_score"].pop("eps")
    d["format_version"] = 1
    d["parity"].pop("score_graphs")
    (dst / MANIFEST_FILE).write_text(json.dumps(d))
    return dst


def test_an_older_bundle_loads_and_is_upgraded_in_place(tmp_path):
    old = _format_1(BUNDLES["table"], tmp_path / "old")
    model = EdgeVAE.load(old)
    x = np.random.default_rng(0).standard_normal((70, 6)).astype(np.float32)
    before = model.score(x)  # format 1: noise keyed by row position, as before
    assert model.manifest.format_version == 1 and model.manifest.score_graphs is None
    np.testing.assert_array_equal(before, model.score(x, seed=0))
    result = run_cli("upgrade", old)
    assert result.returncode == 0, result.stderr
    assert "format 1 -> 2" in result.stdout and "draws now use noise stored" in result.stdout
    upgraded = EdgeVAE.load(old)
    assert upgraded.manifest.format_version == 2
    after = upgraded.score(x)
    # the stored noise is what row 0 drew before
    assert after[0] == before[0] and not np.array_equal(after, before)
    stored = np.asarray(upgraded.manifest.default_score.eps, np.float32)
    np.testing.assert_array_equal(stored, row_noise(0, 0, 1, 5, 2)[0])
    # the same for every row: a row's score does not depend on its position
    np.testing.assert_array_equal(upgraded.score(x[::-1])[::-1], after)
    # other seeds and draws keep NumPy's noise keyed by row position
    np.testing.assert_array_equal(upgraded.score(x, seed=3), model.score(x, seed=3))
    assert run_cli("info", old, "--verify").returncode == 0


def test_a_tampered_score_graph_is_refused(tmp_path):
    bundle = shutil.copytree(BUNDLES["table"], tmp_path / "b")
    graph = bytearray((bundle / "loss.onnx").read_bytes())
    graph[-1] ^= 1
    (bundle / "loss.onnx").write_bytes(bytes(graph))
    with pytest.raises(BundleError, match="loss.onnx does not match the sha256 in vae.json"):
        EdgeVAE.load(bundle)
    result = run_cli("info", bundle, "--verify")
    assert result.returncode != 0 and "FAIL  loss.onnx sha256" in result.stdout


def test_upgrade_refuses_what_is_not_a_bundle(tmp_path):
    result = run_cli("upgrade", tmp_path)
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    assert "not a model bundle" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_golden_vectors_are_pythons_numbers():
    """js/test/golden/*.json, which the JavaScript tests and the page compare with, are what
    this runtime gives on their inputs (up to float rounding of another CPU's vector
    units), and the page's example sensor is the golden stream."""
    sys.path.insert(0, str(HERE))
    import make_golden

    for name in ("mnist", "table", "series"):
        committed = json.loads((GOLDEN / f"{name}.json").read_text())
        if name == "series":
            assert committed["lines"] == make_golden.stream_lines()
            vector = make_golden.series(committed["lines"])
        else:
            x = np.array(committed["input"]["data"], np.float64).reshape(
                committed["input"]["shape"]
            )
            vector = getattr(make_golden, name)(x.astype(np.float32))
        assert committed.keys() == vector.keys(), name
        for key in ("score", "likelihood"):
            if key in vector:
                np.testing.assert_allclose(vector[key], committed[key], rtol=1e-5, atol=1e-6)
        if "features" in vector:
            np.testing.assert_allclose(vector["features"]["data"], committed["features"]["data"],
                                       rtol=1e-5, atol=1e-6)  # fmt: skip
        for key in ("is_anomaly", "report", "errors", "predict", "timestamps"):
            assert vector.get(key) == committed.get(key), (name, key)
    lines = (HERE.parent / "js" / "web" / "sensor.csv").read_text().splitlines()
    assert lines == make_golden.stream_lines()
