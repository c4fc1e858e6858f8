"""`vae-edge train`: a model from a table, images or a series; with --engine ray, a
bundle per series of a fleet."""

from __future__ import annotations

from pathlib import Path

import click

from vae_edge.cli import (
    _names,
    _on_ray,
    _series_id_check,
    _train_extra,
    cli,
    delimiter_option,
)


@cli.command()
@click.argument("data_argument", metavar="[DATA]", required=False)
@click.option("--data", help="Training data: .npz/.npy/.csv/PNG path, or 'mnist' (or DATA); with "
              "--engine ray, Parquet: a file, a folder of part files or a glob.")  # fmt: skip
@click.option(
    "--out",
    "run_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The run's folder; with --engine ray, the folder of bundles, OUT/<id>/.",
)
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
@click.option("--threads", type=click.IntRange(min=1), help="torch's threads (default: one for "
              "a series or a table, whose small models gain nothing from more and thrash when "
              "two trainings share the cores; every core for images).")  # fmt: skip
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: a bundle per series of a fleet (--series-id), trained in parallel on "
              "Ray Data, one CPU and one thread each (needs the `ray` extra).")  # fmt: skip
@click.option(
    "--series-id",
    help="--engine ray: the column naming each row's series; each "
    "series is trained alone, as `train --window` trains one, into OUT/<id>/.",
)
@click.option("--address", help="--engine ray: a Ray cluster, auto or HOST:PORT (default: a "
              "local Ray).")  # fmt: skip
@click.option("--force", is_flag=True, help="--engine ray: replace bundles already in OUT.")
def train(data_argument, data, run_dir, hidden, quiet, window, stride, columns, timestamp,
          delimiter, threads, engine, series_id, address, force, **options):  # fmt: skip
    """Train a VAE on DATA (needs the `train` extra) and write RUN_DIR; with --engine ray
    --series-id COL, a windowed model per series of a fleet, each an exported bundle."""
    if (data is None) == (data_argument is None):
        raise click.UsageError("give the training data once: DATA or --data DATA")
    data = data or data_argument
    if engine == "ray" and series_id is None:
        raise click.UsageError("--engine ray trains a fleet: name the column of its series "
                               "ids with --series-id")  # fmt: skip
    for flag, value in (("--series-id", series_id), ("--address", address), ("--force", force)):
        if value and engine != "ray":
            raise click.UsageError(f"{flag} needs --engine ray")
    if engine == "ray" and (stride != 1 or delimiter or hidden or threads
                            or options.get("normal_class") is not None):  # fmt: skip
        raise click.UsageError("--stride, --delimiter, --hidden, --threads and --normal-class "
                               "are not for --engine ray (a series per task, one thread "
                               "each)")  # fmt: skip
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
    if engine == "ray":
        _train_fleet(data, run_dir, series_id, window or "auto", _names(columns) or None,
                     timestamp, address, force, options)  # fmt: skip
        return
    config = train_module.train(data, run_dir, hidden=hidden, progress=not quiet, window=window,
                                stride=stride, columns=_names(columns) or None,
                                timestamp=timestamp, delimiter=delimiter, threads=threads,
                                **options)  # fmt: skip
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


def _train_fleet(data, out, series_id, window, columns, timestamp, address, force,
                 options) -> None:  # fmt: skip
    """A bundle per series id on Ray (ray_data.train.train_fleet): a line per series that
    failed, a summary; exit 1 when any failed (the others are kept)."""
    import time

    started = time.perf_counter()
    results = []

    def trained(ray_data, dataset):
        from vae_edge.ray_data.train import train_fleet

        results.extend(train_fleet(dataset, out, series_id, window=window, columns=columns,
                                   timestamp=timestamp, force=force, **options))  # fmt: skip

    _on_ray(data, None, address, trained, _series_id_check(series_id))
    failed = [r for r in results if r["error"]]
    for r in failed:
        click.echo(f"vae-edge: series {r['id']!r} not trained: {r['error']}", err=True)
    click.echo(f"trained {len(results) - len(failed)} of {len(results)} series into {out}/ "
               f"({time.perf_counter() - started:.1f} s)")  # fmt: skip
    if failed:
        raise SystemExit(1)
