"""One-class MNIST: train on one digit, score the whole test set, AUROC per digit.

    python benchmarks/one_class.py [MNIST_NPZ]     (default $VAE_EDGE_DATA/mnist.npz)

Protocol (../shared/data/README.md): for each digit d, train with default settings on the
training images of d (`vae-edge train --normal-class d`), export, score all 10,000 test
images with EdgeVAE.score (defaults), label = (digit != d). Writes
benchmarks/results/one_class.{json,md}.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from report import write_results

from vae_edge.export.onnx_export import export_run
from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.anomaly import roc_auc
from vae_edge.training.train import train


def main(mnist: str | None = None) -> None:
    mnist = Path(mnist or Path(os.environ.get("VAE_EDGE_DATA", "../shared/data")) / "mnist.npz")
    with np.load(mnist) as f:
        x_test, y_test = f["x_test"], f["y_test"]
    started = time.perf_counter()
    aurocs, epochs = {}, {}
    for digit in range(10):
        with tempfile.TemporaryDirectory() as tmp:
            run, bundle = Path(tmp) / "run", Path(tmp) / "bundle"
            config = train(str(mnist), run, normal_class=digit, progress=False)
            export_run(run, bundle)
            scores = EdgeVAE.load(bundle).score(x_test)
        aurocs[digit] = roc_auc(y_test != digit, scores)
        epochs[digit] = config.summary["epochs_run"]
        print(
            f"digit {digit}: AUROC {aurocs[digit]:.4f}, {epochs[digit]} epochs "
            f"({time.perf_counter() - started:.0f} s)"
        )
    mean = float(np.mean(list(aurocs.values())))
    versions = {p: metadata.version(p) for p in ("vae-edge", "torch", "onnxruntime", "numpy")}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    seconds = round(time.perf_counter() - started)
    header = (
        "One-class MNIST AUROC, default settings (784-512-256-32 MLP, Bernoulli, one-cycle "
        "learning rate, KL warm-up, early stopping, on the digit's training images; score = "
        f"-ELBO at z = mu, measured from each image's floor). {machine}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; {seconds} s."
    )
    table = "\n".join(
        ["| digit | " + " | ".join(map(str, aurocs)) + " | mean |",
         "| --- |" + " ---: |" * 11,
         "| AUROC | " + " | ".join(f"{a:.3f}" for a in aurocs.values()) + f" | **{mean:.3f}** |"]
    )  # fmt: skip
    data = {"auroc": aurocs, "mean_auroc": mean, "epochs_run": epochs, "versions": versions,
            "machine": machine, "seconds": seconds}  # fmt: skip
    write_results("one_class", data, header, table)


if __name__ == "__main__":
    main(*sys.argv[1:])
