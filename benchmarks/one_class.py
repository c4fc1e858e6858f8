"""One-class MNIST: train on one digit, score the whole test set, AUROC per digit.

    python benchmarks/one_class.py [MNIST_NPZ]     (default $VAE_EDGE_DATA/mnist.npz)
    python benchmarks/one_class.py [MNIST_NPZ] --latent-dim 16 --digits 3,8   (a variant)
    python benchmarks/one_class.py [MNIST_NPZ] --transform inverted   (an image set derived
        from MNIST, to check the defaults on images they were not chosen on)

Protocol (../shared/data/README.md): for each digit d, train with default settings on the
training images of d (`vae-edge train --normal-class d`), export, score all 10,000 test
images with EdgeVAE.score, label = (digit != d). Each score type is measured on the same
bundles: the default (the manifest's default_score) and the alternatives it was chosen
among. Writes benchmarks/results/one_class.{json,md}; a variant (training options other
than the defaults: --latent-dim, --trim, --arch; a --transform; or some --digits) only
prints its figures.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image
from report import write_results

from vae_edge.export.onnx_export import export_run
from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.anomaly import roc_auc
from vae_edge.training.train import train


def png_bits(images: np.ndarray) -> np.ndarray:
    """Each uint8 image's size in bits as a greyscale PNG (Pillow's defaults; (C, H, W)
    channels stacked as rows): the complexity measure of Serra et al., compared here with
    the runtime's own (Bernoulli.complexity_bits)."""
    sizes = []
    for image in images:
        out = io.BytesIO()
        Image.fromarray(image.reshape(-1, image.shape[-1])).save(out, format="PNG")
        sizes.append(8 * out.tell())
    return np.array(sizes, np.float32)


# Each score of a bundle `m` on images `x`; "default" is the bundle's default_score. One
# more, -ELBO per PNG bit, is the "elbo" scores divided by png_bits.
SCORES = {
    "default": lambda m, x: m.score(x),
    "elbo": lambda m, x: m.score(x, 0, score_type="elbo", complexity=False),
    "recon": lambda m, x: m.score(x, 0, score_type="recon", complexity=False),
    "iwae5": lambda m, x: m.score(x, 5, score_type="iwae", complexity=False),
    "iwae5_per_bit": lambda m, x: m.score(x, 5, score_type="iwae", complexity=True),
    "recon_per_bit": lambda m, x: m.score(x, 0, score_type="recon", complexity=True),
}
LABELS = {
    "default": "**default: -ELBO at z = mu per complexity bit**",
    "elbo": "-ELBO at z = mu (the default before)",
    "recon": "reconstruction loss at z = mu",
    "iwae5": "-L_5 (iwae, 5 draws)",
    "iwae5_per_bit": "-L_5 per complexity bit",
    "recon_per_bit": "reconstruction loss per complexity bit",
    "elbo_per_png_bit": "-ELBO at z = mu per bit of PNG size",
}


def coloured(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3, 28, 28): each image's three channels scaled by random gains in [0.3, 1]."""
    return np.round(x[:, None] * rng.uniform(0.3, 1, (len(x), 3, 1, 1))).astype(np.uint8)


# Image sets derived from MNIST's uint8 images (N, 28, 28), seeded.
TRANSFORMS = {
    "inverted": lambda x, rng: 255 - x,  # light background
    "noisy": lambda x, rng: np.minimum(x + rng.integers(0, 64, x.shape), 255).astype(np.uint8),
    "small": lambda x, rng: x.reshape(-1, 14, 2, 14, 2).mean((2, 4)).round().astype(np.uint8),
    "colour": coloured,
    # thresholded scans: the same pixels stored as 0/1 and as 0/255 (the same model)
    "binary": lambda x, rng: (x > 127).astype(np.uint8),
    "binary255": lambda x, rng: (x > 127).astype(np.uint8) * 255,
}


def transformed(mnist: Path, name: str, folder: Path) -> Path:
    """MNIST with TRANSFORMS[name] applied to every image, as a new .npz in folder."""
    rng = np.random.default_rng(0)
    with np.load(mnist) as f:
        data = {k: f[k] for k in f.files}
    for k in ("x_train", "x_test"):
        data[k] = TRANSFORMS[name](data[k], rng)
    np.savez(folder / f"mnist-{name}.npz", **data)
    return folder / f"mnist-{name}.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist", nargs="?", help="default: $VAE_EDGE_DATA/mnist.npz")
    parser.add_argument("--latent-dim", type=int)
    parser.add_argument("--trim", type=float)
    parser.add_argument("--arch", choices=("mlp", "conv"))
    parser.add_argument("--epochs", type=int, help="a quick check, not the protocol")
    parser.add_argument("--transform", choices=list(TRANSFORMS))
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    args = parser.parse_args()
    variant = {k: getattr(args, k) for k in ("latent_dim", "trim", "arch", "epochs")}
    variant = {k: v for k, v in variant.items() if v is not None}
    digits = [int(d) for d in args.digits.split(",")]
    mnist = Path(args.mnist or Path(os.environ.get("VAE_EDGE_DATA", "../shared/data")))
    mnist = mnist / "mnist.npz" if mnist.is_dir() else mnist
    if args.transform:
        workspace = tempfile.TemporaryDirectory()
        mnist = transformed(mnist, args.transform, Path(workspace.name))
    with np.load(mnist) as f:
        x_test, y_test = f["x_test"], f["y_test"]
    started = time.perf_counter()
    test_png_bits = png_bits(x_test)  # the same test images for every digit
    aurocs = {name: {} for name in LABELS}  # score -> digit -> AUROC
    epochs = {}
    for digit in digits:
        with tempfile.TemporaryDirectory() as tmp:
            run, bundle = Path(tmp) / "run", Path(tmp) / "bundle"
            config = train(str(mnist), run, normal_class=digit, progress=False, **variant)
            export_run(run, bundle)
            model = EdgeVAE.load(bundle)
            scores = {name: score(model, x_test) for name, score in SCORES.items()}
            scores["elbo_per_png_bit"] = scores["elbo"] / test_png_bits
            for name, s in scores.items():
                aurocs[name][digit] = roc_auc(y_test != digit, s)
        epochs[digit] = config.summary["epochs_run"]
        print(
            f"digit {digit}: AUROC {aurocs['default'][digit]:.4f} (-ELBO alone "
            f"{aurocs['elbo'][digit]:.4f}), {epochs[digit]} epochs "
            f"({time.perf_counter() - started:.0f} s)"
        )
    means = {name: float(np.mean(list(a.values()))) for name, a in aurocs.items()}
    if variant or args.transform or len(digits) < 10:
        print(f"variant {variant}, transform {args.transform}, digits {digits}: mean AUROC "
              f"{means['default']:.4f} (-ELBO alone {means['elbo']:.4f})")  # fmt: skip
        print(table(aurocs, digits))
        return
    versions = {p: metadata.version(p) for p in ("vae-edge", "torch", "onnxruntime", "numpy")}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    seconds = round(time.perf_counter() - started)
    header = (
        "One-class MNIST AUROC, default training (784-512-256-32 MLP, Bernoulli, one-cycle "
        "learning rate, KL warm-up, early stopping, on the digit's training images); one "
        "bundle per digit, scored each way; losses measured from each image's floor. "
        f"{machine}; " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; {seconds} s."
    )
    data = {"auroc": aurocs, "mean_auroc": means, "epochs_run": epochs, "versions": versions,
            "machine": machine, "seconds": seconds}  # fmt: skip
    write_results("one_class", data, header, table(aurocs, digits))


def table(aurocs: dict, digits: list[int]) -> str:
    """Markdown: a row per score, a column per digit, mean, worst, digits won from -ELBO."""
    elbo = aurocs["elbo"]
    lines = ["| score | " + " | ".join(map(str, digits)) + " | mean | worst | better than "
             "-ELBO on |", "| --- |" + " ---: |" * (len(digits) + 3)]  # fmt: skip
    for name, a in aurocs.items():
        mean = f"{np.mean(list(a.values())):.3f}"
        better = sum(a[d] > elbo[d] for d in digits)
        worse = sum(a[d] < elbo[d] for d in digits)
        versus = "-" if name == "elbo" else f"{better} digits (worse on {worse})"
        cells = [f"{a[d]:.3f}" for d in digits]
        cells += [f"**{mean}**" if name == "default" else mean, f"{min(a.values()):.3f}", versus]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
