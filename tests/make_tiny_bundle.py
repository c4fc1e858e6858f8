"""Build tests/data/tiny_bundle: a few-kB Gaussian table model from a seeded run, so that
the runtime tests need neither torch nor the shared data (`make tiny-bundle`).

    python tests/make_tiny_bundle.py [OUT]      (default tests/data/tiny_bundle)

The data is synthetic and seeded: 2,000 rows of 6 features, two latent factors mixed
linearly, with noise. Training runs on one thread so that the graphs come out the same
bytes each time (tests/test_export.py rebuilds it and compares).
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


def tiny_table(rows: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((rows, 2))
    mixing = rng.standard_normal((2, 6))
    return (factors @ mixing + 0.3 * rng.standard_normal((rows, 6))).astype(np.float32)


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
