"""Train a VAE and write a run directory: checkpoint.pt (state_dict), config.json, log.jsonl.

Defaults come from the data and are written into config.json: uint8 data or values in
[0, 1] -> Bernoulli likelihood with scaling to [0, 1]; other numeric data -> unit-variance
Gaussian on features standardised with the training statistics.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np
import torch

from vae_edge.runtime.data import atomic_output, read_data
from vae_edge.runtime.errors import InputError
from vae_edge.runtime.manifest import Preprocessing
from vae_edge.training.model import VAE, kl_divergence, reconstruction_nll

RUN_FORMAT = "vae-edge-run/1"
CONFIG_FILE, CHECKPOINT_FILE, LOG_FILE = "config.json", "checkpoint.pt", "log.jsonl"
EVAL_BATCH = 1024
# Training length: at least 10 epochs and at least this many optimizer steps. Longer runs
# fit the anomalies that unlabeled training data contains (measured on the ODDS sets).
MIN_STEPS = 500


def default_architecture(n_features: int) -> tuple[tuple[int, ...], int]:
    """(hidden sizes, latent size) from the number of features; 784 -> (400,), 20."""
    if n_features >= 100:
        return (400,), 20
    return (max(64, 2 * n_features),), max(2, min(20, n_features // 2))


def choose_likelihood(x: np.ndarray, likelihood: str | None = None) -> tuple[str, Preprocessing]:
    """Likelihood and preprocessing for training data x (N, ...): Bernoulli for uint8 data,
    images (N, H, W, ...) in [0, 1] and 0/1 tables; Gaussian for other numbers, continuous
    table columns in [0, 1] included (a Bernoulli loss on them is not a likelihood)."""
    in_unit_range = x.dtype == np.uint8 or (x.min() >= 0 and x.max() <= 1)
    if likelihood is None:
        binary = in_unit_range and np.isin(x, (0, 1)).all()
        bernoulli = x.dtype == np.uint8 or binary or (in_unit_range and x.ndim > 2)
        likelihood = "bernoulli" if bernoulli else "gaussian"
    if likelihood == "bernoulli":
        if not in_unit_range:
            raise InputError(
                "the bernoulli likelihood needs uint8 data or values in [0, 1] "
                f"(found {float(x.min()):g} to {float(x.max()):g}); use gaussian"
            )
        return likelihood, Preprocessing(
            kind="scale", scale=1 / 255 if x.dtype == np.uint8 else 1.0
        )
    if likelihood != "gaussian":
        raise InputError(f"unknown likelihood {likelihood!r} (use bernoulli or gaussian)")
    flat = x.reshape(len(x), -1).astype(np.float64)
    std = flat.std(axis=0)
    std[std == 0] = 1.0  # a constant column stays constant (0) instead of dividing by zero
    return likelihood, Preprocessing(
        kind="standardize", mean=flat.mean(axis=0).tolist(), std=std.tolist()
    )


def load_training_data(source: str):
    if source == "mnist":
        from vae_edge.training.mnist import load_mnist

        return load_mnist()
    return read_data(source)


def _check_samples(x: np.ndarray, where: str) -> None:
    if x.dtype.kind not in "uif":
        raise InputError(f"{where}: dtype {x.dtype}; numbers are required")
    if x.ndim < 2:
        raise InputError(f"{where}: shape {x.shape}; samples must be (N, D) or (N, H, W)")
    if len(x) < 2:
        raise InputError(f"{where}: {len(x)} samples; at least 2 are needed")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise InputError(f"{where}: contains NaN or infinite values")


def _select_class(x, y, normal_class, where):
    if normal_class is None or x is None:
        return x
    if y is None:
        raise InputError(f"{where}: --normal-class needs labels (y or y_train)")
    chosen = x[y == normal_class]
    if len(chosen) == 0:
        raise InputError(f"{where}: no samples with label {normal_class}")
    return chosen


def default_epochs(n_rows: int, batch_size: int) -> int:
    """At least 10 epochs and at least MIN_STEPS optimizer steps: MNIST (54,000 rows,
    batch 128) gets 10 epochs (4,220 steps); a 1,000-row table 63 epochs (504 steps)."""
    steps_per_epoch = math.ceil(n_rows / batch_size)
    return max(10, math.ceil(MIN_STEPS / steps_per_epoch))


def fit(
    x: np.ndarray,
    x_test: np.ndarray | None = None,
    *,
    epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    latent_dim: int | None = None,
    hidden: tuple[int, ...] | None = None,
    likelihood: str | None = None,
    variance: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    progress: bool = False,
    on_epoch=None,
) -> tuple[VAE, dict]:
    """Train a VAE on raw samples x (N, ...). Unset options are chosen from the data.
    Returns the model and the run config (what was chosen, losses per split)."""
    for name, value in (("epochs", 1 if epochs is None else epochs), ("batch_size", batch_size)):
        if value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    if not 0 <= val_fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if lr <= 0:
        raise InputError(f"lr must be positive, got {lr}")
    _check_samples(x, "training data")
    likelihood, prep = choose_likelihood(x, likelihood)
    if variance is None:
        variance = "learned" if likelihood == "gaussian" else "fixed"
    if variance not in ("fixed", "learned") or (likelihood == "bernoulli" and variance != "fixed"):
        raise InputError(f"variance must be 'fixed' or 'learned' (gaussian only), got {variance!r}")
    input_shape = tuple(int(n) for n in x.shape[1:])
    default_hidden, default_latent = default_architecture(math.prod(input_shape))
    hidden = tuple(hidden) if hidden else default_hidden
    latent_dim = latent_dim or default_latent

    torch.manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * val_fraction))
    if val_fraction > 0 and not 1 <= n_val < len(x):
        raise InputError(f"val_fraction {val_fraction} leaves no training or validation rows")
    x_all = torch.from_numpy(prep.apply(x))
    x_val, x_fit = x_all[order[:n_val]], x_all[order[n_val:]]
    if epochs is None:
        epochs = default_epochs(len(x_fit), batch_size)

    model = VAE(input_shape, hidden, latent_dim, learn_variance=variance == "learned")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)
    n_batches = math.ceil(len(x_fit) / batch_size)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        totals = np.zeros(2)
        perm = torch.randperm(len(x_fit), generator=shuffle)
        batches = (perm[i : i + batch_size] for i in range(0, len(x_fit), batch_size))
        with click.progressbar(
            batches,
            length=n_batches,
            label=f"epoch {epoch}/{epochs}",
            file=sys.stderr,
            hidden=not (progress and sys.stderr.isatty()),
        ) as bar:
            for idx in bar:
                xb = x_fit[idx]
                mu, logvar = model.encode(xb)
                eps = torch.randn(mu.shape, generator=noise)
                params = model.decode(model.reparameterize(mu, logvar, eps))
                recon = reconstruction_nll(xb, params, likelihood, model.observation_logvar())
                kl = kl_divergence(mu, logvar)
                loss = (recon + kl).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                totals += [recon.sum().item(), kl.sum().item()]
        entry = {
            "epoch": epoch,
            "train_loss": float(totals.sum() / len(x_fit)),
            "train_recon": float(totals[0] / len(x_fit)),
            "train_kl": float(totals[1] / len(x_fit)),
        }
        if n_val:
            entry.update(_prefixed("val", evaluate(model, x_val, likelihood, seed)))
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        if on_epoch:
            on_epoch(entry, epochs)

    summary = {k: v for k, v in entry.items() if k not in ("epoch", "seconds")}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    if x_test is not None:
        _check_samples(x_test, "x_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise InputError(f"x_test samples are {x_test.shape[1:]}, x are {x.shape[1:]}")
        x_test_p = torch.from_numpy(prep.apply(x_test))
        summary.update(_prefixed("test", evaluate(model, x_test_p, likelihood, seed)))
        summary["n_test"] = len(x_test)
    config = {
        "format": RUN_FORMAT,
        "model": {
            "input_shape": list(input_shape),
            "hidden": list(hidden),
            "latent_dim": latent_dim,
            "likelihood": likelihood,
            "variance": variance,
        },
        "preprocessing": {k: v for k, v in asdict(prep).items() if v is not None},
        "data": {"dtype": str(x.dtype), "n_train": len(x_fit), "n_val": n_val},
        "training": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "val_fraction": val_fraction,
            "optimizer": "Adam",
            "torch": torch.__version__,
        },
        "summary": summary,
    }
    return model.eval(), config


def train(
    data: str,
    out: str | Path,
    *,
    normal_class: int | None = None,
    progress: bool = True,
    **options,
) -> dict:
    """Train on `data` (a path or 'mnist') and write the run into `out`: checkpoint.pt,
    config.json and log.jsonl (one line per epoch). Options as for fit(). Returns config."""
    dataset = load_training_data(data)
    if dataset.x is None:
        raise InputError(f"{data}: no training samples (an 'x' or 'x_train' array)")
    x = _select_class(dataset.x, dataset.y, normal_class, data)
    x_test = _select_class(dataset.x_test, dataset.y_test, normal_class, data)
    _check_samples(x, data)  # here, so that messages name the file
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_lines = []

    def on_epoch(entry, epochs):
        log_lines.append(json.dumps(entry))
        with atomic_output(out / LOG_FILE) as tmp:
            tmp.write_text("\n".join(log_lines) + "\n")
        if progress:
            val = f"  val {entry['val_loss']:.2f}" if "val_loss" in entry else ""
            click.echo(
                f"epoch {entry['epoch']}/{epochs}  train {entry['train_loss']:.2f}{val}", err=True
            )

    model, config = fit(x, x_test, progress=progress, on_epoch=on_epoch, **options)
    config["data"].update(source=str(data), normal_class=normal_class)
    with atomic_output(out / CHECKPOINT_FILE) as tmp:
        torch.save(model.state_dict(), tmp)
    with atomic_output(out / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return config


@torch.no_grad()
def evaluate(model: VAE, xp: torch.Tensor, likelihood: str, seed: int) -> dict[str, float]:
    """Mean -ELBO per sample (one z draw, seeded) and its two terms."""
    model.eval()
    noise = torch.Generator().manual_seed(seed + 2)
    recon_sum = kl_sum = 0.0
    for i in range(0, len(xp), EVAL_BATCH):
        xb = xp[i : i + EVAL_BATCH]
        mu, logvar = model.encode(xb)
        eps = torch.randn(mu.shape, generator=noise)
        params = model.decode(model.reparameterize(mu, logvar, eps))
        recon_sum += (
            reconstruction_nll(xb, params, likelihood, model.observation_logvar()).sum().item()
        )
        kl_sum += kl_divergence(mu, logvar).sum().item()
    n = len(xp)
    return {"loss": (recon_sum + kl_sum) / n, "recon": recon_sum / n, "kl": kl_sum / n}


def _prefixed(prefix: str, d: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in d.items()}


def load_run(run_dir: str | Path) -> tuple[VAE, dict]:
    """Rebuild the trained model from a run directory (weights_only load: no pickle)."""
    run_dir = Path(run_dir)
    config_file, checkpoint = run_dir / CONFIG_FILE, run_dir / CHECKPOINT_FILE
    if not config_file.is_file() or not checkpoint.is_file():
        raise InputError(
            f"{run_dir}: not a training run (needs {CONFIG_FILE} and {CHECKPOINT_FILE})"
        )
    try:
        config = json.loads(config_file.read_text())
    except ValueError as e:
        raise InputError(f"{config_file}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        raise InputError(f"{config_file}: not a {RUN_FORMAT} run config")
    m = config["model"]
    model = VAE(m["input_shape"], m["hidden"], m["latent_dim"], m.get("variance") == "learned")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # torch raises many types for a bad file
        raise InputError(f"{checkpoint}: cannot load weights ({str(e).splitlines()[0]})") from None
    return model.eval(), config
