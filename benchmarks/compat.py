"""Which onnxruntime releases load vae-edge bundles, and with what numbers (`make compat`).

    python benchmarks/compat.py [--versions 1.15.1,1.20.1,1.32.0] [--name compat] [--keep]

For each release, a throwaway venv gets what a user on a device would install,
`pip install onnxruntime==V 'numpy<2' .` ('numpy<2' below 1.19, whose wheels were built
against NumPy 1), so no torch and no onnx; there `compat.py --worker` loads each bundle,
scores (samples=0, and 8 draws with seed 0) and samples (64, seed 0). The last release
listed is the reference the others are compared with. Bundles: the shipped MNIST model,
and an MLP and a conv model trained briefly on 5,000 MNIST digits, each also as int8 and
fp16. A probe finds the highest IR version and opset each release loads (a one-node graph
stamped with each) and checks the runtime's table ONNXRUNTIME_LIMITS against it.
Writes benchmarks/results/NAME.{json,md} (compat; compat-all for every minor release).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "compat"
VERSIONS = ("1.15.1", "1.20.1", "1.32.0")  # oldest supported, a middle one, the newest
PROBE_IR, PROBE_OPSET = range(3, 14), range(7, 27)
# Largest relative difference from the reference release that still counts as the same
# result: the parity gate's rtol for fp32, and 1e-2 for the variants, whose kernels (fp16
# arithmetic, int8 dynamic quantization) are free to round differently per release. fp16
# was first held to 1e-3, two fp16 units of roundoff; onnxruntime 1.29.0 differs from 1.32.0
# by up to 3.2e-3 (its fp16 kernels round otherwise; the fp16 MNIST conv model differs from
# its fp32 by up to 2.3e-3), so a multi-layer fp16 network is given the int8 tolerance.
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 1e-2}
OUTPUTS = ("score", "score 8 draws", "sample")  # what each bundle gives in each release


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default=",".join(VERSIONS))
    parser.add_argument("--name", default="compat", help="results file name")
    parser.add_argument("--keep", action="store_true", help="keep the venvs in build/compat")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    versions = args.versions.split(",")
    started = time.time()
    bundles = build_inputs()
    runs = {}
    for version in versions:
        print(f"onnxruntime {version}: installing into a throwaway venv", flush=True)
        runs[version] = run_release(version, keep=args.keep)
    result = compare(bundles, runs, versions[-1])
    result["seconds"] = round(time.time() - started)
    write(result, args.name)


def build_inputs() -> dict[str, str]:
    """The bundles (name -> kind) in WORK/bundles, the scored digits and the probe graphs."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as h

    from vae_edge.export.onnx_export import export_run
    from vae_edge.runtime.bundle import default_model_dir
    from vae_edge.training.mnist import load_mnist
    from vae_edge.training.train import train

    shutil.rmtree(WORK / "bundles", ignore_errors=True)
    shutil.rmtree(WORK / "probe", ignore_errors=True)
    (WORK / "probe").mkdir(parents=True)
    mnist = load_mnist()
    np.savez(WORK / "digits.npz", x_train=mnist.x[:5000], x_test=mnist.x_test[:500])
    np.save(WORK / "x.npy", mnist.x_test[:256])
    bundles = {"shipped MLP": "fp32"}
    shutil.copytree(default_model_dir(), WORK / "bundles" / "shipped MLP")
    for arch in ("mlp", "conv"):
        run = WORK / "runs" / arch
        print(f"training a small {arch} model", flush=True)
        train(str(WORK / "digits.npz"), run, arch=arch, epochs=3, seed=0, progress=False)
        for kind in TOLERANCE:
            name = f"{arch} {kind}"
            quantize = None if kind == "fp32" else kind
            export_run(run, WORK / "bundles" / name, force=True, quantize=quantize)
            bundles[name] = kind
    for ir in PROBE_IR:
        onnx.save(_relu(h, TensorProto, ir, 14), str(WORK / "probe" / f"ir{ir}.onnx"))
    for opset in PROBE_OPSET:
        onnx.save(_relu(h, TensorProto, 7, opset), str(WORK / "probe" / f"opset{opset}.onnx"))
    return bundles


def _relu(h, tensor_proto, ir_version: int, opset: int):
    """y = Relu(x), stamped with this IR version and opset (not checked: some are beyond
    what the installed onnx knows, which is the point)."""
    io = [h.make_tensor_value_info(n, tensor_proto.FLOAT, ["n", 3]) for n in ("x", "y")]
    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "relu", io[:1], io[1:])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def run_release(version: str, keep: bool) -> dict:
    venv = WORK / f"venv-{version}"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    release = tuple(int(n) for n in version.split(".")[:2])
    numpy_spec = ["numpy<2"] if release < (1, 19) else []
    pip = [python, "-m", "pip", "install", "-q", f"onnxruntime=={version}", *numpy_spec, str(ROOT)]
    subprocess.run(pip, check=True, cwd=WORK)
    # The venv's vae_edge, not the checkout: cwd outside the repository.
    done = subprocess.run(
        [python, str(Path(__file__).resolve()), "--worker", str(WORK)],
        cwd=WORK,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"onnxruntime {version}: the worker failed:\n{done.stderr}")
    if not keep:
        shutil.rmtree(venv)
    return json.loads((WORK / f"worker-{version}.json").read_text())


def worker(work: Path) -> None:
    """In a release's venv: only numpy, onnxruntime and vae_edge.runtime are imported."""
    import onnxruntime as ort

    import vae_edge.runtime
    from vae_edge.runtime import EdgeVAE, VAEEdgeError

    assert "torch" not in sys.modules and "onnx" not in sys.modules
    x = np.load(work / "x.npy")
    report = {
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "vae_edge_from": str(Path(vae_edge.runtime.__file__).parent),
        "bundles": {},
    }
    outputs = {}
    for bundle in sorted((work / "bundles").iterdir()):
        try:
            model = EdgeVAE.load(bundle)
            outputs[f"{bundle.name}/score"] = model.score(x, samples=0)
            outputs[f"{bundle.name}/score 8 draws"] = model.score(x, samples=8, seed=0)
            outputs[f"{bundle.name}/sample"] = model.sample(64, seed=0)
            report["bundles"][bundle.name] = {"loaded": True, "error": None}
        except VAEEdgeError as e:
            report["bundles"][bundle.name] = {"loaded": False, "error": str(e)}
    np.savez(work / f"worker-{ort.__version__}.npz", **outputs)
    report["max_ir_version"] = max(
        (ir for ir in PROBE_IR if _loads(work / f"probe/ir{ir}.onnx")), default=None
    )
    report["max_opset"] = max(
        (o for o in PROBE_OPSET if _loads(work / f"probe/opset{o}.onnx")), default=None
    )
    (work / f"worker-{ort.__version__}.json").write_text(json.dumps(report, indent=2))


def _loads(file: Path) -> bool:
    import onnxruntime as ort

    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    try:
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        return bool(np.array_equal(session.run(None, {"x": x})[0], np.maximum(x, 0)))
    except Exception:  # onnxruntime's load errors are untyped; any failure is "does not load"
        return False


def compare(bundles: dict[str, str], runs: dict, reference: str) -> dict:
    from vae_edge.runtime.bundle import ONNXRUNTIME_LIMITS

    with np.load(WORK / f"worker-{reference}.npz") as f:
        expected = dict(f)
    table = {}
    for version, run in runs.items():
        with np.load(WORK / f"worker-{version}.npz") as f:
            got = dict(f)
        release = tuple(int(n) for n in version.split(".")[:2])
        rows = [r for r in ONNXRUNTIME_LIMITS if r[0] <= release]
        limits = (run["max_ir_version"], run["max_opset"])
        run["table_limits"] = list(rows[-1][1:]) if rows else None
        run["table_agrees"] = None if not rows else list(rows[-1][1:]) == list(limits)
        for name, kind in bundles.items():
            cell = run["bundles"][name] | {"kind": kind, "tolerance": TOLERANCE[kind]}
            cell["within_tolerance"] = False  # until compared with the reference
            if cell["loaded"] and f"{name}/score" in expected:
                for what in OUTPUTS:
                    a, b = got[f"{name}/{what}"], expected[f"{name}/{what}"]
                    scale = np.abs(b).max() if what == "sample" else np.maximum(np.abs(b), 1e-6)
                    cell[f"max_rel_diff_{what}"] = float((np.abs(a - b) / scale).max())
                cell["within_tolerance"] = all(
                    cell[f"max_rel_diff_{w}"] <= TOLERANCE[kind] for w in OUTPUTS
                )
            table.setdefault(name, {})[version] = cell
    return {
        "what": "vae-edge bundles loaded, scored and sampled by each onnxruntime release, "
        f"compared with onnxruntime {reference}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "reference": reference,
        "tolerance": TOLERANCE,
        "releases": runs,
        "bundles": table,
    }


def write(result: dict, results_name: str) -> None:
    from report import write_results

    versions = list(result["releases"])
    header = (
        f"{result['what']}; {result['machine']}; Python {platform.python_version()}; "
        f"{result['seconds']} s. Cells: max relative difference from {result['reference']} "
        "over score (samples=0), score (8 draws, seed 0) and sample (64, seed 0), on 256 "
        "MNIST test digits; relative to each score, and for samples to the largest value."
    )
    lines = [
        "| bundle | " + " | ".join(f"onnxruntime {v}" for v in versions) + " |",
        "| --- |" + " --- |" * len(versions),
    ]
    for name, cells in result["bundles"].items():
        row = []
        for v in versions:
            c = cells[v]
            if not c["loaded"]:
                row.append(f"does not load: {c['error']}")
            else:
                worst = max(c[f"max_rel_diff_{w}"] for w in OUTPUTS)
                verdict = "" if c["within_tolerance"] else f" (over {c['tolerance']:g})"
                row.append(f"loads, {worst:.1e}{verdict}")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += [
        "",
        "| onnxruntime | NumPy | highest IR version loaded | highest opset loaded "
        "| runtime's table |",
        "| --- | --- | --- | --- | --- |",
    ]
    for v, run in result["releases"].items():
        agrees = {True: "agrees", False: f"differs ({run['table_limits']})", None: "no row"}
        lines.append(
            f"| {v} | {run['numpy']} | {_capped(run['max_ir_version'], PROBE_IR)} | "
            f"{_capped(run['max_opset'], PROBE_OPSET)} | {agrees[run['table_agrees']]} |"
        )
    write_results(results_name, result, header, "\n".join(lines))
    failed = [
        f"{name} on {v}"
        for name, cells in result["bundles"].items()
        for v, c in cells.items()
        if not c["within_tolerance"]  # False too where it did not load
    ] + [
        f"the table for {v}"
        for v, run in result["releases"].items()
        if run["table_agrees"] is False
    ]
    if failed:
        raise SystemExit(f"compatibility check failed: {', '.join(failed)}")


def _capped(value, probed: range) -> str:
    return f"{value} or more" if value == probed[-1] else str(value)


if __name__ == "__main__":
    main()
