"""`vae-edge calibrate`, `evaluate` and `bench`: a model's threshold, its measures on
labelled data, its speed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from vae_edge.cli import (
    _load,
    _names,
    _progress,
    _samples_for,
    _series_lines,
    cli,
    complexity_option,
    delimiter_option,
    device_option,
    model_option,
    score_type_option,
    seed_option,
    threads_option,
)


@cli.command()
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Bundle to store the threshold in.")  # fmt: skip
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path),
              help="Normal data (or data with --contamination anomalies).")  # fmt: skip
@click.option("--quantile", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Threshold = this quantile of the scores (default 0.99).")  # fmt: skip
@click.option("--contamination", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Expected fraction of anomalies in --data.")  # fmt: skip
@score_type_option
@click.option("--samples", type=click.IntRange(min=0),
              help="z draws per sample. Default: the model's.")  # fmt: skip
@complexity_option
@seed_option
@click.option("--columns", help="A windowed model's CSV: its channels' columns (default: the "
              "names it was trained with).")  # fmt: skip
@click.option("--timestamp", help="A windowed model's CSV: the timestamp column, or 'none' "
              "(default: the one it was trained with, else as train finds it).")  # fmt: skip
@delimiter_option
def calibrate(model_dir, data_path, quantile, contamination, score_type, samples, complexity,
              seed, columns, timestamp, delimiter):  # fmt: skip
    """Set the model's anomaly threshold from data; stored in its vae.json. A windowed
    model: its alarm threshold on the likelihood (kept, unless --quantile or
    --contamination), and the alarms DATA raises under it."""
    from vae_edge.runtime import anomaly

    if quantile is not None and contamination is not None:
        raise click.UsageError("give --quantile or --contamination, not both")
    model = _load(model_dir, "cpu", None)
    if model.manifest.series is not None:  # the data streamed as `score` streams it
        from vae_edge.runtime.series import read_series

        names = _names(columns) or None
        if data_path.suffix.lower() == ".csv":
            lines = list(_series_lines(data_path, str(data_path)))
            value, rule, flags = anomaly.calibrate_alarm(
                model, None, quantile, contamination, lines=lines, columns=names,
                timestamp=timestamp, delimiter=delimiter, where=str(data_path))  # fmt: skip
        else:
            values = read_series(data_path, names, timestamp, model=model.manifest.series).values
            value, rule, flags = anomaly.calibrate_alarm(model, values, quantile, contamination)
        anomaly.write_alarm_threshold(model_dir, value)
        click.echo(f"alarm threshold {value:.6g} on the likelihood ({rule}) written to "
                   f"{model_dir / 'vae.json'}; {int(flags.sum())} alarms in the "
                   f"{len(flags)} readings of {data_path}")  # fmt: skip
        return
    if columns or timestamp or delimiter:
        raise click.UsageError("--columns, --timestamp and --delimiter are for windowed models")
    t = anomaly.calibrate(model, _samples_for(model, data_path), quantile, contamination,
                          score_type, samples, seed, complexity)  # fmt: skip
    anomaly.write_threshold(model_dir, t)
    per_bit = " per complexity bit" if t.complexity else ""
    click.echo(
        f"threshold {t.value:.6g} ({t.rule} of {t.count} {t.score_type}{per_bit} scores, "
        f"samples {t.samples}, seed {t.seed}) written to {model_dir / 'vae.json'}"
    )


@cli.command()
@model_option
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path),
              help="Data (.npz: x_test, else x; labels y: 1 = anomaly).")  # fmt: skip
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write OUT.json.")
@click.option("--iwae-k", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Draws k for the importance-weighted bound -L_k.")  # fmt: skip
@seed_option
@click.option("--labels", "label_column", default="label", show_default=True,
              help="A windowed model's CSV: its column of labels per step (1 = "
                   "anomaly).")  # fmt: skip
def evaluate(model_dir, data_path, json_path, iwae_k, seed, label_column):
    """Likelihood figures (-ELBO, -L_k, active units) and, with 0/1 labels, AUROC, AUPRC and
    precision/recall/F1 at the model's threshold."""
    import numpy as np

    from vae_edge.runtime import anomaly
    from vae_edge.runtime.data import atomic_output, check_writable, read_data

    if json_path is not None:
        check_writable(json_path)
    model = _load(model_dir, "cpu", None)
    spec = model.manifest.series
    if spec is not None and data_path.suffix.lower() == ".csv":
        from vae_edge.runtime.series import read_series

        x = read_series(data_path, model=spec).values
        y = read_series(data_path, [label_column], spec.timestamp, model=None).values[:, 0]
    else:
        data = read_data(data_path)
        x, y = (data.x_test, data.y_test) if data.x_test is not None else (data.x, data.y)
    samples = x
    if spec is not None:  # the likelihood figures of the series' windows, side by side
        from vae_edge.runtime.series import sliding_windows

        samples = sliding_windows(np.asarray(x, np.float64).reshape(len(x), -1), spec.window,
                                  spec.window)  # fmt: skip
    with _progress(len(samples), f"-L_k, k = {iwae_k}") as bar:
        result = anomaly.likelihood_figures(model, samples, k=iwae_k, seed=seed,
                                            on_batch=bar.update)  # fmt: skip
    labelled = y[~np.isnan(y)] if y is not None and y.dtype.kind == "f" else y
    if y is not None and np.isin(labelled, (0, 1)).all():
        result |= anomaly.evaluate(model, x, y)
    elif y is not None:
        click.echo("note: labels are not 0/1 (1 = anomaly): no anomaly metrics", err=True)
    for key, value in result.items():
        shown = "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else value
        click.echo(f"{key:<14}{shown}")
    if json_path is not None:
        with atomic_output(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")


@cli.command()
@model_option
@click.option("--batch-sizes", default="1,32,1024,4096", show_default=True,
              help="Comma-separated batch sizes.")  # fmt: skip
@threads_option
@click.option("--seconds", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Timed seconds per job and batch size.")  # fmt: skip
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write OUT.json.")
@device_option
def bench(model_dir, batch_sizes, threads, seconds, json_path, device):
    """Latency (p50/p95/p99) and throughput of score and sample, against the bare
    onnxruntime calls with hand-written NumPy. Runtime only: no torch."""
    import platform
    from importlib import metadata

    import numpy
    import onnxruntime

    from vae_edge.runtime import bench as bench_module
    from vae_edge.runtime.data import atomic_output, check_writable

    try:
        sizes = [int(b) for b in batch_sizes.split(",")]
    except ValueError:
        raise click.BadParameter(f"{batch_sizes!r} is not a list of integers",
                                 param_hint="--batch-sizes") from None  # fmt: skip
    if any(b < 1 for b in sizes):
        raise click.BadParameter("batch sizes must be positive", param_hint="--batch-sizes")
    if json_path is not None:
        check_writable(json_path)
    model = _load(model_dir, device, threads)

    with _progress(2 * len(sizes), "timing") as bar:  # score and sample at each size
        rows = bench_module.run(model, sizes, seconds, progress=lambda row: bar.update(1))
    result = {
        "model": model.source,
        "device": device,
        "providers": model.bundle.providers,
        "threads": threads or "onnxruntime default",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        # onnxruntime's own version: a GPU install has the onnxruntime-gpu distribution
        "versions": {"vae-edge": metadata.version("vae-edge"),
                     "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__},
        "rows": rows,
    }  # fmt: skip
    if device == "cuda":
        result["gpu"] = bench_module.gpu_name()
    click.echo(f"{result['model']}; threads {result['threads']}; {result['machine']}; "
               + (f"GPU {result['gpu']}; " if device == "cuda" else "")
               + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))  # fmt: skip
    click.echo(bench_module.table(rows))
    if json_path is not None:
        with atomic_output(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
