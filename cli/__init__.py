"""`vae-edge`: a thin command-line skin over vae_edge.runtime, .training and .export.

Heavy imports (numpy, onnxruntime, torch) happen inside the commands, so `--help` is
instant and `sample`/`score`/`info` never touch torch. Every failure the user can fix is
reported as one line on stderr with exit code 2; output files appear whole or not at all.
"""

from __future__ import annotations

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


def _on_ray(input_path, output, address, work, check=None):
    """Read the Parquet input and hand it to work(ray_data, dataset), on a local Ray sized
    to this machine unless --address; with an output folder, write the Dataset work
    returns there (its rows are returned). Every file's footer is read, and
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
        result = work(ray_data, ray_data.read_parquet(pieces))
        return result if output is None else ray_data.write_parquet(result, output)
    finally:
        ray.shutdown()


def _series_id_check(series_id: str):
    """_on_ray's check for a fleet: the first Parquet file has the column `series_id`."""

    def check(ray_data, pieces):
        import pyarrow.parquet as pq

        from vae_edge.runtime.errors import InputError

        names = pq.ParquetFile(pieces[0]["file"]).schema_arrow.names
        if series_id not in names:
            raise InputError(f"{pieces[0]['file']}: no column {series_id!r} in the input (it "
                             f"has {', '.join(names)})")  # fmt: skip

    return check


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


def _samples_for(model, path):
    """The samples in `path` as `model` reads them: a windowed model's series (its
    channels, missing steps put back), else read_input's array."""
    if model.manifest.series is None:
        from vae_edge.runtime.data import read_input

        return read_input(path)
    from vae_edge.runtime.series import read_series

    return read_series(path, model=model.manifest.series).values


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


# The commands, each in its module, registered on `cli` as they are imported.
from vae_edge.cli import bundle, evaluate, images, score, train  # noqa: E402, F401
