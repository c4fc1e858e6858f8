"""Score latency: vae-edge vs PyTorch eager on the same weights vs bare onnxruntime calls.

    python benchmarks/latency.py [RUN_DIR]      (default build/mnist-run, made by `make model`)

Exports RUN_DIR to a temporary bundle, then times `score` (reconstruction loss, one z draw,
seed fixed) at several batch sizes, one thread for every contender, warm-up excluded, the
contenders taking turns in 0.1 s bursts (30 rounds). Writes
benchmarks/results/latency.json and .md with the machine and versions, and prints the table.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from report import write_results

from vae_edge.export.onnx_export import export_run
from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.model import draw_latents
from vae_edge.training.model import reconstruction_nll
from vae_edge.training.train import load_run

BATCH_SIZES = (1, 32, 1024)


def timings(contenders: dict, rounds: int = 30, burst: float = 0.1) -> dict[str, np.ndarray]:
    """Call times in microseconds. The contenders take turns in short bursts, so load from
    other processes on this shared machine falls on all of them alike."""
    runs = {name: [] for name in contenders}
    for fn in contenders.values():
        for _ in range(5):
            fn()  # warm-up
    for _ in range(rounds):
        for name, fn in contenders.items():
            deadline = time.perf_counter() + burst
            while time.perf_counter() < deadline:
                t0 = time.perf_counter_ns()
                fn()
                runs[name].append(time.perf_counter_ns() - t0)
    return {name: np.array(r) / 1e3 for name, r in runs.items()}


def contenders(edge: EdgeVAE, vae, x: np.ndarray, rng) -> dict:
    """The same job three ways: score x with one z draw."""
    xp = edge.preprocess(x)
    xt = torch.from_numpy(xp)
    enc, dec = edge._encoder, edge._decoder  # the same sessions, called by hand

    def runtime():
        edge.score(x, samples=1, seed=0, score_type="recon")

    def bare():
        mu, logvar = enc.run(None, {"x": xp})
        z = draw_latents(mu, logvar, 1, rng)[:, 0]
        logits = dec.run(None, {"z": z})[0]
        t = np.log(1 + np.exp(-np.abs(logits)))
        (t + np.maximum(logits, 0) - xp * logits).sum(axis=(1, 2))

    def eager():
        with torch.inference_mode():
            mu, logvar = vae.encode(xt)
            z = vae.reparameterize(mu, logvar, torch.randn_like(mu))
            reconstruction_nll(xt, vae.decode(z), edge.manifest.likelihood)

    return {"vae_edge": runtime, "bare_ort": bare, "torch_eager": eager}


def main(run_dir: str = "build/mnist-run") -> None:
    torch.set_num_threads(1)
    vae, _ = load_run(run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        export_run(run_dir, Path(tmp) / "bundle")
        edge = EdgeVAE.load(Path(tmp) / "bundle", threads=1)
    rng = np.random.default_rng(0)
    rows = []
    for n in BATCH_SIZES:
        x = np.round(edge.sample(n, seed=1))  # realistic inputs in the data's units
        t = timings(contenders(edge, vae, x, rng))
        p50 = {k: float(np.median(v)) for k, v in t.items()}
        rows.append(
            {
                "batch": n,
                "p50_us": p50,
                "p95_us": {k: float(np.percentile(v, 95)) for k, v in t.items()},
                "runs": {k: len(v) for k, v in t.items()},
                "torch_over_vae_edge": p50["torch_eager"] / p50["vae_edge"],
                "vae_edge_over_bare": p50["vae_edge"] / p50["bare_ort"],
            }
        )
    result = {
        "what": "score latency (reconstruction loss, one z draw), 1 thread, " + run_dir,
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
        "rows": rows,
    }
    lines = [
        "| batch | vae-edge p50 (us) | bare ORT p50 (us) | torch eager p50 (us) "
        "| torch / vae-edge | vae-edge / bare |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        p = r["p50_us"]
        lines.append(
            f"| {r['batch']} | {p['vae_edge']:.1f} | {p['bare_ort']:.1f} | {p['torch_eager']:.1f} "
            f"| {r['torch_over_vae_edge']:.2f}x | {r['vae_edge_over_bare']:.2f}x |"
        )
    table = "\n".join(lines)
    header = f"{result['what']}; {result['machine']}; {result['versions']}"
    write_results("latency", result, header, table)


if __name__ == "__main__":
    main(*sys.argv[1:])
