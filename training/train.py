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
from vae_edge.training.model import (
    ARCHS,
    VAE,
    image_channels,
    kl_divergence,
    reconstruction_nll,
)

RUN_FORMAT = "vae-edge-run/1"
CONFIG_FILE, CHECKPOINT_FILE, LOG_FILE = "config.json", "checkpoint.pt", "log.jsonl"
EVAL_BATCH = 1024
LR = 2e-3  # peak of the one-cycle schedule
PATIENCE = 10  # epochs without a better validation loss before training stops
# Training length for tables: at least 10 epochs and at least this many optimizer steps.
# Longer runs fit the anomalies that unlabeled training data contains (measured on the
# ODDS sets).
MIN_STEPS = 500
# Images get a longer run (MNIST test -ELBO: 107 after 4,220 steps at a constant rate,
# about 97.4 after 14,000 with this schedule); early stopping ends one that stops improving.
MIN_STEPS_IMAGES = 10_000


def default_architecture(input_shape: tuple[int, ...], arch: str = "mlp"):
    """(hidden sizes, latent size) for samples of `input_shape`: images (H, W) or (C, H, W)
    get (512, 256) and 32 latents with the MLP, (256,) and 32 with the conv net; tables
    with n features get (400,) and 20 from 100 features on, else (max(64, 2n),), n // 2."""
    n_features = math.prod(input_shape)
    if arch == "conv":
        return (256,), 32
    if len(input_shape) > 1:
        return (512, 256), 32
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


def default_epochs(n_rows: int, batch_size: int, image: bool = False) -> int:
    """At least 10 epochs and at least MIN_STEPS optimizer steps (MIN_STEPS_IMAGES for
    images): a 1,000-row table gets 63 epochs (504 steps), MNIST (54,000 images, batch 128)
    24 epochs, one MNIST digit (5,331 images) 239 epochs (early stopping may end sooner)."""
    steps_per_epoch = math.ceil(n_rows / batch_size)
    return max(10, math.ceil((MIN_STEPS_IMAGES if image else MIN_STEPS) / steps_per_epoch))


def fit(
    x: np.ndarray,
    x_test: np.ndarray | None = None,
    *,
    arch: str = "mlp",
    epochs: int | None = None,
    batch_size: int = 128,
    lr: float = LR,
    beta: float = 1.0,
    kl_warmup: float | None = None,
    patience: int | None = PATIENCE,
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

    Loss: reconstruction + beta * KL, with the KL weight ramped linearly from 0 over the
    first `kl_warmup` epochs (default: a tenth of the run). The learning rate follows a
    one-cycle schedule peaking at `lr`. With a validation split, the weights of the epoch
    with the best validation -ELBO are kept and training stops after `patience` epochs
    without improvement (None: never stops early).
    Returns the model and the run config (what was chosen, losses per split)."""
    for name, value in (("epochs", 1 if epochs is None else epochs), ("batch_size", batch_size)):
        if value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    if not 0 <= val_fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    for name, value in (("lr", lr), ("beta", beta)):
        if not value > 0:
            raise InputError(f"{name} must be positive, got {value}")
    if kl_warmup is not None and kl_warmup < 0:
        raise InputError(f"kl_warmup must be >= 0 epochs, got {kl_warmup}")
    if patience is not None and patience < 1:
        raise InputError(f"patience must be >= 1 epoch, got {patience}")
    if arch not in ARCHS:
        raise InputError(f"unknown arch {arch!r} (use {' or '.join(ARCHS)})")
    _check_samples(x, "training data")
    likelihood, prep = choose_likelihood(x, likelihood)
    if variance is None:
        variance = "learned" if likelihood == "gaussian" else "fixed"
    if variance not in ("fixed", "learned") or (likelihood == "bernoulli" and variance != "fixed"):
        raise InputError(f"variance must be 'fixed' or 'learned' (gaussian only), got {variance!r}")
    input_shape = tuple(int(n) for n in x.shape[1:])
    if arch == "conv":
        try:
            image_channels(input_shape)
        except ValueError as e:
            raise InputError(str(e)) from None
    default_hidden, default_latent = default_architecture(input_shape, arch)
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
        epochs = default_epochs(len(x_fit), batch_size, image=len(input_shape) > 1)
    if kl_warmup is None:
        kl_warmup = epochs / 10

    model = VAE(input_shape, hidden, latent_dim, variance == "learned", arch)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n_batches = math.ceil(len(x_fit) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * n_batches
    )
    warmup_steps = kl_warmup * n_batches
    shuffle = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)
    started = time.perf_counter()
    step = 0
    best, best_state = None, None
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
                step += 1
                kl_weight = beta * min(1.0, step / warmup_steps) if warmup_steps else beta
                loss = (recon + kl_weight * kl).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                totals += [recon.sum().item(), kl.sum().item()]
        entry = {
            "epoch": epoch,
            "train_loss": float(totals.sum() / len(x_fit)),
            "train_recon": float(totals[0] / len(x_fit)),
            "train_kl": float(totals[1] / len(x_fit)),
        }
        if n_val:
            entry.update(_prefixed("val", evaluate(model, x_val, likelihood, seed)))
            # Judged once the KL weight is full: before that the loss is not the -ELBO
            # being optimised and an early epoch could look best.
            if step >= warmup_steps and (best is None or entry["val_loss"] < best["val_loss"]):
                best = entry
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        if on_epoch:
            on_epoch(entry, epochs)
        if patience and best is not None and epoch - best["epoch"] >= patience:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    final = best or entry
    summary = {k: v for k, v in final.items() if k != "seconds"}
    summary["epochs_run"] = entry["epoch"]
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
            "arch": arch,
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
            "lr_schedule": "one-cycle",
            "beta": beta,
            "kl_warmup": kl_warmup,
            "patience": patience,
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
    model = VAE(
        m["input_shape"],
        m["hidden"],
        m["latent_dim"],
        m.get("variance") == "learned",
        m.get("arch", "mlp"),
    )
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # torch raises many types for a bad file
        raise InputError(f"{checkpoint}: cannot load weights ({str(e).splitlines()[0]})") from None
    return model.eval(), config
