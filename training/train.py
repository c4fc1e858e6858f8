"""Train a VAE and write a run directory: checkpoint.pt (state_dict), config.json, log.jsonl.

Defaults come from the data and are written into config.json: uint8 data or values in
[0, 1] -> Bernoulli likelihood with scaling to [0, 1]; other numeric data -> unit-variance
Gaussian on features standardised with the training statistics.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from vae_edge.runtime import series as series_io
from vae_edge.runtime.data import atomic_output, read_data
from vae_edge.runtime.errors import InputError
from vae_edge.runtime.manifest import DefaultScore, Preprocessing, SeriesSpec, is_image_shape
from vae_edge.training.model import ARCHS, VAE, image_channels, kl_divergence

RUN_FORMAT = "vae-edge-run/1"
CONFIG_FILE, CHECKPOINT_FILE, LOG_FILE = "config.json", "checkpoint.pt", "log.jsonl"
EVAL_BATCH = 1024
LR = 2e-3  # peak of the one-cycle schedule
PATIENCE = 10  # epochs without a better validation loss before training stops
# Training length for tables: at least 10 epochs and at least this many optimizer steps.
# With the trimmed loss, longer runs no longer fit the anomalies in unlabeled training data:
# 4,000 steps beat 500, 1,000 and 2,000 on most of the 18 tabular sets (benchmarks/anomaly.py).
MIN_STEPS = 4000
# Share of each batch, highest loss first, that a table's training loss leaves out:
# unlabeled training data holds anomalies, and a model that learns them scores them low.
# 0.25 won on more of the 18 tabular sets than 0, 0.1 and 0.4. Images (a class of clean
# samples, as in one-class use) are not trimmed.
TRIM = 0.25
# How a table model scores when a call does not say: -L_k, the importance-weighted bound,
# over k = 5 z draws. It ranked anomalies better than -ELBO at z = mu on 14 of the 18
# tabular sets and worse on 4; k = 10 and 20 gave the same mean AUROC, k = 3 a little less
# (benchmarks/anomaly.py).
TABLE_SCORE = DefaultScore("iwae", 5)
# Images (grey levels, the Bernoulli likelihood): -ELBO at z = mu per bit of the image's
# complexity (Bernoulli.complexity_bits). One-class MNIST: better than -ELBO alone on all
# ten digits, worst digit 0.916 -> 0.981, mean 0.970 -> 0.990; per bit of PNG size instead
# 0.984; -L_5 alone worse than -ELBO on 8 digits (benchmarks/one_class.py, which also
# checks it on image sets derived from MNIST). Images with a Gaussian likelihood have no
# grey levels to count steps of and score -ELBO at z = mu.
IMAGE_SCORE = DefaultScore("elbo", 0, complexity=True)
# float32 resolves about 1.2e-7 of a value: a std floored at 1e-5 of the column's mean keeps
# rounding within 0.012 standard deviations (no column of the 18 tabular sets is below it).
RELATIVE_STD_FLOOR = 1e-5
# Images get a longer run (MNIST test -ELBO: 107 after 4,220 steps at a constant rate,
# about 97.4 after 14,000 with this schedule); early stopping ends one that stops improving.
MIN_STEPS_IMAGES = 10_000
# A series' windows overlap (stride 1): a few hundred readings give hundreds of windows
# that are nearly copies. On NAB's 29 public series trained on their first 750 readings,
# 1,000 steps scored best under NAB's scorer (likelihood 54.3, alarms 56.0) against 300
# (48.8, 50.3) and a table's 4,000 (49.9, 52.3), in seconds rather than minutes
# (benchmarks/nab.py --designs, rerun with this constant changed).
MIN_STEPS_SERIES = 1000


# A series' windows (W, C) with the MLP: over the flattened window. Its size hardly
# mattered on the 28 NAB series (hidden 64 to 256, one or two layers, 4 to 16 latents:
# mean VUS-PR 0.560 to 0.567; benchmarks/results/series-architectures.md).
SERIES_HIDDEN = (128,)
SERIES_LATENT = 8
SERIES_SCORE = DefaultScore("elbo", 0)
# The arch a series gets by default (see benchmarks/multivariate.py).
SERIES_ARCH = "conv1d"
# A series' gradient norm is clipped here: an MLP over ASD's 290 x 19 windows went from a
# loss of 3,272 to 24 million at the one-cycle peak without it.
SERIES_MAX_GRAD_NORM = 5.0


def default_architecture(input_shape: tuple[int, ...], arch: str = "mlp", series: bool = False):
    """(hidden sizes, latent size) for samples of `input_shape`: images (H, W) or (C, H, W)
    get (512, 256) and 32 latents with the MLP, (256,) and 32 with the conv net; tables
    with n features get (400,) and 20 from 100 features on, else (max(64, 2n),), n // 2;
    a series' windows SERIES_HIDDEN (none with conv1d) and SERIES_LATENT."""
    n_features = math.prod(input_shape)
    if series:
        return ((), SERIES_LATENT) if arch == "conv1d" else (SERIES_HIDDEN, SERIES_LATENT)
    if arch == "conv":
        return (256,), 32
    if is_image_shape(input_shape):
        return (512, 256), 32
    if n_features >= 100:
        return (400,), 20
    return (max(64, 2 * n_features),), max(2, min(20, n_features // 2))


def default_score(input_shape: tuple[int, ...], likelihood: str, series: bool = False):
    """The score a bundle for samples of `input_shape` uses by default (its manifest's
    default_score)."""
    if series:
        return SERIES_SCORE
    if not is_image_shape(input_shape):
        return TABLE_SCORE
    return IMAGE_SCORE if likelihood == "bernoulli" else DefaultScore()


def choose_likelihood(x: np.ndarray, likelihood: str | None = None) -> tuple[str, Preprocessing]:
    """Likelihood and preprocessing for training data x (N, ...), the rule the README states
    (Which data gets which model); images are samples with two or three axes:
    - values all 0 or 1, any dtype: binary data, Bernoulli on x itself (floor 0);
    - uint8, or images of whole numbers in 0..255 of any dtype (np.asarray(image, float32)):
      grey levels, Bernoulli on x / 255;
    - images with values in [0, 1]: Bernoulli on x;
    - anything else, tables in [0, 1] included (a Bernoulli loss on continuous columns is
      not a likelihood): Gaussian on features standardised with the training statistics."""
    image = is_image_shape(x.shape[1:])
    binary = is_binary(x)
    grey = not binary and (x.dtype == np.uint8 or (image and _whole_numbers_to_255(x)))
    in_unit_range = binary or (not grey and x.min() >= 0 and x.max() <= 1)
    if likelihood is None:
        bernoulli = binary or grey or (image and in_unit_range)
        likelihood = "bernoulli" if bernoulli else "gaussian"
    if likelihood == "bernoulli":
        if not (grey or in_unit_range):
            raise InputError(
                "the bernoulli likelihood needs grey levels (uint8, or whole numbers in 0..255) "
                f"or values in [0, 1] (found {float(x.min()):g} to {float(x.max()):g}); "
                "use gaussian"
            )
        return likelihood, Preprocessing(kind="scale", scale=1 / 255 if grey else 1.0)
    if likelihood != "gaussian":
        raise InputError(f"unknown likelihood {likelihood!r} (use bernoulli or gaussian)")
    flat = x.reshape(len(x), -1).astype(np.float64)
    return likelihood, _standardize(flat.mean(axis=0), flat.std(axis=0))


def _standardize(mean: np.ndarray, std: np.ndarray) -> Preprocessing:
    """(x - mean) / std per feature. A feature held nearly constant: a spread below
    float32's resolution of its mean would turn rounding into standard deviations (the
    runtime computes in float32), so it is floored at RELATIVE_STD_FLOOR of the mean. A
    constant one keeps std 1 (it stays at 0, and a new value is measured in the data's
    units)."""
    std = np.where(std > 0, np.maximum(std, RELATIVE_STD_FLOOR * np.abs(mean)), 1.0)
    return Preprocessing(kind="standardize", mean=mean.tolist(), std=std.tolist())


def series_preprocessing(windows: np.ndarray) -> Preprocessing:
    """Per channel (the last axis of windows (N, W, C)), missing readings left out: the
    mean taken away, divided by the channel's training range (max - min; floored as a
    table's std is, choose_likelihood). Not by its std: a metric that barely moves in
    training (a server's disk at 0.03 of its range) would measure the smallest later drift
    in tens of its own deviations and outweigh every other metric. On ASD's servers the
    range won over the std on each of the four tried (mean VUS-PR 0.38 against 0.25,
    benchmarks/multivariate.py)."""
    flat = windows.reshape(-1, windows.shape[-1]).astype(np.float64)
    spread = np.nanmax(flat, axis=0) - np.nanmin(flat, axis=0)
    return _standardize(np.nanmean(flat, axis=0), spread)


def is_binary(x: np.ndarray) -> bool:
    """Every value 0 or 1 (binary data: the Bernoulli likelihood on x itself)."""
    return bool(((x == 0) | (x == 1)).all())


def _whole_numbers_to_255(x: np.ndarray) -> bool:
    if not (x.min() >= 0 and x.max() <= 255):
        return False
    return x.dtype.kind in "ui" or bool((x == np.rint(x)).all())


def load_training_data(source: str):
    if source == "mnist":
        from vae_edge.training.mnist import load_mnist

        return load_mnist()
    return read_data(source)


def _check_samples(x: np.ndarray, where: str, missing: bool = False) -> None:
    if x.dtype.kind not in "uif":
        raise InputError(f"{where}: dtype {x.dtype}; numbers are required")
    if x.ndim < 2:
        raise InputError(f"{where}: shape {x.shape}; samples must be (N, D) or (N, H, W)")
    if len(x) < 2:
        raise InputError(f"{where}: {len(x)} samples; at least 2 are needed")
    if missing and np.isinf(x).any():
        raise InputError(f"{where}: contains infinite values")
    if not missing and x.dtype.kind == "f" and not np.isfinite(x).all():
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


def default_epochs(
    n_rows: int, batch_size: int, image: bool = False, min_steps: int | None = None
) -> int:
    """At least 10 epochs and at least `min_steps` optimizer steps (default MIN_STEPS, or
    MIN_STEPS_IMAGES for images): a 1,000-row table gets 500 epochs (4,000 steps), MNIST
    (54,000 images, batch 128) 24 epochs, one MNIST digit (5,331 images) 239 epochs (early
    stopping may end sooner)."""
    if min_steps is None:
        min_steps = MIN_STEPS_IMAGES if image else MIN_STEPS
    return max(10, math.ceil(min_steps / math.ceil(n_rows / batch_size)))


@dataclass(frozen=True)
class TrainOptions:
    """What a user can choose; None = chosen from the data (see fit). Checked on
    construction, so a bad option fails before any data is read."""

    arch: str | None = None  # None: SERIES_ARCH for a series, else "mlp"
    epochs: int | None = None
    batch_size: int = 128
    lr: float = LR
    beta: float = 1.0
    kl_warmup: float | None = None  # epochs; None: a tenth of the run
    patience: int | None = PATIENCE  # None: never stop early
    latent_dim: int | None = None
    hidden: tuple[int, ...] | None = None
    likelihood: str | None = None
    variance: str | None = None  # "learned" (Gaussian default) or "fixed"
    trim: float | None = None  # None: TRIM for tables, 0 for images
    seed: int = 0
    val_fraction: float = 0.1

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be >= 1, got {value}")
        if self.trim is not None and not 0 <= self.trim < 1:
            raise InputError(f"trim must be in [0, 1), got {self.trim}")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("lr", "beta"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.kl_warmup is not None and self.kl_warmup < 0:
            raise InputError(f"kl_warmup must be >= 0 epochs, got {self.kl_warmup}")
        if self.patience is not None and self.patience < 1:
            raise InputError(f"patience must be >= 1 epoch, got {self.patience}")
        if self.arch is not None and self.arch not in ARCHS:
            raise InputError(f"unknown arch {self.arch!r} (use {' or '.join(ARCHS)})")


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    input_shape: list[int]
    hidden: list[int]
    latent_dim: int
    likelihood: str
    variance: str

    def build(self) -> VAE:
        return VAE(self.input_shape, self.hidden, self.latent_dim, self.variance == "learned",
                   self.arch, likelihood=self.likelihood)  # fmt: skip


@dataclass(frozen=True)
class RunConfig:
    """config.json: the contract between a training run and export, every choice resolved.
    training holds the options as run (epochs, kl_warmup and patience filled in)."""

    model: ModelConfig
    preprocessing: dict[str, Any]
    data: dict[str, Any]
    training: dict[str, Any]
    summary: dict[str, Any]
    format: str = RUN_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Any, where: str) -> RunConfig:
        if not isinstance(d, dict) or d.get("format") != RUN_FORMAT:
            raise InputError(f"{where}: not a {RUN_FORMAT} run config")
        try:
            return cls(**(d | {"model": ModelConfig(**d["model"])}))
        except (TypeError, KeyError) as e:
            raise InputError(f"{where}: not a valid {RUN_FORMAT} run config ({e})") from None


def training_threads(x: np.ndarray, series: SeriesSpec | None = None) -> int:
    """torch's threads for a training: every core for images; one for series and tables,
    whose small models gain nothing from a second thread and lose 2-3x when two trainings
    share two cores (docs/training.md)."""
    image = is_image_shape(tuple(np.shape(x)[1:])) and series is None
    return (os.cpu_count() or 1) if image else 1


def fit(
    x: np.ndarray,
    x_test: np.ndarray | None = None,
    options: TrainOptions | None = None,
    *,
    threads: int | None = None,
    **arguments,
) -> tuple[VAE, RunConfig]:
    """_fit with torch's threads set for the training (threads, default training_threads)
    and set back after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or training_threads(x, arguments.get("series")))
    try:
        return _fit(x, x_test, options, **arguments)
    finally:
        torch.set_num_threads(previous)


def _fit(
    x: np.ndarray,
    x_test: np.ndarray | None = None,
    options: TrainOptions | None = None,
    *,
    progress: bool = False,
    on_epoch=None,
    series: SeriesSpec | None = None,
    **option_overrides,
) -> tuple[VAE, RunConfig]:
    """Train a VAE on raw samples x (N, ...). Unset options are chosen from the data.

    Loss: reconstruction + beta * KL, with the KL weight ramped linearly from 0 over the
    first `kl_warmup` epochs (default: a tenth of the run), averaged over each batch but
    its `trim` share of highest-loss samples (default TRIM for tables, 0 for images). The
    learning rate follows a one-cycle schedule peaking at `lr`. With a validation split, the
    weights of the epoch with the best validation -ELBO are kept and training stops after
    `patience` epochs without improvement. option_overrides: TrainOptions fields, e.g.
    fit(x, epochs=5). on_epoch(entry, epochs) is called after each epoch with its losses.
    series: x holds a series' windows (N, W, C), NaN at missing readings (left out of the
    loss); see fit_series. Returns the model and the run config (what was chosen, losses
    per split)."""
    o = replace(options or TrainOptions(), **option_overrides)
    _check_samples(x, "training data", missing=series is not None)
    model_config, prep = _model_config(x, o, series is not None)
    torch.manual_seed(o.seed)
    order = np.random.default_rng(o.seed).permutation(len(x))
    n_val = int(round(len(x) * o.val_fraction))
    if o.val_fraction > 0 and not 1 <= n_val < len(x):
        raise InputError(f"val_fraction {o.val_fraction} leaves no training or validation rows")
    x_all = torch.from_numpy(prep.apply(x))
    x_val, x_fit = x_all[order[:n_val]], x_all[order[n_val:]]
    image = is_image_shape(model_config.input_shape) and series is None
    min_steps = MIN_STEPS_SERIES if series is not None else None
    epochs = o.epochs or default_epochs(len(x_fit), o.batch_size, image=image, min_steps=min_steps)
    o = replace(o, epochs=epochs, kl_warmup=epochs / 10 if o.kl_warmup is None else o.kl_warmup,
                trim=(0.0 if image else TRIM) if o.trim is None else o.trim)  # fmt: skip

    model = model_config.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=o.lr)
    n_batches = math.ceil(len(x_fit) / o.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=o.lr, total_steps=epochs * n_batches
    )
    warmup_steps = o.kl_warmup * n_batches
    shuffle = torch.Generator().manual_seed(o.seed)
    noise = torch.Generator().manual_seed(o.seed + 1)
    started = time.perf_counter()
    step = 0
    best, best_state = None, None
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        shuffled = torch.randperm(len(x_fit), generator=shuffle)
        batches = [shuffled[i : i + o.batch_size] for i in range(0, len(x_fit), o.batch_size)]
        shown = progress and sys.stderr.isatty()
        with click.progressbar(batches, label=f"epoch {epoch}/{epochs}", file=sys.stderr,
                               hidden=not shown) as bar:  # fmt: skip
            totals = np.zeros(2)  # reconstruction and KL, summed over the epoch's samples
            for idx in bar:
                step += 1
                kl_weight = o.beta * min(1.0, step / warmup_steps) if warmup_steps else o.beta
                totals += train_step(model, x_fit[idx], kl_weight, optimizer, noise, o.trim,
                                     SERIES_MAX_GRAD_NORM if series else None)  # fmt: skip
                schedule.step()
        entry = {"epoch": epoch, "train_loss": float(totals.sum() / len(x_fit)),
                 "train_recon": float(totals[0] / len(x_fit)),
                 "train_kl": float(totals[1] / len(x_fit))}  # fmt: skip
        if n_val:
            entry.update(_prefixed("val", evaluate(model, x_val, o.seed)))
            # Judged once the KL weight is full: before that the loss is not the -ELBO
            # being optimised and an early epoch could look best.
            if step >= warmup_steps and (best is None or entry["val_loss"] < best["val_loss"]):
                best = entry
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        if on_epoch:
            on_epoch(entry, epochs)
        if o.patience and best is not None and epoch - best["epoch"] >= o.patience:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    summary = {k: v for k, v in (best or entry).items() if k != "seconds"}
    summary["epochs_run"] = entry["epoch"]
    summary["seconds"] = round(time.perf_counter() - started, 1)
    if x_test is not None:
        _check_samples(x_test, "x_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise InputError(f"x_test samples are {x_test.shape[1:]}, x are {x.shape[1:]}")
        summary.update(_prefixed("test", evaluate(model, torch.from_numpy(prep.apply(x_test)),
                                                  o.seed)))  # fmt: skip
        summary["n_test"] = len(x_test)
    run = asdict(o)
    training = {k: run[k] for k in ("epochs", "batch_size", "lr")} | {"lr_schedule": "one-cycle"}
    training |= {k: run[k] for k in ("beta", "kl_warmup", "trim", "patience", "seed",
                                     "val_fraction")}  # fmt: skip
    config = RunConfig(
        model=model_config,
        preprocessing={k: v for k, v in asdict(prep).items() if v is not None},
        data={
            "dtype": str(x.dtype),
            "binary": model_config.likelihood == "bernoulli" and prep.scale == 1.0 and is_binary(x),
            "n_train": len(x_fit),
            "n_val": n_val,
        }
        | ({"series": asdict(series)} if series else {}),
        training=training | {"optimizer": "Adam", "torch": torch.__version__},
        summary=summary,
    )
    return model.eval(), config


def train_step(
    model: VAE, xb: torch.Tensor, kl_weight: float, optimizer, noise, trim: float = 0.0,
    max_grad_norm: float | None = None,
) -> list:  # fmt: skip
    """One optimizer step on the batch xb: loss = reconstruction + kl_weight * KL, mean over
    the batch less its `trim` share of highest losses, gradient norm clipped at
    `max_grad_norm`. Returns the batch's summed reconstruction and KL (all samples)."""
    model.train()
    xb, present = _missing_filled(xb)
    eps = torch.randn(len(xb), model.latent_dim, generator=noise)
    params, mu, logvar = model(xb, eps)
    recon, kl = model.reconstruction_nll(xb, params, present), kl_divergence(mu, logvar)
    loss = recon + kl_weight * kl
    kept = math.ceil(len(xb) * (1 - trim))
    # Untrimmed, the plain mean: topk would reorder the sum, and untrimmed runs (images, the
    # shipped model) would no longer retrain to the same bytes.
    loss = (loss if kept == len(xb) else torch.topk(loss, kept, largest=False).values).mean()
    optimizer.zero_grad()
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return [recon.sum().item(), kl.sum().item()]


def _model_config(x: np.ndarray, o: TrainOptions, series: bool = False):
    arch = o.arch or (SERIES_ARCH if series else "mlp")
    if series:
        if o.likelihood not in (None, "gaussian") or arch == "conv":
            raise InputError(
                "a windowed model is conv1d or mlp with the gaussian likelihood"
                + (" (conv is for images)" if arch == "conv" else "")
            )
        likelihood, prep = "gaussian", series_preprocessing(x)
    else:
        if arch == "conv1d":
            raise InputError("conv1d is for a series' windows: give --window")
        likelihood, prep = choose_likelihood(x, o.likelihood)
    variance = o.variance or ("learned" if likelihood == "gaussian" else "fixed")
    if variance not in ("fixed", "learned") or (likelihood == "bernoulli" and variance != "fixed"):
        raise InputError(f"variance must be 'fixed' or 'learned' (gaussian only), got {variance!r}")
    input_shape = tuple(int(n) for n in x.shape[1:])
    if arch == "conv":
        try:
            image_channels(input_shape)
        except ValueError as e:
            raise InputError(str(e)) from None
    default_hidden, default_latent = default_architecture(input_shape, arch, series)
    if arch == "conv1d" and o.hidden:
        raise InputError("conv1d has no hidden layers: leave out --hidden")
    return ModelConfig(
        arch=arch,
        input_shape=list(input_shape),
        hidden=list(o.hidden or default_hidden),
        latent_dim=o.latent_dim or default_latent,
        likelihood=likelihood,
        variance=variance,
    ), prep


def fit_series(
    values: np.ndarray,
    window: int | str = "auto",
    stride: int = 1,
    options: TrainOptions | None = None,
    *,
    channels: list[str] | None = None,
    timestamp: str | None = None,
    step_seconds: int | None = None,
    **fit_arguments,
) -> tuple[VAE, RunConfig]:
    """Train a windowed model on a series, values (T,) or (T, C), NaN = missing: its
    samples are the windows of `window` steps (or "auto": series.auto_window) every
    `stride` steps; windows with no reading at all are left out. The rest as fit()."""
    values = np.asarray(values, np.float64)
    values = values.reshape(len(values), -1)
    if window == "auto":
        window = series_io.auto_window(values)
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or window < 2:
        raise InputError(f"window must be an integer >= 2 or 'auto', got {window!r}")
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise InputError(f"stride must be a positive integer, got {stride!r}")
    windows = series_io.sliding_windows(values, int(window), stride)
    windows = windows[~np.isnan(windows).all(axis=(1, 2))]
    names = channels or [str(i) for i in range(values.shape[1])]
    seen = ~np.isnan(values).all(axis=0)
    low = high = None
    if seen.all():  # where a stream's spatial check starts
        low, high = np.nanmin(values, axis=0).tolist(), np.nanmax(values, axis=0).tolist()
    spec = SeriesSpec(int(window), int(stride), list(names), timestamp=timestamp,
                      step_seconds=step_seconds, low=low, high=high)  # fmt: skip
    return fit(np.ascontiguousarray(windows), None, options, series=spec, **fit_arguments)


def train(
    data: str,
    out: str | Path,
    options: TrainOptions | None = None,
    *,
    normal_class: int | None = None,
    progress: bool = True,
    window: int | str | None = None,
    stride: int = 1,
    columns: list[str] | None = None,
    timestamp: str | None = None,
    delimiter: str | None = None,
    threads: int | None = None,
    **option_overrides,
) -> RunConfig:
    """Train on `data` (a path or 'mnist') and write the run into `out`: checkpoint.pt,
    config.json and log.jsonl (one line per epoch). Options as for fit(). With `window`
    (steps, or "auto"), `data` is a series (series.read_series: CSV with `columns`,
    `timestamp` and `delimiter`, or .npy) and the model a windowed one (fit_series).
    threads: torch's (default training_threads). Returns config."""
    options = replace(options or TrainOptions(), **option_overrides)
    if window is not None:
        max_gap = max(series_io.MAX_GAP, window if window != "auto" else 0)
        series = series_io.read_series(data, columns, timestamp, max_gap=max_gap,
                                       delimiter=delimiter)  # fmt: skip
        if progress and (series.put_back or series.out_of_order):
            click.echo(f"{data}: {len(series.values)} steps of {series.step_seconds} s; "
                       f"{series.put_back} missing steps put back for gaps in the timestamps, "
                       f"{series.out_of_order} repeated or earlier timestamps taken as the "
                       "next step", err=True)  # fmt: skip
        x = x_test = None
    else:
        if columns or timestamp or delimiter or stride != 1:
            raise InputError("--columns, --timestamp, --delimiter and --stride are for a "
                             "series: give --window")  # fmt: skip
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

    if window is not None:
        model, config = fit_series(
            series.values, window, stride, options, channels=series.channels,
            timestamp=series.timestamp_column, step_seconds=series.step_seconds,
            progress=progress, on_epoch=on_epoch, threads=threads,
        )  # fmt: skip
    else:
        model, config = fit(x, x_test, options, progress=progress, on_epoch=on_epoch,
                            threads=threads)  # fmt: skip
    config.data.update(source=str(data), normal_class=normal_class)
    save_run(model, config, out)
    return config


def save_run(model: VAE, config: RunConfig, out: str | Path) -> None:
    """The run's checkpoint.pt and config.json into `out` (what export_run reads)."""
    with atomic_output(Path(out) / CHECKPOINT_FILE) as tmp:
        torch.save(model.state_dict(), tmp)
    with atomic_output(Path(out) / CONFIG_FILE) as tmp:
        tmp.write_text(config.to_json())


@torch.no_grad()
def evaluate(model: VAE, xp: torch.Tensor, seed: int) -> dict[str, float]:
    """Mean -ELBO per sample (one z draw, seeded) and its two terms."""
    model.eval()
    noise = torch.Generator().manual_seed(seed + 2)
    recon_sum = kl_sum = 0.0
    for i in range(0, len(xp), EVAL_BATCH):
        xb, present = _missing_filled(xp[i : i + EVAL_BATCH])
        params, mu, logvar = model(xb, torch.randn(len(xb), model.latent_dim, generator=noise))
        recon_sum += model.reconstruction_nll(xb, params, present).sum().item()
        kl_sum += kl_divergence(mu, logvar).sum().item()
    n = len(xp)
    return {"loss": (recon_sum + kl_sum) / n, "recon": recon_sum / n, "kl": kl_sum / n}


def _missing_filled(xb: torch.Tensor):
    """A series' missing readings (NaN) at the channel's mean (0) for the encoder, and the
    mask that leaves them out of the loss (None when nothing is missing), as the runtime
    does (likelihood.Gaussian.prepare)."""
    missing = torch.isnan(xb)
    if not missing.any():
        return xb, None
    return xb.masked_fill(missing, 0.0), ~missing


def _prefixed(prefix: str, d: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in d.items()}


def load_run(run_dir: str | Path) -> tuple[VAE, RunConfig]:
    """Rebuild the trained model from a run directory (weights_only load: no pickle)."""
    run_dir = Path(run_dir)
    config_file, checkpoint = run_dir / CONFIG_FILE, run_dir / CHECKPOINT_FILE
    if not config_file.is_file() or not checkpoint.is_file():
        raise InputError(
            f"{run_dir}: not a training run (needs {CONFIG_FILE} and {CHECKPOINT_FILE})"
        )
    try:
        config = RunConfig.from_dict(json.loads(config_file.read_text()), str(config_file))
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{config_file}: not valid JSON ({e})") from None
    model = config.model.build()
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # torch raises many types for a bad file
        raise InputError(f"{checkpoint}: cannot load weights ({str(e).splitlines()[0]})") from None
    return model.eval(), config
