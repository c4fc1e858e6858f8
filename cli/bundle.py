"""`vae-edge export`, `upgrade` and `info`: the bundle a run becomes, and what it holds."""

from __future__ import annotations

from pathlib import Path

import click

from vae_edge.cli import (
    _load,
    _train_extra,
    cli,
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


def _ir_and_opset(graph) -> str:
    from vae_edge.runtime.bundle import required_onnxruntime

    if graph.ir_version is None:
        return "IR version and opset not recorded"
    needed = required_onnxruntime(graph.ir_version, graph.opset)
    release = f">= {'.'.join(map(str, needed))}" if needed else "newer than any measured"
    return f"IR {graph.ir_version}, opset {graph.opset}: onnxruntime {release}"
