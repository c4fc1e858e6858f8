"""One-class MNIST: train on one digit, score the whole test set, AUROC per digit.

    python benchmarks/one_class.py [MNIST_NPZ]     (default $VAE_EDGE_DATA/mnist.npz)
    python benchmarks/one_class.py [MNIST_NPZ] --latent-dim 16 --digits 3,8   (a variant)

Protocol (../shared/data/README.md): for each digit d, train with default settings on the
training images of d (`vae-edge train --normal-class d`), export, score all 10,000 test
images with EdgeVAE.score (defaults), label = (digit != d). Writes
benchmarks/results/one_class.{json,md}; a variant (training options other than the
defaults: --latent-dim, --trim, --arch; or some --digits) only prints its figures.
"""

from __future__ import annotations

import argparse
import os
import platform
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist", nargs="?", help="default: $VAE_EDGE_DATA/mnist.npz")
    parser.add_argument("--latent-dim", type=int)
    parser.add_argument("--trim", type=float)
    parser.add_argument("--arch", choices=("mlp", "conv"))
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    args = parser.parse_args()
    variant = {k: getattr(args, k) for k in ("latent_dim", "trim", "arch")}
    variant = {k: v for k, v in variant.items() if v is not None}
    digits = [int(d) for d in args.digits.split(",")]
    mnist = Path(args.mnist or Path(os.environ.get("VAE_EDGE_DATA", "../shared/data")))
    mnist = mnist / "mnist.npz" if mnist.is_dir() else mnist
    with np.load(mnist) as f:
        x_test, y_test = f["x_test"], f["y_test"]
    started = time.perf_counter()
    aurocs, epochs = {}, {}
    for digit in digits:
        with tempfile.TemporaryDirectory() as tmp:
            run, bundle = Path(tmp) / "run", Path(tmp) / "bundle"
            config = train(str(mnist), run, normal_class=digit, progress=False, **variant)
            export_run(run, bundle)
            scores = EdgeVAE.load(bundle).score(x_test)
        aurocs[digit] = roc_auc(y_test != digit, scores)
        epochs[digit] = config.summary["epochs_run"]
        print(
            f"digit {digit}: AUROC {aurocs[digit]:.4f}, {epochs[digit]} epochs "
            f"({time.perf_counter() - started:.0f} s)"
        )
    mean = float(np.mean(list(aurocs.values())))
    if variant or len(digits) < 10:
        print(f"variant {variant}, digits {digits}: mean AUROC {mean:.4f}")
        return
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
    main()
