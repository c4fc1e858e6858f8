"""Edge performance: vae-edge against PyTorch eager on the same weights and against the
bare onnxruntime calls with hand-written NumPy (the floor the wrapper adds to).

    python benchmarks/latency.py [RUN_DIR]      (default build/mnist-run, made by `make model`)

1. Latency p50/p95/p99 of the default score (-ELBO at z = mu) and of sample, at batch 1,
   32, 1024 and 4096, one thread for every contender; the contenders take turns in short
   bursts (vae_edge.runtime.bench.time_calls), warm-up excluded.
2. Throughput (samples/s) at batch 4096, one thread and all cores.
3. Cold start, whole process, median of 5: `vae-edge score` of one sample from process
   start to output, against the same job in a process with torch; wall time and peak RSS.
4. Installed size of the runtime's packages against the same plus torch.
5. The int8 variant against fp32: speed, bundle size, score correlation, AUROC change.

Writes benchmarks/results/latency.{json,md,png} with the machine and versions.
"""

from __future__ import annotations

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
from vae_edge.training.model import kl_divergence, reconstruction_nll
from vae_edge.training.train import load_run

BATCH_SIZES = (1, 32, 1024, 4096)
SECONDS = 4.0  # timed seconds per contender, job and batch size
COLD_RUNS = 5


def torch_jobs(vae, edge: EdgeVAE, x: np.ndarray, n: int) -> dict:
    """The same two jobs in PyTorch eager: the score measured from the floor, and sample."""
    xt = torch.from_numpy(edge.preprocess(x))
    likelihood = edge.manifest.likelihood
    scale = edge.manifest.preprocessing.scale

    def score():
        with torch.inference_mode():
            mu, logvar = vae.encode(xt)
            nll = reconstruction_nll(xt, vae.decode(mu), likelihood, vae.observation_logvar())
            if likelihood == "bernoulli":
                floor = torch.nn.functional.binary_cross_entropy(xt, xt, reduction="none")
                nll = nll - floor.flatten(1).sum(1)
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
from vae_edge.training.model import kl_divergence, reconstruction_nll
from vae_edge.training.train import load_run
torch.set_num_threads(1)
vae, config = load_run(sys.argv[1])
x = torch.from_numpy(np.load(sys.argv[2]).astype(np.float32) * config["preprocessing"]["scale"])
with torch.inference_mode():
    mu, logvar = vae.encode(x)
    nll = reconstruction_nll(x, vae.decode(mu), "bernoulli")
    floor = torch.nn.functional.binary_cross_entropy(x, x, reduction="none").flatten(1).sum(1)
    print(float((nll - floor + kl_divergence(mu, logvar))[0]))
"""


def cold_start(run_dir: str, bundle: Path, tmp: Path) -> dict:
    """Wall seconds and peak RSS (MiB) of whole processes scoring one sample, median of 5."""
    one = tmp / "one.npy"
    np.save(one, data_like_samples(EdgeVAE.load(bundle), 1, seed=2))
    vae_edge = Path(sys.executable).with_name("vae-edge")
    commands = {
        "vae_edge": [str(vae_edge), "score", "--model", str(bundle), "--threads", "1", str(one)],
        "torch": [sys.executable, "-c", TORCH_SCORE, run_dir, str(one)],
    }
    result, outputs = {}, {}
    for name, command in commands.items():
        runs = [_run_measured(command) for _ in range(COLD_RUNS)]
        outputs[name] = runs[-1][2]  # the score: CSV "index,score" or a number
        result[name] = {"wall_s": float(np.median([r[0] for r in runs])),
                        "peak_rss_mib": float(np.median([r[1] for r in runs]))}  # fmt: skip
    # The same number from both processes, or the comparison is not of the same job.
    a, b = float(outputs["vae_edge"]), float(outputs["torch"])
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


def int8_variant(run_dir: str, bundle: Path, tmp: Path) -> dict:
    """`export --quantize int8` against fp32: score throughput at batch 4096 (one thread),
    score correlation on real MNIST test digits, and AUROC on the ODDS cardio set (seed 0
    split of the anomaly benchmark, default training) with either bundle."""
    from sklearn.model_selection import train_test_split

    from vae_edge.runtime.anomaly import roc_auc
    from vae_edge.training.train import train

    data = Path(os.environ.get("VAE_EDGE_DATA", "../shared/data"))
    export_run(run_dir, tmp / "int8", quantize="int8")
    fp32, int8 = EdgeVAE.load(bundle, threads=1), EdgeVAE.load(tmp / "int8", threads=1)
    x = data_like_samples(fp32, 4096)
    times = time_calls({"fp32": lambda: fp32.score(x), "int8": lambda: int8.score(x)}, SECONDS)
    rate = {k: summarize(t, 4096)["samples_per_s"] for k, t in times.items()}
    with np.load(data / "mnist.npz") as f:
        digits = f["x_test"][:2000]
    correlation = float(np.corrcoef(fp32.score(digits), int8.score(digits))[0, 1])
    with np.load(data / "odds" / "cardio.npz") as f:
        x_train, x_test, _, y_test = train_test_split(
            f["x"], f["y"], test_size=0.4, stratify=f["y"], random_state=0
        )
    np.save(tmp / "cardio.npy", x_train)
    train(str(tmp / "cardio.npy"), tmp / "cardio-run", progress=False)
    aurocs = {}
    for name, quantize in (("fp32", None), ("int8", "int8")):
        export_run(tmp / "cardio-run", tmp / f"cardio-{name}", quantize=quantize)
        aurocs[name] = roc_auc(y_test, EdgeVAE.load(tmp / f"cardio-{name}").score(x_test))
    return {
        "samples_per_s_batch_4096_1_thread": rate,
        "int8_over_fp32_speed": rate["int8"] / rate["fp32"],
        "score_correlation_mnist_test_2000": correlation,
        "cardio_auroc": aurocs,
        "cardio_auroc_change": aurocs["int8"] - aurocs["fp32"],
        "bundle_mib": {
            name: sum(f.stat().st_size for f in b.iterdir()) / 2**20
            for name, b in (("fp32", bundle), ("int8", tmp / "int8"))
        },  # fmt: skip
    }


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
        cold = cold_start(run_dir, bundle, Path(tmp))
        quantized = int8_variant(run_dir, bundle, Path(tmp))
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
        "int8": quantized,
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
        "| cold start, one sample, whole process (median of 5) | wall (s) | peak RSS (MiB) |",
        "| --- | ---: | ---: |",
        *(
            f"| {label} | {c[k]['wall_s']:.3f} | {c[k]['peak_rss_mib']:.1f} |"
            for k, label in (("vae_edge", "`vae-edge score`"), ("torch", "the same with torch"))
        ),
        f"| ratio torch / vae-edge | {ratio:.1f}x "
        f"| {c['torch']['peak_rss_mib'] / c['vae_edge']['peak_rss_mib']:.1f}x |",
        "",
        f"Installed size: runtime packages {size['runtime_mib']:.0f} MiB, with torch "
        f"{size['with_torch_mib']:.0f} MiB "
        f"({size['runtime_mib'] / size['with_torch_mib']:.2f} of it).",
    ]
    q = quantized
    lines += [
        "",
        "| int8 variant (`export --quantize int8`) | fp32 | int8 |",
        "| --- | ---: | ---: |",
        f"| score at batch 4096, 1 thread (samples/s) "
        f"| {q['samples_per_s_batch_4096_1_thread']['fp32']:,.0f} "
        f"| {q['samples_per_s_batch_4096_1_thread']['int8']:,.0f} |",
        f"| bundle size (MiB) | {q['bundle_mib']['fp32']:.1f} | {q['bundle_mib']['int8']:.1f} |",
        f"| AUROC on cardio (seed-0 split) | {q['cardio_auroc']['fp32']:.4f} "
        f"| {q['cardio_auroc']['int8']:.4f} |",
        "",
        f"int8 / fp32 speed {q['int8_over_fp32_speed']:.2f}x; score correlation on 2,000 MNIST "
        f"test digits {q['score_correlation_mnist_test_2000']:.5f}; AUROC change on cardio "
        f"{q['cardio_auroc_change']:+.4f}.",
    ]
    header = f"{result['what']}; {result['machine']}; {result['versions']}; {result['threads']}"
    write_results("latency", result, header, "\n".join(lines))
    plot(rows, RESULTS / "latency.png")


if __name__ == "__main__":
    main(*sys.argv[1:])
