"""What a model's default score costs at the edge against the score it replaced (-ELBO at
z = mu, in nats), on the same bundle in the same run: tables' -L_k over TABLE_SCORE.samples
z draws, images' -ELBO per bit of PNG size (IMAGE_SCORE).

    python benchmarks/score_cost.py [DATA_DIR]     (default $VAE_EDGE_DATA)

For three tabular sets of different widths (odds/, trained on the whole set) and MNIST
(one digit's training images, the shipped model's architecture): `train` with defaults,
`export`, then EdgeVAE.score latency at batch 1 (p50 / p95, the two scores taking turns in
short bursts, one thread: vae_edge.runtime.bench.time_calls) and samples/s at batch 1024,
and the bundle's size. Writes benchmarks/results/score_cost.{json,md}.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
from report import write_results

from vae_edge.export.onnx_export import export_run
from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.bench import summarize, time_calls
from vae_edge.training.train import IMAGE_SCORE, TABLE_SCORE, train

SETS = ("thyroid", "cardio", "arrhythmia")  # 6, 21 and 274 columns
DIGIT = 8  # the image case: a one-class model, as in benchmarks/one_class.py
SECONDS = 3.0
LIMIT = 1.5  # the most a default score may cost at batch 1 against the one it replaced
TABLE = f"{TABLE_SCORE.score_type} over {TABLE_SCORE.samples} draws"
IMAGE = f"{IMAGE_SCORE.score_type} at z = mu per complexity bit"


def measure(x: np.ndarray) -> dict:
    """Train on x with defaults, export, and time both scores on rows of x."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        train(str(Path(tmp) / "x.npy"), Path(tmp) / "run", progress=False)
        export_run(Path(tmp) / "run", Path(tmp) / "bundle")
        size = sum(p.stat().st_size for p in (Path(tmp) / "bundle").iterdir())
        model = EdgeVAE.load(Path(tmp) / "bundle", threads=1)
        scores = {
            "default": lambda b: model.score(b),
            "before": lambda b: model.score(b, 0, score_type="elbo", complexity=False),
        }
        one, many = x[:1], x[np.arange(1024) % len(x)]
        times = time_calls({k: (lambda f=f: f(one)) for k, f in scores.items()}, SECONDS)
        bulk = time_calls({k: (lambda f=f: f(many)) for k, f in scores.items()}, SECONDS)
    batch1 = {k: summarize(t, 1) for k, t in times.items()}
    return {
        "columns": int(np.prod(x.shape[1:])),
        "bundle_bytes": size,
        "batch1": batch1,
        "batch1024_samples_per_s": {
            k: summarize(t, 1024)["samples_per_s"] for k, t in bulk.items()
        },
        "batch1_p50_ratio": batch1["default"]["p50_us"] / batch1["before"]["p50_us"],
    }


def main(data_dir: str | None = None) -> None:
    data_dir = Path(data_dir or os.environ.get("VAE_EDGE_DATA", "../shared/data"))
    results = {}
    for name in SETS:
        with np.load(data_dir / "odds" / f"{name}.npz") as f:
            results[name] = measure(f["x"].astype(np.float32)) | {"default": TABLE}
    with np.load(data_dir / "mnist.npz") as f:
        digits = f["x_train"][f["y_train"] == DIGIT]
    results[f"mnist digit {DIGIT}"] = measure(digits) | {"default": IMAGE}
    versions = {p: metadata.version(p) for p in ("vae-edge", "torch", "onnxruntime", "numpy")}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    lines = [
        "| set (features) | default | batch 1 p50 / p95, default | -ELBO at z = mu "
        "(before) | ratio | samples/s at batch 1024, default / before | bundle kB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        d, b = r["batch1"]["default"], r["batch1"]["before"]
        bulk = r["batch1024_samples_per_s"]
        lines.append(
            f"| {name} ({r['columns']}) | {r['default']} | "
            f"{d['p50_us']:.1f} / {d['p95_us']:.1f} us | "
            f"{b['p50_us']:.1f} / {b['p95_us']:.1f} us | {r['batch1_p50_ratio']:.2f}x | "
            f"{bulk['default']:,.0f} / {bulk['before']:,.0f} | {r['bundle_bytes'] / 1e3:.0f} |"
        )
    worst = max(r["batch1_p50_ratio"] for r in results.values())
    lines += ["", f"Largest batch-1 ratio: {worst:.2f}x (limit {LIMIT}x): "
              + ("met." if worst <= LIMIT else "NOT met.")]  # fmt: skip
    header = (
        "A model's default score against the one it replaced, same bundle, same run, "
        f"one thread. {machine}; " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."
    )
    data = {"sets": results, "largest_batch1_ratio": worst, "limit": LIMIT,
            "versions": versions, "machine": machine}  # fmt: skip
    write_results("score_cost", data, header, "\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])
