"""Shared fixtures. Real data comes from $VAE_EDGE_DATA (CI: ../shared/data): tests that need
it fail when CI is set and it is missing, and skip only on a developer machine without it."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _data_dir() -> Path:
    value = os.environ.get("VAE_EDGE_DATA")
    path = Path(value) if value else None
    if path is None or not (path / "mnist.npz").is_file():
        message = f"real data not found (VAE_EDGE_DATA={value!r})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


TINY_BUNDLE = Path(__file__).parent / "data" / "tiny_bundle"
TINY_SERIES_BUNDLE = Path(__file__).parent / "data" / "tiny_series_bundle"


@pytest.fixture(scope="session")
def tiny_bundle() -> Path:
    """A few-kB Gaussian table model committed with the tests (tests/make_tiny_bundle.py):
    for runtime tests that need a bundle but neither torch nor the shared data."""
    return TINY_BUNDLE


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _data_dir()


@pytest.fixture(scope="session")
def mnist_small(data_dir, tmp_path_factory) -> Path:
    """A real MNIST subset as .npz: 3000 training and 500 test digits."""
    with np.load(data_dir / "mnist.npz") as f:
        arrays = {
            "x_train": f["x_train"][:3000],
            "y_train": f["y_train"][:3000],
            "x_test": f["x_test"][:500],
            "y_test": f["y_test"][:500],
        }
    path = tmp_path_factory.mktemp("data") / "mnist_small.npz"
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="session")
def mnist_run(mnist_small, tmp_path_factory) -> Path:
    from vae_edge.training.train import train

    run = tmp_path_factory.mktemp("runs") / "mnist"
    train(str(mnist_small), run, epochs=2, hidden=(128,), latent_dim=8, progress=False)
    return run


@pytest.fixture(scope="session")
def mnist_bundle(mnist_run, tmp_path_factory) -> Path:
    from vae_edge.export.onnx_export import export_run

    out = tmp_path_factory.mktemp("bundles") / "mnist"
    export_run(mnist_run, out)
    return out


@pytest.fixture(scope="session")
def cardio(data_dir) -> dict:
    with np.load(data_dir / "odds" / "cardio.npz") as f:
        return {"x": f["x"], "y": f["y"]}


@pytest.fixture(scope="session")
def cardio_bundle(cardio, tmp_path_factory) -> Path:
    from vae_edge.export.onnx_export import export_run
    from vae_edge.training.train import train

    folder = tmp_path_factory.mktemp("cardio")
    np.save(folder / "cardio.npy", cardio["x"])
    train(str(folder / "cardio.npy"), folder / "run", progress=False)  # the defaults
    export_run(folder / "run", folder / "bundle")
    return folder / "bundle"


def run_cli(*args, cwd=None, env=None):
    """Run the real `vae-edge` entry point in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "vae_edge.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray (2 CPUs) for a test module, bounded: a Ray test that hangs fails here
    instead of stalling CI."""
    import signal

    import ray

    def too_long(*_):
        raise TimeoutError("a Ray test module ran over 300 s")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(300)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def pids_running(marker: bytes) -> list[int]:
    """The processes whose command line holds `marker` (a Ray worker names its task)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids
