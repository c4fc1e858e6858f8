"""`vae-edge sample` and `reconstruct`: images in and out."""

from __future__ import annotations

from pathlib import Path

import click

from vae_edge.cli import (
    SAMPLE_FORMATS,
    _load,
    _suffix,
    cli,
    device_option,
    model_option,
    no_verify_option,
    seed_option,
    threads_option,
)


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
