"""`vae-edge`: a thin command-line skin over vae_edge.runtime, .training and .export.

Heavy imports (numpy, onnxruntime, torch) happen inside the commands, so `--help` is
instant and `sample`/`score`/`info` never touch torch. Every failure the user can fix is
reported as one line on stderr with exit code 2; output files appear whole or not at all.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from vae_edge.runtime.errors import VAEEdgeError

SAMPLE_FORMATS = (".png", ".npy")

model_option = click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    help="Model bundle directory (default: the MNIST model shipped with vae-edge).",
)
device_option = click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True
)
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="onnxruntime intra-op threads per graph (default: one for small calls, all cores "
    "from 12.5M multiply-adds a call: 23 rows of the shipped model).",
)
no_verify_option = click.option(
    "--no-verify",
    is_flag=True,
    help="Skip the graphs' sha256 check (development only).",
)
delimiter_option = click.option(
    "--delimiter",
    type=click.Choice([",", ";", "tab"]),
    help="A series' CSV: what separates its columns (default: whichever of , ; and tab "
    "splits its first line into most).",
)
seed_option = click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="NumPy noise seed."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vae-edge")
def cli():
    """Train a VAE, export it to ONNX, and sample or score anomalies with onnxruntime."""


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


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "model_dir", required=True, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out.")
@click.option("--quantize", type=click.Choice(["int8"]),
              help="int8 weights (onnxruntime dynamic quantization), checked vs fp32.")  # fmt: skip
@click.option("--fp16", is_flag=True,
              help="float16 graphs, float32 in and out (GPUs); checked vs fp32.")  # fmt: skip
def export(run_dir, model_dir, force, quantize, fp16):
    """Export RUN_DIR as a checked ONNX bundle (needs the `train` extra)."""
    if quantize and fp16:
        raise click.UsageError("--quantize and --fp16 exclude each other; choose one")
    export_module = _train_extra("vae_edge.export.onnx_export")
    quantize = "fp16" if fp16 else quantize
    manifest = export_module.export_run(run_dir, model_dir, force=force, quantize=quantize)
    p = manifest.parity
    click.echo(f"wrote {model_dir} (encoder.onnx, decoder.onnx, prepare.onnx, loss.onnx, vae.json)")
    click.echo(
        ("fp32 graphs' parity" if quantize else "parity")
        + " vs PyTorch at batch sizes "
        + ", ".join(map(str, p["batch_sizes"]))
        + ": max |diff| "
        + ", ".join(
            f"{k.removeprefix('max_abs_diff_')} {v:.2e}"
            for k, v in p.items()
            if k.startswith("max_abs_diff_")
        )
    )
    if quantize:
        q = p[quantize]
        click.echo(
            f"{quantize} vs fp32 scores on {q['samples']} samples from the model: correlation "
            f"{q['score_correlation']:.5f} (at least {q['min_correlation']}), median relative "
            f"difference {q['median_rel_diff_score']:.2e}"
        )


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
def upgrade(model_dir):
    """Add the score graphs (prepare.onnx, loss.onnx) to a bundle exported before they
    were (format 1 -> 2), in place (needs the `train` extra)."""
    graphs = _train_extra("vae_edge.export.score_graphs")
    before = _load(model_dir, "cpu", None).manifest
    manifest = graphs.upgrade_bundle(model_dir)
    check = manifest.parity["score_graphs"]
    click.echo(f"{model_dir}: format {before.format_version} -> {manifest.format_version}, "
               f"prepare.onnx and loss.onnx added; their scores within "
               f"{check['max_rel_diff_score']:.1e} of the runtime's")  # fmt: skip
    if before.default_score.samples and before.default_score.eps is None:
        click.echo(f"the default score's {before.default_score.samples} draws now use noise "
                   "stored in vae.json, the same for every row: its scores moved a little"
                   + ("; calibrate the threshold again" if before.threshold else ""))  # fmt: skip


@cli.command()
@model_option
@click.option("-n", "n", type=click.IntRange(min=1), required=True, help="Number of samples.")
@seed_option
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="OUT.png (a grid, image models) or OUT.npy.")  # fmt: skip
@device_option
@threads_option
@no_verify_option
def sample(model_dir, n, seed, output, device, threads, no_verify):
    """Draw N new samples from the model."""
    from vae_edge.runtime.data import image_grid

    model = _load_for_images(output, model_dir, device, threads, not no_verify)
    samples = model.sample(n, seed=seed)

    def picture():  # a binary model's samples in black and white, as its data
        pixels = model.manifest.preprocessing.apply(samples)
        return image_grid(pixels.round() if model.manifest.binary else pixels)

    _write_images(output, samples, picture)
    click.echo(f"wrote {n} samples to {output}")


score_type_option = click.option(
    "--score-type",
    type=click.Choice(["recon", "elbo", "iwae"]),
    help="recon: reconstruction loss; elbo: + KL; iwae: importance-weighted bound -L_k, "
    "k = --samples. Default: the model's (vae.json default_score).",
)
complexity_option = click.option(
    "--complexity/--no-complexity",
    default=None,
    help="Divide each score by the image's complexity in bits (image models with the "
    "bernoulli likelihood). Default: the model's (on for such images).",
)


@cli.command()
@model_option
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-n", "n", type=click.IntRange(min=1), default=32, show_default=True,
              help="Reconstruct the first N samples of INPUT.")  # fmt: skip
@seed_option
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="OUT.png (originals above their reconstructions) or OUT.npy.")  # fmt: skip
@device_option
@threads_option
def reconstruct(model_dir, input_path, n, seed, output, device, threads):
    """Encode, draw one z, decode: reconstructions of the first N samples of INPUT."""
    from vae_edge.runtime.data import pairs_grid, read_input

    model = _load_for_images(output, model_dir, device, threads)
    x = read_input(input_path)[:n]
    rebuilt = model.reconstruct(x, seed=seed)

    def picture():  # originals over reconstructions, both in the encoder's units
        return pairs_grid(model.preprocess(x), model.manifest.preprocessing.apply(rebuilt))

    _write_images(output, rebuilt, picture)
    click.echo(f"wrote {len(rebuilt)} reconstructions to {output}")


@cli.command()
@model_option
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@score_type_option
@click.option("--samples", type=click.IntRange(min=0),
              help="z draws per sample; 0 = deterministic, z = mu. Default: the "
                   "model's (tables 5, images 0).")  # fmt: skip
@complexity_option
@click.option("--seed", type=click.IntRange(min=0), help="NumPy noise seed (default 0).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--threshold", type=float, help="Flag scores above this (overrides the model's); "
              "a windowed model: likelihoods above this, in [0, 1].")  # fmt: skip
@click.option("--per-feature", is_flag=True,
              help="Add each feature's reconstruction loss (CSV / JSONL).")  # fmt: skip
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="OUT.csv, OUT.npy or OUT.jsonl (default: CSV on stdout); with --engine "
                   "ray, a new folder for Parquet part files.")  # fmt: skip
@device_option
@threads_option
@no_verify_option
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: Parquet in and out on Ray Data (needs the `ray` extra).")  # fmt: skip
@click.option("--address", help="Ray cluster: auto or HOST:PORT (default: a local Ray).")
@click.option("--actors", type=click.IntRange(min=1),
              help="Ray actors scoring (default: CPUs // --cpus-per-actor); with "
              "--series-id, series scored at a time (default: CPUs).")  # fmt: skip
@click.option("--cpus-per-actor", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPUs of each actor, and its onnxruntime threads.")  # fmt: skip
@click.option("--keep", help="Columns carried into the output, e.g. an id: COL,...")
@click.option("--series-id", help="--engine ray with windowed models: the column naming each "
              "row's series (a machine); each series is scored in order, a row per reading, "
              "by MODEL or, when MODEL is a folder of bundles, by MODEL/<series id>.")  # fmt: skip
@click.option("--columns", help="The model's features, in order: COL,... (default: every "
              "column not kept, in file order; or one tensor column). A windowed model: its "
              "channels' columns (default: the names it was trained with).")  # fmt: skip
@click.option("--timestamp", help="A windowed model: the timestamp column, or 'none' "
              "(default: the one it was trained with, else as train finds it).")  # fmt: skip
@delimiter_option
@click.option("--hindsight", is_flag=True, help="A windowed model's file: add the column "
              "hindsight, each reading's mean score over the windows that hold it (known "
              "W - 1 readings later; ranks anomalies better after the fact).")  # fmt: skip
@click.option("--stream", is_flag=True, help="A windowed model: write and flush one line "
              "per reading as it arrives (INPUT - reads standard input, e.g. a sensor "
              "pipe).")  # fmt: skip
@click.option(
    "--frozen",
    is_flag=True,
    help="A windowed model: the model sees the readings "
    "as they are; without it the stream learns their level as it runs.",
)
def score(model_dir, input_path, score_type, samples, complexity, seed, batch_size, threshold,
          per_feature, output, device, threads, no_verify, engine, address, actors,
          cpus_per_actor, keep, series_id, columns, timestamp, delimiter, hindsight,
          stream, frozen):  # fmt: skip
    """Score INPUT (.npz/.npy/.csv/.png or a PNG folder): anomaly score per sample; with a
    windowed model, INPUT is a series (.csv, .npy, or - for standard input) and the
    output one row per time step.

    Scoring settings left out are the ones stored with the model's threshold, if it has
    one, so is_anomaly means what calibrate meant. .npy and .csv inputs are streamed in
    chunks and the output is written batch by batch, so memory does not grow with the
    file. With --engine ray, INPUT is Parquet (a file, a folder of part files or a glob)
    and -o a new folder of Parquet part files: index (the row's position in the input),
    the --keep columns, score, is_anomaly when there is a threshold; with --series-id, a
    fleet's series: the series id, index (the reading's position in its series), the
    timestamp column, score, likelihood, is_anomaly."""
    from vae_edge.runtime.data import check_writable, stream_input
    from vae_edge.runtime.errors import InputError
    from vae_edge.runtime.output import SCORE_FORMATS, write_scores

    ray_only = {"--address": address, "--actors": actors, "--keep": keep, "--columns": columns,
                "--series-id": series_id}  # fmt: skip
    if engine == "ray":
        if output is None:
            raise click.BadParameter(
                "--engine ray writes a folder: give -o OUT_DIR", param_hint="-o"
            )
        if device != "cpu" or threads:
            raise click.UsageError("--engine ray scores on CPUs: use --cpus-per-actor, not "
                                   "--device or --threads")  # fmt: skip
        if series_id is not None:
            if keep or stream or hindsight or delimiter:
                raise click.UsageError("--keep, --stream, --hindsight and --delimiter are not "
                                       "for a fleet on Ray")  # fmt: skip
            rows = _score_fleet_on_ray(input_path, output, model_dir, score_type, samples,
                                       seed, threshold, per_feature, address, actors, series_id,
                                       _names(columns), timestamp)  # fmt: skip
            click.echo(f"wrote {output} ({rows} rows)", err=True)
            return
        model = _load(model_dir, "cpu", 1, not no_verify)  # checked here, before any worker
        if model.manifest.series is not None:
            raise click.UsageError("--engine ray scores a fleet of series, each in order: name "
                                   "the column of their ids with --series-id")  # fmt: skip
        settings = model.settings(score_type, samples, seed, threshold, batch_size, complexity)
        rows = _score_on_ray(input_path, output, model_dir, settings, per_feature, address,
                             actors, cpus_per_actor, _names(keep), _names(columns))  # fmt: skip
        click.echo(f"wrote {output} ({rows} rows)", err=True)
        return
    suffix = _suffix(output, SCORE_FORMATS) if output else ".csv"
    if per_feature and suffix == ".npy":
        raise click.BadParameter("--per-feature needs .csv or .jsonl output", param_hint="-o")
    if output is not None:
        check_writable(output)
    model = _load(model_dir, device, threads, not no_verify)
    settings = model.settings(score_type, samples, seed, threshold, batch_size, complexity)
    if model.manifest.series is not None:
        if stream and output is not None:
            raise click.UsageError("--stream writes to standard output: leave out -o")
        if stream and hindsight:
            raise click.UsageError("--hindsight waits W - 1 readings: not with --stream")
        given = [name for name, value in ray_only.items() if value and name != "--columns"]
        if given:
            raise click.UsageError(f"{given[0]} needs --engine ray")
        _score_series(model, input_path, settings, threshold, per_feature, output,
                      _names(columns) or None, timestamp, stream, hindsight,
                      delimiter, frozen)  # fmt: skip
        return
    given = [name for name, value in ray_only.items() if value]
    if given:
        raise click.UsageError(f"{given[0]} needs --engine ray")
    series_only = {"--stream": stream, "--timestamp": timestamp, "--hindsight": hindsight,
                   "--delimiter": delimiter, "--frozen": frozen}  # fmt: skip
    given = [name for name, value in series_only.items() if value]
    if given:
        raise click.UsageError(f"{given[0]} is for windowed models (trained with --window)")
    try:
        total, chunks = stream_input(input_path, rows=max(batch_size, 4096))
        batches = model.score_batches(chunks, settings, per_feature)
        with _progress(total, "scoring") as bar:
            write_scores(_counted(batches, bar), output, sys.stdout)
    except InputError as e:
        message = str(e)
        if not message.startswith(str(input_path)):
            raise InputError(f"{input_path}: {message}") from None
        raise


def _score_series(model, input_path, settings, threshold, per_feature, output, columns,
                  timestamp, stream, hindsight, delimiter=None,
                  frozen=False) -> None:  # fmt: skip
    """A windowed model's results, a row per reading: the lines of INPUT piped through one
    SeriesStream (a line at a time with --stream, else in chunks: the same numbers), its
    report on stderr at the end. --hindsight holds the file's results until its end."""
    from vae_edge.runtime.errors import InputError
    from vae_edge.runtime.output import write_scores
    from vae_edge.runtime.series import SeriesStream, StreamRules, read_series, with_hindsight

    where = "standard input" if str(input_path) == "-" else str(input_path)
    suffix = "" if where == "standard input" else input_path.suffix.lower()
    if where != "standard input" and suffix not in (".csv", ".npy"):
        raise InputError(f"{where}: a windowed model scores a series: .csv, .npy, or - for "
                         "standard input")  # fmt: skip
    scorer = SeriesStream(model, settings, threshold=threshold, per_feature=per_feature,
                          columns=columns, timestamp=timestamp, delimiter=delimiter,
                          where=where, rules=StreamRules(adapt=not frozen))  # fmt: skip

    def batches():
        if suffix == ".npy":
            pieces = [scorer.push(read_series(input_path, columns, timestamp).values)]
        else:
            lines = _series_lines(input_path, where)
            pieces = (scorer.push_lines(chunk) for chunk in _chunked(lines, 1 if stream else 4096))
        batches = (batch for batch in pieces if batch is not None)
        yield from with_hindsight(list(batches), scorer.window) if hindsight else batches
        scorer.close(whole=not stream)

    write_scores(batches(), output, sys.stdout, feature_names=model.manifest.series.channels,
                 flush=stream)  # fmt: skip
    click.echo(f"{where}: {scorer.report}", err=True)


def _series_lines(input_path, where):
    """The lines of a series; bytes that are not UTF-8 become U+FFFD, so that such a line
    is an unreadable reading, counted, and never stops a stream."""
    if where == "standard input":
        sys.stdin.reconfigure(errors="replace")
        return iter(sys.stdin.readline, "")
    try:
        f = open(input_path, encoding="utf-8-sig", errors="replace")  # noqa: SIM115
    except FileNotFoundError:
        raise click.ClickException(f"{input_path}: no such file") from None
    return iter(f)


def _chunked(lines, size: int):
    """Runs of `size` lines."""
    import itertools

    while chunk := list(itertools.islice(lines, size)):
        yield chunk


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()] if text else []


def _score_on_ray(input_path, output, model_dir, settings, per_feature, address, actors,
                  cpus_per_actor, keep, columns) -> int:  # fmt: skip
    """A table's rows, read, scored and written on Ray (_on_ray)."""

    def scored(ray_data, dataset):
        return ray_data.score_dataset(dataset, model_dir, settings, columns=columns or None,
                                      keep=tuple(keep), per_feature=per_feature,
                                      actors=actors, cpus_per_actor=cpus_per_actor)  # fmt: skip

    return _on_ray(input_path, output, address, scored)


def _score_fleet_on_ray(input_path, output, model_dir, score_type, samples, seed, threshold,
                        per_feature, address, tasks, series_id, columns,
                        timestamp) -> int:  # fmt: skip
    """A fleet's series on Ray (ray_data.score_fleet), read and written by _on_ray."""
    from vae_edge.runtime.errors import InputError

    def check(ray_data, pieces):  # before Ray starts
        import pyarrow.parquet as pq

        names = pq.ParquetFile(pieces[0]["file"]).schema_arrow.names
        if series_id not in names:
            raise InputError(f"{pieces[0]['file']}: no column {series_id!r} in the input (it "
                             f"has {', '.join(names)})")  # fmt: skip

    def scored(ray_data, dataset):
        settings = None  # each model's own, unless a score is asked for
        if score_type is not None or samples is not None:
            first = ray_data.first_bundle(model_dir)
            settings = _load(first, "cpu", 1).settings(score_type, samples, seed)
        return ray_data.score_fleet(dataset, model_dir, series_id, settings,
                                    columns=columns or None, timestamp=timestamp,
                                    per_feature=per_feature, threshold=threshold,
                                    tasks=tasks)  # fmt: skip

    return _on_ray(input_path, output, address, scored, check)


def _on_ray(input_path, output, address, scored, check=None) -> int:
    """Read the Parquet input, score it with scored(ray_data, dataset) and write it, on a
    local Ray sized to this machine unless --address. Every file's footer is read, and
    check(ray_data, pieces) run, before Ray starts."""
    try:
        import ray

        from vae_edge import ray_data
    except ModuleNotFoundError as e:
        raise click.ClickException(
            f"--engine ray needs {e.name}: pip install 'vae-edge[ray]'"
        ) from None
    pieces = ray_data.parquet_pieces(input_path)  # a bad file is named before Ray starts
    if check is not None:
        check(ray_data, pieces)
    _quiet_ray_data()
    ray.init(address=address, include_dashboard=False, logging_level="WARNING",
             num_cpus=None if address else os.cpu_count())  # fmt: skip
    try:
        return ray_data.write_parquet(scored(ray_data, ray_data.read_parquet(pieces)), output)
    finally:
        ray.shutdown()


def _quiet_ray_data() -> None:
    """Ray Data logs its plan and progress at INFO and a worker's traceback at ERROR; the
    failure itself comes back as vae-edge's one line. Its logging is configured again as
    each dataset runs, from this variable (unless the user set it)."""
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "CRITICAL")


def _counted(batches, bar):
    for batch in batches:
        yield batch
        bar.update(len(batch.scores))


def _progress(total: int | None, label: str):
    """A progress bar on stderr when it is a terminal and the length is known; else one
    that shows nothing (and costs no import of click's terminal code: 2 ms of a start)."""
    if total is None or not sys.stderr.isatty():
        return _NoProgress()
    return click.progressbar(length=total, label=label, file=sys.stderr)


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        pass


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
    import os
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


@cli.command()
@click.argument("model_dir", required=False, type=click.Path(path_type=Path))
@click.option("--verify", is_flag=True, help="Run every check on the bundle and report each.")
def info(model_dir, verify):
    """Summarise a bundle (default: the shipped model) and list onnxruntime providers."""
    import onnxruntime

    if verify:
        from vae_edge.runtime.model import verify_bundle

        report = verify_bundle(model_dir)
        for name, passed, detail in report:
            click.echo(f"{'ok  ' if passed else 'FAIL'}  {name}: {detail}")
        failed = sum(not passed for _, passed, _ in report)
        if failed:
            raise click.ClickException(f"{failed} of {len(report)} checks failed")
        return
    model = _load(model_dir, "cpu", None)
    m = model.manifest
    s = m.training.get("summary", {})
    lines = [
        f"bundle        {model.source}",
        f"format        {m.format_version}",
        f"input         {m.input_dtype} {m.input_shape} (data {m.data_dtype}), "
        f"preprocessing {m.preprocessing.kind}",
        f"likelihood    {m.likelihood} (decoder emits {m.decoder_output})",
        f"latent_dim    {m.latent_dim}",
        *([_series_line(m.series)] if m.series else []),
        *(
            f"{g.file:<13} sha256 {g.sha256}, {_ir_and_opset(g)}"
            for g in (m.encoder, m.decoder, *(m.score_graphs or {}).values())
        ),
        f"exporter      {m.exporter}",
        "parity        "
        + ", ".join(
            f"{k.removeprefix('max_abs_diff_')} {v:.2e}"
            for k, v in m.parity.items()
            if k.startswith("max_abs_diff_")
        ),  # fmt: skip
        f"score         {_how(m.default_score)} (default_score)",
        f"threshold     {'none' if m.threshold is None else m.threshold.value}"
        + ("" if m.threshold is None else f" ({_how(m.threshold)})"),
    ]
    for variant in ("int8", "fp16"):
        if variant in m.parity:
            q = m.parity[variant]
            lines.append(f"variant       {variant}: scores correlate {q['score_correlation']:.5f} "
                         f"with fp32 on {q['samples']} samples from the model")  # fmt: skip
    if "test_loss" in s:
        lines.append(f"test loss     {s['test_loss']:.2f} nats/sample")
    lines.append(f"providers     {', '.join(onnxruntime.get_available_providers())}")
    click.echo("\n".join(lines))


def _series_line(spec) -> str:
    stamps = (f", timestamps {spec.timestamp!r} every {spec.step_seconds} s"
              if spec.timestamp else ", no timestamps")  # fmt: skip
    return (f"series        windows of {spec.window} steps x {len(spec.channels)} channel(s) "
            f"({', '.join(spec.channels)}), training stride {spec.stride}{stamps}; a reading "
            f"scores as the window ending at it, alarms at likelihood > "
            f"{spec.alarm_threshold:g}")  # fmt: skip


def _how(score) -> str:
    """A DefaultScore's or Threshold's way of scoring, in words."""
    per_bit = ", per complexity bit" if score.complexity else ""
    return f"{score.score_type}, samples {score.samples}{per_bit}"


def _samples_for(model, path):
    """The samples in `path` as `model` reads them: a windowed model's series (its
    channels, missing steps put back), else read_input's array."""
    if model.manifest.series is None:
        from vae_edge.runtime.data import read_input

        return read_input(path)
    from vae_edge.runtime.series import read_series

    return read_series(path, model=model.manifest.series).values


def _ir_and_opset(graph) -> str:
    from vae_edge.runtime.bundle import required_onnxruntime

    if graph.ir_version is None:
        return "IR version and opset not recorded"
    needed = required_onnxruntime(graph.ir_version, graph.opset)
    release = f">= {'.'.join(map(str, needed))}" if needed else "newer than any measured"
    return f"IR {graph.ir_version}, opset {graph.opset}: onnxruntime {release}"


def _train_extra(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name in ("torch", "onnx", "onnxscript"):
            raise click.ClickException(
                f"this command needs {e.name}: pip install 'vae-edge[train]'"
            ) from None
        raise


def _load(model_dir, device, threads, verify=True):
    from vae_edge.runtime import EdgeVAE

    return EdgeVAE.load(model_dir, device=device, threads=threads, verify=verify)


def _suffix(path: Path, allowed) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise click.BadParameter(
            f"{path}: output must end in {' or '.join(allowed)}", param_hint="-o"
        )
    return suffix


def _load_for_images(output: Path, model_dir, device, threads, verify=True):
    """Check OUT.png|OUT.npy before any work, then load; PNG needs an image model."""
    from vae_edge.runtime.data import check_writable

    suffix = _suffix(output, SAMPLE_FORMATS)
    check_writable(output)
    model = _load(model_dir, device, threads, verify)
    if suffix == ".png" and not model.manifest.is_image:
        raise click.BadParameter("PNG output needs an image model; use .npy", param_hint="-o")
    return model


def _write_images(output: Path, array, picture) -> None:
    """OUT.npy gets `array`; OUT.png the uint8 image `picture()` makes."""
    import numpy as np

    from vae_edge.runtime.data import atomic_output, write_png

    with atomic_output(output) as tmp:
        if output.suffix.lower() == ".png":
            write_png(tmp, picture())
        else:
            with open(tmp, "wb") as f:
                np.save(f, array)


def main() -> None:
    """Entry point: run the CLI, turning every user-fixable failure into one line, exit 2."""
    import warnings

    def one_line(message, category, *args, **kwargs):
        click.echo(f"vae-edge: warning: {message}", err=True)

    warnings.showwarning = one_line
    try:
        code = cli.main(prog_name="vae-edge", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("vae-edge: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"vae-edge: error: {e.format_message()}", err=True)
        sys.exit(2)
    except VAEEdgeError as e:
        click.echo(f"vae-edge: error: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"vae-edge: error: {e.strerror or e}{where}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("vae-edge: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug in vae-edge, not bad input: still one line by default
        if os.environ.get("VAE_EDGE_DEBUG"):
            raise
        click.echo(
            f"vae-edge: internal error: {type(e).__name__}: {e} "
            "(set VAE_EDGE_DEBUG=1 for the traceback, and please report it)",
            err=True,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
