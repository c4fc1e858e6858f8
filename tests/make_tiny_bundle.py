"""Build tests/data/tiny_bundle, a few-kB Gaussian table model, and
tests/data/tiny_series_bundle, a few-kB windowed model of a two-channel series, from
seeded runs, so that the runtime tests need neither torch nor the shared data
(`make tiny-bundle`).

    python tests/make_tiny_bundle.py [OUT [SERIES_OUT]]

The data is synthetic and seeded: 2,000 rows of 6 features, two latent factors mixed
linearly, with noise; 1,500 steps of two channels sharing a 12-step cycle, with noise.
Training runs on one thread so that the graphs come out the same bytes each time
(tests/test_export.py rebuilds them and compares).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from vae_edge.export.onnx_export import export_run
from vae_edge.training.train import train

OUT = Path(__file__).parent / "data" / "tiny_bundle"
SERIES_OUT = Path(__file__).parent / "data" / "tiny_series_bundle"


def tiny_table(rows: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((rows, 2))
    mixing = rng.standard_normal((2, 6))
    return (factors @ mixing + 0.3 * rng.standard_normal((rows, 6))).astype(np.float32)


def tiny_series(steps: int = 1500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]
    cycle = np.sin(2 * np.pi * t / 12 + np.array([[0.0, 1.0]]))
    return cycle * np.array([1.0, 20.0]) + 0.1 * rng.standard_normal((steps, 2))


def build_series(out: Path) -> None:
    torch.set_num_threads(1)
    out = out.resolve()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            np.save("series.npy", tiny_series())
            train("series.npy", "run", window=8, epochs=10, arch="mlp", hidden=(8,), latent_dim=2,
                  seed=0, progress=False)  # fmt: skip
            export_run("run", out, force=True)
        finally:
            os.chdir(here)


def build(out: Path) -> None:
    torch.set_num_threads(1)
    out = out.resolve()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the manifest records the data's path: keep it the same everywhere
        try:
            np.save("table.npy", tiny_table())
            # Untrimmed (the default before trimming), so that the graphs stay the ones
            # tests/data/tiny_bundle_reference.npz was scored on.
            train("table.npy", "run", epochs=20, hidden=(8,), latent_dim=2, trim=0.0, seed=0,
                  progress=False)  # fmt: skip
            export_run("run", out, force=True)
        finally:
            os.chdir(here)


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
    build_series(Path(sys.argv[2]) if len(sys.argv) > 2 else SERIES_OUT)
