"""Edge performance: vae-edge against PyTorch eager on the same weights and against the
bare onnxruntime calls with hand-written NumPy (the floor the wrapper adds to).

    python benchmarks/latency.py [RUN_DIR]      (default build/mnist-run, made by `make model`)

1. Latency p50/p95/p99 of the default score (-ELBO at z = mu) and of sample, at batch 1,
   32, 1024 and 4096, one thread for every contender; the contenders take turns in short
   bursts (vae_edge.runtime.bench.time_calls), warm-up excluded.
2. Throughput (samples/s) at batch 4096, one thread and all cores.
3. Cold start, whole process, median of 9: `vae-edge score` of one sample from process
   start to output, installed as users install it (`pip install .` into a fresh venv: no
   torch, bytecode compiled), against the same job in a process with torch; wall time and
   peak RSS.
4. Installed size of the runtime's packages against the same plus torch.
5. The export variants (int8, fp16, and static QDQ int8, which export does not use)
   against fp32: speed, bundle size, score correlation, AUROC change.
6. Design measurements: run() vs run_with_ort_values() vs IOBinding, graph optimisation
   levels, the Bernoulli loss in NumPy vs in an ONNX graph.
7. Each target of the performance issue, met or not, from the figures of this run.

Writes benchmarks/results/latency.{json,md,png} with the machine and versions.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from environment import runtime_environment
from report import RESULTS, write_results

from vae_edge.export.onnx_export import export_run
from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.bench import (
    data_like_samples,
    sample_jobs,
    score_jobs,
    summarize,
    time_calls,
)
from vae_edge.training.model import kl_divergence
from vae_edge.training.train import load_run

BATCH_SIZES = (1, 32, 1024, 4096)
SECONDS = 4.0  # timed seconds per contender, job and batch size
COLD_RUNS = 9
REPO = Path(__file__).resolve().parent.parent


def torch_jobs(vae, edge: EdgeVAE, x: np.ndarray, n: int) -> dict:
    """The same two jobs in PyTorch eager: the score measured from the floor, and sample
    (of the MNIST model: Bernoulli means scaled back to grey levels)."""
    xt = torch.from_numpy(edge.preprocess(x))
    scale = edge.manifest.preprocessing.scale

    def score():
        with torch.inference_mode():
            params, mu, logvar = vae(xt)
            nll = vae.reconstruction_nll(xt, params) - vae.nll_floor(xt)
            return (nll + kl_divergence(mu, logvar)).numpy()

    def sample():
        with torch.inference_mode():
            z = torch.randn(n, edge.manifest.latent_dim, generator=torch.Generator().manual_seed(0))
            return (torch.sigmoid(vae.decode(z)) / scale).numpy()

    return {"score": score, "sample": sample}


def latency(vae, edge: EdgeVAE) -> list[dict]:
    rows = []
    for n in BATCH_SIZES:
        x = data_like_samples(edge, n)
        eager = torch_jobs(vae, edge, x, n)
        for job, contenders in (("score", score_jobs(edge, x)), ("sample", sample_jobs(edge, n))):
            times = time_calls(contenders | {"torch_eager": eager[job]}, SECONDS)
            row = {"job": job, "batch": n} | {k: summarize(t, n) for k, t in times.items()}
            p50 = {k: row[k]["p50_us"] for k in times}
            row["torch_over_vae_edge"] = p50["torch_eager"] / p50["vae_edge"]
            row["vae_edge_over_bare"] = p50["vae_edge"] / p50["bare_ort"]
            rows.append(row)
            print(f"{job} batch {n}: " + ", ".join(f"{k} {v:.1f} us" for k, v in p50.items()))
    return rows


def throughput(vae, bundle: Path) -> dict:
    """Samples/s of the score at batch 4096, one thread and all cores, for both."""
    result = {}
    for threads in sorted({1, os.cpu_count()}):
        torch.set_num_threads(threads)
        edge = EdgeVAE.load(bundle, threads=threads)
        x = data_like_samples(edge, 4096)
        contenders = {"vae_edge": score_jobs(edge, x)["vae_edge"],
                      "torch_eager": torch_jobs(vae, edge, x, 4096)["score"]}  # fmt: skip
        times = time_calls(contenders, SECONDS)
        result[threads] = {k: summarize(t, 4096)["samples_per_s"] for k, t in times.items()}
    torch.set_num_threads(1)
    return result


TORCH_SCORE = """
import sys, numpy as np, torch
from vae_edge.training.model import kl_divergence
from vae_edge.training.train import load_run
torch.set_num_threads(1)
vae, config = load_run(sys.argv[1])
x = torch.from_numpy(np.load(sys.argv[2]).astype(np.float32) * config.preprocessing["scale"])
with torch.inference_mode():
    params, mu, logvar = vae(x)
    print(float((vae.reconstruction_nll(x, params) - vae.nll_floor(x)
                 + kl_divergence(mu, logvar))[0]))
"""


def cold_start(run_dir: str, bundle: Path, tmp: Path, vae_edge: Path) -> dict:
    """Wall seconds and peak RSS (MiB) of whole processes scoring one sample, median of
    COLD_RUNS, the contenders taking turns. `imports` is the floor under vae-edge's time:
    the runtime environment's Python importing numpy, onnxruntime and click, nothing else."""
    one = tmp / "one.npy"
    np.save(one, data_like_samples(EdgeVAE.load(bundle), 1, seed=2))
    python = str(vae_edge.with_name("python"))
    commands = {
        "vae_edge": [str(vae_edge), "score", "--model", str(bundle), "--threads", "1", str(one)],
        "torch": [sys.executable, "-c", TORCH_SCORE, run_dir, str(one)],
        "imports": [python, "-c", "import numpy, onnxruntime, click; print(0)"],
    }
    runs = {name: [] for name in commands}
    for _ in range(COLD_RUNS):
        for name, command in commands.items():
            runs[name].append(_run_measured(command))
    result = {name: {"wall_s": float(np.median([r[0] for r in rs])),
                     "peak_rss_mib": float(np.median([r[1] for r in rs]))}
              for name, rs in runs.items()}  # fmt: skip
    # The same number from both processes, or the comparison is not of the same job.
    a, b = float(runs["vae_edge"][-1][2]), float(runs["torch"][-1][2])
    assert abs(a - b) <= 1e-3 * abs(b), (a, b)
    result["score"] = {"vae_edge": a, "torch": b}
    return result


# Measures from a small launcher process: a child forked straight from this process (torch
# loaded, hundreds of MiB) would carry this process's resident size in its own peak.
LAUNCHER = """
import os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
out = p.stdout.read()
_, status, usage = os.wait4(p.pid, 0)
wall = time.perf_counter() - t0
sys.exit(f"failed: {sys.argv[1:]}") if os.waitstatus_to_exitcode(status) else None
print(wall, usage.ru_maxrss / 1024, out.decode().split()[-1].split(",")[-1])
"""


def _run_measured(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds from process start to exit, peak RSS MiB, last output field)."""
    r = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{command[0]} failed: {r.stderr}")
    wall, rss, last = r.stdout.split()
    return float(wall), float(rss), last


VARIANTS = ("fp32", "int8", "int8_static_qdq", "fp16")


def variants(run_dir: str, bundle: Path, tmp: Path) -> dict:
    """The export variants against fp32: score speed at batch 1 and 4096 (one thread), score
    correlation on real MNIST test digits, and AUROC on the ODDS cardio set (seed-0 split
    of the anomaly benchmark, default training). int8 and fp16 are `export --quantize int8`
    and `--fp16`; int8_static_qdq (static QDQ, calibrated on 512 samples from the model) is
    the alternative the exporter does not use, measured here to show why."""
    from sklearn.model_selection import train_test_split

    from vae_edge.runtime.anomaly import roc_auc
    from vae_edge.training.train import train

    data = Path(os.environ.get("VAE_EDGE_DATA", "../shared/data"))
    with np.load(data / "odds" / "cardio.npz") as f:
        x_train, x_test, _, y_test = train_test_split(
            f["x"], f["y"], test_size=0.4, stratify=f["y"], random_state=0
        )
    np.save(tmp / "cardio.npy", x_train)
    train(str(tmp / "cardio.npy"), tmp / "cardio-run", progress=False)
    mnist, cardio = (
        _variant_bundles(run_dir, tmp / "mnist"),
        _variant_bundles(tmp / "cardio-run", tmp / "cardio"),
    )
    models = {v: EdgeVAE.load(mnist[v], threads=1) for v in VARIANTS}
    with np.load(data / "mnist.npz") as f:
        digits = f["x_test"][:2000]
    reference = models["fp32"].score(digits)
    result = {}
    for batch in (1, 4096):
        x = data_like_samples(models["fp32"], batch)
        jobs = {v: (lambda m=m, x=x: m.score(x)) for v, m in models.items()}
        times = time_calls(jobs, SECONDS)
        result[f"samples_per_s_batch_{batch}"] = {
            v: summarize(t, batch)["samples_per_s"] for v, t in times.items()
        }
    result["score_correlation_mnist_test_2000"] = {
        v: float(np.corrcoef(reference, m.score(digits))[0, 1]) for v, m in models.items()
    }
    result["cardio_auroc"] = {
        v: roc_auc(y_test, EdgeVAE.load(cardio[v]).score(x_test)) for v in VARIANTS
    }
    result["bundle_mib"] = {
        v: sum(f.stat().st_size for f in b.iterdir()) / 2**20 for v, b in mnist.items()
    }
    return result


def _variant_bundles(run_dir, out: Path) -> dict[str, Path]:
    bundles = {}
    for v in VARIANTS:
        bundles[v] = out / v
        export_run(run_dir, bundles[v], quantize=None if v in ("fp32", "int8_static_qdq") else v)
    _static_qdq(bundles["int8_static_qdq"])
    return bundles


def _static_qdq(bundle: Path) -> None:
    """Rewrite an fp32 bundle's graphs with onnxruntime's static QDQ quantization (uint8
    activations, int8 per-channel weights), calibrated on 512 samples from the model."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from vae_edge.runtime.manifest import MANIFEST_FILE, Manifest

    class Batches(CalibrationDataReader):
        def __init__(self, name, array):
            self.batches = iter([{name: array[i : i + 64]} for i in range(0, len(array), 64)])

        def get_next(self):
            return next(self.batches, None)

    model = EdgeVAE.load(bundle)
    xp = model.preprocess(data_like_samples(model, 512, seed=0))
    mu, _ = model.bundle.run_encoder(xp)
    manifest = model.manifest.to_dict()
    for graph, name, calibration in (("encoder", "x", xp), ("decoder", "z", mu)):
        file = bundle / f"{graph}.onnx"
        quantized = bundle / f"{graph}.qdq.onnx"
        quantize_static(file, quantized, Batches(name, calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)  # fmt: skip
        os.replace(quantized, file)
        manifest[graph]["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    (bundle / MANIFEST_FILE).write_text(Manifest.from_dict(manifest).to_json())


def design_choices(bundle: Path) -> dict:
    """The measurements behind the runtime's choices, p50 microseconds, one thread:
    - how a graph is called: run() (used), run_with_ort_values(), IOBinding bound per call;
    - graph optimisation level: session creation (both graphs) and encoder + decoder calls;
    - the Bernoulli loss in NumPy (used) or in an ONNX graph (Softplus, Mul, ReduceSum)."""
    model = EdgeVAE.load(bundle, threads=1)
    result = {"call": {}, "optimization_level": {}, "loss": {}}
    for n in (1, 1024):
        x = data_like_samples(model, n)
        result["call"][f"encoder_batch_{n}"] = _call_ways(model.bundle.encoder, model.preprocess(x))
        result["optimization_level"][f"batch_{n}"] = _optimization_levels(bundle, x, model)
        result["loss"][f"batch_{n}"] = _loss_ways(model, x)
    return result


def _call_ways(encoder, xp: np.ndarray) -> dict:
    def with_ort_values():
        out = encoder.run_with_ort_values(None, {"x": ort.OrtValue.ortvalue_from_numpy(xp)})
        return [v.numpy() for v in out]

    def with_binding():
        binding = encoder.io_binding()
        binding.bind_cpu_input("x", xp)
        for name in ("mu", "logvar"):
            binding.bind_output(name, "cpu")
        encoder.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    jobs = {"run": lambda: encoder.run(None, {"x": xp}),
            "run_with_ort_values": with_ort_values, "iobinding": with_binding}  # fmt: skip
    return {k: float(np.median(t)) for k, t in time_calls(jobs, SECONDS / 2).items()}


def _optimization_levels(bundle: Path, x: np.ndarray, model: EdgeVAE) -> dict:
    xp = model.preprocess(x)
    sessions, created = {}, {}
    for level in ("DISABLE_ALL", "ENABLE_BASIC", "ENABLE_EXTENDED", "ENABLE_ALL"):
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_{level}")
        options.intra_op_num_threads = 1
        t0 = time.perf_counter()
        sessions[level] = [
            _cpu_session(str(bundle / f), options) for f in ("encoder.onnx", "decoder.onnx")
        ]
        created[level] = (time.perf_counter() - t0) * 1e6

    def both(encoder, decoder):
        return lambda: decoder.run(None, {"z": encoder.run(None, {"x": xp})[0]})

    times = time_calls({level: both(*s) for level, s in sessions.items()}, SECONDS / 2)
    return {
        level: {"create_us": created[level], "encoder_decoder_us": float(np.median(t))}
        for level, t in times.items()
    }


def _loss_ways(model: EdgeVAE, x: np.ndarray) -> dict:
    n, batch = len(x), model.likelihood.prepare(x)
    params = model.bundle.run_decoder(model.bundle.run_encoder(batch.xp)[0])
    loss = _loss_graph()
    flat = {"l": params.reshape(n, -1), "x": batch.xp.reshape(n, -1)}
    floor = batch.floor.reshape(n, -1)

    def numpy_loss():
        return model.likelihood.nll(batch, params).reshape(n, -1).sum(axis=1)

    def graph_loss():
        return loss.run(None, flat)[0] - floor.sum(axis=1)

    assert np.allclose(numpy_loss(), graph_loss(), rtol=1e-4, atol=1e-3)
    times = time_calls({"numpy": numpy_loss, "onnx_graph": graph_loss}, SECONDS / 2)
    return {k: float(np.median(t)) for k, t in times.items()}


def _cpu_session(model, options: ort.SessionOptions) -> ort.InferenceSession:
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _loss_graph() -> ort.InferenceSession:
    """sum over features of softplus(l) - x * l, per row, as an ONNX graph."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Softplus", ["l"], ["softplus"]),
        helper.make_node("Mul", ["x", "l"], ["xl"]),
        helper.make_node("Sub", ["softplus", "xl"], ["bce"]),
        helper.make_node("ReduceSum", ["bce", "axes"], ["loss"], keepdims=0),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", "D"]) for n in "lx"]
    output = helper.make_tensor_value_info("loss", TensorProto.FLOAT, ["N"])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "loss", inputs, [output], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return _cpu_session(model.SerializeToString(), options)


def installed_size() -> dict:
    """MiB on disk of the runtime's packages (vae-edge's requirements, recursively) and of
    the same plus torch's."""
    runtime = _closure(["numpy", "onnxruntime", "click", "pillow"])
    with_torch = runtime | _closure(["torch"])
    return {
        "runtime_mib": _size_mib(runtime),
        "with_torch_mib": _size_mib(with_torch),
        "runtime_packages": sorted(runtime),
        "torch_packages": sorted(with_torch - runtime),
    }


def _closure(names: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement that is not installed
        seen.add(name)
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return seen


def _size_mib(names: set[str]) -> float:
    total = 0
    for name in names:
        for f in metadata.distribution(name).files or []:
            path = f.locate()
            if path.is_file():
                total += path.stat().st_size
    return total / 2**20


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, job in zip(axes, ("score", "sample"), strict=True):
        mine = [r for r in rows if r["job"] == job]
        for who in ("vae_edge", "bare_ort", "torch_eager"):
            ax.plot([r["batch"] for r in mine], [r[who]["p50_us"] for r in mine], "o-", label=who)
        ax.set(xscale="log", yscale="log", xlabel="batch", ylabel="p50 latency (us)", title=job)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(run_dir: str = "build/mnist-run") -> None:
    torch.set_num_threads(1)
    vae, _ = load_run(run_dir)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        export_run(run_dir, bundle)
        edge = EdgeVAE.load(bundle, threads=1)
        rows = latency(vae, edge)
        rates = throughput(vae, bundle)
        cold = cold_start(run_dir, bundle, Path(tmp), runtime_environment(Path(tmp)))
        variant = variants(run_dir, bundle, Path(tmp))
        design = design_choices(bundle)
    size = installed_size()
    result = {
        "what": f"vae-edge vs torch eager vs bare onnxruntime on {run_dir}",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },  # fmt: skip
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
        },  # fmt: skip
        "threads": "1 for latency and cold start; 1 and all cores for throughput",
        "latency": rows,
        "throughput_samples_per_s": rates,
        "cold_start": cold,
        "variants": variant,
        "design_choices": design,
        "installed_size": size,
        "seconds": round(time.perf_counter() - started),
    }
    lines = [
        "| job | batch | vae-edge p50 / p95 / p99 (us) | bare ORT p50 | torch eager p50 "
        "| torch / vae-edge | vae-edge / bare |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        v = r["vae_edge"]
        lines.append(
            f"| {r['job']} | {r['batch']} | {v['p50_us']:.1f} / {v['p95_us']:.1f} / "
            f"{v['p99_us']:.1f} | {r['bare_ort']['p50_us']:.1f} | {r['torch_eager']['p50_us']:.1f} "
            f"| {r['torch_over_vae_edge']:.2f}x | {r['vae_edge_over_bare']:.2f}x |"
        )
    lines += ["", "| score at batch 4096 | vae-edge samples/s | torch eager samples/s | ratio |",
              "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for threads, r in rates.items():
        lines.append(f"| {threads} thread(s) | {r['vae_edge']:,.0f} | {r['torch_eager']:,.0f} "
                     f"| {r['vae_edge'] / r['torch_eager']:.2f}x |")  # fmt: skip
    c, ratio = cold, cold["torch"]["wall_s"] / cold["vae_edge"]["wall_s"]
    lines += [
        "",
        f"| cold start, one sample, whole process (median of {COLD_RUNS}) | wall (s) "
        "| peak RSS (MiB) |",
        "| --- | ---: | ---: |",
        *(
            f"| {label} | {c[k]['wall_s']:.3f} | {c[k]['peak_rss_mib']:.1f} |"
            for k, label in (
                ("vae_edge", "`vae-edge score`"),
                ("torch", "the same with torch"),
                ("imports", "floor: python importing numpy, onnxruntime, click"),
            )
        ),
        f"| ratio torch / vae-edge | {ratio:.1f}x "
        f"| {c['torch']['peak_rss_mib'] / c['vae_edge']['peak_rss_mib']:.1f}x |",
        "",
        f"Installed size: runtime packages {size['runtime_mib']:.0f} MiB, with torch "
        f"{size['with_torch_mib']:.0f} MiB "
        f"({size['runtime_mib'] / size['with_torch_mib']:.2f} of it).",
    ]
    q = variant
    speed = {b: q[f"samples_per_s_batch_{b}"] for b in (1, 4096)}
    lines += [
        "",
        "| variant | score samples/s, batch 1 | batch 4096 | vs fp32 at 4096 | score correlation "
        "(2,000 MNIST test digits) | AUROC cardio | AUROC change | bundle MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {v} | {speed[1][v]:,.0f} | {speed[4096][v]:,.0f} "
            f"| {speed[4096][v] / speed[4096]['fp32']:.2f}x "
            f"| {q['score_correlation_mnist_test_2000'][v]:.5f} | {q['cardio_auroc'][v]:.4f} "
            f"| {q['cardio_auroc'][v] - q['cardio_auroc']['fp32']:+.4f} "
            f"| {q['bundle_mib'][v]:.1f} |"
            for v in VARIANTS
        ),
    ]
    d = design
    lines += [
        "",
        "Design measurements (p50 us, one thread):",
        "",
        "| encoder call | " + " | ".join(d["call"]["encoder_batch_1"]) + " |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {k} | " + " | ".join(f"{t:.1f}" for t in v.values()) + " |"
          for k, v in d["call"].items()),
        "",
        "| graph optimisation level | " + " | ".join(d["optimization_level"]["batch_1"]) + " |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| create both sessions | " + " | ".join(
            f"{v['create_us']:.0f}" for v in d["optimization_level"]["batch_1"].values()) + " |",
        *(f"| encoder + decoder, {k.replace('_', ' ')} | " + " | ".join(
            f"{t['encoder_decoder_us']:.1f}" for t in v.values()) + " |"
          for k, v in d["optimization_level"].items()),
        "",
        "| Bernoulli loss | NumPy | ONNX graph |",
        "| --- | ---: | ---: |",
        *(f"| {k.replace('_', ' ')} | {v['numpy']:.1f} | {v['onnx_graph']:.1f} |"
          for k, v in d["loss"].items()),
    ]  # fmt: skip
    score_1 = next(r for r in rows if r["job"] == "score" and r["batch"] == 1)
    targets = [
        ("score at batch 1: >= 3x faster than torch eager", score_1["torch_over_vae_edge"] >= 3,
         f"{score_1['torch_over_vae_edge']:.2f}x"),
        ("score at batch 1: within 1.15x of bare onnxruntime",
         score_1["vae_edge_over_bare"] <= 1.15,
         f"{score_1['vae_edge_over_bare']:.2f}x"),
        *((f"throughput at batch 4096, {t} thread(s): >= 2x torch eager",
           r["vae_edge"] / r["torch_eager"] >= 2, f"{r['vae_edge'] / r['torch_eager']:.2f}x")
          for t, r in rates.items()),
        ("int8 faster than fp32 at batch 4096, AUROC change <= 0.005",
         speed[4096]["int8"] > speed[4096]["fp32"]
         and abs(q["cardio_auroc"]["int8"] - q["cardio_auroc"]["fp32"]) <= 0.005,
         f"{speed[4096]['int8'] / speed[4096]['fp32']:.2f}x, "
         f"{q['cardio_auroc']['int8'] - q['cardio_auroc']['fp32']:+.4f}"),
        ("cold start <= 0.25 s median wall", c["vae_edge"]["wall_s"] <= 0.25,
         f"{c['vae_edge']['wall_s']:.3f} s"),
        ("cold start <= 90 MiB peak RSS", c["vae_edge"]["peak_rss_mib"] <= 90,
         f"{c['vae_edge']['peak_rss_mib']:.1f} MiB"),
        ("cold start <= 1/5 of torch's wall time", ratio >= 5, f"1/{ratio:.1f}"),
        ("runtime environment <= 1/5 of one with torch",
         size["runtime_mib"] <= size["with_torch_mib"] / 5,
         f"{size['runtime_mib']:.0f} of {size['with_torch_mib']:.0f} MiB"),
    ]  # fmt: skip
    result["targets"] = [{"target": t, "met": met, "measured": m} for t, met, m in targets]
    lines += [
        "",
        "| target (this run) | measured | |",
        "| --- | --- | --- |",
        *(f"| {t} | {m} | {'met' if met else 'not met'} |" for t, met, m in targets),
    ]
    header = f"{result['what']}; {result['machine']}; {result['versions']}; {result['threads']}"
    write_results("latency", result, header, "\n".join(lines))
    plot(rows, RESULTS / "latency.png")


if __name__ == "__main__":
    main(*sys.argv[1:])
