"""The default score at the edge, like for like: the shipped model's default score (-ELBO
at z = mu per complexity bit) against floors that compute the same quantity, in one run.

    python benchmarks/default_score.py [BUNDLE]     (default: the shipped model)

- batch 1, one thread: EdgeVAE.score against the bare floor of vae_edge.runtime.bench
  (default_score_jobs: the two session runs, BCE from logits, closed-form KL, the steps'
  code length from a table, written by hand), taking turns in short bursts;
- threads: the default (threads=None) against one thread and all cores, batch 1 to 4096:
  the evidence for bundle.PARALLEL_MULTIPLY_ADDS;
- batch 4096, one thread: a NumPy matmul roof (the MLP's layer shapes, one BLAS thread),
  the two graphs alone, score without complexity, the default score and the same score
  through the bundle's score graphs (onnxruntime for the arithmetic NumPy does), each as
  a share of the roof (roof time / its time);
- cold start: `vae-edge score` of one image in a new process against
  `python -c "import numpy, onnxruntime, click"`, median of interleaved runs, and where
  the difference goes (python -X importtime, the load, the score).

Writes benchmarks/results/default_score.{json,md}.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the roof on one thread, as ORT's
os.environ.setdefault("OMP_NUM_THREADS", "1")

import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from environment import runtime_environment  # noqa: E402
from report import write_results  # noqa: E402

from vae_edge.runtime import EdgeVAE  # noqa: E402
from vae_edge.runtime.bench import data_like_samples, default_score_jobs, time_calls  # noqa: E402
from vae_edge.runtime.bundle import PARALLEL_MULTIPLY_ADDS  # noqa: E402
from vae_edge.runtime.score_graphs import GraphScorer  # noqa: E402

BATCHES = (1, 16, 32, 64, 256, 1024, 4096)
COLD_RUNS = 21
TARGETS = {
    "batch 1 over floor": 1.10,
    "share of roof at 4096": 0.80,
    "cold start over imports": 1.20,
}


def p50(times: np.ndarray) -> float:
    return float(np.percentile(times, 50))


def batch1(path) -> dict:
    model = EdgeVAE.load(path, threads=1)
    x = data_like_samples(model, 1)
    jobs = default_score_jobs(model, x)
    np.testing.assert_allclose(jobs["vae_edge"](), jobs["bare_ort"](), rtol=1e-4)
    t = time_calls(jobs, seconds=6)
    return {"vae_edge_p50_us": p50(t["vae_edge"]), "floor_p50_us": p50(t["bare_ort"]),
            "ratio": p50(t["vae_edge"]) / p50(t["bare_ort"])}  # fmt: skip


def threads(path) -> list[dict]:
    models = {"default": EdgeVAE.load(path), "1": EdgeVAE.load(path, threads=1),
              "all": EdgeVAE.load(path, threads=os.cpu_count())}  # fmt: skip
    rows = []
    for n in BATCHES:
        x = data_like_samples(models["1"], n)
        t = time_calls({k: (lambda m=m, x=x: m.score(x)) for k, m in models.items()},
                       seconds=3 if n < 1024 else 10)  # fmt: skip
        rows.append({"batch": n} | {f"{k}_p50_us": p50(v) for k, v in t.items()})
    return rows


def roof(path) -> dict:
    """Batch 4096 on one thread: each contender's time and the roof's share of it."""
    model = EdgeVAE.load(path, threads=1)
    m = model.manifest
    n = 4096
    x = data_like_samples(model, n)
    xp = model.preprocess(x)
    sizes = [m.n_features, *m.training["model"]["hidden"]]
    rng = np.random.default_rng(0)
    enc = [rng.standard_normal((a, b), np.float32) for a, b in zip(sizes, sizes[1:], strict=False)]
    heads = rng.standard_normal((sizes[-1], 2 * m.latent_dim), np.float32)
    back = [m.latent_dim, *reversed(sizes[1:]), m.n_features]
    dec = [rng.standard_normal((a, b), np.float32) for a, b in zip(back, back[1:], strict=False)]
    flat = xp.reshape(n, -1)

    def matmuls():
        h = flat
        for w in enc:
            h = h @ w
        z = (h @ heads)[:, : m.latent_dim]
        for w in dec:
            z = z @ w
        return z

    def graphs():
        mu, _ = model.bundle.run_encoder(xp)
        return model.bundle.run_decoder(mu)

    # The default score through the bundle's score graphs (prepare.onnx, loss.onnx), as the
    # JavaScript runtime computes it: measured to see whether Python should use them.
    score_graphs = GraphScorer(model)
    contenders = {"numpy matmul roof": matmuls, "graphs alone": graphs,
                  "score without complexity": lambda: model.score(x, complexity=False),
                  "default score": lambda: model.score(x),
                  "through the score graphs": lambda: score_graphs.run(x)}  # fmt: skip
    t = {k: p50(v) for k, v in time_calls(contenders, seconds=16, burst=1.0).items()}
    top = t["numpy matmul roof"]
    return {k: {"p50_ms": v / 1e3, "images_per_s": n / v * 1e6, "share_of_roof": top / v}
            for k, v in t.items()}  # fmt: skip


def cold_start(path) -> dict:
    """In a fresh venv with `pip install .` (bytecode compiled, as users have it), each
    command run once first: with PYTHONDONTWRITEBYTECODE set and an editable install,
    vae-edge's modules were compiled on every start (28 ms of it)."""
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.npy"
        np.save(one, data_like_samples(EdgeVAE.load(path), 1))
        exe = runtime_environment(Path(tmp))
        python = str(exe.parent / "python")
        model = ["--model", str(path)] if path else []
        commands = {"imports floor": [python, "-c", "import numpy, onnxruntime, click"],
                    "vae-edge score": [str(exe), "score", *model, str(one)]}  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        walls = {k: [] for k in commands}
        for run in range(COLD_RUNS + 1):
            for k, c in commands.items():
                t0 = time.perf_counter()
                subprocess.run(c, capture_output=True, check=True, env=env)
                if run == 0:
                    continue
                walls[k].append(time.perf_counter() - t0)
        code = ("import numpy, onnxruntime, click; import vae_edge.cli; "
                "import vae_edge.runtime.model, vae_edge.runtime.output")  # fmt: skip
        imports = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],  # fmt: skip
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        imports = imports.stderr
    ours = {}
    for line in imports.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if found and found.group(4).startswith("vae_edge") and found.group(3) == " ":
            ours[found.group(4)] = int(found.group(2)) / 1e3  # top-level, cumulative ms
    median = {k: statistics.median(v) for k, v in walls.items()}
    return {"median_s": median, "ratio": median["vae-edge score"] / median["imports floor"],
            "vae_edge_imports_ms": ours}  # fmt: skip


def main(path: str | None = None) -> None:
    started = time.perf_counter()
    results = {"batch1": batch1(path), "threads": threads(path), "roof": roof(path),
               "cold_start": cold_start(path),
               "parallel_multiply_adds": PARALLEL_MULTIPLY_ADDS}  # fmt: skip
    versions = {p: metadata.version(p) for p in ("vae-edge", "onnxruntime", "numpy")}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    b, r, c = results["batch1"], results["roof"], results["cold_start"]
    measured = {"batch 1 over floor": b["ratio"],
                "share of roof at 4096": r["default score"]["share_of_roof"],
                "cold start over imports": c["ratio"]}  # fmt: skip
    met = {k: (v <= TARGETS[k]) if k != "share of roof at 4096" else (v >= TARGETS[k])
           for k, v in measured.items()}  # fmt: skip
    lines = ["| target | measured | |", "| --- | ---: | --- |"]
    for k, v in measured.items():
        bound = f"{'>=' if k.startswith('share') else '<='} {TARGETS[k]:g}"
        lines.append(f"| {k}: {bound} | {v:.3f} | {'met' if met[k] else 'NOT met'} |")
    lines += ["", f"Batch 1, one thread: default score {b['vae_edge_p50_us']:.1f} us, "
              f"floor {b['floor_p50_us']:.1f} us (p50).", "",
              "| batch | threads=None (default) | threads=1 | all cores | default / best |",
              "| ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for row in results["threads"]:
        best = min(row["1_p50_us"], row["all_p50_us"])
        lines.append(f"| {row['batch']} | {row['default_p50_us']:.1f} us | "
                     f"{row['1_p50_us']:.1f} us | {row['all_p50_us']:.1f} us | "
                     f"{row['default_p50_us'] / best:.2f}x |")  # fmt: skip
    lines += ["", "| batch 4096, one thread | p50 | images/s | share of roof |",
              "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for k, v in r.items():
        lines.append(f"| {k} | {v['p50_ms']:.1f} ms | {v['images_per_s']:,.0f} | "
                     f"{v['share_of_roof']:.0%} |")  # fmt: skip
    lines += ["", f"Cold start (median of {COLD_RUNS}): `vae-edge score` of one image "
              f"{c['median_s']['vae-edge score']:.3f} s, imports floor "
              f"{c['median_s']['imports floor']:.3f} s. vae-edge's own imports (ms, "
              "cumulative, after numpy, onnxruntime and click): "
              + ", ".join(f"{k} {v:.1f}" for k, v in c["vae_edge_imports_ms"].items())]  # fmt: skip
    header = (f"The default score against floors of the same quantity, {path or 'shipped model'}. "
              f"{machine}; " + ", ".join(f"{k} {v}" for k, v in versions.items())
              + f"; {time.perf_counter() - started:.0f} s.")  # fmt: skip
    write_results("default_score", results | {"machine": machine, "versions": versions},
                  header, "\n".join(lines))  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
