"""`vae-edge train`: a model from a table, images or a series; with --engine ray, a
bundle per series of a fleet."""

from __future__ import annotations

from pathlib import Path

import click

from vae_edge.cli import (
    _names,
    _train_extra,
    cli,
    delimiter_option,
)


@cli.command()
@click.option("--data", required=True, help="Training data: .npz/.npy/.csv/PNG path, or 'mnist'.")
@click.option("--out", "run_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--arch",
    type=click.Choice(["mlp", "conv", "conv1d"]),
    help="mlp: fully connected (tables, images); conv: 2-D convolutions, for images (H, W) "
    "or (C, H, W); conv1d: 1-D convolutions over time with the metrics as channels, for a "
    "series. Default: conv1d with --window, else mlp.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="Most epochs. Default: at least 10, and at least 4,000 optimizer steps (10,000 for "
    "images).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    help="Peak learning rate of the one-cycle schedule. Default: 2e-3.",
)
@click.option(
    "--beta",
    type=click.FloatRange(min=0, min_open=True),
    help="Weight of the KL term (beta-VAE). Default: 1.",
)
@click.option(
    "--kl-warmup",
    type=click.FloatRange(min=0),
    help="Epochs over which the KL weight ramps up from 0. Default: a tenth of --epochs.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    help="Stop after this many epochs without a better validation loss (the best "
    "weights are kept); 0: never stop early. Default: 10.",
)
@click.option(
    "--latent-dim", type=click.IntRange(min=1), help="Default: from the data (32 for MNIST)."
)
@click.option(
    "--hidden", help="Hidden layer sizes, comma separated, e.g. 512,256. Default: from the data."
)
@click.option(
    "--likelihood", type=click.Choice(["bernoulli", "gaussian"]), help="Default: from the data."
)
@click.option(
    "--variance",
    type=click.Choice(["learned", "fixed"]),
    help="Gaussian variance per feature: learned (default) or fixed at 1.",
)
@click.option(
    "--trim",
    type=click.FloatRange(0, 1, max_open=True),
    help="Share of each batch, highest loss first, left out of the training loss (robustness "
    "to anomalies in the training data). Default: 0.25 for tables, 0 for images.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True
)
@click.option("--normal-class", type=int, help="Train only on samples with this label.")
@click.option("--window", help="The data is a series (CSV or .npy (T,) / (T, C)): train on "
              "windows of this many steps, or 'auto' (the series' period within 8..512 "
              "steps, at least 64; else 128).")  # fmt: skip
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True,
              help="Steps between training windows (series).")  # fmt: skip
@click.option("--columns", help="A series' value columns, COL,... (default: every column but "
              "the timestamp).")  # fmt: skip
@click.option("--timestamp", help="A series' timestamp column, or 'none' (default: a "
              "column named timestamp, time, datetime or date, else a first column of "
              "dates).")  # fmt: skip
@delimiter_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
def train(data, run_dir, hidden, quiet, window, stride, columns, timestamp, delimiter,
          **options):  # fmt: skip
    """Train a VAE (needs the `train` extra) and write RUN_DIR."""
    train_module = _train_extra("vae_edge.training.train")
    if window is not None and window != "auto":
        try:
            window = int(window)
        except ValueError:
            raise click.BadParameter(f"{window!r} is not a number of steps or 'auto'",
                                     param_hint="--window") from None  # fmt: skip
        if window < 2:
            raise click.BadParameter("a window has at least 2 steps", param_hint="--window")
    if hidden is not None:
        try:
            hidden = tuple(int(h) for h in hidden.split(","))
        except ValueError:
            raise click.BadParameter(
                f"{hidden!r} is not a list of integers", param_hint="--hidden"
            ) from None
        if any(h < 1 for h in hidden):
            raise click.BadParameter("sizes must be positive", param_hint="--hidden")
    options = {k: v for k, v in options.items() if v is not None}  # unset: fit's default
    if options.get("patience") == 0:
        options["patience"] = None  # fit's "never stop early"
    config = train_module.train(data, run_dir, hidden=hidden, progress=not quiet, window=window,
                                stride=stride, columns=_names(columns) or None,
                                timestamp=timestamp, delimiter=delimiter, **options)  # fmt: skip
    s = config.summary
    click.echo(f"wrote {run_dir} ({s['seconds']} s)")
    if "series" in config.data:
        spec = config.data["series"]
        click.echo(f"windows of {spec['window']} steps x {len(spec['channels'])} channel(s) "
                   f"({', '.join(spec['channels'])}), stride {spec['stride']}")  # fmt: skip
    for split in ("train", "val", "test"):
        if f"{split}_loss" in s:
            click.echo(
                f"{split} loss {s[f'{split}_loss']:.2f} nats/sample "
                f"(reconstruction {s[f'{split}_recon']:.2f} + KL {s[f'{split}_kl']:.2f})"
            )
