"""The `vae-edge` command: a real round trip, and one-line errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

TINY = str(Path(__file__).parent / "data" / "tiny_bundle")


def test_round_trip_train_export_sample_score(mnist_small, tmp_path):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    r = run_cli("train", "--data", mnist_small, "--out", run, "--epochs", "1",
                "--hidden", "64", "--latent-dim", "4", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "test loss" in r.stdout
    r = run_cli("export", run, "--out", bundle)
    assert r.returncode == 0, r.stderr
    assert "parity vs PyTorch" in r.stdout

    r = run_cli("sample", "--model", bundle, "-n", "9", "--seed", "1", "-o", tmp_path / "s.png")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "s.png").size == (3 * 30 + 2, 3 * 30 + 2)
    run_cli("sample", "--model", bundle, "-n", "9", "--seed", "1", "-o", tmp_path / "s.npy")
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (9, 28, 28)

    with np.load(mnist_small) as f:
        np.save(tmp_path / "digits.npy", f["x_test"][:30])
    r = run_cli("score", "--model", bundle, tmp_path / "digits.npy", "-o", tmp_path / "s.csv")
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "index,score" and len(lines) == 31
    csv_scores = np.array([float(line.split(",")[1]) for line in lines[1:]])

    run_cli("score", "--model", bundle, tmp_path / "digits.npy", "-o", tmp_path / "s.npy")
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), csv_scores, rtol=1e-6)
    run_cli("score", "--model", bundle, tmp_path / "digits.npy", "-o", tmp_path / "s.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(30))

    from vae_edge.runtime import EdgeVAE

    expected = EdgeVAE.load(bundle).score(np.load(tmp_path / "digits.npy"))  # the defaults
    np.testing.assert_allclose(csv_scores, expected, rtol=1e-6)

    r = run_cli("info", bundle)
    assert r.returncode == 0 and "CPUExecutionProvider" in r.stdout and "sha256" in r.stdout
    assert r.stdout.count("IR 7, opset 14: onnxruntime >= 1.15") == 4  # model and score graphs
    assert "score         elbo, samples 0, per complexity bit (default_score)" in r.stdout


def test_score_marks_anomalies_when_the_model_has_a_threshold(mnist_bundle, mnist_small, tmp_path):
    import shutil

    from vae_edge.runtime import EdgeVAE

    bundle = tmp_path / "b"
    shutil.copytree(mnist_bundle, bundle)
    with np.load(mnist_small) as f:
        digits = f["x_test"][:2].astype(np.float64)
    noise = np.random.default_rng(0).uniform(0, 255, (2, 28, 28))
    x = np.concatenate([digits, noise])
    scores = EdgeVAE.load(bundle).score(x, samples=1, seed=0)
    assert scores[:2].max() < scores[2:].min()
    m = json.loads((bundle / "vae.json").read_text())
    value = float(scores[:2].max() + scores[2:].min()) / 2  # per PNG bit: an image's default
    m["threshold"] = {"value": value, "samples": 1, "complexity": True}
    (bundle / "vae.json").write_text(json.dumps(m))
    np.save(tmp_path / "x.npy", x)
    r = run_cli("score", "--model", bundle, tmp_path / "x.npy")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "index,score,is_anomaly"
    assert [line.split(",")[2] for line in lines[1:]] == ["0", "0", "1", "1"]


def test_default_model_works_without_model_option(tmp_path):
    r = run_cli("sample", "-n", "4", "-o", tmp_path / "s.npy")
    assert r.returncode == 0, r.stderr
    r = run_cli("score", tmp_path / "s.npy", "--samples", "0")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 5


def _assert_one_line_error(r, *fragments):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("vae-edge: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for fragment in fragments:
        assert fragment in r.stderr


@pytest.fixture
def files(tmp_path):
    np.save(tmp_path / "good.npy", np.zeros((3, 28, 28), np.uint8))
    np.save(tmp_path / "shape.npy", np.zeros((3, 20, 20)))
    x = np.zeros((3, 28, 28))
    x[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", x)
    (tmp_path / "text.csv").write_text("1,2\nx,3\n")
    return tmp_path


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["score", "{d}/shape.npy"], ["shape (3, 20, 20)", "(28, 28)"]),
        (["score", "{d}/nan.npy"], ["NaN"]),
        (["score", "{d}/missing.npy"], ["missing.npy: no such file"]),
        (["score", "{d}/text.csv"], ["text.csv", "only numbers"]),
        (["score", "--model", "{d}", "{d}/good.npy"], ["not a model bundle"]),
        (["score", "{d}/good.npy", "--samples", "-1"], ["--samples"]),
        (["score", "{d}/good.npy", "--batch-size", "0"], ["--batch-size"]),
        (["score", "{d}/good.npy", "-o", "{d}/out.txt"], ["must end in"]),
        (["score", "{d}/good.npy", "-o", "{d}/nodir/out.csv"], ["does not exist"]),
        (["score", "--model", TINY, "{d}/good.npy", "--complexity"], ["complexity is only"]),
        (
            ["calibrate", "--model", TINY, "--data", "{d}/good.npy", "--complexity"],
            ["complexity is"],
        ),
        (["sample", "-n", "0", "-o", "{d}/out.png"], ["-n"]),
        (["sample", "-n", "-3", "-o", "{d}/out.png"], ["-n"]),
        (["sample", "-n", "2", "-o", "{d}/nodir/out.png"], ["does not exist"]),
        (["train", "--data", "{d}/missing.npz", "--out", "{d}/run"], ["no such file"]),
        (["export", "{d}", "--out", "{d}/out"], ["not a training run"]),
        (["info", "{d}/missing"], ["not a model bundle"]),
        (["frobnicate"], ["No such command"]),
    ],
)
def test_bad_input_gives_one_line_exit_2_and_no_output(files, args, fragments):
    before = set(files.rglob("*"))
    r = run_cli(*[a.format(d=files) for a in args])
    _assert_one_line_error(r, *fragments)
    assert set(files.rglob("*")) == before  # nothing written, not even a partial file


def test_failed_score_keeps_the_previous_output(files):
    (files / "out.csv").write_text("previous\n")
    r = run_cli("score", files / "nan.npy", "-o", files / "out.csv")
    _assert_one_line_error(r, "NaN")
    assert (files / "out.csv").read_text() == "previous\n"


def test_help_lists_commands_without_loading_numpy_onnxruntime_or_torch():
    """What makes --help instant: the commands import their heavy modules when they run."""
    code = (
        "import sys\nfrom vae_edge.cli import cli\n"
        "try:\n    cli.main(['--help'], prog_name='vae-edge')\nexcept SystemExit:\n    pass\n"
        "print('loaded:', sorted({m.split('.')[0] for m in sys.modules} & "
        "{'numpy', 'onnxruntime', 'torch', 'PIL'}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for command in ("train", "export", "sample", "score", "calibrate", "evaluate", "bench", "info"):
        assert f"  {command} " in r.stdout
    assert r.stdout.strip().endswith("loaded: []"), r.stdout


def test_reconstruct_writes_originals_above_reconstructions(mnist_small, tmp_path):
    with np.load(mnist_small) as f:
        np.save(tmp_path / "digits.npy", f["x_test"][:12])
    r = run_cli("reconstruct", tmp_path / "digits.npy", "-n", "10", "-o", tmp_path / "r.png")
    assert r.returncode == 0, r.stderr
    # 8 columns; 2 row pairs (8 + 2 digits), 30 pixels per cell plus a 2-pixel border
    assert Image.open(tmp_path / "r.png").size == (8 * 30 + 2, 4 * 30 + 2)
    r = run_cli("reconstruct", tmp_path / "digits.npy", "--seed", "3", "-o", tmp_path / "r.npy")
    assert r.returncode == 0, r.stderr
    from vae_edge.runtime import EdgeVAE

    expected = EdgeVAE.load().reconstruct(np.load(tmp_path / "digits.npy"), seed=3)
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), expected)


def test_bench_times_score_and_sample_against_the_bare_floor(tmp_path):
    result = run_cli("bench", "--batch-sizes", "1,8", "--seconds", "0.2", "--threads", "1",
                     "--json", tmp_path / "bench.json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["job"], r["batch"]) for r in report["rows"]] == [
        ("score", 1), ("sample", 1), ("score", 8), ("sample", 8)
    ]  # fmt: skip
    assert report["threads"] == 1 and report["providers"] == ["CPUExecutionProvider"]
    for row in report["rows"]:
        for who in ("vae_edge", "bare_ort"):
            t = row[who]
            assert 0 < t["p50_us"] <= t["p95_us"] <= t["p99_us"] and t["calls"] >= 3
    assert "| score | 8 |" in result.stdout
    bad = run_cli("bench", "--batch-sizes", "1,x")
    assert bad.returncode == 2 and "is not a list of integers" in bad.stderr


def test_bench_reports_each_contenders_own_times_and_their_ratio(monkeypatch):
    """With a clock that each contender advances by a known amount, the figures are known:
    vae-edge 300 ns a call, the bare floor 100 ns, so vae_edge_over_bare is 3 (not 1/3)."""
    from vae_edge.runtime import EdgeVAE, bench

    clock = {"ns": 0}

    def advance(ns):
        def call():
            clock["ns"] += ns

        return call

    fake_time = type("T", (), {"perf_counter_ns": staticmethod(lambda: clock["ns"]),
                               "perf_counter": staticmethod(lambda: clock["ns"] / 1e9)})  # fmt: skip
    monkeypatch.setattr(bench, "time", fake_time)
    jobs = lambda model, arg: {"vae_edge": advance(300), "bare_ort": advance(100)}  # noqa: E731
    monkeypatch.setattr(bench, "default_score_jobs", jobs)
    monkeypatch.setattr(bench, "sample_jobs", jobs)
    rows = bench.run(EdgeVAE.load(), (1, 4), seconds=1e-5)
    for row in rows:
        assert row["vae_edge"]["p50_us"] == 0.3 and row["bare_ort"]["p50_us"] == 0.1
        assert row["vae_edge_over_bare"] == pytest.approx(3.0)
        assert row["vae_edge"]["samples_per_s"] == pytest.approx(row["batch"] / 0.3e-6)


def test_train_trim_reaches_the_run_config_and_is_range_checked(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    np.save(tmp_path / "t.npy", x)
    r = run_cli("train", "--data", tmp_path / "t.npy", "--out", tmp_path / "run", "--epochs",
                "1", "--trim", "0.1", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["trim"] == 0.1
    r = run_cli("train", "--data", tmp_path / "t.npy", "--out", tmp_path / "bad", "--trim", "1")
    assert r.returncode == 2 and "--trim" in r.stderr and not (tmp_path / "bad").exists()
