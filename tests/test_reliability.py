"""Reliability: every bad input answered with one line naming the problem and the file,
exit 2 and no output; typed errors from the library; bounded memory; determinism."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from vae_edge.runtime import BundleError, EdgeVAE, InputError
from vae_edge.runtime.data import read_input, stream_input
from vae_edge.runtime.model import default_model_dir


def _png_bytes(shape=(28, 28)) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros(shape, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _npy_bytes(array) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _npz_bytes(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _nan_images():
    x = np.zeros((3, 28, 28))
    x[1, 2, 3] = np.nan
    return x


# file name -> contents; each is scored by the default MNIST model (28 x 28, grey 0..255)
BAD_FILES = {
    "size.npy": _npy_bytes(np.zeros((3, 20, 20))),
    "features.csv": b"1,2,3\n4,5,6\n",
    "complex.npy": _npy_bytes(np.zeros((2, 28, 28), complex)),
    "bool.npy": _npy_bytes(np.zeros((2, 28, 28), bool)),
    "text.npy": _npy_bytes(np.full((2, 28, 28), "a")),
    "nan.npy": _npy_bytes(_nan_images()),
    "inf.npy": _npy_bytes(np.full((2, 28, 28), np.inf)),
    "range.npy": _npy_bytes(np.full((2, 28, 28), 300.0)),
    "empty.npy": b"",
    "empty.npz": b"",
    "empty.csv": b"",
    "empty.png": b"",
    "norows.npy": _npy_bytes(np.zeros((0, 28, 28))),
    "truncated.npy": _npy_bytes(np.zeros((50, 28, 28)))[:-1000],
    "truncated.npz": _npz_bytes(x=np.zeros((50, 28, 28)))[:-200],
    "truncated.csv": b"1,2,3\n4,5",
    "truncated.png": _png_bytes()[:-30],
    "corrupt.npy": b"\x93NUMPY\x01\x00garbage",
    "corrupt.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    "cells.csv": b"a,b\n1,2\nx,3\n",
    "pickle.npy": b"",  # written below with allow_pickle
    "nokeys.npz": _npz_bytes(other=np.zeros(3)),
    "notes.txt": b"hello",
}
BAD_INPUT_CASES = [
    (
        "size.npy",
        "size.npy: input has shape (3, 20, 20); this model takes samples of shape (28, 28)",
    ),
    (
        "features.csv",
        "features.csv: input has shape (2, 3); this model takes samples of shape (28, 28)",
    ),
    ("complex.npy", "complex.npy: input has dtype complex128; numbers (int or float) are required"),
    ("bool.npy", "bool.npy: input has dtype bool; numbers (int or float) are required"),
    ("text.npy", "text.npy: input has dtype <U1; numbers (int or float) are required"),
    ("nan.npy", "nan.npy: input has NaN or infinite values (first in sample 1, feature (2, 3))"),
    ("inf.npy", "inf.npy: input has NaN or infinite values (first in sample 0, feature (0, 0))"),
    ("range.npy", "range.npy: input values must lie in [0, 255] for this model (found 300 to 300)"),
    ("empty.npy", "empty.npy: not a valid .npy file (no NPY header)"),
    ("empty.npz", "empty.npz: not a valid .npz file"),
    ("empty.csv", "empty.csv: empty CSV file"),
    ("empty.png", "empty.png: not a readable PNG image"),
    ("norows.npy", "norows.npy: holds no samples"),
    ("truncated.npy", "truncated.npy: truncated .npy file (header says (50, 28, 28))"),
    ("truncated.npz", "truncated.npz: not a valid .npz file"),
    ("truncated.csv", "truncated.csv: line 2 has 2 values, not 3"),
    ("truncated.png", "truncated.png: not a readable PNG image"),
    ("corrupt.npy", "corrupt.npy: not a valid .npy file"),
    ("corrupt.png", "corrupt.png: not a readable PNG image"),
    ("cells.csv", "cells.csv: line 3: 'x' is not a number (only numbers are accepted)"),
    ("pickle.npy", "pickle.npy: holds Python objects (pickle), not numbers"),
    ("nokeys.npz", "nokeys.npz: no 'x' or 'x_test' array (has: other)"),
    ("notes.txt", "notes.txt: unsupported file type"),
    ("missing.npy", "missing.npy: no such file or directory"),
]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    for name, content in BAD_FILES.items():
        (folder / name).write_bytes(content)
    np.save(folder / "pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(folder / "good.npy", np.zeros((3, 28, 28), np.uint8))
    return folder


def _one_line_error(r, expected: str) -> None:
    """Exactly `vae-edge: error: EXPECTED`, one line, where only a parenthesised detail from
    the library that read the file (numpy, Pillow) may follow our own words."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert re.fullmatch(f"vae-edge: error: {re.escape(expected)}( \\([^\n]+\\))?\n", r.stderr), (
        r.stderr
    )


@pytest.mark.parametrize("name, expected", BAD_INPUT_CASES, ids=[c[0] for c in BAD_INPUT_CASES])
def test_cli_score_refuses_bad_input_files(bad_dir, tmp_path, name, expected):
    out = tmp_path / "scores.csv"
    r = run_cli("score", bad_dir / name, "-o", out)
    _one_line_error(r, expected.replace(f"{name}:", f"{bad_dir / name}:"))
    assert not out.exists() and list(tmp_path.iterdir()) == []


LIBRARY_CASES = [c for c in BAD_INPUT_CASES if c[0] != "norows.npy"]  # zero rows: zero scores


@pytest.mark.parametrize("name, expected", LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_library_raises_typed_errors_for_bad_input_files(bad_dir, name, expected):
    model = EdgeVAE.load()
    with pytest.raises(InputError) as e:
        model.score(read_input(bad_dir / name))
    ours = re.escape(expected.split(": ", 1)[1])
    assert re.fullmatch(f"(.+: )?{ours}( \\([^\n]+\\))?", str(e.value)), str(e.value)


def _bundle(tmp_path, source=None):
    bundle = tmp_path / "bundle"
    shutil.copytree(source or default_model_dir(), bundle)
    return bundle


def _edit(bundle, change):
    manifest = json.loads((bundle / "vae.json").read_text())
    change(manifest)
    (bundle / "vae.json").write_text(json.dumps(manifest))


def _swap_decoder(bundle, other_bundle):
    data = (other_bundle / "decoder.onnx").read_bytes()
    (bundle / "decoder.onnx").write_bytes(data)
    _edit(bundle, lambda m: m["decoder"].update(sha256=hashlib.sha256(data).hexdigest()))


def _external_data_graph(bundle):
    import onnx

    model = onnx.load(str(bundle / "decoder.onnx"))
    onnx.save_model(model, str(bundle / "decoder.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)  # fmt: skip
    data = (bundle / "decoder.onnx").read_bytes()
    _edit(bundle, lambda m: m["decoder"].update(sha256=hashlib.sha256(data).hexdigest()))


BUNDLE_CASES = [
    ("not a bundle", lambda b, o: (b / "vae.json").unlink(), "{b}: not a model bundle (no vae.json)"),
    ("missing field", lambda b, o: _edit(b, lambda m: m.pop("likelihood")),
     "{b}: invalid manifest: missing field 'likelihood'"),
    ("unknown version", lambda b, o: _edit(b, lambda m: m.update(format_version=7)),
     "{b}: invalid manifest: format_version 7 is not supported (this runtime reads 1 and 2)"),
    ("wrong type", lambda b, o: _edit(b, lambda m: m.update(latent_dim=20.5)),
     "{b}: invalid manifest: field 'latent_dim' must be of type int, got float"),
    ("bad json", lambda b, o: (b / "vae.json").write_text("{"), "{b}: not valid JSON"),
    ("missing graph", lambda b, o: (b / "encoder.onnx").unlink(), "{b}: missing graph file encoder.onnx"),
    ("hash mismatch", lambda b, o: (b / "decoder.onnx").write_bytes(
        (b / "decoder.onnx").read_bytes() + b"\x00"), "{b}: decoder.onnx does not match the sha256 in vae.json"),
    ("different models", _swap_decoder, "{b}: decoder.onnx takes [8] and gives [28, 28] per sample; the manifest says [32] and [28, 28] (graphs from a different model?)"),
    ("names differ", lambda b, o: _edit(b, lambda m: m["encoder"].update(outputs=["mean", "logvar"])),
     "{b}: encoder.onnx has inputs ['x'] and outputs ['mu', 'logvar']; the manifest says ['x'] and ['mean', 'logvar']"),
    ("external data", lambda b, o: _external_data_graph(b),
     "{b}: decoder.onnx refers to external data 'weights.bin'; bundle graphs must be self-contained (the hash covers only the .onnx file)"),
    ("not onnx", lambda b, o: ((b / "decoder.onnx").write_bytes(b"\xff" * 20), _edit(
        b, lambda m: m["decoder"].update(sha256=hashlib.sha256(b"\xff" * 20).hexdigest()))),
     "{b}: decoder.onnx is not a valid ONNX file"),
]  # fmt: skip


@pytest.mark.parametrize("name, damage, expected", BUNDLE_CASES, ids=[c[0] for c in BUNDLE_CASES])
def test_bad_bundles_are_refused_by_cli_and_library(mnist_bundle, tmp_path, name, damage, expected):
    bundle = _bundle(tmp_path)
    damage(bundle, mnist_bundle)
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28)))
    r = run_cli("score", "--model", bundle, tmp_path / "x.npy", "-o", tmp_path / "out.csv")
    _one_line_error(r, expected.format(b=bundle))
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(BundleError, match="^" + re.escape(str(bundle))):
        EdgeVAE.load(bundle)
    r = run_cli("info", "--verify", bundle)
    assert r.returncode == 2 and "FAIL" in r.stdout and "checks failed" in r.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["sample", "-n", "0", "-o", "{d}/s.png"], "Invalid value for '-n': 0 is not in the range x>=1."),
        (["sample", "-n", "-4", "-o", "{d}/s.png"], "Invalid value for '-n': -4 is not in the range x>=1."),
        (["score", "{d}/good.npy", "--samples", "-1"], "Invalid value for '--samples': -1 is not in the range x>=0."),
        (["score", "{d}/good.npy", "--batch-size", "0"], "Invalid value for '--batch-size': 0 is not in the range x>=1."),
        (["score", "{d}/good.npy", "--batch-size", "-5"], "Invalid value for '--batch-size': -5 is not in the range x>=1."),
        (["score", "{d}/good.npy", "--threads", "0"], "Invalid value for '--threads': 0 is not in the range x>=1."),
        (["score", "{d}/good.npy", "-o", "{d}/nowhere/s.csv"],
         "{d}/nowhere/s.csv: directory {d}/nowhere does not exist"),
        (["sample", "-n", "2", "-o", "{d}/nowhere/s.npy"],
         "{d}/nowhere/s.npy: directory {d}/nowhere does not exist"),
        (["score", "{d}/good.npy", "-o", "{ro}/s.csv"], "{ro}/s.csv: cannot write in {ro}"),
        (["sample", "-n", "2", "-o", "{ro}/s.png"], "{ro}/s.png: cannot write in {ro}"),
        (["sample", "-n", "2", "-o", "{d}/s.gif"], "Invalid value for -o: {d}/s.gif: output must end in .png or .npy"),
        (["export", "{d}", "--out", "{d}/b", "--quantize", "int8", "--fp16"],
         "--quantize and --fp16 exclude each other; choose one"),
    ],
)  # fmt: skip
def test_bad_options_and_output_paths(bad_dir, tmp_path, args, expected):
    if os.geteuid() == 0:
        read_only = "/sys"  # root writes through file modes; sysfs refuses new files
    else:
        read_only = tmp_path / "ro"
        read_only.mkdir()
        read_only.chmod(0o555)
    before = set(bad_dir.iterdir())
    fill = {"d": bad_dir, "ro": read_only}
    r = run_cli(*[a.format(**fill) for a in args])
    _one_line_error(r, expected.format(**fill))
    assert set(bad_dir.iterdir()) == before


def test_failed_export_keeps_the_previous_bundle(mnist_run, mnist_bundle, tmp_path, monkeypatch):
    from vae_edge.export import onnx_export

    bundle = _bundle(tmp_path, mnist_bundle)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}

    def fail(*args, **kwargs):
        raise onnx_export.ExportError("parity check failed: injected")

    monkeypatch.setattr(onnx_export, "check_parity", fail)
    with pytest.raises(onnx_export.ExportError):
        onnx_export.export_run(mnist_run, bundle, force=True)
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging left


def test_interrupted_write_leaves_no_partial_file(tmp_path):
    from vae_edge.runtime.data import atomic_output

    target = tmp_path / "scores.csv"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_streamed_reading_gives_the_same_rows(tmp_path):
    x = np.random.default_rng(0).random((1000, 5))
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header="a,b,c,d,e", comments="")
    for name in ("x.npy", "x.csv"):
        total, chunks = stream_input(tmp_path / name, rows=64)
        parts = list(chunks)
        assert max(len(p) for p in parts) == 64
        np.testing.assert_array_equal(np.concatenate(parts), read_input(tmp_path / name))
    assert total is None  # CSV: not known in advance


PEAK_RSS_BOUND_MIB = 160


def _peak_rss_mib(*args) -> float:
    """Peak resident memory of `vae-edge ARGS` run in a fresh process."""
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "vae_edge.cli", *map(str, args)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1]) / 1024


def test_scoring_a_large_npy_keeps_memory_bounded(tmp_path):
    rows = 100_000  # 299 MiB of float32 images; the bound does not grow with the file
    big = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float32, (rows, 28, 28))
    digits = EdgeVAE.load().sample(1000, seed=0)
    for i in range(0, rows, 1000):
        big[i : i + 1000] = digits
    big.flush()
    del big
    peak = _peak_rss_mib("score", tmp_path / "big.npy", "--samples", "0", "-o", tmp_path / "s.npy")
    assert peak < PEAK_RSS_BOUND_MIB, peak
    scores = np.load(tmp_path / "s.npy")
    assert scores.shape == (rows,)
    np.testing.assert_array_equal(scores[:1000], scores[-1000:])


def test_scoring_a_large_csv_streams(tmp_path):
    digits = EdgeVAE.load().sample(6000, seed=0).reshape(6000, -1)  # two 4096-row chunks
    np.savetxt(tmp_path / "big.csv", digits, delimiter=",", fmt="%.3f")
    r = run_cli("score", tmp_path / "big.csv", "--samples", "0", "--no-complexity",
                "-o", tmp_path / "s.npy")  # fmt: skip
    assert r.returncode == 0, r.stderr
    expected = EdgeVAE.load().score(np.round(digits, 3), samples=0, complexity=False)
    # The CSV reader parses "%.3f" straight to float32, np.round rounds in float64 first: a
    # few values differ in the last bit, and a score measured from the floor (BCE minus
    # entropy, both near 100) carries that as ~1e-6 relative.
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), expected, rtol=1e-5)


def test_same_input_and_seed_give_bit_identical_scores_across_processes(tmp_path):
    x = EdgeVAE.load().sample(500, seed=3)
    np.save(tmp_path / "x.npy", x)
    outputs = []
    for i, batch in enumerate(("1024", "7", "1024")):
        out = tmp_path / f"s{i}.npy"
        r = run_cli("score", tmp_path / "x.npy", "--samples", "5", "--seed", "11",
                    "--batch-size", batch, "-o", out)  # fmt: skip
        assert r.returncode == 0, r.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    samples = []
    for i in range(2):
        run_cli("sample", "-n", "16", "--seed", "4", "-o", tmp_path / f"g{i}.npy")
        samples.append((tmp_path / f"g{i}.npy").read_bytes())
    assert samples[0] == samples[1]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("samples", [0, 3])
def test_scores_are_bit_identical_across_batch_sizes_and_threads(threads, samples):
    model = EdgeVAE.load(threads=threads)
    x = model.sample(300, seed=2)
    reference = EdgeVAE.load(threads=1).score(x, samples=samples, seed=5)
    for batch_size in (1, 7, 64, 1024):
        model.batch_size = batch_size
        assert np.array_equal(model.score(x, samples=samples, seed=5), reference), batch_size


def test_hash_check_can_be_skipped_for_development_only(tmp_path):
    bundle = _bundle(tmp_path)
    _edit(bundle, lambda m: m["decoder"].update(sha256="0" * 64))
    with pytest.raises(BundleError, match="does not match the sha256"):
        EdgeVAE.load(bundle)
    assert EdgeVAE.load(bundle, verify=False).sample(2).shape == (2, 28, 28)
    np.save(tmp_path / "x.npy", np.zeros((1, 28, 28)))
    assert run_cli("score", "--model", bundle, "--no-verify", tmp_path / "x.npy").returncode == 0


def test_info_verify_reports_each_check_on_a_good_bundle():
    r = run_cli("info", "--verify")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 12 and all(line.startswith("ok") for line in lines)
    for graph in ("encoder", "decoder", "prepare", "loss"):  # each graph's sha256 is checked
        assert any(f"{graph}.onnx sha256" in line for line in lines)


def test_bundles_hold_only_json_and_onnx(mnist_bundle):
    for path in [*mnist_bundle.iterdir(), *default_model_dir().iterdir()]:
        assert path.suffix in (".json", ".onnx"), path


def test_unit_range_input_to_a_grey_level_model_is_warned_about(tmp_path):
    from vae_edge.runtime import InputWarning

    model = EdgeVAE.load()
    digits = model.sample(3, seed=0)
    with pytest.warns(InputWarning, match="multiply it by 255"):
        model.score(digits / 255)
    np.save(tmp_path / "unit.npy", digits / 255)
    r = run_cli("score", tmp_path / "unit.npy")
    assert r.returncode == 0 and r.stderr.startswith("vae-edge: warning: input values are all")
    assert r.stderr.count("\n") == 1


def test_cli_scores_of_a_file_larger_than_one_chunk_match_the_library(tmp_path):
    model = EdgeVAE.load()
    x = model.sample(5000, seed=1)  # more than one 4096-row chunk
    np.save(tmp_path / "x.npy", x)
    r = run_cli("score", tmp_path / "x.npy", "--samples", "2", "--seed", "9",
                "--per-feature", "-o", tmp_path / "s.csv")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(rows[:, 1], model.score(x, samples=2, seed=9), rtol=1e-6)
    np.testing.assert_allclose(
        rows[:, 2:],
        model.feature_scores(x, samples=2, seed=9).reshape(5000, -1),
        rtol=1e-5,
        atol=1e-5,
    )


TABLE_RSS_BOUND_MIB = 250


def test_scoring_two_million_rows_to_csv_keeps_memory_bounded_with_per_feature(
    tmp_path, tiny_bundle
):
    """A 300 MB CSV of 2,000,000 table rows scored to CSV, with and without --per-feature:
    the input is read in chunks and the output written batch by batch, so neither the
    input nor the per-feature losses are ever held whole."""
    rows, rng = 2_000_000, np.random.default_rng(0)
    with open(tmp_path / "big.csv", "w") as f:
        f.write(",".join(f"c{j}" for j in range(6)) + "\n")
        for _ in range(rows // 200_000):
            np.savetxt(f, rng.standard_normal((200_000, 6)), delimiter=",", fmt="%.18e")
    assert (tmp_path / "big.csv").stat().st_size > 300e6
    peaks = {}
    for flag in ("", "--per-feature"):
        out = tmp_path / f"scores{flag}.csv"
        args = ["score", "--model", tiny_bundle, tmp_path / "big.csv", "-o", out]
        peaks[flag] = _peak_rss_mib(*args, *([flag] if flag else []))
        with open(out, "rb") as f:
            assert (
                sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b"")) == rows + 1
            )
        with open(out) as f:
            header = f.readline().strip()
        assert header == "index,score" + "".join(f",feature_{j}" for j in range(6)) * bool(flag)
    assert max(peaks.values()) < TABLE_RSS_BOUND_MIB, peaks
