"""`vae-edge score`: a score per row of a table or image set, a line per reading of a
series, locally or on Ray."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import click

from vae_edge.cli import (
    _chunked,
    _counted,
    _load,
    _names,
    _on_ray,
    _progress,
    _series_id_check,
    _series_lines,
    _suffix,
    cli,
    complexity_option,
    delimiter_option,
    device_option,
    model_option,
    no_verify_option,
    score_type_option,
    threads_option,
)


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
    "as they are; without it the stream re-bases their level on a lasting change.",
)
def score(model_dir, input_path, engine, output, **options):
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
    timestamp column, score, likelihood, is_anomaly, in_alarm."""
    if engine == "ray":
        kind = "fleet" if options["series_id"] is not None else "table on Ray"
    else:
        kind = None  # the model says: a table (or images) or a series
    if kind is None:
        model = _load(model_dir, options["device"], options["threads"], not options["no_verify"])
        kind = "series" if model.manifest.series is not None else "table"
    ctx = click.get_current_context()
    given = {
        n for n in options if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT
    }
    refused = sorted(given - KIND_OPTIONS[kind])
    if refused:
        flag = "--" + refused[0].replace("_", "-")
        kinds = [k for k, names in KIND_OPTIONS.items() if refused[0] in names]
        raise click.UsageError(f"{flag} is not for {KIND_TEXT[kind]}; it is for "
                               f"{' and '.join(KIND_TEXT[k] for k in kinds)}")  # fmt: skip
    if engine == "ray" and output is None:
        raise click.BadParameter("--engine ray writes a folder: give -o OUT_DIR", param_hint="-o")
    o = SimpleNamespace(**options)
    if kind == "fleet":
        rows = _score_fleet_on_ray(input_path, output, model_dir, o.score_type, o.samples,
                                   o.seed, o.threshold, o.per_feature, o.address, o.actors,
                                   o.series_id, _names(o.columns), o.timestamp)  # fmt: skip
        click.echo(f"wrote {output} ({rows} rows)", err=True)
    elif kind == "table on Ray":
        model = _load(model_dir, "cpu", 1, not o.no_verify)  # checked here, before any worker
        if model.manifest.series is not None:
            raise click.UsageError("--engine ray scores a fleet of series, each in order: name "
                                   "the column of their ids with --series-id")  # fmt: skip
        settings = model.settings(o.score_type, o.samples, o.seed, o.threshold, o.batch_size,
                                  o.complexity)  # fmt: skip
        rows = _score_on_ray(input_path, output, model_dir, settings, o.per_feature, o.address,
                             o.actors, o.cpus_per_actor, _names(o.keep),
                             _names(o.columns))  # fmt: skip
        click.echo(f"wrote {output} ({rows} rows)", err=True)
    elif kind == "series":
        if o.stream and output is not None:
            raise click.UsageError("--stream writes to standard output: leave out -o")
        if o.stream and o.hindsight:
            raise click.UsageError("--hindsight waits W - 1 readings: not with --stream")
        _score_series(model, input_path, output, o)
    else:
        _score_table(model, input_path, output, o)


# Which options go with which kind of input: a table's (or images') rows, a series' readings,
# a table's rows on Ray, a fleet's series on Ray. The rest (model, input, -o) go with all.
SETTINGS = {"score_type", "samples", "complexity", "seed", "threshold", "per_feature"}
KIND_OPTIONS = {
    "table": SETTINGS | {"batch_size", "device", "threads", "no_verify"},
    "series": SETTINGS | {"batch_size", "device", "threads", "no_verify", "columns",
                          "timestamp", "delimiter", "hindsight", "stream", "frozen"},
    "table on Ray": SETTINGS | {"batch_size", "no_verify", "address", "actors",
                                "cpus_per_actor", "keep", "columns"},
    "fleet": SETTINGS | {"address", "actors", "series_id", "columns", "timestamp"},
}  # fmt: skip
KIND_TEXT = {"table": "a table's or images' rows", "series": "a windowed model's series",
             "table on Ray": "a table on Ray (--engine ray)",
             "fleet": "a fleet on Ray (--engine ray --series-id)"}  # fmt: skip


def _score_table(model, input_path, output, o) -> None:
    """A table's or images' rows, in chunks, written batch by batch."""
    from vae_edge.runtime.data import check_writable, stream_input
    from vae_edge.runtime.errors import InputError
    from vae_edge.runtime.output import SCORE_FORMATS, write_scores

    suffix = _suffix(output, SCORE_FORMATS) if output else ".csv"
    if o.per_feature and suffix == ".npy":
        raise click.BadParameter("--per-feature needs .csv or .jsonl output", param_hint="-o")
    if output is not None:
        check_writable(output)
    settings = model.settings(o.score_type, o.samples, o.seed, o.threshold, o.batch_size,
                              o.complexity)  # fmt: skip
    try:
        total, chunks = stream_input(input_path, rows=max(o.batch_size, 4096))
        batches = model.score_batches(chunks, settings, o.per_feature)
        with _progress(total, "scoring") as bar:
            write_scores(_counted(batches, bar), output, sys.stdout)
    except InputError as e:
        message = str(e)
        if not message.startswith(str(input_path)):
            raise InputError(f"{input_path}: {message}") from None
        raise


def _score_series(model, input_path, output, o) -> None:
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
    settings = model.settings(o.score_type, o.samples, o.seed, o.threshold, o.batch_size,
                              o.complexity)  # fmt: skip
    columns = _names(o.columns) or None
    scorer = SeriesStream(model, settings, threshold=o.threshold, per_feature=o.per_feature,
                          columns=columns, timestamp=o.timestamp, delimiter=o.delimiter,
                          where=where, rules=StreamRules(adapt=not o.frozen))  # fmt: skip

    def batches():
        if suffix == ".npy":
            pieces = [scorer.push(read_series(input_path, columns, o.timestamp).values)]
        else:
            lines = _series_lines(input_path, where)
            size = 1 if o.stream else 4096
            pieces = (scorer.push_lines(chunk) for chunk in _chunked(lines, size))
        batches = (batch for batch in pieces if batch is not None)
        yield from with_hindsight(list(batches), scorer.window) if o.hindsight else batches
        scorer.close(whole=not o.stream)

    write_scores(batches(), output, sys.stdout, feature_names=model.manifest.series.channels,
                 flush=o.stream)  # fmt: skip
    click.echo(f"{where}: {scorer.report}", err=True)


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

    def scored(ray_data, dataset):
        settings = None  # each model's own, unless a score is asked for
        if score_type is not None or samples is not None:
            first = ray_data.first_bundle(model_dir)
            settings = _load(first, "cpu", 1).settings(score_type, samples, seed)
        return ray_data.score_fleet(dataset, model_dir, series_id, settings,
                                    columns=columns or None, timestamp=timestamp,
                                    per_feature=per_feature, threshold=threshold,
                                    tasks=tasks)  # fmt: skip

    return _on_ray(input_path, output, address, scored, _series_id_check(series_id))
